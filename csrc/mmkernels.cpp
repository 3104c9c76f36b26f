// The one place mmkernels' operators are declared. Device implementations register themselves with
// TORCH_LIBRARY_IMPL in their own folders; the Python side (mmkernels/ops.py) adds fake (meta)
// kernels, autograd and autocast rules.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include "common/cpu_dispatch.h"
#include "common/emulation.h"
#if defined(MMK_WITH_CUDA)
#include "cross_attention/cuda/flash_info.h"
#endif
#if defined(MMK_WITH_EMULATION)
#include "common/device/selftest/selftest.h"
#endif

TORCH_LIBRARY(mmkernels, m) {
  // Returns (out (B, Lq, H, Dv), lse (B, H, Lq)): lse is float64 for float32/float64 inputs, else float32.
  m.def("cross_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? kv_lengths, Tensor? key_padding_mask, "
        "float scale) -> (Tensor, Tensor)");
  // Returns (dq, dk, dv), contiguous, shaped like q, k, v.
  m.def("cross_attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
        "Tensor? kv_lengths, Tensor? key_padding_mask, float scale) -> (Tensor, Tensor, Tensor)");
  // activation: 0 none, 1 relu, 2 gelu (erf), 3 gelu_tanh, 4 silu.
  // Returns (y (..., N), z): z is the pre-activation kept for backward (empty when activation is none).
  m.def("concat_linear_fwd(Tensor[] inputs, Tensor weight, Tensor? bias, int activation) -> (Tensor, Tensor)");
  // Returns (grad_inputs, grad_weight, grad_bias); grad_bias is empty when has_bias is false.
  m.def("concat_linear_bwd(Tensor grad_out, Tensor[] inputs, Tensor weight, Tensor z, bool has_bias, "
        "int activation) -> (Tensor[], Tensor, Tensor)");
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "mmkernels native library (operators live in torch.ops.mmkernels)";
  m.def("cpu_capability", &mmkernels::cpu::capability_name,
        "Instruction set of the CPU kernels chosen on this machine");
#ifdef MMK_WITH_CUDA
  m.attr("with_cuda") = true;
  m.def("_cuda_kernel_dynamic_smem", &mmkernels::cuda::flash_dynamic_smem,
        "(kernel, dynamic shared memory bytes) of the tensor-core kernels, for the kernel audit");
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("with_emulation") = mmkernels::emulation::kBuilt;
  m.def("_set_emulated_cuda", &mmkernels::emulation::set_active,
        "Switch the CPU implementations to the emulated CUDA kernels; returns the previous state");
  m.def("_emulated_cuda_active", &mmkernels::emulation::active);
#if defined(MMK_WITH_EMULATION)
  m.def("_emulation_selftests", &mmkernels::emulation::selftest_names);
  m.def("_emulation_take_launch_log", &mmkernels::emulation::launch_log,
        "Names of the kernels the emulation ran since the last call");
  m.def("_emulation_selftest", &mmkernels::emulation::run_selftest,
        "Run a deliberately broken (or fixed) kernel in the emulation; returns the checkers' report");
#endif
}
