// CUDA kernels for cross_attention (torch-free; parameters in cross_attention/params.h).
//
// STATUS: portable reference-grade kernels (SIMT, float32 accumulation), written to be obviously
// correct for every case of the contract (any D/Dv in 1..256, GQA, kv_lengths, masks, strides, empty
// rows) and deterministic. They have been compiled for sm_80 / sm_90a but NOT yet run on a GPU (see
// benchmarks/NOTES.md). The tensor-core FlashAttention-2 path is the next step once a GPU is available.
//
// Forward: one warp per query row. Keys are processed 32 at a time: lane j computes the score of key
// j0 + j (query row broadcast from shared memory), the warp does the online-softmax update, then every
// lane accumulates its slice of the output (d = lane + 32 t) over the 32 keys.
// Backward: Di = rowsum(dO * O); dQ with one warp per query row (same key loop); dK/dV with one warp
// per key, looping over the group's query heads and all query rows in a fixed order (no atomics).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cross_attention/params.h"

namespace mmkernels::cuda {

constexpr int kWarp = 32;
constexpr int kMaxDimPerLane = 8;  // 256 / 32
constexpr int kRowsPerBlock = 4;   // warps per block

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Saved log-sum-exp: float64 for float32 inputs (see common/cpu_kernel_utils.h), float32 otherwise.
template <typename T> struct LseType { using type = float; };
template <> struct LseType<float> { using type = double; };
template <typename T> using lse_t = typename LseType<T>::type;

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One past the last key of batch b that can count (kv_lengths, then trailing masked keys trimmed).
__device__ __forceinline__ int64_t valid_keys(const CrossAttentionParams& p, int64_t b) {
  int64_t n = p.Lk;
  if (p.kv_lengths) n = min(max(p.kv_lengths[b], int64_t(0)), p.Lk);
  if (p.key_padding_mask) {
    const bool* m = p.key_padding_mask + b * p.mask_stride_b;
    while (n > 0 && m[n - 1]) --n;
  }
  return n;
}

__device__ __forceinline__ bool key_ok(const CrossAttentionParams& p, int64_t b, int64_t j) {
  return !p.key_padding_mask || !p.key_padding_mask[b * p.mask_stride_b + j];
}

template <typename T>
__device__ __forceinline__ float dot_row(const float* s_vec, const T* row, int64_t n) {
  float acc = 0.f;
  for (int64_t d = 0; d < n; ++d) acc = fmaf(s_vec[d], to_f(row[d]), acc);
  return acc;
}

// grid (ceil(Lq / kRowsPerBlock), H, B), block kRowsPerBlock * 32 threads,
// dynamic shared memory kRowsPerBlock * D floats.
template <typename T>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp) forward_kernel(const CrossAttentionParams p) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t b = blockIdx.z, h = blockIdx.y, i = int64_t(blockIdx.x) * kRowsPerBlock + warp;
  const bool active = i < p.Lq;  // inactive warps still take part in nothing but must not return early
  const int64_t group = p.H / p.Hkv, hk = h / group;
  const T* q = static_cast<const T*>(p.q) + b * p.q_stride_b + i * p.q_stride_l + h * p.q_stride_h;
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
  float* qs = smem + warp * p.D;
  if (active)
    for (int64_t d = lane; d < p.D; d += kWarp) qs[d] = to_f(q[d]);
  __syncwarp();
  if (!active) return;

  const float scale = static_cast<float>(p.scale);
  const int64_t n_valid = valid_keys(p, b);
  float acc[kMaxDimPerLane];
