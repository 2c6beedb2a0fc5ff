"""The backend seam: the model calls `ops.<name>(...)` and never knows which backend it has.

    ops = get_ops("numpy")   # the readable reference (pyclvp/ops/numpy_ops.py)
    ops = get_ops("cpu")     # the C++ core (pyclvp/ops/cpu_ops.py over pyclvp._core)
    ops = get_ops("cuda")    # the CUDA core (pyclvp/ops/cuda_ops.py)
    ops = get_ops("auto")    # the fastest that runs here: cuda, else cpu, else numpy (resolve_backend)

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

from .numpy_ops import NumpyOps

BACKENDS = ("numpy", "cpu", "cuda")
BACKEND_CHOICES = ("auto", *BACKENDS)  # what get_ops and from_pretrained accept (pyclvp/cli.py lists the same)


def resolve_backend(backend: str = "auto") -> str:
    """The backend's name, with "auto" resolved (the one place it is): "cuda" when the CUDA backend can run
    here (built with CUDA and a GPU visible), else "cpu" when the C++ core imports, else "numpy"."""
    if backend != "auto":
        return backend
    try:
        from .cuda_ops import cuda_unavailable_reason
    except ImportError:  # no pyclvp._core at all: the reference is all there is
        return "numpy"
    return "cuda" if cuda_unavailable_reason() is None else "cpu"


def get_ops(backend: str = "numpy"):
    """The Ops object for `backend` ("auto", "numpy", "cpu" or "cuda"); a clear error if it is unavailable here."""
    backend = resolve_backend(backend)
    if backend == "numpy":
        return NumpyOps()
    if backend == "cpu":
        from .cpu_ops import CpuOps

        return CpuOps()
    if backend == "cuda":
        from .cuda_ops import CudaOps

        return CudaOps()
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
