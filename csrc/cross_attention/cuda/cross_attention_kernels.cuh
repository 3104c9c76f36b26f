// CUDA kernels for cross_attention (torch-free; parameters in cross_attention/params.h), written on the
// device-primitive layer so that the same source runs on the GPU and in the host emulation.
//
// This file: the portable SIMT backward kernels (float32 accumulation), correct for every case of the
// contract (any D/Dv in 1..256, GQA, kv_lengths, masks, strides, empty rows) and deterministic: the
// float32 path, and the fallback for calls the tensor-core kernels do not take. The forward of those
// calls is tiled_forward.cuh. At the end, the entry points that choose between them and the
// tensor-core kernels (flash_kernels.cuh).
//
// Backward: Di = sum_j P_ij dP_ij (recomputed); dQ with one warp per query row (same key loop); dK/dV with one warp
// per key, looping over the group's query heads and all query rows in a fixed order (no atomics).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/device/primitives.h"
#include "common/dtype.h"
#include "common/numerics.h"
#include "cross_attention/cuda/attention_common.cuh"
#include "cross_attention/cuda/cross_attention_launch.h"
#include "cross_attention/cuda/flash_launch.h"
#include "cross_attention/cuda/tiled_forward.cuh"
#include "cross_attention/params.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace simt {

constexpr int kWarp = dev::kWarpSize;
constexpr int kMaxDimPerLane = kMaxHeadDim / kWarp;
constexpr int kRowsPerBlock = 4;  // warps per block
// The occupancy these kernels aim for, given to ptxas: without it, it chases a higher one with cold
// spills of long-lived values (kernel audit) although ~56 registers suffice.
constexpr int kMinBlocks = 4;

MMK_DEVICE float warp_max(float v) {  // NaN-propagating (common/numerics.h)
  MMK_UNROLL
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, dev::shfl_xor(dev::kFullMask, v, o));
  return v;
}
MMK_DEVICE float warp_sum(float v) {
  MMK_UNROLL
  for (int o = 16; o > 0; o >>= 1) v += dev::shfl_xor(dev::kFullMask, v, o);
  return v;
}

// Blocked float32 dot product (chunks of 32 summed afterwards): one long chain accumulates rounding
// error like its length, and attention amplifies score errors through exp; plain PyTorch's GEMMs
// block their reduction too, and the float32 error budget is relative to them.
template <typename T>
MMK_DEVICE float dot_row(dev::SmemPtr<const float> s_vec, const T* row, int n) {
  float total = 0.f;
  for (int d0 = 0; d0 < n; d0 += 32) {
    float acc = 0.f;
    for (int d = d0; d < dev::min(n, d0 + 32); ++d) acc = fmaf(s_vec[d], dev::to_float(row[d]), acc);
    total += acc;
  }
  return total;
}

// Di = rowsum(dO * O) = sum_j P_ij dP_ij, the softmax-backward correction term, float32 (B, H, Lq).
// Taken from the recomputed P and dP (as the CPU kernel does for short key sequences), so that
// dS = P (dP - Di) is consistent with the P it multiplies: the O-based form cancels badly in float32.
// grid (ceil(Lq / kRowsPerBlock), H, B); smem kRowsPerBlock * (D + Dv) floats.
template <typename T>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kRowsPerBlock * kWarp, kMinBlocks) softmax_grad_rowsum_kernel(const CrossAttentionParams p,
                                                                                    float* Di) {
  const int warp = dev::warp_id(), lane = dev::lane_id();
  const int64_t b = dev::block_idx().z, h = dev::block_idx().y;
  const int64_t i = int64_t(dev::block_idx().x) * kRowsPerBlock + warp;
  if (i >= p.Lq) return;
  const int64_t group = gqa_group(p), hk = static_cast<int>(h) / static_cast<int>(group);
  dev::SmemPtr<float> qs = dev::dynamic_smem<float>() + warp * (p.D + p.Dv);
  dev::SmemPtr<float> gs = qs + p.D;
  const T* q = static_cast<const T*>(p.q) + b * p.q_stride_b + i * p.q_stride_l + h * p.q_stride_h;
  const T* g = static_cast<const T*>(p.grad_out) + b * p.do_stride_b + i * p.do_stride_l + h * p.do_stride_h;
  for (int d = lane; d < p.D; d += kWarp) qs[d] = dev::to_float(q[d]);
  for (int d = lane; d < p.Dv; d += kWarp) gs[d] = dev::to_float(g[d]);
  dev::sync_warp();
  const Lse lse(static_cast<const lse_t<T>*>(p.lse)[(b * p.H + h) * p.Lq + i]);
  float acc = 0.f;
  if (!lse.empty()) {
    const float scale = static_cast<float>(p.scale);
    const T* k = static_cast<const T*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
    const T* v = static_cast<const T*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
    const int64_t n_valid = dev::min(valid_keys(p, b), causal_end(p, b, i));
    for (int64_t j = lane; j < n_valid; j += kWarp) {
      if (!key_ok(p, b, j)) continue;
      const float pj = lse.prob(dev::mul_rn(dot_row<T>(qs, k + j * p.k_stride_l, p.D), scale));
      acc = fmaf(pj, dot_row<T>(gs, v + j * p.v_stride_l, p.Dv), acc);
    }
  }
  acc = warp_sum(acc);
  if (lane == 0) Di[(b * p.H + h) * p.Lq + i] = acc;
}

