// Torch glue shared by the CPU and CUDA implementations of cross_attention: validates the arguments
// and fills the torch-free CrossAttentionParams. The device files only allocate and launch.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "common/checks.h"
#include "common/emulation.h"
#include "cross_attention/params.h"

namespace mmkernels {

// cross_attention_{fwd,bwd} on the emulated device (common/emulation.h; set by
// cuda/cross_attention_emulated.cpp, run by the CPU implementation while the emulation is on).
using CrossAttentionFwdFn = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& kv_lengths,
    const std::optional<at::Tensor>& key_padding_mask, double scale, bool is_causal);
using CrossAttentionBwdFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& kv_lengths,
    const std::optional<at::Tensor>& key_padding_mask, double scale, bool is_causal);
inline emulation::Route<CrossAttentionFwdFn> emulated_cross_attention_fwd;
inline emulation::Route<CrossAttentionBwdFn> emulated_cross_attention_bwd;

// The saved log-sum-exp's dtype (the rule is in common/dtype.h).
inline at::ScalarType lse_dtype(at::ScalarType st) { return to_scalar_type(lse_dtype(to_dtype(st))); }

struct CrossAttentionArgs {
  at::Tensor q, k, v;             // inner dim contiguous
  at::Tensor kv_lengths;          // int64 contiguous (B,), or undefined
  at::Tensor key_padding_mask;    // bool (B, Lk) inner contiguous, or undefined
  CrossAttentionParams p;
};

// kv_lengths values outside [0, Lk]. The CPU op checks them (they are on the host). The CUDA kernels
// (on a GPU or in the emulation) clamp them to [0, Lk] instead: reading them back would synchronise the
// host with the device, which no op does; under mmkernels.debug_checks() their glue checks them too
// (check_device_lengths in cross_attention_device.h).
inline bool device_kernels(const at::Tensor& t) { return !t.is_cpu() || emulation::active(); }
inline void check_kv_length_values(const at::Tensor& lengths /* int64 */, int64_t Lk) {
  if (lengths.numel() == 0) return;
  int64_t lo = 0, hi = 0;
  if (lengths.is_cpu()) {
    const int64_t* l = lengths.data_ptr<int64_t>();
    lo = *std::min_element(l, l + lengths.numel());
    hi = *std::max_element(l, l + lengths.numel());
  } else {  // one reduction and one copy of two scalars
    const at::Tensor lo_hi = at::stack({lengths.min(), lengths.max()}).cpu();
    lo = lo_hi[0].item<int64_t>();
    hi = lo_hi[1].item<int64_t>();
  }
  TORCH_CHECK_VALUE(lo >= 0 && hi <= Lk, "kv_lengths must lie in [0, Lk] = [0, ", Lk, "], got values in [", lo, ", ",
                    hi, "]");
}

// Calls p.set_x(data, strides of dims 0-2) for a (B, L, heads, d) tensor.
template <typename Setter>
void bind_rows(CrossAttentionParams& p, Setter set, const at::Tensor& t) {
  (p.*set)(t.data_ptr(), t.stride(0), t.stride(1), t.stride(2));
}

// How a backend wants the (B, L, heads, d) operands laid out before they are bound: as given (the
// CPU kernels), or e.g. padded to 16-byte rows (the tensor-core kernels, cross_attention_device.h).
struct KeepRows {
  at::Tensor operator()(const at::Tensor& t) const { return t; }
};

