"""AV-digits: a small real audio-visual dataset built like AV-MNIST.

Audio: the Free Spoken Digit Dataset (FSDD; 3,000 8 kHz WAVs, 6 speakers x 10 digits x 50 takes,
CC BY-SA 4.0), turned into log-mel spectrogram frames of variable length. FSDD's own split: takes
0-4 of every speaker and digit are the test set (300 clips), the rest (2,700) train.
Image: scikit-learn's ``load_digits`` (1,797 8x8 handwritten digits), split disjointly (stratified,
fixed seed) into train/test images. Each audio clip is paired with an image of the same label from
the same split, deterministically.

Text (optional third modality): the digit as an English word ("seven") with character-level noise
(each letter replaced by a random one with probability ``TEXT_NOISE[difficulty]``), one token per
character (a-z -> 1..26, 0 = padding). Speaker labels (FSDD's six speakers) come with every clip for
multi-task training.

``difficulty="hard"`` corrupts every sample, seeded and identical on every run: audio gets white noise at
``HARD_SNR_DB`` dB SNR (relative to the clip's own power) before the spectrogram; images get Gaussian
pixel noise (std ``HARD_IMAGE_NOISE``) and a random ``HARD_OCCLUSION`` x ``HARD_OCCLUSION`` square set to
noise (then clipped to [0, 1]). Chosen so that each modality alone drops well below the clean setting
while the two together still carry the label (see the example's committed results).

The FSDD folder is never copied: pass its path (``--fsdd-dir``) or set ``MMKERNELS_FSDD_DIR``. The folder
may be the repository root (with ``recordings/``) or the ``recordings/`` folder itself.
"""
from __future__ import annotations

import math
import os
import re
import wave
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

SAMPLE_RATE = 8000
N_MELS = 40
DIFFICULTIES = ("clean", "hard")
HARD_SNR_DB = -6.0
HARD_IMAGE_NOISE = 0.35
HARD_OCCLUSION = 4
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEXT_NOISE = {"clean": 0.1, "hard": 0.45}
TEXT_VOCAB = 27  # padding + a-z
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def fsdd_dir_from(path: Optional[str] = None) -> str:
    """Resolves the FSDD recordings folder from an argument or ``MMKERNELS_FSDD_DIR``."""
    path = path or os.environ.get("MMKERNELS_FSDD_DIR")
    if not path:
        raise ValueError("FSDD location unknown: pass --fsdd-dir DIR or set MMKERNELS_FSDD_DIR")
    rec = os.path.join(path, "recordings")
    folder = rec if os.path.isdir(rec) else path
    if not os.path.isdir(folder) or not any(_NAME.match(f) for f in os.listdir(folder)):
        raise ValueError(f"no FSDD recordings ('{{digit}}_{{speaker}}_{{take}}.wav') found in {path!r}")
    return folder


def read_wav(path: str) -> np.ndarray:
    """Mono 16-bit PCM WAV -> float32 in [-1, 1] (standard library only)."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        frames = w.readframes(w.getnframes())
        channels = w.getnchannels()
        rate = w.getframerate()
    x = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    if rate != SAMPLE_RATE:  # FSDD is 8 kHz; resample anything else linearly
        t = np.arange(0, len(x) / rate, 1 / SAMPLE_RATE)
        x = np.interp(t, np.arange(len(x)) / rate, x).astype(np.float32)
    return x


def mel_filterbank(n_fft: int, n_mels: int, sr: int, fmin: float = 20.0, fmax: Optional[float] = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale."""
    fmax = fmax or sr / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)
    pts = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(freqs)), dtype=np.float32)
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        fb[m] = np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0, None)
    return torch.from_numpy(fb)


_FB_CACHE: Dict[Tuple[int, int], torch.Tensor] = {}


