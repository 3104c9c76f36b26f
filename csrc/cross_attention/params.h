// Torch-free description of one cross_attention call, shared by the CPU and CUDA kernels.
// Layouts: q (B, Lq, H, D), k (B, Lk, Hkv, D), v (B, Lk, Hkv, Dv), out (B, Lq, H, Dv),
// lse (B, H, Lq). Strides are in elements; the innermost (head-dim) stride is 1.
#pragma once
#include <cstdint>

#include "common/device/backend.h"
#include "common/dtype.h"

namespace mmkernels {

// Largest head dim (D and Dv) the op takes on every device.
constexpr int64_t kMaxHeadDim = 256;

struct CrossAttentionParams {
  // Forward inputs / outputs.
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  void* lse = nullptr;  // (B, H, Lq) contiguous float64 (common/dtype.h); -inf: no valid key

  // Backward (null in forward).
  // dq, dk, dv are contiguous (B, L, H, D) buffers; grad_out has its own strides (do_*).
  const void* grad_out = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;

  // Optional masking. A key j of batch b counts iff j < kv_lengths[b] and !key_padding_mask[b, j].
  const int64_t* kv_lengths = nullptr;       // (B,); CPU: checked to lie in [0, Lk]; device: clamped (no sync)
  const bool* key_padding_mask = nullptr;    // (B, Lk) with row stride mask_stride_b, True = ignore
  int64_t mask_stride_b = 0;

  int64_t B = 0, Lq = 0, Lk = 0, H = 0, Hkv = 0, D = 0, Dv = 0;
  int64_t q_stride_b = 0, q_stride_l = 0, q_stride_h = 0;
  int64_t k_stride_b = 0, k_stride_l = 0, k_stride_h = 0;
  int64_t v_stride_b = 0, v_stride_l = 0, v_stride_h = 0;
  int64_t o_stride_b = 0, o_stride_l = 0, o_stride_h = 0;
  int64_t do_stride_b = 0, do_stride_l = 0, do_stride_h = 0;

  double scale = 1.0;
  // Causal (bottom-right aligned): query i sees only keys j <= i + causal_offset(p, b).
  bool causal = false;
  DType dtype = DType::Float32;
};

// Query heads per kv head (GQA; 1 without). 32-bit division: a 64-bit one is a subroutine call on the
// GPU (head counts are far below 2^31).
MMK_HOST_DEVICE int64_t gqa_group(const CrossAttentionParams& p) {
  return static_cast<int>(p.H) / static_cast<int>(p.Hkv);
}

// The causal diagonal's offset for batch b: n_b - Lq, with n_b = kv_lengths[b] (else Lk), so the last
// query row sees every key up to its valid length (FlashAttention 2's and KV-cache decoding's
// alignment). key_padding_mask does not move the diagonal; masked keys are just not attended.
MMK_HOST_DEVICE int64_t causal_offset(const CrossAttentionParams& p, int64_t b) {
  int64_t n = p.Lk;
  if (p.kv_lengths) n = p.kv_lengths[b] < 0 ? 0 : (p.kv_lengths[b] > p.Lk ? p.Lk : p.kv_lengths[b]);
  return n - p.Lq;
}

// One past the last key query row i may see: all Lk keys when not causal.
MMK_HOST_DEVICE int64_t causal_end(const CrossAttentionParams& p, int64_t b, int64_t i) {
  if (!p.causal) return p.Lk;
  const int64_t e = i + causal_offset(p, b) + 1;
  return e < 0 ? 0 : (e > p.Lk ? p.Lk : e);
}

}  // namespace mmkernels
