"""The univnet mel: Tortoise's 24 kHz, 100-band log-mel (wav_to_univnet_mel), the diffusion decoder's voice input.

Shape legend: B batch, N clips, T time (samples), F frequency bins (513), M mel bins (100); "frames" = 1 + T // 256.

univnet_mel(wav) (ref: tortoise/utils/audio.py wav_to_univnet_mel -> TacotronSTFT(1024, 256, 1024, 100, 24000,
0, 12000).mel_spectrogram; tortoise/utils/stft.py STFT.transform):
  1. the waveform (B, T) at 24 kHz, clipped to [-1, 1] (Tortoise first asserts it lies in [-10, 10])
  2. reflect-padded by 512 samples on both sides (stft.py _center_pad), then frames of 1024 every 256 samples,
     each multiplied by the rows of STFT.forward_basis: the DFT's real and imaginary rows for the 513
     non-negative frequencies times a periodic Hann window (scipy get_window('hann', 1024, fftbins=True)), all
     rounded to float32 as Tortoise stores them. This is torch.stft(center=True, pad_mode="reflect") (stft.py
     stft) but for that rounding, which moves quiet bins by ~1e-4 in the log domain, so the basis is kept
  3. the magnitude sqrt(re^2 + im^2) (not the power)                                 (B, F, frames)
  4. 100 mel filters: librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100, fmin=0, fmax=12000), i.e. the slaney
     mel scale with slaney (area) normalization (pyclvp/audio/features.py mel_filter_bank, same values)  (B, M, frames)
  5. log(max(mel, 1e-5))  (dynamic_range_compression, C = 1), not normalized (do_normalization=False)
The products run in float64 on those float32 values and the result is rounded to float32; what is left is
torch's float32 accumulation in Tortoise's conv1d (tests/test_quality.py measures it: < 1e-4 in the log domain,
the largest at quiet bins next to the 1e-5 clamp, ~1e-5 elsewhere).

diffusion_conditioning_mels(clips) (ref: tortoise/api.py get_conditioning_latents, its diffusion half): each clip
at 22.05 kHz is resampled to 24 kHz with torchaudio's resampler (resample.py sinc_resample), cut or zero-padded at
the end to 102,400 samples (pad_or_truncate), and turned into a univnet mel (M, 401); the clips are stacked on a
clip axis (1, N, M, 401), which DiffusionTts.get_conditioning averages over (pyclvp/speech/diffusion.py).
"""
from __future__ import annotations

import functools

import numpy as np

from .features import mel_filter_bank
from .resample import sinc_resample
from .stft import _center_pad, hann_window

__all__ = ["univnet_mel", "univnet_mel_filters", "diffusion_conditioning_mels", "UNIVNET_RATE",
           "DIFFUSION_COND_SAMPLES", "N_FFT", "HOP_LENGTH", "N_MELS"]

UNIVNET_RATE = 24000          # the diffusion decoder's and UnivNet's sampling rate
N_FFT, HOP_LENGTH, N_MELS = 1024, 256, 100
FMIN, FMAX = 0.0, 12000.0
CLIP_VAL = 1e-5               # dynamic_range_compression's clamp
DIFFUSION_COND_SAMPLES = 102400  # get_conditioning_latents: pad_or_truncate(sample, 102400) at 24 kHz
VOICE_RATE = 22050            # voice clips come at the autoregressive model's rate


