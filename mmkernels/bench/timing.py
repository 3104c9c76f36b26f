"""Timing primitives: warm-up, median of many, CUDA events on GPU, inputs rotated beyond the caches."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Sequence

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


def _mm_rate(dtype: torch.dtype, device: torch.device, n: int, budget_s: float) -> float:
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    t = time_fn(lambda i: torch.mm(a, b), device, warmup=2, min_runs=5, budget_s=budget_s)
    return 2 * n**3 / (t.median_ms / 1e3)


def matmul_ceiling(dtype: torch.dtype, device: torch.device, quick: bool = False) -> float:
    """The roofline we report against: the best measured dense matmul rate (FLOP/s) that a computation on
    ``dtype`` inputs can use, i.e. ``dtype``'s own or float32's (16-bit operands widen exactly). On a CPU
    without native 16-bit GEMMs (AVX2) torch's bf16 matmul runs ~100x below float32, so a small probe
    decides whether the 16-bit rate is worth measuring at full size."""
    n = 2048 if device.type == "cpu" else 8192
    if quick and device.type == "cpu":
        n = 1024
    budget = 0.5 if quick else 1.5
    if dtype == torch.float64:
        return _mm_rate(dtype, device, n, budget)
    rate32 = _mm_rate(torch.float32, device, n, budget)
    if dtype == torch.float32:
        return rate32
    if _mm_rate(dtype, device, 256, 0.05) < 0.5 * _mm_rate(torch.float32, device, 256, 0.05):
        return rate32
    return max(rate32, _mm_rate(dtype, device, n, budget))


def tensors_bytes(ts: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in ts if isinstance(t, torch.Tensor))
