// Tiled SIMT forward of cross_attention (torch-free): the forward of every call the tensor-core kernels
// do not take (float32 inputs above all, and 16-bit calls outside flash::eligible). Replaces the
// one-warp-per-row kernel, which read every key row from global memory once per query row.
//
// A CTA of 128 threads owns 32 query rows of one (batch, head). Key/value tiles of 32 rows go through
// shared memory (as float); each thread computes a 2 x 4 block of scores (rows ty, ty + 16; keys tx,
// tx + 8, tx + 16, tx + 24 with ty = tid / 8, tx = tid % 8), the online softmax of a row runs over the 8
// threads that share it (adjacent lanes: three shuffles), and P goes through shared memory into
// O += P V, where each thread owns its 2 rows x every 8th output column.
//
// Scores are the same blocked float32 dot products as the SIMT backward's (simt::dot_row: 32-long
// fmaf chains summed in order), rounded once with the scale (mul_rn), so the backward recomputes P
// with the forward's bits (a saturated softmax gets P = 1 exactly).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/device/primitives.h"
#include "common/dtype.h"
#include "common/numerics.h"
#include "cross_attention/cuda/attention_common.cuh"
#include "cross_attention/params.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace tiled {

constexpr int kBM = 32, kBN = 32, kThreads = 128;
constexpr int kRowThreads = 8;                         // threads sharing a query row (adjacent lanes)
constexpr int kMaxCols = kMaxHeadDim / kRowThreads;    // output columns per thread and row
// Odd row pitches: the 8 key rows a warp reads at one column fall in 8 different banks.
MMK_HOST_DEVICE int pitch(int d) { return d | 1; }
MMK_HOST_DEVICE size_t smem_bytes(int D, int Dv) {
  return sizeof(float) * (size_t(kBM + kBN) * pitch(D) + size_t(kBN) * pitch(Dv) + size_t(kBM) * (kBN + 1));
}

MMK_DEVICE float row_max(float v) {  // over the 8 lanes of a row, NaN-propagating
  MMK_UNROLL
  for (int o = 1; o < kRowThreads; o <<= 1) v = max_nan(v, dev::shfl_xor(dev::kFullMask, v, o));
  return v;
}
MMK_DEVICE float row_sum(float v) {
  MMK_UNROLL
  for (int o = 1; o < kRowThreads; o <<= 1) v += dev::shfl_xor(dev::kFullMask, v, o);
  return v;
}

// rows x cols of x (row stride `ld` elements) into a float tile of pitch `ldt`; zeros past `rows`.
template <typename T>
MMK_DEVICE void load_tile(dev::SmemPtr<float> tile, int ldt, const T* x, int64_t ld, int rows, int max_rows,
                          int cols) {
  for (int i = dev::thread_rank(); i < max_rows * cols; i += kThreads) {
    const int r = i / cols, c = i % cols;
    tile[r * ldt + c] = r < rows ? dev::to_float(x[r * ld + c]) : 0.f;
  }
}

