// sm_90a conformance kernels (see conformance.h): TMA box loads into each swizzled layout, and wgmma
// from shared memory (each swizzle, each majorness) and from registers, on CuTe atoms. One warpgroup
// per launch; thread 0 is the producer (mbarrier + TMA), all 128 threads consume. Compiled by nvcc (run
// on sm_90 only) and, like every kernel unit, for the host emulation.
#include <string>
#include <utility>

#include "common/device/conformance/conformance_entry.h"
#include "common/device/cute.h"

namespace mmkernels::conformance::cuda {
MMK_BACKEND_BEGIN
namespace {

using namespace cute;

// The shared-memory layout atom of a (swizzle, majorness) for 16-bit T.
template <class T, int Swizzle, bool MN>
auto smem_atom() {
  if constexpr (MN) {
    if constexpr (Swizzle == 128) return GMMA::Layout_MN_SW128_Atom<T>{};
    else if constexpr (Swizzle == 64) return GMMA::Layout_MN_SW64_Atom<T>{};
    else if constexpr (Swizzle == 32) return GMMA::Layout_MN_SW32_Atom<T>{};
    else return GMMA::Layout_MN_INTER_Atom<T>{};
  } else {
    if constexpr (Swizzle == 128) return GMMA::Layout_K_SW128_Atom<T>{};
    else if constexpr (Swizzle == 64) return GMMA::Layout_K_SW64_Atom<T>{};
    else if constexpr (Swizzle == 32) return GMMA::Layout_K_SW32_Atom<T>{};
    else return GMMA::Layout_K_INTER_Atom<T>{};
  }
}

// An (rows x cols) 16-bit global matrix stored K-major (row-major, K = cols) or MN-major (K rows of
// `rows` values): the CuTe view of it, indexed (mn, k).
template <class T, bool MN>
auto gmem_matrix(const void* p, int rows, int cols) {
  const T* ptr = static_cast<const T*>(p);
  if constexpr (MN) return make_tensor(make_gmem_ptr(ptr), make_shape(rows, cols), make_stride(Int<1>{}, rows));
  else return make_tensor(make_gmem_ptr(ptr), make_shape(rows, cols), make_stride(cols, Int<1>{}));
}

constexpr int kK = 64;

template <class T, int N, int Swizzle, bool AMN, bool BMN, bool ARegs>
struct WgmmaConfig {
  using SmemA = decltype(tile_to_shape(smem_atom<T, Swizzle, AMN>(), Shape<_64, Int<kK>>{}));
  using SmemB = decltype(tile_to_shape(smem_atom<T, Swizzle, BMN>(), Shape<Int<N>, Int<kK>>{}));
  static constexpr GMMA::Major kMajorA = AMN ? GMMA::Major::MN : GMMA::Major::K;
  static constexpr GMMA::Major kMajorB = BMN ? GMMA::Major::MN : GMMA::Major::K;
  static constexpr int kBytesA = 64 * kK * 2, kBytesB = N * kK * 2;
  static auto tma_a(const void* a, std::string* e) {
    return dev::make_tma_load(gmem_matrix<T, AMN>(a, 64, kK), SmemA{}, Shape<_64, Int<kK>>{}, e);
  }
  static auto tma_b(const void* b, std::string* e) {
    return dev::make_tma_load(gmem_matrix<T, BMN>(b, N, kK), SmemB{}, Shape<Int<N>, Int<kK>>{}, e);
  }
  using TmaA = decltype(tma_a(nullptr, nullptr));
  using TmaB = decltype(tma_b(nullptr, nullptr));
  struct Params {
    TmaA tma_a;
    TmaB tma_b;
    float* d;
  };
};

template <class Cfg, class T, int N, bool ARegs>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(128) wgmma_kernel(MMK_GRID_CONSTANT const typename Cfg::Params p) {
  if constexpr (!dev::kHopperCode<Cfg>) {
    return;
  } else {
    dev::SmemPtr<uint8_t> smem = dev::dynamic_smem<uint8_t>();
    Tensor sA = make_tensor(dev::smem_iter(smem.template cast<T>()), typename Cfg::SmemA{});
    Tensor sB = make_tensor(dev::smem_iter((smem + Cfg::kBytesA).template cast<T>()), typename Cfg::SmemB{});
    uint64_t* bar = (smem + Cfg::kBytesA + Cfg::kBytesB).template cast<uint64_t>().get();
    const int t = dev::thread_rank();
    if (t == 0) {
      dev::mbarrier_init(bar, 1);
      dev::fence_barrier_init();
    }
    dev::sync_threads();
    if (t == 0) {
      dev::mbarrier_arrive_expect_tx(bar, Cfg::kBytesA + Cfg::kBytesB);
      Tensor gA = p.tma_a.get_tma_tensor(make_shape(Int<64>{}, Int<kK>{}));
      Tensor gB = p.tma_b.get_tma_tensor(make_shape(Int<N>{}, Int<kK>{}));
      auto [tAgA, tAsA] = tma_partition(p.tma_a, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sA), group_modes<0, 2>(gA));
      auto [tBgB, tBsB] = tma_partition(p.tma_b, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sB), group_modes<0, 2>(gB));
      dev::copy(p.tma_a.with(*bar), tAgA, tAsA);
      dev::copy(p.tma_b.with(*bar), tBgB, tBsB);
    }
    dev::mbarrier_wait(bar, 0);
    Tensor gD = make_tensor(make_gmem_ptr(p.d), make_shape(Int<64>{}, Int<N>{}), make_stride(Int<N>{}, Int<1>{}));
    if constexpr (ARegs) {
      TiledMMA mma = make_tiled_mma(dev::gmma_rs<T, Shape<_64, Int<N>, _16>, Cfg::kMajorB>());
      ThrMMA thr = mma.get_thread_slice(t);
      Tensor tCsA = thr.partition_A(sA);
      Tensor tCrA = thr.make_fragment_A(tCsA);
      copy(tCsA, tCrA);  // shared -> registers, element by element
      Tensor tCrB = thr.make_fragment_B(thr.partition_B(sB));
      Tensor acc = thr.partition_fragment_C(gD);
      mma.accumulate_ = GMMA::ScaleOut::Zero;
      dev::warpgroup_arrive();
      for (int k = 0; k < size<2>(tCrA); ++k) {
        dev::gemm(mma, tCrA(_, _, k), tCrB(_, _, k), acc);
        mma.accumulate_ = GMMA::ScaleOut::One;
      }
      dev::warpgroup_commit_batch();
      dev::warpgroup_wait<0>();
      Tensor tCgD = thr.partition_C(gD);
      for (int i = 0; i < size(acc); ++i) tCgD(i) = acc(i);
    } else {
      TiledMMA mma = make_tiled_mma(dev::gmma_ss<T, Shape<_64, Int<N>, _16>, Cfg::kMajorA, Cfg::kMajorB>());
      ThrMMA thr = mma.get_thread_slice(t);
      Tensor tCrA = thr.make_fragment_A(thr.partition_A(sA));
      Tensor tCrB = thr.make_fragment_B(thr.partition_B(sB));
      Tensor acc = thr.partition_fragment_C(gD);
      mma.accumulate_ = GMMA::ScaleOut::Zero;
      dev::warpgroup_arrive();
      for (int k = 0; k < size<2>(tCrA); ++k) {
        dev::gemm(mma, tCrA(_, _, k), tCrB(_, _, k), acc);
        mma.accumulate_ = GMMA::ScaleOut::One;
      }
      dev::warpgroup_commit_batch();
      dev::warpgroup_wait<0>();
      Tensor tCgD = thr.partition_C(gD);
      for (int i = 0; i < size(acc); ++i) tCgD(i) = acc(i);
    }
  }
}

