// CPU implementation of mmkernels::concat_linear_{fwd,bwd}.
// Forward: float32/bf16 through the tiled kernel (concat_linear_kernels.cpp: per-tile GEMMs over every
// segment into one float32 accumulator, bias + activation fused per tile); otherwise one ATen GEMM per
// segment against a column slice of W (a strided view) into one accumulator, then one fused epilogue
// pass. The concatenation is never formed. Backward: one fused pass dz = dy * act'(z); dX_i from W's
// column slices; W's column-slice gradients written in place from X_i; bias gradient as a sum (float32
// on AVX2: dX in one kernel, try_input_grads; with frozen inputs dz, dW and db in one kernel, and below
// kConcatLinearSmallRows rows dW and db by that kernel from the stored dz, try_weight_grads).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "common/cpu/capability.h"
#include "concat_linear/concat_linear_glue.h"

MMK_CPU_DECLARE(void concat_linear_epilogue_forward(const ::mmkernels::ConcatLinearEpilogueParams& p))
MMK_CPU_DECLARE(void concat_linear_epilogue_backward(const ::mmkernels::ConcatLinearGradParams& p))
MMK_CPU_DECLARE(bool concat_linear_forward_tiled(const ::mmkernels::ConcatLinearForwardParams& p))
MMK_CPU_DECLARE(bool concat_linear_backward_gemms(const ::mmkernels::ConcatLinearBackwardParams& p))
MMK_CPU_DECLARE(bool concat_linear_weight_grads(const ::mmkernels::ConcatLinearWeightGradParams& p))

