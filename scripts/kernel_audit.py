#!/usr/bin/env python3
"""Kernel audit of a CUDA build of mmkernels: for every kernel in the extension and every architecture,
registers, stack/local memory (spills), static shared memory, and counts of tensor-core MMA (HMMA),
ldmatrix (LDSM) and async-copy (LDGSTS) instructions, read from the machine code with cuobjdump.

    python scripts/kernel_audit.py [path/to/_C.so] [--markdown out.md]

The dynamic shared memory of each launch comes from the
kernels' traits through the built module (mmkernels._C._cuda_kernel_dynamic_smem), when importable.

Exits 1 when a kernel on the hot path (mmkernels::cuda::*) spills: any local-memory load/store
(LDL/STL) in its machine code, which is where ptxas puts spilled registers (and dynamically indexed
register arrays, just as slow). A small stack frame alone (a call's frame) is reported, not failed. Needs cuobjdump and nvdisasm (CUDA toolkit, or the
nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels) and c++filt.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys

COUNTED = ("HMMA", "LDSM", "LDGSTS", "LDL", "STL")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"kernel_audit: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def find_tool(name: str) -> str:
    for d in [os.path.dirname(sys.executable)] + glob.glob(os.path.join(sys.prefix, "lib", "python*", "site-packages",
                                                                       "nvidia", "cu*", "bin")):
        p = os.path.join(d, name)
        if os.path.exists(p):
            os.chmod(p, os.stat(p).st_mode | 0o111)
            return p
    p = shutil.which(name)
    if not p:
        sys.exit(f"kernel_audit: {name} not found (install the CUDA toolkit or `pip install nvidia-cuda-{name}`)")
    return p


def default_module() -> str:
    import importlib.util

    spec = importlib.util.find_spec("mmkernels._C")
    if spec is None or not spec.origin:
        sys.exit("kernel_audit: mmkernels._C not importable; pass the module path")
    return spec.origin


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def short(name: str) -> str:
    name = re.sub(r"\((.*)\)$", "", name)  # drop the parameter list
    name = re.sub(r"^void ", "", name)
    name = name.replace("mmkernels::", "").replace("(anonymous namespace)::", "").replace("gpu::", "")
    return name.replace("__nv_bfloat16", "bf16").replace("__half", "half")


def audit(module: str):
    cuobjdump = find_tool("cuobjdump")
    res = run([cuobjdump, "-res-usage", module])
    rows = collections.OrderedDict()
    arch = None
    for line in res.splitlines():
        m = re.match(r"\s*arch = (sm_\w+)", line)
        if m:
            arch = m.group(1)
            continue
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            fn = m.group(1)
            continue
        m = re.match(r"\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
        if m:
            rows[(fn, arch)] = dict(reg=int(m.group(1)), stack=int(m.group(2)), shared=int(m.group(3)),
                                    local=int(m.group(4)), **{k: 0 for k in COUNTED})
    find_tool("nvdisasm")  # cuobjdump -sass runs it; found next to cuobjdump or on PATH
    env_path = os.path.dirname(cuobjdump) + os.pathsep + os.environ.get("PATH", "")
    r = subprocess.run([cuobjdump, "-sass", module], capture_output=True, text=True, env={**os.environ, "PATH": env_path})
    if r.returncode != 0:
        sys.exit(f"kernel_audit: cuobjdump -sass failed:\n{r.stderr[-2000:]}")
    sass = r.stdout
    arch = fn = None
    for line in sass.splitlines():
        m = re.match(r"\s*code for (sm_\w+)", line)
        if m:
            arch = m.group(1)
            continue
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            fn = m.group(1)
            continue
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m and (fn, arch) in rows:
            op = m.group(1)
            for k in COUNTED:
                if op == k:
                    rows[(fn, arch)][k] += 1
    names = demangle([fn for fn, _ in rows])
    return [dict(kernel=short(names[fn]), mangled=fn, arch=arch, **v) for (fn, arch), v in rows.items()]


def dynamic_smem() -> dict:
    try:
        import mmkernels._C as C  # noqa: the module of this environment (the audited one in CI)

        return dict(C._cuda_kernel_dynamic_smem())
    except (ImportError, AttributeError):
        return {}


def hot(row) -> bool:
    return row["kernel"].startswith("cuda::")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("module", nargs="?", help="the built extension (default: the importable mmkernels._C)")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    rows = sorted(audit(args.module or default_module()), key=lambda r: (r["kernel"], r["arch"]))
    dyn = dynamic_smem()
    header = ("| kernel | arch | regs | stack B | static smem B | dynamic smem B | HMMA | LDSM | LDGSTS "
              "| local ld/st (spills) |")
    lines = [header, "|" + "---|" * 10]
    bad = []
    for r in rows:
        spill = r["LDL"] + r["STL"]
        if spill and hot(r):
            bad.append(r)
        lines.append(f"| {r['kernel']} | {r['arch']} | {r['reg']} | {r['stack']} | {r['shared']} | "
                     f"{dyn.get(r['kernel'], '-')} | "
                     f"{r['HMMA']} | {r['LDSM']} | {r['LDGSTS']} | {spill if spill else 'none'} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if not rows:
        print("kernel_audit: no device code found in the module (was it built with MMKERNELS_CUDA=ON?)")
        return 1
    if bad:
        print(f"kernel_audit: {len(bad)} hot-path kernel(s) spill to local memory:")
        for r in bad:
            print(f"  {r['kernel']} [{r['arch']}]: {r['LDL']} LDL, {r['STL']} STL, stack {r['stack']} B")
        return 1
    print(f"kernel_audit: {len(rows)} kernel images, no spills on the hot path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
