"""pyclvp.io.torch_pickle: torch.save files read without torch, equal to torch's own tensors; hostile files refused.

Fixtures (tools/ref_torch_pickle.py): real torch.save files with torch's values beside them, transformers
.bin folders with torch's sha256 of every tensor, and hostile/ with manifest.json naming the error each
file must raise.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import DATA, MAX_EXAMPLES
from pyclvp.io import torch_pickle as tp
from pyclvp.io.checkpoints import BIN_INDEX, CheckpointError, load_bin_folder
from pyclvp.io.torch_pickle import TorchCheckpointError, UnsafeCheckpointError

TP = DATA / "torch_pickle"
HOSTILE = TP / "hostile"
MANIFEST = json.loads((HOSTILE / "manifest.json").read_text())["files"]


def _sha(arr) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Real torch.save files: the arrays equal torch's


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
@pytest.mark.parametrize("name", ["dtypes.pt", "proto4.pt"])
def test_every_dtype_and_view_equals_torch(name, mmap):
    got = tp.load(TP / name, mmap=mmap)
    want = np.load(TP / "dtypes.npz")
    assert list(got) == [k for k in want.files if not k.endswith(".bits")]  # state_dict order kept
    for key, arr in got.items():
        assert arr.dtype == want[key].dtype and arr.shape == want[key].shape, key
        np.testing.assert_array_equal(arr, want[key], err_msg=key)


def test_literal_values():
    got = tp.load(TP / "dtypes.pt")
    np.testing.assert_array_equal(got["view_slice"], [[8, 9, 10], [14, 15, 16]])
    np.testing.assert_array_equal(got["view_step"], [[0, 3], [12, 15]])
    np.testing.assert_array_equal(got["view_expand"], np.tile(np.arange(3.0, dtype=np.float32), (4, 1)))
    assert got["scalar"].shape == () and got["scalar"] == 2.5
    assert got["empty"].shape == (0, 7) and got["empty"].dtype == np.float32
    assert got["x_bool"].tolist() == [True, False, True]
    assert got["x_uint64"].dtype == np.uint64 and got["x_uint16"].dtype == np.uint16


def test_views_share_the_memory_map_without_copies():
    got = tp.load(TP / "dtypes.pt", mmap=True)
    base = got["view_base"]
    for key in ("view_transposed", "view_slice", "view_step"):
        assert np.shares_memory(got[key], base), key
    assert got["view_transposed"].strides == (4, 24)  # torch's stride (1, 6), in bytes
    assert got["view_expand"].strides == (0, 4)
    for key, arr in got.items():  # views of the map are read-only; bfloat16 (widened) and empty tensors are copies
        assert arr.flags.writeable == ("bf" in key or arr.size == 0), key


def test_bf16_float32_by_default_raw_bits_on_request():
    want = np.load(TP / "dtypes.npz")
    wide, raw = tp.load(TP / "dtypes.pt"), tp.load(TP / "dtypes.pt", bf16="raw")
    for key in ("x_bfloat16", "bf16_transposed"):
        assert wide[key].dtype == np.float32 and raw[key].dtype == np.uint16
        np.testing.assert_array_equal(raw[key], want[key + ".bits"])
        np.testing.assert_array_equal(wide[key], want[key])
    with pytest.raises(ValueError, match="bf16"):
        tp.load(TP / "dtypes.pt", bf16="float16")


def test_big_endian_file_is_byte_swapped():
    got, want = tp.load(TP / "big_endian.pt"), np.load(TP / "big_endian.npz")
    for key, arr in got.items():
        assert arr.dtype == want[key].dtype, key
        np.testing.assert_array_equal(arr, want[key], err_msg=key)


def test_load_object_reads_a_training_checkpoint():
    obj = tp.load_object(TP / "nested.pt")
    np.testing.assert_array_equal(obj.pop("state_dict")["w"], np.arange(4, dtype=np.float32))
    assert obj == {"epoch": 3, "lr": 0.5, "name": "run", "betas": (0.9, 0.99), "flags": [True, False, None],
                   "raw": b"\x00\xff", "ids": {1, 2}, "size": (2, 3), "big": 2**70, "neg": -5}


def test_load_wants_a_flat_state_dict():
    with pytest.raises(TorchCheckpointError, match="'state_dict' is a dict, not a tensor.*load_object"):
        tp.load(TP / "nested.pt")


# ----------------------------------------------------------------------------------------------
# transformers .bin folders


def test_transformers_bin_equals_torch_tensors():
    want = json.loads((TP / "hf_bin_tensors.json").read_text())["tensors"]
    for folder in ("hf_bin", "hf_bin_sharded"):
        got = load_bin_folder(TP / folder)
        assert sorted(got) == sorted(want), folder
        for key, arr in got.items():
            assert (str(arr.dtype), list(arr.shape), _sha(arr)) == (want[key]["dtype"], want[key]["shape"],
                                                                     want[key]["sha256"]), f"{folder}: {key}"


def _copy_sharded(tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(TP / "hf_bin_sharded", folder)
    return folder, json.loads((folder / BIN_INDEX).read_text())


def test_load_pretrained_checks_the_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        load_bin_folder(tmp_path)
    folder, index = _copy_sharded(tmp_path)
    name = next(iter(index["weight_map"]))
    for shard, error in [("../../elsewhere.bin", "not a file name"), ("pytorch_model-00002-of-00002.bin", "missing")]:
        index["weight_map"][name] = shard
        (folder / BIN_INDEX).write_text(json.dumps(index))
        with pytest.raises(CheckpointError, match=error):
            load_bin_folder(folder)
    (folder / BIN_INDEX).write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid index"):
        load_bin_folder(folder)


# ----------------------------------------------------------------------------------------------
# The hostile corpus


def test_manifest_covers_every_hostile_file():
    on_disk = {p.name for p in HOSTILE.iterdir()} - {"manifest.json"}
    assert on_disk == set(MANIFEST)


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_hostile_file_is_refused(name, mmap):
    case = MANIFEST[name]
    error = {"UnsafeCheckpointError": UnsafeCheckpointError, "TorchCheckpointError": TorchCheckpointError}[case["error"]]
    with pytest.raises(error, match=case["match"]) as info:
        tp.load(HOSTILE / name, mmap=mmap)
    if error is TorchCheckpointError:
        assert not isinstance(info.value, UnsafeCheckpointError) or case["error"] == "UnsafeCheckpointError"


# Audit events that would mean code ran, a process started or a file was written (PEP 578).
_FORBIDDEN_EVENTS = ("os.system", "subprocess.Popen", "os.posix_spawn", "os.exec", "os.spawn", "os.fork",
                     "os.forkpty", "exec", "compile", "pickle.find_class", "os.remove", "os.rename", "os.mkdir",
                     "shutil.", "ctypes.", "socket.")


class _Recorder:
    """A process-wide audit hook (hooks cannot be removed) that records only while `active`."""

    def __init__(self):
        self.active, self.events = False, []
        sys.addaudithook(self)

    def __call__(self, event, args):
        if not self.active:
            return
        if event.startswith(_FORBIDDEN_EVENTS):
            self.events.append((event, repr(args)[:200]))
        elif event == "open" and (args[1] not in (None, "r", "rb") or (isinstance(args[2], int) and args[2] & 0o3)):
            self.events.append((event, repr(args)[:200]))  # opened for writing


_AUDIT = _Recorder()


def test_hostile_corpus_runs_nothing_and_writes_nothing(tmp_path, monkeypatch):
    calls = []

    def recorder(name):
        return lambda *a, **k: calls.append((name, a))

    for module, name in [(os, "system"), (os, "popen"), (os, "posix_spawn"), (os, "posix_spawnp"), (os, "execv"),
                         (os, "execve"), (os, "fork"), (subprocess, "Popen"), (subprocess, "run"),
                         (subprocess, "call"), (subprocess, "check_output")]:
        if hasattr(module, name):
            monkeypatch.setattr(module, name, recorder(f"{module.__name__}.{name}"))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    existed = {p: os.path.exists(p) for p in ("/tmp/pwned_abs", str(tmp_path / "pwned_zip"))}
    refused = 0
    _AUDIT.active = True
    eval("1")  # the recorder works: eval raises the "compile" and "exec" audit events
    assert [e for e, _ in _AUDIT.events] == ["compile", "exec"]
    _AUDIT.events.clear()
    try:
        for name in sorted(MANIFEST):
            for mmap in (True, False):
                try:
                    tp.load(HOSTILE / name, mmap=mmap)
                except TorchCheckpointError:
                    refused += 1
    finally:
        _AUDIT.active = False
    assert refused == 2 * len(MANIFEST)
    assert calls == [], f"process-starting functions were called: {calls}"
    assert _AUDIT.events == [], f"forbidden audit events while loading: {_AUDIT.events}"
    assert list(work.iterdir()) == [], "a file appeared in the working directory"
    assert {p: os.path.exists(p) for p in existed} == existed


# ----------------------------------------------------------------------------------------------
# The unpickler alone: properties over data-only pickles and arbitrary bytes


def _run(data: bytes):
    def no_storages(pid):
        raise TorchCheckpointError(f"unexpected persistent id {pid!r}")
    return tp._Unpickler(data, no_storages).run()


_scalars = st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=False) | st.text() | st.binary()
_data = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4) | st.tuples(kids, kids)
                     | st.dictionaries(st.text(max_size=5) | st.integers(), kids, max_size=4)
                     | st.frozensets(st.integers(), max_size=4), max_leaves=20)


@settings(deadline=None, max_examples=MAX_EXAMPLES)
@given(obj=_data, protocol=st.integers(2, 5))
def test_hyp_data_pickles_round_trip(obj, protocol):
    assert _run(pickle.dumps(obj, protocol=protocol)) == obj


def test_data_pickle_literal():
    assert _run(b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(h\x01NeX\x01\x00\x00\x00cJ\xff\xff\xff\xffu.") \
        == {"a": 1, "b": ["a", None], "c": -1}


@settings(deadline=None, max_examples=MAX_EXAMPLES)
@given(data=st.binary(max_size=200))
def test_hyp_arbitrary_bytes_raise_only_checkpoint_errors(data):
    try:
        _run(data)
    except TorchCheckpointError:
        pass


@settings(deadline=None, max_examples=MAX_EXAMPLES)
@given(cut=st.integers(0, 400), flip=st.integers(0, 255))
def test_hyp_corrupted_checkpoints_raise_only_checkpoint_errors(tmp_path_factory, cut, flip):
    data = bytearray((TP / "proto4.pt").read_bytes()[:2000])
    if cut < len(data):
        data[cut] ^= flip
    path = tmp_path_factory.mktemp("corrupt") / "x.pt"
    path.write_bytes(bytes(data[:cut + 1500]))
    try:
        tp.load_object(path)
    except TorchCheckpointError:
        pass


def test_deep_nesting_does_not_recurse():
    depth = 200_000
    obj = _run(b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".")
    for _ in range(depth - 1):
        (obj,) = obj
    assert obj == []


def test_deep_or_huge_dict_keys_are_refused_before_hashing():
    deep = b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"Ns."  # {((((...)))): None}: hash() would overflow the C stack
    with pytest.raises(TorchCheckpointError, match="not a scalar or a short flat tuple"):
        _run(deep)
    with pytest.raises(TorchCheckpointError, match="a list cannot be a dict key"):
        _run(b"\x80\x02}]Ns.")
    assert _run(b"\x80\x02}K\x01K\x02\x86Ns.") == {(1, 2): None}


def test_stack_discipline():
    with pytest.raises(TorchCheckpointError, match="underflow"):
        _run(b"\x80\x02N(\x85.")  # TUPLE1 may not reach below the open MARK
    with pytest.raises(TorchCheckpointError, match="open marks"):
        _run(b"\x80\x02(N.")
    assert _run(b"\x80\x02(0N.") is None  # POP right after MARK discards the mark, as in CPython


def test_only_known_globals_are_allowed():
    modules = {module for module, _ in tp.ALLOWED}
    assert modules == {"collections", "torch", "torch._utils", "torch.storage", "_codecs", "builtins", "__builtin__"}
    assert ("builtins", "eval") not in tp.ALLOWED and ("torch", "load") not in tp.ALLOWED
    assert all(not callable(v) or isinstance(v, tp._Callable) for v in tp.ALLOWED.values())


def test_errors_are_value_errors():
    assert issubclass(UnsafeCheckpointError, TorchCheckpointError) and issubclass(TorchCheckpointError, ValueError)


def test_compressed_storages_are_read_through_zipfile(tmp_path):
    """A deflated re-zip of a torch file (torch never compresses) loads, as a copy, with the same values."""
    src, dst = TP / "dtypes.pt", tmp_path / "deflated.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    got, want = tp.load(dst), tp.load(src)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


# ----------------------------------------------------------------------------------------------
# Budgets: small hostile files cannot make the reader allocate or hash without bound (the limits are patched
# down here so that each case runs in milliseconds; the real ones are far above any real checkpoint's needs)


def _archive(path, pickle_bytes: bytes, storages: dict = (), deflate=()):
    """A torch.save-shaped zip: archive/data.pkl and archive/data/<key> members (deflated where named)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        for key, data in dict(storages).items():
            z.writestr(f"archive/data/{key}", data,
                       compress_type=zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED)
    return path


