import math
import zlib

import pytest
import torch

import mmkernels
from mmkernels import reference as R

from helpers import assert_within_budget
from conftest import DEVICES

LOW = [torch.float32, torch.bfloat16, torch.float16]

# (B, Lq, Lk, H, Hkv, D, Dv)
SHAPES = [
    (1, 1, 1, 1, 1, 1, 1),
    (2, 7, 97, 4, 2, 33, 17),
    (3, 97, 7, 2, 1, 64, 64),
    (2, 257, 130, 4, 4, 64, 48),
    (1, 77, 257, 8, 2, 128, 128),
    (2, 33, 600, 2, 1, 256, 96),  # Lk spans several key blocks; largest head dim
]
MASKINGS = ["none", "lengths", "mask", "both"]


def make_inputs(shape, masking, device, seed, noncontig=False):
    B, Lq, Lk, H, Hkv, D, Dv = shape
    g = torch.Generator().manual_seed(seed)
    if noncontig:  # (B, H, L, D) storage viewed as (B, L, H, D)
        q = torch.randn(B, H, Lq, D, generator=g, dtype=torch.float64).transpose(1, 2)
        k = torch.randn(B, Hkv, Lk, D, generator=g, dtype=torch.float64).transpose(1, 2)
        v = torch.randn(B, Hkv, Lk, Dv, generator=g, dtype=torch.float64).transpose(1, 2)
    else:
        q = torch.randn(B, Lq, H, D, generator=g, dtype=torch.float64)
        k = torch.randn(B, Lk, Hkv, D, generator=g, dtype=torch.float64)
        v = torch.randn(B, Lk, Hkv, Dv, generator=g, dtype=torch.float64)
    kl = m = None
    if masking in ("lengths", "both"):
        kl = torch.randint(0, Lk + 1, (B,), generator=g)
        kl[0] = 0 if B > 1 else kl[0]  # a batch with no keys at all
        if B > 2:
            kl[-1] = Lk
    if masking in ("mask", "both"):
        m = torch.rand(B, Lk, generator=g) < 0.35
        if B > 1:
            m[-1] = True  # every key of the last batch ignored
    to = lambda t: None if t is None else t.to(device)
    return q.to(device), k.to(device), v.to(device), to(kl), to(m)


