"""The small input checks every public entry point shares, each written once with one wording.

A check returns the value in the form the code after it takes (int64 ids, a bool mask, ...) or raises
ValueError (TypeError for a value of the wrong kind altogether) naming the argument, what it must be,
and what it was. Inner functions trust what these returned.
"""
from __future__ import annotations

import numpy as np

__all__ = ["is_int", "is_real", "check_count", "check_choice", "check_index", "as_ids", "keep_mask"]


def is_int(x) -> bool:
    """An integer (Python or NumPy), and not a bool (True is an int to Python, never a count to a user)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_real(x) -> bool:
    """A real number (Python or NumPy int or float), and not a bool."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def check_count(name: str, value, least: int = 1) -> int:
    """An integer >= least, as a Python int."""
    if not is_int(value) or value < least:
        what = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_choice(name: str, value, choices) -> str:
    """One of `choices` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def check_index(name: str, idx: np.ndarray, size: int, what: str) -> np.ndarray:
    """Integer indices in [0, size); `what` names the table they index (e.g. "vocab_size")."""
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise ValueError(f"{name} must lie in [0, {size}) ({what}); got values from {idx.min()} to {idx.max()}")
    return idx


def as_ids(x, name: str, vocab: int, what: str) -> np.ndarray:  # -> (B, T) int64
    """A non-empty (batch, length) array of token ids in [0, vocab) (a 1-D one is a batch of one)."""
    try:
        ids = np.asarray(x)
    except ValueError:  # ragged nested lists
        raise ValueError(f"{name} must be a (batch, length) array of token ids; rows of different lengths "
                         "need padding and an attention_mask") from None
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (batch, length) array of token ids, got shape {ids.shape}")
    return check_index(name, ids, vocab, what).astype(np.int64)


def keep_mask(attention_mask, shape, of: str) -> np.ndarray:  # -> (B, T) bool, C-contiguous
    """A 0/1 attention mask (bool, int or float values) of the (B, T) `shape` of the array named `of`;
    a (T,) mask is taken as (1, T)."""
    m = np.asarray(attention_mask)
    if m.ndim == 1:
        m = m[None]
    if m.shape != tuple(shape):
        raise ValueError(f"attention_mask has shape {m.shape}, {of} {tuple(shape)}; they must match")
    if m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
        raise ValueError("attention_mask must hold only 0 and 1 (1: keep the position)")
    return np.ascontiguousarray(m, dtype=bool)
