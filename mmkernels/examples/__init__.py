"""Runnable examples: ``python -m mmkernels.examples.avdigits --help``."""