def grads_of(fn, q, k, v, kl, m, dtype, g_out, **kw):
    q, k, v = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    out = fn(q, k, v, kv_lengths=kl, key_padding_mask=m, **kw)
    out.backward(g_out.to(dtype))
    return out, q.grad, k.grad, v.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_float64_reference_within_budget(shape, masking, dtype, device):
    q, k, v, kl, m = make_inputs(shape, masking, device, seed=zlib.crc32(repr((shape, masking)).encode()) % 1000)
    g_out = torch.randn(shape[0], shape[1], shape[3], shape[6], dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1)).to(device)
    ref = grads_of(R.cross_attention, q, k, v, kl, m, torch.float64, g_out)
    plain = grads_of(R.cross_attention, q, k, v, kl, m, dtype, g_out)
    ours = grads_of(mmkernels.cross_attention, q, k, v, kl, m, dtype, g_out)
    assert ours[0].dtype == dtype
    for name, o, p, r in zip(("out", "dq", "dk", "dv"), ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_noncontiguous_inputs(dtype, device):
    shape = (2, 97, 65, 4, 2, 64, 64)
    q, k, v, kl, m = make_inputs(shape, "both", device, seed=3, noncontig=True)
    assert not q.is_contiguous()
    g_out = torch.randn(2, 97, 4, 64, dtype=torch.float64, device=device).transpose(1, 2).contiguous().transpose(1, 2)
    ref = grads_of(R.cross_attention, q, k, v, kl, m, torch.float64, g_out)
    plain = grads_of(R.cross_attention, q, k, v, kl, m, dtype, g_out)
    ours = grads_of(mmkernels.cross_attention, q, k, v, kl, m, dtype, g_out)
    for name, o, p, r in zip(("out", "dq", "dk", "dv"), ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)


# Every head dim with its own tensor-core kernel (32, 64, 96, 128, 192, 256), odd ones that go through
# the next one up with zero padding (40, 200, 7), and Dv != D across buckets; GQA, lengths and a mask.
HEAD_DIMS = [(32, 32), (64, 64), (96, 96), (128, 128), (192, 192), (256, 256), (40, 40), (200, 72), (7, 130)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("dims", HEAD_DIMS, ids=lambda d: f"D{d[0]}-Dv{d[1]}")
def test_head_dims_within_budget(dims, dtype, device):
    D, Dv = dims
    shape = (2, 70, 97, 4, 2, D, Dv)
    q, k, v, kl, m = make_inputs(shape, "both", device, seed=D * 1000 + Dv)
    g_out = torch.randn(2, 70, 4, Dv, dtype=torch.float64, generator=torch.Generator().manual_seed(D)).to(device)
    ref = grads_of(R.cross_attention, q, k, v, kl, m, torch.float64, g_out)
    plain = grads_of(R.cross_attention, q, k, v, kl, m, dtype, g_out)
    ours = grads_of(mmkernels.cross_attention, q, k, v, kl, m, dtype, g_out)
    for name, o, p, r in zip(("out", "dq", "dk", "dv"), ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)


# Split-KV (Hopper forward): grids of few row tiles split the keys across CTAs and merge the slices
# (flash_entry.h num_splits: >= 4 key tiles per slice). Short query sides over long keys, with causal
# and lengths that leave whole slices without a key; the merge must keep the single-pass rules.
SPLIT_SHAPES = [(1, 5, 1100, 2, 1, 64, 64), (2, 1, 2100, 1, 1, 128, 96), (1, 3, 700, 2, 2, 200, 256)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masking", ["none", "both"])
@pytest.mark.parametrize("shape", SPLIT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_split_kv_forward_matches_reference(shape, masking, causal, dtype, device):
    q, k, v, kl, m = make_inputs(shape, masking, device, seed=sum(shape) + causal)
    if kl is not None:
        kl[-1] = 3  # one key tile: every slice but the first is empty
    ref = R.cross_attention(q, k, v, kv_lengths=kl, key_padding_mask=m, is_causal=causal)
    plain = R.cross_attention(q.to(dtype), k.to(dtype), v.to(dtype), kv_lengths=kl, key_padding_mask=m, is_causal=causal)
    hopper = mmkernels.testing.emulated_cuda_active() and mmkernels.testing.emulated_arch() == "sm_90a"
    if hopper:
        mmkernels.testing.emulated_kernel_launches()
    ours = mmkernels.cross_attention(q.to(dtype), k.to(dtype), v.to(dtype), kv_lengths=kl, key_padding_mask=m,
                                     is_causal=causal)
    if hopper:  # the Hopper forward took the split path
        assert any("split_combine_kernel" in n for n in mmkernels.testing.emulated_kernel_launches())
    assert_within_budget(ours, plain, ref, "out", dtype)
    again = mmkernels.cross_attention(q.to(dtype), k.to(dtype), v.to(dtype), kv_lengths=kl, key_padding_mask=m,
                                      is_causal=causal)
    assert torch.equal(ours, again)


# GQA packing (Hopper forward, flash_entry.h heads_per_cta): with short query sides one CTA takes the
# rows of all G query heads of a kv head (packed row r = query r / G of head r % G). Groups of 8 (Lq 1,
# decoding), 3 (tiles not a multiple of G), 4 (two row tiles, split-KV); lengths, mask, causal. The
# backward reads the packed forward's log-sum-exp, so the gradients check it too.
GQA_SHAPES = [(2, 1, 300, 8, 1, 64, 64), (2, 77, 140, 6, 2, 64, 48), (1, 45, 1100, 4, 1, 128, 128)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masking", ["none", "both"])
@pytest.mark.parametrize("shape", GQA_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gqa_packed_forward_matches_reference(shape, masking, causal, dtype, device):
    B, Lq, Lk, H, Hkv, D, Dv = shape
    q, k, v, kl, m = make_inputs(shape, masking, device, seed=sum(shape) * 3 + causal)
    g_out = torch.randn(B, Lq, H, Dv, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).to(device)
    hopper = mmkernels.testing.emulated_cuda_active() and mmkernels.testing.emulated_arch() == "sm_90a"
    if hopper:
        mmkernels.testing.emulated_kernel_launches()
    ours = grads_of(mmkernels.cross_attention, q, k, v, kl, m, dtype, g_out, is_causal=causal)
    if hopper:  # one CTA row per packed row tile of each kv head's group, not per query head
        fwd = [(n, g) for n, g in mmkernels.testing.emulated_kernel_launches(grids=True) if "flash_sm90_fwd" in n]
        assert len(fwd) == 1 and fwd[0][1][:2] == (math.ceil(H // Hkv * Lq / 128), Hkv), fwd
    ref = grads_of(R.cross_attention, q, k, v, kl, m, torch.float64, g_out, is_causal=causal)
    plain = grads_of(R.cross_attention, q, k, v, kl, m, dtype, g_out, is_causal=causal)
    for name, o, p, r in zip(("out", "dq", "dk", "dv"), ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)
    again = mmkernels.cross_attention(q.to(dtype), k.to(dtype), v.to(dtype), kv_lengths=kl, key_padding_mask=m,
                                      is_causal=causal)
    assert torch.equal(ours[0].detach(), again)


# The sm_80 forward (flash_kernels.cuh): CTAs of 128 query rows (two 16-row m-tiles per warp) up to head
# dim 64, of 64 rows above. Long key sides run its interior-tile loop (tiles every row of the CTA sees
# whole: no per-key checks, unpredicated loads) and then the boundary loop (the last tile, the causal
# diagonal, masks); lengths and masks move the split; Dv 24 < kD leaves V's columns partial. The dq
# kernel has the same split, and the dK/dV kernel reads each step's row statistics a step ahead.
AMPERE_SHAPES = [(2, 300, 700, 2, 1, 64, 64), (1, 130, 650, 4, 2, 128, 128), (1, 70, 300, 2, 1, 32, 24)]


@pytest.mark.parametrize("device", [d for d in DEVICES if d == "emulated_sm80"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masking", ["none", "both"])
@pytest.mark.parametrize("shape", AMPERE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_ampere_forward_row_tiles_and_interior_loop(shape, masking, causal, dtype, device):
    B, Lq, Lk, H, Hkv, D, Dv = shape
    q, k, v, kl, m = make_inputs(shape, masking, device, seed=sum(shape) * 7 + causal)
    g_out = torch.randn(B, Lq, H, Dv, dtype=torch.float64, generator=torch.Generator().manual_seed(6)).to(device)
    mmkernels.testing.emulated_kernel_launches()
    ours = grads_of(mmkernels.cross_attention, q, k, v, kl, m, dtype, g_out, is_causal=causal)
    fwd = [g for n, g in mmkernels.testing.emulated_kernel_launches(grids=True) if "flash_fwd_kernel" in n]
    assert fwd == [(math.ceil(Lq / (128 if max(D, Dv) <= 64 else 64)), H, B)], fwd
    ref = grads_of(R.cross_attention, q, k, v, kl, m, torch.float64, g_out, is_causal=causal)
    plain = grads_of(R.cross_attention, q, k, v, kl, m, dtype, g_out, is_causal=causal)
    for name, o, p, r in zip(("out", "dq", "dk", "dv"), ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)
    again = grads_of(mmkernels.cross_attention, q, k, v, kl, m, dtype, g_out, is_causal=causal)
    for a, b in zip(ours, again):
        assert torch.equal(a, b)


# Causal with Lq < Lk (cross/decoding), Lq > Lk (leading rows see no key: zeros), Lq == Lk; head dims
# of the tensor-core kernels and an odd one; tiles larger than one block so whole tiles are skipped.
CAUSAL_SHAPES = [(2, 70, 130, 4, 2, 64, 64), (2, 130, 70, 2, 1, 32, 48), (1, 97, 97, 2, 2, 40, 40),
                 (2, 1, 257, 2, 1, 128, 128), (2, 130, 200, 4, 2, 96, 80)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("shape", CAUSAL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_causal_matches_reference_within_budget(shape, masking, dtype, device):
    q, k, v, kl, m = make_inputs(shape, masking, device, seed=sum(shape))
    g_out = torch.randn(shape[0], shape[1], shape[3], shape[6], dtype=torch.float64,
                        generator=torch.Generator().manual_seed(2)).to(device)
    ref = grads_of(R.cross_attention, q, k, v, kl, m, torch.float64, g_out, is_causal=True)
    plain = grads_of(R.cross_attention, q, k, v, kl, m, dtype, g_out, is_causal=True)
    ours = grads_of(mmkernels.cross_attention, q, k, v, kl, m, dtype, g_out, is_causal=True)
    for name, o, p, r in zip(("out", "dq", "dk", "dv"), ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)
    again = grads_of(mmkernels.cross_attention, q, k, v, kl, m, dtype, g_out, is_causal=True)
    for a, b in zip(ours, again):
        assert torch.equal(a, b)


def test_causal_is_bottom_right_aligned():
    # Lq = 2 queries over Lk = 5 keys (lengths 5 and 3): the last query sees every valid key, the one
    # before it all but the last; with Lq > n_b the first rows see nothing and give zeros.
    q, k, v = torch.randn(2, 2, 1, 4, dtype=torch.float64), torch.randn(2, 5, 1, 4, dtype=torch.float64), \
        torch.randn(2, 5, 1, 3, dtype=torch.float64)
    kl = torch.tensor([5, 3])
    out = mmkernels.cross_attention(q, k, v, kv_lengths=kl, is_causal=True)
    for b, n in enumerate((5, 3)):
        for i, visible in enumerate((n - 1, n)):
            expect = R.cross_attention(q[b:b + 1, i:i + 1], k[b:b + 1, :visible], v[b:b + 1, :visible])
            torch.testing.assert_close(out[b:b + 1, i:i + 1], expect)
    q3 = torch.randn(1, 4, 1, 4, dtype=torch.float64)
    out3 = mmkernels.cross_attention(q3, k[:1, :2], v[:1, :2], is_causal=True)  # offset 2 - 4 = -2
    assert (out3[0, :2] == 0).all() and (out3[0, 2:] != 0).any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(3, 70, 300, 4, 2, 64, 64), (2, 9, 200, 2, 2, 128, 96)], ids=lambda s: "x".join(map(str, s)))
def test_keys_past_kv_lengths_are_never_read(shape, causal, dtype, device):
    # A preallocated KV cache past each batch's length holds anything (torch.empty: NaN, inf): the
    # result and every gradient must be exactly those of the same call with zeros there.
    B, Lq, Lk, H, Hkv, D, Dv = shape
    q, k, v, _, _ = make_inputs(shape, "none", device, seed=41)
    kl = torch.tensor([Lk - 71, 1, Lk][:B], device=device)
    junk_k, junk_v = k.clone(), v.clone()
    for b, n in enumerate(kl.tolist()):
        k[b, n:], v[b, n:] = 0.0, 0.0
        junk_k[b, n:] = float("nan")
        junk_v[b, n:] = float("inf")
    g_out = torch.randn(B, Lq, H, Dv, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(device)
    clean = grads_of(mmkernels.cross_attention, q, k, v, kl, None, dtype, g_out, is_causal=causal)
    junk = grads_of(mmkernels.cross_attention, q, junk_k, junk_v, kl, None, dtype, g_out, is_causal=causal)
    for name, a, b in zip(("out", "dq", "dk", "dv"), clean, junk):
        assert torch.isfinite(b).all(), f"{name}: non-finite values from keys past kv_lengths"
        assert torch.equal(a, b), f"{name} differs when the keys past kv_lengths hold NaN / inf"


@pytest.mark.parametrize("device", DEVICES)
def test_rows_without_keys_are_zero_with_zero_grad(device):
    B, Lq, Lk, H, D = 3, 5, 9, 2, 8
    q = torch.randn(B, Lq, H, D, device=device, requires_grad=True)
    k = torch.randn(B, Lk, H, D, device=device, requires_grad=True)
    v = torch.randn(B, Lk, H, D, device=device, requires_grad=True)
    kl = torch.tensor([0, 4, 9], device=device)
    m = torch.zeros(B, Lk, dtype=torch.bool, device=device)
    m[1, :4] = True  # batch 1: its 4 keys are all masked too
    out = mmkernels.cross_attention(q, k, v, kv_lengths=kl, key_padding_mask=m)
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all() and (out[1] == 0).all()
    assert out[2].abs().sum() > 0
    out.sum().backward()
    for g in (q.grad, k.grad, v.grad):
        assert torch.isfinite(g).all()
        assert (g[0] == 0).all() and (g[1] == 0).all()
    # keys beyond kv_lengths get no gradient
    assert (k.grad[1, 4:] == 0).all() and (v.grad[1, 4:] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 5, 7, 2, 1, 8, 8), (2, 0, 7, 2, 1, 8, 8), (2, 5, 0, 2, 1, 8, 8)])
def test_degenerate_sizes(shape, device):
    B, Lq, Lk, H, Hkv, D, Dv = shape
    q = torch.randn(B, Lq, H, D, device=device, requires_grad=True)
    k = torch.randn(B, Lk, Hkv, D, device=device, requires_grad=True)
    v = torch.randn(B, Lk, Hkv, Dv, device=device, requires_grad=True)
    out = mmkernels.cross_attention(q, k, v)
    assert out.shape == (B, Lq, H, Dv)
    assert (out == 0).all()
    out.sum().backward()
    assert q.grad.shape == q.shape and (q.grad == 0).all()
    assert k.grad.shape == k.shape and v.grad.shape == v.shape


def test_gradcheck_float64():
    torch.manual_seed(1)
    for masking in MASKINGS:
        q, k, v, kl, m = make_inputs((2, 5, 7, 4, 2, 6, 3), masking, "cpu", seed=11)
        q, k, v = [t.clone().requires_grad_() for t in (q, k, v)]
        f = lambda q, k, v: mmkernels.cross_attention(q, k, v, kv_lengths=kl, key_padding_mask=m, scale=0.7)
        assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_explicit_scale_and_default_scale(device):
    q, k, v, kl, m = make_inputs((2, 9, 11, 2, 2, 16, 16), "none", device, seed=5)
    for scale in (None, 0.05, 2.0):
        ours = mmkernels.cross_attention(q.float(), k.float(), v.float(), scale=scale)
        ref = R.cross_attention(q, k, v, scale=scale)
        assert (ours.double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_deterministic(dtype, device):
    q, k, v, kl, m = make_inputs((2, 130, 300, 8, 2, 64, 64), "both", device, seed=9)
    results = []
    for _ in range(2):
        qq, kk, vv = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        out = mmkernels.cross_attention(qq, kk, vv, kv_lengths=kl, key_padding_mask=m)
        out.backward(torch.ones_like(out))
        results.append([out, qq.grad, kk.grad, vv.grad])
    for a, b in zip(*results):
        assert torch.equal(a, b)


# The ops test_opcheck covers (tests/test_torch_integration.py checks that every op is covered somewhere).
OPCHECKED = ("cross_attention_fwd", "cross_attention_bwd")
# (shape, masking, dtype, is_causal, which of (grad_out, q, k, v) require grad in the backward op's check):
# several samples per op, on every device the tests run on. The forward's q, k, v always require grad.
OPCHECK_SAMPLES = [
    ((2, 7, 9, 4, 2, 8, 5), "both", torch.float32, False, (True, True, True, True)),
    ((1, 1, 1, 1, 1, 1, 1), "none", torch.float32, False, (False, True, False, False)),
    ((3, 5, 12, 2, 1, 16, 16), "lengths", torch.bfloat16, True, (True, True, True, True)),
    ((2, 9, 4, 2, 2, 64, 64), "mask", torch.float16, False, (True, False, False, True)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=lambda s: f"{'x'.join(map(str, s[0]))}-{s[1]}-{s[2]}-causal{s[3]}")
def test_opcheck(sample, device):
    shape, masking, dtype, causal, bwd_grads = sample
    q, k, v, kl, m = make_inputs(shape, masking, device, seed=2)
    q, k, v = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    fwd, bwd = (getattr(torch.ops.mmkernels, name) for name in OPCHECKED)
    torch.library.opcheck(fwd, (q, k, v, kl, m, 0.3, causal))
    out, lse = fwd(q, k, v, kl, m, 0.3, causal)
    g = torch.randn_like(out)
    # the backward op with inputs that require grad: its own autograd formula (mmkernels/ops/_cross_attention.py)
    g, q, k, v = [t.detach().requires_grad_(r) for t, r in zip((g, q, k, v), bwd_grads)]
    torch.library.opcheck(bwd, (g, q, k, v, out.detach(), lse, kl, m, 0.3, causal))


def test_torch_compile_fullgraph_forward_backward():
    q, k, v, kl, m = make_inputs((2, 17, 23, 4, 2, 16, 16), "both", "cpu", seed=4)
    q, k, v = [t.float() for t in (q, k, v)]

    def f(q, k, v, kl, m):
        return mmkernels.cross_attention(q, k, v, kv_lengths=kl, key_padding_mask=m).square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    grads = []
    for fn in (f, compiled):
        qq, kk, vv = [t.clone().requires_grad_() for t in (q, k, v)]
        loss = fn(qq, kk, vv, kl, m)
        loss.backward()
        grads.append([loss, qq.grad, kk.grad, vv.grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


BAD = [
    (dict(q=torch.randn(2, 3, 4)), ValueError, "q must be a 4-D"),
    (dict(k=torch.randn(2, 5, 2, 7)), ValueError, "head dim"),
    (dict(v=torch.randn(2, 6, 2, 8)), ValueError, "v must be"),
    (dict(k=torch.randn(3, 5, 2, 8), v=torch.randn(3, 5, 2, 8)), ValueError, "batch size"),
    (dict(k=torch.randn(2, 5, 3, 8), v=torch.randn(2, 5, 3, 8)), ValueError, "multiple"),
    (dict(k=torch.randn(2, 5, 2, 8, dtype=torch.float64)), TypeError, "same dtype"),
    (dict(q=torch.randn(2, 3, 4, 8).int()), TypeError, "float32"),
    (dict(q=torch.randn(2, 3, 4, 300), k=torch.randn(2, 5, 2, 300)), ValueError, "1..256"),
    (dict(kv_lengths=torch.tensor([1.0, 2.0])), TypeError, "kv_lengths must be an integer"),
    (dict(kv_lengths=torch.tensor([1, 2, 3])), ValueError, r"kv_lengths must have shape \(B,\)"),
    (dict(kv_lengths=torch.tensor([1, 6])), ValueError, r"kv_lengths must lie in \[0, Lk\]"),
    (dict(kv_lengths=torch.tensor([-1, 2])), ValueError, r"kv_lengths must lie in \[0, Lk\]"),
    (dict(key_padding_mask=torch.zeros(2, 5)), TypeError, "key_padding_mask must be a bool"),
    (dict(key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ValueError, r"key_padding_mask must have shape \(B, Lk\)"),
    (dict(scale="x"), TypeError, "scale must be"),
    (dict(scale=float("nan")), ValueError, "scale must be finite"),
    (dict(q=[1, 2]), TypeError, "q must be a torch.Tensor"),
]


@pytest.mark.parametrize("bad,exc,msg", BAD, ids=[b[2] for b in BAD])
def test_bad_inputs_raise_clear_errors(bad, exc, msg):
    args = dict(q=torch.randn(2, 3, 4, 8), k=torch.randn(2, 5, 2, 8), v=torch.randn(2, 5, 2, 8))
    args.update(bad)
    kw = {n: args.pop(n) for n in ("kv_lengths", "key_padding_mask", "scale") if n in args}
    with pytest.raises(exc, match=msg):
        mmkernels.cross_attention(args["q"], args["k"], args["v"], **kw)


def test_non_float_dtype_rejected_with_the_allowed_list():
    with pytest.raises(TypeError, match="q must be float32, float16 or bfloat16"):
        mmkernels.cross_attention(torch.randn(1, 2, 1, 4).bool(), torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))


@pytest.mark.skipif(not mmkernels.testing.emulation_available(), reason="needs the emulation build")
def test_float64_rejected_by_the_cuda_kernels_with_the_device_restriction():
    # The CUDA glue (here under the emulation; on a GPU test_cuda.py checks the same) names the restriction.
    x = torch.randn(1, 2, 1, 8, dtype=torch.float64)
    with mmkernels.testing.emulated_cuda():
        with pytest.raises(TypeError, match="float64 is supported on CPU only"):
            mmkernels.cross_attention(x, x, x)
        with pytest.raises(TypeError, match="float64 is supported on CPU only"):
            mmkernels.concat_linear([x[0, 0]], torch.randn(3, 8, dtype=torch.float64))


def test_reference_switch_uses_reference():
    q, k, v, kl, m = make_inputs((1, 4, 6, 2, 1, 8, 8), "mask", "cpu", seed=6)
    q, k, v = q.float(), k.float(), v.float()
    with mmkernels.use_reference_ops():
        assert mmkernels.using_reference_ops()
        a = mmkernels.cross_attention(q, k, v, key_padding_mask=m)
    assert not mmkernels.using_reference_ops()
    assert torch.equal(a, R.cross_attention(q, k, v, key_padding_mask=m))


def test_all_lengths_zero_gives_zeros():
    q, k = torch.randn(3, 4, 2, 8, requires_grad=True), torch.randn(3, 5, 2, 8, requires_grad=True)
    out = mmkernels.cross_attention(q, k, k, kv_lengths=torch.zeros(3, dtype=torch.int32))
    assert (out == 0).all()
    out.sum().backward()
    assert (q.grad == 0).all() and (k.grad == 0).all()
