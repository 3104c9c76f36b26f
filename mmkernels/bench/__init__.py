"""Benchmarks of mmkernels against its peers; run with ``python -m mmkernels.bench``."""
