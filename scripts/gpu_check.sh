#!/usr/bin/env bash
# One device call, sized for a 15-minute lease (a machine start is 1-2 of them): build with CUDA and the
# emulation, primitive conformance (hardware vs documented semantics vs emulation) first, every CUDA
# test, the GPU benchmark, the Hugging Face model benchmark, then compute-sanitizer while time is left.
# Every stage has its own time box inside GPU_CHECK_BUDGET_S, so the script always ends and writes its
# summary; everything lands in at most 8 files under $OUT (the device tool's limit).
# The device machine has no network, so the CUTLASS/CuTe headers travel with the call: here, first
#   bash scripts/gpu_check.sh --pack      # .deps/cutlass-include.tar.gz from the installed nvidia-cutlass
#   run(command="bash scripts/gpu_check.sh", carry=[".deps"], timeout_s=600)
# Uses the machine's python3 (torch with CUDA preinstalled, no network).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${1:-}" = "--pack" ]; then
  inc="$("${PYTHON:-$ROOT/.venv/bin/python}" -c "import importlib.util as u, os; print(os.path.join(u.find_spec('cutlass_library').submodule_search_locations[0], 'source', 'include'))")"
  mkdir -p .deps && tar -czf .deps/cutlass-include.tar.gz -C "$inc" cute cutlass
  echo "packed $(du -h .deps/cutlass-include.tar.gz | cut -f1) of CUTLASS headers from $inc"
  exit 0
fi
if [ -z "${MMKERNELS_CUTLASS_DIR:-}" ] && [ -f .deps/cutlass-include.tar.gz ]; then
  export MMKERNELS_CUTLASS_DIR=/tmp/mmk-cutlass-include
  mkdir -p "$MMKERNELS_CUTLASS_DIR" && tar -xzf .deps/cutlass-include.tar.gz -C "$MMKERNELS_CUTLASS_DIR"
fi
OUT="${OUT:-$ROOT/gpu-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
BUDGET=${GPU_CHECK_BUDGET_S:-560}
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
stamp() { echo "== [$(elapsed)s] $*"; }
# box CAP: seconds a stage may take, never past the overall budget (minus 10 s for the summary)
box() { local left=$(( BUDGET - 10 - $(elapsed) )); (( left < $1 )) && echo $(( left > 0 ? left : 1 )) || echo "$1"; }
declare -A RC

stamp "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
nvcc --version | tail -1

stamp "build (CUDA sm_90a + the emulation)"
MMKERNELS_CUDA=ON MMKERNELS_CUDA_EMULATION=ON MMKERNELS_CUDA_ARCHS="${MMKERNELS_CUDA_ARCHS:-90a}" \
  CMAKE_BUILD_PARALLEL_LEVEL=16 timeout "$(box 300)" python3 -m pip install --no-build-isolation --no-deps -e . \
  > "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; stamp "BUILD FAILED"; exit 1; }
python3 -c "import mmkernels; C = mmkernels.ops._C; assert C.with_cuda and C.with_emulation; print('built with CUDA and emulation')" \
  || exit 1

stamp "primitive conformance (first)"
timeout "$(box 60)" python3 -m pytest tests/test_device_primitives.py -q -p no:cacheprovider -rfE 2>&1 | tail -15
RC[conformance]=${PIPESTATUS[0]}

stamp "C++ exceptions from the CPU glue (a crash here: every C++ throw crashes on this machine, not the CUDA path)"
timeout "$(box 30)" python3 -m pytest -q -p no:cacheprovider -rfE tests/test_robustness.py::test_op_rejects_non_finite_scale \
  tests/test_concat_linear.py::test_direct_op_call_checks_arguments 2>&1 | tail -4
RC[cpp_throw_cpu]=${PIPESTATUS[0]}

stamp "CUDA tests (every op test's cuda parameters, test_cuda.py, sanitizer cases)"
timeout "$(box 170)" python3 -m pytest tests -q -p no:cacheprovider -k "cuda and not emulated" -n 8 --timeout 120 -rfE \
  > "$OUT/tests.log" 2>&1
RC[tests]=$?
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -30; tail -3 "$OUT/tests.log"
# A test that crashed its worker: the host backtrace, from cuda-gdb (two at most).
for id in $(grep -oE "crashed while running '[^']+'" "$OUT/tests.log" | cut -d"'" -f2 | head -2); do
  stamp "backtrace of crashed $id"
  timeout "$(box 60)" cuda-gdb -q -batch -ex run -ex "bt 14" --args python3 -m pytest -q -p no:cacheprovider "$id" 2>&1 \
    | grep -vE "^\[(New|Thread|Detaching)" | grep -A16 -E "SIG|signal" | head -40
done

stamp "benchmark (ops, bf16 + fp32; peers: SDPA backends, eager)"
timeout "$(box 170)" python3 -m mmkernels.bench --device cuda --suite ops --dtypes "${GPU_BENCH_DTYPES:-bfloat16,float32}" \
  --no-compile --budget 0.2 --json "$OUT/bench.json" --markdown "$OUT/bench.md" 2>/dev/null | tail -45
RC[bench]=${PIPESTATUS[0]}

stamp "Hugging Face ViT->BERT train step (bf16)"
timeout "$(box 60)" python3 benchmarks/hf_vit_bert.py --device cuda --json "$OUT/hf.json" 2>&1 | tail -25
RC[hf]=${PIPESTATUS[0]}

stamp "compute-sanitizer on tests/test_sanitizer_cases.py (while time is left)"
for tool in memcheck racecheck synccheck initcheck; do
  t=$(box 60)
  (( t < 20 )) && { echo "  $tool: skipped (no time left)"; RC[san_$tool]=skipped; continue; }
  timeout "$t" compute-sanitizer --tool $tool --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider \
    tests/test_sanitizer_cases.py > "$OUT/san.tmp" 2>&1
  rc=$?; RC[san_$tool]=$rc
  { echo "##### $tool rc=$rc"; grep -vE "^\s*$" "$OUT/san.tmp" | tail -40; } >> "$OUT/sanitizer.log"
  echo "  $tool: rc=$rc $(grep -E 'ERROR SUMMARY' "$OUT/san.tmp" | tail -1)"
done
rm -f "$OUT/san.tmp"

stamp "ncu: attention B4 L2048 H16 D128 and concat_linear M8192 256+256+128 N512 (the Hopper GEMM), bf16 fwd+bwd (if time is left)"
t=$(box 90)
if (( t >= 30 )); then
  timeout "$t" ncu --clock-control none --kernel-name regex:"flash|gemm_sm" --launch-count 11 --section SpeedOfLight \
    --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats python3 scripts/ncu_workload.py > "$OUT/ncu.txt" 2>&1
  RC[ncu]=$?
  grep -E "^  [a-z].*(flash_|tc_gemm)|Duration|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|No Eligible" \
    "$OUT/ncu.txt" | sed -E 's/\(CrossAttentionParams.*|\(mmkernels::.*GemmArgs.*//' | head -70
else
  echo "  skipped (no time left)"
fi

stamp "summary"
for k in "${!RC[@]}"; do echo "  $k: ${RC[$k]}"; done | sort
