// concat_linear's GEMMs on tensor cores (16-bit inputs, float32 accumulation), on the device-primitive
// layer (so the emulation runs them).
//
// One kernel serves the forward and both gradient GEMMs through its operand layouts (GemmArgs strides;
// the contiguous one must be 1):
//   forward   y = act(sum_s X_s W_s^T + b): A = X_s row-major (M x K_s), B = W_s n-major (row n holds
//             its K_s columns), the K loop walking the segments in order into one accumulator;
//   dX_s = dZ W_s:   A = dZ row-major (M x N), B = W_s k-major (row n, columns = the segment);
//   dW_s = dZ^T X_s: A = dZ stored k-major (A^T row-major: row m holds N values), B = X_s k-major.
// CTA tile 128 x 128 x 32, 8 warps as 4 (M) x 2 (N), each 32 x 64 (2 x 8 mma tiles); operands stream
// through a 3-stage cp.async pipeline into padded (bank-conflict-free) tiles and reach the tensor cores
// by ldmatrix (.trans for k-major operands); bias, activation and the pre-activation store happen in
// registers in the epilogue, so the concatenation and the pre-activation pass never exist.
#pragma once

#include <cstdint>

#include "common/activation.h"
#include "common/device/warp_mma.h"
#include "concat_linear/cuda/concat_linear_launch.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN
namespace tc {

constexpr int kStages = 3;  // kBM, kBN, kBK: concat_linear_launch.h (the glue sizes split-K by them)
constexpr int kWarpsM = 4, kWarpsN = 2, kThreads = 32 * kWarpsM * kWarpsN;
constexpr int kWM = kBM / kWarpsM, kWN = kBN / kWarpsN;  // 32 x 64 per warp
constexpr int kMT = kWM / 16, kNT = kWN / 8;

// Shared tile sizes (elements) per stage: A is [kBM][kBK] (row-major) or [kBK][kBM] (k-major), B is
// [kBN][kBK] (n-major) or [kBK][kBN] (k-major), each with the padded pitch of warp_mma.h.
template <bool kAKMajor> constexpr int a_pitch() { return dev::tile_pitch<kAKMajor ? kBM : kBK>(); }
template <bool kBKMajor> constexpr int b_pitch() { return dev::tile_pitch<kBKMajor ? kBN : kBK>(); }
template <bool kAKMajor> constexpr int a_elems() { return (kAKMajor ? kBK : kBM) * a_pitch<kAKMajor>(); }
template <bool kBKMajor> constexpr int b_elems() { return (kBKMajor ? kBK : kBN) * b_pitch<kBKMajor>(); }
template <typename T, bool kAKMajor, bool kBKMajor>
constexpr size_t smem_bytes() {
  return sizeof(T) * kStages * (a_elems<kAKMajor>() + b_elems<kBKMajor>());
}

// Operand layouts the kernel accepts: each operand has one unit stride, 16-byte aligned rows.
inline bool aligned16(const void* p, int64_t stride_elems) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && stride_elems % 8 == 0;
}

