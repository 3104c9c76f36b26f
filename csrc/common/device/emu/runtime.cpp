// Host SIMT emulation runtime (see runtime.h, and csrc/README.md for what it can and cannot see): the
// threads, warps, the block scheduler and the shared-memory checker. The sm_90 parts (warpgroups,
// mbarriers, named barriers, TMA, wgmma) are in hopper.cpp; the state both share is in state.h.
//
// Semantics follow the PTX ISA 9.0 / CUDA Programming Guide text collected in
// docs/research/cuda-host-emulation.md: shuffle source lanes (section 1.5), ldmatrix row-address
// lanes and per-lane fragments (PTX 9.7.14.5.15), mma m16n8k16 fragments (9.7.14.5.8), cp.async
// zero-fill and group completion (9.7.9.25.3).
//
// Checkers, each reported with kernel, block, thread, shared-memory offset and call site:
//  - shared-memory out-of-bounds accesses (the access is redirected to a scratch sink);
//  - shared-memory data races: two accesses of one byte, at least one writing, not ordered by the
//    model of state.h (barriers, __syncwarp, mbarriers, named barriers, TMA and wgmma completion);
//    cp.async writes count from their issue and become visible to the issuing thread at its wait;
//  - reads of shared memory never written in this block;
//  - barrier divergence: threads at different barriers, or at a barrier while others exited;
//  - warp operations whose mask names absent/exited lanes, or whose lanes disagree on the operation;
//  - cp.async misuse: misaligned addresses, reads before the wait, copies never waited for.
// Global-memory bounds are left to AddressSanitizer (the emulation objects are built with it in CI).
#include "common/device/emu/runtime.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/device/emu/fiber.h"
#include "common/device/emu/state.h"

namespace mmkernels::dev {
MMK_BACKEND_BEGIN
const char* error_string(Error e);
MMK_BACKEND_END
}  // namespace mmkernels::dev

namespace mmkernels::dev::emu {
namespace detail {

namespace {
// Device limits per emulated architecture: the A100's (sm_80) and the H100 SXM's (sm_90a).
constexpr int kDefaultDynamicSmem = 48 * 1024;
std::atomic<int> g_arch{90};  // process-wide, like the emulated_cuda() switch
int max_optin_for(int arch) { return arch >= 90 ? 227 * 1024 : 163 * 1024; }
int multiprocessors_for(int arch) { return arch >= 90 ? 132 : 108; }
}  // namespace

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::SyncWarp: return "__syncwarp";
    case OpKind::Shfl: return "shfl";
    case OpKind::Vote: return "vote";
    case OpKind::Ldmatrix: return "ldmatrix";
    case OpKind::Mma: return "mma";
    case OpKind::Elect: return "elect.sync";
  }
  return "?";
}

thread_local Launch* g_launch = nullptr;
thread_local std::string g_last_error;

std::mutex g_log_mutex;
std::vector<LaunchRecord> g_launch_log;

std::mutex g_limits_mutex;
std::map<const void*, int> g_smem_limits;

// Fibers are kept per host thread and reused across launches.
thread_local std::vector<std::unique_ptr<ThreadState>> g_pool;

Launch& L() { return *g_launch; }
ThreadState& cur() { return *L().current; }
int nthreads() { return static_cast<int>(L().threads.size()); }