#pragma unroll
  for (int t = 0; t < kMaxDimPerLane; ++t) acc[t] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int64_t j0 = 0; j0 < n_valid; j0 += kWarp) {
    const int64_t j = j0 + lane;
    float s = -INFINITY;
    if (j < n_valid && key_ok(p, b, j)) s = dot_row(qs, k + j * p.k_stride_l, p.D) * scale;
    const float m_new = fmaxf(m, warp_max(s));
    if (m_new == -INFINITY) continue;  // nothing valid yet for this row
    const float alpha = expf(m - m_new);
    const float pj = s == -INFINITY ? 0.f : expf(s - m_new);
    l = l * alpha + warp_sum(pj);
    m = m_new;
    const int64_t nk = min(int64_t(kWarp), n_valid - j0);
#pragma unroll
    for (int t = 0; t < kMaxDimPerLane; ++t) acc[t] *= alpha;
    for (int64_t jj = 0; jj < nk; ++jj) {
      const float pb = __shfl_sync(0xffffffffu, pj, static_cast<int>(jj));
      if (pb == 0.f) continue;  // uniform across the warp
      const T* vrow = v + (j0 + jj) * p.v_stride_l;
#pragma unroll
      for (int t = 0; t < kMaxDimPerLane; ++t) {
        const int64_t d = lane + t * kWarp;
        if (d < p.Dv) acc[t] = fmaf(pb, to_f(vrow[d]), acc[t]);
      }
    }
  }
  T* o = static_cast<T*>(p.out) + b * p.o_stride_b + i * p.o_stride_l + h * p.o_stride_h;
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int t = 0; t < kMaxDimPerLane; ++t) {
    const int64_t d = lane + t * kWarp;
    if (d < p.Dv) o[d] = from_f<T>(acc[t] * inv);
  }
  using L = lse_t<T>;
  if (lane == 0) static_cast<L*>(p.lse)[(b * p.H + h) * p.Lq + i] = l > 0.f ? L(m) + log(L(l)) : L(-INFINITY);
}

// Di = rowsum(dO * O), float32 (B, H, Lq). grid (ceil(Lq / kRowsPerBlock), H, B).
template <typename T>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp) softmax_grad_rowsum_kernel(const CrossAttentionParams p, float* Di) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t b = blockIdx.z, h = blockIdx.y, i = int64_t(blockIdx.x) * kRowsPerBlock + warp;
  if (i >= p.Lq) return;
  const T* o = static_cast<const T*>(p.out) + b * p.o_stride_b + i * p.o_stride_l + h * p.o_stride_h;
  const T* g = static_cast<const T*>(p.grad_out) + b * p.do_stride_b + i * p.do_stride_l + h * p.do_stride_h;
  float acc = 0.f;
  for (int64_t d = lane; d < p.Dv; d += kWarp) acc = fmaf(to_f(o[d]), to_f(g[d]), acc);
  acc = warp_sum(acc);
  if (lane == 0) Di[(b * p.H + h) * p.Lq + i] = acc;
}

// dQ: one warp per query row. grid (ceil(Lq / kRowsPerBlock), H, B); smem kRowsPerBlock * (D + Dv) floats.
template <typename T>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp) dq_kernel(const CrossAttentionParams p, const float* Di) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t b = blockIdx.z, h = blockIdx.y, i = int64_t(blockIdx.x) * kRowsPerBlock + warp;
  const bool active = i < p.Lq;
  const int64_t group = p.H / p.Hkv, hk = h / group;
  float* qs = smem + warp * (p.D + p.Dv);
  float* gs = qs + p.D;
  if (active) {
    const T* q = static_cast<const T*>(p.q) + b * p.q_stride_b + i * p.q_stride_l + h * p.q_stride_h;
    const T* g = static_cast<const T*>(p.grad_out) + b * p.do_stride_b + i * p.do_stride_l + h * p.do_stride_h;
    for (int64_t d = lane; d < p.D; d += kWarp) qs[d] = to_f(q[d]);
    for (int64_t d = lane; d < p.Dv; d += kWarp) gs[d] = to_f(g[d]);
  }
  __syncwarp();
  if (!active) return;
  const lse_t<T> lse = static_cast<const lse_t<T>*>(p.lse)[(b * p.H + h) * p.Lq + i];
  T* dq = static_cast<T*>(p.dq) + ((b * p.Lq + i) * p.H + h) * p.D;
  float acc[kMaxDimPerLane];
