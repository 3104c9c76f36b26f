"""Benchmark cases for ``python -m mmkernels.bench --suite models``: one training step (forward,
backward, optimizer) of each fusion model, fused kernels vs the same model on the reference ops.

The benchmark depends on the models, never the reverse."""
from __future__ import annotations

import copy

import torch

import mmkernels

from ..models import AttentionFusion, EarlyFusion, LateFusion
from .case import OURS, Case


def _batch(B, T, device, g):
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g, device=device)
    return ({"audio": torch.randn(B, T, 40, generator=g, device=device),
             "image": torch.randn(B, 1, 8, 8, generator=g, device=device)},
            {"audio": lengths}, torch.randint(0, 10, (B,), generator=g, device=device))


def model_cases(device, quick, with_compile):
    B, T = (64, 160) if device.type == "cpu" else (256, 400)
    out = []
    for name, cls in (("early", EarlyFusion), ("late", LateFusion), ("attention", AttentionFusion)):
        def build(name=name, cls=cls):
            g = torch.Generator(device=device).manual_seed(0)
            torch.manual_seed(0)
            base = cls({"audio": ("sequence", 40), "image": ("image", 1)}, 10, d_model=128).to(device)
            batches = [_batch(B, T, device, g) for _ in range(2)]
            case = Case(f"train step {name}-fusion B{B} T{T}", "model", torch.float32, "train_step",
                        dict(model=name, B=B, T=T), flops=0.0)

            def step_fn(model, reference):
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

                def call(i):
                    inputs, lengths, labels = batches[i % len(batches)]
                    with mmkernels.use_reference_ops(reference):
                        loss = torch.nn.functional.cross_entropy(model(inputs, lengths), labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    return loss
                return call

            case.impls[OURS] = step_fn(copy.deepcopy(base), False)
            case.impls["reference_ops"] = step_fn(copy.deepcopy(base), True)
            if with_compile:
                compiled = torch.compile(copy.deepcopy(base))
                case.impls["compiled_reference_ops"] = step_fn(compiled, True)
            return case
        out.append(build)
    return out
