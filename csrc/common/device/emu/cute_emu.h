// CuTe on the host SIMT emulation: emulated atoms with the traits of CuTe's own (the same fragment
// layouts, shapes and thread mappings, inherited from CuTe), whose operations run in the emulation
// runtime. Included by common/device/cute.h in MMK_EMULATION builds only; kernels never name these
// types (they take them from the aliases in cute.h).
//
// What differs from CuTe's own atoms, and why:
//  - wgmma (GMMA): the operation is issued to the runtime (warpgroup-collective, applied at the
//    matching wait); its accumulators are dev::EmuAccum, a float whose every access is checked against
//    in-flight wgmmas and the wgmma.fence rule. Its `fma` is a function object (CuTe calls `Op::fma`
//    with the registers exploded), so one definition serves every N.
//  - TMA: the copy goes to the runtime's TMA engine; make_tma_load() fills the tensor map with the
//    emulation's own encoding (CuTe leaves the CUtensorMap empty when the host compiler builds it).
//  - Shared memory: a CuTe tensor's iterator is dev::SmemPtr, so element accesses go through the
//    checkers; swizzled layouts are applied to the arena's addresses (1024-byte aligned) as the
//    hardware applies them to shared-window addresses.
#pragma once

#if !defined(MMK_EMULATION)
#error "cute_emu.h is for MMK_EMULATION builds"
#endif

#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>

#include "common/device/primitives.h"

// CuTe asks the platform for the shared-window address of a pointer (cvta.to.shared): the offset in the
// running block's arena.
#define CUTE_CVTA_GENERIC_TO_SHARED_ACTIVATED 1
inline size_t __cvta_generic_to_shared(const void* p) { return mmkernels::dev::emu::smem_address(p); }

#include <cute/tensor.hpp>
#include <cute/atom/copy_atom.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/copy_traits_sm75.hpp>
#include <cute/atom/copy_traits_sm80.hpp>
#include <cute/atom/mma_traits_sm80.hpp>

namespace mmkernels::dev {
MMK_BACKEND_BEGIN

// ---- shared memory as a CuTe iterator: dev::SmemPtr carries the element type; CuTe finds these by
// argument-dependent lookup.
template <class NewT, class T> inline auto recast_ptr(SmemPtr<T> const& p) {
  using U = std::conditional_t<std::is_const_v<T>, const NewT, NewT>;
  return SmemPtr<U>(reinterpret_cast<U*>(p.get()));
}
template <class T> inline T* raw_pointer_cast(SmemPtr<T> const& p) { return p.get(); }

// A wgmma accumulator register: a float whose every access by the kernel is checked (an in-flight
// wgmma writing it; the wgmma.fence rule).
struct EmuAccum : emu::AccumReg {
  EmuAccum() = default;
  EmuAccum(float x) { v = x; }  // NOLINT: a register initialised from a value
  EmuAccum(const EmuAccum& o) : emu::AccumReg() { v = static_cast<float>(o); }
  operator float() const {
    emu::accum_access(const_cast<EmuAccum*>(this), __builtin_return_address(0));
    return v;
  }
  EmuAccum& operator=(float x) {
    emu::accum_access(this, __builtin_return_address(0));
    v = x;
    return *this;
  }
  EmuAccum& operator=(const EmuAccum& o) { return *this = static_cast<float>(o); }
  EmuAccum& operator+=(float x) { return *this = static_cast<float>(*this) + x; }
  EmuAccum& operator-=(float x) { return *this = static_cast<float>(*this) - x; }
  EmuAccum& operator*=(float x) { return *this = static_cast<float>(*this) * x; }
};

namespace emu_atoms {


template <class T> constexpr emu::WgmmaType wgmma_type() {
  if constexpr (std::is_same_v<T, cute::bfloat16_t>) return emu::WgmmaType::BF16;
  else {
    static_assert(std::is_same_v<T, cute::half_t>, "the emulated wgmma takes bf16 or fp16 operands");
    return emu::WgmmaType::F16;
  }
}

// The emulated wgmma of CuTe's op `Real` (SM90_64xNx16_F32{BF16,F16}..._{SS,RS}).
template <class Real, bool ARegs, cute::GMMA::Major MajorA, cute::GMMA::Major MajorB>
struct Gmma {
  using Traits = cute::MMA_Traits<Real>;
  static constexpr int N = cute::size<1>(typename Traits::Shape_MNK{});
  using DRegisters = void;
  using ARegisters = typename Real::ARegisters;
  using BRegisters = typename Real::BRegisters;
  using CRegisters = EmuAccum[N / 2];