// dQ: one warp per query row. grid (ceil(Lq / kRowsPerBlock), H, B); smem kRowsPerBlock * (D + Dv) floats.
template <typename T>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kRowsPerBlock * kWarp, kMinBlocks) dq_kernel(const CrossAttentionParams p, const float* Di) {
  const int warp = dev::warp_id(), lane = dev::lane_id();
  const int64_t b = dev::block_idx().z, h = dev::block_idx().y;
  const int64_t i = int64_t(dev::block_idx().x) * kRowsPerBlock + warp;
  if (i >= p.Lq) return;
  const int64_t group = gqa_group(p), hk = static_cast<int>(h) / static_cast<int>(group);
  dev::SmemPtr<float> qs = dev::dynamic_smem<float>() + warp * (p.D + p.Dv);
  dev::SmemPtr<float> gs = qs + p.D;
  const T* q = static_cast<const T*>(p.q) + b * p.q_stride_b + i * p.q_stride_l + h * p.q_stride_h;
  const T* g = static_cast<const T*>(p.grad_out) + b * p.do_stride_b + i * p.do_stride_l + h * p.do_stride_h;
  for (int d = lane; d < p.D; d += kWarp) qs[d] = dev::to_float(q[d]);
  for (int d = lane; d < p.Dv; d += kWarp) gs[d] = dev::to_float(g[d]);
  dev::sync_warp();
  const Lse lse(static_cast<const lse_t<T>*>(p.lse)[(b * p.H + h) * p.Lq + i]);
  float acc[kMaxDimPerLane];
  MMK_UNROLL
  for (int t = 0; t < kMaxDimPerLane; ++t) acc[t] = 0.f;
  if (!lse.empty()) {
    const float scale = static_cast<float>(p.scale), di = Di[(b * p.H + h) * p.Lq + i];
    const T* k = static_cast<const T*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
    const T* v = static_cast<const T*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
    const int64_t n_valid = dev::min(valid_keys(p, b), causal_end(p, b, i));
    for (int64_t j0 = 0; j0 < n_valid; j0 += kWarp) {
      const int64_t j = j0 + lane;
      float ds = 0.f;
      if (j < n_valid && key_ok(p, b, j)) {
        const float pj = lse.prob(dev::mul_rn(dot_row<T>(qs, k + j * p.k_stride_l, p.D), scale));
        const float dp = dot_row<T>(gs, v + j * p.v_stride_l, p.Dv);
        ds = pj * (dp - di) * scale;
      }
      const int nk = static_cast<int>(dev::min(int64_t(kWarp), n_valid - j0));
      const T* krow = k + j0 * p.k_stride_l;
      for (int jj = 0; jj < nk; ++jj, krow += p.k_stride_l) {
        const float dsb = dev::shfl(dev::kFullMask, ds, jj);
        if (dsb == 0.f) continue;  // uniform across the warp
        MMK_UNROLL
        for (int t = 0; t < kMaxDimPerLane; ++t) {
          const int d = lane + t * kWarp;
          if (d < p.D) acc[t] = fmaf(dsb, dev::to_float(krow[d]), acc[t]);
        }
      }
    }
  }
  T* dq = static_cast<T*>(p.dq) + ((b * p.Lq + i) * p.H + h) * p.D;
  MMK_UNROLL
  for (int t = 0; t < kMaxDimPerLane; ++t) {
    const int d = lane + t * kWarp;
    if (d < p.D) dq[d] = dev::from_float<T>(acc[t]);
  }
}