def log_mel_spectrogram(x: np.ndarray, n_fft: int = 256, hop: int = 80, win: int = 200, n_mels: int = N_MELS) -> torch.Tensor:
    """(..., T, n_mels) log-mel frames of (..., samples) audio: 25 ms windows, 10 ms hop at 8 kHz."""
    sig = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if sig.shape[-1] < win:
        sig = torch.nn.functional.pad(sig, (0, win - sig.shape[-1]))
    spec = torch.stft(sig, n_fft=n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win),
                      center=True, return_complex=True).abs().pow(2)  # (F, T)
    key = (n_fft, n_mels)
    if key not in _FB_CACHE:
        _FB_CACHE[key] = mel_filterbank(n_fft, n_mels, SAMPLE_RATE)
    return torch.log(_FB_CACHE[key] @ spec + 1e-6).transpose(-1, -2).contiguous()


def log_mel_batch(signals: List[np.ndarray], max_frames: int, chunk: int = 256, hop: int = 80) -> List[torch.Tensor]:
    """log_mel_spectrogram of many clips: one batched STFT per chunk of clips of similar length."""
    order = sorted(range(len(signals)), key=lambda i: len(signals[i]))
    out: List[Optional[torch.Tensor]] = [None] * len(signals)
    for c in range(0, len(order), chunk):
        idx = order[c : c + chunk]
        n = max(max(len(signals[i]) for i in idx), 200)
        batch = np.zeros((len(idx), n), dtype=np.float32)
        for r, i in enumerate(idx):
            batch[r, : len(signals[i])] = signals[i]
        frames = log_mel_spectrogram(batch)  # (B, T, n_mels)
        for r, i in enumerate(idx):
            t = min(len(signals[i]) // hop + 1, max_frames)  # frames of the clip itself (center=True)
            out[i] = frames[r, :t].clone()
    return out


def add_noise_at_snr(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` plus white noise whose power is the clip's power / 10^(snr/10)."""
    power = float(np.mean(x.astype(np.float64) ** 2)) or 1e-8
    noise = rng.standard_normal(len(x)) * math.sqrt(power / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def corrupt_images(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Gaussian pixel noise and one random occluding square of noise per image; clipped to [0, 1]."""
    n, _, h, w = images.shape
    out = images + HARD_IMAGE_NOISE * torch.randn(images.shape, generator=g)
    k = HARD_OCCLUSION
    ys = torch.randint(0, h - k + 1, (n,), generator=g)
    xs = torch.randint(0, w - k + 1, (n,), generator=g)
    fill = torch.rand(n, k, k, generator=g)
    for i in range(n):
        out[i, 0, ys[i]:ys[i] + k, xs[i]:xs[i] + k] = fill[i]
    return out.clamp(0.0, 1.0)


def noisy_word(label: int, p: float, g: torch.Generator) -> torch.Tensor:
    """Character tokens (1..26) of the digit's word, each replaced by a random letter with probability p."""
    tokens = torch.tensor([ord(c) - ord("a") + 1 for c in DIGIT_WORDS[label]], dtype=torch.int64)
    swap = torch.rand(len(tokens), generator=g) < p
    return torch.where(swap, torch.randint(1, TEXT_VOCAB, (len(tokens),), generator=g), tokens)


@dataclass
class Split:
    audio: List[torch.Tensor]  # (T_i, N_MELS) float32, normalised
    image: torch.Tensor  # (N, 1, 8, 8) float32 in [0, 1]
    label: torch.Tensor  # (N,) int64
    speaker: List[str]
    speaker_id: torch.Tensor  # (N,) int64: index into AVDigits.speakers
    text: List[torch.Tensor]  # (len_i,) int64 character tokens of the noisy digit word


class AVDigits:
    """Train and test splits of AV-digits (see module docstring). ``AVDigits(dir).train`` / ``.test``."""

    def __init__(self, fsdd_dir: Optional[str] = None, *, seed: int = 0, image_test_fraction: float = 0.25,
                 max_frames: int = 256, difficulty: str = "clean") -> None:
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:  # pragma: no cover
            raise ImportError("AV-digits needs scikit-learn for its images: pip install scikit-learn") from e
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
        self.difficulty = difficulty
        folder = fsdd_dir_from(fsdd_dir)
        files = sorted(f for f in os.listdir(folder) if _NAME.match(f))
        signals = [read_wav(os.path.join(folder, f)) for f in files]
        if difficulty == "hard":  # one seeded noise stream: the same corruption on every run
            rng = np.random.default_rng(seed + 12345)
            signals = [add_noise_at_snr(x, HARD_SNR_DB, rng) for x in signals]
        spectra = log_mel_batch(signals, max_frames)
        data = {"train": ([], [], []), "test": ([], [], [])}
        for f, frames in zip(files, spectra):
            digit, speaker, take = _NAME.match(f).groups()
            split = "test" if int(take) <= 4 else "train"
            data[split][0].append(frames)
            data[split][1].append(int(digit))
            data[split][2].append(speaker)
        # feature normalisation from training statistics only
        cat = torch.cat(data["train"][0])
        mean, std = cat.mean(0), cat.std(0).clamp_min(1e-3)
        self.audio_mean, self.audio_std = mean, std

        digits = load_digits()
        images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
        targets = torch.from_numpy(digits.target.astype(np.int64))
        g = torch.Generator().manual_seed(seed)
        self.speakers = sorted({sp for split in data.values() for sp in split[2]})
        img_split = {"train": [], "test": []}
        for d in range(10):  # stratified, disjoint image split
            idx = torch.nonzero(targets == d).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            n_test = int(round(image_test_fraction * len(idx)))
            img_split["test"].append(idx[:n_test])
            img_split["train"].append(idx[n_test:])

        splits = {}
        g_corrupt = torch.Generator().manual_seed(seed + 54321)  # its own stream: pairing is as in clean
        for name, (audio, labels, speakers) in data.items():
            labels_t = torch.tensor(labels, dtype=torch.int64)
            chosen = torch.empty(len(labels), dtype=torch.int64)
            for d in range(10):  # pair each clip with an image of its label, cycling a fixed permutation
                pos = torch.nonzero(labels_t == d).flatten()
                pool = img_split[name][d]
                order = pool[torch.randperm(len(pool), generator=g)]
                chosen[pos] = order[torch.arange(len(pos)) % len(order)]
            image = images[chosen]
            if difficulty == "hard":
                image = corrupt_images(image, g_corrupt)
            text = [noisy_word(int(d), TEXT_NOISE[difficulty], g_corrupt) for d in labels]
            speaker_id = torch.tensor([self.speakers.index(sp) for sp in speakers], dtype=torch.int64)
            splits[name] = Split([(a - mean) / std for a in audio], image, labels_t, speakers, speaker_id, text)
        self.train, self.test = splits["train"], splits["test"]
        self.image_indices = {k: torch.cat(v) for k, v in img_split.items()}

    @staticmethod
    def batches(split: Split, batch_size: int, *, shuffle: bool, generator: Optional[torch.Generator] = None,
                text: bool = False, speaker: bool = False):
        """Yields (inputs, lengths, labels) batches: inputs = {"audio": (B, T, 40), "image": (B, 1, 8, 8)}
        (+ "text": (B, T') int64 with ``text=True``); labels = the digits (B,), or with ``speaker=True``
        {"digit": (B,), "speaker": (B,)}."""
        n = len(split.label)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            inputs, lengths, label = collate([split.audio[j] for j in idx], split.image[idx], split.label[idx])
            if text:
                inputs["text"], lengths["text"] = pad_tokens([split.text[j] for j in idx])
            if speaker:
                label = {"digit": label, "speaker": split.speaker_id[idx]}
            yield inputs, lengths, label


def pad_tokens(seqs: List[torch.Tensor]):
    """Token sequences -> ``(B, T)`` int64 (0 = padding) and their lengths."""
    lengths = torch.tensor([len(t) for t in seqs], dtype=torch.int64)
    out = torch.zeros(len(seqs), int(lengths.max()) if len(seqs) else 0, dtype=torch.int64)
    for i, t in enumerate(seqs):
        out[i, : len(t)] = t
    return out, lengths


def collate(audio: List[torch.Tensor], image: torch.Tensor, label: torch.Tensor):
    lengths = torch.tensor([a.shape[0] for a in audio], dtype=torch.int64)
    T = int(lengths.max()) if len(audio) else 0
    padded = torch.zeros(len(audio), T, audio[0].shape[1] if audio else N_MELS)
    for i, a in enumerate(audio):
        padded[i, : a.shape[0]] = a
    return {"audio": padded, "image": image}, {"audio": lengths}, label
