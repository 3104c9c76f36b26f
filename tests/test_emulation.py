"""The host SIMT emulation's checkers and its Python interface (mmkernels.testing).

Deliberately broken kernels (csrc/common/device/selftest/) must each be reported, with the kind of
problem, the kernel, the block and the thread; their fixed versions must run clean. The op-level
emulated suite is the "emulated" device of test_cross_attention.py / test_concat_linear.py.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import mmkernels
from mmkernels.testing import emulated_cuda

from test_device_primitives import LDMATRIX, WGMMA

C = mmkernels.ops._C
needs_emulation = pytest.mark.skipif(not C.with_emulation, reason="needs MMKERNELS_CUDA_EMULATION=ON")

# Self-test kernel -> words its report must contain.
BROKEN = {
    "missing_barrier": ["shared-memory race", "no barrier in between"],
    "smem_off_by_one": ["shared-memory out of bounds", "thread (63,0,0)", "offset 256 of a 256-byte block"],
    "divergent_barrier": ["barrier divergence", "__syncthreads"],
    "uninitialized_read": ["uninitialized shared-memory read", "thread (63,0,0)", "offset 252"],
    "absent_lanes": ["names lanes that do not exist", "mask 0xffffffff", "has lanes 0x0000ffff"],
    "mismatched_shuffle": ["lanes of a warp disagree", "shfl"],
    "cp_async_no_wait": ["read before cp.async completed"],
    "missing_syncwarp": ["shared-memory race", "no barrier in between"],
    "flag_wait_on_later_block": ["global flag wait no earlier block satisfies", "thread (0,0,0) waits for 1"],
    # sm_90a (selftest_sm90.cpp): TMA, wgmma, mbarriers, named barriers
    "tma_read_before_wait": ["read before the TMA that fills it completed", "mbarrier phase"],
    "wgmma_operand_overwritten": ["write while a wgmma reads it", "thread (0,0,0) writes shared offset 0"],
    "wgmma_accumulator_read_early": ["wgmma accumulator accessed while the wgmma writing it is in flight"],
    "wgmma_missing_fence": ["wgmma.mma_async before any wgmma.fence", "selftest_sm90.cpp"],
    "missing_proxy_fence": ["generic-proxy write not visible to the async proxy", "fence.proxy.async"],
    "mbarrier_phase_out_of_step": ["mbarrier phase out of step", "already waited for"],
    "mbarrier_tx_mismatch": ["deadlock", "mbarrier at shared offset", "-4096 transaction byte(s) pending"],
    "mbarrier_init_not_visible": ["before its initialization is visible", "initialized by thread (0,0,0)"],
    "named_barrier_never_arrived": ["deadlock", "named barrier 1"],
    "stage_released_before_read": ["write after read", "a TMA issued by thread (0,0,0)", "read by thread (32,0,0)"],
    "broadcast_released_by_one_warp": ["write after read", "thread (0,0,0) writes shared offset 0", "read by thread ("],
}
ASAN = os.environ.get("MMKERNELS_EMULATION_SANITIZE") == "address"


@needs_emulation
def test_every_selftest_is_covered():
    assert set(C._emulation_selftests()) == set(BROKEN) | {"global_oob"}


@needs_emulation
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_checker_reports_the_broken_kernel(name):
    report = C._emulation_selftest(name, False)
    assert report, f"{name}: the broken kernel ran clean"
    for words in BROKEN[name] + [f"kernel {name}", "block (", "thread ("]:
        assert words in report, f"{name}: {words!r} not in report:\n{report}"


@needs_emulation
@pytest.mark.parametrize("name", sorted(BROKEN) + ["global_oob"])
def test_fixed_kernel_runs_clean(name):
    assert C._emulation_selftest(name, True) == ""


@needs_emulation
@pytest.mark.skipif(not ASAN, reason="global bounds are checked by AddressSanitizer (MMKERNELS_EMULATION_SANITIZE=address)")
def test_global_out_of_bounds_read_is_caught_by_asan(tmp_path):
    code = "import mmkernels; mmkernels.ops._C._emulation_selftest('global_oob', False)"
    # cwd away from the source tree, so the installed package is the one imported
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ,
                       cwd=tmp_path)
    assert r.returncode != 0
    # The kernel's own frames are unnamed (internal symbols); the report says what and where.
    assert "AddressSanitizer: heap-buffer-overflow" in r.stderr, r.stderr[-3000:]
    assert "READ of size 4" in r.stderr and "0 bytes to the right of 256-byte region" in r.stderr, r.stderr[-3000:]


@needs_emulation
def test_checker_failure_in_a_launch_is_a_runtime_error_naming_the_call():
    # ldmatrix row addresses past the end of a 64-byte shared tile: reported, raised, no crash.
    tile = torch.zeros(16, dtype=torch.int32)
    rows = torch.full((32,), 4096, dtype=torch.int32)
    out = torch.zeros(32, 4, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"(?s)emulated conformance kernel failed.*shared-memory out of bounds"):
        torch.ops.mmkernels_testing.conformance(LDMATRIX, tile, rows, None, out, 64, 4, 0)


@needs_emulation
def test_emulated_cuda_switch_is_scoped_and_restores():
    assert not mmkernels.testing.emulated_cuda_active()
    with emulated_cuda():
        assert mmkernels.testing.emulated_cuda_active()
        with emulated_cuda():
            assert mmkernels.testing.emulated_cuda_active()
        assert mmkernels.testing.emulated_cuda_active()
    assert not mmkernels.testing.emulated_cuda_active()
    with pytest.raises(ZeroDivisionError):
        with emulated_cuda():
            1 / 0
    assert not mmkernels.testing.emulated_cuda_active()


@needs_emulation
def test_emulated_arch_is_checked_scoped_and_restored():
    assert mmkernels.testing.emulated_arch() == "sm_90a"
    with pytest.raises(ValueError, match=r"arch must be one of \['sm_80', 'sm_90a'\], got 'sm_90'"):
        with emulated_cuda(arch="sm_90"):
            pass
    with pytest.raises(ValueError, match="got 80"):
        with emulated_cuda(arch=80):
            pass
    with emulated_cuda(arch="sm_80"):
        assert mmkernels.testing.emulated_arch() == "sm_80"
        with emulated_cuda():
            assert mmkernels.testing.emulated_arch() == "sm_90a"
        assert mmkernels.testing.emulated_arch() == "sm_80"
    assert mmkernels.testing.emulated_arch() == "sm_90a" and not mmkernels.testing.emulated_cuda_active()


@needs_emulation
@pytest.mark.parametrize("arch, kernel", [("sm_90a", "gemm_sm90_kernel<"), ("sm_80", "gemm_sm80_kernel<")])
def test_emulation_dispatches_as_the_gpu_of_its_arch(arch, kernel):
    # 16-bit concat_linear: the Hopper (TMA + wgmma) GEMM on sm_90a, the mma.sync one on sm_80; the
    # sm_90a conformance kernels are refused as sm_80, as the extension refuses them on an A100.
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(9, d, generator=g).bfloat16() for d in (24, 40)]
    w = torch.randn(16, 64, generator=g).bfloat16()
    with emulated_cuda(arch=arch):
        mmkernels.testing.emulated_kernel_launches()
        mmkernels.concat_linear(xs, w, None, "relu")
        launched = mmkernels.testing.emulated_kernel_launches()
    assert len(launched) == 1 and launched[0].startswith(kernel), launched
    a = torch.zeros(64 * 64, dtype=torch.int16)
    out = torch.zeros(64, 64)
    with emulated_cuda(arch=arch):
        if arch == "sm_80":
            with pytest.raises(RuntimeError, match="conformance kernel failed"):
                torch.ops.mmkernels_testing.conformance(WGMMA, a, a, None, out, 0, 0, 0)
        else:
            torch.ops.mmkernels_testing.conformance(WGMMA, a, a, None, out, 0, 0, 0)


@needs_emulation
def test_emulated_path_takes_cuda_dtypes_only():
    x = torch.randn(1, 2, 1, 8, dtype=torch.float64)
    with emulated_cuda():
        with pytest.raises(TypeError, match="float64"):
            mmkernels.cross_attention(x, x, x)
        with pytest.raises(TypeError, match="float64"):
            mmkernels.concat_linear([x[0, 0]], torch.randn(3, 8, dtype=torch.float64))
        with pytest.raises(TypeError, match="float64"):  # direct op calls too
            torch.ops.mmkernels.cross_attention_fwd(x, x, x, None, None, 0.5)


@needs_emulation
def test_emulation_runs_the_cuda_kernels_not_the_cpu_ones():
    # The CUDA kernels are not bitwise the CPU kernels: same inputs, different rounding somewhere.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 33, 4, 40, generator=g) for _ in range(3))
    cpu = mmkernels.cross_attention(q, k, v)
    with emulated_cuda():
        emu = mmkernels.cross_attention(q, k, v)
    assert not torch.equal(cpu, emu)
    torch.testing.assert_close(cpu, emu, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(C.with_emulation, reason="this build has the emulation")
def test_emulated_cuda_without_the_build_raises_a_clear_error():
    with pytest.raises(RuntimeError, match="MMKERNELS_CUDA_EMULATION=ON"):
        with emulated_cuda():
            pass


@needs_emulation
@pytest.mark.parametrize("arch", ["sm_90a", "sm_80"])
@pytest.mark.parametrize("dims,kd,kd90", [((1, 1), 32, 64), ((33, 17), 64, 64), ((64, 96), 96, 128),
                                          ((128, 8), 128, 128), ((150, 192), 192, 256), ((256, 255), 256, 256)])
def test_16bit_attention_runs_the_tensor_core_kernels(dims, kd, kd90, arch):
    # The forward: the Hopper kernel (TMA + wgmma; head dims 64, 128, 256) on sm_90a, the mma.sync one
    # on sm_80; the backward: on sm_90a up to head dim 128 (its registers) D_i by the mma.sync pre-pass and
    # dK, dV, dQ by the Hopper kernel, else the mma.sync kernels (dQ in the dK/dV kernel up to head dim 128).
    D, Dv = dims
    q = torch.randn(1, 20, 2, D, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 30, 1, D, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 30, 1, Dv, dtype=torch.bfloat16, requires_grad=True)
    with emulated_cuda(arch):
        mmkernels.testing.emulated_kernel_launches()
        out = mmkernels.cross_attention(q, k, v)
        fwd = mmkernels.testing.emulated_kernel_launches()
        out.float().sum().backward()
        bwd = mmkernels.testing.emulated_kernel_launches()
    if arch == "sm_90a":
        assert fwd == [f"flash_sm90_fwd_kernel<F> [T = bf16; int kD = {kd90}]"]
    else:
        assert fwd == [f"flash_fwd_kernel<T, kD> [T = bf16; int kD = {kd}]"]
    names = " ".join(bwd)
    assert "flash_di_kernel" in names
    if arch == "sm_90a" and kd90 <= 128:
        assert [n.split("<")[0] for n in bwd] == ["flash_di_kernel", "flash_sm90_bwd_kernel", "convert_dq_kernel"], bwd
        assert f"flash_sm90_bwd_kernel<F> [T = bf16; int kD = {kd90}]" in bwd
    elif kd <= 128:  # the dK/dV kernel adds dQ in key-tile order; no dq kernel
        assert [n.split("<")[0] for n in bwd] == ["flash_di_kernel", "flash_dkdv_kernel", "convert_dq_kernel"], bwd
        assert f"flash_dkdv_kernel<T, kD, kPass> [T = bf16; int kD = {kd}; int kPass = 0]" in bwd
    else:
        assert "sm90_bwd" not in names and "flash_dq_kernel" in names and f"kD = {kd}" in names
        assert "convert_dq_kernel" not in names
        assert names.count("flash_dkdv_kernel") == (2 if kd > 128 else 1)  # split dV / dK passes above 128


@needs_emulation
def test_float32_attention_runs_the_tiled_kernels():
    q = torch.randn(1, 5, 1, 16, requires_grad=True)
    with emulated_cuda():
        mmkernels.testing.emulated_kernel_launches()
        out = mmkernels.cross_attention(q, q, q)
        fwd = mmkernels.testing.emulated_kernel_launches()
        out.sum().backward()
        bwd = mmkernels.testing.emulated_kernel_launches()
    args = "<T, kCols> [T = float; int kCols = 4]"  # D = 16: 4 output columns per thread
    assert fwd == ["tiled_forward_kernel" + args]
    assert bwd == ["tiled_dq_kernel" + args, "tiled_dkdv_kernel" + args]


# The kernels each architecture's 16-bit concat_linear runs: forward, dX = dZ W_s, dW_s = dZ^T X_s.
TC_GEMMS = {
    arch: (f"gemm_{arch[:5].replace('_', '')}_kernel<", "bool AMN = false; bool BMN = false; Activation kAct = Activation::GELU",
           "bool AMN = false; bool BMN = true;", "bool AMN = true; bool BMN = true;")
    for arch in ("sm_90a", "sm_80")
}


@needs_emulation
@pytest.mark.parametrize("arch", sorted(TC_GEMMS))
@pytest.mark.parametrize("widths", [(64, 32), (3, 17, 1)], ids=["aligned", "odd-widths"])
def test_16bit_concat_linear_runs_the_tensor_core_gemm(widths, arch):
    kernel, fwd_layout, dx_layout, dw_layout = TC_GEMMS[arch]
    xs = [torch.randn(37, d, dtype=torch.bfloat16, requires_grad=True) for d in widths]
    w = torch.randn(20, sum(widths), dtype=torch.bfloat16, requires_grad=True)
    with emulated_cuda(arch=arch):
        mmkernels.testing.emulated_kernel_launches()
        y = mmkernels.concat_linear(xs, w, None, "gelu")
        fwd = mmkernels.testing.emulated_kernel_launches()
        y.float().sum().backward()
        bwd = mmkernels.testing.emulated_kernel_launches()
    assert len(fwd) == 1 and fwd[0].startswith(kernel) and fwd_layout in fwd[0], fwd
    assert bwd[0].startswith("activation_grad_kernel")
    gemms = bwd[1:]
    assert len(gemms) == 2 * len(widths) and all(n.startswith(kernel) for n in gemms), gemms
    assert dx_layout in gemms[0] and dw_layout in gemms[1], gemms
