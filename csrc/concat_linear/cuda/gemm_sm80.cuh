// concat_linear's GEMMs on Ampere (sm_80; also the path of 16-bit GEMMs TMA cannot load on Hopper), on
// CUTLASS/CuTe: cp.async multistage pipeline, ldmatrix, mma.sync m16n8k16.
//
// The same design as the Hopper kernel (gemm_sm90.cuh), in CuTe's naming ("K-major" = the reduction
// index contiguous): the same GemmArgs and operand layouts, the same K loop over the segments
// (gemm_tiles.cuh), the same epilogue (epilogue.cuh). CTA tile 128 x 128 x 32, 3 stages, 8 warps as 4
// (M) x 2 (N), each 32 x 64. Operands stream through the stages in 16-byte cp.async pieces that
// zero-fill outside the matrix (the glue guarantees every operand row is whole 16-byte pieces, zeros
// past its width), in swizzled tiles that ldmatrix reads without bank conflicts (transposed for the
// MN-major operands of the gradients).
#pragma once

#include <cstdint>

#include "common/activation.h"
#include "common/device/cute.h"
#include "concat_linear/cuda/concat_linear_entry.h"
#include "concat_linear/cuda/epilogue.cuh"
#include "concat_linear/cuda/gemm_host.h"
#include "concat_linear/cuda/gemm_tiles.cuh"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace sm80 {

using namespace cute;

constexpr int kBM = tc::kBM, kBN = tc::kBN, kBK = tc::kBK, kStages = 3, kThreads = 256;

// Shared layout atoms: K-major rows of kBK (64 bytes) with their 16-byte pieces XOR-swizzled by row
// pair; MN-major columns of 64 (128 bytes) with pieces swizzled by K row.
template <bool MN>
constexpr auto smem_atom() {
  if constexpr (MN) return composition(Swizzle<3, 3, 3>{}, Layout<Shape<_64, _8>, Stride<_1, _64>>{});
  else return composition(Swizzle<2, 3, 3>{}, Layout<Shape<_8, Int<kBK>>, Stride<Int<kBK>, _1>>{});
}

// 16-byte cp.async pieces: K-major 64 rows x 4 pieces per call, MN-major 16 pieces along M x 16 K rows.
template <class T, bool MN>
MMK_HOST_DEVICE auto gmem_copy() {
  if constexpr (MN)
    return make_tiled_copy(Copy_Atom<dev::atom::CpAsyncZfill, T>{}, Layout<Shape<_16, _16>, Stride<_1, _16>>{},
                           Layout<Shape<_8, _1>>{});
  else
    return make_tiled_copy(Copy_Atom<dev::atom::CpAsyncZfill, T>{}, Layout<Shape<_64, _4>, Stride<_4, _1>>{},
                           Layout<Shape<_1, _8>>{});
}

template <class T_, bool AMN_, bool BMN_>
struct Gemm {
  using T = T_;
  static constexpr bool AMN = AMN_, BMN = BMN_;
  using SmemA = decltype(tile_to_shape(smem_atom<AMN>(), Shape<Int<kBM>, Int<kBK>, Int<kStages>>{}));
  using SmemB = decltype(tile_to_shape(smem_atom<BMN>(), Shape<Int<kBN>, Int<kBK>, Int<kStages>>{}));
  static constexpr size_t kBytesA = size_t(kBM) * kBK * kStages * sizeof(T), kBytesB = size_t(kBN) * kBK * kStages * sizeof(T);
  static constexpr size_t kSmem = std::max(kBytesA + kBytesB, EpilogueStage<kBM, kBN>::kBytes);
  static MMK_HOST_DEVICE auto mma() {
    return make_tiled_mma(dev::atom::Sm80Mma<T>{}, Layout<Shape<_4, _2, _1>>{}, Tile<Int<kBM>, Int<kBN>, _16>{});
  }
};

// One segment's operand as CuTe sees it: (rows, k), contiguous along K (K-major) or rows (MN-major).
template <class T, bool MN>
MMK_DEVICE auto gmem_operand(const void* p, int64_t rows, int64_t k, int64_t ld) {
  const T* ptr = static_cast<const T*>(p);
  if constexpr (MN) return make_tensor(make_gmem_ptr(ptr), make_shape(rows, k), make_stride(Int<1>{}, ld));
  else return make_tensor(make_gmem_ptr(ptr), make_shape(rows, k), make_stride(ld, Int<1>{}));
}

// Issues the cp.async pieces of the (kRows x kBK) tile (blk, kt) of `g` into stage `stage` of `smem`,
// zero-filling the pieces outside the matrix.
template <class T, bool MN, int kRows, class G, class S>
MMK_DEVICE void load_tile(G const& g, S& smem, int stage, int blk, int kt, int tid) {
  auto copy = gmem_copy<T, MN>();
  auto thr = copy.get_thread_slice(tid);
  Tensor src = thr.partition_S(local_tile(g, Shape<Int<kRows>, Int<kBK>>{}, make_coord(blk, kt)));  // (CPY, M, K)
  Tensor dst = thr.partition_D(smem(_, _, stage));
  // The coordinates of each piece's first element in the whole matrix, against its shape.
  Tensor crd = thr.partition_S(local_tile(make_identity_tensor(shape(g)), Shape<Int<kRows>, Int<kBK>>{}, make_coord(blk, kt)));
  MMK_UNROLL
  for (int m = 0; m < size<1>(src); ++m)
    MMK_UNROLL
    for (int k = 0; k < size<2>(src); ++k)
      dev::copy(copy.with(elem_less(crd(0, m, k), shape(g))), src(_, m, k), dst(_, m, k));
}