template <class T, int N, int Swizzle, bool AMN, bool BMN, bool ARegs>
dev::Error run_wgmma(const Args& a, dev::Stream stream) {
  using Cfg = WgmmaConfig<T, N, Swizzle, AMN, BMN, ARegs>;
  std::string ea, eb;
  typename Cfg::Params p{Cfg::tma_a(a.in0, &ea), Cfg::tma_b(a.in1, &eb), static_cast<float*>(a.out)};
  if (!ea.empty() || !eb.empty()) return dev::kErrorInvalidValue;
  const size_t smem = Cfg::kBytesA + Cfg::kBytesB + 8;
  auto kernel = wgmma_kernel<Cfg, T, N, ARegs>;
  if (const dev::Error e = dev::set_max_dynamic_smem(kernel, static_cast<int>(smem)); e != dev::kSuccess) return e;
  return MMK_LAUNCH(kernel, (dev::Dim3{1, 1, 1}), (dev::Dim3{128, 1, 1}), smem, stream, p);
}

template <int I>
dev::Error run_wgmma_case(const Args& a, dev::Stream stream) {
  constexpr WgmmaCase c = kWgmmaCases[I];
  using T = std::conditional_t<c.f16, cute::half_t, cute::bfloat16_t>;
  return run_wgmma<T, c.n, c.swizzle, c.a_mn, c.b_mn, c.a_regs>(a, stream);
}

