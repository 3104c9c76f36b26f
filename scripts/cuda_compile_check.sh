#!/usr/bin/env bash
# Compiles every torch-free CUDA kernel translation unit (csrc/*/cuda/*_kernel*.cu) for sm_80 and
# sm_90a and prints ptxas register/spill lines. Needs only nvcc: the kernels include no torch
# headers, which is what lets a CPU-only machine (CI) check them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "[cuda-check] nvcc not found: skipped"
  exit 0
fi
shopt -s nullglob
units=("$ROOT"/csrc/*/cuda/*_kernel*.cu)
if [ ${#units[@]} -eq 0 ]; then
  echo "[cuda-check] no torch-free CUDA kernel units yet: nothing to compile"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
status=0
for cu in "${units[@]}"; do
  for arch in 80 90a; do
    echo "[cuda-check] $(realpath --relative-to="$ROOT" "$cu") sm_$arch"
    if ! "$NVCC" -std=c++17 -O3 -I"$ROOT/csrc" -gencode "arch=compute_${arch},code=sm_${arch}" \
        -Xptxas -v -c "$cu" -o "$tmp/out.o" 2> "$tmp/log"; then
      cat "$tmp/log"; status=1
    fi
    grep -E "registers|spill" "$tmp/log" | sed -e 's/^ptxas info *: /  /' | sort | uniq -c | sort -rn | head -40 || true
  done
done
exit $status
