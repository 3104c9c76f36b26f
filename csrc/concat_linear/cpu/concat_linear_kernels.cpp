// concat_linear's fused element-wise passes on CPU: bias + activation over the GEMM accumulator in one
// pass (forward), and dz = dy * act'(z) in one pass (backward). Vectorised with at::vec; compiled once
// per CPU capability.
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "common/cpu/bf16_gemm.h"
#include "common/cpu/f32_gemm.h"
#include "common/cpu/kernel_utils.h"
#include "concat_linear/params.h"

namespace mmkernels::cpu::CPU_CAPABILITY {
namespace {

// The activation math is common/activation.h's; here only the at::vec policy for the float path (the
// hot one). Scalars use the default policy.
struct VecMath {
  using Vec = at::vec::Vectorized<float>;
  static Vec erf(const Vec& x) { return x.erf(); }
  static Vec tanh(const Vec& x) { return x.tanh(); }
  static Vec exp(const Vec& x) { return x.exp(); }
  static Vec relu(const Vec& x) { return at::vec::clamp_min(x, Vec(0.f)); }
  static Vec step(const Vec& x) { return Vec::blendv(Vec(0.f), Vec(1.f), x > Vec(0.f)); }
};

inline at::vec::Vectorized<float> act_fwd_vec(const at::vec::Vectorized<float>& z, Activation act) {
  return activation_forward<at::vec::Vectorized<float>, VecMath>(z, act);
}
inline at::vec::Vectorized<float> act_grad_vec(const at::vec::Vectorized<float>& z, Activation act) {
  return activation_grad<at::vec::Vectorized<float>, VecMath>(z, act);
}
template <typename A> inline A act_fwd(A z, Activation act) { return activation_forward<A>(z, act); }
template <typename A> inline A act_grad(A z, Activation act) { return activation_grad<A>(z, act); }

// acc[i] += part[i]
inline void add_rows(float* acc, const float* part, int64_t n) {
  using Vec = at::vec::Vectorized<float>;
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) (Vec::loadu(acc + i) + Vec::loadu(part + i)).store(acc + i);
  for (; i < n; ++i) acc[i] += part[i];
}

// One output row segment: z = acc + b, y = act(z), in float32, written as T.
template <typename T>
inline void epilogue_row(const float* acc, const float* bias, int64_t n, Activation act, T* y, T* z, float* scratch) {
  using Vec = at::vec::Vectorized<float>;
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    Vec v = Vec::loadu(acc + j);
    if (bias) v = v + Vec::loadu(bias + j);
    if (z) v.store(scratch + n + j);
    act_fwd_vec(v, act).store(scratch + j);
  }
  for (; j < n; ++j) {
    const float v = acc[j] + (bias ? bias[j] : 0.f);
    if (z) scratch[n + j] = v;
    scratch[j] = act_fwd(v, act);
  }
  convert_row(scratch, y, n);
  if (z) convert_row(scratch + n, z, n);
}

template <typename T>
void epilogue_forward_impl(const ConcatLinearEpilogueParams& p) {
  using A = acc_type<T>;
  const A* acc = static_cast<const A*>(p.acc);
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  T* z = static_cast<T*>(p.z);
  const int64_t N = p.N;
  at::parallel_for(0, p.M, std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)), [&](int64_t begin, int64_t end) {
    std::vector<A> zrow(N), brow(N, A(0));
    if (bias) for (int64_t j = 0; j < N; ++j) brow[j] = static_cast<A>(bias[j]);
    for (int64_t i = begin; i < end; ++i) {
      const A* a = acc + i * N;
      for (int64_t j = 0; j < N; ++j) zrow[j] = a[j] + brow[j];
      if (z) convert_row(zrow.data(), z + i * N, N);
      T* yr = y + i * N;
      int64_t j = 0;
      if constexpr (std::is_same_v<A, float>) {
        using Vec = at::vec::Vectorized<float>;
        if constexpr (std::is_same_v<T, float>) {
          for (; j + Vec::size() <= N; j += Vec::size()) act_fwd_vec(Vec::loadu(zrow.data() + j), p.act).store(yr + j);
        } else {
          for (; j + Vec::size() <= N; j += Vec::size()) act_fwd_vec(Vec::loadu(zrow.data() + j), p.act).store(zrow.data() + j);
          convert_row(zrow.data(), yr, j);
        }
      }
      for (; j < N; ++j) yr[j] = static_cast<T>(act_fwd(zrow[j], p.act));
    }
  });
}

