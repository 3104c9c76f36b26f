// concat_linear's portable SIMT kernels (torch-free), written on the device-primitive layer so that the
// same source runs on the GPU and in the host emulation: the segmented GEMM with float32 accumulation
// (the float32 path, and any GEMM the tensor-core kernels do not take: shared-memory tiles, 4 x 4
// outputs per thread) and the element-wise activation gradient. One launch computes the whole forward:
// the K loop walks the input segments (separate pointers and strides, ragged tails predicated) and bias
// + activation run in the epilogue, so the concatenation is never formed. The same strided GEMM kernel
// serves the backward (dX_i = dz @ W_i, dW[:, seg_i] = dz^T @ X_i written in place); dz = dy * act'(z)
// is one element-wise pass.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/activation.h"
#include "common/device/primitives.h"
#include "concat_linear/cuda/concat_linear_entry.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace simt {

constexpr int kTileM = 64, kTileN = 64, kTileK = 16, kThreads = 256;
// Shared tiles As[kTileK][kTileM + 1], Bs[kTileK][kTileN + 1] (padded against bank conflicts).
constexpr int kLdA = kTileM + 1, kLdB = kTileN + 1;
constexpr size_t kSmemBytes = sizeof(float) * kTileK * (kLdA + kLdB);

// 64x64 output tile per block of 256 threads, 4x4 outputs per thread, K in steps of 16 through shared
// memory, walking every segment in turn.
template <typename T>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) segmented_gemm_kernel(const GemmArgs args) {
  dev::SmemPtr<float> As = dev::dynamic_smem<float>();
  dev::SmemPtr<float> Bs = As + kTileK * kLdA;
  const int tid = dev::thread_rank();
  const int tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t(dev::block_idx().x) * kTileM, n0 = int64_t(dev::block_idx().y) * kTileN;
  // Blocked reduction: the K loop sums kKBlock-deep partials `part` into `acc` (a float32 chain over
  // all of K would exceed the float32 error budget for wide inputs, as plain GEMMs block too).
  constexpr int kKBlock = 128;
  float acc[4][4] = {}, part[4][4] = {};
  int depth = 0;
  auto flush = [&] {
    MMK_UNROLL
    for (int r = 0; r < 4; ++r)
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) {
        acc[r][c] += part[r][c];
        part[r][c] = 0.f;
      }
    depth = 0;
  };
  for (int s = 0; s < args.n_seg; ++s) {
    const GemmSegment& g = args.seg[s];
    const T* a = static_cast<const T*>(g.a);
    const T* b = static_cast<const T*>(g.b);
    for (int64_t k0 = 0; k0 < g.K; k0 += kTileK) {
      for (int idx = tid; idx < kTileK * kTileM; idx += kThreads) {
        const int kk = idx % kTileK, mm = idx / kTileK;
        const int64_t m = m0 + mm, k = k0 + kk;
        As[kk * kLdA + mm] = (m < args.M && k < g.K) ? dev::to_float(a[m * g.sam + k * g.sak]) : 0.f;
      }
      for (int idx = tid; idx < kTileK * kTileN; idx += kThreads) {
        const int nn = idx % kTileN, kk = idx / kTileN;
        const int64_t n = n0 + nn, k = k0 + kk;
        Bs[kk * kLdB + nn] = (n < args.N && k < g.K) ? dev::to_float(b[k * g.sbk + n * g.sbn]) : 0.f;
      }
      dev::sync_threads();
      MMK_UNROLL
      for (int kk = 0; kk < kTileK; ++kk) {
        float av[4], bv[4];
        MMK_UNROLL
        for (int r = 0; r < 4; ++r) av[r] = As[kk * kLdA + ty * 4 + r];
        MMK_UNROLL
        for (int c = 0; c < 4; ++c) bv[c] = Bs[kk * kLdB + tx * 4 + c];
        MMK_UNROLL
        for (int r = 0; r < 4; ++r)
          MMK_UNROLL
          for (int c = 0; c < 4; ++c) part[r][c] = fmaf(av[r], bv[c], part[r][c]);
      }
      dev::sync_threads();
      if ((depth += kTileK) >= kKBlock) flush();
    }
  }
  flush();
  const T* bias = static_cast<const T*>(args.bias);
  MMK_UNROLL
  for (int r = 0; r < 4; ++r) {
    const int64_t m = m0 + ty * 4 + r;
    if (m >= args.M) continue;
    MMK_UNROLL
    for (int c = 0; c < 4; ++c) {
      const int64_t n = n0 + tx * 4 + c;
      if (n >= args.N) continue;
      const int64_t o = m * args.scm + n * args.scn;
      float v = acc[r][c] + (args.acc_in ? args.acc_in[o] : 0.f);
      if (args.c_is_float) {
        static_cast<float*>(args.c)[o] = v;
        continue;
      }
      if (bias) v += dev::to_float(bias[n]);
      if (args.z) static_cast<T*>(args.z)[o] = dev::from_float<T>(v);
      static_cast<T*>(args.c)[o] = dev::from_float<T>(activation_forward(v, args.act));
    }
  }
}

// dz = dy * act'(z), contiguous, n elements (grid-stride loop).
template <typename T>
MMK_GLOBAL void activation_grad_kernel(const T* dy, const T* z, T* dz, int64_t n, Activation act) {
  const int64_t stride = int64_t(dev::grid_dim().x) * dev::block_dim().x;
  for (int64_t i = int64_t(dev::block_idx().x) * dev::block_dim().x + dev::thread_idx().x; i < n; i += stride)
    dz[i] = dev::from_float<T>(dev::to_float(dy[i]) * activation_grad(dev::to_float(z[i]), act));
}

}  // namespace simt

template <typename T>
dev::Error simt_gemm(const GemmArgs& args, dev::Stream stream) {
  using namespace simt;
  if (args.M == 0 || args.N == 0) return dev::kSuccess;
  if (args.split != 1) return dev::kErrorInvalidValue;  // split-K is the tensor-core kernel's
  const int64_t gm = dev::ceil_div<int64_t>(args.M, kTileM), gn = dev::ceil_div<int64_t>(args.N, kTileN);
  if (gm > 2147483647 || gn > 65535) return dev::kErrorInvalidConfiguration;
  const dev::Dim3 grid{static_cast<uint32_t>(gm), static_cast<uint32_t>(gn), 1};
  return MMK_LAUNCH(segmented_gemm_kernel<T>, grid, (dev::Dim3{kThreads, 1, 1}), kSmemBytes, stream, args);
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
