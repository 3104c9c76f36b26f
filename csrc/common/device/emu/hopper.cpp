// The sm_90a (Hopper) part of the host SIMT emulation: warpgroup collectives, wgmma, mbarriers, named
// barriers, TMA, elect/setmaxnreg/proxy fences. Semantics from the PTX ISA 9.0 sections named at each
// function in runtime.h; the ordering model (vector clocks, async agents) is described in state.h.
//
// Checkers added here, each naming kernel, block, thread and shared offset:
//  - wgmma: issued before any wgmma.fence, or on accumulators a thread touched since its last fence;
//    accumulators touched while a wgmma writing them is in flight (dev::EmuAccum); operand shared
//    memory written before the matching wait, read before the TMA/cp.async/threads that fill it are
//    ordered before the issue, or written by threads without fence.proxy.async; in flight at exit;
//    the threads of a warpgroup disagreeing on a collective (or on the descriptors).
//  - mbarrier: use before init (or before the init is visible), re-init while in use, more arrivals
//    than the count in one phase, a parity wait satisfied by a phase this thread has already waited
//    for (its phase bit out of step), transaction bytes still pending at exit.
//  - TMA: a tensor map the emulation did not encode, destinations out of bounds or misaligned for
//    their swizzle, parameters outside cuTensorMapEncodeTiled's rules (at encode).
//  - named barriers: thread counts that are not whole warps, or that the participants disagree on.
//  - deadlock: every thread waiting (barrier, warp/warpgroup collective, mbarrier, named barrier).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "common/device/emu/state.h"

namespace mmkernels::dev::emu {
namespace detail {
namespace {

// Out-of-bounds fill values of a TMA with the NaN fill mode.
constexpr uint32_t kNaN32 = 0x7fffffffu;
constexpr uint16_t kNaN16 = 0x7fff;

bool need_sm90(const char* what, Site site) {
  L().sm90_used = true;
  if (arch() >= 90) return true;
  report(std::string(what) + " needs sm_90a: " + thread_str(cur().tid) + site_str(site) + " (the emulation runs as sm_80)");
  return false;
}

const char* group_name(GroupKind k) {
  switch (k) {
    case GroupKind::Fence: return "wgmma.fence";
    case GroupKind::Issue: return "wgmma.mma_async";
    case GroupKind::Commit: return "wgmma.commit_group";
    case GroupKind::Wait: return "wgmma.wait_group";
    case GroupKind::SetMaxNreg: return "setmaxnreg";
    case GroupKind::None: break;
  }
  return "?";
}

WarpgroupState& warpgroup_of(ThreadState& t, const char* what, Site site) {
  Launch& l = L();
  if (l.threads.size() % kWarpgroupThreads)
    fatal(std::string(what) + " in a block of " + std::to_string(l.threads.size()) + " threads: " + thread_str(t.tid) +
          site_str(site) + " (warpgroup operations need whole warpgroups: a multiple of 128 threads)");
  return l.warpgroups[t.tid / kWarpgroupThreads];
}

// The 128 threads of the caller's warpgroup arrive at one collective: `fill(wg, i)` stores the operands
// of each (i: its index in the warpgroup), `done(wg)` runs once, when the last one arrives.
template <class Fill, class Done>
void group_arrive(GroupKind kind, int value, Site site, Fill&& fill, Done&& done) {
  Launch& l = L();
  ThreadState& t = cur();
  const char* name = group_name(kind);
  WarpgroupState& wg = warpgroup_of(t, name, site);
  if (wg.arrived == 0) {
    wg.kind = kind;
    wg.value = value;
    wg.site = site;
  } else if (wg.kind != kind || wg.value != value || !same_site(wg.site, site)) {
    fatal("threads of a warpgroup disagree on a warpgroup-collective operation: " + thread_str(t.tid) + " at " + name +
          site_str(site) + " while " + std::to_string(wg.arrived) + " thread(s) of warpgroup " +
          std::to_string(t.tid / kWarpgroupThreads) + " wait at " + group_name(wg.kind) + site_str(wg.site) +
          (wg.kind == kind ? " (with other operands)" : ""));
  }
  fill(wg, t.tid % kWarpgroupThreads);
  if (++wg.arrived < kWarpgroupThreads) {
    yield(State::AtGroupOp, site, name);
    return;
  }
  done(wg);
  wg.arrived = 0;
  wg.kind = GroupKind::None;
  const int first = t.tid - t.tid % kWarpgroupThreads;
  for (int i = 0; i < kWarpgroupThreads; ++i) {
    ThreadState& o = *l.threads[first + i];
    if (o.state == State::AtGroupOp) o.state = State::Ready;
  }
}

// ---- wgmma shared-memory operands: the matrix descriptor (PTX 9.7.15.5.1, "Matrix Descriptor
// Format") and the canonical layouts it describes (9.7.15.5.1.1, "Shared Memory Matrix Layout"), for
// 16-bit elements. In units of 16-byte chunks, K-major: 8-row core matrices of one chunk per row
// (no swizzle: rows 1 chunk apart, core matrices LBO apart along K and SBO apart along M/N) or rows of
// W = 2/4/8 chunks (32/64/128-byte swizzle: SBO between 8-row groups); MN-major: chunks of 8 M/N
// elements, W of them side by side (then LBO), 8 K rows W chunks apart (then SBO). The swizzle XORs
// the 16-byte chunk index (address bits 4..6) with address bits 7..9 of the absolute shared address.
uint32_t gmma_address(uint64_t desc, bool mn_major, int mn, int k) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3fff) << 4;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3fff) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3fff) << 4;
  const int mode = static_cast<int>((desc >> 62) & 3);  // 0 interleave, 1 128B, 2 64B, 3 32B
  const uint32_t w = mode == 0 ? 1 : mode == 1 ? 8 : mode == 2 ? 4 : 2;
  uint32_t a;
  if (!mn_major) {
    a = mode == 0 ? start + (mn % 8) * 16 + (mn / 8) * sbo + (k / 8) * lbo + (k % 8) * 2
                  : start + (mn % 8) * (w * 16) + (mn / 8) * sbo + (k / 8) * 16 + (k % 8) * 2;
  } else {
    const uint32_t c = mn / 8;
    a = mode == 0 ? start + c * sbo + (k % 8) * 16 + (k / 8) * lbo + (mn % 8) * 2
                  : start + (c % w) * 16 + (c / w) * lbo + (k % 8) * (w * 16) + (k / 8) * sbo + (mn % 8) * 2;
  }
  const uint32_t rows = mode == 1 ? 7u : mode == 2 ? 3u : mode == 3 ? 1u : 0u;
  return a ^ (((a >> 7) & rows) << 4);
}