def _text(s: str) -> bytes:  # BINUNICODE
    return b"X" + len(s).to_bytes(4, "little") + s.encode()


def _tensor_pickle(numel: int, size: int | None, stride: int = 1, storage: str = "FloatStorage") -> bytes:
    """A pickle of one tensor: _rebuild_tensor_v2(storage '0' of `numel`, 0, (size,), (stride,), False, {});
    size None: a 0-d tensor, size () and stride ()."""
    pid = b"(" + _text("storage") + f"ctorch\n{storage}\n".encode() + _text("0") + _text("cpu") + \
        b"J" + numel.to_bytes(4, "little") + b"tQ"
    dims = b"))" if size is None else b"(J" + size.to_bytes(4, "little") + b"t" + b"(K" + bytes([stride]) + b"t"
    args = b"(" + pid + b"K\x00" + dims + b"\x89" + b"ccollections\nOrderedDict\n)R" + b"t"
    return b"\x80\x02" + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R."


def test_budget_limits_are_far_above_real_checkpoints():
    assert tp.MAX_OBJECTS >= 1_000_000 and tp.MAX_HASHED_KEYS >= 1_000 and tp.MAX_INFLATED_BYTES >= 1 << 20


def test_a_real_tensor_pickle_passes_the_budgets(tmp_path):
    arr = tp.load_object(_archive(tmp_path / "ok.pt", _tensor_pickle(4, 4, 1), {"0": np.arange(4, dtype="<f4")
                                                                                 .tobytes()}))
    np.testing.assert_array_equal(arr, np.arange(4, dtype=np.float32))


