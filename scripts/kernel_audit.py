#!/usr/bin/env python3
"""Kernel audit of a CUDA build of mmkernels: for every kernel in the extension and every architecture,
registers, stack/local memory (spills), static shared memory, code size, and counts of tensor-core MMA
(HMMA; HGMMA = wgmma), ldmatrix (LDSM), async-copy (LDGSTS), TMA (UTMALDG) and mbarrier (SYNCS)
instructions, and setmaxnreg (USETMAXREG), read from the machine code with cuobjdump.

    python scripts/kernel_audit.py [path/to/_C.so] [--markdown out.md] [--reference cutlass_gemm.cubin]
                                   [--attention-reference cutlass_fmha.cubin]
                                   [--attention-bwd-reference cutlass_fmha_bwd.cubin] [--ampere-interior kernels.cubin]

Main-loop instruction mix of the wgmma kernels: the innermost loop that holds HGMMA (a backward branch
and its target bound it), its instructions other than HGMMA and NOP per HGMMA, next to the same figure
of CUTLASS's own kernel of the same tile, built in the same run by scripts/cuda_build_check.sh: its
warp-specialized GEMM (--reference, scripts/audit/cutlass_sm90_gemm.cu) for concat_linear, its Hopper
FMHA forward (--attention-reference, scripts/audit/cutlass_sm90_fmha.cu: examples/88_hopper_fmha,
head dim 128) for cross_attention's forward, its FMHA backward (--attention-bwd-reference,
scripts/audit/cutlass_sm90_fmha_bwd.cu) for the backward. Fails when an sm_90a concat_linear GEMM
lacks HGMMA or TMA, an sm_90a attention kernel lacks HGMMA, TMA or setmaxnreg, or a figure exceeds
1.25x CUTLASS's (for attention: the head-dim-128 kernels, the reference's tile). With --ampere-interior (the sm_80 attention
kernels compiled with their interior path alone, scripts/audit/ampere_interior.cu), reports the
forward's key loop (likewise innermost, with HMMA) and fails when it exceeds 3.0 non-MMA instructions
per HMMA at head dim 128.

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

COUNTED = ("HMMA", "HGMMA", "LDSM", "LDGSTS", "UTMALDG", "SYNCS", "USETMAXREG", "LDL", "STL")
# Allowed ratio of our main loop's non-MMA instructions per HGMMA to the reference's.
MAIN_LOOP_BUDGET = 1.25
# The sm_80 attention forward's interior loop at head dim 128: non-MMA instructions per HMMA
# (issue 25; FlashAttention-2's is 2.67).
AMPERE_FWD_BUDGET = 3.0


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
    name = re.sub(r"\((?:[^()]|\([^()]*\))*\)$", "", name)  # drop the parameter list
    name = re.sub(r"^void ", "", name)
    name = name.replace("mmkernels::", "").replace("(anonymous namespace)::", "").replace("gpu::", "")
    name = name.replace("cutlass::", "").replace("cute::", "").replace("cuda::sm90::Gemm<", "Gemm<")
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
        if (fn, arch) not in rows and (fn, None) in rows:  # a cubin's -res-usage names no architecture
            rows[(fn, arch)] = rows.pop((fn, None))
        if (fn, arch) not in rows:
            continue
        ins = parse_instruction(line)
        if ins:
            row = rows[(fn, arch)]
            row.setdefault("code", []).append(ins)
            if ins[1] in COUNTED:
                row[ins[1]] += 1
    names = demangle([fn for fn, _ in rows])
    out = []
    for (fn, arch), v in rows.items():
        code = v.pop("code", [])
        out.append(dict(kernel=short(names[fn]), mangled=fn, arch=arch, bytes=16 * len(code),
                        main_loop=mma_loop(code, "HGMMA"), hmma_loop=mma_loop(code, "HMMA"), **v))
    return out


def parse_instruction(line):
    """(address, opcode, branch target or None) of one SASS line of cuobjdump -sass, or None."""
    m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)([^;]*)", line)
    if not m:
        return None
    target = None
    if m.group(2) == "BRA":
        t = re.search(r"0x([0-9a-f]+)\s*$", m.group(3).strip())
        target = int(t.group(1), 16) if t else None
    return int(m.group(1), 16), m.group(2), target


def mma_loop(code, mma_op):
    """(instructions other than MMA and NOP, MMA) of the innermost loop that holds mma_op, or None."""
    best = None
    # ptxas places the retry paths of mbarrier waits after the function's last EXIT and branches from
    # there back into the body: such a branch is no loop, so only branches before the last EXIT count.
    end = max((a for a, o, _ in code if o == "EXIT"), default=None)
    for addr, op, target in code:
        if op != "BRA" or target is None or target > addr or (end is not None and addr > end):
            continue  # a loop: a backward branch, its body [target, addr]
        body = [o for a, o, _ in code if target <= a <= addr]
        mma = body.count(mma_op)
        if mma and (best is None or addr - target < best[0]):
            best = (addr - target, sum(o not in (mma_op, "NOP") for o in body), mma)
    return None if best is None else best[1:]


def reference_loop(cubin: str):
    """The reference cubin's main-loop figure (the kernel with the most HGMMA in its loop)."""
    rows = audit(cubin)
    loops = [r["main_loop"] for r in rows if r["main_loop"]]
    if not loops:
        sys.exit(f"kernel_audit: no wgmma main loop in the reference {cubin}")
    return max(loops, key=lambda l: l[1])