double element(uint16_t bits, WgmmaType type) {
  return type == WgmmaType::BF16 ? bf16_bits_to_float(bits) : half_bits_to_float(bits);
}

uint16_t smem_u16(uint32_t addr) {
  uint16_t v;
  std::memcpy(&v, L().smem + addr, 2);
  return v;
}

// The shared bytes a wgmma's operands read (A unless register-sourced, then B), bounds-checked.
bool operand_bytes(const WgmmaShape& sh, uint64_t desc_a, uint64_t desc_b, std::vector<uint32_t>& out, Site site) {
  Launch& l = L();
  auto add = [&](uint64_t desc, bool mn_major, int rows, const char* which) {
    if ((desc >> 49) & 7) {
      report(std::string("wgmma ") + which + " descriptor with a non-zero base offset (not emulated)" + site_str(site));
      return false;
    }
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < 16; ++k) {
        const uint32_t a = gmma_address(desc, mn_major, r, k);
        if (a + 2 > l.smem_bytes) {
          report(std::string("shared-memory out of bounds: the wgmma's ") + which + " operand (row " + std::to_string(r) +
                 ", k " + std::to_string(k) + ") is at offset " + std::to_string(a) + " of a " +
                 std::to_string(l.smem_bytes) + "-byte block" + site_str(site));
          return false;
        }
        out.push_back(a);
      }
    return true;
  };
  if (!sh.a_regs && !add(desc_a, sh.a_mn_major, 64, "A")) return false;
  return add(desc_b, sh.b_mn_major, sh.n, "B");
}

