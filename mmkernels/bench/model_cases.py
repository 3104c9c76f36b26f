"""Model benchmark cases (training steps of the fusion models); filled in by mmkernels.models."""
from __future__ import annotations


def model_cases(device, quick, with_compile):
    try:
        from mmkernels.models.bench_cases import cases
    except ImportError:
        return []
    return cases(device, quick, with_compile)