@functools.lru_cache(maxsize=1)
def univnet_mel_filters() -> np.ndarray:  # -> (M, F) float64, read-only
    """librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100, fmin=0, fmax=12000): slaney scale and norm."""
    fb = mel_filter_bank(N_FFT // 2 + 1, N_MELS, FMIN, FMAX, UNIVNET_RATE, norm="slaney", mel_scale="slaney").T
    fb = fb.astype(np.float32).astype(np.float64)  # torch.from_numpy(mel_basis).float(): the float32 values
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=1)
def _forward_basis() -> np.ndarray:  # -> (2F, n_fft) float64 holding float32 values, read-only
    """STFT.__init__'s forward_basis: the real rows of the DFT matrix, then its imaginary rows (-sin), for the
    513 non-negative frequencies, rounded to float32, times the periodic Hann window rounded to float32, the
    product rounded to float32. Applying these exact values (in float64) puts the result within torch's float32
    accumulation error of Tortoise's; the plain STFT (stft.py) differs from it by the basis' rounding too."""
    F = N_FFT // 2 + 1
    k = np.arange(F, dtype=np.float64)[:, None] * np.arange(N_FFT, dtype=np.float64)[None]  # (F, n_fft)
    angle = 2.0 * np.pi * np.mod(k, N_FFT) / N_FFT
    basis = np.concatenate([np.cos(angle), -np.sin(angle)]).astype(np.float32)  # (2F, n_fft)
    window = hann_window(N_FFT, periodic=True, dtype=np.float32)     # get_window('hann', fftbins=True) -> .float()
    basis = (basis * window).astype(np.float64)                       # forward_basis *= fft_window, in float32
    basis.setflags(write=False)
    return basis


def univnet_mel(wav) -> np.ndarray:  # (T,) or (B, T) at 24 kHz -> (M, frames) or (B, M, frames) float32
    """TacotronSTFT.mel_spectrogram with wav_to_univnet_mel's settings; see the module docstring."""
    y = np.asarray(wav)
    if y.ndim not in (1, 2) or y.shape[-1] == 0:
        raise ValueError(f"univnet_mel expects a waveform (T,) or (B, T), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.floating) or not np.isfinite(y).all():
        raise ValueError("univnet_mel expects finite floating-point samples")
    if y.min() < -10 or y.max() > 10:  # TacotronSTFT.mel_spectrogram's asserts
        raise ValueError(f"univnet_mel expects samples in [-10, 10] (then clipped to [-1, 1]); got "
                         f"[{y.min():.3g}, {y.max():.3g}]")
    y = np.clip(y.astype(np.float32), -1, 1).astype(np.float64)  # torch.clip(y, -1, 1) on the float32 tensor
    y = _center_pad(y, N_FFT // 2, "reflect")                         # (..., T) -> (..., T + 1024)
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT, axis=-1)[..., ::HOP_LENGTH, :]  # (..., frames, n_fft)
    out = frames @ _forward_basis().T                                 # (..., frames, n_fft) @ (n_fft, 2F) -> (..., frames, 2F)
    F = N_FFT // 2 + 1
    magnitude = np.sqrt(out[..., :F] ** 2 + out[..., F:] ** 2).swapaxes(-1, -2)  # (..., F, frames)
    mel = univnet_mel_filters() @ magnitude                           # (M, F) @ (..., F, frames) -> (..., M, frames)
    return np.log(np.maximum(mel, CLIP_VAL)).astype(np.float32)       # (..., M, frames)


def pad_or_truncate(x: np.ndarray, length: int) -> np.ndarray:  # (T,) -> (length,)
    """ref: tortoise/api.py pad_or_truncate: zeros appended, or the first `length` samples."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])])


def diffusion_conditioning_mels(clips, rate: int = VOICE_RATE) -> np.ndarray:  # [(T_j,)] -> (1, N, M, 401)
    """The diffusion decoder's voice input from clips at `rate` (22.05 kHz: Tortoise's voice clips)."""
    if isinstance(clips, np.ndarray) and clips.ndim == 1:
        clips = [clips]
    if len(clips) == 0:
        raise ValueError("no voice clip given")
    mels = []
    for i, clip in enumerate(clips):
        x = np.asarray(clip, np.float32)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"voice clip {i} must be a non-empty waveform (T,), got shape {x.shape}")
        x = sinc_resample(x, rate, UNIVNET_RATE)                      # (T,) -> (ceil(T * 24000 / rate),)
        mels.append(univnet_mel(pad_or_truncate(x, DIFFUSION_COND_SAMPLES)))  # (M, 401)
    return np.stack(mels)[None]                                       # (1, N, M, 401)
