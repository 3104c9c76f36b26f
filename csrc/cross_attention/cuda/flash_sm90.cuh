// cross_attention forward on Hopper (sm_90a) for 16-bit inputs, on CUTLASS/CuTe: FlashAttention-3's
// ideas (Shah et al. 2024), our own code.
//
// A CTA owns kBM = 128 query rows of one (batch, head), or with GQA packing (heads_per_cta, short query
// sides) 128 rows of the whole query-head group of one kv head, and is warp-specialized. Warpgroup 0 is the
// producer: it gives its registers back (setmaxnreg) and one elected thread loads Q once, then K and V
// tiles of kBN keys through a kStages-deep shared-memory ring with TMA, each stage guarded by mbarriers
// (K and V arrive separately, so S can start before V is in). Warpgroups 1 and 2 consume 64 rows each:
//   S = Q K^T        wgmma, both operands in shared memory (K-major, 128-byte swizzle), float32;
//   online softmax   in registers in the exp2 domain (x = s * scale * log2 e, rounded once as the
//                    backward recomputes it), NaN-propagating max, rows with no valid key zeros;
//   O += P V         wgmma with P from registers (the S accumulator's fragment is the A fragment of the
//                    next wgmma, 16 keys at a time) and V in shared memory (MN-major);
// then release the stage to the producer. The two consumers take turns issuing their GEMMs (ping-pong
// on named barriers), so one's softmax overlaps the other's tensor-core work. The epilogue divides by
// the row sums, stages O through the warpgroup's own Q rows (free once its last S is done) and writes
// 16-byte row pieces; the log-sum-exp is saved in float64 as the project's rule says (common/dtype.h).
// The whole contract of the op (params.h): only the valid key tiles are loaded (kv_lengths, trailing
// masked keys); tiles inside every row's visible keys run a loop without per-key checks, the boundary
// ones (last valid tile, causal diagonal, any tile under a padding mask) a loop masking per key; causal
// bottom-right with tiles above the diagonal skipped; GQA (query head h reads kv head h / group; packed
// rows take Q by cp.async instead of TMA, load_packed_q); Dv != D and any
// head dim up to kD (TMA zero-fills the columns past D, Dv and the rows past Lq, Lk); deterministic.
//
// Split-KV: when the (row tile, head, batch) grid fills less than half the GPU (short query sides such
// as 77 text tokens, decoding), each CTA takes one of `n_split` slices of the key tiles and writes its
// unnormalised O with the row max and sum (SplitPartials); split_combine_kernel then merges the slices
// in a fixed order (deterministic) into O and the log-sum-exp, with the single-pass rules (zeros for
// rows with no valid key, NaN propagates). num_splits() is the heuristic.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/device/cute.h"
#include "common/device/warp_mma.h"
#include "common/numerics.h"
#include "cross_attention/cuda/attention_common.cuh"
#include "cross_attention/cuda/flash_entry.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace flash_sm90 {

using namespace cute;