template <typename T>
void epilogue_backward_impl(const ConcatLinearGradParams& p) {
  using A = acc_type<T>;
  const T* dy = static_cast<const T*>(p.dy);
  const T* z = static_cast<const T*>(p.z);
  T* dz = static_cast<T*>(p.dz);
  at::parallel_for(0, p.M * p.N, 16384, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {  // float32: in place, no staging copies
      using Vec = at::vec::Vectorized<float>;
      int64_t j = begin;
      for (; j + Vec::size() <= end; j += Vec::size())
        (Vec::loadu(dy + j) * act_grad_vec(Vec::loadu(z + j), p.act)).store(dz + j);
      for (; j < end; ++j) dz[j] = dy[j] * act_grad(z[j], p.act);
    } else if constexpr (std::is_same_v<A, float>) {  // vectorised in float32 through a small scratch buffer
      using Vec = at::vec::Vectorized<float>;
      constexpr int64_t kChunk = 1024;
      float zf[kChunk], gf[kChunk];
      for (int64_t c0 = begin; c0 < end; c0 += kChunk) {
        const int64_t n = std::min(kChunk, end - c0);
        convert_row(z + c0, zf, n);
        convert_row(dy + c0, gf, n);
        int64_t j = 0;
        for (; j + Vec::size() <= n; j += Vec::size())
          (Vec::loadu(gf + j) * act_grad_vec(Vec::loadu(zf + j), p.act)).store(gf + j);
        for (; j < n; ++j) gf[j] *= act_grad(zf[j], p.act);
        convert_row(gf, dz + c0, n);
      }
    } else {
      for (int64_t i = begin; i < end; ++i)
        dz[i] = static_cast<T>(static_cast<A>(dy[i]) * act_grad(static_cast<A>(z[i]), p.act));
    }
  });
}