// D (64 x n) = A (64 x 16) B^T (B: n x 16) + D, exact products summed in double, rounded once.
void execute_wgmma(WgmmaOp& op, uint64_t desc_a, uint64_t desc_b) {
  const WgmmaShape& sh = op.shape;
  const int n = sh.n, regs = n / 2;
  static thread_local std::vector<double> A, B;
  A.assign(64 * 16, 0.0);
  B.assign(static_cast<size_t>(n) * 16, 0.0);
  if (sh.a_regs) {
    // The A fragment (9.7.15.5.1.2, register fragment of A for .bf16/.f16): thread i of the warpgroup
    // (warp w, group g = lane / 4, t = lane % 4) holds rows 16w + g (+8) and columns 2t, 2t+1 (+8).
    for (int i = 0; i < kWarpgroupThreads; ++i) {
      const int w = i / 32, g = (i % 32) / 4, t = i % 4;
      for (int r = 0; r < 4; ++r) {
        const uint32_t v = op.a[i * 4 + r];
        const int row = 16 * w + g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
        A[row * 16 + col] = element(static_cast<uint16_t>(v & 0xffff), sh.type);
        A[row * 16 + col + 1] = element(static_cast<uint16_t>(v >> 16), sh.type);
      }
    }
  } else {
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 16; ++k) A[m * 16 + k] = element(smem_u16(gmma_address(desc_a, sh.a_mn_major, m, k)), sh.type);
  }
  for (int c = 0; c < n; ++c)
    for (int k = 0; k < 16; ++k) B[c * 16 + k] = element(smem_u16(gmma_address(desc_b, sh.b_mn_major, c, k)), sh.type);
  // The accumulator fragment (9.7.15.5.1.2, "Matrix fragments for D"): register j of thread i holds
  // row 16w + g + 8 ((j / 2) % 2), column 2t + (j % 2) + 8 (j / 4).
  for (int i = 0; i < kWarpgroupThreads; ++i) {
    const int w = i / 32, g = (i % 32) / 4, t = i % 4;
    for (int j = 0; j < regs; ++j) {
      const int row = 16 * w + g + 8 * ((j >> 1) & 1), col = 2 * t + (j & 1) + 8 * (j >> 2);
      AccumReg* d = op.d[static_cast<size_t>(i) * regs + j];
      double s = sh.scale_d ? static_cast<double>(d->v) : 0.0;
      for (int k = 0; k < 16; ++k) s += A[row * 16 + k] * B[col * 16 + k];
      d->v = static_cast<float>(s);
    }
  }
}

int pack(const WgmmaShape& s) {
  return s.n | (static_cast<int>(s.type) << 9) | (s.a_regs << 10) | (s.a_mn_major << 11) | (s.b_mn_major << 12) |
         (s.scale_d << 13);
}

// ---- mbarriers ---------------------------------------------------------------------------------------

MBarrier* find_barrier(void* bar, const char* op, Site site, uint32_t* offset) {
  Launch& l = L();
  const int64_t off = smem_offset(bar, 8, op, site);
  if (off < 0) return nullptr;
  *offset = static_cast<uint32_t>(off);
  auto it = l.mbarriers.find(*offset);
  if (it == l.mbarriers.end()) {
    report(std::string("mbarrier ") + op + " on shared offset " + std::to_string(off) + " that was never initialized: " +
           thread_str(cur().tid) + site_str(site));
    return nullptr;
  }
  MBarrier& b = it->second;
  ThreadState& t = cur();
  if (b.init_tid != t.tid && b.init_epoch == l.epoch && !ordered_vc(Rec{b.init_clk, static_cast<uint16_t>(b.init_tid), 0}, t.tid)) {
    report(std::string("mbarrier ") + op + " before its initialization is visible: " + thread_str(t.tid) + site_str(site) +
           ", barrier at shared offset " + std::to_string(off) + " initialized by " + thread_str(b.init_tid) +
           site_str(b.init_site) + " (fence.mbarrier_init and __syncthreads after the init)");
  }
  return &b;
}

void wake_barrier_waiters(uint32_t off) {
  for (auto& tp : L().threads)
    if (tp->state == State::AtMbarrier && tp->wait_bar_off == off) tp->state = State::Ready;
}

void try_complete(MBarrier& b, uint32_t off) {
  if (b.pending != 0 || b.tx != 0) return;
  b.done_vc = std::move(b.phase_vc);
  b.phase_vc.clear();
  b.phase++;
  b.pending = b.count;
  wake_barrier_waiters(off);
}

void arrive_on(MBarrier& b, uint32_t off, ThreadState& t, uint32_t tx, Site site) {
  release(t, b.phase_vc);
  b.tx += tx;
  if (--b.pending < 0) {
    report("mbarrier arrival beyond its count: " + thread_str(t.tid) + site_str(site) + " arrives on the barrier at shared offset " +
           std::to_string(off) + " (count " + std::to_string(b.count) + ") when no arrival is pending in this phase");
    b.pending = 0;
  }
  try_complete(b, off);
}

}  // namespace

