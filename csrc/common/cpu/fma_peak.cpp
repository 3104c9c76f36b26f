// The machine's float32 FMA peak as the CPU kernels see it (this capability's vector width), for the
// benchmark's yardsticks: independent fused multiply-add chains on every thread, nothing from memory.
// Compiled once per CPU capability (CMakeLists.txt) and chosen like the kernels.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace mmkernels::cpu::CPU_CAPABILITY {

// FLOP/s of `iters` rounds of kChains independent vector FMAs on each of at::get_num_threads()
// threads, best of `repeats` (wall time of the whole parallel region). 12 chains cover the FMA
// latency x pipes of current x86 cores (4-5 cycles x 2 pipes).
double fma_peak_flops(int64_t iters, int64_t repeats) {
  using Vec = at::vec::Vectorized<float>;
  constexpr int kChains = 12;
  const int64_t threads = at::get_num_threads();
  std::atomic<int64_t> sink{0};
  double best = 0.0;
  for (int64_t rep = 0; rep < std::max<int64_t>(repeats, 1); ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        Vec acc[kChains];
        for (int i = 0; i < kChains; ++i) acc[i] = Vec(1.f + 1e-3f * static_cast<float>(i + t));
        const Vec x(0.999999f), y(1e-7f);
        for (int64_t it = 0; it < iters; ++it)
          for (int i = 0; i < kChains; ++i) acc[i] = at::vec::fmadd(acc[i], x, y);
        float s = 0.f;
        for (int i = 0; i < kChains; ++i) {
          float lanes[Vec::size()];
          acc[i].store(lanes);
          s += lanes[0];
        }
        sink += s > 1e30f;  // keeps the chains alive
      }
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * Vec::size() * kChains * static_cast<double>(iters) * threads / secs);
  }
  return sink.load() > threads * repeats ? 0.0 : best;
}

}  // namespace mmkernels::cpu::CPU_CAPABILITY