def test_object_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "MAX_OBJECTS", 1000)
    path = _archive(tmp_path / "bomb.pt", b"\x80\x02" + b"}" * 1200 + b".")  # a new dict pushed 1200 times...
    path2 = _archive(tmp_path / "bomb2.pt", b"\x80\x02]" + b"2" * 2000 + b".")  # ... or one list DUP'ed 2000 times
    for p in (path, path2):
        with pytest.raises(TorchCheckpointError, match="creates more than 1000 objects"):
            tp.load_object(p)


def test_colliding_int_keys_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "MAX_HASHED_KEYS", 10)
    modulus = (1 << 61) - 1  # CPython's int hash: every multiple of it hashes to 0
    items = b"".join(b"\x8a\x09" + (i * modulus).to_bytes(9, "little", signed=True) + b"N" for i in range(20))
    with pytest.raises(TorchCheckpointError, match="more than 10 dict keys or set items that are not strings"):
        tp.load_object(_archive(tmp_path / "keys.pt", b"\x80\x02}(" + items + b"u."))


def test_deflated_storage_cannot_inflate_past_its_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "MAX_INFLATED_BYTES", 1 << 20)
    numel = (2 << 20) // 4  # 2 MiB of zeros deflate to ~2 kB, within deflate's own ratio
    path = _archive(tmp_path / "zipbomb.pt", _tensor_pickle(numel, numel, 1), {"0": bytes(numel * 4)}, deflate={"0"})
    for mmap in (True, False):
        with pytest.raises(TorchCheckpointError, match="inflates to more than 1048576 bytes"):
            tp.load_object(path, mmap=mmap)


def test_expanded_views_cannot_imply_unbounded_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "MAX_VIEW_BYTES", 1 << 10)
    path = _archive(tmp_path / "stride0.pt", _tensor_pickle(4, 100_000, 0), {"0": bytes(16)})  # 400 kB from 16 B
    with pytest.raises(TorchCheckpointError, match="views 400000 bytes of tensors over 16 bytes of storage"):
        tp.load_object(path)


@pytest.mark.parametrize("bf16", ["float32", "raw"])
def test_zero_d_bfloat16_tensor_loads_as_a_zero_d_array(tmp_path, bf16):
    path = _archive(tmp_path / "scalar.pt", _tensor_pickle(1, None, storage="BFloat16Storage"),
                    {"0": np.array([0x4020], "<u2").tobytes()})  # bfloat16 2.5
    arr = tp.load_object(path, bf16=bf16)
    assert isinstance(arr, np.ndarray) and arr.shape == ()
    assert arr == (2.5 if bf16 == "float32" else 0x4020)
