// Self-test kernels for the emulation's checkers (compiled with MMK_EMULATION only: the broken versions
// are broken on purpose). Each has one bug and a `fixed` switch that removes it.
#include <c10/util/Exception.h>

#include <memory>
#include <vector>

#include "common/device/primitives.h"
#include "common/device/selftest/selftest.h"

namespace mmkernels::emulation {
namespace {
using namespace mmkernels::dev;

constexpr int kThreads = 64;

// Missing barrier: every thread reads its neighbour's shared slot without waiting for the write.
MMK_GLOBAL void missing_barrier(float* out, bool fixed) {
  SmemPtr<float> s = dynamic_smem<float>();
  const int t = thread_rank();
  s[t] = static_cast<float>(t);
  if (fixed) sync_threads();
  out[t] = s[(t + 1) % kThreads];
}

// Off-by-one shared write: thread t writes slot t + 1, so the last thread writes past the end.
MMK_GLOBAL void smem_off_by_one(float* out, bool fixed) {
  SmemPtr<float> s = dynamic_smem<float>();
  const int t = thread_rank();
  s[fixed ? t : t + 1] = static_cast<float>(t);
  sync_threads();
  out[t] = fixed ? s[t] : s[(t + 1) % kThreads];
}

// Divergent barrier: only the first warp reaches __syncthreads.
MMK_GLOBAL void divergent_barrier(float* out, bool fixed) {
  const int t = thread_rank();
  if (fixed || t < 32) sync_threads();
  out[t] = static_cast<float>(t);
}

// Out-of-bounds global read: thread t reads in[t + 1] of a kThreads-element buffer.
MMK_GLOBAL void global_oob(const float* in, float* out, bool fixed) {
  const int t = thread_rank();
  out[t] = in[fixed ? t : t + 1];
}

// Uninitialized shared read: the last slot is never written.
MMK_GLOBAL void uninitialized_read(float* out, bool fixed) {
  SmemPtr<float> s = dynamic_smem<float>();
  const int t = thread_rank();
  if (fixed || t < kThreads - 1) s[t] = static_cast<float>(t);
  sync_threads();
  out[t] = s[t];
}

// Warp operation naming absent lanes: a 48-thread block's second warp has only 16 lanes.
MMK_GLOBAL void absent_lanes(float* out, bool fixed) {
  const int t = thread_rank();
  const uint32_t mask = (fixed && warp_id() == 1) ? 0x0000ffffu : kFullMask;
  out[t] = shfl_xor(mask, static_cast<float>(t), 1);
}

// Lanes of a warp at different shuffles.
MMK_GLOBAL void mismatched_shuffle(float* out, bool fixed) {
  const int t = thread_rank();
  float v = static_cast<float>(t);
  if (fixed || lane_id() < 16) v = shfl_xor(kFullMask, v, 1);
  else v = shfl_xor(kFullMask, v, 2);
  out[t] = v;
}

// Reading a cp.async destination without waiting for the copy.
MMK_GLOBAL void cp_async_no_wait(const float* in, float* out, bool fixed) {
  SmemPtr<float> s = dynamic_smem<float>();
  const int t = thread_rank();
  if (t < kThreads / 4) cp_async<16>(s + 4 * t, in + 4 * t);
  cp_async_commit();
  if (fixed) cp_async_wait<0>();
  sync_threads();
  out[t] = s[t];
  cp_async_wait<0>();
}

// Warp-private exchange through shared memory without __syncwarp between write and read.
MMK_GLOBAL void missing_syncwarp(float* out, bool fixed) {
  SmemPtr<float> s = dynamic_smem<float>();
  const int t = thread_rank();
  s[t] = static_cast<float>(t);
  if (fixed) sync_warp();
  out[t] = s[t ^ 1];
}

// Two blocks hand off through a global flag (wait_flag / set_flag); broken, block 0 waits for block 1's,
// a dependency on a later block (a GPU need not run the two together: it may never end).
MMK_GLOBAL void flag_wait_on_later_block(int* flag, float* out, bool fixed) {
  const int t = thread_rank(), waiter = fixed ? 1 : 0;
  if (static_cast<int>(block_idx().x) == waiter) {
    if (t == 0) wait_flag(flag, 1);
    sync_threads();
    out[t] = 1.f;
  } else {
    sync_threads();
    if (t == 0) set_flag(flag, 1);
  }
}

}  // namespace

std::vector<std::pair<std::string, std::tuple<uint32_t, uint32_t, uint32_t>>> launch_log() {
  std::vector<std::pair<std::string, std::tuple<uint32_t, uint32_t, uint32_t>>> out;
  for (const emu::LaunchRecord& r : emu::take_launch_log()) out.emplace_back(r.name, std::make_tuple(r.grid.x, r.grid.y, r.grid.z));
  return out;
}

std::vector<std::string> selftest_names() {
  std::vector<std::string> names = {"missing_barrier",    "smem_off_by_one",    "divergent_barrier",
                                    "global_oob",         "uninitialized_read", "absent_lanes",
                                    "mismatched_shuffle", "cp_async_no_wait",   "missing_syncwarp",
                                    "flag_wait_on_later_block"};
  for (const std::string& n : sm90_selftest_names()) names.push_back(n);
  return names;
}

std::string run_selftest(const std::string& name, bool fixed) {
  if (std::string report; run_sm90_selftest(name, fixed, &report)) return report;
  // Heap buffers of exactly kThreads floats, so AddressSanitizer sees an overrun.
  std::unique_ptr<float[]> in(new float[kThreads]), out(new float[kThreads]);
  for (int i = 0; i < kThreads; ++i) in[i] = static_cast<float>(i);
  int flag = 0;
  const Dim3 grid{2, 1, 1}, block{kThreads, 1, 1};
  const size_t smem = kThreads * sizeof(float);
  Error e;
  if (name == "missing_barrier") e = MMK_LAUNCH(missing_barrier, grid, block, smem, nullptr, out.get(), fixed);
  else if (name == "smem_off_by_one") e = MMK_LAUNCH(smem_off_by_one, grid, block, smem, nullptr, out.get(), fixed);
  else if (name == "divergent_barrier") e = MMK_LAUNCH(divergent_barrier, grid, block, 0, nullptr, out.get(), fixed);
  else if (name == "global_oob") e = MMK_LAUNCH(global_oob, grid, block, 0, nullptr, in.get(), out.get(), fixed);
  else if (name == "uninitialized_read") e = MMK_LAUNCH(uninitialized_read, grid, block, smem, nullptr, out.get(), fixed);
  else if (name == "absent_lanes") e = MMK_LAUNCH(absent_lanes, grid, (Dim3{48, 1, 1}), 0, nullptr, out.get(), fixed);
  else if (name == "mismatched_shuffle") e = MMK_LAUNCH(mismatched_shuffle, grid, block, 0, nullptr, out.get(), fixed);
  else if (name == "cp_async_no_wait") e = MMK_LAUNCH(cp_async_no_wait, grid, block, smem, nullptr, in.get(), out.get(), fixed);
  else if (name == "missing_syncwarp") e = MMK_LAUNCH(missing_syncwarp, grid, block, smem, nullptr, out.get(), fixed);
  else if (name == "flag_wait_on_later_block") e = MMK_LAUNCH(flag_wait_on_later_block, grid, block, 0, nullptr, &flag, out.get(), fixed);
  else TORCH_CHECK_VALUE(false, "unknown emulation self-test '", name, "'");
  return e == kSuccess ? std::string() : std::string(error_string(e));
}

}  // namespace mmkernels::emulation
