// Numeric rules of the attention softmax shared by every kernel (CPU, CUDA, emulation; torch-free).
#pragma once

#include <cmath>
#include <type_traits>

#include "common/device/backend.h"

namespace mmkernels {

// Row maximum that propagates NaN (fmax/std::max drop it): a row whose scores contain NaN must come
// out NaN, as plain PyTorch's softmax does, not be mistaken for a row without valid keys. On sm_80+
// one instruction does exactly this for float32 (PTX `max.NaN.f32`) instead of three.
template <typename A>
MMK_HOST_DEVICE A max_nan(A a, A b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<A, float>) {
    float r;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
  }
#endif
  return (a != a || a > b) ? a : b;
}

// 1 / l for the output normalisation: rows with no valid key (l == 0) give zeros; NaN stays NaN.
template <typename A>
MMK_HOST_DEVICE A inverse_row_sum(A l) {
  return (l > A(0) || l != l) ? A(1) / l : A(0);
}

// A row's softmax denominator after its last key. A row that had a counting key but whose scores all
// came out -inf (scale * q.k overflowed the compute dtype) has no sound normalisation: plain PyTorch
// gives NaN there (exp(-inf - -inf)), and so do we, rather than the zeros of a row with no valid key.
template <typename A>
MMK_HOST_DEVICE A final_row_sum(A l, bool had_key) {
  return (l == A(0) && had_key) ? A(NAN) : l;
}

}  // namespace mmkernels