void reset_hopper_state(Launch& l) {
  l.sm90_used = false;
  l.mbarriers.clear();
  for (NamedBarrier& b : l.named) b = NamedBarrier{};
  l.warpgroups.assign((l.threads.size() + kWarpgroupThreads - 1) / kWarpgroupThreads, WarpgroupState{});
}

void check_thread_exit(ThreadState& t) {
  if (!t.pending_regs.empty())
    report("wgmma never waited for: " + thread_str(t.tid) + " exits with " + std::to_string(t.pending_regs.size()) +
           " accumulator register(s) of an in-flight wgmma (wgmma.wait_group before using or leaving them)");
  Launch& l = L();
  // The last thread of the block out: barriers with transactions or arrivals still pending.
  if (l.exited + 1 == static_cast<int>(l.threads.size()))
    for (const auto& [off, b] : l.mbarriers)
      if (b.tx != 0)
        report("mbarrier with transaction bytes pending at exit: the barrier at shared offset " + std::to_string(off) +
               " expects " + std::to_string(b.tx) + " more byte(s) than were delivered (expect_tx vs the TMA box sizes)");
}

std::string describe_wait(const ThreadState& t) {
  switch (t.state) {
    case State::AtBarrier: return "__syncthreads";
    case State::AtWarpOp: return "a warp operation";
    case State::AtGroupOp: return "a warpgroup operation (" + t.wait_what + ")";
    case State::AtMbarrier:
    case State::AtNamedBarrier: return t.wait_what;
    default: return "?";
  }
}

}  // namespace detail

using namespace detail;

// ---- elect / setmaxnreg / fences ------------------------------------------------------------------------

void setmaxnreg(int regs, bool inc, Site site) {
  if (!need_sm90("setmaxnreg", site)) return;
  if (regs < 24 || regs > 256 || regs % 8)
    report("setmaxnreg with " + std::to_string(regs) + " registers: " + thread_str(cur().tid) + site_str(site) +
           " (must be a multiple of 8 in [24, 256])");
  group_arrive(GroupKind::SetMaxNreg, regs | (inc << 9), site, [](WarpgroupState&, int) {},
               [regs](WarpgroupState& wg) { wg.setmaxnreg = regs; });
}

void fence_proxy_async(Site site) {
  if (!need_sm90("fence.proxy.async", site)) return;
  cur().proxy_fences++;
}

// ---- named barriers (bar.sync / bar.arrive with a thread count) --------------------------------------

void named_barrier(int id, int count, bool wait, Site site) {
  Launch& l = L();
  l.sm90_used = true;  // its state is reset per block
  ThreadState& t = cur();
  const std::string who = thread_str(t.tid) + " at named barrier " + std::to_string(id) + site_str(site);
  if (id < 1 || id >= kNamedBarriers)
    fatal("named barrier id " + std::to_string(id) + " outside 1..15 (0 is __syncthreads'): " + who);
  if (count <= 0 || count % kWarp || count > static_cast<int>(l.threads.size()))
    fatal("named barrier thread count " + std::to_string(count) + ": " + who + " (whole warps, at most the block's " +
          std::to_string(l.threads.size()) + " threads)");
  NamedBarrier& b = l.named[id];
  if (b.arrived == 0) {
    b.expected = count;
    b.site = site;
  } else if (b.expected != count) {
    fatal("threads disagree on the thread count of named barrier " + std::to_string(id) + ": " + who + " with " +
          std::to_string(count) + " while " + std::to_string(b.arrived) + " arrived with " + std::to_string(b.expected) +
          site_str(b.site));
  }
  release(t, b.vc);
  if (wait) b.waiters.push_back(t.tid);
  if (++b.arrived == b.expected) {
    for (int w : b.waiters) {
      ThreadState& o = *l.threads[w];
      acquire(o, b.vc);
      if (o.state == State::AtNamedBarrier) o.state = State::Ready;
    }
    b = NamedBarrier{};
    return;
  }
  if (wait)
    yield(State::AtNamedBarrier, site,
          "named barrier " + std::to_string(id) + " (" + std::to_string(b.arrived) + " of " + std::to_string(b.expected) + " arrived)");
}

