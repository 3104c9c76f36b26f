"""Integrations of mmkernels with other libraries (imported on demand; each is optional)."""
