"""Per-phase time of the CPU attention kernels, ours and SDPA's (benchmarks/NOTES.md, "AVX2 hosts").

    # ours, from the kernels' own phase timers (a build with -DMMK_PHASE_TIMERS, see csrc/common/cpu/phase_timer.h):
    CXXFLAGS=-DMMK_PHASE_TIMERS pip install --no-build-isolation --no-deps -e .
    python benchmarks/cpu_breakdown.py phases --mode fwd --shape 4,1024,1024,8,128
    # either implementation under a sampling profiler, its samples sorted into the same phases:
    perf record -o sdpa.data -- python benchmarks/cpu_breakdown.py run --impl sdpa --shape 4,1024,1024,8,128
    python benchmarks/cpu_breakdown.py perf sdpa.data

`phases` prints, per phase, the cycles summed over threads as a share of the threads' busy time, and
the wall time's split into busy time and the rest (fork/join and load imbalance).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import mmkernels


def make(shape, mode, masked, seed=0):
    B, Lq, Lk, H, D = shape
    g = torch.Generator().manual_seed(seed)
    need = mode == "fwd+bwd"
    q, k, v = (torch.randn(B, L, H, D, generator=g).requires_grad_(need) for L in (Lq, Lk, Lk))
    lens = torch.randint(Lk // 2, Lk + 1, (B,), generator=g) if masked else None
    grad = torch.randn(B, Lq, H, D, generator=g) if need else None
    return q, k, v, lens, grad


def runner(impl, shape, mode, masked):
    q, k, v, lens, grad = make(shape, mode, masked)
    Lk = shape[2]
    mask = None if lens is None else (torch.arange(Lk)[None, :] < lens[:, None])[:, None, None, :]

    def call():
        if impl == "ours":
            out = mmkernels.cross_attention(q, k, v, kv_lengths=lens)
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 attn_mask=mask).transpose(1, 2)
        if grad is not None:
            out.backward(grad)
    return call


def cmd_run(args):
    call = runner(args.impl, args.shape, args.mode, args.masked)
    for _ in range(3):
        call()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    print(f"{args.impl} {args.mode} {args.shape}: median {1e3 * statistics.median(times):.2f} ms")


def parse(path):
    calls = collections.defaultdict(list)
    for line in open(path):
        kernel, *fields = line.split()
        calls[kernel].append({k: int(v) for k, v in (f.split("=") for f in fields)})
    return calls


def cmd_phases(args):
    fd, path = tempfile.mkstemp(suffix=".phases")
    os.close(fd)
    os.environ["MMK_PHASE_FILE"] = path
    call = runner("ours", args.shape, args.mode, args.masked)
    for _ in range(3):
        call()
    open(path, "w").close()
    for _ in range(args.iters):
        call()
    calls = parse(path)
    if not calls:
        raise SystemExit("no phase records: is mmkernels built with -DMMK_PHASE_TIMERS?")
    for kernel, recs in calls.items():
        wall = statistics.median(r["wall"] for r in recs)
        phases = collections.defaultdict(list)
        threads = set()
        for r in recs:
            per = collections.Counter()
            for key, c in r.items():
                m = re.fullmatch(r"t(\d+)\.(\w+)", key)
                if m:
                    threads.add(int(m.group(1)))
                    per[m.group(2)] += c
            for name, c in per.items():
                phases[name].append(c)
        busy = statistics.median(phases.pop("busy"))
        print(f"{kernel}: {len(recs)} calls, {len(threads)} threads, median wall {wall / 1e6:.2f} Mcycles, "
              f"busy {busy / len(threads) / 1e6:.2f} Mcycles per thread "
              f"({100 * (1 - busy / len(threads) / wall):.1f}% of wall outside the tasks: fork/join, imbalance)")
        for name, cs in sorted(phases.items(), key=lambda kv: -statistics.median(kv[1])):
            c = statistics.median(cs)
            print(f"  {name:<14} {100 * c / busy:5.1f}%  {c / len(threads) / 1e6:8.2f} Mcycles per thread")
    os.unlink(path)


# perf symbol -> phase, first match wins (SDPA: MKL's sgemm and its packing; the flash kernel's own loop
# holds the softmax, its rescaling and the output; our kernels inline everything into their lambdas).
PERF_PHASES = [
    ("gemm kernel", r"sgemm_kernel|brgemm|jit|\[unknown\]"),
    ("gemm packing/scaling", r"sgemm_.*copy|mscale|sgemm_.*(pack|beta)"),
    ("exp (Sleef)", r"Sleef|expf"),
    ("flash kernel loop (softmax, rescale, output)", r"cpu_flash_attention"),
    ("threads (OpenMP)", r"libgomp|omp_"),
    ("mmkernels kernel (all phases)", r"mmkernels|_C\.cpython"),
]


def cmd_perf(args):
    import subprocess

    out = subprocess.run(["perf", "report", "-i", args.file, "--stdio", "--sort", "dso,sym"], capture_output=True,
                         text=True, check=True).stdout
    shares = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        # interpreter, start-up, page faults: not the op (but our extension, _C.cpython-*.so, is)
        if re.fullmatch(r"(lib)?python[\d.]*(\.so.*)?", dso) or dso.startswith("[kernel"):
            continue
        name = next((n for n, rx in PERF_PHASES if re.search(rx, dso + " " + sym)), "other (allocation, dispatch, ...)")
        shares[name] += pct
    total = sum(shares.values())
    print(f"{args.file}: {total:.1f}% of all samples in the op's libraries")
    for name, pct in shares.most_common():
        print(f"  {name:<48} {100 * pct / total:5.1f}%")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["run", "phases", "perf"])
    ap.add_argument("file", nargs="?", help="perf: a perf.data file")
    ap.add_argument("--impl", default="ours", choices=["ours", "sdpa"])
    ap.add_argument("--mode", default="fwd", choices=["fwd", "fwd+bwd"])
    ap.add_argument("--shape", default="4,1024,1024,8,128", type=lambda s: tuple(int(x) for x in s.split(",")))
    ap.add_argument("--masked", action="store_true", help="kv_lengths ~ U[Lk/2, Lk] (SDPA: the same boolean mask)")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    {"run": cmd_run, "phases": cmd_phases, "perf": cmd_perf}[args.command](args)


if __name__ == "__main__":
    main()
