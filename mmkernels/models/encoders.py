"""Modality encoders. Each maps its input to tokens ``(B, L, d)``, token lengths ``(B,)`` and a pooled
``(B, d)`` feature, so every fusion model can use any mix of modalities."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import nn

Encoded = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # tokens, lengths, pooled


@dataclass(frozen=True)
class ModalitySpec:
    """``kind``: "image" (``(B, C, H, W)``), "sequence" (``(B, T, F)`` + lengths), "vector" (``(B, F)``).
    ``channels_or_features``: C for images, F for sequences and vectors. ``sequence_model``: "conv" or "gru"."""

    kind: str
    channels_or_features: int
    sequence_model: str = "conv"

    def __post_init__(self):
        if self.kind not in ("image", "sequence", "vector"):
            raise ValueError(f"ModalitySpec.kind must be 'image', 'sequence' or 'vector', got {self.kind!r}")
        if self.sequence_model not in ("conv", "gru"):
            raise ValueError(f"ModalitySpec.sequence_model must be 'conv' or 'gru', got {self.sequence_model!r}")


def masked_mean(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the first ``lengths[b]`` tokens; zeros where the length is 0."""
    L = tokens.shape[1]
    valid = (torch.arange(L, device=tokens.device)[None, :] < lengths[:, None]).to(tokens.dtype)
    return (tokens * valid[..., None]).sum(1) / lengths.clamp_min(1).to(tokens.dtype)[:, None]


class ImageEncoder(nn.Module):
    """2-D conv stack; every spatial position of the last feature map is a token."""

    def __init__(self, in_channels: int, d_model: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.GELU(),
        )
        self.proj = nn.Linear(2 * width, d_model)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Encoded:
        if x.dim() != 4:
            raise ValueError(f"image input must be (B, C, H, W), got {tuple(x.shape)}")
        f = self.net(x)  # (B, C', h, w)
        tokens = self.proj(f.flatten(2).transpose(1, 2))
        lens = torch.full((x.shape[0],), tokens.shape[1], dtype=torch.int64, device=x.device)
        return tokens, lens, tokens.mean(1)


class SequenceEncoder(nn.Module):
    """Variable-length sequences (e.g. audio frames): 1-D convs (stride 2), optionally a GRU on top.
    Lengths follow the striding; padded positions never reach the pooled feature."""

    def __init__(self, in_features: int, d_model: int, model: str = "conv"):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_features, d_model, 5, padding=2), nn.GELU(),
            nn.Conv1d(d_model, d_model, 5, padding=2, stride=2), nn.GELU(),
            nn.Conv1d(d_model, d_model, 3, padding=1), nn.GELU(),
        )
        self.gru = nn.GRU(d_model, d_model, batch_first=True) if model == "gru" else None

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Encoded:
        if x.dim() != 3:
            raise ValueError(f"sequence input must be (B, T, F), got {tuple(x.shape)}")
        B, T, _ = x.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.int64)
        valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
        h = self.conv((x * valid[..., None]).transpose(1, 2)).transpose(1, 2)  # (B, ceil(T/2), d)
        out_lens = torch.div(lengths + 1, 2, rounding_mode="floor").clamp(max=h.shape[1])
        if self.gru is not None:
            T2 = h.shape[1]
            packed = nn.utils.rnn.pack_padded_sequence(h, out_lens.clamp_min(1).cpu(), batch_first=True,
                                                       enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=T2)
        return h, out_lens, masked_mean(h, out_lens)


class VectorEncoder(nn.Module):
    """Dense feature vectors: a two-layer MLP; one token."""

    def __init__(self, in_features: int, d_model: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Encoded:
        if x.dim() != 2:
            raise ValueError(f"vector input must be (B, F), got {tuple(x.shape)}")
        h = self.net(x)
        return h[:, None], torch.ones(x.shape[0], dtype=torch.int64, device=x.device), h


def make_encoder(spec: Union[ModalitySpec, tuple, dict], d_model: int) -> nn.Module:
    if isinstance(spec, dict):
        spec = ModalitySpec(**spec)
    elif isinstance(spec, tuple):
        spec = ModalitySpec(*spec)
    if spec.kind == "image":
        return ImageEncoder(spec.channels_or_features, d_model)
    if spec.kind == "sequence":
        return SequenceEncoder(spec.channels_or_features, d_model, spec.sequence_model)
    return VectorEncoder(spec.channels_or_features, d_model)