// Tiled forward with the epilogue fused per tile, for float32 (brgemm) and bfloat16 (AVX512-BF16
// micro-kernel, float32 accumulation across segments). Two orientations, so that only the small side
// is packed: M > N: C = X_i @ W_i^T with W^T packed; M <= N: C^T = W_i @ X_i^T with X^T packed.
#if defined(MMK_HAS_F32_PANEL_GEMM)
// float32 on AVX2 (no AVX-512): the same two orientations, with the small side packed once into
// 16-column panels (common/cpu/f32_gemm.h) and the GEMM on our AVX2 micro-kernel instead of brgemm,
// which reads B's rows in place (row strides of 2.5-5.5 KB here) and ran below MKL's rate there. The
// panels hold every segment one after the other along k, so segment i is rows off[i]..off[i+1] of the
// same panels; per tile of rows (f32_row_tile), each k-block of <= 128 (within one segment, as before) is
// one panel GEMM added into the tile's float32 accumulator (blocked summation, as plain PyTorch's GEMM
// blocks its K).
bool forward_f32_panels(const ConcatLinearForwardParams& p) {
  const int64_t M = p.M, N = p.N, K = p.K, n_in = p.n_inputs;
  const float* w = static_cast<const float*>(p.weight);
  const float* bias = static_cast<const float*>(p.bias);
  float* y = static_cast<float*>(p.y);
  float* z = static_cast<float*>(p.z);
  std::vector<int64_t> off(n_in + 1, 0);
  for (int64_t i = 0; i < n_in; ++i) off[i + 1] = off[i] + p.widths[i];
  const bool rows_are_m = M > N;
  const int64_t cols = rows_are_m ? N : M, rows = rows_are_m ? M : N;
  const int64_t n_panels = f32_panel_count(cols);
  std::unique_ptr<float[]> panels(new float[std::max<int64_t>(f32_panel_floats(K, cols), 1)]);
  // Packing, parallel over panels: W^T (K x N) from W's rows, or X^T (K x M) segment by segment.
  at::parallel_for(0, n_panels, 1, [&](int64_t pb, int64_t pe) {
    const int64_t c0 = pb * kF32NR, nc = std::min(pe * kF32NR, cols) - c0;
    float* dst = panels.get() + pb * K * kF32NR;
    if (rows_are_m) {
      pack_f32_transposed(w + c0 * K, K, nc, K, dst, K);
    } else {
      for (int64_t i = 0; i < n_in; ++i)
        pack_f32_transposed(static_cast<const float*>(p.x[i]) + c0 * p.x_ld[i], p.x_ld[i], nc, p.widths[i],
                            dst + off[i] * kF32NR, K);
    }
  });
  // W as A (M <= N) keeps 64-row tiles: with 86-96 the 512-row case (M64) ran 4-9% slower.
  const int64_t rows_per_tile = rows_are_m ? f32_row_tile(rows, at::get_num_threads()) : 64;
  constexpr int64_t kKBlock = 128;
  at::parallel_for(0, (rows + rows_per_tile - 1) / rows_per_tile, 1, [&](int64_t tb, int64_t te) {
    std::vector<float> acc(rows_per_tile * cols), tile(rows_per_tile), scratch(2 * N);
    for (int64_t t = tb; t < te; ++t) {
      const int64_t r0 = t * rows_per_tile, nr = std::min(rows_per_tile, rows - r0);
      bool first = true;
      for (int64_t i = 0; i < n_in; ++i) {
        const float* a = rows_are_m ? static_cast<const float*>(p.x[i]) + r0 * p.x_ld[i] : w + r0 * K + off[i];
        const int64_t lda = rows_are_m ? p.x_ld[i] : K;
        for (int64_t k0 = 0; k0 < p.widths[i]; k0 += kKBlock) {
          const int64_t kb = std::min(kKBlock, p.widths[i] - k0);
          gemm_f32_panels(nr, cols, kb, a + k0, lda, panels.get(), K, off[i] + k0, 0, acc.data(), cols, !first);
          first = false;
        }
      }
      if (rows_are_m) {
        for (int64_t r = 0; r < nr; ++r)
          epilogue_row(acc.data() + r * N, bias, N, p.act, y + (r0 + r) * N, z ? z + (r0 + r) * N : nullptr,
                       scratch.data());
      } else {
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t r = 0; r < nr; ++r) tile[r] = acc[r * M + m];
          epilogue_row(tile.data(), bias ? bias + r0 : nullptr, nr, p.act, y + m * N + r0, z ? z + m * N + r0 : nullptr,
                       scratch.data());
        }
      }
    }
  });
  return true;
}
#endif

