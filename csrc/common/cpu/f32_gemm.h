// float32 GEMM micro-kernel for AVX2 + FMA CPUs, B packed in 16-column panels.
//
// Why our own: on AVX2 hosts (no AVX-512) ATen's brgemm on the attention's tiles ran at ~0.6x of MKL's
// sgemm on SDPA's tiles, and MKL is not callable from an extension without at::mm's per-call tensor
// overhead (benchmarks/NOTES.md, "AVX2 hosts", 2026-12-06). A 6 x 16 register tile (12 ymm
// accumulators, 2 B vectors, 1 broadcast A) keeps both FMA pipes busy; B comes from a packed panel
// (one 64-byte line per k), A is read in place (row-major, any leading dimension).
//
// Packed B ("panels"): B (K x N) as ceil(N / 16) panels of `kld` rows (kld >= K) of 16 floats; panel p
// holds columns 16p..16p+15, zero past N. A GEMM may start at any row k0 of the panels.
//
// Only compiled into the AVX2 build (the AVX-512 build keeps brgemm); elsewhere the entry points are
// empty stubs behind MMK_HAS_F32_PANEL_GEMM, so callers can test for it in `if constexpr`.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(CPU_CAPABILITY_AVX2) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMK_HAS_F32_PANEL_GEMM 1
#include <immintrin.h>
#endif

namespace mmkernels::cpu::CPU_CAPABILITY {

constexpr int64_t kF32NR = 16;  // columns per panel (two ymm)
constexpr int64_t kF32MR = 6;   // rows per register tile

inline int64_t f32_panel_count(int64_t N) { return (N + kF32NR - 1) / kF32NR; }
inline int64_t f32_panel_floats(int64_t kld, int64_t N) { return f32_panel_count(N) * kld * kF32NR; }

// Rows per tile of a panel GEMM parallel over row tiles with A read in place (X in the forward, dz for dX):
// up to 96 (each B k-block reused by 16 register tiles, not 11: dX at M8192 ran 7% faster than with 64,
// at MKL's rate), a multiple of 8 (the epilogue's vectors), the same number of tiles for every thread.
inline int64_t f32_row_tile(int64_t rows, int64_t threads) {
  constexpr int64_t kMax = 96;
  threads = std::max<int64_t>(threads, 1);
  const int64_t tiles = threads * std::max<int64_t>(1, (rows + threads * kMax - 1) / (threads * kMax));
  return ((rows + tiles - 1) / tiles + 7) / 8 * 8;  // <= kMax: tiles >= rows / kMax, kMax a multiple of 8
}

#if defined(MMK_HAS_F32_PANEL_GEMM)

// In-register transpose of an 8 x 8 float block: rows of src at stride lds to rows of dst at stride ldd.
inline void transpose8x8_f32(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {  // u[i + j]: column j of each 128-bit lane of rows i..i+3
    u[i + 0] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ldd, _mm256_permute2f128_ps(u[j], u[4 + j], 0x20));
    _mm256_storeu_ps(dst + (4 + j) * ldd, _mm256_permute2f128_ps(u[j], u[4 + j], 0x31));
  }
}

// Panels of B = X, X (K x N) with row stride ldx.
inline void pack_f32_rows(const float* x, int64_t ldx, int64_t K, int64_t N, float* bp, int64_t kld) {
  for (int64_t p = 0; p < f32_panel_count(N); ++p) {
    const int64_t n0 = p * kF32NR, nc = std::min(kF32NR, N - n0);
    float* dst = bp + p * kld * kF32NR;
    if (nc == kF32NR) {
      for (int64_t k = 0; k < K; ++k) {
        _mm256_storeu_ps(dst + k * kF32NR, _mm256_loadu_ps(x + k * ldx + n0));
        _mm256_storeu_ps(dst + k * kF32NR + 8, _mm256_loadu_ps(x + k * ldx + n0 + 8));
      }
    } else {
      for (int64_t k = 0; k < K; ++k) {
        std::memcpy(dst + k * kF32NR, x + k * ldx + n0, sizeof(float) * nc);
        std::memset(dst + k * kF32NR + nc, 0, sizeof(float) * (kF32NR - nc));
      }
    }
  }
}

