"""Early, late, attention, layer-wise and gated fusion classifiers over any set of named modalities.

Each model is a composition of public pieces: one encoder per modality (``encoders.py``), a fusion
module from ``mmkernels.nn`` (``nn/fusion.py``) and a head per task. A user can put the same fusion
modules on top of their own encoders.

Every model: ``forward(inputs, lengths=None, present=None) -> logits (B, num_classes)``, or, when
``num_classes`` is a mapping ``{task: n_classes}`` (multi-task: one shared fused representation, one
head per task), ``{task: logits (B, n_classes)}``.

- ``inputs``: ``{name: tensor}``; a modality whose key is absent is missing for the whole batch.
- ``lengths``: ``{name: (B,) int}`` for sequence modalities (frames per sample); 0 = missing sample.
- ``present``: ``{name: (B,) bool}``; ``False`` marks that modality missing for that sample.

Missing modalities are part of the design: each model replaces a missing modality's feature by a learned
"missing" embedding (``MissingEmbedding``: early, attention, layer-wise, gated) or leaves its vote out
(late), and attention over a missing source has no valid keys (zero attention), so no model crashes or
produces NaN.

State dicts of the first layout (before the fusion modules; README, "State dicts") load unchanged: the
renamed keys are listed in each class's ``_legacy_keys``.
"""
from __future__ import annotations

import numbers
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from ..nn import (ConcatFusion, CrossModalFusion, GatedMultimodalUnit, LayerwiseFusionBlock, MissingEmbedding,
                  WeightedMeanFusion)
from ..nn.fusion import _pool_and_fuse
from ._legacy import LoadsLegacyKeys
from .encoders import ModalitySpec, make_encoder

SpecLike = Union[ModalitySpec, tuple, dict]


class EncodedModality(NamedTuple):
    """One modality of a model's batch after its encoder (``_FusionBase.encode``): ``tokens (B, L, d)``,
    ``lengths (B,)`` valid tokens (0 where the modality is missing for the sample), ``pooled (B, d)``
    the encoder's pooled feature (zeros for a modality absent from the batch), ``present (B,)`` bool."""

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


class _FusionBase(LoadsLegacyKeys):
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

    def encode(self, inputs, lengths=None, present=None) -> Dict[str, EncodedModality]:
        """``{name: EncodedModality}`` for every modality of the model (missing ones included)."""
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
            out[n] = EncodedModality(tokens, tok_len, pooled, here)
        return out

    @staticmethod
    def _fields(enc: Dict[str, EncodedModality], field: str) -> Dict[str, torch.Tensor]:
        return {n: getattr(e, field) for n, e in enc.items()}

    def _filled(self, enc: Dict[str, EncodedModality]) -> Dict[str, torch.Tensor]:
        """Each modality's pooled feature, its learned "missing" embedding where it is missing."""
        return self.missing(self._fields(enc, "pooled"), self._fields(enc, "present"))


class EarlyFusion(_FusionBase):
    """Per-modality pooled features (a learned embedding where missing: ``missing``) -> ``fuse``, a
    ``ConcatFusion`` (no concatenation materialised) -> shared MLP ``trunk`` -> classifier ``head``."""

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        sizes = {n: d_model for n in self.names}
        self.missing = MissingEmbedding(sizes)
        self.fuse = ConcatFusion(sizes, hidden, activation="gelu")
        self.trunk = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, self.num_outputs)

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        return self.outputs(self.head(self.trunk(self.fuse(self._filled(enc)))))


class LateFusion(_FusionBase):
    """One classifier per modality (``heads``); their logits are averaged with learned weights over the
    modalities present for each sample (``fusion``, a ``WeightedMeanFusion``: a missing modality casts
    no vote)."""

    # Layout 1 had the weights' logits as ``vote`` and missing embeddings it never used (weight 0).
    _legacy_keys = ((r"vote$", "fusion.logits"), (r"missing\.", None))

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        self.heads = nn.ModuleDict({
            n: nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout),
                             nn.Linear(hidden, self.num_outputs))
            for n in self.names
        })
        self.fusion = WeightedMeanFusion(self.names)

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        logits = {n: self.heads[n](e.pooled) for n, e in enc.items()}
        return self.outputs(self.fusion(logits, self._fields(enc, "present")))