template <typename T>
bool forward_tiled(const ConcatLinearForwardParams& p) {
  constexpr bool kBF16 = std::is_same_v<T, c10::BFloat16>;
#if defined(MMK_HAS_F32_PANEL_GEMM)
  if constexpr (std::is_same_v<T, float>) return forward_f32_panels(p);
#endif
  if constexpr (kBF16) {
    if (!cpu_has_bf16_dot()) return false;
  }
  const int64_t M = p.M, N = p.N, K = p.K, n_in = p.n_inputs;
  const T* w = static_cast<const T*>(p.weight);
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  T* z = static_cast<T*>(p.z);
  std::vector<float> bias_f(N, 0.f);
  if (bias) for (int64_t j = 0; j < N; ++j) bias_f[j] = static_cast<float>(bias[j]);
  std::vector<int64_t> off(n_in + 1, 0);
  for (int64_t i = 0; i < n_in; ++i) off[i + 1] = off[i] + p.widths[i];
  const bool rows_are_m = M > N;
  const int64_t cols = rows_are_m ? N : M;
  // Packed B operand per segment: W_i^T (d_i x N) or X_i^T (d_i x M); bf16 as pairs, float plain.
  const int64_t ldp = kBF16 ? vnni_ld(cols) : cols;
  std::vector<int64_t> poff(n_in + 1, 0);
  for (int64_t i = 0; i < n_in; ++i)
    poff[i + 1] = poff[i] + (kBF16 ? vnni_words(p.widths[i], cols) : p.widths[i] * cols);
  std::unique_ptr<uint32_t[]> packed_bf16(kBF16 ? new uint32_t[std::max<int64_t>(poff[n_in], 1)] : nullptr);
  std::unique_ptr<T[]> packed_plain(kBF16 ? nullptr : new T[std::max<int64_t>(poff[n_in], 1)]);
  at::parallel_for(0, n_in, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T* src = rows_are_m ? w + off[i] : static_cast<const T*>(p.x[i]);
      const int64_t lds = rows_are_m ? K : p.x_ld[i];
      if constexpr (kBF16) pack_vnni_transposed(src, lds, cols, p.widths[i], packed_bf16.get() + poff[i], ldp);
      else transpose_copy(src, lds, cols, p.widths[i], packed_plain.get() + poff[i], ldp);
    }
  });
  constexpr int64_t kTile = 64;
  const int64_t rows = rows_are_m ? M : N;
  // float32: the reduction is blocked (chunks of kKBlock summed into the accumulator afterwards), as
  // plain PyTorch's GEMM blocks its K loop; one long float32 chain over K = sum(d_i) would exceed the
  // error budget for wide inputs (measured: K = 1105, 3.6x plain's error).
  constexpr int64_t kKBlock = 128;
  at::parallel_for(0, (rows + kTile - 1) / kTile, 1, [&](int64_t tb, int64_t te) {
    std::vector<float> acc(kTile * cols), part(kBF16 ? 0 : kTile * cols), tile(kTile), scratch(2 * N);
    for (int64_t t = tb; t < te; ++t) {
      const int64_t r0 = t * kTile, nr = std::min(kTile, rows - r0);
      bool first = true;
      for (int64_t i = 0; i < n_in; ++i) {
        const T* a = rows_are_m ? static_cast<const T*>(p.x[i]) + r0 * p.x_ld[i] : w + r0 * K + off[i];
        const int64_t lda = rows_are_m ? p.x_ld[i] : K;
        if constexpr (kBF16) {
          gemm_bf16_vnni(nr, cols, p.widths[i], a, lda, packed_bf16.get() + poff[i], ldp, acc.data(), cols, i > 0);
        } else {
          for (int64_t k0 = 0; k0 < p.widths[i]; k0 += kKBlock) {
            const int64_t kb = std::min(kKBlock, p.widths[i] - k0);
            float* dst = first ? acc.data() : part.data();
            gemm_nn<T>(nr, cols, kb, a + k0, lda, packed_plain.get() + poff[i] + k0 * ldp, ldp, dst, cols, false);
            if (!first) add_rows(acc.data(), part.data(), nr * cols);
            first = false;
          }
        }
      }
      if (rows_are_m) {
        for (int64_t r = 0; r < nr; ++r)
          epilogue_row(acc.data() + r * N, bias ? bias_f.data() : nullptr, N, p.act, y + (r0 + r) * N,
                       z ? z + (r0 + r) * N : nullptr, scratch.data());
      } else {  // acc holds rows n0..n0+nr of C^T: gather each output row's slice, then the epilogue
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t r = 0; r < nr; ++r) tile[r] = acc[r * M + m];
          epilogue_row(tile.data(), bias ? bias_f.data() + r0 : nullptr, nr, p.act, y + m * N + r0,
                       z ? z + m * N + r0 : nullptr, scratch.data());
        }
      }
    }
    at::native::cpublas::brgemm_release(false);
  });
  return true;
}

