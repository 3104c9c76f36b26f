// Internal state of the host SIMT emulation, shared by the runtime's translation units (runtime.cpp:
// threads, warps, the scheduler and the shared-memory checker; hopper.cpp: warpgroups, mbarriers,
// named barriers, TMA and wgmma). Kernels never include this: they see runtime.h through the primitives.
//
// Ordering model of the shared-memory checker (happens-before):
//  - __syncthreads ends an epoch: every access of an older epoch is ordered before everything after it.
//  - Inside an epoch, two accesses are ordered when they are by the same thread; or by two lanes of one
//    warp with a __syncwarp naming both in between (the warp's sync log); or through the synchronizations
//    of sm_90 (mbarrier arrive -> wait, named barriers, the completion of a TMA or a wgmma), which the
//    checker follows with vector clocks: every thread has its own clock, advanced after each release,
//    and a vector of the clocks it has acquired from the others. Asynchronous units are "agents" with
//    clocks of their own: the TMA of each mbarrier (its writes become visible to whoever waits on that
//    barrier) and the wgmma queue of each warpgroup (its operand reads are done at the matching wait).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/device/emu/fiber.h"
#include "common/device/emu/runtime.h"

namespace mmkernels::dev::emu::detail {

constexpr int kWarp = kWarpSize;
constexpr int kWarpgroupThreads = 128;
constexpr size_t kMaxReports = 12;
// Async agents per block: one wgmma queue per warpgroup (at most 8) and one TMA agent per mbarrier.
constexpr int kMaxWarpgroups = 8;
constexpr int kMaxMbarriers = 64;
constexpr int kMaxAgents = kMaxWarpgroups + kMaxMbarriers;
constexpr int kNamedBarriers = 16;

enum class State : uint8_t { Ready, AtBarrier, AtWarpOp, AtGroupOp, AtMbarrier, AtNamedBarrier, Exited };
enum class OpKind : uint8_t { SyncWarp, Shfl, Vote, Ldmatrix, Mma, Elect };

struct AsyncCopy {
  uint8_t* dst;
  const uint8_t* src;
  int cp_size, src_size;
};

// One access to a shared-memory byte: by a thread (who < nthreads) or an agent (who >= nthreads), at
// that thread's or agent's clock; `gen` is the thread's warp sync-log position (threads only).
struct Rec {
  uint32_t clk = 0;
  uint16_t who = 0;
  uint16_t gen = 0;
};

constexpr int kReaders = 2;  // readers of a byte tracked exactly per epoch; more: the conservative rule

// Per shared-memory byte (40 bytes: every access walks these, so they are kept small): the last write
// and the reads since the last barrier. A byte never written in this block has w_epoch below the
// block's first epoch.
struct Shadow {
  uint32_t w_epoch = 0, r_epoch = 0;
  Rec w;
  Rec r[kReaders];
  uint16_t w_fence = 0;    // the writer's fence.proxy.async count at the write (generic-proxy writes)
  uint16_t r_gen_min = 0;  // smallest sync-log position of the readers (the overflow rule)
  uint8_t nr = 0;          // readers recorded this epoch (kReaders + 1 = overflow)
  uint8_t flags = 0;
  uint8_t async_readers = 0;  // wgmma operands in flight over this byte
};
// kManyReaders: more than kReaders readers in a block that synchronizes by vector clocks (sm_90
// mbarriers, named barriers): Launch::many_readers holds every one of them, so a write is checked
// against each (a producer's statistics read by every consumer thread, released per warp).
constexpr uint8_t kReadMultiWarp = 1, kPending = 2, kAgentWrite = 4, kManyReaders = 8;

struct ThreadState {
  int tid = 0;
  Dim3 idx;
  int warp = 0, lane = 0;
  State state = State::Ready;
  Site wait_site;
  std::string wait_what;  // what a blocked thread waits for (deadlock reports)
  uint32_t wait_bar_off = 0;  // the mbarrier it waits on (State::AtMbarrier)
  Site call_site;             // the kernel line of the CuTe operation in progress
  Fiber fiber;
  std::vector<AsyncCopy> uncommitted;
  std::deque<std::vector<AsyncCopy>> groups;
  uint64_t result = 0;  // a shuffle's, vote's or elect's value for this lane
  // Vector clock (see the ordering model above). vc is sized lazily, per block, on first use.
  uint32_t clock = 1;
  uint32_t vc_block = 0;
  std::vector<uint32_t> vc;
  uint16_t proxy_fences = 0;   // fence.proxy.async executed
  uint32_t wgmma_fences = 0;   // wgmma.fence executed
  std::unordered_set<const void*> pending_regs;  // accumulator registers of in-flight wgmmas
  std::map<uint32_t, uint64_t> waited_phase;     // per mbarrier (shared offset): phases waited for + 1
};

// One warp-synchronous operation waiting for its lanes. Payloads point into the lanes' own stacks,
// which stay alive while they wait.
struct WarpOp {
  OpKind kind;
  int mode = 0;
  uint32_t mask = 0;
  Site site;
  uint32_t arrived = 0;
  int width = 0, num = 0;
  bool trans = false;
  uint64_t value[kWarp] = {};
  int arg[kWarp] = {};
  const void* addr[kWarp] = {};
  uint32_t* regs[kWarp] = {};
  float* d[kWarp] = {};
  const uint32_t* a[kWarp] = {};
  const uint32_t* b[kWarp] = {};
  const float* c[kWarp] = {};
};

struct WarpState {
  uint32_t present = 0, exited = 0;
  std::vector<std::unique_ptr<WarpOp>> pending;
  std::vector<uint32_t> sync_log;  // masks of the __syncwarps completed since the last block barrier
};

// An mbarrier (PTX 9.7.13.15): the state lives here, keyed by its shared-memory offset; the 8 bytes in
// shared memory are the barrier's identity (written by init, checked like any access).
struct MBarrier {
  int count = 0, pending = 0;
  int64_t tx = 0;           // transaction bytes expected and not yet completed
  uint64_t phase = 0;       // completed phases
  int agent = 0;            // index of this barrier's TMA agent (who = nthreads + agent)
  uint32_t agent_clk = 1;   // clock of the next TMA completing here
  std::vector<uint32_t> phase_vc, done_vc;  // releases into the current phase / of the last completed one
  int init_tid = 0;
  uint32_t init_epoch = 0, init_clk = 0;
  Site init_site;
};

struct NamedBarrier {
  int expected = 0, arrived = 0;
  Site site;
  std::vector<uint32_t> vc;  // the arrivals' releases
  std::vector<int> waiters;
};

// One wgmma.mma_async of a warpgroup, applied at its wait (PTX 9.7.15).
struct WgmmaOp {
  WgmmaShape shape;
  uint32_t clk = 0;                 // the warpgroup agent's clock of this operation
  Site site;
  std::vector<AccumReg*> d;         // [thread][register]: accumulators (n / 2 per thread)
  std::vector<uint32_t> a;          // [thread][4]: A fragments (register-sourced A), as issued
  uint64_t desc_a = 0, desc_b = 0;  // shared-memory descriptors
  std::vector<uint32_t> bytes;      // shared-memory offsets of the operands' 16-bit elements
};

// A warpgroup: its collective in progress (every one of its 128 threads must arrive at the same
// operation, as for a warp's), its wgmma queue and its fence count.
enum class GroupKind : int { None = -1, Fence, Issue, Commit, Wait, SetMaxNreg };
struct WarpgroupState {
  int arrived = 0;          // threads at the current collective
  GroupKind kind = GroupKind::None;
  int value = 0;
  Site site;
  WgmmaShape shape;
  uint64_t desc_a = 0, desc_b = 0;
  std::vector<AccumReg*> d;
  std::vector<uint32_t> a;
  std::string problem;      // the first fence-rule problem of the issue in progress
  uint32_t fences = 0;      // wgmma.fence executed by the warpgroup
  uint32_t clk = 1;         // agent clock of the next wgmma
  std::vector<WgmmaOp> uncommitted;
  std::deque<std::vector<WgmmaOp>> groups;
  int setmaxnreg = -1;      // register count of the last setmaxnreg
};

struct Launch {
  std::string name;
  Dim3 grid, block, block_idx;
  size_t smem_bytes = 0;
  uint32_t block_serial = 0, epoch = 0;
  uint32_t block_epoch = 0;  // the epoch the running block started in
  std::vector<std::unique_ptr<ThreadState>> threads;
  std::vector<WarpState> warps;
  std::vector<uint8_t> arena;  // shared memory (+ alignment slack)
  uint8_t* smem = nullptr;
  std::vector<Shadow> shadow;
  std::unordered_map<int64_t, std::vector<Rec>> many_readers;  // shared offset -> its readers (kManyReaders)
  // Per warpgroup, TMA writes (agent, clock) known ordered before every one of its threads: clocks only
  // grow within a block, so a yes stays a yes (async_read_issue's cache).
  std::vector<Rec> wg_ordered[kMaxWarpgroups];
  alignas(16) uint8_t sink[64] = {};
  int barrier_arrived = 0, exited = 0;
  Site barrier_site;
  const std::function<void()>* body = nullptr;
  ThreadState* current = nullptr;
  bool fatal = false;
  std::vector<std::string> reports;
  size_t report_count = 0;
  // sm_90
  std::map<uint32_t, MBarrier> mbarriers;
  NamedBarrier named[kNamedBarriers];
  std::vector<WarpgroupState> warpgroups;
  bool vc_used = false;   // a vector-clock synchronization happened in this block (then __syncwarp joins them)
  bool sm90_used = true;  // an sm_90 operation ran in this launch (its state is reset per block only then)
};

Launch& L();
ThreadState& cur();
int nthreads();

std::string dim_str(Dim3 d);
std::string site_str(Site s);
std::string thread_str(int tid);
std::string who_str(int who);  // a thread or an agent
std::string mask_str(uint32_t m);
std::string pc_str(const void* pc);
bool same_site(Site a, Site b);

void report(const std::string& what);
[[noreturn]] void fatal(const std::string& what);
void yield(State s, Site site, std::string what = {});

// ---- the shared-memory checker
enum class Access { Read, Write, AsyncIssue, AsyncComplete };
// Checks and records one access of `n` bytes at `p` by thread `tid`; false when out of bounds.
bool check(int tid, const void* p, size_t n, Access kind, const void* pc = nullptr);
bool check(Launch& l, int tid, const void* p, size_t n, Access kind, const void* pc = nullptr);
// The offset of `p` in the block's shared memory, or -1 (reported) when [p, p + n) is outside it.
int64_t smem_offset(const void* p, size_t n, const char* what, Site site);
// An agent's write of [off, off + n), issued by thread `issuer` (hazards are checked at the issue:
// against what the issuer has synchronized with).
void agent_write(int issuer, int agent, uint32_t clk, int64_t off, size_t n, Site site);

// wgmma operand bytes: checked and put in flight at the issue by the warpgroup whose first thread is
// `first`; read by its agent (rec) at the completion.
void async_read_issue(int64_t off, size_t n, int first, Site site);
void async_read_complete(int64_t off, size_t n, const Rec& rec);

// ---- vector clocks
std::vector<uint32_t>& vc_of(ThreadState& t);      // sized for this block
bool ordered_vc(const Rec& prev, int tid);          // prev happens-before thread tid's current point
bool ordered_vc(const Launch& l, const Rec& prev, int tid);
void release(ThreadState& t, std::vector<uint32_t>& into);  // into |= t's knowledge; t's clock advances
void acquire(ThreadState& t, const std::vector<uint32_t>& from);
void join(std::vector<uint32_t>& into, const std::vector<uint32_t>& from);
int agent_index(int agent);                          // `who` of an agent

// ---- sm_90 parts (hopper.cpp)
void reset_hopper_state(Launch& l);
void check_thread_exit(ThreadState& t);             // in-flight wgmma at exit
std::string describe_wait(const ThreadState& t);

}  // namespace mmkernels::dev::emu::detail
