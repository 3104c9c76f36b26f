import os

import pytest
import torch

import mmkernels
from mmkernels.models import (AttentionFusion, EarlyFusion, GatedFusion, LateFusion, LayerwiseFusion, ModalitySpec,
                               TextEncoder)

MODS = {"audio": ("sequence", 12), "image": ("image", 1), "meta": ("vector", 5)}
MODELS = [EarlyFusion, LateFusion, AttentionFusion, LayerwiseFusion, GatedFusion]


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
        ModalitySpec("video", 3)
    with pytest.raises(ValueError, match="sequence_model"):
        ModalitySpec("sequence", 3, "transformer")
    with pytest.raises(ValueError, match="channels_or_features"):
        ModalitySpec("text", 0)


# ---- multi-task heads, text and LSTM encoders, gated and layer-wise specifics

TEXT_MODS = {"audio": ("sequence", 12, "lstm"), "word": ("text", 30)}


def text_batch(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {"audio": torch.randn(B, 15, 12, generator=g), "word": torch.randint(1, 30, (B, 7), generator=g)}
    lengths = {"audio": torch.tensor([15, 9, 1, 4][:B]), "word": torch.tensor([7, 3, 1, 5][:B])}
    return inputs, lengths


@pytest.mark.parametrize("M", MODELS)
def test_multi_task_heads(M):
    torch.manual_seed(0)
    m = M(TEXT_MODS, {"digit": 10, "speaker": 6}, d_model=16)
    inputs, lengths = text_batch()
    out = m(inputs, lengths)
    assert set(out) == {"digit", "speaker"} and out["digit"].shape == (4, 10) and out["speaker"].shape == (4, 6)
    loss = 0.7 * out["digit"].logsumexp(-1).mean() + 0.3 * out["speaker"].logsumexp(-1).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    with mmkernels.use_reference_ops():  # the fused ops compute the same multi-task outputs
        ref = m.eval()(inputs, lengths)
    fused = m(inputs, lengths)
    for t in ref:
        torch.testing.assert_close(fused[t], ref[t], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("bad", [0, True, 2.5, {}, {"a": 0}, {"a": 3, "b": None}])
def test_num_classes_is_checked(bad):
    with pytest.raises(ValueError, match="num_classes"):
        EarlyFusion(MODS, bad)


@pytest.mark.parametrize("model", ["lstm", "gru", "conv"])
def test_text_encoder_ignores_padding_and_respects_lengths(model):
    torch.manual_seed(0)
    enc = TextEncoder(30, 16, model).eval()
    inputs, lengths = text_batch()
    ids, lens = inputs["word"], lengths["word"]
    tokens, out_lens, pooled = enc(ids, lens)
    assert tokens.shape == (4, 7, 16) and torch.equal(out_lens, lens)
    other = ids.clone()
    for b, n in enumerate(lens.tolist()):  # anything after the length is padding
        other[b, n:] = (other[b, n:] * 7 + 3) % 30
    torch.testing.assert_close(enc(other, lens)[2], pooled)
    b = 1  # the same sample alone, truncated to its length, pools to the same feature
    alone = enc(ids[b:b + 1, : lens[b]], lens[b:b + 1])[2]
    torch.testing.assert_close(alone, pooled[b:b + 1], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="token ids"):
        enc(torch.randn(2, 5))


def test_lstm_sequence_encoder_ignores_padding():
    torch.manual_seed(0)
    m = EarlyFusion({"audio": ModalitySpec("sequence", 12, "lstm")}, 3, d_model=16).eval()
    inputs, lengths, _ = batch()
    x = inputs["audio"]
    noisy = x.clone()
    for b, n in enumerate(lengths["audio"].tolist()):
        noisy[b, n:] = torch.randn_like(noisy[b, n:]) * 100
    torch.testing.assert_close(m({"audio": noisy}, lengths), m({"audio": x}, lengths))


def test_gated_fusion_gates():
    torch.manual_seed(0)
    m = GatedFusion(MODS, 3, d_model=16).eval()
    inputs, lengths, _ = batch()
    out, gates = m(inputs, lengths, return_gates=True)
    assert out.shape == (4, 3) and gates.shape == (4, 3)
    torch.testing.assert_close(gates.sum(1), torch.ones(4))
    present = {"image": torch.tensor([True, False, True, True])}
    _, gates = m(inputs, lengths, present, return_gates=True)
    col = m.names.index("image")
    assert gates[1, col] == 0 and torch.isclose(gates[1].sum(), torch.tensor(1.0))
    _, gates = m({"meta": inputs["meta"]}, return_gates=True)  # one modality: all weight on it
    torch.testing.assert_close(gates[:, m.names.index("meta")], torch.ones(4))
    none = {n: torch.zeros(4, dtype=torch.bool) for n in m.names}  # nothing present: zero gates, no NaN
    out, gates = m(inputs, lengths, none, return_gates=True)
    assert torch.isfinite(out).all() and torch.equal(gates, torch.zeros(4, 3))


def test_layerwise_fusion_layers():
    with pytest.raises(ValueError, match="num_layers"):
        LayerwiseFusion(MODS, 3, num_layers=0)
    torch.manual_seed(0)
    one, three = LayerwiseFusion(MODS, 3, d_model=16, num_layers=1), LayerwiseFusion(MODS, 3, d_model=16, num_layers=3)
    assert len(one.layers) == 1 and len(three.layers) == 3
    n = len(MODS)
    assert len(three.layers[0].blocks) == n * n  # a self block per modality and a block per ordered pair


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


def test_hard_setting_corruptions_are_seeded_and_calibrated():
    import numpy as np

    from mmkernels.data import avdigits as A

    x = np.sin(np.linspace(0, 300, 8000)).astype(np.float32)
    noisy = A.add_noise_at_snr(x, A.HARD_SNR_DB, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
    assert abs(snr - A.HARD_SNR_DB) < 0.3
    assert np.array_equal(noisy, A.add_noise_at_snr(x, A.HARD_SNR_DB, np.random.default_rng(0)))
    imgs = torch.rand(5, 1, 8, 8)
    a = A.corrupt_images(imgs, torch.Generator().manual_seed(1))
    assert torch.equal(a, A.corrupt_images(imgs, torch.Generator().manual_seed(1)))
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, imgs)
    words = [A.noisy_word(d, 0.0, torch.Generator().manual_seed(0)) for d in range(10)]
    assert ["".join(chr(96 + int(t)) for t in w) for w in words] == list(A.DIGIT_WORDS)
    noisy_words = [A.noisy_word(7, 0.5, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(((w >= 1) & (w < A.TEXT_VOCAB)).all() for w in noisy_words)
    assert any(not torch.equal(w, words[7]) for w in noisy_words)


@pytest.mark.skipif(not os.path.isdir(FSDD), reason="FSDD not available")
def test_avdigits_example_hard_text_multitask(tmp_path):
    import json

    from mmkernels.examples import avdigits

    out = tmp_path / "r.json"
    assert avdigits.main(["--fsdd-dir", FSDD, "--model", "gated", "--epochs", "1", "--difficulty", "hard", "--text",
                          "--multitask", "--task-weights", "digit=1,speaker=0.3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    m = r["models"]["gated"]
    assert r["difficulty"] == "hard" and r["text"] and r["multitask"] and r["task_weights"]["speaker"] == 0.3
    for key in ("test_accuracy", "macro_recall", "macro_f1", "speaker_accuracy"):
        assert 0.0 <= m[key] <= 1.0
    assert m["test_accuracy"] > 0.3 and m["speaker_accuracy"] > 1 / 6  # one epoch learns something
    assert set(m["accuracy_missing"]) == {"audio", "image", "text"}
    with pytest.raises(SystemExit):
        avdigits.main(["--fsdd-dir", FSDD, "--multitask", "--task-weights", "color=1"])


def test_classification_metrics():
    from mmkernels.examples.avdigits import classification_metrics

    pred, target = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 0])
    m = classification_metrics(pred, target, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    recall = [1 / 2, 1 / 2, 1.0]
    precision = [1 / 2, 1.0, 2 / 3]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    assert m["macro_recall"] == pytest.approx(sum(recall) / 3) and m["macro_f1"] == pytest.approx(sum(f1) / 3)


@pytest.mark.parametrize("cls_name", ["EarlyFusion", "LateFusion", "AttentionFusion", "LayerwiseFusion", "GatedFusion"])
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
