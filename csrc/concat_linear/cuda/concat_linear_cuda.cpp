// CUDA implementation of mmkernels::concat_linear_{fwd,bwd}: device guard and stream around the shared
// device glue (concat_linear_device.h).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "concat_linear/cuda/concat_linear_device.h"

namespace mmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor> concat_linear_fwd_cuda(at::TensorList inputs, const at::Tensor& weight,
                                                          const std::optional<at::Tensor>& bias, int64_t activation,
                                                          bool save_preactivation) {
  ConcatLinearArgs a = prepare_concat_linear(inputs, weight, bias, activation, save_preactivation);
  const c10::cuda::CUDAGuard guard(inputs[0].device());
  return cuda::concat_linear_device::run_concat_linear_fwd(a, weight, bias, c10::cuda::getCurrentCUDAStream());
}

std::vector<at::Tensor> concat_linear_bwd_cuda(
    const at::Tensor& grad_out, at::TensorList inputs, const at::Tensor& weight, const at::Tensor& z,
    bool has_bias, int64_t activation, at::OptionalIntArrayRef input_mask, bool weight_grad) {
  ConcatLinearArgs a = prepare_concat_linear(inputs, weight, std::nullopt, activation);
  const c10::cuda::CUDAGuard guard(inputs[0].device());
  return flat_grads(cuda::concat_linear_device::run_concat_linear_bwd(
      a, grad_out, inputs, weight, z, has_bias, input_mask, weight_grad, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace
}  // namespace mmkernels

TORCH_LIBRARY_IMPL(mmkernels, CUDA, m) {
  m.impl("concat_linear_fwd", &mmkernels::concat_linear_fwd_cuda);
  m.impl("concat_linear_bwd", &mmkernels::concat_linear_bwd_cuda);
}