template <class G, class DevT, Activation kAct>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) gemm_sm80_kernel(const GemmArgs args) {
  using T = typename G::T;
  dev::SmemPtr<uint8_t> smem = dev::dynamic_smem<uint8_t>();
  Tensor sA = make_tensor(dev::smem_iter(smem.template cast<T>()), typename G::SmemA{});  // (BM, BK, stage)
  Tensor sB = make_tensor(dev::smem_iter((smem + G::kBytesA).template cast<T>()), typename G::SmemB{});
  const int tid = dev::thread_rank();
  const int m_blk = static_cast<int>(dev::block_idx().x), n_blk = static_cast<int>(dev::block_idx().y);
  auto seg_k = [&](int s) { return args.seg[s].K; };
  const TileRun run = tile_run<kBK>(seg_k, args.n_seg, args.split, static_cast<int>(dev::block_idx().z));
  TileCursor<kBK, decltype(seg_k)> at(seg_k, args.n_seg, run.first);
  auto load = [&](int stage) {  // the cursor's tile into `stage`, then the cursor moves on
    const GemmSegment& g = args.seg[at.seg];
    load_tile<T, G::AMN, kBM>(gmem_operand<T, G::AMN>(g.a, args.M, g.K, G::AMN ? g.sak : g.sam), sA, stage, m_blk,
                             at.tile, tid);
    load_tile<T, G::BMN, kBN>(gmem_operand<T, G::BMN>(g.b, args.N, g.K, G::BMN ? g.sbk : g.sbn), sB, stage, n_blk,
                             at.tile, tid);
    at.advance(seg_k, args.n_seg, 1);
  };

  auto mma = G::mma();
  ThrMMA thr = mma.get_thread_slice(tid);
  Tensor tCrA = thr.partition_fragment_A(sA(_, _, 0));  // (MMA, MMA_M, MMA_K)
  Tensor tCrB = thr.partition_fragment_B(sB(_, _, 0));
  Tensor acc = thr.partition_fragment_C(make_identity_tensor(Shape<Int<kBM>, Int<kBN>>{}));
  Tensor cC = thr.partition_C(make_identity_tensor(Shape<Int<kBM>, Int<kBN>>{}));
  auto s2r_a = make_tiled_copy_A(Copy_Atom<std::conditional_t<G::AMN, dev::atom::LdsmT, dev::atom::LdsmN>, T>{}, mma);
  auto s2r_b = make_tiled_copy_B(Copy_Atom<std::conditional_t<G::BMN, dev::atom::LdsmT, dev::atom::LdsmN>, T>{}, mma);
  auto thr_a = s2r_a.get_thread_slice(tid);
  auto thr_b = s2r_b.get_thread_slice(tid);
  Tensor tXsA = thr_a.partition_S(sA);  // (CPY, MMA_M, MMA_K, stage)
  Tensor tXrA = thr_a.retile_D(tCrA);
  Tensor tXsB = thr_b.partition_S(sB);
  Tensor tXrB = thr_b.retile_D(tCrB);
  clear(acc);

  MMK_UNROLL
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < run.count) load(s);
    dev::cp_async_commit();  // empty groups keep the wait count uniform
  }
  for (int i = 0; i < run.count; ++i) {
    dev::cp_async_wait<kStages - 2>();
    dev::sync_threads();  // tile i is visible; every warp is done with the stage refilled below
    if (i + kStages - 1 < run.count) load((i + kStages - 1) % kStages);
    dev::cp_async_commit();
    const int stage = i % kStages;
    MMK_UNROLL
    for (int kb = 0; kb < size<2>(tCrA); ++kb) {
      dev::copy(s2r_a, tXsA(_, _, kb, stage), tXrA(_, _, kb));
      dev::copy(s2r_b, tXsB(_, _, kb, stage), tXrB(_, _, kb));
      dev::gemm(mma, tCrA(_, _, kb), tCrB(_, _, kb), acc);
    }
  }
  dev::cp_async_wait<0>();  // only empty groups can be left
  dev::sync_threads();      // the stages become the epilogue's staging tile
  gemm_epilogue<DevT, kAct, kBM, kBN, kThreads>(args, smem, acc, cC, int64_t(m_blk) * kBM, int64_t(n_blk) * kBN, tid,
                                                [] { dev::sync_threads(); });
}

template <class DevT, bool AMN, bool BMN, Activation kAct>
dev::Error launch(const GemmArgs& args, dev::Stream stream) {
  using CuteT = std::conditional_t<std::is_same_v<DevT, dev::bf16>, cute::bfloat16_t, cute::half_t>;
  using G = Gemm<CuteT, AMN, BMN>;
  if (const dev::Error e = tc_launch_check(args, kBM, kBN); e != dev::kSuccess) return e;
  const int64_t gm = dev::ceil_div<int64_t>(args.M, kBM), gn = dev::ceil_div<int64_t>(args.N, kBN);
  if (dev::Error e = dev::set_max_dynamic_smem(gemm_sm80_kernel<G, DevT, kAct>, static_cast<int>(G::kSmem)); e != dev::kSuccess)
    return e;
  const dev::Dim3 grid{static_cast<uint32_t>(gm), static_cast<uint32_t>(gn), static_cast<uint32_t>(args.split)};
  return MMK_LAUNCH((gemm_sm80_kernel<G, DevT, kAct>), grid, (dev::Dim3{kThreads, 1, 1}), G::kSmem, stream, args);
}

}  // namespace sm80

template <typename T>
dev::Error concat_linear_gemm_sm80(const GemmArgs& args, dev::Stream stream) {
  return tc_dispatch(args, "sm_80", [&](auto amn, auto bmn, auto act) {
    return sm80::launch<T, decltype(amn)::value, decltype(bmn)::value, decltype(act)::value>(args, stream);
  });
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