std::string dim_str(Dim3 d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
std::string site_str(Site s) {
  if (!s.file_name() || !*s.file_name()) return "";
  const char* f = std::strrchr(s.file_name(), '/');
  return std::string(" at ") + (f ? f + 1 : s.file_name()) + ":" + std::to_string(s.line());
}
std::string thread_str(int tid) { return "thread " + dim_str(L().threads[tid]->idx); }
std::string who_str(int who) {
  const int n = nthreads();
  if (who < n) return thread_str(who);
  const int agent = who - n;
  if (agent < kMaxWarpgroups) return "the wgmma of warpgroup " + std::to_string(agent);
  for (const auto& [off, b] : L().mbarriers)
    if (b.agent == agent) return "a TMA completing on the mbarrier at shared offset " + std::to_string(off);
  return "an async agent";
}
bool same_site(Site a, Site b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}
// Where in the kernel's machine code an element access was made (for `addr2line -e <module>`).
std::string pc_str(const void* pc) {
  Dl_info info;
  if (pc && dladdr(pc, &info) && info.dli_fname) {
    const char* f = std::strrchr(info.dli_fname, '/');
    char buf[64];
    std::snprintf(buf, sizeof buf, "+0x%zx", static_cast<size_t>(static_cast<const char*>(pc) - static_cast<const char*>(info.dli_fbase)));
    return std::string(" (code ") + (f ? f + 1 : info.dli_fname) + buf + ")";
  }
  return "";
}
std::string mask_str(uint32_t m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", m);
  return buf;
}

void report(const std::string& what) {
  Launch& l = L();
  if (l.report_count++ < kMaxReports)
    l.reports.push_back(what + " [kernel " + l.name + ", block " + dim_str(l.block_idx) + "]");
}

// A problem after which the block cannot go on (a deadlock, a mismatched collective): report it and
// leave the fiber for good; the scheduler abandons the launch.
[[noreturn]] void fatal(const std::string& what) {
  report(what);
  L().fatal = true;
  ThreadState& t = cur();
  t.fiber.finish();
  std::abort();
}

void yield(State s, Site site, std::string what) {
  ThreadState& t = cur();
  t.state = s;
  t.wait_site = site;
  t.wait_what = std::move(what);
  t.fiber.switch_out();
}

// ---- vector clocks ---------------------------------------------------------------------------------

int agent_index(int agent) { return nthreads() + agent; }

std::vector<uint32_t>& vc_of(ThreadState& t) {
  Launch& l = L();
  if (t.vc_block != l.block_serial) {
    t.vc.assign(l.threads.size() + kMaxAgents, 0);
    t.vc_block = l.block_serial;
    l.vc_used = true;
  }
  return t.vc;
}
void join(std::vector<uint32_t>& into, const std::vector<uint32_t>& from) {
  if (into.size() < from.size()) into.resize(from.size(), 0);
  for (size_t i = 0; i < from.size(); ++i) into[i] = std::max(into[i], from[i]);
}
void release(ThreadState& t, std::vector<uint32_t>& into) {
  join(into, vc_of(t));
  into[t.tid] = std::max(into[t.tid], t.clock);
  t.clock++;
}
void acquire(ThreadState& t, const std::vector<uint32_t>& from) { join(vc_of(t), from); }
bool ordered_vc(const Rec& prev, int tid) { return ordered_vc(L(), prev, tid); }
bool ordered_vc(const Launch& l, const Rec& prev, int tid) {
  const ThreadState& t = *l.threads[tid];
  return t.vc_block == l.block_serial && prev.who < t.vc.size() && t.vc[prev.who] >= prev.clk;
}

namespace {

// ---- shared-memory checks -------------------------------------------------------------------------

bool full_warp_sync_since(const Launch& l, int warp, uint16_t gen) {
  const WarpState& w = l.warps[warp];
  for (size_t k = gen; k < w.sync_log.size(); ++k)
    if ((w.sync_log[k] & w.present) == w.present) return true;
  return false;
}

// Whether an access `prev` of this epoch happens before thread `tid`'s current point.
// Threads are numbered linearly, so a thread's warp is tid / 32 and its lane tid % 32.
bool ordered(const Launch& l, const Rec& prev, int tid) {
  if (prev.who == tid) return true;
  if (prev.who < l.threads.size()) {
    if (prev.who / kWarp == tid / kWarp) {
      const uint32_t need = (1u << (prev.who % kWarp)) | (1u << (tid % kWarp));
      const auto& log = l.warps[tid / kWarp].sync_log;
      for (size_t k = prev.gen; k < log.size(); ++k)
        if ((log[k] & need) == need) return true;
    }
  }
  return ordered_vc(l, prev, tid);
}

int warp_of(const Launch& l, int who) { return who < static_cast<int>(l.threads.size()) ? who / kWarp : -1 - who; }

void record_read(Launch& l, Shadow& s, const Rec& me) {
  if (s.r_epoch != l.epoch) {
    s.r_epoch = l.epoch;
    s.r[0] = me;
    s.nr = 1;
    s.r_gen_min = me.gen;
    s.flags &= ~(kReadMultiWarp | kManyReaders);
    return;
  }
  if (s.flags & kManyReaders) {  // every reader kept: the later read of each is the one a write must follow
    std::vector<Rec>& all = l.many_readers[&s - l.shadow.data()];
    for (Rec& r : all)
      if (r.who == me.who) {
        r = me;
        return;
      }
    all.push_back(me);
    return;
  }
  if (s.r[0].who == me.who) {  // the common case: the same thread again
    s.r[0] = me;
    return;
  }
  const int known = std::min<int>(s.nr, kReaders);
  for (int i = 1; i < known; ++i)
    if (s.r[i].who == me.who) {
      s.r[i] = me;  // the later read is the one a write must follow
      return;
    }
  if (warp_of(l, s.r[0].who) != warp_of(l, me.who)) s.flags |= kReadMultiWarp;
  s.r_gen_min = std::min(s.r_gen_min, me.gen);
  if (s.nr < kReaders) {
    s.r[s.nr++] = me;
  } else {
    // At the first overflow only: a byte that overflowed before vector clocks came into use has
    // already lost readers, and keeps the conservative rule for this epoch.
    const bool first_overflow = s.nr == kReaders;
    s.nr = kReaders + 1;
    if (first_overflow && l.vc_used) {  // vector clocks can order each reader: keep them all
      std::vector<Rec>& all = l.many_readers[&s - l.shadow.data()];
      all.assign(s.r, s.r + kReaders);
      all.push_back(me);
      s.flags |= kManyReaders;
    }
  }
}

// Whether every read of this epoch happens before thread `tid`'s write; else the first that does not
// (-1: too many readers to know them all, and the conservative rule fails).
int unordered_reader(const Launch& l, const Shadow& s, int tid) {
  if (s.nr <= kReaders) {
    for (int i = 0; i < s.nr; ++i)
      if (!ordered(l, s.r[i], tid)) return s.r[i].who;
    return tid;  // all ordered
  }
  if (s.flags & kManyReaders) {
    for (const Rec& r : l.many_readers.at(&s - l.shadow.data()))
      if (!ordered(l, r, tid)) return r.who;
    return tid;
  }
  // More readers than tracked: all in the writer's warp with a full __syncwarp since the first read.
  const ThreadState& t = *l.threads[tid];
  if (!(s.flags & kReadMultiWarp) && warp_of(l, s.r[0].who) == t.warp && full_warp_sync_since(l, t.warp, s.r_gen_min))
    return tid;
  return -1;
}

enum class Hazard { None, ReadPending, Uninit, RAW, WAWPending, WAW, WAR, AsyncRead };

}  // namespace

int64_t smem_offset(const void* p, size_t n, const char* what, Site site) {
  Launch& l = L();
  const auto off = static_cast<int64_t>(static_cast<const uint8_t*>(p) - l.smem);
  if (off < 0 || off + static_cast<int64_t>(n) > static_cast<int64_t>(l.smem_bytes)) {
    report(std::string("shared-memory out of bounds: ") + thread_str(cur().tid) + " " + what + " " + std::to_string(n) +
           " bytes at offset " + std::to_string(off) + " of a " + std::to_string(l.smem_bytes) + "-byte block" +
           site_str(site));
    return -1;
  }
  return off;
}

namespace {

// The checks of one write (by thread `tid`, or issued by it for an agent) over [off, off + n).
struct WriteCheck {
  Hazard hazard = Hazard::None;
  int64_t at = 0;
  int other = 0;
  bool many = false;
  void flag(Hazard h, int64_t a, int who, bool m = false) {
    if (hazard != Hazard::None) return;
    hazard = h;
    at = a;
    other = who;
    many = m;
  }
  void byte(const Launch& l, const Shadow& s, int64_t a, int tid) {
    if (s.async_readers) flag(Hazard::AsyncRead, a, tid);
    else if ((s.flags & kPending) && s.w.who != tid) flag(Hazard::WAWPending, a, s.w.who);
    else if (s.w_epoch == l.epoch && !ordered(l, s.w, tid)) flag(Hazard::WAW, a, s.w.who);
    if (s.r_epoch == l.epoch) {
      const int r = unordered_reader(l, s, tid);
      if (r != tid) flag(Hazard::WAR, a, r < 0 ? s.r[0].who : r, r < 0);
    }
  }
};

void report_hazard(const WriteCheck& c, const std::string& me, const std::string& via, const void* pc) {
  const std::string them = who_str(c.other) + (c.many ? " and others" : "");
  const std::string at = me + " shared offset " + std::to_string(c.at) + via;
  switch (c.hazard) {
    case Hazard::AsyncRead:
      report("shared-memory race (write while a wgmma reads it): " + at + ", an operand of a wgmma not yet waited for" +
             pc_str(pc));
      break;
    case Hazard::WAWPending:
      report("shared-memory race (write after write): " + at + ", the destination of a pending cp.async by " + them +
             pc_str(pc));
      break;
    case Hazard::WAW:
      report("shared-memory race (write after write): " + at + " written by " + them + " with no barrier in between" +
             pc_str(pc));
      break;
    case Hazard::WAR:
      report("shared-memory race (write after read): " + at + " read by " + them + " with no barrier in between" +
             pc_str(pc));
      break;
    default: break;
  }
}

}  // namespace

// Checks and records one access of `n` bytes at `p` by thread `tid`; at most one report per access
// (strings are built only then: this runs for every shared-memory access). Returns false when the
// access is out of bounds.
bool check(int tid, const void* p, size_t n, Access kind, const void* pc) { return check(L(), tid, p, n, kind, pc); }

bool check(Launch& l, int tid, const void* p, size_t n, Access kind, const void* pc) {
  const auto off = static_cast<int64_t>(static_cast<const uint8_t*>(p) - l.smem);
  const char* verb = kind == Access::Read ? "reads" : "writes";
  if (off < 0 || off + static_cast<int64_t>(n) > static_cast<int64_t>(l.smem_bytes)) {
    report("shared-memory out of bounds: " + thread_str(tid) + " " + verb + " " + std::to_string(n) +
           " bytes at offset " + std::to_string(off) + " of a " + std::to_string(l.smem_bytes) + "-byte block" +
           pc_str(pc));
    return false;
  }
  const ThreadState& t = *l.threads[tid];
  const Rec me{t.clock, static_cast<uint16_t>(tid), static_cast<uint16_t>(l.warps[t.warp].sync_log.size())};
  if (kind == Access::Read) {
    Hazard hazard = Hazard::None;
    int64_t at = 0;
    int other = 0;
    for (size_t i = 0; i < n; ++i) {
      Shadow& s = l.shadow[off + i];
      if (hazard == Hazard::None) {
        if (s.flags & kPending) hazard = Hazard::ReadPending, at = off + i, other = s.w.who;
        else if (s.w_epoch < l.block_epoch) hazard = Hazard::Uninit, at = off + i, other = tid;
        else if (s.w_epoch == l.epoch && !ordered(l, s.w, tid)) hazard = Hazard::RAW, at = off + i, other = s.w.who;
      }
      record_read(l, s, me);
    }
    if (hazard == Hazard::None) return true;
    const std::string mine = thread_str(tid) + " reads shared offset " + std::to_string(at);
    const std::string them = who_str(other);
    if (hazard == Hazard::ReadPending)
      report("shared-memory race (read before cp.async completed): " + mine + ", the destination of a cp.async by " +
             them + " not yet waited for" + pc_str(pc));
    else if (hazard == Hazard::Uninit)
      report("uninitialized shared-memory read: " + mine + ", never written in this block" + pc_str(pc));
    else if (other >= static_cast<int>(l.threads.size()))
      report("shared-memory race (read before the TMA that fills it completed): " + mine + " written by " + them +
             ", whose mbarrier phase this thread has not waited for" + pc_str(pc));
    else
      report("shared-memory race (read after write): " + mine + " written by " + them + " with no barrier in between" +
             pc_str(pc));
    return true;
  }
  if (kind == Access::AsyncComplete) {  // the issue already checked the hazards
    for (size_t i = 0; i < n; ++i) {
      Shadow& s = l.shadow[off + i];
      s.flags &= ~(kPending | kAgentWrite);
      s.w_epoch = l.epoch;
      s.w = me;
      s.w_fence = t.proxy_fences;
    }
    return true;
  }
  WriteCheck c;
  for (size_t i = 0; i < n; ++i) {
    Shadow& s = l.shadow[off + i];
    c.byte(l, s, off + static_cast<int64_t>(i), tid);
    s.w_epoch = l.epoch;
    s.w = me;
    s.w_fence = t.proxy_fences;
    s.flags &= ~kAgentWrite;
    if (kind == Access::AsyncIssue) s.flags |= kPending;
  }
  if (c.hazard != Hazard::None) report_hazard(c, thread_str(tid) + " " + verb, "", pc);
  return true;
}

void agent_write(int issuer, int agent, uint32_t clk, int64_t off, size_t n, Site site) {
  Launch& l = L();
  WriteCheck c;
  const Rec rec{clk, static_cast<uint16_t>(agent_index(agent)), 0};
  for (size_t i = 0; i < n; ++i) {
    Shadow& s = l.shadow[off + i];
    c.byte(l, s, off + static_cast<int64_t>(i), issuer);
    s.w_epoch = l.epoch;
    s.w = rec;
    s.flags = static_cast<uint8_t>((s.flags & ~kPending) | kAgentWrite);
  }
  if (c.hazard != Hazard::None) report_hazard(c, "a TMA issued by " + thread_str(issuer) + " writes", site_str(site), nullptr);
}

// The operand bytes [off, off + n) of a wgmma issued by the warpgroup whose threads start at `first`:
// what they read must be written before the issue in every thread's view (and by the async proxy, or
// made visible to it with fence.proxy.async); they are then in flight until the wait.
void async_read_issue(int64_t off, size_t n, int first, Site site) {
  Launch& l = L();
  // TMA writes (an agent's clock names one TMA) found ordered are remembered for the block; thread
  // writes are checked each time (a thread's (clock, sync-log position) may recur after a barrier).
  std::vector<Rec>& known = l.wg_ordered[first / kWarpgroupThreads];
  auto ordered_for_all = [&](const Rec& w) {
    const bool agent = w.who >= l.threads.size();
    if (agent)
      for (const Rec& k : known)
        if (k.who == w.who && k.clk == w.clk) return true;
    bool ok = true;
    for (int i = 0; i < kWarpgroupThreads && ok; ++i) ok = ordered(l, w, first + i);
    if (ok && agent) {
      if (known.size() >= 64) known.erase(known.begin());
      known.push_back(w);
    }
    return ok;
  };
  bool reported = false;
  for (size_t i = 0; i < n; ++i) {
    Shadow& s = l.shadow[off + i];
    if (s.async_readers == 255) fatal("more than 255 wgmma operands in flight over shared offset " + std::to_string(off + i));
    s.async_readers++;
    if (reported) continue;
    // Built only for a report (this runs for every operand byte).
    const auto at = [&] {
      return "the wgmma of warpgroup " + std::to_string(first / kWarpgroupThreads) + site_str(site) +
             " reads shared offset " + std::to_string(off + i);
    };
    if (s.flags & kPending) {
      report("shared-memory race (wgmma reads before cp.async completed): " + at() + ", the destination of a cp.async by " +
             who_str(s.w.who) + " not yet waited for");
      reported = true;
    } else if (s.w_epoch < l.block_epoch) {
      report("uninitialized shared-memory read: " + at() + ", never written in this block");
      reported = true;
    } else if (s.w_epoch == l.epoch && !ordered_for_all(s.w)) {
      report(std::string("shared-memory race (") + (s.flags & kAgentWrite ? "wgmma reads before the TMA that fills it completed" : "read after write") +
             "): " + at() + " written by " + who_str(s.w.who) + ", not ordered before the issue for every thread of the warpgroup");
      reported = true;
    } else if (!(s.flags & kAgentWrite) && s.w.who < l.threads.size() && l.threads[s.w.who]->proxy_fences == s.w_fence) {
      report("generic-proxy write not visible to the async proxy: " + at() + " written by " + thread_str(s.w.who) +
             " with no fence.proxy.async after the write (wgmma and TMA read shared memory through the async proxy)");
      reported = true;
    }
  }
}

// The operands of a completed wgmma: read by the warpgroup's agent at its clock `rec`.
void async_read_complete(int64_t off, size_t n, const Rec& rec) {
  Launch& l = L();
  for (size_t i = 0; i < n; ++i) {
    Shadow& s = l.shadow[off + i];
    if (s.async_readers) s.async_readers--;
    record_read(l, s, rec);
  }
}

// ---- warp operations ------------------------------------------------------------------------------

namespace {

void execute(WarpOp& op);

// The calling lane arrives at a warp operation; `fill` stores its operands. Returns once the operation
// has been performed (by the last lane to arrive).
template <typename Fill>
void arrive(OpKind kind, int mode, uint32_t mask, Site site, Fill&& fill) {
  Launch& l = L();
  ThreadState& t = cur();
  WarpState& w = l.warps[t.warp];
  const uint32_t bit = 1u << t.lane;
  auto who = [&] { return thread_str(t.tid) + " at " + op_name(kind) + site_str(site); };
  if (!(mask & bit)) fatal("warp operation with a mask that excludes the calling lane: " + who() + ", mask " + mask_str(mask));
  if (mask & ~w.present)
    fatal("warp operation names lanes that do not exist: " + who() + ", mask " + mask_str(mask) + ", warp " +
          std::to_string(t.warp) + " has lanes " + mask_str(w.present) + " (block of " +
          std::to_string(l.threads.size()) + " threads)");
  if (mask & w.exited)
    fatal("warp operation names lanes that have exited: " + who() + ", mask " + mask_str(mask) + ", exited " +
          mask_str(mask & w.exited));
  WarpOp* op = nullptr;
  for (auto& p : w.pending)
    if ((p->mask & bit) && !(p->arrived & bit)) {
      op = p.get();
      break;
    }
  if (op) {
    if (op->kind != kind || op->mode != mode || op->mask != mask || !same_site(op->site, site))
      fatal("lanes of a warp disagree on a warp-synchronous operation: " + who() + " with mask " + mask_str(mask) +
            ", while lanes " + mask_str(op->arrived) + " wait at " + op_name(op->kind) + site_str(op->site) +
            " with mask " + mask_str(op->mask));
  } else {
    w.pending.push_back(std::make_unique<WarpOp>());
    op = w.pending.back().get();
    op->kind = kind;
    op->mode = mode;
    op->mask = mask;
    op->site = site;
  }
  fill(*op, t.lane);
  op->arrived |= bit;
  if (op->arrived != op->mask) {
    yield(State::AtWarpOp, site);
    return;
  }
  execute(*op);
  for (int lane = 0; lane < kWarp; ++lane)
    if ((mask >> lane) & 1u) l.threads[t.warp * kWarp + lane]->state = State::Ready;
  for (auto it = w.pending.begin(); it != w.pending.end(); ++it)
    if (it->get() == op) {
      w.pending.erase(it);
      break;
    }
}

void execute_shfl(WarpOp& op) {
  Launch& l = L();
  const int warp = cur().warp;
  for (int lane = 0; lane < kWarp; ++lane) {
    if (!((op.mask >> lane) & 1u)) continue;
    const int width = op.width, s = lane & ~(width - 1), e = s + width - 1;
    const int arg = op.arg[lane];
    int src = lane;
    switch (static_cast<ShflMode>(op.mode)) {
      case ShflMode::Idx: src = s + (arg & (width - 1)); break;
      case ShflMode::Up: src = lane - (arg & 31); if (src < s) src = lane; break;
      case ShflMode::Down: src = lane + (arg & 31); if (src > e) src = lane; break;
      case ShflMode::Xor: src = lane ^ (arg & 31); if (src > e) src = lane; break;
    }
    if (!((op.mask >> src) & 1u))
      report("shuffle reads a lane outside its mask (undefined value): " + thread_str(warp * kWarp + lane) +
             " reads lane " + std::to_string(src) + site_str(op.site) + ", mask " + mask_str(op.mask));
    l.threads[warp * kWarp + lane]->result = op.value[src];
  }
}

void execute_vote(WarpOp& op) {
  Launch& l = L();
  const int warp = cur().warp;
  uint32_t ballot = 0;
  for (int lane = 0; lane < kWarp; ++lane)
    if (((op.mask >> lane) & 1u) && op.value[lane]) ballot |= 1u << lane;
  uint64_t r = ballot;
  if (op.mode == static_cast<int>(VoteMode::Any)) r = ballot != 0;
  if (op.mode == static_cast<int>(VoteMode::All)) r = ballot == op.mask;
  for (int lane = 0; lane < kWarp; ++lane)
    if ((op.mask >> lane) & 1u) l.threads[warp * kWarp + lane]->result = r;
}

void execute_ldmatrix(WarpOp& op) {
  const int warp = cur().warp;
  uint16_t m[4][8][8];  // [matrix][row][column]
  for (int j = 0; j < op.num; ++j)
    for (int r = 0; r < 8; ++r) {
      const int lane = 8 * j + r, tid = warp * kWarp + lane;
      const auto* row = static_cast<const uint8_t*>(op.addr[lane]);
      if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
        report("ldmatrix row address not 16-byte aligned: " + thread_str(tid) + " gives shared offset " +
               std::to_string(row - L().smem) + site_str(op.site));
      if (!check(tid, row, 16, Access::Read)) {
        std::memset(m[j][r], 0, 16);
        continue;
      }
      std::memcpy(m[j][r], row, 16);
    }
  for (int lane = 0; lane < kWarp; ++lane) {
    const int g = lane / 4, c = 2 * (lane % 4);
    for (int j = 0; j < op.num; ++j) {
      const uint16_t lo = op.trans ? m[j][c][g] : m[j][g][c];
      const uint16_t hi = op.trans ? m[j][c + 1][g] : m[j][g][c + 1];
      op.regs[lane][j] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
  }
}

float operand(uint32_t reg, int half, MmaKind kind) {
  const auto bits = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xffffu);
  return kind == MmaKind::BF16_M16N8K16 ? bf16_bits_to_float(bits) : half_bits_to_float(bits);
}

// D = A B + C for one warp. Products of 16-bit operands are exact in double and the sum of
// 17 terms loses nothing that matters; the hardware's order and rounding of the accumulation are
// unspecified (PTX 9.7.14.5.14), so the GPU may differ by a few float ulps.
void execute_mma(WarpOp& op) {
  const auto kind = static_cast<MmaKind>(op.mode);
  double A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < kWarp; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const uint32_t* a = op.a[lane];
    const uint32_t* b = op.b[lane];
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = operand(a[0], h, kind);
      A[g + 8][2 * t + h] = operand(a[1], h, kind);
      A[g][2 * t + 8 + h] = operand(a[2], h, kind);
      A[g + 8][2 * t + 8 + h] = operand(a[3], h, kind);
      B[2 * t + h][g] = operand(b[0], h, kind);
      B[2 * t + 8 + h][g] = operand(b[1], h, kind);
    }
    const float* c = op.c[lane];
    C[g][2 * t] = c[0];
    C[g][2 * t + 1] = c[1];
    C[g + 8][2 * t] = c[2];
    C[g + 8][2 * t + 1] = c[3];
  }
  float D[16][8];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      double s = C[i][j];
      for (int k = 0; k < 16; ++k) s += A[i][k] * B[k][j];
      D[i][j] = static_cast<float>(s);
    }
  for (int lane = 0; lane < kWarp; ++lane) {
    const int g = lane / 4, t = lane % 4;
    float* d = op.d[lane];
    d[0] = D[g][2 * t];
    d[1] = D[g][2 * t + 1];
    d[2] = D[g + 8][2 * t];
    d[3] = D[g + 8][2 * t + 1];
  }
}