#pragma unroll
  for (int t = 0; t < kMaxDimPerLane; ++t) acc[t] = 0.f;
  if (lse != -INFINITY) {
    const float scale = static_cast<float>(p.scale), di = Di[(b * p.H + h) * p.Lq + i];
    const T* k = static_cast<const T*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
    const T* v = static_cast<const T*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
    const int64_t n_valid = valid_keys(p, b);
    for (int64_t j0 = 0; j0 < n_valid; j0 += kWarp) {
      const int64_t j = j0 + lane;
      float ds = 0.f;
      if (j < n_valid && key_ok(p, b, j)) {
        const float pj = expf(static_cast<float>(lse_t<T>(dot_row(qs, k + j * p.k_stride_l, p.D) * scale) - lse));
        const float dp = dot_row(gs, v + j * p.v_stride_l, p.Dv);
        ds = pj * (dp - di) * scale;
      }
      const int64_t nk = min(int64_t(kWarp), n_valid - j0);
      for (int64_t jj = 0; jj < nk; ++jj) {
        const float dsb = __shfl_sync(0xffffffffu, ds, static_cast<int>(jj));
        if (dsb == 0.f) continue;
        const T* krow = k + (j0 + jj) * p.k_stride_l;
#pragma unroll
        for (int t = 0; t < kMaxDimPerLane; ++t) {
          const int64_t d = lane + t * kWarp;
          if (d < p.D) acc[t] = fmaf(dsb, to_f(krow[d]), acc[t]);
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxDimPerLane; ++t) {
    const int64_t d = lane + t * kWarp;
    if (d < p.D) dq[d] = from_f<T>(acc[t]);
  }
}

// dK, dV: one warp per key j of kv head hk; loops over the group's query heads and all query rows in
// order. grid (ceil(Lk / kRowsPerBlock), Hkv, B); smem kRowsPerBlock * (D + Dv) floats.
template <typename T>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp) dkdv_kernel(const CrossAttentionParams p, const float* Di) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t b = blockIdx.z, hk = blockIdx.y, j = int64_t(blockIdx.x) * kRowsPerBlock + warp;
  const int64_t n_valid = valid_keys(p, b);
  const bool active = j < n_valid && key_ok(p, b, j);  // other keys keep the zero gradient
  float* ks = smem + warp * (p.D + p.Dv);
  float* vs = ks + p.D;
  if (active) {
    const T* k = static_cast<const T*>(p.k) + b * p.k_stride_b + j * p.k_stride_l + hk * p.k_stride_h;
    const T* v = static_cast<const T*>(p.v) + b * p.v_stride_b + j * p.v_stride_l + hk * p.v_stride_h;
    for (int64_t d = lane; d < p.D; d += kWarp) ks[d] = to_f(k[d]);
    for (int64_t d = lane; d < p.Dv; d += kWarp) vs[d] = to_f(v[d]);
  }
  __syncwarp();
  if (!active) return;
  const float scale = static_cast<float>(p.scale);
  const int64_t group = p.H / p.Hkv;
  float dk[kMaxDimPerLane], dv[kMaxDimPerLane];
#pragma unroll
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
      if (i < p.Lq && lse[i] != -INFINITY) {
        pij = expf(static_cast<float>(lse_t<T>(dot_row(ks, q + i * p.q_stride_l, p.D) * scale) - lse[i]));
        const float dp = dot_row(vs, go + i * p.do_stride_l, p.Dv);
        ds = pij * (dp - di[i]) * scale;
      }
      const int64_t nq = min(int64_t(kWarp), p.Lq - i0);
      for (int64_t ii = 0; ii < nq; ++ii) {
        const float pb = __shfl_sync(0xffffffffu, pij, static_cast<int>(ii));
        const float db = __shfl_sync(0xffffffffu, ds, static_cast<int>(ii));
        if (pb == 0.f && db == 0.f) continue;
        const T* qrow = q + (i0 + ii) * p.q_stride_l;
        const T* grow = go + (i0 + ii) * p.do_stride_l;
#pragma unroll
        for (int t = 0; t < kMaxDimPerLane; ++t) {
          const int64_t d = lane + t * kWarp;
          if (d < p.D) dk[t] = fmaf(db, to_f(qrow[d]), dk[t]);
          if (d < p.Dv) dv[t] = fmaf(pb, to_f(grow[d]), dv[t]);
        }
      }
    }
  }
  T* dkp = static_cast<T*>(p.dk) + ((b * p.Lk + j) * p.Hkv + hk) * p.D;
  T* dvp = static_cast<T*>(p.dv) + ((b * p.Lk + j) * p.Hkv + hk) * p.Dv;
