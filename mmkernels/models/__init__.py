"""Complete multimodal classifiers: early, late, attention (MulT-style), layer-wise and gated fusion,
single- or multi-task, with encoders for images, sequences, vectors and text."""
from .encoders import ImageEncoder, ModalitySpec, SequenceEncoder, TextEncoder, VectorEncoder, make_encoder
from .fusion import AttentionFusion, EarlyFusion, GatedFusion, LateFusion, LayerwiseFusion

__all__ = ["EarlyFusion", "LateFusion", "AttentionFusion", "LayerwiseFusion", "GatedFusion", "ModalitySpec",
           "ImageEncoder", "SequenceEncoder", "TextEncoder", "VectorEncoder", "make_encoder"]
