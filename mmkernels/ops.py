"""Public ops: argument validation, custom-op registration (fake tensors, autograd), reference switch.

The native operators live in ``torch.ops.mmkernels`` (declared in csrc/mmkernels.cpp). This module is
the contract-facing layer: it validates arguments with clear ``ValueError``/``TypeError`` messages,
then calls the operator, so eager mode, ``torch.compile(fullgraph=True)`` and ``opcheck`` all go
through the same registered kernels.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from typing import Iterator, Optional, Sequence

import torch

from . import _sharding, reference
from . import _C  # noqa: F401  (loads the native library; registers torch.ops.mmkernels.*)

__all__ = ["cross_attention", "concat_linear", "use_reference_ops", "using_reference_ops", "cpu_capability"]

ACTIVATIONS = tuple(_C.ACTIVATIONS)  # the C++ order is the op's activation code
_ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = int(_C.MAX_HEAD_DIM)
# Saved log-sum-exp dtype per input dtype: the rule lives in csrc/common/dtype.h.
_LSE_DTYPE = {dt: getattr(torch, _C._lse_dtype(str(dt).split(".")[-1]))
              for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}

# ---------------------------------------------------------------------------------------------------
# Reference-op switch: every layer and model calls the two functions below, so one flag moves a whole
# model onto the plain-PyTorch implementations for A/B comparisons.
_USE_REFERENCE = False


@contextlib.contextmanager
def use_reference_ops(enabled: bool = True) -> Iterator[None]:
    """Within this context, ``cross_attention``/``concat_linear`` (and so every mmkernels layer and
    model) run the plain-PyTorch reference implementations instead of the fused kernels."""
    global _USE_REFERENCE
    previous = _USE_REFERENCE
    _USE_REFERENCE = bool(enabled)
    try:
        yield
    finally:
        _USE_REFERENCE = previous


def using_reference_ops() -> bool:
    """True inside ``use_reference_ops()``."""
    return _USE_REFERENCE


def cpu_capability() -> str:
    """Instruction set the CPU kernels use on this machine ("avx512", "avx2" or "default")."""
    return _C.cpu_capability()


# ---------------------------------------------------------------------------------------------------
# Validation helpers


def _check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_float(x: torch.Tensor, name: str) -> None:
    # float64 is for the CPU kernels (gradcheck); under emulated_cuda() the C++ glue rejects it too.
    allowed = _FLOAT_DTYPES + ((torch.float64,) if x.device.type == "cpu" else ())
    if x.dtype not in allowed:
        extra = " (float64 is supported on CPU only)" if x.dtype == torch.float64 else ""
        raise TypeError(f"{name} must be float32, float16 or bfloat16 (or float64 on CPU), got {x.dtype}{extra}")


def _check_device(x: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if x.device != ref.device:
        raise ValueError(f"{name} must be on the same device as {ref_name} ({ref.device}), got {x.device}")


def _shape(x: torch.Tensor) -> tuple:
    return tuple(x.shape)


def _autocast(*tensors):
    """Under ``torch.autocast`` both ops run in the autocast dtype (like matmul-based ops do): floating
    inputs are cast to it, so mixed float32/low-precision arguments inside a region just work."""
    ref = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if ref is None:
        return tensors
    device_type = ref.device.type
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(
        t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype in (torch.float32, torch.float16, torch.bfloat16) else t
        for t in tensors
    )


# ---------------------------------------------------------------------------------------------------
# Eager fast path. Calling a torch.library op with Python-registered autograd costs ~40-90 us of
# Python per call (argument flattening, default filling, a redispatch), which is the whole runtime of a
# small GPU call. In plain eager mode the public functions therefore call the kernels below the
# Autograd key through their own autograd.Function, which shares the registered setup/backward code
# below. Under torch.compile, functorch transforms, dispatch modes and tensor subclasses the op goes
# through the dispatcher as registered (what opcheck/compile test).


def _in_dispatch_mode() -> bool:  # any TorchDispatchMode, infra modes (fake, proxy, functional) included
    from torch.utils import _python_dispatch as pd

    if hasattr(pd, "is_in_torch_dispatch_mode"):
        return pd.is_in_torch_dispatch_mode()
    return torch._C._len_torch_dispatch_stack() > 0


def _eager_fast_path(tensors) -> bool:
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    if _in_dispatch_mode() or torch._C._len_torch_function_stack() > 0:
        return False
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or t.device.type not in ("cpu", "cuda")):
            return False
    return True


def _check_cuda_lengths(kv_lengths, Lk) -> None:
    """The C++ op checks this too (csrc/cross_attention/cuda); checking first in eager mode keeps the
    error a ValueError: on the first GPU run a C++ throw from the CUDA glue crashed the process
    (benchmarks/NOTES.md, run 2). One reduction and one host copy, as in C++; skipped while a CUDA
    graph is captured (the kernels clamp the lengths)."""
    if kv_lengths.numel() == 0 or (kv_lengths.is_cuda and torch.cuda.is_current_stream_capturing()):
        return
    lo, hi = torch.stack([kv_lengths.min(), kv_lengths.max()]).tolist()
    if lo < 0 or hi > Lk:
        raise ValueError(f"kv_lengths must lie in [0, Lk] = [0, {Lk}], got values in [{lo}, {hi}]")


def _needs_autograd(tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _below_autograd(op, *args):
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


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
            their blocks skipped, not computed). ``0 <= kv_lengths[b] <= Lk``.
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
    if _USE_REFERENCE:
        return reference.cross_attention(q, k, v, kv_lengths=kv_lengths, key_padding_mask=key_padding_mask, scale=scale,
                                         is_causal=is_causal)
    args = (q, k, v, kv_lengths, key_padding_mask, scale, is_causal)
    if not _eager_fast_path((q, k, v, kv_lengths, key_padding_mask)):
        return torch.ops.mmkernels.cross_attention_fwd(*args)[0]
    if kv_lengths is not None and kv_lengths.is_cuda:
        _check_cuda_lengths(kv_lengths, k.shape[1])
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


def _vjp(fn, primals, needs, cotangents):
    """Gradients of ``fn(*primals)`` (a plain-PyTorch formulation returning a tensor or a sequence of
    tensors, matched with ``cotangents``; ``None`` cotangents are skipped) for the primals in ``needs``;
    ``None`` for the others, zeros for a needed primal the outputs do not depend on.

    With grad mode on (a backward run with ``create_graph=True``) the result is a differentiable graph
    of the primals, so second- and higher-order gradients (gradient penalties, Hessian-vector products,
    MAML) are correct; with it off, plain tensors. The fused backward kernels compute first-order
    gradients only: this is the formula every higher order goes through."""
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        xs = [p if p is None or (create and p.requires_grad) else p.detach().requires_grad_(bool(n))
              for p, n in zip(primals, needs)]
        outs = fn(*xs)
        outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
        cotangents = [cotangents] if isinstance(cotangents, torch.Tensor) else list(cotangents)
        pairs = [(o, c) for o, c in zip(outs, cotangents) if c is not None and o.requires_grad]
        wanted = [x for x, n in zip(xs, needs) if n and x is not None]
        grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [c for _, c in pairs], create_graph=create,
                                         allow_unused=True) if pairs and wanted else [None] * len(wanted))
    result = []
    for p, n in zip(primals, needs):
        g = next(grads) if (n and p is not None) else None
        result.append(torch.zeros_like(p) if (g is None and n and p is not None) else g)
    return result


def _input_grads(ctx, *grads):
    """An autograd formula's return: the gradients of the leading inputs, then None for each remaining
    (non-tensor or optional) argument the op was called with; the dispatcher may have dropped trailing
    arguments equal to their defaults, and the return must match the call's structure."""
    return (*grads, *([None] * (len(ctx.needs_input_grad) - len(grads))))


