// Torch glue of the CUDA cross_attention kernels, shared by the GPU build (cross_attention_cuda.cpp)
// and the host emulation (cross_attention_emulated.cpp): allocation, dtype dispatch, checked launches.
// Compiled once per backend, hence the backend namespace.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "common/device/torch_check.h"
#include "common/dispatch.h"
#include "cross_attention/cross_attention_glue.h"
#include "cross_attention/cuda/cross_attention_launch.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

template <typename Fn>
decltype(auto) dispatch_device_dtype(DType d, Fn&& fn) {
  return dispatch_dtype<float, dev::half, dev::bf16, void>(d, "cross_attention on CUDA", std::forward<Fn>(fn));
}

inline std::tuple<at::Tensor, at::Tensor> run_cross_attention_fwd(CrossAttentionArgs& a, dev::Stream stream) {
  auto [out, lse] = allocate_cross_attention_outputs(a);
  if (out.numel() == 0) return {out, lse};
  dispatch_device_dtype(a.p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dev::check(cross_attention_forward<T>(a.p, stream), "cross_attention forward kernel");
  });
  return {out, lse};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> run_cross_attention_bwd(CrossAttentionArgs& a,
                                                                               const at::Tensor& grad_out,
                                                                               const at::Tensor& out,
                                                                               const at::Tensor& lse,
                                                                               dev::Stream stream) {
  CrossAttentionGrads g = prepare_cross_attention_backward(a, grad_out, out, lse);
  const CrossAttentionParams& p = a.p;
  if (g.dq.numel() == 0 || g.dk.numel() == 0) return {g.dq, g.dk, g.dv};
  at::Tensor Di = at::empty({p.B, p.H, p.Lq}, a.q.options().dtype(at::kFloat));
  dispatch_device_dtype(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dev::check(cross_attention_backward<T>(p, Di.data_ptr<float>(), stream), "cross_attention backward kernels");
  });
  return {g.dq, g.dk, g.dv};
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
