"""attn_implementation="mmkernels" in Hugging Face transformers models built from tiny configs (no
downloads): outputs and parameter gradients match transformers' eager attention on the valid
positions, calls are routed to mmkernels (counted), generation with a cache gives identical tokens,
and what the op cannot express falls back to SDPA visibly."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

import mmkernels
import mmkernels.integrations.transformers as mmk_hf

from transformers import (  # noqa: E402
    BartConfig, BartForConditionalGeneration, BertConfig, BertLMHeadModel, Blip2QFormerConfig, Blip2QFormerModel,
    LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration, ViTConfig, VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel, WhisperConfig, WhisperForConditionalGeneration,
)

mmk_hf.register()
V = 50


def _ids(g, B, L):
    return torch.randint(3, V, (B, L), generator=g)


def make(name, seed=0):
    """(model, inputs, valid query positions or None, generates)"""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    B = 2
    am = torch.ones(B, 7, dtype=torch.long)
    am[1, 5:] = 0  # right padding of the encoder / prompt
    if name == "bert_decoder":
        m = BertLMHeadModel(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=37, is_decoder=True, add_cross_attention=True))
        enc_mask = torch.ones(B, 9, dtype=torch.long)
        enc_mask[0, 6:] = 0
        inputs = dict(input_ids=_ids(g, B, 7), attention_mask=am, encoder_hidden_states=torch.randn(B, 9, 32, generator=g),
                      encoder_attention_mask=enc_mask)
        return m, inputs, am.bool(), False
    if name == "bart":
        m = BartForConditionalGeneration(BartConfig(
            vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2))
        return m, dict(input_ids=_ids(g, B, 7), attention_mask=am, decoder_input_ids=_ids(g, B, 5)), None, True
    if name == "t5":
        m = T5ForConditionalGeneration(T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
        return m, dict(input_ids=_ids(g, B, 7), attention_mask=am, decoder_input_ids=_ids(g, B, 5)), None, True
    if name == "whisper":
        m = WhisperForConditionalGeneration(WhisperConfig(
            vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=8, max_source_positions=16,
            max_target_positions=32, decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            suppress_tokens=None, begin_suppress_tokens=None))
        return m, dict(input_features=torch.randn(B, 8, 32, generator=g), decoder_input_ids=_ids(g, B, 5)), None, True
    if name == "vit_bert":
        cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
            ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, num_channels=3),
            BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37))
        cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 1, 0, 2
        m = VisionEncoderDecoderModel(cfg)
        return m, dict(pixel_values=torch.randn(B, 3, 16, 16, generator=g), decoder_input_ids=_ids(g, B, 5)), None, True
    if name == "qformer":
        m = Blip2QFormerModel(Blip2QFormerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=37, encoder_hidden_size=24))
        enc_mask = torch.ones(B, 9, dtype=torch.long)
        enc_mask[1, 4:] = 0
        return m, dict(query_embeds=torch.randn(B, 6, 32, generator=g),
                       encoder_hidden_states=torch.randn(B, 9, 24, generator=g), encoder_attention_mask=enc_mask), None, False
    if name == "llama":  # decoder-only, causal self-attention, GQA, left padding
        m = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                         pad_token_id=0, bos_token_id=1, eos_token_id=2))
        left = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
        return m, dict(input_ids=_ids(g, B, 7), attention_mask=left), left.bool(), True
    raise KeyError(name)


MODELS = ["bert_decoder", "bart", "t5", "whisper", "vit_bert", "qformer", "llama"]
# Every model routes calls to mmkernels. T5's self-attention carries its learned relative position bias
# and falls back, visibly; its cross-attention (a zero bias by construction) routes.


def run(model, inputs, impl, grad=False, valid=None):
    model.set_attn_implementation(impl)
    mmk_hf.reset_stats()
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    y = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    if grad:  # a loss over the valid positions only (padded queries are undefined in HF's attention)
        w = torch.linspace(-1, 1, y.shape[-1]) * (1.0 if valid is None else valid[..., None].float())
        (y.float() * w).sum().backward()
    return y, mmk_hf.stats(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", MODELS)
def test_outputs_and_gradients_match_eager(name):
    model, inputs, valid, _ = make(name)
    model.eval()  # no dropout, so both runs compute the same function; gradients flow all the same
    ref, _, ref_grads = run(model, inputs, "eager", grad=True, valid=valid)
    ours, stats, grads = run(model, inputs, "mmkernels", grad=True, valid=valid)
    sel = (lambda t: t[valid]) if valid is not None else (lambda t: t)
    torch.testing.assert_close(sel(ours), sel(ref), rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-3, atol=1e-5, msg=n)
    assert stats.get("mmkernels", 0) > 0, stats
    if name == "t5":  # self-attention (2 encoder + 2 decoder layers) falls back, cross-attention routes
        assert stats == {"mmkernels": 2, "fallback: additive position bias": 4}, stats


@pytest.mark.parametrize("name", [m for m in MODELS if make(m)[3]])
def test_generate_with_cache_gives_identical_tokens(name):
    model, inputs, _, _ = make(name, seed=1)
    model.eval()
    inputs = {k: v for k, v in inputs.items() if not k.startswith("decoder_")}
    tokens = {}
    for impl in ("eager", "mmkernels"):
        model.set_attn_implementation(impl)
        mmk_hf.reset_stats()
        with torch.no_grad():
            tokens[impl] = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=True,
                                          num_beams=2 if name == "bart" else 1)
        if impl == "mmkernels":
            assert mmk_hf.stats().get("mmkernels", 0) > 0
    assert torch.equal(tokens["eager"], tokens["mmkernels"])


def test_hf_masks_keep_their_polarity():
    # HF: 1 = attend. A padded encoder key must not be attended, a present one must.
    model, inputs, _, _ = make("bert_decoder")
    model.eval()
    model.set_attn_implementation("mmkernels")
    out1 = model(**inputs).logits
    enc = inputs["encoder_hidden_states"].clone()
    enc[0, 6:] += 100.0  # changes only keys that batch 0 masks out
    out2 = model(**{**inputs, "encoder_hidden_states": enc}).logits
    torch.testing.assert_close(out1[0], out2[0])
    enc[0, 0] += 1.0  # a visible key: the output must change
    assert not torch.allclose(model(**{**inputs, "encoder_hidden_states": enc}).logits[0], out1[0])


def test_fallbacks_are_counted_and_correct():
    model, inputs, _, _ = make("bart")
    model.train()
    model.config.attention_dropout = 0.1
    for layer in list(model.model.encoder.layers) + list(model.model.decoder.layers):
        for attn in [getattr(layer, n, None) for n in ("self_attn", "encoder_attn")]:
            if attn is not None:
                attn.dropout = 0.1
    model.set_attn_implementation("mmkernels")
    mmk_hf.reset_stats()
    model(**inputs)
    assert mmk_hf.stats().get("fallback: attention dropout in training", 0) > 0


def test_compiled_forward_fullgraph():
    model, inputs, _, _ = make("qformer")
    model.eval()
    model.set_attn_implementation("mmkernels")
    with torch.no_grad():
        eager = model(**inputs).last_hidden_state
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(**inputs).last_hidden_state, eager)


def test_t5_cross_attention_with_a_non_zero_bias_falls_back():
    # The zero-bias rule is checked against the tensor once per module in eager mode: a bias that is
    # not zero (a changed transformers, a user's own T5Attention call) falls back, with the right answer.
    from transformers.models.t5.modeling_t5 import T5Attention

    model, _, _, _ = make("t5")
    attn = next(m for m in model.modules() if isinstance(m, T5Attention) and m.is_decoder and not m.is_causal)
    q = torch.randn(2, 4, 5, 8)
    k = torch.randn(2, 4, 7, 8)
    bias = torch.randn(1, 4, 5, 7)
    mmk_hf.reset_stats()
    out, _ = mmk_hf._attention(attn, q, k, k, None, scaling=1.0, position_bias=bias)
    assert mmk_hf.stats() == {"fallback: additive position bias": 1}
    ref = torch.softmax(q @ k.transpose(-1, -2) + bias, -1) @ k
    torch.testing.assert_close(out, ref.transpose(1, 2), rtol=1e-4, atol=1e-5)
