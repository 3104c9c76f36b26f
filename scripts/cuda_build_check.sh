#!/usr/bin/env bash
# The real GPU build, checked without a GPU: builds mmkernels with CUDA (MMKERNELS_CUDA=ON, archs
# 80;90a) against a CUDA build of torch in its own virtualenv, the way a user's `pip install` on a GPU
# machine does it; then checks that it imports, reports CUDA, and registers a CUDA kernel for every op
# in torch.ops.mmkernels (the dispatcher, no GPU needed); then prints the kernel audit
# (scripts/kernel_audit.py: registers, spills, shared memory, HMMA/LDSM/LDGSTS counts), which fails
# on spills in hot-path kernels.
#   MMKERNELS_CUDA_VENV   where the virtualenv lives (default: a temporary directory)
#   MMKERNELS_CUDA_TORCH  the torch to build against (default: torch==2.14.1, CUDA 13.0 here)
#   AUDIT_MARKDOWN        also write the audit table to this file
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "[cuda-build] nvcc not found: the CUDA build cannot be checked on this machine"
  exit 1
fi
# Temporary virtualenv and build tree (GBs) go when the script exits.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
VENV="${MMKERNELS_CUDA_VENV:-$scratch/venv-cuda}"
TORCH_SPEC="${MMKERNELS_CUDA_TORCH:-torch==2.14.1}"
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null \
  || "$VENV/bin/pip" install -q "$TORCH_SPEC"
# cuobjdump (+ nvdisasm, which its -sass runs) for the audit: the local toolkit has neither; the wheels'
# (newer) tools read CUDA 13.0 code.
source "$ROOT/scripts/deps.sh"
install_build_deps "$VENV/bin/pip"
"$VENV/bin/pip" install -q pytest nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
echo "[cuda-build] torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'), $("$NVCC" --version | tail -1)"
build_dir="${MMKERNELS_CUDA_BUILD_DIR:-$scratch/build}"
mkdir -p "$build_dir"  # a named build dir may not exist yet (the log goes there first)
if ! ( cd "$ROOT" && MMKERNELS_CUDA=ON MMKERNELS_CUDA_ARCHS="${MMKERNELS_CUDA_ARCHS:-80;90a}" MMKERNELS_CUDA_EMULATION=OFF \
       CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
       "$VENV/bin/pip" install -q --no-build-isolation --no-deps --config-settings=build-dir="$build_dir" . \
       > "$build_dir/build.log" 2>&1 ); then
  tail -60 "$build_dir/build.log"
  echo "[cuda-build] FAILED to build"
  exit 1
fi
echo "[cuda-build] built in $(( $(date +%s) - start ))s"
# Run outside the source tree so the installed package is the one imported.
( cd "$build_dir" && "$VENV/bin/python" - <<'PY'
import torch
import mmkernels
from mmkernels import testing

assert mmkernels.ops._C.with_cuda, "mmkernels does not report a CUDA build"
ops = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("mmkernels::"))
assert ops, "no mmkernels ops registered"
missing = [n for n in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]
assert not missing, f"ops without a CUDA kernel: {missing}"
assert torch._C._dispatch_has_kernel_for_dispatch_key("mmkernels_testing::conformance", "CUDA")
try:
    with testing.emulated_cuda():
        raise AssertionError("emulated_cuda() must raise in a build without the emulation")
except RuntimeError as e:
    assert "MMKERNELS_CUDA_EMULATION=ON" in str(e)
print(f"[cuda-build] import ok; CUDA kernels registered for {len(ops)} ops: {', '.join(ops)}")
PY
)
module="$(cd "$build_dir" && "$VENV/bin/python" -c 'import importlib.util as u; print(u.find_spec("mmkernels._C").origin)')"
# The audit's yardsticks: CUTLASS's own Hopper GEMM and FMHA (forward, backward) of our tiles, compiled in this run.
cutlass_inc="$("$VENV/bin/python" -c "import importlib.util as u, os; print(os.path.join(u.find_spec('cutlass_library').submodule_search_locations[0], 'source', 'include'))")"
t0=$(date +%s)
"$NVCC" -std=c++17 -O3 -DNDEBUG -arch=sm_90a -cubin --expt-relaxed-constexpr -I"$cutlass_inc" \
  -o "$build_dir/cutlass_sm90_gemm.cubin" "$ROOT/scripts/audit/cutlass_sm90_gemm.cu"
"$NVCC" -std=c++17 -O3 -DNDEBUG -arch=sm_90a -cubin --expt-relaxed-constexpr -I"$cutlass_inc" \
  -I"$cutlass_inc/../examples/88_hopper_fmha" \
  -o "$build_dir/cutlass_sm90_fmha.cubin" "$ROOT/scripts/audit/cutlass_sm90_fmha.cu"
"$NVCC" -std=c++17 -O3 -DNDEBUG -arch=sm_90a -cubin --expt-relaxed-constexpr -I"$cutlass_inc" \
  -I"$cutlass_inc/../examples/88_hopper_fmha" \
  -o "$build_dir/cutlass_sm90_fmha_bwd.cubin" "$ROOT/scripts/audit/cutlass_sm90_fmha_bwd.cu"
# Our sm_80 attention kernels with their interior path alone (the audit counts those loops per HMMA).
"$NVCC" -std=c++20 -O3 -DNDEBUG -arch=sm_80 -cubin --expt-relaxed-constexpr -I"$ROOT/csrc" -I"$cutlass_inc" \
  -o "$build_dir/ampere_interior.cubin" "$ROOT/scripts/audit/ampere_interior.cu"
echo "[cuda-build] CUTLASS reference GEMM and FMHA (fwd, bwd), our sm_80 attention's interior paths compiled in $(( $(date +%s) - t0 ))s"
"$VENV/bin/python" "$ROOT/scripts/kernel_audit.py" "$module" --reference "$build_dir/cutlass_sm90_gemm.cubin" \
  --attention-reference "$build_dir/cutlass_sm90_fmha.cubin" \
  --attention-bwd-reference "$build_dir/cutlass_sm90_fmha_bwd.cubin" --ampere-interior "$build_dir/ampere_interior.cubin" \
  ${AUDIT_MARKDOWN:+--markdown "$AUDIT_MARKDOWN"}
echo "[cuda-build] done in $(( $(date +%s) - start ))s"
