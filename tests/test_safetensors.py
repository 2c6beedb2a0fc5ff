"""pyclvp.io.safetensors: golden files from the official writer, transformers checkpoints, hypothesis
round-trips over every dtype, and the malformed-file corpus (tests/data/malformed_safetensors)."""
import hashlib
import json
import os
import subprocess
import sys
from math import prod

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import DATA
from pyclvp.io import safetensors as sf
from pyclvp.io.safetensors import SafetensorsError

GOLDEN = sorted((DATA / "safetensors_golden").glob("*.safetensors"))
MALFORMED = json.loads((DATA / "malformed_safetensors" / "index.json").read_text())
NUMPY_DTYPES = ["<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "i1", "<u8", "<u4", "<u2", "u1", "?"]


def _file_bytes(header, data=b""):
    """A safetensors file with this header (a dict, written as JSON) and data area."""
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


def _golden_inputs(path):
    arrays = dict(np.load(path.with_suffix(".npz")))
    metadata = {"fixture_version": "1"} if path.stem == "ordering" else None
    return arrays, metadata


# ---------------------------------------------------------------------------------------------- exact tables

@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_save_is_byte_identical_to_official_writer(path):
    arrays, metadata = _golden_inputs(path)
    assert sf.save(arrays, metadata) == path.read_bytes()


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
@pytest.mark.parametrize("mmap", [True, False])
def test_load_golden(path, mmap):
    arrays, metadata = _golden_inputs(path)
    got = sf.load_file(path, mmap=mmap)
    assert sorted(got) == sorted(arrays)
    for k, want in arrays.items():
        assert got[k].dtype == want.dtype and got[k].shape == want.shape, k
        np.testing.assert_array_equal(got[k], want)
    with sf.safe_open(path) as f:
        assert f.metadata() == metadata


def test_save_matches_official_package_when_installed(tmp_path):
    official = pytest.importorskip("safetensors.numpy", reason="the official safetensors package is not installed")
    rng = np.random.default_rng(1)
    arrays = {"w": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(4, dtype=np.int64),
              "m": np.array([True, False]), "h": rng.standard_normal(7).astype(np.float16)}
    official.save_file(arrays, str(tmp_path / "o.safetensors"), metadata={"k": "v"})
    assert sf.save(arrays, {"k": "v"}) == (tmp_path / "o.safetensors").read_bytes()


@pytest.mark.parametrize("name", ["tiny_a", "tiny_b"])
def test_transformers_checkpoint_is_bit_identical(name):
    expected = json.loads((DATA / name / "tensors.json").read_text())["tensors"]
    got = sf.load_file(DATA / name / "model.safetensors")
    # save_pretrained drops tied duplicates; every stored tensor must be bit-identical to torch's own
    assert set(got) <= set(expected) and len(got) > 0
    for key, arr in got.items():
        info = expected[key]
        assert str(arr.dtype) == info["dtype"] and list(arr.shape) == info["shape"], key
        assert hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() == info["sha256"], key


def test_mmap_views_are_read_only_and_zero_copy():
    path = DATA / "tiny_a" / "model.safetensors"
    got = sf.load_file(path, mmap=True)
    arr = next(iter(got.values()))
    assert not arr.flags.writeable and not arr.flags.owndata
    with pytest.raises(ValueError):
        arr[...] = 0


def test_safe_open_reads_only_what_is_asked(tmp_path):
    path = tmp_path / "x.safetensors"
    sf.save_file({"a": np.arange(3, dtype=np.int32), "b": np.ones((2, 2), np.float32)}, path, {"m": "1"})
    with sf.safe_open(path, mmap=False) as f:
        assert f.keys() == ["b", "a"]
        assert f.get_shape("a") == (3,) and f.get_dtype("b") == "F32"
        np.testing.assert_array_equal(f.get_tensor("a"), [0, 1, 2])
        with pytest.raises(KeyError, match="no tensor named 'zz'"):
            f.get_tensor("zz")


@pytest.mark.parametrize("mmap", [True, False])
def test_get_tensor_after_close_says_closed(tmp_path, mmap):
    path = tmp_path / "x.safetensors"
    sf.save_file({"a": np.arange(3, dtype=np.int32)}, path)
    f = sf.safe_open(path, mmap=mmap)
    before = f.get_tensor("a")
    f.close()
    with pytest.raises(ValueError, match=r"cannot read tensor 'a': safe_open\(.*x\.safetensors'\) is closed"):
        f.get_tensor("a")
    np.testing.assert_array_equal(before, [0, 1, 2])  # arrays handed out earlier stay readable


@pytest.mark.parametrize("method", ["get_tensor", "get_shape", "get_dtype"])
def test_safe_open_rejects_non_str_names(tmp_path, method):
    path = tmp_path / "x.safetensors"
    sf.save_file({"a": np.zeros(1, np.float32)}, path)
    with sf.safe_open(path) as f, pytest.raises(TypeError, match="tensor names are str, got list"):
        getattr(f, method)(["a"])


@pytest.mark.parametrize("data", [None, "abc", 10**13, 5], ids=["none", "str", "huge_int", "small_int"])
def test_load_rejects_non_bytes(data):
    # bytes(5) is five zero bytes and bytes(10**13) a 10 TB allocation: neither may be attempted
    with pytest.raises(TypeError, match=f"data must be bytes-like, got {type(data).__name__}"):
        sf.load(data)


def test_load_takes_any_bytes_like():
    good = sf.save({"a": np.arange(3, dtype=np.int16)})
    for data in (good, bytearray(good), memoryview(good), np.frombuffer(good, np.uint8)):
        assert sf.load(data)["a"].tolist() == [0, 1, 2]


def test_bf16_float32_and_raw(tmp_path):
    x = np.array([1.0, -2.5, 3.140625, 1e-3, np.inf], dtype=np.float32)
    path = tmp_path / "bf.safetensors"
    sf.save_file({"x": x}, path, dtypes={"x": "BF16"})
    assert sf.safe_open(path).get_dtype("x") == "BF16"
    as_f32 = sf.load_file(path)["x"]
    raw = sf.load_file(path, bf16="raw")["x"]
    assert as_f32.dtype == np.float32 and raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, [0x3F80, 0xC020, 0x4049, 0x3A83, 0x7F80])
    np.testing.assert_array_equal(as_f32, sf.bfloat16_to_float32(raw))


