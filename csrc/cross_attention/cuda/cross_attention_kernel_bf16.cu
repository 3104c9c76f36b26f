// Instantiation of the CUDA cross_attention kernels for dev::bf16 (torch-free).
#include "cross_attention/cuda/cross_attention_kernels.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
template dev::Error cross_attention_forward<dev::bf16>(const CrossAttentionParams&, dev::Stream);
template dev::Error cross_attention_backward<dev::bf16>(const CrossAttentionParams&, float*, dev::Stream);
MMK_BACKEND_END
}  // namespace mmkernels::cuda
