// Definitions of device_queries.h for this backend (torch-free).
#include "common/device/device_queries.h"

#include "common/device/primitives.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
int device_multiprocessors() { return dev::multiprocessor_count(); }
bool device_runs_sm90a() { return dev::sm90a_runs(); }
dev::Error stream_capturing(dev::Stream stream, bool* capturing) { return dev::stream_capturing(stream, capturing); }
MMK_BACKEND_END
}  // namespace mmkernels::cuda
