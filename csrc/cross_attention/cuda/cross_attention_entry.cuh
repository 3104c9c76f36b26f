// The entry points of the CUDA cross_attention kernels (torch-free; declared in cross_attention_entry.h,
// parameters in cross_attention/params.h), a router: 16-bit calls the tensor-core kernels take go to
// the Hopper kernels (flash_sm90.cuh, flash_sm90_bwd.cuh) or the mma.sync kernels (flash_kernels.cuh), everything else
// (float32 above all) to the tiled SIMT kernels (tiled_kernels.cuh). All are written on the
// device-primitive layer, so the same source runs on the GPU and in the host emulation.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/device/primitives.h"
#include "common/dtype.h"
#include "common/numerics.h"
#include "cross_attention/cuda/attention_common.cuh"
#include "cross_attention/cuda/cross_attention_entry.h"
#include "cross_attention/cuda/flash_entry.h"
#include "cross_attention/cuda/tiled_kernels.cuh"
#include "cross_attention/params.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

// 16-bit inputs take the tensor-core kernels for every head dim up to 256: on sm_90 the Hopper forward
// (flash_sm90.cuh), else the mma.sync ones (flash_kernels.cuh) whose head dims are compiled; float32
// (and anything else) the tiled SIMT kernels (tiled_kernels.cuh).
template <typename T>
bool takes_sm90_forward(const CrossAttentionParams& p) {
  return !std::is_same_v<T, float> && flash::eligible(p, /*backward=*/false) && dev::sm90a_runs() &&
         flash_sm90::eligible(p) && flash_sm90::head_dim(dev::max(p.D, p.Dv)) != 0;
}

// The backward on sm_90: dK, dV, dQ by the Hopper kernel (flash_sm90_bwd.cuh) for head dims up to its
// largest, D_i by the mma.sync kernels' pre-pass; larger head dims take the mma.sync kernels.
template <typename T>
bool takes_sm90_backward(const CrossAttentionParams& p) {
  return flash::eligible(p, /*backward=*/true) && takes_sm90_forward<T>(p) &&
         flash_sm90::bwd_head_dim(dev::max(p.D, p.Dv)) != 0;
}

// The zeroed workspace of dQ's ordered accumulation: the Hopper backward's, or the sm_80 one's at the
// head dims where its dK/dV kernel adds dQ (flash::backward_workspace_bytes); 0 for the others.
template <typename T>
int64_t cross_attention_backward_workspace(const CrossAttentionParams& p) {
  if (std::is_same_v<T, float> || !flash::eligible(p, /*backward=*/true)) return 0;
  return takes_sm90_backward<T>(p) ? flash_sm90::backward_workspace_bytes(p, flash_sm90::bwd_head_dim(dev::max(p.D, p.Dv)))
                                   : flash::backward_workspace_bytes(p);
}

template <typename T>
int64_t cross_attention_forward_workspace(const CrossAttentionParams& p) {
  if (!takes_sm90_forward<T>(p)) return 0;
  const int kd = flash_sm90::head_dim(dev::max(p.D, p.Dv));
  const int n_split = flash_sm90::num_splits(p, kd, dev::multiprocessor_count());
  return 4 * flash_sm90::SplitPartials::floats(p, n_split, kd);
}

template <typename T>
dev::Error cross_attention_forward(const CrossAttentionParams& p, void* workspace, dev::Stream stream) {
  auto simt = [&] { return tiled::forward<T>(p, stream); };
  if constexpr (!std::is_same_v<T, float>) {
    if (takes_sm90_forward<T>(p))  // Hopper: TMA + wgmma (flash_sm90.cuh)
      return flash_sm90::head_dim_switch(dev::max(p.D, p.Dv), [&](auto kd) {
        return flash_sm90::forward<T, decltype(kd)::value>(p, workspace, stream);
      });
    if (flash::eligible(p, /*backward=*/false)) {
      return flash::head_dim_switch(
          dev::max(p.D, p.Dv), [&](auto kd) { return flash::forward<T, decltype(kd)::value>(p, stream); }, simt);
    }
  }
  return simt();
}

template <typename T>
dev::Error cross_attention_backward(const CrossAttentionParams& p, float* Di, void* workspace, dev::Stream stream) {
  auto simt = [&] { return tiled::backward<T>(p, Di, stream); };
  if constexpr (!std::is_same_v<T, float>) {
    if (flash::eligible(p, /*backward=*/true))
      return flash::head_dim_switch(
          dev::max(p.D, p.Dv),
          [&](auto kd) {
            const bool hopper = takes_sm90_backward<T>(p);
            dev::Error e = flash::backward<T, decltype(kd)::value>(p, Di, workspace, stream, /*grads=*/!hopper);
            if (e == dev::kSuccess && hopper)
              e = flash_sm90::bwd_head_dim_switch(dev::max(p.D, p.Dv), [&](auto kd90) {
                return flash_sm90::backward<T, decltype(kd90)::value>(p, Di, workspace, stream);
              });
            return e;
          },
          simt);
  }
  return simt();
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
