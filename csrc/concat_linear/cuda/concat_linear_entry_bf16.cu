// Instantiation of the CUDA concat_linear entry points (concat_linear_entry.cuh) for dev::bf16 (torch-free).
#include "concat_linear/cuda/concat_linear_entry.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
template dev::Error concat_linear_gemm<dev::bf16>(const GemmArgs&, dev::Stream);
template dev::Error concat_linear_act_grad<dev::bf16>(const void*, const void*, void*, int64_t, Activation, dev::Stream);
MMK_BACKEND_END
}  // namespace mmkernels::cuda
