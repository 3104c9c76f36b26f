"""Early, late, attention, layer-wise and gated fusion classifiers over any set of named modalities.

Every model: ``forward(inputs, lengths=None, present=None) -> logits (B, num_classes)``, or, when
``num_classes`` is a mapping ``{task: n_classes}`` (multi-task: one shared fused representation, one
head per task), ``{task: logits (B, n_classes)}``.

- ``inputs``: ``{name: tensor}``; a modality whose key is absent is missing for the whole batch.
- ``lengths``: ``{name: (B,) int}`` for sequence modalities (frames per sample); 0 = missing sample.
- ``present``: ``{name: (B,) bool}``; ``False`` marks that modality missing for that sample.

Missing modalities are part of the design: each model replaces a missing modality's feature by a learned
"missing" embedding (early, attention) or leaves its vote out (late), and attention over a missing
source has no valid keys (zero attention), so no model crashes or produces NaN.
"""
from __future__ import annotations

import numbers
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

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


ClassesLike = Union[int, Mapping[str, int]]


def _parse_tasks(num_classes: ClassesLike) -> Optional[List[Tuple[str, int]]]:
    """None for one task; else the tasks as sorted ``(name, n_classes)`` (sorted like the modalities)."""
    def positive(n, what):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"{what} must be a positive int, got {n!r}")
        return int(n)

    if isinstance(num_classes, Mapping):
        if not num_classes:
            raise ValueError("num_classes must name at least one task when it is a mapping")
        return [(str(t), positive(num_classes[t], f"num_classes[{t!r}]")) for t in sorted(num_classes)]
    positive(num_classes, "num_classes (an int, or a mapping {task: n_classes})")
    return None


class _FusionBase(nn.Module):
    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, d_model: int):
        super().__init__()
        if not modalities:
            raise ValueError("modalities must name at least one modality")
        self.tasks = _parse_tasks(num_classes)
        # Heads produce all tasks' logits side by side; outputs() splits them per task.
        self.num_outputs = int(num_classes) if self.tasks is None else sum(n for _, n in self.tasks)
        # Sorted, as TorchMultimodal does: the column order of the fusion layers (and so the meaning of a
        # state dict) never depends on how the caller happened to write the dict.
        self.names = sorted(modalities)
        self.num_classes, self.d_model = num_classes, d_model
        self.encoders = nn.ModuleDict({n: make_encoder(modalities[n], d_model) for n in self.names})
        self.missing = nn.ParameterDict({n: nn.Parameter(torch.zeros(d_model)) for n in self.names})

    def outputs(self, logits: torch.Tensor):
        """``logits (B, num_outputs)`` as the model returns them: the tensor, or ``{task: logits}``."""
        if self.tasks is None:
            return logits
        return dict(zip([t for t, _ in self.tasks], logits.split([n for _, n in self.tasks], dim=-1)))

    def _batch_info(self, inputs: Mapping[str, torch.Tensor]):
        unknown = set(inputs) - set(self.names)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; this model has {self.names}")
        given = [inputs[n] for n in self.names if n in inputs]
        if not given:
            raise ValueError(f"at least one of the modalities {self.names} must be given")
        return given[0].shape[0], given[0].device

    def _or_missing(self, pooled: torch.Tensor, present: torch.Tensor, name: str) -> torch.Tensor:
        """``pooled`` where the modality is present, its learned "missing" embedding elsewhere."""
        return torch.where(present[:, None], pooled, self.missing[name].to(pooled.dtype).expand_as(pooled))

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
            out[n] = Encoded(tokens, tok_len, self._or_missing(pooled, here, n), here)
        return out


class EarlyFusion(_FusionBase):
    """Per-modality pooled features -> ``ConcatLinear`` projection (no concatenation materialised) ->
    shared MLP trunk -> classifier head."""

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        self.fuse = ConcatLinear([d_model] * len(self.names), hidden, activation="gelu")
        self.trunk = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, self.num_outputs)

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        h = self.fuse([enc[n].pooled for n in self.names])
        return self.outputs(self.head(self.trunk(h)))