// dK, dV: one warp per key j of kv head hk; loops over the group's query heads and all query rows in
// order. grid (ceil(Lk / kRowsPerBlock), Hkv, B); smem kRowsPerBlock * (D + Dv) floats.
template <typename T>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kRowsPerBlock * kWarp, kMinBlocks) dkdv_kernel(const CrossAttentionParams p, const float* Di) {
  const int warp = dev::warp_id(), lane = dev::lane_id();
  const int64_t b = dev::block_idx().z, hk = dev::block_idx().y;
  const int64_t j = int64_t(dev::block_idx().x) * kRowsPerBlock + warp;
  const int64_t n_valid = valid_keys(p, b);
  if (j >= n_valid || !key_ok(p, b, j)) return;  // other keys keep the zero gradient (uniform per warp)
  dev::SmemPtr<float> ks = dev::dynamic_smem<float>() + warp * (p.D + p.Dv);
  dev::SmemPtr<float> vs = ks + p.D;
  const T* kr = static_cast<const T*>(p.k) + b * p.k_stride_b + j * p.k_stride_l + hk * p.k_stride_h;
  const T* vr = static_cast<const T*>(p.v) + b * p.v_stride_b + j * p.v_stride_l + hk * p.v_stride_h;
  for (int d = lane; d < p.D; d += kWarp) ks[d] = dev::to_float(kr[d]);
  for (int d = lane; d < p.Dv; d += kWarp) vs[d] = dev::to_float(vr[d]);
  dev::sync_warp();
  const float scale = static_cast<float>(p.scale);
  const int64_t group = gqa_group(p);
  float dk[kMaxDimPerLane], dv[kMaxDimPerLane];
  MMK_UNROLL
  for (int t = 0; t < kMaxDimPerLane; ++t) dk[t] = dv[t] = 0.f;
  for (int64_t g = 0; g < group; ++g) {
    const int64_t h = hk * group + g;
    const T* q = static_cast<const T*>(p.q) + b * p.q_stride_b + h * p.q_stride_h;
    const T* go = static_cast<const T*>(p.grad_out) + b * p.do_stride_b + h * p.do_stride_h;
    const lse_t<T>* lse = static_cast<const lse_t<T>*>(p.lse) + (b * p.H + h) * p.Lq;
    const float* di = Di + (b * p.H + h) * p.Lq;
    for (int64_t i0 = 0; i0 < p.Lq; i0 += kWarp) {
      const int64_t i = i0 + lane;
      float pij = 0.f, ds = 0.f;
      const Lse lse_i(i < p.Lq && j < causal_end(p, b, i) ? lse[i] : lse_t<T>(-INFINITY));
      if (!lse_i.empty()) {
        pij = lse_i.prob(dev::mul_rn(dot_row<T>(ks, q + i * p.q_stride_l, p.D), scale));
        const float dp = dot_row<T>(vs, go + i * p.do_stride_l, p.Dv);
        ds = pij * (dp - di[i]) * scale;
      }
      const int nq = static_cast<int>(dev::min(int64_t(kWarp), p.Lq - i0));
      for (int ii = 0; ii < nq; ++ii) {
        const float pb = dev::shfl(dev::kFullMask, pij, ii);
        const float db = dev::shfl(dev::kFullMask, ds, ii);
        if (pb == 0.f && db == 0.f) continue;
        const T* qrow = q + (i0 + ii) * p.q_stride_l;
        const T* grow = go + (i0 + ii) * p.do_stride_l;
        MMK_UNROLL
        for (int t = 0; t < kMaxDimPerLane; ++t) {
          const int d = lane + t * kWarp;
          if (d < p.D) dk[t] = fmaf(db, dev::to_float(qrow[d]), dk[t]);
          if (d < p.Dv) dv[t] = fmaf(pb, dev::to_float(grow[d]), dv[t]);
        }
      }
    }
  }
  T* dkp = static_cast<T*>(p.dk) + ((b * p.Lk + j) * p.Hkv + hk) * p.D;
  T* dvp = static_cast<T*>(p.dv) + ((b * p.Lk + j) * p.Hkv + hk) * p.Dv;
  MMK_UNROLL
  for (int t = 0; t < kMaxDimPerLane; ++t) {
    const int d = lane + t * kWarp;
    if (d < p.D) dkp[d] = dev::from_float<T>(dk[t]);
    if (d < p.Dv) dvp[d] = dev::from_float<T>(dv[t]);
  }
}

}  // namespace simt

