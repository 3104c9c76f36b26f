// CUDA implementation of mmkernels::cross_attention_{fwd,bwd}: thin glue around the torch-free kernels.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "cross_attention/cross_attention_glue.h"
#include "cross_attention/cuda/cross_attention_launch.h"

namespace mmkernels {
namespace {

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "mmkernels: ", what, " failed: ", cudaGetErrorString(err));
}

// kv_lengths values are checked on the host when that is allowed (not while a CUDA graph is being
// captured, where a host sync is illegal); the kernels clamp them to [0, Lk] in every case.
void check_lengths_on_device(const CrossAttentionArgs& a, cudaStream_t stream) {
  if (!a.kv_lengths.defined() || a.kv_lengths.numel() == 0) return;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(stream, &status), "cudaStreamIsCapturing");
  if (status != cudaStreamCaptureStatusNone) return;
  const bool bad = ((a.kv_lengths < 0) | (a.kv_lengths > a.p.Lk)).any().item<bool>();
  TORCH_CHECK_VALUE(!bad, "kv_lengths must lie in [0, Lk] = [0, ", a.p.Lk, "], got ", a.kv_lengths.cpu());
}

std::tuple<at::Tensor, at::Tensor> cross_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v,
                                                            const std::optional<at::Tensor>& kv_lengths,
                                                            const std::optional<at::Tensor>& key_padding_mask,
                                                            double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  CrossAttentionArgs a = prepare_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale);
  CrossAttentionParams& p = a.p;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  check_lengths_on_device(a, stream);
  auto [out, lse] = allocate_cross_attention_outputs(a);
  if (out.numel() == 0) return {out, lse};
  switch (p.dtype) {
    case DType::Float32: check_cuda(cuda::cross_attention_forward_f32(p, stream), "cross_attention forward"); break;
    case DType::Float16: check_cuda(cuda::cross_attention_forward_f16(p, stream), "cross_attention forward"); break;
    case DType::BFloat16: check_cuda(cuda::cross_attention_forward_bf16(p, stream), "cross_attention forward"); break;
    default: TORCH_CHECK_TYPE(false, "cross_attention on CUDA supports float32/float16/bfloat16, got ", q.scalar_type());
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& kv_lengths,
    const std::optional<at::Tensor>& key_padding_mask, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  CrossAttentionArgs a = prepare_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale);
  CrossAttentionGrads g = prepare_cross_attention_backward(a, grad_out, out, lse);
  const CrossAttentionParams& p = a.p;
  if (g.dq.numel() == 0 || g.dk.numel() == 0) return {g.dq, g.dk, g.dv};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor Di = at::empty({p.B, p.H, p.Lq}, q.options().dtype(at::kFloat));
  float* di = Di.data_ptr<float>();
  switch (p.dtype) {
    case DType::Float32: check_cuda(cuda::cross_attention_backward_f32(p, di, stream), "cross_attention backward"); break;
    case DType::Float16: check_cuda(cuda::cross_attention_backward_f16(p, di, stream), "cross_attention backward"); break;
    case DType::BFloat16: check_cuda(cuda::cross_attention_backward_bf16(p, di, stream), "cross_attention backward"); break;
    default: TORCH_CHECK_TYPE(false, "cross_attention on CUDA supports float32/float16/bfloat16, got ", q.scalar_type());
  }
  return {g.dq, g.dk, g.dv};
}

}  // namespace
}  // namespace mmkernels

TORCH_LIBRARY_IMPL(mmkernels, CUDA, m) {
  m.impl("cross_attention_fwd", &mmkernels::cross_attention_fwd_cuda);
  m.impl("cross_attention_bwd", &mmkernels::cross_attention_bwd_cuda);
}
