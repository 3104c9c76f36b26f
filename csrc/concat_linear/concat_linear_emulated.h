// concat_linear's CUDA kernels run in the host SIMT emulation, on CPU tensors: what the CPU
// implementation calls while mmkernels.testing.emulated_cuda() is on (builds with
// MMKERNELS_CUDA_EMULATION=ON; defined in cuda/concat_linear_emulated.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace mmkernels::emulated {

std::tuple<at::Tensor, at::Tensor> concat_linear_fwd(at::TensorList inputs, const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias, int64_t activation,
                                                     bool save_preactivation);
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> concat_linear_bwd(const at::Tensor& grad_out,
                                                                              at::TensorList inputs,
                                                                              const at::Tensor& weight,
                                                                              const at::Tensor& z, bool has_bias,
                                                                              int64_t activation,
                                                                              at::OptionalIntArrayRef input_mask,
                                                                              bool weight_grad);

}  // namespace mmkernels::emulated
