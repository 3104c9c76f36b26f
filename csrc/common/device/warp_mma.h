// Tile building blocks on the device-primitive layer, shared by the tensor-core kernels of both ops:
// cooperative cp.async tile loads into padded shared-memory tiles, and warp-level GEMMs on
// mma.sync m16n8k16 with ldmatrix operand loads (16-bit inputs, float32 accumulators).
//
// Shared tiles are row-major with a pitch of (cols + 8) elements: a row is then an odd number of
// 16-byte chunks, so the 8 row addresses of one ldmatrix phase (8 consecutive rows, same column)
// fall in 8 different 16-byte bank groups - conflict-free for every head dim, including 96 and 192
// where an XOR swizzle over 2^k chunks does not fit the row.
//
// Fragment conventions (PTX ISA 9.0 9.7.14.5.8): lane = 4 g + t. An accumulator tile acc[j][4] holds
// rows g, g + 8 and columns 8 j + 2 t, + 1 of a 16 x 8 tile: acc[j][0..1] row g, acc[j][2..3] row g + 8.
#pragma once

#include "common/device/primitives.h"
#include "common/numerics.h"

namespace mmkernels::dev {
MMK_BACKEND_BEGIN

template <int kCols> constexpr int tile_pitch() { return kCols + 8; }

// Copies rows [0, kRows) x columns [0, kCols) of a row-major global tile (row stride `ld` elements,
// 16-byte aligned rows) into `dst` (pitch tile_pitch<kCols>()), with all kThreads threads issuing
// 16-byte cp.async copies; rows >= valid_rows and columns >= valid_cols are zero-filled. With
// kPartial, a chunk that straddles valid_cols copies its valid part; without, valid_cols must be a
// multiple of 8 and the cheaper whole-chunk test keeps the attention kernels' registers free (the
// partial form costs them spills at D = 256). The caller commits and waits.
template <int kRows, int kCols, int kThreads, bool kPartial = false, typename T>
MMK_DEVICE void load_tile_async(SmemPtr<T> dst, const T* src, int64_t ld, int valid_rows, int valid_cols) {
  static_assert(kCols % 8 == 0, "tiles are whole 16-byte chunks wide");
  constexpr int kChunks = kCols / 8, kTotal = kRows * kChunks, kPitch = tile_pitch<kCols>();
  const int tid = thread_rank();
  MMK_UNROLL
  for (int i = 0; i < (kTotal + kThreads - 1) / kThreads; ++i) {
    const int idx = tid + i * kThreads;
    if (kTotal % kThreads != 0 && idx >= kTotal) break;
    const int row = idx / kChunks, col = (idx % kChunks) * 8;
    int n;
    if constexpr (kPartial) n = row < valid_rows ? min(max(valid_cols - col, 0), 8) : 0;
    else n = (row < valid_rows && col < valid_cols) ? 8 : 0;
    // A zero-byte copy reads nothing; it still names a valid address.
    cp_async<16>(dst + row * kPitch + col, n > 0 ? src + row * ld + col : src, n * static_cast<int>(sizeof(T)));
  }
}

// load_tile_async with fewer live registers, for a kernel that loads a tile per loop step (the attention
// kernels' K and V tiles): eight threads (four where a row's chunks do not divide by eight) share a row, 128
// contiguous bytes per warp instruction and row, and a thread's chunks of a row sit at constant offsets
// from one row pointer stepped by a constant per pass: two 64-bit registers instead of one per chunk.
// kWhole: every row and column is valid (an interior tile), no per-chunk predicates.
template <int kRows, int kCols, int kThreads, bool kWhole, typename T>
MMK_DEVICE void load_tile_rows_async(SmemPtr<T> dst, const T* src, int64_t ld, int valid_rows, int valid_cols) {
  static_assert(kCols % 8 == 0, "tiles are whole 16-byte chunks wide");
  constexpr int kChunks = kCols / 8, kPitch = tile_pitch<kCols>();
  constexpr int kPerRow = kChunks % 8 == 0 ? 8 : 4;  // threads sharing a row
  constexpr int kRowsPerPass = kThreads / kPerRow;
  static_assert(kChunks % kPerRow == 0 && kRows % kRowsPerPass == 0, "whole passes of whole rows");
  const int tid = thread_rank(), row = tid / kPerRow, col = (tid % kPerRow) * 8;
  const T* s = src + row * ld + col;
  const int64_t step = kRowsPerPass * ld;
  MMK_UNROLL
  for (int pass = 0; pass < kRows / kRowsPerPass; ++pass, s += step) {
    const int r = row + pass * kRowsPerPass;
    MMK_UNROLL
    for (int e = 0; e < kChunks / kPerRow; ++e) {
      const int c = col + e * kPerRow * 8;
      if constexpr (kWhole) {
        cp_async<16>(dst + r * kPitch + c, s + e * kPerRow * 8);
      } else {  // as load_tile_async: a zero-byte copy zero-fills and reads nothing
        const bool ok = r < valid_rows && c < valid_cols;
        cp_async<16>(dst + r * kPitch + c, ok ? s + e * kPerRow * 8 : src, ok ? 16 : 0);
      }
    }
  }
}

// The A operand of one 16 x 16 k-step: rows row0 .. row0 + 15, columns col0 .. col0 + 15 of a shared
// tile (pitch `pitch`), one ldmatrix.x4 (lane l gives row l % 16, column half l / 16).
template <typename T>
MMK_DEVICE void load_a(uint32_t (&a)[4], SmemPtr<const T> A, int pitch, int row0, int col0) {
  const int lane = lane_id();
  ldmatrix<4, false>(a, A + (row0 + lane % 16) * pitch + col0 + (lane / 16) * 8);
}

// The A operand of one 16 x 16 k-step from a tile stored k-major (rows = k, pitch `pitch`): rows
// k0 .. k0 + 15, columns m0 .. m0 + 15 (ldmatrix .trans; lane l gives k row l % 8 + 8 (l / 16),
// m column m0 + 8 ((l / 8) % 2)).
template <typename T>
MMK_DEVICE void load_a_trans(uint32_t (&a)[4], SmemPtr<const T> A, int pitch, int m0, int k0) {
  const int lane = lane_id();
  ldmatrix<4, true>(a, A + (k0 + lane % 8 + 8 * (lane / 16)) * pitch + m0 + 8 * ((lane / 8) % 2));
}

// B fragments of kNT n-tiles for one 16-deep k-step, B stored n-major (rows n, pitch `pitch`): n rows
// n0 + 8 j .., k columns k0 .. k0 + 15 (ldmatrix without .trans).
template <int kNT, typename T>
MMK_DEVICE void load_b_nmajor(uint32_t (&b)[kNT][2], SmemPtr<const T> B, int pitch, int n0, int k0) {
  static_assert(kNT % 2 == 0, "n-tiles are loaded in pairs");
  const int lane = lane_id();
  MMK_UNROLL
  for (int j = 0; j < kNT; j += 2) {
    uint32_t r[4];
    ldmatrix<4, false>(r, B + (n0 + j * 8 + lane % 8 + 8 * (lane / 16)) * pitch + k0 + 8 * ((lane / 8) % 2));
    b[j][0] = r[0];
    b[j][1] = r[1];
    b[j + 1][0] = r[2];
    b[j + 1][1] = r[3];
  }
}

// B fragments of kNT n-tiles for one 16-deep k-step, B stored k-major (rows k, pitch `pitch`): k rows
// k0 .. k0 + 15, n columns n0 + 8 j .. (ldmatrix .trans).
template <int kNT, typename T>
MMK_DEVICE void load_b_kmajor(uint32_t (&b)[kNT][2], SmemPtr<const T> B, int pitch, int k0, int n0) {
  static_assert(kNT % 2 == 0, "n-tiles are loaded in pairs");
  const int lane = lane_id();
  MMK_UNROLL
  for (int j = 0; j < kNT; j += 2) {
    uint32_t r[4];
    ldmatrix<4, true>(r, B + (k0 + lane % 8 + 8 * ((lane / 8) % 2)) * pitch + n0 + j * 8 + 8 * (lane / 16));
    b[j][0] = r[0];
    b[j][1] = r[1];
    b[j + 1][0] = r[2];
    b[j + 1][1] = r[3];
  }
}

// acc[j] += A . B_j for j < kNT (one k-step).
template <int kNT, typename T>
MMK_DEVICE void mma_row(float (&acc)[kNT][4], const uint32_t (&a)[4], const uint32_t (&b)[kNT][2]) {
  MMK_UNROLL
  for (int j = 0; j < kNT; ++j) mma_m16n8k16<T>(acc[j], a, b[j], acc[j]);
}

// A operand of a 16 x 16 k-step from two float accumulator n-tiles (the k-step's columns 0..7 and
// 8..15), rounded to T: the FlashAttention-2 reuse of S/P registers as the next GEMM's A operand.
template <typename T>
MMK_DEVICE void accum_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack2<T>(lo[0], lo[1]);
  a[1] = pack2<T>(lo[2], lo[3]);
  a[2] = pack2<T>(hi[0], hi[1]);
  a[3] = pack2<T>(hi[2], hi[3]);
}

