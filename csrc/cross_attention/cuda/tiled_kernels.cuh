// Tiled SIMT kernels of cross_attention (torch-free): every call the tensor-core kernels do not take
// (float32 inputs above all, and 16-bit calls outside flash::eligible). They replace one-warp-per-row
// kernels that read every key row from global memory once per query row.
//
// Layout shared by all three kernels: a CTA of 128 threads owns kR * 16 rows (query rows; keys for
// dkdv) and streams tiles of 32 (keys; query rows for dkdv) through shared memory, as float. Thread
// (ty, tx) = (tid / 8, tid % 8) owns rows ty + 16 r (r < kR) and, of a score tile, the columns tx + 8c
// (c < 4); of a D-wide output, the columns tx + 8c (c < kCols). The 8 threads of a row are adjacent
// lanes, so a row reduction is three shuffles. kR = 2 up to head dim 128, 1 above (shared memory: at
// most ~100 KB at D = 256, within every sm_80+ part's opt-in limit, 99 KB on sm_86/89).
//
// Scores are blocked float32 dot products (32-long fmaf chains summed in order, as plain GEMMs block
// their reduction), the same in every kernel (tile_dots; fmaf(k, q) == fmaf(q, k)), rounded once with
// the scale (mul_rn): the backward recomputes the forward's scores bit for bit, so a saturated softmax
// gets P = 1 exactly. D_i = sum_j P_ij dP_ij from those same P and dP (not rowsum(dO * O), whose
// float32 rounding dq would see times |scale|): these kernels serve every |scale|.
//
//   forward:  grid (ceil(Lq / 16kR), H, B)    online softmax over key tiles; O, lse
//   dq:       grid (ceil(Lq / 16kR), H, B)    pass 1 over key tiles: D_i (also stored); pass 2: dQ
//   dkdv:     grid (ceil(Lk / 16kR), Hkv, B)  over the group's query heads and query tiles in order: dK, dV
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

constexpr int kTile = 32, kThreads = 128;  // kTile: the streamed tiles' rows, a score tile's columns
constexpr int kRowThreads = 8;             // threads sharing a row (adjacent lanes)
constexpr int kSP = kTile + 1;             // pitch of a score tile in shared memory
// Rows per thread: 2 (32 rows per CTA) up to 16 output columns per thread (head dim 128), else 1.
template <int kCols> constexpr int rows_per_thread() { return kCols > 16 ? 1 : 2; }
// Odd row pitches: the 8 rows a warp reads at one column fall in 8 different banks.
MMK_HOST_DEVICE int pitch(int64_t d) { return static_cast<int>(d) | 1; }

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

// rows x cols of x (row stride `ld` elements) into a float tile of `max_rows` rows and pitch `ldt`;
// zeros past `rows`.
template <typename T>
MMK_DEVICE void load_tile(dev::SmemPtr<float> tile, int ldt, const T* x, int64_t ld, int rows, int max_rows,
                          int cols) {
  for (int i = dev::thread_rank(); i < max_rows * cols; i += kThreads) {
    const int r = i / cols, c = i % cols;
    tile[r * ldt + c] = r < rows ? dev::to_float(x[r * ld + c]) : 0.f;
  }
}

// s[r][c] = A[ty + 16 r] . B[tx + 8 c] over n columns, blocked in chunks of 32.
template <int kR>
MMK_DEVICE void tile_dots(float (&s)[kR][4], dev::SmemPtr<const float> A, int lda, dev::SmemPtr<const float> B,
                          int ldb, int n, int ty, int tx) {
  MMK_UNROLL
  for (int r = 0; r < kR; ++r)
    MMK_UNROLL
    for (int c = 0; c < 4; ++c) s[r][c] = 0.f;
  for (int d0 = 0; d0 < n; d0 += 32) {
    float part[kR][4];
    MMK_UNROLL
    for (int r = 0; r < kR; ++r)
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) part[r][c] = 0.f;
    const int d1 = dev::min(n, d0 + 32);
    for (int d = d0; d < d1; ++d) {
      float a[kR];
      MMK_UNROLL
      for (int r = 0; r < kR; ++r) a[r] = A[(ty + 16 * r) * lda + d];
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) {
        const float bv = B[(tx + 8 * c) * ldb + d];
        MMK_UNROLL
        for (int r = 0; r < kR; ++r) part[r][c] = fmaf(a[r], bv, part[r][c]);
      }
    }
    MMK_UNROLL
    for (int r = 0; r < kR; ++r)
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) s[r][c] += part[r][c];
  }
}

