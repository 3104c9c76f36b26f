// CPU cross-attention, flash style: tiled online softmax, no Lq x Lk matrix is ever materialised.
//
// Forward: one task per (batch, head, query block). For each valid key block: S = Q K^T on the GEMM
// micro-kernel, scale + mask + online-softmax update in float32 with AVX exp, O += P V. Saves the
// log-sum-exp per row. Backward: one task per (batch, head), key blocks outer and query blocks inner
// (FlashAttention-2 order), P recomputed from the saved log-sum-exp; dK/dV of a head are owned by one
// task and GQA groups are reduced in a fixed order afterwards, so results are bitwise deterministic.
//
// Compiled once per CPU capability (see CMakeLists.txt); torch-free apart from ATen's CPU helpers
// (parallel_for, Vectorized, brgemm).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "common/cpu/bf16_gemm.h"
#include "common/cpu/f32_gemm.h"
#include "common/cpu/kernel_utils.h"
#include "common/cpu/phase_timer.h"
#include "common/numerics.h"
#include "cross_attention/params.h"

namespace mmkernels::cpu::CPU_CAPABILITY {
namespace {

// Per batch, one past the last key that can count (params.h valid_keys): keys past it are never
// touched (the "skip padded blocks" fast path).
inline std::vector<int64_t> valid_key_bounds(const CrossAttentionParams& p) {
  std::vector<int64_t> n(p.B);
  for (int64_t b = 0; b < p.B; ++b) n[b] = valid_keys(p, b);
  return n;
}

// The B operand of C = a @ B for one (batch, head): row-major T (`data`, `ld`), or for bfloat16 on
// CPUs with AVX512-BF16, packed bf16 pairs (`vnni`, `vld`; see common/cpu/bf16_gemm.h), or for float32
// in the AVX2 build, 16-column panels of `kld` rows (`panels`; see common/cpu/f32_gemm.h).
template <typename T>
struct Operand {
  const T* data = nullptr;
  int64_t ld = 0;
  const uint32_t* vnni = nullptr;
  int64_t vld = 0;
  const float* panels = nullptr;
  int64_t kld = 0;
};

template <typename T>
constexpr bool packs_bf16() { return std::is_same_v<T, c10::BFloat16>; }

template <typename T>
constexpr bool packs_f32() {
#if defined(MMK_HAS_F32_PANEL_GEMM)
  return std::is_same_v<T, float>;
#else
  return false;
#endif
}

// C[M,N] (+)= a[M,K] @ B[k0:k0+K, n0:n0+N]   (k0 even when B is packed)
template <typename T>
inline void gemm(int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const Operand<T>& B, int64_t k0,
                 int64_t n0, acc_type<T>* C, int64_t ldc, bool accumulate) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    if (B.vnni) {
      gemm_bf16_vnni(M, N, K, a, lda, B.vnni + (k0 / 2) * B.vld + n0, B.vld, C, ldc, accumulate);
      return;
    }
  }
  if constexpr (packs_f32<T>()) {
    if (B.panels) {
      gemm_f32_panels(M, N, K, a, lda, B.panels, B.kld, k0, n0, C, ldc, accumulate);
      return;
    }
  }
  gemm_nn<T>(M, N, K, a, lda, B.data + k0 * B.ld + n0, B.ld, C, ldc, accumulate);
}

// C[M,N] (+)= A^T @ B[k0:k0+K, n0:n0+N] with A (K x M) row-major: the backward's P^T dO and dS^T Q.
// The panel kernel reads A^T in place; the other paths multiply a transposed copy (`at`, ld `ldat`).
template <typename T>
inline void gemm_at(int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const Operand<T>& B, int64_t k0,
                    int64_t n0, acc_type<T>* C, int64_t ldc, bool accumulate, T* at, int64_t ldat) {
  if constexpr (packs_f32<T>()) {
    if (B.panels) {
      gemm_f32_panels<true>(M, N, K, a, lda, B.panels, B.kld, k0, n0, C, ldc, accumulate);
      return;
    }
  }
  transpose_copy(a, lda, K, M, at, ldat);
  gemm<T>(M, N, K, at, ldat, B, k0, n0, C, ldc, accumulate);
}