constexpr int kConsumers = 2, kThreads = 128 * (1 + kConsumers);  // kBM: flash_entry.h
constexpr int kProducerRegs = 32, kConsumerRegs = 240;  // 128 x 32 + 256 x 240 = 64K registers
template <class T_, int kD_>
struct Fwd {
  using T = T_;
  static constexpr int kD = kD_;
  static constexpr int kBN = key_tile(kD);  // S (64 x kBN) and O (64 x kD) per warpgroup
  static constexpr int kStages = 2;
  // Q grows along D first, so each consumer warpgroup's 64 rows are one contiguous slab (its epilogue
  // stages O there once its last S is done, without touching the other warpgroup's rows).
  using SmemQ = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<T>{}, Shape<Int<kBM>, Int<kD>>{}, Step<_2, _1>{}));
  using SmemK = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<T>{}, Shape<Int<kBN>, Int<kD>, Int<kStages>>{}));
  // V as the B operand of O = P V: (Dv, keys), contiguous along Dv (MN-major), K atoms next to each other.
  using SmemV = decltype(tile_to_shape(GMMA::Layout_MN_SW128_Atom<T>{}, Shape<Int<kD>, Int<kBN>, Int<kStages>>{},
                                       Step<_2, _1, _3>{}));
  static constexpr int kBytesQ = kBM * kD * 2, kBytesKV = kBN * kD * 2;
  static constexpr size_t kSmem = kBytesQ + 2 * kStages * kBytesKV + (2 + 3 * kStages) * 8;
  static_assert(kSmem <= 227 * 1024, "shared memory of an H100");

  // (rows, d, heads, batch) views of q/k (d contiguous) and (dv, keys, heads, batch) of v.
  static auto gmem_q(const void* p, int64_t L, int64_t D, int64_t H, int64_t B, int64_t sl, int64_t sh, int64_t sb) {
    return make_tensor(make_gmem_ptr(static_cast<const T*>(p)), make_shape(int(L), int(D), int(H), int(B)),
                       make_stride(sl, Int<1>{}, sh, sb));
  }
  static auto gmem_v(const void* p, int64_t L, int64_t Dv, int64_t H, int64_t B, int64_t sl, int64_t sh, int64_t sb) {
    return make_tensor(make_gmem_ptr(static_cast<const T*>(p)), make_shape(int(Dv), int(L), int(H), int(B)),
                       make_stride(Int<1>{}, sl, sh, sb));
  }
  static auto tma_q(const CrossAttentionParams& p, std::string* e) {
    return dev::make_tma_load(gmem_q(p.q, p.Lq, p.D, p.H, p.B, p.q_stride_l, p.q_stride_h, p.q_stride_b), SmemQ{},
                              Shape<Int<kBM>, Int<kD>>{}, e);
  }
  static auto tma_k(const CrossAttentionParams& p, std::string* e) {
    return dev::make_tma_load(gmem_q(p.k, p.Lk, p.D, p.Hkv, p.B, p.k_stride_l, p.k_stride_h, p.k_stride_b),
                              SmemK{}(_, _, 0), Shape<Int<kBN>, Int<kD>>{}, e);
  }
  static auto tma_v(const CrossAttentionParams& p, std::string* e) {
    return dev::make_tma_load(gmem_v(p.v, p.Lk, p.Dv, p.Hkv, p.B, p.v_stride_l, p.v_stride_h, p.v_stride_b),
                              SmemV{}(_, _, 0), Shape<Int<kD>, Int<kBN>>{}, e);
  }
  using TmaQ = decltype(tma_q(CrossAttentionParams{}, nullptr));
  using TmaK = decltype(tma_k(CrossAttentionParams{}, nullptr));
  using TmaV = decltype(tma_v(CrossAttentionParams{}, nullptr));
  struct Params {
    TmaQ tma_q;
    TmaK tma_k;
    TmaV tma_v;
    CrossAttentionParams p;
    SplitPartials split;
    int hp = 1;  // query heads per CTA (GQA packing, heads_per_cta)
  };
  static MMK_HOST_DEVICE auto mma_qk() {
    return make_tiled_mma(dev::gmma_ss<T, Shape<_64, Int<kBN>, _16>, GMMA::Major::K, GMMA::Major::K>());
  }
  static MMK_HOST_DEVICE auto mma_pv() { return make_tiled_mma(dev::gmma_rs<T, Shape<_64, Int<kD>, _16>, GMMA::Major::MN>()); }
};

// What a CTA works on: its 128 packed rows of the hp query heads [h0, h0 + hp) of one batch (hp = 1:
// rows of one head; GQA packing, heads_per_cta: packed row r is query row r / hp of head h0 + r % hp)
// and, of the key tiles holding valid keys of its batch up to the causal diagonal of its last row, its
// split's share [t0, t1). Each role computes it after setmaxnreg: a value live across setmaxnreg would
// be spilled. Packed rows fit 32 bits (heads_per_cta).
struct CtaWork {
  int m_blk = 0, hp = 1, h0 = 0, b = 0, split = 0, n_valid = 0, t0 = 0, t1 = 0, m0 = 0, rows = 0;
  MMK_DEVICE bool any_tile() const { return t1 > t0; }
  MMK_DEVICE int query(int r) const { return r / hp; }    // packed row -> query row
  MMK_DEVICE int head(int r) const { return h0 + r % hp; }  // packed row -> query head
};
template <int kBN>
MMK_DEVICE CtaWork cta_work(const CrossAttentionParams& p, int n_split, int hp) {
  CtaWork c;
  c.m_blk = static_cast<int>(dev::block_idx().x);
  c.hp = hp;
  c.h0 = static_cast<int>(dev::block_idx().y) * hp;
  c.b = static_cast<int>(dev::block_idx().z) / n_split;
  c.split = static_cast<int>(dev::block_idx().z) % n_split;
  c.m0 = c.m_blk * kBM;
  c.rows = hp * static_cast<int>(p.Lq);
  c.n_valid = static_cast<int>(valid_keys(p, c.b));
  const int last = c.query(dev::min(c.m0 + kBM, c.rows) - 1);  // the tile's last query row sees the most keys
  const int end = dev::min(c.n_valid, static_cast<int>(causal_end(p, c.b, last)));
  const int n_tiles = end > 0 ? dev::ceil_div(end, kBN) : 0, per_split = dev::ceil_div(n_tiles, n_split);
  c.t0 = dev::min(n_tiles, c.split * per_split);
  c.t1 = dev::min(n_tiles, c.t0 + per_split);
  return c;
}

