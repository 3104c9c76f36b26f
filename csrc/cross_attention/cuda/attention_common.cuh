// Device helpers shared by the CUDA attention kernels (SIMT and tensor-core): the saved log-sum-exp and
// batch slicing for the grid limits. Torch-free. Which keys count, and the GQA head mapping, are rules
// of the op shared with the CPU kernels: params.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/device/primitives.h"
#include "common/dtype.h"
#include "cross_attention/params.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

// The saved float64 lse (common/dtype.h) as float hi + lo in a chosen unit (1: natural log; log2(e):
// the exp2 domain of the flash kernels). (x - hi) - lo keeps P consistent with the forward's
// normalisation to ~2^-48 relative however large |lse| is, with float arithmetic in the key loop; x
// must be the forward's score rounded the same way (dev::mul_rn, no fused multiply-add).
struct Lse {
  float hi = -INFINITY, lo = 0.f;
  Lse() = default;
  MMK_DEVICE explicit Lse(double full, double unit = 1.0) {
    if (full == -INFINITY) return;  // the row has no valid key (lo stays 0, not -inf - -inf)
    const double u = full * unit;
    hi = static_cast<float>(u);
    lo = static_cast<float>(u - static_cast<double>(hi));
  }
  // From the two halves as kernels keep them (e.g. per row in shared memory).
  MMK_DEVICE static Lse parts(float hi, float lo) {
    Lse l;
    l.hi = hi;
    l.lo = lo;
    return l;
  }
  MMK_DEVICE bool empty() const { return hi == -INFINITY; }
  MMK_DEVICE float offset(float x) const { return (x - hi) - lo; }
  MMK_DEVICE float prob(float s) const { return expf(offset(s)); }
};

// The flash kernels' softmax runs in the exp2 domain (x = s * scale * log2 e).
constexpr float kLog2e = 1.4426950408889634f;
constexpr double kLog2eD = 1.4426950408889634, kLn2D = 0.6931471805599453;

// The flash kernels' backward P = exp2(x - lse2) where the key and the row count, else 0; x = the
// forward's rounded s * scale_log2 (the sm_80 and sm_90a kernels alike).
MMK_DEVICE float prob(float s, float scale_log2, const Lse& lse2, bool key_valid) {
  return (key_valid && !lse2.empty()) ? dev::exp2_fast(lse2.offset(dev::mul_rn(s, scale_log2))) : 0.f;
}

// A row's saved log-sum-exp (natural log, float64: common/dtype.h) from its max m (exp2 domain) and
// final sum l, exact enough that the backward gets m + log2(l) back: -inf for a row with no valid
// key, NaN stays NaN.
MMK_DEVICE double row_lse(float m, float l) {
  return (l > 0.f || l != l) ? (double(m) + log2(double(l))) * kLn2D : -INFINITY;
}

// Params restricted to batches [b0, b0 + nb) (grid.z is limited to 65535).
inline CrossAttentionParams batch_slice(const CrossAttentionParams& p, int64_t b0, int64_t nb) {
  CrossAttentionParams s = p;
  const auto shift = [](const void* ptr, int64_t elems, size_t bytes) -> const char* {
    return ptr ? static_cast<const char*>(ptr) + elems * static_cast<int64_t>(bytes) : nullptr;
  };
  const size_t es = dtype_size(p.dtype), ls = dtype_size(lse_dtype(p.dtype));
  s.B = nb;
  s.q = shift(p.q, b0 * p.q_stride_b, es);
  s.k = shift(p.k, b0 * p.k_stride_b, es);
  s.v = shift(p.v, b0 * p.v_stride_b, es);
  s.out = const_cast<char*>(shift(p.out, b0 * p.o_stride_b, es));
  s.grad_out = shift(p.grad_out, b0 * p.do_stride_b, es);
  s.lse = const_cast<char*>(shift(p.lse, b0 * p.H * p.Lq, ls));
  s.dq = const_cast<char*>(shift(p.dq, b0 * p.Lq * p.H * p.D, es));
  s.dk = const_cast<char*>(shift(p.dk, b0 * p.Lk * p.Hkv * p.D, es));
  s.dv = const_cast<char*>(shift(p.dv, b0 * p.Lk * p.Hkv * p.Dv, es));
  s.kv_lengths = p.kv_lengths ? p.kv_lengths + b0 : nullptr;
  s.key_padding_mask = p.key_padding_mask ? p.key_padding_mask + b0 * p.mask_stride_b : nullptr;
  return s;
}

constexpr int64_t kMaxGridYZ = 65535;

