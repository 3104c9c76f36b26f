"""Property tests (Hypothesis): both ops against the float64 reference over random shapes, masks,
lengths and dtypes, under the project's error rule."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmkernels
from mmkernels import reference as R

from helpers import assert_within_budget

SETTINGS = dict(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
DTYPES = st.sampled_from([torch.float32, torch.bfloat16, torch.float16])


@settings(**SETTINGS)
@given(B=st.integers(1, 3), Lq=st.integers(1, 70), Lk=st.integers(1, 140), Hkv=st.integers(1, 2),
       group=st.integers(1, 3), D=st.integers(1, 80), Dv=st.integers(1, 80), dtype=DTYPES,
       use_lengths=st.booleans(), use_mask=st.booleans(), seed=st.integers(0, 2**16))
def test_cross_attention_property(B, Lq, Lk, Hkv, group, D, Dv, dtype, use_lengths, use_mask, seed):
    g = torch.Generator().manual_seed(seed)
    H = Hkv * group
    q = torch.randn(B, Lq, H, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Lk, Hkv, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Lk, Hkv, Dv, generator=g, dtype=torch.float64)
    kl = torch.randint(0, Lk + 1, (B,), generator=g) if use_lengths else None
    m = (torch.rand(B, Lk, generator=g) < 0.3) if use_mask else None
    grad = torch.randn(B, Lq, H, Dv, generator=g, dtype=torch.float64)
    results = []
    for fn, dt in ((R.cross_attention, torch.float64), (R.cross_attention, dtype), (mmkernels.cross_attention, dtype)):
        qq, kk, vv = (t.detach().to(dt).requires_grad_() for t in (q, k, v))
        out = fn(qq, kk, vv, kv_lengths=kl, key_padding_mask=m)
        out.backward(grad.to(dt))
        results.append((out, qq.grad, kk.grad, vv.grad))
    ref, plain, ours = results
    for name, o, p, r in zip(("out", "dq", "dk", "dv"), ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)


@settings(**SETTINGS)
@given(lead=st.lists(st.integers(0, 5), min_size=0, max_size=3), widths=st.lists(st.integers(1, 40), min_size=1, max_size=4),
       N=st.integers(1, 50), act=st.sampled_from(["none", "relu", "gelu", "gelu_tanh", "silu"]), bias=st.booleans(),
       dtype=DTYPES, seed=st.integers(0, 2**16))
def test_concat_linear_property(lead, widths, N, act, bias, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(*lead, d, generator=g, dtype=torch.float64) for d in widths]
    w = torch.randn(N, sum(widths), generator=g, dtype=torch.float64) / sum(widths) ** 0.5
    b = torch.randn(N, generator=g, dtype=torch.float64) if bias else None
    grad = torch.randn(*lead, N, generator=g, dtype=torch.float64)
    results = []
    for fn, dt in ((R.concat_linear, torch.float64), (R.concat_linear, dtype), (mmkernels.concat_linear, dtype)):
        args = [x.detach().to(dt).requires_grad_() for x in xs] + [w.detach().to(dt).requires_grad_()]
        bb = b.detach().to(dt).requires_grad_() if b is not None else None
        y = fn(args[:-1], args[-1], bb, act)
        y.backward(grad.to(dt))
        results.append([y] + [a.grad for a in args] + ([bb.grad] if bb is not None else []))
    ref, plain, ours = results
    for i, (o, p, r) in enumerate(zip(ours, plain, ref)):
        assert_within_budget(o, p, r, f"output/grad #{i}", dtype)