// ---- mbarriers ----------------------------------------------------------------------------------------

void mbarrier_init(void* bar, int count, Site site) {
  if (!need_sm90("mbarrier.init", site)) return;
  Launch& l = L();
  ThreadState& t = cur();
  const int64_t off = smem_offset(bar, 8, "initializes an mbarrier of", site);
  if (off < 0) return;
  if (off % 8) report("mbarrier not 8-byte aligned: shared offset " + std::to_string(off) + ", " + thread_str(t.tid) + site_str(site));
  if (count < 1 || count > (1 << 20) - 1)
    report("mbarrier.init with count " + std::to_string(count) + " outside [1, 2^20 - 1]: " + thread_str(t.tid) + site_str(site));
  check(t.tid, bar, 8, Access::Write);
  auto it = l.mbarriers.find(static_cast<uint32_t>(off));
  if (it != l.mbarriers.end() && (it->second.pending != it->second.count || it->second.tx != 0))
    report("mbarrier re-initialized while in use (arrivals or transactions pending): shared offset " + std::to_string(off) +
           ", " + thread_str(t.tid) + site_str(site));
  MBarrier b;
  b.count = b.pending = std::max(count, 1);
  b.agent = it != l.mbarriers.end() ? it->second.agent : kMaxWarpgroups + static_cast<int>(l.mbarriers.size());
  if (b.agent >= kMaxAgents) fatal("more than " + std::to_string(kMaxMbarriers) + " mbarriers in a block (not emulated)");
  b.init_tid = t.tid;
  b.init_epoch = l.epoch;
  b.init_clk = t.clock;
  b.init_site = site;
  // The init is visible to those who synchronize with this thread afterwards (fence.mbarrier_init +
  // __syncthreads in practice): releasing it here lets the vector clocks carry it.
  std::vector<uint32_t> scratch;
  release(t, scratch);
  l.mbarriers[static_cast<uint32_t>(off)] = std::move(b);
}

void mbarrier_arrive(void* bar, uint32_t tx_bytes, Site site) {
  if (!need_sm90("mbarrier.arrive", site)) return;
  uint32_t off = 0;
  MBarrier* b = find_barrier(bar, "arrive", site, &off);
  if (b) arrive_on(*b, off, cur(), tx_bytes, site);
}

void mbarrier_expect_tx(void* bar, uint32_t tx_bytes, Site site) {
  if (!need_sm90("mbarrier.expect_tx", site)) return;
  uint32_t off = 0;
  MBarrier* b = find_barrier(bar, "expect_tx", site, &off);
  if (b) b->tx += tx_bytes;
}

void mbarrier_wait(void* bar, int parity, Site site) {
  if (!need_sm90("mbarrier.try_wait", site)) return;
  uint32_t off = 0;
  MBarrier* b = find_barrier(bar, "wait", site, &off);
  if (!b) return;
  ThreadState& t = cur();
  parity &= 1;
  // The phase of this parity has completed when the barrier's current phase has the other parity.
  while (static_cast<int>(b->phase & 1) == parity) {
    t.wait_bar_off = off;
    yield(State::AtMbarrier, site,
          "mbarrier at shared offset " + std::to_string(off) + " (waits for a phase of parity " + std::to_string(parity) +
              "; " + std::to_string(b->phase) + " completed, " + std::to_string(b->pending) + " arrival(s) and " +
              std::to_string(b->tx) + " transaction byte(s) pending)");
    b = &L().mbarriers.at(off);
  }
  const uint64_t completed = b->phase - 1;
  uint64_t& next = t.waited_phase[off];
  if (next > completed)
    report("mbarrier phase out of step: " + thread_str(t.tid) + site_str(site) + " waits for parity " +
           std::to_string(parity) + " on the barrier at shared offset " + std::to_string(off) + ", satisfied by phase " +
           std::to_string(completed) + ", which this thread already waited for (its phase bit should have flipped)");
  else
    next = completed + 1;
  acquire(t, b->done_vc);
}

// ---- TMA ------------------------------------------------------------------------------------------------

namespace {
// The emulation's tensor map, inside the 128-byte CUtensorMap.
struct TmaMap {
  uint32_t magic;
  uint8_t elem_bytes, rank, swizzle_bytes, oob_nan;
  uint64_t global;
  uint64_t dims[5];
  uint64_t strides[5];
  uint16_t box[5];
};
static_assert(sizeof(TmaMap) <= 128, "the tensor map must fit a CUtensorMap");
constexpr uint32_t kTmaMagic = 0x544b4d4d;  // "MMKT"
}  // namespace

