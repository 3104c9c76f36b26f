// cross_attention's CUDA kernels in the host SIMT emulation (compiled with MMK_EMULATION): the same
// glue as the GPU build, on CPU tensors, with no stream; registered with the emulation's seam
// (emulated_cross_attention_{fwd,bwd}, cross_attention_glue.h) when the module loads.
#include "cross_attention/cuda/cross_attention_device.h"

namespace mmkernels {
namespace {

std::tuple<at::Tensor, at::Tensor> cross_attention_fwd_emulated(const at::Tensor& q, const at::Tensor& k,
                                                                const at::Tensor& v,
                                                                const std::optional<at::Tensor>& kv_lengths,
                                                                const std::optional<at::Tensor>& key_padding_mask,
                                                                double scale, bool is_causal) {
  CrossAttentionArgs a =
      cuda::cross_attention_device::prepare_device_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale, is_causal);
  return cuda::cross_attention_device::run_cross_attention_fwd(a, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_attention_bwd_emulated(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& kv_lengths,
    const std::optional<at::Tensor>& key_padding_mask, double scale, bool is_causal) {
  CrossAttentionArgs a =
      cuda::cross_attention_device::prepare_device_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale, is_causal);
  return cuda::cross_attention_device::run_cross_attention_bwd(a, grad_out, out, lse, nullptr);
}

const bool registered = emulated_cross_attention_fwd.set(&cross_attention_fwd_emulated) &&
                        emulated_cross_attention_bwd.set(&cross_attention_bwd_emulated);

}  // namespace
}  // namespace mmkernels
