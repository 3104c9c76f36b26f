#!/usr/bin/env bash
# The emulated CUDA suite under AddressSanitizer: global-memory out-of-bounds accesses of the CUDA
# kernels (which the emulation's own checkers do not see) are reported by ASan. Builds mmkernels with
# the emulation objects instrumented (MMKERNELS_EMULATION_SANITIZE=address; only the DEFAULT CPU
# kernel variant, to save build time) in its own virtualenv, then runs the emulation tests and the
# "emulated" op tests with libasan preloaded (float16 left out: it addresses memory exactly as
# bfloat16 does, and ASan makes the run ~3x slower).
#   MMKERNELS_ASAN_VENV   where the virtualenv lives (default: a temporary directory)
#   extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
# Temporary virtualenv and build tree (GBs) go when the script exits.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
VENV="${MMKERNELS_ASAN_VENV:-$scratch/venv-asan}"
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q "torch==2.13.0"
source "$ROOT/scripts/deps.sh"
install_build_deps "$VENV/bin/pip"
"$VENV/bin/pip" install -q pytest hypothesis
build_dir="$scratch/build"
mkdir -p "$build_dir"
if ! ( cd "$ROOT" && MMKERNELS_CUDA=OFF MMKERNELS_CUDA_EMULATION=ON MMKERNELS_EMULATION_SANITIZE=address \
       MMKERNELS_CPU_CAPABILITIES=DEFAULT CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
       "$VENV/bin/pip" install -q --no-build-isolation --no-deps --config-settings=build-dir="$build_dir" . \
       > "$build_dir/build.log" 2>&1 ); then
  tail -60 "$build_dir/build.log"
  echo "[asan] FAILED to build"
  exit 1
fi
echo "[asan] built in $(( $(date +%s) - start ))s"
# libstdc++ too: python itself does not link it, and ASan must find the real __cxa_throw at start-up.
preload="$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libstdc++.so)"
# Leaks: CPython and torch keep allocations until exit by design; only memory errors matter here.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1"
export MMKERNELS_EMULATION_SANITIZE=address
cd "$ROOT"
LD_PRELOAD="$preload" "$VENV/bin/pytest" tests/test_emulation.py tests/test_device_primitives.py \
  tests/test_cross_attention.py tests/test_concat_linear.py \
  -k "emulation or primitives or (emulated and not float16)" \
  -q -p no:cacheprovider "$@"
echo "[asan] done in $(( $(date +%s) - start ))s"