std::string tma_encode(void* desc, const TmaEncode& e) {
  std::memset(desc, 0, 128);
  auto bad = [](const std::string& why) { return "invalid TMA tensor map (cuTensorMapEncodeTiled's rules): " + why; };
  if (e.rank < 1 || e.rank > 5) return bad("rank " + std::to_string(e.rank) + " outside 1..5");
  if (e.elem_bytes != 1 && e.elem_bytes != 2 && e.elem_bytes != 4 && e.elem_bytes != 8)
    return bad("element size " + std::to_string(e.elem_bytes));
  if (reinterpret_cast<uintptr_t>(e.global) % 16) return bad("global address not 16-byte aligned");
  for (int d = 0; d < e.rank; ++d) {
    if (e.dims[d] < 1 || e.dims[d] > (uint64_t(1) << 32)) return bad("dim " + std::to_string(d) + " = " + std::to_string(e.dims[d]));
    if (e.box[d] < 1 || e.box[d] > 256) return bad("box dim " + std::to_string(d) + " = " + std::to_string(e.box[d]) + " outside 1..256");
    if (e.elem_strides[d] != 1) return bad("element strides other than 1 are not emulated");
    if (d > 0 && (e.strides[d] % 16 || e.strides[d] >= (uint64_t(1) << 40)))
      return bad("global stride of dim " + std::to_string(d) + " = " + std::to_string(e.strides[d]) +
                 " bytes (a multiple of 16 below 2^40)");
  }
  const uint32_t inner = e.box[0] * static_cast<uint32_t>(e.elem_bytes);
  if (inner % 16) return bad("inner box of " + std::to_string(inner) + " bytes (a multiple of 16)");
  if (e.swizzle_bytes != 0 && e.swizzle_bytes != 32 && e.swizzle_bytes != 64 && e.swizzle_bytes != 128)
    return bad("swizzle of " + std::to_string(e.swizzle_bytes) + " bytes");
  if (e.swizzle_bytes && inner > static_cast<uint32_t>(e.swizzle_bytes))
    return bad("inner box of " + std::to_string(inner) + " bytes exceeds the " + std::to_string(e.swizzle_bytes) + "-byte swizzle");
  TmaMap m{};
  m.magic = kTmaMagic;
  m.elem_bytes = static_cast<uint8_t>(e.elem_bytes);
  m.rank = static_cast<uint8_t>(e.rank);
  m.swizzle_bytes = static_cast<uint8_t>(e.swizzle_bytes);
  m.oob_nan = e.oob_nan;
  m.global = reinterpret_cast<uint64_t>(e.global);
  for (int d = 0; d < 5; ++d) {
    m.dims[d] = d < e.rank ? e.dims[d] : 1;
    m.strides[d] = d < e.rank ? e.strides[d] : 0;
    m.box[d] = static_cast<uint16_t>(d < e.rank ? e.box[d] : 1);
  }
  std::memcpy(desc, &m, sizeof m);
  return {};
}

