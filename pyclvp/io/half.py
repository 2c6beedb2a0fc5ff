"""Half-precision weights in NumPy: float16 is np.float16; bfloat16 is a Bf16Array of uint16 bits.

NumPy has no bfloat16. A bfloat16 number is the top 16 bits of a float32, and safetensors stores
BF16 tensors as exactly those bits, so pyclvp keeps them as uint16 (pyclvp/io/safetensors.py with
bf16="raw" returns them, memory-mapped, without a copy) and marks them with a subclass:

    Bf16Array   an ndarray of dtype uint16 holding bfloat16 bits. Views (slicing, .T, reshape,
                indexing) stay Bf16Array. NumPy arithmetic on it (ufuncs such as + and @, and
                np functions other than the layout ones) and .astype(float) see the float32 *values*
                (the exact widening), so reference code runs unchanged on it, only slower.
                The C++ kernels read the bits directly (pyclvp/ops/cpu_ops.py passes them as uint16).

np.asarray(b) drops the marker and returns the raw bits: call to_float32(b) for the values.
The bit layout is the one of csrc/common/half.h (bf16_t) and pyclvp/io/safetensors.py bfloat16_to_float32.
"""
from __future__ import annotations

import numpy as np

from .safetensors import bfloat16_to_float32, float32_to_bfloat16

__all__ = ["Bf16Array", "as_bf16", "to_float32", "to_dtype", "DTYPES"]

DTYPES = ("float32", "float16", "bfloat16")

# np functions that only move or select elements: on a Bf16Array they keep the bits (and the marker).
_LAYOUT = {np.concatenate, np.stack, np.reshape, np.transpose, np.moveaxis, np.swapaxes, np.squeeze,
           np.expand_dims, np.take, np.split, np.array_split, np.broadcast_to, np.ascontiguousarray,
           np.copy, np.atleast_1d, np.atleast_2d, np.atleast_3d, np.ravel, np.shape, np.ndim, np.size}


class Bf16Array(np.ndarray):
    """bfloat16 values held as their uint16 bits; arithmetic widens to float32 (see the module doc)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(isinstance(o, Bf16Array) for o in kwargs.get("out", ())):
            raise TypeError("cannot write a NumPy result into a Bf16Array; use float32_to_bfloat16")
        inputs = tuple(to_float32(x) if isinstance(x, Bf16Array) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if func in _LAYOUT:
            return super().__array_function__(func, types, args, kwargs)
        return func(*_widen(args), **_widen(kwargs))

    def astype(self, dtype, *args, **kwargs):
        if np.dtype(dtype).kind in "fc":
            return to_float32(self).astype(dtype, *args, **kwargs)
        return np.asarray(self).astype(dtype, *args, **kwargs)

    def __repr__(self):
        return f"Bf16Array({to_float32(self)!r})"


def _widen(obj):
    if isinstance(obj, Bf16Array):
        return to_float32(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_widen(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _widen(v) for k, v in obj.items()}
    return obj


def as_bf16(bits: np.ndarray) -> Bf16Array:
    """uint16 bfloat16 bits (e.g. safetensors with bf16="raw") -> Bf16Array view, no copy."""
    bits = np.asarray(bits)
    if bits.dtype != np.uint16:
        raise TypeError(f"as_bf16 expects uint16 bits, got {bits.dtype}")
    return bits.view(Bf16Array)


def to_float32(a) -> np.ndarray:
    """The float32 values of a float array or a Bf16Array (no copy when it is float32 already)."""
    if isinstance(a, Bf16Array):
        return bfloat16_to_float32(a.view(np.ndarray))
    return np.asarray(a, dtype=np.float32)


def to_dtype(a, dtype: str):
    """a in storage dtype "float32" | "float16" | "bfloat16" (no copy when it is stored so already)."""
    if dtype == "float32":
        return to_float32(a)
    if dtype == "float16":
        return a if isinstance(a, np.ndarray) and a.dtype == np.float16 and not isinstance(a, Bf16Array) \
            else to_float32(a).astype(np.float16)
    if dtype == "bfloat16":
        return a if isinstance(a, Bf16Array) else as_bf16(float32_to_bfloat16(to_float32(a)))
    raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
