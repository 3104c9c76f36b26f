// CuTe for mmkernels' tensor-core kernels, on both backends: the one header a kernel written on
// CUTLASS/CuTe includes (with common/device/primitives.h for everything that is not a CuTe atom).
//
// Kernels use CuTe's layouts, tensors, partitioning, TiledMMA/TiledCopy and algorithms directly; what
// touches the hardware goes through the names below, which are CuTe's own atoms on the GPU and
// emulated atoms with the same traits in the host emulation (common/device/emu/cute_emu.h):
//
//   dev::gmma_ss<T, TileShape, MajorA, MajorB>()   wgmma op, both operands in shared memory
//   dev::gmma_rs<T, TileShape, MajorB>()           wgmma op, A from registers (K-major)
//   dev::smem_iter(SmemPtr<T>)                     a CuTe shared-memory iterator (checked in the emulation)
//   dev::smem_ptr_of(tensor(i, j))                 an element's SmemPtr, swizzle applied (for cp.async)
//   dev::make_tma_load(gtensor, smem_layout, tile, &error)   host: a TMA load atom (tensor map encoded)
//   dev::atom::Sm80Mma<T>, LdsmN, LdsmT, CpAsyncZfill   the sm_80 atoms (mma.sync, ldmatrix, cp.async)
//   dev::gemm(tiled_mma, A, B, C)                  cute::gemm, its call site named in emulation reports
//   dev::copy(tiled_copy, src, dst)                cute::copy likewise (TMA: tma.with(barrier))
//   dev::warpgroup_fence_operand(tensor)           keeps the compiler from moving accumulator accesses
//   dev::kHopperCode<T>                            false in the sm_80 device pass of an nvcc build
//
// Accumulators are `float` on the GPU and dev::EmuAccum (a checked float) in the emulation: kernels
// read and write them as floats and never take their address.
#pragma once

#include <string>

#include "common/device/primitives.h"

#if defined(MMK_EMULATION)
#include "common/device/emu/cute_emu.h"
#else
#include <cute/tensor.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/copy_atom.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/atom/copy_traits_sm75.hpp>
#include <cute/atom/copy_traits_sm80.hpp>
#include <cute/atom/mma_traits_sm80.hpp>
#endif

