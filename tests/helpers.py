"""Shared test helpers: the dtype-aware error rule of the project.

A kernel's max abs error against a float64 reference must be at most 2x the error of the same
computation done by plain PyTorch in the same dtype, plus a small floor (one unit of the dtype's
precision, scaled by the reference's magnitude) so that exact-by-luck baselines do not fail us.
"""
import torch

EPS = {torch.float32: 1.2e-7, torch.float16: 9.8e-4, torch.bfloat16: 7.9e-3, torch.float64: 2.3e-16}


def max_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return (a.detach().double().cpu() - ref.detach().double().cpu()).abs().max().item()


def assert_within_budget(ours, plain, ref, what: str, dtype: torch.dtype, factor: float = 2.0):
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(ours).all(), f"{what}: non-finite values"
    e_ours, e_plain = max_err(ours, ref), max_err(plain, ref)
    scale = max(1.0, ref.detach().abs().max().item()) if ref.numel() else 1.0
    floor = 2 * EPS[dtype] * scale
    assert e_ours <= factor * e_plain + floor, (
        f"{what} ({dtype}): error {e_ours:.3e} > {factor} x plain PyTorch {e_plain:.3e} + floor {floor:.1e}"
    )


def check_autocast_layers(device: str, dtype: torch.dtype, seed: int = 0) -> None:
    """CrossModalAttention (grouped-query, with kv_lengths) then ConcatLinear under
    ``torch.autocast(device, dtype)``: the output comes out in ``dtype``, and the output and the
    parameter gradients are within the error rule of the float64 computation, measured against the
    same layers on the reference ops under the same autocast (plain PyTorch in that dtype)."""
    import contextlib
    import copy

    import mmkernels
    from mmkernels.nn import ConcatLinear, CrossModalAttention

    torch.manual_seed(seed)
    attn = CrossModalAttention(32, 4, num_kv_heads=2).to(device)
    cl = ConcatLinear([32, 8], 16, activation="gelu").to(device)
    g = torch.Generator().manual_seed(seed + 1)
    x, kv, e, cot = (torch.randn(2, 5, 32, generator=g), torch.randn(2, 9, 32, generator=g),
                     torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 16, generator=g))
    kv_lengths = torch.tensor([9, 4])

    def run(attn, cl, float_dtype, cast, reference, device=device):
        for p in (*attn.parameters(), *cl.parameters()):
            p.grad = None
        on = lambda t: t.to(device, float_dtype)
        region = torch.autocast(device, dtype=dtype) if cast else contextlib.nullcontext()
        with region, mmkernels.use_reference_ops(reference):
            y = cl(attn(on(x), on(kv), kv_lengths=kv_lengths.to(device)), on(e))
        (y * on(cot)).sum().backward()
        return {"output": y, "q_proj.weight.grad": attn.q_proj.weight.grad,
                "v_proj.weight.grad": attn.v_proj.weight.grad, "concat_linear.weight.grad": cl.weight.grad}

    ours = run(attn, cl, torch.float32, True, False)
    plain = run(attn, cl, torch.float32, True, True)
    # float64 is a CPU dtype of the ops
    truth = run(copy.deepcopy(attn).to("cpu", torch.float64), copy.deepcopy(cl).to("cpu", torch.float64),
                torch.float64, False, True, device="cpu")
    assert ours["output"].dtype == dtype, f"autocast output dtype {ours['output'].dtype}, expected {dtype}"
    for what in truth:
        assert_within_budget(ours[what], plain[what], truth[what], f"autocast {what}", dtype)
