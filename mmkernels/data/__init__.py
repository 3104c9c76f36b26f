"""Datasets for the examples: AV-digits (FSDD spoken digits paired with scikit-learn digit images)."""
from .avdigits import AVDigits, collate, fsdd_dir_from, log_mel_spectrogram, read_wav

__all__ = ["AVDigits", "collate", "fsdd_dir_from", "log_mel_spectrogram", "read_wav"]
