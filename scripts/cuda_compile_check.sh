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

# The torch glue (*_cuda.cpp) needs a CUDA build of torch to compile for real; with the CPU wheel's
# headers (which ship ATen/c10 CUDA headers but not one generated file) we can still syntax-check it.
PY="${PYTHON:-python3}"
if TORCH_INC="$("$PY" -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])' 2>/dev/null)"; then
  mkdir -p "$tmp/stub/c10/cuda/impl" && echo '#pragma once' > "$tmp/stub/c10/cuda/impl/cuda_cmake_macros.h"
  cuda_inc="$(dirname "$(readlink -f "$(command -v "$NVCC")")")/../include"
  [ -f "$cuda_inc/cuda_runtime_api.h" ] || cuda_inc=/usr/local/cuda/include
  for glue in "$ROOT"/csrc/*/cuda/*_cuda.cpp; do
    echo "[cuda-check] syntax of $(realpath --relative-to="$ROOT" "$glue")"
    if ! "${CXX:-g++}" -std=c++17 -fsyntax-only -w -I"$tmp/stub" -I"$ROOT/csrc" -I"$TORCH_INC" \
        -I"$TORCH_INC/torch/csrc/api/include" -I"$cuda_inc" "$glue"; then
      status=1
    fi
  done
else
  echo "[cuda-check] no torch importable with $PY: glue syntax check skipped"
fi
exit $status