  struct Issue {
    template <class... Args>
    void operator()(Args&&... args) const {
      static_assert(sizeof...(Args) == (ARegs ? 4 : 1) + 1 + N / 2 + 1, "unexpected wgmma operands");
      auto t = std::forward_as_tuple(args...);
      constexpr int kA = ARegs ? 4 : 1;
      emu::WgmmaShape shape;
      shape.n = N;
      shape.type = wgmma_type<typename Traits::ValTypeA>();
      shape.a_regs = ARegs;
      shape.a_mn_major = MajorA == cute::GMMA::Major::MN;
      shape.b_mn_major = MajorB == cute::GMMA::Major::MN;
      shape.scale_d = std::get<kA + 1 + N / 2>(t) == cute::GMMA::ScaleOut::One;
      uint32_t a[4] = {};
      uint64_t desc_a = 0;
      if constexpr (ARegs) {
        // The registers are CuTe's recast of a 16-bit fragment: read their bytes (see -fno-strict-aliasing
        // in CMakeLists.txt for why the emulation cannot rely on typed reads here).
        [&]<size_t... I>(std::index_sequence<I...>) { (std::memcpy(&a[I], &std::get<I>(t), 4), ...); }(
            std::make_index_sequence<4>{});
      } else {
        desc_a = static_cast<uint64_t>(std::get<0>(t));
      }
      const uint64_t desc_b = static_cast<uint64_t>(std::get<kA>(t));
      emu::AccumReg* d[N / 2];
      [&]<size_t... I>(std::index_sequence<I...>) {
        ((d[I] = static_cast<emu::AccumReg*>(&std::get<kA + 1 + I>(t))), ...);
      }(std::make_index_sequence<N / 2>{});
      emu::wgmma_issue(shape, desc_a, ARegs ? a : nullptr, desc_b, d, emu::call_site());
    }
  };
  static constexpr Issue fma{};
};

// TMA loads: the non-executable atom (holds the tensor map) and the executable one (.with(mbarrier)).
struct TmaLoad {};
struct TmaLoadOp {
  struct Copy {
    template <class... Crd>
    void operator()(void const* desc, uint64_t* mbar, uint64_t /*cache_hint*/, void* dst, Crd const&... crd) const {
      const int32_t coords[] = {static_cast<int32_t>(crd)...};
      emu::tma_load(desc, mbar, dst, coords, static_cast<int>(sizeof...(Crd)), emu::call_site());
    }
  };
  static constexpr Copy copy{};
};

// ---- sm_80 atoms: mma.sync m16n8k16, ldmatrix, cp.async (zero-filling when its predicate is false).
template <class Real, emu::MmaKind kKind>
struct Mma {
  using DRegisters = float[4];
  using ARegisters = uint32_t[4];
  using BRegisters = uint32_t[2];
  using CRegisters = float[4];
  struct Fma {
    void operator()(float& d0, float& d1, float& d2, float& d3, uint32_t const& a0, uint32_t const& a1,
                    uint32_t const& a2, uint32_t const& a3, uint32_t const& b0, uint32_t const& b1, float const& c0,
                    float const& c1, float const& c2, float const& c3) const {
      const uint32_t a[4] = {a0, a1, a2, a3}, b[2] = {b0, b1};
      const float c[4] = {c0, c1, c2, c3};
      float d[4];
      emu::mma(kKind, d, a, b, c, emu::call_site());
      d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3];
    }
  };
  static constexpr Fma fma{};
};

// ldmatrix: CuTe hands the atom the lane's row as a shared-memory element (a checked reference here).
template <class Real, int kNum, bool kTrans>
struct Ldsm {
  using SRegisters = typename Real::SRegisters;
  using DRegisters = typename Real::DRegisters;
  struct Copy {
    template <class Row, class... Regs>
    void operator()(Row const& row, Regs&... regs) const {
      static_assert(sizeof...(Regs) == kNum, "ldmatrix registers");
      uint32_t r[kNum];
      emu::ldmatrix(r, kNum, kTrans, row.ptr(), emu::call_site());
      int i = 0;
      ((regs = r[i++]), ...);
    }
  };
  static constexpr Copy copy{};
};

struct CpAsyncZfill {
  using SRegisters = cute::uint128_t[1];
  using DRegisters = cute::uint128_t[1];
  struct Copy {
    template <class Dst>
    void operator()(cute::uint128_t const& src, Dst&& dst, bool pred) const {
      emu::cp_async(dst.ptr(), &src, 16, pred ? 16 : 0, emu::call_site());
    }
  };
  static constexpr Copy copy{};
};

}  // namespace emu_atoms