// Shared memory: Q, the K and V rings, then the mbarriers (Q loaded; K, V of a stage loaded; a stage
// released by both consumers; the V tile holding the last valid key landed, before its tail is zeroed).
template <class F>
struct Smem {
  dev::SmemPtr<uint8_t> base;
  uint64_t *bar_q, *full_k, *full_v, *empty, *tail_v;
  MMK_DEVICE Smem() : base(dev::dynamic_smem<uint8_t>()) {
    bar_q = (base + F::kBytesQ + 2 * F::kStages * F::kBytesKV).template cast<uint64_t>().get();
    full_k = bar_q + 1;
    full_v = full_k + F::kStages;
    empty = full_v + F::kStages;
    tail_v = empty + F::kStages;
  }
  MMK_DEVICE auto q() const { return make_tensor(dev::smem_iter(base.template cast<typename F::T>()), typename F::SmemQ{}); }
  MMK_DEVICE auto k() const {
    return make_tensor(dev::smem_iter((base + F::kBytesQ).template cast<typename F::T>()), typename F::SmemK{});
  }
  MMK_DEVICE auto v() const {
    return make_tensor(dev::smem_iter((base + F::kBytesQ + F::kStages * F::kBytesKV).template cast<typename F::T>()),
                       typename F::SmemV{});
  }
};

// Packed Q (GQA packing): warps 1-3 of the producer gather the CTA's rows in 16-byte pieces with
// cp.async (a TMA box cannot take rows that interleave heads), zero-filled past D and past the group's
// rows, into Q's swizzled layout; each thread makes its writes visible to wgmma (async proxy) before
// it arrives on bar_q (kQLoaders arrivals).
constexpr int kQLoaders = 96;
template <class F>
MMK_DEVICE void load_packed_q(const CrossAttentionParams& p, const CtaWork& c, const Smem<F>& sm, int t) {
  using T = typename F::T;
  constexpr int kPieces = F::kD / 8;
  Tensor sQ = sm.q();
  const T* q = static_cast<const T*>(p.q) + int64_t(c.b) * p.q_stride_b;
  for (int i = t; i < kBM * kPieces; i += kQLoaders) {
    const int r = i / kPieces, col = (i % kPieces) * 8, pr = c.m0 + r;
    const bool in = pr < c.rows && col < p.D;
    const T* src = in ? q + int64_t(c.query(pr)) * p.q_stride_l + int64_t(c.head(pr)) * p.q_stride_h + col : q;
    dev::cp_async<16>(dev::smem_ptr_of(sQ(r, col)), src, in ? 2 * dev::min(8, static_cast<int>(p.D) - col) : 0);
  }
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
  dev::fence_proxy_async();
  dev::mbarrier_arrive(sm.bar_q);
}

// The CTA's V tile that holds the last valid key and keys past it (never read: params.h), if any; the
// TMA brings in whole tiles.
template <int kBN>
MMK_DEVICE bool has_tail(const CtaWork& c) {
  return c.any_tile() && c.t1 * kBN > c.n_valid;
}

// Producer warp 1: once the tail V tile has landed (on tail_v instead of its stage's full_v), zero its
// keys from n_valid on, then complete the stage's full_v for the consumers. A zero-weighted key's V
// would still reach O as 0 * V: NaN for NaN or inf there (a preallocated KV cache past kv_lengths).
template <class F>
MMK_DEVICE void zero_tail_v(const CtaWork& c, const Smem<F>& sm) {
  constexpr int kBN = F::kBN;
  const int j = c.t1 - 1, stage = (j - c.t0) % F::kStages, first = c.n_valid - j * kBN, lane = dev::lane_id();
  dev::mbarrier_wait(sm.tail_v, 0);
  Tensor sV = sm.v();
  for (int e = lane; e < (kBN - first) * F::kD; e += 32)
    sV(e % F::kD, first + e / F::kD, stage) = typename F::T(0.f);
  dev::fence_proxy_async();  // the generic writes, visible to the wgmma
  dev::sync_warp(dev::kFullMask);
  if (lane == 0) dev::mbarrier_arrive(sm.full_v + stage);
}

