#!/usr/bin/env bash
# One device call: build with CUDA, run the CUDA tests, compute-sanitizer on small cases, the GPU
# benchmark (JSON/markdown/plot to $OUT), and a short summary last. For the device tool:
#   run(command="bash scripts/gpu_check.sh", timeout_s=600)
# Uses the machine's python3 (torch with CUDA preinstalled, no network).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
echo "== build"
MMKERNELS_CUDA=ON MMKERNELS_CUDA_ARCHS="${MMKERNELS_CUDA_ARCHS:-90a}" MAX_JOBS=16 CMAKE_BUILD_PARALLEL_LEVEL=16 \
  python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
python3 -c "import mmkernels, torch; assert mmkernels.ops._C.with_cuda; print('built with CUDA', torch.version.cuda)"
echo "== tests (CUDA and CPU)"
python3 -m pytest tests -q -x -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -15
test_rc=${PIPESTATUS[0]}
echo "== compute-sanitizer (memcheck, racecheck, initcheck, synccheck)"
cat > /tmp/mmk_small.py <<'PY'
import torch, mmkernels
for dt in (torch.float32, torch.bfloat16):
    q = torch.randn(2, 37, 4, 64, device="cuda", dtype=dt, requires_grad=True)
    k = torch.randn(2, 53, 2, 64, device="cuda", dtype=dt, requires_grad=True)
    m = torch.rand(2, 53, device="cuda") < 0.2
    out = mmkernels.cross_attention(q, k, k, kv_lengths=torch.tensor([53, 20], device="cuda"), key_padding_mask=m)
    out.float().sum().backward()
    xs = [torch.randn(33, 17, device="cuda", dtype=dt, requires_grad=True), torch.randn(33, 40, device="cuda", dtype=dt)]
    w = torch.randn(24, 57, device="cuda", dtype=dt, requires_grad=True)
    mmkernels.concat_linear(xs, w, None, "gelu").float().sum().backward()
torch.cuda.synchronize()
print("small cases ok")
PY
san_rc=0
for tool in memcheck racecheck initcheck synccheck; do
  compute-sanitizer --tool $tool --error-exitcode 9 python3 /tmp/mmk_small.py > "$OUT/sanitizer-$tool.log" 2>&1
  rc=$?; echo "  $tool: rc=$rc $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)"
  [ $rc -eq 0 ] || san_rc=1
done
echo "== benchmark"
python3 -m mmkernels.bench --device cuda --suite all --json "$OUT/bench.json" --markdown "$OUT/bench.md" \
  --plot "$OUT/bench.png" 2>"$OUT/bench.err" | tail -40
echo "== summary: tests rc=$test_rc sanitizers rc=$san_rc"
