// Minimal cooperative fibers for the SIMT emulation: one per emulated CUDA thread, all on one host
// thread. On x86-64 a 20-instruction context switch (callee-saved registers, MXCSR and the x87
// control word, as the System V ABI requires) costs ~10 ns; elsewhere ucontext (~150 ns: it also
// restores the signal mask with a system call). Annotated for AddressSanitizer when it is on.
#pragma once

#include <cstddef>

namespace mmkernels::dev::emu {

class Fiber {
 public:
  using Entry = void (*)(void*);

  Fiber() = default;
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
  ~Fiber();

  // Prepares the fiber to run entry(arg) from the start of its stack on the next switch_to().
  void reset(Entry entry, void* arg);
  // Switches from the scheduler (the host thread's own stack) into this fiber / back out of it.
  void switch_to();
  void switch_out();
  // The last switch_out() of a fiber that is done for good (lets ASan drop its fake stack).
  void finish();
  // Called first thing on the fiber's stack.
  void started();

 private:
  void* stack_ = nullptr;  // mmap'd, with a PROT_NONE guard page below
  size_t stack_size_ = 0;
  void* sp_ = nullptr;         // the fiber's saved stack pointer
  void* sched_sp_ = nullptr;   // the scheduler's saved stack pointer
  void* ucontext_ = nullptr;   // ucontext fallback state
  void* sched_ucontext_ = nullptr;
  void* asan_fake_stack_ = nullptr;
  const void* sched_stack_bottom_ = nullptr;
  size_t sched_stack_size_ = 0;
};

}  // namespace mmkernels::dev::emu
