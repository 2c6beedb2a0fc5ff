"""Shared test settings: hypothesis profile, the tolerance table, backend/ISA parametrization, assert_close.

Backends and ISAs are parametrized over what exists on this machine; the ones that do not exist
*skip with a reason* (never silently pass). Tolerances live in one table keyed by (backend, dtype).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

DATA = Path(__file__).parent / "data"
MAX_EXAMPLES = int(os.environ.get("PYCLVP_MAX_EXAMPLES", "60"))

settings.register_profile("pyclvp", deadline=None, max_examples=MAX_EXAMPLES)
settings.load_profile("pyclvp")

# (backend, dtype) -> tolerances for assert_close against the NumPy reference / transformers fixtures.
TOLERANCE = {
    ("numpy", "float32"): dict(atol=1e-4, rtol=1e-4),
    ("cpu", "float32"): dict(atol=1e-4, rtol=1e-4),
    ("cuda", "float32"): dict(atol=1e-3, rtol=1e-3),
    ("cuda", "float16"): dict(atol=1e-3, rtol=1e-3),  # as float32: the CUDA kernels widen half weights on load too
    ("cuda", "bfloat16"): dict(atol=1e-3, rtol=1e-3),
    # half-precision *stored* weights, against the reference on the same weights widened to float32
    # (the kernels widen on load and accumulate in float32: only the summation order differs)
    ("cpu", "float16"): dict(atol=1e-4, rtol=1e-4),
    ("cpu", "bfloat16"): dict(atol=1e-4, rtol=1e-4),
}

# The CPU ISAs, named as csrc/cpu/isa.h names them.
ISAS = ("scalar", "avx2", "avx512")


def assert_close(got, want, *, atol=1e-4, rtol=0.0, name="array"):
    """np.testing-style closeness check that names the tensor and prints the first mismatches."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != expected {want.shape}"
    if np.iscomplexobj(got) or np.iscomplexobj(want):
        err = np.abs(got.astype(np.complex128) - want.astype(np.complex128))
    else:
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = atol + rtol * np.abs(want.astype(np.complex128 if np.iscomplexobj(want) else np.float64))
    bad = ~(err <= bound)  # NaN counts as a mismatch
    if bad.any():
        idx = np.argwhere(bad)[:5]
        pairs = ", ".join(f"{tuple(int(i) for i in ix)}: got {got[tuple(ix)]!r} want {want[tuple(ix)]!r}" for ix in idx)
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{bad.size} elements differ; max abs err {np.nanmax(err):.3e} "
            f"(atol={atol}, rtol={rtol}); first: {pairs}"
        )


def backend_params():
    """pytest.param per backend: available ones plain, unavailable ones skipped with the reason."""
    from pyclvp.ops import BACKENDS, get_ops

    params = []
    for name in BACKENDS:
        try:
            get_ops(name)
            params.append(pytest.param(name, id=name))
        except Exception as e:  # not built here, no device, or not written yet
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(reason=f"{name} backend unavailable: {e}")))
    return params


def isa_params():
    """pytest.param per CPU ISA: the ones this CPU and build can run plain, the others skipped with the reason."""
    try:
        from pyclvp import _core

        info = _core.build_info()
    except ImportError as e:
        return [pytest.param(n, id=n, marks=pytest.mark.skip(reason=f"pyclvp._core unavailable: {e}")) for n in ISAS]
    params = []
    for n in ISAS:
        if n in info["isas_supported"]:
            params.append(pytest.param(n, id=n))
        else:
            why = "this CPU lacks it" if n in info["isas_compiled"] else "not compiled for this architecture"
            params.append(pytest.param(n, id=n, marks=pytest.mark.skip(reason=f"ISA {n}: {why}")))
    return params


@pytest.fixture
def data_dir() -> Path:
    return DATA


# ---------------------------------------------------------------------------------------------- tiny models

TINY = ["tiny_a", "tiny_b"]  # the two fixture architectures (tools/ref_common.py: TINY_CONFIGS)
_MODELS = {}


def load_tiny(name, backend="numpy", dtype="float32", folder=None):
    """A model loaded once per (checkpoint, backend, dtype) for the whole session; tests must not mutate it."""
    from pyclvp.model import ClvpModelForConditionalGeneration

    key = (name, backend, dtype, folder)
    if key not in _MODELS:
        _MODELS[key] = ClvpModelForConditionalGeneration.from_pretrained(folder or DATA / name, backend=backend, dtype=dtype)
    return _MODELS[key]


@pytest.fixture(params=TINY)
def name(request):
    return request.param


@pytest.fixture(params=backend_params())
def backend(request):
    return request.param


@pytest.fixture
def model(name, backend):
    return load_tiny(name, backend)