// Scores S = Q K^T and dP = dO V^T for float32 inputs: the reduction over the head dim is split into
// chunks of 32 whose partial products are added afterwards (blocked summation). One long float32 dot
// product accumulates rounding error like its length; attention amplifies score errors through exp,
// so this keeps our scores at least as accurate as plain PyTorch's GEMMs (which block their K loop too).
template <typename T>
inline void gemm_scores(int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const Operand<T>& B, int64_t n0,
                        acc_type<T>* C, int64_t ldc, std::vector<acc_type<T>>& scratch) {
  constexpr int64_t kChunk = 32;
  if constexpr (packs_f32<T>()) {
    if (B.panels) {  // the panel kernel adds its chunks' partial sums itself, in the same order
      gemm_f32_panels(M, N, K, a, lda, B.panels, B.kld, 0, n0, C, ldc, false, kChunk);
      return;
    }
  }
  if (!std::is_same_v<T, float> || K <= kChunk) {
    gemm<T>(M, N, K, a, lda, B, 0, n0, C, ldc, false);
    return;
  }
  using Vec = at::vec::Vectorized<acc_type<T>>;
  gemm<T>(M, N, kChunk, a, lda, B, 0, n0, C, ldc, false);
  scratch.resize(M * N);
  for (int64_t c0 = kChunk; c0 < K; c0 += kChunk) {
    gemm<T>(M, N, std::min(kChunk, K - c0), a + c0, lda, B, c0, n0, scratch.data(), N, false);
    for (int64_t i = 0; i < M; ++i) {
      acc_type<T>* c = C + i * ldc;
      const acc_type<T>* x = scratch.data() + i * N;
      int64_t j = 0;
      for (; j + Vec::size() <= N; j += Vec::size()) (Vec::loadu(c + j) + Vec::loadu(x + j)).store(c + j);
      for (; j < N; ++j) c[j] += x[j];
    }
  }
}

// The B operand of GEMMs against one (batch, head) of x (B, L, Hx, Dx), packed on demand by the thread
// that needs it into a buffer that thread owns, and kept while its next tasks use the same head (tasks
// come in contiguous chunks, so each thread packs each head about once and the packed copy is still in
// its cache when the GEMMs read it).
//   rows:       x[b, :, h, :]    (L x Dx): a strided view, bf16 row pairs, or float32 panels of L rows.
//   transposed: x[b, :, h, :]^T  (Dx x L): a transposed copy, bf16 column pairs, or float32 panels of Dx rows.
// Only the first n positions (the valid keys) are packed: padded keys are never read.
template <typename T>
class PackedOperand {
 public:
  PackedOperand(const T* x, int64_t sb, int64_t sl, int64_t sh, int64_t L, int64_t Dx, bool transposed, bool vnni)
      : x_(x), sb_(sb), sl_(sl), sh_(sh), L_(L), Dx_(Dx), transposed_(transposed), vnni_(vnni) {
    if constexpr (packs_f32<T>()) {
      panels_.resize(std::max<int64_t>(transposed ? f32_panel_floats(Dx, L) : f32_panel_floats(L, Dx), 1));
      return;
    }
    if (vnni_) packed_.resize(std::max<int64_t>(transposed ? vnni_words(Dx, L) : vnni_words(L, Dx), 1));
    else if (transposed_) copy_.resize(std::max<int64_t>(Dx * L, 1));
  }

  const Operand<T>& get(int64_t b, int64_t h, int64_t n) {
    if (b == b_ && h == h_) return op_;
    b_ = b;
    h_ = h;
    const T* src = x_ + b * sb_ + h * sh_;
    if constexpr (packs_f32<T>()) {
      if (transposed_) pack_f32_transposed(src, sl_, n, Dx_, panels_.data(), Dx_);
      else pack_f32_rows(src, sl_, n, Dx_, panels_.data(), L_);
      op_ = Operand<T>{};
      op_.panels = panels_.data();
      op_.kld = transposed_ ? Dx_ : L_;
      return op_;
    }
    if (vnni_) {
      if constexpr (packs_bf16<T>()) {
        const int64_t ld = transposed_ ? vnni_ld(L_) : vnni_ld(Dx_);
        if (transposed_) pack_vnni_transposed(src, sl_, n, Dx_, packed_.data(), ld);
        else pack_vnni_rows(src, sl_, n, Dx_, packed_.data(), ld);
        op_ = Operand<T>{nullptr, 0, packed_.data(), ld};
      }
    } else if (transposed_) {
      transpose_copy(src, sl_, n, Dx_, copy_.data(), L_);
      op_ = Operand<T>{copy_.data(), L_};
    } else {
      op_ = Operand<T>{src, sl_};
    }
    return op_;
  }