void execute(WarpOp& op) {
  switch (op.kind) {
    case OpKind::SyncWarp: {
      Launch& l = L();
      const int warp = cur().warp;
      l.warps[warp].sync_log.push_back(op.mask);
      // Once vector clocks are in use, a lane's release (an mbarrier arrive) after the __syncwarp must
      // carry what the other lanes did before it: they all release into, then acquire, one clock.
      if (l.vc_used) {
        std::vector<uint32_t> all;
        for (int lane = 0; lane < kWarp; ++lane)
          if ((op.mask >> lane) & 1u) release(*l.threads[warp * kWarp + lane], all);
        for (int lane = 0; lane < kWarp; ++lane)
          if ((op.mask >> lane) & 1u) acquire(*l.threads[warp * kWarp + lane], all);
      }
      break;
    }
    case OpKind::Shfl: execute_shfl(op); break;
    case OpKind::Vote: execute_vote(op); break;
    case OpKind::Ldmatrix: execute_ldmatrix(op); break;
    case OpKind::Mma: execute_mma(op); break;
    case OpKind::Elect: {
      const int warp = cur().warp, first = __builtin_ctz(op.mask);
      for (int lane = 0; lane < kWarp; ++lane)
        if ((op.mask >> lane) & 1u) L().threads[warp * kWarp + lane]->result = lane == first;
      break;
    }
  }
}

