// Instantiation of the CUDA concat_linear kernels for __nv_bfloat16 (torch-free: compiled by CI's CUDA check).
#include "concat_linear/cuda/concat_linear_kernels.cuh"

namespace mmkernels::cuda {

cudaError_t concat_linear_gemm_bf16(const GemmArgs& args, cudaStream_t stream) {
  return launch_segmented_gemm<__nv_bfloat16>(args, stream);
}

cudaError_t concat_linear_act_grad_bf16(const void* dy, const void* z, void* dz, int64_t n, Activation act,
                                      cudaStream_t stream) {
  return launch_activation_grad<__nv_bfloat16>(dy, z, dz, n, act, stream);
}

}  // namespace mmkernels::cuda
