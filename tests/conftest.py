"""Shared test settings: hypothesis profile, the tolerance table, backend/ISA parametrization, assert_close.

Backends and ISAs are parametrized over what exists on this machine; the ones that do not exist
*skip with a reason* (never silently pass). Tolerances live in one table keyed by (backend, dtype).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
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


# ---------------------------------------------------------------------------------------------- shared helpers

MASK_MIN = np.finfo(np.float32).min
# The half KV cache rounds every key and value (bfloat16: 8 significant bits, float16: 11); the measured
# max |logit error| on the fixtures is 2.7e-3 (bfloat16) and 4e-4 (float16), for logits up to ~2.6.
CACHE_ATOL = {"float16": 2e-3, "bfloat16": 1e-2}


@contextmanager
def using(isa):
    """Run the CPU kernels on `isa` inside the block (pyclvp._core.set_isa), then restore."""
    from pyclvp import _core

    before = _core.get_isa()
    _core.set_isa(isa)
    try:
        yield
    finally:
        _core.set_isa(before)


def rand(rng, *shape, scale=1.0):  # float32 normal values
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def attention_mask(rng, kind, B, T, S):  # an additive attention mask of one kind, or None
    if kind == "none":
        return None
    if kind == "padding":  # (B, 1, 1, S): some keys of each row dropped
        return np.where(rng.random((B, 1, 1, S)) < 0.3, MASK_MIN, 0).astype(np.float32)
    if kind == "causal":  # (1, 1, T, S), the last query sees every key
        keep = np.tril(np.ones((T, S), bool), k=S - T)
        return np.where(keep, 0, MASK_MIN).astype(np.float32)[None, None]
    if kind == "all_dropped":  # every key of row 0 dropped: the reference averages them uniformly
        m = np.zeros((B, 1, T, S), np.float32)
        m[0] = MASK_MIN
        return m
    return rand(rng, B, 1, T, S)  # "additive": arbitrary float biases


def rotary_tables(T, R):  # cos, sin (T, R) as the encoders build them
    inv = 1.0 / 10000 ** (np.arange(0, R, 2) / R)
    ang = np.arange(T)[:, None] * inv[None]
    ang = np.concatenate([ang, ang], -1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def inputs(B=2, T=7, F=20, seed=0):  # text ids (B, T), mel features (B, 80, F), text mask (B, T) with a padded row
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 200, size=(B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, T - 2:] = 0
    return ids, rng.standard_normal((B, 80, F)).astype(np.float32), mask


def greedy_logits(dec, prompt, n=6, mask=None, cache_dtype=None):  # prefill + n greedy steps -> logits (n+1, B, V)
    B, P = prompt.shape[:2]
    state = dec.new_state(B, P + n, cache_dtype) if cache_dtype else dec.new_state(B, P + n)
    out = [dec.prefill(prompt, mask, state)]
    for k in range(1, n + 1):
        out.append(dec.step(out[-1].argmax(-1), np.full(B, k + 1), state))
    assert state.length == P + n
    return np.stack(out)


@pytest.fixture(scope="module", params=["float16", "bfloat16"])
def half_checkpoint(request, tmp_path_factory):
    """tiny_a with its matrices stored in float16 / bfloat16 (vectors stay float32): (folder, dtype)."""
    from pyclvp.io.safetensors import load_file, save_file

    dtype = request.param
    folder = tmp_path_factory.mktemp(f"tiny_a_{dtype}")
    tensors = load_file(DATA / "tiny_a" / "model.safetensors", mmap=False)
    matrices = [k for k, v in tensors.items() if v.ndim >= 2]
    if dtype == "float16":
        tensors.update({k: tensors[k].astype(np.float16) for k in matrices})
        save_file(tensors, folder / "model.safetensors")
    else:  # float32 values rounded to bfloat16 by the writer
        save_file(tensors, folder / "model.safetensors", dtypes={k: "BF16" for k in matrices})
    (folder / "config.json").write_bytes((DATA / "tiny_a" / "config.json").read_bytes())
    return folder, dtype


def tortoise_folder(autoregressive, heads: int, out):
    """A CLVP folder from a tiny Tortoise UnifiedVoice checkpoint and the tiny CLVP of tests/data/torch_pickle
    (its text table cut to the autoregressive model's vocabulary: only the decoder side is under test)."""
    from pyclvp.config import ClvpConfig
    from pyclvp.convert import convert_autoregressive_weights, convert_clvp_weights, tortoise_config
    from pyclvp.io import torch_pickle
    from pyclvp.io.safetensors import save_file

    ar = torch_pickle.load(autoregressive)
    clvp = dict(torch_pickle.load(DATA / "torch_pickle" / "tortoise" / "clvp2.pth"))
    clvp["text_emb.weight"] = clvp["text_emb.weight"][:ar["text_embedding.weight"].shape[0]]
    save_file(dict(convert_clvp_weights(clvp), **convert_autoregressive_weights(ar, heads)), Path(out) / "model.safetensors")
    ClvpConfig.from_dict(tortoise_config(ar, clvp, heads)).save_pretrained(out)
    return Path(out)