// The producer: one elected thread loads Q once (or warps 1-3 gather packed Q), then K_j and V_j into
// the ring as stages free up; warp 1 zeroes the tail of the last V tile (zero_tail_v).
template <class F>
MMK_DEVICE void produce(const typename F::Params& prm, const Smem<F>& sm) {
  constexpr int kD = F::kD, kBN = F::kBN, kStages = F::kStages;
  const CrossAttentionParams& p = prm.p;
  const CtaWork c = cta_work<kBN>(p, prm.split.n_split, prm.hp);
  if (!c.any_tile()) return;
  if (c.hp > 1 && dev::warp_id() > 0) load_packed_q<F>(p, c, sm, dev::thread_rank() - 32);
  if (dev::warp_id() == 1 && has_tail<kBN>(c)) zero_tail_v<F>(c, sm);
  if (dev::warp_id() != 0 || !dev::elect_one_sync()) return;
  const int hk = c.h0 / static_cast<int>(gqa_group(p));
  Tensor sQ = sm.q();
  Tensor sK = sm.k();
  Tensor sV = sm.v();
  if (c.hp == 1) {
    Tensor gQ = local_tile(prm.tma_q.get_tma_tensor(make_shape(int(p.Lq), int(p.D), int(p.H), int(p.B)))(_, _, c.h0, c.b),
                           Shape<Int<kBM>, Int<kD>>{}, make_coord(c.m_blk, 0));
    auto tQ = tma_partition(prm.tma_q, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
    dev::mbarrier_arrive_expect_tx(sm.bar_q, F::kBytesQ);
    dev::copy(prm.tma_q.with(*sm.bar_q), get<0>(tQ), get<1>(tQ));
  }
  Tensor mK = prm.tma_k.get_tma_tensor(make_shape(int(p.Lk), int(p.D), int(p.Hkv), int(p.B)))(_, _, hk, c.b);
  Tensor mV = prm.tma_v.get_tma_tensor(make_shape(int(p.Dv), int(p.Lk), int(p.Hkv), int(p.B)))(_, _, hk, c.b);
  int stage = 0, phase = 0;
  for (int j = c.t0; j < c.t1; ++j) {
    dev::mbarrier_wait(sm.empty + stage, phase ^ 1);  // both consumers are done with it (first round: free)
    Tensor gK = local_tile(mK, Shape<Int<kBN>, Int<kD>>{}, make_coord(j, 0));
    Tensor gV = local_tile(mV, Shape<Int<kD>, Int<kBN>>{}, make_coord(0, j));
    auto tK = tma_partition(prm.tma_k, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sK(_, _, stage)), group_modes<0, 2>(gK));
    auto tV = tma_partition(prm.tma_v, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sV(_, _, stage)), group_modes<0, 2>(gV));
    dev::mbarrier_arrive_expect_tx(sm.full_k + stage, F::kBytesKV);
    dev::copy(prm.tma_k.with(*(sm.full_k + stage)), get<0>(tK), get<1>(tK));
    uint64_t* v_bar = (j == c.t1 - 1 && has_tail<kBN>(c)) ? sm.tail_v : sm.full_v + stage;  // zero_tail_v
    dev::mbarrier_arrive_expect_tx(v_bar, F::kBytesKV);
    dev::copy(prm.tma_v.with(*v_bar), get<0>(tV), get<1>(tV));
    if (++stage == kStages) stage = 0, phase ^= 1;
  }
}

// Named barriers: 1, 2 each consumer warpgroup's epilogue; kTurn + w "warpgroup w may issue its GEMMs".
constexpr int kEpilogueBarrier = 1, kTurn = 3;

