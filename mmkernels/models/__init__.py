"""Complete multimodal classifiers: early, late, attention (MulT-style), layer-wise and gated fusion,
single- or multi-task, with encoders for images, sequences, vectors and text. Each is a composition of
encoders, a fusion module from ``mmkernels.nn`` and heads."""
from .encoders import (EncoderOutput, ImageEncoder, ModalitySpec, SequenceEncoder, TextEncoder, VectorEncoder,
                       make_encoder)
from .fusion import AttentionFusion, EarlyFusion, EncodedModality, GatedFusion, LateFusion, LayerwiseFusion

__all__ = ["EarlyFusion", "LateFusion", "AttentionFusion", "LayerwiseFusion", "GatedFusion", "ModalitySpec",
           "ImageEncoder", "SequenceEncoder", "TextEncoder", "VectorEncoder", "make_encoder", "EncoderOutput",
           "EncodedModality"]