MMK_BACKEND_END
}  // namespace mmkernels::dev

namespace cute {

template <class Real, mmkernels::dev::emu::MmaKind kKind>
struct MMA_Traits<mmkernels::dev::emu_atoms::Mma<Real, kKind>> : MMA_Traits<Real> {};

template <class Real, int kNum, bool kTrans>
struct Copy_Traits<mmkernels::dev::emu_atoms::Ldsm<Real, kNum, kTrans>> : Copy_Traits<Real> {};

// The zero-filling cp.async: CuTe's traits for SM80_CP_ASYNC_CACHEGLOBAL_ZFILL, with the emulated copy.
template <>
struct Copy_Traits<mmkernels::dev::emu_atoms::CpAsyncZfill> {
  using ThrID = Layout<_1>;
  using SrcLayout = Layout<Shape<_1, Int<128>>>;
  using DstLayout = Layout<Shape<_1, Int<128>>>;
  using RefLayout = SrcLayout;
  bool pred = true;
  CUTE_HOST_DEVICE constexpr Copy_Traits with(bool p) const { return {p}; }
  template <class TS, class SLayout, class TD, class DLayout>
  CUTE_HOST_DEVICE friend constexpr void copy_unpack(Copy_Traits const& traits, Tensor<TS, SLayout> const& src,
                                                     Tensor<TD, DLayout>& dst) {
    static_assert(is_gmem<TS>::value, "Expected gmem source for cp.async.");
    static_assert(is_smem<TD>::value, "Expected smem destination for cp.async.");
    Tensor rS = recast<uint128_t>(src);
    Tensor rD = recast<uint128_t>(dst);
    CUTE_STATIC_ASSERT_V(size(rS) == Int<1>{}, "cp.async copies 16 bytes");
    mmkernels::dev::emu_atoms::CpAsyncZfill::copy(rS[0], rD[0], traits.pred);
  }
};

template <class Real, bool ARegs, GMMA::Major MajorA, GMMA::Major MajorB>
struct MMA_Traits<mmkernels::dev::emu_atoms::Gmma<Real, ARegs, MajorA, MajorB>> : MMA_Traits<Real> {
  using ValTypeD = mmkernels::dev::EmuAccum;
  using ValTypeC = mmkernels::dev::EmuAccum;
};

// The TMA load atom's traits: CuTe's SM90_TMA_LOAD traits with the emulated operation.
template <class NumBitsPerTMA, class AuxParams_>
struct Copy_Traits<mmkernels::dev::emu_atoms::TmaLoad, NumBitsPerTMA, AuxParams_> {
  using ThrID = Layout<_1>;
  using SrcLayout = Layout<Shape<_1, NumBitsPerTMA>>;
  using DstLayout = Layout<Shape<_1, NumBitsPerTMA>>;
  using RefLayout = SrcLayout;
  TmaDescriptor tma_desc_;
  using AuxParams = AuxParams_;
  AuxParams aux_params_;

