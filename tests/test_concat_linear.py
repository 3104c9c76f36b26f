import os

import pytest
import torch

import mmkernels
from mmkernels import reference as R

from conftest import DEVICES
from helpers import assert_within_budget

LOW = [torch.float32, torch.bfloat16, torch.float16]
ACTS = ["none", "relu", "gelu", "gelu_tanh", "silu"]
# (leading shape, widths, N)
SHAPES = [
    ((), (1,), 1),
    ((7,), (3, 1, 5), 9),
    ((2, 5), (64, 33), 97),
    ((97,), (257, 7, 64), 130),
    ((3, 1, 4), (16,), 32),
    ((300,), (33, 64, 1), 17),  # M > N: the other GEMM orientation
]


def make(shape, dtype, device, seed, noncontig=False, bias=True):
    lead, dims, N = shape
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(*lead, d, 2 if noncontig else 1, generator=g, dtype=torch.float64) for d in dims]
    K = sum(dims)
    w = torch.randn(N, K, generator=g, dtype=torch.float64) / K**0.5
    b = torch.randn(N, generator=g, dtype=torch.float64) if bias else None
    to = lambda t: None if t is None else t.to(device=device, dtype=dtype)
    return [to(x)[..., 0] for x in xs], to(w), to(b)  # [..., 0] of a width-2 last dim: strided inputs


def run(fn, xs, w, b, act, dtype, grad):
    xs = [x.detach().to(dtype).requires_grad_() if x.dtype != dtype else x.detach().requires_grad_() for x in xs]
    w = w.detach().to(dtype).requires_grad_()
    b = None if b is None else b.detach().to(dtype).requires_grad_()
    y = fn(xs, w, b, act)
    y.backward(grad.to(dtype))
    return [y] + [x.grad for x in xs] + [w.grad] + ([b.grad] if b is not None else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}->{s[2]}")
def test_matches_float64_reference_within_budget(shape, act, dtype, device):
    xs, w, b = make(shape, torch.float64, device, seed=len(shape[1]) * 7 + shape[2])
    grad = torch.randn(*shape[0], shape[2], dtype=torch.float64, device=device)
    ref = run(R.concat_linear, xs, w, b, act, torch.float64, grad)
    plain = run(R.concat_linear, xs, w, b, act, dtype, grad)
    ours = run(mmkernels.concat_linear, xs, w, b, act, dtype, grad)
    assert ours[0].dtype == dtype and ours[0].shape == ref[0].shape
    names = ["y"] + [f"dx{i}" for i in range(len(xs))] + ["dW", "db"]
    for name, o, p, r in zip(names, ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)


