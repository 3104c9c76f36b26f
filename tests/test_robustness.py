"""Robustness of the public surface: device and value checks on every argument (public API and direct
torch.ops calls), NaN propagation, clear messages from the layers, the lazily imported subpackages, and
a seeded randomized run of valid and invalid calls in a separate process (a crash or a hang is
reported with the call that caused it)."""
import math
import multiprocessing as mp
import subprocess
import sys

import pytest
import torch

import mmkernels
from mmkernels import reference as R

from conftest import DEVICES


# ---- every tensor argument's device is checked (a meta kv_lengths once returned uninitialised memory)


@pytest.mark.parametrize("which", ["kv_lengths", "key_padding_mask"])
def test_mask_arguments_on_another_device_are_rejected(which):
    q, k, v = torch.randn(2, 5, 4, 8), torch.randn(2, 7, 2, 8), torch.randn(2, 7, 2, 3)
    extra = torch.tensor([1, 2]) if which == "kv_lengths" else torch.zeros(2, 7, dtype=torch.bool)
    for q_dev, extra_dev in (("cpu", "meta"), ("meta", "cpu")):
        qq, kk, vv = (t.to(q_dev) for t in (q, k, v))
        kw = {which: extra.to(extra_dev)}
        with pytest.raises(ValueError, match=f"{which} must be on the same device as q"):
            mmkernels.cross_attention(qq, kk, vv, **kw)
        args = [kw.get("kv_lengths"), kw.get("key_padding_mask")]
        with pytest.raises((ValueError, RuntimeError), match=f"{which} must be on the same device as q"):
            torch.ops.mmkernels.cross_attention_fwd(qq, kk, vv, *args, 0.5)


def test_op_rejects_non_finite_scale():
    x = torch.randn(1, 3, 1, 4)
    for s in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="scale must be finite"):
            torch.ops.mmkernels.cross_attention_fwd(x, x, x, None, None, s)


# ---- NaN is not hidden: only rows with no valid key give zeros


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_nan_in_a_query_row_propagates(dtype, device):
    q = torch.randn(2, 4, 2, 8, dtype=dtype, device=device)
    k = torch.randn(2, 6, 2, 8, dtype=dtype, device=device)
    q[0, 1, 0, 3] = float("nan")
    q.requires_grad_()
    out = mmkernels.cross_attention(q, k, k, kv_lengths=torch.tensor([6, 0], device=device))
    assert torch.isnan(out[0, 1, 0]).all()                        # the NaN row, as PyTorch gives it
    assert torch.isfinite(out[0, [0, 2, 3]]).all() and torch.isfinite(out[0, 1, 1]).all()
    assert (out[1] == 0).all()                                    # batch 1 has no valid key: zeros
    ref = R.cross_attention(q.detach().double(), k.double(), k.double(), kv_lengths=torch.tensor([6, 0]))
    assert torch.equal(torch.isnan(out.double()), torch.isnan(ref))
    out.float().nan_to_num().sum().backward()
    assert torch.isnan(q.grad[0, 1, 0]).any()                     # gradients see it too


# ---- layers and constructors name the argument


def test_layer_arguments_are_checked_with_clear_errors():
    from mmkernels.nn import ConcatLinear, CrossModalAttention

    attn = CrossModalAttention(8, 2)
    with pytest.raises(TypeError, match="query must be a torch.Tensor"):
        attn(None, torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="key must have the batch size of query"):
        attn(torch.randn(2, 3, 8), torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match="key must have the batch size of query"):
        attn(torch.randn(2, 3, 8), torch.randn(3, 0, 8))  # Lk = 0 too
    for bad, exc in ((None, TypeError), (["a"], TypeError), ([[2]], TypeError), ([2.5], TypeError),
                     ([True], TypeError), ("12", TypeError), ([0], ValueError), ([], ValueError)):
        with pytest.raises(exc, match="in_features"):
            ConcatLinear(bad, 4)
    for bad, exc in ((2.5, TypeError), (None, TypeError), (0, ValueError), ("4", TypeError)):
        with pytest.raises(exc, match="out_features"):
            ConcatLinear([2], bad)


@pytest.mark.parametrize("kw,msg", [
    (dict(q=torch.randn(2, 3, 4, 300), k=torch.randn(2, 5, 2, 300)), r"q and k must have a head dim D in 1\.\.256"),
    (dict(v=torch.randn(2, 5, 2, 300)), r"v must have a head dim Dv in 1\.\.256"),
    (dict(k=torch.randn(2, 5, 3, 8), v=torch.randn(2, 5, 3, 8)), r"q has H=4 heads, which must be a multiple of the Hkv=3"),
])
def test_messages_name_the_tensor(kw, msg):
    args = dict(q=torch.randn(2, 3, 4, 8), k=torch.randn(2, 5, 2, 8), v=torch.randn(2, 5, 2, 8))
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        mmkernels.cross_attention(args["q"], args["k"], args["v"])