template <typename Rows = KeepRows>
CrossAttentionArgs prepare_cross_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                           const std::optional<at::Tensor>& kv_lengths,
                                           const std::optional<at::Tensor>& key_padding_mask, double scale,
                                           bool is_causal, Rows rows = {}) {
  check_dim(q_in, 4, "q", "(B, Lq, H, D)");
  check_dim(k_in, 4, "k", "(B, Lk, Hkv, D)");
  check_dim(v_in, 4, "v", "(B, Lk, Hkv, Dv)");
  check_same_device(k_in, q_in, "k", "q");
  check_same_device(v_in, q_in, "v", "q");
  check_float_dtype(q_in, "q", allows_float64(q_in));
  TORCH_CHECK_TYPE(k_in.scalar_type() == q_in.scalar_type() && v_in.scalar_type() == q_in.scalar_type(),
                   "q, k and v must have the same dtype, got q ", q_in.scalar_type(), ", k ", k_in.scalar_type(),
                   ", v ", v_in.scalar_type());
  const int64_t B = q_in.size(0), Lq = q_in.size(1), H = q_in.size(2), D = q_in.size(3);
  const int64_t Lk = k_in.size(1), Hkv = k_in.size(2), Dv = v_in.size(3);
  TORCH_CHECK_VALUE(k_in.size(0) == B && v_in.size(0) == B, "k and v must have batch size B = ", B,
                    " like q, got k ", shape_str(k_in), ", v ", shape_str(v_in));
  TORCH_CHECK_VALUE(k_in.size(3) == D, "k must have head dim D = ", D, " like q, got k ", shape_str(k_in));
  TORCH_CHECK_VALUE(v_in.size(1) == Lk && v_in.size(2) == Hkv, "v must be (B, Lk, Hkv, Dv) = (", B, ", ", Lk,
                    ", ", Hkv, ", Dv) like k, got v ", shape_str(v_in));
  TORCH_CHECK_VALUE(Hkv >= 1 && H % Hkv == 0, "q has H = ", H, " heads, which must be a multiple of the Hkv = ",
                    Hkv, " key/value heads of k and v (q ", shape_str(q_in), ", k ", shape_str(k_in), ")");
  TORCH_CHECK_VALUE(D >= 1 && D <= kMaxHeadDim, "q and k must have a head dim D in 1..", kMaxHeadDim, ", got D = ", D,
                    " (q ", shape_str(q_in), ")");
  TORCH_CHECK_VALUE(Dv >= 1 && Dv <= kMaxHeadDim, "v must have a head dim Dv in 1..", kMaxHeadDim, ", got Dv = ", Dv,
                    " (v ", shape_str(v_in), ")");
  TORCH_CHECK_VALUE(std::isfinite(scale), "scale must be finite, got ", scale);
  const DType input = to_dtype(q_in.scalar_type());
  TORCH_CHECK_VALUE(std::abs(scale) <= compute_max(input), "scale must be finite in ",
                    dtype_name(to_scalar_type(compute_dtype(input))), " (the dtype cross_attention computes in for ",
                    dtype_name(q_in.scalar_type()), " inputs), got ", scale);

  CrossAttentionArgs a;
  a.q = rows(inner_contiguous(q_in));
  a.k = rows(inner_contiguous(k_in));
  a.v = rows(inner_contiguous(v_in));
  CrossAttentionParams& p = a.p;

  if (kv_lengths.has_value() && kv_lengths->defined()) {
    const auto& kl = *kv_lengths;
    TORCH_CHECK_VALUE(kl.dim() == 1 && kl.size(0) == B, "kv_lengths must have shape (B,) = (", B, ",), got ",
                      shape_str(kl));
    TORCH_CHECK_TYPE(at::isIntegralType(kl.scalar_type(), /*includeBool=*/false),
                     "kv_lengths must be an integer tensor, got ", kl.scalar_type());
    check_same_device(kl, q_in, "kv_lengths", "q");
    a.kv_lengths = kl.to(at::kLong).contiguous();
    if (!device_kernels(a.kv_lengths)) check_kv_length_values(a.kv_lengths, Lk);
    p.kv_lengths = a.kv_lengths.data_ptr<int64_t>();
  }
  if (key_padding_mask.has_value() && key_padding_mask->defined()) {
    const auto& m = *key_padding_mask;
    TORCH_CHECK_VALUE(m.dim() == 2 && m.size(0) == B && m.size(1) == Lk,
                      "key_padding_mask must have shape (B, Lk) = (", B, ", ", Lk, "), got ", shape_str(m));
    TORCH_CHECK_TYPE(m.scalar_type() == at::kBool, "key_padding_mask must be a bool tensor (True = ignore), got ",
                     m.scalar_type());
    check_same_device(m, q_in, "key_padding_mask", "q");
    a.key_padding_mask = m.stride(1) == 1 ? m : m.contiguous();
    p.key_padding_mask = a.key_padding_mask.data_ptr<bool>();
    p.mask_stride_b = a.key_padding_mask.stride(0);
  }

  bind_rows(p, &CrossAttentionParams::set_q, a.q);
  bind_rows(p, &CrossAttentionParams::set_k, a.k);
  bind_rows(p, &CrossAttentionParams::set_v, a.v);
  p.B = B; p.Lq = Lq; p.Lk = Lk; p.H = H; p.Hkv = Hkv; p.D = D; p.Dv = Dv;
  p.scale = scale;
  p.causal = is_causal;
  p.dtype = to_dtype(q_in.scalar_type());
  return a;
}