// ---- cp.async ---------------------------------------------------------------------------------------

void complete(ThreadState& t, const std::vector<AsyncCopy>& group) {
  for (const AsyncCopy& c : group) {
    if (c.src_size > 0) std::memcpy(c.dst, c.src, static_cast<size_t>(c.src_size));
    if (c.src_size < c.cp_size) std::memset(c.dst + c.src_size, 0, static_cast<size_t>(c.cp_size - c.src_size));
    check(t.tid, c.dst, static_cast<size_t>(c.cp_size), Access::AsyncComplete);
  }
}

// ---- the block scheduler --------------------------------------------------------------------------

void fiber_main(void* arg) {
  auto* t = static_cast<ThreadState*>(arg);
  t->fiber.started();
  (*L().body)();
  Launch& l = L();
  if (!t->uncommitted.empty() || !t->groups.empty())
    report("cp.async copies never waited for: " + thread_str(t->tid) + " exits with " +
           std::to_string(t->groups.size()) + " committed group(s) and " + std::to_string(t->uncommitted.size()) +
           " uncommitted copy(ies) in flight");
  check_thread_exit(*t);
  t->state = State::Exited;
  l.exited++;
  WarpState& w = l.warps[t->warp];
  w.exited |= 1u << t->lane;
  if (l.barrier_arrived > 0)
    fatal("barrier divergence: " + thread_str(t->tid) + " exits while " + std::to_string(l.barrier_arrived) +
          " thread(s) wait at __syncthreads" + site_str(l.barrier_site));
  for (auto& op : w.pending)
    if (op->mask & (1u << t->lane))
      fatal("warp operation never completes: " + thread_str(t->tid) + " exits while lanes " + mask_str(op->arrived) +
            " wait for it at " + op_name(op->kind) + site_str(op->site) + " with mask " + mask_str(op->mask));
  t->fiber.finish();
}

