// Single-thread GEMM rates on the attention's tiles, and the machine's float32 FMA peak; loaded by
// benchmarks/cpu_gemm_probe.py (see there). Settles whether a rate gap between two GEMM calls comes
// from the library, the tile shape, the operand layout (packing, strides) or the per-call cost.
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/extension.h>

#include <omp.h>

#include <chrono>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/cpu/f32_gemm.h"

// MKL's Fortran sgemm, which torch's x86 wheels link in and export (the probe only: the library does not
// rely on it).
extern "C" void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
                       const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

namespace {
using Clock = std::chrono::steady_clock;
namespace cc = mmkernels::cpu::AVX2;

std::vector<float> rand_buf(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

template <typename F>
double best_seconds(F&& f, int reps, int rounds = 5) {
  double best = 1e30;
  f();
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / reps);
  }
  return best;
}

// GFLOP/s of one thread on C[M,N] = A[M,K] @ B[K,N] (kind "brgemm", "panels", "panels+pack": B packed on
// every call, "mkl") or C = A @ X^T with X (N x K) rows (kind "mkl_t": SDPA's score GEMM; "panels_t": X
// packed transposed on every call). lda/ldb/ldc are the row strides; kc: chunk of the reduction (0: none).
double rate(const std::string& kind, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
            int64_t kc, int reps) {
  const bool trans = kind == "mkl_t" || kind == "panels_t";
  std::vector<float> A = rand_buf(M * lda, 1), B = rand_buf((trans ? N : K) * ldb, 2), C(M * ldc);
  std::vector<float> bp(cc::f32_panel_floats(K, N));
  std::vector<float> scratch(M * N);
  cc::pack_f32_rows(B.data(), ldb, K, N, bp.data(), K);
  const int64_t chunk = kc > 0 ? kc : K;
  auto brgemm_chunked = [&](const float* b, int64_t ld) {
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int64_t kb = std::min(chunk, K - k0);
      at::native::cpublas::brgemm(M, N, kb, lda, ld, k0 == 0 ? ldc : N, false, A.data() + k0, b + k0 * ld,
                                  k0 == 0 ? C.data() : scratch.data(), false);
      if (k0 > 0)
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) C[i * ldc + j] += scratch[i * N + j];
    }
  };
  std::function<void()> f;
  if (kind == "brgemm") {
    f = [&] { brgemm_chunked(B.data(), ldb); };
  } else if (kind == "panels") {
    f = [&] { cc::gemm_f32_panels<false>(M, N, K, A.data(), lda, bp.data(), K, 0, 0, C.data(), ldc, false, kc); };
  } else if (kind == "panels+pack") {
    f = [&] {
      cc::pack_f32_rows(B.data(), ldb, K, N, bp.data(), K);
      cc::gemm_f32_panels<false>(M, N, K, A.data(), lda, bp.data(), K, 0, 0, C.data(), ldc, false, kc);
    };
  } else if (kind == "panels_t") {
    f = [&] {
      cc::pack_f32_transposed(B.data(), ldb, N, K, bp.data(), K);
      cc::gemm_f32_panels<false>(M, N, K, A.data(), lda, bp.data(), K, 0, 0, C.data(), ldc, false, kc);
    };
  } else if (kind == "mkl" || kind == "mkl_t") {
    f = [&] {  // row-major C = A @ B is column-major C^T = B^T A^T
      const int m = N, n = M, k = K, la = ldb, lb = lda, lc = ldc;
      const float one = 1.f, zero = 0.f;
      sgemm_(trans ? "T" : "N", "N", &m, &n, &k, &one, B.data(), &la, A.data(), &lb, &zero, C.data(), &lc);
    };
  } else {
    TORCH_CHECK(false, "unknown kind ", kind);
  }
  const double s = best_seconds(f, reps);
  at::native::cpublas::brgemm_release(false);
  return 2.0 * M * N * K / s / 1e9;
}

// Seconds per call of a tiny (8 x 8 x 8) GEMM: the per-call cost.
double call_cost(const std::string& kind) {
  std::vector<float> A = rand_buf(64, 1), B = rand_buf(64, 2), C(64), bp(cc::f32_panel_floats(8, 8));
  cc::pack_f32_rows(B.data(), 8, 8, 8, bp.data(), 8);
  const int n = 8;
  const float one = 1.f, zero = 0.f;
  std::function<void()> f;
  if (kind == "brgemm") f = [&] { at::native::cpublas::brgemm(8, 8, 8, 8, 8, 8, false, A.data(), B.data(), C.data(), false); };
  else if (kind == "panels") f = [&] { cc::gemm_f32_panels<false>(8, 8, 8, A.data(), 8, bp.data(), 8, 0, 0, C.data(), 8, false, 0); };
  else f = [&] { sgemm_("N", "N", &n, &n, &n, &one, B.data(), &n, A.data(), &n, &zero, C.data(), &n); };
  return best_seconds(f, 20000);
}

// float32 FMA peak in GFLOP/s over `threads` threads: 12 independent 8-wide FMA chains per thread
// (latency 4 x 2 pipes = 8 in flight at least).
double fma_peak(int threads, int64_t iters) {
  std::vector<double> secs(threads);
  auto body = [&](int t) {
    __m256 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(1.f + i * 1e-3f);
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    const auto t0 = Clock::now();
    for (int64_t it = 0; it < iters; ++it)
      for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    secs[t] = std::chrono::duration<double>(Clock::now() - t0).count();
    float sink = 0;
    for (int i = 0; i < 12; ++i) sink += _mm256_cvtss_f32(acc[i]);
    if (sink == 12345.f) std::printf(" ");
  };
#pragma omp parallel num_threads(threads)
  body(omp_get_thread_num());
  return 2.0 * 8 * 12 * iters * threads / *std::max_element(secs.begin(), secs.end()) / 1e9;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rate", &rate);
  m.def("call_cost", &call_cost);
  m.def("fma_peak", &fma_peak);
}