// acc[i][j] += A_i . B_j for one 16 x 16 k-step, kMT row tiles A_i and kNT n-tiles B_j, B stored
// n-major (as load_b_nmajor): for X . Y^T with both stored row-major. Each pair of B fragments is
// loaded once for all kMT row tiles and consumed as soon as it is loaded (fewer live registers than
// load_b_nmajor + mma_row, which the GEMM uses to reuse B across rows).
template <int kMT, int kNT, typename T>
MMK_DEVICE void mma_b_nmajor(float (&acc)[kMT][kNT][4], const uint32_t (&a)[kMT][4], SmemPtr<const T> B, int pitch,
                             int n_row0, int k_col0) {
  static_assert(kNT % 2 == 0, "n-tiles are loaded in pairs");
  const int lane = lane_id();
  MMK_UNROLL
  for (int j = 0; j < kNT; j += 2) {
    uint32_t r[4];
    ldmatrix<4, false>(r, B + (n_row0 + j * 8 + lane % 8 + 8 * (lane / 16)) * pitch + k_col0 + 8 * ((lane / 8) % 2));
    const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
    MMK_UNROLL
    for (int i = 0; i < kMT; ++i) {
      mma_m16n8k16<T>(acc[i][j], a[i], b0, acc[i][j]);
      mma_m16n8k16<T>(acc[i][j + 1], a[i], b1, acc[i][j + 1]);
    }
  }
}
template <int kNT, typename T>
MMK_DEVICE void mma_b_nmajor(float (&acc)[kNT][4], const uint32_t (&a)[4], SmemPtr<const T> B, int pitch, int n_row0,
                             int k_col0) {
  mma_b_nmajor<1, kNT, T>(reinterpret_cast<float (&)[1][kNT][4]>(acc), reinterpret_cast<const uint32_t (&)[1][4]>(a),
                          B, pitch, n_row0, k_col0);
}

