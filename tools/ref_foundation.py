"""Foundation fixtures: the tiny checkpoints (as save_pretrained writes them), their tensors' hashes,
and golden safetensors files written by the official `safetensors` package.

  tests/data/<tiny>/config.json, model.safetensors     transformers' own save_pretrained output
  tests/data/<tiny>/tensors.json                        {name: {dtype, shape, sha256}} of the state_dict
  tests/data/safetensors_golden/<case>.safetensors      safetensors.numpy.save_file output
  tests/data/safetensors_golden/<case>.npz              the arrays that went in
  tests/data/config_default.json                        transformers' ClvpConfig().to_dict()
  tests/data/malformed_safetensors/<failure>.safetensors  hand-made bad files, one per failure mode,
                                                        with index.json: {file: expected message fragment}
"""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
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


def _file(header, data: bytes = b"", *, raw_header: bytes | None = None, length: int | None = None) -> bytes:
    """A safetensors file from a header dict (or raw header bytes) and a data area; length overrides N."""
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def _t(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


# failure name -> (file bytes, a fragment the SafetensorsError message must contain)
MALFORMED = {
    "empty_file": (b"", "too small"),
    "short_length_field": (b"\x05\x00\x00", "too small"),
    "header_past_eof": (_file({}, length=4096), "past the end"),
    "header_over_100mb": (_file({}, length=200_000_000), "limit"),
    "header_length_huge": (b"\xff" * 8 + b"{}", "limit"),
    "header_not_json": (_file(None, raw_header=b"{not json}"), "not valid JSON"),
    "header_not_object": (_file(None, raw_header=b"[1, 2, 3]"), "not a JSON object"),
    "header_not_utf8": (_file(None, raw_header=b'{"\xff\xfe": 1}'), "UTF-8"),
    "header_truncated_json": (_file(None, raw_header=b'{"a": {"dtype": "F32"'), "not valid JSON"),
    "entry_not_object": (_file({"a": 3}), "not an object"),
    "unknown_dtype": (_file({"a": _t("F17", [1], 0, 4)}, b"\0" * 4), "unknown or unsupported dtype"),
    "negative_shape": (_file({"a": _t("F32", [-1], 0, 4)}, b"\0" * 4), "non-negative integers"),
    "float_shape": (_file({"a": _t("F32", [1.5], 0, 4)}, b"\0" * 4), "non-negative integers"),
    "bool_shape": (_file({"a": _t("F32", [True], 0, 4)}, b"\0" * 4), "non-negative integers"),
    "string_shape": (_file({"a": _t("F32", "2", 0, 8)}, b"\0" * 8), "non-negative integers"),
    "missing_offsets": (_file({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "data_offsets"),
    "three_offsets": (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}, b"\0" * 4), "data_offsets"),
    "negative_offset": (_file({"a": _t("F32", [1], -4, 0)}, b"\0" * 4), "data_offsets"),
    "byte_length_mismatch": (_file({"a": _t("F32", [3], 0, 8)}, b"\0" * 8), "needs 12"),
    "reversed_offsets": (_file({"a": _t("F32", [1], 4, 0)}, b"\0" * 4), "reversed"),
    "overlapping_offsets": (_file({"a": _t("F32", [2], 0, 8), "b": _t("F32", [1], 4, 8)}, b"\0" * 8), "overlaps"),
    "hole_between_tensors": (_file({"a": _t("F32", [1], 0, 4), "b": _t("F32", [1], 8, 12)}, b"\0" * 12), "hole"),
    "offsets_outside_data": (_file({"a": _t("F32", [4], 0, 16)}, b"\0" * 4), "truncated"),
    "trailing_bytes": (_file({"a": _t("F32", [1], 0, 4)}, b"\0" * 12), "trailing bytes"),
    "truncated_data": (_file({"a": _t("F64", [100], 0, 800)}, b"\0" * 100), "truncated"),
    "duplicate_names": (_file(None, raw_header=b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                            b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', data=b"\0\0"),
                        "duplicate key"),
    "metadata_not_strings": (_file({"__metadata__": {"k": 1}}), "__metadata__"),
    "metadata_not_object": (_file({"__metadata__": ["k"]}), "__metadata__"),
    "huge_shape_no_data": (_file({"a": _t("F32", [2**40, 2**40], 0, 4)}, b"\0" * 4), "needs"),
    "deeply_nested_json": (_file(None, raw_header=b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}"), "JSON"),
}


def make_malformed(data_dir: Path) -> None:
    out = data_dir / "malformed_safetensors"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for name, (blob, _) in MALFORMED.items():
        (out / f"{name}.safetensors").write_bytes(blob)
    write_json(out / "index.json", {f"{name}.safetensors": frag for name, (_, frag) in MALFORMED.items()})


def make(data_dir: Path) -> None:
    from transformers import ClvpConfig

    make_malformed(data_dir)
    write_json(data_dir / "config_default.json", ClvpConfig().to_dict())
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
