"""Testing helpers: run mmkernels' CUDA kernels without a GPU.

``emulated_cuda()`` is a context manager under which ``mmkernels.cross_attention`` and
``mmkernels.concat_linear`` (forward and backward, float32/float16/bfloat16), called on CPU tensors,
execute the project's CUDA kernels in a host SIMT emulation instead of the CPU kernels: every CUDA
thread is a fiber, warp and tensor-core primitives follow the PTX ISA's documented semantics, and
checkers report shared-memory races, out-of-bounds shared accesses, reads of never-written shared
memory, barrier divergence and misuse of warp operations and async copies as a ``RuntimeError``. Tensors
stay on the CPU; only the code path changes. It needs a build with ``MMKERNELS_CUDA_EMULATION=ON``::

    MMKERNELS_CUDA_EMULATION=ON pip install --no-build-isolation .

    with mmkernels.testing.emulated_cuda():            # as on an H100 (arch="sm_90a", the default)
        out = mmkernels.cross_attention(q, k, v)   # the CUDA kernels, run on the CPU
    with mmkernels.testing.emulated_cuda(arch="sm_80"):   # as on an A100
        ...

The emulation proves what the kernels compute and how they use shared memory and warps; it cannot see
timing, the GPU's memory model beyond barriers, or the hardware's accumulation order inside an MMA (see
csrc/README.md). It is slow (thousands of times slower than the GPU): use small shapes.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from . import _C

__all__ = ["emulated_cuda", "emulation_available", "emulated_cuda_active", "emulated_arch", "emulated_kernel_launches", "ARCHS"]


def emulation_available() -> bool:
    """True when this build holds the emulated CUDA kernels (``MMKERNELS_CUDA_EMULATION=ON``)."""
    return bool(_C.with_emulation)


def emulated_cuda_active() -> bool:
    """True inside ``emulated_cuda()``."""
    return bool(_C._emulated_cuda_active())


# The architectures the extension has kernels for, as emulated_cuda() names them.
ARCHS = {"sm_90a": 90, "sm_80": 80}


@contextlib.contextmanager
def emulated_cuda(arch: str = "sm_90a") -> Iterator[None]:
    """Within this context the ops run their CUDA kernels in the host emulation (process-wide, so a
    backward run by autograd on another thread takes the same path), dispatching exactly as the
    extension does on a GPU of architecture ``arch``: ``"sm_90a"`` (an H100: the Hopper kernels, and the
    emulated device's limits are an H100's) or ``"sm_80"`` (an A100: the Ampere kernels)."""
    if not isinstance(arch, str) or arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    if not emulation_available():
        raise RuntimeError(
            "mmkernels was built without the CUDA emulation: rebuild with MMKERNELS_CUDA_EMULATION=ON "
            "(e.g. `MMKERNELS_CUDA_EMULATION=ON pip install --no-build-isolation .`) to run the CUDA kernels on the CPU"
        )
    previous_arch = _C._set_emulated_arch(ARCHS[arch])
    previous = _C._set_emulated_cuda(True)
    try:
        yield
    finally:
        _C._set_emulated_cuda(previous)
        _C._set_emulated_arch(previous_arch)


def emulated_arch() -> str:
    """The architecture the emulation dispatches for (``emulated_cuda(arch=...)``; "sm_90a" outside)."""
    if not emulation_available():
        raise RuntimeError("mmkernels was built without the CUDA emulation (MMKERNELS_CUDA_EMULATION=ON)")
    return {v: k for k, v in ARCHS.items()}[_C._emulated_arch()]


def emulated_kernel_launches(grids: bool = False) -> list:
    """Names of the CUDA kernels the emulation has run since the previous call (as launched, e.g.
    ``"flash_fwd_kernel<T, kD> [T = bf16; int kD = 64]"``): lets a test check which kernels an op used.
    With ``grids=True``, ``(name, (grid_x, grid_y, grid_z))`` pairs: how a launch split the work."""
    if not emulation_available():
        raise RuntimeError("mmkernels was built without the CUDA emulation (MMKERNELS_CUDA_EMULATION=ON)")
    log = _C._emulation_take_launch_log()
    return [(name, tuple(grid)) for name, grid in log] if grids else [name for name, _ in log]