def test_layout_mistake_gets_a_transpose_hint():
    # (B, H, L, D) tensors from a Hugging Face model passed as (B, L, H, D): read as Lq = Lk = 8 heads...
    q, k = torch.randn(2, 8, 5, 16), torch.randn(2, 8, 7, 16)
    with pytest.raises(ValueError, match=r"q has H=5 heads.*transpose\(1, 2\)"):
        mmkernels.cross_attention(q, k, k)


# ---- the whole package after `import mmkernels`


def test_import_mmkernels_gives_the_subpackages():
    code = ("import mmkernels; assert mmkernels.nn.ConcatLinear and mmkernels.models.EarlyFusion; "
            "assert mmkernels.data.AVDigits; import sys; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mmkernels.nope


# ---- randomized valid and invalid calls, each reported by a separate process


def _random_call(rng):
    """One random call: (description, fn) where fn() returns (ours, reference) or raises."""
    kind = rng.choice(["attn", "attn", "linear"])
    dtype = rng.choice([torch.float32, torch.bfloat16, torch.float16, torch.float64])
    bad = rng.random() < 0.35
    if kind == "attn":
        B, Lq, Lk, Hkv, group = rng.randint(0, 3), rng.randint(0, 9), rng.randint(0, 11), rng.randint(1, 2), rng.randint(1, 3)
        D, Dv = rng.randint(1, 40), rng.randint(1, 40)
        H = Hkv * group
        q, k, v = torch.randn(B, Lq, H, D), torch.randn(B, Lk, Hkv, D), torch.randn(B, Lk, Hkv, Dv)
        kl = torch.randint(0, Lk + 1, (B,)) if rng.random() < 0.5 else None
        m = (torch.rand(B, Lk) < 0.3) if rng.random() < 0.5 else None
        # Moderate scales: the error budget is calibrated there (large |scale| sharpens the softmax until
        # float32 score rounding dominates both implementations differently).
        scale = rng.choice([None, 0.3, -0.5])
        k_dtype = dtype
        if bad:
            which = rng.choice(["D", "H", "lengths", "mask", "scale", "dim", "dtype"])
            if which == "D":
                k = torch.randn(B, Lk, Hkv, D + 1)
            elif which == "H":
                k, v = torch.randn(B, Lk, H + 1, D), torch.randn(B, Lk, H + 1, Dv)
            elif which == "lengths":
                kl = torch.full((B,), Lk + 1) if B else torch.zeros(1, dtype=torch.long)
            elif which == "mask":
                m = torch.zeros(B, Lk + 1, dtype=torch.bool)
            elif which == "scale":
                scale = float("nan")
            elif which == "dim":
                q = q.flatten(0, 1)
            else:
                k_dtype = torch.float64 if dtype != torch.float64 else torch.float32
        desc = f"attn B{B} Lq{Lq} Lk{Lk} H{H} Hkv{Hkv} D{D} Dv{Dv} {dtype} lengths={kl is not None} mask={m is not None} scale={scale} bad={bad}"

        def fn():
            ours = mmkernels.cross_attention(q.to(dtype), k.to(k_dtype), v.to(dtype), kv_lengths=kl,
                                             key_padding_mask=m, scale=scale)
            plain = R.cross_attention(q.to(dtype), k.to(dtype), v.to(dtype), kv_lengths=kl, key_padding_mask=m,
                                      scale=scale)
            ref = R.cross_attention(q.double(), k.double(), v.double(), kv_lengths=kl, key_padding_mask=m, scale=scale)
            return ours, plain, ref
        return desc, fn, bad
    lead = [rng.randint(0, 3) for _ in range(rng.randint(0, 2))]
    widths = [rng.randint(1, 20) for _ in range(rng.randint(1, 4))]
    N = rng.randint(1, 12)
    act = rng.choice(["none", "relu", "gelu", "gelu_tanh", "silu"])
    xs = [torch.randn(*lead, d) for d in widths]
    w, b = torch.randn(N, sum(widths)) / 4, (torch.randn(N) if rng.random() < 0.5 else None)
    if bad:
        which = rng.choice(["w", "bias", "act"] + (["lead"] if len(widths) > 1 else []))
        if which == "w":
            w = torch.randn(N, sum(widths) + 1)
        elif which == "bias":
            b = torch.randn(N + 1)
        elif which == "act":
            act = "tanh"
        else:
            xs[0] = torch.randn(*lead, 1, widths[0])
    desc = f"linear lead{lead} widths{widths} N{N} {act} bias={b is not None} {dtype} bad={bad}"

    def fn():
        cast = lambda t: None if t is None else t.to(dtype)
        ours = mmkernels.concat_linear([cast(x) for x in xs], cast(w), cast(b), act)
        plain = R.concat_linear([cast(x) for x in xs], cast(w), cast(b), act)
        ref = R.concat_linear([x.double() for x in xs], w.double(), None if b is None else b.double(), act)
        return ours, plain, ref
    return desc, fn, bad


def within_budget(ours, plain, ref):
    """The project's error rule (tests/helpers.py): <= 2x plain PyTorch's same-dtype error + a floor."""
    if ours.numel() == 0:
        return True
    from helpers import EPS, max_err

    if ours.dtype == torch.float64:  # plain PyTorch in float64 is the reference itself
        return torch.allclose(ours, ref, rtol=1e-10, atol=1e-12, equal_nan=True)
    floor = 2 * EPS[ours.dtype] * max(1.0, ref.abs().max().item())
    return bool(torch.isfinite(ours).all()) and max_err(ours, ref) <= 2 * max_err(plain, ref) + floor


def _worker(conn, seed, count):
    import random

    torch.set_num_threads(1)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for i in range(count):
        desc, fn, bad = _random_call(rng)
        conn.send(("start", i, desc))
        try:
            ours, plain, ref = fn()
            ok = ours.shape == ref.shape and within_budget(ours, plain, ref)
            conn.send(("result", i, "ok" if (ok and not bad) else ("accepted bad input" if bad else "wrong result")))
        except (ValueError, TypeError, RuntimeError) as e:
            conn.send(("result", i, "raised" if bad else f"raised on valid input: {type(e).__name__}: {e}"))
    conn.send(("done", count, ""))


def test_randomized_calls_never_crash_hang_or_mislead():
    count, seed = 400, 1234
    ctx = mp.get_context("spawn")  # not fork: the parent's OpenMP threads do not survive a fork
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(child, seed, count), daemon=True)
    proc.start()
    current, failures, done = None, [], False
    try:
        while not done:
            if not parent.poll(60):
                pytest.fail(f"no progress for 60 s (hang?) during: {current}")
            try:
                tag, i, text = parent.recv()
            except EOFError:
                pytest.fail(f"the worker died (exit code {proc.exitcode}) during: {current}")
            if tag == "start":
                current = text
            elif tag == "result" and text not in ("ok", "raised"):
                failures.append(f"{current}: {text}")
            done = tag == "done"
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    assert not failures, "\n".join(failures[:20])


