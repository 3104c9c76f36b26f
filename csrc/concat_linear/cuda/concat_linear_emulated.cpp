// concat_linear's CUDA kernels in the host SIMT emulation (compiled with MMK_EMULATION): the same glue
// as the GPU build, on CPU tensors, with no stream; registered with the emulation's seam
// (emulated_concat_linear_{fwd,bwd}, concat_linear_glue.h) when the module loads.
#include "concat_linear/cuda/concat_linear_device.h"

namespace mmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor> concat_linear_fwd_emulated(at::TensorList inputs, const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias,
                                                              int64_t activation, bool save_preactivation) {
  ConcatLinearArgs a = prepare_concat_linear(inputs, weight, bias, activation, save_preactivation);
  return cuda::concat_linear_device::run_concat_linear_fwd(a, weight, bias, nullptr);
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> concat_linear_bwd_emulated(
    const at::Tensor& grad_out, at::TensorList inputs, const at::Tensor& weight, const at::Tensor& z, bool has_bias,
    int64_t activation, at::OptionalIntArrayRef input_mask, bool weight_grad) {
  ConcatLinearArgs a = prepare_concat_linear(inputs, weight, std::nullopt, activation);
  return cuda::concat_linear_device::run_concat_linear_bwd(a, grad_out, inputs, weight, z, has_bias, input_mask,
                                                           weight_grad, nullptr);
}

const bool registered = emulated_concat_linear_fwd.set(&concat_linear_fwd_emulated) &&
                        emulated_concat_linear_bwd.set(&concat_linear_bwd_emulated);

}  // namespace
}  // namespace mmkernels
