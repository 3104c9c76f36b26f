// Torch-free entry points of the CUDA concat_linear kernels and their arguments (GemmArgs), declared
// here, defined (routed to the kernels) in concat_linear_entry.cuh and explicitly instantiated once per
// element type (float, dev::half, dev::bf16) in concat_linear_entry_<dtype>.cu.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/device/types.h"
#include "concat_linear/params.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

constexpr int kMaxSegments = 8;  // per launch; the glue chains launches through a float32 accumulator

// A(m, k) = a[m * sam + k * sak], B(k, n) = b[k * sbk + n * sbn]: any transposition is a choice of strides.
struct GemmSegment {
  const void* a = nullptr;
  int64_t sam = 0, sak = 0;
  const void* b = nullptr;
  int64_t sbk = 0, sbn = 0;
  int64_t K = 0;
};

struct GemmArgs {
  GemmSegment seg[kMaxSegments];
  int n_seg = 0;
  int64_t M = 0, N = 0;
  // Output C(m, n) = c[m * scm + n * scn] in the input dtype, or float32 when `c_is_float` (a partial
  // accumulator); a non-null float32 `acc_in` (same layout as c) is added first.
  void* c = nullptr;
  int64_t scm = 0, scn = 0;
  bool c_is_float = false;
  const float* acc_in = nullptr;
  // Epilogue (forward only): z = C + bias, y = act(z); z stored with the same layout when non-null.
  const void* bias = nullptr;
  void* z = nullptr;
  Activation act = Activation::None;
  // Split-K (tensor-core kernel only; c_is_float, no acc_in): `split` CTAs per output tile, CTA z
  // summing its contiguous share of the K tiles into its own partial c + z * split_stride. The glue
  // adds the partials in a fixed order, so the result stays deterministic.
  int split = 1;
  int64_t split_stride = 0;
};

namespace tc {
constexpr int kBM = 128, kBN = 128, kBK = 32;  // the sm_80 tensor-core kernel's CTA tile (gemm_sm80.cuh)
}

// How many K splits a tensor-core GEMM gets: none while its output tiles fill the GPU about twice;
// otherwise enough to do so, each split keeping at least 4 K tiles (the pipeline's depth and then
// some). The weight gradient needs it: its N x d output is small and its K (all M rows) long.
inline int split_k_for(int64_t M, int64_t N, int64_t K, int multiprocessors) {
  const int64_t ctas = ((M + tc::kBM - 1) / tc::kBM) * ((N + tc::kBN - 1) / tc::kBN);
  const int64_t k_tiles = (K + tc::kBK - 1) / tc::kBK;
  const int64_t want = (2 * int64_t(multiprocessors) + ctas - 1) / ctas;
  const int64_t most = std::min<int64_t>(k_tiles / 4, 64);
  return static_cast<int>(std::max<int64_t>(1, std::min(want, most)));
}

// C = sum over segments of A_s B_s (+ acc_in), then the epilogue: on sm_90 the Hopper kernel
// (gemm_sm90.cuh) for 16-bit operands TMA can load, else the sm_80 tensor-core kernel, else SIMT.
template <typename T>
dev::Error concat_linear_gemm(const GemmArgs& args, dev::Stream stream);

// The tensor-core kernels alone (T = dev::bf16 or dev::half), instantiated in gemm_sm{90,80}_<dtype>.cu;
// which operands they take: tc_takes() (gemm_host.h).
template <typename T>
dev::Error concat_linear_gemm_sm90(const GemmArgs& args, dev::Stream stream);
template <typename T>
dev::Error concat_linear_gemm_sm80(const GemmArgs& args, dev::Stream stream);

// dz = dy * act'(z), n contiguous elements.
template <typename T>
dev::Error concat_linear_act_grad(const void* dy, const void* z, void* dz, int64_t n, Activation act,
                                  dev::Stream stream);

MMK_BACKEND_END
}  // namespace mmkernels::cuda
