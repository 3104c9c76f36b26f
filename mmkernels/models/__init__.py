"""Complete multimodal classifiers: early, late and attention (MulT-style) fusion, with encoders."""
from .encoders import ImageEncoder, ModalitySpec, SequenceEncoder, VectorEncoder, make_encoder
from .fusion import AttentionFusion, EarlyFusion, LateFusion

__all__ = ["EarlyFusion", "LateFusion", "AttentionFusion", "ModalitySpec", "ImageEncoder", "SequenceEncoder",
           "VectorEncoder", "make_encoder"]
