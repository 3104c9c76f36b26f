// cross_attention backward on Hopper (sm_90a) for 16-bit inputs, on CUTLASS/CuTe: dK, dV and dQ in one
// kernel by TMA + wgmma, warp-specialized, P recomputed once per tile pair (FlashAttention-3's structure
// and its deterministic dQ, our own code). D_i = rowsum(dO * O) comes from the mma.sync kernels' pre-pass
// (flash_kernels.cuh).
//
// A CTA owns kBN = 128 keys of one (batch, kv head) and keeps their dK, dV in registers: warpgroup 0 is
// the producer (setmaxnreg down), warpgroups 1 and 2 consume 64 keys each. The producer's elected thread
// loads K and V once, then each step's Q and dO tiles (kBM query rows of one query head of the group:
// GQA sums the group's heads in a fixed order) into a kStages-deep ring through TMA; warps 1-2 of the
// producer write the step's row statistics next to them (the saved log-sum-exp in the exp2 domain as
// float hi + lo, and D_i; rows past Lq empty), arriving on the same mbarrier. Per step a consumer
// computes, for its 64 keys,
//   S^T  = K Q^T           wgmma, both in shared memory (K-major)
//   dP^T = V dO^T          wgmma, both in shared memory (K-major), issued right behind S^T
//   P^T  = exp2(s * scale * log2 e - lse2) where the key counts for the row (lengths, padding mask,
//          causal), else 0: the forward's rounding of the score (dev::mul_rn), as the mma.sync kernels;
//          kept in float32 for dS, rounded once for dV
//   dV  += P^T dO          wgmma, P^T from registers (S^T's accumulator fragment is the A fragment),
//                          dO in shared memory viewed transposed (MN-major)
//   dS^T = P^T (dP^T - D_i),  dK += dS^T Q  (wgmma likewise; the scale is applied once at the end)
//   dQ_i += dS K_j         dS^T stored transposed in shared memory by both consumers, then a wgmma per
//                          consumer for its half of the head dim (below 128: one consumer per step, by
//                          turns), added into a float32 workspace in key-tile order: the CTA of key tile
//                          j waits for tile j - 1's flag for that (head, query tile, half) and raises it
//                          to j + 1 after its adds (FlashAttention-3's deterministic mode): no atomics,
//                          bitwise the same every run. convert_dq_kernel scales and rounds it at the end.
// then releases the stage. Query tiles above the key tile's causal diagonal are skipped; keys past the
// valid ones are zeroed in shared memory before any wgmma (never read, params.h) and keep the glue's
// zero gradient.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cross_attention/cuda/flash_sm90.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace flash_sm90 {

