"""Public ops: argument validation, custom-op registration (fake tensors, autograd), reference switch.

The native operators live in ``torch.ops.mmkernels`` (declared in csrc/mmkernels.cpp). This package is
the contract-facing layer: it validates arguments with clear ``ValueError``/``TypeError`` messages,
then calls the operator, so eager mode, ``torch.compile(fullgraph=True)`` and ``opcheck`` all go
through the same registered kernels. One module per op (``_cross_attention.py``,
``_concat_linear.py``: validation, the function, ``register_fake``, ``register_autograd``); what they
share (reference switch, checks, autocast, eager fast path, autograd helpers) is in ``_common.py``.
"""
from __future__ import annotations

from .. import _sharding
from ._common import _C, cpu_capability, debug_checks, use_reference_ops, using_reference_ops  # noqa: F401  (_C)
from ._concat_linear import ACTIVATIONS, concat_linear
from ._cross_attention import MAX_HEAD_DIM, cross_attention

__all__ = ["cross_attention", "concat_linear", "use_reference_ops", "using_reference_ops", "debug_checks",
           "cpu_capability", "ACTIVATIONS", "MAX_HEAD_DIM"]

# DTensor sharding rules for every op (mmkernels/_sharding.py), registered once DTensor is loaded.
_sharding.register_when_dtensor_loads()
