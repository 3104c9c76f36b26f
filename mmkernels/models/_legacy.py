"""Loading state dicts saved with an earlier layout of a model: old keys are renamed on load.

A class lists its renames in ``_legacy_keys``: ``(pattern, replacement)`` pairs, ``pattern`` a regular
expression matched at the start of a key relative to the module (its prefix removed), ``replacement``
the new start (``re`` group references allowed), or ``None`` for a tensor the new layout no longer has.
A key is renamed only when the new key is not in the state dict too, so current state dicts load
untouched. The layouts and their history are listed in README.md ("State dicts").
"""
from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple

from torch import nn


def rename_legacy_keys(state_dict, prefix: str, rules: Sequence[Tuple[str, Optional[str]]]) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rel = key[len(prefix):]
        for pattern, replacement in rules:
            m = re.match(pattern, rel)
            if m is None:
                continue
            if replacement is None:
                del state_dict[key]
            else:
                new = prefix + m.expand(replacement) + rel[m.end():]
                if new not in state_dict:
                    state_dict[new] = state_dict.pop(key)
            break


class LoadsLegacyKeys(nn.Module):
    """Base of the modules whose parameter names changed: renames ``_legacy_keys`` before loading."""

    _legacy_keys: Tuple[Tuple[str, Optional[str]], ...] = ()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rename_legacy_keys(state_dict, prefix, self._legacy_keys)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