// acc[i][j] += A_i . B_j as above, B stored k-major (as load_b_kmajor): for X . Y with Y stored
// row-major (P V, dS K, ...).
template <int kMT, int kNT, typename T>
MMK_DEVICE void mma_b_kmajor(float (&acc)[kMT][kNT][4], const uint32_t (&a)[kMT][4], SmemPtr<const T> B, int pitch,
                             int k_row0, int n_col0) {
  static_assert(kNT % 2 == 0, "n-tiles are loaded in pairs");
  const int lane = lane_id();
  MMK_UNROLL
  for (int j = 0; j < kNT; j += 2) {
    uint32_t r[4];
    ldmatrix<4, true>(r, B + (k_row0 + lane % 8 + 8 * ((lane / 8) % 2)) * pitch + n_col0 + j * 8 + 8 * (lane / 16));
    const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
    MMK_UNROLL
    for (int i = 0; i < kMT; ++i) {
      mma_m16n8k16<T>(acc[i][j], a[i], b0, acc[i][j]);
      mma_m16n8k16<T>(acc[i][j + 1], a[i], b1, acc[i][j + 1]);
    }
  }
}
template <int kNT, typename T>
MMK_DEVICE void mma_b_kmajor(float (&acc)[kNT][4], const uint32_t (&a)[4], SmemPtr<const T> B, int pitch, int k_row0,
                             int n_col0) {
  mma_b_kmajor<1, kNT, T>(reinterpret_cast<float (&)[1][kNT][4]>(acc), reinterpret_cast<const uint32_t (&)[1][4]>(a),
                          B, pitch, k_row0, n_col0);
}

// acc[j] += A . B^T over kSteps k-steps with both operands row-major in shared memory: A rows
// a_row0 .. + 15, B rows n_row0 + 8 j .. (columns 0 .. 16 kSteps of both).
template <int kNT, int kSteps, typename T>
MMK_DEVICE void warp_gemm_nt(float (&acc)[kNT][4], SmemPtr<const T> A, int a_pitch, int a_row0, SmemPtr<const T> B,
                             int b_pitch, int n_row0) {
  MMK_UNROLL_BY(2)  // a full unroll over wide head dims hoists every step's fragments (spills)
  for (int ks = 0; ks < kSteps; ++ks) {
    uint32_t a[4];
    load_a<T>(a, A, a_pitch, a_row0, ks * 16);
    mma_b_nmajor<kNT, T>(acc, a, B, b_pitch, n_row0, ks * 16);
  }
}

template <int kNT> MMK_DEVICE void zero(float (&acc)[kNT][4]) {
  MMK_UNROLL
  for (int j = 0; j < kNT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
}
template <int kMT, int kNT> MMK_DEVICE void zero(float (&acc)[kMT][kNT][4]) {
  MMK_UNROLL
  for (int i = 0; i < kMT; ++i) zero(acc[i]);
}

// Max / sum over the 4 lanes of a quad (the lanes holding one accumulator row); the max propagates NaN.
MMK_DEVICE float quad_max(float v) {
  v = max_nan(v, shfl_xor(kFullMask, v, 1));
  return max_nan(v, shfl_xor(kFullMask, v, 2));
}
MMK_DEVICE float quad_sum(float v) {
  v += shfl_xor(kFullMask, v, 1);
  return v + shfl_xor(kFullMask, v, 2);
}

MMK_BACKEND_END
}  // namespace mmkernels::dev
