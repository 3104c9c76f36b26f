// Tensor-core cross_attention for 16-bit inputs, FlashAttention-2 structure (our own code; see
// Dao 2023 and csrc/flash_attn in the FlashAttention repository for the idea), on the device-primitive
// layer so that the emulation runs every line of it.
//
// Forward (flash_fwd_kernel): a CTA owns kBlockM query rows of one (batch, head), 4 warps of 16 rows
// each (32, two m-tiles, up to D 64). K/V tiles of kBlockN keys stream through shared memory with
// cp.async in FlashAttention-2's order: V(t) loads during S(t) = Q K(t)^T, K(t + 1) during P V(t).
// S = Q K^T and O += P V on mma.sync m16n8k16 with float32 accumulators, operands by ldmatrix from
// padded (bank-conflict-free) tiles; online softmax in registers with exp2 and the scale folded into
// log2(e); P is rounded to 16 bits in registers and used as the A operand of the PV MMA directly. Q
// fragments stay in registers up to 128 columns per warp. Only the valid key tiles are visited
// (kv_lengths, trailing masked keys). Tiles every row of the CTA sees whole (no padding mask, below
// the causal diagonal and the valid keys) run in a loop of their own without per-key checks or load
// predicates; the rest (the last tile, the diagonal, masks) are masked in registers.
//
// Backward: flash_di_kernel computes D_i = rowsum(dO * O); flash_dkdv_kernel owns kBlockN = 64 keys
// of one (batch, kv head) and loops over the GQA group's query heads and all query tiles in a fixed
// order, recomputing P^T from the log-sum-exp (S^T = K Q^T, so each warp's 16 keys are the rows of
// its dK/dV accumulators, and from head dim 65 to 128 a pair of warps shares them, FlashAttention-2's
// 8-warp layout; each step's row statistics come by cp.async with its Q and dO, ahead of the step).
// Up to head dim kFusedDqMaxDim (128) it also adds dQ = dS K for its keys into a float32 workspace in
// key-tile order (P once per tile pair; DqAccum, attention_common.cuh); above, flash_dq_kernel is a
// separate pass over key tiles per query tile, with interior tiles in a loop of their own as in the
// forward. No atomics: the results are deterministic.
//
// Head dims: one instantiation per kD in {32, 64, 96, 128, 192, 256} >= max(D, Dv); the glue pads
// any other D/Dv with zero columns to a multiple of 8 and the loads zero-fill up to kD.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/device/warp_mma.h"
#include "common/numerics.h"
#include "cross_attention/cuda/attention_common.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace flash {

constexpr int kWarps = 4, kThreads = kWarps * dev::kWarpSize;

// Set only by the kernel audit (scripts/audit/ampere_interior.cu), never in a build: the forward and
// dq kernels then treat every key tile as interior and whole, so that their compiled loop is the
// interior path alone and the audit can count that path's instructions per HMMA.
#ifdef MMK_AUDIT_INTERIOR_PATH
constexpr bool kAuditInteriorPath = true;
#else
constexpr bool kAuditInteriorPath = false;
#endif

// Columns of a row that the loads must read (the glue pads D to a multiple of 8 with zeros).
MMK_DEVICE int load_cols(int64_t d) { return static_cast<int>((d + 7) / 8 * 8); }

// One tile of kRows keys of K or V (row stride ld, `cols` valid columns) into shared memory:
// without predicates where the tile lies inside the n_valid keys and its columns are whole chunks
// (interior tiles), else predicated, zero-filling the rest.
template <int kRows, int kD, typename T>
MMK_DEVICE void load_key_tile(dev::SmemPtr<T> dst, const T* src, int64_t ld, int n0, int n_valid, int64_t cols) {
  if (kAuditInteriorPath || (load_cols(cols) == kD && n0 + kRows <= n_valid))
    dev::load_tile_rows_async<kRows, kD, kThreads, true>(dst, src, ld, kRows, kD);
  else
    dev::load_tile_rows_async<kRows, kD, kThreads, false>(dst, src, ld, n_valid - n0, load_cols(cols));
}

// How many leading key tiles (of kBN keys, of the n_tiles a CTA visits) every row of a CTA whose
// first query row is m0 sees whole: no padding mask, below that row's causal end (the CTA's fewest
// keys) and the n_valid keys. The forward and dq kernels run them in their interior loop, without
// per-key checks.
template <int kBN>
MMK_DEVICE int interior_tiles(const CrossAttentionParams& p, int64_t b, int64_t m0, int n_valid, int n_tiles) {
  if (kAuditInteriorPath) return n_tiles;
  if (p.key_padding_mask != nullptr) return 0;
  return dev::min(n_tiles, dev::min(n_valid, static_cast<int>(causal_end(p, b, m0))) / kBN);
}

template <typename T, int kD>
struct FwdTraits {
  // Two 16-row m-tiles per warp up to D 64, so that each K/V fragment feeds two MMAs and the loop's
  // bookkeeping is spread over twice the MMAs. One above: at D 128 two m-tiles hold O (128 floats) and
  // S (64) per thread and ptxas spills at 255 registers, while one m-tile with Q in registers compiles
  // to 3.0 non-MMA instructions per HMMA in the interior loop (NOTES, "The Ampere forward's main loop").
  static constexpr int kMTiles = kD <= 64 ? 2 : 1;
  static constexpr int kBlockM = 16 * kMTiles * kWarps;
  static constexpr int kBlockN = kD <= 128 ? 64 : 32;  // D > 128: a 16 x kD float accumulator per warp
  static constexpr bool kQInRegs = kD * kMTiles <= 128;  // else Q fragments are re-read per k-step
  static constexpr int kPitch = dev::tile_pitch<kD>();
  static constexpr int kQElems = kBlockM * kPitch, kKVElems = kBlockN * kPitch;
  // Q, K, V, one buffer each: V(t) loads during S(t), K(t + 1) during P V(t) (FlashAttention-2's order).
  static constexpr size_t kSmemBytes = sizeof(T) * (kQElems + 2 * kKVElems);
};