// A consumer warpgroup: rows [64 w, 64 w + 64) of the CTA's tile.
template <class F>
MMK_DEVICE void consume(const typename F::Params& prm, const Smem<F>& sm, int w, int ct) {
  using T = typename F::T;
  constexpr int kD = F::kD, kBN = F::kBN, kStages = F::kStages;
  const CrossAttentionParams& p = prm.p;
  const CtaWork c = cta_work<kBN>(p, prm.split.n_split, prm.hp);
  Tensor sQw = local_tile(sm.q(), Shape<_64, Int<kD>>{}, make_coord(w, 0));
  auto mma_qk = F::mma_qk();
  auto mma_pv = F::mma_pv();
  ThrMMA thr_qk = mma_qk.get_thread_slice(ct);
  ThrMMA thr_pv = mma_pv.get_thread_slice(ct);
  Tensor tSrQ = thr_qk.make_fragment_A(thr_qk.partition_A(sQw));
  Tensor tSrK = thr_qk.make_fragment_B(thr_qk.partition_B(sm.k()));  // (MMA, N, K, stage)
  Tensor tOrV = thr_pv.make_fragment_B(thr_pv.partition_B(sm.v()));
  Tensor cS = thr_qk.partition_C(make_identity_tensor(Shape<_64, Int<kBN>>{}));  // (row, key) of each S value
  Tensor cO = thr_pv.partition_C(make_identity_tensor(Shape<_64, Int<kD>>{}));
  Tensor acc_s = thr_qk.partition_fragment_C(make_identity_tensor(Shape<_64, Int<kBN>>{}));
  Tensor acc_o = thr_pv.partition_fragment_C(make_identity_tensor(Shape<_64, Int<kD>>{}));
  // P in registers as the PV wgmma's A operand: the S accumulator's fragment layout is the A fragment's
  // (16 keys per k block), so value i of S becomes value i of P. Compact, in that order.
  Tensor tOrP = make_tensor<T>(shape(thr_pv.partition_A(make_identity_tensor(Shape<_64, Int<kBN>>{}))));
  static_assert(decltype(size(acc_s))::value == decltype(size(tOrP))::value, "P takes S's registers");
  constexpr int kSVals = decltype(size(acc_s))::value, kOVals = decltype(size(acc_o))::value;

  // This thread's two (packed) rows (its values alternate between them in pairs) and their visible keys.
  const int rows[2] = {c.m0 + 64 * w + get<0>(cS(0)), c.m0 + 64 * w + get<0>(cS(2))};
  const int row_end[2] = {dev::min(c.n_valid, static_cast<int>(causal_end(p, c.b, c.query(rows[0])))),
                          dev::min(c.n_valid, static_cast<int>(causal_end(p, c.b, c.query(rows[1]))))};
  // Key tiles [t0, t_in) lie wholly inside the visible keys of every row of this warpgroup (its first
  // row sees the fewest under causal) and no padding mask applies: they run without per-key checks.
  // The bound is the same for the whole warpgroup, as its wgmma needs.
  const int wg_end = p.key_padding_mask ? 0 : dev::min(c.n_valid, static_cast<int>(causal_end(p, c.b, c.query(c.m0 + 64 * w))));
  const int t_in = dev::max(c.t0, dev::min(c.t1, wg_end / kBN));
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  bool had_key[2] = {false, false};
  MMK_UNROLL
  for (int i = 0; i < kOVals; ++i) acc_o(i) = 0.f;

  // Ping-pong (FlashAttention-3): the two warpgroups take turns issuing their GEMMs, so one's softmax
  // runs while the other's run on the tensor cores. Warpgroup 0 goes first; each passes the turn after
  // issuing, and warpgroup 1 skips its last pass (nobody waits for it), so every barrier completes.
  const auto my_turn = [&] { dev::named_barrier_sync(kTurn + w, 256); };
  const auto pass_turn = [&] { dev::named_barrier_arrive(kTurn + (1 - w), 256); };
  if (c.any_tile()) {
    dev::mbarrier_wait(sm.bar_q, 0);
    if (w == 1) pass_turn();
  }
  int stage = 0, phase = 0;
  // One key tile; kChecked: the per-key rules (lengths, causal, padding mask) in registers.
  const auto tile = [&](int j, auto checked) {
    constexpr bool kChecked = decltype(checked)::value;
    // S = Q K_j^T
    dev::mbarrier_wait(sm.full_k + stage, phase);
    my_turn();
    mma_qk.accumulate_ = GMMA::ScaleOut::Zero;
    dev::warpgroup_fence_operand(acc_s);
    dev::warpgroup_arrive();
    MMK_UNROLL
    for (int kb = 0; kb < size<2>(tSrQ); ++kb) {
      dev::gemm(mma_qk, tSrQ(_, _, kb), tSrK(_, _, kb, stage), acc_s);
      mma_qk.accumulate_ = GMMA::ScaleOut::One;
    }
    dev::warpgroup_commit_batch();
    pass_turn();
    dev::warpgroup_wait<0>();
    dev::warpgroup_fence_operand(acc_s);
    // Online softmax in the log2 domain.
    float mx[2] = {-INFINITY, -INFINITY};
    MMK_UNROLL
    for (int i = 0; i < kSVals; ++i) {
      const int r = (i >> 1) & 1;  // value i's row: pairs alternate rows
      float x = dev::mul_rn(float(acc_s(i)), scale_log2);
      if constexpr (kChecked) {
        const int key = j * kBN + get<1>(cS(i));
        const bool counts = key < row_end[r] && key_ok(p, c.b, key);
        had_key[r] = had_key[r] || counts;
        x = counts ? x : -INFINITY;
      }
      acc_s(i) = x;
      mx[r] = max_nan(mx[r], x);
    }
    if constexpr (!kChecked) had_key[0] = had_key[1] = true;
    float alpha[2];
    MMK_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float m_new = max_nan(m[r], dev::quad_max(mx[r]));
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row with no valid key yet stays at 0
      alpha[r] = dev::exp2_fast(m[r] - m_use);
      m[r] = m_new;
      mx[r] = m_use;
    }
    float part[2] = {0.f, 0.f};
    MMK_UNROLL
    for (int i = 0; i < kSVals; ++i) {
      const float e = dev::exp2_fast(float(acc_s(i)) - mx[(i >> 1) & 1]);
      part[(i >> 1) & 1] += e;
      tOrP(i) = T(e);
    }
    MMK_UNROLL
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + part[r];
    MMK_UNROLL
    for (int i = 0; i < kOVals; ++i) acc_o(i) = float(acc_o(i)) * alpha[(i >> 1) & 1];
    // O += P V_j
    dev::mbarrier_wait(sm.full_v + stage, phase);
    my_turn();
    dev::warpgroup_fence_operand(acc_o);
    dev::warpgroup_arrive();
    MMK_UNROLL
    for (int kb = 0; kb < size<2>(tOrP); ++kb) dev::gemm(mma_pv, tOrP(_, _, kb), tOrV(_, _, kb, stage), acc_o);
    dev::warpgroup_commit_batch();
    if (w == 0 || j + 1 < c.t1) pass_turn();
    dev::warpgroup_wait<0>();
    dev::warpgroup_fence_operand(acc_o);
    if (ct == 0) dev::mbarrier_arrive(sm.empty + stage);  // this warpgroup is done with K_j and V_j
    if (++stage == kStages) stage = 0, phase ^= 1;
  };
  for (int j = c.t0; j < t_in; ++j) tile(j, std::false_type{});
  for (int j = t_in; j < c.t1; ++j) tile(j, std::true_type{});

  float l_sum[2], had[2];  // the row's sum and whether it saw a counting key, over its quad
  MMK_UNROLL
  for (int r = 0; r < 2; ++r) {
    l_sum[r] = dev::quad_sum(l[r]);
    had[r] = dev::quad_max(had_key[r] ? 1.f : 0.f);
  }
  if (prm.split.n_split > 1) {  // this slice's unnormalised O and row statistics, for split_combine_kernel
    const SplitPartials& sp = prm.split;
    MMK_UNROLL
    for (int i = 0; i < kOVals; i += 2) {  // values i, i + 1: adjacent columns of one row
      const int row = rows[(i >> 1) & 1];
      if (row < c.rows) {
        float* dst = sp.o + sp.row(c.b, c.split, c.head(row), c.query(row), p.H, p.Lq) * kD + get<1>(cO(i));
        dst[0] = float(acc_o(i));
        dst[1] = float(acc_o(i + 1));
      }
    }
    if (get<1>(cS(0)) == 0) {  // one thread of each quad
      MMK_UNROLL
      for (int r = 0; r < 2; ++r) {
        if (rows[r] >= c.rows) continue;
        float* st = sp.stats + 3 * sp.row(c.b, c.split, c.head(rows[r]), c.query(rows[r]), p.H, p.Lq);
        st[0] = m[r];
        st[1] = l_sum[r];
        st[2] = had[r];
      }
    }
    return;
  }
  // Epilogue: O / l staged in this warpgroup's Q rows (row-major; its last S is done), then 16-byte
  // pieces of output rows; the log-sum-exp in float64.
  float inv[2], l_tot[2];
  MMK_UNROLL
  for (int r = 0; r < 2; ++r) {
    l_tot[r] = final_row_sum(l_sum[r], had[r] > 0.f);
    inv[r] = inverse_row_sum(l_tot[r]);  // zeros for a row with no valid key, NaN stays NaN
  }
  dev::SmemPtr<T> stage_o = (sm.base + w * 64 * kD * 2).template cast<T>();
  MMK_UNROLL
  for (int i = 0; i < kOVals; ++i)
    stage_o[get<0>(cO(i)) * kD + get<1>(cO(i))] = T(float(acc_o(i)) * inv[(i >> 1) & 1]);
  dev::named_barrier_sync(kEpilogueBarrier + w, 128);  // this warpgroup's staged rows are complete
  T* out = static_cast<T*>(p.out) + int64_t(c.b) * p.o_stride_b;
  constexpr int kPieces = kD / 8;
  for (int q = ct; q < 64 * kPieces; q += 128) {
    const int r = q / kPieces, col = (q % kPieces) * 8, row = c.m0 + 64 * w + r;
    if (row >= c.rows || col >= p.Dv) continue;
    T* dst = out + int64_t(c.query(row)) * p.o_stride_l + int64_t(c.head(row)) * p.o_stride_h + col;
    if (col + 8 <= p.Dv && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
      dev::store16(dst, (stage_o + r * kD + col).template cast<dev::U32x4>()[0]);
    } else {
      for (int e = 0; e < 8 && col + e < p.Dv; ++e) dst[e] = stage_o[r * kD + col + e];
    }
  }
  if (get<1>(cS(0)) == 0) {  // one thread of each quad writes its rows' log-sum-exp
    MMK_UNROLL
    for (int r = 0; r < 2; ++r)
      if (rows[r] < c.rows)
        static_cast<double*>(p.lse)[(int64_t(c.b) * p.H + c.head(rows[r])) * p.Lq + c.query(rows[r])] = row_lse(m[r], l_tot[r]);
  }
}

