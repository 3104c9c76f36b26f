#include "common/emulation.h"

#include <c10/util/Exception.h>

#include <atomic>

#if defined(MMK_WITH_EMULATION)
namespace mmkernels::dev::emu {  // common/device/emu/runtime.h (which needs the emulation's own build flags)
int arch();
void set_arch(int arch);
}  // namespace mmkernels::dev::emu
#endif

namespace mmkernels::emulation {
namespace {
std::atomic<bool> g_active{false};
}  // namespace

bool active() { return kBuilt && g_active.load(std::memory_order_relaxed); }

bool set_active(bool on) {
  TORCH_CHECK(!on || kBuilt,
              "mmkernels was built without the CUDA emulation: rebuild with MMKERNELS_CUDA_EMULATION=ON "
              "(e.g. `MMKERNELS_CUDA_EMULATION=ON pip install --no-build-isolation .`) to run the CUDA kernels on the CPU");
  return g_active.exchange(on);
}

int arch() {
#if defined(MMK_WITH_EMULATION)
  return dev::emu::arch();
#else
  return 0;
#endif
}

int set_arch(int a) {
  TORCH_CHECK_VALUE(a == 80 || a == 90, "emulated architecture must be 80 (sm_80) or 90 (sm_90a), got ", a);
#if defined(MMK_WITH_EMULATION)
  const int previous = dev::emu::arch();
  dev::emu::set_arch(a);
  return previous;
#else
  TORCH_CHECK(false, "mmkernels was built without the CUDA emulation (MMKERNELS_CUDA_EMULATION=ON)");
#endif
}

}  // namespace mmkernels::emulation
