"""CLVP's log-mel front end: mel filters and ClvpFeatureExtractor, on the STFT of pyclvp/audio/stft.py.

The log-mel features of ClvpFeatureExtractor (ref: transformers/models/clvp/feature_extraction_clvp.py
and transformers/audio_utils.py spectrogram, mel_filter_bank):

  waveform (B, T) float32 -> padded/truncated to default_audio_length seconds -> STFT in float64
  (n_fft 1024, hop 256, periodic Hann, reflect padding) -> power |X|^2 (B, F, frames) -> 80 mel filters
  (slaney norm, htk scale, 0-8000 Hz) -> log(max(., 1e-5)) -> / mel_norms -> (B, M, frames) float32.

Shapes: B batch, T time (samples), F frequency bins, M mel bins; "frames" is the number of STFT frames.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..io.files import read_json, write_atomic
from .stft import hann_window, stft

__all__ = [
    "hertz_to_mel", "mel_to_hertz", "mel_filter_bank",
    "log_mel_spectrogram", "num_threads", "tortoise_mel_norms", "BatchFeature", "ClvpFeatureExtractor",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # pyclvp/data: mel_norms.npy
logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Mel filters (ref: transformers/audio_utils.py hertz_to_mel, mel_to_hertz, mel_filter_bank)

_MEL_SCALES = ("htk", "slaney", "kaldi")


def hertz_to_mel(freq, mel_scale: str = "htk"):
    """Hertz to mels: htk 2595 log10(1 + f/700), kaldi 1127 ln(1 + f/700), slaney linear below 1 kHz."""
    if mel_scale not in _MEL_SCALES:
        raise ValueError(f"mel_scale should be one of {_MEL_SCALES}, got {mel_scale!r}")
    freq = np.asarray(freq, dtype=np.float64)
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    if mel_scale == "kaldi":
        return 1127.0 * np.log(1.0 + freq / 700.0)
    logstep = 27.0 / np.log(6.4)
    log_part = 15.0 + np.log(np.maximum(freq, 1000.0) / 1000.0) * logstep
    return np.where(freq >= 1000.0, log_part, 3.0 * freq / 200.0)


def mel_to_hertz(mels, mel_scale: str = "htk"):
    """The inverse of hertz_to_mel."""
    if mel_scale not in _MEL_SCALES:
        raise ValueError(f"mel_scale should be one of {_MEL_SCALES}, got {mel_scale!r}")
    mels = np.asarray(mels, dtype=np.float64)
    if mel_scale == "htk":
        return 700.0 * (np.power(10, mels / 2595.0) - 1.0)
    if mel_scale == "kaldi":
        return 700.0 * (np.exp(mels / 1127.0) - 1.0)
    logstep = np.log(6.4) / 27.0
    log_part = 1000.0 * np.exp(logstep * (np.maximum(mels, 15.0) - 15.0))
    return np.where(mels >= 15.0, log_part, 200.0 * mels / 3.0)


def mel_filter_bank(num_frequency_bins: int, num_mel_filters: int, min_frequency: float, max_frequency: float,
                    sampling_rate: int, norm: str | None = None, mel_scale: str = "htk") -> np.ndarray:  # -> (F, M)
    """Triangular mel filters, transformers.audio_utils.mel_filter_bank's values (float64).

    M + 2 points equally spaced in mels between min and max frequency are the filters' edges and
    centres; filter m rises linearly from point m to point m + 1 and falls to point m + 2, evaluated at
    the F bin frequencies linspace(0, sampling_rate // 2, F). "slaney" norm divides each filter by its
    width in Hz over 2, so each has about the same area.
    """
    if norm not in (None, "slaney"):
        raise ValueError(f'norm must be one of None or "slaney", got {norm!r}')
    if num_frequency_bins < 2:
        raise ValueError(f"Require num_frequency_bins: {num_frequency_bins} >= 2")
    if min_frequency > max_frequency:
        raise ValueError(f"Require min_frequency: {min_frequency} <= max_frequency: {max_frequency}")
    mel_points = np.linspace(hertz_to_mel(min_frequency, mel_scale), hertz_to_mel(max_frequency, mel_scale),
                             num_mel_filters + 2)                                      # (M + 2,)
    edges = mel_to_hertz(mel_points, mel_scale)                                        # (M + 2,) in Hz
    bin_freqs = np.linspace(0, sampling_rate // 2, num_frequency_bins)                 # (F,)
    slopes = edges[None, :] - bin_freqs[:, None]                                       # (F, M + 2)
    widths = np.diff(edges)                                                            # (M + 1,)
    rising = -slopes[:, :-2] / widths[:-1]                                             # (F, M)
    falling = slopes[:, 2:] / widths[1:]                                               # (F, M)
    filters = np.maximum(np.zeros(1), np.minimum(rising, falling))                    # (F, M)
    if norm == "slaney":
        filters *= 2.0 / (edges[2:num_mel_filters + 2] - edges[:num_mel_filters])     # (F, M) * (M,)
    if (filters.max(axis=0) == 0.0).any():
        warnings.warn(f"At least one mel filter has all zero values: num_mel_filters={num_mel_filters} may be "
                      f"too high, or num_frequency_bins={num_frequency_bins} too low.", stacklevel=2)
    return filters


def tortoise_mel_norms() -> np.ndarray:  # -> (80,) float32
    """Tortoise's per-mel-bin normalizers (tortoise/data/mel_norms.pth), bundled as pyclvp/data/mel_norms.npy."""
    return np.load(DATA_DIR / "mel_norms.npy")


def _mel_blocks(mel_filters: np.ndarray, group: int = 8) -> list:
    """The filter bank cut into blocks of `group` consecutive filters, each with the bins it weighs.

    A mel filter is a triangle over a few bins, so (F, M) is mostly zeros. Block g covers filters m0:m1
    and bins k0:k1 (the first to the last bin any of them weighs): [(k0, k1, m0, m1, (k1-k0, m1-m0) weights)].
    """
    blocks = []
    for m0 in range(0, mel_filters.shape[1], group):
        cols = mel_filters[:, m0:m0 + group]                                    # (F, <=group)
        weighed = np.flatnonzero(cols.any(axis=1))
        if weighed.size:  # an all-zero filter gives log(1e-5), from the zero-initialised output
            k0, k1 = int(weighed[0]), int(weighed[-1]) + 1
            blocks.append((k0, k1, m0, m0 + cols.shape[1], np.ascontiguousarray(cols[k0:k1])))
    return blocks


def num_threads() -> int:
    """Worker threads for per-clip work: PYCLVP_NUM_THREADS, else the CPU count."""
    value = os.environ.get("PYCLVP_NUM_THREADS", "")
    return max(1, int(value)) if value.strip().isdigit() else (os.cpu_count() or 1)


def _map_clips(fn, count: int) -> list:
    """[fn(0), ..., fn(count - 1)] on a few threads: NumPy's FFT, ufuncs and BLAS release the GIL."""
    workers = min(count, num_threads())
    if workers <= 1:
        return [fn(i) for i in range(count)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, range(count)))


