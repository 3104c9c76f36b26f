// Host implementation of the device-primitive layer (see primitives.h) for the SIMT emulation: each
// primitive forwards to the emulation runtime, which runs it with the semantics the PTX ISA documents
// and checks its use. Call sites are recorded (default arguments) for reports.
#pragma once

#if !defined(MMK_EMULATION)
#error "primitives_emu.h is for MMK_EMULATION builds; include common/device/primitives.h"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "common/device/emu/runtime.h"
#include "common/device/types.h"

namespace mmkernels::dev {
MMK_BACKEND_BEGIN

using emu::Site;

// ---- indices
inline Dim3 thread_idx() { return emu::thread_idx(); }
inline Dim3 block_idx() { return emu::block_idx(); }
inline Dim3 block_dim() { return emu::block_dim(); }
inline Dim3 grid_dim() { return emu::grid_dim(); }

// ---- barriers
inline void sync_threads(Site site = MMK_EMU_SITE) { emu::sync_threads(site); }
inline void sync_warp(uint32_t mask = kFullMask, Site site = MMK_EMU_SITE) { emu::sync_warp(mask, site); }

// ---- warp shuffles and votes
namespace detail {
template <typename T> inline T shfl_any(emu::ShflMode mode, uint32_t mask, T v, int arg, int width, Site site) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move values of at most 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  u = emu::shfl(mode, mask, u, arg, width, site);
  T r;
  std::memcpy(&r, &u, sizeof(T));
  return r;
}
}  // namespace detail
template <typename T> inline T shfl(uint32_t mask, T v, int src, int width = kWarpSize, Site site = MMK_EMU_SITE) {
  return detail::shfl_any(emu::ShflMode::Idx, mask, v, src, width, site);
}
template <typename T>
inline T shfl_xor(uint32_t mask, T v, int lane_mask, int width = kWarpSize, Site site = MMK_EMU_SITE) {
  return detail::shfl_any(emu::ShflMode::Xor, mask, v, lane_mask, width, site);
}
template <typename T>
inline T shfl_up(uint32_t mask, T v, unsigned delta, int width = kWarpSize, Site site = MMK_EMU_SITE) {
  return detail::shfl_any(emu::ShflMode::Up, mask, v, static_cast<int>(delta), width, site);
}
template <typename T>
inline T shfl_down(uint32_t mask, T v, unsigned delta, int width = kWarpSize, Site site = MMK_EMU_SITE) {
  return detail::shfl_any(emu::ShflMode::Down, mask, v, static_cast<int>(delta), width, site);
}
inline uint32_t ballot(uint32_t mask, bool pred, Site site = MMK_EMU_SITE) {
  return emu::vote(emu::VoteMode::Ballot, mask, pred, site);
}
inline bool any(uint32_t mask, bool pred, Site site = MMK_EMU_SITE) {
  return emu::vote(emu::VoteMode::Any, mask, pred, site) != 0;
}
inline bool all(uint32_t mask, bool pred, Site site = MMK_EMU_SITE) {
  return emu::vote(emu::VoteMode::All, mask, pred, site) != 0;
}

// ---- shared memory. Every element access goes through SmemRef, which runs the checkers (bounds,
// races, reads of never-written bytes) before touching the arena.
template <typename T>
class SmemRef {
  using V = std::remove_const_t<T>;

 public:
  explicit SmemRef(T* p) : p_(p) {}
  operator V() const {
    V v;
    std::memcpy(&v, emu::smem_access(p_, sizeof(T), false), sizeof(T));
    return v;
  }
  // Explicit conversions through the element type (e.g. float(bf16 element)), as on the device.
  template <typename U>
    requires(!std::is_same_v<U, V> && std::is_constructible_v<U, V>)
  explicit operator U() const {
    return static_cast<U>(static_cast<V>(*this));
  }
  SmemRef& operator=(const V& v) requires(!std::is_const_v<T>) {
    std::memcpy(emu::smem_access(p_, sizeof(T), true), &v, sizeof(T));
    return *this;
  }
  SmemRef& operator=(const SmemRef& o) requires(!std::is_const_v<T>) { return *this = static_cast<V>(o); }
  // The element's host address (for the primitives that take shared addresses: ldmatrix, cp.async).
  T* ptr() const { return p_; }
  template <typename U> SmemRef& operator+=(const U& x) requires(!std::is_const_v<T>) {
    return *this = static_cast<V>(static_cast<V>(*this) + x);
  }
  template <typename U> SmemRef& operator-=(const U& x) requires(!std::is_const_v<T>) {
    return *this = static_cast<V>(static_cast<V>(*this) - x);
  }
  template <typename U> SmemRef& operator*=(const U& x) requires(!std::is_const_v<T>) {
    return *this = static_cast<V>(static_cast<V>(*this) * x);
  }