// Panels of B = X^T, X (N x K) with row stride ldx: 8 x 8 blocks transposed in registers.
inline void pack_f32_transposed(const float* x, int64_t ldx, int64_t N, int64_t K, float* bp, int64_t kld) {
  const int64_t k8 = K / 8 * 8;
  for (int64_t p = 0; p < f32_panel_count(N); ++p) {
    const int64_t n0 = p * kF32NR, nc = std::min(kF32NR, N - n0);
    float* dst = bp + p * kld * kF32NR;
    for (int64_t h = 0; h < kF32NR; h += 8) {  // two 8-column halves of the panel
      if (h + 8 <= nc) {
        for (int64_t k0 = 0; k0 < k8; k0 += 8) transpose8x8_f32(x + (n0 + h) * ldx + k0, ldx, dst + k0 * kF32NR + h, kF32NR);
        for (int64_t k = k8; k < K; ++k)
          for (int64_t j = 0; j < 8; ++j) dst[k * kF32NR + h + j] = x[(n0 + h + j) * ldx + k];
      } else {
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = 0; j < 8; ++j) dst[k * kF32NR + h + j] = h + j < nc ? x[(n0 + h + j) * ldx + k] : 0.f;
      }
    }
  }
}

// C[0:MR, 0:nc] (+)= A[0:MR, 0:K] @ panel[0:K, 0:nc]; A's element (r, k) at A[r * lda + k], or at
// A[k * lda + r] when kTransA (A given as its transpose: the backward's P^T and dS^T, never copied).
// The reduction runs in chunks of kc whose partial sums are added to C in order (blocked summation:
// float32 error grows with the chain length).
// Not inlined: inlined into its callers' loop nests, GCC kept the k counter on the stack (an add to memory
// and a reload per k: 5 of the build's 22 innermost FMA loops had stack traffic); on its own, the k loop holds
// only its pointers in registers.
template <int MR, bool kTransA>
__attribute__((noinline)) void f32_panel_tile(int64_t K, int64_t kc, const float* A, int64_t lda, const float* panel,
                                              float* C, int64_t ldc, int64_t nc, bool accumulate) {
  alignas(32) float edge[MR * kF32NR];
  float* c = C;
  int64_t ldcc = ldc;
  if (nc < kF32NR) {  // ragged right edge: through a full-width buffer
    c = edge;
    ldcc = kF32NR;
    if (accumulate)
      for (int r = 0; r < MR; ++r) std::memcpy(edge + r * kF32NR, C + r * ldc, sizeof(float) * nc);
  }
  const int64_t a_row = kTransA ? 1 : lda, a_k = kTransA ? lda : 1;
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t k1 = std::min(K, k0 + kc);
    __m256 acc0[MR], acc1[MR];
    for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
    const float* b = panel + k0 * kF32NR;
    const float* const b_end = panel + k1 * kF32NR;
    const float* a = A + k0 * a_k;
    for (; b != b_end; b += kF32NR, a += a_k) {
      const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
      for (int r = 0; r < MR; ++r) {
        const __m256 av = _mm256_broadcast_ss(a + r * a_row);
        acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
        acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
      }
    }
    if (accumulate || k0 > 0) {
      for (int r = 0; r < MR; ++r) {
        _mm256_storeu_ps(c + r * ldcc, _mm256_add_ps(_mm256_loadu_ps(c + r * ldcc), acc0[r]));
        _mm256_storeu_ps(c + r * ldcc + 8, _mm256_add_ps(_mm256_loadu_ps(c + r * ldcc + 8), acc1[r]));
      }
    } else {
      for (int r = 0; r < MR; ++r) {
        _mm256_storeu_ps(c + r * ldcc, acc0[r]);
        _mm256_storeu_ps(c + r * ldcc + 8, acc1[r]);
      }
    }
  }
  if (nc < kF32NR)
    for (int r = 0; r < MR; ++r) std::memcpy(C + r * ldc, edge + r * kF32NR, sizeof(float) * nc);
}

