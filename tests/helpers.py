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
    return (a.detach().double() - ref.detach().double()).abs().max().item()


def assert_within_budget(ours, plain, ref, what: str, dtype: torch.dtype, factor: float = 2.0):
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(ours).all(), f"{what}: non-finite values"
    e_ours, e_plain = max_err(ours, ref), max_err(plain, ref)
    scale = max(1.0, ref.detach().abs().max().item()) if ref.numel() else 1.0
    floor = 2 * EPS[dtype] * scale
    assert e_ours <= factor * e_plain + floor, (
        f"{what} ({dtype}): error {e_ours:.3e} > {factor} x plain PyTorch {e_plain:.3e} + floor {floor:.1e}"
    )
