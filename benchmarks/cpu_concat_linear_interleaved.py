"""concat_linear vs eager `cat + linear + act`, interleaved in one process (benchmarks/NOTES.md, issue 27).

    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 MMKERNELS_CPU_CAPABILITY=avx2 \
        python benchmarks/cpu_concat_linear_interleaved.py [modes] [rounds]

modes: comma-separated of fwd, fwd+bwd, frozen (inputs not requiring grad; weight and bias do). Ours
and eager alternate in each round (this VM's timings drift 10-30% over minutes); the figure is the median
of the rounds' medians, ratio = eager time / ours (> 1: ours faster), geomean over the bench's shapes.
"""
import math
import statistics
import sys
import time

import torch

import mmkernels
from mmkernels import reference as R
from mmkernels.bench.cases import concat_linear_shapes


def bench(shape, mode, rounds, act="gelu"):
    M, dims, N = shape
    g = torch.Generator().manual_seed(0)
    need_x, need_w = mode == "fwd+bwd", mode != "fwd"
    xs = [torch.randn(M, d, generator=g).requires_grad_(need_x) for d in dims]
    w = (torch.randn(N, sum(dims), generator=g) / math.sqrt(sum(dims))).requires_grad_(need_w)
    b = torch.randn(N, generator=g).requires_grad_(need_w)
    gy = torch.randn(M, N, generator=g)

    def run(fn):
        def call():
            y = fn(xs, w, b, act)
            if need_w:
                y.backward(gy)
        return call

    impls = (run(mmkernels.concat_linear), run(R.concat_linear))
    flops = 2.0 * M * sum(dims) * N * (1 + need_w + need_x)
    for f in impls + impls:
        f()
    n = max(1, int(0.15 / (flops / 1.2e11)))
    times = ([], [])
    for _ in range(rounds):
        for f, lst in zip(impls, times):
            per = []
            for _ in range(3):
                t = time.perf_counter()
                for _ in range(n):
                    f()
                per.append((time.perf_counter() - t) / n)
            lst.append(statistics.median(per))
    return statistics.median(times[0]), statistics.median(times[1])


def main():
    modes = sys.argv[1].split(",") if len(sys.argv) > 1 else ["fwd", "fwd+bwd", "frozen"]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    print(f"capability {mmkernels.cpu_capability()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{torch.get_num_threads()} threads, {rounds} rounds")
    for mode in modes:
        ratios = []
        for shape in concat_linear_shapes(torch.device("cpu"), False):
            ours, eager = bench(shape, mode, rounds)
            ratios.append(eager / ours)
            print(f"{mode:8s} M{shape[0]} d{'+'.join(map(str, shape[1]))} N{shape[2]}: ours {ours * 1e3:7.3f} ms  "
                  f"eager {eager * 1e3:7.3f} ms  ratio {ratios[-1]:.3f}x", flush=True)
        print(f"{mode:8s} geomean {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}x", flush=True)


if __name__ == "__main__":
    main()
