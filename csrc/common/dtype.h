// Element types the kernels are instantiated for, and the numeric rules tied to them (torch-free,
// usable from host and device code).
#pragma once

#include <cstddef>
#include <limits>
#include <string_view>
#include <type_traits>

namespace mmkernels {

enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

constexpr size_t dtype_size(DType d) { return d == DType::Float64 ? 8 : d == DType::Float32 ? 4 : 2; }

// torch's names of the four types (torch.float32 -> "float32"), both ways.
constexpr const char* kDTypeNames[] = {"float32", "float16", "bfloat16", "float64"};
constexpr const char* dtype_name(DType d) { return kDTypeNames[static_cast<int>(d)]; }
inline bool dtype_from_name(std::string_view name, DType* out) {
  for (int i = 0; i < 4; ++i)
    if (name == kDTypeNames[i]) return *out = static_cast<DType>(i), true;
  return false;
}

// cross_attention saves the softmax's log-sum-exp for the backward, which recomputes P = exp(s - lse).
// It is float64 for every input dtype, and the kernels evaluate exp((s - hi) - lo) in float with the
// lse split into float hi + lo. That keeps the recomputed P consistent with the forward's
// normalisation to ~2^-48 relative whatever |lse| is: a float32 lse puts eps*|lse| on every P (the
// float32 budget breaks) and, once |lse| is large (a softmax saturated by a huge scale, |s| ~ 1e10),
// loses log(l) entirely, so tied keys each get P = 1 and exp2 of the rounding overflows.
// This is the one place the rule is written; `lse_t<T>` is its element-type form.
constexpr DType lse_dtype(DType /*input*/) { return DType::Float64; }
template <typename T>
using lse_t = double;

// The dtype the kernels compute in (scores, softmax, accumulators): float64 for float64 inputs, else
// float32. A scale must be finite in it (checked by the glue).
constexpr DType compute_dtype(DType input) { return input == DType::Float64 ? DType::Float64 : DType::Float32; }
constexpr double compute_max(DType input) {
  return compute_dtype(input) == DType::Float64 ? std::numeric_limits<double>::max()
                                                : double(std::numeric_limits<float>::max());
}

}  // namespace mmkernels
