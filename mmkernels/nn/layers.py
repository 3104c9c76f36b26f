"""Drop-in ``nn.Module`` layers on top of the fused ops.

Both call ``mmkernels.cross_attention`` / ``mmkernels.concat_linear``, so ``mmkernels.use_reference_ops()``
switches them to the plain-PyTorch references.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .. import ops

__all__ = ["CrossModalAttention", "ConcatLinear"]


def _positive_int(value, name: str) -> int:
    # bool is an int subclass, and 2.5 or "4" must not be truncated or parsed silently.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _positive_ints(values, name: str) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    if len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got an empty one")
    return [_positive_int(d, f"{name}[{i}]") for i, d in enumerate(values)]


class CrossModalAttention(nn.Module):
    """Multi-head attention from a target modality (queries) to a source modality (keys/values).

    Batch-first, like ``nn.MultiheadAttention(batch_first=True)`` with separate key/value widths and
    optional grouped-query heads (``num_kv_heads`` key/value heads shared by ``num_heads`` query heads).

    Shapes:
        query ``(B, Lq, embed_dim)``, key ``(B, Lk, kdim)``, value ``(B, Lk, vdim)`` (defaults to key)
        key_padding_mask: bool ``(B, Lk)``, ``True`` = ignore; kv_lengths: integer ``(B,)``
        returns ``(B, Lq, embed_dim)``. Query rows with no valid key give ``out_proj.bias`` (zero
        attention), never NaN.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        num_kv_heads: Optional[int] = None,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads <= 0 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        if self.head_dim > ops.MAX_HEAD_DIM:
            raise ValueError(f"head dim embed_dim/num_heads = {self.head_dim} exceeds {ops.MAX_HEAD_DIM}")
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = self.kdim if vdim is None else vdim
        kv_width = num_kv_heads * self.head_dim
        fk = dict(device=device, dtype=dtype)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **fk)
        self.k_proj = nn.Linear(self.kdim, kv_width, bias=bias, **fk)
        self.v_proj = nn.Linear(self.vdim, kv_width, bias=bias, **fk)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **fk)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: Optional[torch.Tensor] = None,
        *,
        key_padding_mask: Optional[torch.Tensor] = None,
        kv_lengths: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"query must be (B, Lq, embed_dim={self.embed_dim}), got {tuple(query.shape)}")
        if key.dim() != 3 or key.shape[-1] != self.kdim:
            raise ValueError(f"key must be (B, Lk, kdim={self.kdim}), got {tuple(key.shape)}")
        if value.dim() != 3 or value.shape[-1] != self.vdim or value.shape[:2] != key.shape[:2]:
            raise ValueError(f"value must be (B, Lk, vdim={self.vdim}) like key {tuple(key.shape)}, got {tuple(value.shape)}")
        if key.shape[0] != query.shape[0]:
            raise ValueError(f"key must have the batch size of query ({query.shape[0]}), got key {tuple(key.shape)}")
        q, k, v = self._split_heads(self.q_proj(query), self.k_proj(key), self.v_proj(value))
        o = ops.cross_attention(q, k, v, kv_lengths=kv_lengths, key_padding_mask=key_padding_mask)
        return self.out_proj(o.flatten(2))

    def _split_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """(B, L, heads * head_dim) projections to (B, L, heads, head_dim). The head counts come from the
        projections' widths, not from num_heads / num_kv_heads: under tensor parallelism
        (``ColwiseParallel`` on q/k/v_proj, ``RowwiseParallel`` on out_proj) each rank's projections hold
        a slice of the heads, and attention runs on those."""
        widths = {"q_proj": q.shape[-1], "k_proj": k.shape[-1], "v_proj": v.shape[-1]}
        for name, width in widths.items():
            if width % self.head_dim != 0:
                raise RuntimeError(
                    f"{name} gives {width} features per position, not a whole number of heads of head_dim="
                    f"{self.head_dim}: under tensor parallelism, num_heads={self.num_heads} and num_kv_heads="
                    f"{self.num_kv_heads} must both be divisible by the number of shards of the projections")
        heads, kv_heads = q.shape[-1] // self.head_dim, k.shape[-1] // self.head_dim
        if v.shape[-1] != k.shape[-1] or heads * self.num_kv_heads != kv_heads * self.num_heads:
            raise RuntimeError(
                f"q_proj, k_proj and v_proj give {heads}, {kv_heads} and {v.shape[-1] // self.head_dim} heads: "
                f"the grouped-query ratio must stay num_heads / num_kv_heads = {self.num_heads} / "
                f"{self.num_kv_heads} on every rank, so shard q_proj, k_proj and v_proj alike (ColwiseParallel "
                f"on all three) with num_kv_heads={self.num_kv_heads} divisible by the number of shards")
        split = lambda t, h: t.unflatten(-1, (h, self.head_dim))
        return split(q, heads), split(k, kv_heads), split(v, kv_heads)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> "CrossModalAttention":
        """Converts a batch-first ``nn.MultiheadAttention`` (same weights, same outputs in eval mode)."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"expected nn.MultiheadAttention, got {type(mha).__name__}")
        if not mha.batch_first:
            raise ValueError("only batch_first=True nn.MultiheadAttention can be converted (mmkernels is batch-first)")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn are not supported by CrossModalAttention")
        E = mha.embed_dim
        p = next(mha.parameters())
        has_bias = mha.in_proj_bias is not None
        m = cls(E, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, bias=has_bias, device=p.device, dtype=p.dtype)
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                wq, wk, wv = mha.in_proj_weight.chunk(3, dim=0)
            else:
                wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            m.q_proj.weight.copy_(wq)
            m.k_proj.weight.copy_(wk)
            m.v_proj.weight.copy_(wv)
            m.out_proj.weight.copy_(mha.out_proj.weight)
            if has_bias:
                bq, bk, bv = mha.in_proj_bias.chunk(3)
                m.q_proj.bias.copy_(bq)
                m.k_proj.bias.copy_(bk)
                m.v_proj.bias.copy_(bv)
            if m.out_proj.bias is not None and mha.out_proj.bias is not None:
                m.out_proj.bias.copy_(mha.out_proj.bias)
        return m

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"kdim={self.kdim}, vdim={self.vdim}")


class ConcatLinear(nn.Module):
    """``act(cat(inputs, -1) @ weight.T + bias)`` without materialising the concatenation.

    ``weight`` ``(out_features, sum(in_features))`` and ``bias`` ``(out_features,)`` have exactly the
    shapes and names of ``nn.Linear(sum(in_features), out_features)``, so state dicts move between the two.

    Shapes: ``forward(x_0, ..., x_{n-1})`` (or one list) with ``x_i`` ``(..., in_features[i])`` returns
    ``(..., out_features)``.
    """

    def __init__(
        self,
        in_features: Sequence[int],
        out_features: int,
        *,
        bias: bool = True,
        activation: str = "none",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        in_features = _positive_ints(in_features, "in_features")
        out_features = _positive_int(out_features, "out_features")
        if activation not in ops.ACTIVATIONS:
            raise ValueError(f"activation must be one of {ops.ACTIVATIONS}, got {activation!r}")
        self.in_features, self.out_features, self.activation = in_features, int(out_features), activation
        fk = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(out_features, sum(in_features), **fk))
        self.bias = nn.Parameter(torch.empty(out_features, **fk)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's initialisation over the concatenated fan-in.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, *inputs: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self.in_features):
            raise ValueError(f"expected {len(self.in_features)} inputs (in_features={self.in_features}), got {len(inputs)}")
        return self._project(inputs)

    def _project(self, inputs: Sequence[torch.Tensor], names: Optional[Sequence[str]] = None) -> torch.Tensor:
        """The op on ``inputs`` (one per ``in_features``), each checked first; an error calls input ``i``
        ``inputs[i]``, or ``embeddings[names[i]]`` when the inputs are named (``ConcatFusion``)."""
        for i, (x, d) in enumerate(zip(inputs, self.in_features)):
            if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != d:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                label = f"inputs[{i}]" if names is None else f"embeddings[{names[i]!r}]"
                raise ValueError(f"{label} must be a tensor (..., {d}), got {shape}")
        return ops.concat_linear(list(inputs), self.weight, self.bias, self.activation)

    @classmethod
    def from_linear(cls, linear: nn.Linear, in_features, activation: str = "none") -> "ConcatLinear":
        """Wraps an ``nn.Linear`` over the concatenation (same parameters' values). ``in_features`` as
        in the constructor (a sequence of sizes here, ``{name: size}`` for ``ConcatFusion``)."""
        m = cls(in_features, linear.out_features, bias=linear.bias is not None, activation=activation,
                device=linear.weight.device, dtype=linear.weight.dtype)
        if sum(m.in_features) != linear.in_features:
            raise ValueError(f"in_features add up to {sum(m.in_features)}, but linear.in_features={linear.in_features}")
        m.load_state_dict(linear.state_dict())
        return m

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, activation={self.activation!r}")