template <class F>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads, 1) flash_sm90_fwd_kernel(MMK_GRID_CONSTANT const typename F::Params prm) {
  if constexpr (!dev::kHopperCode<F>) {
    return;
  } else {
    const Smem<F> sm;
    const int tid = dev::thread_rank();
    if (tid == 0) {
      dev::mbarrier_init(sm.bar_q, prm.hp > 1 ? kQLoaders : 1);
      for (int s = 0; s < F::kStages; ++s) {
        dev::mbarrier_init(sm.full_k + s, 1);
        dev::mbarrier_init(sm.full_v + s, 1);
        dev::mbarrier_init(sm.empty + s, kConsumers);
      }
      dev::mbarrier_init(sm.tail_v, 1);
      dev::fence_barrier_init();
    }
    dev::sync_threads();
    if (tid < 128) {  // warpgroup 0: the producer
      dev::setmaxnreg_dec<kProducerRegs>();
      produce<F>(prm, sm);
    } else {
      dev::setmaxnreg_inc<kConsumerRegs>();
      consume<F>(prm, sm, tid / 128 - 1, tid % 128);
    }
  }
}

// Merges each row's slices (the kernel's SplitPartials) in slice order, one thread per 8 columns of a
// row: the single-pass result up to float rounding, with its rules (zeros without a valid key, NaN).
template <class T>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(256, 1) split_combine_kernel(const CrossAttentionParams p, const SplitPartials sp,
                                                                int kD) {
  const int64_t pieces = dev::ceil_div<int64_t>(p.Dv, 8);
  const int64_t t = int64_t(dev::block_idx().x) * dev::block_dim().x + dev::thread_idx().x;
  if (t >= p.B * p.H * p.Lq * pieces) return;
  const int64_t r = t / pieces, i = r % p.Lq, h = (r / p.Lq) % p.H, b = r / (p.Lq * p.H);
  const int c0 = static_cast<int>(t % pieces) * 8, nc = static_cast<int>(dev::min<int64_t>(8, p.Dv - c0));
  float m = -INFINITY;
  bool had = false;
  for (int s = 0; s < sp.n_split; ++s) {
    const float* st = sp.stats + 3 * sp.row(b, s, h, i, p.H, p.Lq);
    m = max_nan(m, st[0]);
    had = had || st[2] > 0.f;
  }
  const float m_use = m == -INFINITY ? 0.f : m;
  float l = 0.f, acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int s = 0; s < sp.n_split; ++s) {
    const int64_t row = sp.row(b, s, h, i, p.H, p.Lq);
    const float wgt = dev::exp2_fast(sp.stats[3 * row] - m_use);  // 0 for a slice without a finite score
    l += sp.stats[3 * row + 1] * wgt;
    const float* o = sp.o + row * kD + c0;
    MMK_UNROLL
    for (int e = 0; e < 8; ++e)  // unrolled with a predicate: acc stays in registers
      if (e < nc) acc[e] += o[e] * wgt;
  }
  l = final_row_sum(l, had);
  const float inv = inverse_row_sum(l);
  T* out = static_cast<T*>(p.out) + b * p.o_stride_b + i * p.o_stride_l + h * p.o_stride_h + c0;
  MMK_UNROLL
  for (int e = 0; e < 8; ++e)
    if (e < nc) out[e] = dev::from_float<T>(acc[e] * inv);
  if (c0 == 0) static_cast<double*>(p.lse)[(b * p.H + h) * p.Lq + i] = row_lse(m, l);
}

