#include "common/device/conformance/conformance_glue.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <iterator>

namespace mmkernels::conformance {

Args make_args(int64_t primitive, const at::Tensor& in0, const std::optional<at::Tensor>& in1,
               const std::optional<at::Tensor>& in2, const at::Tensor& out, int64_t n, int64_t mode, int64_t arg) {
  TORCH_CHECK_VALUE(primitive >= 0 && primitive <= static_cast<int>(Primitive::Tma), "unknown primitive ",
                    primitive);
  auto ptr = [&](const std::optional<at::Tensor>& t, const char* name) -> const void* {
    if (!t.has_value() || !t->defined()) return nullptr;
    TORCH_CHECK_VALUE(t->is_contiguous() && t->device() == out.device(), name, " must be contiguous on ",
                      out.device());
    return t->data_ptr();
  };
  TORCH_CHECK_VALUE(out.is_contiguous() && in0.is_contiguous() && in0.device() == out.device(),
                    "in0 and out must be contiguous on one device");
  // The sm_90a cases read and write whole tiles: check the sizes against the case.
  int32_t tma_spec[5] = {};
  if (primitive == static_cast<int>(Primitive::Wgmma)) {
    TORCH_CHECK_VALUE(mode >= 0 && mode < static_cast<int64_t>(std::size(kWgmmaCases)), "unknown wgmma case ", mode);
    const WgmmaCase& c = kWgmmaCases[mode];
    TORCH_CHECK_VALUE(in1.has_value() && in0.nbytes() == 64 * 64 * 2 && in1->nbytes() == size_t(c.n) * 64 * 2 &&
                          out.nbytes() == size_t(c.n) * 64 * 4,
                      "wgmma case ", mode, ": in0 is 64 x 64 and in1 ", c.n, " x 64 16-bit values, out 64 x ", c.n, " floats");
  } else if (primitive == static_cast<int>(Primitive::Tma)) {
    TORCH_CHECK_VALUE(mode >= 0 && mode < static_cast<int64_t>(std::size(kTmaCases)), "unknown TMA case ", mode);
    const TmaCase& c = kTmaCases[mode];
    TORCH_CHECK_VALUE(in1.has_value() && in1->numel() == 5 && in1->scalar_type() == at::kInt, "in1: 5 int32 values");
    const at::Tensor host = in1->cpu();
    const int32_t* spec = host.data_ptr<int32_t>();
    TORCH_CHECK_VALUE(spec[0] >= 1 && spec[1] >= 1 && spec[2] >= spec[1] && in0.nbytes() >= size_t(spec[0]) * spec[2] * 2 &&
                          out.nbytes() == size_t(c.rows) * c.cols * 2,
                      "TMA case ", mode, ": in0 holds rows x stride 16-bit values, out the ", c.rows, " x ", c.cols, " box");
    std::copy(spec, spec + 5, tma_spec);
  }
  Args a;
  std::copy(tma_spec, tma_spec + 5, a.spec);
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