 private:
  const T* x_;
  int64_t sb_, sl_, sh_, L_, Dx_;
  bool transposed_, vnni_;
  std::vector<T> copy_;
  std::vector<uint32_t> packed_;
  std::vector<float> panels_;
  Operand<T> op_;
  int64_t b_ = -1, h_ = -1;
};

inline bool any_key_valid(const bool* mrow, int64_t k0, int64_t cols) {
  if (!mrow) return true;
  for (int64_t j = 0; j < cols; ++j)
    if (!mrow[k0 + j]) return true;
  return false;
}

// Query blocks of at most 64 rows, split evenly (77 -> 40 + 37, not 64 + 13) to balance the tasks, and
// a multiple of 8: block starts are row offsets into packed bf16 operands, which hold row pairs.
inline int64_t fwd_block_q(int64_t Lq) {
  const int64_t nb = std::max<int64_t>((Lq + 63) / 64, 1);
  const int64_t even = ((Lq + nb - 1) / nb + 7) / 8 * 8;
  return std::max<int64_t>(std::min(even, Lq), 1);
}
inline int64_t fwd_block_k(int64_t Lk) { return std::min<int64_t>(512, std::max<int64_t>(Lk, 1)); }

template <typename T>
void forward_impl(const CrossAttentionParams& p) {
  using Acc = acc_type<T>;
  using Vec = at::vec::Vectorized<Acc>;
  const int64_t B = p.B, Lq = p.Lq, Lk = p.Lk, H = p.H, Hkv = p.Hkv, D = p.D, Dv = p.Dv;
  const int64_t group = gqa_group(p);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* out = static_cast<T*>(p.out);
  const Acc scale = static_cast<Acc>(p.scale);
  const Acc neg_inf = -std::numeric_limits<Acc>::infinity();

  const std::vector<int64_t> n_valid = valid_key_bounds(p);
  const bool vnni = packs_bf16<T>() && cpu_has_bf16_dot();

  const int64_t BQ = fwd_block_q(Lq), BK = fwd_block_k(Lk);
  const int64_t nqb = (Lq + BQ - 1) / BQ;
  MMK_PHASE_CALL_BEGIN();
  at::parallel_for(0, B * H * nqb, 1, [&](int64_t begin, int64_t end) {
    MMK_PHASE_BEGIN(busy);
    MMK_PHASE_BEGIN(tp);
    std::vector<Acc> S(BQ * BK), O(BQ * Dv), m(BQ), l(BQ), scratch;
    std::vector<char> had_key(BQ);  // a key counted for the row (see final_row_sum)
    PackedOperand<T> KT(k, p.k_stride_b, p.k_stride_l, p.k_stride_h, Lk, D, /*transposed=*/true, vnni);
    PackedOperand<T> V(v, p.v_stride_b, p.v_stride_l, p.v_stride_h, Lk, Dv, /*transposed=*/false, vnni);
    std::vector<T> P(is_reduced_v<T> ? BQ * BK : 0);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / (H * nqb), h = (t / nqb) % H, q0 = (t % nqb) * BQ;
      const int64_t rows = std::min(BQ, Lq - q0), hk = h / group;
      const T* qp = q + b * p.q_stride_b + q0 * p.q_stride_l + h * p.q_stride_h;
      const Operand<T>& kt = KT.get(b, hk, n_valid[b]);
      const Operand<T>& vb = V.get(b, hk, n_valid[b]);
      MMK_PHASE_LAP(tp, 0, "pack");
      const bool* mrow = mask_row(p, b);
      std::fill(m.begin(), m.end(), neg_inf);
      std::fill(l.begin(), l.end(), Acc(0));
      std::fill(O.begin(), O.end(), Acc(0));
      std::fill(had_key.begin(), had_key.end(), 0);

      // Causal: key blocks entirely above the block's last row's diagonal are never computed.
      const int64_t kv_end = std::min(n_valid[b], causal_end(p, b, q0 + rows - 1));
      for (int64_t k0 = 0; k0 < kv_end; k0 += BK) {
        const int64_t cols = std::min(BK, kv_end - k0);
        if (!any_key_valid(mrow, k0, cols)) continue;
        MMK_PHASE_LAP(tp, 5, "other");
        gemm_scores<T>(rows, cols, D, qp, p.q_stride_l, kt, k0, S.data(), BK, scratch);
        MMK_PHASE_LAP(tp, 1, "qk_gemm");
        for (int64_t i = 0; i < rows; ++i) {
          Acc* s = S.data() + i * BK;
          // scale, mask, row max; keys at or past `live` lie above this row's causal diagonal
          const int64_t live = std::clamp<int64_t>(causal_end(p, b, q0 + i) - k0, 0, cols);
          Vec vmax(neg_inf);
          const Vec vscale(scale);
          int64_t j = 0;
          if (!mrow) {
            for (; j + Vec::size() <= live; j += Vec::size()) {
              Vec x = Vec::loadu(s + j) * vscale;
              x.store(s + j);
              vmax = at::vec::maximum(vmax, x);
            }
          }
          Acc rmax = hmax<Acc>(vmax);
          had_key[i] |= !mrow && live > 0;
          for (; j < live; ++j) {
            const bool counts = !mrow || !mrow[k0 + j];
            had_key[i] |= counts;
            s[j] = counts ? s[j] * scale : neg_inf;
            rmax = max_nan(rmax, s[j]);
          }
          for (; j < cols; ++j) s[j] = neg_inf;
          const Acc m_new = max_nan(m[i], rmax);
          if (m_new == neg_inf) {  // no valid key for this row yet: contributes nothing
            if constexpr (is_reduced_v<T>) std::fill(P.data() + i * BK, P.data() + i * BK + cols, T(0));
            else std::fill(s, s + cols, Acc(0));
            continue;
          }
          // p = exp(s - m_new); row sum; written back in place (float) or as T for the PV GEMM
          const Vec vm(m_new);
          Vec vsum(Acc(0));
          j = 0;
          for (; j + Vec::size() <= cols; j += Vec::size()) {
            Vec e = vexp<Acc>(Vec::loadu(s + j) - vm);
            vsum = vsum + e;
            e.store(s + j);
          }
          Acc rsum = hsum<Acc>(vsum);
          for (; j < cols; ++j) {
            s[j] = std::exp(s[j] - m_new);
            rsum += s[j];
          }
          if constexpr (is_reduced_v<T>) convert_row(s, P.data() + i * BK, cols);
          MMK_PHASE_LAP(tp, 2, "softmax");
          const Acc alpha = std::exp(m[i] - m_new);  // 0 when m[i] was -inf
          l[i] = l[i] * alpha + rsum;
          if (alpha != Acc(1)) scale_row(O.data() + i * Dv, alpha, Dv);
          m[i] = m_new;
          MMK_PHASE_LAP(tp, 3, "rescale");
        }
        if constexpr (is_reduced_v<T>)
          gemm<T>(rows, Dv, cols, P.data(), BK, vb, k0, 0, O.data(), Dv, true);
        else
          gemm<T>(rows, Dv, cols, S.data(), BK, vb, k0, 0, O.data(), Dv, true);
        MMK_PHASE_LAP(tp, 4, "pv_gemm");
      }
      // normalise; rows without any valid key give zeros and lse = -inf
      for (int64_t i = 0; i < rows; ++i) {
        l[i] = final_row_sum(l[i], had_key[i] != 0);
        const Acc inv = inverse_row_sum(l[i]);
        T* orow = out + b * p.o_stride_b + (q0 + i) * p.o_stride_l + h * p.o_stride_h;
        scale_convert_row(O.data() + i * Dv, inv, orow, Dv);
        using Lse = lse_t<T>;
        static_cast<Lse*>(p.lse)[(b * H + h) * Lq + q0 + i] =
            l[i] > Acc(0) || l[i] != l[i] ? Lse(m[i]) + std::log(Lse(l[i])) : -std::numeric_limits<Lse>::infinity();
      }
      MMK_PHASE_LAP(tp, 5, "other");
    }
    at::native::cpublas::brgemm_release(false);
    MMK_PHASE_LAP(busy, 6, "busy");
  });
  MMK_PHASE_CALL_END("fwd");
}

