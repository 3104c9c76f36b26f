"""Early, late and attention fusion classifiers over any set of named modalities.

Every model: ``forward(inputs, lengths=None, present=None) -> logits (B, num_classes)``.

- ``inputs``: ``{name: tensor}``; a modality whose key is absent is missing for the whole batch.
- ``lengths``: ``{name: (B,) int}`` for sequence modalities (frames per sample); 0 = missing sample.
- ``present``: ``{name: (B,) bool}``; ``False`` marks that modality missing for that sample.

Missing modalities are part of the design: each model replaces a missing modality's feature by a learned
"missing" embedding (early, attention) or leaves its vote out (late), and attention over a missing
source has no valid keys (zero attention), so no model crashes or produces NaN.
"""
from __future__ import annotations

from typing import Dict, Mapping, NamedTuple, Optional, Union

import torch
from torch import nn

from ..nn import ConcatLinear, CrossModalAttention
from .encoders import ModalitySpec, make_encoder, masked_mean

SpecLike = Union[ModalitySpec, tuple, dict]


class Encoded(NamedTuple):
    """One modality after its encoder: ``tokens (B, L, d)``, ``lengths (B,)`` valid tokens (0 when the
    modality is missing for the sample), ``pooled (B, d)`` (the learned "missing" embedding where it
    is missing), ``present (B,)`` bool."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    pooled: torch.Tensor
    present: torch.Tensor


class _FusionBase(nn.Module):
    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: int, d_model: int):
        super().__init__()
        if not modalities:
            raise ValueError("modalities must name at least one modality")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        # Sorted, as TorchMultimodal does: the column order of the fusion layers (and so the meaning of a
        # state dict) never depends on how the caller happened to write the dict.
        self.names = sorted(modalities)
        self.num_classes, self.d_model = num_classes, d_model
        self.encoders = nn.ModuleDict({n: make_encoder(modalities[n], d_model) for n in self.names})
        self.missing = nn.ParameterDict({n: nn.Parameter(torch.zeros(d_model)) for n in self.names})

    def _batch_info(self, inputs: Mapping[str, torch.Tensor]):
        unknown = set(inputs) - set(self.names)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; this model has {self.names}")
        given = [inputs[n] for n in self.names if n in inputs]
        if not given:
            raise ValueError(f"at least one of the modalities {self.names} must be given")
        return given[0].shape[0], given[0].device

    def encode(self, inputs, lengths=None, present=None) -> Dict[str, Encoded]:
        """``{name: Encoded}`` for every modality of the model (missing ones included)."""
        B, device = self._batch_info(inputs)
        lengths, present = lengths or {}, present or {}
        out = {}
        for n in self.names:
            if n in inputs:
                x = inputs[n]
                if x.shape[0] != B:
                    raise ValueError(f"inputs[{n!r}] has batch size {x.shape[0]}, expected {B}")
                tokens, tok_len, pooled = self.encoders[n](x, lengths.get(n))
                here = tok_len > 0
            else:
                tokens = torch.zeros(B, 1, self.d_model, device=device)
                tok_len = torch.zeros(B, dtype=torch.int64, device=device)
                pooled = torch.zeros(B, self.d_model, device=device)
                here = torch.zeros(B, dtype=torch.bool, device=device)
            if n in present:
                here = here & present[n].to(device=device, dtype=torch.bool)
            tok_len = torch.where(here, tok_len, torch.zeros_like(tok_len))
            pooled = torch.where(here[:, None], pooled, self.missing[n].to(pooled.dtype).expand_as(pooled))
            out[n] = Encoded(tokens, tok_len, pooled, here)
        return out


class EarlyFusion(_FusionBase):
    """Per-modality pooled features -> ``ConcatLinear`` projection (no concatenation materialised) ->
    shared MLP trunk -> classifier head."""

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: int, *, d_model: int = 128,
                 hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        self.fuse = ConcatLinear([d_model] * len(self.names), hidden, activation="gelu")
        self.trunk = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        h = self.fuse([enc[n].pooled for n in self.names])
        return self.head(self.trunk(h))


class LateFusion(_FusionBase):
    """One classifier per modality; their logits are averaged with learned weights over the modalities
    present for each sample (a missing modality casts no vote)."""

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: int, *, d_model: int = 128,
                 hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        self.heads = nn.ModuleDict({
            n: nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
            for n in self.names
        })
        self.vote = nn.Parameter(torch.zeros(len(self.names)))

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        logits = torch.stack([self.heads[n](enc[n].pooled) for n in self.names], 1)  # (B, M, C)
        here = torch.stack([enc[n].present for n in self.names], 1).to(logits.dtype)  # (B, M)
        w = torch.softmax(self.vote, 0)[None, :] * here
        w = w / w.sum(1, keepdim=True).clamp_min(1e-6)
        return (w[..., None] * logits).sum(1)


class _CrossBlock(nn.Module):
    """Target tokens attend to one source modality (pre-norm, residual), then a feed-forward layer."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CrossModalAttention(d_model, num_heads)
        self.ff = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d_model, d_model))

    def forward(self, target, source, source_lengths):
        target = target + self.attn(self.norm_q(target), self.norm_kv(source), kv_lengths=source_lengths)
        return target + self.ff(self.norm_ff(target))


class AttentionFusion(_FusionBase):
    """MulT-style: each modality's tokens attend to every other modality's tokens through
    ``CrossModalAttention`` (source padding as ``kv_lengths``), are pooled, and the pooled targets are
    fused with ``ConcatLinear``."""

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: int, *, d_model: int = 128,
                 num_heads: int = 4, hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        self.blocks = nn.ModuleDict({
            f"{t}_from_{s}": _CrossBlock(d_model, num_heads, dropout)
            for t in self.names for s in self.names if s != t
        })
        self.fuse = ConcatLinear([d_model] * len(self.names), hidden, activation="gelu")
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        pooled = []
        for t in self.names:
            h = enc[t].tokens
            for s in self.names:
                if s != t:
                    h = self.blocks[f"{t}_from_{s}"](h, enc[s].tokens, enc[s].lengths)
            p = masked_mean(h, enc[t].lengths) if len(self.names) > 1 else enc[t].pooled
            pooled.append(torch.where(enc[t].present[:, None], p, self.missing[t].to(p.dtype).expand_as(p)))
        return self.head(self.fuse(pooled))