template <typename T, int kD>
struct BwdTraits {
  static constexpr int kBlockN = 16 * kWarps;  // dK/dV kernel: keys per CTA
  // dK/dV kernel: warps per 16 keys. Up to D 64 one warp holds S^T, P^T, dP^T of its 16 keys over a
  // step's rows and dK, dV over the whole head dim; from 65 to 128 two (8 warps, FlashAttention-2's
  // layout): each computes S^T, dP^T for half of the rows and dK, dV (and dQ) for half of the head dim,
  // P^T and dS^T passing through shared memory. (At 4 warps, D 128 fitted 32 rows per step at 253
  // registers.)
  static constexpr int kSplit = kD > 64 && kD <= 128 ? 2 : 1;
  static constexpr int kDkDvThreads = kThreads * kSplit;
  // dK/dV kernel: query rows per step. Above 128 the per-warp registers hold dK and dV (16 x kD floats
  // each, or one of them when split) plus S^T and dP^T (16 x kBlockM): 16 rows keep that within 255
  // registers without spills (kernel audit).
  static constexpr int kBlockM = kD <= 128 ? 64 : 16;
  static constexpr int kPitch = dev::tile_pitch<kD>();
  // dK and dV accumulators together (2 x 16 x kD floats per warp) would spill above 128: then two
  // passes, dV first (needs only P), then dK.
  static constexpr bool kSplitDkDv = kD > 128;
  // Up to kFusedDqMaxDim (attention_common.cuh) the dK/dV kernel adds dQ = dS K too, in key-tile order
  // (P once per tile pair: 5 products instead of 7, no dq kernel), from dS^T in shared memory (keys x
  // rows, padded against bank conflicts). Wider heads keep the dq kernel: there dQ's accumulators on top
  // of dK's and dV's would spill.
  static constexpr bool kFusedDq = kD <= kFusedDqMaxDim;
  static_assert(!kFusedDq || kBlockM == kBwdBM, "the dQ flags count key tiles per kBwdBM query rows");
  static constexpr int kDsPitch = kBlockM + 8;
  static constexpr int kDsTiles = kSplit == 2 ? 2 : (kFusedDq ? 1 : 0);  // dS^T, and P^T with kSplit 2
  // Q/dO buffers: two (the next step's loads in flight during a step) where shared memory allows; with
  // kSplit 2 one, so that D 128 stays within the 99 KB every sm_80+ part gives a CTA (sm_86/89's
  // opt-in limit; two would take 121 KB): the next step's loads then overlap the step's dQ.
  static constexpr int kQStages = kSplit == 2 ? 1 : 2;
  static constexpr size_t kDkDvSmemBytes =
      sizeof(T) * (2 * kBlockN * kPitch + 2 * kQStages * kBlockM * kPitch + kDsTiles * kBlockN * kDsPitch) +
      (sizeof(double) + 4 * sizeof(float)) * 2 * kBlockM;
  static_assert(!kFusedDq || kDkDvSmemBytes <= 101376, "within the 99 KB of sm_86/89 (D 256 is 768 B above)");
  // dQ kernel: query rows per CTA and keys per step
  static constexpr int kDqBlockM = 16 * kWarps;
  static constexpr int kDqBlockN = kD <= 192 ? 32 : 16;  // dQ acc 16 x kD per warp (kD > kFusedDqMaxDim)
  static constexpr size_t kDqSmemBytes = sizeof(T) * (2 * kDqBlockM * kPitch + 4 * kDqBlockN * kPitch);
};

// ------------------------------------------------------------------------------------------------
// Forward

