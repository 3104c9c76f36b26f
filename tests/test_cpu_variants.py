"""The AVX2 CPU kernels on a machine that would pick AVX-512.

The float32 attention and concat_linear kernels have their own AVX2 code (the panel GEMM of
csrc/common/cpu/f32_gemm.h) that the AVX-512 build does not use. CI runs the whole suite per
MMKERNELS_CPU_CAPABILITY; this test keeps that path covered in a plain run on an AVX-512 host too, by
running the float32 accuracy tests (float64 reference, odd sizes 1/7/97/257, strided inputs,
kv_lengths, masks, rows without keys, gradients, determinism) again in a process pinned to avx2.
"""
import os
import subprocess
import sys

import pytest

import mmkernels

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(mmkernels.cpu_capability() != "avx512", reason="the main run already uses this CPU's best variant")
def test_avx2_kernels_pass_the_float32_accuracy_tests():
    env = dict(os.environ, MMKERNELS_CPU_CAPABILITY="avx2")
    code = "import mmkernels, sys; sys.exit(0 if mmkernels.cpu_capability() == 'avx2' else 3)"
    if subprocess.run([sys.executable, "-c", code], env=env).returncode == 3:
        pytest.skip("the avx2 variant is not built")
    select = ("(float32 and (within_budget or head_dims or noncontiguous or deterministic or narrow_views or wide_inputs)) "
              "or rows_without_keys or all_lengths_zero or degenerate or test_backward_computes_only")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", select,
                        os.path.join(HERE, "test_cross_attention.py"), os.path.join(HERE, "test_concat_linear.py")],
                       env=env, capture_output=True, text=True, timeout=900, cwd=os.path.dirname(HERE))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