// ---- Backward, in phases. Per (batch, head) task: pack the operands, take Di, then for each key block
// and each query block: scores S and dP (GEMMs), the softmax gradient row by row (P and dS in
// place), and the three gradient GEMMs; dK/dV of the key block are stored, dQ after the last block.
// GQA heads write float partials that a last phase adds in head order.

// Per-thread buffers of the backward (one set per parallel chunk, reused across its tasks).
template <typename T>
struct BackwardScratch {
  using Acc = acc_type<T>;
  BackwardScratch(int64_t BQ, int64_t BK, int64_t Lq, int64_t D, int64_t Dv, bool vnni)
      : S(BQ * BK), dP(BQ * BK), dQ(Lq * D), dK(BK * D), dV(BK * Dv), Di(Lq),
        Pt(packs_f32<T>() ? 0 : BQ * BK), dSt(packs_f32<T>() ? 0 : BQ * BK), P(is_reduced_v<T> ? BQ * BK : 0),
        dS(is_reduced_v<T> ? BQ * BK : 0), q_pack(vnni ? vnni_words(Lq, D) : 0),
        do_pack(vnni ? vnni_words(Lq, Dv) : 0) {
    if constexpr (packs_f32<T>()) {
      q_panels.resize(f32_panel_floats(Lq, D));
      do_panels.resize(f32_panel_floats(Lq, Dv));
    }
  }
  std::vector<Acc> S, dP;       // scores / dO V^T of a tile, overwritten by P / dS (float)
  std::vector<Acc> dQ, dK, dV;  // dQ of the whole head; dK, dV of the current key block
  std::vector<Acc> Di;          // rowsum(dO * O) per query row
  std::vector<Acc> gemm_scratch;
  std::vector<T> Pt, dSt;       // P^T, dS^T in the input type (A operands of dV, dK; not with panels)
  std::vector<T> P, dS;         // P, dS in the input type for 16-bit inputs
  std::vector<uint32_t> q_pack, do_pack;  // bf16 pairs of Q and dO rows (AVX512-BF16)
  std::vector<float> q_panels, do_panels;  // float32 panels of Q and dO rows (AVX2)
};

