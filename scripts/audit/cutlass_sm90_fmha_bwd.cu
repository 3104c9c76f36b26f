// The attention-backward yardstick of the kernel audit (scripts/kernel_audit.py): CUTLASS's own Hopper
// FMHA backward (examples/88_hopper_fmha of the installed nvidia-cutlass wheel, compiled from there
// with -I; nothing of it is copied here) for the tile of mmkernels' sm_90a backward at head dim 128:
// 64 query rows x 128 keys x 128, fp16, float32 accumulation, TMA + wgmma, warp-specialized, no masking
// fusion; like ours, dK and dV in registers and dQ added into a float32 workspace per tile pair.
// Compiled to a cubin only; nothing runs it.
#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/device_kernel.h>

#include "collective/fmha_fusion.hpp"
#include "device/fmha_device_bwd.hpp"

using namespace cute;

// As the example's run_bwd_128 ("tma ws cooperative 64x128x128"): no kernel options.
using Bwd = cutlass::fmha::device::FmhaBwd<cutlass::half_t, float, Shape<_64, _128, _128>,
                                           cutlass::fmha::collective::DefaultFusion>;

// Taking the kernel's address makes nvcc emit it.
void* mmkernels_audit_cutlass_fmha_bwd() {
  return reinterpret_cast<void*>(&cutlass::device_kernel<typename Bwd::Operation::Kernel>);
}
