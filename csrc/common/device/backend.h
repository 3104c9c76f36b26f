// Which backend a translation unit compiles the CUDA kernel source for, and the execution-space
// qualifiers that differ between them.
//
// The same kernel headers are compiled twice: by nvcc for the GPU, and (with MMK_EMULATION defined) by
// the host C++ compiler for the SIMT emulation in common/device/emu/. Everything that is compiled for
// both lives in an inline namespace named after the backend, so one extension may hold both builds
// (the GPU conformance test compares them) without two definitions of one symbol.
#pragma once

#if defined(MMK_EMULATION)
#define MMK_BACKEND_BEGIN inline namespace emulated {
#define MMK_GLOBAL
#define MMK_DEVICE inline
#define MMK_HOST_DEVICE inline
#define MMK_LAUNCH_BOUNDS(...)
#define MMK_GRID_CONSTANT
#elif defined(__CUDACC__)
#define MMK_BACKEND_BEGIN inline namespace gpu {
#define MMK_GLOBAL __global__
#define MMK_DEVICE __device__ __forceinline__
#define MMK_HOST_DEVICE __host__ __device__ __forceinline__
#define MMK_LAUNCH_BOUNDS(...) __launch_bounds__(__VA_ARGS__)
// A kernel parameter that stays in parameter memory, so its address may be taken (a TMA tensor map).
#define MMK_GRID_CONSTANT __grid_constant__
#else  // host compiler in a CUDA build (torch glue): sees declarations and host-side helpers only
#define MMK_BACKEND_BEGIN inline namespace gpu {
#define MMK_HOST_DEVICE inline
#endif
#define MMK_BACKEND_END }

// Unroll the next loop on the device (register arrays indexed by its counter stay in registers).
// MMK_UNROLL_BY(n) unrolls by n only: for loops whose full unrolling lets the compiler hoist every
// iteration's loads and run out of registers.
#if defined(__CUDACC__) && !defined(MMK_EMULATION)
#define MMK_PRAGMA(x) _Pragma(#x)
#define MMK_UNROLL _Pragma("unroll")
#define MMK_UNROLL_BY(n) MMK_PRAGMA(unroll n)
#else
#define MMK_UNROLL
#define MMK_UNROLL_BY(n)
#endif
