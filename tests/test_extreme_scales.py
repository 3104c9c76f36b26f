"""Extreme but finite softmax scales: a saturated softmax (one key takes all the weight) must give the
gradients plain PyTorch gives (~0 for q and k), never NaN; ties at a huge scale share the weight; a
scale the compute dtype cannot hold is rejected; logits that overflow give NaN as plain PyTorch does.

The backward recomputes P from the saved log-sum-exp: these cases fail when its scores are rounded
differently from the forward's (a fused multiply-add) or when the lse cannot carry log(l) at |lse| ~ 1e10.
"""
import pytest
import torch

import mmkernels
from mmkernels import reference as R

from conftest import DEVICES
from helpers import assert_within_budget


def _grads(fn, q, k, v, g_out, dtype, **kw):
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, **kw)
    out.backward(g_out.to(dtype))
    return out, q.grad, k.grad, v.grad


def _cpu_kernels(device):  # float64 runs on the CPU kernels only
    return device == "cpu" and not mmkernels.testing.emulated_cuda_active()


def _dtypes(device):
    return [torch.float32, torch.bfloat16] + ([torch.float64] if _cpu_kernels(device) else [])


@pytest.mark.parametrize("device", DEVICES)
# 100: saturated, still on the tensor-core kernels (bf16, emulated or CUDA); above 256 the SIMT ones
# run (flash_entry.h: kMaxScale).
@pytest.mark.parametrize("scale", [100.0, 1e3, 1e10])
@pytest.mark.parametrize("shape", [(2, 4, 3, 2, 1, 8, 8), (1, 7, 97, 2, 2, 64, 33)], ids=lambda s: "x".join(map(str, s)))
def test_saturated_softmax_matches_reference_within_budget(shape, scale, device):
    B, Lq, Lk, H, Hkv, D, Dv = shape
    for dtype in (torch.float32, torch.bfloat16):
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            q = torch.randn(B, Lq, H, D, generator=g, dtype=torch.float64)
            k = torch.randn(B, Lk, Hkv, D, generator=g, dtype=torch.float64)
            v = torch.randn(B, Lk, Hkv, Dv, generator=g, dtype=torch.float64)
            g_out = torch.randn(B, Lq, H, Dv, generator=g, dtype=torch.float64)
            # the same inputs in every dtype
            q, k, v, g_out = (t.to(dtype).double().to(device) for t in (q, k, v, g_out))
            ref = _grads(R.cross_attention, q, k, v, g_out, torch.float64, scale=scale)
            plain = _grads(R.cross_attention, q, k, v, g_out, dtype, scale=scale)
            ours = _grads(mmkernels.cross_attention, q, k, v, g_out, dtype, scale=scale)
            for name, o, p, r in zip(("out", "dq", "dk", "dv"), ours, plain, ref):
                assert_within_budget(o, p, r, f"{name} seed {seed} scale {scale:g}", dtype)


def test_float64_saturated_by_a_huge_scale_matches_reference():
    # scale 1e20: every row saturated (logit gaps ~1e19); the reference is exact there (one-hot P).
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 2, 8, generator=g, dtype=torch.float64) for _ in range(3))
    g_out = torch.randn(2, 5, 2, 8, generator=g, dtype=torch.float64)
    ours = _grads(mmkernels.cross_attention, q, k, v, g_out, torch.float64, scale=1e20)
    ref = _grads(R.cross_attention, q, k, v, g_out, torch.float64, scale=1e20)
    for name, o, r in zip(("out", "dq", "dk", "dv"), ours, ref):
        assert torch.isfinite(o).all(), name
        assert torch.allclose(o, r, rtol=0, atol=1e-12), f"{name}: {(o - r).abs().max().item():.3e}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", [200.0, 1e6])
