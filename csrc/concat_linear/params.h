// Torch-free description of concat_linear's element-wise epilogues (CPU) and of the fused GEMM (CUDA).
// y = act(cat(x_0..x_{n-1}, -1) @ W^T + b), W (N, K) with K = sum(d_i).
#pragma once
#include <cstdint>

#include "common/activation.h"
#include "common/dtype.h"

namespace mmkernels {

// Forward epilogue over an (M, N) accumulator: z = acc + b; y = act(z).
// acc is float32 (float64 for float64 inputs); y and z are in the input dtype, contiguous (M, N).
// z may be null (activation none: y is z).
struct ConcatLinearEpilogueParams {
  const void* acc = nullptr;
  const void* bias = nullptr;  // (N,) input dtype, or null
  void* y = nullptr;
  void* z = nullptr;
  int64_t M = 0, N = 0;
  Activation act = Activation::None;
  DType dtype = DType::Float32;
};

// Backward epilogue: dz = dy * act'(z), all (M, N) contiguous in the input dtype.
struct ConcatLinearGradParams {
  const void* dy = nullptr;
  const void* z = nullptr;
  void* dz = nullptr;
  int64_t M = 0, N = 0;
  Activation act = Activation::None;
  DType dtype = DType::Float32;
};

// Whole tiled forward (CPU float32 / bfloat16): sum over segments of x_i @ W[:, off_i:off_i+d_i]^T,
// accumulated in float32 across all segments (one rounding, as one big GEMM would), then bias + act.
// x_i (M, d_i) with row stride x_ld[i] and unit inner stride; W (N, K) contiguous; y, z (M, N) contiguous.
struct ConcatLinearForwardParams {
  int64_t n_inputs = 0;
  const void* const* x = nullptr;
  const int64_t* x_ld = nullptr;
  const int64_t* widths = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;  // (N,) or null
  void* y = nullptr;
  void* z = nullptr;  // null when act is None
  int64_t M = 0, N = 0, K = 0;
  Activation act = Activation::None;
  DType dtype = DType::BFloat16;
};

// Below this many rows the CPU float32 backward (AVX2) takes both GEMMs off ATen even with input
// gradients: dX on dz packed in row strips, dW (and db) by the weight-gradient kernel from the stored dz.
// MKL's GEMMs with a reduction (dW) or row count (dX) this thin ran at ~150 GFLOP/s of the panel
// kernel's ~200 (M64 d512+768+128 N512; benchmarks/NOTES.md, issue 27).
constexpr int64_t kConcatLinearSmallRows = 512;

// The backward's input gradients (CPU float32 on AVX2): dX_i = dz @ W[:, off_i:off_i+d_i] into dx[i]
// (M, d_i) contiguous (null: not wanted). dz (M, N) contiguous; W (N, K) contiguous.
struct ConcatLinearBackwardParams {
  int64_t n_inputs = 0;
  const int64_t* widths = nullptr;
  const void* weight = nullptr;
  const void* dz = nullptr;
  void* const* dx = nullptr;
  int64_t M = 0, N = 0, K = 0;
  DType dtype = DType::Float32;
};

// The backward's weight and bias gradients from dy and z in one kernel (CPU float32 on AVX2; frozen
// inputs, or dy = the stored dz with act None below kConcatLinearSmallRows rows):
// dz = dy * act'(z) formed tile by tile in cache (z null when act is None), dW[:, off_i:off_i+d_i] =
// dz^T @ x_i into dw (N, K) contiguous, db = column sums of dz (null: no bias). dy, z (M, N) contiguous;
// x_i as in the forward.
struct ConcatLinearWeightGradParams {
  int64_t n_inputs = 0;
  const void* const* x = nullptr;
  const int64_t* x_ld = nullptr;
  const int64_t* widths = nullptr;
  const void* dy = nullptr;
  const void* z = nullptr;
  void* dw = nullptr;
  void* db = nullptr;
  int64_t M = 0, N = 0, K = 0;
  Activation act = Activation::None;
  DType dtype = DType::Float32;
};

}  // namespace mmkernels
