// GPU implementation of the device-primitive layer (see primitives.h): each primitive is the CUDA
// intrinsic or the one PTX instruction it names. This is the only file with inline assembly.
#pragma once

#if !defined(__CUDACC__)
#error "primitives_cuda.h is compiled by nvcc only; include common/device/primitives.h"
#endif

#include <cuda_runtime.h>
#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "common/device/types.h"

namespace mmkernels::dev {
MMK_BACKEND_BEGIN

// ---- indices
MMK_DEVICE Dim3 thread_idx() { return {threadIdx.x, threadIdx.y, threadIdx.z}; }
MMK_DEVICE Dim3 block_idx() { return {blockIdx.x, blockIdx.y, blockIdx.z}; }
MMK_DEVICE Dim3 block_dim() { return {blockDim.x, blockDim.y, blockDim.z}; }
MMK_DEVICE Dim3 grid_dim() { return {gridDim.x, gridDim.y, gridDim.z}; }

// ---- barriers
MMK_DEVICE void sync_threads() { __syncthreads(); }
MMK_DEVICE void sync_warp(uint32_t mask = kFullMask) { __syncwarp(mask); }

// ---- warp shuffles and votes (T of 4 or 8 bytes)
template <typename T> MMK_DEVICE T shfl(uint32_t mask, T v, int src, int width = kWarpSize) {
  return __shfl_sync(mask, v, src, width);
}
template <typename T> MMK_DEVICE T shfl_xor(uint32_t mask, T v, int lane_mask, int width = kWarpSize) {
  return __shfl_xor_sync(mask, v, lane_mask, width);
}
template <typename T> MMK_DEVICE T shfl_up(uint32_t mask, T v, unsigned delta, int width = kWarpSize) {
  return __shfl_up_sync(mask, v, delta, width);
}
template <typename T> MMK_DEVICE T shfl_down(uint32_t mask, T v, unsigned delta, int width = kWarpSize) {
  return __shfl_down_sync(mask, v, delta, width);
}
MMK_DEVICE uint32_t ballot(uint32_t mask, bool pred) { return __ballot_sync(mask, pred); }
MMK_DEVICE bool any(uint32_t mask, bool pred) { return __any_sync(mask, pred); }
MMK_DEVICE bool all(uint32_t mask, bool pred) { return __all_sync(mask, pred); }

// ---- shared memory: a typed pointer into the block's shared memory.
template <typename T>
class SmemPtr {
 public:
  SmemPtr() = default;
  MMK_DEVICE explicit SmemPtr(T* p) : p_(p) {}
  MMK_DEVICE T& operator[](int64_t i) const { return p_[i]; }
  MMK_DEVICE T& operator*() const { return *p_; }
  MMK_DEVICE SmemPtr operator+(int64_t i) const { return SmemPtr(p_ + i); }
  MMK_DEVICE SmemPtr& operator+=(int64_t i) { p_ += i; return *this; }
  template <typename U> MMK_DEVICE SmemPtr<U> cast() const { return SmemPtr<U>(reinterpret_cast<U*>(p_)); }
  template <typename U = T>
    requires(!std::is_const_v<U>)
  MMK_DEVICE operator SmemPtr<const U>() const { return SmemPtr<const U>(p_); }
  // 32-bit shared-window address, the operand of ldmatrix / cp.async.
  MMK_DEVICE uint32_t address() const { return static_cast<uint32_t>(__cvta_generic_to_shared(p_)); }
  MMK_DEVICE T* get() const { return p_; }

