#include "common/cpu/capability.h"

#include <cstdlib>
#include <cstring>

namespace mmkernels::cpu {

static Capability detect() {
  Capability best = Capability::DEFAULT;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
#if defined(MMK_HAVE_CPU_AVX2)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Capability::AVX2;
#endif
#if defined(MMK_HAVE_CPU_AVX512)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    best = Capability::AVX512;
#endif
#endif
  if (const char* env = std::getenv("MMKERNELS_CPU_CAPABILITY")) {
    Capability want = best;
    if (!std::strcmp(env, "default")) want = Capability::DEFAULT;
    else if (!std::strcmp(env, "avx2")) want = Capability::AVX2;
    else if (!std::strcmp(env, "avx512")) want = Capability::AVX512;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;  // only ever lower
  }
  return best;
}

Capability capability() {
  static const Capability cap = detect();
  return cap;
}

const char* capability_name() {
  switch (capability()) {
    case Capability::AVX512: return "avx512";
    case Capability::AVX2: return "avx2";
    default: return "default";
  }
}

// __builtin_cpu_supports takes a literal feature name, hence the macro.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MMK_CPU_SUPPORTS(feature) (__builtin_cpu_init(), __builtin_cpu_supports(feature) != 0)
#else
#define MMK_CPU_SUPPORTS(feature) false
#endif

bool native_bf16_gemm() {
  static const bool has = capability() == Capability::AVX512 && MMK_CPU_SUPPORTS("avx512bf16");
  return has;
}

bool native_f16_gemm() {
  static const bool has = capability() == Capability::AVX512 && MMK_CPU_SUPPORTS("avx512fp16");
  return has;
}

}  // namespace mmkernels::cpu
