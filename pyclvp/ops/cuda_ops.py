"""The "cuda" backend: pyclvp/ops/numpy_ops.py's ops on an NVIDIA GPU, through pyclvp._core.cuda.

CudaOps is CpuOps (pyclvp/ops/cpu_ops.py: the thin adapters, no math) over pyclvp._core.cuda,
whose kernels (csrc/cuda/<family>.cu, bound in csrc/bindings/cuda_ops.cc, which checks every argument)
have the CPU ops' names and arguments. Activations cross to the device and back on every op call.
Weight matrices do not: each is uploaded once, on first use, and kept while its array lives
(_DeviceWeights). Weight arrays are taken as immutable: after an in-place change the device would
keep the old values.

CudaOps() raises CudaUnavailableError (a RuntimeError) saying why when pyclvp._core was built
without CUDA or the CUDA runtime reports no GPU (cudaGetDeviceCount), so get_ops("cuda") fails
with the reason and the tests skip with it.

The model's hooks, as CpuOps has them:
    prepare_weight(name, array, dtype)  CpuOps's own: matrices stay in their storage dtype (float16 /
                                        bfloat16 checkpoints go to the device as such); int8 ones
                                        (weights="int8") are refused with a ValueError saying so
    make_decoder(params, cfg)           CudaDecoder (pyclvp/ops/cuda_decoder.py): the whole decode
                                        step on the device, replayed as one CUDA graph

Convolution weights are not cached: conv1d / conv_transpose1d upload theirs on every call (with x).

Outside the kernels' contract, these run through the NumPy reference: attention with a head dim
above 128 (_core.cuda's limit) or broadcast q/k/v; rotary with per-batch tables; interpolate_linear
(no kernel on any backend); linear_q8 (no CUDA kernel yet: int8 models are refused at load, see prepare_weight).

Shape legend: B batch, T time, S key positions, C hidden, H heads, D head dim, R rotary dim, N rows.
"""
from __future__ import annotations

import weakref

import numpy as np

from .. import _core
from ..io.q8 import Q8Matrix
from . import numpy_ops
from .cpu_ops import CpuOps, _act, _weight

MAX_HEAD_DIM = 128  # csrc/cuda/kernels.h kAttentionMaxD


class CudaUnavailableError(RuntimeError):
    """backend="cuda" was asked for, but this build or this machine cannot run it."""


def cuda_unavailable_reason() -> str | None:
    """None when the CUDA backend can run here, else why it cannot."""
    if not _core.build_info()["cuda_compiled"]:
        return ("pyclvp._core was built without CUDA (PYCLVP_CUDA=AUTO builds it only where nvcc >= 12 and a GPU "
                "were both found; OFF never); rebuild with `PYCLVP_CUDA=ON pip install .`")
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


class CudaOps(CpuOps):
    """The CUDA backend; same method names and shapes as NumpyOps."""

    name = "cuda"
    _max_head_dim = MAX_HEAD_DIM
    _rows = staticmethod(_act)  # attention's operands are uploaded whole: C order

    def __init__(self):
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise CudaUnavailableError(f"backend 'cuda' is unavailable: {reason}")
        self.core = _core.cuda

    linear_q8 = staticmethod(numpy_ops.linear_q8)  # no CUDA kernel yet: the NumPy reference

    @staticmethod
    def prepare_weight(name, array, dtype="float32"):
        """CpuOps's hook, but int8 weights are refused: the CUDA kernels read float matrices only."""
        if isinstance(array, Q8Matrix):
            raise ValueError(f"{name} is int8, and the cuda backend has no int8 kernels: load the model with "
                             f"backend='cpu' for int8 weights, or without weights='int8' (float weights) for cuda")
        return CpuOps.prepare_weight(name, array, dtype)

    def _matrix(self, w):  # the matrix's upload (made on first use)
        return _WEIGHTS.get(_weight(w))

    @staticmethod
    def make_decoder(params, cfg):
        from .cuda_decoder import CudaDecoder

        return CudaDecoder(params, cfg)
