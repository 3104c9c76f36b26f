// The switch behind mmkernels.testing.emulated_cuda(): while it is on, the CPU implementations of the
// ops run the CUDA kernels in the host SIMT emulation instead of the CPU kernels (tensors stay on the
// CPU; only the code path changes). The emulated kernels exist only in builds with
// MMKERNELS_CUDA_EMULATION=ON (then MMK_WITH_EMULATION is defined).
#pragma once

namespace mmkernels::emulation {

constexpr bool kBuilt =
#if defined(MMK_WITH_EMULATION)
    true;
#else
    false;
#endif

// Process-wide (autograd may run the backward on another thread than the forward).
bool active();
// Returns the previous state; raises if the emulation is not built in.
bool set_active(bool on);

// The GPU architecture the emulation dispatches for (mmkernels.testing.emulated_cuda(arch=...)): 90 runs
// the sm_90a (Hopper) kernels, 80 the sm_80 (Ampere) ones. Process-wide; returns the previous one.
int arch();
int set_arch(int arch);

}  // namespace mmkernels::emulation