template <typename T, int kD>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) flash_fwd_kernel(const CrossAttentionParams p) {
  using Tr = FwdTraits<T, kD>;
  constexpr int kMT = Tr::kMTiles, kBM = Tr::kBlockM, kBN = Tr::kBlockN, kP = Tr::kPitch;
  constexpr int kNT = kBN / 8, kDT = kD / 8, kKS = kD / 16;
  constexpr int kR = 2 * kMT;  // rows per thread: row r is m-tile r / 2, accumulator half r % 2
  const int warp = dev::warp_id(), lane = dev::lane_id(), g = lane / 4, tq = lane % 4;
  const int64_t b = dev::block_idx().z, h = dev::block_idx().y, m0 = int64_t(dev::block_idx().x) * kBM;
  const int64_t hk = static_cast<int>(h) / static_cast<int>(gqa_group(p));
  const int wrow = warp * 16 * kMT;  // this warp's first row in the tile; its thread's row r: wrow + g + 8 r
  dev::SmemPtr<T> Qs = dev::dynamic_smem<T>();
  dev::SmemPtr<T> Ks = Qs + Tr::kQElems;
  dev::SmemPtr<T> Vs = Ks + Tr::kKVElems;
  const T* qg = static_cast<const T*>(p.q) + b * p.q_stride_b + m0 * p.q_stride_l + h * p.q_stride_h;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
  const int q_rows = static_cast<int>(dev::min<int64_t>(kBM, p.Lq - m0));
  // Key and row indices fit in 32 bits (flash::eligible): fewer registers than 64-bit index math.
  const int n_valid = static_cast<int>(valid_keys(p, b));
  // Causal: key tiles above the tile's last row's diagonal are skipped, not computed and masked.
  const int kv_end = dev::min(n_valid, static_cast<int>(causal_end(p, b, m0 + q_rows - 1)));
  const int n_tiles = dev::ceil_div(kv_end, kBN);
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;

  // Tiles load in order, so the sources are pointers stepped a tile at a time (no per-tile multiply).
  const T* k_src = kg;
  const T* v_src = vg;
  auto load_k = [&](int t) {
    load_key_tile<kBN, kD>(Ks, k_src, p.k_stride_l, t * kBN, n_valid, p.D);
    k_src += kBN * p.k_stride_l;
  };
  auto load_v = [&](int t) {
    load_key_tile<kBN, kD>(Vs, v_src, p.v_stride_l, t * kBN, n_valid, p.Dv);
    v_src += kBN * p.v_stride_l;
  };

  float o[kMT][kDT][4];
  dev::zero(o);
  float m[kR], l[kR];
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) m[r] = -INFINITY, l[r] = 0.f;
  unsigned had_key = 0;  // bit r: a key counted for row r, in this thread's columns (one register)
  if (n_tiles > 0) {
    dev::load_tile_async<kBM, kD, kThreads>(Qs, qg, p.q_stride_l, q_rows, load_cols(p.D));
    load_k(0);
    dev::cp_async_commit();
  }
  uint32_t qf[Tr::kQInRegs ? kMT : 1][Tr::kQInRegs ? kKS : 1][4];
  if constexpr (Tr::kQInRegs) {
    if (n_tiles > 0) {
      dev::cp_async_wait<0>();
      dev::sync_threads();  // Q landed
      MMK_UNROLL
      for (int i = 0; i < kMT; ++i)
        MMK_UNROLL
        for (int ks = 0; ks < kKS; ++ks) dev::load_a<T>(qf[i][ks], Qs, kP, wrow + 16 * i, ks * 16);
    }
  }
  // One key tile. kInterior: the tile is visible to every row of the CTA with no padding mask, so no
  // per-key checks. The two kinds run in two loops (interior tiles first, then the rest), each compiled
  // on its own as FlashAttention-2 does, so that the boundary tiles' extra registers do not spill into
  // the interior loop.
  auto tile = [&](int t, auto interior_tag) {
    constexpr bool kInterior = decltype(interior_tag)::value;
    const int n0 = t * kBN;
    dev::cp_async_wait<0>();
    dev::sync_threads();  // K(t) (and Q) landed; every warp is past P V(t - 1): V may be refilled
    load_v(t);
    dev::cp_async_commit();
    // A tile not wholly visible to every row: this thread's 2 kNT keys under the key rule, once for all
    // its rows (bit 2 j + c), read before S is live (the mask loads' registers are free then).
    uint32_t counts = 0;
    if constexpr (!kInterior) {
      MMK_UNROLL
      for (int j = 0; j < kNT; ++j)
        MMK_UNROLL
        for (int c = 0; c < 2; ++c)
          if (key_counts(p, b, n0 + j * 8 + 2 * tq + c, n_valid)) counts |= 1u << (2 * j + c);
    }
    // S = Q K^T for this warp's rows and the tile's kBN keys.
    float s[kMT][kNT][4];
    dev::zero(s);
    MMK_UNROLL
    for (int ks = 0; ks < kKS; ++ks) {
      uint32_t a[kMT][4];
      MMK_UNROLL
      for (int i = 0; i < kMT; ++i) {
        if constexpr (Tr::kQInRegs) {
          MMK_UNROLL
          for (int e = 0; e < 4; ++e) a[i][e] = qf[i][ks][e];
        } else {
          dev::load_a<T>(a[i], Qs, kP, wrow + 16 * i, ks * 16);
        }
      }
      dev::mma_b_nmajor<kMT, kNT, T>(s, a, Ks, kP, 0, ks * 16);
    }
    // Online softmax in the log2 domain: x = s * scale * log2(e) rounded once (mul_rn: the backward
    // recomputes the same x), masked keys -inf. The row maxima and sums run as two independent chains
    // (even / odd 8-key groups) to halve the dependent-latency chain that ncu showed stalling the
    // warps (NOTES, run 2).
    float mx[kR][2];
    MMK_UNROLL
    for (int r = 0; r < kR; ++r) mx[r][0] = mx[r][1] = -INFINITY;
    if constexpr (kInterior) {
      had_key = (1u << kR) - 1;
      MMK_UNROLL
      for (int r = 0; r < kR; ++r) {
        MMK_UNROLL
        for (int j = 0; j < kNT; ++j)
          MMK_UNROLL
          for (int c = 0; c < 2; ++c) {
            float& x = s[r / 2][j][2 * (r % 2) + c];
            x = dev::mul_rn(x, scale_log2);
            mx[r][j & 1] = max_nan(mx[r][j & 1], x);
          }
      }
    } else {
      MMK_UNROLL
      for (int r = 0; r < kR; ++r) {
        const int row_end = static_cast<int>(causal_end(p, b, m0 + wrow + g + 8 * r));
        MMK_UNROLL
        for (int j = 0; j < kNT; ++j)
          MMK_UNROLL
          for (int c = 0; c < 2; ++c) {
            const bool visible = ((counts >> (2 * j + c)) & 1u) && n0 + j * 8 + 2 * tq + c < row_end;
            if (visible) had_key |= 1u << r;
            float& x = s[r / 2][j][2 * (r % 2) + c];
            x = visible ? dev::mul_rn(x, scale_log2) : -INFINITY;
            mx[r][j & 1] = max_nan(mx[r][j & 1], x);
          }
      }
    }
    MMK_UNROLL
    for (int r = 0; r < kR; ++r) {
      const int i = r / 2, c0 = 2 * (r % 2);
      const float m_new = max_nan(m[r], dev::quad_max(max_nan(mx[r][0], mx[r][1])));
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row with no valid key yet stays at 0
      const float alpha = dev::exp2_fast(m[r] - m_use);
      m[r] = m_new;
      MMK_UNROLL
      for (int d = 0; d < kDT; ++d) {
        o[i][d][c0] *= alpha;
        o[i][d][c0 + 1] *= alpha;
      }
      float part[2] = {0.f, 0.f};
      MMK_UNROLL
      for (int j = 0; j < kNT; ++j) {
        s[i][j][c0] = dev::exp2_fast(s[i][j][c0] - m_use);
        s[i][j][c0 + 1] = dev::exp2_fast(s[i][j][c0 + 1] - m_use);
        part[j & 1] += s[i][j][c0] + s[i][j][c0 + 1];
      }
      l[r] = l[r] * alpha + (part[0] + part[1]);
    }
    dev::cp_async_wait<0>();
    dev::sync_threads();  // V(t) landed; every warp is past S(t): K may be refilled
    if (t + 1 < n_tiles) {
      load_k(t + 1);
      dev::cp_async_commit();
    }
    // O += P V with P as the A operand straight from registers.
    MMK_UNROLL
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t a[kMT][4];
      MMK_UNROLL
      for (int i = 0; i < kMT; ++i) dev::accum_to_a<T>(a[i], s[i][2 * kk], s[i][2 * kk + 1]);
      dev::mma_b_kmajor<kMT, kDT, T>(o, a, Vs, kP, kk * 16, 0);
    }
  };
  const int n_interior = interior_tiles<kBN>(p, b, m0, n_valid, n_tiles);
  int t = 0;
  for (; t < n_interior; ++t) tile(t, std::true_type{});
  for (; t < n_tiles; ++t) tile(t, std::false_type{});

  T* out = static_cast<T*>(p.out) + b * p.o_stride_b + h * p.o_stride_h;
  double* lse = static_cast<double*>(p.lse) + (b * p.H + h) * p.Lq;
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) {
    const int i = r / 2, c0 = 2 * (r % 2);
    const float l_tot = final_row_sum(dev::quad_sum(l[r]), dev::quad_max((had_key >> r) & 1u ? 1.f : 0.f) > 0.f);
    const float inv = inverse_row_sum(l_tot);  // zeros for a row with no valid key, NaN stays NaN
    const int64_t row = m0 + wrow + g + 8 * r;
    if (row >= p.Lq) continue;
    T* orow = out + row * p.o_stride_l;
    MMK_UNROLL
    for (int dt = 0; dt < kDT; ++dt) {
      const int d = dt * 8 + 2 * tq;
      if (d < p.Dv) orow[d] = dev::from_float<T>(o[i][dt][c0] * inv);
      if (d + 1 < p.Dv) orow[d + 1] = dev::from_float<T>(o[i][dt][c0 + 1] * inv);
    }
    if (tq == 0) lse[row] = row_lse(m[r], l_tot);
  }
}

