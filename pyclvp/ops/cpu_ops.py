"""The "cpu" backend: pyclvp/ops/numpy_ops.py's ops, run by the C++ core (pyclvp._core).

Thin adapters, no math: each op flattens leading dimensions, makes its arrays float32 and
C-contiguous (weights keep their storage dtype and layout), calls the kernel of the same name
and restores the shape. The kernels are in csrc/cpu/kernels/ (one ISA chosen at run time,
PYCLVP_ISA=scalar|avx2|avx512 forces one); csrc/bindings/ops.cc checks every argument.

The CUDA backend (pyclvp/ops/cuda_ops.py) is this class over another kernel module
(pyclvp._core.cuda, the same names and arguments): `core` is where the kernels come from, and
`_matrix` and `_max_head_dim` are the two places where the backends differ.
interpolate_linear has no kernel: every backend runs the NumPy reference's. Conv weights are
widened to float32 here (the conv kernels take float32 only).

Beyond the reference ops, CpuOps overrides the two hooks every backend declares (pyclvp/ops/__init__.py):

    prepare_weight(name, array, dtype)  the loader's hook: matrices (ndim >= 2) are kept in the
                                        requested storage dtype (float32 / float16 / bfloat16, see
                                        pyclvp/io/half.py), without a copy when the file has it so
                                        (memory-mapped), int8 ones (pyclvp/io/q8.py) as they are;
                                        vectors and scalars become float32.
    make_decoder(params, cfg)           the fused KV-cached decoder (CpuDecoder): one C++ call per
                                        generated token runs every layer, the norms and lm_head.

Shape legend: B batch, T time, S key positions, C hidden, H heads, D head dim, F feed-forward
width, V vocab, L layers, R rotary dim, N flattened rows.
"""
from __future__ import annotations

import os
import warnings
import weakref

import numpy as np

from .. import _core
from ..io.half import Bf16Array, to_dtype, to_float32
from ..io.q8 import Q8Matrix
from . import numpy_ops
from .numpy_ops import NumpyOps
from .state import CACHE_DTYPES

f32 = np.float32


def _act(x):  # activations: float32, C order
    return to_float32(x) if isinstance(x, Bf16Array) else np.ascontiguousarray(x, dtype=f32)


def _vec(p):  # small parameters (norm weights, biases): float32, C order
    return None if p is None else np.ascontiguousarray(to_float32(p))


def _slope(s):  # a fused leaky_relu's slope: None (no activation) or a float
    return None if s is None else float(s)


def _conv_weight(w):  # a conv weight (Cout, Cin, K) / (Cin, Cout, K): float32, C order (kernels take f32 only)
    return np.ascontiguousarray(to_float32(w)) if isinstance(w, (np.ndarray, Bf16Array)) else w


# conv_transpose1d's packed weights (csrc/bindings/ops.cc pack_conv_transpose1d: the weight in the kernel's stride-phase
# tiles), made once per weight array instead of on every call. The rule: weights are immutable. An entry is keyed
# on the array object itself (id, checked through a weak reference, and dropped when the array is collected) and
# checked against its data pointer, shape, strides and dtype, the conv's stride / padding / dilation and the active
# ISA; an array modified in place after its first use would keep its stale packing (pass a copy instead).
_PACKED = {}  # id(w) -> (weakref to w, {(data pointer, shape, strides, dtype, stride, padding, dilation, isa): packed})


def _packed_conv_transpose(core, w, wf, stride, padding, dilation):  # -> (16 + n,) f32 or None (pack per call)
    pack = getattr(core, "pack_conv_transpose1d", None)
    if pack is None or not isinstance(w, np.ndarray) or wf.ndim != 3:
        return None
    ai = w.__array_interface__
    sig = (ai["data"][0], w.shape, w.strides, w.dtype.str, stride, padding, dilation, core.get_isa())
    key = id(w)
    entry = _PACKED.get(key)
    if entry is None or entry[0]() is not w:
        try:
            ref = weakref.ref(w, lambda _, key=key: _PACKED.pop(key, None))
        except TypeError:  # not weak-referenceable: no cache
            return None
        entry = _PACKED[key] = (ref, {})
    packed = entry[1].get(sig)
    if packed is None:
        packed = entry[1][sig] = pack(wf, stride, padding, dilation)
    return packed


