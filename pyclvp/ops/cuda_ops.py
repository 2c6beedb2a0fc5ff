"""The "cuda" backend: pyclvp/ops/numpy_ops.py's ops on an NVIDIA GPU, through pyclvp._core.cuda.

Thin adapters, no math, shaped like pyclvp/ops/cpu_ops.py (whose argument helpers they share): each
op flattens leading dimensions, makes its arrays float32 and C-contiguous, calls the kernel of the
same name (csrc/cuda/<family>.cu, bound in csrc/bindings/cuda.cc, which checks every argument) and
restores the shape. Activations cross to the device and back on every op call. Weight matrices do
not: each is uploaded once, on first use, and kept while its array lives (_DeviceWeights). Weight
arrays are taken as immutable: after an in-place change the device would keep the old values.

CudaOps() raises CudaUnavailableError (a RuntimeError) saying why when pyclvp._core was built
without CUDA or the CUDA runtime reports no GPU (cudaGetDeviceCount), so get_ops("cuda") fails
with the reason and the tests skip with it.

The model's hooks, as CpuOps has them:
    prepare_weight(name, array, dtype)  CpuOps's: matrices stay in their storage dtype (float16 /
                                        bfloat16 checkpoints go to the device as such)
    make_decoder(params, cfg)           CudaDecoder (pyclvp/ops/cuda_decoder.py): the whole decode
                                        step on the device, replayed as one CUDA graph

Outside the kernels' contract, these run through the NumPy reference: attention with a head dim
above 128 (_core.cuda's limit), broadcast q/k/v or a per-head mask; rotary with per-batch tables.

Shape legend: B batch, T time, S key positions, C hidden, H heads, D head dim, R rotary dim, N rows.
"""
from __future__ import annotations

import weakref

import numpy as np

from .. import _core
from . import NumpyOps, numpy_ops
from .cpu_ops import CpuOps, _act, _vec, _weight

MAX_HEAD_DIM = 128  # csrc/cuda/kernels.h kAttentionMaxD


class CudaUnavailableError(RuntimeError):
    """backend="cuda" was asked for, but this build or this machine cannot run it."""


def cuda_unavailable_reason() -> str | None:
    """None when the CUDA backend can run here, else why it cannot."""
    if not _core.build_info()["cuda_compiled"]:
        return ("pyclvp._core was built without CUDA (nvcc was not found at build time, or PYCLVP_CUDA=OFF); "
                "rebuild with nvcc on PATH, or with PYCLVP_CUDA=ON to make a missing nvcc an error")
    if _core.cuda_device_count() < 1:
        return ("pyclvp._core was built with CUDA, but the CUDA runtime reports no GPU "
                "(no device, no driver, or CUDA_VISIBLE_DEVICES hides them)")
    return None