// Di = rowsum(dO * O) from the stored output, one pass over the rows.
template <typename T>
void rowsum_dout_out(const CrossAttentionParams& p, int64_t b, int64_t h, acc_type<T>* Di) {
  using Acc = acc_type<T>;
  const T* out = static_cast<const T*>(p.out);
  const T* dout = static_cast<const T*>(p.grad_out);
  for (int64_t i = 0; i < p.Lq; ++i) {
    const T* o = out + b * p.o_stride_b + i * p.o_stride_l + h * p.o_stride_h;
    const T* g = dout + b * p.do_stride_b + i * p.do_stride_l + h * p.do_stride_h;
    Acc acc = 0;
    for (int64_t d = 0; d < p.Dv; ++d) acc += static_cast<Acc>(o[d]) * static_cast<Acc>(g[d]);
    Di[i] = acc;
  }
}

// One query row of one tile: s (scores) becomes P = exp(s * scale - lse), dp (dO V^T) becomes
// dS = P * (dp - Di) * scale. `live`: keys at or past it lie above the row's causal diagonal. Di is
// taken from this P and dp when `di_from_p` (see backward_impl), else `di`. s * scale is rounded as
// in the forward (this file is compiled with -ffp-contract=off), so a saturated P is exactly 1.
template <typename Acc>
void softmax_grad_row(Acc* s, Acc* dp, int64_t cols, int64_t live, const bool* key_masked, double lse, Acc scale,
                      bool di_from_p, Acc di) {
  using Vec = at::vec::Vectorized<Acc>;
  if (lse == -std::numeric_limits<double>::infinity()) {  // the row has no valid key: P = 0
    std::fill(s, s + cols, Acc(0));
    std::fill(dp, dp + cols, Acc(0));
    return;
  }
  // lse as an unevaluated sum hi + lo in the accumulation type: exp((s - hi) - lo)
  const Acc lse_hi = static_cast<Acc>(lse), lse_lo = static_cast<Acc>(lse - static_cast<double>(lse_hi));
  const Vec vscale(scale), vhi(lse_hi), vlo(lse_lo);
  int64_t j = 0;
  if (!key_masked)
    for (; j + Vec::size() <= cols; j += Vec::size()) vexp<Acc>(Vec::loadu(s + j) * vscale - vhi - vlo).store(s + j);
  for (; j < cols; ++j) s[j] = (key_masked && key_masked[j]) ? Acc(0) : std::exp(s[j] * scale - lse_hi - lse_lo);
  for (j = live; j < cols; ++j) s[j] = Acc(0);
  if (di_from_p) {
    Vec vacc(Acc(0));
    j = 0;
    for (; j + Vec::size() <= cols; j += Vec::size()) vacc = vacc + Vec::loadu(s + j) * Vec::loadu(dp + j);
    di = hsum<Acc>(vacc);
    for (; j < cols; ++j) di += s[j] * dp[j];
  }
  const Vec vdi(di);
  j = 0;
  for (; j + Vec::size() <= cols; j += Vec::size())
    (Vec::loadu(s + j) * (Vec::loadu(dp + j) - vdi) * vscale).store(dp + j);
  for (; j < cols; ++j) dp[j] = s[j] * (dp[j] - di) * scale;
}

