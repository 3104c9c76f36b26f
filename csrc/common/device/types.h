// Types shared by the CUDA kernels, their torch-free launchers and the torch glue, for both backends
// (GPU and host emulation): launch geometry, error/stream handles, the 16-bit float storage types and
// their round-to-nearest-even conversions.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "common/device/backend.h"

#if !defined(MMK_EMULATION)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#endif

namespace mmkernels::dev {
MMK_BACKEND_BEGIN

constexpr int kWarpSize = 32;
constexpr uint32_t kFullMask = 0xffffffffu;

struct Dim3 {
  uint32_t x = 1, y = 1, z = 1;
};

// 16-byte vector, the unit of cp.async and of vectorised global/shared accesses.
struct alignas(16) U32x4 {
  uint32_t x, y, z, w;
};

// Two floats moved as one 8-byte access (e.g. a pair of adjacent float32 columns in global memory).
struct alignas(8) F32x2 {
  float x, y;
};

#if defined(MMK_EMULATION)
// The emulation has no toolkit headers: storage-only 16-bit types with the same bit layout.
struct bf16 {
  uint16_t bits;
};
struct half {
  uint16_t bits;
};
using Stream = void*;
// Values chosen like cudaError_t's where one exists.
enum Error : int {
  kSuccess = 0,
  kErrorInvalidValue = 1,
  kErrorInvalidConfiguration = 9,
  kErrorLaunchFailure = 719,
  kErrorCheckFailed = 1000,  // an emulation checker reported a problem (see error_string)
};
const char* error_string(Error e);
#else
using bf16 = __nv_bfloat16;
using half = __half;
using Stream = cudaStream_t;
using Error = cudaError_t;
constexpr Error kSuccess = cudaSuccess;
constexpr Error kErrorInvalidValue = cudaErrorInvalidValue;
constexpr Error kErrorInvalidConfiguration = cudaErrorInvalidConfiguration;
inline const char* error_string(Error e) { return cudaGetErrorString(e); }
#endif

// Why the last launcher on this host thread failed, when it knows more than the error code says (a
// rejected TMA tensor map, say): report_error sets it, check() (torch_check.h) adds it to its message.
inline std::string& error_detail() {
  static thread_local std::string detail;
  return detail;
}
inline Error report_error(Error e, std::string why) {
  error_detail() = std::move(why);
  return e;
}

// ---- float <-> 16-bit conversions, round to nearest even (as cvt.rn on the device).
// Bit-level host versions: the emulation's rounding must equal the device's exactly.
MMK_HOST_DEVICE uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
MMK_HOST_DEVICE float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

MMK_HOST_DEVICE uint16_t float_to_bf16_bits(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // NaN: the canonical quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                      // ties to even; overflow carries into Inf
  return static_cast<uint16_t>(u >> 16);
}
MMK_HOST_DEVICE float bf16_bits_to_float(uint16_t b) { return bits_float(uint32_t(b) << 16); }

MMK_HOST_DEVICE uint16_t float_to_half_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7fff;                            // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to Inf
  if (a >= 0x38800000u) {                                        // normal half (>= 2^-14)
    a += 0xfffu + ((a >> 13) & 1u);                              // ties to even on the 13 dropped bits
    return static_cast<uint16_t>(sign | ((a - 0x38000000u) >> 13));
  }
  // Subnormal half: units of 2^-24. Scaling by 2^24 is exact; adding and removing 2^23 rounds to the
  // nearest even integer in IEEE float arithmetic (1024 encodes the smallest normal, as it should).
  const float q = bits_float(a) * 16777216.0f;
  const float r = (q + 8388608.0f) - 8388608.0f;
  return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
}
MMK_HOST_DEVICE float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
    return bits_float(float_bits(v) | sign);
  }
  if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}
MMK_BACKEND_END
}  // namespace mmkernels::dev
