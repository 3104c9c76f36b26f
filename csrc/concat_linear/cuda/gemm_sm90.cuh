// concat_linear's GEMMs on Hopper (sm_90a), on CUTLASS/CuTe: warp-specialized, TMA-fed, wgmma.
//
// The same GemmArgs as the sm_80 kernel (concat_linear_entry.h) describe the forward and both gradient
// GEMMs; here an operand is "K-major" when its reduction index is contiguous (CuTe's naming):
//   forward   y = act(sum_s X_s W_s^T + b): A = X_s K-major, B = W_s K-major, the K loop walking the
//             segments in order into one float32 accumulator (each segment's own TMA tensor maps, so a
//             segment's last tile is zero-filled at its own width);
//   dX_s = dZ W_s:   A = dZ K-major, B = W_s MN-major;
//   dW_s = dZ^T X_s: A = dZ MN-major, B = X_s MN-major (split over K = M rows when the grid is small).
// CTA tile 128 x 128 x 64, 4 stages. Warpgroup 0 is the producer: it gives its registers back
// (setmaxnreg) and one elected thread streams A and B tiles through the stage ring with TMA, each stage
// guarded by a "full" mbarrier (transaction bytes) and an "empty" one (one arrival per consumer).
// Warpgroups 1 and 2 consume: each owns 64 rows of the tile, issues the stage's four k16 wgmmas from
// shared memory and keeps one batch in flight, releasing a stage once the batch reading it completed.
// The epilogue (epilogue.cuh) adds the bias and applies the activation (a template parameter) in registers
// and stores y (and the pre-activation z when autograd needs it) or float32 split-K partials through
// shared memory as 16-byte row pieces.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "common/activation.h"
#include "common/device/cute.h"
#include "concat_linear/cuda/concat_linear_entry.h"
#include "concat_linear/cuda/epilogue.cuh"
#include "concat_linear/cuda/gemm_host.h"
#include "concat_linear/cuda/gemm_tiles.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace sm90 {

using namespace cute;

constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 4;
constexpr int kConsumers = 2, kThreads = 128 * (1 + kConsumers);
// Registers after setmaxnreg: the producer needs few, the consumers hold a 64 x 128 float accumulator
// (64 per thread) and the epilogue; 128 x 40 + 256 x 232 fits the SM's 64K.
constexpr int kProducerRegs = 40, kConsumerRegs = 232;
constexpr int kEpilogueBarrier = 1;  // named barrier of the consumer warpgroups

template <class T, bool MN>
constexpr auto smem_atom() {
  if constexpr (MN) return GMMA::Layout_MN_SW128_Atom<T>{};
  else return GMMA::Layout_K_SW128_Atom<T>{};
}

// The staged shared layout of an (rows x kBK) operand tile: K-major tiles grow along rows first;
// MN-major ones along K first (each 64 x 8 atom's K neighbour one atom away, as the wgmma descriptor's
// stride expects).
template <class T, bool MN, int Rows>
using StagedLayout = decltype(tile_to_shape(smem_atom<T, MN>(), Shape<Int<Rows>, Int<kBK>, Int<kStages>>{},
                                            std::conditional_t<MN, Step<_2, _1, _3>, Step<_1, _2, _3>>{}));

// An operand as CuTe sees it: (rows, k) with the contiguous index K (K-major) or rows (MN-major).
template <class T, bool MN>
auto gmem_operand(const void* p, int rows, int k, int64_t ld) {
  const T* ptr = static_cast<const T*>(p);
  if constexpr (MN) return make_tensor(make_gmem_ptr(ptr), make_shape(rows, k), make_stride(Int<1>{}, ld));
  else return make_tensor(make_gmem_ptr(ptr), make_shape(rows, k), make_stride(ld, Int<1>{}));
}

