"""python -m mmkernels.bench: time mmkernels' ops and models against their peers.

    python -m mmkernels.bench [--device auto|cpu|cuda] [--suite ops|models|all] [--ops OP,...]
                              [--dtypes float32,bfloat16,float16] [--quick] [--budget S] [--no-compile]
                              [--json PATH] [--markdown PATH] [--plot PATH]
                              [--compare BASELINE.json --max-regression R] [--replot REPORT.json]

Prints a table (median time, GFLOP/s, % of the matmul ceiling and, on CPU, % of the float32 FMA peak,
both measured in the same run, speed-up of mmkernels over each peer), writes JSON with the device, torch/CUDA versions, git commit and every
figure, and a PNG of the speed-ups. With --compare it exits 1 and names every case where mmkernels
got slower than the baseline by more than R (run it on the device that made the baseline: another
device only gets a warning).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List

import torch

import mmkernels

from .cases import OPS, OURS, build_cases, unknown_ops
from .timing import fma_peak, matmul_ceiling, time_fn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def git_commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for cwd in (os.getcwd(), here):
        try:
            out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
            if out.returncode == 0:
                dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                       capture_output=True, text=True, timeout=5).stdout.strip()
                return out.stdout.strip() + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return "unknown"


def progress(i: int, n: int, label: str) -> None:
    width = 28
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {label[:60]:<60}")
    sys.stderr.flush()
    if i == n:
        sys.stderr.write("\n")


def run_suite(args, device: torch.device) -> Dict:
    dtypes = [DTYPES[d] for d in args.dtypes.split(",")]
    builders = build_cases(args.suite, device, args.quick, dtypes, with_compile=not (args.quick or args.no_compile),
                           ops=args.ops.split(","))
    if not builders:
        raise SystemExit(f"no benchmark cases for --suite {args.suite}")
    budget = args.budget if args.budget is not None else (0.25 if args.quick else 1.0)
    # Yardsticks: the matmul ceiling per dtype (best of several large matmuls, probed again between the
    # cases: the maximum is kept) and, on CPU, the float32 FMA peak (at start and end, the maximum).
    ceilings = {str(dt).replace("torch.", ""): matmul_ceiling(dt, device, args.quick) for dt in dtypes}
    peak = fma_peak(device)
    results: List[Dict] = []
    failed: List[str] = []
    for idx, build in enumerate(builders):
        case = build()
        progress(idx, len(builders), f"{case.name} {str(case.dtype)[6:]} {case.mode}")
        key = str(case.dtype).replace("torch.", "")
        if key in ceilings:
            ceilings[key] = max(ceilings[key], matmul_ceiling(case.dtype, device, args.quick, runs=2))
        times = {}
        for impl, fn in case.impls.items():
            try:
                fn(0)  # trial: drops peers that refuse the input
            except Exception as e:  # noqa: BLE001 - any refusal means "not applicable"
                case.skipped[impl] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                continue
            t = time_fn(fn, device, warmup=2 if args.quick else 3, min_runs=5 if args.quick else 10, budget_s=budget)
            times[impl] = t
        if OURS not in times:  # reported (and the run fails at the end), the other cases still run
            failed.append(f"{case.name} {str(case.dtype)[6:]} {case.mode}: {case.skipped.get(OURS)}")
            del case
            continue
        ours = times[OURS].median_ms
        for impl, t in times.items():
            rate = case.flops / (t.median_ms / 1e3)
            row = dict(case=case.name, op=case.op, dtype=key, mode=case.mode,
                       params=case.params, impl=impl, median_ms=t.median_ms, iqr_ms=t.iqr_ms, runs=t.runs,
                       gflops=rate / 1e9 if case.flops else None)
            if impl == OURS:
                row["speedup_vs"] = {p: times[p].median_ms / ours for p in times if p != OURS}
                row["skipped_peers"] = dict(case.skipped)
            results.append(row)
        del case
    if peak is not None:
        peak = max(peak, fma_peak(device))
    for row in results:  # against the final (maximum) yardsticks
        c = ceilings.get(row["dtype"])
        g = row["gflops"]
        row["pct_of_ceiling"] = 100.0 * g * 1e9 / c if (c and g is not None) else None
        row["pct_of_fma_peak"] = 100.0 * g * 1e9 / peak if (peak and g is not None) else None
    progress(len(builders), len(builders), "done")
    return dict(
        device=device_name(device), device_type=device.type, torch_version=torch.__version__,
        cuda_version=torch.version.cuda, commit=git_commit(), mmkernels_version=mmkernels.__version__,
        cpu_capability=mmkernels.cpu_capability(), threads=torch.get_num_threads(), quick=args.quick,
        suite=args.suite, date=time.strftime("%Y-%m-%d %H:%M:%S"),
        ceiling_gflops={k: v / 1e9 for k, v in ceilings.items()},
        fma_peak_gflops=peak / 1e9 if peak else None, results=results, failed=failed,
    )


def yardsticks(report: Dict) -> str:
    """One line: the matmul ceiling per dtype and the FMA peak (reports written before it have none)."""
    text = ("ceiling (best measured matmul for the dtype, largest of the probes between cases): "
            + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in report["ceiling_gflops"].items()))
    if report.get("fma_peak_gflops"):
        text += (f"; float32 FMA peak {report['fma_peak_gflops']:.0f} GFLOP/s "
                 f"({report.get('cpu_capability', '?')} vectors, {report.get('threads', '?')} threads)")
    return text


def _pct(r: Dict, key: str) -> str:
    return f"{r[key]:.0f}" if r.get(key) is not None else "-"


def format_table(report: Dict) -> str:
    lines = [f"mmkernels bench | {report['device']} | torch {report['torch_version']} | commit {report['commit']}",
             yardsticks(report), ""]
    header = f"{'case':<52} {'dtype':<8} {'mode':<10} {'ms':>9} {'GFLOP/s':>8} {'%ceil':>6} {'%peak':>6}  speed-up vs peers"
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        if r["impl"] != OURS:
            continue
        sp = "  ".join(f"{p} {x:.2f}x" for p, x in sorted(r["speedup_vs"].items()))
        gf = f"{r['gflops']:.1f}" if r["gflops"] is not None else "-"
        lines.append(f"{r['case']:<52} {r['dtype']:<8} {r['mode']:<10} {r['median_ms']:>9.3f} {gf:>8} "
                     f"{_pct(r, 'pct_of_ceiling'):>6} {_pct(r, 'pct_of_fma_peak'):>6}  {sp}")
    return "\n".join(lines)


def format_markdown(report: Dict) -> str:
    out = [f"# mmkernels benchmark: {report['device']}", "",
           f"torch {report['torch_version']} (CUDA {report['cuda_version']}), commit `{report['commit']}`, "
           f"CPU kernels `{report['cpu_capability']}`, {report['threads']} threads, {report['date']}.", "",
           "Yardsticks, measured in the same run: " + yardsticks(report)
           + ". The ceiling is the dtype's own or float32's matmul (16-bit operands widen exactly).", "",
           "| case | dtype | mode | impl | median ms | GFLOP/s | % ceiling | % FMA peak | mmkernels speed-up |",
           "|---|---|---|---|---:|---:|---:|---:|---:|"]
    ours = {(r["case"], r["dtype"], r["mode"]): r for r in report["results"] if r["impl"] == OURS}
    for r in report["results"]:
        o = ours[(r["case"], r["dtype"], r["mode"])]
        sp = "—" if r["impl"] == OURS else f"{r['median_ms'] / o['median_ms']:.2f}x"
        gf = f"{r['gflops']:.1f}" if r["gflops"] is not None else "-"
        out.append(f"| {r['case']} | {r['dtype']} | {r['mode']} | {r['impl']} | {r['median_ms']:.3f} | "
                   f"{gf} | {_pct(r, 'pct_of_ceiling')} | {_pct(r, 'pct_of_fma_peak')} | {sp} |")
    return "\n".join(out) + "\n"


PLOT_PEERS = {  # one bar per family of peer, so the plot stays readable
    "SDPA (default)": ("sdpa",),
    "eager": ("eager_reference", "eager_cat_linear", "reference_ops"),
    "torch.compile": ("compiled_reference", "compiled_cat_linear", "compiled_reference_ops"),
    "FlexAttention": ("flex_attention",),
}


def write_plot(report: Dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["impl"] == OURS]
    families = [f for f, names in PLOT_PEERS.items() if any(n in r["speedup_vs"] for r in rows for n in names)]
    labels = [f"{r['case']} | {r['dtype']} {r['mode']}" for r in rows]
    fig, ax = plt.subplots(figsize=(11, 1.5 + 0.32 * len(rows)))
    h = 0.8 / max(len(families), 1)
    lo, hi = 1.0, 1.0
    for j, fam in enumerate(families):
        # bars grow from 1x (left for slower, right for faster) on a log axis, so 0.5x and 2x are as long
        vals = [next((r["speedup_vs"][n] for n in PLOT_PEERS[fam] if n in r["speedup_vs"]), None) for r in rows]
        ys = [i + j * h for i, v in enumerate(vals) if v]
        vs = [v for v in vals if v]
        lo, hi = min([lo] + vs), max([hi] + vs)
        ax.barh(ys, [v - 1.0 for v in vs], left=1.0, height=h, label=fam)
    ax.set_xscale("log")
    ax.set_xlim(min(0.5, lo / 1.2), max(2.0, hi * 1.2))
    ax.axvline(1.0, color="k", lw=1.2)
    ax.text(1.0, -0.7, " 1x (= peer)", fontsize=7, va="bottom")
    for x in (0.5, 0.9, 1.1, 2.0):
        ax.axvline(x, color="0.8", lw=0.6, ls="--", zorder=0)
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = [t for t in (0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100)
             if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.tick_params(axis="x", labelsize=7)
    ax.set_yticks([i + 0.4 - h / 2 for i in range(len(rows))])
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of mmkernels, log scale (peer time / mmkernels time; right of 1x = mmkernels faster)")
    cap = f", CPU kernels {report['cpu_capability']}" if report.get("device_type", "cpu") == "cpu" else ""
    ax.set_title(f"mmkernels vs peers: {report['device']}{cap}, torch {report['torch_version']}, commit {report['commit']}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(report: Dict, baseline_path: str, max_regression: float) -> List[str]:
    with open(baseline_path) as f:
        base = json.load(f)
    if base.get("device") != report["device"]:
        print(f"[compare] warning: baseline device '{base.get('device')}' differs from '{report['device']}'")
    key = lambda r: (r["case"], r["dtype"], r["mode"])
    base_ours = {key(r): r for r in base["results"] if r["impl"] == OURS}
    failures = []
    for r in report["results"]:
        if r["impl"] != OURS or key(r) not in base_ours:
            continue
        b = base_ours[key(r)]["median_ms"]
        if r["median_ms"] > b * (1 + max_regression):
            failures.append(f"{r['case']} {r['dtype']} {r['mode']}: {r['median_ms']:.3f} ms vs baseline {b:.3f} ms "
                            f"(+{100 * (r['median_ms'] / b - 1):.0f}% > {100 * max_regression:.0f}%)")
    return failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmkernels.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--suite", default="ops", choices=["ops", "models", "all"])
    ap.add_argument("--quick", action="store_true", help="fewer shapes and runs, no torch.compile peers (< 3 min on CPU)")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32,bfloat16,float16")
    ap.add_argument("--budget", type=float, help="seconds of timed runs per implementation and case "
                    "(default 1.0, 0.25 with --quick; at least 10 runs either way)")
    ap.add_argument("--ops", default=",".join(OPS),
                    help="comma-separated ops of the op suite (default: all): " + ",".join(OPS))
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile/FlexAttention peers")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--markdown", help="write a markdown table here")
    ap.add_argument("--plot", help="write a PNG of the speed-ups here")
    ap.add_argument("--compare", metavar="BASELINE.json", help="fail on regressions against this report")
    ap.add_argument("--replot", metavar="REPORT.json", help="only redraw --plot/--markdown from a saved report")
    ap.add_argument("--max-regression", type=float, default=0.10, help="allowed slow-down vs baseline (0.10 = 10%%)")
    args = ap.parse_args(argv)
    for d in args.dtypes.split(","):
        if d not in DTYPES:
            ap.error(f"--dtypes: unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    if unknown_ops(args.ops.split(",")):
        ap.error(f"--ops: unknown op(s) {', '.join(unknown_ops(args.ops.split(',')))}; choose from {', '.join(OPS)}")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device is available")
        device = torch.device(args.device)
    if args.replot:
        with open(args.replot) as f:
            report = json.load(f)
    else:
        report = run_suite(args, device)
    print(format_table(report))
    for path, text in ((args.json, json.dumps(report, indent=1)), (args.markdown, format_markdown(report) if args.markdown else None)):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            print(f"wrote {path}")
    if args.plot:
        write_plot(report, args.plot)
        print(f"wrote {args.plot}")
    if report.get("failed"):
        print(f"FAILED: mmkernels raised in {len(report['failed'])} case(s):")
        for f in report["failed"]:
            print("  " + f)
        return 1
    if args.compare:
        failures = compare(report, args.compare, args.max_regression)
        if failures:
            print(f"REGRESSION: {len(failures)} case(s) slower than {args.compare} by more than "
                  f"{100 * args.max_regression:.0f}%:")
            for f in failures:
                print("  " + f)
            return 1
        print(f"no regression beyond {100 * args.max_regression:.0f}% against {args.compare}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
