"""``cross_attention``: argument validation, the public function, fake tensors and autograd for the
``mmkernels::cross_attention_fwd`` / ``cross_attention_bwd`` operators (declared in csrc/mmkernels.cpp),
and the eager fast path's autograd node."""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from .. import _C, _sharding, reference
from . import _common
from ._common import (_autocast, _backward_op, _below_autograd, _check_device, _check_float, _check_tensor,
                      _eager_fast_path, _input_grads, _needs_autograd, _shape, _vjp)

MAX_HEAD_DIM = int(_C.MAX_HEAD_DIM)
# Saved log-sum-exp dtype per input dtype: the rule lives in csrc/common/dtype.h.
_LSE_DTYPE = {dt: getattr(torch, _C._lse_dtype(str(dt).split(".")[-1]))
              for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}


def _layout_hint(q, k) -> str:
    """A (B, H, L, D) tensor passed where (B, L, H, D) is expected usually shows as inconsistent heads."""
    if q.shape[1] == k.shape[1] and q.shape[2] != k.shape[2] and k.shape[0] == q.shape[0]:
        return ("; q and k have the same size in dim 1: if they are laid out (B, H, L, D) (as in Hugging Face "
                "models), pass q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)")
    return ""


def _validate_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale):
    for x, name, layout in ((q, "q", "(B, Lq, H, D)"), (k, "k", "(B, Lk, Hkv, D)"), (v, "v", "(B, Lk, Hkv, Dv)")):
        _check_tensor(x, name)
        if x.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor {layout}, got shape {_shape(x)}")
    _check_float(q, "q")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must have the same dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    _check_device(k, "k", q, "q")
    _check_device(v, "v", q, "q")
    B, Lq, H, D = q.shape
    Lk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"k and v must have batch size B={B} like q, got k {_shape(k)}, v {_shape(v)}")
    if k.shape[3] != D:
        raise ValueError(f"k must have head dim D={D} like q (q {_shape(q)}), got k {_shape(k)}{_layout_hint(q, k)}")
    if v.shape[1] != Lk or v.shape[2] != Hkv:
        raise ValueError(f"v must be (B, Lk, Hkv, Dv) = ({B}, {Lk}, {Hkv}, Dv) like k, got v {_shape(v)}")
    if Hkv < 1 or H % Hkv != 0:
        raise ValueError(f"q has H={H} heads, which must be a multiple of the Hkv={Hkv} key/value heads of k and v "
                         f"(q {_shape(q)}, k {_shape(k)}){_layout_hint(q, k)}")
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"q and k must have a head dim D in 1..{MAX_HEAD_DIM}, got D={D} (q {_shape(q)})")
    if not 1 <= Dv <= MAX_HEAD_DIM:
        raise ValueError(f"v must have a head dim Dv in 1..{MAX_HEAD_DIM}, got Dv={Dv} (v {_shape(v)})")
    if kv_lengths is not None:
        _check_tensor(kv_lengths, "kv_lengths")
        if kv_lengths.dtype.is_floating_point or kv_lengths.dtype.is_complex or kv_lengths.dtype == torch.bool:
            raise TypeError(f"kv_lengths must be an integer tensor, got {kv_lengths.dtype}")
        if _shape(kv_lengths) != (B,):
            raise ValueError(f"kv_lengths must have shape (B,) = ({B},), got {_shape(kv_lengths)}")
        _check_device(kv_lengths, "kv_lengths", q, "q")
    if key_padding_mask is not None:
        _check_tensor(key_padding_mask, "key_padding_mask")
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask must be a bool tensor (True = ignore the key), got {key_padding_mask.dtype}")
        if _shape(key_padding_mask) != (B, Lk):
            raise ValueError(f"key_padding_mask must have shape (B, Lk) = ({B}, {Lk}), got {_shape(key_padding_mask)}")
        _check_device(key_padding_mask, "key_padding_mask", q, "q")
    if scale is None:
        return 1.0 / math.sqrt(D)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return scale


# ---------------------------------------------------------------------------------------------------
# cross_attention


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
    """Fused cross-modal attention.

    Args:
        q: ``(B, Lq, H, D)`` queries (one modality).
        k: ``(B, Lk, Hkv, D)`` keys (another modality), ``H % Hkv == 0`` (grouped-query attention:
            query head ``h`` reads key/value head ``h // (H // Hkv)``).
        v: ``(B, Lk, Hkv, Dv)`` values.
        kv_lengths: optional integer ``(B,)``; keys at index ``>= kv_lengths[b]`` are ignored (and
            their blocks skipped, not computed). ``0 <= kv_lengths[b] <= Lk``: on CPU a value outside
            raises ``ValueError``; on CUDA it is clamped to ``[0, Lk]`` (checking would synchronise
            the device with the host) unless inside ``mmkernels.debug_checks()``, where it raises.
        key_padding_mask: optional bool ``(B, Lk)``, ``True`` = ignore this key.
        scale: softmax scale, default ``1/sqrt(D)``.
        is_causal: query ``i`` sees only keys ``j <= i + (n_b - Lq)`` with ``n_b = kv_lengths[b]`` (else
            ``Lk``): bottom-right aligned (FlashAttention 2, KV-cache decoding); key blocks above the
            diagonal are skipped. ``key_padding_mask`` masks keys without moving the diagonal.

    Returns:
        ``(B, Lq, H, Dv)`` in ``q``'s dtype. Query rows with no valid key are zeros (zero gradient).
    """
    if all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        q, k, v = _autocast(q, k, v)
    scale = _validate_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale)
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    kv_lengths, key_padding_mask = _sharding.replicate_plain_masks(q, kv_lengths, key_padding_mask)
    if _common._USE_REFERENCE:
        return reference.cross_attention(q, k, v, kv_lengths=kv_lengths, key_padding_mask=key_padding_mask, scale=scale,
                                         is_causal=is_causal)
    args = (q, k, v, kv_lengths, key_padding_mask, scale, is_causal)
    if not _eager_fast_path((q, k, v, kv_lengths, key_padding_mask)):
        return torch.ops.mmkernels.cross_attention_fwd(*args)[0]
    if _needs_autograd((q, k, v)):
        return _CrossAttentionFn.apply(*args)
    return _below_autograd(torch.ops.mmkernels.cross_attention_fwd.default, *args)[0]