// acc[r][c] += sum_{j < n} W[ty + 16 r][j] * X[j][tx + 8 c] for output columns < ncols (W: a score
// tile of pitch kSP; X: pitch ldx).
template <int kR, int kCols>
MMK_DEVICE void tile_accumulate(float (&acc)[kR][kCols], dev::SmemPtr<const float> W, dev::SmemPtr<const float> X,
                                int ldx, int n, int ncols, int ty, int tx) {
  for (int j = 0; j < n; ++j) {
    float w[kR];
    MMK_UNROLL
    for (int r = 0; r < kR; ++r) w[r] = W[(ty + 16 * r) * kSP + j];
    MMK_UNROLL
    for (int c = 0; c < kCols; ++c) {
      const int d = tx + kRowThreads * c;
      if (d < ncols) {
        const float x = X[j * ldx + d];
        MMK_UNROLL
        for (int r = 0; r < kR; ++r) acc[r][c] = fmaf(w[r], x, acc[r][c]);
      }
    }
  }
}

template <int kR, int kCols>
MMK_DEVICE void zero(float (&acc)[kR][kCols]) {
  MMK_UNROLL
  for (int r = 0; r < kR; ++r)
    MMK_UNROLL
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.f;
}

// Where a thread of a tiled kernel stands: its place in the tile layout, its CTA's batch, head (grid y:
// a query head, or a kv head for dkdv) and first tile row (grid x), and the head dims with their
// shared-memory pitches.
struct TileCtx {
  int ty, tx, D, Dv, pd, pv;
  int64_t b, h, row0;
  MMK_DEVICE TileCtx(const CrossAttentionParams& p, int rows_per_cta)
      : ty(dev::thread_rank() / kRowThreads), tx(dev::thread_rank() % kRowThreads), D(static_cast<int>(p.D)),
        Dv(static_cast<int>(p.Dv)), pd(pitch(p.D)), pv(pitch(p.Dv)), b(dev::block_idx().z), h(dev::block_idx().y),
        row0(int64_t(dev::block_idx().x) * rows_per_cta) {}
};

// One past the last key each of this thread's kR query rows may see (0 for a row beyond Lq).
template <int kR>
MMK_DEVICE void query_row_ends(const CrossAttentionParams& p, const TileCtx& t, int64_t n_valid, int64_t (&end)[kR]) {
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) {
    const int64_t row = t.row0 + t.ty + 16 * r;
    end[r] = row < p.Lq ? dev::min(n_valid, causal_end(p, t.b, row)) : 0;
  }
}

// Row r's acc[r] (columns tx + 8c < ncols) times `mul` into dst (a row of T).
template <typename T, int kR, int kCols>
MMK_DEVICE void store_row(T* dst, const float (&acc)[kR][kCols], int r, float mul, int ncols, int tx) {
  MMK_UNROLL
  for (int c = 0; c < kCols; ++c) {
    const int d = tx + kRowThreads * c;
    if (d < ncols) dst[d] = dev::from_float<T>(acc[r][c] * mul);
  }
}

// ---------------------------------------------------------------------------------------------------
// Forward

template <int kR>
MMK_HOST_DEVICE size_t fwd_smem_bytes(int64_t D, int64_t Dv) {  // Q, K, V, P
  return sizeof(float) * (size_t(16 * kR + kTile) * pitch(D) + size_t(kTile) * pitch(Dv) + size_t(16 * kR) * kSP);
}

