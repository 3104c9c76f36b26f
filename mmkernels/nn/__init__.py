"""Drop-in layers built on mmkernels' fused ops."""
from .layers import ConcatLinear, CrossModalAttention

__all__ = ["ConcatLinear", "CrossModalAttention"]