// kD: the head dim of the tiles (>= D, Dv); kBM query rows per step.
template <class T_, int kD_>
struct Bwd {
  using T = T_;
  static constexpr int kD = kD_;
  static constexpr int kBN = 128, kBM = kBwdBM, kStages = 2;
  // K and V (keys, d), the A operands of S^T and dP^T; each consumer takes its 64-key slab.
  using SmemKV = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<T>{}, Shape<Int<kBN>, Int<kD>>{}));
  // Q and dO per stage (rows, d): the B operands of S^T and dP^T (K-major), and, the same bytes viewed as
  // (d, rows), of dK and dV (MN-major).
  using SmemQ = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<T>{}, Shape<Int<kBM>, Int<kD>, Int<kStages>>{}));
  using SmemQt = decltype(composition(SmemQ{}, make_layout(Shape<Int<kD>, Int<kBM>, Int<kStages>>{},
                                                           Stride<Int<kBM>, _1, Int<kBM * kD>>{})));
  // K viewed as (d, keys): the B operand of dQ = dS K (MN-major).
  using SmemKt = decltype(composition(SmemKV{}, make_layout(Shape<Int<kD>, Int<kBN>>{}, Stride<Int<kBN>, _1>{})));
  // dS (rows, keys), rows contiguous: the A operand of dQ (MN-major), written from dS^T's registers.
  // Not swizzled: each thread's element offsets are then constants from one base (a swizzled layout
  // made ptxas keep 32 addresses live across the loop, and spill), and a warp's stores still fill
  // 128 contiguous bytes (8 keys x 16 bytes of rows), free of bank conflicts.
  using SmemdS = decltype(tile_to_shape(GMMA::Layout_MN_INTER_Atom<T>{}, Shape<Int<kBM>, Int<kBN>>{}));
  static constexpr int kDqParts = dq_parts(kD), kDqCols = kD / kDqParts;
  static constexpr int kBytesKV = kBN * kD * 2, kBytesQ = kBM * kD * 2, kBytesdS = kBM * kBN * 2;
  static constexpr int kStatFloats = 3 * kBM;  // per stage: lse2 hi, lse2 lo, D_i
  static constexpr size_t kSmem = 2 * size_t(kBytesKV) + 2 * kStages * size_t(kBytesQ) + kBytesdS +
                                  kStages * kStatFloats * 4 + (1 + 2 * kStages) * 8;
  static_assert(kSmem <= 227 * 1024, "shared memory of an H100");
  static_assert(kD <= 128, "dK and dV of 64 keys x kD in a consumer's registers");

  using G = Fwd<T, kD>;  // the (rows, d, heads, batch) views of q, k, v, dO
  static auto tma_rows(const CrossAttentionParams& p, std::string* e) {  // Q; dO likewise (tma_do)
    return dev::make_tma_load(G::gmem_q(p.q, p.Lq, p.D, p.H, p.B, p.q_stride_l, p.q_stride_h, p.q_stride_b),
                              SmemQ{}(_, _, 0), Shape<Int<kBM>, Int<kD>>{}, e);
  }
  static auto tma_do(const CrossAttentionParams& p, std::string* e) {
    return dev::make_tma_load(
        G::gmem_q(p.grad_out, p.Lq, p.Dv, p.H, p.B, p.do_stride_l, p.do_stride_h, p.do_stride_b), SmemQ{}(_, _, 0),
        Shape<Int<kBM>, Int<kD>>{}, e);
  }
  static auto tma_k(const CrossAttentionParams& p, std::string* e) {
    return dev::make_tma_load(G::gmem_q(p.k, p.Lk, p.D, p.Hkv, p.B, p.k_stride_l, p.k_stride_h, p.k_stride_b),
                              SmemKV{}, Shape<Int<kBN>, Int<kD>>{}, e);
  }
  static auto tma_v(const CrossAttentionParams& p, std::string* e) {  // V as (keys, dv), d contiguous
    return dev::make_tma_load(G::gmem_q(p.v, p.Lk, p.Dv, p.Hkv, p.B, p.v_stride_l, p.v_stride_h, p.v_stride_b),
                              SmemKV{}, Shape<Int<kBN>, Int<kD>>{}, e);
  }
  using TmaRows = decltype(tma_rows(CrossAttentionParams{}, nullptr));
  using TmaKV = decltype(tma_k(CrossAttentionParams{}, nullptr));
  struct Params {
    TmaRows tma_q, tma_do;
    TmaKV tma_k, tma_v;
    CrossAttentionParams p;
    const float* Di = nullptr;
    DqAccum dq;
  };
  static MMK_HOST_DEVICE auto mma_sdp() {  // S^T, dP^T: 64 keys x kBM rows
    return make_tiled_mma(dev::gmma_ss<T, Shape<_64, Int<kBM>, _16>, GMMA::Major::K, GMMA::Major::K>());
  }
  static MMK_HOST_DEVICE auto mma_dkv() {  // dK, dV: 64 keys x kD, over the step's kBM rows
    return make_tiled_mma(dev::gmma_rs<T, Shape<_64, Int<kD>, _16>, GMMA::Major::MN>());
  }
  static MMK_HOST_DEVICE auto mma_dq() {  // dQ: kBM rows x kDqCols, over the tile's kBN keys
    return make_tiled_mma(dev::gmma_ss<T, Shape<Int<kBM>, Int<kDqCols>, _16>, GMMA::Major::MN, GMMA::Major::MN>());
  }
};

