"""Benchmark cases: our ops (and models) against every peer that runs on the device.

A case builds rotated input sets once and exposes one callable per implementation, each taking the
rotation index. Peers that do not accept an input (an SDPA backend refusing a mask, say) are dropped
after one trial call, and the reason is recorded.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

import mmkernels
from mmkernels import reference as R

from .case import OURS, Case, allow_recompiles
from .model_cases import model_cases
from .timing import rotation_count, tensors_bytes

def _rand(shape, dtype, device, g, requires_grad=False):
    t = torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype)
    return t.requires_grad_(requires_grad)


# ---------------------------------------------------------------------------------------------- attention

def attention_shapes(device: torch.device, quick: bool):
    """(B, Lq, Lk, H, D, masked[, causal[, Hkv]]) per design section 4 and the issues' targets. Causal cases
    have Lq == Lk, where our bottom-right diagonal is SDPA's top-left one. Hkv < H: grouped-query
    attention (SDPA with enable_gqa)."""
    if device.type == "cuda":
        shapes = [(32, 77, 257, 8, 64, False), (16, 512, 576, 8, 64, False), (8, 1024, 4096, 8, 128, True),
                  (4, 2048, 2048, 16, 128, False), (2, 4096, 4096, 16, 64, False), (2, 4096, 4096, 8, 256, False),
                  (16, 512, 576, 8, 64, True), (4, 2048, 2048, 16, 128, False, True),
                  (8, 1, 4096, 32, 128, False, False, 4)]  # decoding with GQA (issue 25's head packing)
        return shapes[:3] if quick else shapes
    shapes = [(16, 77, 197, 8, 64, False), (8, 512, 576, 8, 64, False), (4, 1024, 1024, 8, 128, False),
              (16, 77, 197, 8, 64, True), (8, 512, 576, 8, 64, True), (4, 1024, 1024, 8, 128, True),
              (4, 1024, 1024, 8, 64, False, True)]
    return [shapes[0], shapes[1], shapes[3], shapes[4]] if quick else shapes


def _sdpa_backends(device):
    try:
        from torch.nn.attention import SDPBackend
    except ImportError:  # pragma: no cover
        return {}
    names = {"math": SDPBackend.MATH}
    if device.type == "cuda":
        names.update(flash=SDPBackend.FLASH_ATTENTION, efficient=SDPBackend.EFFICIENT_ATTENTION,
                     cudnn=SDPBackend.CUDNN_ATTENTION)
    else:
        names.update(flash=SDPBackend.FLASH_ATTENTION)
    return names


def attention_case(shape, dtype, mode, device, *, with_compile: bool, seed: int = 0) -> Case:
    B, Lq, Lk, H, D, masked, *rest = shape
    causal = bool(rest and rest[0])
    Hkv = rest[1] if len(rest) > 1 else H
    g = torch.Generator(device=device).manual_seed(seed)
    need_grad = mode == "fwd+bwd"
    one = dict(q=(B, Lq, H, D), k=(B, Lk, Hkv, D), v=(B, Lk, Hkv, D))
    probe = [_rand(s, dtype, device, g) for s in one.values()]
    n_sets = rotation_count(tensors_bytes(probe), device)
    sets = []
    for _ in range(n_sets):
        q, k, v = (_rand(s, dtype, device, g, need_grad) for s in one.values())
        lens = None
        if masked:  # uniform in [Lk/2, Lk]
            lens = torch.randint(Lk // 2, Lk + 1, (B,), generator=g, device=device)
        grad = _rand((B, Lq, H, D), dtype, device, g) if need_grad else None
        sets.append((q, k, v, lens, grad))
    valid = sum(int(s[3].float().mean().item()) if masked else Lk for s in sets) / n_sets
    fwd_flops = 4.0 * B * H * Lq * valid * D * (0.5 if causal else 1.0)
    flops = fwd_flops * (3.5 if need_grad else 1.0)  # backward = 2.5x forward (5 GEMMs vs 2)
    name = (f"attn B{B} Lq{Lq} Lk{Lk} H{H}{f' Hkv{Hkv}' if Hkv != H else ''} D{D}"
            f"{' kv_len~U[Lk/2,Lk]' if masked else ''}{' causal' if causal else ''}")
    params = dict(B=B, Lq=Lq, Lk=Lk, H=H, D=D, masked=masked, causal=causal)
    if Hkv != H:
        params["Hkv"] = Hkv
    case = Case(name, "cross_attention", dtype, mode, params, flops)

    def bool_mask(lens):  # SDPA convention: True = attend; (B, 1, 1, Lk)
        return (torch.arange(Lk, device=device)[None, :] < lens[:, None])[:, None, None, :]

    masks = [bool_mask(s[3]) if masked else None for s in sets]

    def run(fn_out):
        def call(i):
            q, k, v, lens, grad = sets[i % n_sets]
            out = fn_out(q, k, v, lens, masks[i % n_sets])
            if need_grad:
                out.backward(grad)
            return out
        return call

    case.impls[OURS] = run(lambda q, k, v, lens, m: mmkernels.cross_attention(q, k, v, kv_lengths=lens,
                                                                              is_causal=causal))

    def sdpa(q, k, v, lens, m):
        gqa = dict(enable_gqa=True) if Hkv != H else {}
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=m,
                                           is_causal=causal, **gqa)
        return o.transpose(1, 2)

    case.impls["sdpa"] = run(sdpa)
    from torch.nn.attention import sdpa_kernel

    for bname, backend in _sdpa_backends(device).items():
        def with_backend(q, k, v, lens, m, backend=backend):
            with sdpa_kernel(backend):
                return sdpa(q, k, v, lens, m)
        case.impls[f"sdpa_{bname}"] = run(with_backend)

    case.impls["eager_reference"] = run(lambda q, k, v, lens, m: R.cross_attention(q, k, v, kv_lengths=lens,
                                                                                   is_causal=causal))
    if with_compile:
        compiled = torch.compile(R.cross_attention, dynamic=False)
        case.impls["compiled_reference"] = run(lambda q, k, v, lens, m: compiled(q, k, v, kv_lengths=lens,
                                                                                 is_causal=causal))
        if device.type == "cuda" and not causal:
            _add_flex(case, sets, run, masked, B, Lk, device, gqa=Hkv != H)
    return case


def _add_flex(case, sets, run, masked, B, Lk, device, gqa=False):
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        case.skipped["flex_attention"] = "not available in this torch"
        return
    flex = torch.compile(flex_attention, dynamic=False)
    block_masks = {}

    def flex_call(q, k, v, lens, m):
        bm = None
        if masked:
            key = lens.data_ptr()
            if key not in block_masks:
                def mask_mod(b, h, q_idx, kv_idx, lens=lens):
                    return kv_idx < lens[b]
                block_masks[key] = create_block_mask(mask_mod, B, None, q.shape[1], Lk, device=device)
            bm = block_masks[key]
        o = flex(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=bm, enable_gqa=gqa)
        return o.transpose(1, 2)

    case.impls["flex_attention"] = run(flex_call)


# ---------------------------------------------------------------------------------------------- concat_linear

def concat_linear_shapes(device: torch.device, quick: bool):
    """(M, (d_i...), N)."""
    if device.type == "cuda":
        shapes = [(64, (512, 768, 128), 512), (8192, (256, 256, 128), 512), (32768, (1024, 1024), 1024)]
    else:
        shapes = [(64, (512, 768, 128), 512), (8192, (256, 256, 128), 512)]
    return shapes


def concat_linear_case(shape, dtype, mode, device, *, with_compile: bool, activation="gelu", seed=0) -> Case:
    M, dims, N = shape
    g = torch.Generator(device=device).manual_seed(seed)
    need_grad = mode == "fwd+bwd"
    K = sum(dims)
    probe_bytes = (M * K + N * K + M * N) * torch.finfo(dtype).bits // 8
    n_sets = rotation_count(probe_bytes, device)
    sets = []
    for _ in range(n_sets):
        xs = [_rand((M, d), dtype, device, g, need_grad) for d in dims]
        w = (_rand((N, K), dtype, device, g) / math.sqrt(K)).requires_grad_(need_grad)
        b = _rand((N,), dtype, device, g, need_grad)
        grad = _rand((M, N), dtype, device, g) if need_grad else None
        sets.append((xs, w, b, grad))
    flops = 2.0 * M * K * N * (3.0 if need_grad else 1.0)
    name = f"concat_linear M{M} d{'+'.join(map(str, dims))} N{N} {activation}"
    case = Case(name, "concat_linear", dtype, mode, dict(M=M, dims=list(dims), N=N, activation=activation), flops)

    def run(fn):
        def call(i):
            xs, w, b, grad = sets[i % n_sets]
            y = fn(xs, w, b)
            if need_grad:
                y.backward(grad)
            return y
        return call

    eager = lambda xs, w, b: R.concat_linear(xs, w, b, activation)
    case.impls[OURS] = run(lambda xs, w, b: mmkernels.concat_linear(xs, w, b, activation))
    case.impls["eager_cat_linear"] = run(eager)
    if with_compile:
        compiled = torch.compile(eager, dynamic=False)
        case.impls["compiled_cat_linear"] = run(compiled)
    return case


OPS = ("cross_attention", "concat_linear")


def unknown_ops(ops: Sequence[str]) -> List[str]:
    return sorted(set(ops) - set(OPS))


def build_cases(suite: str, device: torch.device, quick: bool, dtypes: List[torch.dtype],
                with_compile: Optional[bool] = None, ops: Sequence[str] = OPS) -> List[Callable[[], Case]]:
    """Lazily built cases (inputs are allocated only when a case runs); `ops` narrows the op suite."""
    unknown = unknown_ops(ops)
    if unknown:
        raise ValueError(f"ops: unknown op(s) {unknown}; choose from {list(OPS)}")
    if with_compile is None:
        with_compile = not quick
    if with_compile:
        allow_recompiles()
    out: List[Callable[[], Case]] = []
    if suite in ("ops", "all"):
        for dtype in dtypes:
            for mode in ("fwd", "fwd+bwd"):
                for shape in attention_shapes(device, quick) if "cross_attention" in ops else ():
                    out.append(lambda s=shape, d=dtype, m=mode: attention_case(s, d, m, device, with_compile=with_compile))
                for shape in concat_linear_shapes(device, quick) if "concat_linear" in ops else ():
                    out.append(lambda s=shape, d=dtype, m=mode: concat_linear_case(s, d, m, device, with_compile=with_compile))
    if suite in ("models", "all"):
        out.extend(model_cases(device, quick, with_compile))
    return out