// dK, dV of keys [k0, k0 + cols) of (b, hk): straight into the outputs, or as float partials of query
// head h when a GQA group shares the kv head.
template <typename T>
void store_key_block(const CrossAttentionParams& p, int64_t b, int64_t h, int64_t hk, int64_t k0, int64_t cols,
                     const acc_type<T>* dK, const acc_type<T>* dV, acc_type<T>* dk_part, acc_type<T>* dv_part) {
  const int64_t D = p.D, Dv = p.Dv;
  for (int64_t j = 0; j < cols; ++j) {
    if (dk_part) {
      std::copy(dK + j * D, dK + (j + 1) * D, dk_part + ((b * p.H + h) * p.Lk + k0 + j) * D);
      std::copy(dV + j * Dv, dV + (j + 1) * Dv, dv_part + ((b * p.H + h) * p.Lk + k0 + j) * Dv);
    } else {
      convert_row(dK + j * D, static_cast<T*>(p.dk) + ((b * p.Lk + k0 + j) * p.Hkv + hk) * D, D);
      convert_row(dV + j * Dv, static_cast<T*>(p.dv) + ((b * p.Lk + k0 + j) * p.Hkv + hk) * Dv, Dv);
    }
  }
}

// dK, dV = the GQA group's partials added in head order (no atomics: deterministic).
template <typename T>
void reduce_group_partials(const CrossAttentionParams& p, const std::vector<int64_t>& n_valid,
                           const acc_type<T>* dk_part, const acc_type<T>* dv_part) {
  using Acc = acc_type<T>;
  const int64_t D = p.D, Dv = p.Dv, group = gqa_group(p);
  at::parallel_for(0, p.B * p.Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<Acc> accK(D), accV(Dv);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / p.Hkv, hk = t % p.Hkv;
      for (int64_t j = 0; j < n_valid[b]; ++j) {
        std::fill(accK.begin(), accK.end(), Acc(0));
        std::fill(accV.begin(), accV.end(), Acc(0));
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = hk * group + g;
          const Acc* pk = dk_part + ((b * p.H + h) * p.Lk + j) * D;
          const Acc* pv = dv_part + ((b * p.H + h) * p.Lk + j) * Dv;
          for (int64_t d = 0; d < D; ++d) accK[d] += pk[d];
          for (int64_t d = 0; d < Dv; ++d) accV[d] += pv[d];
        }
        convert_row(accK.data(), static_cast<T*>(p.dk) + ((b * p.Lk + j) * p.Hkv + hk) * D, D);
        convert_row(accV.data(), static_cast<T*>(p.dv) + ((b * p.Lk + j) * p.Hkv + hk) * Dv, Dv);
      }
    }
  });
}