@pytest.mark.skipif(not mmkernels.testing.emulation_available(), reason="needs the emulation build")
@pytest.mark.parametrize("arch", sorted(mmkernels.testing.ARCHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_device_kv_lengths_out_of_range_are_clamped_unless_debug_checks(arch, dtype):
    # The CUDA contract (cross_attention's docstring): reading the lengths back would synchronise, so
    # the kernels clamp them to [0, Lk]; debug_checks() checks them. The CPU op always raises.
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(3, 7, 2, 64, generator=g).to(dtype) for _ in range(3))
    bad, clamped = torch.tensor([-4, 9, 3]), torch.tensor([0, 7, 3])
    ref = R.cross_attention(q.double(), k.double(), v.double(), kv_lengths=clamped)
    message = r"kv_lengths must lie in \[0, Lk\] = \[0, 7\], got values in \[-4, 9\]"
    with mmkernels.testing.emulated_cuda(arch):
        out = mmkernels.cross_attention(q, k, v, kv_lengths=bad)
        assert torch.equal(out, mmkernels.cross_attention(q, k, v, kv_lengths=clamped))
        with mmkernels.debug_checks():
            with pytest.raises(ValueError, match=message):
                mmkernels.cross_attention(q, k, v, kv_lengths=bad)
            with pytest.raises(ValueError, match=message):
                torch.ops.mmkernels.cross_attention_fwd(q, k, v, bad, None, 0.125)
        assert torch.equal(mmkernels.cross_attention(q, k, v, kv_lengths=bad), out)  # the switch is restored
    assert out[0].abs().max() == 0  # batch 0 has no valid key: zeros
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert (out.double() - ref).abs().max() < tol
    with pytest.raises(ValueError, match=message):
        mmkernels.cross_attention(q, k, v, kv_lengths=bad)


def test_lse_dtype_rule_is_read_from_the_extension_and_rejects_unknown_names():
    from mmkernels.ops import _C, _cross_attention

    for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        assert _C._lse_dtype(str(dt).split(".")[-1]) == "float64"  # common/dtype.h: float64 for every input
        assert _cross_attention._LSE_DTYPE[dt] == torch.float64
    with pytest.raises(ValueError, match="float32, float16, bfloat16, float64"):
        _C._lse_dtype("int8")