# Five segments with a 1000-wide one, ten (more than one launch holds: chained accumulators), and
# many rows for a small output (the CUDA weight gradient splits its K = M loop: uneven last split).
WIDE = [((2, 3), (1000, 1, 7, 64, 33), 40), ((5,), tuple(range(1, 11)), 24), ((999,), (40, 17), 24)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("shape", WIDE, ids=["5seg-1000", "10seg", "split-k"])
def test_many_segments_and_wide_inputs(shape, dtype, device):
    xs, w, b = make(shape, torch.float64, device, seed=len(shape[1]))
    grad = torch.randn(*shape[0], shape[2], dtype=torch.float64, device=device)
    ref = run(R.concat_linear, xs, w, b, "silu", torch.float64, grad)
    plain = run(R.concat_linear, xs, w, b, "silu", dtype, grad)
    ours = run(mmkernels.concat_linear, xs, w, b, "silu", dtype, grad)
    names = ["y"] + [f"dx{i}" for i in range(len(xs))] + ["dW", "db"]
    for name, o, p, r in zip(names, ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_inputs_and_no_bias(device):
    shape = ((5, 3), (31, 8, 12), 17)
    xs, w, b = make(shape, torch.float32, device, seed=1, noncontig=True, bias=False)
    assert not xs[0].is_contiguous()
    grad = torch.randn(5, 3, 17, device=device)
    ours = run(mmkernels.concat_linear, xs, w, None, "gelu", torch.float32, grad)
    ref = run(R.concat_linear, [x.double() for x in xs], w.double(), None, "gelu", torch.float64, grad.double())
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o.double(), r, atol=1e-5, rtol=1e-5)


# The float32 backward's GEMM kernels (AVX2): from 512 rows the one-pass panel kernel, below it dz in
# 6-row strips for dX and the weight-gradient kernel from the stored dz. Odd widths (ragged 16-column
# panels), row counts that are not multiples of the strips, 64-row tiles or 256-row weight-gradient
# chunks (1, 7, 97, 511, 601), N = 300 past the strip kernel's 128-row k-blocks, strided inputs, each
# combination of wanted gradients.
ROW_CASES = [(601, "all"), (601, "frozen_inputs"), (601, "frozen_weight"), (601, "one_input"),
             (1, "all"), (7, "all"), (97, "one_input"), (97, "frozen_weight"), (511, "all")]


@pytest.mark.parametrize("rows,want", ROW_CASES, ids=[f"M{m}-{w}" for m, w in ROW_CASES])
def test_float32_backward_at_many_row_counts_within_budget(rows, want):
    n_out = 97 if rows > 97 else 300
    shape = ((rows,), (257, 7, 1, 64), n_out)
    xs, w, b = make(shape, torch.float64, "cpu", seed=13 + rows, noncontig=True)
    grad = torch.randn(rows, n_out, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def run_want(fn, dtype):
        xs_ = [x.detach().to(dtype).requires_grad_(want in ("all", "frozen_weight") or (want == "one_input" and i == 1))
               for i, x in enumerate(xs)]
        w_ = w.detach().to(dtype).requires_grad_(want != "frozen_weight")
        b_ = b.detach().to(dtype).requires_grad_(want != "frozen_weight")
        y = fn(xs_, w_, b_, "gelu")
        y.backward(grad.to(dtype))
        return [y] + [t.grad for t in xs_ + [w_, b_]]

    ref, plain = run_want(R.concat_linear, torch.float64), run_want(R.concat_linear, torch.float32)
    ours = run_want(mmkernels.concat_linear, torch.float32)
    names = ["y"] + [f"dx{i}" for i in range(len(xs))] + ["dW", "db"]
    for name, o, p, r in zip(names, ours, plain, ref):
        if r is None:
            assert o is None, name
        else:
            assert_within_budget(o, p, r, name, torch.float32)


def test_gradcheck_float64():
    for act in ACTS:
        xs, w, b = make(((3,), (2, 4), 5), torch.float64, "cpu", seed=3)
        xs = [x.requires_grad_() for x in xs]
        w.requires_grad_()
        b.requires_grad_()
        f = lambda x0, x1, w, b: mmkernels.concat_linear([x0, x1], w, b, act)
        assert torch.autograd.gradcheck(f, (*xs, w, b))


def test_empty_leading_shape_and_one_dim_inputs():
    xs = [torch.randn(0, 3), torch.randn(0, 4)]
    y = mmkernels.concat_linear(xs, torch.randn(5, 7), torch.randn(5), "relu")
    assert y.shape == (0, 5)
    x1 = [torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)]
    w = torch.randn(4, 5, requires_grad=True)
    y = mmkernels.concat_linear(x1, w)
    torch.testing.assert_close(y, R.concat_linear(x1, w))
    y.sum().backward()
    assert x1[0].grad.shape == (3,) and w.grad.shape == (4, 5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_deterministic(device, dtype):
    xs, w, b = make(((600,), (100, 30), 50), torch.float64, device, seed=4)
    grad = torch.randn(600, 50, dtype=torch.float64, device=device)
    outs = [run(mmkernels.concat_linear, xs, w, b, "silu", dtype, grad) for _ in range(2)]
    for a, c in zip(*outs):
        assert torch.equal(a, c)


# The ops test_opcheck covers (tests/test_torch_integration.py checks that every op is covered somewhere).
OPCHECKED = ("concat_linear_fwd", "concat_linear_bwd")
# (shape, dtype, bias): several samples per op, on every device the tests run on
OPCHECK_SAMPLES = [
    (((4,), (3, 2), 6), torch.float32, True),
    (((), (1,), 1), torch.float32, False),
    (((2, 3), (17, 8, 1), 33), torch.bfloat16, True),
    (((5,), (64,), 16), torch.float16, False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=lambda s: f"{s[0]}-{s[1]}-bias{s[2]}")
def test_opcheck(sample, device):
    shape, dtype, bias = sample
    xs, w, b = make(shape, dtype, device, seed=5, bias=bias)
    xs = [x.requires_grad_() for x in xs]
    w.requires_grad_()
    b = b.requires_grad_() if bias else None
    fwd, bwd = (getattr(torch.ops.mmkernels, name) for name in OPCHECKED)
    for act in range(len(mmkernels.ops.ACTIVATIONS)):
        torch.library.opcheck(fwd, (xs, w, b, act))
    torch.library.opcheck(fwd, ([x.detach() for x in xs], w.detach(), None, 2, False))
    y, z = fwd([x.detach() for x in xs], w.detach(), None if b is None else b.detach(), 2)
    # the backward op with inputs that require grad (its own autograd formula, mmkernels/ops/_concat_linear.py), every gradient
    # requested, then none of the inputs' and no weight gradient; and with plain inputs
    grad = lambda: (torch.randn_like(y).requires_grad_(), xs, w, z.detach().requires_grad_())
    torch.library.opcheck(bwd, (*grad(), bias, 2))
    torch.library.opcheck(bwd, (*grad(), bias, 2, [0] * len(xs), False))
    torch.library.opcheck(bwd, (torch.randn_like(y), [x.detach() for x in xs], w.detach(), z, bias, 2, [1] * len(xs)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_inference_does_not_store_the_preactivation(device, dtype):
    xs, w, b = make(((37,), (20, 9), 45), dtype, device, seed=8)
    y_train, z = torch.ops.mmkernels.concat_linear_fwd(xs, w, b, 2, True)
    y, z_none = torch.ops.mmkernels.concat_linear_fwd(xs, w, b, 2, False)
    assert z.shape == y.shape and z_none.numel() == 0
    assert torch.equal(y, y_train)
    with torch.no_grad():  # the public function's inference path takes the same kernels
        assert torch.equal(mmkernels.concat_linear(xs, w, b, "gelu"), y)


def test_torch_compile_fullgraph():
    xs, w, b = make(((8,), (6, 10), 12), torch.float32, "cpu", seed=6)

    def f(x0, x1, w, b):
        return mmkernels.concat_linear([x0, x1], w, b, "gelu").square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    res = []
    for fn in (f, compiled):
        args = [t.clone().requires_grad_() for t in (*xs, w, b)]
        loss = fn(*args)
        loss.backward()
        res.append([loss] + [a.grad for a in args])
    for a, c in zip(*res):
        torch.testing.assert_close(a, c)


BAD = [
    (dict(inputs=[]), ValueError, "non-empty"),
    (dict(inputs=torch.randn(2, 3)), TypeError, "list or tuple"),
    (dict(inputs=[torch.randn(2, 3), torch.randn(3, 4)]), ValueError, r"inputs\[1\] must have the leading shape"),
    (dict(inputs=[torch.randn(2, 3), torch.randn(2, 4).double()]), TypeError, r"inputs\[1\] must have dtype"),
    (dict(inputs=[torch.randn(2, 3).int()]), TypeError, "float32"),
    (dict(inputs=[torch.tensor(1.0)]), ValueError, "at least one dimension"),
    (dict(weight=torch.randn(5, 6)), ValueError, r"weight must have shape \(N, sum\(d_i\)\) = \(N, 7\)"),
    (dict(weight=torch.randn(5, 7).double()), TypeError, "weight must have dtype"),
    (dict(bias=torch.randn(4)), ValueError, r"bias must have shape \(N,\) = \(5,\)"),
    (dict(activation="tanh"), ValueError, "activation must be one of"),
    (dict(inputs=[torch.randn(2, 3), "x"]), TypeError, r"inputs\[1\] must be a torch.Tensor"),
]


@pytest.mark.parametrize("bad,exc,msg", BAD, ids=[b[2] for b in BAD])
def test_bad_inputs_raise_clear_errors(bad, exc, msg):
    args = dict(inputs=[torch.randn(2, 3), torch.randn(2, 4)], weight=torch.randn(5, 7), bias=torch.randn(5),
                activation="relu")
    args.update(bad)
    with pytest.raises(exc, match=msg):
        mmkernels.concat_linear(args["inputs"], args["weight"], args["bias"], args["activation"])


def test_direct_op_call_checks_arguments():
    with pytest.raises(ValueError, match="weight must have shape"):
        torch.ops.mmkernels.concat_linear_fwd([torch.randn(2, 3)], torch.randn(4, 5), None, 0)
    with pytest.raises(ValueError, match="activation code"):
        torch.ops.mmkernels.concat_linear_fwd([torch.randn(2, 3)], torch.randn(4, 3), None, 9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("frozen", ["inputs", "weight", "one_input"])
def test_backward_computes_only_the_gradients_asked_for(frozen, device):
    xs, w, b = make(((5, 3), (6, 9), 7), torch.float32, device, seed=11)
    xs = [x.detach().requires_grad_(frozen == "weight" or (frozen == "one_input" and i == 1)) for i, x in enumerate(xs)]
    w = w.detach().requires_grad_(frozen != "weight")
    b = b.detach().requires_grad_(frozen != "weight")
    grad = torch.randn(5, 3, 7, device=device)
    y = mmkernels.concat_linear(xs, w, b, "gelu")
    y.backward(grad)
    ref_xs = [x.detach().double().requires_grad_() for x in xs]
    ref_w, ref_b = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    R.concat_linear(ref_xs, ref_w, ref_b, "gelu").backward(grad.double())
    for x, r in zip(xs + [w, b], ref_xs + [ref_w, ref_b]):
        if x.requires_grad:
            torch.testing.assert_close(x.grad.double(), r.grad, rtol=1e-4, atol=1e-5)
        else:
            assert x.grad is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_narrow_views_never_read_their_neighbours(dtype, device):
    # Inputs that are column slices of wider tensors, whose other columns are inf / nan: the kernels read
    # operand rows in whole 16-byte pieces and must not let the neighbours into the result (gradients too).
    g = torch.Generator().manual_seed(5)
    bigs = [torch.randn(37, 16, generator=g, dtype=torch.float64) for _ in range(2)]
    bigs[0][:, 7:] = float("inf")
    bigs[1][:, 13:] = float("nan")
    xs = [bigs[0][:, :7].to(device, dtype), bigs[1][:, :13].to(device, dtype)]
    w = (torch.randn(11, 20, generator=g, dtype=torch.float64) / 4).to(device, dtype)
    grad = torch.randn(37, 11, dtype=torch.float64, device=device)
    ref = run(R.concat_linear, [x.double() for x in xs], w.double(), None, "gelu", torch.float64, grad)
    plain = run(R.concat_linear, xs, w, None, "gelu", dtype, grad)
    ours = run(mmkernels.concat_linear, xs, w, None, "gelu", dtype, grad)
    for name, o, p, r in zip(["y", "dx0", "dx1", "dW"], ours, plain, ref):
        assert_within_budget(o, p, r, name, dtype)


# Each architecture's 16-bit GEMM kernel, and how its name marks the dW layout (A = dZ^T).
DW_GEMM = {"sm_90a": ("gemm_sm90_kernel<", "bool AMN = true"), "sm_80": ("gemm_sm80_kernel<", "bool AMN = true")}


@pytest.mark.skipif(not mmkernels.testing.emulation_available(), reason="needs the emulation's launch log")
@pytest.mark.parametrize("arch", sorted(DW_GEMM))
def test_frozen_inputs_skip_their_gemms(arch):
    kernel, dw_layout = DW_GEMM[arch]
    xs = [torch.randn(17, d, dtype=torch.bfloat16) for d in (16, 8)]
    w = torch.randn(12, 24, dtype=torch.bfloat16, requires_grad=True)
    with mmkernels.testing.emulated_cuda(arch):
        y = mmkernels.concat_linear(xs, w, None, "relu")
        mmkernels.testing.emulated_kernel_launches()
        y.float().sum().backward()
        launched = mmkernels.testing.emulated_kernel_launches()
    gemms = [n for n in launched if n.startswith(kernel)]
    assert len(gemms) == 2 and all(dw_layout in n for n in gemms), launched  # dW slices only, no dX


@pytest.mark.skipif(not os.environ.get("MMKERNELS_BIG_TESTS"), reason="needs ~20 GiB; set MMKERNELS_BIG_TESTS=1")
def test_64bit_indexing_concat_linear():
    # y has M * N > 2^31 elements: every offset in the CPU kernels is 64-bit.
    M, N = (1 << 31) // 64 + 3, 64
    x = torch.ones(M, 2, dtype=torch.bfloat16)
    w = torch.ones(N, 2, dtype=torch.bfloat16)
    y = mmkernels.concat_linear([x], w)
    assert y.shape == (M, N) and y[-1, -1].item() == 2.0 and y[0, 0].item() == 2.0