template <class T_, bool AMN, bool BMN>
struct Gemm {
  using T = T_;
  using SmemA = StagedLayout<T, AMN, kBM>;
  using SmemB = StagedLayout<T, BMN, kBN>;
  static constexpr int kBytesA = kBM * kBK * kStages * 2, kBytesB = kBN * kBK * kStages * 2;
  static constexpr uint32_t kStageBytes = (kBM + kBN) * kBK * 2;
  static constexpr size_t kSmem = kBytesA + kBytesB + 2 * kStages * 8;
  static_assert(EpilogueStage<kBM, kBN>::kBytes <= kBytesA + kBytesB, "the epilogue stages in the operand buffers");
  static constexpr GMMA::Major kMajorA = AMN ? GMMA::Major::MN : GMMA::Major::K;
  static constexpr GMMA::Major kMajorB = BMN ? GMMA::Major::MN : GMMA::Major::K;
  static auto tma_a(const void* p, int rows, int k, int64_t ld, std::string* e) {
    return dev::make_tma_load(gmem_operand<T, AMN>(p, rows, k, ld), SmemA{}(_, _, 0), Shape<Int<kBM>, Int<kBK>>{}, e);
  }
  static auto tma_b(const void* p, int rows, int k, int64_t ld, std::string* e) {
    return dev::make_tma_load(gmem_operand<T, BMN>(p, rows, k, ld), SmemB{}(_, _, 0), Shape<Int<kBN>, Int<kBK>>{}, e);
  }
  using TmaA = decltype(tma_a(nullptr, 1, 1, 8, nullptr));
  using TmaB = decltype(tma_b(nullptr, 1, 1, 8, nullptr));
  struct Params {
    TmaA tma_a[kMaxSegments];
    TmaB tma_b[kMaxSegments];
    int seg_k[kMaxSegments];  // each segment's K
    GemmArgs args;            // sizes, epilogue, split
  };
  static MMK_HOST_DEVICE auto mma() {
    return make_tiled_mma(dev::gmma_ss<T, Shape<_64, Int<kBN>, _16>, kMajorA, kMajorB>(),
                          Layout<Shape<Int<kConsumers>, _1, _1>>{});
  }
};

// A position in the stage ring: the stage and the parity of its current round (advanced, not divided).
struct RingState {
  int stage = 0, phase = 0;
  MMK_DEVICE void advance() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

template <class G, class DevT, Activation kAct>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads, 1) gemm_sm90_kernel(MMK_GRID_CONSTANT const typename G::Params p) {
  if constexpr (!dev::kHopperCode<G>) {
    return;
  } else {
    using T = typename G::T;
    const GemmArgs& args = p.args;
    dev::SmemPtr<uint8_t> smem = dev::dynamic_smem<uint8_t>();
    Tensor sA = make_tensor(dev::smem_iter(smem.template cast<T>()), typename G::SmemA{});  // (BM, BK, stage)
    Tensor sB = make_tensor(dev::smem_iter((smem + G::kBytesA).template cast<T>()), typename G::SmemB{});
    uint64_t* full = (smem + G::kBytesA + G::kBytesB).template cast<uint64_t>().get();
    uint64_t* empty = full + kStages;
    const int tid = dev::thread_rank();
    if (tid == 0) {
      for (int s = 0; s < kStages; ++s) {
        dev::mbarrier_init(full + s, 1);
        dev::mbarrier_init(empty + s, kConsumers);
      }
      dev::fence_barrier_init();
    }
    dev::sync_threads();
    const int m_blk = static_cast<int>(dev::block_idx().x), n_blk = static_cast<int>(dev::block_idx().y);
    auto seg_k = [&](int s) { return p.seg_k[s]; };
    const TileRun run = tile_run<kBK>(seg_k, args.n_seg, args.split, static_cast<int>(dev::block_idx().z));

    if (tid < 128) {  // ---- producer warpgroup
      dev::setmaxnreg_dec<kProducerRegs>();
      if (dev::warp_id() == 0 && dev::elect_one_sync()) {
        TileCursor<kBK, decltype(seg_k)> at(seg_k, args.n_seg, run.first);
        RingState ring;
        for (int i = 0; i < run.count; ++i, at.advance(seg_k, args.n_seg, 1), ring.advance()) {
          const int stage = ring.stage;
          dev::mbarrier_wait(empty + stage, ring.phase ^ 1);  // the consumers released it (first round: free)
          dev::mbarrier_arrive_expect_tx(full + stage, G::kStageBytes);
          const int s = at.seg;
          Tensor gA = local_tile(p.tma_a[s].get_tma_tensor(make_shape(static_cast<int>(args.M), p.seg_k[s])),
                                 Shape<Int<kBM>, Int<kBK>>{}, make_coord(m_blk, at.tile));
          Tensor gB = local_tile(p.tma_b[s].get_tma_tensor(make_shape(static_cast<int>(args.N), p.seg_k[s])),
                                 Shape<Int<kBN>, Int<kBK>>{}, make_coord(n_blk, at.tile));
          auto [tAg, tAs] = tma_partition(p.tma_a[s], Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sA(_, _, stage)),
                                          group_modes<0, 2>(gA));
          auto [tBg, tBs] = tma_partition(p.tma_b[s], Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sB(_, _, stage)),
                                          group_modes<0, 2>(gB));
          dev::copy(p.tma_a[s].with(*(full + stage)), tAg, tAs);
          dev::copy(p.tma_b[s].with(*(full + stage)), tBg, tBs);
        }
      }
      return;
    }

    // ---- consumer warpgroups: 64 rows of the tile each
    dev::setmaxnreg_inc<kConsumerRegs>();
    const int ct = tid - 128;
    auto mma = G::mma();
    ThrMMA thr = mma.get_thread_slice(ct);
    Tensor tCrA = thr.make_fragment_A(thr.partition_A(sA));  // descriptors (MMA, MMA_M, MMA_K, stage)
    Tensor tCrB = thr.make_fragment_B(thr.partition_B(sB));
    Tensor cC = thr.partition_C(make_identity_tensor(Shape<Int<kBM>, Int<kBN>>{}));  // (row, col) of each value
    Tensor acc = thr.partition_fragment_C(make_identity_tensor(Shape<Int<kBM>, Int<kBN>>{}));
    // The accumulators stay in registers: every loop over a fragment is unrolled (a dynamic index would
    // put them in local memory), and the fences keep the compiler from moving accesses to them into a
    // wgmma's pipeline stage (which serializes the wgmmas).
    mma.accumulate_ = GMMA::ScaleOut::Zero;
    dev::warpgroup_fence_operand(acc);
    RingState ring;
    int released = -1;  // the stage whose batch is still in flight
    for (int i = 0; i < run.count; ++i, ring.advance()) {
      const int stage = ring.stage;
      dev::mbarrier_wait(full + stage, ring.phase);
      dev::warpgroup_fence_operand(acc);
      dev::warpgroup_arrive();
      MMK_UNROLL
      for (int kb = 0; kb < size<2>(tCrA); ++kb) {
        dev::gemm(mma, tCrA(_, _, kb, stage), tCrB(_, _, kb, stage), acc);
        mma.accumulate_ = GMMA::ScaleOut::One;
      }
      dev::warpgroup_commit_batch();
      dev::warpgroup_wait<1>();  // the previous stage's batch is done: release its stage
      dev::warpgroup_fence_operand(acc);
      if (released >= 0 && ct % 128 == 0) dev::mbarrier_arrive(empty + released);
      released = stage;
    }
    dev::warpgroup_wait<0>();
    dev::warpgroup_fence_operand(acc);
    if (run.count == 0) {
      MMK_UNROLL
      for (int i = 0; i < size(acc); ++i) acc(i) = 0.f;
    }
    // Every consumer's wgmmas are done once both warpgroups pass this barrier: the stage buffers become the
    // epilogue's staging tile.
    auto consumers_sync = [] { dev::named_barrier_sync(kEpilogueBarrier, kConsumers * 128); };
    consumers_sync();
    gemm_epilogue<DevT, kAct, kBM, kBN, kConsumers * 128>(args, smem, acc, cC, int64_t(m_blk) * kBM,
                                                          int64_t(n_blk) * kBN, ct, consumers_sync);
  }
}

