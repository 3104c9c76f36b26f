"""Hugging Face ``transformers`` integration: ``attn_implementation="mmkernels"``.

::

    import mmkernels.integrations.transformers as mmk_hf
    mmk_hf.register()
    model = AutoModel.from_pretrained(..., attn_implementation="mmkernels")   # or
    model.set_attn_implementation("mmkernels")

``register()`` adds an attention function and its mask function under the name ``"mmkernels"``. Every
attention call the op can express runs on ``mmkernels.cross_attention``: cross-attention, padded
self-attention and causal self-attention (with padding), with grouped-query heads. The rest falls back
to transformers' own SDPA function, visibly (``stats()`` counts each route; the first fallback for each
reason is logged once):

- attention dropout in training, additive position bias (T5's learned relative bias in its self-
  attention), softcapping, sliding windows, ``output_attentions``, and any mask pattern other than
  padding + plain causal (packed sequences, chunked attention, static caches whose key length exceeds
  the filled positions). T5/mT5 cross-attention routes to mmkernels: the position bias transformers
  passes there is zero by construction (see ``_ZERO_BIAS_ATTENTION``).

Routing is decided from static facts (the mask function, shapes and arguments), never by reading mask
values on the device, so ``torch.compile(fullgraph=True)`` traces through it. HF's padding masks mean
True/1 = attend; the op's ``key_padding_mask`` means True = ignore: the conversion happens here, once.
Tested with transformers 5.x (see ``SUPPORTED``).
"""
from __future__ import annotations

import collections
import logging
import weakref
from typing import Optional

import torch

import mmkernels

__all__ = ["register", "stats", "reset_stats", "NAME", "SUPPORTED"]

NAME = "mmkernels"
SUPPORTED = ">=5.0,<6"  # the transformers versions this integration was tested with
_log = logging.getLogger("mmkernels.integrations.transformers")
_stats: collections.Counter = collections.Counter()
_warned = set()


def stats() -> dict:
    """Calls routed so far: ``{"mmkernels": n, "fallback: <reason>": n, ...}`` (not counted while
    ``torch.compile`` traces)."""
    return dict(_stats)


def reset_stats() -> None:
    _stats.clear()


def _count(route: str) -> None:
    if torch.compiler.is_compiling():
        return
    _stats[route] += 1
    if route.startswith("fallback") and route not in _warned:
        _warned.add(route)
        _log.warning("mmkernels attention: %s; using transformers' SDPA for these calls", route)


# A mask built by our mask function is: None (no padding), a 2-D (B, Lk) bool padding mask (True =
# attend) for bidirectional attention, or a 3-D (B, 1, Lk) one for causal attention. Anything else is
# SDPA's 4-D mask, built because the pattern is one the op cannot express.


def _mask_function(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                   attention_mask=None, local_size=None, **kwargs):
    from transformers import masking_utils as mu

    causal = mask_function is mu.causal_mask_function or mask_function is None
    plain = causal or mask_function is mu.bidirectional_mask_function
    # Bottom-right causal alignment equals HF's when the keys are exactly the seen tokens.
    aligned = kv_offset == 0 and (not causal or q_offset + q_length == kv_length)
    if not plain or local_size is not None or not aligned:
        kwargs.pop("dtype", None), kwargs.pop("config", None)
        return mu.sdpa_mask(batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset,
                            mask_function=mask_function or mu.causal_mask_function, attention_mask=attention_mask,
                            local_size=local_size, allow_is_causal_skip=False,
                            **{k: v for k, v in kwargs.items() if k in ("use_vmap", "device")})
    padding = mu.prepare_padding_mask(attention_mask, kv_length, kv_offset)
    if padding is None:
        return None
    padding = padding[:, :kv_length].to(torch.bool)
    return padding[:, None, :] if causal else padding


# Attention classes whose cross-attention gets an all-zero position bias by construction: T5 and mT5 build
# every encoder-decoder attention without a relative bias (T5LayerCrossAttention:
# has_relative_attention_bias=False, is_causal=False), so the bias their stack passes down is the
# torch.zeros that the first cross-attention layer creates. Their self-attention biases are learned and
# fall back. A static fact of the module; in eager mode it is also checked once per module against the
# tensor (one host sync), so a transformers version that changed this would fall back, not be wrong.
_ZERO_BIAS_ATTENTION = ("T5Attention", "MT5Attention")
_checked_zero_bias: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # module -> bool (eager)


def _zero_position_bias(module, bias) -> bool:
    static = (type(module).__name__ in _ZERO_BIAS_ATTENTION and getattr(module, "is_decoder", False)
              and not getattr(module, "is_causal", True) and not getattr(module, "has_relative_attention_bias", True))
    if not static or torch.compiler.is_compiling():
        return static
    if module not in _checked_zero_bias:
        _checked_zero_bias[module] = not bool(torch.count_nonzero(bias).item())
        if not _checked_zero_bias[module]:
            _log.warning("mmkernels attention: %s cross-attention got a non-zero position bias; falling back",
                         type(module).__name__)
    return _checked_zero_bias[module]


def _fallback_reason(module, query, attention_mask, dropout, kwargs) -> Optional[str]:
    if attention_mask is not None and attention_mask.dim() == 4:
        return "mask pattern beyond padding + causal (sliding window, packing, static cache, custom)"
    bias = kwargs.get("position_bias")
    if bias is not None and not _zero_position_bias(module, bias):
        return "additive position bias"
    if kwargs.get("softcap") is not None:
        return "softcapping"
    if kwargs.get("sliding_window") is not None:
        return "sliding window"
    if kwargs.get("output_attentions", False):
        return "output_attentions"
    if dropout and module.training:
        return "attention dropout in training"
    if query.shape[-1] > mmkernels.ops.MAX_HEAD_DIM:
        return f"head dim above {mmkernels.ops.MAX_HEAD_DIM}"
    return None


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers attention function: query (B, H, Lq, D), key/value (B, Hkv, Lk, D) -> ((B, Lq, H, Dv), None)."""
    reason = _fallback_reason(module, query, attention_mask, dropout, kwargs)
    if reason is not None:
        _count(f"fallback: {reason}")
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        mask = attention_mask
        if mask is not None and mask.dim() < 4:  # our padding form back to SDPA's 4-D bool mask
            mask = mask.view(mask.shape[0], 1, 1, mask.shape[-1])
        return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if attention_mask is not None:
        causal = attention_mask.dim() == 3
        key_padding_mask = ~attention_mask.reshape(attention_mask.shape[0], -1)  # HF True = attend
    else:
        causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", False))
        key_padding_mask = None
    _count(NAME)
    out = mmkernels.cross_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                    key_padding_mask=key_padding_mask, scale=scaling,
                                    is_causal=bool(causal) and query.shape[2] > 1)
    return out, None


def register(name: str = NAME) -> None:
    """Registers ``attn_implementation=name`` (default ``"mmkernels"``) with transformers."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError as e:  # pragma: no cover - exercised without transformers
        raise ImportError("mmkernels.integrations.transformers needs `transformers` (pip install "
                          f"'transformers{SUPPORTED}')") from e
    AttentionInterface.register(name, _attention)
    AttentionMaskInterface.register(name, _mask_function)
