// The conformance kernels in the host emulation (compiled with MMK_EMULATION): the CPU kernel of
// mmkernels_testing::conformance.
#include <torch/library.h>

#include "common/device/conformance/conformance_glue.h"
#include "common/device/conformance/conformance_entry.h"
#include "common/device/torch_check.h"

namespace mmkernels::conformance {
namespace {

void conformance_emulated(int64_t primitive, const at::Tensor& in0, const std::optional<at::Tensor>& in1,
                          const std::optional<at::Tensor>& in2, at::Tensor& out, int64_t n, int64_t mode,
                          int64_t arg) {
  dev::check(cuda::run(make_args(primitive, in0, in1, in2, out, n, mode, arg), nullptr), "emulated conformance kernel");
}

}  // namespace
}  // namespace mmkernels::conformance

TORCH_LIBRARY_IMPL(mmkernels_testing, CPU, m) {
  m.impl("conformance", &mmkernels::conformance::conformance_emulated);
}