namespace mmkernels {
namespace {

void run_epilogue_forward(const ConcatLinearEpilogueParams& p) { MMK_CPU_DISPATCH(concat_linear_epilogue_forward, p); }
void run_epilogue_backward(const ConcatLinearGradParams& p) { MMK_CPU_DISPATCH(concat_linear_epilogue_backward, p); }
bool run_forward_tiled(const ConcatLinearForwardParams& p) { MMK_CPU_DISPATCH(concat_linear_forward_tiled, p); }
bool run_backward_gemms(const ConcatLinearBackwardParams& p) { MMK_CPU_DISPATCH(concat_linear_backward_gemms, p); }
bool run_weight_grads(const ConcatLinearWeightGradParams& p) { MMK_CPU_DISPATCH(concat_linear_weight_grads, p); }

// The inputs as the CPU kernels take them (ConcatLinear*Params::x, x_ld, widths): inner-contiguous
// segments (a.x updated, so the tensors outlive the pointers), their row strides and widths.
struct Segments {
  std::vector<const void*> ptrs;
  std::vector<int64_t> lds, widths;
};
Segments kernel_segments(ConcatLinearArgs& a) {
  Segments s;
  for (auto& x : a.x) {
    x = inner_contiguous(x);
    s.ptrs.push_back(x.data_ptr());
    s.lds.push_back(x.stride(0));
    s.widths.push_back(x.size(1));
  }
  return s;
}

// The whole forward as one tiled kernel with the epilogue fused (float32 on brgemm, bfloat16 on the
// AVX512-BF16 micro-kernel with float32 accumulation across segments). Returns false where it does not
// apply (float16/float64, or bf16 on a CPU without the dot-product instructions).
bool try_forward_tiled(ConcatLinearArgs& a, const at::Tensor& weight, const at::Tensor& bias, at::Tensor& y,
                      at::Tensor& z) {
  const Segments seg = kernel_segments(a);
  at::Tensor w = weight.contiguous();
  ConcatLinearForwardParams p;
  p.n_inputs = static_cast<int64_t>(a.x.size());
  p.x = seg.ptrs.data(); p.x_ld = seg.lds.data(); p.widths = seg.widths.data();
  p.weight = w.data_ptr();
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.z = a.store_z ? z.data_ptr() : nullptr;
  p.M = a.M; p.N = a.N; p.K = a.K; p.act = a.act; p.dtype = to_dtype(weight.scalar_type());
  return run_forward_tiled(p);
}

// The float32 input gradients in one kernel (AVX2: the panel GEMM with W packed once, or below
// kConcatLinearSmallRows rows dz packed in strips and W per k-block; concat_linear_kernels.cpp).
// Returns dX_i for the wanted inputs (undefined for the others), or nothing where it does not apply.
std::vector<at::Tensor> try_input_grads(const ConcatLinearArgs& a, const at::Tensor& weight, const at::Tensor& dz,
                                        const std::vector<bool>& want_x) {
  const bool any = std::find(want_x.begin(), want_x.end(), true) != want_x.end();
  if (!any || dz.scalar_type() != at::kFloat || a.M == 0 || a.N == 0) return {};
  std::vector<void*> outs;
  std::vector<int64_t> widths;
  std::vector<at::Tensor> dx;
  for (size_t i = 0; i < a.x.size(); ++i) {
    widths.push_back(a.x[i].size(1));
    dx.push_back(want_x[i] ? at::empty({a.M, widths.back()}, dz.options()) : at::Tensor());
    outs.push_back(want_x[i] ? dx.back().data_ptr() : nullptr);
  }
  at::Tensor w = weight.contiguous();
  ConcatLinearBackwardParams p;
  p.n_inputs = static_cast<int64_t>(widths.size());
  p.widths = widths.data();
  p.weight = w.data_ptr(); p.dz = dz.data_ptr(); p.dx = outs.data();
  p.M = a.M; p.N = a.N; p.K = a.K; p.dtype = DType::Float32;
  if (!run_backward_gemms(p)) return {};
  return dx;
}

// The float32 weight and bias gradients in one kernel from dy and z (AVX2: concat_linear_kernels.cpp):
// frozen inputs, dz never stored; or from a stored dz (z undefined, act none). Sets dw and db
// (has_bias) and returns true, or false where it does not apply.
bool try_weight_grads(ConcatLinearArgs& a, const at::Tensor& dy, const at::Tensor& z, bool has_bias,
                      at::Tensor& dw, at::Tensor& db) {
  if (dy.scalar_type() != at::kFloat || a.M == 0 || a.N == 0 || a.K == 0) return false;
  const Segments seg = kernel_segments(a);
  at::Tensor dw_t = at::empty({a.N, a.K}, dy.options());
  at::Tensor db_t = has_bias ? at::empty({a.N}, dy.options()) : at::Tensor();
  ConcatLinearWeightGradParams p;
  p.n_inputs = static_cast<int64_t>(a.x.size());
  p.x = seg.ptrs.data(); p.x_ld = seg.lds.data(); p.widths = seg.widths.data();
  p.dy = dy.data_ptr(); p.z = z.defined() ? z.data_ptr() : nullptr;
  p.dw = dw_t.data_ptr(); p.db = has_bias ? db_t.data_ptr() : nullptr;
  p.M = a.M; p.N = a.N; p.K = a.K; p.act = a.act; p.dtype = DType::Float32;
  if (!run_weight_grads(p)) return false;
  dw = dw_t;
  db = db_t;
  return true;
}

at::ScalarType acc_dtype(at::ScalarType st) { return st == at::kDouble ? at::kDouble : at::kFloat; }

// Whether ATen's GEMM should get float32 copies of 16-bit operands (common/cpu/capability.h: no native
// bf16/fp16 GEMM on this CPU).
bool widen_gemm_operands(at::ScalarType st) {
  if (st == at::kBFloat16) return !cpu::native_bf16_gemm();
  if (st == at::kHalf) return !cpu::native_f16_gemm();
  return false;
}

// acc (M, N) = sum_i x_i @ W[:, off_i : off_i + d_i]^T, accumulated in acc's dtype. The fallback for
// what the tiled kernel does not cover (float16, float64, bf16 without AVX512-BF16): reduced-precision
// inputs are widened per segment, because ATen's CPU GEMM cannot write a float32 result from bf16/fp16
// operands and rounding each segment's partial sum to 16 bits would break the error budget.
void accumulate_segments(const ConcatLinearArgs& a, const at::Tensor& weight, at::Tensor& acc) {
  const bool widen = acc.scalar_type() != weight.scalar_type();
  for (size_t i = 0; i < a.x.size(); ++i) {
    at::Tensor w_i = weight.narrow(1, a.offsets[i], a.x[i].size(1));
    at::Tensor x_i = a.x[i];
    if (widen) {
      w_i = w_i.to(acc.scalar_type());
      x_i = x_i.to(acc.scalar_type());
    }
    if (i == 0) at::mm_out(acc, x_i, w_i.t());
    else acc.addmm_(x_i, w_i.t());
  }
}

std::tuple<at::Tensor, at::Tensor> concat_linear_fwd_cpu(at::TensorList inputs, const at::Tensor& weight,
                                                         const std::optional<at::Tensor>& bias, int64_t activation,
                                                         bool save_preactivation) {
  if (auto* emulated = emulated_concat_linear_fwd.current())
    return emulated(inputs, weight, bias, activation, save_preactivation);
  ConcatLinearArgs a = prepare_concat_linear(inputs, weight, bias, activation, save_preactivation);
  const auto opts = inputs[0].options();
  at::Tensor y = at::empty({a.M, a.N}, opts);
  at::Tensor z = a.store_z ? at::empty({a.M, a.N}, opts) : at::empty({0}, opts);
  at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  const bool done = a.M > 0 && a.N > 0 && a.K > 0 && try_forward_tiled(a, weight, b, y, z);
  if (!done && a.M > 0 && a.N > 0) {
    at::Tensor acc = at::empty({a.M, a.N}, opts.dtype(acc_dtype(opts.dtype().toScalarType())));
    if (a.K > 0) accumulate_segments(a, weight, acc);
    else acc.zero_();
    ConcatLinearEpilogueParams p;
    p.acc = acc.data_ptr();
    p.bias = b.defined() ? b.data_ptr() : nullptr;
    p.y = y.data_ptr();
    p.z = a.store_z ? z.data_ptr() : nullptr;
    p.M = a.M; p.N = a.N; p.act = a.act; p.dtype = to_dtype(opts.dtype().toScalarType());
    run_epilogue_forward(p);
  }
  const auto shape = out_shape(a);
  return {y.view(shape), a.store_z ? z.view(shape) : z};
}

std::vector<at::Tensor> concat_linear_bwd_cpu(
    const at::Tensor& grad_out, at::TensorList inputs, const at::Tensor& weight, const at::Tensor& z,
    bool has_bias, int64_t activation, at::OptionalIntArrayRef input_mask, bool weight_grad) {
  if (auto* emulated = emulated_concat_linear_bwd.current())
    return flat_grads(emulated(grad_out, inputs, weight, z, has_bias, activation, input_mask, weight_grad));
  ConcatLinearArgs a = prepare_concat_linear(inputs, weight, std::nullopt, activation);
  const auto st = inputs[0].scalar_type();
  auto [dy, zc] = prepare_concat_linear_grads(a, grad_out, z, st);
  const std::vector<bool> want_x = input_grads_wanted(a, input_mask);
  const bool want_any_x = std::find(want_x.begin(), want_x.end(), true) != want_x.end();
  // Frozen inputs, float32 on AVX2: dW and db in one pass, dz never stored (try_weight_grads).
  at::Tensor dz, dw_fast, db_fast;
  bool wb_fast = weight_grad && !want_any_x && try_weight_grads(a, dy, zc, has_bias, dw_fast, db_fast);
  if (!wb_fast) {
    dz = dy;
    if (zc.defined()) {
      dz = at::empty_like(dy);
      ConcatLinearGradParams p;
      p.dy = dy.data_ptr(); p.z = zc.data_ptr(); p.dz = dz.data_ptr();
      p.M = a.M; p.N = a.N; p.act = a.act; p.dtype = to_dtype(st);
      run_epilogue_backward(p);
    }
  }
  // With input gradients too, below kConcatLinearSmallRows rows: the same kernel from the stored dz.
  if (!wb_fast && weight_grad && want_any_x && a.M < kConcatLinearSmallRows) {
    ConcatLinearArgs plain = a;
    plain.act = Activation::None;
    wb_fast = try_weight_grads(plain, dz, at::Tensor(), has_bias, dw_fast, db_fast);
  }
  // Each gradient is a single GEMM per segment (no sum across segments), so the input dtype loses
  // nothing against plain PyTorch: dX_i = dz @ W_i, dW[:, seg_i] = dz^T @ X_i written in place. Where
  // the CPU has no native bf16/fp16 GEMM the operands are widened to float32 first (exact; each result
  // rounded once, as a float32-accumulating GEMM would): ATen's 16-bit GEMM there runs ~100x slower.
  // float32 input gradients on AVX2: one panel-GEMM pass for all segments (try_input_grads).
  const at::ScalarType gemm_st = widen_gemm_operands(st) ? at::kFloat : st;
  std::vector<at::Tensor> dx_fast = try_input_grads(a, weight, dz, want_x);
  const bool any_x = dx_fast.empty() && want_any_x;
  const bool dw_aten = weight_grad && !wb_fast;
  const at::Tensor dz_g = any_x || dw_aten ? dz.to(gemm_st) : at::Tensor();
  const at::Tensor w_g = any_x ? weight.to(gemm_st) : at::Tensor();
  at::Tensor dw_g = dw_aten ? at::empty({a.N, a.K}, weight.options().dtype(gemm_st)) : at::Tensor();
  std::vector<at::Tensor> dx;
  for (size_t i = 0; i < a.x.size(); ++i) {
    const int64_t d = a.x[i].size(1);
    if (!want_x[i]) dx.push_back(at::empty({0}, weight.options()));
    else if (!dx_fast.empty()) dx.push_back(dx_fast[i].view(inputs[i].sizes()));
    else dx.push_back(at::mm(dz_g, w_g.narrow(1, a.offsets[i], d)).to(st).view(inputs[i].sizes()));
    if (dw_aten) {
      at::Tensor dw_i = dw_g.narrow(1, a.offsets[i], d);
      at::mm_out(dw_i, dz_g.t(), a.x[i].to(gemm_st));
    }
  }
  at::Tensor dw = wb_fast ? dw_fast : weight_grad ? dw_g.to(st) : at::empty({0}, weight.options());
  at::Tensor db = !has_bias ? at::empty({0}, weight.options())
                  : wb_fast ? db_fast
                            : dz.sum(0, /*keepdim=*/false, acc_dtype(st)).to(st);
  return flat_grads({std::move(dx), dw, db});
}

}  // namespace
}  // namespace mmkernels

TORCH_LIBRARY_IMPL(mmkernels, CPU, m) {
  m.impl("concat_linear_fwd", &mmkernels::concat_linear_fwd_cpu);
  m.impl("concat_linear_bwd", &mmkernels::concat_linear_bwd_cpu);
}
