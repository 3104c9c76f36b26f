// Torch-free entry points of the CUDA cross_attention kernels, one per dtype (defined in the
// cross_attention_kernel_*.cu translation units). Each returns the first CUDA error it met.
#pragma once
#include <cuda_runtime.h>

#include "cross_attention/params.h"

namespace mmkernels::cuda {

#define MMK_DECLARE_CROSS_ATTENTION(suffix)                                                              \
  cudaError_t cross_attention_forward_##suffix(const CrossAttentionParams& p, cudaStream_t stream);       \
  cudaError_t cross_attention_backward_##suffix(const CrossAttentionParams& p, float* Di, cudaStream_t stream);

MMK_DECLARE_CROSS_ATTENTION(f32)
MMK_DECLARE_CROSS_ATTENTION(f16)
MMK_DECLARE_CROSS_ATTENTION(bf16)
#undef MMK_DECLARE_CROSS_ATTENTION

}  // namespace mmkernels::cuda
