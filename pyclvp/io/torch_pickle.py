"""PyTorch checkpoints (`torch.save` zip files: .bin, .pth, .pt) read safely, without torch.

The format (ref: torch/serialization.py, `_save` and `_load`; torch/csrc/jit/serialization/pickler.cpp):

    <name>/data.pkl           the pickled object, pickle protocol 2 unless the saver chose otherwise
    <name>/data/<key>         one storage per key: its raw bytes, stored uncompressed, 64-byte aligned
    <name>/byteorder          "little" or "big" (files older than torch 1.10 lack it: little)
    <name>/version, .format_version, .storage_alignment, .data/serialization_id    not needed here

`<name>` is whatever the archive's single top folder is called (the file's stem when torch wrote it).
Inside data.pkl a tensor is a call to one of torch's rebuild functions,

    torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])
    torch._utils._rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype[, metadata])

and `storage` is a persistent id, ('storage', torch.FloatStorage, key, location, numel), that names the
zip member data/<key>. v2 carries the dtype in the storage class (numel counts elements); v3, used for
dtypes without a legacy storage class (uint16/32/64), passes an untyped storage (numel counts bytes)
and the dtype separately. A state_dict is a collections.OrderedDict of such calls, with a `_metadata`
attribute (module versions) set by BUILD; that attribute is dropped here.

Why not pickle.Unpickler: unpickling runs whatever callables the file names (`os.system`, `eval`, ...).
Instead `_Unpickler` below is a small interpreter of pickle opcodes that implements only the data
opcodes (containers, numbers, strings, memo) plus GLOBAL/REDUCE/BUILD/BINPERSID. GLOBAL looks the
name up in ALLOWED, whose values are stand-ins defined in this module (never an imported object), so
REDUCE can only ever call this module's own rebuild functions. Any other name, and any other opcode
(INST, OBJ, NEWOBJ, EXT*, ...), raises UnsafeCheckpointError before anything runs. This mirrors
torch's own `weights_only=True` unpickler (torch/_weights_only_unpickler.py), minus torch. The
interpreter never recurses, and what CPython itself would recurse on is bounded: dict keys and set
items must be scalars or short flat tuples (hashing a million-deep tuple overflows the C stack),
tensors have at most 32 dimensions, and messages quote hostile objects through reprlib.

The zip is checked before any storage is read: member names must stay inside the archive's folder,
no name appears twice, members must not overlap (the overlapping-entry zip bomb), only stored or
deflated members are accepted and a deflated one cannot claim more than deflate's 1032:1 ratio, and
each storage's size must equal what its persistent id declares. Each tensor's (offset, size, stride)
must stay inside its storage. Every failure is a TorchCheckpointError naming the problem.

With mmap=True (the default) the arrays are read-only views into a memory map of the file, taken
with the tensor's own offset and strides: no copy. bfloat16 (which NumPy lacks) is returned as
float32 (exact), or as its raw uint16 bits with bf16="raw", as in pyclvp.io.safetensors. Big-endian
files are byte-swapped (a copy). With mmap=False storages are read through zipfile, which also
checks each member's CRC.
"""
from __future__ import annotations

import contextvars
import encodings.cp437  # noqa: F401  (zip's legacy name codec: imported here, not lazily in the middle of a load)
import mmap as _mmap
import os
import re
import reprlib
import struct
import zipfile
import zlib
from math import prod

import numpy as np

from ..checks import check_choice
from .safetensors import BF16_CHOICES, bfloat16_to_float32

__all__ = ["TorchCheckpointError", "UnsafeCheckpointError", "load", "load_object", "ALLOWED"]

MAX_PICKLE_BYTES = 1 << 28  # data.pkl of a 1.5 GB Tortoise model is ~100 kB; this bounds hostile ones
MAX_NDIM = 32  # NumPy 1.x's limit
MAX_ELEMENTS = 1 << 48
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand by more than this: a larger claim is a zip bomb
# Budgets of one load, which any real checkpoint fits with room to spare (Tortoise's 1.7 GB autoregressive.pth:
# a ~100 kB pickle, ~600 tensors, every storage stored uncompressed), so that a small hostile file cannot make
# the reader allocate or hash without bound:
MAX_OBJECTS = 5_000_000  # objects pushed or memoized by the pickle (a byte of opcode can push a new container)
MAX_HASHED_KEYS = 10_000  # dict keys / set items that are not str or bytes: their hashes are not randomized, so
#                           colliding ints could make inserting them quadratic; torch writes str keys
MAX_INFLATED_BYTES = 64 << 20  # what deflated members may expand to, in all (torch.save never compresses)
MAX_VIEW_BYTES = 64 << 20  # tensors' bytes may exceed 4x their storages' bytes by this much (views share storage)
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pickled 0x1950a86a20f9469cfc6c