// ------------------------------------------------------------------------------------------------
// Backward

// D_i = rowsum(dO * O) in float32, one warp per query row. grid (ceil(Lq / 4), H, B).
template <typename T>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) flash_di_kernel(const CrossAttentionParams p, float* Di) {
  const int warp = dev::warp_id(), lane = dev::lane_id();
  const int64_t b = dev::block_idx().z, h = dev::block_idx().y;
  const int64_t i = int64_t(dev::block_idx().x) * kWarps + warp;
  if (i >= p.Lq) return;
  const T* o = static_cast<const T*>(p.out) + b * p.o_stride_b + i * p.o_stride_l + h * p.o_stride_h;
  const T* g = static_cast<const T*>(p.grad_out) + b * p.do_stride_b + i * p.do_stride_l + h * p.do_stride_h;
  float acc = 0.f;
  for (int d = lane; d < p.Dv; d += dev::kWarpSize) acc = fmaf(dev::to_float(o[d]), dev::to_float(g[d]), acc);
  for (int off = 16; off > 0; off >>= 1) acc += dev::shfl_xor(dev::kFullMask, acc, off);
  if (lane == 0) Di[(b * p.H + h) * p.Lq + i] = acc;
}

// One query row's saved log-sum-exp (natural log), -inf (no valid key) for a row beyond Lq.
MMK_DEVICE double saved_lse(const CrossAttentionParams& p, int64_t b, int64_t h, int64_t row) {
  return row < p.Lq ? static_cast<const double*>(p.lse)[(b * p.H + h) * p.Lq + row] : -INFINITY;
}
// A saved log-sum-exp in the log2 domain as float hi + lo (empty: the row has no valid key, or lies
// beyond Lq).
MMK_DEVICE Lse lse_log2(double saved) { return Lse(saved, kLog2eD); }
MMK_DEVICE Lse lse_log2(const CrossAttentionParams& p, int64_t b, int64_t h, int64_t row) {
  return lse_log2(saved_lse(p, b, h, row));
}
// One query row's D_i (flash_di_kernel), 0 beyond Lq.
MMK_DEVICE float row_di(const CrossAttentionParams& p, const float* Di, int64_t b, int64_t h, int64_t row) {
  return row < p.Lq ? Di[(b * p.H + h) * p.Lq + row] : 0.f;
}

