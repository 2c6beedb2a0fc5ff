"""int8 weights (weight-only, Q8_0-style): Q8Matrix, quantize_q8, dequantize_q8, and their safetensors form.

A matrix W of (R, K) float weights is stored as
    q     (R, K) int8            q[r, k] = round(W[r, k] / scale[r, k // 32]), ties to even, in [-127, 127]
    scale (R, K / 32) float32    scale[r, b] = max |W[r, 32 b : 32 b + 32]| / 127 (0 for an all-zero block: q = 0)
and read back as W[r, k] = q[r, k] * scale[r, k // 32] (dequantize_q8): one scale per BLOCK = 32 consecutive
entries along the input dimension K, as ggml's Q8_0. The rows are the output channels: the kernels
(csrc/cpu/kernels/linear_q8.cc) stream q row by row, so a matrix is always stored as (Cout, Cin) and a
transformers Conv1D weight ((Cin, Cout), GPT-2's MLP) is quantized transposed; Q8Matrix.transposed remembers it.

The scales are float32, not Q8_0's float16: they are exact (the reference and the kernels dequantize to the same
bits), cannot underflow (a float16 scale is subnormal below max |w| = 127 * 6.1e-5 = 7.8e-3 and loses precision;
blocks of small-init layers come that low), and cost 4 bytes per 32 weights against 2: 1.125 bytes per weight
instead of 1.0625 (6% more to stream in decode).

K must be a multiple of 32; quantize_q8 refuses anything else (the model leaves such matrices in float: see
pyclvp/model/weights.py int8_targets).

In a safetensors file (pyclvp convert --weights int8) a quantized tensor `name` is stored as `name` (I8, (R, K))
and `name` + SCALE_SUFFIX (F32, (R, K / 32)), the compressed-tensors convention (`weight` + `weight_scale`); the
file's metadata entry METADATA_KEY lists the names stored transposed (Conv1D weights), comma-separated.
"""
from __future__ import annotations

import numpy as np

from .half import to_float32

__all__ = ["BLOCK", "SCALE_SUFFIX", "METADATA_KEY", "Q8Matrix", "quantize_q8", "dequantize_q8", "quantize_matrix"]

BLOCK = 32  # must match csrc/cpu/kernels.h Q8_BLOCK
SCALE_SUFFIX = "_scale"  # must match csrc/bindings/decoder_model.h
METADATA_KEY = "pyclvp.int8_transposed"
_CHUNK = 1 << 20  # weights quantized per NumPy pass: bounds the temporaries, whatever the matrix's size

f32 = np.float32


def quantize_q8(w) -> tuple[np.ndarray, np.ndarray]:  # (R, K) float -> q (R, K) int8, scale (R, K / 32) float32
    """Q8_0 quantization of the rows of w (float32, float16 or a Bf16Array; any strides), in chunks of rows."""
    if np.ndim(w) != 2:
        raise ValueError(f"quantize_q8 needs a matrix, got shape {np.shape(w)}")
    R, K = w.shape
    if K % BLOCK:
        raise ValueError(f"quantize_q8 needs the input dimension to be a multiple of {BLOCK}, got shape {w.shape}")
    q, scale = np.empty((R, K), np.int8), np.empty((R, K // BLOCK), f32)
    rows = max(1, _CHUNK // max(K, 1))
    for r0 in range(0, R, rows):
        blocks = to_float32(w[r0:r0 + rows]).reshape(-1, K // BLOCK, BLOCK)  # (r, K/32, 32)
        amax = np.abs(blocks).max(-1)  # (r, K/32)
        if not np.isfinite(amax).all():
            raise ValueError(f"quantize_q8: rows {r0}..{r0 + len(amax) - 1} hold non-finite weights")
        s = amax / f32(127)  # (r, K/32)
        safe = np.where(s == 0, f32(1), s)[..., None]  # an all-zero block: q = 0 / 1 = 0
        q[r0:r0 + rows] = np.rint(blocks / safe).astype(np.int8).reshape(-1, K)
        scale[r0:r0 + rows] = s
    return q, scale


def dequantize_q8(q, scale) -> np.ndarray:  # (R, K) int8, (R, K / 32) -> (R, K) float32
    R, K = q.shape
    return (q.reshape(R, K // BLOCK, BLOCK).astype(f32) * scale[..., None]).reshape(R, K)  # (R, K/32, 32) -> (R, K)


class Q8Matrix:
    """An int8 matrix: q (R, K) int8 and scale (R, K / 32) float32 as above; transposed: its logical shape
    (the checkpoint's) is (K, R). `.T` flips that, so the model's `ops.linear(x, w.T)` for a Conv1D weight hands
    the backend the (Cout, Cin) = (R, K) matrix the kernels read. np.asarray(m) is the dequantized float32 matrix
    (the reference's view; numpy_ops.linear dequantizes the same way)."""

    __slots__ = ("q", "scale", "transposed")

    def __init__(self, q, scale, transposed: bool = False):
        q, scale = np.asarray(q), np.asarray(scale)
        if q.dtype != np.int8 or q.ndim != 2 or q.shape[1] % BLOCK:
            raise ValueError(f"Q8Matrix: q must be a 2-D int8 array with a multiple of {BLOCK} columns, "
                             f"got {q.dtype} {q.shape}")
        if scale.dtype != f32 or scale.shape != (q.shape[0], q.shape[1] // BLOCK):
            raise ValueError(f"Q8Matrix: scale must be float32 of shape {(q.shape[0], q.shape[1] // BLOCK)}, "
                             f"got {scale.dtype} {scale.shape}")
        self.q, self.scale, self.transposed = q, scale, bool(transposed)

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape[::-1] if self.transposed else self.q.shape

    ndim = 2
    dtype = np.dtype(np.int8)

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes

    @property
    def T(self) -> "Q8Matrix":
        return Q8Matrix(self.q, self.scale, not self.transposed)

    def dequantize(self) -> np.ndarray:  # the logical matrix, float32
        w = dequantize_q8(self.q, self.scale)
        return w.T if self.transposed else w

    def __array__(self, dtype=None, copy=None):
        w = self.dequantize()
        return w if dtype is None else w.astype(dtype)

    def __repr__(self):
        return f"Q8Matrix(shape={self.shape}, transposed={self.transposed})"


def quantize_matrix(w, transposed: bool = False) -> Q8Matrix:
    """A checkpoint matrix as a Q8Matrix of the same logical shape: blocks along its columns (nn.Linear (Cout, Cin)),
    or, transposed=True, along its rows (a Conv1D (Cin, Cout) weight, quantized as its (Cout, Cin) transpose)."""
    return Q8Matrix(*quantize_q8(w.T if transposed else w), transposed)
