// Argument checks shared by the torch glue of every op. Messages name the argument and say what was
// expected and what was given. (The Python API validates first with ValueError/TypeError; these
// guard direct calls of torch.ops.mmkernels.*.)
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <string>

#include "common/dtype.h"
#include "common/emulation.h"

namespace mmkernels {

// mmkernels.debug_checks(): checks that would synchronise the host with the device (the values of
// kv_lengths on a device) run only while this is on. Off by default: no op synchronises (design.md).
inline std::atomic<bool>& debug_checks() {
  static std::atomic<bool> on{false};
  return on;
}

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + (t.dim() == 1 ? ",)" : ")");
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be a ", dim, "-D tensor ", layout, ", got shape ", shape_str(t));
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on the same device as ", ref_name, " (",
                    ref.device(), "), got ", t.device());
}

// float64 is a CPU-kernel dtype (for gradcheck); the CUDA kernels, on the GPU or in the emulation, take
// float32/float16/bfloat16.
inline bool allows_float64(const at::Tensor& t) { return t.is_cpu() && !emulation::active(); }

// The dtype as Python users write it ("float64", not ATen's "Double").
inline std::string dtype_name(at::ScalarType st) {
  switch (st) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kBool: return "bool";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    default: return c10::toString(st);
  }
}

inline void check_float_dtype(const at::Tensor& t, const char* name, bool allow_double) {
  const auto st = t.scalar_type();
  const bool ok = st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || (allow_double && st == at::kDouble);
  TORCH_CHECK_TYPE(ok, name, " must be float32, float16 or bfloat16", allow_double ? " (or float64 on CPU)" : "",
                   ", got ", dtype_name(st),
                   st == at::kDouble ? " (float64 is supported on CPU only, by the CPU kernels)" : "");
}

inline DType to_dtype(at::ScalarType st) {
  switch (st) {
    case at::kFloat: return DType::Float32;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    case at::kDouble: return DType::Float64;
    default: TORCH_CHECK_TYPE(false, "unsupported dtype ", st);
  }
}

inline at::ScalarType to_scalar_type(DType d) {
  switch (d) {
    case DType::Float32: return at::kFloat;
    case DType::Float16: return at::kHalf;
    case DType::BFloat16: return at::kBFloat16;
    case DType::Float64: return at::kDouble;
  }
  TORCH_CHECK(false, "invalid DType ", static_cast<int>(d));
}

// A view whose innermost stride is 1 (what the kernels need); copies only when it is not.
inline at::Tensor inner_contiguous(const at::Tensor& t) {
  return (t.dim() == 0 || t.stride(-1) == 1 || t.size(-1) <= 1) ? t : t.contiguous();
}

}  // namespace mmkernels