class AttentionFusion(_FusionBase):
    """MulT-style: ``fusion``, a ``CrossModalFusion``: each modality's tokens attend to every other
    modality's tokens through ``CrossModalAttention`` blocks (source padding as ``kv_lengths``), are
    pooled, and the pooled targets are fused with a ``ConcatFusion``; then the ``head``."""

    _legacy_keys = ((r"(missing|blocks|fuse)\.", r"fusion.\1."),)  # layout 1: the fusion's parts at the top

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 num_heads: int = 4, hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        self.fusion = CrossModalFusion(self.names, d_model, hidden, num_heads=num_heads, dropout=dropout,
                                       activation="gelu")
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, self.num_outputs))

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        return self.outputs(self.head(self.fusion(self._fields(enc, "tokens"), self._fields(enc, "lengths"))))


class LayerwiseFusion(_FusionBase):
    """Layer-wise fusion: ``num_layers`` ``LayerwiseFusionBlock``\\ s (``layers``); in each, every modality's
    tokens first pass their own block (self-attention over their valid tokens, then a feed-forward
    layer), then attend to each other modality's tokens of the same layer through
    ``CrossModalAttention`` (the sources' lengths as ``kv_lengths``); the result feeds the next layer.
    Each modality is then pooled over its valid tokens (``missing`` where it has none) and the pooled
    features are fused with ``fuse``, a ``ConcatFusion``; then the ``head``."""

    _legacy_keys = ((r"layers\.(\d+)\.(?!blocks\.)", r"layers.\1.blocks."),)  # layout 1: no .blocks level

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 num_heads: int = 4, num_layers: int = 2, hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        if isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        sizes = {n: d_model for n in self.names}
        self.missing = MissingEmbedding(sizes)
        self.layers = nn.ModuleList(LayerwiseFusionBlock(self.names, d_model, num_heads=num_heads, dropout=dropout)
                                    for _ in range(num_layers))
        self.fuse = ConcatFusion(sizes, hidden, activation="gelu")
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, self.num_outputs))

    def forward(self, inputs, lengths=None, present=None):
        enc = self.encode(inputs, lengths, present)
        h, lens = self._fields(enc, "tokens"), self._fields(enc, "lengths")
        for layer in self.layers:
            h = layer(h, lens)
        return self.outputs(self.head(_pool_and_fuse(h, lens, self.missing, self.fuse)))


class GatedFusion(_FusionBase):
    """Gated fusion: the pooled features (a learned embedding where missing: ``missing``) go through
    ``fusion``, a ``GatedMultimodalUnit`` (Arevalo et al. 2017, generalised to M modalities: per-sample,
    per-feature softmax gates over the modalities present, 0 for missing ones), then an MLP ``head``.
    ``forward(..., return_gates=True)`` also returns each sample's mean gate per modality ``(B, M)``
    (columns in ``model.names`` order): which modality the model relied on."""

    _legacy_keys = ((r"(proj|gate)\.", r"fusion.\1."),)  # layout 1: the gate's parts at the top

    def __init__(self, modalities: Mapping[str, SpecLike], num_classes: ClassesLike, *, d_model: int = 128,
                 hidden: int = 256, dropout: float = 0.1):
        super().__init__(modalities, num_classes, d_model)
        sizes = {n: d_model for n in self.names}
        self.missing = MissingEmbedding(sizes)
        self.fusion = GatedMultimodalUnit(sizes, d_model)
        self.head = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, self.num_outputs))

    def forward(self, inputs, lengths=None, present=None, return_gates: bool = False):
        enc = self.encode(inputs, lengths, present)
        fused, gates = self.fusion(self._filled(enc), self._fields(enc, "present"), return_gates=True)
        out = self.outputs(self.head(fused))
        return (out, gates.mean(-1)) if return_gates else out