template <typename T>
dev::Error simt_backward(const CrossAttentionParams& p_all, float* Di_all, dev::Stream stream) {
  using namespace simt;
  if (p_all.Lq == 0 || p_all.H == 0 || p_all.Lk == 0 || p_all.B == 0) return dev::kSuccess;
  for (int64_t b0 = 0; b0 < p_all.B; b0 += kMaxGridYZ) {
    const CrossAttentionParams p = batch_slice(p_all, b0, std::min<int64_t>(kMaxGridYZ, p_all.B - b0));
    float* Di = Di_all + b0 * p.H * p.Lq;
    const dev::Dim3 block{kRowsPerBlock * kWarp, 1, 1};
    const dev::Dim3 grid_q{static_cast<uint32_t>(dev::ceil_div<int64_t>(p.Lq, kRowsPerBlock)),
                           static_cast<uint32_t>(p.H), static_cast<uint32_t>(p.B)};
    const size_t smem = kRowsPerBlock * (p.D + p.Dv) * sizeof(float);
    dev::Error err = MMK_LAUNCH(softmax_grad_rowsum_kernel<T>, grid_q, block, smem, stream, p, Di);
    if (err != dev::kSuccess) return err;
    if ((err = MMK_LAUNCH(dq_kernel<T>, grid_q, block, smem, stream, p, Di)) != dev::kSuccess) return err;
    const dev::Dim3 grid_k{static_cast<uint32_t>(dev::ceil_div<int64_t>(p.Lk, kRowsPerBlock)),
                           static_cast<uint32_t>(p.Hkv), static_cast<uint32_t>(p.B)};
    if ((err = MMK_LAUNCH(dkdv_kernel<T>, grid_k, block, smem, stream, p, Di)) != dev::kSuccess) return err;
  }
  return dev::kSuccess;
}

// 16-bit inputs take the tensor-core kernels (flash_kernels.cuh) for every head dim up to 256 whose
// kernels are compiled; float32 (and anything else) the tiled SIMT forward (tiled_forward.cuh) and the
// SIMT backward above.
template <typename T>
dev::Error cross_attention_forward(const CrossAttentionParams& p, dev::Stream stream) {
  auto simt = [&] { return tiled::forward<T>(p, stream); };
  if constexpr (!std::is_same_v<T, float>) {
    if (flash::eligible(p, /*backward=*/false))
      return flash::head_dim_switch(
          dev::max(p.D, p.Dv), [&](auto kd) { return flash::forward<T, decltype(kd)::value>(p, stream); }, simt);
  }
  return simt();
}

template <typename T>
dev::Error cross_attention_backward(const CrossAttentionParams& p, float* Di, dev::Stream stream) {
  auto simt = [&] { return simt_backward<T>(p, Di, stream); };
  if constexpr (!std::is_same_v<T, float>) {
    if (flash::eligible(p, /*backward=*/true))
      return flash::head_dim_switch(
          dev::max(p.D, p.Dv), [&](auto kd) { return flash::backward<T, decltype(kd)::value>(p, Di, stream); }, simt);
  }
  return simt();
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
