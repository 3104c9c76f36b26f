"""State dicts saved by the models before the fusion modules moved into ``mmkernels.nn`` (commit
3ccf6e8) still load, strictly, and give the outputs they gave then.

``tests/data/model_state_v1.json`` was written by this file's ``record()`` run against that commit
(``python tests/test_model_state_compat.py``): per model, the state dict's keys and shapes in order and
the logits for fixed inputs, with every tensor of the state dict set by ``fill()`` (a formula, no
random numbers, so only the keys and shapes need storing).
"""
import json
import math
import os
import sys

import pytest
import torch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "model_state_v1.json")
MODS = {"audio": ("sequence", 6, "gru"), "image": ("image", 1), "meta": ("vector", 5)}
MODELS = ("EarlyFusion", "LateFusion", "AttentionFusion", "LayerwiseFusion", "GatedFusion")


def build(name):
    import mmkernels.models as M

    kw = dict(num_heads=2, num_layers=2) if name == "LayerwiseFusion" else {}
    kw.update(num_heads=2) if name == "AttentionFusion" else None
    return getattr(M, name)(MODS, 3, d_model=8, hidden=12, **kw).eval()


def fill(i, shape):
    """The i-th state-dict tensor: a fixed pattern, scaled like a fan-in initialisation."""
    n = math.prod(shape)
    scale = 1 / math.sqrt(math.prod(shape[1:])) if len(shape) > 1 else 0.1
    return (torch.sin(torch.arange(n, dtype=torch.float64) * 0.7 + 1.3 * i) * scale).float().reshape(shape)


def inputs():
    g = torch.Generator().manual_seed(0)
    x = {"audio": torch.randn(3, 9, 6, generator=g), "image": torch.randn(3, 1, 8, 8, generator=g),
         "meta": torch.randn(3, 5, generator=g)}
    lengths = {"audio": torch.tensor([9, 0, 4])}  # sample 1: audio missing (length 0)
    present = {"image": torch.tensor([True, True, False])}  # sample 2: image missing
    return x, lengths, present


def outputs(model):
    x, lengths, present = inputs()
    with torch.no_grad():
        full = model(x, lengths, present)
        no_meta = model({k: v for k, v in x.items() if k != "meta"}, lengths)  # a modality absent for the batch
    return torch.cat([full, no_meta])


def record():
    out = {}
    for name in MODELS:
        model = build(name)
        keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
        model.load_state_dict({k: fill(i, s) for i, (k, s) in enumerate(keys)})
        out[name] = dict(keys=keys, outputs=outputs(model).tolist())
    return out


def _saved(name):
    with open(DATA) as f:
        rec = json.load(f)[name]
    keys = [k for k, _ in rec["keys"]]
    return keys, [fill(i, s) for i, (_, s) in enumerate(rec["keys"])], torch.tensor(rec["outputs"])


@pytest.mark.parametrize("name", MODELS)
def test_old_state_dicts_load_strictly_and_give_the_same_outputs(name):
    keys, values, expected = _saved(name)
    model = build(name)
    model.load_state_dict(dict(zip(keys, values)))  # strict: every key placed, none left over
    torch.testing.assert_close(outputs(model), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_old_parameters_keep_their_order(name):
    # Each tensor of the loaded state dict is one of the saved ones (fill() makes them distinct), and they
    # come in the saved order, so an optimizer state saved with the old model still lines up. LateFusion
    # is the documented exception: layout 1 had its vote weights first and "missing" embeddings it never
    # used (their vote is always 0), which are dropped.
    keys, values, _ = _saved(name)
    model = build(name)
    model.load_state_dict(dict(zip(keys, values)))
    found = [next(i for i, v in enumerate(values) if v.shape == t.shape and torch.equal(v, t))
             for t in model.state_dict().values()]
    assert len(set(found)) == len(found)
    dropped = [k for i, k in enumerate(keys) if i not in found]
    if name == "LateFusion":
        assert dropped == [f"missing.{n}" for n in sorted(MODS)]
        assert found[-1] == keys.index("vote")  # now fusion.logits, after the heads
    else:
        assert dropped == [] and found == sorted(found)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(DATA, "w") as f:
        json.dump(record(), f, indent=0)
    print(f"wrote {DATA}")
