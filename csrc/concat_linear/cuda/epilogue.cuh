// The epilogue of concat_linear's tensor-core GEMMs (torch-free), one rule for every architecture: what
// GemmArgs asks of the C tile.
//
//   c_is_float:  C = acc (+ acc_in), float32 (split-K partials at blockIdx.z * split_stride);
//   otherwise:   v = acc (+ acc_in) + bias; z = v when z is set (the pre-activation autograd keeps);
//                C = act(v) in the input dtype, act a template parameter (no per-element switch).
//
// The accumulators are staged as float32, row-major, in shared memory (the operand stages, free once
// every MMA of the tile is done: the caller syncs before and passes its `sync`); then each thread takes
// 16-byte pieces of output rows: the staged sums, bias and acc_in come in as vectors, the activation runs
// on the piece's values, and z and C go out as 16-byte stores (per element only at the tile's ragged
// edge or a misaligned row). Accumulator values are placed by their (row, column) in the tile, coords(i).
#pragma once

#include <cstdint>

#include "common/activation.h"
#include "common/device/primitives.h"
#include "concat_linear/cuda/concat_linear_entry.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

// The staging tile: float rows padded by one 16-byte piece (rows stay aligned, banks shift).
template <int kBM, int kBN>
struct EpilogueStage {
  static constexpr int kPitch = kBN + 4;
  static constexpr size_t kBytes = size_t(kBM) * kPitch * sizeof(float);
};

template <class Out>
MMK_DEVICE bool aligned16(const Out* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// kE consecutive staged floats of row r from column c.
template <int kE, int kPitch>
MMK_DEVICE void load_staged(dev::SmemPtr<float> s, int r, int c, float (&v)[kE]) {
  MMK_UNROLL
  for (int j = 0; j < kE; j += 4) {
    const dev::U32x4 q = (s + r * kPitch + c + j).template cast<dev::U32x4>()[0];
    v[j] = dev::bits_float(q.x);
    v[j + 1] = dev::bits_float(q.y);
    v[j + 2] = dev::bits_float(q.z);
    v[j + 3] = dev::bits_float(q.w);
  }
}

template <class DevT, Activation kAct, int kBM, int kBN, int kThreads, class Values, class Coords, class Sync>
MMK_DEVICE void gemm_epilogue(const GemmArgs& a, dev::SmemPtr<uint8_t> smem, const Values& acc, const Coords& coords,
                              int64_t m0, int64_t n0, int tid, Sync sync) {
  using Stage = EpilogueStage<kBM, kBN>;
  dev::SmemPtr<float> s = smem.template cast<float>();
  MMK_UNROLL
  for (int i = 0; i < int(cute::size(acc)); ++i) s[cute::get<0>(coords(i)) * Stage::kPitch + cute::get<1>(coords(i))] = acc(i);
  sync();
  // The pieces: every loop over a piece's values has a fixed trip count (registers, not local memory).
  const DevT* bias = static_cast<const DevT*>(a.bias);
  if (a.c_is_float) {  // 4 floats a piece
    float* cf = static_cast<float*>(a.c) + int64_t(dev::block_idx().z) * a.split_stride;
    constexpr int kPerRow = kBN / 4;
    for (int q = tid; q < kBM * kPerRow; q += kThreads) {
      const int r = q / kPerRow, c = (q % kPerRow) * 4;
      const int64_t m = m0 + r, n = n0 + c, o = m * a.scm + n;
      if (m >= a.M || n >= a.N) continue;
      float v[4];
      load_staged<4, Stage::kPitch>(s, r, c, v);
      MMK_UNROLL
      for (int j = 0; j < 4; ++j)
        if (a.acc_in && n + j < a.N) v[j] += a.acc_in[o + j];
      if (n + 4 <= a.N && aligned16(cf + o)) {
        dev::store16(cf + o, dev::U32x4{dev::float_bits(v[0]), dev::float_bits(v[1]), dev::float_bits(v[2]),
                                        dev::float_bits(v[3])});
      } else {
        MMK_UNROLL
        for (int j = 0; j < 4; ++j)
          if (n + j < a.N) cf[o + j] = v[j];
      }
    }
    return;
  }
  constexpr int kPerRow = kBN / 8;  // 8 values of the 16-bit output a piece
  for (int q = tid; q < kBM * kPerRow; q += kThreads) {
    const int r = q / kPerRow, c = (q % kPerRow) * 8;
    const int64_t m = m0 + r, n = n0 + c, o = m * a.scm + n;
    if (m >= a.M || n >= a.N) continue;
    const bool whole = n + 8 <= a.N;
    float v[8];
    load_staged<8, Stage::kPitch>(s, r, c, v);
    MMK_UNROLL
    for (int j = 0; j < 8; ++j) {
      if (n + j >= a.N) continue;
      if (a.acc_in) v[j] += a.acc_in[o + j];
      if (bias) v[j] += dev::to_float(bias[n + j]);
    }
    auto put = [&](DevT* out, auto f) {
      if (whole && aligned16(out + o)) {
        dev::store16(out + o, dev::U32x4{dev::pack2<DevT>(f(v[0]), f(v[1])), dev::pack2<DevT>(f(v[2]), f(v[3])),
                                         dev::pack2<DevT>(f(v[4]), f(v[5])), dev::pack2<DevT>(f(v[6]), f(v[7]))});
      } else {
        MMK_UNROLL
        for (int j = 0; j < 8; ++j)
          if (n + j < a.N) out[o + j] = dev::from_float<DevT>(f(v[j]));
      }
    };
    if (a.z) put(static_cast<DevT*>(a.z), [](float x) { return x; });
    put(static_cast<DevT*>(a.c), [](float x) { return activation_forward(x, kAct); });
  }
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