@pytest.mark.parametrize("bits, dtype", [([1, 2], "int64"), (np.array([1.5]), "float64"),
                                         (np.array([0x3F80, 70000]), "int64")], ids=["list", "float", "int64"])
def test_bfloat16_to_float32_rejects_non_uint16(bits, dtype):
    with pytest.raises(TypeError, match=f"expects uint16 bits, got {dtype}"):
        sf.bfloat16_to_float32(bits)


def test_float32_to_bfloat16_rounds_to_nearest_even():
    # 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0)
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, np.nan], dtype=np.float32)
    bits = sf.float32_to_bfloat16(x)
    assert bits[0] == 0x3F80 and bits[1] == 0x3F82 and np.isnan(sf.bfloat16_to_float32(bits[2:]))[0]


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(SafetensorsError, match="must be str"):
        sf.save({1: np.zeros(1)})
    with pytest.raises(SafetensorsError, match="cannot be stored"):
        sf.save({"c": np.zeros(2, np.complex64)})
    with pytest.raises(SafetensorsError, match="metadata"):
        sf.save({}, {"k": 1})
    with pytest.raises(SafetensorsError, match="reserved"):
        sf.save({"__metadata__": np.zeros(1)})
    with pytest.raises(SafetensorsError, match="not being saved"):
        sf.save({}, dtypes={"x": "BF16"})


@pytest.mark.parametrize("args, kwargs, error, match", [
    pytest.param(({"a": [[1.0], [2.0, 3.0]]},), {}, SafetensorsError, "tensor 'a': value is not a rectangular array",
                 id="ragged_list"),
    pytest.param(({"\ud800": np.zeros(1)},), {}, SafetensorsError, "tensor name .* cannot be encoded as UTF-8",
                 id="surrogate_name"),
    pytest.param(({}, {"k": "\udc00"}), {}, SafetensorsError, "metadata entry 'k': cannot be encoded as UTF-8",
                 id="surrogate_metadata"),
    pytest.param(({"a": np.zeros(1)},), {"dtypes": ["a"]}, TypeError, "dtypes must be a dict .* got list",
                 id="dtypes_list"),
])
def test_save_names_the_bad_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        sf.save(*args, **kwargs)


