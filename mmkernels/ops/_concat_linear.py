"""``concat_linear``: argument validation, the public function, fake tensors and autograd for the
``mmkernels::concat_linear_fwd`` / ``concat_linear_bwd`` operators (declared in csrc/mmkernels.cpp),
and the eager fast path's autograd node."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import _C, reference
from . import _common
from ._common import (_autocast, _backward_op, _below_autograd, _check_device, _check_float, _check_tensor,
                      _eager_fast_path, _input_grads, _needs_autograd, _shape, _vjp)

ACTIVATIONS = tuple(_C.ACTIVATIONS)  # the C++ order is the op's activation code
_ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}


def _validate_concat_linear(inputs, weight, bias, activation):
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, (list, tuple)):
        raise TypeError(f"inputs must be a non-empty list or tuple of tensors, got {type(inputs).__name__}")
    if len(inputs) == 0:
        raise ValueError("inputs must be a non-empty list or tuple of tensors, got an empty one")
    # (names are formatted only on failure: this runs on every eager call)
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            _check_tensor(x, f"inputs[{i}]")
    x0 = inputs[0]
    if x0.dim() < 1:
        raise ValueError("inputs[0] must have at least one dimension (..., d_0), got a 0-D tensor")
    _check_float(x0, "inputs[0]")
    dtype, device, lead = x0.dtype, x0.device, x0.shape[:-1]
    for i in range(1, len(inputs)):
        x = inputs[i]
        if x.dtype != dtype:
            raise TypeError(f"inputs[{i}] must have dtype {x0.dtype} like inputs[0], got {x.dtype}")
        if x.device != device:
            _check_device(x, f"inputs[{i}]", x0, "inputs[0]")
        if x.shape[:-1] != lead:
            raise ValueError(
                f"inputs[{i}] must have the leading shape {_shape(x0)[:-1]} of inputs[0] (all but the last dim), "
                f"got {_shape(x)}"
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
    if _common._USE_REFERENCE:
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
