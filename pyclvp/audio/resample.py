"""Band-limited resampling in NumPy: `resample(x, orig_rate, new_rate)` (pyclvp's own, Kaiser-windowed polyphase)
and `sinc_resample(x, orig_rate, new_rate)` (torchaudio.functional.resample's sinc_interp_hann, as Tortoise loads voices).

Resampling from rate r_in to r_out (`resample`): with g = gcd(r_in, r_out), the signal is conceptually
upsampled by U = r_out / g (U - 1 zeros between samples), low-pass filtered, and kept one sample in
D = r_in / g. The low-pass filter is a Kaiser-windowed sinc (`kaiser_sinc_filter`) whose stopband starts
at the lower of the two Nyquist frequencies and is attenuated by at least 80 dB. Written out for one
output sample n, with t = n*D + delay:

    y[n] = sum_j h[t % U + j*U] * x[t // U - j]

so each output needs only the taps of one polyphase branch (t % U). Outputs n = r, r + U, r + 2U, ...
share a branch and read windows of x that step by D samples, so each branch is one matrix-vector
product over a strided view of x: U products in all, never a Python loop per sample. The same
arithmetic as `scipy.signal.resample_poly(x, U, D, window=h / U)` (ref: scipy/signal/_signaltools.py).

Shapes: T time (samples).
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["resample", "kaiser_sinc_filter", "sinc_resample", "sinc_resample_kernel"]


# ---------------------------------------------------------------------------------------------
# Polyphase resampler

ATTENUATION_DB = 90.0  # design target; the stopband is tested to stay below -80 dB
ROLLOFF = 0.9          # the passband ends at ROLLOFF times the lower Nyquist frequency
BRANCH_LOOP_MAX = 512  # resample(): up to this many polyphase branches, a loop over branches (every usual rate pair)
MAX_TAPS = 1 << 22     # 32 MiB of filter: rates whose ratio reduces to up/down with max(up, down) <= ~20,000


@functools.lru_cache(maxsize=16)
def kaiser_sinc_filter(up: int, down: int, attenuation_db: float = ATTENUATION_DB,
                       rolloff: float = ROLLOFF) -> np.ndarray:  # -> (taps,) float64, read-only
    """The low-pass FIR for resampling by up/down, at the upsampled rate, with DC gain `up`.

    The stopband starts at the lower Nyquist frequency, 1/max(up, down) of the upsampled Nyquist, and
    the transition band is (1 - rolloff) of it wide. Kaiser's formulas pick the window's beta and the
    length for `attenuation_db` (ref: scipy.signal.kaiserord / kaiser_beta, and firwin's windowed sinc).
    The length is odd, so the delay (taps - 1) / 2 is a whole number of samples.
    """
    stop = 1.0 / max(up, down)                                     # in units of the upsampled Nyquist
    width = (1.0 - rolloff) * stop                                  # transition band
    cutoff = stop - width / 2                                       # the -6 dB point
    beta = 0.1102 * (attenuation_db - 8.7)                          # Kaiser: for attenuation > 50 dB
    taps = int(math.ceil((attenuation_db - 7.95) / (2.285 * math.pi * width))) + 1
    taps += 1 - taps % 2                                            # odd length
    if taps > MAX_TAPS:  # its length grows with max(up, down): coprime rates near 10^6 would need ~10^8 taps
        raise ValueError(f"resampling by {up}/{down} needs a {taps}-tap filter, more than {MAX_TAPS}: "
                         "the two sampling rates have too fine a ratio")
    m = np.arange(taps) - (taps - 1) / 2                            # (taps,) offsets from the centre
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(taps, beta)        # (taps,)
    h *= up / h.sum()                                               # each polyphase branch: DC gain ~1
    h.setflags(write=False)
    return h


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:  # (T,) -> (ceil(T*new/orig),) float64
    """Resample a 1-D signal from `orig_rate` to `new_rate` with the polyphase Kaiser-sinc filter.

    Samples outside the signal are zeros. The output has ceil(T * new_rate / orig_rate) samples, and
    output n sits at input time n * orig_rate / new_rate, as scipy.signal.resample_poly's.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample expects a 1-D signal, got shape {x.shape}")
    if int(orig_rate) != orig_rate or int(new_rate) != new_rate or orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sampling rates must be positive integers, got {orig_rate} and {new_rate}")
    g = math.gcd(int(orig_rate), int(new_rate))
    up, down = int(new_rate) // g, int(orig_rate) // g
    if up == down:
        return x.copy()
    return _polyphase(x, kaiser_sinc_filter(up, down), up, down)


def _polyphase(x: np.ndarray, h: np.ndarray, up: int, down: int) -> np.ndarray:  # (T,) -> (T_out,)
    """y[n] = sum_j h[t % up + j*up] * x[t // up - j] with t = n*down + delay, one branch at a time."""
    n_in, delay = x.shape[0], (h.shape[0] - 1) // 2
    n_out = -(-n_in * up // down)
    taps = -(-h.shape[0] // up)                                       # taps per branch
    branches = np.zeros(taps * up)
    branches[:h.shape[0]] = h
    branches = branches.reshape(taps, up).T[:, ::-1]                  # (up, taps): branch p, newest tap last
    last = ((n_out - 1) * down + delay) // up                          # window start of the last output
    right = max(0, last + 1 - n_in)
    padded = np.concatenate([np.zeros(taps - 1), x, np.zeros(right)])  # (taps - 1 + T + right,)
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)   # (., taps): windows[s] ends at x[s]
    y = np.empty(n_out)
    if up > BRANCH_LOOP_MAX:  # many branches, few outputs each: a Python loop over branches would crawl
        # the same sums, a block of outputs at a time: y[n] = windows[t // up] @ branches[t % up], t = n*down + delay
        block = max(1, (1 << 20) // taps)
        branches = np.ascontiguousarray(branches)                      # (up, taps): rows gathered below
        for n0 in range(0, n_out, block):
            t = np.arange(n0, min(n0 + block, n_out), dtype=np.int64) * down + delay  # (block,)
            y[n0:n0 + len(t)] = np.einsum("ij,ij->i", windows[t // up], branches[t % up])  # (block, taps) x2 -> (block,)
        return y
    for r in range(min(up, n_out)):                                    # outputs r, r + up, r + 2*up, ...
        t0 = r * down + delay
        count = len(range(r, n_out, up))
        rows = windows[t0 // up::down][:count]                         # (count, taps), a strided view
        y[r::up] = rows @ branches[t0 % up]                            # (count, taps) @ (taps,) -> (count,)
    return y


# ---------------------------------------------------------------------------------------------
# torchaudio's resampler (Tortoise's load_audio)
#
# ref: torchaudio/functional/functional.py (2.x) _get_sinc_resample_kernel, _apply_sinc_resample_kernel, resample
# with its defaults lowpass_filter_width=6, rolloff=0.99, resampling_method="sinc_interp_hann". With the rates
# reduced by their gcd to o (in) and n (out), output sample y[j*n + c] (phase c of block j) is
#     y[j*n + c] = sum_m kernel[c, m] * xpad[j*o + m],   xpad = [width zeros, x, width + o zeros]
#     kernel[c, m] = sinc(pi t) * cos(pi t / (2 w))^2 * base / o,   t = clamp(((m - width)/o - c/n) * base, -w, w)
# with base = min(o, n) * rolloff, w = lowpass_filter_width, width = ceil(w * o / base); then cut to
# ceil(n * T / o) samples. Computed in the signal's dtype (float32 for Tortoise's tensors), as torch does.


def sinc_resample_kernel(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99,
                         dtype=np.float32):  # -> kernel (n, 2*width + o), width
    """torchaudio's _get_sinc_resample_kernel for rates already reduced by their gcd (orig=o, new=n)."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = np.arange(-width, width + orig, dtype=dtype)[None, :] / dtype(orig)       # (1, K)
    t = np.arange(0, -new, -1, dtype=dtype)[:, None] / dtype(new) + idx              # (n, K)
    t = t * dtype(base)
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width).astype(dtype)
    window = np.cos(t * dtype(math.pi / lowpass_filter_width / 2)) ** 2             # (n, K)
    t = t * dtype(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, dtype(1.0), np.sin(t) / t).astype(dtype)           # (n, K)
    return (kernel * (window * dtype(base / orig))).astype(dtype), width


def sinc_resample(x: np.ndarray, orig_rate: int, new_rate: int, lowpass_filter_width: int = 6,
                  rolloff: float = 0.99) -> np.ndarray:  # (T,) -> (ceil(T * new / orig),) float32
    """torchaudio.functional.resample(x, orig_rate, new_rate) with its defaults (Hann-windowed sinc), in float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"sinc_resample expects a 1-D signal, got shape {x.shape}")
    if int(orig_rate) != orig_rate or int(new_rate) != new_rate or orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sampling rates must be positive integers, got {orig_rate} and {new_rate}")
    if orig_rate == new_rate:
        return x.copy()
    g = math.gcd(int(orig_rate), int(new_rate))
    o, n = int(orig_rate) // g, int(new_rate) // g
    base = min(o, n) * rolloff
    K = 2 * math.ceil(lowpass_filter_width * o / base) + o
    if n * K > MAX_TAPS:  # torchaudio builds it whatever its size: 44,101 Hz -> 22,050 Hz would be 3.9 GB
        raise ValueError(f"resampling from {orig_rate} Hz to {new_rate} Hz needs a {n} x {K} filter kernel, more than "
                         f"{MAX_TAPS} values: the two sampling rates have too fine a ratio")
    kernel, width = sinc_resample_kernel(o, n, lowpass_filter_width, rolloff)         # (n, K)
    padded = np.concatenate([np.zeros(width, np.float32), x, np.zeros(width + o, np.float32)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::o]  # (blocks, K), a view
    y = (windows @ kernel.T).reshape(-1)                                               # (blocks, n) -> (blocks * n,)
    return y[:math.ceil(n * x.shape[0] / o)].astype(np.float32)
