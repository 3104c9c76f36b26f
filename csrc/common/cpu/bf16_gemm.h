// bfloat16 GEMM micro-kernel on AVX512-BF16 dot-product instructions (vdpbf16ps), float32 accumulate.
//
// Why our own: ATen's brgemm reaches the bf16 dot-product units only with B packed in oneDNN's VNNI
// layout, which its `pack` refuses on CPUs without AMX; unpacked it runs bf16 at ~0.75x its float32
// rate. Here B is packed once per call into the pair-interleaved ("VNNI") layout: word (kp, n) holds
// (B[2kp][n], B[2kp+1][n]) as two bf16, rows of `ldbp` words padded with zeros to a multiple of 32
// columns. Then C[m, n0:n0+32] += sum_kp bcast(A[m, 2kp:2kp+2]) . Bp[kp, n0:n0+32] is two vdpbf16ps.
//
// Only compiled into the AVX-512 build and only called when the CPU reports avx512_bf16.
#pragma once

#include <c10/util/BFloat16.h>

#include "common/cpu/capability.h"      // native_bf16_gemm
#include "common/cpu/kernel_utils.h"  // transpose16x16_32bit

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(CPU_CAPABILITY_AVX512) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMK_HAS_BF16_GEMM 1
#include <immintrin.h>
#define MMK_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#endif

namespace mmkernels::cpu::CPU_CAPABILITY {

constexpr int64_t kBf16NR = 32;  // columns per micro-tile (two zmm accumulators per row)
constexpr int64_t kBf16MR = 8;   // rows per micro-tile

inline int64_t vnni_ld(int64_t n) { return (n + kBf16NR - 1) / kBf16NR * kBf16NR; }
inline int64_t vnni_words(int64_t k, int64_t n) { return (k + 1) / 2 * vnni_ld(n); }

inline uint32_t bf16_pair(c10::BFloat16 lo, c10::BFloat16 hi) {
  return static_cast<uint32_t>(lo.x) | (static_cast<uint32_t>(hi.x) << 16);
}

#if defined(MMK_HAS_BF16_GEMM)

// B = X, X (K x N) with row stride ldx: word (kp, n) = (X[2kp][n], X[2kp+1][n]); packed rows of ld words.
MMK_BF16_TARGET inline void pack_vnni_rows(const c10::BFloat16* x, int64_t ldx, int64_t K, int64_t N, uint32_t* bp,
                                           int64_t ld) {
  for (int64_t kp = 0; kp < (K + 1) / 2; ++kp) {
    const uint16_t* r0 = reinterpret_cast<const uint16_t*>(x + 2 * kp * ldx);
    const uint16_t* r1 = r0 + ldx;
    const bool has1 = 2 * kp + 1 < K;
    uint32_t* dst = bp + kp * ld;
    int64_t n = 0;
    for (; n + 16 <= N; n += 16) {
      const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + n)));
      const __m512i hi = has1 ? _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1 + n)))
                              : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + n, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
    for (; n < N; ++n) dst[n] = uint32_t(r0[n]) | (has1 ? uint32_t(r1[n]) << 16 : 0u);
    std::fill(dst + N, dst + ld, 0u);
  }
}

// B = X^T, X (N x K) with row stride ldx: word (kp, n) = (X[n][2kp], X[n][2kp+1]), i.e. X viewed as
// 32-bit words and transposed (16x16 word blocks in registers when the row stride is even); packed rows of
// ld words.
MMK_BF16_TARGET inline void pack_vnni_transposed(const c10::BFloat16* x, int64_t ldx, int64_t N, int64_t K,
                                                 uint32_t* bp, int64_t ld) {
  const int64_t KP = K / 2;
  int64_t nfull = 0, kpfull = 0;
  if (ldx % 2 == 0) {  // rows start on word boundaries: a plain 32-bit transpose
    nfull = N / 16 * 16;
    kpfull = KP / 16 * 16;
    for (int64_t n0 = 0; n0 < nfull; n0 += 16)
      for (int64_t kp0 = 0; kp0 < kpfull; kp0 += 16)
        transpose16x16_32bit(x + n0 * ldx + 2 * kp0, ldx / 2, bp + kp0 * ld + n0, ld);
  }
  const auto scalar = [&](int64_t nb, int64_t ne, int64_t kb, int64_t ke) {
    for (int64_t n = nb; n < ne; ++n) {
      const c10::BFloat16* row = x + n * ldx;
      for (int64_t kp = kb; kp < ke; ++kp) bp[kp * ld + n] = bf16_pair(row[2 * kp], row[2 * kp + 1]);
    }
  };
  scalar(0, nfull, kpfull, KP);
  scalar(nfull, N, 0, KP);
  if (K & 1)
    for (int64_t n = 0; n < N; ++n) bp[KP * ld + n] = bf16_pair(x[n * ldx + K - 1], c10::BFloat16(0.f));
  for (int64_t kp = 0; kp < (K + 1) / 2; ++kp) std::fill(bp + kp * ld + N, bp + (kp + 1) * ld, 0u);
}

