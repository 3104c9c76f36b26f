// Host SIMT emulation of a CUDA launch: the interface that primitives_emu.h forwards to.
//
// Every CUDA thread of a block is a fiber on one host thread, run cooperatively in a fixed order
// (deterministic). A fiber runs until it reaches a barrier or a warp-synchronous operation, where it
// waits until its partners arrive; the last one to arrive performs the operation for all of them.
// Shared memory is one arena per block with a shadow byte-state that the checkers use (see runtime.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <source_location>
#include <string>
#include <vector>

#include "common/device/types.h"

namespace mmkernels::dev::emu {

// Where in the kernel source a primitive was called (for reports and for matching collectives): the
// primitives take it as a defaulted last argument, so it names the kernel's own line.
using Site = std::source_location;
#define MMK_EMU_SITE ::mmkernels::dev::emu::Site::current()

Dim3 thread_idx();
Dim3 block_idx();
Dim3 block_dim();
Dim3 grid_dim();

void sync_threads(Site site);
void sync_warp(uint32_t mask, Site site);
void wait_flag(const int* flag, int value, Site site);

enum class ShflMode : int { Idx, Up, Down, Xor };
uint64_t shfl(ShflMode mode, uint32_t mask, uint64_t value, int arg, int width, Site site);
enum class VoteMode : int { Ballot, Any, All };
uint32_t vote(VoteMode mode, uint32_t mask, bool pred, Site site);

// Shared memory of the running block. smem_access() runs the checkers on an access of `bytes` bytes
// at `p` by the calling thread and returns where to perform it (a scratch sink when out of bounds).
void* smem_base();
void* smem_access(const void* p, size_t bytes, bool write);

void cp_async(void* dst, const void* src, int cp_size, int src_size, Site site);
void cp_async_commit(Site site);
void cp_async_wait(int n, Site site);

void ldmatrix(uint32_t* regs, int num, bool trans, const void* row_addr, Site site);

enum class MmaKind : int { BF16_M16N8K16, F16_M16N8K16 };
void mma(MmaKind kind, float* d, const uint32_t* a, const uint32_t* b, const float* c, Site site);

// ---- sm_90a (Hopper). Each follows the PTX ISA 9.0 section named; every use is checked (see
// csrc/README.md, "The emulation runtime").

// The architecture the emulation runs as: 80 (sm_80, A100 limits) or 90 (sm_90a, H100 limits).
// Hopper instructions under 80 are reported.
int arch();
void set_arch(int arch);

// bar.sync / bar.arrive with a thread count (9.7.13.4): named barriers 1..15 (0 is __syncthreads).
void named_barrier(int id, int nthreads, bool wait, Site site);
// elect.sync (9.7.13.14): true in exactly one lane of `mask`, the lowest.
bool elect_one(uint32_t mask, Site site);
// setmaxnreg.{inc,dec}.sync.aligned (9.7.17.1): warpgroup-collective; no effect on the host beyond checks.
void setmaxnreg(int regs, bool inc, Site site);
// fence.proxy.async.shared::cta (9.7.13.6): generic-proxy writes of this thread become visible to the
// async proxy (TMA, wgmma) after it.
void fence_proxy_async(Site site);

// mbarrier (9.7.13.15): `bar` is the barrier's 8 bytes in shared memory.
void mbarrier_init(void* bar, int count, Site site);
// arrive; with tx_bytes > 0 it is arrive.expect_tx (the expected transaction bytes grow first).
void mbarrier_arrive(void* bar, uint32_t tx_bytes, Site site);
void mbarrier_expect_tx(void* bar, uint32_t tx_bytes, Site site);
// Blocks until the phase of this parity has completed (try_wait.parity in a loop).
void mbarrier_wait(void* bar, int parity, Site site);
// test_wait.parity: whether it has completed (the calling fiber yields when not, so loops progress).
bool mbarrier_test(void* bar, int parity, Site site);

// TMA (cp.async.bulk.tensor, 9.7.9.25.5.1) with the emulation's own tensor-map encoding in the
// 128-byte CUtensorMap (cuTensorMapEncodeTiled's parameters and rules, CUDA Driver API 13.0).
struct TmaEncode {
  int elem_bytes = 2, rank = 2;
  const void* global = nullptr;
  uint64_t dims[5] = {1, 1, 1, 1, 1};
  uint64_t strides[5] = {0, 0, 0, 0, 0};  // bytes, for dims 1..rank-1 (dim 0 is contiguous)
  uint32_t box[5] = {1, 1, 1, 1, 1};
  uint32_t elem_strides[5] = {1, 1, 1, 1, 1};
  int swizzle_bytes = 0;                  // 0, 32, 64 or 128
  bool oob_nan = false;                   // out-of-bounds fill: NaN (else zeros)
};
// Fills `desc` (128 bytes); an empty string, or why the parameters are invalid.
std::string tma_encode(void* desc, const TmaEncode& e);
// One thread loads the box at `coords` into shared memory at `dst`, completing its bytes on `bar`.
void tma_load(const void* desc, void* bar, void* dst, const int32_t* coords, int rank, Site site);

// wgmma.mma_async (9.7.15): warpgroup-collective, asynchronous; applied at the matching wait.
enum class WgmmaType : uint8_t { BF16, F16 };
struct WgmmaShape {
  int n = 0;                  // M = 64, K = 16 (16-bit operands)
  WgmmaType type = WgmmaType::BF16;
  bool a_regs = false;        // A from registers (else a shared-memory descriptor)
  bool a_mn_major = false, b_mn_major = false;
  bool scale_d = true;        // D = A B + D (else D = A B)
};
// An accumulator register of the emulated wgmma: its value and when a thread last touched it (the
// thread's wgmma.fence count + 1), for the fence rule. Kernels see it as dev::EmuAccum.
struct AccumReg {
  float v = 0.f;
  uint32_t stamp = 0;
};
void wgmma_fence(Site site);
// The calling thread's part: its A fragment (4 registers, or null with a descriptor), its n / 2
// accumulator registers.
void wgmma_issue(const WgmmaShape& shape, uint64_t desc_a, const uint32_t* a_regs, uint64_t desc_b,
                 AccumReg* const* d, Site site);
void wgmma_commit(Site site);
void wgmma_wait(int pending, Site site);
// A thread touches an accumulator register (reads or writes it): checked against in-flight wgmmas.
// `pc`: where in the kernel's code (reports give it for addr2line).
void accum_access(AccumReg* reg, const void* pc);
// The kernel line a CuTe operation was called from (dev::gemm / dev::copy set it; the atoms CuTe calls
// report it): per CUDA thread, as fibers interleave inside one operation.
void set_call_site(Site site);
Site call_site();

// The shared-memory offset of a pointer into the running block's shared memory (cvta.to.shared).
uint32_t smem_address(const void* p);

// Runs `body` for every thread of every block; returns kSuccess, a launch-configuration error, or
// kErrorCheckFailed when a checker reported a problem (error_string() then holds the report).
Error launch(const char* name, const void* kernel, const std::function<void()>& body, Dim3 grid, Dim3 block,
             size_t dynamic_smem);
Error set_max_dynamic_smem(const void* kernel, int bytes);

// "kernel [T = ..., kD = ...]" from the launch expression and the launching function's pretty name.
std::string launch_name(const char* kernel, const char* pretty_function);

// The kernels launched since the last call (at most 10000 kept), with their grids: lets tests check
// which kernels a call ran, and how it split the work.
struct LaunchRecord {
  std::string name;
  Dim3 grid;
};
std::vector<LaunchRecord> take_launch_log();

// The emulated device's limits: an A100's under arch 80, an H100 SXM's under 90.
int max_dynamic_smem_optin();
int multiprocessor_count();

}  // namespace mmkernels::dev::emu
