// Instantiation of the CUDA concat_linear kernels for __half (torch-free: compiled by CI's CUDA check).
#include "concat_linear/cuda/concat_linear_kernels.cuh"

namespace mmkernels::cuda {

cudaError_t concat_linear_gemm_f16(const GemmArgs& args, cudaStream_t stream) {
  return launch_segmented_gemm<__half>(args, stream);
}

cudaError_t concat_linear_act_grad_f16(const void* dy, const void* z, void* dz, int64_t n, Activation act,
                                      cudaStream_t stream) {
  return launch_activation_grad<__half>(dy, z, dz, n, act, stream);
}

}  // namespace mmkernels::cuda