// What a CTA works on: keys [n0, n0 + kBN) of kv head hk of batch b, and its steps: for each query head
// of the group in order, the query tiles from the first one holding a row that sees key n0 (causal).
template <int kBN, int kBM>
struct BwdWork {
  int b = 0, hk = 0, n0 = 0, n_valid = 0, diag = 0, q_first = 0, q_tiles = 0, steps = 0, group = 1;
  MMK_DEVICE explicit BwdWork(const CrossAttentionParams& p) {
    b = static_cast<int>(dev::block_idx().z);
    hk = static_cast<int>(dev::block_idx().y);
    n0 = static_cast<int>(dev::block_idx().x) * kBN;
    n_valid = static_cast<int>(valid_keys(p, b));
    group = static_cast<int>(gqa_group(p));
    diag = p.causal ? static_cast<int>(causal_offset(p, b)) : 0;  // read once (kv_lengths)
    q_first = p.causal ? dev::max(0, n0 - diag) / kBM : 0;
    q_tiles = static_cast<int>(dev::ceil_div<int64_t>(p.Lq, kBM)) - q_first;
    steps = (n0 < n_valid && q_tiles > 0) ? group * q_tiles : 0;  // none: zero gradients (the glue's)
  }
  MMK_DEVICE int head(int step) const { return hk * group + step / q_tiles; }
  MMK_DEVICE int m_blk(int step) const { return q_first + step % q_tiles; }
};

// Shared memory: K, V, the Q and dO rings, dS, the rings' row statistics, then the mbarriers (K and V
// loaded; a stage loaded, with its statistics; a stage released by every consumer warp).
template <class F>
struct BwdSmem {
  using T = typename F::T;
  dev::SmemPtr<uint8_t> base;
  dev::SmemPtr<float> stats;
  uint64_t *bar_kv, *full, *empty;
  static constexpr int kQBytes = F::kStages * F::kBytesQ;
  MMK_DEVICE BwdSmem() : base(dev::dynamic_smem<uint8_t>()) {
    stats = (base + 2 * F::kBytesKV + 2 * kQBytes + F::kBytesdS).template cast<float>();
    bar_kv = (stats + F::kStages * F::kStatFloats).template cast<uint64_t>().get();
    full = bar_kv + 1;
    empty = full + F::kStages;
  }
  MMK_DEVICE auto tile(int offset, auto layout) const {
    return make_tensor(dev::smem_iter((base + offset).template cast<T>()), layout);
  }
  MMK_DEVICE auto k() const { return tile(0, typename F::SmemKV{}); }
  MMK_DEVICE auto kt() const { return tile(0, typename F::SmemKt{}); }
  MMK_DEVICE auto ds() const { return tile(2 * F::kBytesKV + 2 * kQBytes, typename F::SmemdS{}); }
  MMK_DEVICE auto v() const { return tile(F::kBytesKV, typename F::SmemKV{}); }
  MMK_DEVICE auto q() const { return tile(2 * F::kBytesKV, typename F::SmemQ{}); }
  MMK_DEVICE auto qt() const { return tile(2 * F::kBytesKV, typename F::SmemQt{}); }
  MMK_DEVICE auto dO() const { return tile(2 * F::kBytesKV + kQBytes, typename F::SmemQ{}); }
  MMK_DEVICE auto dOt() const { return tile(2 * F::kBytesKV + kQBytes, typename F::SmemQt{}); }
  // Stage s's statistics: lse2 hi [kBM], lo [kBM], D_i [kBM].
  MMK_DEVICE dev::SmemPtr<float> stat(int s, int which) const { return stats + s * F::kStatFloats + which * F::kBM; }
};

// Named barriers of the consumers: dS in shared memory complete / free (both), dQ's adds done (each).
constexpr int kDsBarrier = 1, kDqBarrier = 2;
constexpr int kStatThreads = 64;  // producer warps 1-2 write a step's statistics, one row each
constexpr int kConsumerWarps = 4 * kConsumers;  // each releases a stage on its own