 private:
  T* p_;
};

template <typename T>
class SmemPtr {
 public:
  // An iterator for CuTe tensors too (common/device/cute.h): elements are read and written through SmemRef.
  using value_type = std::remove_const_t<T>;
  using element_type = T;
  using reference = SmemRef<T>;

  SmemPtr() = default;
  SmemPtr(T* p) : p_(p) {}  // NOLINT: implicit, as CuTe rebuilds iterators from raw pointers (swizzles)
  SmemRef<T> operator[](int64_t i) const { return SmemRef<T>(p_ + i); }
  SmemRef<T> operator*() const { return SmemRef<T>(p_); }
  SmemPtr operator+(int64_t i) const { return SmemPtr(p_ + i); }
  SmemPtr& operator+=(int64_t i) {
    p_ += i;
    return *this;
  }
  template <typename U> SmemPtr<U> cast() const { return SmemPtr<U>(reinterpret_cast<U*>(p_)); }
  friend bool operator==(SmemPtr a, SmemPtr b) { return a.p_ == b.p_; }
  friend bool operator<(SmemPtr a, SmemPtr b) { return a.p_ < b.p_; }
  template <typename U = T>
    requires(!std::is_const_v<U>)
  operator SmemPtr<const U>() const { return SmemPtr<const U>(p_); }
  // For the primitives (ldmatrix, cp.async, mbarriers): the host address in the block's arena.
  T* host() const { return p_; }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
};

template <typename T> inline SmemPtr<T> dynamic_smem() { return SmemPtr<T>(static_cast<T*>(emu::smem_base())); }

// ---- asynchronous copies
template <int Bytes, typename T>
inline void cp_async(SmemPtr<T> dst, const void* src, int src_bytes = Bytes, Site site = MMK_EMU_SITE) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
  emu::cp_async(const_cast<std::remove_const_t<T>*>(dst.host()), src, Bytes, src_bytes, site);
}
inline void cp_async_commit(Site site = MMK_EMU_SITE) { emu::cp_async_commit(site); }
template <int N> inline void cp_async_wait(Site site = MMK_EMU_SITE) { emu::cp_async_wait(N, site); }

// ---- ldmatrix / mma
template <int N, bool Trans, typename T>
inline void ldmatrix(uint32_t (&r)[N], SmemPtr<T> row, Site site = MMK_EMU_SITE) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
  emu::ldmatrix(r, N, Trans, row.host(), site);
}
template <typename T>
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                         Site site = MMK_EMU_SITE) {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, half>, "mma_m16n8k16 takes bf16 or half operands");
  emu::mma(std::is_same_v<T, bf16> ? emu::MmaKind::BF16_M16N8K16 : emu::MmaKind::F16_M16N8K16, d, a, b, c, site);
}

// ---- a 16-byte global store (STG.128 on the device)
inline void store16(void* dst, const U32x4& v) { std::memcpy(dst, &v, 16); }

// ---- conversions
inline float to_float(float x) { return x; }
inline float to_float(half x) { return half_bits_to_float(x.bits); }
inline float to_float(bf16 x) { return bf16_bits_to_float(x.bits); }
template <typename T> inline T from_float(float x);
template <> inline float from_float<float>(float x) { return x; }
template <> inline half from_float<half>(float x) { return half{float_to_half_bits(x)}; }
template <> inline bf16 from_float<bf16>(float x) { return bf16{float_to_bf16_bits(x)}; }
template <typename T> inline uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, bf16>) return uint32_t(float_to_bf16_bits(lo)) | (uint32_t(float_to_bf16_bits(hi)) << 16);
  else return uint32_t(float_to_half_bits(lo)) | (uint32_t(float_to_half_bits(hi)) << 16);
}

// a*b rounded to float (the emulation is compiled with -ffp-contract=off: nothing is fused).
inline float mul_rn(float a, float b) { return a * b; }

