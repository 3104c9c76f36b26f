// Self-test kernels for the emulation's sm_90a checkers (compiled with MMK_EMULATION only: the broken
// versions are broken on purpose). Each is a small TMA/mbarrier/wgmma pipeline with one bug and a
// `fixed` switch that removes it. Tiles: A and B 64 x 64 bf16, K-major, 128-byte swizzle (CuTe's layouts).
#include <c10/util/Exception.h>

#include <memory>
#include <vector>

#include "common/device/cute.h"
#include "common/device/selftest/selftest.h"

namespace mmkernels::emulation {
namespace {
using namespace mmkernels::dev;
using namespace cute;

using T = cute::bfloat16_t;
using SmemTile = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<T>{}, Shape<_64, _64>{}));
constexpr int kTileBytes = 64 * 64 * 2;
constexpr int kSmem = 2 * kTileBytes + 64;  // A, B, barriers

auto make_tma(const T* g) {
  std::string e;
  auto tma = make_tma_load(make_tensor(make_gmem_ptr(g), make_shape(64, 64), make_stride(64, Int<1>{})), SmemTile{},
                           Shape<_64, _64>{}, &e);
  TORCH_CHECK(e.empty(), e);
  return tma;
}
using Tma = decltype(make_tma(nullptr));

struct Args {
  Tma tma;
  float* out;
  bool fixed;
};

struct Smem {
  SmemPtr<uint8_t> base;
  auto a() const { return make_tensor(smem_iter(base.cast<T>()), SmemTile{}); }
  auto b() const { return make_tensor(smem_iter((base + kTileBytes).cast<T>()), SmemTile{}); }
  uint64_t* bar(int i) const { return (base + 2 * kTileBytes + 8 * i).cast<uint64_t>().get(); }
};

Smem smem() { return {dynamic_smem<uint8_t>()}; }

// Thread 0 loads tile `a` (of SmemTile) with the TMA, completing on barrier `bar`.
template <class Tile> void tma_load_tile(const Tma& tma, Tile&& tile, uint64_t* bar, uint32_t bytes = kTileBytes) {
  mbarrier_arrive_expect_tx(bar, bytes);
  Tensor g = tma.get_tma_tensor(make_shape(Int<64>{}, Int<64>{}));
  auto [tg, ts] = tma_partition(tma, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(tile), group_modes<0, 2>(g));
  dev::copy(tma.with(*bar), tg, ts);
}

void init_barriers(const Smem& s, int n, int count = 1) {
  if (thread_rank() == 0) {
    for (int i = 0; i < n; ++i) mbarrier_init(s.bar(i), count);
    fence_barrier_init();
  }
  sync_threads();
}

// Fills A and B from registers (generic-proxy writes) for the wgmma tests.
void fill_tiles(const Smem& s, bool fence) {
  Tensor a = s.a(), b = s.b();
  for (int i = thread_rank(); i < 64 * 64; i += 128) {
    a(i) = T(float(i % 7) - 3.f);
    b(i) = T(float(i % 5) - 2.f);
  }
  if (fence) fence_proxy_async();
  sync_threads();
}

