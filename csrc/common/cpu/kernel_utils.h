// Small building blocks shared by the CPU kernels. Included only from kernel sources that are
// compiled once per CPU capability, so everything here lives in mmkernels::cpu::CPU_CAPABILITY.
#pragma once

#include <ATen/cpu/vec/vec.h>
#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif
#include <ATen/native/CPUBlas.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/dispatch.h"
#include "common/dtype.h"
#include "common/numerics.h"


namespace mmkernels::cpu::CPU_CAPABILITY {

// Accumulation type: float32 for float32/float16/bfloat16, float64 for float64.
template <typename T>
using acc_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
constexpr bool is_reduced_v = std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>;

// fn(TypeTag<T>{}) with T the CPU element type of `d` (the one dtype switch: common/dispatch.h).
template <typename Fn>
decltype(auto) dispatch_cpu_dtype(DType d, const char* what, Fn&& fn) {
  return dispatch_dtype<float, c10::Half, c10::BFloat16, double>(d, what, std::forward<Fn>(fn));
}

// C[M,N] (+)= A[M,K] @ B[K,N]; row-major operands with leading dimensions; C in the accumulation type.
// float / bfloat16 / half go to ATen's batch-reduce GEMM micro-kernel (oneDNN brgemm: AVX-512 FMA,
// AVX512-BF16 dot products where the CPU has them); double is only used for gradcheck and takes a
// plain loop.
template <typename T>
inline void gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                    acc_type<T>* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, sizeof(acc_type<T>) * N);
    return;
  }
  if constexpr (std::is_same_v<T, double>) {
    for (int64_t i = 0; i < M; ++i) {
      double* c = C + i * ldc;
      if (!accumulate) std::fill(c, c + N, 0.0);
      for (int64_t kk = 0; kk < K; ++kk) {
        const double a = A[i * lda + kk];
        const double* b = B + kk * ldb;
        for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
      }
    }
  } else {
    at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, accumulate, A, B, C, /*is_vnni=*/false);
  }
}

// dst[i] = T(src[i])
template <typename T, typename S>
inline void convert_row(const S* src, T* dst, int64_t n) {
  if constexpr (std::is_same_v<T, S>) {
    std::memcpy(dst, src, sizeof(T) * n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
  }
}

// dst[i] = T(src[i] * s), vectorised for float -> {float, bf16, half}.
template <typename T, typename A>
inline void scale_convert_row(const A* src, A s, T* dst, int64_t n) {
  using Vec = at::vec::Vectorized<A>;
  int64_t i = 0;
  if constexpr (std::is_same_v<T, A>) {
    const Vec vs(s);
    for (; i + Vec::size() <= n; i += Vec::size()) (Vec::loadu(src + i) * vs).store(dst + i);
  }
  for (; i < n; ++i) dst[i] = static_cast<T>(src[i] * s);
}

// y[i] *= s
template <typename A>
inline void scale_row(A* y, A s, int64_t n) {
  using Vec = at::vec::Vectorized<A>;
  const Vec vs(s);
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) (Vec::loadu(y + i) * vs).store(y + i);
  for (; i < n; ++i) y[i] *= s;
}

// exp for the softmax. `precise`: ~1 ulp (Sleef u10), used where float32 inputs need it (the backward's
// P feeds every gradient); otherwise a ~2 ulp polynomial that is exactly 0 below ln(FLT_MIN).
template <typename A, bool precise = false>
inline at::vec::Vectorized<A> vexp(const at::vec::Vectorized<A>& x) {
  if constexpr (std::is_same_v<A, float> && !precise) {
    return x.exp_u20();
  } else {
    return x.exp();
  }
}

