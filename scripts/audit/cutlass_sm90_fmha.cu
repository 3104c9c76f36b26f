// The attention yardstick of the kernel audit (scripts/kernel_audit.py): CUTLASS's own Hopper FMHA
// forward (examples/88_hopper_fmha of the installed nvidia-cutlass wheel, compiled from there with -I;
// nothing of it is copied here) for the tile of mmkernels' sm_90a forward at head dim 128: 128 query
// rows x 128 keys x 128, fp16, float32 accumulation, TMA + wgmma, warp-specialized cooperative (two
// consumer warpgroups), no masking fusion. Compiled to a cubin only; nothing runs it.
#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/device_kernel.h>

#include "collective/fmha_fusion.hpp"
#include "kernel/fmha_kernel_builder.hpp"

using namespace cute;

using Element = cutlass::half_t;
using TileShape = Shape<_128, _128, _128>;  // query rows, keys, head dim
using StrideQKV = cute::tuple<int, _1, cute::tuple<int, int>>;  // (L, D, (B, H)), D contiguous

using Kernel = typename cutlass::fmha::kernel::FmhaBuilder<
    Element, float, float, TileShape, StrideQKV, StrideQKV, StrideQKV, cutlass::fmha::collective::DefaultFusion,
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::Kernel;

// Taking the kernel's address makes nvcc emit it.
void* mmkernels_audit_cutlass_fmha() { return reinterpret_cast<void*>(&cutlass::device_kernel<Kernel>); }
