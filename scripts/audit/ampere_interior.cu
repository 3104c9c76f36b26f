// The sm_80 attention kernels compiled with only their interior path (MMK_AUDIT_INTERIOR_PATH: the
// forward and dq kernels take every key tile as interior and whole), for scripts/kernel_audit.py
// --ampere-interior: the instructions per HMMA of the loops that long sequences spend their time in,
// which the build's own kernels mix with the boundary tiles' branches. The audit holds the forward to
// its budget; the backward is here for NOTES' per-step counts (its GEMM steps run in inner loops; at
// these head dims the dK/dV kernel adds dQ itself, the dq kernel runs above 128 only).
// Compiled by scripts/cuda_build_check.sh (-arch=sm_80 -cubin).
#define MMK_AUDIT_INTERIOR_PATH
#include "cross_attention/cuda/flash_kernels.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace flash {
template dev::Error forward<dev::bf16, 64>(const CrossAttentionParams&, dev::Stream);
template dev::Error forward<dev::bf16, 128>(const CrossAttentionParams&, dev::Stream);
template dev::Error backward<dev::bf16, 64>(const CrossAttentionParams&, float*, void*, dev::Stream, bool);
template dev::Error backward<dev::bf16, 128>(const CrossAttentionParams&, float*, void*, dev::Stream, bool);
}  // namespace flash
MMK_BACKEND_END
}  // namespace mmkernels::cuda
