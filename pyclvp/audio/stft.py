"""A torch.stft-exact STFT and its inverse in NumPy: `stft`, `istft`, `hann_window`.

The STFT (`stft`, torch.stft's semantics with return_complex=True; ref: torch/functional.py stft and
aten/src/ATen/native/SpectralOps.cpp stft):

  1. Defaults: hop = n_fft // 4, win_length = n_fft, window = ones(win_length). A window shorter than
     n_fft is zero-padded on both sides, (n_fft - win_length) // 2 zeros on the left.
  2. center=True pads the signal by n_fft // 2 on both sides with pad_mode (reflect, constant,
     replicate, circular), so that frame t is centred on sample t * hop.
  3. Frame t is x[t*hop : t*hop + n_fft]; there are 1 + (T - n_fft) // hop of them. All frames are one
     strided view of the signal (no copy, no Python loop per frame), multiplied by the window.
  4. A DFT of each frame: the n_fft // 2 + 1 non-negative frequencies when onesided (the default for
     real input and window), all n_fft of them otherwise; times n_fft**-0.5 when normalized.
  5. The result is (..., F, frames) complex: frequency before time, as torch.stft returns it.

`istft` inverts it by overlap-add (ref: SpectralOps.cpp istft): the inverse DFT of each frame times the
window, summed at hop spacing, divided by the summed squared window (the "window envelope"), then
trimmed by n_fft // 2 at each end when centred, or to `length`. The envelope must stay above 1e-11
where the signal is kept (the NOLA condition), as torch checks.

Float64 inputs compute in float64 and float32 inputs in float32 (NumPy >= 2 runs pocketfft in single
precision); complex inputs and windows give two-sided transforms, as torch's.

Shapes: T time (samples), F frequency bins; "frames" is the number of STFT frames.
"""
from __future__ import annotations

import numpy as np

__all__ = ["hann_window", "stft", "istft"]


# ---------------------------------------------------------------------------------------------
# Windows and the STFT

_PAD_MODES = {"reflect": "reflect", "constant": "constant", "replicate": "edge", "circular": "wrap"}


def hann_window(n: int, periodic: bool = True, dtype=np.float64) -> np.ndarray:  # -> (n,)
    """torch.hann_window: 0.5 - 0.5 cos(2 pi k / N), N = n if periodic else n - 1 (ref: torch.hann_window)."""
    if n < 0:
        raise ValueError(f"hann_window: n must be non-negative, got {n}")
    if n == 1:
        return np.ones(1, dtype=dtype)
    k = np.arange(n, dtype=np.float64)                                    # (n,)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * k / (n if periodic else n - 1))   # (n,)
    return w.astype(dtype)


def _compute_dtypes(x: np.ndarray) -> tuple[np.dtype, np.dtype]:
    """(real, complex) dtypes of the computation: the input's precision."""
    if x.dtype not in (np.float32, np.float64, np.complex64, np.complex128):
        raise TypeError(f"stft/istft: expected float32, float64, complex64 or complex128 input, got {x.dtype}")
    if x.dtype in (np.float32, np.complex64):
        return np.dtype(np.float32), np.dtype(np.complex64)
    return np.dtype(np.float64), np.dtype(np.complex128)


def _padded_window(window, win_length: int, n_fft: int, real, cplx) -> np.ndarray:  # -> (n_fft,)
    """The window (ones when None) in the compute precision, centred in n_fft samples.

    ref: SpectralOps.cpp stft, "center window": left = (n_fft - win_length) / 2 zeros on the left.
    """
    if not 0 < win_length <= n_fft:
        raise ValueError(f"expected 0 < win_length <= n_fft, got win_length={win_length}, n_fft={n_fft}")
    window = np.ones(win_length, dtype=real) if window is None else np.asarray(window)
    if window.shape != (win_length,):
        raise ValueError(f"expected a 1-D window of length win_length={win_length}, got shape {window.shape}")
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft, dtype=cplx if np.iscomplexobj(window) else real)
    out[left:left + win_length] = window
    return out


def _center_pad(x: np.ndarray, pad: int, pad_mode: str) -> np.ndarray:  # (..., T) -> (..., T + 2*pad)
    """Pad the last axis by `pad` on both sides as torch.nn.functional.pad(mode=pad_mode) does."""
    if pad_mode not in _PAD_MODES:
        raise ValueError(f"unknown pad_mode {pad_mode!r}; choose from {sorted(_PAD_MODES)}")
    n = x.shape[-1]
    if pad_mode == "reflect" and pad >= n:
        raise ValueError(f"reflect padding of {pad} needs a signal longer than {pad} samples, got {n}")
    if pad_mode == "circular" and pad > n:
        raise ValueError(f"circular padding of {pad} needs a signal of at least {pad} samples, got {n}")
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode=_PAD_MODES[pad_mode])


