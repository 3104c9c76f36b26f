// The K loop of concat_linear's tensor-core GEMMs (both architectures): one sequence of (segment, k tile)
// over the segments in order, tiles of kBK along each segment's K, split evenly over blockIdx.z.
#pragma once

#include "common/device/primitives.h"
#include "concat_linear/cuda/concat_linear_entry.h"

namespace mmkernels::cuda {
MMK_BACKEND_BEGIN

// Segment s's K is seg_k(s): read from the kernel's parameters where it is needed (a copy into a local
// array would be dynamically indexed, i.e. in local memory).

// This CTA's run of the sequence: tiles [first, first + count).
struct TileRun {
  int first = 0, count = 0;
};
template <int kBK, class SegK>
MMK_DEVICE TileRun tile_run(SegK seg_k, int n_seg, int split, int z) {
  int all = 0;
  for (int s = 0; s < n_seg; ++s) all += static_cast<int>(dev::ceil_div<int64_t>(seg_k(s), kBK));
  const int per = dev::ceil_div(all, split);
  const int first = dev::min(all, z * per);
  return {first, dev::min(all, first + per) - first};
}

// A position in the sequence: segment and tile in it, never on an empty or finished segment.
template <int kBK, class SegK>
struct TileCursor {
  int seg = 0, tile = 0;
  MMK_DEVICE TileCursor(SegK seg_k, int n_seg, int first) { advance(seg_k, n_seg, first); }
  MMK_DEVICE void advance(SegK seg_k, int n_seg, int n) {
    tile += n;
    while (seg < n_seg && tile >= static_cast<int>(dev::ceil_div<int64_t>(seg_k(seg), kBK))) {
      tile -= static_cast<int>(dev::ceil_div<int64_t>(seg_k(seg), kBK));
      ++seg;
    }
  }
};

MMK_BACKEND_END
}  // namespace mmkernels::cuda