 private:
  T* p_ = nullptr;
};

// The block's dynamic shared memory (size given at launch).
template <typename T> MMK_DEVICE SmemPtr<T> dynamic_smem() {
  extern __shared__ __align__(128) unsigned char mmk_dynamic_smem[];
  return SmemPtr<T>(reinterpret_cast<T*>(mmk_dynamic_smem));
}

// ---- asynchronous global -> shared copies (sm_80 cp.async). `src_bytes` < Bytes zero-fills the
// rest; 0 copies nothing and writes zeros (the predicated-off copy). 16-byte copies bypass L1 (.cg).
template <int Bytes, typename T>
MMK_DEVICE void cp_async(SmemPtr<T> dst, const void* src, int src_bytes = Bytes) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
  if constexpr (Bytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst.address()), "l"(src), "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst.address()), "l"(src), "n"(Bytes),
                 "r"(src_bytes));
  }
}
MMK_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N> MMK_DEVICE void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// ---- ldmatrix: N (1, 2, 4) 8x8 matrices of 16-bit elements; lane 8j+r gives the address of row r of
// matrix j (16-byte aligned); register j of lane l receives row l/4, columns 2(l%4), 2(l%4)+1 of
// matrix j (transposed: rows 2(l%4), 2(l%4)+1 of column l/4). PTX ISA 9.0 section 9.7.14.5.15.
template <int N, bool Trans, typename T>
MMK_DEVICE void ldmatrix(uint32_t (&r)[N], SmemPtr<T> row) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
  const uint32_t a = row.address();
  if constexpr (N == 4 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
  } else if constexpr (N == 4) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
  } else if constexpr (N == 2 && !Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a) : "memory");
  } else if constexpr (N == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a) : "memory");
  } else if constexpr (!Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a) : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a) : "memory");
  }
}

// ---- tensor-core MMA, D = A B + C with float32 accumulators (PTX ISA 9.0 section 9.7.14.5.8 layouts):
// m16n8k16, A 16x16 row-major in 4 regs, B 16x8 col-major in 2 regs, C/D 16x8 in 4 floats.
template <typename T>
MMK_DEVICE void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  if constexpr (std::is_same_v<T, bf16>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
  } else {
    static_assert(std::is_same_v<T, half>, "mma_m16n8k16 takes bf16 or half operands");
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
  }
}

// ---- a 16-byte global store (dst 16-byte aligned)
MMK_DEVICE void store16(void* dst, const U32x4& v) { *static_cast<uint4*>(dst) = make_uint4(v.x, v.y, v.z, v.w); }

// ---- conversions (device intrinsics round to nearest even, like the host versions in types.h)
MMK_DEVICE float to_float(float x) { return x; }
MMK_DEVICE float to_float(half x) { return __half2float(x); }
MMK_DEVICE float to_float(bf16 x) { return __bfloat162float(x); }
template <typename T> MMK_DEVICE T from_float(float x);
template <> MMK_DEVICE float from_float<float>(float x) { return x; }
template <> MMK_DEVICE half from_float<half>(float x) { return __float2half_rn(x); }
template <> MMK_DEVICE bf16 from_float<bf16>(float x) { return __float2bfloat16_rn(x); }
// Two floats as one 32-bit register of 16-bit values, `lo` in bits [15:0] (the MMA operand order).
template <typename T> MMK_DEVICE uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, bf16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

// ---- a*b rounded to float, never fused into a neighbouring add (nvcc contracts a*b + c into one
// FFMA by default, which keeps the product's rounding error): for values a backward pass must
// recompute with the same bits as the forward (the softmax's scaled scores).
MMK_DEVICE float mul_rn(float a, float b) { return __fmul_rn(a, b); }

// ---- fast math: 2^x (ex2.approx, relative error <= 2^-22); the softmax's exponential.
MMK_DEVICE float exp2_fast(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// A hand-off between CTAs through a global flag: wait_flag spins until *flag == value (acquire, GPU
// scope), set_flag publishes the caller's earlier writes, then the value (release). The waiter's CTA
// must be launched after the setter's (a lower linear block index), or the wait may never end.
MMK_DEVICE void wait_flag(const int* flag, int value) {
  int v;
  do {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(flag) : "memory");
  } while (v != value);
}
MMK_DEVICE void set_flag(int* flag, int value) {
  asm volatile("fence.acq_rel.gpu;\nst.release.gpu.global.b32 [%0], %1;\n" ::"l"(flag), "r"(value) : "memory");
}