def log_mel_spectrogram(waveform, mel_filters, n_fft: int = 1024, hop_length: int = 256,
                        mel_norms=None) -> np.ndarray:  # (..., T) -> (..., M, frames) float32
    """log(max(mel power spectrogram, 1e-5)) / mel_norms, computed in float64.

    ref: transformers ClvpFeatureExtractor._np_extract_fbank_features and audio_utils.spectrogram(
    power=2.0, center=True, pad_mode="reflect"). The centring uses np.pad's reflect, as transformers does:
    unlike torch's, it also accepts clips no longer than n_fft // 2 (by reflecting again). That
    function's mel_floor (1e-10) is below the clip at 1e-5 and so has no effect here.

    Shortcuts, exact up to rounding: bins above the last filter's top (8 kHz for CLVP) are dropped, and
    each block of filters is applied only to the bins it weighs (`_mel_blocks`). Clips go one per task
    over a few threads (`num_threads`), and each clip's frames stay in cache.
    """
    x = np.asarray(waveform, dtype=np.float64)
    if x.shape[-1] == 0:
        raise ValueError("log_mel_spectrogram: a clip has no samples")
    lead = x.shape[:-1]
    x = np.pad(x.reshape(-1, x.shape[-1]), [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")  # (B, T + n_fft)
    mel_filters = np.asarray(mel_filters, dtype=np.float64)                     # (F, M)
    blocks = _mel_blocks(mel_filters)
    used = max((k1 for _, k1, _, _, _ in blocks), default=0)                    # bins 0..K-1 carry weight
    window = hann_window(n_fft)                                                 # (n_fft,)

    def clip_mel(b):  # -> (frames, M)
        spec = stft(x[b], n_fft, hop_length, window=window, center=False)      # (T + n_fft,) -> (F, frames)
        power = np.abs(spec[:used].T)                                           # (frames, K) magnitudes
        power *= power                                                          # (frames, K) |X|^2
        mel = np.zeros((spec.shape[1], mel_filters.shape[1]))                   # (frames, M)
        for k0, k1, m0, m1, weights in blocks:
            mel[:, m0:m1] = power[:, k0:k1] @ weights                           # (frames, k) @ (k, m) -> (frames, m)
        return mel

    mel = np.stack(_map_clips(clip_mel, x.shape[0]))                            # (B, frames, M)
    log_mel = np.log(np.maximum(mel, 1e-5)).swapaxes(-1, -2)                    # (B, frames, M) -> (B, M, frames)
    if mel_norms is not None:
        log_mel = log_mel / np.asarray(mel_norms, dtype=np.float64)[:, None]   # (B, M, frames) / (M, 1)
    return log_mel.astype(np.float32).reshape(*lead, *log_mel.shape[-2:])


# ---------------------------------------------------------------------------------------------
# ClvpFeatureExtractor (ref: transformers/models/clvp/feature_extraction_clvp.py and
# transformers/feature_extraction_sequence_utils.py SequenceFeatureExtractor.pad)


class BatchFeature(dict):
    """transformers' BatchFeature: a dict whose keys can also be read as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def check_return_tensors(return_tensors) -> None:
    """pyclvp returns NumPy arrays ("np") or lists (None); other frameworks are not available."""
    if return_tensors not in (None, "np"):
        raise ValueError(f"return_tensors={return_tensors!r} is not available: pyclvp is torch-free and returns "
                         "NumPy arrays (return_tensors='np') or lists (None)")


def as_clips(raw_speech) -> list[np.ndarray]:
    """One float32 (T,) array per clip, with transformers' rules for telling one clip from a batch; real-valued,
    mono and finite (as float32) checked, naming the clip. Integer samples are refused (transformers would take
    int16 PCM as amplitudes up to 32767, silently changing the features). generate.py's voices go through it too."""
    is_batched_numpy = isinstance(raw_speech, np.ndarray) and raw_speech.ndim > 1
    if is_batched_numpy and raw_speech.ndim > 2:
        raise ValueError(f"Only mono-channel audio is supported: got an array of shape {raw_speech.shape}")
    is_batched = is_batched_numpy or (isinstance(raw_speech, (list, tuple)) and len(raw_speech) > 0
                                      and isinstance(raw_speech[0], (np.ndarray, tuple, list)))
    clips = list(raw_speech) if is_batched else [raw_speech]
    out = []
    for i, clip in enumerate(clips):
        clip = np.asarray(clip)
        if clip.dtype.kind not in "fiu":
            raise TypeError(f"clip {i}: expected real-valued samples, got dtype {clip.dtype}")
        if clip.dtype.kind in "iu" and clip.size:  # transformers takes them as amplitudes, 32768 times too loud
            raise TypeError(f"clip {i}: {clip.dtype} samples look like PCM integers; pass floats in [-1, 1] "
                            f"(e.g. x / 32768 for int16) or read the file with pyclvp.load_audio")
        with np.errstate(over="ignore"):  # too large for float32: inf, reported below
            clip = clip.astype(np.float32, copy=False)
        if clip.ndim != 1:
            raise ValueError(f"clip {i}: expected mono samples (T,), got shape {clip.shape}")
        bad = np.flatnonzero(~np.isfinite(clip))
        if bad.size:
            raise ValueError(f"clip {i}: {bad.size} NaN or infinite sample(s) (as float32), the first at {bad[0]}")
        out.append(clip)
    if not out:
        raise ValueError("raw_speech is empty: expected a clip or a batch of clips")
    return out


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _round_up(n: int, multiple: int | None) -> int:
    return n if multiple is None or n % multiple == 0 else (n // multiple + 1) * multiple


class ClvpFeatureExtractor:
    """Log-mel features of voice clips, as transformers.ClvpFeatureExtractor computes them.

    Same constructor and `__call__` arguments. The output holds "input_features", (B, M, frames) float32
    (a list of (M, frames) arrays when return_tensors is None), and "attention_mask", (B, T) int32 over
    the padded *samples*.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(self, feature_size=80, sampling_rate=22050, default_audio_length=6, hop_length=256,
                 chunk_length=30, n_fft=1024, padding_value=0.0, mel_norms=None, return_attention_mask=False,
                 **kwargs):
        for key, value in (("feature_size", feature_size), ("sampling_rate", sampling_rate),
                           ("hop_length", hop_length), ("n_fft", n_fft), ("chunk_length", chunk_length),
                           ("default_audio_length", default_audio_length)):
            _check_positive_int(key, value)
        self.feature_size = feature_size
        self.sampling_rate = sampling_rate
        self.padding_value = padding_value
        self.padding_side = kwargs.pop("padding_side", "right")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        self.return_attention_mask = return_attention_mask
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.chunk_length = chunk_length
        self.n_samples = chunk_length * sampling_rate
        self.nb_max_frames = self.n_samples // hop_length
        self.default_audio_length = default_audio_length
        self.mel_norms = mel_norms
        if mel_norms is not None and np.shape(mel_norms) != (feature_size,):
            raise ValueError(f"mel_norms must hold feature_size={feature_size} values, got shape {np.shape(mel_norms)}")
        self.mel_filters = mel_filter_bank(1 + n_fft // 2, feature_size, 0.0, 8000.0, sampling_rate,
                                           norm="slaney", mel_scale="htk")       # (F, M)
        for key, value in kwargs.items():  # other config keys are kept as attributes, as transformers does
            setattr(self, key, value)

    # -- configuration -----------------------------------------------------------------------
    CONFIG_NAME = "preprocessor_config.json"
    _INIT_KEYS = ("feature_size", "sampling_rate", "default_audio_length", "hop_length", "chunk_length",
                  "n_fft", "padding_value", "mel_norms", "return_attention_mask", "padding_side")

    @classmethod
    def from_pretrained(cls, path=None) -> "ClvpFeatureExtractor":
        """From a directory's preprocessor_config.json (or that file's path); with no config, the Tortoise
        defaults: transformers' default arguments plus the bundled Tortoise mel_norms."""
        config_file = None
        if path is not None:
            path = Path(os.fspath(path))
            config_file = path if path.is_file() else path / cls.CONFIG_NAME
            if not path.exists():
                raise FileNotFoundError(f"no such file or directory: {path}")
        if config_file is None or not config_file.is_file():
            return cls(mel_norms=tortoise_mel_norms().tolist())
        config = read_json(config_file)
        if not isinstance(config, dict):
            raise ValueError(f"{config_file}: expected a JSON object")
        for key in ("feature_extractor_type", "processor_class"):
            config.pop(key, None)
        return cls(**config)

    def to_dict(self) -> dict:
        out = {key: getattr(self, key) for key in self._INIT_KEYS}
        if out["mel_norms"] is not None:
            out["mel_norms"] = [float(v) for v in out["mel_norms"]]
        return {"feature_extractor_type": "ClvpFeatureExtractor", **out}

    def save_pretrained(self, directory) -> Path:
        directory = Path(os.fspath(directory))
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / self.CONFIG_NAME
        write_atomic(out, (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode())
        return out

    # -- padding (ref: SequenceFeatureExtractor.pad, _truncate, _pad) --------------------------
    def _pad(self, clips, padding, max_length, truncation, pad_to_multiple_of, return_attention_mask):
        """Truncate and pad each clip: (list of (T_i,) float32, list of (T_i',) int32 masks or None)."""
        strategy = {True: "longest", False: "do_not_pad"}.get(padding) if isinstance(padding, bool) else padding
        if strategy not in ("longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        for name, value in (("max_length", max_length), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None:
                _check_positive_int(name, value)
        if truncation:
            limit = _round_up(max_length, pad_to_multiple_of)
            clips = [clip[:limit] for clip in clips]
        if strategy == "longest":
            max_length = max(len(clip) for clip in clips)
        target = _round_up(max_length, pad_to_multiple_of)
        out, masks = [], []
        for clip in clips:
            missing = target - len(clip) if strategy != "do_not_pad" else 0
            side = (0, max(missing, 0)) if self.padding_side == "right" else (max(missing, 0), 0)
            out.append(np.pad(clip, side, constant_values=self.padding_value) if missing > 0 else clip)
            masks.append(np.pad(np.ones(len(clip), dtype=np.int32), side))
        return out, (masks if return_attention_mask else None)

    # -- features ----------------------------------------------------------------------------
    def _extract(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """(M, frames) float32 log-mel features per clip; equal-length clips go through as one batch."""
        if len({len(clip) for clip in clips}) == 1:
            batch = np.array(clips, dtype=np.float64)                              # (B, T)
            return list(log_mel_spectrogram(batch, self.mel_filters, self.n_fft, self.hop_length,
                                            self.mel_norms))                      # (B, T) -> (B, M, frames)
        return [log_mel_spectrogram(clip, self.mel_filters, self.n_fft, self.hop_length, self.mel_norms)
                for clip in clips]

    def __call__(self, raw_speech, sampling_rate=None, truncation=True, pad_to_multiple_of=None,
                 return_tensors=None, return_attention_mask=True, padding="max_length", max_length=None,
                 **kwargs) -> BatchFeature:
        """Pad or truncate each clip to `max_length` samples (default_audio_length seconds), then compute its
        log-mel features. `sampling_rate`, when given, must be the extractor's."""
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(f"The model corresponding to this feature extractor: ClvpFeatureExtractor was trained "
                             f"using a sampling rate of {self.sampling_rate}. Please make sure that the provided "
                             f"`raw_speech` input was sampled with {self.sampling_rate} and not {sampling_rate}.")
        if sampling_rate is None:
            logger.warning("It is strongly recommended to pass the `sampling_rate` argument to "
                           "`ClvpFeatureExtractor()`. Failing to do so can result in silent errors.")
        check_return_tensors(return_tensors)
        clips = as_clips(raw_speech)
        max_length = self.default_audio_length * self.sampling_rate if max_length is None else max_length
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        clips, masks = self._pad(clips, padding, max_length, truncation, pad_to_multiple_of, return_attention_mask)
        out = BatchFeature(input_features=self._extract(clips))
        if masks is not None:
            out["attention_mask"] = masks
        return _convert(out, return_tensors)


def _convert(batch: BatchFeature, return_tensors) -> BatchFeature:
    """Stack each list of equal-shaped arrays into one array ("np"), or keep per-clip lists (None).

    With return_tensors=None, transformers returns input_features as a list and attention_mask as an array.
    """
    for key, value in batch.items():
        ragged = len({np.shape(v) for v in value}) > 1
        if return_tensors == "np" and ragged:
            raise ValueError(f"{key}: clips have different lengths and cannot be stacked; use padding=True "
                             "or return_tensors=None")
        if return_tensors == "np" or (key == "attention_mask" and not ragged):
            batch[key] = np.stack(value)
    return batch
