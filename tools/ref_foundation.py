"""Foundation fixtures: the tiny checkpoints (as save_pretrained writes them), their tensors' hashes,
and golden safetensors files written by the official `safetensors` package.

  tests/data/<tiny>/config.json, model.safetensors     transformers' own save_pretrained output
  tests/data/<tiny>/tensors.json                        {name: {dtype, shape, sha256}} of the state_dict
  tests/data/safetensors_golden/<case>.safetensors      safetensors.numpy.save_file output
  tests/data/safetensors_golden/<case>.npz              the arrays that went in
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, TINY_CONFIGS, tiny_model, write_json


def _golden_cases():
    rng = np.random.default_rng(0)
    yield "all_dtypes", {
        "f64": rng.standard_normal((2, 3)),
        "f32": rng.standard_normal((3,)).astype(np.float32),
        "f16": rng.standard_normal((2, 2)).astype(np.float16),
        "i64": np.arange(5, dtype=np.int64) - 2,
        "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
        "i16": np.array([-3, 7], dtype=np.int16),
        "i8": np.array([-128, 127, 0], dtype=np.int8),
        "u64": np.array([2**63], dtype=np.uint64),
        "u32": np.array([1, 2], dtype=np.uint32),
        "u16": np.array([65535], dtype=np.uint16),
        "u8": np.arange(7, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    yield "ordering", {"b": np.ones(3, np.float32), "a": np.zeros(1, np.int8), "c.weight": np.ones((2, 2), np.float64)}
    yield "single_byte", {"x": np.array([1], dtype=np.uint8)}  # forces header padding
    yield "empty_dict", {}


def make(data_dir: Path) -> None:
    import torch
    from safetensors.numpy import save_file as st_save

    for name in TINY_CONFIGS:
        out = data_dir / name
        shutil.rmtree(out, ignore_errors=True)
        model = tiny_model(name)
        model.save_pretrained(out)
        tensors = {}
        for key, t in model.state_dict().items():
            arr = t.detach().contiguous().numpy()
            tensors[key] = dict(dtype=str(arr.dtype), shape=list(arr.shape), sha256=hashlib.sha256(arr.tobytes()).hexdigest())
        write_json(out / "tensors.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__, tensors=tensors))

    golden = data_dir / "safetensors_golden"
    shutil.rmtree(golden, ignore_errors=True)
    golden.mkdir()
    for case, arrays in _golden_cases():
        st_save(arrays, str(golden / f"{case}.safetensors"), metadata={"fixture_version": str(FIXTURE_VERSION)} if case == "ordering" else None)
        np.savez(golden / f"{case}.npz", **arrays)
