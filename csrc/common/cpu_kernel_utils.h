// Small building blocks shared by the CPU kernels. Included only from kernel sources that are
// compiled once per CPU capability, so everything here lives in mmkernels::cpu::CPU_CAPABILITY.
#pragma once

#include <ATen/cpu/vec/vec.h>
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


namespace mmkernels::cpu::CPU_CAPABILITY {

// Accumulation type: float32 for float32/float16/bfloat16, float64 for float64.
template <typename T>
using acc_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Type of the saved log-sum-exp: float64 for float32/float64 inputs. The backward recomputes
// P = exp(s - lse); a float32 lse (|lse| ~ log Lk + max s) would put a relative error of ~eps*|lse| on
// every P and break the float32 error budget for the gradients (plain softmax only pays eps*|s - max|).
template <typename T>
using lse_type = std::conditional_t<std::is_same_v<T, float> || std::is_same_v<T, double>, double, float>;

template <typename T>
constexpr bool is_reduced_v = std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>;

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
  for (int i = 1; i < at::vec::Vectorized<A>::size(); ++i) r = std::max(r, buf[i]);
  return r;
}

}  // namespace mmkernels::cpu::CPU_CAPABILITY