// dK, dV for kBlockN keys of one (batch, kv head), and dQ's share of these keys where Tr::kFusedDq.
// kPass: 0 both, 1 dV only, 2 dK only. grid (ceil(Lk / kBlockN), Hkv, B): the launch order is the
// key-tile order in which dQ is added (a CTA waits only on CTAs launched before it).
// Warp w holds keys 16 (w % kWarps) ..; with Tr::kSplit = 2 the warps w and w + kWarps share them, each
// taking half of a step's rows for S^T, dP^T and half of the head dim for dK, dV (and dQ).
template <typename T, int kD, int kPass>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(BwdTraits<T, kD>::kDkDvThreads, BwdTraits<T, kD>::kSplit == 1 ? 2 : 1)
    flash_dkdv_kernel(const CrossAttentionParams p, const float* Di, const DqAccum dq) {
  using Tr = BwdTraits<T, kD>;
  constexpr int kBN = Tr::kBlockN, kBM = Tr::kBlockM, kP = Tr::kPitch, kSplit = Tr::kSplit;
  constexpr int kNThreads = Tr::kDkDvThreads, kDsP = Tr::kDsPitch, kStages = Tr::kQStages;
  constexpr int kNT = kBM / 8 / kSplit, kDT = kD / 8 / kSplit, kKS = kD / 16;
  constexpr bool kWantV = kPass != 2, kWantK = kPass != 1;
  static_assert(kPass == 0 || (!Tr::kFusedDq && kSplit == 1), "dQ and the shared P^T/dS^T need both passes in one");
  const int warp = dev::warp_id(), lane = dev::lane_id(), g = lane / 4, tq = lane % 4;
  const int kw = warp % kWarps, half = warp / kWarps;
  const int qc0 = half * (kBM / kSplit), dc0 = half * (kD / kSplit);  // this warp's rows of S^T; head-dim columns
  const int64_t b = dev::block_idx().z, hk = dev::block_idx().y;
  const int n0 = static_cast<int>(dev::block_idx().x) * kBN;
  const int n_valid = static_cast<int>(valid_keys(p, b));
  if (n0 >= n_valid) return;  // keys that never count keep the glue's zero gradient
  const int64_t group = gqa_group(p);
  dev::SmemPtr<T> Ks = dev::dynamic_smem<T>();
  dev::SmemPtr<T> Vs = Ks + kBN * kP;
  dev::SmemPtr<T> Qs = Vs + kBN * kP;             // [kStages]
  dev::SmemPtr<T> dOs = Qs + kStages * kBM * kP;  // [kStages]
  // kFusedDq: dS^T of a step, (keys, rows); kSplit 2: P^T beside it (each warp computes half of the
  // rows, dV and dK take all of them).
  dev::SmemPtr<T> dSt = dOs + kStages * kBM * kP, Pt = dSt + Tr::kDsTiles / 2 * kBN * kDsP;
  // Row statistics of a step's query tile, [2] stages each: the saved log-sum-exp (float64, as loaded),
  // D_i, and what the step reads: the log-sum-exp in the log2 domain as hi + lo, and the causal end.
  dev::SmemPtr<double> lse_s = (dSt + Tr::kDsTiles * kBN * kDsP).template cast<double>();
  dev::SmemPtr<float> di_s = (lse_s + 2 * kBM).template cast<float>();
  dev::SmemPtr<float> hi_s = di_s + 2 * kBM, lo_s = hi_s + 2 * kBM;
  dev::SmemPtr<int> end_s = (lo_s + 2 * kBM).template cast<int>();
  // Causal: only query tiles holding a row that sees the first key of this tile (row >= n0 - offset).
  const int diag = p.causal ? static_cast<int>(causal_offset(p, b)) : 0;  // read once (kv_lengths), not per step
  const int q_first = p.causal ? static_cast<int>(dev::max<int64_t>(0, n0 - diag)) / kBM : 0;
  const int q_tiles = static_cast<int>(dev::ceil_div<int64_t>(p.Lq, kBM)) - q_first;
  const int steps = q_tiles > 0 ? static_cast<int>(group) * q_tiles : 0;
  if (steps == 0) return;  // every query row lies above this key tile's diagonal: zero gradients
  const int key_rows = dev::min(kBN, n_valid - n0);
  dev::load_tile_async<kBN, kD, kNThreads>(Ks, static_cast<const T*>(p.k) + b * p.k_stride_b + n0 * p.k_stride_l +
                                                   hk * p.k_stride_h, p.k_stride_l, key_rows, load_cols(p.D));
  dev::load_tile_async<kBN, kD, kNThreads>(Vs, static_cast<const T*>(p.v) + b * p.v_stride_b + n0 * p.v_stride_l +
                                                   hk * p.v_stride_h, p.v_stride_l, key_rows, load_cols(p.Dv));
  // A step's Q and dO tiles and its rows' saved statistics, all by cp.async in one group issued a step
  // ahead (kStages 2) or, with one Q/dO buffer, once the step before has read its Q and dO (during its
  // dQ): no registers held across the step, no loads right before a barrier. Each thread converts
  // the row it loaded (convert) at the end of the step before, once its group has landed.
  static_assert(kBM <= kNThreads, "one statistics row per thread");
  auto load_q = [&](int step, int buf) {
    const int64_t h = hk * group + step / q_tiles, m0 = int64_t(q_first + step % q_tiles) * kBM;
    const int rows = static_cast<int>(dev::min<int64_t>(kBM, p.Lq - m0));
    const int qb = kStages == 2 ? buf : 0;
    dev::load_tile_async<kBM, kD, kNThreads>(Qs + qb * kBM * kP, static_cast<const T*>(p.q) + b * p.q_stride_b +
                                                 m0 * p.q_stride_l + h * p.q_stride_h, p.q_stride_l, rows,
                                             load_cols(p.D));
    dev::load_tile_async<kBM, kD, kNThreads>(dOs + qb * kBM * kP, static_cast<const T*>(p.grad_out) +
                                                 b * p.do_stride_b + m0 * p.do_stride_l + h * p.do_stride_h,
                                             p.do_stride_l, rows, load_cols(p.Dv));
    const int i = dev::thread_rank();
    if (i < kBM) {  // rows past Lq: zero-filled, and never read as statistics (row_stats below)
      const int64_t at = (b * p.H + h) * p.Lq + (i < rows ? m0 + i : 0);
      dev::cp_async<8>(lse_s + buf * kBM + i, static_cast<const double*>(p.lse) + at, i < rows ? 8 : 0);
      dev::cp_async<4>(di_s + buf * kBM + i, Di + at, i < rows ? 4 : 0);
    }
  };
  auto convert = [&](int step) {
    const int i = dev::thread_rank(), st = (step & 1) * kBM + i;
    if (i >= kBM) return;
    const int64_t row = int64_t(q_first + step % q_tiles) * kBM + i;
    const Lse lse2 = lse_log2(row < p.Lq ? lse_s[st] : -INFINITY);  // as saved_lse (past Lq: zero-filled)
    hi_s[st] = lse2.hi;
    lo_s[st] = lse2.lo;
    end_s[st] = static_cast<int>(causal_end_at(p, diag, row));
  };
  load_q(0, 0);
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
  convert(0);  // published by the first step's barrier

  // This warp's 16 keys: rows of S^T, dK and dV.
  const int kr0 = kw * 16;
  // This thread's two keys, or INT_MAX for a key that never counts (then no row sees it).
  int my_key[2];
  MMK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int key = n0 + kr0 + g + 8 * r;
    my_key[r] = key_counts(p, b, key, n_valid) ? key : 0x7fffffff;
  }
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;
  float dk[kWantK ? kDT : 2][4], dv[kWantV ? kDT : 2][4];
  dev::zero(dk);
  dev::zero(dv);
  // Stores this thread's part of a (keys x rows) accumulator pair of S^T's shape into a (keys, rows)
  // tile as T, pairs of adjacent rows as one word.
  auto store_t = [&](dev::SmemPtr<T> dst, const float (&acc)[kNT][4]) {
    MMK_UNROLL
    for (int j = 0; j < kNT; ++j)
      MMK_UNROLL
      for (int r = 0; r < 2; ++r)
        (dst + (kr0 + g + 8 * r) * kDsP + qc0 + j * 8 + 2 * tq).template cast<uint32_t>()[0] =
            dev::pack2<T>(acc[j][2 * r], acc[j][2 * r + 1]);
  };
  // acc (+)= X^T B over all the step's rows: X^T (keys x rows) from a (keys, rows) tile in shared memory.
  auto mma_t = [&](float (&acc)[kDT][4], dev::SmemPtr<const T> xt, dev::SmemPtr<const T> B) {
    MMK_UNROLL
    for (int kk = 0; kk < kBM / 16; ++kk) {
      uint32_t a[4];
      dev::load_a<T>(a, xt, kDsP, kr0, kk * 16);
      dev::mma_b_kmajor<kDT, T>(acc, a, B, kP, kk * 16, dc0);
    }
  };
  for (int step = 0; step < steps; ++step) {
    const int buf = step & 1, qb = kStages == 2 ? buf : 0;
    if constexpr (kStages == 2) {
      if (step + 1 < steps) {
        load_q(step + 1, buf ^ 1);
        dev::cp_async_commit();
        dev::cp_async_wait<1>();
      } else {
        dev::cp_async_wait<0>();
      }
    }
    dev::sync_threads();
    const dev::SmemPtr<const T> Qt = Qs + qb * kBM * kP, dOt = dOs + qb * kBM * kP;
    // S^T = K Q^T: rows = this warp's keys, columns = its rows of the tile.
    float pt[kNT][4];
    dev::zero(pt);
    dev::warp_gemm_nt<kNT, kKS, T>(pt, Ks, kP, kr0, Qt, kP, qc0);
    MMK_UNROLL
    for (int j = 0; j < kNT; ++j)
      MMK_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int col = buf * kBM + qc0 + j * 8 + 2 * tq + (e & 1);
        const bool visible = my_key[e / 2] < end_s[col];
        pt[j][e] = prob(pt[j][e], scale_log2, Lse::parts(hi_s[col], lo_s[col]), visible);
      }
    if constexpr (kWantV && kSplit == 1) {  // dV += P^T dO, P^T straight from the registers
      MMK_UNROLL
      for (int kk = 0; kk < kBM / 16; ++kk) {
        uint32_t a[4];
        dev::accum_to_a<T>(a, pt[2 * kk], pt[2 * kk + 1]);
        dev::mma_b_kmajor<kDT, T>(dv, a, dOt, kP, kk * 16, 0);
      }
    }
    // dP^T = V dO^T, dS^T = P^T (dP^T - D) (the scale is applied once at the end).
    float dpt[kNT][4];
    if constexpr (kWantK) {
      dev::zero(dpt);
      dev::warp_gemm_nt<kNT, kKS, T>(dpt, Vs, kP, kr0, dOt, kP, qc0);
      MMK_UNROLL
      for (int j = 0; j < kNT; ++j)
        MMK_UNROLL
        for (int e = 0; e < 4; ++e)
          dpt[j][e] = pt[j][e] * (dpt[j][e] - di_s[buf * kBM + qc0 + j * 8 + 2 * tq + (e & 1)]);
    }
    if constexpr (kSplit == 2) {  // P^T and dS^T of both halves of the rows, then dV and dK over all of them
      if constexpr (kWantV) store_t(Pt, pt);
      if constexpr (kWantK) store_t(dSt, dpt);
      dev::sync_threads();
      if constexpr (kWantV) mma_t(dv, Pt, dOt);
      if constexpr (kWantK) mma_t(dk, dSt, Qt);
      if constexpr (kStages == 1) {  // Q and dO read: the next step's load overlaps dQ
        dev::sync_threads();
        if (step + 1 < steps) {
          load_q(step + 1, buf ^ 1);
          dev::cp_async_commit();
        }
      }
    } else if constexpr (kWantK) {  // dK += dS^T Q, dS^T straight from the registers
      MMK_UNROLL
      for (int kk = 0; kk < kBM / 16; ++kk) {
        uint32_t a[4];
        dev::accum_to_a<T>(a, dpt[2 * kk], dpt[2 * kk + 1]);
        dev::mma_b_kmajor<kDT, T>(dk, a, Qt, kP, kk * 16, 0);
      }
      if constexpr (Tr::kFusedDq) {  // dS^T for dQ (the last step's reads of it ended at its closing barrier)
        store_t(dSt, dpt);
        dev::sync_threads();
      }
    }
    if constexpr (Tr::kFusedDq) {
      // dQ (this warp's 16 rows, its columns) = dS K over the CTA's keys, dS^T rounded as dK took it;
      // added after the key tile before this one.
      float dqa[kDT][4];
      dev::zero(dqa);
      MMK_UNROLL
      for (int kk = 0; kk < kBN / 16; ++kk) {
        uint32_t a[4];
        dev::load_a_trans<T>(a, dSt, kDsP, kw * 16, kk * 16);
        dev::mma_b_kmajor<kDT, T>(dqa, a, Ks, kP, kk * 16, dc0);
      }
      const int64_t h = hk * group + step / q_tiles, m_blk = q_first + step % q_tiles;
      int* flag = dq.flags + (b * p.H + h) * bwd_q_tiles(p) + m_blk;
      if (dev::thread_rank() == 0) dev::wait_flag(flag, static_cast<int>(dev::block_idx().x));
      dev::sync_threads();
      float* acc = dq.acc + (b * p.H + h) * p.Lq * kD + dc0;
      MMK_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int64_t row = m_blk * kBM + kw * 16 + g + 8 * r;
        if (row >= p.Lq) continue;
        MMK_UNROLL
        for (int dt = 0; dt < kDT; ++dt) {
          auto* a = reinterpret_cast<dev::F32x2*>(acc + row * kD + dt * 8 + 2 * tq);  // even column: aligned
          dev::F32x2 v = *a;
          v.x += dqa[dt][2 * r];
          v.y += dqa[dt][2 * r + 1];
          *a = v;
        }
      }
      dev::sync_threads();  // every add of this CTA is done
      if (dev::thread_rank() == 0) dev::set_flag(flag, static_cast<int>(dev::block_idx().x) + 1);
    }
    if (step + 1 < steps) {  // the next step's group has had this step to land
      dev::cp_async_wait<0>();
      convert(step + 1);
    }
    dev::sync_threads();
  }
  const float scale = static_cast<float>(p.scale);
  MMK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int kr = kr0 + g + 8 * r;  // this thread's key within the tile (32-bit: nothing 64-bit kept live)
    if (kr >= p.Lk - n0) continue;
    const int64_t base = (b * p.Lk + n0 + kr) * p.Hkv + hk;
    MMK_UNROLL
    for (int dt = 0; dt < kDT; ++dt) {
      const int d = dc0 + dt * 8 + 2 * tq;
      if constexpr (kWantK) {
        T* dkr = static_cast<T*>(p.dk) + base * p.D;
        if (d < p.D) dkr[d] = dev::from_float<T>(dk[dt][2 * r] * scale);
        if (d + 1 < p.D) dkr[d + 1] = dev::from_float<T>(dk[dt][2 * r + 1] * scale);
      }
      if constexpr (kWantV) {
        T* dvr = static_cast<T*>(p.dv) + base * p.Dv;
        if (d < p.Dv) dvr[d] = dev::from_float<T>(dv[dt][2 * r]);
        if (d + 1 < p.Dv) dvr[d + 1] = dev::from_float<T>(dv[dt][2 * r + 1]);
      }
    }
  }
}

