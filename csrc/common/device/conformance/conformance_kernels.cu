// Primitive conformance kernels (see conformance.h); compiled by nvcc and, like every kernel unit, for
// the host emulation.
#include "common/device/conformance/conformance_entry.h"
#include "common/device/primitives.h"

namespace mmkernels::conformance::cuda {
MMK_BACKEND_BEGIN
namespace {

MMK_GLOBAL void mma_kernel(const Args a) {
  const int lane = dev::lane_id();
  const auto* ar = static_cast<const uint32_t*>(a.in0) + 4 * lane;
  const auto* br = static_cast<const uint32_t*>(a.in1) + 2 * lane;
  const auto* cr = static_cast<const float*>(a.in2) + 4 * lane;
  const uint32_t A[4] = {ar[0], ar[1], ar[2], ar[3]};
  const uint32_t B[2] = {br[0], br[1]};
  const float C[4] = {cr[0], cr[1], cr[2], cr[3]};
  float D[4];
  if (a.primitive == Primitive::MmaBF16) dev::mma_m16n8k16<dev::bf16>(D, A, B, C);
  else dev::mma_m16n8k16<dev::half>(D, A, B, C);
  float* d = static_cast<float*>(a.out) + 4 * lane;
  for (int i = 0; i < 4; ++i) d[i] = D[i];
}

template <int N, bool Trans>
MMK_DEVICE void ldmatrix_case(const Args& a, dev::SmemPtr<uint8_t> tile, int lane) {
  uint32_t r[N];
  dev::ldmatrix<N, Trans>(r, tile + static_cast<const int32_t*>(a.in1)[lane]);
  uint32_t* out = static_cast<uint32_t*>(a.out) + 4 * lane;
  for (int j = 0; j < N; ++j) out[j] = r[j];
}

MMK_GLOBAL void ldmatrix_kernel(const Args a) {
  const int lane = dev::lane_id();
  dev::SmemPtr<uint32_t> words = dev::dynamic_smem<uint32_t>();
  for (int64_t i = lane; i < a.n / 4; i += dev::kWarpSize) words[i] = static_cast<const uint32_t*>(a.in0)[i];
  dev::sync_threads();
  dev::SmemPtr<uint8_t> tile = dev::dynamic_smem<uint8_t>();
  const bool trans = a.arg != 0;
  if (a.mode == 1) trans ? ldmatrix_case<1, true>(a, tile, lane) : ldmatrix_case<1, false>(a, tile, lane);
  else if (a.mode == 2) trans ? ldmatrix_case<2, true>(a, tile, lane) : ldmatrix_case<2, false>(a, tile, lane);
  else trans ? ldmatrix_case<4, true>(a, tile, lane) : ldmatrix_case<4, false>(a, tile, lane);
}

MMK_GLOBAL void shfl_kernel(const Args a) {
  const int lane = dev::lane_id();
  const uint32_t v = static_cast<const uint32_t*>(a.in0)[lane];
  const int arg = static_cast<const int32_t*>(a.in1)[lane];
  uint32_t r;
  switch (a.mode) {
    case 0: r = dev::shfl(dev::kFullMask, v, arg, a.arg); break;
    case 1: r = dev::shfl_up(dev::kFullMask, v, static_cast<unsigned>(arg), a.arg); break;
    case 2: r = dev::shfl_down(dev::kFullMask, v, static_cast<unsigned>(arg), a.arg); break;
    default: r = dev::shfl_xor(dev::kFullMask, v, arg, a.arg); break;
  }
  static_cast<uint32_t*>(a.out)[lane] = r;
}

MMK_GLOBAL void vote_kernel(const Args a) {
  const int lane = dev::lane_id();
  const bool p = static_cast<const int32_t*>(a.in0)[lane] != 0;
  uint32_t r;
  if (a.mode == 0) r = dev::ballot(dev::kFullMask, p);
  else if (a.mode == 1) r = dev::any(dev::kFullMask, p);
  else r = dev::all(dev::kFullMask, p);
  static_cast<uint32_t*>(a.out)[lane] = r;
}

// Lane l fills bytes [16 l, 16 l + 16) of the tile from its source offset (src_bytes < 16 zero-fills).
MMK_GLOBAL void cp_async_kernel(const Args a) {
  const int lane = dev::lane_id();
  const int32_t* spec = static_cast<const int32_t*>(a.in1) + 2 * lane;
  dev::SmemPtr<uint8_t> tile = dev::dynamic_smem<uint8_t>();
  dev::cp_async<16>(tile + 16 * lane, static_cast<const uint8_t*>(a.in0) + spec[0], spec[1]);
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
  dev::sync_threads();
  dev::SmemPtr<uint32_t> words = tile.cast<uint32_t>();
  for (int i = lane; i < 128; i += dev::kWarpSize) static_cast<uint32_t*>(a.out)[i] = words[i];
}

MMK_GLOBAL void convert_kernel(const Args a) {
  const int64_t i = int64_t(dev::block_idx().x) * dev::block_dim().x + dev::thread_idx().x;
  if (i >= a.n) return;
  const float x = static_cast<const float*>(a.in0)[i];
  const uint32_t packed_bf16 = dev::pack2<dev::bf16>(x, 0.f), packed_half = dev::pack2<dev::half>(x, 0.f);
  static_cast<uint32_t*>(a.out)[i] = (packed_half << 16) | (packed_bf16 & 0xffffu);
}

}  // namespace

dev::Error run(const Args& a, dev::Stream stream) {
  const dev::Dim3 one{1, 1, 1}, warp{dev::kWarpSize, 1, 1};
  switch (a.primitive) {
    case Primitive::MmaBF16:
    case Primitive::MmaF16: return MMK_LAUNCH(mma_kernel, one, warp, 0, stream, a);
    case Primitive::Ldmatrix: return MMK_LAUNCH(ldmatrix_kernel, one, warp, static_cast<size_t>(a.n), stream, a);
    case Primitive::Shfl: return MMK_LAUNCH(shfl_kernel, one, warp, 0, stream, a);
    case Primitive::Vote: return MMK_LAUNCH(vote_kernel, one, warp, 0, stream, a);
    case Primitive::CpAsync: return MMK_LAUNCH(cp_async_kernel, one, warp, 512, stream, a);
    case Primitive::Convert: {
      const dev::Dim3 grid{static_cast<uint32_t>(dev::ceil_div<int64_t>(a.n, 128)), 1, 1};
      return a.n == 0 ? dev::kSuccess : MMK_LAUNCH(convert_kernel, grid, (dev::Dim3{128, 1, 1}), 0, stream, a);
    }
    case Primitive::Wgmma:
    case Primitive::Tma: return run_sm90(a, stream);
  }
  return dev::kErrorInvalidValue;
}

MMK_BACKEND_END
}  // namespace mmkernels::conformance::cuda
