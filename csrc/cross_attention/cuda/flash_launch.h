// Entry points of the tensor-core (FlashAttention-2 structure) kernels, declared here and explicitly
// instantiated once per (head dim, dtype) in flash_hdim<kD>_<dtype>.cu, so builds parallelise and a
// kernel change recompiles little; and the head-dim switch from runtime sizes to kD.
//
// Head dims compiled: MMK_FLASH_HDIM_<kD> for kD in 32, 64, 96, 128, 192, 256 (the CMake option
// MMKERNELS_HEAD_DIMS trims the list for quick builds; head dims without a kernel take the tiled SIMT
// kernels).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/device/types.h"
#include "cross_attention/params.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace flash {

template <typename T, int kD>
dev::Error forward(const CrossAttentionParams& p, dev::Stream stream);
// `Di` is a float32 workspace of B * H * Lq elements.
template <typename T, int kD>
dev::Error backward(const CrossAttentionParams& p, float* Di, dev::Stream stream);

// Whether the kernels for head dim kD are compiled into this build.
template <int kD> constexpr bool compiled() {
  constexpr bool on[] = {
#if defined(MMK_FLASH_HDIM_32)
      kD == 32 ||
#endif
#if defined(MMK_FLASH_HDIM_64)
      kD == 64 ||
#endif
#if defined(MMK_FLASH_HDIM_96)
      kD == 96 ||
#endif
#if defined(MMK_FLASH_HDIM_128)
      kD == 128 ||
#endif
#if defined(MMK_FLASH_HDIM_192)
      kD == 192 ||
#endif
#if defined(MMK_FLASH_HDIM_256)
      kD == 256 ||
#endif
      false};
  return on[0];
}

// Calls fn(std::integral_constant<int, kD>) for the smallest compiled kD >= d; returns `fallback()`
// when there is none.
template <typename Fn, typename Fallback>
dev::Error head_dim_switch(int64_t d, Fn&& fn, Fallback&& fallback) {
  if constexpr (compiled<32>()) if (d <= 32) return fn(std::integral_constant<int, 32>{});
  if constexpr (compiled<64>()) if (d <= 64) return fn(std::integral_constant<int, 64>{});
  if constexpr (compiled<96>()) if (d <= 96) return fn(std::integral_constant<int, 96>{});
  if constexpr (compiled<128>()) if (d <= 128) return fn(std::integral_constant<int, 128>{});
  if constexpr (compiled<192>()) if (d <= 192) return fn(std::integral_constant<int, 192>{});
  if constexpr (compiled<256>()) if (d <= 256) return fn(std::integral_constant<int, 256>{});
  return fallback();
}

// The kernels read rows as 16-byte cp.async chunks: 16-byte aligned rows (element strides multiple of 8,
// aligned base). The glue makes 16-bit inputs so (cross_attention_device.h); this guards the rest.
inline bool chunk_aligned(const void* ptr, int64_t sb, int64_t sl, int64_t sh) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && sb % 8 == 0 && sl % 8 == 0 && sh % 8 == 0;
}
// The largest |scale| the tensor-core kernels take. Their backward takes D_i = rowsum(dO * O) from the
// stored output (as FlashAttention-2 does): equal to sum_j P_ij dP_ij up to float32 rounding, which dq
// and dk see multiplied by |scale|. In a softmax saturated by a huge scale the exact gradient is ~0 and
// that rounding would be all of it (|dq| ~ 1e4 at scale 1e10 instead of 0). Above this bound (far
// above 1/sqrt(D) or any temperature in use) the tiled SIMT kernels run, whose D_i comes from the
// recomputed P and dP; the forward too, so that both passes round the scores alike.
constexpr double kMaxScale = 256.0;

// Whether the tensor-core kernels take this call: |scale| <= kMaxScale, 16-byte aligned
// rows, and sequence lengths whose key and row indices fit the kernels' 32-bit index math.
inline bool eligible(const CrossAttentionParams& p, bool backward) {
  constexpr int64_t kMax32 = (int64_t(1) << 31) - 1024;
  return std::abs(p.scale) <= kMaxScale && p.Lq < kMax32 && p.Lk < kMax32 &&
         chunk_aligned(p.q, p.q_stride_b, p.q_stride_l, p.q_stride_h) &&
         chunk_aligned(p.k, p.k_stride_b, p.k_stride_l, p.k_stride_h) &&
         chunk_aligned(p.v, p.v_stride_b, p.v_stride_l, p.v_stride_h) &&
         (!backward || chunk_aligned(p.grad_out, p.do_stride_b, p.do_stride_l, p.do_stride_h));
}

}  // namespace flash