def stft(x, n_fft: int, hop_length: int | None = None, win_length: int | None = None, window=None,
         center: bool = True, pad_mode: str = "reflect", normalized: bool = False,
         onesided: bool | None = None) -> np.ndarray:  # (..., T) -> (..., F, frames) complex
    """torch.stft(..., return_complex=True) for inputs of any leading shape; see the module docstring."""
    x = np.asarray(x)
    real, cplx = _compute_dtypes(x)
    hop = n_fft // 4 if hop_length is None else hop_length
    win_length = n_fft if win_length is None else win_length
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"stft: expected a signal with samples on the last axis, got shape {x.shape}")
    if n_fft <= 0:
        raise ValueError(f"stft: expected n_fft > 0, got {n_fft}")
    if hop <= 0:
        raise ValueError(f"stft: expected hop_length > 0, got {hop}")
    w = _padded_window(window, win_length, n_fft, real, cplx)                   # (n_fft,)
    is_complex = np.iscomplexobj(x) or np.iscomplexobj(w)
    onesided = not is_complex if onesided is None else onesided
    if onesided and is_complex:
        raise ValueError("stft: onesided=True is not possible with a complex input or window")
    x = x.astype(cplx if np.iscomplexobj(x) else real, copy=False)
    if center:
        x = _center_pad(x, n_fft // 2, pad_mode)                         # (..., T) -> (..., T + 2*(n_fft//2))
    if n_fft > x.shape[-1]:
        raise ValueError(f"stft: n_fft={n_fft} exceeds the (padded) signal length {x.shape[-1]}")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[..., ::hop, :]  # (..., frames, n_fft)
    frames = frames * w                                                   # (..., frames, n_fft)
    norm = "ortho" if normalized else "backward"
    spec = np.fft.rfft(frames, axis=-1, norm=norm) if onesided else np.fft.fft(frames, axis=-1, norm=norm)
    return spec.astype(cplx, copy=False).swapaxes(-1, -2)                # (..., frames, F) -> (..., F, frames)


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:  # (..., N, n_fft) -> (..., n_fft + hop*(N-1))
    """Sum frame k into out[k*hop : k*hop + n_fft] (ref: at::unfold_backward), vectorized.

    Each frame is cut into P = ceil(n_fft / hop) hop-sized pieces; piece p of frame k lands in output
    block k + p. The loop runs over the P piece positions, never over frames.
    """
    *lead, n, n_fft = frames.shape
    pieces = -(-n_fft // hop)
    padded = np.zeros((*lead, n, pieces * hop), dtype=frames.dtype)        # (..., N, P*hop)
    padded[..., :n_fft] = frames
    padded = padded.reshape(*lead, n, pieces, hop)                         # (..., N, P, hop)
    out = np.zeros((*lead, n + pieces - 1, hop), dtype=frames.dtype)       # (..., N + P - 1, hop)
    for p in range(pieces):
        out[..., p:p + n, :] += padded[..., :, p, :]
    return out.reshape(*lead, (n + pieces - 1) * hop)[..., :n_fft + hop * (n - 1)]


def istft(spec, n_fft: int, hop_length: int | None = None, win_length: int | None = None, window=None,
          center: bool = True, normalized: bool = False, onesided: bool | None = None,
          length: int | None = None, return_complex: bool = False) -> np.ndarray:  # (..., F, frames) -> (..., T)
    """torch.istft for inputs of any leading shape; see the module docstring."""
    spec = np.asarray(spec)
    if not np.iscomplexobj(spec):
        raise TypeError(f"istft: expected a complex spectrogram, got {spec.dtype}")
    real, cplx = _compute_dtypes(spec)
    if spec.ndim < 2 or spec.size == 0:
        raise ValueError(f"istft: expected a non-empty (..., F, frames) spectrogram, got shape {spec.shape}")
    hop = n_fft // 4 if hop_length is None else hop_length
    win_length = n_fft if win_length is None else win_length
    n_freq, n_frames = spec.shape[-2:]
    onesided = n_freq != n_fft if onesided is None else onesided
    want = n_fft // 2 + 1 if onesided else n_fft
    if n_freq != want:
        raise ValueError(f"istft: expected {want} frequency bins for n_fft={n_fft}, onesided={onesided}; got {n_freq}")
    if not 0 < hop <= win_length:
        raise ValueError(f"istft: expected 0 < hop_length <= win_length, got hop_length={hop}, win_length={win_length}")
    w = _padded_window(window, win_length, n_fft, real, cplx)                   # (n_fft,)
    norm = "ortho" if normalized else "backward"
    cols = spec.astype(cplx, copy=False).swapaxes(-1, -2)                  # (..., F, N) -> (..., N, F)
    if return_complex:
        if onesided:
            raise ValueError("istft: return_complex=True needs a two-sided spectrogram (onesided=False)")
        frames = np.fft.ifft(cols, n=n_fft, axis=-1, norm=norm)            # (..., N, n_fft) complex
    else:
        if np.iscomplexobj(w):
            raise ValueError("istft: a complex window needs return_complex=True")
        frames = np.fft.irfft(cols[..., :n_fft // 2 + 1], n=n_fft, axis=-1, norm=norm)  # (..., N, n_fft) real
    y = _overlap_add(frames * w, hop)                                       # (..., n_fft + hop*(N-1))
    envelope = _overlap_add(np.broadcast_to(w * w, (n_frames, n_fft)), hop)  # (n_fft + hop*(N-1),)
    expected = n_fft + hop * (n_frames - 1)
    start = n_fft // 2 if center else 0
    end = start + length if length is not None else (-(n_fft // 2) if center else expected)
    y, envelope = y[..., start:end], envelope[start:end]
    if envelope.size and np.abs(envelope).min() < 1e-11:
        raise ValueError("istft: the window overlap-add is below 1e-11 somewhere (the NOLA condition fails); "
                         "use a smaller hop_length or another window")
    y = y / envelope
    if end > expected:
        y = np.concatenate([y, np.zeros((*y.shape[:-1], end - expected), dtype=y.dtype)], axis=-1)
    return y.astype(cplx if return_complex else real, copy=False)
