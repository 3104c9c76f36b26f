// Instantiation of the sm_80 concat_linear GEMM (gemm_sm80.cuh) for dev::half (torch-free).
#include "concat_linear/cuda/gemm_sm80.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
template dev::Error concat_linear_gemm_sm80<dev::half>(const GemmArgs&, dev::Stream);
MMK_BACKEND_END
}  // namespace mmkernels::cuda