// ---- sm_90a (Hopper): warp specialization, mbarriers, named barriers, wgmma synchronization, through
// CUTLASS/CuTe's own device functions (the tensor-core and TMA operations are CuTe atoms, cute.h).
// Compiled for sm_90a only where a kernel uses them.
MMK_DEVICE bool elect_one_sync() { return cute::elect_one_sync() != 0; }
// bar.sync / bar.arrive on named barrier `id` (1..15; 0 is __syncthreads') for `count` threads.
MMK_DEVICE void named_barrier_sync(int id, int count) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory"); }
MMK_DEVICE void named_barrier_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
template <int Regs> MMK_DEVICE void setmaxnreg_inc() { cutlass::arch::warpgroup_reg_alloc<Regs>(); }
template <int Regs> MMK_DEVICE void setmaxnreg_dec() { cutlass::arch::warpgroup_reg_dealloc<Regs>(); }
MMK_DEVICE void fence_proxy_async() { cutlass::arch::fence_view_async_shared(); }
MMK_DEVICE void fence_barrier_init() { cutlass::arch::fence_barrier_init(); }
MMK_DEVICE void mbarrier_init(uint64_t* bar, int count) { cutlass::arch::ClusterBarrier::init(bar, count); }
MMK_DEVICE void mbarrier_arrive(uint64_t* bar) { cutlass::arch::ClusterBarrier::arrive(bar); }
MMK_DEVICE void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(bar, bytes);
}
MMK_DEVICE void mbarrier_expect_tx(uint64_t* bar, uint32_t bytes) {
  cutlass::arch::ClusterTransactionBarrier::expect_transaction(bar, bytes);
}
MMK_DEVICE void mbarrier_wait(uint64_t* bar, int phase) { cutlass::arch::ClusterBarrier::wait(bar, phase); }
MMK_DEVICE void warpgroup_arrive() { cute::warpgroup_arrive(); }
MMK_DEVICE void warpgroup_commit_batch() { cute::warpgroup_commit_batch(); }
template <int N> MMK_DEVICE void warpgroup_wait() { cute::warpgroup_wait<N>(); }

// ---- launches (host side of a .cu translation unit)
template <typename... P, typename... A>
inline Error launch(const char* /*name*/, void (*kernel)(P...), Dim3 grid, Dim3 block, size_t smem, Stream stream,
                    A&&... args) {
  kernel<<<dim3(grid.x, grid.y, grid.z), dim3(block.x, block.y, block.z), smem, stream>>>(std::forward<A>(args)...);
  return cudaGetLastError();
}
// Dynamic shared memory above 48 KiB must be allowed per kernel before the launch.
template <typename... P>
inline Error set_max_dynamic_smem(void (*kernel)(P...), int bytes) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                              bytes);
}
inline int max_dynamic_smem_optin() {
  int dev = 0, v = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    return 48 * 1024;
  return v;
}
// The current device's architecture as 10 * major + minor (90 on an H100).
inline int device_arch() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
    return 0;
  return 10 * major + minor;
}
// Whether a CUDA graph is being captured on `stream` (a host synchronisation would be illegal).
inline Error stream_capturing(Stream stream, bool* capturing) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const Error e = cudaStreamIsCapturing(stream, &status);
  *capturing = status != cudaStreamCaptureStatusNone;
  return e;
}
// Whether the sm_90a kernels (wgmma, TMA) run on the current device: only on a 9.0 GPU (arch-specific
// sm_90a code runs nowhere else; newer GPUs JIT the sm_80 PTX, in which those kernels are empty) and
// only if this build compiled them (MMKERNELS_CUDA_ARCHS holds 90a: CMake defines MMK_BUILT_SM90A).
inline bool sm90a_runs() {
#if defined(MMK_BUILT_SM90A)
  return device_arch() == 90;
#else
  return false;
#endif
}
inline int multiprocessor_count() {
  int dev = 0, v = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 1;
  return v;
}

MMK_BACKEND_END
}  // namespace mmkernels::dev