template <typename T, int kCols>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) tiled_forward_kernel(const CrossAttentionParams p) {
  constexpr int kR = rows_per_thread<kCols>(), kBR = 16 * kR;
  const TileCtx t(p, kBR);
  const int ty = t.ty, tx = t.tx, D = t.D, Dv = t.Dv, pd = t.pd, pv = t.pv;
  const int64_t b = t.b, h = t.h, m0 = t.row0, hk = static_cast<int>(h) / static_cast<int>(gqa_group(p));
  dev::SmemPtr<float> Qs = dev::dynamic_smem<float>();
  dev::SmemPtr<float> Ks = Qs + kBR * pd;
  dev::SmemPtr<float> Vs = Ks + kTile * pd;
  dev::SmemPtr<float> Ps = Vs + kTile * pv;

  const int q_rows = static_cast<int>(dev::min<int64_t>(kBR, p.Lq - m0));
  const T* kg = static_cast<const T*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
  load_tile(Qs, pd, static_cast<const T*>(p.q) + b * p.q_stride_b + m0 * p.q_stride_l + h * p.q_stride_h,
            p.q_stride_l, q_rows, kBR, D);

  const int64_t n_valid = valid_keys(p, b);
  int64_t row_end[kR];
  query_row_ends(p, t, n_valid, row_end);
  const int64_t kv_end = dev::min(n_valid, causal_end(p, b, m0 + q_rows - 1));
  const float scale = static_cast<float>(p.scale);

  float m[kR], l[kR];
  bool had_key[kR];
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
    had_key[r] = false;
  }
  float acc[kR][kCols];
  zero(acc);
  for (int64_t n0 = 0; n0 < kv_end; n0 += kTile) {
    const int keys = static_cast<int>(dev::min<int64_t>(kTile, n_valid - n0));
    dev::sync_threads();  // the previous tile's readers are done (and Qs is loaded, the first time)
    load_tile(Ks, pd, kg + n0 * p.k_stride_l, p.k_stride_l, keys, kTile, D);
    load_tile(Vs, pv, vg + n0 * p.v_stride_l, p.v_stride_l, keys, kTile, Dv);
    dev::sync_threads();
    float s[kR][4];
    tile_dots(s, Qs, pd, Ks, pd, D, ty, tx);
    MMK_UNROLL
    for (int r = 0; r < kR; ++r) {
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
        Ps[(ty + 16 * r) * kSP + tx + 8 * c] = pj;
        sum += pj;
      }
      l[r] = l[r] * alpha + row_sum(sum);
      MMK_UNROLL
      for (int c = 0; c < kCols; ++c) acc[r][c] *= alpha;
    }
    dev::sync_threads();
    tile_accumulate(acc, Ps, Vs, pv, keys, Dv, ty, tx);  // O += P V
  }

  T* out = static_cast<T*>(p.out) + b * p.o_stride_b + h * p.o_stride_h;
  double* lse = static_cast<double*>(p.lse) + (b * p.H + h) * p.Lq;
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) {
    const float l_row = final_row_sum(l[r], row_max(had_key[r] ? 1.f : 0.f) > 0.f);
    const int64_t row = m0 + ty + 16 * r;
    if (row >= p.Lq) continue;
    store_row(out + row * p.o_stride_l, acc, r, inverse_row_sum(l_row), Dv, tx);  // empty row: zeros
    if (tx == 0) lse[row] = (l_row > 0.f || l_row != l_row) ? double(m[r]) + log(double(l_row)) : -INFINITY;
  }
}

// ---------------------------------------------------------------------------------------------------
// Backward

template <int kR>
MMK_HOST_DEVICE size_t bwd_smem_bytes(int64_t D, int64_t Dv) {  // own rows' two tiles, streamed two, one score tile
  return sizeof(float) * (size_t(16 * kR + kTile) * (pitch(D) + pitch(Dv)) + size_t(16 * kR) * kSP);
}

