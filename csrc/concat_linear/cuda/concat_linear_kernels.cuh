// CUDA kernels for concat_linear (torch-free).
//
// STATUS: portable SIMT kernels with float32 accumulation, compiled for sm_80 / sm_90a but NOT yet run
// on a GPU (see benchmarks/NOTES.md). One launch computes the whole forward: the K loop walks the input
// segments (separate pointers and strides, ragged tails predicated) and bias + activation run in the
// epilogue, so the concatenation is never formed. The same strided GEMM kernel serves the backward
// (dX_i = dz @ W_i, dW[:, seg_i] = dz^T @ X_i written in place); dz = dy * act'(z) is one element-wise
// pass. The tensor-core (mma / wgmma) version is the next step once a GPU is available.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "concat_linear/cuda/concat_linear_launch.h"

namespace mmkernels::cuda {

constexpr int kTileM = 64, kTileN = 64, kTileK = 16;

template <typename T> __device__ __forceinline__ float ld_f(const T* p, int64_t i);
template <> __device__ __forceinline__ float ld_f<float>(const float* p, int64_t i) { return p[i]; }
template <> __device__ __forceinline__ float ld_f<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <> __device__ __forceinline__ float ld_f<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
template <typename T> __device__ __forceinline__ T st_f(float x);
template <> __device__ __forceinline__ float st_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half st_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 st_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float act_fwd(float z, Activation act) {
  switch (act) {
    case Activation::ReLU: return fmaxf(z, 0.f);
    case Activation::GELU: return 0.5f * z * (1.f + erff(z * 0.70710678118654752f));
    case Activation::GELUTanh: return 0.5f * z * (1.f + tanhf(0.79788456080286536f * (z + 0.044715f * z * z * z)));
    case Activation::SiLU: return z / (1.f + expf(-z));
    default: return z;
  }
}

__device__ __forceinline__ float act_grad(float z, Activation act) {
  switch (act) {
    case Activation::ReLU: return z > 0.f ? 1.f : 0.f;
    case Activation::GELU: {
      const float cdf = 0.5f * (1.f + erff(z * 0.70710678118654752f));
      return cdf + z * expf(-0.5f * z * z) * 0.39894228040143268f;
    }
    case Activation::GELUTanh: {
      const float k = 0.79788456080286536f, th = tanhf(k * (z + 0.044715f * z * z * z));
      return 0.5f * (1.f + th) + 0.5f * z * (1.f - th * th) * k * (1.f + 3.f * 0.044715f * z * z);
    }
    case Activation::SiLU: {
      const float s = 1.f / (1.f + expf(-z));
      return s * (1.f + z * (1.f - s));
    }
    default: return 1.f;
  }
}

// 64x64 output tile per block of 256 threads, 4x4 outputs per thread, K in steps of 16 through shared
// memory, walking every segment in turn.
template <typename T>
__global__ void __launch_bounds__(256) segmented_gemm_kernel(const GemmArgs args) {
  __shared__ float As[kTileK][kTileM + 1];
  __shared__ float Bs[kTileK][kTileN + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = int64_t(blockIdx.x) * kTileM, n0 = int64_t(blockIdx.y) * kTileN;
  float acc[4][4] = {};
  for (int s = 0; s < args.n_seg; ++s) {
    const GemmSegment& g = args.seg[s];
    const T* a = static_cast<const T*>(g.a);
    const T* b = static_cast<const T*>(g.b);
    for (int64_t k0 = 0; k0 < g.K; k0 += kTileK) {
      for (int idx = threadIdx.x; idx < kTileK * kTileM; idx += blockDim.x) {
        const int kk = idx % kTileK, mm = idx / kTileK;
        const int64_t m = m0 + mm, k = k0 + kk;
        As[kk][mm] = (m < args.M && k < g.K) ? ld_f(a, m * g.sam + k * g.sak) : 0.f;
      }
      for (int idx = threadIdx.x; idx < kTileK * kTileN; idx += blockDim.x) {
        const int nn = idx % kTileN, kk = idx / kTileN;
        const int64_t n = n0 + nn, k = k0 + kk;
        Bs[kk][nn] = (n < args.N && k < g.K) ? ld_f(b, k * g.sbk + n * g.sbn) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTileK; ++kk) {
        float av[4], bv[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) av[r] = As[kk][ty * 4 + r];
#pragma unroll
        for (int c = 0; c < 4; ++c) bv[c] = Bs[kk][tx * 4 + c];
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(av[r], bv[c], acc[r][c]);
      }
      __syncthreads();
    }
  }
  const T* bias = static_cast<const T*>(args.bias);
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t m = m0 + ty * 4 + r;
    if (m >= args.M) continue;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t n = n0 + tx * 4 + c;
      if (n >= args.N) continue;
      const int64_t o = m * args.scm + n * args.scn;
      float v = acc[r][c] + (args.acc_in ? args.acc_in[o] : 0.f);
      if (args.c_is_float) {
        static_cast<float*>(args.c)[o] = v;
        continue;
      }
      if (bias) v += ld_f(bias, n);
      if (args.z) static_cast<T*>(args.z)[o] = st_f<T>(v);
      static_cast<T*>(args.c)[o] = st_f<T>(act_fwd(v, args.act));
    }
  }
}

// dz = dy * act'(z), contiguous, n elements.
template <typename T>
__global__ void activation_grad_kernel(const T* dy, const T* z, T* dz, int64_t n, Activation act) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dz[i] = st_f<T>(ld_f(dy, i) * act_grad(ld_f(z, i), act));
}

template <typename T>
cudaError_t launch_segmented_gemm(const GemmArgs& args, cudaStream_t stream) {
  if (args.M == 0 || args.N == 0) return cudaSuccess;
  const int64_t gm = (args.M + kTileM - 1) / kTileM, gn = (args.N + kTileN - 1) / kTileN;
  if (gm > 2147483647 || gn > 65535) return cudaErrorInvalidConfiguration;
  segmented_gemm_kernel<T><<<dim3(static_cast<unsigned>(gm), static_cast<unsigned>(gn)), 256, 0, stream>>>(args);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_activation_grad(const void* dy, const void* z, void* dz, int64_t n, Activation act,
                                   cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 65535);
  activation_grad_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      static_cast<const T*>(dy), static_cast<const T*>(z), static_cast<T*>(dz), n, act);
  return cudaGetLastError();
}

}  // namespace mmkernels::cuda
