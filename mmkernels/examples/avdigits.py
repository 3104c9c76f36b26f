"""Train early / late / attention fusion (and unimodal baselines) on AV-digits.

    python -m mmkernels.examples.avdigits --fsdd-dir DIR [--model early|late|attention|all] [--epochs N]
                                          [--device auto|cpu|cuda] [--json PATH]

Reports test accuracy, accuracy with each modality missing at test time, and training samples/s with the
fused kernels vs the reference ops (same model, same steps). ``--model all`` trains the three fusion
models and the audio-only / image-only baselines.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from typing import Dict, Optional

import torch
from torch import nn

import mmkernels
from mmkernels.data import AVDigits
from mmkernels.models import AttentionFusion, EarlyFusion, LateFusion

MODALITIES = {"audio": ("sequence", 40), "image": ("image", 1)}
FUSION = {"early": EarlyFusion, "late": LateFusion, "attention": AttentionFusion}


def build(name: str) -> nn.Module:
    if name in FUSION:
        return FUSION[name](MODALITIES, 10)
    modality = name.split("_")[0]  # audio_only / image_only
    return EarlyFusion({modality: MODALITIES[modality]}, 10)


def _restrict(inputs, lengths, keep):
    return {k: v for k, v in inputs.items() if k in keep}, {k: v for k, v in lengths.items() if k in keep}


def _to(batch, device):
    inputs, lengths, labels = batch
    return ({k: v.to(device) for k, v in inputs.items()}, {k: v.to(device) for k, v in lengths.items()},
            labels.to(device))


@torch.no_grad()
def evaluate(model, split, device, keep, batch_size=256) -> float:
    model.eval()
    correct = 0
    for batch in AVDigits.batches(split, batch_size, shuffle=False):
        inputs, lengths, labels = _to(batch, device)
        inputs, lengths = _restrict(inputs, lengths, keep)
        correct += (model(inputs, lengths).argmax(-1) == labels).sum().item()
    return correct / len(split.label)


def train_step(model, opt, batch, keep, modality_dropout: float, gen: torch.Generator):
    inputs, lengths, labels = batch
    inputs, lengths = _restrict(inputs, lengths, keep)
    present = None
    if modality_dropout > 0 and len(keep) > 1:
        # drop one modality per sample with probability `modality_dropout`, never both
        r = torch.rand(labels.shape[0], generator=gen).to(labels.device)
        present = {name: ~((r >= i * modality_dropout / len(keep)) & (r < (i + 1) * modality_dropout / len(keep)))
                   for i, name in enumerate(sorted(keep))}
    loss = nn.functional.cross_entropy(model(inputs, lengths, present), labels, label_smoothing=0.05)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def throughput(model, data, device, keep, steps=12, batch_size=64) -> float:
    """Training samples/s of a copy of ``model`` over ``steps`` fixed batches (first 2 are warm-up)."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    batches = [_to(b, device) for _, b in zip(range(steps), AVDigits.batches(data.train, batch_size, shuffle=False))]
    for b in batches[:2]:
        train_step(model, opt, b, keep, 0.0, gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches[2:]:
        train_step(model, opt, b, keep, 0.0, gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(b[2].shape[0] for b in batches[2:]) / (time.perf_counter() - t0)


@torch.no_grad()
def fused_vs_reference(model, data, device, keep) -> Dict[str, float]:
    model.eval()
    inputs, lengths, labels = _to(next(AVDigits.batches(data.test, 300, shuffle=False)), device)
    inputs, lengths = _restrict(inputs, lengths, keep)
    fused = model(inputs, lengths)
    with mmkernels.use_reference_ops():
        ref = model(inputs, lengths)
    return {"max_abs_logit_diff": (fused - ref).abs().max().item(),
            "prediction_agreement": (fused.argmax(-1) == ref.argmax(-1)).float().mean().item()}


def run_model(name, data, device, epochs, batch_size=64, lr=3e-3, seed=0, log=print) -> Dict:
    torch.manual_seed(seed)
    model = build(name).to(device)
    keep = set(MODALITIES) if name in FUSION else {name.split("_")[0]}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(data.train.label) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    dropout = 0.4 if name in FUSION else 0.0
    t_train, n_train = 0.0, 0
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        losses = []
        for i, batch in enumerate(AVDigits.batches(data.train, batch_size, shuffle=True, generator=gen)):
            losses.append(train_step(model, opt, _to(batch, device), keep, dropout, gen))
            sched.step()
            n_train += batch[2].shape[0]
            if sys.stderr.isatty():
                done = min(24, int(24 * (i + 1) * batch_size / len(data.train.label)))
                sys.stderr.write(f"\r  {name:<10} epoch {epoch + 1:>2}/{epochs} [{'#' * done:<24}] loss {losses[-1]:.3f}")
        t_train += time.perf_counter() - t0
        sys.stderr.write(f"\r  {name:<10} epoch {epoch + 1:>2}/{epochs} mean loss {sum(losses) / len(losses):.3f}"
                         f" ({time.perf_counter() - t0:.1f}s)\n")
    acc = evaluate(model, data.test, device, keep)
    result = {"test_accuracy": acc, "epochs": epochs, "train_seconds": t_train,
              "parameters": sum(p.numel() for p in model.parameters())}
    if name in FUSION:
        result["accuracy_missing"] = {m: evaluate(model, data.test, device, keep - {m}) for m in sorted(keep)}
    result["train_samples_per_s"] = {"fused": throughput(model, data, device, keep)}
    with mmkernels.use_reference_ops():
        result["train_samples_per_s"]["reference"] = throughput(model, data, device, keep)
    result["fused_vs_reference"] = fused_vs_reference(model, data, device, keep)
    log(f"  {name:<10} test acc {acc:.4f}"
        + ("".join(f"  | {m} missing {a:.4f}" for m, a in result.get("accuracy_missing", {}).items()))
        + f"  | samples/s fused {result['train_samples_per_s']['fused']:.0f}"
          f" reference {result['train_samples_per_s']['reference']:.0f}")
    return result


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmkernels.examples.avdigits", description=__doc__.split("\n")[0])
    ap.add_argument("--fsdd-dir", default=None, help="FSDD folder (default: $MMKERNELS_FSDD_DIR)")
    ap.add_argument("--model", default="all", choices=["early", "late", "attention", "all"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error("--epochs must be >= 1")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    try:
        t0 = time.perf_counter()
        data = AVDigits(args.fsdd_dir, seed=args.seed)
    except ValueError as e:
        ap.error(str(e))
    print(f"AV-digits: {len(data.train.label)} train / {len(data.test.label)} test pairs "
          f"(loaded in {time.perf_counter() - t0:.1f}s); device {device}")
    names = ["early", "late", "attention", "audio_only", "image_only"] if args.model == "all" else [args.model]
    results = {n: run_model(n, data, device, args.epochs, seed=args.seed) for n in names}
    report = {"models": results, "device": str(device), "torch_version": torch.__version__,
              "epochs": args.epochs, "seed": args.seed}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
