#include "common/device/emu/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define MMK_EMU_ASAN 1
#else
#define MMK_EMU_ASAN 0
#endif

#if defined(__x86_64__)
// mmk_emu_switch(&save_sp, new_sp): pushes the callee-saved state on the current stack, saves the stack
// pointer, loads `new_sp` and pops the state saved there. A new fiber's stack is laid out so that the
// pops and the `ret` land in mmk_emu_trampoline with the entry function in r12 and its argument in rbx.
extern "C" void mmk_emu_switch(void** save_sp, void* new_sp);
extern "C" void mmk_emu_trampoline();
asm(R"(
  .text
  .globl mmk_emu_switch
  .hidden mmk_emu_switch
  .type mmk_emu_switch, @function
mmk_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mmk_emu_switch, .-mmk_emu_switch

  .globl mmk_emu_trampoline
  .hidden mmk_emu_trampoline
  .type mmk_emu_trampoline, @function
mmk_emu_trampoline:
  movq %rbx, %rdi
  callq *%r12
  ud2
  .size mmk_emu_trampoline, .-mmk_emu_trampoline
)");
#endif

namespace mmkernels::dev::emu {
namespace {

// Kernels keep their register arrays on this stack; ASan's redzones need more room.
constexpr size_t kStackSize = MMK_EMU_ASAN ? (1u << 20) : (256u << 10);

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

}  // namespace

Fiber::~Fiber() {
  if (stack_) munmap(static_cast<char*>(stack_) - page_size(), stack_size_ + page_size());
#if !defined(__x86_64__)
  delete static_cast<ucontext_t*>(ucontext_);
  delete static_cast<ucontext_t*>(sched_ucontext_);
#endif
}

void Fiber::reset(Entry entry, void* arg) {
  if (!stack_) {
    const size_t guard = page_size();
    void* m = mmap(nullptr, kStackSize + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    mprotect(m, guard, PROT_NONE);  // an overflow faults instead of corrupting the neighbour
    stack_ = static_cast<char*>(m) + guard;
    stack_size_ = kStackSize;
  }
#if MMK_EMU_ASAN
  // A fiber abandoned mid-kernel (a fatal check) leaves poisoned stack redzones behind.
  __asan_unpoison_memory_region(stack_, stack_size_);
#endif
#if defined(__x86_64__)
  auto top = reinterpret_cast<uintptr_t>(stack_) + stack_size_;
  top &= ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top);
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  *--sp = reinterpret_cast<uint64_t>(&mmk_emu_trampoline);  // ret target; rsp is 16-aligned after it
  *--sp = 0;                                                // rbp
  *--sp = reinterpret_cast<uint64_t>(arg);                  // rbx
  *--sp = reinterpret_cast<uint64_t>(entry);                // r12
  *--sp = 0;                                                // r13
  *--sp = 0;                                                // r14
  *--sp = 0;                                                // r15
  *--sp = uint64_t(mxcsr) | (uint64_t(fpucw) << 32);
  sp_ = sp;
#else
  if (!ucontext_) {
    ucontext_ = new ucontext_t;
    sched_ucontext_ = new ucontext_t;
  }
  auto* uc = static_cast<ucontext_t*>(ucontext_);
  getcontext(uc);
  uc->uc_stack.ss_sp = stack_;
  uc->uc_stack.ss_size = stack_size_;
  uc->uc_link = nullptr;
  makecontext(uc, reinterpret_cast<void (*)()>(entry), 1, arg);  // one pointer argument (LP64: fits an int slot pair)
#endif
}

void Fiber::switch_to() {
#if MMK_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, stack_, stack_size_);
#endif
#if defined(__x86_64__)
  mmk_emu_switch(&sched_sp_, sp_);
#else
  swapcontext(static_cast<ucontext_t*>(sched_ucontext_), static_cast<ucontext_t*>(ucontext_));
#endif
#if MMK_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

void Fiber::started() {
#if MMK_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &sched_stack_bottom_, &sched_stack_size_);
#endif
}

void Fiber::switch_out() {
#if MMK_EMU_ASAN
  __sanitizer_start_switch_fiber(&asan_fake_stack_, sched_stack_bottom_, sched_stack_size_);
#endif
#if defined(__x86_64__)
  mmk_emu_switch(&sp_, sched_sp_);
#else
  swapcontext(static_cast<ucontext_t*>(ucontext_), static_cast<ucontext_t*>(sched_ucontext_));
#endif
#if MMK_EMU_ASAN
  __sanitizer_finish_switch_fiber(asan_fake_stack_, &sched_stack_bottom_, &sched_stack_size_);
#endif
}

void Fiber::finish() {
#if MMK_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, sched_stack_bottom_, sched_stack_size_);
#endif
#if defined(__x86_64__)
  mmk_emu_switch(&sp_, sched_sp_);
#else
  swapcontext(static_cast<ucontext_t*>(ucontext_), static_cast<ucontext_t*>(sched_ucontext_));
#endif
  std::abort();  // a finished fiber is never resumed
}

}  // namespace mmkernels::dev::emu