#if defined(MMK_HAS_F32_PANEL_GEMM)
// dX below kConcatLinearSmallRows rows: dz packed once in 6-row strips (pack_f32_strips: read in place,
// its rows alias in the L1 sets), W's column panels packed per k-block of 128 rows by the thread that
// uses them (W read once, never copied whole: packing all of it cost more than MKL lost). Each thread
// takes a contiguous run of the (segment, panel) jobs and adds each k-block's product into its dX
// columns (blocked summation over N, as the forward: k-blocks of 256 ran 1-4% faster, but their error
// reached 1.8x plain PyTorch's against 1.4x at 128).
void input_grads_f32_strips(const ConcatLinearBackwardParams& p, const std::vector<int64_t>& off) {
  const int64_t M = p.M, N = p.N, K = p.K, n_in = p.n_inputs;
  const float* dz = static_cast<const float*>(p.dz);
  const float* w = static_cast<const float*>(p.weight);
  constexpr int64_t kKBlock = 128;
  std::unique_ptr<float[]> as(new float[M * N]);
  at::parallel_for(0, (M + kF32MR - 1) / kF32MR, 1,
                   [&](int64_t sb, int64_t se) { pack_f32_strips(dz, N, M, N, as.get(), sb, se); });
  std::vector<std::pair<int64_t, int64_t>> jobs;  // (segment, panel)
  for (int64_t i = 0; i < n_in; ++i)
    if (p.dx[i])
      for (int64_t q = 0; q < f32_panel_count(p.widths[i]); ++q) jobs.emplace_back(i, q);
  at::parallel_for(0, static_cast<int64_t>(jobs.size()), 1, [&](int64_t jb, int64_t je) {
    std::unique_ptr<float[]> bp(new float[kKBlock * kF32NR]);
    for (int64_t k0 = 0; k0 < N; k0 += kKBlock) {
      const int64_t kb = std::min(kKBlock, N - k0);
      for (int64_t job = jb; job < je; ++job) {
        const auto [i, q] = jobs[job];
        const int64_t c0 = q * kF32NR, nc = std::min(kF32NR, p.widths[i] - c0);
        pack_f32_rows(w + k0 * K + off[i] + c0, K, kb, nc, bp.get(), kb);
        gemm_f32_strips(M, nc, kb, as.get(), N, k0, bp.get(), static_cast<float*>(p.dx[i]) + c0, p.widths[i], k0 > 0);
      }
    }
  });
}

// The float32 backward's input gradients on the AVX2 panel kernel: dX_i = dz @ W[:, seg_i] for every
// wanted segment in one pass over dz, W's column slices packed once into panels (N x d_i each, kld = N),
// per tile of dz rows (f32_row_tile) the reduction over N in k-blocks of 128 (blocked summation, as the
// forward).
// Per-segment ATen (MKL) GEMMs ran 10-20% slower (B8192 d256+256+128 N512, interleaved: 31.9-36.5 ms
// against 26.6-30.2 here; one MKL GEMM over the whole W 28.5-32.6). The weight gradient stays on ATen:
// our panel version (dz^T packed in 6-row strips, X in 256-row chunks) only matched it (32.8 vs 32.2 ms).
// Below kConcatLinearSmallRows rows: input_grads_f32_strips.
bool backward_f32_panels(const ConcatLinearBackwardParams& p) {
  const int64_t M = p.M, N = p.N, K = p.K, n_in = p.n_inputs;
  const float* dz = static_cast<const float*>(p.dz);
  const float* w = static_cast<const float*>(p.weight);
  std::vector<int64_t> off(n_in + 1, 0);
  for (int64_t i = 0; i < n_in; ++i) off[i + 1] = off[i] + p.widths[i];
  constexpr int64_t kKBlock = 128;
  bool any_dx = false;
  for (int64_t i = 0; i < n_in; ++i) any_dx = any_dx || (p.dx[i] && p.widths[i] > 0);
  if (any_dx && M < kConcatLinearSmallRows) {
    input_grads_f32_strips(p, off);
  } else if (any_dx) {
    std::vector<int64_t> poff(n_in + 1, 0);
    for (int64_t i = 0; i < n_in; ++i) poff[i + 1] = poff[i] + (p.dx[i] ? f32_panel_floats(N, p.widths[i]) : 0);
    std::unique_ptr<float[]> wp(new float[std::max<int64_t>(poff[n_in], 1)]);
    at::parallel_for(0, n_in, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        if (p.dx[i]) pack_f32_rows(w + off[i], K, N, p.widths[i], wp.get() + poff[i], N);
    });
    const int64_t rows_per_tile = f32_row_tile(M, at::get_num_threads());
    at::parallel_for(0, (M + rows_per_tile - 1) / rows_per_tile, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        const int64_t r0 = t * rows_per_tile, nr = std::min(rows_per_tile, M - r0);
        for (int64_t i = 0; i < n_in; ++i) {
          if (!p.dx[i] || p.widths[i] == 0) continue;
          float* dx = static_cast<float*>(p.dx[i]) + r0 * p.widths[i];
          for (int64_t k0 = 0; k0 < N; k0 += kKBlock)
            gemm_f32_panels(nr, p.widths[i], std::min(kKBlock, N - k0), dz + r0 * N + k0, N, wp.get() + poff[i], N, k0,
                            0, dx, p.widths[i], k0 > 0);
        }
      }
    });
  }
  return true;
}

