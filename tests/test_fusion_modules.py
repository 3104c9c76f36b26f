"""The fusion modules of mmkernels.nn on their own, on "encoder outputs" made up here (other sizes than
the models use), against formulas written out from their parameters."""
import pathlib
import re

import pytest
import torch
from torch import nn

import mmkernels
from mmkernels.nn import (ConcatFusion, ConcatLinear, CrossModalBlock, CrossModalFusion, GatedMultimodalUnit,
                          LayerwiseFusionBlock, MissingEmbedding, WeightedMeanFusion)

SIZES = {"video": 6, "audio": 4, "depth": 3}  # deliberately not in sorted order


def feats(B=5, seed=0, sizes=SIZES):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(B, d, generator=g) for n, d in sizes.items()}


def tokens(B=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    toks = {"video": torch.randn(B, 7, d, generator=g), "audio": torch.randn(B, 5, d, generator=g),
            "depth": torch.randn(B, 1, d, generator=g)}
    lengths = {"video": torch.tensor([7, 3, 5]), "audio": torch.tensor([5, 0, 2])}  # depth: all valid
    return toks, lengths


def reordered(d):
    return {k: d[k] for k in reversed(list(d))}


def test_concat_fusion_is_a_linear_over_the_sorted_concatenation():
    torch.manual_seed(0)
    f = ConcatFusion(SIZES, 5, activation="silu")
    x = feats()
    lin = nn.Linear(13, 5)
    lin.load_state_dict(f.state_dict())  # the nn.Linear layout, columns in sorted-name order
    expected = nn.functional.silu(lin(torch.cat([x["audio"], x["depth"], x["video"]], -1)))
    torch.testing.assert_close(f(x), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(f(reordered(x)), f(x))
    back = ConcatFusion.from_linear(lin, SIZES, activation="silu")
    torch.testing.assert_close(back(x), expected, atol=1e-6, rtol=1e-5)
    as_list = ConcatLinear([4, 3, 6], 5, activation="silu")
    as_list.load_state_dict(f.state_dict())
    torch.testing.assert_close(as_list(x["audio"], x["depth"], x["video"]), f(x))


def test_concat_fusion_errors_name_the_modality():
    f = ConcatFusion(SIZES, 5)
    x = feats()
    with pytest.raises(ValueError, match=r"exactly the modalities \['audio', 'depth', 'video'\]"):
        f({k: v for k, v in x.items() if k != "depth"})
    with pytest.raises(ValueError, match=r"embeddings\['video'\] must be a tensor \(\.\.\., 6\)"):
        f({**x, "video": torch.randn(5, 7)})
    with pytest.raises(TypeError, match="mapping"):
        f([x["audio"], x["depth"], x["video"]])
    with pytest.raises(ValueError, match=r"in_features\['a'\] must be a positive int"):
        ConcatFusion({"a": 0}, 3)
    with pytest.raises(ValueError, match="without '.'"):
        ConcatFusion({"a.b": 2}, 3)
    with pytest.raises(ValueError, match="add up to 13"):
        ConcatFusion.from_linear(nn.Linear(12, 5), SIZES)


def test_missing_embedding_fills_only_the_missing_samples():
    m = MissingEmbedding(SIZES)
    with torch.no_grad():
        for n in m.names:
            m[n].copy_(torch.arange(SIZES[n]) + 100.0)
    x = feats(B=4)
    present = {"video": torch.tensor([True, False, True, False])}
    out = m(x, present)
    assert torch.equal(out["audio"], x["audio"]) and torch.equal(out["depth"], x["depth"])
    assert torch.equal(out["video"][[0, 2]], x["video"][[0, 2]])
    assert torch.equal(out["video"][[1, 3]], (torch.arange(6) + 100.0).expand(2, 6))
    out["video"].sum().backward()
    assert torch.equal(m["video"].grad, torch.full((6,), 2.0))  # one per missing sample
    with pytest.raises(ValueError, match=r"present\['video'\] must be a \(B,\) = \(4,\) bool tensor"):
        m(x, {"video": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="unknown modalities"):
        m(x, {"text": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="taken by an attribute"):
        MissingEmbedding({"training": 3})


def _gmu_by_hand(g, x, present):
    """sum_m softmax_m(logits)[present] * tanh(W_m x_m + b_m), from g's parameters."""
    names = sorted(x)
    h = torch.stack([torch.tanh(x[n] @ g.proj[n].weight.T + g.proj[n].bias) for n in names], 1)
    logits = (torch.cat([x[n] for n in names], -1) @ g.gate.weight.T + g.gate.bias).unflatten(-1, (len(names), -1))
    here = torch.stack([present[n] for n in names], 1)[..., None]
    z = torch.softmax(logits.masked_fill(~here, float("-inf")), 1).nan_to_num(0.0)
    return (z * h).sum(1), z


def test_gated_multimodal_unit_matches_the_formula_and_ignores_missing_modalities():
    torch.manual_seed(1)
    g = GatedMultimodalUnit(SIZES, 5)
    x = feats(B=4, seed=2)
    present = {"audio": torch.tensor([True, False, True, False]), "video": torch.tensor([True, True, False, False]),
               "depth": torch.tensor([True, True, True, False])}
    fused, gates = g(x, present, return_gates=True)
    ref, ref_gates = _gmu_by_hand(g, x, present)
    torch.testing.assert_close(fused, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gates, ref_gates, atol=1e-6, rtol=1e-5)
    assert gates.shape == (4, 3, 5)
    torch.testing.assert_close(gates[:3].sum(1), torch.ones(3, 5))  # over the modalities present
    assert torch.equal(gates[3], torch.zeros(3, 5)) and torch.equal(fused[3], torch.zeros(5))  # none present
    torch.testing.assert_close(g(reordered(x), present), fused)
    # sample 1 has only video and depth: audio's feature changes nothing but the others' gate logits
    # (which the softmax over the present ones still sees); its own term is 0.
    assert gates[1, 0].abs().max() == 0


def test_weighted_mean_fusion_weights_and_missing_inputs():
    f = WeightedMeanFusion(["b", "a"])
    g = torch.Generator().manual_seed(3)
    x = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(3, 4, generator=g)}
    torch.testing.assert_close(f(x), (x["a"] + x["b"]) / 2)  # equal weights at first
    with torch.no_grad():
        f.logits.copy_(torch.tensor([0.0, torch.log(torch.tensor(3.0))]))  # sorted names: a 1/4, b 3/4
    torch.testing.assert_close(f(x), 0.25 * x["a"] + 0.75 * x["b"])
    x["b"][1] = float("nan")  # a missing sample's input is never read
    out = f(x, {"b": torch.tensor([True, False, True])})
    torch.testing.assert_close(out[1], x["a"][1])
    torch.testing.assert_close(out[[0, 2]], 0.25 * x["a"][[0, 2]] + 0.75 * x["b"][[0, 2]])
    none = f(x, {"a": torch.zeros(3, dtype=torch.bool), "b": torch.zeros(3, dtype=torch.bool)})
    assert torch.equal(none, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="one shape"):
        f({"a": torch.randn(3, 4), "b": torch.randn(3, 5)})


def test_cross_modal_block_over_an_empty_source_adds_only_the_bias_path():
    torch.manual_seed(4)
    blk = CrossModalBlock(8, 2, dropout=0.0).eval()
    t, s = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    out = blk(t, s, torch.tensor([5, 0]))
    mid = t[1] + blk.attn.out_proj.bias  # no valid key: zero attention, out_proj gives its bias
    torch.testing.assert_close(out[1], mid + blk.ff(blk.norm_ff(mid)), atol=1e-6, rtol=1e-5)
    alone = blk(t[:1], s[:1], torch.tensor([5]))  # batch rows are independent
    torch.testing.assert_close(out[:1], alone, atol=1e-6, rtol=1e-5)


def _fused_vs_reference(module, *args):
    """Outputs and parameter gradients of module(*args) with the fused kernels and the reference ops."""
    results = []
    for ref in (False, True):
        module.zero_grad()
        with mmkernels.use_reference_ops(ref):
            out = module(*args)
        flat = torch.cat([o.flatten() for o in out.values()]) if isinstance(out, dict) else out.flatten()
        (flat * torch.linspace(-1, 1, flat.numel())).sum().backward()
        results.append([flat.detach()] + [p.grad.clone() for p in module.parameters() if p.grad is not None])
    assert len(results[0]) == len(results[1]) > 1
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_cross_modal_fusion_pads_masks_and_fills():
    torch.manual_seed(5)
    f = CrossModalFusion(SIZES, 8, 6, num_heads=2, dropout=0.0).eval()
    assert sorted(f.blocks) == sorted(f"{t}_from_{s}" for t in SIZES for s in SIZES if s != t)
    toks, lengths = tokens()
    out = f(toks, lengths)
    assert out.shape == (3, 6)
    torch.testing.assert_close(f(reordered(toks), reordered(lengths)), out)
    padded = {n: t.clone() for n, t in toks.items()}  # what lies beyond the lengths is never read
    padded["video"][1, 3:] = 1e4
    padded["audio"][2, 2:] = -1e4
    padded["audio"][1] = float("nan")  # sample 1 has no audio at all
    torch.testing.assert_close(f(padded, lengths), out)
    # sample 1's audio is missing: what reaches fuse for it is audio's learned stand-in
    with torch.no_grad():
        f.missing["audio"].copy_(torch.linspace(-1, 1, 8))
    seen = {}
    f.fuse.register_forward_pre_hook(lambda mod, args: seen.update(args[0]))
    f(toks, lengths)
    assert torch.equal(seen["audio"][1], torch.linspace(-1, 1, 8))
    _fused_vs_reference(f.train(), toks, lengths)


def test_cross_modal_fusion_errors():
    f = CrossModalFusion(["a", "b"], 8, 4, num_heads=2)
    a, b = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match=r"tokens\['b'\] must be \(B, L, d_model\) = \(2, L, 8\)"):
        f({"a": a, "b": torch.randn(2, 4, 7)})
    with pytest.raises(ValueError, match=r"lengths\['a'\] must have shape \(B,\) = \(2,\)"):
        f({"a": a, "b": b}, {"a": torch.tensor([1, 2, 3])})
    with pytest.raises(TypeError, match=r"lengths\['a'\] must be an integer tensor"):
        f({"a": a, "b": b}, {"a": torch.tensor([1.0, 2.0])})
    with pytest.raises(ValueError, match="unknown modalities"):
        f({"a": a, "b": b}, {"c": torch.tensor([1, 2])})
    with pytest.raises(ValueError, match="exactly the modalities"):
        f({"a": a})


def test_layerwise_fusion_block_is_order_free_and_ignores_padding():
    torch.manual_seed(6)
    blk = LayerwiseFusionBlock(SIZES, 8, num_heads=2, dropout=0.0).eval()
    assert len(blk.blocks) == len(SIZES) ** 2
    toks, lengths = tokens(seed=1)
    out = blk(toks, lengths)
    assert {n: tuple(t.shape) for n, t in out.items()} == {n: tuple(t.shape) for n, t in toks.items()}
    other = LayerwiseFusionBlock(reordered(SIZES), 8, num_heads=2, dropout=0.0).eval()
    other.load_state_dict(blk.state_dict())
    for n, t in other(reordered(toks), lengths).items():
        torch.testing.assert_close(t, out[n])
    padded = {n: t.clone() for n, t in toks.items()}
    padded["video"][1, 3:] = 1e4
    got = blk(padded, lengths)
    for n, t in got.items():  # valid positions unchanged
        valid = torch.arange(t.shape[1])[None, :] < lengths.get(n, torch.full((3,), t.shape[1]))[:, None]
        torch.testing.assert_close(t[valid], out[n][valid])
    _fused_vs_reference(blk.train(), toks, lengths)


def test_readme_fusion_example_runs_as_written():
    # README, "Fusion modules": the example is executed as it stands
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Fusion modules"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    logits = scope["logits"]
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
