"""Small CUDA cases that scripts/gpu_check.sh runs under compute-sanitizer (memcheck, racecheck,
initcheck, synccheck): every kernel of both ops, forward and backward, with masks, lengths, GQA and
odd sizes. As a test it also checks the results against the reference (skipped without a GPU)."""
import pytest
import torch

import mmkernels
from mmkernels import reference as R

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_small_cuda_cases(dtype):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 37, 4, 64, generator=g)
    k = torch.randn(2, 53, 2, 64, generator=g)
    kl = torch.tensor([53, 20])
    m = torch.rand(2, 53, generator=g) < 0.2
    xs = [torch.randn(33, 17, generator=g), torch.randn(33, 40, generator=g)]
    w = torch.randn(24, 57, generator=g) / 57**0.5
    on = lambda t: t.to("cuda", dtype) if t.is_floating_point() else t.cuda()
    qc, kc = on(q).requires_grad_(), on(k).requires_grad_()
    out = mmkernels.cross_attention(qc, kc, kc, kv_lengths=kl.cuda(), key_padding_mask=m.cuda())
    out.float().sum().backward()
    qd = torch.randn(1, 19, 2, 128, generator=g)  # causal, another head dim, Dv != D
    kd, vd = torch.randn(1, 45, 1, 128, generator=g), torch.randn(1, 45, 1, 96, generator=g)
    qdc, kdc, vdc = (on(t).requires_grad_() for t in (qd, kd, vd))
    out_c = mmkernels.cross_attention(qdc, kdc, vdc, is_causal=True)
    out_c.float().sum().backward()
    xc, wc = [on(x).requires_grad_() for x in xs], on(w).requires_grad_()
    y = mmkernels.concat_linear(xc, wc, None, "gelu")
    y.float().sum().backward()
    xl = [on(torch.randn(300, 24, generator=g)).requires_grad_(), on(torch.randn(300, 9, generator=g)).requires_grad_()]
    wl = on(torch.randn(16, 33, generator=g) / 33**0.5).requires_grad_()  # 300 rows: a split-K weight gradient
    mmkernels.concat_linear(xl, wl, None, "silu").float().sum().backward()
    torch.cuda.synchronize()
    ref = R.cross_attention(q.double(), k.double(), k.double(), kv_lengths=kl, key_padding_mask=m)
    ref_c = R.cross_attention(qd.double(), kd.double(), vd.double(), is_causal=True)
    ref_y = R.concat_linear([x.double() for x in xs], w.double(), None, "gelu")
    tol = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}[dtype]
    assert (out.double().cpu() - ref).abs().max() < tol
    assert (out_c.double().cpu() - ref_c).abs().max() < tol
    assert (y.double().cpu() - ref_y).abs().max() < tol * 10
    assert all(torch.isfinite(t.grad).all() for t in [qc, kc, qdc, kdc, vdc, wc, *xc, wl, *xl])