// D_i (pass 1, stored to Di) and dQ (pass 2) for kR * 16 query rows of (b, h).
template <typename T, int kCols>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) tiled_dq_kernel(const CrossAttentionParams p, float* Di) {
  constexpr int kR = rows_per_thread<kCols>(), kBR = 16 * kR;
  const TileCtx t(p, kBR);
  const int ty = t.ty, tx = t.tx, D = t.D, Dv = t.Dv, pd = t.pd, pv = t.pv;
  const int64_t b = t.b, h = t.h, m0 = t.row0, hk = static_cast<int>(h) / static_cast<int>(gqa_group(p));
  dev::SmemPtr<float> Qs = dev::dynamic_smem<float>();
  dev::SmemPtr<float> dOs = Qs + kBR * pd;
  dev::SmemPtr<float> Ks = dOs + kBR * pv;
  dev::SmemPtr<float> Vs = Ks + kTile * pd;
  dev::SmemPtr<float> dSs = Vs + kTile * pv;

  const int q_rows = static_cast<int>(dev::min<int64_t>(kBR, p.Lq - m0));
  load_tile(Qs, pd, static_cast<const T*>(p.q) + b * p.q_stride_b + m0 * p.q_stride_l + h * p.q_stride_h,
            p.q_stride_l, q_rows, kBR, D);
  load_tile(dOs, pv,
            static_cast<const T*>(p.grad_out) + b * p.do_stride_b + m0 * p.do_stride_l + h * p.do_stride_h,
            p.do_stride_l, q_rows, kBR, Dv);
  const T* kg = static_cast<const T*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
  const int64_t n_valid = valid_keys(p, b);
  const double* lse_g = static_cast<const double*>(p.lse) + (b * p.H + h) * p.Lq;
  int64_t row_end[kR];
  query_row_ends(p, t, n_valid, row_end);
  Lse lse[kR];
  MMK_UNROLL
  for (int r = 0; r < kR; ++r)
    if (m0 + ty + 16 * r < p.Lq) lse[r] = Lse(lse_g[m0 + ty + 16 * r]);
  const int64_t kv_end = dev::min(n_valid, causal_end(p, b, m0 + q_rows - 1));
  const float scale = static_cast<float>(p.scale);

  // P and dP of this thread's kR x 4 block of the key tile at n0 (K, V tiles loaded).
  auto probs = [&](int64_t n0, float (&pr)[kR][4], float (&dp)[kR][4]) {
    tile_dots(pr, Qs, pd, Ks, pd, D, ty, tx);
    tile_dots(dp, dOs, pv, Vs, pv, Dv, ty, tx);
    MMK_UNROLL
    for (int r = 0; r < kR; ++r)
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int64_t key = n0 + tx + 8 * c;
        const bool counts = key < row_end[r] && key_ok(p, b, key) && !lse[r].empty();
        pr[r][c] = counts ? lse[r].prob(dev::mul_rn(pr[r][c], scale)) : 0.f;
      }
  };
  auto load_kv = [&](int64_t n0) {
    const int keys = static_cast<int>(dev::min<int64_t>(kTile, n_valid - n0));
    dev::sync_threads();
    load_tile(Ks, pd, kg + n0 * p.k_stride_l, p.k_stride_l, keys, kTile, D);
    load_tile(Vs, pv, vg + n0 * p.v_stride_l, p.v_stride_l, keys, kTile, Dv);
    dev::sync_threads();
    return keys;
  };

  float di[kR];  // pass 1: D_i = sum_j P_ij dP_ij, in key order
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) di[r] = 0.f;
  for (int64_t n0 = 0; n0 < kv_end; n0 += kTile) {
    load_kv(n0);
    float pr[kR][4], dp[kR][4];
    probs(n0, pr, dp);
    MMK_UNROLL
    for (int r = 0; r < kR; ++r) {
      float part = 0.f;
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) part = fmaf(pr[r][c], dp[r][c], part);
      di[r] += row_sum(part);
    }
  }
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) {
    const int64_t row = m0 + ty + 16 * r;
    if (row < p.Lq && tx == 0) Di[(b * p.H + h) * p.Lq + row] = di[r];
  }

  float acc[kR][kCols];  // pass 2: dQ += dS K
  zero(acc);
  for (int64_t n0 = 0; n0 < kv_end; n0 += kTile) {
    const int keys = load_kv(n0);
    float pr[kR][4], dp[kR][4];
    probs(n0, pr, dp);
    MMK_UNROLL
    for (int r = 0; r < kR; ++r)
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) dSs[(ty + 16 * r) * kSP + tx + 8 * c] = pr[r][c] * (dp[r][c] - di[r]) * scale;
    dev::sync_threads();
    tile_accumulate(acc, dSs, Ks, pd, keys, D, ty, tx);
  }
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) {
    const int64_t row = m0 + ty + 16 * r;
    if (row < p.Lq) store_row(static_cast<T*>(p.dq) + ((b * p.Lq + row) * p.H + h) * p.D, acc, r, 1.f, D, tx);
  }
}