def _weight(w):  # a (Cout, Cin) matrix as stored: f32 / f16 / uint16 bfloat16 bits, C or Fortran order
    if isinstance(w, Bf16Array):
        w = w.view(np.ndarray)
    elif w.dtype not in (np.float32, np.float16):
        w = np.asarray(w, dtype=f32)
    if not (w.flags.c_contiguous or w.flags.f_contiguous):
        w = np.ascontiguousarray(w)
    return w


class CpuOps(NumpyOps):
    """The C++ CPU backend; same method names and shapes as NumpyOps."""

    name = "cpu"
    core = _core  # the kernels: pyclvp._core's ops (csrc/bindings/ops.cc)
    _max_head_dim = None  # attention's head-dim limit, if the kernels have one

    def __init__(self):
        want = os.environ.get("PYCLVP_ISA")
        if want and want != _core.get_isa():  # csrc/cpu/isa.cc falls back to the best usable ISA
            info = _core.build_info()
            warnings.warn(f"PYCLVP_ISA={want!r} is not usable here (usable: {', '.join(info['isas_supported'])}); "
                          f"the CPU kernels run {_core.get_isa()!r}", RuntimeWarning, stacklevel=2)

    def _matrix(self, w):  # a weight matrix as the kernels take it: the host array as stored
        return _weight(w)

    # ------------------------------------------------------------------------------------------
    # Dense layers and normalizations

    def linear(self, x, w, b=None):  # (..., Cin), (Cout, Cin), (Cout,) -> (..., Cout)
        if isinstance(w, Q8Matrix):  # int8: the kernels read (Cout, Cin) blocks; a transposed one is outside them
            return numpy_ops.linear(x, w, b) if w.transposed else self.linear_q8(x, w.q, w.scale, b)
        x = _act(x)
        y = self.core.linear(x.reshape(-1, x.shape[-1]), self._matrix(w), _vec(b))  # (N, Cin) -> (N, Cout)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def linear_q8(self, x, q, scale, b=None):  # (..., Cin), (Cout, Cin) int8, (Cout, Cin/32), (Cout,) -> (..., Cout)
        x = _act(x)
        y = self.core.linear_q8(x.reshape(-1, x.shape[-1]), q, scale, _vec(b))  # (N, Cin) -> (N, Cout)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def layer_norm(self, x, g, b, eps):  # (..., C) -> (..., C)
        x = _act(x)
        return self.core.layer_norm(x.reshape(-1, x.shape[-1]), _vec(g), _vec(b), float(eps)).reshape(x.shape)

    def rms_norm(self, x, g, eps, clamp=False):  # (..., C) -> (..., C)
        x = _act(x)
        return self.core.rms_norm(x.reshape(-1, x.shape[-1]), _vec(g), float(eps), bool(clamp)).reshape(x.shape)

    def group_norm(self, x, g, b, groups, eps):  # (B, C, T) -> (B, C, T)
        return self.core.group_norm(_act(x), _vec(g), _vec(b), int(groups), float(eps))

    def group_norm_silu(self, x, g, b, groups, eps):  # (B, C, T) -> (B, C, T): silu(group_norm(x)) in one pass
        return self.core.group_norm(_act(x), _vec(g), _vec(b), int(groups), float(eps), True)

    # ------------------------------------------------------------------------------------------
    # Activations

    def gelu_new(self, x):  # (...) -> (...)
        return self.core.gelu_new(_act(x))

    def gelu(self, x):  # (...) -> (...)
        return self.core.gelu(_act(x))

    def silu(self, x):  # (...) -> (...)
        return self.core.silu(_act(x))

    def gated_gelu(self, x):  # (..., 2F) -> (..., F)
        x = _act(x)
        y = self.core.gated_gelu(x.reshape(-1, x.shape[-1]))  # (N, 2F) -> (N, F)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def softmax(self, x, axis=-1):  # (...) -> (...)
        x = np.moveaxis(_act(x), axis, -1)
        y = self.core.softmax(np.ascontiguousarray(x).reshape(-1, x.shape[-1])).reshape(x.shape)
        return np.moveaxis(y, -1, axis)

    # ------------------------------------------------------------------------------------------
    # Attention

    def rotary(self, x, cos, sin):  # (B, H, T, D), (T, R), (T, R) -> (B, H, T, D)
        x = _act(x)
        T, D = x.shape[-2:]
        cos, sin = _act(cos), _act(sin)
        if cos.shape != sin.shape or cos.size != T * cos.shape[-1] or x.ndim < 2:
            return numpy_ops.rotary(x, cos, sin)  # a per-batch table: the reference handles any broadcast
        R = cos.shape[-1]
        y = self.core.rotary(x.reshape(-1, T, D), cos.reshape(T, R), sin.reshape(T, R))  # (B*H, T, D)
        return y.reshape(x.shape)

    def attention(self, q, k, v, mask=None, scale=1.0):  # (B,H,T,D), (B,H,S,D), (B,H,S,D), (B|1,H|1,T|1,S) -> (B,H,T,D)
        q, k, v = self._rows(q), self._rows(k), self._rows(v)
        if (q.ndim != 4 or k.shape != v.shape or k.shape[:2] != q.shape[:2]
                or (self._max_head_dim and q.shape[-1] > self._max_head_dim)):
            return numpy_ops.attention(q, k, v, mask, scale)  # broadcast q/k/v, a big head: outside the contract
        if mask is not None:
            mask = self._rows(mask)
            B, H, T, _ = q.shape
            S = k.shape[2]
            mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)  # (..., T|1, S) -> (B|1, H|1, T|1, S)
            if mask.shape[0] not in (1, B) or mask.shape[1] not in (1, H) or mask.shape[2] not in (1, T):
                mask = np.ascontiguousarray(np.broadcast_to(mask, (B, H, T, S)))
        return self.core.attention(q, k, v, mask, float(scale))

    # ------------------------------------------------------------------------------------------
    # Convolutions (B, C, T); conv weights (3-D) are widened to float32 here, whatever the model's dtype

    @staticmethod
    def _rows(x):  # attention's operands: any float32 view with contiguous rows is passed as it is (by its strides)
        x = np.asarray(to_float32(x) if isinstance(x, Bf16Array) else x)
        if x.dtype == f32 and x.ndim and (x.shape[-1] <= 1 or x.strides[-1] == 4) and all(s % 4 == 0 for s in x.strides):
            return x
        return _act(x)

    def conv1d(self, x, w, b=None, stride=1, padding=0, dilation=1, leaky_slope=None, residual=None):
        # (B, Cin, T), (Cout, Cin, K) -> (B, Cout, To)
        return self.core.conv1d(_act(x), _conv_weight(w), _vec(b), int(stride), int(padding), int(dilation),
                                _slope(leaky_slope), None if residual is None else _act(residual))

    def conv_transpose1d(self, x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, leaky_slope=None):
        # (B, Cin, T), (Cin, Cout, K) -> (B, Cout, To)
        stride, padding, dilation = int(stride), int(padding), int(dilation)
        wf = _conv_weight(w)
        packed = _packed_conv_transpose(self.core, w, wf, stride, padding, dilation)
        args = (_act(x), wf, _vec(b), stride, padding, int(output_padding), dilation, _slope(leaky_slope))
        return self.core.conv_transpose1d(*args) if packed is None else self.core.conv_transpose1d(*args, packed)

    def leaky_relu(self, x, slope=0.01):  # (...) -> (...)
        return self.core.leaky_relu(_act(x), float(slope))

    def location_variable_conv(self, x, kernels, bias, hop):
        # (B, Cin, T), (B, Cin, Cout, K, L), (B, Cout, L) -> (B, Cout, T), T = L * hop
        return self.core.location_variable_conv(_act(x), _act(kernels), _act(bias), int(hop))

    # ------------------------------------------------------------------------------------------
    # Hooks for the model

    @staticmethod
    def prepare_weight(name, array, dtype="float32"):
        """The loader's hook: the array to keep for checkpoint tensor `name` when the model runs in `dtype`.

        Matrices (ndim >= 2: linear/Conv1D weights, embedding tables) are stored in `dtype`; bfloat16
        ones are Bf16Array (pyclvp/io/half.py). Without a conversion this returns the array itself,
        so a memory-mapped tensor stays memory-mapped. Vectors and scalars become float32. int8 matrices
        (Q8Matrix, pyclvp/io/q8.py) are kept as they are: linear runs them on the int8 kernels.
        """
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} for {name}; choose one of {', '.join(CACHE_DTYPES)}")
        if isinstance(array, Q8Matrix):
            return array
        return to_dtype(array, dtype) if np.ndim(array) >= 2 else to_float32(array)

    @staticmethod
    def make_decoder(params, cfg):
        from .cpu_decoder import CpuDecoder

        return CpuDecoder(params, cfg)
