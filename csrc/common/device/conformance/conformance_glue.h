// Torch entry of the primitive conformance kernels: the operator
// torch.ops.mmkernels_testing.conformance(primitive, in0, in1, in2, out, n, mode, arg), with a CUDA
// kernel in CUDA builds (the hardware) and a CPU kernel in emulation builds (the emulation).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "common/device/conformance/conformance.h"

namespace mmkernels::conformance {

// Checks the tensors (contiguous, on out's device) and describes the call.
Args make_args(int64_t primitive, const at::Tensor& in0, const std::optional<at::Tensor>& in1,
               const std::optional<at::Tensor>& in2, const at::Tensor& out, int64_t n, int64_t mode, int64_t arg);

}  // namespace mmkernels::conformance