// dK, dV for kR * 16 keys of (b, hk): over the group's query heads and their query tiles, in order.
template <typename T, int kCols>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) tiled_dkdv_kernel(const CrossAttentionParams p, const float* Di) {
  constexpr int kR = rows_per_thread<kCols>(), kBR = 16 * kR;
  const TileCtx t(p, kBR);  // own rows: keys
  const int ty = t.ty, tx = t.tx, D = t.D, Dv = t.Dv, pd = t.pd, pv = t.pv;
  const int64_t b = t.b, hk = t.h, n0 = t.row0;
  const int64_t n_valid = valid_keys(p, b);
  if (n0 >= n_valid) return;  // keys that never count keep the glue's zero gradient
  const int64_t group = gqa_group(p);
  dev::SmemPtr<float> Ks = dev::dynamic_smem<float>();
  dev::SmemPtr<float> Vs = Ks + kBR * pd;
  dev::SmemPtr<float> Qs = Vs + kBR * pv;
  dev::SmemPtr<float> dOs = Qs + kTile * pd;
  dev::SmemPtr<float> Wt = dOs + kTile * pv;  // P^T, then dS^T: keys x query rows

  const int keys = static_cast<int>(dev::min<int64_t>(kBR, n_valid - n0));
  load_tile(Ks, pd, static_cast<const T*>(p.k) + b * p.k_stride_b + n0 * p.k_stride_l + hk * p.k_stride_h,
            p.k_stride_l, keys, kBR, D);
  load_tile(Vs, pv, static_cast<const T*>(p.v) + b * p.v_stride_b + n0 * p.v_stride_l + hk * p.v_stride_h,
            p.v_stride_l, keys, kBR, Dv);
  bool key_counts[kR];  // this thread's keys n0 + ty + 16 r
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) {
    const int64_t key = n0 + ty + 16 * r;
    key_counts[r] = key < n_valid && key_ok(p, b, key);
  }
  const float scale = static_cast<float>(p.scale);
  // Causal: query tiles wholly above this key tile's diagonal (their last row sees no key >= n0) skipped.
  int64_t q_first = 0;
  if (p.causal) q_first = dev::max<int64_t>(0, n0 - causal_offset(p, b)) / kTile * kTile;

  float dk[kR][kCols], dv[kR][kCols];
  zero(dk);
  zero(dv);
  for (int64_t g = 0; g < group; ++g) {
    const int64_t h = hk * group + g;
    const double* lse_g = static_cast<const double*>(p.lse) + (b * p.H + h) * p.Lq;
    const float* di_g = Di + (b * p.H + h) * p.Lq;
    for (int64_t m0 = q_first; m0 < p.Lq; m0 += kTile) {
      const int q_rows = static_cast<int>(dev::min<int64_t>(kTile, p.Lq - m0));
      dev::sync_threads();  // the previous step's readers are done (and K, V are loaded)
      load_tile(Qs, pd, static_cast<const T*>(p.q) + b * p.q_stride_b + m0 * p.q_stride_l + h * p.q_stride_h,
                p.q_stride_l, q_rows, kTile, D);
      load_tile(dOs, pv,
                static_cast<const T*>(p.grad_out) + b * p.do_stride_b + m0 * p.do_stride_l + h * p.do_stride_h,
                p.do_stride_l, q_rows, kTile, Dv);
      dev::sync_threads();
      // S^T and dP^T: this thread's keys (rows) x query rows m0 + tx + 8c (columns)
      float pt[kR][4], dst[kR][4];
      tile_dots(pt, Ks, pd, Qs, pd, D, ty, tx);
      tile_dots(dst, Vs, pv, dOs, pv, Dv, ty, tx);
      MMK_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int64_t row = m0 + tx + 8 * c;
        const Lse lse(row < p.Lq ? lse_g[row] : -INFINITY);
        const float di = row < p.Lq ? di_g[row] : 0.f;
        const int64_t end = row < p.Lq ? causal_end(p, b, row) : 0;
        MMK_UNROLL
        for (int r = 0; r < kR; ++r) {
          const bool counts = key_counts[r] && n0 + ty + 16 * r < end && !lse.empty();
          pt[r][c] = counts ? lse.prob(dev::mul_rn(pt[r][c], scale)) : 0.f;
          dst[r][c] = pt[r][c] * (dst[r][c] - di) * scale;
          Wt[(ty + 16 * r) * kSP + tx + 8 * c] = pt[r][c];
        }
      }
      dev::sync_threads();
      tile_accumulate(dv, Wt, dOs, pv, q_rows, Dv, ty, tx);  // dV += P^T dO
      dev::sync_threads();
      MMK_UNROLL
      for (int r = 0; r < kR; ++r)
        MMK_UNROLL
        for (int c = 0; c < 4; ++c) Wt[(ty + 16 * r) * kSP + tx + 8 * c] = dst[r][c];
      dev::sync_threads();
      tile_accumulate(dk, Wt, Qs, pd, q_rows, D, ty, tx);  // dK += dS^T Q
    }
  }
  MMK_UNROLL
  for (int r = 0; r < kR; ++r) {
    const int64_t key = n0 + ty + 16 * r;
    if (key >= n_valid) continue;
    const int64_t off = (b * p.Lk + key) * p.Hkv + hk;
    store_row(static_cast<T*>(p.dk) + off * p.D, dk, r, 1.f, D, tx);
    store_row(static_cast<T*>(p.dv) + off * p.Dv, dv, r, 1.f, Dv, tx);
  }
}