class TorchCheckpointError(ValueError):
    """A PyTorch checkpoint is malformed, truncated or in a format this reader does not handle."""


class UnsafeCheckpointError(TorchCheckpointError):
    """A checkpoint's pickle asks for a global or an opcode outside the allow-list. Nothing was run."""


# ----------------------------------------------------------------------------------------------
# dtypes: torch's storage classes and dtype objects -> NumPy (BF16 is kept as uint16 bits)

_DTYPES = {  # code -> (NumPy little-endian dtype, legacy storage class, torch dtype name)
    "F64": ("<f8", "DoubleStorage", "float64"), "F32": ("<f4", "FloatStorage", "float32"),
    "F16": ("<f2", "HalfStorage", "float16"), "BF16": ("<u2", "BFloat16Storage", "bfloat16"),
    "C64": ("<c8", "ComplexFloatStorage", "complex64"), "C128": ("<c16", "ComplexDoubleStorage", "complex128"),
    "I64": ("<i8", "LongStorage", "int64"), "I32": ("<i4", "IntStorage", "int32"),
    "I16": ("<i2", "ShortStorage", "int16"), "I8": ("i1", "CharStorage", "int8"),
    "U8": ("u1", "ByteStorage", "uint8"), "BOOL": ("?", "BoolStorage", "bool"),
    "U16": ("<u2", None, "uint16"), "U32": ("<u4", None, "uint32"), "U64": ("<u8", None, "uint64"),
}
# Real torch names this reader recognizes but cannot represent: a clear error, not "unsafe".
_UNSUPPORTED = {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
                "complex32", "ComplexHalfStorage", "QInt8Storage", "QUInt8Storage", "QInt32Storage",
                "QUInt4x2Storage", "QUInt2x4Storage", "qint8", "quint8", "qint32"}


class _StorageClass:
    """Stand-in for torch.FloatStorage & co (code) or torch.storage.UntypedStorage (code None)."""

    def __init__(self, name: str, code: str | None):
        self.name, self.code = name, code

    def __repr__(self):
        return f"torch.{self.name}"


