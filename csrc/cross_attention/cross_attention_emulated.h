// cross_attention's CUDA kernels run in the host SIMT emulation, on CPU tensors: what the CPU
// implementation calls while mmkernels.testing.emulated_cuda() is on (builds with
// MMKERNELS_CUDA_EMULATION=ON; defined in cuda/cross_attention_emulated.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace mmkernels::emulated {

std::tuple<at::Tensor, at::Tensor> cross_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const std::optional<at::Tensor>& kv_lengths,
                                                       const std::optional<at::Tensor>& key_padding_mask,
                                                       double scale, bool is_causal);
std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_attention_bwd(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& kv_lengths,
    const std::optional<at::Tensor>& key_padding_mask, double scale, bool is_causal);

}  // namespace mmkernels::emulated