// ---------------------------------------------------------------------------------------------------
// Launches: the output columns per thread (kCols: 4, 8, 16 or 32 for max(D, Dv) up to 32, 64, 128,
// 256) are a template parameter, so narrow heads do not carry 256-wide accumulators; batches in slices
// of at most kMaxGridYZ (grid.z).

template <typename Fn>
decltype(auto) cols_switch(int64_t d, Fn&& fn) {
  if (d <= 32) return fn(std::integral_constant<int, 4>{});
  if (d <= 64) return fn(std::integral_constant<int, 8>{});
  if (d <= 128) return fn(std::integral_constant<int, 16>{});
  return fn(std::integral_constant<int, 32>{});
}

inline dev::Dim3 grid_of(int64_t rows, int rows_per_cta, int64_t heads, int64_t batches) {
  return dev::Dim3{static_cast<uint32_t>(dev::ceil_div<int64_t>(rows, rows_per_cta)), static_cast<uint32_t>(heads),
                   static_cast<uint32_t>(batches)};
}

template <typename T, int kCols>
dev::Error forward_cols(const CrossAttentionParams& p_all, dev::Stream stream) {
  constexpr int kR = rows_per_thread<kCols>();
  const size_t smem = fwd_smem_bytes<kR>(p_all.D, p_all.Dv);
  dev::Error err = dev::set_max_dynamic_smem(tiled_forward_kernel<T, kCols>, static_cast<int>(smem));
  for (BatchSlices s(p_all, kMaxGridYZ); s && err == dev::kSuccess; ++s) {
    const CrossAttentionParams& p = *s;
    err = MMK_LAUNCH((tiled_forward_kernel<T, kCols>), grid_of(p.Lq, 16 * kR, p.H, p.B), (dev::Dim3{kThreads, 1, 1}),
                     smem, stream, p);
  }
  return err;
}

template <typename T, int kCols>
dev::Error backward_cols(const CrossAttentionParams& p_all, float* Di_all, dev::Stream stream) {
  constexpr int kR = rows_per_thread<kCols>();
  const size_t smem = bwd_smem_bytes<kR>(p_all.D, p_all.Dv);
  dev::Error err = dev::set_max_dynamic_smem(tiled_dq_kernel<T, kCols>, static_cast<int>(smem));
  if (err == dev::kSuccess) err = dev::set_max_dynamic_smem(tiled_dkdv_kernel<T, kCols>, static_cast<int>(smem));
  for (BatchSlices s(p_all, kMaxGridYZ); s && err == dev::kSuccess; ++s) {
    const CrossAttentionParams& p = *s;
    float* Di = Di_all + s.first() * p.H * p.Lq;  // indexed from the slice's first batch, as the params are
    err = MMK_LAUNCH((tiled_dq_kernel<T, kCols>), grid_of(p.Lq, 16 * kR, p.H, p.B), (dev::Dim3{kThreads, 1, 1}), smem,
                     stream, p, Di);
    if (err == dev::kSuccess)
      err = MMK_LAUNCH((tiled_dkdv_kernel<T, kCols>), grid_of(p.Lk, 16 * kR, p.Hkv, p.B), (dev::Dim3{kThreads, 1, 1}),
                       smem, stream, p, static_cast<const float*>(Di));
  }
  return err;
}

template <typename T>
dev::Error forward(const CrossAttentionParams& p, dev::Stream stream) {
  if (p.Lq == 0 || p.H == 0 || p.B == 0) return dev::kSuccess;
  return cols_switch(dev::max(p.D, p.Dv),
                     [&](auto cols) { return forward_cols<T, decltype(cols)::value>(p, stream); });
}

// `Di`: float32 workspace of B * H * Lq (written by the dq kernel, read by dkdv).
template <typename T>
dev::Error backward(const CrossAttentionParams& p, float* Di, dev::Stream stream) {
  if (p.Lq == 0 || p.H == 0 || p.Lk == 0 || p.B == 0) return dev::kSuccess;
  return cols_switch(dev::max(p.D, p.Dv),
                     [&](auto cols) { return backward_cols<T, decltype(cols)::value>(p, Di, stream); });
}

}  // namespace tiled
MMK_BACKEND_END
}  // namespace mmkernels::cuda