// 2^x. The device's ex2.approx differs from this by at most ~2^-22 relative.
inline float exp2_fast(float x) { return std::exp2(x); }

// CTA-to-CTA hand-offs (primitives_cuda.h). The emulation runs blocks one after another in launch
// order, so a flag is either set by an earlier block or the wait depends on a later one (which a GPU
// may never run alongside): reported.
inline void wait_flag(const int* flag, int value, Site site = MMK_EMU_SITE) { emu::wait_flag(flag, value, site); }
inline void set_flag(int* flag, int value) { *flag = value; }

// ---- sm_90a (Hopper): warp specialization, mbarriers, named barriers, wgmma synchronization. The
// tensor-core and TMA operations themselves are CuTe atoms (common/device/cute.h).
inline bool elect_one_sync(Site site = MMK_EMU_SITE) { return emu::elect_one(kFullMask, site); }
// bar.sync / bar.arrive on named barrier `id` (1..15; 0 is __syncthreads') for `count` threads.
inline void named_barrier_sync(int id, int count, Site site = MMK_EMU_SITE) { emu::named_barrier(id, count, true, site); }
inline void named_barrier_arrive(int id, int count, Site site = MMK_EMU_SITE) {
  emu::named_barrier(id, count, false, site);
}
template <int Regs> inline void setmaxnreg_inc(Site site = MMK_EMU_SITE) { emu::setmaxnreg(Regs, true, site); }
template <int Regs> inline void setmaxnreg_dec(Site site = MMK_EMU_SITE) { emu::setmaxnreg(Regs, false, site); }
inline void fence_proxy_async(Site site = MMK_EMU_SITE) { emu::fence_proxy_async(site); }
// fence.mbarrier_init: the init is made visible by the __syncthreads that must follow it (checked).
inline void fence_barrier_init(Site = MMK_EMU_SITE) {}
inline void mbarrier_init(uint64_t* bar, int count, Site site = MMK_EMU_SITE) { emu::mbarrier_init(bar, count, site); }
inline void mbarrier_arrive(uint64_t* bar, Site site = MMK_EMU_SITE) { emu::mbarrier_arrive(bar, 0, site); }
inline void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes, Site site = MMK_EMU_SITE) {
  emu::mbarrier_arrive(bar, bytes, site);
}
inline void mbarrier_expect_tx(uint64_t* bar, uint32_t bytes, Site site = MMK_EMU_SITE) {
  emu::mbarrier_expect_tx(bar, bytes, site);
}
inline void mbarrier_wait(uint64_t* bar, int phase, Site site = MMK_EMU_SITE) { emu::mbarrier_wait(bar, phase, site); }
inline void warpgroup_arrive(Site site = MMK_EMU_SITE) { emu::wgmma_fence(site); }
inline void warpgroup_commit_batch(Site site = MMK_EMU_SITE) { emu::wgmma_commit(site); }
template <int N> inline void warpgroup_wait(Site site = MMK_EMU_SITE) {
  static_assert(N >= 0 && N <= 7, "wgmma.wait_group takes 0..7");
  emu::wgmma_wait(N, site);
}

// ---- launches: every CUDA thread runs `kernel(args...)` as a fiber; parameters are copied per
// thread, as kernel parameters are by value on the device.
template <typename... P, typename... A>
inline Error launch(const char* name, void (*kernel)(P...), Dim3 grid, Dim3 block, size_t smem, Stream /*stream*/,
                    A&&... args) {
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  const std::function<void()> body = [&params, kernel] { std::apply(kernel, params); };
  return emu::launch(name, reinterpret_cast<const void*>(kernel), body, grid, block, smem);
}
template <typename... P> inline Error set_max_dynamic_smem(void (*kernel)(P...), int bytes) {
  return emu::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
}
inline int max_dynamic_smem_optin() { return emu::max_dynamic_smem_optin(); }
inline int multiprocessor_count() { return emu::multiprocessor_count(); }
// The emulated architecture (emulated_cuda(arch=...)): 80 or 90.
inline int device_arch() { return emu::arch(); }
inline Error stream_capturing(Stream, bool* capturing) {  // the emulation has no graphs
  *capturing = false;
  return kSuccess;
}
// Whether the sm_90a kernels run (primitives_cuda.h): the emulation runs them when it emulates sm_90a.
inline bool sm90a_runs() { return emu::arch() == 90; }

MMK_BACKEND_END
}  // namespace mmkernels::dev