// The Hopper (sm_90a) forward, flash_sm90.cuh: TMA + wgmma, warp-specialized; one instantiation per
// kD in {64, 128, 256} (flash_sm90_hdim<kD>_<dtype>.cu), every head dim up to 256 through the next one.
namespace flash_sm90 {
// Query rows per CTA; key slices at most, and key tiles per slice at least (a slice writes and the
// combine reads back a float32 O tile, as many bytes as ~4 K/V tiles: fewer would not pay).
constexpr int kBM = 128, kMaxSplits = 16, kMinSplitTiles = 4;
// Keys per tile for head dim kD: S (64 x kBN) and O (64 x kD) per consumer warpgroup in registers.
constexpr int key_tile(int kD) { return kD <= 128 ? 128 : 64; }

// How many key slices (split-KV): one while the grid of row tiles fills at least half the GPU; else
// enough CTAs to fill about one wave, each slice at least kMinSplitTiles key tiles, at most kMaxSplits.
inline int num_splits(const CrossAttentionParams& p, int kD, int multiprocessors) {
  const int64_t ctas = (p.Lq + kBM - 1) / kBM * p.H * p.B, key_tiles = (p.Lk + key_tile(kD) - 1) / key_tile(kD);
  if (ctas == 0 || 2 * ctas > multiprocessors) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({multiprocessors / ctas, key_tiles / kMinSplitTiles, kMaxSplits})));
}

// A split forward's partial results, float32, in a workspace the glue allocates (workspace_bytes): per
// (batch, slice, head, row) the unnormalised O row (kD columns) and the row's max (exp2 domain), sum
// and whether it saw a counting key.
struct SplitPartials {
  float* o = nullptr;      // [B][n_split][H][Lq][kD]
  float* stats = nullptr;  // [B][n_split][H][Lq][3]: m, l, had_key
  int n_split = 1;
  MMK_HOST_DEVICE int64_t row(int64_t b, int s, int64_t h, int64_t i, int64_t H, int64_t Lq) const {
    return ((b * n_split + s) * H + h) * Lq + i;
  }
  static int64_t floats(const CrossAttentionParams& p, int n_split, int kD) {
    return n_split > 1 ? p.B * n_split * p.H * p.Lq * (kD + 3) : 0;
  }
};

template <typename T, int kD>
dev::Error forward(const CrossAttentionParams& p, void* workspace, dev::Stream stream);

// What TMA needs beyond flash::eligible (16-byte aligned bases and strides): every dimension it maps
// non-empty, and no zero (broadcast, e.g. expand()ed) stride along a dimension longer than 1, which
// the tensor-map rules do not promise to take. Other calls run the mma.sync kernels, correct on Hopper.
inline bool eligible(const CrossAttentionParams& p) {
  const auto spread = [](int64_t extent, int64_t stride) { return extent <= 1 || stride != 0; };
  const auto rows = [&](int64_t L, int64_t Hx, int64_t sl, int64_t sh, int64_t sb) {
    return spread(L, sl) && spread(Hx, sh) && spread(p.B, sb);
  };
  return p.Lq > 0 && p.Lk > 0 && p.D > 0 && p.Dv > 0 && rows(p.Lq, p.H, p.q_stride_l, p.q_stride_h, p.q_stride_b) &&
         rows(p.Lk, p.Hkv, p.k_stride_l, p.k_stride_h, p.k_stride_b) &&
         rows(p.Lk, p.Hkv, p.v_stride_l, p.v_stride_h, p.v_stride_b);
}

// The kernel head dim for max(D, Dv) = d, and the call of fn(std::integral_constant<int, kD>) with it.
inline int head_dim(int64_t d) { return d <= 64 ? 64 : d <= 128 ? 128 : 256; }
template <typename Fn>
dev::Error head_dim_switch(int64_t d, Fn&& fn) {
  switch (head_dim(d)) {
    case 64: return fn(std::integral_constant<int, 64>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    default: return fn(std::integral_constant<int, 256>{});
  }
}
}  // namespace flash_sm90
MMK_BACKEND_END
}  // namespace mmkernels::cuda
