"""Fusion modules: the step that turns several modalities into one representation.

Each takes the modalities as a mapping ``{name: tensor}`` and works on them in sorted-name order (as
TorchMultimodal's fusion modules do): how the caller's dict happens to be ordered never changes the
result or the meaning of a state dict. Every modality the module was built for must be in the mapping;
a modality missing for some samples is marked per sample (``present`` or zero ``lengths``), and each
module handles that by design. ``mmkernels.models`` are built from these, and they work as well on
top of any other encoders.

==========================  ===========================================  =================================
module                      per modality                                 returns
==========================  ===========================================  =================================
``ConcatFusion``            ``(..., d_m)``                               ``(..., out_features)``
``GatedMultimodalUnit``     ``(B, d_m)``, ``present``                    ``(B, out_features)``
``WeightedMeanFusion``      ``(B, *S)``, ``present``                     ``(B, *S)``
``CrossModalFusion``        tokens ``(B, L_m, d_model)``, ``lengths``    ``(B, out_features)``
``LayerwiseFusionBlock``    tokens ``(B, L_m, d_model)``, ``lengths``    ``{name: (B, L_m, d_model)}``
``MissingEmbedding``        ``(B, d_m)``, ``present``                    ``{name: (B, d_m)}``
==========================  ===========================================  =================================

``present``: optional ``{name: (B,) bool}``, ``False`` = the modality is missing for that sample (a name
left out: present everywhere). ``lengths``: optional ``{name: (B,) int}``, the valid tokens per sample
(a name left out: all ``L_m``; values are clamped to ``[0, L_m]``); 0 = missing for that sample.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .layers import ConcatLinear, CrossModalAttention, _positive_int

__all__ = ["ConcatFusion", "GatedMultimodalUnit", "WeightedMeanFusion", "CrossModalFusion", "LayerwiseFusionBlock",
           "CrossModalBlock", "MissingEmbedding", "masked_mean", "token_lengths"]

Modalities = Union[Sequence[str], Mapping[str, object]]


# ---------------------------------------------------------------------------------------------------
# The conventions, each in one place: modality names, the mappings' keys, presence, token lengths.


def _modality_names(modalities: Modalities, arg: str) -> List[str]:
    """The sorted modality names of a mapping (its keys) or a sequence of names."""
    if isinstance(modalities, (str, bytes)) or not isinstance(modalities, (Mapping, Sequence)):
        raise TypeError(f"{arg} must be a mapping or sequence of modality names, got {type(modalities).__name__}")
    names = list(modalities)
    if not names:
        raise ValueError(f"{arg} must name at least one modality")
    for n in names:  # a name becomes part of state-dict keys (parameter and submodule names)
        if not isinstance(n, str) or not n or "." in n:
            raise ValueError(f"{arg}: modality names must be non-empty strings without '.', got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{arg}: modality names must be distinct, got {names}")
    return sorted(names)


def _feature_sizes(in_features: Mapping[str, int], arg: str = "in_features") -> Dict[str, int]:
    """``{name: d_m}`` in sorted-name order, every size a positive int."""
    if not isinstance(in_features, Mapping):
        raise TypeError(f"{arg} must be a mapping {{modality name: feature size}}, got {type(in_features).__name__}")
    return {n: _positive_int(in_features[n], f"{arg}[{n!r}]") for n in _modality_names(in_features, arg)}


def _in_order(names: Sequence[str], given, arg: str) -> List[torch.Tensor]:
    """``given[name]`` for each of ``names`` (sorted): the mapping must hold exactly these modalities."""
    if not isinstance(given, Mapping):
        raise TypeError(f"{arg} must be a mapping {{modality name: tensor}}, got {type(given).__name__}")
    if set(given) != set(names):
        raise ValueError(f"{arg} must hold exactly the modalities {list(names)}, got {sorted(given)} (a modality "
                         f"missing for some or all samples is marked with present=/lengths=, not left out)")
    for n in names:
        if not isinstance(given[n], torch.Tensor):
            raise TypeError(f"{arg}[{n!r}] must be a torch.Tensor, got {type(given[n]).__name__}")
    return [given[n] for n in names]


def _per_modality(names: Sequence[str], given, arg: str, what: str) -> Mapping[str, torch.Tensor]:
    """An optional ``{name: tensor}`` argument (``present``, ``lengths``) as a mapping; names it leaves out
    take the default."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TypeError(f"{arg} must be None or a mapping {{modality name: {what}}}, got {type(given).__name__}")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"{arg} names unknown modalities {unknown}; this module has {list(names)}")
    return given


