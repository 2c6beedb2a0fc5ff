"""Voice clips from files, two ways.

    load_audio(path, sampling_rate)   pyclvp's loader: every channel averaged to mono, pyclvp's Kaiser polyphase
                                      resampler (pyclvp/audio/resample.py resample); the whole clip
    load_voice(path)                  Tortoise's (tortoise/utils/audio.py load_audio + api.py format_conditioning):
                                      the FIRST channel, torchaudio's Hann-windowed sinc resampler
                                      (sinc_resample), clipped to [-1, 1], and cut or zero-padded to the
                                      conditioning window of 132,300 samples (6 s at 22.05 kHz)

Tortoise cuts a clip longer than the window at a random start, random.randint(0, len - window). load_voice takes
start 0, one of Tortoise's own draws (and the cut transformers' ClvpFeatureExtractor makes), so it is
deterministic; a clip up to 6 s long is the same either way. rank(), tts and the CLI load voices with load_voice.

Shapes: T time (samples).
"""
from __future__ import annotations

import numpy as np

from ..io.wav import read_wav
from .resample import resample, sinc_resample

__all__ = ["load_audio", "load_voice", "CONDITIONING_SAMPLES", "TORTOISE_RATE"]

TORTOISE_RATE = 22050
MIN_SPEECH_RATE = 4000  # Hz: below it a file is no speech recording (telephone speech is 8 kHz); upsampling a
                        # 127 Hz "clip" to 22,050 Hz would make minutes of samples from a second of file
CONDITIONING_SAMPLES = 132300  # ref: tortoise/api.py format_conditioning(clip, cond_length=132300)


def _check_rate(rate: int) -> None:
    if rate < MIN_SPEECH_RATE:
        raise ValueError(f"the file's sampling rate is {rate} Hz, below {MIN_SPEECH_RATE} Hz: not a speech recording")


def load_audio(path, sampling_rate: int = 22050) -> np.ndarray:  # -> (T,) float32
    """A WAV file (path, bytes or file object) as mono float32 samples at `sampling_rate`, resampled when
    the file's rate differs (channels averaged; pyclvp's Kaiser resampler)."""
    samples, rate = read_wav(path)                     # (T, channels)
    _check_rate(rate)
    mono = samples.mean(axis=1)                        # (T, channels) -> (T,)
    if rate != sampling_rate:
        mono = resample(mono, rate, sampling_rate)     # (T,) -> (T * sampling_rate / rate,)
    return mono.astype(np.float32)


def load_voice(path, window: int | None = CONDITIONING_SAMPLES) -> np.ndarray:  # -> (window,) float32
    """A WAV file as Tortoise reads a voice clip: channel 0, torchaudio's resampler to 22.05 kHz, clipped to
    [-1, 1], then the first `window` samples (zero-padded when shorter; None keeps the whole clip).

    ref: tortoise/utils/audio.py load_audio (audio[0], torchaudio.functional.resample, clip_(-1, 1)) and
    tortoise/api.py format_conditioning (F.pad to cond_length, or a random crop: here the crop at 0).
    """
    samples, rate = read_wav(path)                     # (T, channels)
    _check_rate(rate)
    x = samples[:, 0].astype(np.float32)               # (T,) the first channel, as Tortoise's audio[0]
    if rate != TORTOISE_RATE:
        x = sinc_resample(x, rate, TORTOISE_RATE)      # (T,) -> (ceil(T * 22050 / rate),)
    x = np.clip(x, -1.0, 1.0)
    if window is None:
        return x
    if x.shape[0] < window:
        return np.pad(x, (0, window - x.shape[0]))     # F.pad(clip, (0, gap))
    return x[:window].copy()                           # clip[:, 0:cond_length]