// ---- TMA: one box at (row, col) of a rows x cols matrix with a row stride; the box's shared bytes out.
template <int Rows, int Cols, int Swizzle>
struct TmaConfig {
  using T = cute::bfloat16_t;
  using Smem = decltype(tile_to_shape(smem_atom<T, Swizzle, false>(), Shape<Int<Rows>, Int<Cols>>{}));
  static constexpr int kBytes = Rows * Cols * 2, kRows = Rows, kCols = Cols;
  static auto tma(const void* g, int rows, int cols, int ld, std::string* e) {
    Tensor t = make_tensor(make_gmem_ptr(static_cast<const T*>(g)), make_shape(rows, cols), make_stride(ld, Int<1>{}));
    return dev::make_tma_load(t, Smem{}, Shape<Int<Rows>, Int<Cols>>{}, e);
  }
  using Tma = decltype(tma(nullptr, 1, 1, 1, nullptr));
  struct Params {
    Tma tma;
    int rows, cols, row0, col0;
    uint32_t* out;
  };
};

template <class Cfg>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(128) tma_kernel(MMK_GRID_CONSTANT const typename Cfg::Params p) {
  if constexpr (!dev::kHopperCode<Cfg>) {
    return;
  } else {
    dev::SmemPtr<uint8_t> smem = dev::dynamic_smem<uint8_t>();
    Tensor s = make_tensor(dev::smem_iter(smem.template cast<typename Cfg::T>()), typename Cfg::Smem{});
    uint64_t* bar = (smem + Cfg::kBytes).template cast<uint64_t>().get();
    const int t = dev::thread_rank();
    if (t == 0) {
      dev::mbarrier_init(bar, 1);
      dev::fence_barrier_init();
    }
    dev::sync_threads();
    if (t == 0) {
      dev::mbarrier_arrive_expect_tx(bar, Cfg::kBytes);
      Tensor full = domain_offset(make_coord(p.row0, p.col0), p.tma.get_tma_tensor(make_shape(p.rows, p.cols)));
      Tensor g = local_tile(full, Shape<Int<Cfg::kRows>, Int<Cfg::kCols>>{}, make_coord(0, 0));
      auto [tg, ts] = tma_partition(p.tma, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(s), group_modes<0, 2>(g));
      dev::copy(p.tma.with(*bar), tg, ts);
    }
    dev::mbarrier_wait(bar, 0);
    dev::SmemPtr<uint32_t> words = smem.template cast<uint32_t>();
    for (int i = t; i < Cfg::kBytes / 4; i += 128) p.out[i] = words[i];
  }
}

template <int I>
dev::Error run_tma_case(const Args& a, dev::Stream stream) {
  constexpr TmaCase c = kTmaCases[I];
  using Cfg = TmaConfig<c.rows, c.cols, c.swizzle>;
  const int32_t* spec = a.spec;
  std::string e;
  typename Cfg::Params p{Cfg::tma(a.in0, spec[0], spec[1], spec[2], &e), spec[0], spec[1], spec[3], spec[4],
                         static_cast<uint32_t*>(a.out)};
  if (!e.empty()) return dev::kErrorInvalidValue;
  return MMK_LAUNCH(tma_kernel<Cfg>, (dev::Dim3{1, 1, 1}), (dev::Dim3{128, 1, 1}), Cfg::kBytes + 8, stream, p);
}

template <class F, size_t... I>
dev::Error dispatch(int index, F&& f, std::index_sequence<I...>) {
  dev::Error e = dev::kErrorInvalidValue;
  ((index == static_cast<int>(I) ? (e = f(std::integral_constant<int, I>{}), true) : false) || ...);
  return e;
}

}  // namespace

dev::Error run_sm90(const Args& a, dev::Stream stream) {
  if (!dev::sm90a_runs()) return dev::kErrorInvalidValue;  // the kernels are sm_90a code
  if (a.primitive == Primitive::Wgmma)
    return dispatch(a.mode, [&](auto i) { return run_wgmma_case<decltype(i)::value>(a, stream); },
                    std::make_index_sequence<std::size(kWgmmaCases)>{});
  return dispatch(a.mode, [&](auto i) { return run_tma_case<decltype(i)::value>(a, stream); },
                  std::make_index_sequence<std::size(kTmaCases)>{});
}

MMK_BACKEND_END
}  // namespace mmkernels::conformance::cuda
