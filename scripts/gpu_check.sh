#!/usr/bin/env bash
# One device call: build with CUDA (and the emulation), the primitive conformance test first, the whole
# test suite, compute-sanitizer on small cases, the kernel audit, the GPU benchmark (JSON/markdown/plot
# to $OUT), and a short summary last. For the device tool:
#   run(command="bash scripts/gpu_check.sh", timeout_s=600)
# Uses the machine's python3 (torch with CUDA preinstalled, no network).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
echo "== build (CUDA + the emulation, so the hardware can be compared with it)"
MMKERNELS_CUDA=ON MMKERNELS_CUDA_EMULATION=ON MMKERNELS_CUDA_ARCHS="${MMKERNELS_CUDA_ARCHS:-90a}" MAX_JOBS=16 \
  CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -50 "$OUT/build.log"; exit 1; }
python3 -c "import mmkernels, torch; assert mmkernels.ops._C.with_cuda; print('built with CUDA', torch.version.cuda)"
echo "== primitive conformance: hardware vs documented semantics vs the emulation (first)"
python3 -m pytest tests/test_device_primitives.py -q -p no:cacheprovider 2>&1 | tee "$OUT/conformance.log" | tail -15
conf_rc=${PIPESTATUS[0]}
echo "== tests (CUDA and CPU; the emulated suite runs in CI)"
python3 -m pytest tests -q -p no:cacheprovider -k "not emulated" 2>&1 | tee "$OUT/tests.log" | tail -15
test_rc=${PIPESTATUS[0]}
echo "== compute-sanitizer (memcheck, racecheck, initcheck, synccheck) on tests/test_sanitizer_cases.py"
san_rc=0
for tool in memcheck racecheck initcheck synccheck; do
  compute-sanitizer --tool $tool --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider \
    tests/test_sanitizer_cases.py > "$OUT/sanitizer-$tool.log" 2>&1
  rc=$?; echo "  $tool: rc=$rc $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)"
  [ $rc -eq 0 ] || san_rc=1
done
echo "== kernel audit"
python3 scripts/kernel_audit.py --markdown "$OUT/audit.md" | tail -5
echo "== benchmark"
python3 -m mmkernels.bench --device cuda --suite all --json "$OUT/bench.json" --markdown "$OUT/bench.md" \
  --plot "$OUT/bench.png" 2>"$OUT/bench.err" | tail -40
echo "== summary: conformance rc=$conf_rc tests rc=$test_rc sanitizers rc=$san_rc"