void diagnose_deadlock() {
  Launch& l = L();
  std::ostringstream s;
  s << "deadlock (barrier divergence): no thread can proceed;";
  int shown = 0;
  for (auto& tp : l.threads) {
    const ThreadState& t = *tp;
    if (t.state == State::Exited || shown >= 6) continue;
    s << " " << thread_str(t.tid) << " waits at " << describe_wait(t) << site_str(t.wait_site) << ";";
    ++shown;
  }
  report(s.str());
  l.fatal = true;
}

void run_block(Launch& l) {
  l.block_serial++;
  l.many_readers.clear();
  for (auto& known : l.wg_ordered) known.clear();
  l.epoch++;
  l.block_epoch = l.epoch;
  l.barrier_arrived = 0;
  l.exited = 0;
  for (auto& w : l.warps) {
    w.exited = 0;
    w.pending.clear();
    w.sync_log.clear();
  }
  if (l.sm90_used) reset_hopper_state(l);
  l.vc_used = false;
  for (auto& tp : l.threads) {
    ThreadState& t = *tp;
    t.state = State::Ready;
    t.uncommitted.clear();
    t.groups.clear();
    t.clock = 1;
    t.vc_block = 0;  // block serials restart with every launch: a pooled thread's clock is stale
    t.proxy_fences = 0;
    t.wgmma_fences = 0;
    if (!t.pending_regs.empty()) t.pending_regs.clear();
    if (!t.waited_phase.empty()) t.waited_phase.clear();
    t.fiber.reset(&fiber_main, &t);
  }
  for (;;) {
    bool progressed = false, all_exited = true;
    for (auto& tp : l.threads) {
      if (l.fatal) return;
      ThreadState& t = *tp;
      if (t.state == State::Ready) {
        l.current = &t;
        t.fiber.switch_to();
        l.current = nullptr;
        progressed = true;
      }
      if (t.state != State::Exited) all_exited = false;
    }
    if (l.fatal || all_exited) return;
    if (!progressed) {
      diagnose_deadlock();
      return;
    }
  }
}