class LateFusion(_FusionBase):
    """One classifier per modality; their logits are averaged with learned weights over the modalities
    present for each sample (a missing modality casts no vote)."""

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        self.heads = nn.ModuleDict({
            n: nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout),
                             nn.Linear(hidden, self.num_outputs))
            for n in self.names
        })
        self.vote = nn.Parameter(torch.zeros(len(self.names)))

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        logits = torch.stack([self.heads[n](enc[n].pooled) for n in self.names], 1)  # (B, M, C)
        here = torch.stack([enc[n].present for n in self.names], 1).to(logits.dtype)  # (B, M)
        w = torch.softmax(self.vote, 0)[None, :] * here
        w = w / w.sum(1, keepdim=True).clamp_min(1e-6)
        return self.outputs((w[..., None] * logits).sum(1))


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

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 num_heads: int = 4, hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        self.blocks = nn.ModuleDict({
            f"{t}_from_{s}": _CrossBlock(d_model, num_heads, dropout)
            for t in self.names for s in self.names if s != t
        })
        self.fuse = ConcatLinear([d_model] * len(self.names), hidden, activation="gelu")
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, self.num_outputs))

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        pooled = []
        for t in self.names:
            h = enc[t].tokens
            for s in self.names:
                if s != t:
                    h = self.blocks[f"{t}_from_{s}"](h, enc[s].tokens, enc[s].lengths)
            p = masked_mean(h, enc[t].lengths) if len(self.names) > 1 else enc[t].pooled
            pooled.append(self._or_missing(p, enc[t].present, t))
        return self.outputs(self.head(self.fuse(pooled)))


class LayerwiseFusion(_FusionBase):
    """Layer-wise fusion: ``num_layers`` layers; in each, every modality's tokens first pass their own
    block (self-attention over their valid tokens, then a feed-forward layer), then attend to each
    other modality's tokens of the same layer through ``CrossModalAttention`` (the sources' lengths as
    ``kv_lengths``); the result feeds the next layer. Each modality is then pooled over its valid tokens
    and the pooled features are fused with ``ConcatLinear``."""

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 num_heads: int = 4, num_layers: int = 2, hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        if isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        self.layers = nn.ModuleList(
            nn.ModuleDict({f"{t}_from_{s}": _CrossBlock(d_model, num_heads, dropout)
                           for t in self.names for s in self.names})  # s == t: the self block
            for _ in range(num_layers)
        )
        self.fuse = ConcatLinear([d_model] * len(self.names), hidden, activation="gelu")
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, self.num_outputs))

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        h = {n: enc[n].tokens for n in self.names}
        for layer in self.layers:
            own = {n: layer[f"{n}_from_{n}"](h[n], h[n], enc[n].lengths) for n in self.names}
            h = {}
            for t in self.names:  # every target sees the sources' tokens of this layer: order-free
                x = own[t]
                for s in self.names:
                    if s != t:
                        x = layer[f"{t}_from_{s}"](x, own[s], enc[s].lengths)
                h[t] = x
        pooled = [self._or_missing(masked_mean(h[n], enc[n].lengths), enc[n].present, n) for n in self.names]
        return self.outputs(self.head(self.fuse(pooled)))


class GatedFusion(_FusionBase):
    """Gated fusion after the Gated Multimodal Unit (Arevalo et al., "Gated Multimodal Units for
    Information Fusion", ICLR 2017 workshop), generalised from two modalities to M: each modality's
    pooled feature becomes ``h_m = tanh(W_m x_m)``; gate logits for every (modality, feature) come from
    all pooled features at once (one ``ConcatLinear``), a softmax over the modalities present turns them
    into weights (with two modalities: the GMU's ``z`` and ``1 - z``), missing modalities get weight 0,
    and ``sum_m gate_m * h_m`` feeds an MLP head. ``forward(..., return_gates=True)`` also returns each
    sample's mean gate per modality ``(B, M)`` (columns in ``model.names`` order): which modality the
    model relied on."""

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        self.proj = nn.ModuleDict({n: nn.Linear(d_model, d_model) for n in self.names})
        self.gate = ConcatLinear([d_model] * len(self.names), len(self.names) * d_model)
        self.head = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, self.num_outputs))

    def forward(self, inputs, lengths=None, present=None, return_gates: bool = False):
        enc = self.encode(inputs, lengths, present)
        x = [enc[n].pooled for n in self.names]
        h = torch.stack([torch.tanh(self.proj[n](xn)) for n, xn in zip(self.names, x)], 1)  # (B, M, d)
        logits = self.gate(x).unflatten(-1, (len(self.names), self.d_model))  # (B, M, d)
        here = torch.stack([enc[n].present for n in self.names], 1)[..., None]  # (B, M, 1)
        # The lowest finite value, not -inf: a sample with no modality gets a uniform softmax (then 0 by
        # the mask) instead of NaN, and no NaN reaches the gradients.
        logits = logits.masked_fill(~here, torch.finfo(logits.dtype).min)
        gates = torch.softmax(logits, 1) * here.to(logits.dtype)
        out = self.outputs(self.head((gates * h).sum(1)))
        return (out, gates.mean(-1)) if return_gates else out