// f32_panel_tile for a run-time row count mr in 1..kF32MR (a strip's or a matrix's last rows).
template <bool kTransA>
inline void f32_panel_tile_rows(int64_t mr, int64_t K, int64_t kc, const float* A, int64_t lda, const float* panel,
                                float* C, int64_t ldc, int64_t nc, bool accumulate) {
  switch (mr) {
    case 6: f32_panel_tile<6, kTransA>(K, kc, A, lda, panel, C, ldc, nc, accumulate); break;
    case 5: f32_panel_tile<5, kTransA>(K, kc, A, lda, panel, C, ldc, nc, accumulate); break;
    case 4: f32_panel_tile<4, kTransA>(K, kc, A, lda, panel, C, ldc, nc, accumulate); break;
    case 3: f32_panel_tile<3, kTransA>(K, kc, A, lda, panel, C, ldc, nc, accumulate); break;
    case 2: f32_panel_tile<2, kTransA>(K, kc, A, lda, panel, C, ldc, nc, accumulate); break;
    case 1: f32_panel_tile<1, kTransA>(K, kc, A, lda, panel, C, ldc, nc, accumulate); break;
    default: break;
  }
}

// A (M x K, row stride lda) packed in strips of kF32MR rows, k-major: strip s holds rows 6s..6s+mr-1
// (mr = min(6, M - 6s)) as mr floats per k at as + 6 s K, so one tile streams it contiguously (in
// place, rows at a 2-6 KB stride alias in the L1 sets). M x K floats in all.
inline void pack_f32_strips(const float* a, int64_t lda, int64_t M, int64_t K, float* as, int64_t s0, int64_t s1) {
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t r0 = s * kF32MR, mr = std::min(kF32MR, M - r0);
    float* dst = as + r0 * K;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t r = 0; r < mr; ++r) dst[k * mr + r] = a[(r0 + r) * lda + k];
  }
}

// C[M, 0:nc] (+)= A[:, k0:k0+kb] @ panel[0:kb, 0:nc], A as strips (pack_f32_strips, K columns in all), the
// reduction in one chunk.
inline void gemm_f32_strips(int64_t M, int64_t nc, int64_t kb, const float* as, int64_t K, int64_t k0,
                            const float* panel, float* C, int64_t ldc, bool accumulate) {
  for (int64_t r0 = 0; r0 < M; r0 += kF32MR) {
    const int64_t mr = std::min(kF32MR, M - r0);
    f32_panel_tile_rows<true>(mr, kb, kb, as + r0 * K + k0 * mr, mr, panel, C + r0 * ldc, ldc, nc, accumulate);
  }
}

// C[M,N] (+)= A[M,K] @ B[k0:k0+K, n0:n0+N] with B given as panels (n0 a multiple of 16), C row-major;
// A as in f32_panel_tile; the reduction in chunks of kc (0: one chunk).
template <bool kTransA = false>
inline void gemm_f32_panels(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* bp,
                            int64_t kld, int64_t k0, int64_t n0, float* C, int64_t ldc, bool accumulate,
                            int64_t kc = 0) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, sizeof(float) * N);
    return;
  }
  kc = kc > 0 ? kc : K;
  const int64_t a_row = kTransA ? 1 : lda;
  for (int64_t j0 = 0; j0 < N; j0 += kF32NR) {
    const float* panel = bp + ((n0 + j0) / kF32NR) * kld * kF32NR + k0 * kF32NR;
    const int64_t nc = std::min(kF32NR, N - j0);
    int64_t i = 0;
    for (; i + kF32MR <= M; i += kF32MR)
      f32_panel_tile<kF32MR, kTransA>(K, kc, A + i * a_row, lda, panel, C + i * ldc + j0, ldc, nc, accumulate);
    if (i < M)
      f32_panel_tile_rows<kTransA>(M - i, K, kc, A + i * a_row, lda, panel, C + i * ldc + j0, ldc, nc, accumulate);
  }
}

#else

inline void pack_f32_rows(const float*, int64_t, int64_t, int64_t, float*, int64_t) {}
inline void pack_f32_transposed(const float*, int64_t, int64_t, int64_t, float*, int64_t) {}
inline void pack_f32_strips(const float*, int64_t, int64_t, int64_t, float*, int64_t, int64_t) {}
inline void gemm_f32_strips(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, float*, int64_t,
                            bool) {}
template <bool kTransA = false>
inline void gemm_f32_panels(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, int64_t, int64_t,
                            float*, int64_t, bool, int64_t = 0) {}

#endif

}  // namespace mmkernels::cpu::CPU_CAPABILITY
