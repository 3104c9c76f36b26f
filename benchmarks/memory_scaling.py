"""Peak memory of cross_attention forward+backward vs sequence length, ours vs the eager reference.

Each measurement runs in a fresh subprocess and reports the growth of peak RSS (CPU) or
torch.cuda.max_memory_allocated (GPU) over the inputs' own footprint. Ours should grow like
O(B*H*(Lq+Lk)*D); the reference like O(B*H*Lq*Lk).

    python benchmarks/memory_scaling.py [--device cpu] [--lengths 1024,2048,4096,8192] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

def child(impl, L, B, H, D, dev):
    """One measurement, in a fresh process (``--child``): prints the growth of peak memory in bytes."""
    import resource

    import torch

    import mmkernels
    from mmkernels import reference as R

    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, L, H, D, generator=g, device=dev).requires_grad_() for _ in range(3))
    grad = torch.randn(B, L, H, D, generator=g, device=dev)
    fn = mmkernels.cross_attention if impl == "mmkernels" else R.cross_attention
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fn(q, k, v).backward(grad)
    if dev == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(max(peak - base, 0))


def measure(impl, L, B, H, D, device):
    out = subprocess.run([sys.executable, __file__, "--child", impl, str(L), str(B), str(H), str(D), device],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return int(out.stdout.strip().splitlines()[-1])


def main():
    if len(sys.argv) == 8 and sys.argv[1] == "--child":
        impl, L, B, H, D, dev = sys.argv[2:]
        return child(impl, int(L), int(B), int(H), int(D), dev)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lengths", default="1024,2048,4096,8192")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--max-reference-length", type=int, default=8192)
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    print(f"{'L':>6} {'impl':<16} {'extra peak MiB':>15} {'inputs MiB':>11}")
    for L in map(int, a.lengths.split(",")):
        inputs = 4 * a.batch * L * a.heads * a.head_dim * 4  # q, k, v, grad (float32)
        for impl in ("mmkernels", "reference"):
            if impl == "reference" and L > a.max_reference_length:
                continue
            b = measure(impl, L, a.batch, a.heads, a.head_dim, a.device)
            rows.append(dict(L=L, impl=impl, extra_peak_bytes=b, input_bytes=inputs))
            print(f"{L:>6} {impl:<16} {('failed' if b is None else f'{b / 2**20:.1f}'):>15} {inputs / 2**20:>11.1f}")
    if a.json:
        import torch

        from mmkernels.bench.__main__ import device_name, git_commit

        with open(a.json, "w") as f:
            json.dump(dict(device=device_name(torch.device(a.device)), torch_version=torch.__version__,
                           commit=git_commit(), B=a.batch, H=a.heads, D=a.head_dim, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
