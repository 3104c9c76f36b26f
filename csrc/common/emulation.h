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

// The emulation's own seam into the ops: one op's implementation on the emulated device (its CUDA
// kernels in the host SIMT emulation, on CPU tensors). The emulated glue (cuda/<op>_emulated.cpp,
// compiled only with the emulation) sets it when the module loads; the op's CPU implementation runs it
// instead of its own while the switch is on. Declared in the op's <op>_glue.h, so the CPU glue knows
// the signature and nothing of the CUDA folder.
template <typename Fn>
class Route {
 public:
  constexpr Route() = default;
  // Registers the emulated implementation; returns true, for a static initializer.
  bool set(Fn* fn) {
    fn_ = fn;
    return true;
  }
  // The emulated implementation while the switch is on, else nullptr.
  Fn* current() const { return active() ? fn_ : nullptr; }

 private:
  Fn* fn_ = nullptr;
};

}  // namespace mmkernels::emulation
