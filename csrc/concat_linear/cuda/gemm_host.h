// What the sm_80 and sm_90 concat_linear GEMMs (gemm_sm80.cuh, gemm_sm90.cuh) share on the host: which
// operands they take, their launch limits, and the step from a runtime (layout, activation) to a
// compile-time kernel. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "common/activation.h"
#include "common/device/types.h"
#include "concat_linear/cuda/concat_linear_entry.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

// The operands' layout (bit 0 A MN-major, bit 1 B MN-major), or -1 when an operand is not whole
// 16-byte pieces (unit stride, 16-byte aligned base and row pitch: what cp.async chunks and TMA both
// need) or the segments disagree. Width-0 segments do not count.
inline int tc_layout(const GemmArgs& args) {
  auto aligned = [](const void* p, int64_t ld) { return reinterpret_cast<uintptr_t>(p) % 16 == 0 && ld % 8 == 0; };
  int layout = -1;
  for (int s = 0; s < args.n_seg; ++s) {
    const GemmSegment& g = args.seg[s];
    if (g.K == 0) continue;
    int l;
    if (g.sak == 1 && aligned(g.a, g.sam)) l = 0;
    else if (g.sam == 1 && aligned(g.a, g.sak)) l = 1;
    else return -1;
    if (g.sbk == 1 && aligned(g.b, g.sbn)) l |= 0;
    else if (g.sbn == 1 && aligned(g.b, g.sbk)) l |= 2;
    else return -1;
    if (layout >= 0 && l != layout) return -1;
    layout = l;
  }
  return layout < 0 ? 0 : layout;
}

// The layouts with kernels: 0 the forward (every activation), 2 dX = dZ W and 3 dW = dZ^T X (none).
inline bool tc_takes(const GemmArgs& args) {
  const int layout = tc_layout(args);
  return layout == 0 || ((layout == 2 || layout == 3) && args.act == Activation::None);
}

// A launch of (bm x bn) tiles: the grid's and the 32-bit index ranges, and split-K only into a float32
// partial without acc_in.
inline dev::Error tc_launch_check(const GemmArgs& args, int64_t bm, int64_t bn) {
  const int64_t gm = (args.M + bm - 1) / bm, gn = (args.N + bn - 1) / bn;
  if (args.M > 2147483647 || args.N > 2147483647 || gm > 2147483647 || gn > 65535)
    return dev::kErrorInvalidConfiguration;
  for (int s = 0; s < args.n_seg; ++s)
    if (args.seg[s].K > 2147483647) return dev::kErrorInvalidConfiguration;
  if (args.split < 1 || args.split > 65535 || (args.split > 1 && (!args.c_is_float || args.acc_in)))
    return dev::kErrorInvalidValue;
  return dev::kSuccess;
}

// Calls launch(std::bool_constant<AMN>, std::bool_constant<BMN>, std::integral_constant<Activation, kAct>)
// for the kernel tc_takes() names; `arch`'s GEMM reports the rest.
template <class Launch>
dev::Error tc_dispatch(const GemmArgs& args, const char* arch, Launch&& launch) {
  if (args.M == 0 || args.N == 0) return dev::kSuccess;
  using F = std::false_type;
  using T = std::true_type;
  using None = std::integral_constant<Activation, Activation::None>;
  if (tc_takes(args)) {
    switch (tc_layout(args)) {
      case 0:
        switch (args.act) {
          case Activation::None: return launch(F{}, F{}, None{});
          case Activation::ReLU: return launch(F{}, F{}, std::integral_constant<Activation, Activation::ReLU>{});
          case Activation::GELU: return launch(F{}, F{}, std::integral_constant<Activation, Activation::GELU>{});
          case Activation::GELUTanh:
            return launch(F{}, F{}, std::integral_constant<Activation, Activation::GELUTanh>{});
          case Activation::SiLU: return launch(F{}, F{}, std::integral_constant<Activation, Activation::SiLU>{});
        }
        break;
      case 2: return launch(F{}, T{}, None{});
      case 3: return launch(T{}, T{}, None{});
      default: break;
    }
  }
  return dev::report_error(dev::kErrorInvalidValue,
                           std::string("concat_linear: operand layout the ") + arch + " GEMM does not take");
}

MMK_BACKEND_END
}  // namespace mmkernels::cuda