template <class F>
MMK_DEVICE void produce_bwd(const typename F::Params& prm, const BwdSmem<F>& sm) {
  constexpr int kD = F::kD, kBN = F::kBN, kBM = F::kBM, kStages = F::kStages;
  static_assert(kBM == kStatThreads, "one statistics row per producer thread of warps 1-2");
  const CrossAttentionParams& p = prm.p;
  const BwdWork<kBN, kBM> c(p);
  if (c.steps == 0) return;
  const int warp = dev::warp_id();
  if (warp == 1 || warp == 2) {  // the statistics of each step's rows
    const int i = dev::thread_rank() - 32;
    int stage = 0, phase = 0;
    for (int step = 0; step < c.steps; ++step) {
      const int64_t h = c.head(step), row = int64_t(c.m_blk(step)) * kBM + i;
      const bool in = row < p.Lq;
      const Lse lse2(in ? static_cast<const double*>(p.lse)[(c.b * p.H + h) * p.Lq + row] : -INFINITY, kLog2eD);
      const float di = in ? prm.Di[(c.b * p.H + h) * p.Lq + row] : 0.f;
      dev::mbarrier_wait(sm.empty + stage, phase ^ 1);
      sm.stat(stage, 0)[i] = lse2.hi;
      sm.stat(stage, 1)[i] = lse2.lo;
      sm.stat(stage, 2)[i] = di;
      dev::mbarrier_arrive(sm.full + stage);
      if (++stage == kStages) stage = 0, phase ^= 1;
    }
    return;
  }
  if (warp != 0 || !dev::elect_one_sync()) return;
  {
    Tensor mK = prm.tma_k.get_tma_tensor(make_shape(int(p.Lk), int(p.D), int(p.Hkv), int(p.B)))(_, _, c.hk, c.b);
    Tensor mV = prm.tma_v.get_tma_tensor(make_shape(int(p.Lk), int(p.Dv), int(p.Hkv), int(p.B)))(_, _, c.hk, c.b);
    const auto tile = make_coord(static_cast<int>(dev::block_idx().x), 0);
    auto tK = tma_partition(prm.tma_k, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sm.k()),
                            group_modes<0, 2>(local_tile(mK, Shape<Int<kBN>, Int<kD>>{}, tile)));
    auto tV = tma_partition(prm.tma_v, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sm.v()),
                            group_modes<0, 2>(local_tile(mV, Shape<Int<kBN>, Int<kD>>{}, tile)));
    dev::mbarrier_arrive_expect_tx(sm.bar_kv, 2 * F::kBytesKV);
    dev::copy(prm.tma_k.with(*sm.bar_kv), get<0>(tK), get<1>(tK));
    dev::copy(prm.tma_v.with(*sm.bar_kv), get<0>(tV), get<1>(tV));
  }
  Tensor mQ = prm.tma_q.get_tma_tensor(make_shape(int(p.Lq), int(p.D), int(p.H), int(p.B)));
  Tensor mdO = prm.tma_do.get_tma_tensor(make_shape(int(p.Lq), int(p.Dv), int(p.H), int(p.B)));
  Tensor sQ = sm.q();
  Tensor sdO = sm.dO();
  int stage = 0, phase = 0;
  for (int step = 0; step < c.steps; ++step) {
    const int h = c.head(step);
    const auto tile = make_coord(c.m_blk(step), 0);
    dev::mbarrier_wait(sm.empty + stage, phase ^ 1);  // both consumers are done with it (first round: free)
    auto tQ = tma_partition(prm.tma_q, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sQ(_, _, stage)),
                            group_modes<0, 2>(local_tile(mQ(_, _, h, c.b), Shape<Int<kBM>, Int<kD>>{}, tile)));
    auto tdO = tma_partition(prm.tma_do, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sdO(_, _, stage)),
                             group_modes<0, 2>(local_tile(mdO(_, _, h, c.b), Shape<Int<kBM>, Int<kD>>{}, tile)));
    dev::mbarrier_arrive_expect_tx(sm.full + stage, 2 * F::kBytesQ);
    dev::copy(prm.tma_q.with(*(sm.full + stage)), get<0>(tQ), get<1>(tQ));
    dev::copy(prm.tma_do.with(*(sm.full + stage)), get<0>(tdO), get<1>(tdO));
    if (++stage == kStages) stage = 0, phase ^= 1;
  }
}

