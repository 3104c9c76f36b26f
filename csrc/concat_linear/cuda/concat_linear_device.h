// Torch glue of the CUDA concat_linear kernels, shared by the GPU build (concat_linear_cuda.cpp) and
// the host emulation (concat_linear_emulated.cpp). Compiled once per backend, hence the backend namespace;
// its own namespace (concat_linear_device), so no helper here can meet another op's of the same name.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "common/device/device_queries.h"
#include "common/device/torch_check.h"
#include "common/dispatch.h"
#include "concat_linear/concat_linear_glue.h"
#include "concat_linear/cuda/concat_linear_entry.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace concat_linear_device {

inline void run_gemm(const GemmArgs& args, DType dtype, dev::Stream stream) {
  dispatch_dtype<float, dev::half, dev::bf16, void>(dtype, "concat_linear on CUDA", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dev::check(concat_linear_gemm<T>(args, stream), "concat_linear GEMM kernel");
  });
}

inline const char* elem_ptr(const at::Tensor& t, int64_t offset_elems) {
  return static_cast<const char*>(t.data_ptr()) + offset_elems * static_cast<int64_t>(t.element_size());
}

// The tensor-core GEMMs read operand rows as 16-byte chunks: a unit inner stride and 16-byte aligned
// rows. For 16-bit inputs, operands that are not so are copied once into zero-padded buffers (row
// length rounded up to 8); float32 runs the SIMT kernel, which takes any strides. The sm_80 kernel also
// reads a row's last chunk whole, so there a row whose width is not a multiple of 8 must be followed by
// zeros (a view of a wider tensor is copied); TMA (sm_90) stops at the width itself.
inline bool chunk_rows(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat ||
         (t.stride(1) == 1 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(0) % 8 == 0);
}
inline bool whole_chunks_needed(const at::Tensor& t) {
  return t.scalar_type() != at::kFloat && !device_runs_sm90a();
}
inline at::Tensor chunk_ready_rows(const at::Tensor& t) {  // 2-D (rows, cols)
  if (t.numel() == 0 || (chunk_rows(t) && (t.size(1) % 8 == 0 || !whole_chunks_needed(t)))) return t;
  at::Tensor padded = at::zeros({t.size(0), (t.size(1) + 7) / 8 * 8}, t.options());
  padded.narrow(1, 0, t.size(1)).copy_(t);
  return padded;
}
// The weight with every segment starting on a 16-byte boundary: itself, or a copy whose segments sit
// at offsets rounded up to 8 columns (zero columns between them).
struct SegmentedWeight {
  at::Tensor w;
  std::vector<int64_t> offsets;
};
inline SegmentedWeight chunk_ready_weight(const ConcatLinearArgs& a, const at::Tensor& weight) {
  bool ok = chunk_rows(weight);
  for (int64_t off : a.offsets) ok = ok && (weight.scalar_type() == at::kFloat || off % 8 == 0);
  if (ok) return {weight, a.offsets};
  SegmentedWeight sw;
  int64_t k = 0;
  for (size_t i = 0; i < a.x.size(); ++i) {
    sw.offsets.push_back(k);
    k += (a.x[i].size(1) + 7) / 8 * 8;
  }
  sw.w = at::zeros({a.N, std::max<int64_t>(k, 8)}, weight.options());
  for (size_t i = 0; i < a.x.size(); ++i)
    sw.w.narrow(1, sw.offsets[i], a.x[i].size(1)).copy_(weight.narrow(1, a.offsets[i], a.x[i].size(1)));
  return sw;
}

// A(m, k) = x_i, B(k, n) = W[n, off_i + k]: the forward segment i.
inline GemmSegment forward_segment(const at::Tensor& x, int64_t width, const at::Tensor& w, int64_t off) {
  GemmSegment g;
  g.a = x.data_ptr();
  g.sam = x.stride(0);
  g.sak = x.stride(1);
  g.b = elem_ptr(w, off * w.stride(1));
  g.sbk = w.stride(1);
  g.sbn = w.stride(0);
  g.K = width;  // x may be a padded copy: only the segment's own columns count
  return g;
}

inline std::tuple<at::Tensor, at::Tensor> run_concat_linear_fwd(ConcatLinearArgs& a, const at::Tensor& weight,
                                                                const std::optional<at::Tensor>& bias,
                                                                dev::Stream stream) {
  const auto opts = a.x[0].options();
  const DType dtype = to_dtype(opts.dtype().toScalarType());
  at::Tensor y = at::empty({a.M, a.N}, opts);
  at::Tensor z = a.store_z ? at::empty({a.M, a.N}, opts) : at::empty({0}, opts);
  const auto shape = out_shape(a);
  auto result = [&] { return std::make_tuple(y.view(shape), a.store_z ? z.view(shape) : z); };
  if (a.M == 0 || a.N == 0) return result();
  at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  const SegmentedWeight sw = chunk_ready_weight(a, weight);
  std::vector<at::Tensor> xs;  // kept alive until the launches are done
  for (const auto& x : a.x) xs.push_back(chunk_ready_rows(x));
  // Up to kMaxSegments segments per launch; more are chained through a float32 accumulator.
  const int64_t n = static_cast<int64_t>(a.x.size());
  at::Tensor acc;
  for (int64_t s0 = 0; s0 < std::max<int64_t>(n, 1); s0 += kMaxSegments) {
    GemmArgs args;
    args.M = a.M;
    args.N = a.N;
    for (int64_t i = s0; i < std::min<int64_t>(n, s0 + kMaxSegments); ++i)
      args.seg[args.n_seg++] = forward_segment(xs[i], a.x[i].size(1), sw.w, sw.offsets[i]);
    args.scm = a.N;
    args.scn = 1;
    args.acc_in = acc.defined() ? acc.data_ptr<float>() : nullptr;
    if (s0 + kMaxSegments >= n) {  // the last launch applies the epilogue
      args.c = y.data_ptr();
      args.bias = b.defined() ? b.data_ptr() : nullptr;
      args.z = a.store_z ? z.data_ptr() : nullptr;
      args.act = a.act;
      run_gemm(args, dtype, stream);
    } else {
      at::Tensor next = at::empty({a.M, a.N}, opts.dtype(at::kFloat));
      args.c = next.data_ptr();
      args.c_is_float = true;
      run_gemm(args, dtype, stream);
      acc = next;
    }
  }
  return result();
}