class _TorchDtype:
    """Stand-in for a torch dtype object such as torch.float32 (an argument of _rebuild_tensor_v3)."""

    def __init__(self, name: str, code: str):
        self.name, self.code = name, code

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A loaded storage: its bytes as a read-only uint8 array, the dtype its persistent id gave, and
    whether its bfloat16 tensors are widened to float32."""

    def __init__(self, key: str, code: str | None, raw: np.ndarray, widen_bf16: bool):
        self.key, self.code, self.raw, self.widen_bf16 = key, code, raw, widen_bf16  # raw: (nbytes,) uint8


class _Callable:
    """Stand-in for an allowed callable global; REDUCE can call nothing else."""

    def __init__(self, name: str, fn):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        try:
            return self.fn(*args)
        except TypeError as e:  # wrong argument count or kind: the file is malformed
            raise TorchCheckpointError(f"{self.name}{_short(args)}: {e}") from None

    def __repr__(self):
        return self.name


_REPR = reprlib.Repr()  # bounded, recursion-safe repr for error messages about hostile objects
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _short(obj) -> str:
    return _REPR.repr(obj)


# ----------------------------------------------------------------------------------------------
# Rebuilding tensors (ref: torch/_utils.py, _rebuild_tensor / _rebuild_tensor_v2 / _v3 / _rebuild_parameter)


def _check_ints(what: str, values, n: int | None = None) -> tuple:
    if not isinstance(values, tuple) or (n is not None and len(values) != n) or len(values) > MAX_NDIM:
        raise TorchCheckpointError(f"tensor {what} must be a tuple{'' if n is None else f' of {n}'} of at most "
                                   f"{MAX_NDIM} ints, got {_short(values)}")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**62:
            raise TorchCheckpointError(f"tensor {what} {_short(values)} holds {v!r}: not a non-negative int")
    return values


def _tensor(storage, offset, size, stride, code) -> np.ndarray:
    """The (size, stride) view at element `offset` of `storage`, read as dtype `code`."""
    if not isinstance(storage, _Storage):
        raise TorchCheckpointError(f"tensor storage must be a persistent storage id, got {_short(storage)}")
    size = _check_ints("size", size)
    stride = _check_ints("stride", stride, len(size))
    (offset,) = _check_ints("storage offset", (offset,))
    dtype = np.dtype(_DTYPES[code][0])
    if storage.raw.size % dtype.itemsize:
        raise TorchCheckpointError(f"storage {storage.key!r}: {storage.raw.size} bytes is not a whole number of {code}")
    elements = storage.raw.view(dtype)  # (numel,)
    if prod(size) > MAX_ELEMENTS:  # only stride-0 (expanded) views can pass the bounds check this big
        raise TorchCheckpointError(f"tensor of size {size} has more than {MAX_ELEMENTS} elements")
    _spend("viewed", prod(size) * dtype.itemsize)
    if prod(size) == 0:
        view = np.zeros(size, dtype)
    else:
        view = _strided(elements, offset, size, stride, storage.key)
    return bfloat16_to_float32(view) if code == "BF16" and storage.widen_bf16 else view


def _strided(elements, offset, size, stride, key) -> np.ndarray:
    needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if needed > elements.size:
        raise TorchCheckpointError(
            f"tensor of size {size}, stride {stride} at offset {offset} needs {needed} elements "
            f"but storage {key!r} holds {elements.size}")
    return np.lib.stride_tricks.as_strided(elements[offset:], shape=size,
                                           strides=[s * elements.itemsize for s in stride], writeable=False)


def _typed(storage) -> str:
    if not isinstance(storage, _Storage) or storage.code is None:
        raise TorchCheckpointError(f"_rebuild_tensor_v2 needs a typed storage, got {_short(storage)}")
    return storage.code


def _rebuild_tensor(storage, offset, size, stride):
    return _tensor(storage, offset, size, stride, _typed(storage))


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    return _tensor(storage, offset, size, stride, _typed(storage))


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not isinstance(dtype, _TorchDtype):
        raise TorchCheckpointError(f"_rebuild_tensor_v3: dtype must be a torch dtype, got {_short(dtype)}")
    return _tensor(storage, offset, size, stride, dtype.code)


def _rebuild_parameter(data, requires_grad, hooks, state=None):  # nn.Parameter(data): the data is all we keep
    if not isinstance(data, np.ndarray):
        raise TorchCheckpointError(f"_rebuild_parameter: data must be a tensor, got {_short(data)}")
    return data


def _ordered_dict(*args):
    if args:  # torch always pickles OrderedDict() and fills it with SETITEMS
        raise TorchCheckpointError(f"collections.OrderedDict{_short(args)}: only the empty call is allowed")
    return {}


def _encode(text, encoding="utf-8"):  # how protocol 2 pickles bytes: _codecs.encode(str, "latin1")
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding not in ("latin1", "latin-1"):
        raise TorchCheckpointError(f"_codecs.encode{_short((text, encoding))}: only (str, 'latin1') is allowed")
    return text.encode("latin1")


def _bytes(*args):  # how protocol 2 pickles b"": bytes()
    if args:
        raise TorchCheckpointError(f"builtins.bytes{_short(args)}: only the empty call is allowed")
    return b""


def _container(kind):
    def build(items=()):
        if not isinstance(items, (list, tuple)):
            raise TorchCheckpointError(f"builtins.{kind.__name__}: expected a list, got {_short(items)}")
        return kind(_check_key(item) for item in items)
    return build


def _size(dims=()):
    return _check_ints("torch.Size", tuple(dims) if isinstance(dims, list) else dims)


def _allow_list() -> dict:
    allowed = {
        ("collections", "OrderedDict"): _Callable("collections.OrderedDict", _ordered_dict),
        ("torch._utils", "_rebuild_tensor"): _Callable("torch._utils._rebuild_tensor", _rebuild_tensor),
        ("torch._utils", "_rebuild_tensor_v2"): _Callable("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2),
        ("torch._utils", "_rebuild_tensor_v3"): _Callable("torch._utils._rebuild_tensor_v3", _rebuild_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): _Callable("torch._utils._rebuild_parameter", _rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"):
            _Callable("torch._utils._rebuild_parameter_with_state", _rebuild_parameter),
        ("torch", "Size"): _Callable("torch.Size", _size),
        ("_codecs", "encode"): _Callable("_codecs.encode", _encode),
        ("builtins", "set"): _Callable("builtins.set", _container(set)),
        ("builtins", "frozenset"): _Callable("builtins.frozenset", _container(frozenset)),
        ("__builtin__", "set"): _Callable("builtins.set", _container(set)),  # protocol 2's Python-2 names
        ("__builtin__", "frozenset"): _Callable("builtins.frozenset", _container(frozenset)),
        ("__builtin__", "bytes"): _Callable("builtins.bytes", _bytes),
        ("torch", "UntypedStorage"): _StorageClass("UntypedStorage", None),
        ("torch.storage", "UntypedStorage"): _StorageClass("storage.UntypedStorage", None),
    }
    for code, (_, storage_name, dtype_name) in _DTYPES.items():
        allowed["torch", dtype_name] = _TorchDtype(dtype_name, code)
        if storage_name:
            allowed["torch", storage_name] = _StorageClass(storage_name, code)
    return allowed


ALLOWED = _allow_list()  # (module, name) -> stand-in; the whole of what a checkpoint may name


# ----------------------------------------------------------------------------------------------
# The restricted unpickler: an opcode interpreter over the data opcodes (ref: Lib/pickle.py, _Unpickler)


_MAX_KEY_TUPLE = 16  # dict keys and set items: scalars, or short flat tuples of them


class _Budget:
    """What one load has spent of the budgets above; every spend checks its limit."""

    def __init__(self):
        self.objects = self.hashed = self.inflated = self.stored = self.viewed = 0

    def spend(self, what: str, n: int) -> None:
        value = getattr(self, what) + n
        setattr(self, what, value)
        limit = {"objects": MAX_OBJECTS, "hashed": MAX_HASHED_KEYS, "inflated": MAX_INFLATED_BYTES,
                 "viewed": 4 * self.stored + MAX_VIEW_BYTES}.get(what)
        if limit is not None and value > limit:
            reason = {"objects": f"creates more than {MAX_OBJECTS} objects",
                      "hashed": f"has more than {MAX_HASHED_KEYS} dict keys or set items that are not strings",
                      "inflated": f"inflates to more than {MAX_INFLATED_BYTES} bytes of compressed storages",
                      "viewed": f"views {value} bytes of tensors over {self.stored} bytes of storage "
                                "(expanded or overlapping views)"}[what]
            raise TorchCheckpointError(f"the checkpoint {reason}: over what any real checkpoint needs; refused")


_BUDGET: contextvars.ContextVar = contextvars.ContextVar("pyclvp_torch_pickle_budget")


def _spend(what: str, n: int = 1) -> None:
    budget = _BUDGET.get(None)  # set by load_object for the length of a load
    if budget is not None:
        budget.spend(what, n)


def _check_key(key):
    """A dict key or set item must hash in bounded time: CPython hashes nested tuples recursively
    (a million-deep one overflows the C stack) and does not cache tuple hashes (a huge one reused
    through the memo is a hang), and ints that collide make a dict quadratic (MAX_HASHED_KEYS).
    torch only ever writes scalar keys."""
    if not isinstance(key, (str, bytes)):
        _spend("hashed")
    if isinstance(key, tuple):
        if len(key) > _MAX_KEY_TUPLE or any(isinstance(k, tuple) or not isinstance(k, _KEY_SCALARS) for k in key):
            raise TorchCheckpointError(f"data.pkl: dict key or set item {_short(key)} is not a scalar or a short "
                                       "flat tuple of scalars")
    elif not isinstance(key, _KEY_SCALARS):
        raise TorchCheckpointError(f"data.pkl: a {type(key).__name__} cannot be a dict key or set item")
    return key


_KEY_SCALARS = (str, int, float, bytes, type(None))  # bool is an int


class _Unpickler:
    """Runs one pickle; `persistent_load(pid)` turns BINPERSID ids into storages.

    Every opcode is a method named after it in pickletools' table; `_OPS` maps its byte to it. The
    interpreter is a loop over the bytes, with no recursion, so nesting depth cannot crash it. As in
    CPython's _pickle.c, MARKs live on their own stack of positions and no opcode may pop below the
    innermost mark.
    """

    def __init__(self, data: bytes, persistent_load):
        self.data, self.pos, self.persistent_load = data, 0, persistent_load
        self.stack: list = []
        self.marks: list[int] = []  # stack lengths at each open MARK
        self.memo: dict = {}

    def run(self):
        while True:
            if self.pos >= len(self.data):
                raise TorchCheckpointError("data.pkl ends without a STOP opcode (truncated?)")
            code = self.data[self.pos]
            self.pos += 1
            op = _OPS.get(code)
            if op is None:
                name = _OPCODE_NAMES.get(code, f"0x{code:02x}")
                raise UnsafeCheckpointError(f"data.pkl uses the pickle opcode {name} at byte {self.pos - 1}, "
                                            "which a weights file never needs; refused")
            if op is _Unpickler.STOP:
                if len(self.stack) != 1 or self.marks:
                    raise TorchCheckpointError(f"data.pkl stops with {len(self.stack)} items and {len(self.marks)} "
                                               "open marks, not 1 item")
                return self.stack[0]
            op(self)

    # -- reading the byte stream

    def read(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise TorchCheckpointError(f"data.pkl truncated: {n} bytes wanted at byte {self.pos}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.read(n), "little")

    def line(self) -> str:
        end = self.data.find(b"\n", self.pos, self.pos + 256)
        if end < 0:
            raise TorchCheckpointError(f"data.pkl: GLOBAL name at byte {self.pos} is not newline-terminated (truncated?)")
        text = self.data[self.pos:end].decode("utf-8", "replace")
        self.pos = end + 1
        return text

    def text(self, n: int) -> str:
        try:
            return self.read(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise TorchCheckpointError(f"data.pkl: bad UTF-8 string: {e}") from None

    # -- the stack

    def push(self, obj) -> None:
        _spend("objects")
        self.stack.append(obj)

    def pop(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise TorchCheckpointError(f"data.pkl: stack underflow at byte {self.pos - 1}")
        return self.stack.pop()

    def peek(self):
        obj = self.pop()
        self.stack.append(obj)
        return obj

    def pop_mark(self) -> list:
        if not self.marks:
            raise TorchCheckpointError(f"data.pkl: no MARK before byte {self.pos - 1}")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def top(self, kind, what: str):
        obj = self.peek()
        if type(obj) is not kind:
            raise UnsafeCheckpointError(f"data.pkl: {what} on a {type(obj).__name__}, not a {kind.__name__}; refused")
        return obj

    # -- framing and stack

    def PROTO(self):
        if self.uint(1) > 5:
            raise TorchCheckpointError("data.pkl: pickle protocol above 5")

    def FRAME(self):
        self.read(8)

    def STOP(self):
        pass  # handled in run()

    def MARK(self):
        self.marks.append(len(self.stack))

    def POP(self):
        if self.marks and len(self.stack) == self.marks[-1]:
            self.marks.pop()  # as CPython: POP with nothing above the mark discards the mark
        else:
            self.pop()

    def POP_MARK(self):
        self.pop_mark()

    def DUP(self):
        self.push(self.peek())

    # -- scalars

    def NONE(self):
        self.push(None)

    def NEWTRUE(self):
        self.push(True)

    def NEWFALSE(self):
        self.push(False)

    def BININT(self):
        self.push(int.from_bytes(self.read(4), "little", signed=True))

    def BININT1(self):
        self.push(self.uint(1))

    def BININT2(self):
        self.push(self.uint(2))

    def LONG1(self):
        self.push(int.from_bytes(self.read(self.uint(1)), "little", signed=True))

    def LONG4(self):
        n = int.from_bytes(self.read(4), "little", signed=True)
        if not 0 <= n <= 64:  # a tensor dimension never needs more than 8 bytes
            raise TorchCheckpointError(f"data.pkl: LONG4 of {n} bytes")
        self.push(int.from_bytes(self.read(n), "little", signed=True))

    def BINFLOAT(self):
        self.push(struct.unpack(">d", self.read(8))[0])

    def SHORT_BINUNICODE(self):
        self.push(self.text(self.uint(1)))

    def BINUNICODE(self):
        self.push(self.text(self.uint(4)))

    def BINUNICODE8(self):
        self.push(self.text(self.uint(8)))

    def SHORT_BINBYTES(self):
        self.push(self.read(self.uint(1)))

    def BINBYTES(self):
        self.push(self.read(self.uint(4)))

    def BINBYTES8(self):
        self.push(self.read(self.uint(8)))

    # -- containers (each filling opcode checks that its target is the plain container it expects)

    def EMPTY_TUPLE(self):
        self.push(())

    def TUPLE(self):
        self.push(tuple(self.pop_mark()))

    def TUPLE1(self):
        self.push((self.pop(),))

    def TUPLE2(self):
        b, a = self.pop(), self.pop()
        self.push((a, b))

    def TUPLE3(self):
        c, b, a = self.pop(), self.pop(), self.pop()
        self.push((a, b, c))

    def EMPTY_LIST(self):
        self.push([])

    def LIST(self):
        self.push(self.pop_mark())

    def APPEND(self):
        item = self.pop()
        self.top(list, "APPEND").append(item)

    def APPENDS(self):
        items = self.pop_mark()
        self.top(list, "APPENDS").extend(items)

    def EMPTY_DICT(self):
        self.push({})

    def DICT(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise TorchCheckpointError("data.pkl: DICT with an odd number of items")
        self.push({_check_key(k): v for k, v in zip(items[::2], items[1::2])})

    def SETITEM(self):
        value, key = self.pop(), self.pop()
        self.top(dict, "SETITEM")[_check_key(key)] = value

    def SETITEMS(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise TorchCheckpointError("data.pkl: SETITEMS with an odd number of items")
        target = self.top(dict, "SETITEMS")
        for key, value in zip(items[::2], items[1::2]):
            target[_check_key(key)] = value

    def EMPTY_SET(self):
        self.push(set())

    def ADDITEMS(self):
        items = self.pop_mark()
        self.top(set, "ADDITEMS").update(_check_key(k) for k in items)

    def FROZENSET(self):
        self.push(frozenset(_check_key(k) for k in self.pop_mark()))

    # -- memo

    def BINPUT(self):
        self.put(self.uint(1))

    def LONG_BINPUT(self):
        self.put(self.uint(4))

    def MEMOIZE(self):
        self.put(len(self.memo))

    def put(self, index: int) -> None:
        _spend("objects")
        self.memo[index] = self.peek()

    def BINGET(self):
        self._get(self.uint(1))

    def LONG_BINGET(self):
        self._get(self.uint(4))

    def _get(self, index):
        if index not in self.memo:
            raise TorchCheckpointError(f"data.pkl: memo entry {index} read before it was written")
        self.push(self.memo[index])

    # -- the only opcodes that reach beyond data

    def GLOBAL(self):
        module = self.line()
        self.push(_resolve(module, self.line()))

    def STACK_GLOBAL(self):
        name, module = self.pop(), self.pop()
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafeCheckpointError("data.pkl: STACK_GLOBAL with non-string operands; refused")
        self.push(_resolve(module, name))

    def REDUCE(self):
        args, func = self.pop(), self.pop()
        if not isinstance(func, _Callable):
            raise UnsafeCheckpointError(f"data.pkl: REDUCE calls {_short(func)}, which is not an allowed callable; refused")
        if not isinstance(args, tuple):
            raise TorchCheckpointError(f"data.pkl: REDUCE arguments must be a tuple, got {_short(args)}")
        self.push(func(*args))

    def BUILD(self):
        state = self.pop()
        target = self.peek()
        if type(target) is not dict or type(state) is not dict:
            raise UnsafeCheckpointError(
                f"data.pkl: BUILD on a {type(target).__name__} with a {type(state).__name__} state; only a "
                "state_dict's _metadata is allowed; refused")
        # state is {'_metadata': ...}: torch sets it as an attribute; module versions are not needed here.

    def BINPERSID(self):
        self.push(self.persistent_load(self.pop()))


def _resolve(module: str, name: str):
    found = ALLOWED.get((module, name))
    if found is not None:
        return found
    if module == "torch" and name in _UNSUPPORTED:
        raise TorchCheckpointError(f"the checkpoint holds torch.{name} data, a dtype this reader does not support")
    raise UnsafeCheckpointError(f"data.pkl names the global {module}.{name}, which is not in the allow-list of "
                                "tensor-rebuilding functions; refused without running anything")


_OPCODE_NAMES = {}
_OPS = {}


def _register_opcodes():
    import pickletools

    for info in pickletools.opcodes:
        code = info.code.encode("latin1")[0]
        _OPCODE_NAMES[code] = info.name
        method = getattr(_Unpickler, info.name, None)
        if method is not None:
            _OPS[code] = method


_register_opcodes()


# ----------------------------------------------------------------------------------------------
# The zip archive


_SAFE_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")
# What zipfile raises on a damaged archive (a bad CRC, a broken deflate stream, a lying header, ...).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
               RuntimeError, struct.error, zlib.error)


def _check_member_name(name: str) -> None:
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0]
            or any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", "..")):
        raise TorchCheckpointError(f"zip member name {name!r} escapes the archive folder; refused")


class _Archive:
    """The validated zip: its folder prefix, data.pkl, and storages by key."""

    def __init__(self, path: str, use_mmap: bool):
        self.path = path
        self.size = os.path.getsize(path)
        _check_is_zip(path)
        try:
            self.zip = zipfile.ZipFile(path)
        except _ZIP_ERRORS as e:
            raise TorchCheckpointError(f"{path}: corrupted zip archive: {e}") from None
        self._file = open(path, "rb")
        try:
            self.members = self._check_members()
            self.prefix = self._find_prefix()
            self.map = None
            if use_mmap and self.size:
                self.map = _mmap.mmap(self._file.fileno(), 0, access=_mmap.ACCESS_READ)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:  # arrays already handed out keep the memory map alive themselves
        self._file.close()
        self.zip.close()

    def _check_members(self) -> dict:
        """name -> (ZipInfo, data start): names safe, no duplicates, no overlaps, sizes plausible."""
        members, spans = {}, []
        for info in self.zip.infolist():
            _check_member_name(info.filename)
            if info.filename in members:
                raise TorchCheckpointError(f"zip member {info.filename!r} appears twice; refused")
            if info.flag_bits & 0x1:
                raise TorchCheckpointError(f"zip member {info.filename!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise TorchCheckpointError(f"zip member {info.filename!r}: compression method {info.compress_type} "
                                           "is not supported (torch.save stores members uncompressed)")
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise TorchCheckpointError(f"zip member {info.filename!r} is stored but its sizes differ "
                                           f"({info.compress_size} vs {info.file_size})")
            if info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 1024:
                raise TorchCheckpointError(f"zip member {info.filename!r} claims {info.file_size} bytes from "
                                           f"{info.compress_size} compressed: a zip bomb; refused")
            start = self._data_start(info)
            end = start + info.compress_size
            if end > self.size:
                raise TorchCheckpointError(f"zip member {info.filename!r} runs to byte {end}, past the end of "
                                           f"the file ({self.size} bytes)")
            members[info.filename] = (info, start)
            spans.append((info.header_offset, end, info.filename))
        spans.sort()
        for (_, end, name), (begin, _, other) in zip(spans, spans[1:]):
            if begin < end:
                raise TorchCheckpointError(f"zip members {name!r} and {other!r} overlap (a zip bomb); refused")
        return members

    def _data_start(self, info) -> int:
        """Offset of a member's data: after its local header (ref: APPNOTE.TXT 4.3.7)."""
        if not 0 <= info.header_offset <= self.size - 30:
            raise TorchCheckpointError(f"zip member {info.filename!r}: header offset {info.header_offset} is outside the file")
        self._file.seek(info.header_offset)
        header = self._file.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise TorchCheckpointError(f"zip member {info.filename!r}: no local header at byte {info.header_offset}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        if self._file.read(name_len) != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
            raise TorchCheckpointError(f"zip member {info.filename!r}: local header names another file")
        return info.header_offset + 30 + name_len + extra_len

    def _find_prefix(self) -> str:
        pickles = [n for n in self.members if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            found = "no" if not pickles else f"{len(pickles)}"
            raise TorchCheckpointError(f"{self.path}: {found} <folder>/data.pkl in the zip; not a torch.save checkpoint")
        prefix = pickles[0][:-len("data.pkl")]
        strays = [n for n in self.members if not n.startswith(prefix)]
        if strays:
            raise TorchCheckpointError(f"zip members outside the archive folder {prefix!r}: {strays[:5]}")
        return prefix

    def read(self, name: str, limit: int) -> bytes:
        info, _ = self.members[name]
        if info.file_size > limit:
            raise TorchCheckpointError(f"zip member {name!r} is {info.file_size} bytes, over the {limit}-byte limit")
        try:
            return self.zip.read(info)
        except _ZIP_ERRORS as e:
            raise TorchCheckpointError(f"zip member {name!r}: {e}") from None

    def byteorder(self) -> str:
        name = self.prefix + "byteorder"
        if name not in self.members:
            return "little"
        order = self.read(name, 16).decode("ascii", "replace")
        if order not in ("little", "big"):
            raise TorchCheckpointError(f"byteorder is {order!r}, not 'little' or 'big'")
        return order

    def storage(self, key: str, nbytes: int) -> np.ndarray:
        """Storage `key` as a read-only (nbytes,) uint8 array, after checking its size."""
        name = f"{self.prefix}data/{key}"
        if name not in self.members:
            raise TorchCheckpointError(f"storage {key!r} is missing from the archive (no member {name!r})")
        info, start = self.members[name]
        if info.file_size != nbytes:
            raise TorchCheckpointError(f"storage {key!r} holds {info.file_size} bytes but its id declares {nbytes}")
        _spend("stored", nbytes)
        if self.map is not None and info.compress_type == zipfile.ZIP_STORED:
            return np.frombuffer(self.map, np.uint8, nbytes, start)
        if info.compress_type != zipfile.ZIP_STORED:
            _spend("inflated", nbytes)
        return np.frombuffer(self.read(name, nbytes), np.uint8)


def _check_is_zip(path: str) -> None:
    """Name the format of a file that is not a zip, so the error says what to do."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK"):
        return
    if head.startswith(_LEGACY_MAGIC):
        raise TorchCheckpointError(
            f"{path} uses the legacy (pre-1.6, non-zip) torch.save format. Re-save it with a recent PyTorch "
            "(torch.save(torch.load(f), f)) or convert it to safetensors, then load that.")
    if len(head) > 262 and head[257:262] == b"ustar":
        raise TorchCheckpointError(f"{path} is a tar archive (the pre-1.0 torch.save format); re-save it with "
                                   "a recent PyTorch")
    if len(head) >= 9 and head[8:9] == b"{":
        raise TorchCheckpointError(f"{path} looks like a safetensors file; read it with pyclvp.io.safetensors")
    raise TorchCheckpointError(f"{path} is not a PyTorch zip checkpoint (it does not start with a zip header)")


# ----------------------------------------------------------------------------------------------
# Loading


class _StorageLoader:
    """persistent_load for one archive: checks each id, loads each key once, byte-swaps big-endian."""

    def __init__(self, archive: _Archive, widen_bf16: bool):
        self.archive, self.big_endian, self.widen_bf16 = archive, archive.byteorder() == "big", widen_bf16
        self.loaded: dict[str, _Storage] = {}

    def __call__(self, pid) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[0], str) and pid[0] == "storage"):
            raise TorchCheckpointError(f"persistent id {_short(pid)} is not ('storage', class, key, location, numel)")
        _, storage_class, key, location, numel = pid
        if not isinstance(storage_class, _StorageClass):
            raise UnsafeCheckpointError(f"persistent id names {_short(storage_class)}, not a storage class; refused")
        if not isinstance(key, str) or not _SAFE_KEY.fullmatch(key):
            raise TorchCheckpointError(f"storage key {_short(key)} is not a plain name; refused")
        if not isinstance(location, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise TorchCheckpointError(f"persistent id {_short(pid)}: bad location or numel")
        code = storage_class.code
        nbytes = numel * (1 if code is None else np.dtype(_DTYPES[code][0]).itemsize)
        if key in self.loaded:
            known = self.loaded[key]
            if known.code != code or known.raw.size != nbytes:
                raise TorchCheckpointError(f"storage {key!r} is declared twice with different types or sizes")
            return known
        raw = self.archive.storage(key, nbytes)
        if self.big_endian and code is not None:
            raw = raw.view(np.dtype(_DTYPES[code][0]).newbyteorder(">")).astype(_DTYPES[code][0]).view(np.uint8)
        if self.big_endian and code is None:
            raise TorchCheckpointError("big-endian files with untyped storages (uint16/32/64) are not supported")
        self.loaded[key] = _Storage(key, code, raw, self.widen_bf16)
        return self.loaded[key]


def load_object(path, *, mmap: bool = True, bf16: str = "float32"):
    """The object a `torch.save` file holds (dicts, lists, numbers, strings), tensors as NumPy arrays."""
    check_choice("bf16", bf16, BF16_CHOICES)
    path = os.fspath(path)
    token = _BUDGET.set(_Budget())
    archive = None
    try:
        archive = _Archive(path, mmap)
        loader = _StorageLoader(archive, widen_bf16=bf16 == "float32")
        return _Unpickler(archive.read(archive.prefix + "data.pkl", MAX_PICKLE_BYTES), loader).run()
    finally:
        if archive is not None:
            archive.close()
        _BUDGET.reset(token)


def load(path, *, mmap: bool = True, bf16: str = "float32") -> dict[str, np.ndarray]:
    """A state_dict file ({name: tensor}, as torch.save(model.state_dict()) writes it) as {name: array}.

    mmap=True: read-only zero-copy views of the file (bfloat16 -> float32 and big-endian files copy).
    bf16="raw" keeps bfloat16 tensors as their uint16 bits.
    """
    obj = load_object(path, mmap=mmap, bf16=bf16)
    if not isinstance(obj, dict):
        raise TorchCheckpointError(f"{os.fspath(path)} holds a {type(obj).__name__}, not a state_dict; "
                                   "use load_object() for other structures")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            hint = " (a training checkpoint? its weights may be under one of its keys: use load_object())"
            raise TorchCheckpointError(f"{os.fspath(path)}: entry {_short(key)} is a {type(value).__name__}, "
                                       f"not a tensor; not a flat state_dict{hint}")
    return obj
