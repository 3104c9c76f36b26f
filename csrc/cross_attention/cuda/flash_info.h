// Launch facts of the tensor-core attention kernels for the kernel audit (scripts/kernel_audit.py):
// the dynamic shared memory each kernel is launched with, by the name the audit prints.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/device/backend.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

std::vector<std::pair<std::string, int64_t>> flash_dynamic_smem();

MMK_BACKEND_END
}  // namespace mmkernels::cuda