// A consumer warpgroup: keys [n0 + 64 w, n0 + 64 w + 64) of the CTA's tile.
template <class F>
MMK_DEVICE void consume_bwd(const typename F::Params& prm, const BwdSmem<F>& sm, int w, int ct) {
  using T = typename F::T;
  constexpr int kD = F::kD, kBN = F::kBN, kBM = F::kBM, kStages = F::kStages;
  const CrossAttentionParams& p = prm.p;
  const BwdWork<kBN, kBM> c(p);
  auto mma_sdp = F::mma_sdp();
  auto mma_dkv = F::mma_dkv();
  ThrMMA thr_sdp = mma_sdp.get_thread_slice(ct);
  ThrMMA thr_dkv = mma_dkv.get_thread_slice(ct);
  Tensor tSrK = thr_sdp.make_fragment_A(thr_sdp.partition_A(local_tile(sm.k(), Shape<_64, Int<kD>>{}, make_coord(w, 0))));
  Tensor tSrV = thr_sdp.make_fragment_A(thr_sdp.partition_A(local_tile(sm.v(), Shape<_64, Int<kD>>{}, make_coord(w, 0))));
  Tensor tSrQ = thr_sdp.make_fragment_B(thr_sdp.partition_B(sm.q()));    // (MMA, N, K, stage)
  Tensor tSrdO = thr_sdp.make_fragment_B(thr_sdp.partition_B(sm.dO()));
  Tensor tKrQt = thr_dkv.make_fragment_B(thr_dkv.partition_B(sm.qt()));  // (MMA, N = d, K = rows, stage)
  Tensor tVrdOt = thr_dkv.make_fragment_B(thr_dkv.partition_B(sm.dOt()));
  Tensor cS = thr_sdp.partition_C(make_identity_tensor(Shape<_64, Int<kBM>>{}));  // (key, row) of each S^T value
  Tensor cK = thr_dkv.partition_C(make_identity_tensor(Shape<_64, Int<kD>>{}));
  Tensor acc_s = thr_sdp.partition_fragment_C(make_identity_tensor(Shape<_64, Int<kBM>>{}));
  Tensor acc_dp = thr_sdp.partition_fragment_C(make_identity_tensor(Shape<_64, Int<kBM>>{}));
  Tensor acc_dk = thr_dkv.partition_fragment_C(make_identity_tensor(Shape<_64, Int<kD>>{}));
  Tensor acc_dv = thr_dkv.partition_fragment_C(make_identity_tensor(Shape<_64, Int<kD>>{}));
  // P^T and dS^T in registers as the A operands: S^T's accumulator fragment is the A fragment (16 rows
  // per k block), value i for value i.
  // dQ: this consumer's part of the head dim (kDqParts 2), or the whole of it on its turns.
  constexpr int kDqCols = F::kDqCols;
  const int part = F::kDqParts == 2 ? w : 0;
  auto mma_dq = F::mma_dq();
  ThrMMA thr_dq = mma_dq.get_thread_slice(ct);
  Tensor sdS = sm.ds();
  Tensor tQrdS = thr_dq.make_fragment_A(thr_dq.partition_A(sdS));
  Tensor tQrKt = thr_dq.make_fragment_B(thr_dq.partition_B(local_tile(sm.kt(), Shape<Int<kDqCols>, Int<kBN>>{}, make_coord(part, 0))));
  Tensor cQ = thr_dq.partition_C(make_identity_tensor(Shape<Int<kBM>, Int<kDqCols>>{}));
  Tensor acc_dq = thr_dq.partition_fragment_C(make_identity_tensor(Shape<Int<kBM>, Int<kDqCols>>{}));
  constexpr int kQVals = decltype(size(acc_dq))::value;
  const int64_t q_tiles_all = bwd_q_tiles(p);
  const int key_tile = static_cast<int>(dev::block_idx().x);
  Tensor tP = make_tensor<T>(shape(thr_dkv.partition_A(make_identity_tensor(Shape<_64, Int<kBM>>{}))));
  Tensor tdS = make_tensor<T>(shape(tP));
  static_assert(decltype(size(acc_s))::value == decltype(size(tP))::value, "P^T takes S^T's registers");
  constexpr int kSVals = decltype(size(acc_s))::value, kKVals = decltype(size(acc_dk))::value;
  MMK_UNROLL
  for (int i = 0; i < kKVals; ++i) acc_dk(i) = acc_dv(i) = 0.f;

  // This thread's two keys (its values alternate between them in pairs), or INT_MAX for a key that
  // never counts (no row sees it).
  int my_key[2];
  MMK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int key = c.n0 + 64 * w + get<0>(cS(2 * r));
    my_key[r] = key_counts(p, c.b, key, c.n_valid) ? key : 0x7fffffff;
  }
  const float scale_log2 = static_cast<float>(p.scale) * kLog2e;
  if (c.steps > 0) {
    dev::mbarrier_wait(sm.bar_kv, 0);
    // Keys past the valid ones are never read (params.h): the TMA brought in whole tiles, so this
    // consumer zeroes its rows of K and V from n_valid on (garbage there, e.g. NaN in a preallocated KV
    // cache, would reach dP, dS and dQ through zero-weighted products) before any wgmma reads them.
    const int first_junk = dev::max(0, c.n_valid - c.n0 - 64 * w);
    if (first_junk < 64) {
      Tensor sK = sm.k();
      Tensor sV = sm.v();
      for (int e = ct; e < (64 - first_junk) * kD; e += 128) {
        const int r = 64 * w + first_junk + e / kD, col = e % kD;
        sK(r, col) = T(0.f);
        sV(r, col) = T(0.f);
      }
      dev::fence_proxy_async();  // the generic writes, visible to the wgmmas
    }
    dev::named_barrier_sync(kDqBarrier + w, 128);  // (the other consumer's dQ reads them after kDsBarrier)
  }
  int stage = 0, phase = 0;
  for (int step = 0; step < c.steps; ++step) {
    const int m0 = c.m_blk(step) * kBM;
    dev::mbarrier_wait(sm.full + stage, phase);
    mma_sdp.accumulate_ = GMMA::ScaleOut::Zero;
    dev::warpgroup_fence_operand(acc_s);
    dev::warpgroup_fence_operand(acc_dp);
    dev::warpgroup_arrive();
    MMK_UNROLL
    for (int kb = 0; kb < size<2>(tSrK); ++kb) {
      dev::gemm(mma_sdp, tSrK(_, _, kb), tSrQ(_, _, kb, stage), acc_s);
      mma_sdp.accumulate_ = GMMA::ScaleOut::One;
    }
    dev::warpgroup_commit_batch();
    mma_sdp.accumulate_ = GMMA::ScaleOut::Zero;
    MMK_UNROLL
    for (int kb = 0; kb < size<2>(tSrV); ++kb) {
      dev::gemm(mma_sdp, tSrV(_, _, kb), tSrdO(_, _, kb, stage), acc_dp);
      mma_sdp.accumulate_ = GMMA::ScaleOut::One;
    }
    dev::warpgroup_commit_batch();
    dev::warpgroup_wait<1>();  // S^T is in; dP^T runs on
    dev::warpgroup_fence_operand(acc_s);
    const dev::SmemPtr<const float> hi = sm.stat(stage, 0), lo = sm.stat(stage, 1), di = sm.stat(stage, 2);
    // Row m0 + col sees keys below lim + col (causal_end_at in 32 bits: keys that count are below Lk,
    // the rest are INT_MAX; without causal, lim + col stays below INT_MAX and above every key).
    const int lim = p.causal ? m0 + c.diag + 1 : 0x7fffffff - kBM;
    MMK_UNROLL
    for (int i = 0; i < kSVals; ++i) {  // P in float32 (kept for dS) and as dV's A operand
      const int col = get<1>(cS(i));
      const bool visible = my_key[(i >> 1) & 1] < lim + col;
      const float pr = prob(float(acc_s(i)), scale_log2, Lse::parts(hi[col], lo[col]), visible);
      acc_s(i) = pr;
      tP(i) = T(pr);
    }
    // dV += P^T dO
    dev::warpgroup_fence_operand(acc_dv);
    dev::warpgroup_arrive();
    MMK_UNROLL
    for (int kb = 0; kb < size<2>(tP); ++kb) dev::gemm(mma_dkv, tP(_, _, kb), tVrdOt(_, _, kb, stage), acc_dv);
    dev::warpgroup_commit_batch();
    dev::warpgroup_wait<1>();  // dP^T is in; dV runs on (tP, its A operand, is not touched again)
    dev::warpgroup_fence_operand(acc_dp);
    MMK_UNROLL
    for (int i = 0; i < kSVals; ++i) tdS(i) = T(float(acc_s(i)) * (float(acc_dp(i)) - di[get<1>(cS(i))]));
    // dS (rows x keys) in shared memory for dQ: both consumers' slabs, written before dK's wgmma takes
    // tdS (an in-flight wgmma's A registers are not to be read). The previous step's dQ wgmmas are done
    // with it (each consumer waited for its own before this barrier).
    dev::named_barrier_sync(kDsBarrier, 2 * 128);
    MMK_UNROLL
    for (int i = 0; i < kSVals; ++i) sdS(get<1>(cS(i)), 64 * w + get<0>(cS(i))) = tdS(i);
    dev::fence_proxy_async();  // the generic writes, visible to the wgmma's async-proxy reads
    // dK += dS^T Q
    dev::warpgroup_fence_operand(acc_dk);
    dev::warpgroup_arrive();
    MMK_UNROLL
    for (int kb = 0; kb < size<2>(tdS); ++kb) dev::gemm(mma_dkv, tdS(_, _, kb), tKrQt(_, _, kb, stage), acc_dk);
    dev::warpgroup_commit_batch();
    dev::named_barrier_sync(kDsBarrier, 2 * 128);
    const bool dq_here = F::kDqParts == 2 || (step & 1) == w;
    if (dq_here) {  // dQ (part) = dS K
      mma_dq.accumulate_ = GMMA::ScaleOut::Zero;
      dev::warpgroup_fence_operand(acc_dq);
      dev::warpgroup_arrive();
      MMK_UNROLL
      for (int kb = 0; kb < size<2>(tQrdS); ++kb) {
        dev::gemm(mma_dq, tQrdS(_, _, kb), tQrKt(_, _, kb), acc_dq);
        mma_dq.accumulate_ = GMMA::ScaleOut::One;
      }
      dev::warpgroup_commit_batch();
    }
    dev::warpgroup_wait<0>();
    dev::warpgroup_fence_operand(acc_dv);
    dev::warpgroup_fence_operand(acc_dk);
    if (dq_here) dev::warpgroup_fence_operand(acc_dq);
    // This warp is done with the stage (its wgmmas waited, its statistics read): one arrival per warp.
    dev::sync_warp(dev::kFullMask);
    if (dev::lane_id() == 0) dev::mbarrier_arrive(sm.empty + stage);
    if (++stage == kStages) stage = 0, phase ^= 1;
    if (dq_here) {  // added after key tile j - 1's, before j + 1's
      const int64_t bh = int64_t(c.b) * p.H + c.head(step);
      int* flag = prm.dq.flags + (bh * q_tiles_all + c.m_blk(step)) * F::kDqParts + part;
      if (ct == 0) dev::wait_flag(flag, key_tile);
      dev::named_barrier_sync(kDqBarrier + w, 128);
      float* acc = prm.dq.acc + bh * p.Lq * kD + part * kDqCols;
      MMK_UNROLL
      for (int i = 0; i < kQVals; i += 2) {  // values i, i + 1: adjacent columns of one row
        const int row = m0 + get<0>(cQ(i));
        if (row >= p.Lq) continue;
        auto* a = reinterpret_cast<dev::F32x2*>(acc + int64_t(row) * kD + get<1>(cQ(i)));  // even column: aligned
        dev::F32x2 v = *a;
        v.x += float(acc_dq(i));
        v.y += float(acc_dq(i + 1));
        *a = v;
      }
      dev::named_barrier_sync(kDqBarrier + w, 128);  // every add of this consumer is done
      if (ct == 0) dev::set_flag(flag, key_tile + 1);
    }
  }
  if (c.steps == 0) return;  // the glue's zeros stand
  // dK (times the scale) and dV, rows of contiguous (B, Lk, Hkv, d) buffers.
  const float scale = static_cast<float>(p.scale);
  T* dk = static_cast<T*>(p.dk);
  T* dv = static_cast<T*>(p.dv);
  MMK_UNROLL
  for (int i = 0; i < kKVals; i += 2) {  // values i, i + 1: adjacent columns of one key
    const int key = c.n0 + 64 * w + get<0>(cK(i)), d = get<1>(cK(i));
    if (key >= p.Lk) continue;
    const int64_t row = (int64_t(c.b) * p.Lk + key) * p.Hkv + c.hk;
    if (d < p.D) dk[row * p.D + d] = T(float(acc_dk(i)) * scale);
    if (d + 1 < p.D) dk[row * p.D + d + 1] = T(float(acc_dk(i + 1)) * scale);
    if (d < p.Dv) dv[row * p.Dv + d] = T(float(acc_dv(i)));
    if (d + 1 < p.Dv) dv[row * p.Dv + d + 1] = T(float(acc_dv(i + 1)));
  }
}