// dQ for kDqBlockM query rows of one (batch, head), looping over the valid key tiles.
// grid (ceil(Lq / kDqBlockM), H, B).
// Head dims above kFusedDqMaxDim only (below, the dK/dV kernel adds dQ).
template <typename T, int kD>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) flash_dq_kernel(const CrossAttentionParams p, const float* Di) {
  using Tr = BwdTraits<T, kD>;
  static_assert(!Tr::kFusedDq, "the dK/dV kernel adds dQ at this head dim");
  constexpr int kBM = Tr::kDqBlockM, kBN = Tr::kDqBlockN, kP = Tr::kPitch;
  constexpr int kNT = kBN / 8, kDT = kD / 8, kKS = kD / 16;
  const int warp = dev::warp_id(), lane = dev::lane_id(), g = lane / 4, tq = lane % 4;
  const int64_t b = dev::block_idx().z, h = dev::block_idx().y, m0 = int64_t(dev::block_idx().x) * kBM;
  const int64_t hk = static_cast<int>(h) / static_cast<int>(gqa_group(p));
  const int n_valid = static_cast<int>(valid_keys(p, b));
  const int kv_end = dev::min(n_valid, static_cast<int>(causal_end(p, b, dev::min<int64_t>(m0 + kBM, p.Lq) - 1)));
  const int n_tiles = dev::ceil_div(kv_end, kBN);
  dev::SmemPtr<T> Qs = dev::dynamic_smem<T>();
  dev::SmemPtr<T> dOs = Qs + kBM * kP;
  dev::SmemPtr<T> Ks = dOs + kBM * kP;      // [2] stages
  dev::SmemPtr<T> Vs = Ks + 2 * kBN * kP;   // [2] stages
  const T* kg = static_cast<const T*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
  auto load_kv = [&](int t, int buf) {
    const int n0 = t * kBN;
    load_key_tile<kBN, kD>(Ks + buf * kBN * kP, kg + n0 * p.k_stride_l, p.k_stride_l, n0, n_valid, p.D);
    load_key_tile<kBN, kD>(Vs + buf * kBN * kP, vg + n0 * p.v_stride_l, p.v_stride_l, n0, n_valid, p.Dv);
  };
  const int q_rows = static_cast<int>(dev::min<int64_t>(kBM, p.Lq - m0));
  if (n_tiles > 0) {
    dev::load_tile_async<kBM, kD, kThreads>(Qs, static_cast<const T*>(p.q) + b * p.q_stride_b + m0 * p.q_stride_l +
                                                h * p.q_stride_h, p.q_stride_l, q_rows, load_cols(p.D));
    dev::load_tile_async<kBM, kD, kThreads>(dOs, static_cast<const T*>(p.grad_out) + b * p.do_stride_b +
                                                 m0 * p.do_stride_l + h * p.do_stride_h, p.do_stride_l, q_rows,
                                            load_cols(p.Dv));
    load_kv(0, 0);
    dev::cp_async_commit();
  }
  Lse lse2[2];
  float di[2];
  MMK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int64_t row = m0 + warp * 16 + g + 8 * r;
    lse2[r] = lse_log2(p, b, h, row);
    di[r] = row_di(p, Di, b, h, row);
  }
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;
  float dq[kDT][4];
  dev::zero(dq);
  // One key tile; interior and boundary tiles in two loops, each compiled on its own (as the forward).
  auto tile = [&](int t, auto interior_tag) {
    constexpr bool kInterior = decltype(interior_tag)::value;
    const int buf = t & 1;
    if (t + 1 < n_tiles) {
      load_kv(t + 1, buf ^ 1);
      dev::cp_async_commit();
      dev::cp_async_wait<1>();
    } else {
      dev::cp_async_wait<0>();
    }
    dev::sync_threads();
    const dev::SmemPtr<const T> Kt = Ks + buf * kBN * kP, Vt = Vs + buf * kBN * kP;
    float s[kNT][4], dp[kNT][4];
    dev::zero(s);
    dev::zero(dp);
    dev::warp_gemm_nt<kNT, kKS, T>(s, Qs, kP, warp * 16, Kt, kP, 0);
    dev::warp_gemm_nt<kNT, kKS, T>(dp, dOs, kP, warp * 16, Vt, kP, 0);
    const int n0 = t * kBN;
    if constexpr (kInterior) {
      MMK_UNROLL
      for (int j = 0; j < kNT; ++j)
        MMK_UNROLL
        for (int e = 0; e < 4; ++e) s[j][e] = prob(s[j][e], scale_log2, lse2[e / 2], true) * (dp[j][e] - di[e / 2]);
    } else {
      int row_end[2];
      MMK_UNROLL
      for (int r = 0; r < 2; ++r) row_end[r] = static_cast<int>(causal_end(p, b, m0 + warp * 16 + g + 8 * r));
      MMK_UNROLL
      for (int j = 0; j < kNT; ++j)
        MMK_UNROLL
        for (int c = 0; c < 2; ++c) {
          const int key = n0 + j * 8 + 2 * tq + c;
          const bool counts = key_counts(p, b, key, n_valid);  // once per key for both rows
          MMK_UNROLL
          for (int r = 0; r < 2; ++r) {
            const int e = 2 * r + c;
            const float pr = prob(s[j][e], scale_log2, lse2[r], counts && key < row_end[r]);
            s[j][e] = pr * (dp[j][e] - di[r]);  // dS
          }
        }
    }
    MMK_UNROLL
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t a[4];
      dev::accum_to_a<T>(a, s[2 * kk], s[2 * kk + 1]);
      dev::mma_b_kmajor<kDT, T>(dq, a, Kt, kP, kk * 16, 0);
    }
    dev::sync_threads();
  };
  const int n_interior = interior_tiles<kBN>(p, b, m0, n_valid, n_tiles);
  int t = 0;
  for (; t < n_interior; ++t) tile(t, std::true_type{});
  for (; t < n_tiles; ++t) tile(t, std::false_type{});
  const float scale = static_cast<float>(p.scale);
  MMK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int64_t row = m0 + warp * 16 + g + 8 * r;
    if (row >= p.Lq) continue;
    T* dqr = static_cast<T*>(p.dq) + ((b * p.Lq + row) * p.H + h) * p.D;
    MMK_UNROLL
    for (int dt = 0; dt < kDT; ++dt) {
      const int d = dt * 8 + 2 * tq;
      if (d < p.D) dqr[d] = dev::from_float<T>(dq[dt][2 * r] * scale);
      if (d + 1 < p.D) dqr[d + 1] = dev::from_float<T>(dq[dt][2 * r + 1] * scale);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Launchers

inline bool grid_fits(const CrossAttentionParams& p) { return p.H <= kMaxGridYZ && p.Hkv <= kMaxGridYZ; }

template <typename T, int kD>
dev::Error forward(const CrossAttentionParams& p_all, dev::Stream stream) {
  using Tr = FwdTraits<T, kD>;
  if (!grid_fits(p_all)) return dev::kErrorInvalidConfiguration;
  dev::Error err = dev::set_max_dynamic_smem(flash_fwd_kernel<T, kD>, static_cast<int>(Tr::kSmemBytes));
  for (BatchSlices s(p_all, kMaxGridYZ); s && err == dev::kSuccess; ++s) {
    const CrossAttentionParams& p = *s;
    const dev::Dim3 grid{static_cast<uint32_t>(dev::ceil_div<int64_t>(p.Lq, Tr::kBlockM)), static_cast<uint32_t>(p.H),
                         static_cast<uint32_t>(p.B)};
    err = MMK_LAUNCH((flash_fwd_kernel<T, kD>), grid, (dev::Dim3{kThreads, 1, 1}), Tr::kSmemBytes, stream, p);
  }
  return err;
}

template <typename T, int kD, int kPass>
dev::Error launch_dkdv(const CrossAttentionParams& p, const float* Di, DqAccum dq, dev::Stream stream) {
  using Tr = BwdTraits<T, kD>;
  dev::Error err = dev::set_max_dynamic_smem(flash_dkdv_kernel<T, kD, kPass>, static_cast<int>(Tr::kDkDvSmemBytes));
  if (err != dev::kSuccess) return err;
  const dev::Dim3 grid{static_cast<uint32_t>(dev::ceil_div<int64_t>(p.Lk, Tr::kBlockN)), static_cast<uint32_t>(p.Hkv),
                       static_cast<uint32_t>(p.B)};
  return MMK_LAUNCH((flash_dkdv_kernel<T, kD, kPass>), grid, (dev::Dim3{Tr::kDkDvThreads, 1, 1}), Tr::kDkDvSmemBytes,
                    stream, p, Di, dq);
}

template <typename T, int kD>
dev::Error backward(const CrossAttentionParams& p_all, float* Di_all, void* workspace, dev::Stream stream, bool grads) {
  using Tr = BwdTraits<T, kD>;
  if (!grid_fits(p_all)) return dev::kErrorInvalidConfiguration;
  if (Tr::kFusedDq && grads && workspace == nullptr)
    return dev::report_error(dev::kErrorInvalidValue, "the sm_80 backward needs its dQ workspace at this head dim");
  dev::Error err = dev::kSuccess;
  if constexpr (!Tr::kFusedDq) err = dev::set_max_dynamic_smem(flash_dq_kernel<T, kD>, static_cast<int>(Tr::kDqSmemBytes));
  const DqAccum dq_all = Tr::kFusedDq && grads ? DqAccum::in(workspace, p_all, kD) : DqAccum{};
  for (BatchSlices s(p_all, kMaxGridYZ); s && err == dev::kSuccess; ++s) {
    const CrossAttentionParams& p = *s;
    float* Di = Di_all + s.first() * p.H * p.Lq;
    const dev::Dim3 block{kThreads, 1, 1};
    const dev::Dim3 grid_rows{static_cast<uint32_t>(dev::ceil_div<int64_t>(p.Lq, kWarps)), static_cast<uint32_t>(p.H),
                              static_cast<uint32_t>(p.B)};
    err = MMK_LAUNCH(flash_di_kernel<T>, grid_rows, block, 0, stream, p, Di);
    if (err != dev::kSuccess || !grads) continue;
    const DqAccum dq = Tr::kFusedDq ? dq_all.from_batch(s.first(), p, kD, 1) : DqAccum{};
    if constexpr (Tr::kSplitDkDv) {
      err = launch_dkdv<T, kD, 1>(p, Di, dq, stream);
      if (err == dev::kSuccess) err = launch_dkdv<T, kD, 2>(p, Di, dq, stream);
    } else {
      err = launch_dkdv<T, kD, 0>(p, Di, dq, stream);
    }
    if constexpr (!Tr::kFusedDq) {
      if (err != dev::kSuccess) continue;
      const dev::Dim3 grid_dq{static_cast<uint32_t>(dev::ceil_div<int64_t>(p.Lq, Tr::kDqBlockM)),
                              static_cast<uint32_t>(p.H), static_cast<uint32_t>(p.B)};
      err = MMK_LAUNCH((flash_dq_kernel<T, kD>), grid_dq, block, Tr::kDqSmemBytes, stream, p, Di);
    }
  }
  if (err == dev::kSuccess && Tr::kFusedDq && grads) err = launch_convert_dq<T>(p_all, dq_all.acc, kD, stream);
  return err;
}

}  // namespace flash
MMK_BACKEND_END
}  // namespace mmkernels::cuda
