// Runtime values to template parameters, in one place (the idea of FlashAttention's static_switch.h):
// the callable gets a TypeTag<T> and uses `typename decltype(tag)::type`.
#pragma once

#include <c10/util/Exception.h>

#include <type_traits>

#include "common/dtype.h"

namespace mmkernels {

template <typename T> struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<T>{}) with T the caller's type for `d` among (float32, float16, bfloat16, float64);
// `void` marks a dtype the caller does not take, which raises a TypeError naming `what`.
template <typename F32, typename F16, typename BF16, typename F64, typename Fn>
decltype(auto) dispatch_dtype(DType d, const char* what, Fn&& fn) {
  switch (d) {
    case DType::Float32:
      if constexpr (!std::is_void_v<F32>) return fn(TypeTag<F32>{});
      break;
    case DType::Float16:
      if constexpr (!std::is_void_v<F16>) return fn(TypeTag<F16>{});
      break;
    case DType::BFloat16:
      if constexpr (!std::is_void_v<BF16>) return fn(TypeTag<BF16>{});
      break;
    case DType::Float64:
      if constexpr (!std::is_void_v<F64>) return fn(TypeTag<F64>{});
      break;
  }
  TORCH_CHECK_TYPE(false, what, " does not support this dtype (", static_cast<int>(d), ")");
}

}  // namespace mmkernels