void tma_load(const void* desc, void* bar, void* dst, const int32_t* coords, int rank, Site site) {
  if (!need_sm90("cp.async.bulk.tensor", site)) return;
  Launch& l = L();
  ThreadState& t = cur();
  TmaMap m;
  std::memcpy(&m, desc, sizeof m);
  const std::string who = thread_str(t.tid) + site_str(site);
  if (m.magic != kTmaMagic) {
    report("TMA load with a tensor map the emulation did not encode (made without dev::make_tma_load?): " + who);
    return;
  }
  if (rank != m.rank) {
    report("TMA load with " + std::to_string(rank) + " coordinates for a rank-" + std::to_string(m.rank) + " tensor map: " + who);
    return;
  }
  uint64_t elems = 1;
  for (int d = 0; d < 5; ++d) elems *= m.box[d];
  const uint32_t bytes = static_cast<uint32_t>(elems * m.elem_bytes);
  const int64_t off = smem_offset(dst, bytes, "is the destination of a TMA load into", site);
  if (off < 0) return;
  const uint32_t align = m.swizzle_bytes ? 8u * m.swizzle_bytes : 128u;
  if (off % align)
    report("TMA destination at shared offset " + std::to_string(off) + " not " + std::to_string(align) + "-byte aligned" +
           (m.swizzle_bytes ? " (the swizzle pattern is computed from address bits and repeats every 8 rows)" : "") +
           ": " + who);
  uint32_t bar_off = 0;
  MBarrier* b = find_barrier(bar, "complete_tx (TMA)", site, &bar_off);
  const uint32_t rows = m.swizzle_bytes == 128 ? 7u : m.swizzle_bytes == 64 ? 3u : m.swizzle_bytes == 32 ? 1u : 0u;
  const int agent = b ? b->agent : 0;
  const uint32_t clk = b ? b->agent_clk++ : 0;
  const auto* global = reinterpret_cast<const uint8_t*>(m.global);
  int64_t idx[5] = {0, 0, 0, 0, 0};
  for (uint64_t e = 0; e < elems; ++e) {
    uint64_t rest = e;
    bool inside = true;
    uint64_t src = 0;
    for (int d = 0; d < 5; ++d) {
      idx[d] = static_cast<int64_t>(rest % m.box[d]);
      rest /= m.box[d];
      const int64_t c = (d < rank ? coords[d] : 0) + idx[d];
      if (c < 0 || c >= static_cast<int64_t>(m.dims[d])) inside = false;
      else src += d == 0 ? static_cast<uint64_t>(c) * m.elem_bytes : static_cast<uint64_t>(c) * m.strides[d];
    }
    uint32_t a = static_cast<uint32_t>(off) + static_cast<uint32_t>(e) * m.elem_bytes;
    a ^= ((a >> 7) & rows) << 4;
    uint8_t* p = l.smem + a;
    if (inside) std::memcpy(p, global + src, m.elem_bytes);
    else if (m.oob_nan && m.elem_bytes == 4) std::memcpy(p, &kNaN32, 4);
    else if (m.oob_nan && m.elem_bytes == 2) std::memcpy(p, &kNaN16, 2);
    else std::memset(p, 0, m.elem_bytes);
    agent_write(t.tid, agent, clk, a, m.elem_bytes, site);
  }
  if (!b) return;
  // complete_tx: the TMA's bytes arrive (at once, in the emulation); its writes are released to whoever
  // waits for this phase.
  std::vector<uint32_t>& vc = b->phase_vc;
  if (vc.size() < l.threads.size() + kMaxAgents) vc.resize(l.threads.size() + kMaxAgents, 0);
  vc[agent_index(agent)] = std::max(vc[agent_index(agent)], clk);
  b->tx -= bytes;
  try_complete(*b, bar_off);
}

// ---- wgmma ------------------------------------------------------------------------------------------------

void wgmma_fence(Site site) {
  if (!need_sm90("wgmma.fence", site)) return;
  group_arrive(GroupKind::Fence, 0, site, [](WarpgroupState&, int) { cur().wgmma_fences++; },
               [](WarpgroupState& wg) { wg.fences++; });
}

