"""Plain-PyTorch implementations of mmkernels' ops with exactly the same semantics.

These are the ground truth for the tests and the eager baseline for the benchmarks. They materialise
the full (Lq x Lk) score matrix and the concatenation on purpose: that is what the fused ops avoid.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["cross_attention", "concat_linear", "key_valid_mask", "apply_activation", "ACTIVATIONS"]

from ._C import ACTIVATIONS  # noqa: E402  (defined once, in csrc/common/activation.h)


def key_valid_mask(
    batch: int,
    lk: int,
    device: torch.device,
    kv_lengths: Optional[torch.Tensor] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
) -> Optional[torch.Tensor]:
    """(B, Lk) bool, True where a key counts; None when every key counts."""
    valid = None
    if kv_lengths is not None:
        valid = torch.arange(lk, device=device)[None, :] < kv_lengths.to(device=device).reshape(-1, 1)
    if key_padding_mask is not None:
        keep = ~key_padding_mask.to(device=device, dtype=torch.bool)
        valid = keep if valid is None else valid & keep
    return valid


def cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kv_lengths: Optional[torch.Tensor] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """softmax(q k^T * scale, over valid keys) v for (B, L, H, D) tensors; GQA; zeros for rows without keys.

    ``is_causal``: query i sees keys j <= i + (n_b - Lq), n_b = kv_lengths[b] (else Lk): bottom-right
    aligned, as FlashAttention 2 and KV-cache decoding.

    Computes in q's dtype (as plain PyTorch would), except for the masked softmax itself which is
    done with torch.softmax's own internal float accumulation.
    """
    B, Lq, H, D = q.shape
    Lk, Hkv = k.shape[1], k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    group = H // Hkv
    qh = q.transpose(1, 2)  # (B, H, Lq, D)
    kh = k.transpose(1, 2).repeat_interleave(group, dim=1)  # (B, H, Lk, D)
    vh = v.transpose(1, 2).repeat_interleave(group, dim=1)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    valid = key_valid_mask(B, Lk, q.device, kv_lengths, key_padding_mask)
    if valid is not None:
        valid = valid[:, None, None, :]  # (B, 1, 1, Lk)
    if is_causal:
        n = kv_lengths.to(q.device).clamp(0, Lk) if kv_lengths is not None else torch.full((B,), Lk, device=q.device)
        i, j = torch.arange(Lq, device=q.device), torch.arange(Lk, device=q.device)
        causal = j[None, None, :] <= i[None, :, None] + (n - Lq)[:, None, None]  # (B, Lq, Lk)
        valid = causal[:, None] if valid is None else valid & causal[:, None]
    if valid is not None:
        s = s.masked_fill(~valid, float("-inf"))
    p = torch.softmax(s, dim=-1)
    if valid is not None:
        # rows whose keys are all masked: softmax gives NaN; the contract says zeros
        p = p.masked_fill(~valid.any(-1, keepdim=True), 0.0)
    out = torch.matmul(p, vh)  # (B, H, Lq, Dv)
    return out.transpose(1, 2)


def apply_activation(z: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "none":
        return z
    if activation == "relu":
        return F.relu(z)
    if activation == "gelu":
        return F.gelu(z)
    if activation == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    if activation == "silu":
        return F.silu(z)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def concat_linear(
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
) -> torch.Tensor:
    """act(cat(inputs, -1) @ weight.T + bias)."""
    return apply_activation(F.linear(torch.cat(list(inputs), dim=-1), weight, bias), activation)