// The float32 backward's weight and bias gradients on the AVX2 panel kernel, in one pass over M for all
// segments: per chunk of 256 rows, dz = dy * act'(z) is formed in cache (8 rows at a time, never a full
// M x N pass of its own), summed into the bias gradient (double, per column block: deterministic), and
// stored transposed (dz^T, N x rows) as the GEMM's A operand, shared by every segment; x_i's chunk rows
// are packed one 16-column panel at a time by the thread that then runs dW[:, panel] (+)= dz^T @ panel
// (parallel over the panels; dz^T is read by every thread). The chunks are summed into dW in order
// (blocked summation, as the forward's k-blocks). Frozen inputs: replaces the dz pass (an M x N write
// and re-reads), n per-segment ATen GEMMs and the bias-gradient pass (~8% on the step at M8192). With
// input gradients, dz is stored for dX anyway and this kernel runs from it (act none) below
// kConcatLinearSmallRows rows, where MKL's thin dz^T X ran at ~150 GFLOP/s; at M8192 it ran no faster
// than ATen's per-segment GEMMs (benchmarks/NOTES.md, issue 27).
bool weight_grads_f32_panels(const ConcatLinearWeightGradParams& p) {
  using Vec = at::vec::Vectorized<float>;
  const int64_t M = p.M, N = p.N, K = p.K, n_in = p.n_inputs;
  const float* dy = static_cast<const float*>(p.dy);
  const float* z = static_cast<const float*>(p.z);
  float* dw = static_cast<float*>(p.dw);
  float* db = static_cast<float*>(p.db);
  constexpr int64_t kChunk = 256, kCols = 64;  // chunks of 128 ran the same, 512 (dz^T over L2) 15% slower
  constexpr int64_t kLda = kChunk + 16;  // dz^T row stride, off the 1 KB multiple (L1 set aliasing)
  std::vector<int64_t> off(n_in + 1, 0);
  std::vector<std::pair<int64_t, int64_t>> panels;  // (segment, panel)
  for (int64_t i = 0; i < n_in; ++i) {
    off[i + 1] = off[i] + p.widths[i];
    for (int64_t q = 0; q < f32_panel_count(p.widths[i]); ++q) panels.emplace_back(i, q);
  }
  std::unique_ptr<float[]> dzt(new float[N * kLda]);
  std::vector<double> db_acc(db ? N : 0, 0.0);
  const int64_t n_blocks = (N + kCols - 1) / kCols, n_panels = static_cast<int64_t>(panels.size());
  for (int64_t m0 = 0; m0 < M; m0 += kChunk) {
    const int64_t mc = std::min(kChunk, M - m0);
    // dz for blocks of 64 columns (the act' math is the costly part: split evenly over the threads).
    at::parallel_for(0, n_blocks, 1, [&](int64_t jb, int64_t je) {
      alignas(32) float tile[8 * kCols];
      double colsum[kCols];
      for (int64_t job = jb; job < je; ++job) {
        const int64_t c0 = job * kCols, nc = std::min(kCols, N - c0);
        std::fill(colsum, colsum + nc, 0.0);
        for (int64_t r0 = 0; r0 < mc; r0 += 8) {
          const int64_t rg = std::min<int64_t>(8, mc - r0);
          for (int64_t r = 0; r < rg; ++r) {
            const int64_t row = (m0 + r0 + r) * N + c0;
            float* t = tile + r * kCols;
            int64_t c = 0;
            // The row 8 ahead, prefetched: a job reads 256 B of each 2 KB row, which the hardware prefetchers
            // do not run ahead on; the loads stalled the act' math (gelu' 16 -> 3-5 ms at M8192 N512).
            if (m0 + r0 + r + 8 < M)
              for (int64_t l = 0; l < nc; l += 16) {
                _mm_prefetch(reinterpret_cast<const char*>(dy + row + 8 * N + l), _MM_HINT_T0);
                if (z) _mm_prefetch(reinterpret_cast<const char*>(z + row + 8 * N + l), _MM_HINT_T0);
              }
            if (z) {
              for (; c + Vec::size() <= nc; c += Vec::size())
                (Vec::loadu(dy + row + c) * act_grad_vec(Vec::loadu(z + row + c), p.act)).store(t + c);
              for (; c < nc; ++c) t[c] = dy[row + c] * act_grad(z[row + c], p.act);
            } else {
              std::memcpy(t, dy + row, sizeof(float) * nc);
            }
            if (db) for (c = 0; c < nc; ++c) colsum[c] += t[c];
          }
          float* dst = dzt.get() + c0 * kLda + r0;
          int64_t c = 0;
          if (rg == 8)
            for (; c + 8 <= nc; c += 8) transpose8x8_f32(tile + c, kCols, dst + c * kLda, kLda);
          for (; c < nc; ++c)
            for (int64_t r = 0; r < rg; ++r) dst[c * kLda + r] = tile[r * kCols + c];
        }
        if (db) for (int64_t c = 0; c < nc; ++c) db_acc[c0 + c] += colsum[c];
      }
    });
    // Per panel of x: packed by the thread that uses it (hot in L1 for the GEMM), then the GEMM.
    at::parallel_for(0, n_panels, 1, [&](int64_t jb, int64_t je) {
      std::unique_ptr<float[]> bp(new float[kChunk * kF32NR]);
      for (int64_t job = jb; job < je; ++job) {
        const auto [i, q] = panels[job];
        const int64_t nc = std::min(kF32NR, p.widths[i] - q * kF32NR);
        pack_f32_rows(static_cast<const float*>(p.x[i]) + m0 * p.x_ld[i] + q * kF32NR, p.x_ld[i], mc, nc, bp.get(),
                      kChunk);
        gemm_f32_panels(N, nc, mc, dzt.get(), kLda, bp.get(), kChunk, 0, 0, dw + off[i] + q * kF32NR, K, m0 > 0);
      }
    });
  }
  if (db) for (int64_t n = 0; n < N; ++n) db[n] = static_cast<float>(db_acc[n]);
  return true;
}
#endif

}  // namespace

