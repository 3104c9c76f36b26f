"""Train early / late / attention / layer-wise / gated fusion (and unimodal baselines) on AV-digits.

    python -m mmkernels.examples.avdigits --fsdd-dir DIR [--model early|late|attention|layerwise|gated|all]
        [--difficulty clean|hard] [--text] [--multitask [--task-weights digit=1,speaker=0.5]]
        [--epochs N] [--seed N] [--device auto|cpu|cuda] [--json PATH]

Reports per model, on the test split: digit accuracy, macro recall and macro F1; accuracy with each
modality missing at test time (fusion models); speaker accuracy (``--multitask``: digit from every
modality and speaker, trained jointly with the weighted sum of the two losses); and training samples/s
with the fused kernels vs the reference ops (same model, same steps). ``--model all`` trains the five
fusion models and one baseline per modality. ``--difficulty hard`` corrupts audio and images (see
``mmkernels.data.avdigits``); ``--text`` adds the noisy digit word as a third modality.
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
from mmkernels.data.avdigits import DIFFICULTIES, TEXT_VOCAB
from mmkernels.models import AttentionFusion, EarlyFusion, GatedFusion, LateFusion, LayerwiseFusion

AV = {"audio": ("sequence", 40), "image": ("image", 1)}
TEXT = {"text": ("text", TEXT_VOCAB)}
FUSION = {"early": EarlyFusion, "late": LateFusion, "attention": AttentionFusion, "layerwise": LayerwiseFusion,
          "gated": GatedFusion}


class Setting:
    """What one run trains on: modalities, tasks and their loss weights."""

    def __init__(self, text: bool = False, multitask: bool = False, task_weights: Optional[Dict[str, float]] = None):
        self.modalities = {**AV, **(TEXT if text else {})}
        self.text, self.multitask = text, multitask
        self.classes = {"digit": 10, "speaker": 6} if multitask else 10
        self.weights = task_weights or {"digit": 1.0, "speaker": 0.5}

    def build(self, name: str) -> nn.Module:
        if name == "layerwise":  # two layers of self + cross blocks: narrower, to train as fast as the rest
            return LayerwiseFusion(self.modalities, self.classes, d_model=64, num_layers=2)
        if name in FUSION:
            return FUSION[name](self.modalities, self.classes)
        modality = name[: -len("_only")]
        return EarlyFusion({modality: self.modalities[modality]}, self.classes)

    def keep(self, name: str) -> set:
        return set(self.modalities) if name in FUSION else {name[: -len("_only")]}

    def loss(self, out, labels) -> torch.Tensor:
        ce = lambda o, y: nn.functional.cross_entropy(o, y, label_smoothing=0.05)
        if not self.multitask:
            return ce(out, labels)
        return sum(self.weights[t] * ce(out[t], labels[t]) for t in out)

    def batches(self, split, batch_size, **kw):
        return AVDigits.batches(split, batch_size, text=self.text, speaker=self.multitask, **kw)


def _restrict(inputs, lengths, keep):
    return {k: v for k, v in inputs.items() if k in keep}, {k: v for k, v in lengths.items() if k in keep}


def _to(batch, device):
    inputs, lengths, labels = batch
    labels = {k: v.to(device) for k, v in labels.items()} if isinstance(labels, dict) else labels.to(device)
    return {k: v.to(device) for k, v in inputs.items()}, {k: v.to(device) for k, v in lengths.items()}, labels


def _digits(x):
    return x["digit"] if isinstance(x, dict) else x


def classification_metrics(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> Dict[str, float]:
    """Accuracy, macro recall and macro F1 (a class with no prediction and no example counts as 0)."""
    conf = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    conf.index_put_((target, pred), torch.ones(len(pred), dtype=torch.float64), accumulate=True)
    tp = conf.diag()
    recall = tp / conf.sum(1).clamp_min(1)
    precision = tp / conf.sum(0).clamp_min(1)
    f1 = torch.where(tp > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), torch.zeros_like(tp))
    return {"accuracy": (tp.sum() / conf.sum()).item(), "macro_recall": recall.mean().item(), "macro_f1": f1.mean().item()}


@torch.no_grad()
def predict(model, setting, split, device, keep, batch_size=256):
    model.eval()
    preds, targets = {}, {}
    for batch in setting.batches(split, batch_size, shuffle=False):
        inputs, lengths, labels = _to(batch, device)
        out = model(*_restrict(inputs, lengths, keep))
        out = out if isinstance(out, dict) else {"digit": out}
        labels = labels if isinstance(labels, dict) else {"digit": labels}
        for t in out:
            preds.setdefault(t, []).append(out[t].argmax(-1).cpu())
            targets.setdefault(t, []).append(labels[t].cpu())
    return {t: (torch.cat(preds[t]), torch.cat(targets[t])) for t in preds}


def evaluate(model, setting, split, device, keep) -> float:
    pred, target = predict(model, setting, split, device, keep)["digit"]
    return (pred == target).float().mean().item()


def train_step(model, setting, opt, batch, keep, modality_dropout: float, gen: torch.Generator):
    inputs, lengths, labels = batch
    inputs, lengths = _restrict(inputs, lengths, keep)
    present = None
    if modality_dropout > 0 and len(keep) > 1:
        # drop one modality per sample with probability `modality_dropout`, never all of them
        r = torch.rand(_digits(labels).shape[0], generator=gen).to(_digits(labels).device)
        present = {name: ~((r >= i * modality_dropout / len(keep)) & (r < (i + 1) * modality_dropout / len(keep)))
                   for i, name in enumerate(sorted(keep))}
    loss = setting.loss(model(inputs, lengths, present), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def throughput(model, setting, data, device, keep, steps=12, batch_size=64) -> float:
    """Training samples/s of a copy of ``model`` over ``steps`` fixed batches (first 2 are warm-up)."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    batches = [_to(b, device) for _, b in zip(range(steps), setting.batches(data.train, batch_size, shuffle=False))]
    for b in batches[:2]:
        train_step(model, setting, opt, b, keep, 0.0, gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches[2:]:
        train_step(model, setting, opt, b, keep, 0.0, gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(_digits(b[2]).shape[0] for b in batches[2:]) / (time.perf_counter() - t0)


@torch.no_grad()
def fused_vs_reference(model, setting, data, device, keep) -> Dict[str, float]:
    model.eval()
    inputs, lengths, _ = _to(next(setting.batches(data.test, 300, shuffle=False)), device)
    inputs, lengths = _restrict(inputs, lengths, keep)
    fused = _digits(model(inputs, lengths))
    with mmkernels.use_reference_ops():
        ref = _digits(model(inputs, lengths))
    return {"max_abs_logit_diff": (fused - ref).abs().max().item(),
            "prediction_agreement": (fused.argmax(-1) == ref.argmax(-1)).float().mean().item()}


def run_model(name, setting, data, device, epochs, batch_size=64, lr=3e-3, seed=0, log=print) -> Dict:
    torch.manual_seed(seed)
    model = setting.build(name).to(device)
    keep = setting.keep(name)
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
        for i, batch in enumerate(setting.batches(data.train, batch_size, shuffle=True, generator=gen)):
            losses.append(train_step(model, setting, opt, _to(batch, device), keep, dropout, gen))
            sched.step()
            n_train += _digits(batch[2]).shape[0]
            if sys.stderr.isatty():
                done = min(24, int(24 * (i + 1) * batch_size / len(data.train.label)))
                sys.stderr.write(f"\r  {name:<10} epoch {epoch + 1:>2}/{epochs} [{'#' * done:<24}] loss {losses[-1]:.3f}")
        t_train += time.perf_counter() - t0
        sys.stderr.write(f"\r  {name:<10} epoch {epoch + 1:>2}/{epochs} mean loss {sum(losses) / len(losses):.3f}"
                         f" ({time.perf_counter() - t0:.1f}s)\n")
    preds = predict(model, setting, data.test, device, keep)
    digit = classification_metrics(*preds["digit"], 10)
    result = {"test_accuracy": digit["accuracy"], "macro_recall": digit["macro_recall"],
              "macro_f1": digit["macro_f1"], "epochs": epochs, "train_seconds": t_train,
              "parameters": sum(p.numel() for p in model.parameters())}
    if "speaker" in preds:
        result["speaker_accuracy"] = classification_metrics(*preds["speaker"], 6)["accuracy"]
    if name in FUSION:
        result["accuracy_missing"] = {m: evaluate(model, setting, data.test, device, keep - {m}) for m in sorted(keep)}
    result["train_samples_per_s"] = {"fused": throughput(model, setting, data, device, keep)}
    with mmkernels.use_reference_ops():
        result["train_samples_per_s"]["reference"] = throughput(model, setting, data, device, keep)
    result["fused_vs_reference"] = fused_vs_reference(model, setting, data, device, keep)
    log(f"  {name:<12} acc {digit['accuracy']:.4f} F1 {digit['macro_f1']:.4f}"
        + (f" speaker {result['speaker_accuracy']:.4f}" if "speaker_accuracy" in result else "")
        + "".join(f" | {m} missing {a:.4f}" for m, a in result.get("accuracy_missing", {}).items())
        + f" | samples/s fused {result['train_samples_per_s']['fused']:.0f}"
          f" reference {result['train_samples_per_s']['reference']:.0f}")
    return result


def parse_weights(text: str) -> Dict[str, float]:
    out = {}
    for part in text.split(","):
        task, _, w = part.partition("=")
        if task not in ("digit", "speaker") or not w:
            raise ValueError(f"--task-weights: expected digit=W,speaker=W, got {text!r}")
        out[task] = float(w)
    return {"digit": 1.0, "speaker": 0.5, **out}


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmkernels.examples.avdigits", description=__doc__.split("\n")[0])
    ap.add_argument("--fsdd-dir", default=None, help="FSDD folder (default: $MMKERNELS_FSDD_DIR)")
    ap.add_argument("--model", default="all", choices=[*FUSION, "all"])
    ap.add_argument("--difficulty", default="clean", choices=DIFFICULTIES)
    ap.add_argument("--text", action="store_true", help="add the noisy digit word as a third modality")
    ap.add_argument("--multitask", action="store_true", help="also predict the speaker (6 classes)")
    ap.add_argument("--task-weights", default="digit=1,speaker=0.5", help="loss weights with --multitask")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error("--epochs must be >= 1")
    try:
        weights = parse_weights(args.task_weights)
    except ValueError as e:
        ap.error(str(e))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    setting = Setting(args.text, args.multitask, weights)
    try:
        t0 = time.perf_counter()
        data = AVDigits(args.fsdd_dir, seed=args.seed, difficulty=args.difficulty)
    except ValueError as e:
        ap.error(str(e))
    print(f"AV-digits ({args.difficulty}{', text' if args.text else ''}{', multi-task' if args.multitask else ''}): "
          f"{len(data.train.label)} train / {len(data.test.label)} test (loaded in {time.perf_counter() - t0:.1f}s); "
          f"device {device}")
    names = ([*FUSION] + [f"{m}_only" for m in setting.modalities]) if args.model == "all" else [args.model]
    t_all = time.perf_counter()
    results = {n: run_model(n, setting, data, device, args.epochs, seed=args.seed) for n in names}
    report = {"models": results, "device": str(device), "torch_version": torch.__version__, "epochs": args.epochs,
              "seed": args.seed, "difficulty": args.difficulty, "text": args.text, "multitask": args.multitask,
              "task_weights": weights if args.multitask else None, "wall_seconds": time.perf_counter() - t_all}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