def _backward_op(op, tensors, *args):
    """Calls a backward op from an autograd formula (grad mode off). In plain eager mode the kernel is
    called below Autograd: the op's own autograd formula (registered below, for differentiating the
    backward op itself) would only add its Python dispatch cost to every first-order backward."""
    if _eager_fast_path(tensors):
        return _below_autograd(op.default, *args)
    return op(*args)


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


# ---------------------------------------------------------------------------------------------------
# concat_linear


def _validate_concat_linear(inputs, weight, bias, activation):
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, (list, tuple)):
        raise TypeError(f"inputs must be a non-empty list or tuple of tensors, got {type(inputs).__name__}")
    if len(inputs) == 0:
        raise ValueError("inputs must be a non-empty list or tuple of tensors, got an empty one")
    for i, x in enumerate(inputs):
        _check_tensor(x, f"inputs[{i}]")
    x0 = inputs[0]
    if x0.dim() < 1:
        raise ValueError("inputs[0] must have at least one dimension (..., d_0), got a 0-D tensor")
    _check_float(x0, "inputs[0]")
    lead = _shape(x0)[:-1]
    for i, x in enumerate(inputs[1:], start=1):
        if x.dtype != x0.dtype:
            raise TypeError(f"inputs[{i}] must have dtype {x0.dtype} like inputs[0], got {x.dtype}")
        _check_device(x, f"inputs[{i}]", x0, "inputs[0]")
        if x.dim() != x0.dim() or _shape(x)[:-1] != lead:
            raise ValueError(
                f"inputs[{i}] must have the leading shape {lead} of inputs[0] (all but the last dim), got {_shape(x)}"
            )
    _check_tensor(weight, "weight")
    K = sum(x.shape[-1] for x in inputs)
    if weight.dim() != 2 or weight.shape[1] != K:
        raise ValueError(f"weight must have shape (N, sum(d_i)) = (N, {K}), got {_shape(weight)}")
    if weight.dtype != x0.dtype:
        raise TypeError(f"weight must have dtype {x0.dtype} like the inputs, got {weight.dtype}")
    _check_device(weight, "weight", x0, "inputs[0]")
    if bias is not None:
        _check_tensor(bias, "bias")
        if _shape(bias) != (weight.shape[0],):
            raise ValueError(f"bias must have shape (N,) = ({weight.shape[0]},), got {_shape(bias)}")
        if bias.dtype != x0.dtype:
            raise TypeError(f"bias must have dtype {x0.dtype} like the inputs, got {bias.dtype}")
        _check_device(bias, "bias", x0, "inputs[0]")
    if not isinstance(activation, str) or activation not in _ACT_CODE:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def concat_linear(
    inputs: Sequence[torch.Tensor],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
) -> torch.Tensor:
    """``act(cat(inputs, -1) @ weight.T + bias)`` without materialising the concatenation.

    Args:
        inputs: non-empty list/tuple of ``(..., d_i)`` tensors with identical leading shape, dtype, device.
        weight: ``(N, sum(d_i))``, the ``nn.Linear`` layout over the concatenation.
        bias: ``(N,)`` or ``None``.
        activation: ``"none" | "relu" | "gelu" | "gelu_tanh" | "silu"``.

    Returns:
        ``(..., N)`` in the inputs' dtype.
    """
    if isinstance(inputs, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in inputs) and isinstance(weight, torch.Tensor):
        *inputs, weight, bias = _autocast(*inputs, weight, bias)
    _validate_concat_linear(inputs, weight, bias, activation)
    if _USE_REFERENCE:
        return reference.concat_linear(inputs, weight, bias, activation)
    inputs, code = list(inputs), _ACT_CODE[activation]
    if not _eager_fast_path((*inputs, weight, bias)):
        return torch.ops.mmkernels.concat_linear_fwd(inputs, weight, bias, code)[0]
    if _needs_autograd((*inputs, weight, bias)):
        return _ConcatLinearFn.apply(weight, bias, code, *inputs)
    # No autograd: the pre-activation z is not stored (one M x N write less).
    return _below_autograd(torch.ops.mmkernels.concat_linear_fwd.default, inputs, weight, bias, code, False)[0]


