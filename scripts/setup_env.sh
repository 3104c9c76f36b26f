#!/usr/bin/env bash
# Creates (or reuses) the project's virtualenv, installs torch and the build/test/bench tools, and
# builds mmkernels into it. Sourced by scripts/test.sh and scripts/bench.sh.
#   MMKERNELS_VENV  where the venv lives (default: .venv in the repository)
#   PYTHON          interpreter used to create it (default: python3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMKERNELS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA wheel.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q "torch==2.13.0"
source "$ROOT/scripts/deps.sh"
install_build_deps "$VENV/bin/pip"
"$VENV/bin/pip" install -q pytest hypothesis pytest-benchmark matplotlib scikit-learn "transformers>=5,<6"
echo "[setup] building mmkernels (torch $("$VENV/bin/python" -c 'import torch;print(torch.__version__)'))"
( cd "$ROOT" && CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    MMKERNELS_CUDA_EMULATION="${MMKERNELS_CUDA_EMULATION:-ON}" \
    "$VENV/bin/pip" install -q --no-build-isolation --no-deps -e . )
export VENV
