"""GEMM rates on the attention's tiles (one thread) and the float32 FMA peak, for benchmarks/NOTES.md.

    python benchmarks/cpu_gemm_probe.py

JIT-builds benchmarks/cpu_gemm_probe.cpp (AVX2 + FMA, with csrc/common/cpu/f32_gemm.h) and prints, per
tile, the rate of ATen's brgemm (oneDNN), MKL's sgemm (as SDPA calls it) and our panel kernel, with the
operand strides the kernels see at B4 L1024 H8 D128 (a (B, L, H, D) row is 4 KB long).
"""
import os

import torch
from torch.utils.cpp_extension import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build():
    return load("mmk_gemm_probe", [os.path.join(ROOT, "benchmarks", "cpu_gemm_probe.cpp")],
                extra_include_paths=[os.path.join(ROOT, "csrc")],
                extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
                extra_ldflags=["-fopenmp"], verbose=False)


# (label, kind, M, N, K, lda, ldb, ldc, kc)
CASES = [
    ("ours before: S = Q K^T, 64x512x128, K^T copy ld 1024, 4 chunks of 32", "brgemm", 64, 512, 128, 1024, 1024, 512, 32),
    ("  same, unchunked", "brgemm", 64, 512, 128, 1024, 1024, 512, 0),
    ("  same, K^T ld 1040 (no 4 KB stride)", "brgemm", 64, 512, 128, 1024, 1040, 512, 0),
    ("  same, 256 query rows", "brgemm", 256, 512, 128, 1024, 1024, 512, 0),
    ("SDPA: S = Q K^T, 256x512x128, MKL sgemm (T, N)", "mkl_t", 256, 512, 128, 1024, 1024, 512, 0),
    ("  MKL on our 64-row tile", "mkl_t", 64, 512, 128, 1024, 1024, 512, 0),
    ("panels: 64x512x128, 4 chunks of 32 (K packed once per head)", "panels", 64, 512, 128, 1024, 1024, 512, 32),
    ("  same, unchunked", "panels", 64, 512, 128, 1024, 1024, 512, 0),
    ("  same, Q rows contiguous (lda 128)", "panels", 64, 512, 128, 128, 1024, 512, 32),
    ("  same, packing K^T on every call", "panels_t", 64, 512, 128, 1024, 1024, 512, 32),
    ("ours before: O += P V, 64x128x512, V rows ld 1024", "brgemm", 64, 128, 512, 512, 1024, 128, 0),
    ("  same, V rows contiguous (ld 128)", "brgemm", 64, 128, 512, 512, 128, 128, 0),
    ("SDPA: O += P V, 256x128x512, MKL sgemm (N, N)", "mkl", 256, 128, 512, 512, 1024, 128, 0),
    ("  MKL on our 64-row tile", "mkl", 64, 128, 512, 512, 1024, 128, 0),
    ("panels: 64x128x512 (V packed once per head)", "panels", 64, 128, 512, 512, 1024, 128, 0),
    ("  same, 256 rows", "panels", 256, 128, 512, 512, 1024, 128, 0),
    ("  same, packing V on every call", "panels+pack", 64, 128, 512, 512, 1024, 128, 0),
    ("D64 L512: S = Q K^T 64x512x64 brgemm, 2 chunks", "brgemm", 64, 512, 64, 512, 576, 512, 32),
    ("  MKL (T, N), 64 rows", "mkl_t", 64, 512, 64, 512, 512, 512, 0),
    ("  panels, 2 chunks", "panels", 64, 512, 64, 512, 576, 512, 32),
]


def main():
    torch.set_num_threads(1)
    m = build()
    peak1, peak2 = m.fma_peak(1, 200_000_000 // 96), m.fma_peak(2, 200_000_000 // 96)
    print(f"float32 FMA peak: {peak1:.1f} GFLOP/s on 1 thread, {peak2:.1f} on 2")
    for kind in ("brgemm", "mkl", "panels"):
        print(f"per-call cost, 8x8x8 {kind}: {1e6 * m.call_cost(kind):.2f} us")
    print(f"{'tile':<74} {'GFLOP/s':>8} {'% peak':>7}")
    for label, kind, M, N, K, lda, ldb, ldc, kc in CASES:
        reps = max(3, int(2e8 / (2 * M * N * K)))
        r = m.rate(kind, M, N, K, lda, ldb, ldc, kc, reps)
        print(f"{label:<74} {r:8.1f} {100 * r / peak1:6.0f}%")


if __name__ == "__main__":
    main()
