// Primitive conformance kernels: one warp runs one primitive on register/shared-memory contents given
// per lane, and writes what each lane received. Python (tests/test_device_primitives.py) compares the
// result with the PTX ISA's documented semantics; on a GPU it also compares hardware with the
// emulation. Torch-free.
#pragma once

#include <cstdint>


namespace mmkernels::conformance {

enum class Primitive : int {
  MmaBF16 = 0,   // in0 A regs u32[32][4], in1 B regs u32[32][2], in2 C f32[32][4] -> out D f32[32][4]
  MmaF16 = 1,
  Ldmatrix = 2,  // in0 tile bytes (n), in1 row byte offsets i32[32]; mode = num (1|2|4), arg = trans -> out u32[32][4]
  Shfl = 3,      // in0 values u32[32], in1 args i32[32]; mode = 0 idx 1 up 2 down 3 xor, arg = width -> out u32[32]
  Vote = 4,      // in0 predicates i32[32]; mode = 0 ballot 1 any 2 all -> out u32[32]
  CpAsync = 5,   // in0 source bytes (n), in1 i32[32][2] (source byte offset, source bytes) -> out the 512-byte tile
  Convert = 6,   // in0 f32[n] -> out u32[n] = half bits << 16 | bf16 bits
  // sm_90a, one warpgroup (conformance_sm90.cu):
  Wgmma = 7,     // mode = a case of kWgmmaCases; in0 A (64 x 64, 16-bit), in1 B (N x 64), each as the case's
                 // majorness stores it (K-major: rows of K; MN-major: rows of M / N); TMA loads them into
                 // the case's swizzled layout, wgmma over K -> out D f32[64][N]
  Tma = 8,       // mode = a case of kTmaCases; in0 a 16-bit global tensor, in1 i32 {rows, cols, row stride
                 // (elements), row coord, col coord}; one TMA box load -> out the box's shared-memory bytes
};

// The wgmma cases: {N, swizzle bytes (0 = interleave), A MN-major, B MN-major, A from registers, f16}.
struct WgmmaCase {
  int n, swizzle;
  bool a_mn, b_mn, a_regs, f16;
};
inline constexpr WgmmaCase kWgmmaCases[] = {
    {64, 128, false, false, false, false}, {64, 64, false, false, false, false}, {64, 32, false, false, false, false},
    {64, 0, false, false, false, false},   {64, 128, true, true, false, false},  {64, 64, true, true, false, false},
    {64, 32, true, true, false, false},    {64, 128, false, true, false, false}, {64, 128, true, false, false, false},
    {64, 128, false, false, true, false},  {64, 64, false, true, true, false},   {256, 128, false, false, false, false},
    {64, 64, false, false, true, false}, {64, 128, false, true, true, false},
    {128, 64, false, false, false, true},
};
// The TMA cases: the box (rows x cols of 16-bit elements) and its swizzle.
struct TmaCase {
  int rows, cols, swizzle;
};
inline constexpr TmaCase kTmaCases[] = {{8, 64, 128}, {16, 32, 64}, {8, 16, 32}, {8, 8, 0}};

struct Args {
  Primitive primitive = Primitive::MmaBF16;
  const void* in0 = nullptr;
  const void* in1 = nullptr;
  const void* in2 = nullptr;
  void* out = nullptr;
  int64_t n = 0;
  int mode = 0, arg = 0;
  int32_t spec[5] = {};  // Primitive::Tma: in1's values, read on the host
};


}  // namespace mmkernels::conformance
