// Element types the kernels are instantiated for, and the numeric rules tied to them (torch-free,
// usable from host and device code).
#pragma once

#include <cstddef>
#include <type_traits>

namespace mmkernels {

enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

constexpr size_t dtype_size(DType d) { return d == DType::Float64 ? 8 : d == DType::Float32 ? 4 : 2; }

// cross_attention saves the softmax's log-sum-exp for the backward, which recomputes P = exp(s - lse).
// It is float64 for float32/float64 inputs: a float32 lse (|lse| ~ log Lk + max s) would put a relative
// error of ~eps*|lse| on every recomputed P and break the float32 error budget for the gradients (plain
// softmax only pays eps*|s - max|). 16-bit inputs keep a float32 lse (their budget is far looser).
// This is the one place the rule is written; `lse_t<T>` is its element-type form (float/double inputs
// on CPU and GPU alike, every other element type -> float).
constexpr DType lse_dtype(DType input) {
  return (input == DType::Float32 || input == DType::Float64) ? DType::Float64 : DType::Float32;
}
template <typename T>
using lse_t = std::conditional_t<std::is_same_v<T, float> || std::is_same_v<T, double>, double, float>;

}  // namespace mmkernels