def test_save_takes_rectangular_lists():
    got = sf.load(sf.save({"a": [[1.0], [2.0]]}))["a"]
    assert got.dtype == np.float64 and got.tolist() == [[1.0], [2.0]]


def test_big_endian_input_is_stored_little_endian():
    x = np.arange(3, dtype=">i4")
    assert sf.load(sf.save({"x": x}))["x"].tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- malformed corpus

def test_corpus_is_large_enough():
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_file_raises(name, mmap):
    with pytest.raises(SafetensorsError, match=MALFORMED[name]):
        sf.load_file(DATA / "malformed_safetensors" / name, mmap=mmap)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_bytes_raise(name):
    with pytest.raises(SafetensorsError, match=MALFORMED[name]):
        sf.load((DATA / "malformed_safetensors" / name).read_bytes())


# Headers the fuzzer found, beside the corpus: (header, data area, what the message must say).
# The official reader accepts empty_dim_past_int64 (its dims fit in a u64, their product is 0), but
# no NumPy array has a dim of 2**63, or more than 64 dims (32 before NumPy 2).
BAD_HEADERS = {
    "empty_dim_past_int64": ({"a": {"dtype": "F32", "shape": [0, 2**63], "data_offsets": [0, 0]}}, b"",
                             "tensor 'a': shape .* too large for NumPy"),
    "empty_dims_product_overflows": ({"a": {"dtype": "F32", "shape": [2**40, 2**40, 0], "data_offsets": [0, 0]}}, b"",
                                     "tensor 'a': shape .* too large for NumPy"),
    "empty_bf16_too_large_as_float32": ({"a": {"dtype": "BF16", "shape": [0, 2**61], "data_offsets": [0, 0]}}, b"",
                                        "tensor 'a': shape .* too large for NumPy"),
    "too_many_dims": ({"a": {"dtype": "U8", "shape": [1] * (sf._MAX_NDIM + 1), "data_offsets": [0, 1]}}, b"\0",
                      f"tensor 'a': shape has {sf._MAX_NDIM + 1} dims, more than NumPy's {sf._MAX_NDIM}"),
    "dtype_not_a_string": ({"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4,
                           "tensor 'a': unknown or unsupported dtype"),
}


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_bad_header_raises(name, tmp_path):
    header, data, match = BAD_HEADERS[name]
    blob = _file_bytes(header, data)
    with pytest.raises(SafetensorsError, match=match):
        sf.load(blob)
    (tmp_path / "bad.safetensors").write_bytes(blob)
    for mmap in (True, False):
        with pytest.raises(SafetensorsError, match=match):
            sf.load_file(tmp_path / "bad.safetensors", mmap=mmap)


@pytest.mark.parametrize("dtype, shape", [("F32", [0, sf._MAX_NBYTES // 4]), ("U8", [sf._MAX_NBYTES, 0]),
                                          ("BF16", [2**14, 0, 2**14]), ("I8", [1] * sf._MAX_NDIM)])
def test_shapes_at_numpy_limits_load(dtype, shape):
    nbytes = prod(shape) * sf.DTYPES[dtype].itemsize
    blob = _file_bytes({"a": {"dtype": dtype, "shape": shape, "data_offsets": [0, nbytes]}}, b"\0" * nbytes)
    for bf16 in ("float32", "raw"):
        assert sf.load(blob, bf16=bf16)["a"].shape == tuple(shape)


def test_malformed_corpus_never_crashes_the_interpreter():
    # In a child process, so that a segfault would show up as a signal instead of killing pytest.
    code = ("import sys, json, pathlib; from pyclvp.io.safetensors import load_file, SafetensorsError\n"
            "d = pathlib.Path(sys.argv[1])\n"
            "for f in json.loads((d / 'index.json').read_text()):\n"
            "    try: load_file(d / f)\n"
            "    except SafetensorsError: pass\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(DATA / "malformed_safetensors")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------------------------------- properties

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
arrays = st.builds(
    lambda dtype, shape, seed: _random_array(dtype, shape, seed),
    st.sampled_from(NUMPY_DTYPES), shapes, st.integers(0, 2**32 - 1))


def _random_array(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    arr = raw.view(dtype).reshape(shape) if np.dtype(dtype) != np.bool_ else (raw % 2).astype(bool).reshape(shape)
    return arr


@given(tensors=st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: s != "__metadata__"), arrays, max_size=6),
       metadata=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
def test_hyp_roundtrip(tensors, metadata, tmp_path_factory):
    path = tmp_path_factory.mktemp("rt") / "t.safetensors"
    sf.save_file(tensors, path, metadata)
    for mmap in (True, False):
        got = sf.load_file(path, mmap=mmap)
        assert list(got) == sorted(tensors, key=lambda n: (-sf._DTYPE_ORDER.index(sf.safe_open(path).get_dtype(n)), n))
        for k, v in tensors.items():
            assert got[k].dtype == v.dtype.newbyteorder("=") and got[k].shape == v.shape
            assert got[k].tobytes() == v.tobytes()  # bitwise, so NaN payloads count too
    assert sf.safe_open(path).metadata() == metadata
    assert len(path.read_bytes()) % 8 == sum(v.nbytes for v in tensors.values()) % 8


@given(blob=st.binary(max_size=200))
def test_hyp_random_bytes_never_crash(blob):
    try:
        sf.load(blob)
    except SafetensorsError:
        pass


@given(blob=st.binary(min_size=1, max_size=64), cut=st.integers(0, 63))
def test_hyp_corrupted_header_raises_cleanly(blob, cut):
    good = sf.save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int8)})
    bad = good[: 8 + cut] + blob + good[8 + cut + len(blob):]
    try:
        sf.load(bad)  # may still be valid (e.g. a changed digit in the data area): either way, no crash
    except SafetensorsError:
        pass


@pytest.mark.parametrize("bf16", ["float32", "raw"])
def test_zero_d_bf16_tensor_is_a_zero_d_array(bf16):
    out = sf.load(sf.save({"s": np.array(2.5, np.float32)}, dtypes={"s": "BF16"}), bf16=bf16)["s"]
    assert isinstance(out, np.ndarray) and out.shape == ()
    assert out == (2.5 if bf16 == "float32" else 0x4020)


# ----------------------------------------------------------------------------------------------
# Writing atomically: a reader never sees half a file


def test_save_file_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "model.safetensors"
    link.symlink_to(victim)
    assert sf.save_file({"a": np.ones(3, np.float32)}, link) == link
    assert victim.read_text() == "keep me" and not link.is_symlink()
    np.testing.assert_array_equal(sf.load_file(link)["a"], np.ones(3, np.float32))


def test_a_killed_writer_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "model.safetensors"
    sf.save_file({"a": np.zeros(4, np.float32)}, path)
    old = path.read_bytes()

    def dying():
        yield b"partial bytes"
        raise KeyboardInterrupt  # the writer is stopped half way

    from pyclvp.io.files import write_atomic

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, dying())
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_a_mapped_reader_survives_a_rewrite(tmp_path):
    path = tmp_path / "model.safetensors"
    sf.save_file({"a": np.arange(1 << 16, dtype=np.float32)}, path)
    with sf.safe_open(path) as f:
        view = f.get_tensor("a")  # a view into the memory map
        sf.save_file({"b": np.zeros(1, np.float32)}, path)  # rewritten (smaller) while mapped
        assert view[-1] == (1 << 16) - 1  # the old pages are still there: no SIGBUS


@pytest.mark.parametrize("make", ["fifo", "dev_zero", "folder"])
def test_not_a_regular_file_is_refused_without_blocking_or_reading(tmp_path, make):
    from pyclvp.config import ClvpConfig, ConfigError

    if make == "fifo":
        path = tmp_path / "config.json"
        os.mkfifo(path)
    elif make == "dev_zero":
        path = "/dev/zero"
    else:
        path = tmp_path / "d.safetensors"
        path.mkdir()
    with pytest.raises((ValueError, IsADirectoryError), match="not a regular file|Is a directory"):
        sf.safe_open(path)
    if make != "folder":
        with pytest.raises(ConfigError, match="not a regular file"):
            ClvpConfig.from_pretrained(path)