int smem_limit(const void* kernel) {
  std::lock_guard<std::mutex> lock(g_limits_mutex);
  auto it = g_smem_limits.find(kernel);
  return it == g_smem_limits.end() ? kDefaultDynamicSmem : it->second;
}

Error config_error(const std::string& what) {
  g_last_error = "invalid launch configuration (emulated CUDA): " + what;
  return kErrorInvalidConfiguration;
}

}  // namespace
}  // namespace detail

// ---- the interface ----------------------------------------------------------------------------------

using namespace detail;

Dim3 thread_idx() { return cur().idx; }
void wait_flag(const int* flag, int value, Site site) {
  if (*flag == value) return;
  report("global flag wait no earlier block satisfies: " + thread_str(cur().tid) + " waits for " + std::to_string(value) +
         " at " + std::to_string(reinterpret_cast<uintptr_t>(flag)) + ", which holds " + std::to_string(*flag) +
         " (blocks run in launch order here; on a GPU this waits on a later block or forever)" + site_str(site));
}

Dim3 block_idx() { return L().block_idx; }
Dim3 block_dim() { return L().block; }
Dim3 grid_dim() { return L().grid; }

void sync_threads(Site site) {
  Launch& l = L();
  ThreadState& t = cur();
  if (l.exited > 0)
    for (auto& tp : l.threads)
      if (tp->state == State::Exited)
        fatal("barrier divergence: " + thread_str(t.tid) + " reaches __syncthreads" + site_str(site) + " after " +
              thread_str(tp->tid) + " exited");
  if (l.barrier_arrived == 0) {
    l.barrier_site = site;
  } else if (!same_site(site, l.barrier_site)) {
    fatal("barrier divergence: " + thread_str(t.tid) + " waits at __syncthreads" + site_str(site) + " while " +
          std::to_string(l.barrier_arrived) + " thread(s) wait at __syncthreads" + site_str(l.barrier_site));
  }
  if (++l.barrier_arrived < static_cast<int>(l.threads.size())) {
    yield(State::AtBarrier, site);
    return;
  }
  l.barrier_arrived = 0;
  l.epoch++;
  for (auto& w : l.warps) w.sync_log.clear();
  for (auto& tp : l.threads) tp->state = State::Ready;
}

