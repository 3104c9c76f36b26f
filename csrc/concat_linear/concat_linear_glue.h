// Torch glue shared by the CPU and CUDA implementations of concat_linear: argument checks and the
// (M, d_i) views of the inputs. The concatenation itself is never formed.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/emulation.h"
#include "concat_linear/params.h"

namespace mmkernels {

// concat_linear_{fwd,bwd} on the emulated device (common/emulation.h; set by
// cuda/concat_linear_emulated.cpp, run by the CPU implementation while the emulation is on). The
// backward returns (input grads, weight grad, bias grad), as the device glue computes them.
using ConcatLinearFwdFn = std::tuple<at::Tensor, at::Tensor>(at::TensorList inputs, const at::Tensor& weight,
                                                             const std::optional<at::Tensor>& bias,
                                                             int64_t activation, bool save_preactivation);
using ConcatLinearBwdFn = std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor>(
    const at::Tensor& grad_out, at::TensorList inputs, const at::Tensor& weight, const at::Tensor& z, bool has_bias,
    int64_t activation, at::OptionalIntArrayRef input_mask, bool weight_grad);
inline emulation::Route<ConcatLinearFwdFn> emulated_concat_linear_fwd;
inline emulation::Route<ConcatLinearBwdFn> emulated_concat_linear_bwd;

struct ConcatLinearArgs {
  std::vector<at::Tensor> x;        // (M, d_i) views (a copy only where the input cannot be viewed so)
  std::vector<int64_t> offsets;     // column offset of each segment in weight
  std::vector<int64_t> lead_shape;  // leading shape of the inputs
  int64_t M = 0, N = 0, K = 0;
  Activation act = Activation::None;
  // The forward stores the pre-activation z only for a backward that needs it (an activation, and
  // autograd recording: save_preactivation of the op).
  bool store_z = false;
};

inline ConcatLinearArgs prepare_concat_linear(at::TensorList inputs, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias, int64_t activation,
                                              bool save_preactivation = false) {
  TORCH_CHECK_VALUE(!inputs.empty(), "inputs must be a non-empty list of tensors");
  TORCH_CHECK_VALUE(activation >= 0 && activation < kNumActivations, "activation code must be 0..", kNumActivations - 1,
                    " (an index into mmkernels.ops.ACTIVATIONS), got ", activation);
  const at::Tensor& x0 = inputs[0];
  TORCH_CHECK_VALUE(x0.dim() >= 1, "inputs[0] must have at least one dimension (..., d_0), got a 0-D tensor");
  check_float_dtype(x0, "inputs[0]", allows_float64(x0));
  ConcatLinearArgs a;
  a.act = static_cast<Activation>(activation);
  a.store_z = save_preactivation && a.act != Activation::None;
  a.lead_shape.assign(x0.sizes().begin(), x0.sizes().end() - 1);
  a.M = 1;
  for (int64_t s : a.lead_shape) a.M *= s;
  int64_t K = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor& xi = inputs[i];
    const std::string name = "inputs[" + std::to_string(i) + "]";
    TORCH_CHECK_VALUE(xi.dim() == x0.dim() && xi.sizes().slice(0, xi.dim() - 1) == x0.sizes().slice(0, x0.dim() - 1),
                      name, " must have the leading shape of inputs[0] ", shape_str(x0), " (all but the last dim), got ",
                      shape_str(xi));
    TORCH_CHECK_TYPE(xi.scalar_type() == x0.scalar_type(), name, " must have dtype ", x0.scalar_type(),
                     " like inputs[0], got ", xi.scalar_type());
    check_same_device(xi, x0, name.c_str(), "inputs[0]");
    a.offsets.push_back(K);
    K += xi.size(-1);
    a.x.push_back(xi.reshape({a.M, xi.size(-1)}));
  }
  a.K = K;
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == K, "weight must have shape (N, sum(d_i)) = (N, ", K,
                    "), got ", shape_str(weight));
  TORCH_CHECK_TYPE(weight.scalar_type() == x0.scalar_type(), "weight must have dtype ", x0.scalar_type(),
                   " like the inputs, got ", weight.scalar_type());
  check_same_device(weight, x0, "weight", "inputs[0]");
  a.N = weight.size(0);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == a.N, "bias must have shape (N,) = (", a.N, ",), got ",
                      shape_str(*bias));
    TORCH_CHECK_TYPE(bias->scalar_type() == x0.scalar_type(), "bias must have dtype ", x0.scalar_type(), ", got ",
                     bias->scalar_type());
    check_same_device(*bias, x0, "bias", "inputs[0]");
  }
  return a;
}

// Which input gradients the backward computes (all when no mask is given).
inline std::vector<bool> input_grads_wanted(const ConcatLinearArgs& a, at::OptionalIntArrayRef input_mask) {
  std::vector<bool> want(a.x.size(), true);
  if (!input_mask.has_value()) return want;
  TORCH_CHECK_VALUE(input_mask->size() == a.x.size(), "input_mask must have one entry per input (", a.x.size(),
                    "), got ", input_mask->size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = (*input_mask)[i] != 0;
  return want;
}

inline std::vector<int64_t> out_shape(const ConcatLinearArgs& a) {
  std::vector<int64_t> s = a.lead_shape;
  s.push_back(a.N);
  return s;
}

// Backward preamble: checks grad_out (and z when the activation needs it) and returns dy as a
// contiguous (M, N) tensor in the inputs' dtype, and z as (M, N) contiguous (undefined for "none").
inline std::pair<at::Tensor, at::Tensor> prepare_concat_linear_grads(const ConcatLinearArgs& a,
                                                                     const at::Tensor& grad_out, const at::Tensor& z,
                                                                     at::ScalarType st) {
  TORCH_CHECK_VALUE(grad_out.numel() == a.M * a.N, "grad_out must have shape (..., N) with N = ", a.N, ", got ",
                    shape_str(grad_out));
  at::Tensor dy = grad_out.to(st).reshape({a.M, a.N}).contiguous();
  if (a.act == Activation::None || dy.numel() == 0) return {dy, at::Tensor()};
  TORCH_CHECK_VALUE(z.numel() == a.M * a.N, "z must hold the forward's pre-activation (", a.M, " x ", a.N,
                    " values), got ", shape_str(z));
  return {dy, z.reshape({a.M, a.N}).contiguous()};
}

// concat_linear_bwd's result as the op returns it: one flat list (grad_inputs[0..n), grad_weight,
// grad_bias). A flat list rather than (Tensor[], Tensor, Tensor): DTensor's sharding propagation gives a
// placement to each tensor of a list or tuple return, but cannot describe a list nested in a tuple.
inline std::vector<at::Tensor> flat_grads(std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> grads) {
  auto& [dx, dw, db] = grads;
  std::vector<at::Tensor> flat = std::move(dx);
  flat.push_back(std::move(dw));
  flat.push_back(std::move(db));
  return flat;
}

}  // namespace mmkernels