template <typename T, bool kAKMajor, bool kBKMajor>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(kThreads) tc_gemm_kernel(const GemmArgs args) {
  constexpr int kAP = a_pitch<kAKMajor>(), kBP = b_pitch<kBKMajor>();
  constexpr int kAE = a_elems<kAKMajor>(), kBE = b_elems<kBKMajor>();
  const int warp = dev::warp_id(), lane = dev::lane_id(), g = lane / 4, tq = lane % 4;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int64_t m0 = int64_t(dev::block_idx().x) * kBM, n0 = int64_t(dev::block_idx().y) * kBN;
  dev::SmemPtr<T> As = dev::dynamic_smem<T>();
  dev::SmemPtr<T> Bs = As + kStages * kAE;
  const int m_valid = static_cast<int>(dev::min<int64_t>(kBM, args.M - m0));
  const int n_valid = static_cast<int>(dev::min<int64_t>(kBN, args.N - n0));

  // The K loop as one sequence of (segment, k0) tiles; `cursor` advances through it as stages load.
  // With split-K this CTA takes tiles [split_z * per, ...) of it.
  int all_tiles = 0;
  for (int s = 0; s < args.n_seg; ++s) all_tiles += static_cast<int>(dev::ceil_div<int64_t>(args.seg[s].K, kBK));
  const int per = static_cast<int>(dev::ceil_div<int64_t>(all_tiles, args.split));
  const int first = dev::min(all_tiles, static_cast<int>(dev::block_idx().z) * per);
  const int tiles = dev::min(all_tiles, first + per) - first;
  int cur_seg = 0;
  int64_t cur_k = 0;
  for (int skip = first; skip > 0 && cur_seg < args.n_seg;) {  // the cursor to tile `first`
    const int in_seg = static_cast<int>(dev::ceil_div<int64_t>(args.seg[cur_seg].K, kBK));
    if (skip < in_seg) {
      cur_k = int64_t(skip) * kBK;
      break;
    }
    skip -= in_seg;
    ++cur_seg;
  }
  auto load = [&](int stage) {
    while (cur_k >= args.seg[cur_seg].K) {  // empty segments are skipped
      ++cur_seg;
      cur_k = 0;
    }
    const GemmSegment& sg = args.seg[cur_seg];
    const T* a = static_cast<const T*>(sg.a);
    const T* b = static_cast<const T*>(sg.b);
    const int k_valid = static_cast<int>(dev::min<int64_t>(kBK, sg.K - cur_k));
    if constexpr (kAKMajor)
      dev::load_tile_async<kBK, kBM, kThreads, true>(As + stage * kAE, a + cur_k * sg.sak + m0, sg.sak, k_valid, m_valid);
    else
      dev::load_tile_async<kBM, kBK, kThreads, true>(As + stage * kAE, a + m0 * sg.sam + cur_k, sg.sam, m_valid, k_valid);
    if constexpr (kBKMajor)
      dev::load_tile_async<kBK, kBN, kThreads, true>(Bs + stage * kBE, b + cur_k * sg.sbk + n0, sg.sbk, k_valid, n_valid);
    else
      dev::load_tile_async<kBN, kBK, kThreads, true>(Bs + stage * kBE, b + n0 * sg.sbn + cur_k, sg.sbn, n_valid, k_valid);
    cur_k += kBK;
  };

  float acc[kMT][kNT][4];
  MMK_UNROLL
  for (int mt = 0; mt < kMT; ++mt) dev::zero(acc[mt]);
  MMK_UNROLL
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < tiles) load(s);
    dev::cp_async_commit();  // empty groups keep the wait count uniform
  }
  for (int t = 0; t < tiles; ++t) {
    dev::cp_async_wait<kStages - 2>();
    dev::sync_threads();  // tile t is visible; everyone is done with the stage refilled below
    if (t + kStages - 1 < tiles) load((t + kStages - 1) % kStages);
    dev::cp_async_commit();
    const dev::SmemPtr<const T> At = As + (t % kStages) * kAE, Bt = Bs + (t % kStages) * kBE;
    MMK_UNROLL
    for (int ks = 0; ks < kBK / 16; ++ks) {
      uint32_t b[kNT][2];
      if constexpr (kBKMajor) dev::load_b_kmajor<kNT, T>(b, Bt, kBP, ks * 16, wn * kWN);
      else dev::load_b_nmajor<kNT, T>(b, Bt, kBP, wn * kWN, ks * 16);
      MMK_UNROLL
      for (int mt = 0; mt < kMT; ++mt) {
        uint32_t a[4];
        if constexpr (kAKMajor) dev::load_a_trans<T>(a, At, kAP, wm * kWM + mt * 16, ks * 16);
        else dev::load_a<T>(a, At, kAP, wm * kWM + mt * 16, ks * 16);
        dev::mma_row<kNT, T>(acc[mt], a, b);
      }
    }
  }
  dev::cp_async_wait<0>();  // only empty groups can be left; none stays in flight at exit

  // Epilogue in registers: (+ acc_in), then float partial store, or bias + pre-activation + act.
  const T* bias = static_cast<const T*>(args.bias);
  MMK_UNROLL
  for (int mt = 0; mt < kMT; ++mt)
    MMK_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int64_t m = m0 + wm * kWM + mt * 16 + g + 8 * (e / 2);
      if (m >= args.M) continue;
      MMK_UNROLL
      for (int nt = 0; nt < kNT; ++nt) {
        const int64_t n = n0 + wn * kWN + nt * 8 + 2 * tq + (e % 2);
        if (n >= args.N) continue;
        const int64_t o = m * args.scm + n * args.scn;
        float v = acc[mt][nt][e] + (args.acc_in ? args.acc_in[o] : 0.f);
        if (args.c_is_float) {
          static_cast<float*>(args.c)[o + dev::block_idx().z * args.split_stride] = v;  // re-read: no live register
          continue;
        }
        if (bias) v += dev::to_float(bias[n]);
        if (args.z) static_cast<T*>(args.z)[o] = dev::from_float<T>(v);
        static_cast<T*>(args.c)[o] = dev::from_float<T>(activation_forward(v, args.act));
      }
    }
}

template <typename T, bool kAKMajor, bool kBKMajor>
dev::Error launch(const GemmArgs& args, dev::Stream stream) {
  constexpr size_t smem = smem_bytes<T, kAKMajor, kBKMajor>();
  const int64_t gm = dev::ceil_div<int64_t>(args.M, kBM), gn = dev::ceil_div<int64_t>(args.N, kBN);
  if (gm > 2147483647 || gn > 65535) return dev::kErrorInvalidConfiguration;
  if (args.split < 1 || args.split > 65535 || (args.split > 1 && (!args.c_is_float || args.acc_in)))
    return dev::kErrorInvalidValue;
  dev::Error err = dev::set_max_dynamic_smem(tc_gemm_kernel<T, kAKMajor, kBKMajor>, static_cast<int>(smem));
  if (err != dev::kSuccess) return err;
  const dev::Dim3 grid{static_cast<uint32_t>(gm), static_cast<uint32_t>(gn), static_cast<uint32_t>(args.split)};
  return MMK_LAUNCH((tc_gemm_kernel<T, kAKMajor, kBKMajor>), grid, (dev::Dim3{kThreads, 1, 1}), smem, stream, args);
}

// Which layout the args describe, or -1 when an operand is not tensor-core ready (the SIMT kernel then
// runs): bit 0 A k-major, bit 1 B k-major; every segment must agree.
inline int layout_of(const GemmArgs& args) {
  int layout = -1;
  for (int s = 0; s < args.n_seg; ++s) {
    const GemmSegment& g = args.seg[s];
    int l;
    if (g.sak == 1 && aligned16(g.a, g.sam)) l = 0;
    else if (g.sam == 1 && aligned16(g.a, g.sak)) l = 1;
    else return -1;
    if (g.sbk == 1 && aligned16(g.b, g.sbn)) l |= 0;
    else if (g.sbn == 1 && aligned16(g.b, g.sbk)) l |= 2;
    else return -1;
    if (layout >= 0 && l != layout) return -1;
    layout = l;
  }
  return layout;
}

}  // namespace tc
MMK_BACKEND_END
}  // namespace mmkernels::cuda
