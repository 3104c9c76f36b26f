"""mmkernels: fused multimodal-fusion kernels for PyTorch.

    out = mmkernels.cross_attention(q, k, v, kv_lengths=None, key_padding_mask=None, scale=None)
    y   = mmkernels.concat_linear(inputs, weight, bias=None, activation="none")

Both are real PyTorch custom operators (torch.ops.mmkernels.*) with CPU kernels (and CUDA kernels in
a CUDA build), autograd, fake tensors for torch.compile, and plain-PyTorch references in
`mmkernels.reference`.
"""
from __future__ import annotations

from . import reference, testing
from .ops import concat_linear, cross_attention, cpu_capability, use_reference_ops, using_reference_ops

__version__ = "0.1.0"

__all__ = [
    "cross_attention",
    "concat_linear",
    "reference",
    "testing",
    "use_reference_ops",
    "using_reference_ops",
    "cpu_capability",
    "__version__",
]
