"""Timing primitives: warm-up, median of many, CUDA events on GPU, inputs rotated beyond the caches."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch


@dataclass
class Timing:
    median_ms: float
    iqr_ms: float
    runs: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[int], object],
    device: torch.device,
    *,
    warmup: int = 3,
    min_runs: int = 7,
    max_runs: int = 200,
    budget_s: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Times ``fn(i)`` (``i`` picks one of several rotated input sets) and returns the median.

    Runs at least ``min_runs`` and stops after ``budget_s`` of measured time or ``max_runs``. On CUDA
    each run is bracketed by CUDA events; on CPU by ``clock`` (seconds; tests inject a fake one).
    """
    for i in range(warmup):
        fn(i)
    _sync(device)
    times: List[float] = []
    spent = 0.0
    i = 0
    while len(times) < min_runs or (spent < budget_s and len(times) < max_runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i)
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = clock()
            fn(i)
            ms = (clock() - t0) * 1e3
        times.append(ms)
        spent += ms / 1e3
        i += 1
    times.sort()
    q1, q3 = times[len(times) // 4], times[(3 * len(times)) // 4]
    return Timing(statistics.median(times), q3 - q1, len(times))


def rotation_count(bytes_per_set: int, device: torch.device) -> int:
    """How many input sets to cycle through so that a run never finds its inputs in the last-level cache."""
    if device.type == "cuda":
        cache = torch.cuda.get_device_properties(device).L2_cache_size
    else:
        cache = 64 << 20  # generous bound for a server CPU's L3
    return max(1, min(8, -(-2 * cache // max(bytes_per_set, 1))))


def _mm_rate(dtype: torch.dtype, device: torch.device, n: int, runs: int) -> float:
    """Best (not median) rate of ``runs`` timed ``n x n`` matmuls after one warm-up: a ceiling must be what
    the machine can do, and on a shared or throttling host the median drifts below it."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(max(runs, 1)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.mm(a, b, out=out)
            end.record()
            end.synchronize()
            s = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            s = time.perf_counter() - t0
        best = min(best, s)
    return 2 * n**3 / best


def matmul_ceiling(dtype: torch.dtype, device: torch.device, quick: bool = False, runs: int = 5) -> float:
    """The roofline we report against: the best measured dense matmul rate (FLOP/s) that a computation on
    ``dtype`` inputs can use, i.e. ``dtype``'s own or float32's (16-bit operands widen exactly). The probe
    is large (2048^2 on CPU: ~0.1 s a call) and the best of ``runs``; the runner probes again between
    cases and keeps the maximum, so a noisy moment cannot set it low. On a CPU without native 16-bit
    GEMMs (AVX2) torch's bf16 matmul runs ~100x below float32, so a small probe decides whether the
    16-bit rate is worth measuring at full size. ``quick`` is accepted for compatibility and changes
    nothing: a smaller probe is not a ceiling."""
    n = 2048 if device.type == "cpu" else 8192
    if dtype == torch.float64:
        return _mm_rate(dtype, device, n, runs)
    rate32 = _mm_rate(torch.float32, device, n, runs)
    if dtype == torch.float32:
        return rate32
    if _mm_rate(dtype, device, 256, 3) < 0.5 * _mm_rate(torch.float32, device, 256, 3):
        return rate32
    return max(rate32, _mm_rate(dtype, device, n, runs))


def fma_peak(device: torch.device) -> Optional[float]:
    """The float32 FMA peak (FLOP/s) of this CPU at the CPU kernels' vector width on torch's threads
    (independent FMA chains, nothing from memory; mmkernels._C._cpu_fma_peak); None on GPU."""
    if device.type != "cpu":
        return None
    from mmkernels import _C

    return _C._cpu_fma_peak(20_000_000, 3)


def tensors_bytes(ts: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in ts if isinstance(t, torch.Tensor))
