// Torch-free entry of the conformance kernels (conformance_kernels.cu), per backend.
#pragma once

#include "common/device/conformance/conformance.h"
#include "common/device/types.h"

namespace mmkernels::conformance::cuda {
MMK_BACKEND_BEGIN
dev::Error run(const Args& args, dev::Stream stream);
// The sm_90a cases (Primitive::Wgmma, Primitive::Tma), conformance_sm90.cu.
dev::Error run_sm90(const Args& args, dev::Stream stream);
MMK_BACKEND_END
}  // namespace mmkernels::conformance::cuda
