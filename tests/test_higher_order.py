"""Second-order gradients: a backward run with create_graph=True must be differentiable and agree with
the plain-PyTorch reference (gradient penalties, Hessian-vector products, MAML)."""
import pytest
import torch

import mmkernels
from mmkernels import reference as R

from conftest import DEVICES
from test_cross_attention import make_inputs


def second_order(fn, primals, seed):
    """d/d(primals) of <grad(out . w, primals), v> for fixed random w, v: a Hessian-vector product."""
    g = torch.Generator().manual_seed(seed)
    primals = [p.detach().clone().requires_grad_() for p in primals]
    out = fn(*primals)
    w = torch.randn(out.shape, generator=g, dtype=out.dtype).to(out.device)
    grads = torch.autograd.grad((out * w).sum(), primals, create_graph=True)
    vs = [torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in primals]
    hvp = torch.autograd.grad(sum((gr * v).sum() for gr, v in zip(grads, vs)), primals, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for h, p in zip(hvp, primals)], grads


@pytest.mark.parametrize("masking", ["none", "lengths", "mask", "both"])
def test_cross_attention_second_order_matches_reference(masking):
    q, k, v, kl, m = make_inputs((3, 5, 7, 4, 2, 6, 3), masking, "cpu", seed=21)  # B=3: some batch has keys
    ours = lambda q, k, v: mmkernels.cross_attention(q, k, v, kv_lengths=kl, key_padding_mask=m, scale=0.7)
    ref = lambda q, k, v: R.cross_attention(q, k, v, kv_lengths=kl, key_padding_mask=m, scale=0.7)
    (h_ours, g_ours), (h_ref, g_ref) = second_order(ours, (q, k, v), 1), second_order(ref, (q, k, v), 1)
    for a, b in zip(g_ours + tuple(h_ours), g_ref + tuple(h_ref)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert max(h.abs().max().item() for h in h_ref) > 0.1  # a real second-order signal, not zeros


@pytest.mark.parametrize("act", ["none", "relu", "gelu", "gelu_tanh", "silu"])
def test_concat_linear_second_order_matches_reference(act):
    g = torch.Generator().manual_seed(5)
    x0, x1 = torch.randn(3, 4, 2, generator=g, dtype=torch.float64), torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    w, b = torch.randn(6, 7, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    ours = lambda x0, x1, w, b: mmkernels.concat_linear([x0, x1], w, b, act)
    ref = lambda x0, x1, w, b: R.concat_linear([x0, x1], w, b, act)
    (h_ours, g_ours), (h_ref, g_ref) = second_order(ours, (x0, x1, w, b), 2), second_order(ref, (x0, x1, w, b), 2)
    for a, c in zip(g_ours + tuple(h_ours), g_ref + tuple(h_ref)):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)


def test_gradgradcheck_both_ops():
    q, k, v, kl, m = make_inputs((2, 3, 4, 2, 1, 3, 2), "both", "cpu", seed=8)
    kl = torch.tensor([4, 2])
    q, k, v = [t.requires_grad_() for t in (q, k, v)]
    f = lambda q, k, v: mmkernels.cross_attention(q, k, v, kv_lengths=kl, key_padding_mask=m)
    assert torch.autograd.gradgradcheck(f, (q, k, v))
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    w = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    for act in ("gelu", "silu", "gelu_tanh"):
        assert torch.autograd.gradgradcheck(lambda x0, x1, w, b: mmkernels.concat_linear([x0, x1], w, b, act),
                                            (*xs, w, b))


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_penalty_through_the_layers(device):
    # The common use: a penalty on the input gradient, trained through the model's parameters.
    from mmkernels.nn import ConcatLinear, CrossModalAttention

    torch.manual_seed(0)
    attn = CrossModalAttention(8, 2).to(device)
    cl = ConcatLinear([8, 3], 5, activation="gelu").to(device)
    x = torch.randn(2, 4, 8, device=device, requires_grad=True)
    kv = torch.randn(2, 6, 8, device=device)
    e = torch.randn(2, 4, 3, device=device)

    def loss_and_penalty(reference):
        with mmkernels.use_reference_ops(reference):
            y = cl(attn(x, kv), e)
            (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
            total = y.sum() + gx.square().sum()
            return torch.autograd.grad(total, list(attn.parameters()) + list(cl.parameters()))

    for a, b in zip(loss_and_penalty(False), loss_and_penalty(True)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not mmkernels.testing.emulation_available(), reason="needs the emulation's launch log")
def test_first_order_backward_still_uses_the_fused_kernels():
    # create_graph=False: the fused backward kernels; create_graph=True: the differentiable reference.
    q = torch.randn(1, 4, 2, 16, dtype=torch.bfloat16, requires_grad=True)
    with mmkernels.testing.emulated_cuda():
        out = mmkernels.cross_attention(q, q, q)
        mmkernels.testing.emulated_kernel_launches()
        torch.autograd.grad(out.float().sum(), q, retain_graph=True)
        first = mmkernels.testing.emulated_kernel_launches()
        torch.autograd.grad(out.float().sum(), q, create_graph=True)
        second = mmkernels.testing.emulated_kernel_launches()
    assert any("flash_sm90_bwd_kernel" in n for n in first)  # emulated_cuda() emulates sm_90a
    assert second == []


@pytest.mark.parametrize("causal", [False, True])
def test_cross_attention_backward_op_has_exact_gradients(causal):
    # The backward op's own autograd formula (what opcheck exercises): gradcheck through forward op +
    # backward op, so that out and lse follow q, k, v as the op's contract requires.
    q, k, v, kl, m = make_inputs((3, 4, 6, 4, 2, 3, 2), "both", "cpu", seed=11)
    g = torch.randn(3, 4, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    fwd, bwd = torch.ops.mmkernels.cross_attention_fwd, torch.ops.mmkernels.cross_attention_bwd

    def grads(g, q, k, v):
        return tuple(bwd(g, q, k, v, *fwd(q, k, v, kl, m, 0.6, causal), kl, m, 0.6, causal))

    assert torch.autograd.gradcheck(grads, [t.requires_grad_() for t in (g, q, k, v)])


@pytest.mark.parametrize("act", ["none", "relu", "gelu", "gelu_tanh", "silu"])
def test_concat_linear_backward_op_has_exact_gradients(act):
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.randn(2, 3, 2, generator=g, dtype=torch.float64), torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64)
    z, dy = torch.randn(2, 3, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    code = mmkernels.ops.ACTIVATIONS.index(act)
    bwd = lambda dy, x0, x1, w, z: tuple(torch.ops.mmkernels.concat_linear_bwd(dy, [x0, x1], w, z, True, code))
    assert torch.autograd.gradcheck(bwd, [t.requires_grad_() for t in (dy, x0, x1, w, z)])
