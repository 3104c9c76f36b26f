// Instantiation of the Hopper concat_linear GEMM (gemm_sm90.cuh) for dev::bf16 (torch-free).
#include "concat_linear/cuda/gemm_sm90.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
template dev::Error concat_linear_gemm_sm90<dev::bf16>(const GemmArgs&, dev::Stream);
MMK_BACKEND_END
}  // namespace mmkernels::cuda
