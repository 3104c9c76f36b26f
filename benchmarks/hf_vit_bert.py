"""Times a small Hugging Face multimodal model, a ViT -> BERT encoder-decoder (image captioning shape),
forward+backward with attn_implementation "mmkernels" vs "sdpa" vs "eager" (random init, no download).

    python benchmarks/hf_vit_bert.py [--device cpu|cuda] [--json benchmarks/results/cpu-hf-vit-bert.json]

Median of repeated runs after warm-up (CUDA-synchronised on a GPU); the ratio is against each peer in
the same run. Needs transformers.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time

import torch


def build(device, dtype):
    from transformers import BertConfig, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    torch.manual_seed(0)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        ViTConfig(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=4, num_attention_heads=6,
                  intermediate_size=1536),
        BertConfig(vocab_size=8000, hidden_size=384, num_hidden_layers=4, num_attention_heads=6,
                   intermediate_size=1536, attention_probs_dropout_prob=0.0))  # dropout would go to SDPA
    cfg.decoder_start_token_id, cfg.pad_token_id = 1, 0
    return VisionEncoderDecoderModel(cfg).to(device=device, dtype=dtype).train()


def time_step(model, inputs, impl, device, reps):
    model.set_attn_implementation(impl)

    def step():
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main():
    import mmkernels.integrations.transformers as mmk_hf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    mmk_hf.register()
    model = build(device, dtype)
    g = torch.Generator().manual_seed(0)
    B, T = args.batch, 32
    labels = torch.randint(2, 8000, (B, T), generator=g)
    labels[B // 2:, T - 8:] = -100  # padded captions
    inputs = dict(pixel_values=torch.randn(B, 3, 224, 224, generator=g).to(device, dtype), labels=labels.to(device),
                  decoder_attention_mask=(labels != -100).long().to(device))
    ms = {impl: time_step(model, inputs, impl, device, args.reps) for impl in ("mmkernels", "sdpa", "eager")}
    mmk_hf.reset_stats()
    model.set_attn_implementation("mmkernels")
    model(**inputs)
    routed = mmk_hf.stats()
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = dict(case=f"ViT->BERT train step B{B} 224px caption{T}", device=str(device),
                  device_name=torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
                  dtype=str(dtype), torch=torch.__version__, transformers=transformers.__version__, commit=commit,
                  median_ms=ms, speedup_vs={k: ms[k] / ms["mmkernels"] for k in ("sdpa", "eager")},
                  calls_per_step=routed)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