void wgmma_issue(const WgmmaShape& sh, uint64_t desc_a, const uint32_t* a_regs, uint64_t desc_b, AccumReg* const* d,
                 Site site) {
  if (!need_sm90("wgmma.mma_async", site)) return;
  ThreadState& t = cur();
  if (sh.n < 8 || sh.n > 256 || sh.n % 8)
    fatal("wgmma with N = " + std::to_string(sh.n) + " (a multiple of 8 in 8..256 for 16-bit types): " + thread_str(t.tid) + site_str(site));
  const int regs = sh.n / 2;
  // The fence rule (9.7.15.7.1 wgmma.fence): a fence before the first wgmma, and between any other
  // access to its registers and the wgmma.
  std::string fence_problem;
  if (t.wgmma_fences == 0) fence_problem = "wgmma.mma_async before any wgmma.fence by " + thread_str(t.tid);
  for (int j = 0; j < regs && fence_problem.empty(); ++j)
    if (d[j]->stamp > t.wgmma_fences)
      fence_problem = "wgmma.mma_async on accumulator register " + std::to_string(j) + " that " + thread_str(t.tid) +
                      " accessed after its last wgmma.fence";
  for (int j = 0; j < regs; ++j) t.pending_regs.insert(d[j]);
  group_arrive(
      GroupKind::Issue, pack(sh), site,
      [&](WarpgroupState& wg, int i) {
        if (wg.arrived == 0) {
          wg.shape = sh;
          wg.desc_a = desc_a;
          wg.desc_b = desc_b;
          wg.d.assign(static_cast<size_t>(kWarpgroupThreads) * regs, nullptr);
          wg.a.assign(sh.a_regs ? kWarpgroupThreads * 4 : 0, 0);
          wg.problem.clear();
        } else if ((!sh.a_regs && wg.desc_a != desc_a) || wg.desc_b != desc_b) {
          fatal("threads of a warpgroup disagree on a wgmma's shared-memory descriptors: " + thread_str(cur().tid) +
                site_str(site));
        }
        if (wg.problem.empty() && !fence_problem.empty()) wg.problem = fence_problem;
        for (int j = 0; j < regs; ++j) wg.d[static_cast<size_t>(i) * regs + j] = d[j];
        if (sh.a_regs)
          for (int r = 0; r < 4; ++r) wg.a[i * 4 + r] = a_regs[r];
      },
      [&](WarpgroupState& wg) {
        if (!wg.problem.empty()) report(wg.problem + site_str(site) + " (wgmma.fence first: warpgroup_arrive)");
        WgmmaOp op;
        op.shape = sh;
        op.site = site;
        op.clk = wg.clk++;
        op.d = std::move(wg.d);
        op.a = std::move(wg.a);
        const int first = cur().tid - cur().tid % kWarpgroupThreads;
        if (operand_bytes(sh, wg.desc_a, wg.desc_b, op.bytes, site)) {
          std::sort(op.bytes.begin(), op.bytes.end());
          for (uint32_t a : op.bytes) async_read_issue(a, 2, first, site);
        } else {
          op.bytes.clear();
          op.shape.n = 0;  // not executed
        }
        op.desc_a = wg.desc_a;
        op.desc_b = wg.desc_b;
        wg.uncommitted.push_back(std::move(op));
      });
}

void wgmma_commit(Site site) {
  if (!need_sm90("wgmma.commit_group", site)) return;
  group_arrive(GroupKind::Commit, 0, site, [](WarpgroupState&, int) {},
               [](WarpgroupState& wg) {
                 wg.groups.push_back(std::move(wg.uncommitted));
                 wg.uncommitted.clear();
               });
}

void wgmma_wait(int pending, Site site) {
  if (!need_sm90("wgmma.wait_group", site)) return;
  if (pending < 0 || pending > 7) fatal("wgmma.wait_group " + std::to_string(pending) + " outside 0..7" + site_str(site));
  group_arrive(GroupKind::Wait, pending, site, [](WarpgroupState&, int) {},
               [pending](WarpgroupState& wg) {
                 Launch& l = L();
                 const int first = cur().tid - cur().tid % kWarpgroupThreads;
                 const int agent = first / kWarpgroupThreads;
                 uint32_t done_clk = 0;
                 while (static_cast<int>(wg.groups.size()) > pending) {
                   for (WgmmaOp& op : wg.groups.front()) {
                     if (op.shape.n) execute_wgmma(op, op.desc_a, op.desc_b);
                     const int regs = op.shape.n / 2;
                     for (int i = 0; i < kWarpgroupThreads; ++i)
                       for (int j = 0; j < regs; ++j) l.threads[first + i]->pending_regs.erase(op.d[static_cast<size_t>(i) * regs + j]);
                     const Rec rec{op.clk, static_cast<uint16_t>(agent_index(agent)), 0};
                     for (uint32_t a : op.bytes) async_read_complete(a, 2, rec);
                     done_clk = std::max(done_clk, op.clk);
                   }
                   wg.groups.pop_front();
                 }
                 if (done_clk)
                   for (int i = 0; i < kWarpgroupThreads; ++i) {
                     std::vector<uint32_t>& vc = vc_of(*l.threads[first + i]);
                     vc[agent_index(agent)] = std::max(vc[agent_index(agent)], done_clk);
                   }
               });
}

void accum_access(AccumReg* reg, const void* pc) {
  ThreadState& t = cur();
  if (!t.pending_regs.empty() && t.pending_regs.count(reg))
    report("wgmma accumulator accessed while the wgmma writing it is in flight: " + thread_str(t.tid) + pc_str(pc) +
           " (wgmma.wait_group first)");
  reg->stamp = t.wgmma_fences + 1;
}

}  // namespace mmkernels::dev::emu
