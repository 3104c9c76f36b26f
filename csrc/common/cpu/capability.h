// Run-time choice among CPU kernels compiled once per instruction set (see CMakeLists.txt).
// A kernel source declares its entry points inside `namespace mmkernels::cpu::CPU_CAPABILITY`;
// each capability build gives them a distinct namespace, and MMK_CPU_DISPATCH picks the best one
// that both was compiled and runs on this machine.
#pragma once

namespace mmkernels::cpu {

enum class Capability { DEFAULT = 0, AVX2 = 1, AVX512 = 2 };

// Best capability this machine supports among those compiled in. Honours the environment variable
// MMKERNELS_CPU_CAPABILITY=default|avx2|avx512 (lower only), to test every variant on one machine.
Capability capability();
const char* capability_name();

// Whether this CPU multiplies bfloat16 / float16 operands natively (AVX512-BF16 / AVX512-FP16 dot
// products; every AMX CPU has them). Without them ATen's GEMM on those dtypes runs two orders of
// magnitude below its float32 rate (1.3 vs 129 GFLOP/s on a 2-core AVX2 Zen, torch 2.13), so the glue
// widens such operands to float32 (exact) and rounds the result once, as a float32-accumulating
// native GEMM would. Unknown architectures count as not native: widening is never the slow case. Both
// follow capability(): MMKERNELS_CPU_CAPABILITY below avx512 turns them off, so one machine can test
// both paths.
bool native_bf16_gemm();
bool native_f16_gemm();

}  // namespace mmkernels::cpu

#if defined(MMK_HAVE_CPU_AVX512)
#define MMK_CPU_CASE_AVX512(fn, ...) \
  case ::mmkernels::cpu::Capability::AVX512: return ::mmkernels::cpu::AVX512::fn(__VA_ARGS__);
#else
#define MMK_CPU_CASE_AVX512(fn, ...)
#endif
#if defined(MMK_HAVE_CPU_AVX2)
#define MMK_CPU_CASE_AVX2(fn, ...) \
  case ::mmkernels::cpu::Capability::AVX2: return ::mmkernels::cpu::AVX2::fn(__VA_ARGS__);
#else
#define MMK_CPU_CASE_AVX2(fn, ...)
#endif

#define MMK_CPU_DISPATCH(fn, ...)                                   \
  do {                                                              \
    switch (::mmkernels::cpu::capability()) {                       \
      MMK_CPU_CASE_AVX512(fn, __VA_ARGS__)                          \
      MMK_CPU_CASE_AVX2(fn, __VA_ARGS__)                            \
      default: return ::mmkernels::cpu::DEFAULT::fn(__VA_ARGS__);   \
    }                                                               \
  } while (0)

// Declares `decl` in every capability namespace that was compiled.
#define MMK_CPU_DECLARE(decl)                         \
  namespace mmkernels::cpu::DEFAULT { decl; }         \
  MMK_CPU_DECLARE_AVX2(decl)                          \
  MMK_CPU_DECLARE_AVX512(decl)
#if defined(MMK_HAVE_CPU_AVX2)
#define MMK_CPU_DECLARE_AVX2(decl) namespace mmkernels::cpu::AVX2 { decl; }
#else
#define MMK_CPU_DECLARE_AVX2(decl)
#endif
#if defined(MMK_HAVE_CPU_AVX512)
#define MMK_CPU_DECLARE_AVX512(decl) namespace mmkernels::cpu::AVX512 { decl; }
#else
#define MMK_CPU_DECLARE_AVX512(decl)
#endif
