"""The KV-cache state of the speech-token decoder, and the checks of what every backend's decoder takes.

Shape legend: L layers, B rows, H heads, S cache slots, D head dim, P prompt positions, C hidden.

The cache layout (L, B, H, S, D) is shared by the NumPy reference decoder (pyclvp/model/decoder.py), the
C++ session (csrc/cpu/decoder_step.h) and the CUDA one (csrc/cuda/decoder_step.h): slot s of a row holds
the key/value of the position written s-th, and key_mask (B, S) says which slots may be attended to.
k and v are float32, float16, or bfloat16 (a Bf16Array of uint16 bits: rounded to nearest even when
stored, widened when read); see pyclvp/io/half.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import check_choice, check_count, keep_mask
from ..io.half import DTYPES as CACHE_DTYPES
from ..io.half import as_bf16

__all__ = ["CACHE_DTYPES", "DecoderState", "empty_state", "check_cache_dtype", "select_rows", "prefill_inputs",
           "step_inputs"]

_CACHE_STORAGE = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}  # bfloat16: its bits


@dataclass
class DecoderState:
    """The preallocated KV cache of a batch of rows (llama2.c's RunState, batched)."""

    k: np.ndarray  # (L, B, H, S, D) float32 | float16 | Bf16Array: keys of every layer; slot s holds position s
    v: np.ndarray  # (L, B, H, S, D) values, same layout and dtype
    key_mask: np.ndarray  # (B, S) bool: True where slot s holds a valid, attendable key
    length: int  # slots filled so far, the same for every row
    latents: np.ndarray | None = None  # (B, C) the last call's final-normed last positions (the NumPy decoder's)

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def select(self, rows) -> "DecoderState":
        """A new state holding rows `rows` of this one, in that order (copies: repeat, reorder, drop)."""
        rows = select_rows(rows, self.batch)
        return DecoderState(_take_rows(self.k, rows, self.length), _take_rows(self.v, rows, self.length),
                            self.key_mask[rows], self.length)


def _take_rows(cache, rows, n):  # (L, B, H, S, D), (B',) -> (L, B', H, S, D), C-contiguous
    """Rows `rows` of a cache: only the n filled slots are copied, the others are left zero. (Fancy indexing
    copied every slot into a strided array that the cores then copied again: 2 s of the 16-candidate job.)"""
    src = cache.view(np.ndarray)  # a Bf16Array's bits
    out = np.zeros(src.shape[:1] + (len(rows),) + src.shape[2:], src.dtype)
    for i, r in enumerate(rows):
        out[:, i, :, :n] = src[:, r, :, :n]
    return out.view(type(cache))


def empty_state(cfg, batch: int, max_len: int, cache_dtype: str = "float32") -> DecoderState:
    """An empty cache of `batch` rows x `max_len` slots, k and v in cache_dtype (every host backend's new_state)."""
    check_cache_dtype(cache_dtype)
    check_count("new_state's batch", batch)
    check_count("new_state's max_len", max_len)
    shape = (cfg.num_hidden_layers, batch, cfg.num_attention_heads, max_len, cfg.head_dim)  # (L, B, H, S, D)

    def zeros():
        z = np.zeros(shape, _CACHE_STORAGE[cache_dtype])
        return as_bf16(z) if cache_dtype == "bfloat16" else z

    return DecoderState(k=zeros(), v=zeros(), key_mask=np.zeros((batch, max_len), bool), length=0)


def check_cache_dtype(cache_dtype) -> str:
    return check_choice("cache dtype", cache_dtype, CACHE_DTYPES)


def select_rows(rows, batch: int) -> np.ndarray:  # -> (B',) int64, for every backend's select()
    """Row indices: a 1-D integer sequence with values in [0, batch) (not booleans: a mask is not rows)."""
    r = np.asarray(rows)
    if r.ndim != 1 or not (np.issubdtype(r.dtype, np.integer) or r.size == 0):
        raise ValueError(f"select needs a 1-D sequence of row indices, got {r.dtype} {r.shape}")
    if r.size and (r.min() < 0 or r.max() >= batch):
        raise ValueError(f"select rows must lie in [0, {batch}); got values from {r.min()} to {r.max()}")
    return np.ascontiguousarray(r, dtype=np.int64)


def prefill_inputs(inputs_embeds, attention_mask, batch: int, hidden: int):  # -> (B, P, C) f32, (B, P) bool | None
    """A prefill's embeddings, finite floats of shape (batch, P >= 1, hidden), and its mask of 0/1 (B, P) or None,
    for every backend's prefill(); returned C-contiguous, float32 and bool, as the cores take them."""
    x = np.asarray(inputs_embeds)
    if x.ndim != 3 or x.shape[0] != batch or x.shape[1] < 1 or x.shape[2] != hidden:
        raise ValueError(f"prefill needs inputs_embeds of shape ({batch}, P >= 1, {hidden}) for a state of {batch} "
                         f"rows, got {x.shape}")
    if x.dtype.kind != "f" or not np.isfinite(x).all():
        raise ValueError(f"inputs_embeds must be finite floating-point values, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x, None if attention_mask is None else keep_mask(attention_mask, x.shape[:2], "inputs_embeds")


def step_inputs(input_ids, position_ids, batch: int):  # -> (B,) int64, (B,) int64, for every backend's step()
    """A step's token ids and mel positions: integers of shape (batch,), or one value for every row."""
    out = []
    for name, x in (("input_ids", input_ids), ("position_ids", position_ids)):
        a = np.asarray(x)
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be integers, got dtype {a.dtype}")
        if a.ndim > 1 or a.size not in (1, batch):
            raise ValueError(f"step needs {name} of shape ({batch},) for a state of {batch} rows, got {a.shape}")
        out.append(np.ascontiguousarray(np.broadcast_to(a.reshape(-1), (batch,)), dtype=np.int64))
    return out
