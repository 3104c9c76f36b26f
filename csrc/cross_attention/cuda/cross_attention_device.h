// Torch glue of the CUDA cross_attention kernels, shared by the GPU build (cross_attention_cuda.cpp)
// and the host emulation (cross_attention_emulated.cpp): allocation, dtype dispatch, checked launches.
// Compiled once per backend, hence the backend namespace; its own namespace (cross_attention_device), so
// no helper here can meet another op's of the same name.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "common/device/device_queries.h"
#include "common/device/torch_check.h"
#include "common/dispatch.h"
#include "cross_attention/cross_attention_glue.h"
#include "cross_attention/cuda/cross_attention_entry.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace cross_attention_device {

// The tensor-core kernels read rows in 16-byte chunks (cp.async): each row must start 16-byte aligned
// and the head dim be a multiple of 8. A 16-bit input that is not so is copied once into a contiguous
// buffer with zero columns up to the next multiple of 8 (as FlashAttention pads head dims); the
// kernels never write beyond the real D/Dv.
// The glue's row layout for these kernels (prepare_cross_attention's `rows`).
struct ChunkReadyRows {
  at::Tensor operator()(const at::Tensor& t) const {
    const auto es = static_cast<int64_t>(t.element_size());
    const bool ok = t.scalar_type() == at::kFloat ||
                    (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.size(3) % 8 == 0 &&
                     t.stride(0) * es % 16 == 0 && t.stride(1) * es % 16 == 0 && t.stride(2) * es % 16 == 0);
    if (ok) return t;
    at::Tensor padded = at::zeros({t.size(0), t.size(1), t.size(2), (t.size(3) + 7) / 8 * 8}, t.options());
    padded.narrow(3, 0, t.size(3)).copy_(t);
    return padded;
  }
};

// prepare_cross_attention with the rows these kernels read (the device glue's entry).
inline CrossAttentionArgs prepare_device_cross_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                         const std::optional<at::Tensor>& kv_lengths,
                                                         const std::optional<at::Tensor>& key_padding_mask,
                                                         double scale, bool is_causal) {
  return prepare_cross_attention(q, k, v, kv_lengths, key_padding_mask, scale, is_causal, ChunkReadyRows{});
}

template <typename Fn>
decltype(auto) dispatch_device_dtype(DType d, Fn&& fn) {
  return dispatch_dtype<float, dev::half, dev::bf16, void>(d, "cross_attention on CUDA", std::forward<Fn>(fn));
}

// The kernels clamp kv_lengths to [0, Lk]; under mmkernels.debug_checks() out-of-range values raise
// here instead (a host synchronisation: cross_attention_glue.h), except while a CUDA graph is captured.
inline void check_device_lengths(const CrossAttentionArgs& a, dev::Stream stream) {
  if (!debug_checks() || !a.kv_lengths.defined()) return;
  bool capturing = false;
  dev::check(stream_capturing(stream, &capturing), "cudaStreamIsCapturing");
  if (!capturing) check_kv_length_values(a.kv_lengths, a.p.Lk);
}

inline std::tuple<at::Tensor, at::Tensor> run_cross_attention_fwd(CrossAttentionArgs& a, dev::Stream stream) {
  check_device_lengths(a, stream);
  auto [out, lse] = allocate_cross_attention_outputs(a);
  if (out.numel() == 0) return {out, lse};
  dispatch_device_dtype(a.p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t bytes = cross_attention_forward_workspace<T>(a.p);
    const at::Tensor workspace = at::empty({bytes}, a.q.options().dtype(at::kByte));
    dev::check(cross_attention_forward<T>(a.p, bytes ? workspace.data_ptr() : nullptr, stream),
               "cross_attention forward kernel");
  });
  return {out, lse};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> run_cross_attention_bwd(CrossAttentionArgs& a,
                                                                               const at::Tensor& grad_out,
                                                                               const at::Tensor& out,
                                                                               const at::Tensor& lse,
                                                                               dev::Stream stream) {
  CrossAttentionGrads g = prepare_cross_attention_backward(a, grad_out, out, lse, ChunkReadyRows{});
  CrossAttentionParams& p = a.p;
  if (g.dq.numel() == 0 || g.dk.numel() == 0) return {g.dq, g.dk, g.dv};
  at::Tensor Di = at::empty({p.B, p.H, p.Lq}, a.q.options().dtype(at::kFloat));
  dispatch_device_dtype(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t bytes = cross_attention_backward_workspace<T>(p);
    const at::Tensor workspace = bytes ? at::zeros({bytes}, a.q.options().dtype(at::kByte)) : at::Tensor();
    dev::check(cross_attention_backward<T>(p, Di.data_ptr<float>(), bytes ? workspace.data_ptr() : nullptr, stream),
               "cross_attention backward kernels");
  });
  return {g.dq, g.dk, g.dv};
}

}  // namespace cross_attention_device
MMK_BACKEND_END
}  // namespace mmkernels::cuda