@torch.library.register_fake("mmkernels::concat_linear_fwd")
def _concat_linear_fwd_fake(inputs, weight, bias, activation, save_preactivation=True):
    if not 0 <= activation < len(ACTIVATIONS):
        raise ValueError(f"activation code must be 0..{len(ACTIVATIONS) - 1}, got {activation}")
    _validate_concat_linear(inputs, weight, bias, ACTIVATIONS[activation])
    shape = tuple(inputs[0].shape[:-1]) + (weight.shape[0],)
    y = inputs[0].new_empty(shape)
    z = inputs[0].new_empty(shape if (activation != 0 and save_preactivation) else (0,))
    return y, z


@torch.library.register_fake("mmkernels::concat_linear_bwd")
def _concat_linear_bwd_fake(grad_out, inputs, weight, z, has_bias, activation, input_mask=None, weight_grad=True):
    mask = [True] * len(inputs) if input_mask is None else [bool(m) for m in input_mask]
    dx = [x.new_empty(x.shape if want else (0,)) for x, want in zip(inputs, mask)]
    db = weight.new_empty((weight.shape[0],) if has_bias else (0,))
    return [*dx, weight.new_empty(weight.shape if weight_grad else (0,)), db]


def _concat_linear_setup(ctx, inputs, output):
    _concat_linear_save(ctx, inputs[:4], output)
    ctx.mark_non_differentiable(output[1])


def _concat_linear_save(ctx, inputs, output):
    xs, weight, bias, activation = inputs
    ctx.n_inputs = len(xs)
    ctx.has_bias = bias is not None
    ctx.activation = activation
    ctx.save_for_backward(*xs, weight, output[1], bias)


def _concat_linear_backward(ctx, grad_y, grad_z):
    return _input_grads(ctx, *_concat_linear_grads(ctx, grad_y, *ctx.needs_input_grad[:3]))


