// The device-primitive layer: the one vocabulary every CUDA kernel of mmkernels is written in.
//
// Compiled by nvcc it maps each primitive to its CUDA intrinsic or PTX instruction
// (primitives_cuda.h); compiled by the host compiler with MMK_EMULATION it runs the same kernel source
// on the CPU in the SIMT emulation with race/barrier/bounds checkers (emu/primitives_emu.h). Kernels
// use nothing else that is device-specific: no threadIdx/__syncthreads/__shfl/asm of their own.
//
//   MMK_GLOBAL, MMK_DEVICE, MMK_HOST_DEVICE, MMK_LAUNCH_BOUNDS(n)     execution spaces
//   thread_idx() block_idx() block_dim() grid_dim()                    indices (Dim3)
//   sync_threads()  sync_warp(mask)                                     barriers
//   shfl shfl_xor shfl_up shfl_down (mask, v, arg, width)  ballot any all    warp exchange and votes
//   SmemPtr<T>  dynamic_smem<T>()                                       shared memory
//   cp_async<Bytes>(dst, src, src_bytes)  cp_async_commit()  cp_async_wait<N>()     sm_80 async copies
//   ldmatrix<N, Trans>(regs, row_address)                               8x8 b16 matrix loads
//   mma_m16n8k16<bf16|half>(d, a, b, c)                                 tensor cores
//   to_float  from_float<T>  pack2<T>  mul_rn  exp2_fast                conversions and math
//   store16(dst, U32x4)                                                 a 16-byte global store
//   wait_flag(flag, v)  set_flag(flag, v)                               CTA-to-CTA hand-offs (global acquire / release)
//   elect_one_sync  named_barrier_sync/arrive  setmaxnreg_inc/dec<N>    sm_90a warp specialization
//   mbarrier_init/arrive/arrive_expect_tx/expect_tx/wait  fence_barrier_init  fence_proxy_async
//   warpgroup_arrive/commit_batch/wait<N>                               wgmma synchronization
//   device_arch()                                                       the GPU's (or emulated) arch, e.g. 90
//   sm90a_runs()                                                        whether the sm_90a (wgmma/TMA) kernels run here
// (the tensor-core and TMA operations of sm_90a are CuTe atoms: common/device/cute.h)
//   launch(name, kernel, grid, block, smem, stream, args...)  set_max_dynamic_smem  (host side)
#pragma once

#include "common/device/types.h"

#if defined(MMK_EMULATION)
#include "common/device/emu/primitives_emu.h"
#elif defined(__CUDACC__)
#include "common/device/primitives_cuda.h"
#endif

#if defined(MMK_EMULATION) || defined(__CUDACC__)
namespace mmkernels::dev {
MMK_BACKEND_BEGIN

template <typename T> MMK_HOST_DEVICE T min(T a, T b) { return b < a ? b : a; }
template <typename T> MMK_HOST_DEVICE T max(T a, T b) { return a < b ? b : a; }
template <typename T> MMK_HOST_DEVICE constexpr T ceil_div(T a, T b) { return (a + b - 1) / b; }

// The calling thread's linear index in its block, its lane and its warp (blocks are one-dimensional
// in mmkernels' kernels, but the rank is defined for any shape).
MMK_DEVICE int thread_rank() {
  const Dim3 t = thread_idx(), d = block_dim();
  return static_cast<int>(t.x + d.x * (t.y + d.y * t.z));
}
MMK_DEVICE int lane_id() { return thread_rank() % kWarpSize; }
MMK_DEVICE int warp_id() { return thread_rank() / kWarpSize; }

MMK_BACKEND_END
}  // namespace mmkernels::dev
#endif

// Launch `kernel` (a MMK_GLOBAL function; parenthesise template arguments with commas). The emulation
// names it in reports as `kernel [template arguments of the launching function]`.
#if defined(MMK_EMULATION)
#define MMK_LAUNCH(kernel, grid, block, smem, stream, ...)                                                     \
  ::mmkernels::dev::launch(::mmkernels::dev::emu::launch_name(#kernel, __PRETTY_FUNCTION__).c_str(), kernel, grid, \
                           block, smem, stream, __VA_ARGS__)
#else
#define MMK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::mmkernels::dev::launch(#kernel, kernel, grid, block, smem, stream, __VA_ARGS__)
#endif
