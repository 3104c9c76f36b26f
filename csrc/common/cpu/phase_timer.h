// Per-phase cycle counts of the CPU kernels, for profiling only: compiled in with -DMMK_PHASE_TIMERS
// (benchmarks/cpu_breakdown.py builds that way); without it every macro is empty and costs nothing.
// Each thread adds the TSC cycles of its phases into its own row; after a call the kernel appends one
// line per call to the file named by $MMK_PHASE_FILE: "<kernel> wall=<cycles> t<i>.<phase>=<cycles>...".
#pragma once

#if defined(MMK_PHASE_TIMERS)
#include <ATen/Parallel.h>
#include <x86intrin.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mmkernels::cpu::phase {

constexpr int kMaxThreads = 16, kMaxPhases = 16;
struct Table {
  const char* names[kMaxPhases] = {};
  alignas(64) uint64_t cycles[kMaxThreads][kMaxPhases] = {};
};
inline Table& table() {
  static Table t;
  return t;
}
inline void reset() { std::memset(table().cycles, 0, sizeof(table().cycles)); }
inline void add(int id, const char* name, uint64_t c) {
  const int t = at::get_thread_num();
  if (t < kMaxThreads) {
    table().names[id] = name;
    table().cycles[t][id] += c;
  }
}
inline void dump(const char* kernel, uint64_t wall) {
  const char* path = std::getenv("MMK_PHASE_FILE");
  if (!path) return;
  if (FILE* f = std::fopen(path, "a")) {
    std::fprintf(f, "%s wall=%llu", kernel, static_cast<unsigned long long>(wall));
    for (int t = 0; t < kMaxThreads; ++t)
      for (int i = 0; i < kMaxPhases; ++i)
        if (table().cycles[t][i])
          std::fprintf(f, " t%d.%s=%llu", t, table().names[i], static_cast<unsigned long long>(table().cycles[t][i]));
    std::fprintf(f, "\n");
    std::fclose(f);
  }
}

}  // namespace mmkernels::cpu::phase

#define MMK_PHASE_CALL_BEGIN() ::mmkernels::cpu::phase::reset(); const uint64_t mmk_call_t0_ = __rdtsc()
#define MMK_PHASE_CALL_END(kernel) ::mmkernels::cpu::phase::dump(kernel, __rdtsc() - mmk_call_t0_)
#define MMK_PHASE_BEGIN(var) uint64_t var = __rdtsc()
// Adds the cycles since `var` to phase `id` and restarts `var`.
#define MMK_PHASE_LAP(var, id, name)                        \
  do {                                                      \
    const uint64_t mmk_now_ = __rdtsc();                    \
    ::mmkernels::cpu::phase::add(id, name, mmk_now_ - var); \
    var = mmk_now_;                                         \
  } while (0)
#else
#define MMK_PHASE_CALL_BEGIN() do {} while (0)
#define MMK_PHASE_CALL_END(kernel) do {} while (0)
#define MMK_PHASE_BEGIN(var) do {} while (0)
#define MMK_PHASE_LAP(var, id, name) do {} while (0)
#endif
