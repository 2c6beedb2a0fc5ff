"""The backend seam: the model calls `ops.<name>(...)` and never knows which backend it has.

    ops = get_ops("numpy")   # the readable reference (pyclvp/ops/numpy_ops.py)
    ops = get_ops("cpu")     # the C++ core (pyclvp/ops/cpu_ops.py over pyclvp._core)
    ops = get_ops("cuda")    # the CUDA core (pyclvp/ops/cuda_ops.py)

Every backend is an Ops object with the same method names and shapes as numpy_ops. A backend
subclasses NumpyOps and overrides what its core implements, so an op it does not (yet) accelerate
still runs, through the reference. The backend names must match tests/conftest.py.

Besides the ops, every backend declares the same two hooks (NumpyOps gives the reference's answer):
    prepare_weight(name, array, dtype)  the loader's hook (pyclvp/io/checkpoints.py load_weights): what the
                                        model keeps of a tensor read as stored; the reference converts to
                                        float32 or float16, the cores keep half-precision matrices as stored
    make_decoder(params, cfg)           a fused KV-cached decoder with the reference decoder's new_state /
                                        prefill / step and a `picker` (pyclvp/decoding.py), or None: the
                                        model then generates with its reference decoder
"""
from __future__ import annotations

from ..io.checkpoints import convert_weight
from . import numpy_ops

BACKENDS = ("numpy", "cpu", "cuda")


class NumpyOps:
    """The reference backend: every op is the NumPy function of the same name."""

    name = "numpy"
    linear = staticmethod(numpy_ops.linear)
    layer_norm = staticmethod(numpy_ops.layer_norm)
    rms_norm = staticmethod(numpy_ops.rms_norm)
    group_norm = staticmethod(numpy_ops.group_norm)
    gelu_new = staticmethod(numpy_ops.gelu_new)
    gelu = staticmethod(numpy_ops.gelu)
    gated_gelu = staticmethod(numpy_ops.gated_gelu)
    softmax = staticmethod(numpy_ops.softmax)
    rotary = staticmethod(numpy_ops.rotary)
    attention = staticmethod(numpy_ops.attention)
    conv1d = staticmethod(numpy_ops.conv1d)
    conv_transpose1d = staticmethod(numpy_ops.conv_transpose1d)
    leaky_relu = staticmethod(numpy_ops.leaky_relu)
    interpolate_linear = staticmethod(numpy_ops.interpolate_linear)
    prepare_weight = staticmethod(convert_weight)

    @staticmethod
    def make_decoder(params, cfg):
        return None

    def __repr__(self):
        return f"<pyclvp ops backend={self.name!r}>"


def get_ops(backend: str = "numpy"):
    """The Ops object for `backend` ("numpy", "cpu" or "cuda"); a clear error if it is unavailable here."""
    if backend == "numpy":
        return NumpyOps()
    if backend == "cpu":
        from .cpu_ops import CpuOps

        return CpuOps()
    if backend == "cuda":
        from .cuda_ops import CudaOps

        return CudaOps()
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
