"""Voice clips from files: `load_audio(path, sampling_rate)` reads a WAV, mixes it to mono and resamples it.

Shapes: T time (samples).
"""
from __future__ import annotations

import numpy as np

from ..io.wav import read_wav
from .resample import resample

__all__ = ["load_audio"]


def load_audio(path, sampling_rate: int = 22050) -> np.ndarray:  # -> (T,) float32
    """A WAV file (path, bytes or file object) as mono float32 samples at `sampling_rate`, resampled when
    the file's rate differs."""
    samples, rate = read_wav(path)                     # (T, channels)
    mono = samples.mean(axis=1)                        # (T, channels) -> (T,)
    if rate != sampling_rate:
        mono = resample(mono, rate, sampling_rate)     # (T,) -> (T * sampling_rate / rate,)
    return mono.astype(np.float32)
