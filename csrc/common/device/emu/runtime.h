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

enum class MmaKind : int { BF16_M16N8K16, F16_M16N8K16, TF32_M16N8K8 };
void mma(MmaKind kind, float* d, const uint32_t* a, const uint32_t* b, const float* c, Site site);

// Runs `body` for every thread of every block; returns kSuccess, a launch-configuration error, or
// kErrorCheckFailed when a checker reported a problem (error_string() then holds the report).
Error launch(const char* name, const void* kernel, const std::function<void()>& body, Dim3 grid, Dim3 block,
             size_t dynamic_smem);
Error set_max_dynamic_smem(const void* kernel, int bytes);

// "kernel [T = ..., kD = ...]" from the launch expression and the launching function's pretty name.
std::string launch_name(const char* kernel, const char* pretty_function);

// Names of the kernels launched since the last call (at most 10000 kept): lets tests check which
// kernels a call ran.
std::vector<std::string> take_launch_log();

// The emulated device's limits (an A100's: the smaller of the targets, so what fits here fits both).
int max_dynamic_smem_optin();
int multiprocessor_count();

}  // namespace mmkernels::dev::emu
