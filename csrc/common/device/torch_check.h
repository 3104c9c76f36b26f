// Torch-side check of every CUDA call and kernel launch (GPU build and emulation alike): a failure
// becomes a RuntimeError naming the operation.
#pragma once

#include <c10/util/Exception.h>

#include "common/device/types.h"

namespace mmkernels::dev {
MMK_BACKEND_BEGIN

inline void check(Error err, const char* what) {
  TORCH_CHECK(err == kSuccess, "mmkernels: ", what, " failed: ", error_string(err));
}

MMK_BACKEND_END
}  // namespace mmkernels::dev
