// The one place mmkernels' operators are declared. Device implementations register themselves with
// TORCH_LIBRARY_IMPL in their own folders; the Python side (mmkernels/ops.py) adds fake (meta)
// kernels, autograd and autocast rules.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include "common/activation.h"
#include "common/checks.h"
#include "common/device/conformance/conformance.h"
#include "common/cpu/capability.h"
#include "common/dtype.h"
#include "common/emulation.h"
#include "cross_attention/params.h"
#if defined(MMK_WITH_CUDA)
#include "cross_attention/cuda/flash_info.h"
#endif
#if defined(MMK_WITH_EMULATION)
#include "common/device/selftest/selftest.h"
#endif

MMK_CPU_DECLARE(double fma_peak_flops(int64_t iters, int64_t repeats))

TORCH_LIBRARY(mmkernels, m) {
  // Returns (out (B, Lq, H, Dv), lse (B, H, Lq)): lse is float64 (common/dtype.h).
  m.def("cross_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? kv_lengths, Tensor? key_padding_mask, "
        "float scale, bool is_causal=False) -> (Tensor, Tensor)");
  // Returns (dq, dk, dv), contiguous, shaped like q, k, v.
  m.def("cross_attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
        "Tensor? kv_lengths, Tensor? key_padding_mask, float scale, bool is_causal=False) -> (Tensor, Tensor, Tensor)");
  // activation: the index into kActivationNames (common/activation.h): 0 none, 1 relu, 2 gelu (erf),
  // 3 gelu_tanh, 4 silu.
  // Returns (y (..., N), z): z is the pre-activation kept for backward (empty when activation is none).
  m.def("concat_linear_fwd(Tensor[] inputs, Tensor weight, Tensor? bias, int activation, bool save_preactivation=True) -> (Tensor, Tensor)");
  // Returns one list [grad_inputs[0], ..., grad_inputs[n-1], grad_weight, grad_bias] (flat, so that DTensor
  // can place each gradient: concat_linear/concat_linear_glue.h); only the requested gradients are
  // computed, the others are empty tensors: grad_bias when has_bias is false, grad_inputs[i] when
  // input_mask[i] == 0 (all when input_mask is None), grad_weight when weight_grad is false (frozen
  // encoders / projections).
  m.def("concat_linear_bwd(Tensor grad_out, Tensor[] inputs, Tensor weight, Tensor z, bool has_bias, "
        "int activation, int[]? input_mask=None, bool weight_grad=True) -> Tensor[]");
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "mmkernels native library (operators live in torch.ops.mmkernels)";
  m.def("cpu_capability", &mmkernels::cpu::capability_name,
        "Instruction set of the CPU kernels chosen on this machine");
  m.def(
      "_cpu_fma_peak",
      [](int64_t iters, int64_t repeats) -> double {
        MMK_CPU_DISPATCH(fma_peak_flops, iters, repeats);
      },
      pybind11::arg("iters") = 20000000, pybind11::arg("repeats") = 3,
      "float32 FMA peak (FLOP/s) of the CPU kernels' vector width on torch's threads, best of `repeats`");
  // Constants of the contract, defined once in C++ and used by the Python layer.
  m.attr("MAX_HEAD_DIM") = mmkernels::kMaxHeadDim;
  pybind11::tuple activations(mmkernels::kNumActivations);
  for (int i = 0; i < mmkernels::kNumActivations; ++i) activations[i] = mmkernels::kActivationNames[i];
  m.attr("ACTIVATIONS") = activations;
  m.def(
      "_lse_dtype",
      [](const std::string& input) -> std::string {
        mmkernels::DType d;
        if (!mmkernels::dtype_from_name(input, &d))
          throw pybind11::value_error("_lse_dtype: input must name one of float32, float16, bfloat16, float64, got '" +
                                      input + "'");
        return mmkernels::dtype_name(mmkernels::lse_dtype(d));
      },
      "dtype name of cross_attention's saved log-sum-exp for an input dtype name (common/dtype.h)");
  m.def(
      "_set_debug_checks", [](bool on) { return mmkernels::debug_checks().exchange(on); },
      "Turn the checks that synchronise host and device on or off (common/checks.h); returns the previous state");
#ifdef MMK_WITH_CUDA
  m.attr("with_cuda") = true;
  m.def("_cuda_kernel_dynamic_smem", &mmkernels::cuda::flash_dynamic_smem,
        "(kernel, dynamic shared memory bytes) of the tensor-core kernels, for the kernel audit");
#else
  m.attr("with_cuda") = false;
#endif
  // The sm_90a conformance cases (csrc/common/device/conformance/conformance.h), for the tests.
  pybind11::list wgmma_cases, tma_cases;
  for (const auto& c : mmkernels::conformance::kWgmmaCases)
    wgmma_cases.append(pybind11::make_tuple(c.n, c.swizzle, c.a_mn, c.b_mn, c.a_regs, c.f16));
  for (const auto& c : mmkernels::conformance::kTmaCases) tma_cases.append(pybind11::make_tuple(c.rows, c.cols, c.swizzle));
  m.attr("_WGMMA_CASES") = wgmma_cases;
  m.attr("_TMA_CASES") = tma_cases;
  m.attr("with_emulation") = mmkernels::emulation::kBuilt;
  m.def("_set_emulated_cuda", &mmkernels::emulation::set_active,
        "Switch the CPU implementations to the emulated CUDA kernels; returns the previous state");
  m.def("_emulated_cuda_active", &mmkernels::emulation::active);
  m.def("_set_emulated_arch", &mmkernels::emulation::set_arch,
        "The architecture the emulation dispatches for (80 or 90); returns the previous one");
  m.def("_emulated_arch", &mmkernels::emulation::arch);
#if defined(MMK_WITH_EMULATION)
  m.def("_emulation_selftests", &mmkernels::emulation::selftest_names);
  m.def("_emulation_take_launch_log", &mmkernels::emulation::launch_log,
        "The kernels the emulation ran since the last call: (name, (grid x, y, z)) pairs");
  m.def("_emulation_selftest", &mmkernels::emulation::run_selftest,
        "Run a deliberately broken (or fixed) kernel in the emulation; returns the checkers' report");
#endif
}