// One wgmma D(64x64) = A B^T over K = 64, with the accumulators' first value written out.
template <class Before, class After>
void one_wgmma(const Smem& s, float* out, bool fence, Before before_wait, After after_wait) {
  TiledMMA mma = make_tiled_mma(gmma_ss<T, Shape<_64, _64, _16>, GMMA::Major::K, GMMA::Major::K>());
  ThrMMA thr = mma.get_thread_slice(thread_rank());
  Tensor tA = thr.make_fragment_A(thr.partition_A(s.a()));
  Tensor tB = thr.make_fragment_B(thr.partition_B(s.b()));
  Tensor acc = thr.partition_fragment_C(make_identity_tensor(Shape<_64, _64>{}));
  mma.accumulate_ = GMMA::ScaleOut::Zero;
  if (fence) warpgroup_arrive();
  for (int k = 0; k < size<2>(tA); ++k) {
    dev::gemm(mma, tA(_, _, k), tB(_, _, k), acc);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  before_wait(acc);
  warpgroup_wait<0>();
  after_wait(acc);
  out[thread_rank()] = acc(0);
}

// Threads read a TMA destination: after waiting on its barrier (fixed), or not.
MMK_GLOBAL void tma_read_before_wait(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  init_barriers(s, 1);
  if (thread_rank() == 0) tma_load_tile(p.tma, s.a(), s.bar(0));
  if (p.fixed || thread_rank() == 0) mbarrier_wait(s.bar(0), 0);
  p.out[thread_rank()] = float(s.a()(thread_rank()));
  if (!p.fixed && thread_rank() != 0) mbarrier_wait(s.bar(0), 0);
}

// Thread 0 overwrites a wgmma operand before the wgmma's wait.
MMK_GLOBAL void wgmma_operand_overwritten(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  fill_tiles(s, true);
  auto write = [&] {
    if (thread_rank() == 0) s.a()(0) = T(1.f);
  };
  one_wgmma(s, p.out, true, [&](auto&) { if (!p.fixed) write(); }, [&](auto&) { if (p.fixed) write(); });
}

// A thread reads an accumulator before the wgmma writing it completed.
MMK_GLOBAL void wgmma_accumulator_read_early(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  fill_tiles(s, true);
  one_wgmma(s, p.out, true, [&](auto& acc) { if (!p.fixed) p.out[thread_rank()] = acc(1); }, [](auto&) {});
}

// wgmma without the wgmma.fence (warpgroup_arrive) before it.
MMK_GLOBAL void wgmma_missing_fence(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  fill_tiles(s, true);
  one_wgmma(s, p.out, p.fixed, [](auto&) {}, [](auto&) {});
}

// Operands written by threads and read by the wgmma without fence.proxy.async.
MMK_GLOBAL void missing_proxy_fence(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  fill_tiles(s, p.fixed);
  one_wgmma(s, p.out, true, [](auto&) {}, [](auto&) {});
}

// A consumer that does not flip its phase bit: its second wait is satisfied by the phase it already had.
MMK_GLOBAL void mbarrier_phase_out_of_step(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  init_barriers(s, 1);
  if (thread_rank() == 0) {
    mbarrier_arrive(s.bar(0));
    mbarrier_wait(s.bar(0), 0);
    if (p.fixed) mbarrier_arrive(s.bar(0));
    mbarrier_wait(s.bar(0), p.fixed ? 1 : 0);
  }
  p.out[thread_rank()] = 0.f;
}

// expect_tx announces fewer bytes than the TMA delivers: the phase never completes.
MMK_GLOBAL void mbarrier_tx_mismatch(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  init_barriers(s, 1);
  if (thread_rank() == 0) tma_load_tile(p.tma, s.a(), s.bar(0), p.fixed ? kTileBytes : kTileBytes / 2);
  mbarrier_wait(s.bar(0), 0);
  p.out[thread_rank()] = float(s.a()(thread_rank()));
}

// A barrier used by other threads before the __syncthreads that makes its init visible.
MMK_GLOBAL void mbarrier_init_not_visible(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  if (thread_rank() == 0) mbarrier_init(s.bar(0), 128);
  if (p.fixed) sync_threads();
  mbarrier_arrive(s.bar(0));
  mbarrier_wait(s.bar(0), 0);
  p.out[thread_rank()] = 0.f;
}

// Two warpgroups: the consumers wait at a named barrier the producer never arrives at (broken).
MMK_GLOBAL void named_barrier_never_arrived(MMK_GRID_CONSTANT const Args p) {
  if (thread_rank() >= 128) named_barrier_sync(1, 256);
  else if (p.fixed) named_barrier_arrive(1, 256);
  p.out[thread_rank()] = 0.f;
}

// Consumers release a stage (arrive on its empty barrier) before they have read it: the producer's next
// TMA into the stage races with their reads. Fixed: read, __syncwarp, then one lane releases.
MMK_GLOBAL void stage_released_before_read(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  init_barriers(s, 2, 1);  // 0: full, 1: empty (one arrival: warp 1's elected lane)
  if (thread_rank() == 0) {
    tma_load_tile(p.tma, s.a(), s.bar(0));
    mbarrier_wait(s.bar(1), 0);
    tma_load_tile(p.tma, s.a(), s.bar(0));
  } else if (warp_id() == 1) {
    mbarrier_wait(s.bar(0), 0);
    if (!p.fixed && elect_one_sync()) mbarrier_arrive(s.bar(1));
    p.out[thread_rank()] = float(s.a()(thread_rank()));
    sync_warp();
    if (p.fixed && elect_one_sync()) mbarrier_arrive(s.bar(1));
    mbarrier_wait(s.bar(0), 1);
  }
}

// A producer's generic writes (a stage's row statistics) are read by threads of several consumer warps;
// only one warp releases the stage, so the producer's rewrite races with the other warps' reads. Fixed:
// every consumer warp releases it (read, __syncwarp, one lane arrives), and the checker orders each of
// the many readers through the vector clocks.
MMK_GLOBAL void broadcast_released_by_one_warp(MMK_GRID_CONSTANT const Args p) {
  const Smem s = smem();
  const SmemPtr<float> words = s.base.cast<float>();
  if (thread_rank() == 0) {
    mbarrier_init(s.bar(0), 1);                // full: the producer
    mbarrier_init(s.bar(1), p.fixed ? 3 : 1);  // empty: consumer warps 1-3 (broken: warp 1 alone)
    fence_barrier_init();
  }
  sync_threads();
  if (thread_rank() == 0) {
    for (int i = 0; i < 4; ++i) words[i] = float(i);
    mbarrier_arrive(s.bar(0));
    mbarrier_wait(s.bar(1), 0);
    for (int i = 0; i < 4; ++i) words[i] = float(i + 4);  // the stage's next round
    mbarrier_arrive(s.bar(0));
  } else if (warp_id() >= 1) {
    mbarrier_wait(s.bar(0), 0);
    p.out[thread_rank()] = words[thread_rank() % 4];
    sync_warp();
    if ((p.fixed || warp_id() == 1) && lane_id() == 0) mbarrier_arrive(s.bar(1));
    mbarrier_wait(s.bar(0), 1);
  }
}

}  // namespace