template <class DevT, int kD>
dev::Error forward(const CrossAttentionParams& p_in, void* workspace, dev::Stream stream) {
  using CuteT = std::conditional_t<std::is_same_v<DevT, dev::bf16>, cute::bfloat16_t, cute::half_t>;
  using F = Fwd<CuteT, kD>;
  if (dev::Error e = dev::set_max_dynamic_smem(flash_sm90_fwd_kernel<F>, static_cast<int>(F::kSmem)); e != dev::kSuccess)
    return e;
  SplitPartials split;
  split.n_split = num_splits(p_in, kD, dev::multiprocessor_count());
  if (split.n_split > 1) {
    if (workspace == nullptr)
      return dev::report_error(dev::kErrorInvalidValue, "the split-KV forward needs its workspace (workspace_bytes)");
    split.o = static_cast<float*>(workspace);
    split.stats = split.o + p_in.B * split.n_split * p_in.H * p_in.Lq * kD;
  }
  const int hp = heads_per_cta(p_in);
  const int64_t m_blocks = row_tiles(p_in, hp), max_batches = kMaxGridYZ / split.n_split;
  if (m_blocks > 2147483647 || p_in.H / hp > kMaxGridYZ) return dev::kErrorInvalidConfiguration;
  for (BatchSlices s(p_in, max_batches); s; ++s) {
    typename F::Params prm{};
    prm.p = *s;
    prm.split = split;
    prm.hp = hp;
    if (split.n_split > 1) {  // the slice's batches start at s.first()
      prm.split.o += s.first() * split.n_split * p_in.H * p_in.Lq * kD;
      prm.split.stats += 3 * s.first() * split.n_split * p_in.H * p_in.Lq;
    }
    std::string e;
    prm.tma_q = F::tma_q(prm.p, &e);
    if (e.empty()) prm.tma_k = F::tma_k(prm.p, &e);
    if (e.empty()) prm.tma_v = F::tma_v(prm.p, &e);
    if (!e.empty()) return dev::report_error(dev::kErrorInvalidValue, e);
    const dev::Dim3 grid{static_cast<uint32_t>(m_blocks), static_cast<uint32_t>(p_in.H / hp),
                         static_cast<uint32_t>(prm.p.B * split.n_split)};
    if (const dev::Error err = MMK_LAUNCH((flash_sm90_fwd_kernel<F>), grid, (dev::Dim3{kThreads, 1, 1}), F::kSmem, stream, prm);
        err != dev::kSuccess)
      return err;
  }
  if (split.n_split == 1) return dev::kSuccess;
  const int64_t threads = p_in.B * p_in.H * p_in.Lq * dev::ceil_div<int64_t>(p_in.Dv, 8);
  const int64_t blocks = dev::ceil_div<int64_t>(threads, 256);
  if (blocks > 2147483647) return dev::kErrorInvalidConfiguration;
  return MMK_LAUNCH((split_combine_kernel<DevT>), (dev::Dim3{static_cast<uint32_t>(blocks), 1, 1}),
                    (dev::Dim3{256, 1, 1}), 0, stream, p_in, split, kD);
}

}  // namespace flash_sm90
MMK_BACKEND_END
}  // namespace mmkernels::cuda