void sync_warp(uint32_t mask, Site site) {
  arrive(OpKind::SyncWarp, 0, mask, site, [](WarpOp&, int) {});
}

bool elect_one(uint32_t mask, Site site) {
  if (g_arch < 90) report("elect.sync needs sm_90: " + thread_str(cur().tid) + site_str(site) + " (emulating sm_80)");
  arrive(OpKind::Elect, 0, mask, site, [](WarpOp&, int) {});
  return cur().result != 0;
}

uint64_t shfl(ShflMode mode, uint32_t mask, uint64_t value, int arg, int width, Site site) {
  if (width < 1 || width > kWarp || (width & (width - 1)))
    fatal("shuffle width must be a power of two in [1, 32]: " + thread_str(cur().tid) + " passes " +
          std::to_string(width) + site_str(site));
  arrive(OpKind::Shfl, static_cast<int>(mode), mask, site, [&](WarpOp& op, int lane) {
    if (op.arrived == 0) op.width = width;
    else if (op.width != width)
      fatal("lanes of a shuffle disagree on its width" + site_str(site));
    op.value[lane] = value;
    op.arg[lane] = arg;
  });
  return cur().result;
}

uint32_t vote(VoteMode mode, uint32_t mask, bool pred, Site site) {
  arrive(OpKind::Vote, static_cast<int>(mode), mask, site, [&](WarpOp& op, int lane) { op.value[lane] = pred; });
  return static_cast<uint32_t>(cur().result);
}

void* smem_base() { return L().smem; }

void set_call_site(Site site) { cur().call_site = site; }
Site call_site() { return cur().call_site; }

uint32_t smem_address(const void* p) {
  const int64_t off = smem_offset(p, 0, "converts (cvta.to.shared) a pointer", Site{});
  return off < 0 ? 0u : static_cast<uint32_t>(off);
}

void* smem_access(const void* p, size_t bytes, bool write) {
  Launch& l = L();
  if (!check(l, l.current->tid, p, bytes, write ? Access::Write : Access::Read, __builtin_return_address(0))) {
    std::memset(l.sink, 0, sizeof l.sink);
    return l.sink;
  }
  return const_cast<void*>(p);
}

void cp_async(void* dst, const void* src, int cp_size, int src_size, Site site) {
  ThreadState& t = cur();
  auto who = [&] { return thread_str(t.tid) + site_str(site); };
  if (src_size < 0 || src_size > cp_size)
    fatal("cp.async source size " + std::to_string(src_size) + " outside [0, " + std::to_string(cp_size) + "]: " + who());
  if (reinterpret_cast<uintptr_t>(dst) % cp_size)
    report("cp.async shared destination not aligned to " + std::to_string(cp_size) + " bytes: " + who());
  if (src_size > 0 && reinterpret_cast<uintptr_t>(src) % cp_size)
    report("cp.async global source not aligned to " + std::to_string(cp_size) + " bytes: " + who());
  if (!check(t.tid, dst, static_cast<size_t>(cp_size), Access::AsyncIssue)) return;
  t.uncommitted.push_back({static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), cp_size, src_size});
}

void cp_async_commit(Site) {
  ThreadState& t = cur();
  t.groups.push_back(std::move(t.uncommitted));
  t.uncommitted.clear();
}

void cp_async_wait(int n, Site) {
  ThreadState& t = cur();
  while (static_cast<int>(t.groups.size()) > n) {
    complete(t, t.groups.front());
    t.groups.pop_front();
  }
}

void ldmatrix(uint32_t* regs, int num, bool trans, const void* row_addr, Site site) {
  arrive(OpKind::Ldmatrix, num * 2 + (trans ? 1 : 0), kFullMask, site, [&](WarpOp& op, int lane) {
    op.num = num;
    op.trans = trans;
    op.addr[lane] = row_addr;
    op.regs[lane] = regs;
  });
}

void mma(MmaKind kind, float* d, const uint32_t* a, const uint32_t* b, const float* c, Site site) {
  arrive(OpKind::Mma, static_cast<int>(kind), kFullMask, site, [&](WarpOp& op, int lane) {
    op.d[lane] = d;
    op.a[lane] = a;
    op.b[lane] = b;
    op.c[lane] = c;
  });
}

