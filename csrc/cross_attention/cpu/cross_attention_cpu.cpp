// CPU implementation of mmkernels::cross_attention_{fwd,bwd}: thin glue around the kernel.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "common/cpu/capability.h"
#include "cross_attention/cross_attention_glue.h"

MMK_CPU_DECLARE(void cross_attention_forward(const ::mmkernels::CrossAttentionParams& p))
MMK_CPU_DECLARE(void cross_attention_backward(const ::mmkernels::CrossAttentionParams& p))

namespace mmkernels {
namespace {

void run_forward(const CrossAttentionParams& p) { MMK_CPU_DISPATCH(cross_attention_forward, p); }
void run_backward(const CrossAttentionParams& p) { MMK_CPU_DISPATCH(cross_attention_backward, p); }

std::tuple<at::Tensor, at::Tensor> cross_attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v,
                                                           const std::optional<at::Tensor>& kv_lengths,
                                                           const std::optional<at::Tensor>& key_padding_mask,
                                                           double scale, bool is_causal) {
  if (auto* emulated = emulated_cross_attention_fwd.current())
    return emulated(q, k, v, kv_lengths, key_padding_mask, scale, is_causal);
  CrossAttentionArgs a = prepare_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale, is_causal);
  auto [out, lse] = allocate_cross_attention_outputs(a);
  if (out.numel() == 0) return {out, lse};
  run_forward(a.p);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_attention_bwd_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& kv_lengths,
    const std::optional<at::Tensor>& key_padding_mask, double scale, bool is_causal) {
  if (auto* emulated = emulated_cross_attention_bwd.current())
    return emulated(grad_out, q, k, v, out, lse, kv_lengths, key_padding_mask, scale, is_causal);
  CrossAttentionArgs a = prepare_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale, is_causal);
  CrossAttentionGrads g = prepare_cross_attention_backward(a, grad_out, out, lse);
  if (g.dq.numel() > 0 && g.dk.numel() > 0) run_backward(a.p);
  return {g.dq, g.dk, g.dv};
}

}  // namespace
}  // namespace mmkernels

TORCH_LIBRARY_IMPL(mmkernels, CPU, m) {
  m.impl("cross_attention_fwd", &mmkernels::cross_attention_fwd_cpu);
  m.impl("cross_attention_bwd", &mmkernels::cross_attention_bwd_cpu);
}
