// Tensor-core cross_attention kernels for head dim 32, dev::half (torch-free).
#include "cross_attention/cuda/flash_launch.h"

#if defined(MMK_FLASH_HDIM_32)
#include "cross_attention/cuda/flash_kernels.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace flash {
template dev::Error forward<dev::half, 32>(const CrossAttentionParams&, dev::Stream);
template dev::Error backward<dev::half, 32>(const CrossAttentionParams&, float*, dev::Stream);
}  // namespace flash
MMK_BACKEND_END
}  // namespace mmkernels::cuda
#endif