Error set_max_dynamic_smem(const void* kernel, int bytes) {
  if (bytes < 0 || bytes > max_optin_for(g_arch)) {
    g_last_error = "invalid argument (emulated CUDA): dynamic shared memory limit " + std::to_string(bytes) +
                   " exceeds the device's " + std::to_string(max_optin_for(g_arch)) + " bytes";
    return kErrorInvalidValue;
  }
  std::lock_guard<std::mutex> lock(g_limits_mutex);
  g_smem_limits[kernel] = bytes;
  return kSuccess;
}

std::string launch_name(const char* kernel, const char* pretty_function) {
  std::string name = kernel;
  if (name.size() > 2 && name.front() == '(' && name.back() == ')') name = name.substr(1, name.size() - 2);
  const std::string pf = pretty_function;
  const size_t with = pf.find("[with ");
  if (with != std::string::npos) {
    std::string args = pf.substr(with + 6, pf.rfind(']') - with - 6);
    for (const char* ns : {"mmkernels::dev::emulated::", "mmkernels::"})
      for (size_t pos; (pos = args.find(ns)) != std::string::npos;) args.erase(pos, std::strlen(ns));
    const size_t stream = args.find("; Stream = ");  // a type alias of the launcher, not a template argument
    if (stream != std::string::npos) args.erase(stream, args.find(';', stream + 1) - stream);
    name += " [" + args + "]";
  }
  return name;
}

std::vector<LaunchRecord> take_launch_log() {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  return std::exchange(g_launch_log, {});
}

int arch() { return g_arch; }
void set_arch(int a) { g_arch = a; }
int max_dynamic_smem_optin() { return max_optin_for(g_arch); }
int multiprocessor_count() { return multiprocessors_for(g_arch); }

Error launch(const char* name, const void* kernel, const std::function<void()>& body, Dim3 grid, Dim3 block,
             size_t dynamic_smem) {
  if (g_launch) {
    g_last_error = "a kernel launched from inside an emulated kernel (dynamic parallelism is not emulated)";
    return kErrorLaunchFailure;
  }
  const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    return config_error(std::string(name) + ": block " + dim_str(block) + " (at most 1024 threads; x, y <= 1024, z <= 64)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    return config_error(std::string(name) + ": grid " + dim_str(grid) + " (x in [1, 2^31-1], y and z in [1, 65535])");
  const int limit = smem_limit(kernel);
  if (dynamic_smem > static_cast<size_t>(limit))
    return config_error(std::string(name) + ": " + std::to_string(dynamic_smem) +
                        " bytes of dynamic shared memory exceed the kernel's limit of " + std::to_string(limit) +
                        " (raise it with set_max_dynamic_smem, at most " + std::to_string(max_optin_for(g_arch)) + ")");

  {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (g_launch_log.size() < 10000) g_launch_log.push_back({name, grid});
  }
  Launch l;
  l.name = name;
  l.grid = grid;
  l.block = block;
  l.body = &body;
  l.smem_bytes = dynamic_smem;
  l.arena.assign(dynamic_smem + 1024, 0xcd);  // garbage, as real shared memory holds
  l.smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(l.arena.data()) + 1023) & ~uintptr_t(1023));
  l.shadow.assign(dynamic_smem, Shadow{});
  // Take nthreads fibers from the pool (their stacks are reused), give them back afterwards.
  while (g_pool.size() < nthreads) g_pool.push_back(std::make_unique<ThreadState>());
  l.threads.assign(std::make_move_iterator(g_pool.end() - nthreads), std::make_move_iterator(g_pool.end()));
  g_pool.resize(g_pool.size() - nthreads);
  l.warps.clear();
  l.warps.resize((nthreads + kWarp - 1) / kWarp);
  for (uint32_t z = 0, tid = 0; z < block.z; ++z)
    for (uint32_t y = 0; y < block.y; ++y)
      for (uint32_t x = 0; x < block.x; ++x, ++tid) {
        ThreadState& t = *l.threads[tid];
        t.tid = static_cast<int>(tid);
        t.idx = {x, y, z};
        t.warp = static_cast<int>(tid / kWarp);
        t.lane = static_cast<int>(tid % kWarp);
        l.warps[t.warp].present |= 1u << t.lane;
      }

  g_launch = &l;
  for (uint32_t bz = 0; bz < grid.z && !l.fatal; ++bz)
    for (uint32_t by = 0; by < grid.y && !l.fatal; ++by)
      for (uint32_t bx = 0; bx < grid.x && !l.fatal; ++bx) {
        l.block_idx = {bx, by, bz};
        run_block(l);
      }
  g_launch = nullptr;

  for (auto& t : l.threads) g_pool.push_back(std::move(t));
  if (l.report_count == 0) return kSuccess;
  std::ostringstream msg;
  msg << "emulated CUDA kernel failed its checks (" << l.report_count << " problem(s)"
      << (l.fatal ? ", launch abandoned" : "") << "; grid " << dim_str(grid) << ", block " << dim_str(block) << ", "
      << dynamic_smem << " bytes of dynamic shared memory):";
  for (const auto& r : l.reports) msg << "\n  - " << r;
  if (l.report_count > l.reports.size()) msg << "\n  - ... and " << (l.report_count - l.reports.size()) << " more";
  g_last_error = msg.str();
  return kErrorCheckFailed;
}

}  // namespace mmkernels::dev::emu

namespace mmkernels::dev {
MMK_BACKEND_BEGIN
const char* error_string(Error e) {
  if (e == kSuccess) return "no error";
  return emu::detail::g_last_error.empty() ? "unknown emulated CUDA error" : emu::detail::g_last_error.c_str();
}
MMK_BACKEND_END
}  // namespace mmkernels::dev
