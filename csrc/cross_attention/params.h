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

  // Each operand is set once, with its strides, by these (the glue binds the final tensors; nothing
  // overwrites them later).
  void set_q(const void* d, int64_t sb, int64_t sl, int64_t sh) { q = d, q_stride_b = sb, q_stride_l = sl, q_stride_h = sh; }
  void set_k(const void* d, int64_t sb, int64_t sl, int64_t sh) { k = d, k_stride_b = sb, k_stride_l = sl, k_stride_h = sh; }
  void set_v(const void* d, int64_t sb, int64_t sl, int64_t sh) { v = d, v_stride_b = sb, v_stride_l = sl, v_stride_h = sh; }
  void set_out(void* d, int64_t sb, int64_t sl, int64_t sh) { out = d, o_stride_b = sb, o_stride_l = sl, o_stride_h = sh; }
  void set_grad_out(const void* d, int64_t sb, int64_t sl, int64_t sh) {
    grad_out = d, do_stride_b = sb, do_stride_l = sl, do_stride_h = sh;
  }
};

// Which keys count: the one rule, for the CPU kernels and the device kernels alike. Key j of batch b
// counts iff j < kv_length(p, b) and key_padding_mask[b, j] is false; under causal, query row i also
// needs j < causal_end(p, b, i).

// kv_lengths[b] clamped to [0, Lk] (Lk without lengths): the CPU op checks the range first (its
// error), the device kernels rely on the clamp (no host synchronisation).
MMK_HOST_DEVICE int64_t kv_length(const CrossAttentionParams& p, int64_t b) {
  if (!p.kv_lengths) return p.Lk;
  const int64_t n = p.kv_lengths[b];
  return n < 0 ? 0 : (n > p.Lk ? p.Lk : n);
}

// Batch b's key_padding_mask row (True = ignore), null without a mask.
MMK_HOST_DEVICE const bool* mask_row(const CrossAttentionParams& p, int64_t b) {
  return p.key_padding_mask ? p.key_padding_mask + b * p.mask_stride_b : nullptr;
}

// Key j of batch b is not hidden by key_padding_mask.
MMK_HOST_DEVICE bool key_ok(const CrossAttentionParams& p, int64_t b, int64_t j) {
  return !p.key_padding_mask || !p.key_padding_mask[b * p.mask_stride_b + j];
}

// One past the last key of batch b that can count: kv_length, then trailing masked keys trimmed. Keys
// past it are never read (whole tiles skipped).
MMK_HOST_DEVICE int64_t valid_keys(const CrossAttentionParams& p, int64_t b) {
  int64_t n = kv_length(p, b);
  if (const bool* m = mask_row(p, b))
    while (n > 0 && m[n - 1]) --n;
  return n;
}

// Key j counts for batch b (n_valid = valid_keys(p, b)), before the causal rule.
MMK_HOST_DEVICE bool key_counts(const CrossAttentionParams& p, int64_t b, int64_t j, int64_t n_valid) {
  return j < n_valid && key_ok(p, b, j);
}

// Query heads per kv head (GQA; 1 without). 32-bit division: a 64-bit one is a subroutine call on the
// GPU (head counts are far below 2^31).
MMK_HOST_DEVICE int64_t gqa_group(const CrossAttentionParams& p) {
  return static_cast<int>(p.H) / static_cast<int>(p.Hkv);
}

// The causal diagonal's offset for batch b: n_b - Lq, with n_b = kv_lengths[b] (else Lk), so the last
// query row sees every key up to its valid length (FlashAttention 2's and KV-cache decoding's
// alignment). key_padding_mask does not move the diagonal; masked keys are just not attended.
MMK_HOST_DEVICE int64_t causal_offset(const CrossAttentionParams& p, int64_t b) { return kv_length(p, b) - p.Lq; }

// One past the last key query row i may see, given its batch's causal_offset (a kernel that asks for
// many rows reads kv_lengths once): all Lk keys when not causal.
MMK_HOST_DEVICE int64_t causal_end_at(const CrossAttentionParams& p, int64_t offset, int64_t i) {
  if (!p.causal) return p.Lk;
  const int64_t e = i + offset + 1;
  return e < 0 ? 0 : (e > p.Lk ? p.Lk : e);
}
MMK_HOST_DEVICE int64_t causal_end(const CrossAttentionParams& p, int64_t b, int64_t i) {
  return causal_end_at(p, p.causal ? causal_offset(p, b) : 0, i);
}

}  // namespace mmkernels