// grid (ceil(Lq / kBM), H, B), kThreads threads, smem_bytes(D, Dv) of dynamic shared memory.
template <typename T>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) tiled_forward_kernel(const CrossAttentionParams p) {
  const int tid = dev::thread_rank(), ty = tid / kRowThreads, tx = tid % kRowThreads;
  const int64_t b = dev::block_idx().z, h = dev::block_idx().y, m0 = int64_t(dev::block_idx().x) * kBM;
  const int64_t hk = static_cast<int>(h) / static_cast<int>(gqa_group(p));
  const int D = static_cast<int>(p.D), Dv = static_cast<int>(p.Dv);
  const int pd = pitch(D), pv = pitch(Dv);
  dev::SmemPtr<float> Qs = dev::dynamic_smem<float>();
  dev::SmemPtr<float> Ks = Qs + kBM * pd;
  dev::SmemPtr<float> Vs = Ks + kBN * pd;
  dev::SmemPtr<float> Ps = Vs + kBN * pv;  // [kBM][kBN + 1]

  const int q_rows = static_cast<int>(dev::min<int64_t>(kBM, p.Lq - m0));
  const T* qg = static_cast<const T*>(p.q) + b * p.q_stride_b + m0 * p.q_stride_l + h * p.q_stride_h;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
  load_tile(Qs, pd, qg, p.q_stride_l, q_rows, kBM, D);

  const int64_t n_valid = valid_keys(p, b);
  int64_t row_end[2];  // one past the last key each of this thread's rows may see (0: beyond Lq)
  MMK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int64_t row = m0 + ty + 16 * r;
    row_end[r] = row < p.Lq ? dev::min(n_valid, causal_end(p, b, row)) : 0;
  }
  const int64_t kv_end = dev::min(n_valid, causal_end(p, b, m0 + q_rows - 1));
  const float scale = static_cast<float>(p.scale);

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  bool had_key[2] = {false, false};
  float acc[2][kMaxCols];
  MMK_UNROLL
  for (int r = 0; r < 2; ++r)
    MMK_UNROLL
    for (int c = 0; c < kMaxCols; ++c) acc[r][c] = 0.f;

  for (int64_t n0 = 0; n0 < kv_end; n0 += kBN) {
    const int keys = static_cast<int>(dev::min<int64_t>(kBN, n_valid - n0));
    dev::sync_threads();  // the previous tile's readers are done (and Qs is loaded, first time)
    load_tile(Ks, pd, kg + n0 * p.k_stride_l, p.k_stride_l, keys, kBN, D);
    load_tile(Vs, pv, vg + n0 * p.v_stride_l, p.v_stride_l, keys, kBN, Dv);
    dev::sync_threads();

    // S for rows (ty, ty + 16) x keys (tx + 8c): blocked dot products, as simt::dot_row
    float s[2][4];
    MMK_UNROLL
    for (int r = 0; r < 2; ++r)
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) s[r][c] = 0.f;
    for (int d0 = 0; d0 < D; d0 += 32) {
      float part[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
      const int d1 = dev::min(D, d0 + 32);
      for (int d = d0; d < d1; ++d) {
        const float q0 = Qs[ty * pd + d], q1 = Qs[(ty + 16) * pd + d];
        MMK_UNROLL
        for (int c = 0; c < 4; ++c) {
          const float kv = Ks[(tx + 8 * c) * pd + d];
          part[0][c] = fmaf(q0, kv, part[0][c]);
          part[1][c] = fmaf(q1, kv, part[1][c]);
        }
      }
      MMK_UNROLL
      for (int r = 0; r < 2; ++r)
        MMK_UNROLL
        for (int c = 0; c < 4; ++c) s[r][c] += part[r][c];
    }

    MMK_UNROLL
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int64_t key = n0 + tx + 8 * c;
        const bool counts = key < row_end[r] && key_ok(p, b, key);
        had_key[r] = had_key[r] || counts;
        s[r][c] = counts ? dev::mul_rn(s[r][c], scale) : -INFINITY;
        mx = max_nan(mx, s[r][c]);
      }
      const float m_new = max_nan(m[r], row_max(mx));
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // no valid key yet: P = 0, acc stays 0
      const float alpha = expf(m[r] - m_use);
      m[r] = m_new;
      float sum = 0.f;
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) {
        const float pj = s[r][c] == -INFINITY ? 0.f : expf(s[r][c] - m_use);
        Ps[(ty + 16 * r) * (kBN + 1) + tx + 8 * c] = pj;
        sum += pj;
      }
      l[r] = l[r] * alpha + row_sum(sum);
      MMK_UNROLL
      for (int c = 0; c < kMaxCols; ++c) acc[r][c] *= alpha;
    }
    dev::sync_threads();

    // O += P V: this thread's rows x columns tx + 8c
    for (int j = 0; j < keys; ++j) {
      const float p0 = Ps[ty * (kBN + 1) + j], p1 = Ps[(ty + 16) * (kBN + 1) + j];
      MMK_UNROLL
      for (int c = 0; c < kMaxCols; ++c) {
        const int d = tx + kRowThreads * c;
        if (d < Dv) {
          const float vv = Vs[j * pv + d];
          acc[0][c] = fmaf(p0, vv, acc[0][c]);
          acc[1][c] = fmaf(p1, vv, acc[1][c]);
        }
      }
    }
  }

  T* out = static_cast<T*>(p.out) + b * p.o_stride_b + h * p.o_stride_h;
  double* lse = static_cast<double*>(p.lse) + (b * p.H + h) * p.Lq;
  MMK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const bool any_key = row_max(had_key[r] ? 1.f : 0.f) > 0.f;
    const float l_row = final_row_sum(l[r], any_key);
    const float inv = inverse_row_sum(l_row);  // zeros for a row with no valid key, NaN stays NaN
    const int64_t row = m0 + ty + 16 * r;
    if (row >= p.Lq) continue;
    T* orow = out + row * p.o_stride_l;
    MMK_UNROLL
    for (int c = 0; c < kMaxCols; ++c) {
      const int d = tx + kRowThreads * c;
      if (d < Dv) orow[d] = dev::from_float<T>(acc[r][c] * inv);
    }
    if (tx == 0) lse[row] = (l_row > 0.f || l_row != l_row) ? double(m[r]) + log(double(l_row)) : -INFINITY;
  }
}

// Every batch in slices of at most kMaxGridYZ (grid.z).
template <typename T>
dev::Error forward(const CrossAttentionParams& p_all, dev::Stream stream) {
  if (p_all.Lq == 0 || p_all.H == 0 || p_all.B == 0) return dev::kSuccess;
  const size_t smem = smem_bytes(static_cast<int>(p_all.D), static_cast<int>(p_all.Dv));
  dev::Error err = dev::set_max_dynamic_smem(tiled_forward_kernel<T>, static_cast<int>(smem));
  for (int64_t b0 = 0; b0 < p_all.B && err == dev::kSuccess; b0 += kMaxGridYZ) {
    const CrossAttentionParams p = batch_slice(p_all, b0, dev::min<int64_t>(kMaxGridYZ, p_all.B - b0));
    const dev::Dim3 grid{static_cast<uint32_t>(dev::ceil_div<int64_t>(p.Lq, kBM)), static_cast<uint32_t>(p.H),
                         static_cast<uint32_t>(p.B)};
    err = MMK_LAUNCH(tiled_forward_kernel<T>, grid, (dev::Dim3{kThreads, 1, 1}), smem, stream, p);
  }
  return err;
}

}  // namespace tiled
MMK_BACKEND_END
}  // namespace mmkernels::cuda