#if defined(CPU_CAPABILITY_AVX512)
// In-register transpose of a 16x16 block of 32-bit values: src rows at stride lds, dst rows at ldd.
// Three shuffle stages: 32-bit and 64-bit unpacks within 128-bit lanes, then 128-bit lane shuffles.
inline void transpose16x16_32bit(const void* src, int64_t lds, void* dst, int64_t ldd) {
  const float* s = static_cast<const float*>(src);
  float* d = static_cast<float*>(dst);
  __m512 r[16], t[16], u[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(s + i * lds);
  for (int g = 0; g < 4; ++g) {
    t[4 * g + 0] = _mm512_unpacklo_ps(r[4 * g], r[4 * g + 1]);
    t[4 * g + 1] = _mm512_unpackhi_ps(r[4 * g], r[4 * g + 1]);
    t[4 * g + 2] = _mm512_unpacklo_ps(r[4 * g + 2], r[4 * g + 3]);
    t[4 * g + 3] = _mm512_unpackhi_ps(r[4 * g + 2], r[4 * g + 3]);
  }
  const auto lo = [](__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  };
  const auto hi = [](__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  };
  for (int g = 0; g < 4; ++g) {  // u[4g + j]: column j of each 128-bit lane, rows 4g..4g+3
    u[4 * g + 0] = lo(t[4 * g + 0], t[4 * g + 2]);
    u[4 * g + 1] = hi(t[4 * g + 0], t[4 * g + 2]);
    u[4 * g + 2] = lo(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = hi(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int j = 0; j < 4; ++j) {  // output row 4l + j gathers lane l of u[j], u[4+j], u[8+j], u[12+j]
    const __m512 v01 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44), w01 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
    const __m512 v23 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE), w23 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
    _mm512_storeu_ps(d + (0 + j) * ldd, _mm512_shuffle_f32x4(v01, w01, 0x88));
    _mm512_storeu_ps(d + (4 + j) * ldd, _mm512_shuffle_f32x4(v01, w01, 0xDD));
    _mm512_storeu_ps(d + (8 + j) * ldd, _mm512_shuffle_f32x4(v23, w23, 0x88));
    _mm512_storeu_ps(d + (12 + j) * ldd, _mm512_shuffle_f32x4(v23, w23, 0xDD));
  }
}
#endif

// dst (K x N, row stride ldd) = src (N x K, row stride lds)^T. 4-byte types on AVX-512 go through
// 16x16 in-register blocks; the ragged edges (and other types) through 16x16 scalar tiles.
template <typename T>
inline void transpose_copy(const T* src, int64_t lds, int64_t N, int64_t K, T* dst, int64_t ldd) {
  int64_t nfull = 0, kfull = 0;
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (sizeof(T) == 4) {
    nfull = N / 16 * 16;
    kfull = K / 16 * 16;
    for (int64_t n0 = 0; n0 < nfull; n0 += 16)
      for (int64_t k0 = 0; k0 < kfull; k0 += 16) transpose16x16_32bit(src + n0 * lds + k0, lds, dst + k0 * ldd + n0, ldd);
  }
#endif
  constexpr int64_t kTile = 16;
  const auto scalar = [&](int64_t nb, int64_t ne, int64_t kb, int64_t ke) {
    for (int64_t a0 = nb; a0 < ne; a0 += kTile)
      for (int64_t k0 = kb; k0 < ke; k0 += kTile)
        for (int64_t n = a0; n < std::min(a0 + kTile, ne); ++n)
          for (int64_t k = k0; k < std::min(k0 + kTile, ke); ++k) dst[k * ldd + n] = src[n * lds + k];
  };
  scalar(0, nfull, kfull, K);  // right edge of the full rows
  scalar(nfull, N, 0, K);      // bottom rows
}

// Horizontal reductions of one vector register.
template <typename A>
inline A hsum(const at::vec::Vectorized<A>& x) {
  alignas(64) A buf[at::vec::Vectorized<A>::size()];
  x.store(buf);
  A r = 0;
  for (int i = 0; i < at::vec::Vectorized<A>::size(); ++i) r += buf[i];
  return r;
}
template <typename A>
inline A hmax(const at::vec::Vectorized<A>& x) {
  alignas(64) A buf[at::vec::Vectorized<A>::size()];
  x.store(buf);
  A r = buf[0];
  for (int i = 1; i < at::vec::Vectorized<A>::size(); ++i) r = max_nan(r, buf[i]);
  return r;
}

}  // namespace mmkernels::cpu::CPU_CAPABILITY