#pragma unroll
  for (int t = 0; t < kMaxDimPerLane; ++t) {
    const int64_t d = lane + t * kWarp;
    if (d < p.D) dkp[d] = from_f<T>(dk[t]);
    if (d < p.Dv) dvp[d] = from_f<T>(dv[t]);
  }
}

// Params restricted to batches [b0, b0 + nb) (grid.z is limited to 65535).
inline CrossAttentionParams batch_slice(const CrossAttentionParams& p, int64_t b0, int64_t nb) {
  CrossAttentionParams s = p;
  const auto shift = [](const void* ptr, int64_t elems, size_t bytes) -> const char* {
    return ptr ? static_cast<const char*>(ptr) + elems * static_cast<int64_t>(bytes) : nullptr;
  };
  const size_t es = p.dtype == DType::Float32 ? 4 : 2;
  const size_t ls = p.dtype == DType::Float32 ? sizeof(double) : sizeof(float);
  s.B = nb;
  s.q = shift(p.q, b0 * p.q_stride_b, es);
  s.k = shift(p.k, b0 * p.k_stride_b, es);
  s.v = shift(p.v, b0 * p.v_stride_b, es);
  s.out = const_cast<char*>(shift(p.out, b0 * p.o_stride_b, es));
  s.grad_out = shift(p.grad_out, b0 * p.do_stride_b, es);
  s.lse = const_cast<char*>(shift(p.lse, b0 * p.H * p.Lq, ls));
  s.dq = const_cast<char*>(shift(p.dq, b0 * p.Lq * p.H * p.D, es));
  s.dk = const_cast<char*>(shift(p.dk, b0 * p.Lk * p.Hkv * p.D, es));
  s.dv = const_cast<char*>(shift(p.dv, b0 * p.Lk * p.Hkv * p.Dv, es));
  s.kv_lengths = p.kv_lengths ? p.kv_lengths + b0 : nullptr;
  s.key_padding_mask = p.key_padding_mask ? p.key_padding_mask + b0 * p.mask_stride_b : nullptr;
  return s;
}

constexpr int64_t kMaxGridZ = 65535;

// Host-side launchers (one instantiation per dtype in the .cu files). Return the first CUDA error.
template <typename T>
cudaError_t launch_forward(const CrossAttentionParams& p_all, cudaStream_t stream) {
  if (p_all.Lq == 0 || p_all.H == 0) return cudaSuccess;
  for (int64_t b0 = 0; b0 < p_all.B; b0 += kMaxGridZ) {
    const CrossAttentionParams p = batch_slice(p_all, b0, std::min<int64_t>(kMaxGridZ, p_all.B - b0));
    const dim3 grid((p.Lq + kRowsPerBlock - 1) / kRowsPerBlock, p.H, p.B), block(kRowsPerBlock * kWarp);
    forward_kernel<T><<<grid, block, kRowsPerBlock * p.D * sizeof(float), stream>>>(p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

// `Di` is a float32 workspace of B * H * Lq elements.
template <typename T>
cudaError_t launch_backward(const CrossAttentionParams& p_all, float* Di_all, cudaStream_t stream) {
  if (p_all.Lq == 0 || p_all.H == 0 || p_all.Lk == 0) return cudaSuccess;
  for (int64_t b0 = 0; b0 < p_all.B; b0 += kMaxGridZ) {
    const CrossAttentionParams p = batch_slice(p_all, b0, std::min<int64_t>(kMaxGridZ, p_all.B - b0));
    float* Di = Di_all + b0 * p.H * p.Lq;
    const dim3 block(kRowsPerBlock * kWarp);
    const dim3 grid_q((p.Lq + kRowsPerBlock - 1) / kRowsPerBlock, p.H, p.B);
    const size_t smem = kRowsPerBlock * (p.D + p.Dv) * sizeof(float);
    softmax_grad_rowsum_kernel<T><<<grid_q, block, 0, stream>>>(p, Di);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    dq_kernel<T><<<grid_q, block, smem, stream>>>(p, Di);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    const dim3 grid_k((p.Lk + kRowsPerBlock - 1) / kRowsPerBlock, p.Hkv, p.B);
    dkdv_kernel<T><<<grid_k, block, smem, stream>>>(p, Di);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace mmkernels::cuda
