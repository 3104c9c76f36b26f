"""Layers built on mmkernels' fused ops, and the fusion modules ``mmkernels.models`` are made of.

Layers: ``CrossModalAttention``, ``ConcatLinear``. Fusion modules (``fusion.py``), each taking a
mapping ``{modality name: tensor}`` (sorted-name order): ``ConcatFusion``, ``GatedMultimodalUnit``,
``WeightedMeanFusion``, ``CrossModalFusion`` (MulT-style), ``LayerwiseFusionBlock``, and their pieces
``CrossModalBlock`` and ``MissingEmbedding``.
"""
from .fusion import (ConcatFusion, CrossModalBlock, CrossModalFusion, GatedMultimodalUnit, LayerwiseFusionBlock,
                     MissingEmbedding, WeightedMeanFusion)
from .layers import ConcatLinear, CrossModalAttention

__all__ = ["ConcatLinear", "CrossModalAttention", "ConcatFusion", "GatedMultimodalUnit", "WeightedMeanFusion",
           "CrossModalFusion", "LayerwiseFusionBlock", "CrossModalBlock", "MissingEmbedding"]