def _presence(names: Sequence[str], present: Optional[Mapping[str, torch.Tensor]], ref: torch.Tensor) -> torch.Tensor:
    """``(B, M)`` bool, columns in ``names`` order; ``ref`` ``(B, ...)`` gives the batch size and device."""
    present = _per_modality(names, present, "present", "(B,) bool tensor")
    B = ref.shape[0]
    cols = []
    for n in names:
        p = present.get(n)
        if p is None:
            cols.append(torch.ones(B, dtype=torch.bool, device=ref.device))
            continue
        if not isinstance(p, torch.Tensor) or tuple(p.shape) != (B,):
            shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"present[{n!r}] must be a (B,) = ({B},) bool tensor, got {shape}")
        cols.append(p.to(device=ref.device, dtype=torch.bool))
    return torch.stack(cols, 1)


def token_lengths(tokens: torch.Tensor, lengths: Optional[torch.Tensor], arg: str = "lengths") -> torch.Tensor:
    """``(B,)`` int64 valid-token counts of ``tokens`` ``(B, L, ...)``: ``lengths`` clamped to ``[0, L]``,
    or ``L`` for every sample when ``lengths`` is None."""
    B, L = tokens.shape[:2]
    if lengths is None:
        return torch.full((B,), L, dtype=torch.int64, device=tokens.device)
    if not isinstance(lengths, torch.Tensor) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        got = lengths.dtype if isinstance(lengths, torch.Tensor) else type(lengths).__name__
        raise TypeError(f"{arg} must be an integer tensor (B,), got {got}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"{arg} must have shape (B,) = ({B},), got {tuple(lengths.shape)}")
    return lengths.to(device=tokens.device, dtype=torch.int64).clamp(0, L)


def masked_mean(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(B, L, d)`` tokens -> ``(B, d)``: the mean over the first ``lengths[b]`` tokens; zeros where the
    length is 0."""
    L = tokens.shape[1]
    valid = (torch.arange(L, device=tokens.device)[None, :] < lengths[:, None]).to(tokens.dtype)
    return (tokens * valid[..., None]).sum(1) / lengths.clamp_min(1).to(tokens.dtype)[:, None]


def _all_lengths(names, tokens: Mapping[str, torch.Tensor], lengths) -> Dict[str, torch.Tensor]:
    lengths = _per_modality(names, lengths, "lengths", "(B,) int tensor")
    return {n: token_lengths(tokens[n], lengths.get(n), f"lengths[{n!r}]") for n in names}


def _check_tokens(names, tokens, d_model: int) -> Dict[str, torch.Tensor]:
    toks = dict(zip(names, _in_order(names, tokens, "tokens")))
    B = next(iter(toks.values())).shape[0]
    for n, t in toks.items():
        if t.dim() != 3 or t.shape[0] != B or t.shape[2] != d_model:
            raise ValueError(f"tokens[{n!r}] must be (B, L, d_model) = ({B}, L, {d_model}), got {tuple(t.shape)}")
    return toks


# ---------------------------------------------------------------------------------------------------
# Modules


class MissingEmbedding(nn.Module):
    """A learned stand-in per modality for the samples where it is missing (initially zeros).

    ``MissingEmbedding(in_features)``, ``in_features`` ``{name: d_m}``; one ``(d_m,)`` parameter per
    modality, named after it (``missing["audio"]`` or ``missing.audio``).
    ``forward(features, present=None)``: ``features`` ``{name: (B, d_m)}`` -> ``{name: (B, d_m)}``, the
    feature where ``present[name]`` is True, the embedding elsewhere.
    """

    def __init__(self, in_features: Mapping[str, int], *, device=None, dtype=None) -> None:
        super().__init__()
        sizes = _feature_sizes(in_features)
        self.names = list(sizes)
        for n, d in sizes.items():
            if hasattr(self, n):
                raise ValueError(f"in_features: modality name {n!r} is taken by an attribute of MissingEmbedding")
            self.register_parameter(n, nn.Parameter(torch.zeros(d, device=device, dtype=dtype)))

    def __getitem__(self, name: str) -> nn.Parameter:
        return self._parameters[name]

    def forward(self, features: Mapping[str, torch.Tensor],
                present: Optional[Mapping[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        xs = _in_order(self.names, features, "features")
        here = _presence(self.names, present, xs[0])
        out = {}
        for j, (n, x) in enumerate(zip(self.names, xs)):
            emb = self[n]
            if x.dim() != 2 or x.shape[1] != emb.shape[0]:
                raise ValueError(f"features[{n!r}] must be (B, {emb.shape[0]}), got {tuple(x.shape)}")
            out[n] = torch.where(here[:, j, None], x, emb.to(x.dtype).expand_as(x))
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: {self[n].shape[0]}" for n in self.names)


class ConcatFusion(ConcatLinear):
    """Concat-projection fusion: ``act(cat([x_m for m in sorted names], -1) @ weight.T + bias)``, the
    concatenation never materialised (``mmkernels.concat_linear``).

    ``ConcatFusion(in_features, out_features, *, bias=True, activation="none")`` with ``in_features``
    ``{name: d_m}``: a ``ConcatLinear`` whose inputs are named. ``weight`` ``(out_features, sum(d_m))``
    and ``bias`` have the ``nn.Linear`` layout, columns in sorted-name order, so state dicts move between
    ``ConcatFusion``, ``ConcatLinear`` and ``nn.Linear``.
    ``forward(embeddings)``: ``{name: (..., d_m)}`` (same leading shape) -> ``(..., out_features)``.
    Every modality must be given: fill a missing one first (``MissingEmbedding``).
    """

    def __init__(self, in_features: Mapping[str, int], out_features: int, *, bias: bool = True,
                 activation: str = "none", device=None, dtype=None) -> None:
        sizes = _feature_sizes(in_features)
        super().__init__(list(sizes.values()), out_features, bias=bias, activation=activation, device=device,
                         dtype=dtype)
        self.names = list(sizes)

    def forward(self, embeddings: Mapping[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        xs = _in_order(self.names, embeddings, "embeddings")
        return self._project(xs, self.names)

    def extra_repr(self) -> str:
        return f"names={self.names}, " + super().extra_repr()


class GatedMultimodalUnit(nn.Module):
    """Gated fusion after the Gated Multimodal Unit (Arevalo et al., "Gated Multimodal Units for
    Information Fusion", ICLR 2017 workshop), generalised from two modalities to M.

    Each modality's feature becomes ``h_m = tanh(W_m x_m)``; gate logits for every (modality, output
    feature) come from all features at once (``gate``, one ``ConcatFusion``); a softmax over the
    modalities present for the sample turns them into weights (with two modalities: the GMU's ``z`` and
    ``1 - z``), a missing modality gets weight 0, and the output is ``sum_m gate_m * h_m``.

    ``GatedMultimodalUnit(in_features, out_features)``, ``in_features`` ``{name: d_m}``.
    ``forward(features, present=None, return_gates=False)``: ``features`` ``{name: (B, d_m)}`` ->
    ``(B, out_features)``; with ``return_gates`` also the gates ``(B, M, out_features)`` (modalities in
    sorted order; they sum to 1 over the modalities present, all 0 for a sample with none). A missing
    sample's feature still enters the others' gate logits, so it must be finite: the models pass a
    learned stand-in (``MissingEmbedding``).
    """

    def __init__(self, in_features: Mapping[str, int], out_features: int, *, device=None, dtype=None) -> None:
        super().__init__()
        sizes = _feature_sizes(in_features)
        self.names, self.out_features = list(sizes), _positive_int(out_features, "out_features")
        fk = dict(device=device, dtype=dtype)
        self.proj = nn.ModuleDict({n: nn.Linear(d, self.out_features, **fk) for n, d in sizes.items()})
        self.gate = ConcatFusion(sizes, len(sizes) * self.out_features, **fk)

    def forward(self, features: Mapping[str, torch.Tensor], present: Optional[Mapping[str, torch.Tensor]] = None,
                return_gates: bool = False):
        xs = _in_order(self.names, features, "features")
        M = len(self.names)
        h = torch.stack([torch.tanh(self.proj[n](x)) for n, x in zip(self.names, xs)], 1)  # (B, M, d)
        logits = self.gate(features).unflatten(-1, (M, self.out_features))  # (B, M, d)
        here = _presence(self.names, present, xs[0])[..., None]  # (B, M, 1)
        # The lowest finite value, not -inf: a sample with no modality gets a uniform softmax (then 0 by
        # the mask) instead of NaN, and no NaN reaches the gradients.
        logits = logits.masked_fill(~here, torch.finfo(logits.dtype).min)
        gates = torch.softmax(logits, 1) * here.to(logits.dtype)
        fused = (gates * h).sum(1)
        return (fused, gates) if return_gates else fused


class WeightedMeanFusion(nn.Module):
    """Late fusion of per-modality decisions (or any same-shaped outputs): a learned weight per modality,
    ``softmax(logits)`` (equal at first), renormalised per sample over the modalities present. A missing
    modality casts no vote; its input is never read (it may hold anything, NaN included).

    ``WeightedMeanFusion(modalities)`` (names, or a mapping whose keys are the names).
    ``forward(inputs, present=None)``: ``{name: (B, *S)}`` (same shape) -> ``(B, *S)``; zeros for a
    sample with no modality present.
    """

    def __init__(self, modalities: Modalities, *, device=None, dtype=None) -> None:
        super().__init__()
        self.names = _modality_names(modalities, "modalities")
        self.logits = nn.Parameter(torch.zeros(len(self.names), device=device, dtype=dtype))

    def forward(self, inputs: Mapping[str, torch.Tensor],
                present: Optional[Mapping[str, torch.Tensor]] = None) -> torch.Tensor:
        xs = _in_order(self.names, inputs, "inputs")
        if any(x.shape != xs[0].shape for x in xs) or xs[0].dim() < 1:
            raise ValueError(f"inputs must all have one shape (B, ...), got "
                             f"{ {n: tuple(x.shape) for n, x in zip(self.names, xs)} }")
        x = torch.stack(xs, 1)  # (B, M, *S)
        here = _presence(self.names, present, x)  # (B, M)
        w = torch.softmax(self.logits, 0).to(x.dtype)[None, :] * here.to(x.dtype)
        w = w / w.sum(1, keepdim=True).clamp_min(1e-6)
        w = w.reshape(w.shape + (1,) * (x.dim() - 2))
        return torch.where(here.reshape(w.shape), w * x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(1)

    def extra_repr(self) -> str:
        return f"names={self.names}"


class CrossModalBlock(nn.Module):
    """A MulT-style cross-modal transformer block: target tokens attend to a source's tokens through
    ``CrossModalAttention`` (pre-norm, residual), then a feed-forward layer (pre-norm, residual).

    ``forward(target, source, source_lengths=None)``: ``target`` ``(B, Lt, d_model)``, ``source``
    ``(B, Ls, d_model)``, ``source_lengths`` ``(B,)`` (the source's valid tokens; ``kv_lengths`` of the
    attention) -> ``(B, Lt, d_model)``. A sample whose source has no valid token gets zero attention.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.1, *, device=None, dtype=None) -> None:
        super().__init__()
        fk = dict(device=device, dtype=dtype)
        self.norm_q, self.norm_kv, self.norm_ff = (nn.LayerNorm(d_model, **fk), nn.LayerNorm(d_model, **fk),
                                                   nn.LayerNorm(d_model, **fk))
        self.attn = CrossModalAttention(d_model, num_heads, **fk)
        self.ff = nn.Sequential(nn.Linear(d_model, 2 * d_model, **fk), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(2 * d_model, d_model, **fk))

    def forward(self, target: torch.Tensor, source: torch.Tensor,
                source_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        target = target + self.attn(self.norm_q(target), self.norm_kv(source), kv_lengths=source_lengths)
        return target + self.ff(self.norm_ff(target))


def _from_the_others(blocks: nn.ModuleDict, target: str, x: torch.Tensor, sources: Mapping[str, torch.Tensor],
                     lengths: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``target``'s tokens ``x`` through ``blocks["{target}_from_{s}"]`` for every other modality ``s`` in
    sorted order, each attending to ``sources[s]`` (its valid tokens: ``lengths[s]``)."""
    for s in sorted(sources):
        if s != target:
            x = blocks[f"{target}_from_{s}"](x, sources[s], lengths[s])
    return x


def _pool_and_fuse(tokens: Mapping[str, torch.Tensor], lengths: Mapping[str, torch.Tensor],
                   missing: MissingEmbedding, fuse: ConcatFusion) -> torch.Tensor:
    """Each modality's mean over its valid tokens, its learned stand-in where it has none, then the
    concat-projection: how token-level fusion (``CrossModalFusion``, layer-wise models) ends."""
    pooled = {n: masked_mean(tokens[n], lengths[n]) for n in missing.names}
    return fuse(missing(pooled, {n: lengths[n] > 0 for n in missing.names}))


class CrossModalFusion(nn.Module):
    """MulT-style attention fusion (Tsai et al., "Multimodal Transformer for Unaligned Multimodal
    Language Sequences", ACL 2019): each modality's tokens (the target) attend in turn to every other
    modality's tokens (the sources, in sorted order), one ``CrossModalBlock`` per ordered pair
    (``blocks["{target}_from_{source}"]``); each target is then averaged over its valid tokens, replaced
    by its learned stand-in (``missing``) where it has none, and the targets are fused by ``fuse``, a
    ``ConcatFusion`` (``activation`` applied).

    ``CrossModalFusion(modalities, d_model, out_features, *, num_heads=4, dropout=0.1, activation="gelu")``.
    ``forward(tokens, lengths=None)``: ``tokens`` ``{name: (B, L_m, d_model)}`` (lengths may differ per
    modality) -> ``(B, out_features)``. A modality with 0 valid tokens in a sample is missing there: it
    is never attended to (zero attention) and its pooled feature is its stand-in.
    """

    def __init__(self, modalities: Modalities, d_model: int, out_features: int, *, num_heads: int = 4,
                 dropout: float = 0.1, activation: str = "gelu", device=None, dtype=None) -> None:
        super().__init__()
        self.names = _modality_names(modalities, "modalities")
        self.d_model = _positive_int(d_model, "d_model")
        fk = dict(device=device, dtype=dtype)
        sizes = {n: self.d_model for n in self.names}
        self.missing = MissingEmbedding(sizes, **fk)
        self.blocks = nn.ModuleDict({f"{t}_from_{s}": CrossModalBlock(self.d_model, num_heads, dropout, **fk)
                                     for t in self.names for s in self.names if s != t})
        self.fuse = ConcatFusion(sizes, out_features, activation=activation, **fk)

    def forward(self, tokens: Mapping[str, torch.Tensor],
                lengths: Optional[Mapping[str, torch.Tensor]] = None) -> torch.Tensor:
        toks = _check_tokens(self.names, tokens, self.d_model)
        lens = _all_lengths(self.names, toks, lengths)
        out = {t: _from_the_others(self.blocks, t, toks[t], toks, lens) for t in self.names}
        return _pool_and_fuse(out, lens, self.missing, self.fuse)


class LayerwiseFusionBlock(nn.Module):
    """One layer of layer-wise fusion: every modality's tokens first pass their own block
    (``blocks["{m}_from_{m}"]``: self-attention over their valid tokens, then a feed-forward layer), then
    attend to each other modality's tokens of this layer, after their own blocks
    (``blocks["{target}_from_{source}"]``, sources in sorted order). Every target sees the same sources,
    so the result does not depend on the order targets are computed in. Stack several: the output is
    the next block's ``tokens``.

    ``LayerwiseFusionBlock(modalities, d_model, *, num_heads=4, dropout=0.1)``.
    ``forward(tokens, lengths=None)``: ``{name: (B, L_m, d_model)}`` -> ``{name: (B, L_m, d_model)}``.
    Positions at or beyond a modality's length are never attended to (their outputs are computed but
    carry no information into valid positions); a modality with 0 valid tokens gives zero attention.
    """

    def __init__(self, modalities: Modalities, d_model: int, *, num_heads: int = 4, dropout: float = 0.1,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.names = _modality_names(modalities, "modalities")
        self.d_model = _positive_int(d_model, "d_model")
        self.blocks = nn.ModuleDict({f"{t}_from_{s}": CrossModalBlock(self.d_model, num_heads, dropout,
                                                                      device=device, dtype=dtype)
                                     for t in self.names for s in self.names})  # s == t: the self block

    def forward(self, tokens: Mapping[str, torch.Tensor],
                lengths: Optional[Mapping[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        toks = _check_tokens(self.names, tokens, self.d_model)
        lens = _all_lengths(self.names, toks, lengths)
        own = {n: self.blocks[f"{n}_from_{n}"](toks[n], toks[n], lens[n]) for n in self.names}
        return {t: _from_the_others(self.blocks, t, own[t], own, lens) for t in self.names}