def _concat_linear_grads(ctx, grad_y, needs_x, needs_w, needs_b):
    saved = ctx.saved_tensors
    n = ctx.n_inputs
    xs, weight, z, bias = list(saved[:n]), saved[n], saved[n + 1], saved[n + 2]
    if torch.is_grad_enabled():  # create_graph=True: higher-order gradients through the reference
        act = ACTIVATIONS[ctx.activation]
        fn = lambda w, b, *xs: reference.concat_linear(list(xs), w, b, act)
        needs = (needs_w, bool(needs_b) and ctx.has_bias) + tuple(bool(x) for x in needs_x)
        dw, db, *dxs = _vjp(fn, (weight, bias, *xs), needs, grad_y)
        return list(dxs), dw, db
    # Only the gradients autograd asks for (frozen encoders: no dX; a frozen projection: no dW).
    want_b = bool(needs_b) and ctx.has_bias
    *dxs, dw, db = _backward_op(torch.ops.mmkernels.concat_linear_bwd, (grad_y, *xs, weight, z), grad_y, xs, weight, z,
                                want_b, ctx.activation, [int(bool(n)) for n in needs_x], bool(needs_w))
    dxs = [d if n else None for d, n in zip(dxs, needs_x)]
    return dxs, (dw if needs_w else None), (db if want_b else None)


torch.library.register_autograd(
    "mmkernels::concat_linear_fwd", _concat_linear_backward, setup_context=_concat_linear_setup
)


def _concat_linear_bwd_reference(grad_out, xs, weight, z, activation):
    """[dx_0, ..., dx_{n-1}, dw, db] of the reference at the pre-activation z, for the cotangent grad_out:
    what concat_linear_bwd computes, differentiable in grad_out, xs, weight and z with grad mode on."""
    act = ACTIVATIONS[activation]
    dz = grad_out
    if act != "none":
        (dz,) = _vjp(lambda z: reference.apply_activation(z, act), (z,), (True,), grad_out)
    fn = lambda w, *xs: reference.concat_linear(list(xs), w, None, "none")
    dw, *dxs = _vjp(fn, (weight, *xs), (True,) * (len(xs) + 1), dz)
    return [*dxs, dw, dz.reshape(-1, weight.shape[0]).sum(0)]


# The backward op's own autograd formula (what opcheck, and a user differentiating the op directly, run):
# the derivative of the reference backward above. z is an input of its own here (the bias is not).
def _concat_linear_bwd_setup(ctx, inputs, output):
    grad_out, xs, weight, z, has_bias, activation, input_mask, weight_grad = inputs
    ctx.save_for_backward(grad_out, weight, z, *xs)
    ctx.activation = activation
    mask = [True] * len(xs) if input_mask is None else [bool(m) for m in input_mask]
    ctx.computed = [*mask, bool(weight_grad), bool(has_bias)]  # which outputs are gradients, not empty


def _concat_linear_bwd_backward(ctx, grads):
    grad_out, weight, z, *xs = ctx.saved_tensors
    cotangents = [g if computed else None for g, computed in zip(grads, ctx.computed)]
    fn = lambda g, w, z, *xs: _concat_linear_bwd_reference(g, xs, w, z, ctx.activation)
    needs_g, needs_x, needs_w, needs_z = ctx.needs_input_grad[:4]
    dg, dw, dz, *dxs = _vjp(fn, (grad_out, weight, z, *xs), (needs_g, needs_w, needs_z, *needs_x), cotangents)
    return _input_grads(ctx, dg, dxs, dw, dz)


torch.library.register_autograd(
    "mmkernels::concat_linear_bwd", _concat_linear_bwd_backward, setup_context=_concat_linear_bwd_setup
)


class _ConcatLinearFn(torch.autograd.Function):
    """The eager fast path's autograd node (inputs last, so that each gets its own needs_input_grad)."""

    @staticmethod
    def forward(ctx, weight, bias, code, *xs):
        args = (list(xs), weight, bias, code)
        y, z = _below_autograd(torch.ops.mmkernels.concat_linear_fwd.default, *args)
        _concat_linear_save(ctx, args, (y, z))
        return y

    @staticmethod
    def backward(ctx, grad_y):
        needs = ctx.needs_input_grad
        dxs, dw, db = _concat_linear_grads(ctx, grad_y, needs[3:], needs[0], needs[1])
        return (dw, db, None, *dxs)


# DTensor sharding rules for every op above (mmkernels/_sharding.py), registered once DTensor is loaded.
_sharding.register_when_dtensor_loads()
