// The Hopper cross_attention forward (flash_sm90.cuh) for head dim 256, dev::half (torch-free).
#include "cross_attention/cuda/flash_sm90.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace flash_sm90 {
template dev::Error forward<dev::half, 256>(const CrossAttentionParams&, void*, dev::Stream);
}  // namespace flash_sm90
MMK_BACKEND_END
}  // namespace mmkernels::cuda
