// Queries of the current device for the torch glue, which the host compiler builds without the
// device-primitive layer: declared here, defined once per backend (the GPU build, the emulation) in
// device_queries.cu over the primitives.
#pragma once

#include "common/device/types.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

// Multiprocessors of the current device (the emulated GPU's under the emulation).
int device_multiprocessors();
// Whether the current device runs the sm_90a kernels (dev::sm90a_runs; the emulated arch under the emulation).
bool device_runs_sm90a();
// Whether a CUDA graph is being captured on `stream` (never under the emulation).
dev::Error stream_capturing(dev::Stream stream, bool* capturing);

MMK_BACKEND_END
}  // namespace mmkernels::cuda