def test_tied_keys_at_a_huge_scale_share_the_weight(scale, device):
    # Keys 0 and 2 are identical and win every row by ~|lse|: each gets P = 1/2, so out = mean of their
    # values and each value's gradient is half of dO. log(2) must survive in an lse of ~1e4..1e8 (a
    # float32 lse drops it above ~1e7: P = 1 each). (The float64 lse resolves ~2^-52 |lse|.)
    for dtype in _dtypes(device):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, 5, 1, 64, generator=g).abs().to(dtype).to(device)
        k = torch.stack([torch.ones(64), -torch.ones(64), torch.ones(64)])[None, :, None].to(dtype).to(device)
        v = torch.randn(1, 3, 1, 64, generator=g).to(dtype).to(device).requires_grad_()
        out = mmkernels.cross_attention(q, k, v, scale=scale)
        expected = ((v[0, 0, 0].double() + v[0, 2, 0].double()) / 2).expand(5, 64)
        assert torch.allclose(out[0, :, 0].double(), expected, rtol=0, atol=2e-2 if dtype == torch.bfloat16 else 1e-6)
        g_out = torch.randn(out.shape, generator=g).to(dtype).to(device)
        (dv,) = torch.autograd.grad(out, v, g_out)
        half = g_out[0, :, 0].double().sum(0) / 2
        tol = 5e-2 if dtype == torch.bfloat16 else 1e-5
        assert torch.allclose(dv[0, 0, 0].double(), half, atol=tol) and torch.allclose(dv[0, 2, 0].double(), half, atol=tol)
        assert (dv[0, 1] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_overflowing_logits_give_nan_like_plain_pytorch(device):
    # D = 1: row 0's logits are all -inf in float32 (valid keys, overflowed scores) -> NaN as in plain
    # PyTorch, not the zeros of a row without keys; row 1 is +inf -> NaN; row 2 stays finite.
    q = torch.tensor([-2.0, 2.0, 1e-38], device=device).reshape(1, 3, 1, 1)
    k = torch.tensor([1.0, 2.0, 3.0], device=device).reshape(1, 3, 1, 1)
    v = torch.randn(1, 3, 1, 4, device=device)
    ours = mmkernels.cross_attention(q, k, v, scale=3e38)
    plain = R.cross_attention(q, k, v, scale=3e38)
    assert torch.equal(torch.isnan(ours), torch.isnan(plain))
    assert torch.isnan(ours[0, :2]).all() and torch.isfinite(ours[0, 2]).all()
    # a row with no valid key stays zero
    empty = mmkernels.cross_attention(q, k, v, scale=3e38, kv_lengths=torch.tensor([0], device=device))
    assert (empty == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_scale_beyond_the_compute_dtype_is_rejected(device):
    x = torch.randn(1, 3, 1, 4, device=device)
    for dtype in (torch.float32, torch.bfloat16):
        xx = x.to(dtype)
        with pytest.raises(ValueError, match=r"scale must be finite in float32 .* got 3\.5e\+38"):
            mmkernels.cross_attention(xx, xx, xx, scale=3.5e38)
        with pytest.raises(ValueError, match="scale must be finite in float32"):
            torch.ops.mmkernels.cross_attention_fwd(xx, xx, xx, None, None, -3.5e38)
    if _cpu_kernels(device):  # float64 computes in float64
        out = mmkernels.cross_attention(x.double(), x.double(), x.double(), scale=3.5e38)
        assert out.shape == (1, 3, 1, 4)


def test_moderate_large_scale_stays_on_the_tensor_core_kernels():
    # The cases above at scale <= 256 exercise the flash kernels' own P recomputation (emulated here).
    if not mmkernels.testing.emulation_available():
        pytest.skip("needs the emulation build")
    x = torch.randn(1, 7, 2, 64).bfloat16().requires_grad_()
    with mmkernels.testing.emulated_cuda():
        mmkernels.testing.emulated_kernel_launches()  # clears the log
        mmkernels.cross_attention(x, x, x, scale=200.0).sum().backward()
        big = mmkernels.testing.emulated_kernel_launches()
        mmkernels.cross_attention(x, x, x, scale=1e3).sum().backward()
        huge = mmkernels.testing.emulated_kernel_launches()
    assert any("flash_sm90_fwd_kernel" in str(k) for k in big) and any("flash_sm90_bwd_kernel" in str(k) for k in big)
    assert not any("flash" in str(k) for k in huge) and any("dq_kernel" in str(k) for k in huge)
