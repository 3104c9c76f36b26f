// Torch-side check of every CUDA call and kernel launch (GPU build and emulation alike): a failure
// becomes a RuntimeError naming the operation.
#pragma once

#include <c10/util/Exception.h>

#include <string>
#include <utility>

#include "common/device/types.h"

namespace mmkernels::dev {
MMK_BACKEND_BEGIN

inline void check(Error err, const char* what) {
  if (err == kSuccess) return;
  const std::string detail = std::exchange(error_detail(), std::string());
  TORCH_CHECK(false, "mmkernels: ", what, " failed: ", error_string(err), detail.empty() ? "" : " (" + detail + ")");
}

MMK_BACKEND_END
}  // namespace mmkernels::dev