inline std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> run_concat_linear_bwd(
    ConcatLinearArgs& a, const at::Tensor& grad_out, at::TensorList inputs, const at::Tensor& weight,
    const at::Tensor& z, bool has_bias, at::OptionalIntArrayRef input_mask, bool weight_grad, dev::Stream stream) {
  const auto st = inputs[0].scalar_type();
  const DType dtype = to_dtype(st);
  auto [dy, zc] = prepare_concat_linear_grads(a, grad_out, z, st);
  at::Tensor dz = dy;
  if (zc.defined()) {
    dz = at::empty_like(dy);
    dispatch_dtype<float, dev::half, dev::bf16, void>(dtype, "concat_linear on CUDA", [&](auto tag) {
      using T = typename decltype(tag)::type;
      dev::check(concat_linear_act_grad<T>(dy.data_ptr(), zc.data_ptr(), dz.data_ptr(), dz.numel(), a.act, stream),
                 "concat_linear activation-gradient kernel");
    });
  }
  const std::vector<bool> want_x = input_grads_wanted(a, input_mask);
  std::vector<at::Tensor> dx;
  at::Tensor dw = weight_grad ? at::zeros({a.N, a.K}, weight.options()) : at::empty({0}, weight.options());
  // Operands of the gradient GEMMs, tensor-core ready (dz as A of both: rows of N values, padded).
  dz = chunk_ready_rows(dz);
  const int64_t ldz = dz.stride(0);
  const SegmentedWeight sw = chunk_ready_weight(a, weight);
  for (size_t i = 0; i < a.x.size(); ++i) {
    const at::Tensor x = chunk_ready_rows(a.x[i]);
    const int64_t d = a.x[i].size(1), off = a.offsets[i];
    at::Tensor dx_i = want_x[i] ? at::empty({a.M, d}, x.options()) : at::empty({0}, x.options());
    if (want_x[i] && a.M > 0 && d > 0) {
      GemmArgs g;  // dX_i (M x d) = dz (M x N) @ W[:, off:off+d] (N x d)
      g.M = a.M;
      g.N = d;
      g.n_seg = 1;
      g.seg[0].a = dz.data_ptr();
      g.seg[0].sam = ldz;
      g.seg[0].sak = 1;
      g.seg[0].b = elem_ptr(sw.w, sw.offsets[i] * sw.w.stride(1));
      g.seg[0].sbk = sw.w.stride(0);
      g.seg[0].sbn = sw.w.stride(1);
      g.seg[0].K = a.N;
      g.c = dx_i.data_ptr();
      g.scm = d;
      g.scn = 1;
      run_gemm(g, dtype, stream);
    }
    dx.push_back(want_x[i] ? dx_i.view(inputs[i].sizes()) : dx_i);
    if (weight_grad && a.N > 0 && d > 0 && a.M > 0) {
      GemmArgs g;  // dW[:, off:off+d] (N x d) = dz^T (N x M) @ X_i (M x d)
      g.M = a.N;
      g.N = d;
      g.n_seg = 1;
      g.seg[0].a = dz.data_ptr();
      g.seg[0].sam = 1;
      g.seg[0].sak = ldz;
      g.seg[0].b = x.data_ptr();
      g.seg[0].sbk = x.stride(0);
      g.seg[0].sbn = x.stride(1);
      g.seg[0].K = a.M;
      g.split = dtype == DType::Float32 ? 1 : split_k_for(g.M, g.N, g.seg[0].K, device_multiprocessors());
      if (g.split == 1) {
        g.c = const_cast<char*>(elem_ptr(dw, off));
        g.scm = a.K;
        g.scn = 1;
        run_gemm(g, dtype, stream);
      } else {  // float32 partials, added in split order
        at::Tensor partial = at::empty({g.split, a.N, d}, dw.options().dtype(at::kFloat));
        g.c = partial.data_ptr();
        g.c_is_float = true;
        g.scm = d;
        g.scn = 1;
        g.split_stride = a.N * d;
        run_gemm(g, dtype, stream);
        dw.narrow(1, off, d).copy_(partial.sum(0));
      }
    }
  }
  at::Tensor db = has_bias ? dz.narrow(1, 0, a.N).sum(0, /*keepdim=*/false, at::kFloat).to(st)
                           : at::empty({0}, weight.options());
  return {dx, dw, db};
}

}  // namespace concat_linear_device
MMK_BACKEND_END
}  // namespace mmkernels::cuda