// Allocates the forward's outputs (out (B, Lq, H, Dv), lse (B, H, Lq) filled with -inf) and points the
// params at them.
inline std::pair<at::Tensor, at::Tensor> allocate_cross_attention_outputs(CrossAttentionArgs& a) {
  CrossAttentionParams& p = a.p;
  at::Tensor out = at::empty({p.B, p.Lq, p.H, p.Dv}, a.q.options());
  at::Tensor lse = at::full({p.B, p.H, p.Lq}, -std::numeric_limits<double>::infinity(),
                            a.q.options().dtype(lse_dtype(a.q.scalar_type())));
  bind_rows(p, &CrossAttentionParams::set_out, out);
  p.lse = lse.data_ptr();
  return {out, lse};
}

// Adds what the backward needs on top of the forward's params. dq/dk/dv are contiguous and zeroed
// (keys that never count keep a zero gradient).
struct CrossAttentionGrads {
  at::Tensor dq, dk, dv, grad_out, out, lse;
};

template <typename Rows = KeepRows>
CrossAttentionGrads prepare_cross_attention_backward(CrossAttentionArgs& a, const at::Tensor& grad_out,
                                                     const at::Tensor& out, const at::Tensor& lse, Rows rows = {}) {
  CrossAttentionParams& p = a.p;
  const std::vector<int64_t> o_shape{p.B, p.Lq, p.H, p.Dv};
  TORCH_CHECK_VALUE(grad_out.sizes() == at::IntArrayRef(o_shape) && out.sizes() == at::IntArrayRef(o_shape),
                    "grad_out and out must have shape (B, Lq, H, Dv) = ", at::IntArrayRef(o_shape), ", got ",
                    shape_str(grad_out), " and ", shape_str(out));
  TORCH_CHECK_VALUE(lse.dim() == 3 && lse.size(0) == p.B && lse.size(1) == p.H && lse.size(2) == p.Lq &&
                        lse.scalar_type() == lse_dtype(a.q.scalar_type()),
                    "lse must be a ", lse_dtype(a.q.scalar_type()), " tensor of shape (B, H, Lq), got ", shape_str(lse),
                    " ", lse.scalar_type());
  CrossAttentionGrads g;
  g.grad_out = rows(inner_contiguous(grad_out.to(a.q.scalar_type())));
  g.out = inner_contiguous(out);
  g.lse = lse.contiguous();
  g.dq = at::zeros({p.B, p.Lq, p.H, p.D}, a.q.options());  // the real head dims (a.q may be padded: `rows`)
  g.dk = at::zeros({p.B, p.Lk, p.Hkv, p.D}, a.k.options());
  g.dv = at::zeros({p.B, p.Lk, p.Hkv, p.Dv}, a.v.options());
  bind_rows(p, &CrossAttentionParams::set_out, g.out);
  bind_rows(p, &CrossAttentionParams::set_grad_out, g.grad_out);
  p.lse = g.lse.data_ptr();
  p.dq = g.dq.data_ptr();
  p.dk = g.dk.data_ptr();
  p.dv = g.dv.data_ptr();
  return g;
}

}  // namespace mmkernels