  CUTE_HOST_DEVICE constexpr TmaDescriptor const* get_tma_descriptor() const { return &tma_desc_; }
  CUTE_HOST_DEVICE constexpr Copy_Traits<mmkernels::dev::emu_atoms::TmaLoadOp, NumBitsPerTMA> with(
      uint64_t& tma_mbar, [[maybe_unused]] uint16_t const& multicast_mask = 0,
      TMA::CacheHintSm90 const& cache_hint = TMA::CacheHintSm90::EVICT_NORMAL) const {
    return {&tma_desc_, &tma_mbar, static_cast<uint64_t>(cache_hint)};
  }
  template <class GShape>
  CUTE_HOST_DEVICE constexpr auto get_tma_tensor(GShape const& g_shape) const {
    static_assert(is_congruent<decltype(g_shape), decltype(aux_params_.g_stride_)>::value);
    return make_coord_tensor(make_layout(g_shape, aux_params_.g_stride_));
  }
  template <class TS, class SLayout, class TD, class DLayout>
  CUTE_HOST_DEVICE friend constexpr void copy_unpack(Copy_Traits const&, Tensor<TS, SLayout> const&,
                                                     Tensor<TD, DLayout>&) = delete;
};

template <class NumBitsPerTMA>
struct Copy_Traits<mmkernels::dev::emu_atoms::TmaLoadOp, NumBitsPerTMA>
    : TMA_LOAD_Unpack<mmkernels::dev::emu_atoms::TmaLoadOp, NumBitsPerTMA> {
  using ThrID = Layout<_1>;
  using SrcLayout = Layout<Shape<_1, NumBitsPerTMA>>;
  using DstLayout = Layout<Shape<_1, NumBitsPerTMA>>;
  using RefLayout = SrcLayout;
  tuple<TmaDescriptor const*, uint64_t*, uint64_t> const opargs_;
  CUTE_HOST_DEVICE Copy_Traits(TmaDescriptor const* desc, uint64_t* mbar, uint64_t cache) : opargs_(desc, mbar, cache) {}
  CUTE_HOST_DEVICE constexpr TmaDescriptor const* get_tma_descriptor() const { return get<0>(opargs_); }
};

}  // namespace cute

namespace mmkernels::dev {
MMK_BACKEND_BEGIN
namespace emu_atoms {

// Fills the TMA atom's tensor map with the emulation's encoding, from the same quantities CuTe's
// make_tma_copy_desc hands to cuTensorMapEncodeTiled (the box from the atom's TMA basis, the global
// shape and byte strides through CuTe's own fill_tma_gmem_shape_stride). Returns an error message.
template <class TiledTma, class GEngine, class GLayout>
std::string encode_tma(TiledTma& tma, cute::Tensor<GEngine, GLayout> const& gtensor) {
  using namespace cute;
  using Traits = typename TiledTma::Traits;
  using Aux = typename Traits::AuxParams;
  using TmaType = typename GEngine::value_type;
  using Basis = typename Aux::TmaGmemBasis;
  constexpr int rank = decltype(cute::rank(Basis{}))::value;
  cute::array<uint64_t, 5> shape = {1, 1, 1, 1, 1};
  cute::array<uint64_t, 5> stride = {0, 0, 0, 0, 0};
  cute::detail::fill_tma_gmem_shape_stride(gtensor, cute::stride(Basis{}), shape, stride);
  emu::TmaEncode e;
  e.elem_bytes = static_cast<int>(sizeof_bits_v<TmaType> / 8);
  e.rank = rank;
  e.global = raw_pointer_cast(gtensor.data());
  for (int d = 0; d < 5; ++d) {
    e.dims[d] = shape[d];
    e.strides[d] = stride[d] * static_cast<uint64_t>(e.elem_bytes);
  }
  if (stride[0] != 1) return "TMA: the global tensor's first mode must be contiguous (stride 1)";
  for_each(make_seq<rank>{}, [&](auto i) { e.box[i] = static_cast<uint32_t>(size<i>(Basis{})); });
  using Sw = std::remove_cvref_t<typename Aux::TmaSwizzle>;
  static_assert(Sw::num_base == 4 || Sw::num_bits == 0, "TMA swizzles other than 16-byte based are not emulated");
  e.swizzle_bytes = Sw::num_bits == 0 ? 0 : (16 << Sw::num_bits);
  TmaDescriptor* desc = const_cast<TmaDescriptor*>(tma.get_tma_descriptor());
  return emu::tma_encode(desc, e);
}

}  // namespace emu_atoms
MMK_BACKEND_END
}  // namespace mmkernels::dev