template <int MR>
MMK_BF16_TARGET inline void bf16_micro_tile(int64_t K, const c10::BFloat16* A, int64_t lda, const uint32_t* bp,
                                            int64_t ldbp, float* C, int64_t ldc, int64_t ncols, bool accumulate) {
  const __mmask16 m0 = ncols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << ncols) - 1);
  const __mmask16 m1 = ncols >= 32 ? __mmask16(0xFFFF) : ncols > 16 ? __mmask16((1u << (ncols - 16)) - 1) : 0;
  __m512 c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) {
    c0[r] = accumulate ? _mm512_maskz_loadu_ps(m0, C + r * ldc) : _mm512_setzero_ps();
    c1[r] = accumulate ? _mm512_maskz_loadu_ps(m1, C + r * ldc + 16) : _mm512_setzero_ps();
  }
  const int64_t KP = K / 2;
  for (int64_t kp = 0; kp < KP; ++kp) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + kp * ldbp);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + kp * ldbp + 16);
    for (int r = 0; r < MR; ++r) {
      int32_t pair;
      std::memcpy(&pair, A + r * lda + 2 * kp, sizeof(pair));
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      c0[r] = _mm512_dpbf16_ps(c0[r], a, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], a, b1);
    }
  }
  if (K & 1) {  // last k alone: pair (A[m][K-1], 0); B's matching row was padded with zeros
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + KP * ldbp);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + KP * ldbp + 16);
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int32_t>(A[r * lda + K - 1].x));
      c0[r] = _mm512_dpbf16_ps(c0[r], a, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], a, b1);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(C + r * ldc, m0, c0[r]);
    if (m1) _mm512_mask_storeu_ps(C + r * ldc + 16, m1, c1[r]);
  }
}

// C[M,N] (+)= A[M,K] @ B[K,N], B given packed (see above), C float32 row-major.
MMK_BF16_TARGET inline void gemm_bf16_vnni(int64_t M, int64_t N, int64_t K, const c10::BFloat16* A, int64_t lda,
                                           const uint32_t* bp, int64_t ldbp, float* C, int64_t ldc, bool accumulate) {
  for (int64_t n0 = 0; n0 < N; n0 += kBf16NR) {
    const int64_t nc = std::min(kBf16NR, N - n0);
    const uint32_t* b = bp + n0;
    int64_t m0 = 0;
    for (; m0 + kBf16MR <= M; m0 += kBf16MR)
      bf16_micro_tile<kBf16MR>(K, A + m0 * lda, lda, b, ldbp, C + m0 * ldc + n0, ldc, nc, accumulate);
    const int64_t rest = M - m0;
    const c10::BFloat16* a = A + m0 * lda;
    float* c = C + m0 * ldc + n0;
    switch (rest) {
      case 7: bf16_micro_tile<7>(K, a, lda, b, ldbp, c, ldc, nc, accumulate); break;
      case 6: bf16_micro_tile<6>(K, a, lda, b, ldbp, c, ldc, nc, accumulate); break;
      case 5: bf16_micro_tile<5>(K, a, lda, b, ldbp, c, ldc, nc, accumulate); break;
      case 4: bf16_micro_tile<4>(K, a, lda, b, ldbp, c, ldc, nc, accumulate); break;
      case 3: bf16_micro_tile<3>(K, a, lda, b, ldbp, c, ldc, nc, accumulate); break;
      case 2: bf16_micro_tile<2>(K, a, lda, b, ldbp, c, ldc, nc, accumulate); break;
      case 1: bf16_micro_tile<1>(K, a, lda, b, ldbp, c, ldc, nc, accumulate); break;
      default: break;
    }
  }
}

// This build runs only when capability() is AVX512, where the native-bf16 rule is exactly this CPU's
// avx512bf16 (one check, common/cpu/capability.cpp).
inline bool cpu_has_bf16_dot() { return ::mmkernels::cpu::native_bf16_gemm(); }

#else

inline bool cpu_has_bf16_dot() { return false; }
inline void pack_vnni_rows(const c10::BFloat16*, int64_t, int64_t, int64_t, uint32_t*, int64_t) {}
inline void pack_vnni_transposed(const c10::BFloat16*, int64_t, int64_t, int64_t, uint32_t*, int64_t) {}
inline void gemm_bf16_vnni(int64_t, int64_t, int64_t, const c10::BFloat16*, int64_t, const uint32_t*, int64_t, float*,
                           int64_t, bool) {}

#endif

}  // namespace mmkernels::cpu::CPU_CAPABILITY
