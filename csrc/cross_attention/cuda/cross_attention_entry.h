// Torch-free entry points of the CUDA cross_attention kernels, declared here, defined (routed to the
// kernels) in cross_attention_entry.cuh and explicitly instantiated once per element type (float,
// dev::half, dev::bf16) in cross_attention_entry_<dtype>.cu. Each returns the first error of its launches.
#pragma once

#include "common/device/types.h"
#include "cross_attention/params.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

// Bytes of device workspace the forward needs (the split-KV partials of the Hopper kernel; often 0).
template <typename T>
int64_t cross_attention_forward_workspace(const CrossAttentionParams& p);
template <typename T>
dev::Error cross_attention_forward(const CrossAttentionParams& p, void* workspace, dev::Stream stream);

// Bytes of zeroed device workspace the backward needs: dQ's float32 accumulator and its flags where the
// Hopper kernel or the sm_80 dK/dV kernel adds dQ in key-tile order (16-bit, head dims up to 128:
// B * H * Lq * kD * 4 bytes and a little); else 0.
template <typename T>
int64_t cross_attention_backward_workspace(const CrossAttentionParams& p);
// `Di` is a float32 workspace of B * H * Lq elements; `workspace` as above (zeroed; null when 0 bytes).
template <typename T>
dev::Error cross_attention_backward(const CrossAttentionParams& p, float* Di, void* workspace, dev::Stream stream);

MMK_BACKEND_END
}  // namespace mmkernels::cuda
