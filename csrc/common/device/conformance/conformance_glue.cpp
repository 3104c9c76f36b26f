#include "common/device/conformance/conformance_glue.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

namespace mmkernels::conformance {

Args make_args(int64_t primitive, const at::Tensor& in0, const std::optional<at::Tensor>& in1,
               const std::optional<at::Tensor>& in2, const at::Tensor& out, int64_t n, int64_t mode, int64_t arg) {
  TORCH_CHECK_VALUE(primitive >= 0 && primitive <= static_cast<int>(Primitive::Convert), "unknown primitive ",
                    primitive);
  auto ptr = [&](const std::optional<at::Tensor>& t, const char* name) -> const void* {
    if (!t.has_value() || !t->defined()) return nullptr;
    TORCH_CHECK_VALUE(t->is_contiguous() && t->device() == out.device(), name, " must be contiguous on ",
                      out.device());
    return t->data_ptr();
  };
  TORCH_CHECK_VALUE(out.is_contiguous() && in0.is_contiguous() && in0.device() == out.device(),
                    "in0 and out must be contiguous on one device");
  Args a;
  a.primitive = static_cast<Primitive>(primitive);
  a.in0 = in0.data_ptr();
  a.in1 = ptr(in1, "in1");
  a.in2 = ptr(in2, "in2");
  a.out = out.data_ptr();
  a.n = n;
  a.mode = static_cast<int>(mode);
  a.arg = static_cast<int>(arg);
  return a;
}

}  // namespace mmkernels::conformance

TORCH_LIBRARY(mmkernels_testing, m) {
  m.def("conformance(int primitive, Tensor in0, Tensor? in1, Tensor? in2, Tensor(a!) out, int n, int mode, "
        "int arg) -> ()");
}