namespace mmkernels::dev {
MMK_BACKEND_BEGIN

namespace GMMA = cute::GMMA;

// Whether this compilation pass may contain sm_90a instructions: false in the device pass of an nvcc
// build for an older architecture, where an sm_90a kernel's body is discarded (it is never launched
// there: the launchers check the device). A template so that `if constexpr` discards the body.
#if defined(__CUDA_ARCH__) && !defined(MMK_EMULATION) && !(__CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL))
template <class T> constexpr bool kHopperCode = false;
#else
template <class T> constexpr bool kHopperCode = true;
#endif

template <class T, class TileShape, GMMA::Major MajorA, GMMA::Major MajorB>
MMK_HOST_DEVICE auto gmma_ss() {
  using Real = decltype(cute::SM90::GMMA::ss_op_selector<T, T, float, TileShape, MajorA, MajorB>());
#if defined(MMK_EMULATION)
  return emu_atoms::Gmma<Real, false, MajorA, MajorB>{};
#else
  return Real{};
#endif
}

template <class T, class TileShape, GMMA::Major MajorB>
MMK_HOST_DEVICE auto gmma_rs() {
  using Real = decltype(cute::SM90::GMMA::rs_op_selector<T, T, float, TileShape, GMMA::Major::K, MajorB>());
#if defined(MMK_EMULATION)
  return emu_atoms::Gmma<Real, true, GMMA::Major::K, MajorB>{};
#else
  return Real{};
#endif
}

// sm_80 atoms: mma.sync m16n8k16 (float32 accumulation), ldmatrix x4 (plain / transposed), cp.async of
// 16 bytes that zero-fills when its predicate is false (.with(pred)).
namespace atom {
#if defined(MMK_EMULATION)
template <class T>
using Sm80Mma = emu_atoms::Mma<
    std::conditional_t<std::is_same_v<T, cute::bfloat16_t>, cute::SM80_16x8x16_F32BF16BF16F32_TN, cute::SM80_16x8x16_F32F16F16F32_TN>,
    std::is_same_v<T, cute::bfloat16_t> ? emu::MmaKind::BF16_M16N8K16 : emu::MmaKind::F16_M16N8K16>;
using LdsmN = emu_atoms::Ldsm<cute::SM75_U32x4_LDSM_N, 4, false>;
using LdsmT = emu_atoms::Ldsm<cute::SM75_U16x8_LDSM_T, 4, true>;
using CpAsyncZfill = emu_atoms::CpAsyncZfill;
#else
template <class T>
using Sm80Mma = std::conditional_t<std::is_same_v<T, cute::bfloat16_t>, cute::SM80_16x8x16_F32BF16BF16F32_TN,
                                   cute::SM80_16x8x16_F32F16F16F32_TN>;
using LdsmN = cute::SM75_U32x4_LDSM_N;
using LdsmT = cute::SM75_U16x8_LDSM_T;
using CpAsyncZfill = cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>;
#endif
}  // namespace atom

template <class T> MMK_HOST_DEVICE auto smem_iter(SmemPtr<T> p) {
#if defined(MMK_EMULATION)
  return cute::make_smem_ptr(p);
#else
  return cute::make_smem_ptr(p.get());
#endif
}

// The SmemPtr of an element of a shared-memory CuTe tensor, swizzle applied (`tensor(i, j)` is a T& on
// the GPU and a checked reference in the emulation): for the primitives that take shared addresses
// (cp.async) on swizzled layouts.
#if defined(MMK_EMULATION)
template <class T> MMK_DEVICE SmemPtr<T> smem_ptr_of(SmemRef<T> ref) { return SmemPtr<T>(ref.ptr()); }
#else
template <class T> MMK_DEVICE SmemPtr<T> smem_ptr_of(T& ref) { return SmemPtr<T>(&ref); }
#endif

// A TMA load atom for tiles `tile` of the global tensor `g` into shared memory laid out as `s`
// (host side). The global tensor must satisfy TMA's rules (16-byte aligned base, 16-byte multiple
// strides: the glue makes copies where it does not); `error` is set when the tensor map is invalid.
template <class GEngine, class GLayout, class SLayout, class CtaTile>
auto make_tma_load(cute::Tensor<GEngine, GLayout> const& g, SLayout const& s, CtaTile const& tile, std::string* error) {
#if defined(MMK_EMULATION)
  auto tma = cute::make_tma_copy(emu_atoms::TmaLoad{}, g, s, tile, cute::Int<1>{});
  *error = emu_atoms::encode_tma(tma, g);
  return tma;
#else
  error->clear();
  return cute::make_tma_copy(cute::SM90_TMA_LOAD{}, g, s, tile, cute::Int<1>{});
#endif
}

#if defined(MMK_EMULATION)
template <class TiledMma, class TA, class TB, class TC>
inline void gemm(TiledMma const& mma, TA const& a, TB const& b, TC&& c, emu::Site site = MMK_EMU_SITE) {
  emu::set_call_site(site);
  cute::gemm(mma, a, b, c);
}
template <class Copy, class TS, class TD>
inline void copy(Copy const& copy, TS const& src, TD&& dst, emu::Site site = MMK_EMU_SITE) {
  emu::set_call_site(site);
  cute::copy(copy, src, dst);
}
template <class Tensor> inline void warpgroup_fence_operand(Tensor&) {}
#else
template <class TiledMma, class TA, class TB, class TC>
MMK_DEVICE void gemm(TiledMma const& mma, TA const& a, TB const& b, TC&& c) {
  cute::gemm(mma, a, b, c);
}
template <class Copy, class TS, class TD> MMK_DEVICE void copy(Copy const& copy, TS const& src, TD&& dst) {
  cute::copy(copy, src, dst);
}
template <class Tensor> MMK_DEVICE void warpgroup_fence_operand(Tensor& t) { cute::warpgroup_fence_operand(t); }
#endif

MMK_BACKEND_END
}  // namespace mmkernels::dev
