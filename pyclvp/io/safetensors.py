"""safetensors, read and written in pure Python + NumPy.

The format (ref: https://github.com/huggingface/safetensors, "Format" section of its README):

    [ 8 bytes ]  N, the header length: an unsigned little-endian 64-bit integer
    [ N bytes ]  the header: a UTF-8 JSON object, padded at the end with spaces (0x20)
    [ rest    ]  the data area: every tensor's bytes, little-endian, C order, back to back

The header maps each tensor name to {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
with offsets relative to the start of the data area. An optional "__metadata__" entry maps str to str.
A valid file has no holes and no overlaps: sorted by offset, the tensors tile the data area exactly,
and each one's byte length is prod(shape) * itemsize.

Reading checks all of that, and that NumPy can make each array, before touching the data, so a
malformed or hostile file raises SafetensorsError (never a crash, a hang or a huge allocation). With
mmap=True the arrays are read-only views into a memory map of the file: loading costs no copy and no
time up front.

Writing follows the official writer byte for byte: tensors ordered by dtype (widest alignment first,
in the Rust crate's Dtype enum order, reversed) then by name; compact JSON; the header padded with
spaces to a multiple of 8 so that every tensor starts 8-byte aligned.

NumPy has no bfloat16. BF16 tensors are returned as float32 by default (exact: a bfloat16 is the
top half of a float32), or as their raw uint16 bits with bf16="raw". To write BF16, pass
dtypes={"name": "BF16"} with either float32 values (rounded to nearest even) or uint16 bits.
"""
from __future__ import annotations

import json
import mmap as _mmap
import os
from math import prod
from pathlib import Path

import numpy as np

from ..checks import check_choice, is_int
from .files import open_regular, write_atomic

__all__ = ["SafetensorsError", "load_file", "load", "save_file", "save", "safe_open",
           "bfloat16_to_float32", "float32_to_bfloat16", "release_pages"]

MAX_HEADER_SIZE = 100_000_000  # the official reader's limit
BF16_CHOICES = ("float32", "raw")  # how BF16 tensors are returned: widened exactly, or as their uint16 bits

# safetensors dtype -> NumPy dtype (little-endian). BF16 is special-cased (stored as uint16 bits).
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# The Rust crate's `Dtype` enum order; the writer sorts by it, descending, then by name.
_DTYPE_ORDER = ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]
_FROM_NUMPY = {np.dtype(v).newbyteorder("=") if v.byteorder != "|" else v: k
               for k, v in DTYPES.items() if k != "BF16"}
_MAX_NDIM = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32  # NumPy's NPY_MAXDIMS
_MAX_NBYTES = np.iinfo(np.intp).max  # NumPy's bound on itemsize * the product of an array's non-zero dims


class SafetensorsError(ValueError):
    """A safetensors file (or a dict to save) is malformed; the message says how."""


# ----------------------------------------------------------------------------------------------
# bfloat16 <-> float32


def bfloat16_to_float32(bits) -> np.ndarray:
    """uint16 bfloat16 bits (an array or array-like) -> float32 (exact). Any other dtype is a TypeError."""
    bits = np.asarray(bits)
    if bits.dtype != np.uint16:
        raise TypeError(f"bfloat16_to_float32 expects uint16 bits, got {bits.dtype}")
    wide = bits.astype(np.uint32)
    wide <<= 16  # in place: a 0-d array stays an array (a binary operator would return a NumPy scalar)
    return wide.view(np.float32)


