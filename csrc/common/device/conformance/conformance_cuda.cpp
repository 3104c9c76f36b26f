// The conformance kernels on the GPU (CUDA builds): the CUDA kernel of mmkernels_testing::conformance.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/device/conformance/conformance_glue.h"
#include "common/device/conformance/conformance_entry.h"
#include "common/device/torch_check.h"

namespace mmkernels::conformance {
namespace {

void conformance_cuda(int64_t primitive, const at::Tensor& in0, const std::optional<at::Tensor>& in1,
                      const std::optional<at::Tensor>& in2, at::Tensor& out, int64_t n, int64_t mode, int64_t arg) {
  const c10::cuda::CUDAGuard guard(out.device());
  dev::check(cuda::run(make_args(primitive, in0, in1, in2, out, n, mode, arg), c10::cuda::getCurrentCUDAStream()),
             "conformance kernel");
}

}  // namespace
}  // namespace mmkernels::conformance

TORCH_LIBRARY_IMPL(mmkernels_testing, CUDA, m) {
  m.impl("conformance", &mmkernels::conformance::conformance_cuda);
}
