// Instantiation of the CUDA cross_attention entry points (cross_attention_entry.cuh) for dev::bf16 (torch-free).
#include "cross_attention/cuda/cross_attention_entry.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
template int64_t cross_attention_forward_workspace<dev::bf16>(const CrossAttentionParams&);
template dev::Error cross_attention_forward<dev::bf16>(const CrossAttentionParams&, void*, dev::Stream);
template int64_t cross_attention_backward_workspace<dev::bf16>(const CrossAttentionParams&);
template dev::Error cross_attention_backward<dev::bf16>(const CrossAttentionParams&, float*, void*, dev::Stream);
MMK_BACKEND_END
}  // namespace mmkernels::cuda
