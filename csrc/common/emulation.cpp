#include "common/emulation.h"

#include <c10/util/Exception.h>

#include <atomic>

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

}  // namespace mmkernels::emulation
