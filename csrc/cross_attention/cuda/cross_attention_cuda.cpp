// CUDA implementation of mmkernels::cross_attention_{fwd,bwd}: device guard and stream around the
// shared device glue (cross_attention_device.h).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cross_attention/cuda/cross_attention_device.h"

namespace mmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor> cross_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v,
                                                            const std::optional<at::Tensor>& kv_lengths,
                                                            const std::optional<at::Tensor>& key_padding_mask,
                                                            double scale, bool is_causal) {
  const c10::cuda::CUDAGuard guard(q.device());
  CrossAttentionArgs a =
      cuda::cross_attention_device::prepare_device_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale, is_causal);
  return cuda::cross_attention_device::run_cross_attention_fwd(a, c10::cuda::getCurrentCUDAStream());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& kv_lengths,
    const std::optional<at::Tensor>& key_padding_mask, double scale, bool is_causal) {
  const c10::cuda::CUDAGuard guard(q.device());
  CrossAttentionArgs a =
      cuda::cross_attention_device::prepare_device_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale, is_causal);
  return cuda::cross_attention_device::run_cross_attention_bwd(a, grad_out, out, lse,
                                                               c10::cuda::getCurrentCUDAStream());
}

}  // namespace
}  // namespace mmkernels

TORCH_LIBRARY_IMPL(mmkernels, CUDA, m) {
  m.impl("cross_attention_fwd", &mmkernels::cross_attention_fwd_cuda);
  m.impl("cross_attention_bwd", &mmkernels::cross_attention_bwd_cuda);
}
