// The entry points of the CUDA concat_linear kernels (torch-free; declared in concat_linear_entry.h,
// instantiated per dtype in concat_linear_entry_<dtype>.cu): 16-bit GEMMs the tensor-core kernels take
// go to gemm_sm90.cuh on Hopper or gemm_sm80.cuh, everything else (float32 above all) to the SIMT
// kernels (simt_kernels.cuh), as does the activation gradient.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/device/primitives.h"
#include "concat_linear/cuda/concat_linear_entry.h"
#include "concat_linear/cuda/gemm_host.h"
#include "concat_linear/cuda/simt_kernels.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

// 16-bit GEMMs run on the tensor cores: the Hopper kernel on sm_90 when TMA can load the operands, else
// the sm_80 one when every operand row is whole 16-byte pieces (the glue makes them so); float32, and
// anything else, on the SIMT kernel (simt_kernels.cuh).
template <typename T>
dev::Error concat_linear_gemm(const GemmArgs& args, dev::Stream stream) {
  if (args.M == 0 || args.N == 0) return dev::kSuccess;
  if constexpr (!std::is_same_v<T, float>) {
    if (tc_takes(args)) {
      if (dev::sm90a_runs()) return concat_linear_gemm_sm90<T>(args, stream);
      return concat_linear_gemm_sm80<T>(args, stream);
    }
  }
  return simt_gemm<T>(args, stream);
}

template <typename T>
dev::Error concat_linear_act_grad(const void* dy, const void* z, void* dz, int64_t n, Activation act,
                                  dev::Stream stream) {
  using namespace simt;
  if (n == 0) return dev::kSuccess;
  const int64_t blocks = std::min<int64_t>(dev::ceil_div<int64_t>(n, 256), 65535);
  return MMK_LAUNCH(activation_grad_kernel<T>, (dev::Dim3{static_cast<uint32_t>(blocks), 1, 1}),
                    (dev::Dim3{256, 1, 1}), 0, stream, static_cast<const T*>(dy), static_cast<const T*>(z),
                    static_cast<T*>(dz), n, act);
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
