"""The benchmark's unit: one case (an op or model at one shape and dtype) with one callable per
implementation, shared by the op cases (cases.py) and the model cases (model_cases.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict

import torch

OURS = "mmkernels"


def allow_recompiles() -> None:
    """Every case compiles the same reference function for new shapes; dynamo's default limit (8
    recompiles per code object) would silently fall back to eager for later cases."""
    import torch._dynamo.config as dcfg

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dcfg, name):
            setattr(dcfg, name, 1024)
    if hasattr(dcfg, "accumulated_recompile_limit"):
        dcfg.accumulated_recompile_limit = 4096


@dataclass
class Case:
    name: str
    op: str
    dtype: torch.dtype
    mode: str  # "fwd" | "fwd+bwd" | "train_step"
    params: Dict[str, object]
    flops: float
    impls: Dict[str, Callable[[int], object]] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