def dynamic_smem() -> dict:
    try:
        import mmkernels._C as C  # noqa: the module of this environment (the audited one in CI)

        return dict(C._cuda_kernel_dynamic_smem())
    except (ImportError, AttributeError):
        return {}


def hot(row) -> bool:
    return row["kernel"].startswith("cuda::")


def sm90_concat_linear(row) -> bool:
    return row["arch"] == "sm_90a" and row["kernel"].startswith("cuda::sm90::gemm_sm90_kernel")


def sm90_attention(row) -> bool:
    return row["arch"] == "sm_90a" and row["kernel"].startswith("cuda::flash_sm90::flash_sm90_fwd_kernel")


def sm90_attention_bwd(row) -> bool:
    return row["arch"] == "sm_90a" and row["kernel"].startswith("cuda::flash_sm90::flash_sm90_bwd_kernel")


# The kernel families held to CUTLASS's figure: (which kernels, the opcodes they must have, which of
# them share the reference's tile and so its budget, reference option, what the reference is).
FAMILIES = (
    (sm90_concat_linear, ("HGMMA", "UTMALDG"), lambda r: True, "reference",
     "CUTLASS CollectiveBuilder GEMM, 128x128x64 bf16, cooperative"),
    (sm90_attention, ("HGMMA", "UTMALDG", "USETMAXREG"), lambda r: re.search(r"Fwd<[^<>]*, 128>", r["kernel"]),
     "attention_reference", "CUTLASS examples/88_hopper_fmha forward, 128x128 hdim 128 fp16, cooperative"),
    (sm90_attention_bwd, ("HGMMA", "UTMALDG", "USETMAXREG"), lambda r: re.search(r"Bwd<[^<>]*, 128>", r["kernel"]),
     "attention_bwd_reference", "CUTLASS examples/88_hopper_fmha backward, 64x128 hdim 128 fp16, cooperative"),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("module", nargs="?", help="the built extension (default: the importable mmkernels._C)")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--reference", help="CUTLASS's GEMM cubin: the yardstick of concat_linear's main loops")
    ap.add_argument("--attention-reference", help="CUTLASS's FMHA cubin: the yardstick of the attention forward")
    ap.add_argument("--attention-bwd-reference", help="CUTLASS's FMHA backward cubin: the yardstick of the sm_90a "
                    "backward")
    ap.add_argument("--ampere-interior", help="scripts/audit/ampere_interior.cu compiled for sm_80: the interior "
                    f"loop of the sm_80 attention forward, held to {AMPERE_FWD_BUDGET} non-MMA per HMMA at D 128")
    args = ap.parse_args()
    rows = sorted(audit(args.module or default_module()), key=lambda r: (r["kernel"], r["arch"]))
    dyn = dynamic_smem()
    refs = {opt: reference_loop(getattr(args, opt)) if getattr(args, opt) else None for *_, opt, _ in FAMILIES}
    header = ("| kernel | arch | regs | stack B | static smem B | dynamic smem B | code KB | HMMA | HGMMA | LDSM | LDGSTS "
              "| TMA | SYNCS | setmaxnreg | main loop non-MMA/MMA | local ld/st (spills) |")
    lines = [header, "|" + "---|" * 16]
    bad, problems = [], []
    for r in rows:
        spill = r["LDL"] + r["STL"]
        if spill and hot(r):
            bad.append(r)
        loop = r["main_loop"]
        ratio = loop[0] / loop[1] if loop else None
        lines.append(f"| {r['kernel']} | {r['arch']} | {r['reg']} | {r['stack']} | {r['shared']} | "
                     f"{dyn.get(r['kernel'], '-')} | {r['bytes'] / 1024:.1f} | "
                     f"{r['HMMA']} | {r['HGMMA']} | {r['LDSM']} | {r['LDGSTS']} | {r['UTMALDG']} | {r['SYNCS']} | "
                     f"{r['USETMAXREG']} | {f'{ratio:.2f} ({loop[0]}/{loop[1]})' if loop else '-'} | "
                     f"{spill if spill else 'none'} |")
        for member, needed, same_tile, opt, _ in FAMILIES:
            if not member(r):
                continue
            ref = refs[opt]
            if not all(r[op] for op in needed):
                problems.append(f"{r['kernel']} [sm_90a] lacks " + ", ".join(op for op in needed if not r[op]))
            elif not loop:
                problems.append(f"{r['kernel']} [sm_90a] has no wgmma main loop")
            elif ref and same_tile(r) and ratio > MAIN_LOOP_BUDGET * ref[0] / ref[1]:
                problems.append(f"{r['kernel']} [sm_90a]: main loop {ratio:.2f} non-MMA instructions per HGMMA, "
                                f"above {MAIN_LOOP_BUDGET} x CUTLASS's {ref[0] / ref[1]:.2f}")
    if args.ampere_interior:
        lines.append("\nsm_80 attention forward, interior path (every key tile interior and whole):")
        for r in sorted(audit(args.ampere_interior), key=lambda r: r["kernel"]):
            loop = r["hmma_loop"]  # the forward's key loop has no inner loop (its GEMM steps are unrolled)
            if not loop or not r["kernel"].startswith("cuda::flash::flash_fwd_kernel"):
                continue
            ratio = loop[0] / loop[1]
            lines.append(f"- {r['kernel']}: {ratio:.2f} non-MMA instructions per HMMA ({loop[0]}/{loop[1]}), "
                         f"{r['reg']} registers, {r['LDL'] + r['STL']} local ld/st")
            if re.match(r"cuda::flash::flash_fwd_kernel<.*, 128>", r["kernel"]) and ratio > AMPERE_FWD_BUDGET:
                problems.append(f"{r['kernel']} [sm_80] interior loop: {ratio:.2f} non-MMA instructions per HMMA, "
                                f"above {AMPERE_FWD_BUDGET}")
    for *_, opt, what in FAMILIES:
        ref = refs[opt]
        if ref:
            lines.append(f"\nReference ({what}): main loop {ref[0] / ref[1]:.2f} non-MMA instructions per HGMMA "
                         f"({ref[0]}/{ref[1]}); budget {MAIN_LOOP_BUDGET}x = {MAIN_LOOP_BUDGET * ref[0] / ref[1]:.2f}.")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if not rows:
        print("kernel_audit: no device code found in the module (was it built with MMKERNELS_CUDA=ON?)")
        return 1
    if any(r["arch"] == "sm_90a" for r in rows):
        for member, *_, what in FAMILIES:
            if not any(member(r) for r in rows):
                problems.append(f"no sm_90a kernel of the family measured against {what}")
    if bad:
        print(f"kernel_audit: {len(bad)} hot-path kernel(s) spill to local memory:")
        for r in bad:
            print(f"  {r['kernel']} [{r['arch']}]: {r['LDL']} LDL, {r['STL']} STL, stack {r['stack']} B")
    for p in problems:
        print(f"kernel_audit: {p}")
    if bad or problems:
        return 1
    print(f"kernel_audit: {len(rows)} kernel images, no spills on the hot path"
          + (", the sm_90a GEMM and attention kernels use wgmma and TMA within the main-loop budget"
             if all(refs.values()) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
