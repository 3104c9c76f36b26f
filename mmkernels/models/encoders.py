"""Modality encoders. Each maps its input to an ``EncoderOutput``: tokens ``(B, L, d)``, token lengths
``(B,)`` and a pooled ``(B, d)`` feature (the mean of the valid tokens), so every fusion model can use
any mix of modalities."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import torch
from torch import nn

from ..nn.fusion import masked_mean, token_lengths
from ._legacy import LoadsLegacyKeys


class EncoderOutput(NamedTuple):
    """One encoder's output: ``tokens (B, L, d)``, ``lengths (B,)`` valid tokens per sample, ``pooled
    (B, d)`` the mean of the valid tokens (zeros where there are none)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    pooled: torch.Tensor


KINDS = ("image", "sequence", "vector", "text")
SEQUENCE_MODELS = ("conv", "gru", "lstm")


@dataclass(frozen=True)
class ModalitySpec:
    """``kind``: "image" (``(B, C, H, W)``), "sequence" (``(B, T, F)`` float + lengths), "vector"
    (``(B, F)``), "text" (``(B, T)`` int64 token ids + lengths; id 0 is padding).
    ``channels_or_features``: C for images, F for sequences and vectors, the vocabulary size for text.
    ``sequence_model`` (sequence and text): "conv" (sequence: 1-D convs only; text: one conv), "gru" or
    "lstm" (a recurrent layer that never sees the padding); default "conv" for sequences, "lstm" for text."""

    kind: str
    channels_or_features: int
    sequence_model: Optional[str] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ModalitySpec.kind must be one of {KINDS}, got {self.kind!r}")
        if self.sequence_model is not None and self.sequence_model not in SEQUENCE_MODELS:
            raise ValueError(f"ModalitySpec.sequence_model must be one of {SEQUENCE_MODELS}, got {self.sequence_model!r}")
        if isinstance(self.channels_or_features, bool) or not isinstance(self.channels_or_features, int) \
                or self.channels_or_features < 1:
            raise ValueError(f"ModalitySpec.channels_or_features must be a positive int, got {self.channels_or_features!r}")


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

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> EncoderOutput:
        if x.dim() != 4:
            raise ValueError(f"image input must be (B, C, H, W), got {tuple(x.shape)}")
        f = self.net(x)  # (B, C', h, w)
        tokens = self.proj(f.flatten(2).transpose(1, 2))
        return EncoderOutput(tokens, token_lengths(tokens, None), tokens.mean(1))


def _recurrent(model: str, d_model: int) -> Optional[nn.Module]:
    if model == "gru":
        return nn.GRU(d_model, d_model, batch_first=True)
    if model == "lstm":
        return nn.LSTM(d_model, d_model, batch_first=True)
    return None


def _run_recurrent(rnn: nn.Module, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The RNN over each sample's first ``lengths`` steps only (packed); padded steps come back as 0."""
    packed = nn.utils.rnn.pack_padded_sequence(h, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = nn.utils.rnn.pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=h.shape[1])
    return out


class SequenceEncoder(LoadsLegacyKeys):
    """Variable-length sequences (e.g. audio frames): 1-D convs (stride 2), optionally a GRU or LSTM on
    top (``rnn``; None for "conv"). Lengths follow the striding; padded positions never reach the pooled
    feature."""

    _legacy_keys = ((r"gru\.", "rnn."),)  # layout 1 (README, "State dicts") called it gru, even an LSTM

    def __init__(self, in_features: int, d_model: int, model: str = "conv"):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_features, d_model, 5, padding=2), nn.GELU(),
            nn.Conv1d(d_model, d_model, 5, padding=2, stride=2), nn.GELU(),
            nn.Conv1d(d_model, d_model, 3, padding=1), nn.GELU(),
        )
        self.rnn = _recurrent(model, d_model)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> EncoderOutput:
        if x.dim() != 3:
            raise ValueError(f"sequence input must be (B, T, F), got {tuple(x.shape)}")
        T = x.shape[1]
        lengths = token_lengths(x, lengths)
        valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
        h = self.conv((x * valid[..., None]).transpose(1, 2)).transpose(1, 2)  # (B, ceil(T/2), d)
        out_lens = torch.div(lengths + 1, 2, rounding_mode="floor").clamp(max=h.shape[1])
        if self.rnn is not None:
            h = _run_recurrent(self.rnn, h, out_lens)
        return EncoderOutput(h, out_lens, masked_mean(h, out_lens))


class TextEncoder(nn.Module):
    """Token ids ``(B, T)`` int64 with lengths: embedding (id 0 = padding), then an LSTM or GRU over the
    valid tokens only ("conv": one 1-D conv over the masked embeddings). One token per input token."""

    def __init__(self, vocab_size: int, d_model: int, model: str = "lstm"):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.rnn = _recurrent(model, d_model)
        self.conv = nn.Sequential(nn.Conv1d(d_model, d_model, 3, padding=1), nn.GELU()) if self.rnn is None else None

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> EncoderOutput:
        if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"text input must be (B, T) int64 token ids, got {tuple(x.shape)} {x.dtype}")
        lengths = token_lengths(x, lengths)
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        h = self.embed(torch.where(valid, x.long(), torch.zeros_like(x, dtype=torch.long)))
        if self.rnn is not None:
            h = _run_recurrent(self.rnn, h, lengths)
        else:
            h = self.conv(h.transpose(1, 2)).transpose(1, 2) * valid[..., None].to(h.dtype)
        return EncoderOutput(h, lengths, masked_mean(h, lengths))


class VectorEncoder(nn.Module):
    """Dense feature vectors: a two-layer MLP; one token."""

    def __init__(self, in_features: int, d_model: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> EncoderOutput:
        if x.dim() != 2:
            raise ValueError(f"vector input must be (B, F), got {tuple(x.shape)}")
        h = self.net(x)
        return EncoderOutput(h[:, None], torch.ones(x.shape[0], dtype=torch.int64, device=x.device), h)


def make_encoder(spec: Union[ModalitySpec, tuple, dict], d_model: int) -> nn.Module:
    if isinstance(spec, dict):
        spec = ModalitySpec(**spec)
    elif isinstance(spec, tuple):
        spec = ModalitySpec(*spec)
    if spec.kind == "image":
        return ImageEncoder(spec.channels_or_features, d_model)
    if spec.kind == "sequence":
        return SequenceEncoder(spec.channels_or_features, d_model, spec.sequence_model or "conv")
    if spec.kind == "text":
        return TextEncoder(spec.channels_or_features, d_model, spec.sequence_model or "lstm")
    return VectorEncoder(spec.channels_or_features, d_model)
