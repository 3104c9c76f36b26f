// CUDA implementation of mmkernels::cross_attention_{fwd,bwd}: device guard and stream around the
// shared device glue (cross_attention_device.h).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cross_attention/cuda/cross_attention_device.h"

namespace mmkernels {
namespace {

// kv_lengths values are checked on the host when that is allowed (not while a CUDA graph is being
// captured, where a host sync is illegal); the kernels clamp them to [0, Lk] in every case.
void check_lengths_on_device(const CrossAttentionArgs& a, cudaStream_t stream) {
  if (!a.kv_lengths.defined() || a.kv_lengths.numel() == 0) return;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  dev::check(cudaStreamIsCapturing(stream, &status), "cudaStreamIsCapturing");
  if (status != cudaStreamCaptureStatusNone) return;
  // One device reduction and one copy of two scalars; the message names the offending range.
  const at::Tensor lo_hi = at::stack({a.kv_lengths.min(), a.kv_lengths.max()}).cpu();
  const int64_t lo = lo_hi[0].item<int64_t>(), hi = lo_hi[1].item<int64_t>();
  TORCH_CHECK_VALUE(lo >= 0 && hi <= a.p.Lk, "kv_lengths must lie in [0, Lk] = [0, ", a.p.Lk, "], got values in [",
                    lo, ", ", hi, "]");
}

std::tuple<at::Tensor, at::Tensor> cross_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v,
                                                            const std::optional<at::Tensor>& kv_lengths,
                                                            const std::optional<at::Tensor>& key_padding_mask,
                                                            double scale, bool is_causal) {
  const c10::cuda::CUDAGuard guard(q.device());
  CrossAttentionArgs a = prepare_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale, is_causal);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  check_lengths_on_device(a, stream);
  return cuda::run_cross_attention_fwd(a, stream);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& kv_lengths,
    const std::optional<at::Tensor>& key_padding_mask, double scale, bool is_causal) {
  const c10::cuda::CUDAGuard guard(q.device());
  CrossAttentionArgs a = prepare_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale, is_causal);
  return cuda::run_cross_attention_bwd(a, grad_out, out, lse, c10::cuda::getCurrentCUDAStream());
}

}  // namespace
}  // namespace mmkernels

TORCH_LIBRARY_IMPL(mmkernels, CUDA, m) {
  m.impl("cross_attention_fwd", &mmkernels::cross_attention_fwd_cuda);
  m.impl("cross_attention_bwd", &mmkernels::cross_attention_bwd_cuda);
}
