// Numeric rules of the attention softmax shared by every kernel (CPU, CUDA, emulation; torch-free).
#pragma once

#include "common/device/backend.h"

namespace mmkernels {

// Row maximum that propagates NaN (fmax/std::max drop it): a row whose scores contain NaN must come
// out NaN, as plain PyTorch's softmax does, not be mistaken for a row without valid keys.
template <typename A>
MMK_HOST_DEVICE A max_nan(A a, A b) {
  return (a != a || a > b) ? a : b;
}

// 1 / l for the output normalisation: rows with no valid key (l == 0) give zeros; NaN stays NaN.
template <typename A>
MMK_HOST_DEVICE A inverse_row_sum(A l) {
  return (l > A(0) || l != l) ? A(1) / l : A(0);
}

}  // namespace mmkernels