@torch.library.register_fake("mmkernels::cross_attention_fwd")
def _cross_attention_fwd_fake(q, k, v, kv_lengths, key_padding_mask, scale, is_causal=False):
    # The same checks as eager: torch.compile reports bad arguments at trace time, and a call that
    # dispatches here because one argument is on the meta device is rejected, not answered.
    _validate_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale)
    B, Lq, H, _ = q.shape
    lse_dtype = _LSE_DTYPE[q.dtype]
    return q.new_empty((B, Lq, H, v.shape[-1])), q.new_empty((B, H, Lq), dtype=lse_dtype)


@torch.library.register_fake("mmkernels::cross_attention_bwd")
def _cross_attention_bwd_fake(grad_out, q, k, v, out, lse, kv_lengths, key_padding_mask, scale, is_causal=False):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _cross_attention_setup(ctx, inputs, output):
    _cross_attention_save(ctx, inputs, output)
    ctx.mark_non_differentiable(output[1])


def _cross_attention_save(ctx, inputs, output):
    q, k, v, kv_lengths, key_padding_mask, scale, is_causal = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, kv_lengths, key_padding_mask)
    ctx.scale = scale
    ctx.is_causal = is_causal



def _cross_attention_vjp(grad_out, q, k, v, kv_lengths, key_padding_mask, scale, is_causal, needs=(True,) * 3):
    """(dq, dk, dv) of the reference attention: differentiable in grad_out, q, k, v with grad mode on."""
    fn = lambda q, k, v: reference.cross_attention(
        q, k, v, kv_lengths=kv_lengths, key_padding_mask=key_padding_mask, scale=scale, is_causal=is_causal
    )
    return _vjp(fn, (q, k, v), needs, grad_out)


def _cross_attention_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, kv_lengths, key_padding_mask = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: higher-order gradients through the reference
        dq, dk, dv = _cross_attention_vjp(grad_out, q, k, v, kv_lengths, key_padding_mask, ctx.scale, ctx.is_causal,
                                          ctx.needs_input_grad[:3])
        return _input_grads(ctx, dq, dk, dv)
    tensors = (grad_out, q, k, v, out, lse, kv_lengths, key_padding_mask)
    dq, dk, dv = _backward_op(torch.ops.mmkernels.cross_attention_bwd, tensors, *tensors, ctx.scale, ctx.is_causal)
    return _input_grads(ctx, dq, dk, dv)


torch.library.register_autograd(
    "mmkernels::cross_attention_fwd", _cross_attention_backward, setup_context=_cross_attention_setup
)


# The backward op's own autograd formula (what opcheck, and a user differentiating the op directly, run):
# the derivative of the reference VJP. That VJP is a function of (grad_out, q, k, v) alone; out and lse
# are cross_attention_fwd's outputs for these q, k, v (the op's contract) and get no gradient.
def _cross_attention_bwd_setup(ctx, inputs, output):
    grad_out, q, k, v, _out, _lse, kv_lengths, key_padding_mask, scale, is_causal = inputs
    ctx.save_for_backward(grad_out, q, k, v, kv_lengths, key_padding_mask)
    ctx.scale, ctx.is_causal = scale, is_causal


def _cross_attention_bwd_backward(ctx, gdq, gdk, gdv):
    grad_out, q, k, v, kv_lengths, key_padding_mask = ctx.saved_tensors
    fn = lambda g, q, k, v: _cross_attention_vjp(g, q, k, v, kv_lengths, key_padding_mask, ctx.scale, ctx.is_causal)
    grads = _vjp(fn, (grad_out, q, k, v), ctx.needs_input_grad[:4], (gdq, gdk, gdv))
    return _input_grads(ctx, *grads)


torch.library.register_autograd(
    "mmkernels::cross_attention_bwd", _cross_attention_bwd_backward, setup_context=_cross_attention_bwd_setup
)


class _CrossAttentionFn(torch.autograd.Function):
    """The eager fast path's autograd node: the registered setup and backward, the op below Autograd."""

    @staticmethod
    def forward(ctx, q, k, v, kv_lengths, key_padding_mask, scale, is_causal):
        args = (q, k, v, kv_lengths, key_padding_mask, scale, is_causal)
        out, lse = _below_autograd(torch.ops.mmkernels.cross_attention_fwd.default, *args)
        _cross_attention_save(ctx, args, (out, lse))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _cross_attention_backward(ctx, grad_out, None)
