// Instantiation of the CUDA cross_attention kernels for __nv_bfloat16 (torch-free: compiled by CI's CUDA check).
#include "cross_attention/cuda/cross_attention_kernels.cuh"
#include "cross_attention/cuda/cross_attention_launch.h"

namespace mmkernels::cuda {

cudaError_t cross_attention_forward_bf16(const CrossAttentionParams& p, cudaStream_t stream) {
  return launch_forward<__nv_bfloat16>(p, stream);
}

cudaError_t cross_attention_backward_bf16(const CrossAttentionParams& p, float* Di, cudaStream_t stream) {
  return launch_backward<__nv_bfloat16>(p, Di, stream);
}

}  // namespace mmkernels::cuda