std::vector<std::string> sm90_selftest_names() {
  return {"tma_read_before_wait",      "wgmma_operand_overwritten", "wgmma_accumulator_read_early",
          "wgmma_missing_fence",       "missing_proxy_fence",       "mbarrier_phase_out_of_step",
          "mbarrier_tx_mismatch",      "mbarrier_init_not_visible", "named_barrier_never_arrived",
          "stage_released_before_read", "broadcast_released_by_one_warp"};
}

bool run_sm90_selftest(const std::string& name, bool fixed, std::string* report) {
  std::vector<T> g(64 * 64);
  for (size_t i = 0; i < g.size(); ++i) g[i] = T(float(i % 11) - 5.f);
  std::unique_ptr<float[]> out(new float[256]);
  Args args{make_tma(g.data()), out.get(), fixed};
  const Dim3 one{1, 1, 1}, wg{128, 1, 1}, two{256, 1, 1};
  Error e = kSuccess;
  // One case: the kernel `k` on `block` threads (MMK_LAUNCH names it in the report).
#define MMK_SM90_SELFTEST(k, block)                                                     \
  else if (name == #k) {                                                              \
    e = set_max_dynamic_smem(k, kSmem);                                               \
    if (e == kSuccess) e = MMK_LAUNCH(k, one, block, kSmem, nullptr, args);           \
  }
  if (false) {
  }
  MMK_SM90_SELFTEST(tma_read_before_wait, wg)
  MMK_SM90_SELFTEST(wgmma_operand_overwritten, wg)
  MMK_SM90_SELFTEST(wgmma_accumulator_read_early, wg)
  MMK_SM90_SELFTEST(wgmma_missing_fence, wg)
  MMK_SM90_SELFTEST(missing_proxy_fence, wg)
  MMK_SM90_SELFTEST(mbarrier_phase_out_of_step, wg)
  MMK_SM90_SELFTEST(mbarrier_tx_mismatch, wg)
  MMK_SM90_SELFTEST(mbarrier_init_not_visible, wg)
  MMK_SM90_SELFTEST(named_barrier_never_arrived, two)
  MMK_SM90_SELFTEST(stage_released_before_read, wg)
  MMK_SM90_SELFTEST(broadcast_released_by_one_warp, wg)
  else return false;
#undef MMK_SM90_SELFTEST
  *report = e == kSuccess ? std::string() : std::string(error_string(e));
  return true;
}

}  // namespace mmkernels::emulation