// Launches the GEMM that `args` describes (operands checked by tc_layout); TMA tensor maps per segment.
template <class DevT, bool AMN, bool BMN, Activation kAct>
dev::Error launch(const GemmArgs& args, dev::Stream stream) {
  using CuteT = std::conditional_t<std::is_same_v<DevT, dev::bf16>, cute::bfloat16_t, cute::half_t>;
  using G = Gemm<CuteT, AMN, BMN>;
  if (const dev::Error e = tc_launch_check(args, kBM, kBN); e != dev::kSuccess) return e;
  const int64_t gm = dev::ceil_div<int64_t>(args.M, kBM), gn = dev::ceil_div<int64_t>(args.N, kBN);
  typename G::Params p{};
  p.args = args;
  std::string error;
  for (int s = 0; s < args.n_seg; ++s) {
    const GemmSegment& g = args.seg[s];
    p.seg_k[s] = static_cast<int>(g.K);
    if (g.K == 0) continue;  // a width-0 input: no tiles, no tensor map
    // A (rows M): K-major rows of `sam`, or MN-major columns of `sak`; B (rows N) likewise.
    p.tma_a[s] = G::tma_a(g.a, static_cast<int>(args.M), p.seg_k[s], AMN ? g.sak : g.sam, &error);
    if (error.empty()) p.tma_b[s] = G::tma_b(g.b, static_cast<int>(args.N), p.seg_k[s], BMN ? g.sbk : g.sbn, &error);
    if (!error.empty()) return dev::report_error(dev::kErrorInvalidValue, error);
  }
  if (dev::Error e = dev::set_max_dynamic_smem(gemm_sm90_kernel<G, DevT, kAct>, static_cast<int>(G::kSmem)); e != dev::kSuccess)
    return e;
  const dev::Dim3 grid{static_cast<uint32_t>(gm), static_cast<uint32_t>(gn), static_cast<uint32_t>(args.split)};
  return MMK_LAUNCH((gemm_sm90_kernel<G, DevT, kAct>), grid, (dev::Dim3{kThreads, 1, 1}), G::kSmem, stream, p);
}

}  // namespace sm90

template <typename T>
dev::Error concat_linear_gemm_sm90(const GemmArgs& args, dev::Stream stream) {
  return tc_dispatch(args, "sm_90", [&](auto amn, auto bmn, auto act) {
    return sm90::launch<T, decltype(amn)::value, decltype(bmn)::value, decltype(act)::value>(args, stream);
  });
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