template <typename T>
void backward_impl(const CrossAttentionParams& p) {
  using Acc = acc_type<T>;
  const int64_t B = p.B, Lq = p.Lq, Lk = p.Lk, H = p.H, D = p.D, Dv = p.Dv;
  const int64_t group = gqa_group(p);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T* dout = static_cast<const T*>(p.grad_out);
  T* dq = static_cast<T*>(p.dq);
  const Acc scale = static_cast<Acc>(p.scale);

  const std::vector<int64_t> n_valid = valid_key_bounds(p);
  const bool vnni = packs_bf16<T>() && cpu_has_bf16_dot();

  std::unique_ptr<Acc[]> dk_part, dv_part;  // GQA: float partials per query head
  if (group > 1) {
    dk_part.reset(new Acc[std::max<int64_t>(B * H * Lk * D, 1)]);
    dv_part.reset(new Acc[std::max<int64_t>(B * H * Lk * Dv, 1)]);
  }

  // Key blocks of 128, or one block of up to 256 when every batch's valid keys fit. With one block
  // Di is taken from the recomputed P and dP (consistent with the P that dS multiplies; the O-based
  // form cancels badly in float32); otherwise from O, as FlashAttention does (one pass over keys).
  const int64_t max_valid = n_valid.empty() ? 0 : *std::max_element(n_valid.begin(), n_valid.end());
  const int64_t BQ = fwd_block_q(Lq);
  const int64_t BK = max_valid <= 256 ? std::max<int64_t>(max_valid, 1) : 128;
  MMK_PHASE_CALL_BEGIN();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    MMK_PHASE_BEGIN(busy);
    MMK_PHASE_BEGIN(tp);
    BackwardScratch<T> w(BQ, BK, Lq, D, Dv, vnni);
    PackedOperand<T> KT(k, p.k_stride_b, p.k_stride_l, p.k_stride_h, Lk, D, /*transposed=*/true, vnni);
    PackedOperand<T> VT(v, p.v_stride_b, p.v_stride_l, p.v_stride_h, Lk, Dv, /*transposed=*/true, vnni);
    PackedOperand<T> Krows(k, p.k_stride_b, p.k_stride_l, p.k_stride_h, Lk, D, /*transposed=*/false, vnni);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / H, h = t % H, hk = h / group;
      // Phase 1: operands. K^T, V^T (scores), K rows (dQ); Q and dO rows are the B operands of dK, dV.
      const T* qbh = q + b * p.q_stride_b + h * p.q_stride_h;
      const T* dobh = dout + b * p.do_stride_b + h * p.do_stride_h;
      const Operand<T>& kt = KT.get(b, hk, n_valid[b]);
      const Operand<T>& vt = VT.get(b, hk, n_valid[b]);
      const Operand<T>& krows = Krows.get(b, hk, n_valid[b]);
      Operand<T> qrows{qbh, p.q_stride_l}, dorows{dobh, p.do_stride_l};
      if constexpr (packs_bf16<T>()) {
        if (vnni) {
          pack_vnni_rows(qbh, p.q_stride_l, Lq, D, w.q_pack.data(), vnni_ld(D));
          pack_vnni_rows(dobh, p.do_stride_l, Lq, Dv, w.do_pack.data(), vnni_ld(Dv));
          qrows = Operand<T>{nullptr, 0, w.q_pack.data(), vnni_ld(D)};
          dorows = Operand<T>{nullptr, 0, w.do_pack.data(), vnni_ld(Dv)};
        }
      }
      if constexpr (packs_f32<T>()) {
        pack_f32_rows(qbh, p.q_stride_l, Lq, D, w.q_panels.data(), Lq);
        pack_f32_rows(dobh, p.do_stride_l, Lq, Dv, w.do_panels.data(), Lq);
        qrows = Operand<T>{};
        qrows.panels = w.q_panels.data();
        qrows.kld = Lq;
        dorows = Operand<T>{};
        dorows.panels = w.do_panels.data();
        dorows.kld = Lq;
      }
      MMK_PHASE_LAP(tp, 0, "pack");
      const lse_t<T>* lse = static_cast<const lse_t<T>*>(p.lse) + (b * H + h) * Lq;
      const bool* mrow = mask_row(p, b);

      // Phase 2: Di from O, unless every valid key is in one block (then per row, from P and dP).
      const bool single_block = n_valid[b] <= BK;
      if (!single_block) rowsum_dout_out<T>(p, b, h, w.Di.data());
      std::fill(w.dQ.begin(), w.dQ.end(), Acc(0));
      MMK_PHASE_LAP(tp, 1, "di");

      // Phase 3: key blocks outer, query blocks inner (FlashAttention-2 order).
      for (int64_t k0 = 0; k0 < n_valid[b]; k0 += BK) {
        const int64_t cols = std::min(BK, n_valid[b] - k0);
        const bool block_live = any_key_valid(mrow, k0, cols);
        std::fill(w.dK.begin(), w.dK.end(), Acc(0));
        std::fill(w.dV.begin(), w.dV.end(), Acc(0));
        for (int64_t q0 = 0; q0 < Lq && block_live; q0 += BQ) {
          const int64_t rows = std::min(BQ, Lq - q0);
          if (causal_end(p, b, q0 + rows - 1) <= k0) continue;  // the whole tile lies above the diagonal
          // S = Q K^T and dP = dO V^T for the tile
          MMK_PHASE_LAP(tp, 9, "other");
          gemm_scores<T>(rows, cols, D, qbh + q0 * p.q_stride_l, p.q_stride_l, kt, k0, w.S.data(), BK,
                         w.gemm_scratch);
          MMK_PHASE_LAP(tp, 2, "qk_gemm");
          gemm_scores<T>(rows, cols, Dv, dobh + q0 * p.do_stride_l, p.do_stride_l, vt, k0, w.dP.data(), BK,
                         w.gemm_scratch);
          MMK_PHASE_LAP(tp, 3, "dov_gemm");
          // P and dS, row by row (in place; and in the input type for 16-bit inputs)
          for (int64_t i = 0; i < rows; ++i) {
            Acc* s = w.S.data() + i * BK;
            Acc* dp = w.dP.data() + i * BK;
            const int64_t live = std::clamp<int64_t>(causal_end(p, b, q0 + i) - k0, 0, cols);
            softmax_grad_row<Acc>(s, dp, cols, live, mrow ? mrow + k0 : nullptr, static_cast<double>(lse[q0 + i]),
                                  scale, single_block, single_block ? Acc(0) : w.Di[q0 + i]);
            if constexpr (!std::is_same_v<T, Acc>) {
              convert_row(s, w.P.data() + i * BK, cols);
              convert_row(dp, w.dS.data() + i * BK, cols);
            }
          }
          MMK_PHASE_LAP(tp, 4, "softmax_grad");
          // dV += P^T dO, dK += dS^T Q, dQ += dS K (float32/float64: S and dP already hold P and dS)
          const T* Pm = std::is_same_v<T, Acc> ? reinterpret_cast<const T*>(w.S.data()) : w.P.data();
          const T* dSm = std::is_same_v<T, Acc> ? reinterpret_cast<const T*>(w.dP.data()) : w.dS.data();
          gemm_at<T>(cols, Dv, rows, Pm, BK, dorows, q0, 0, w.dV.data(), Dv, true, w.Pt.data(), BQ);
          MMK_PHASE_LAP(tp, 6, "dv_gemm");
          gemm_at<T>(cols, D, rows, dSm, BK, qrows, q0, 0, w.dK.data(), D, true, w.dSt.data(), BQ);
          MMK_PHASE_LAP(tp, 7, "dk_gemm");
          gemm<T>(rows, D, cols, dSm, BK, krows, k0, 0, w.dQ.data() + q0 * D, D, true);
          MMK_PHASE_LAP(tp, 8, "dq_gemm");
        }
        store_key_block<T>(p, b, h, hk, k0, cols, w.dK.data(), w.dV.data(), dk_part.get(), dv_part.get());
      }
      for (int64_t i = 0; i < Lq; ++i) convert_row(w.dQ.data() + i * D, dq + ((b * Lq + i) * H + h) * D, D);
      MMK_PHASE_LAP(tp, 9, "other");
    }
    at::native::cpublas::brgemm_release(false);
    MMK_PHASE_LAP(busy, 10, "busy");
  });

  // Phase 4: GQA groups' partials, added in head order.
  if (group > 1) reduce_group_partials<T>(p, n_valid, dk_part.get(), dv_part.get());
  MMK_PHASE_CALL_END("bwd");
}

}  // namespace

void cross_attention_forward(const CrossAttentionParams& p) {
  dispatch_cpu_dtype(p.dtype, "cross_attention", [&](auto tag) { forward_impl<typename decltype(tag)::type>(p); });
}

void cross_attention_backward(const CrossAttentionParams& p) {
  dispatch_cpu_dtype(p.dtype, "cross_attention", [&](auto tag) { backward_impl<typename decltype(tag)::type>(p); });
}

}  // namespace mmkernels::cpu::CPU_CAPABILITY