def _owner(a: np.ndarray) -> np.ndarray:
    """The array that owns a's memory (a itself, or the base its views lead to)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class _DeviceWeights:
    """Weight matrix -> its _core.cuda.Weight, uploaded on first use, dropped when the owning array dies.

    The key is the matrix's address, shape, strides and dtype, so every view of one stored matrix
    (w, or w.T for a Conv1D weight, made afresh by each call) finds the same upload; a weak reference
    to the owning array tells a live entry from a stale one.
    """

    def __init__(self):
        self._entries = {}  # key -> (weakref to the owning array, Weight)

    def get(self, w: np.ndarray):
        owner = _owner(w)
        key = (w.__array_interface__["data"][0], w.shape, w.strides, w.dtype.str)
        hit = self._entries.get(key)
        if hit is not None and hit[0]() is owner:
            return hit[1]
        weight = _core.cuda.Weight(w)
        ref = weakref.ref(owner, lambda r, key=key: self._drop(key, r))
        self._entries[key] = (ref, weight)
        return weight

    def _drop(self, key, ref):
        if self._entries.get(key, (None,))[0] is ref:
            del self._entries[key]

    def __len__(self):
        return len(self._entries)


_WEIGHTS = _DeviceWeights()


class CudaOps(NumpyOps):
    """The CUDA backend; same method names and shapes as NumpyOps."""

    name = "cuda"

    def __init__(self):
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise CudaUnavailableError(f"backend 'cuda' is unavailable: {reason}")

    # ------------------------------------------------------------------------------------------
    # Dense layers and normalizations

    @staticmethod
    def linear(x, w, b=None):  # (..., Cin), (Cout, Cin), (Cout,) -> (..., Cout)
        x = _act(x)
        y = _core.cuda.linear(x.reshape(-1, x.shape[-1]), _WEIGHTS.get(_weight(w)), _vec(b))  # (N, Cout)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def layer_norm(x, g, b, eps):  # (..., C) -> (..., C)
        x = _act(x)
        return _core.cuda.layer_norm(x.reshape(-1, x.shape[-1]), _vec(g), _vec(b), float(eps)).reshape(x.shape)

    @staticmethod
    def rms_norm(x, g, eps):  # (..., C) -> (..., C)
        x = _act(x)
        return _core.cuda.rms_norm(x.reshape(-1, x.shape[-1]), _vec(g), float(eps)).reshape(x.shape)

    @staticmethod
    def group_norm(x, g, b, groups, eps):  # (B, C, T) -> (B, C, T)
        return _core.cuda.group_norm(_act(x), _vec(g), _vec(b), int(groups), float(eps))

    # ------------------------------------------------------------------------------------------
    # Activations

    @staticmethod
    def gelu_new(x):  # (...) -> (...)
        return _core.cuda.gelu_new(_act(x))

    @staticmethod
    def gelu(x):  # (...) -> (...)
        return _core.cuda.gelu(_act(x))

    @staticmethod
    def gated_gelu(x):  # (..., 2F) -> (..., F)
        x = _act(x)
        y = _core.cuda.gated_gelu(x.reshape(-1, x.shape[-1]))  # (N, 2F) -> (N, F)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def softmax(x, axis=-1):  # (...) -> (...)
        x = np.moveaxis(_act(x), axis, -1)
        y = _core.cuda.softmax(np.ascontiguousarray(x).reshape(-1, x.shape[-1])).reshape(x.shape)
        return np.moveaxis(y, -1, axis)

    # ------------------------------------------------------------------------------------------
    # Attention

    @staticmethod
    def rotary(x, cos, sin):  # (B, H, T, D), (T, R), (T, R) -> (B, H, T, D)
        x = _act(x)
        T, D = x.shape[-2:]
        cos, sin = _act(cos), _act(sin)
        if cos.shape != sin.shape or cos.size != T * cos.shape[-1] or x.ndim < 2:
            return numpy_ops.rotary(x, cos, sin)  # a per-batch table: the reference handles any broadcast
        R = cos.shape[-1]
        y = _core.cuda.rotary(x.reshape(-1, T, D), cos.reshape(T, R), sin.reshape(T, R))  # (B*H, T, D)
        return y.reshape(x.shape)

    @staticmethod
    def attention(q, k, v, mask=None, scale=1.0):  # (B,H,T,D), (B,H,S,D), (B,H,S,D), (B,1,T,S) -> (B,H,T,D)
        q, k, v = _act(q), _act(k), _act(v)
        if q.ndim != 4 or k.shape != v.shape or k.shape[:2] != q.shape[:2] or q.shape[-1] > MAX_HEAD_DIM:
            return numpy_ops.attention(q, k, v, mask, scale)  # outside the kernel's contract
        if mask is not None:
            mask = _act(mask)
            B, _, T, _ = q.shape
            S = k.shape[2]
            mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)  # (..., T|1, S) -> (B|1, H|1, T|1, S)
            if mask.shape[1] != 1:
                return numpy_ops.attention(q, k, v, mask, scale)  # a per-head mask
            if mask.shape[0] not in (1, B) or mask.shape[2] not in (1, T):
                mask = np.ascontiguousarray(np.broadcast_to(mask, (B, 1, T, S)))
        return _core.cuda.attention(q, k, v, mask, float(scale))

    # ------------------------------------------------------------------------------------------
    # Hooks for the model

    prepare_weight = staticmethod(CpuOps.prepare_weight)

    @staticmethod
    def make_decoder(params, cfg):
        from .cuda_decoder import CudaDecoder

        return CudaDecoder(params, cfg)