template <class F>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads, 1) flash_sm90_bwd_kernel(MMK_GRID_CONSTANT const typename F::Params prm) {
  if constexpr (!dev::kHopperCode<F>) {
    return;
  } else {
    const BwdSmem<F> sm;
    const int tid = dev::thread_rank();
    if (tid == 0) {
      dev::mbarrier_init(sm.bar_kv, 1);
      for (int s = 0; s < F::kStages; ++s) {
        dev::mbarrier_init(sm.full + s, 1 + kStatThreads);  // the TMA thread (+ bytes) and the statistics rows
        dev::mbarrier_init(sm.empty + s, kConsumerWarps);
      }
      dev::fence_barrier_init();
    }
    dev::sync_threads();
    if (tid < 128) {
      dev::setmaxnreg_dec<kProducerRegs>();
      produce_bwd<F>(prm, sm);
    } else {
      dev::setmaxnreg_inc<kConsumerRegs>();
      consume_bwd<F>(prm, sm, tid / 128 - 1, tid % 128);
    }
  }
}

// dK, dV and dQ (D_i already in `Di`; the glue's zeros in dk, dv; `workspace` zeroed, of
// backward_workspace_bytes(p, kD) bytes).
template <class DevT, int kD>
dev::Error backward(const CrossAttentionParams& p_all, const float* Di_all, void* workspace, dev::Stream stream) {
  using CuteT = std::conditional_t<std::is_same_v<DevT, dev::bf16>, cute::bfloat16_t, cute::half_t>;
  using F = Bwd<CuteT, kD>;
  if (workspace == nullptr) return dev::report_error(dev::kErrorInvalidValue, "the sm_90a backward needs its workspace");
  if (dev::Error e = dev::set_max_dynamic_smem(flash_sm90_bwd_kernel<F>, static_cast<int>(F::kSmem)); e != dev::kSuccess)
    return e;
  if (p_all.Hkv > kMaxGridYZ) return dev::kErrorInvalidConfiguration;
  const DqAccum dq = DqAccum::in(workspace, p_all, kD);
  for (BatchSlices s(p_all, kMaxGridYZ); s; ++s) {
    typename F::Params prm{};
    prm.p = *s;
    prm.Di = Di_all + s.first() * p_all.H * p_all.Lq;
    prm.dq = dq.from_batch(s.first(), *s, kD, F::kDqParts);
    std::string e;
    prm.tma_q = F::tma_rows(prm.p, &e);
    if (e.empty()) prm.tma_do = F::tma_do(prm.p, &e);
    if (e.empty()) prm.tma_k = F::tma_k(prm.p, &e);
    if (e.empty()) prm.tma_v = F::tma_v(prm.p, &e);
    if (!e.empty()) return dev::report_error(dev::kErrorInvalidValue, e);
    const dev::Dim3 grid{static_cast<uint32_t>(dev::ceil_div<int64_t>(prm.p.Lk, F::kBN)), static_cast<uint32_t>(prm.p.Hkv),
                         static_cast<uint32_t>(prm.p.B)};
    if (const dev::Error err = MMK_LAUNCH((flash_sm90_bwd_kernel<F>), grid, (dev::Dim3{kThreads, 1, 1}), F::kSmem, stream, prm);
        err != dev::kSuccess)
      return err;
  }
  return launch_convert_dq<DevT>(p_all, dq.acc, kD, stream);
}

}  // namespace flash_sm90
MMK_BACKEND_END
}  // namespace mmkernels::cuda
