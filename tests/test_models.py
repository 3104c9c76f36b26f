import os

import pytest
import torch

import mmkernels
from mmkernels.models import AttentionFusion, EarlyFusion, LateFusion, ModalitySpec

MODS = {"audio": ("sequence", 12), "image": ("image", 1), "meta": ("vector", 5)}
MODELS = [EarlyFusion, LateFusion, AttentionFusion]


def batch(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {"audio": torch.randn(B, 15, 12, generator=g), "image": torch.randn(B, 1, 8, 8, generator=g),
              "meta": torch.randn(B, 5, generator=g)}
    lengths = {"audio": torch.tensor([15, 9, 1, 4][:B])}
    return inputs, lengths, torch.randint(0, 3, (B,), generator=g)


@pytest.mark.parametrize("M", MODELS)
def test_shapes_and_missing_modalities(M):
    torch.manual_seed(0)
    m = M(MODS, 3, d_model=32).eval()
    inputs, lengths, _ = batch()
    assert m(inputs, lengths).shape == (4, 3)
    for drop in MODS:  # whole-batch missing: key absent
        sub = {k: v for k, v in inputs.items() if k != drop}
        out = m(sub, {k: v for k, v in lengths.items() if k in sub})
        assert out.shape == (4, 3) and torch.isfinite(out).all()
    present = {"image": torch.tensor([True, False, True, False]), "audio": torch.tensor([False, True, True, True])}
    out = m(inputs, lengths, present)
    assert torch.isfinite(out).all()
    # a sample whose audio has length 0 is the same as audio marked absent
    l0 = {"audio": torch.tensor([0, 9, 1, 4])}
    a = m(inputs, l0)
    b = m(inputs, lengths, {"audio": torch.tensor([False, True, True, True])})
    torch.testing.assert_close(a[0], b[0])


@pytest.mark.parametrize("M", MODELS)
def test_fused_equals_reference_outputs_and_gradients(M):
    torch.manual_seed(1)
    m = M(MODS, 3, d_model=32).eval()
    inputs, lengths, labels = batch(seed=2)
    grads = []
    for ref in (False, True):
        m.zero_grad()
        with mmkernels.use_reference_ops(ref):
            out = m(inputs, lengths)
            torch.nn.functional.cross_entropy(out, labels).backward()
        grads.append([out.detach()] + [p.grad.clone() for p in m.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("M", MODELS)
def test_short_training_reduces_loss(M):
    torch.manual_seed(3)
    m = M(MODS, 3, d_model=32)
    inputs, lengths, labels = batch(B=4, seed=4)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(m(inputs, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("M", MODELS)
def test_state_dict_roundtrip(M):
    m1, m2 = M(MODS, 3, d_model=32).eval(), M(MODS, 3, d_model=32).eval()
    m2.load_state_dict(m1.state_dict())
    inputs, lengths, _ = batch()
    assert torch.equal(m1(inputs, lengths), m2(inputs, lengths))


def test_gru_sequence_encoder_and_bad_inputs():
    m = EarlyFusion({"audio": ModalitySpec("sequence", 12, "gru")}, 2, d_model=16)
    inputs, lengths, _ = batch()
    assert m({"audio": inputs["audio"]}, lengths).shape == (4, 2)
    with pytest.raises(ValueError, match="unknown modalities"):
        m({"video": torch.randn(4, 3)})
    with pytest.raises(ValueError, match="at least one"):
        m({})
    with pytest.raises(ValueError, match="kind"):
        ModalitySpec("text", 3)


FSDD = os.environ.get("MMKERNELS_FSDD_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fsdd")


@pytest.mark.skipif(not os.path.isdir(FSDD), reason="FSDD not available")
def test_avdigits_dataset_split_and_pairing():
    from mmkernels.data import AVDigits

    d = AVDigits(FSDD)
    assert len(d.train.label) == 2700 and len(d.test.label) == 300
    assert not set(d.image_indices["train"].tolist()) & set(d.image_indices["test"].tolist())
    inputs, lengths, labels = next(AVDigits.batches(d.test, 8, shuffle=False))
    assert inputs["audio"].shape[0] == 8 and inputs["audio"].shape[2] == 40
    assert inputs["image"].shape == (8, 1, 8, 8) and (lengths["audio"] > 0).all()


def test_avdigits_needs_a_location(monkeypatch):
    from mmkernels.data import fsdd_dir_from

    monkeypatch.delenv("MMKERNELS_FSDD_DIR", raising=False)
    with pytest.raises(ValueError, match="--fsdd-dir"):
        fsdd_dir_from(None)
    with pytest.raises(ValueError, match="no FSDD recordings"):
        fsdd_dir_from(os.path.dirname(__file__))


@pytest.mark.skipif(not os.path.isdir(FSDD), reason="FSDD not available")
def test_avdigits_example_cli_writes_the_documented_json(tmp_path):
    import json

    from mmkernels.examples import avdigits

    out = tmp_path / "r.json"
    assert avdigits.main(["--fsdd-dir", FSDD, "--model", "late", "--epochs", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    m = r["models"]["late"]
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["test_accuracy"] > 0.5  # one epoch already learns
    assert set(m["accuracy_missing"]) == {"audio", "image"}
    assert m["train_samples_per_s"]["fused"] > 0 and m["train_samples_per_s"]["reference"] > 0
    assert r["device"] == "cpu" and r["torch_version"] == torch.__version__


@pytest.mark.parametrize("cls_name", ["EarlyFusion", "LateFusion", "AttentionFusion"])
def test_modality_order_is_the_models_not_the_callers_dict(cls_name):
    # Two models built from the same spec written in different orders agree after a state-dict
    # transfer: the fusion layers' column order is the sorted modality names.
    import mmkernels.models as M

    cls = getattr(M, cls_name)
    spec_a = {"audio": ("sequence", 6), "image": ("image", 1), "extra": ("vector", 3)}
    spec_b = {k: spec_a[k] for k in ("image", "extra", "audio")}
    torch.manual_seed(0)
    a = cls(spec_a, 4, d_model=16).eval()
    b = cls(spec_b, 4, d_model=16).eval()
    assert a.names == b.names == sorted(spec_a)
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(1)
    x = {"audio": torch.randn(3, 9, 6, generator=g), "image": torch.randn(3, 1, 8, 8, generator=g),
         "extra": torch.randn(3, 3, generator=g)}
    torch.testing.assert_close(a(x, {"audio": torch.tensor([9, 4, 1])}), b(x, {"audio": torch.tensor([9, 4, 1])}))