def float32_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bits, rounding to nearest even (as torch's .to(torch.bfloat16)); NaN stays NaN."""
    u = np.asarray(x, dtype=np.float32, order="C").view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


# ----------------------------------------------------------------------------------------------
# Header parsing and validation


def _reject_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise SafetensorsError(f"duplicate key {k!r} in header")
        out[k] = v
    return out


def _parse_header(prefix: bytes, file_size: int):
    """prefix: the file's first 8 + N bytes. Returns (metadata, entries sorted by offset, data_start)."""
    if file_size < 8:
        raise SafetensorsError(f"file is {file_size} bytes, too small for the 8-byte header length")
    n = int.from_bytes(prefix[:8], "little")
    if n > MAX_HEADER_SIZE:
        raise SafetensorsError(f"header length {n} exceeds the {MAX_HEADER_SIZE}-byte limit")
    if 8 + n > file_size:
        raise SafetensorsError(f"header length {n} runs past the end of the file ({file_size} bytes)")
    raw = prefix[8:8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"header is not valid UTF-8: {e}") from None
    if not text.startswith("{"):
        raise SafetensorsError("header is not a JSON object (it must start with '{')")
    try:
        header = json.loads(text, object_pairs_hook=_reject_duplicates)
    except SafetensorsError:
        raise
    except (ValueError, RecursionError) as e:
        raise SafetensorsError(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")

    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise SafetensorsError("__metadata__ must be an object of string to string")

    data_size = file_size - 8 - n
    entries = []
    for name, info in header.items():
        entries.append((name, *_check_entry(name, info)))
    entries.sort(key=lambda e: (e[3], e[4]))  # by (begin, end)
    expected = 0
    for name, dtype, shape, begin, end in entries:
        if begin != expected:
            what = "overlaps the previous tensor" if begin < expected else "leaves a hole before it"
            raise SafetensorsError(f"tensor {name!r}: data_offsets start at {begin}, expected {expected} ({what})")
        expected = end
    if expected != data_size:
        raise SafetensorsError(
            f"the tensors cover {expected} bytes but the data area holds {data_size} "
            f"({'truncated file' if expected > data_size else 'trailing bytes after the last tensor'})")
    return metadata, entries, 8 + n


def _check_entry(name, info):
    if not isinstance(info, dict):
        raise SafetensorsError(f"tensor {name!r}: entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SafetensorsError(f"tensor {name!r}: unknown or unsupported dtype {dtype!r} (supported: {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
        raise SafetensorsError(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) and o >= 0 for o in offsets)):
        raise SafetensorsError(f"tensor {name!r}: data_offsets must be two non-negative integers, got {offsets!r}")
    begin, end = offsets
    if end < begin:
        raise SafetensorsError(f"tensor {name!r}: data_offsets {offsets} are reversed")
    nbytes = prod(shape) * DTYPES[dtype].itemsize
    if end - begin != nbytes:
        raise SafetensorsError(
            f"tensor {name!r}: {end - begin} bytes in data_offsets but shape {shape} of {dtype} needs {nbytes}")
    _check_numpy_limits(name, dtype, shape)
    return dtype, tuple(shape), begin, end


def _check_numpy_limits(name, dtype: str, shape: list) -> None:
    """NumPy's limits: at most _MAX_NDIM dims, and a size within _MAX_NBYTES (the file bounds a
    non-empty tensor's size, not an empty one's: [0, 2**63] is a valid header but no NumPy array)."""
    if len(shape) > _MAX_NDIM:
        raise SafetensorsError(f"tensor {name!r}: shape has {len(shape)} dims, more than NumPy's {_MAX_NDIM}")
    itemsize = 4 if dtype == "BF16" else DTYPES[dtype].itemsize  # BF16 may be returned as float32
    if prod(d for d in shape if d) * itemsize > _MAX_NBYTES:
        raise SafetensorsError(f"tensor {name!r}: shape {shape} is too large for NumPy "
                               f"(itemsize x the product of the non-zero dims exceeds {_MAX_NBYTES})")


def _to_array(buf, offset: int, dtype: str, shape, bf16: str) -> np.ndarray:
    arr = np.frombuffer(buf, dtype=DTYPES[dtype], count=prod(shape), offset=offset).reshape(shape)
    if dtype == "BF16" and bf16 == "float32":
        return bfloat16_to_float32(arr)
    return arr


# ----------------------------------------------------------------------------------------------
# Reading


class safe_open:
    """Lazy access to one file: `with safe_open(path) as f: f.keys(), f.get_tensor(name), f.metadata()`.

    Only the tensors asked for are read (with mmap=False, by seeking; with mmap=True, as views).
    framework is accepted for compatibility with the official API and must be "np"/"numpy".
    """

    def __init__(self, path, framework: str = "np", *, mmap: bool = True, bf16: str = "float32"):
        if framework not in ("np", "numpy"):
            raise ValueError(f"framework must be 'np', got {framework!r}")
        check_choice("bf16", bf16, BF16_CHOICES)
        self.path, self._bf16 = os.fspath(path), bf16
        self._file = open_regular(self.path)
        try:
            size = os.fstat(self._file.fileno()).st_size
            head = self._file.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            prefix = head + self._file.read(min(n, MAX_HEADER_SIZE, max(size - 8, 0)))
            self._metadata, entries, self._data_start = _parse_header(prefix, size)
            self._entries = {e[0]: e[1:] for e in entries}
            self._order = [e[0] for e in entries]
            self._map = None
            if mmap and size > self._data_start:
                self._map = _mmap.mmap(self._file.fileno(), 0, access=_mmap.ACCESS_READ)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        # Arrays already handed out keep the memory map alive on their own (they hold a reference).
        self._file.close()
        self._map = None

    def keys(self) -> list[str]:
        return list(self._order)

    def metadata(self) -> dict[str, str] | None:
        return None if self._metadata is None else dict(self._metadata)

    def get_dtype(self, name: str) -> str:
        return self._entry(name)[0]

    def get_shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name)[1]

    def get_tensor(self, name: str) -> np.ndarray:
        dtype, shape, begin, end = self._entry(name)
        if self._file.closed:
            raise ValueError(f"cannot read tensor {name!r}: safe_open({self.path!r}) is closed")
        if self._map is not None:
            return _to_array(self._map, self._data_start + begin, dtype, shape, self._bf16)
        self._file.seek(self._data_start + begin)
        data = self._file.read(end - begin)
        if len(data) != end - begin:
            raise SafetensorsError(f"tensor {name!r}: file truncated while reading")
        return _to_array(data, 0, dtype, shape, self._bf16)

    def _entry(self, name: str):
        if not isinstance(name, str):
            raise TypeError(f"tensor names are str, got {type(name).__name__}")
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path}") from None


def release_pages(array) -> None:
    """Drops the pages of a memory-mapped tensor (a view from safe_open(..., mmap=True)) from this process's resident
    set, madvise(MADV_DONTNEED). The file's pages stay in the page cache and fault back in if the array is read again,
    so no value changes; a loader that converts a tensor and keeps only the copy (int8 quantization at load,
    pyclvp/io/checkpoints.py) calls it so that the float pages it read do not add up in its peak RSS. A no-op for any
    other array (and where the platform has no MADV_DONTNEED)."""
    arr = np.ndarray.view(array, np.ndarray)  # a plain view (a Bf16Array's np functions would widen it)
    owner = arr.base
    while isinstance(owner, np.ndarray):
        owner = owner.base
    mm = owner.obj if isinstance(owner, memoryview) else owner
    if not isinstance(mm, _mmap.mmap) or mm.closed or not hasattr(_mmap, "MADV_DONTNEED") or arr.size == 0:
        return
    byte_bounds = getattr(np, "byte_bounds", None) or np.lib.array_utils.byte_bounds
    lo, hi = byte_bounds(arr)
    origin = np.frombuffer(mm, np.uint8).__array_interface__["data"][0]
    start = (lo - origin) // _mmap.PAGESIZE * _mmap.PAGESIZE  # whole pages: a neighbour's share faults back in
    end = min(len(mm), -(-(hi - origin) // _mmap.PAGESIZE) * _mmap.PAGESIZE)
    mm.madvise(_mmap.MADV_DONTNEED, start, end - start)


def load_file(path, mmap: bool = True, *, bf16: str = "float32") -> dict[str, np.ndarray]:
    """Every tensor of a file, in file order. mmap=True: read-only zero-copy views (BF16->float32 copies)."""
    with safe_open(path, mmap=mmap, bf16=bf16) as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def load(data: bytes, *, bf16: str = "float32") -> dict[str, np.ndarray]:
    """Every tensor of an in-memory safetensors file (bytes, or any bytes-like object: bytearray, mmap...)."""
    check_choice("bf16", bf16, BF16_CHOICES)
    try:
        memoryview(data)
    except TypeError:  # bytes(5) would be five zero bytes, bytes("abc") a TypeError about encodings
        raise TypeError(f"data must be bytes-like, got {type(data).__name__}") from None
    data = bytes(data)
    _, entries, start = _parse_header(data, len(data))
    return {name: _to_array(data, start + begin, dtype, shape, bf16) for name, dtype, shape, begin, _ in entries}


# ----------------------------------------------------------------------------------------------
# Writing


def _is_utf8(text: str) -> bool:
    """Can `text` be written as UTF-8? (Not if it holds a lone surrogate, e.g. "\\ud800".)"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_stored(name, value, override):
    """(safetensors dtype, little-endian C-contiguous array) for one tensor to save."""
    if not isinstance(name, str):
        raise SafetensorsError(f"tensor names must be str, got {type(name).__name__}")
    if not _is_utf8(name):
        raise SafetensorsError(f"tensor name {name!r} cannot be encoded as UTF-8")
    if name == "__metadata__":
        raise SafetensorsError("'__metadata__' is reserved and cannot name a tensor")
    try:
        arr = np.asarray(value)
    except ValueError as e:  # e.g. a ragged nested list
        raise SafetensorsError(f"tensor {name!r}: value is not a rectangular array: {e}") from None
    if override == "BF16":
        if arr.dtype == np.uint16:
            bits = arr
        elif arr.dtype == np.float32:
            bits = float32_to_bfloat16(arr)
        else:
            raise SafetensorsError(f"tensor {name!r}: BF16 needs float32 values or uint16 bits, got {arr.dtype}")
        return "BF16", np.asarray(bits, dtype="<u2", order="C")
    key = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in ("|", "=") else arr.dtype
    dtype = _FROM_NUMPY.get(key)
    if dtype is None:
        raise SafetensorsError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors")
    if override is not None and override != dtype:
        raise SafetensorsError(f"tensor {name!r}: dtypes override {override!r} does not match its dtype {dtype}")
    return dtype, np.asarray(arr, dtype=DTYPES[dtype], order="C")


def save(tensors: dict, metadata: dict | None = None, *, dtypes: dict | None = None) -> bytes:
    """The bytes of a safetensors file holding `tensors`, identical to the official writer's output."""
    return b"".join(_serialize(tensors, metadata, dtypes))


def save_file(tensors: dict, path, metadata: dict | None = None, *, dtypes: dict | None = None) -> Path:
    """Write `tensors` ({name: array}) to `path` in the official writer's exact layout, atomically (a reader,
    even one with the old file memory-mapped, never sees half a file: pyclvp/io/files.py). Returns the path."""
    return write_atomic(path, _serialize(tensors, metadata, dtypes))


def _serialize(tensors, metadata, dtypes):
    if not isinstance(tensors, dict):
        raise SafetensorsError(f"tensors must be a dict of name -> array, got {type(tensors).__name__}")
    if dtypes is not None and not isinstance(dtypes, dict):
        raise TypeError(f"dtypes must be a dict of tensor name -> dtype, got {type(dtypes).__name__}")
    dtypes = dtypes or {}
    unknown = set(dtypes) - set(tensors)
    if unknown:
        raise SafetensorsError(f"dtypes names tensors that are not being saved: {sorted(unknown)}")
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise SafetensorsError("metadata must be a dict of str -> str")
    for key, value in (metadata or {}).items():
        if not (_is_utf8(key) and _is_utf8(value)):
            raise SafetensorsError(f"metadata entry {key!r}: cannot be encoded as UTF-8")
    stored = {name: _as_stored(name, value, dtypes.get(name)) for name, value in tensors.items()}
    order = sorted(stored, key=lambda n: (-_DTYPE_ORDER.index(stored[n][0]), n))

    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in order:
        dtype, arr = stored[name]
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return [len(text).to_bytes(8, "little"), text] + [stored[name][1].tobytes() for name in order]