// Consecutive slices of at most `max` batches, for launches whose grid.z counts batches:
//   for (BatchSlices s(p, kMaxGridYZ); s && err == dev::kSuccess; ++s) launch with *s ...
// (a loop, not a callback: the emulation names a launch after the function that issues it). Per-batch
// workspaces are indexed from first(), as the slice's params are.
class BatchSlices {
 public:
  BatchSlices(const CrossAttentionParams& p, int64_t max) : all_(p), max_(max) { set(); }
  explicit operator bool() const { return b0_ < all_.B; }
  BatchSlices& operator++() {
    b0_ += max_;
    set();
    return *this;
  }
  const CrossAttentionParams& operator*() const { return slice_; }
  int64_t first() const { return b0_; }

 private:
  void set() {
    if (b0_ < all_.B) slice_ = batch_slice(all_, b0_, dev::min(max_, all_.B - b0_));
  }
  const CrossAttentionParams& all_;
  int64_t max_, b0_ = 0;
  CrossAttentionParams slice_;
};

// dQ added across key tiles in a fixed order (the Hopper backward, flash_sm90_bwd.cuh, and the mma.sync
// dK/dV kernel at head dims up to kFusedDqMaxDim, flash_kernels.cuh): each key tile's CTA adds its dQ
// rows into a zeroed float32 workspace after the key tile before it, through one flag per (batch,
// head, query tile of kBwdBM rows, part of the head dim) counting the key tiles already in. No atomics:
// bitwise the same every run. convert_dq_kernel scales and rounds the sum at the end.
constexpr int kBwdBM = 64;  // query rows per step of those kernels
constexpr int kFusedDqMaxDim = 128;
MMK_HOST_DEVICE int64_t bwd_q_tiles(const CrossAttentionParams& p) { return (p.Lq + kBwdBM - 1) / kBwdBM; }
struct DqAccum {
  float* acc = nullptr;  // [B][H][Lq][kD]
  int* flags = nullptr;  // [B][H][bwd_q_tiles][parts]
  // The workspace's layout, in one place: its bytes, the views of it, and a batch slice's part.
  static int64_t bytes(const CrossAttentionParams& p, int kD, int parts) {
    return 4 * (p.B * p.H * p.Lq * kD + p.B * p.H * bwd_q_tiles(p) * parts);
  }
  static DqAccum in(void* workspace, const CrossAttentionParams& p_all, int kD) {
    DqAccum d;
    d.acc = static_cast<float*>(workspace);
    d.flags = reinterpret_cast<int*>(d.acc + p_all.B * p_all.H * p_all.Lq * kD);
    return d;
  }
  DqAccum from_batch(int64_t b0, const CrossAttentionParams& p, int kD, int parts) const {
    DqAccum d;
    d.acc = acc + b0 * p.H * p.Lq * kD;
    d.flags = flags + b0 * p.H * bwd_q_tiles(p) * parts;
    return d;
  }
};

// dQ = the accumulator times the scale, rounded to T; one thread per pair of columns of a row.
template <class T>
MMK_GLOBAL void MMK_LAUNCH_BOUNDS(256, 1) convert_dq_kernel(const CrossAttentionParams p, const float* acc, int kD) {
  const int64_t pairs = (p.D + 1) / 2;
  const int64_t t = int64_t(dev::block_idx().x) * dev::block_dim().x + dev::thread_idx().x;
  if (t >= p.B * p.Lq * p.H * pairs) return;
  const int64_t c = (t % pairs) * 2, r = t / pairs, h = r % p.H, i = (r / p.H) % p.Lq, b = r / (p.H * p.Lq);
  const float* a = acc + ((b * p.H + h) * p.Lq + i) * kD + c;
  T* dq = static_cast<T*>(p.dq) + ((b * p.Lq + i) * p.H + h) * p.D + c;
  const float scale = static_cast<float>(p.scale);
  dq[0] = dev::from_float<T>(a[0] * scale);
  if (c + 1 < p.D) dq[1] = dev::from_float<T>(a[1] * scale);
}
template <class T>
dev::Error launch_convert_dq(const CrossAttentionParams& p, const float* acc, int kD, dev::Stream stream) {
  const int64_t blocks = dev::ceil_div<int64_t>(p.B * p.Lq * p.H * ((p.D + 1) / 2), 256);
  if (blocks > 2147483647) return dev::kErrorInvalidConfiguration;
  return MMK_LAUNCH((convert_dq_kernel<T>), (dev::Dim3{static_cast<uint32_t>(blocks), 1, 1}), (dev::Dim3{256, 1, 1}), 0,
                    stream, p, acc, kD);
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
