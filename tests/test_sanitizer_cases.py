"""Small CUDA cases that scripts/gpu_check.sh runs under compute-sanitizer (memcheck, racecheck,
initcheck, synccheck): every kernel of both ops, forward and backward, with masks, lengths, GQA and
odd sizes. As a test it also checks every output and gradient against the float64 reference under the
project's error rule (tests/helpers.py; plain PyTorch's error measured on the CPU, so that the
sanitizers see only mmkernels' kernels). Skipped without a GPU."""
import pytest
import torch
from helpers import assert_within_budget

import mmkernels

pytestmark = pytest.mark.cuda


def run_cases(device, dtype, reference):
    """Every case's output and input gradients (for a random cotangent), by name."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 37, 4, 64, generator=g)
    k = torch.randn(2, 53, 2, 64, generator=g)
    kl = torch.tensor([53, 20])
    m = torch.rand(2, 53, generator=g) < 0.2
    qd = torch.randn(1, 19, 2, 128, generator=g)  # causal, another head dim, Dv != D
    kd, vd = torch.randn(1, 45, 1, 128, generator=g), torch.randn(1, 45, 1, 96, generator=g)
    xs = [torch.randn(33, 17, generator=g), torch.randn(33, 40, generator=g)]
    w = torch.randn(24, 57, generator=g) / 57**0.5
    xl = [torch.randn(300, 24, generator=g), torch.randn(300, 9, generator=g)]
    wl = torch.randn(16, 33, generator=g) / 33**0.5  # 300 rows: a split-K weight gradient
    leaf = lambda t: t.to(device, dtype).requires_grad_()
    calls = {
        "attention (GQA, kv_lengths, mask)": lambda: (
            [leaf(q), leaf(k)], lambda a, b: mmkernels.cross_attention(a, b, b, kv_lengths=kl.to(device),
                                                                        key_padding_mask=m.to(device))),
        "attention (causal, D 128, Dv 96)": lambda: (
            [leaf(qd), leaf(kd), leaf(vd)], lambda a, b, c: mmkernels.cross_attention(a, b, c, is_causal=True)),
        "concat_linear (gelu)": lambda: (
            [leaf(w), *map(leaf, xs)], lambda w_, *x: mmkernels.concat_linear(list(x), w_, None, "gelu")),
        "concat_linear (silu, split-K dW)": lambda: (
            [leaf(wl), *map(leaf, xl)], lambda w_, *x: mmkernels.concat_linear(list(x), w_, None, "silu")),
    }
    results = {}
    with mmkernels.use_reference_ops(reference):
        for name, make in calls.items():
            args, fn = make()
            out = fn(*args)
            cot = torch.randn(out.shape, generator=g).to(device, dtype)
            grads = torch.autograd.grad(out, args, cot)
            results[name] = out
            results.update({f"{name} grad {i}": d for i, d in enumerate(grads)})
    if device == "cuda":
        torch.cuda.synchronize()
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_small_cuda_cases(dtype):
    ours = run_cases("cuda", dtype, reference=False)
    plain = run_cases("cpu", dtype, reference=True)
    truth = run_cases("cpu", torch.float64, reference=True)
    assert ours.keys() == truth.keys()
    for what in truth:
        assert_within_budget(ours[what], plain[what], truth[what], what, dtype)
