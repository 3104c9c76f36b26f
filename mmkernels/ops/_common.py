"""What both ops share: the reference-op switch, argument checks, autocast, the eager fast path and
the autograd helpers (higher-order gradients through the references).

The ops themselves live one per module (``_cross_attention.py``, ``_concat_linear.py``); ``__init__.py``
is the public face (``mmkernels.ops``).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from .. import _C  # noqa: F401  (loads the native library; registers torch.ops.mmkernels.*)

__all__ = ["use_reference_ops", "using_reference_ops", "debug_checks", "cpu_capability"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

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


# ---------------------------------------------------------------------------------------------------
# Checks that cost a host-device synchronisation. No op synchronises by default; the flag lives in C++
# (csrc/common/checks.h) so direct torch.ops.mmkernels.* calls honour it too.
_C._set_debug_checks(os.environ.get("MMKERNELS_DEBUG_CHECKS", "0") not in ("", "0"))


@contextlib.contextmanager
def debug_checks(enabled: bool = True) -> Iterator[None]:
    """Within this context, checks that read device values back to the host run (they synchronise
    the device with the host, so they are off by default; ``MMKERNELS_DEBUG_CHECKS=1`` turns them on
    for the whole process). Today one check: ``cross_attention``'s ``kv_lengths`` on a CUDA device,
    which the kernels otherwise clamp to ``[0, Lk]``; on CPU it is always checked. Process-wide (not
    per thread); skipped while a CUDA graph is being captured."""
    previous = _C._set_debug_checks(bool(enabled))
    try:
        yield
    finally:
        _C._set_debug_checks(previous)


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


def _lookup_in_dispatch_mode():
    from torch.utils import _python_dispatch as pd

    return getattr(pd, "is_in_torch_dispatch_mode", None) or (lambda: torch._C._len_torch_dispatch_stack() > 0)


# any TorchDispatchMode, infra modes (fake, proxy, functional) included; looked up once (every eager
# call asks these, so they are bound here rather than found through their modules each time)
_in_dispatch_mode = _lookup_in_dispatch_mode()
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
_torch_function_modes = torch._C._len_torch_function_stack
_TENSOR = torch.Tensor
_FAST_DEVICES = ("cpu", "cuda")


def _eager_fast_path(tensors) -> bool:
    if _is_compiling() or _functorch_active() or _in_dispatch_mode() or _torch_function_modes() > 0:
        return False
    for t in tensors:
        if t is not None and (type(t) is not _TENSOR or t.device.type not in _FAST_DEVICES):
            return False
    return True


def _needs_autograd(tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _below_autograd(op, *args):
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


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