bool concat_linear_weight_grads(const ConcatLinearWeightGradParams& p) {
#if defined(MMK_HAS_F32_PANEL_GEMM)
  if (p.dtype == DType::Float32) return weight_grads_f32_panels(p);
#endif
  return false;  // elsewhere: the dz pass, per-segment ATen GEMMs and a column sum
}

bool concat_linear_backward_gemms(const ConcatLinearBackwardParams& p) {
#if defined(MMK_HAS_F32_PANEL_GEMM)
  if (p.dtype == DType::Float32) return backward_f32_panels(p);
#endif
  return false;  // elsewhere: per-segment ATen GEMMs
}

bool concat_linear_forward_tiled(const ConcatLinearForwardParams& p) {
  if (p.dtype == DType::Float32) return forward_tiled<float>(p);
  if (p.dtype == DType::BFloat16) return forward_tiled<c10::BFloat16>(p);
  return false;  // float16 / float64: per-segment ATen GEMMs
}

void concat_linear_epilogue_forward(const ConcatLinearEpilogueParams& p) {
  dispatch_cpu_dtype(p.dtype, "concat_linear",
                     [&](auto tag) { epilogue_forward_impl<typename decltype(tag)::type>(p); });
}

void concat_linear_epilogue_backward(const ConcatLinearGradParams& p) {
  dispatch_cpu_dtype(p.dtype, "concat_linear",
                     [&](auto tag) { epilogue_backward_impl<typename decltype(tag)::type>(p); });
}

}  // namespace mmkernels::cpu::CPU_CAPABILITY
