// concat_linear's CUDA kernels in the host SIMT emulation (compiled with MMK_EMULATION): the same glue
// as the GPU build, on CPU tensors, with no stream.
#include "concat_linear/concat_linear_emulated.h"

#include "concat_linear/cuda/concat_linear_device.h"

namespace mmkernels::emulated {

std::tuple<at::Tensor, at::Tensor> concat_linear_fwd(at::TensorList inputs, const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias, int64_t activation,
                                                     bool save_preactivation) {
  ConcatLinearArgs a = prepare_concat_linear(inputs, weight, bias, activation, save_preactivation);
  return cuda::concat_linear_device::run_concat_linear_fwd(a, weight, bias, nullptr);
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> concat_linear_bwd(const at::Tensor& grad_out,
                                                                              at::TensorList inputs,
                                                                              const at::Tensor& weight,
                                                                              const at::Tensor& z, bool has_bias,
                                                                              int64_t activation,
                                                                              at::OptionalIntArrayRef input_mask,
                                                                              bool weight_grad) {
  ConcatLinearArgs a = prepare_concat_linear(inputs, weight, std::nullopt, activation);
  return cuda::concat_linear_device::run_concat_linear_bwd(a, grad_out, inputs, weight, z, has_bias, input_mask,
                                                           weight_grad, nullptr);
}

}  // namespace mmkernels::emulated
