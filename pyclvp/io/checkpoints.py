"""A model folder's weights: which files hold them, and a checked loader for a spec of names and shapes.

A folder holds its tensors in one of four layouts, tried in this order (transformers' names):
  model.safetensors                      one safetensors file
  model.safetensors.index.json + shards  {"weight_map": {tensor name: shard file name}}
  pytorch_model.bin                      one torch.save file (read by pyclvp/io/torch_pickle.py)
  pytorch_model.bin.index.json + shards  the same index format
Both index formats go through one reader (`read_shard_index`): a shard must be a plain file name in the
folder (no directories, no `..`, nothing absolute), so an index cannot reach files outside it.

Loading (`load_weights(folder, spec, dtype)`, spec = {name: shape}):
  1. read every header (no data yet) and compare names and shapes with the spec; collect *all*
     missing, unexpected and wrongly shaped tensors and raise one CheckpointError listing them;
  2. memory-map the data and hand out arrays in the chosen dtype: a tensor already stored in that
     dtype is a zero-copy read-only view of the map; only the others are converted (copied).
NumPy has no bfloat16: a "float32" or "float16" load widens or converts bfloat16 tensors; a backend's
`prepare` hook (Ops.prepare_weight) receives every tensor as stored (bfloat16 as a Bf16Array view) and
decides what the model keeps.

int8 weights (pyclvp/io/q8.py): a safetensors file written by `pyclvp convert --weights int8` stores a quantized
matrix as an I8 tensor and its float32 scales (name + "_scale"); step 1 pairs them into one Q8Matrix of the
checkpoint's shape (transposed ones listed in the file's metadata), step 2 hands it to `prepare` as it is.
load_weights(..., quantize={name: transposed}) quantizes those float matrices as they are loaded, one at a time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import torch_pickle
from .files import read_json
from .half import as_bf16, to_dtype
from .q8 import METADATA_KEY, SCALE_SUFFIX, Q8Matrix, quantize_matrix
from .safetensors import SafetensorsError, release_pages, safe_open

__all__ = ["CheckpointError", "SAFETENSORS_NAME", "SAFETENSORS_INDEX", "BIN_NAME", "BIN_INDEX", "DTYPES",
           "check_folder", "read_shard_index", "find_weight_files", "check_shapes", "convert_weight", "load_weights",
           "load_bin_folder", "tensor_headers", "pair_int8"]

SAFETENSORS_NAME, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN_NAME, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}
_FLOAT_STORED = {"F64", "F32", "F16", "BF16"}


class CheckpointError(ValueError):
    """A checkpoint folder is missing files, or its tensors do not fit the config; the message lists all problems."""


def check_folder(folder) -> Path:
    """The model folder as a Path; one wording, wherever a folder is opened, for one that is not there."""
    folder = Path(folder)
    if not folder.is_dir():
        error, what = ((NotADirectoryError, "is a file, not a folder") if folder.exists() else
                       (FileNotFoundError, "does not exist"))
        raise error(f"model folder {folder} {what} (expected config.json + {SAFETENSORS_NAME})")
    return folder


# ----------------------------------------------------------------------------------------------
# Files


def read_shard_index(index_path: Path) -> dict[str, str]:
    """{tensor name: shard file name} of a safetensors or .bin index; every shard a file in the index's folder."""
    try:
        weight_map = read_json(index_path)["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path} is not a valid index (it needs a 'weight_map' object): "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_path}: 'weight_map' must map tensor names to file names")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index_path}: shard {shard!r} of {name!r} is not a file name in the folder")
    absent = [s for s in dict.fromkeys(weight_map.values()) if not (Path(index_path).parent / s).is_file()]
    if absent:
        raise CheckpointError(f"{index_path} names shard files that are missing: {', '.join(absent)}")
    return weight_map


def find_weight_files(folder) -> list[Path]:
    """The safetensors file(s) of a checkpoint folder: model.safetensors, or the shards of the index."""
    folder = check_folder(folder)
    if (folder / SAFETENSORS_NAME).is_file():
        return [folder / SAFETENSORS_NAME]
    if (folder / SAFETENSORS_INDEX).is_file():
        return [folder / s for s in dict.fromkeys(read_shard_index(folder / SAFETENSORS_INDEX).values())]
    others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".ckpt"))
    hint = (f"; found {', '.join(others)}: convert it with `pyclvp convert` (a transformers .bin) or "
            "`pyclvp convert-tortoise` (Tortoise's .pth files)") if others else ""
    raise CheckpointError(f"no {SAFETENSORS_NAME} or {SAFETENSORS_INDEX} in {folder}{hint}")


def load_bin_folder(folder, *, mmap: bool = True, bf16: str = "float32") -> dict[str, np.ndarray]:
    """The weights of a folder saved as PyTorch pickles: pytorch_model.bin, or the shards of its index."""
    folder = check_folder(folder)
    if not (folder / BIN_INDEX).is_file():
        if not (folder / BIN_NAME).is_file():
            raise FileNotFoundError(f"{folder} has neither {BIN_NAME} nor {BIN_INDEX}")
        return torch_pickle.load(folder / BIN_NAME, mmap=mmap, bf16=bf16)
    weight_map = read_shard_index(folder / BIN_INDEX)
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        found = torch_pickle.load(folder / shard, mmap=mmap, bf16=bf16)
        wanted = {name for name, file in weight_map.items() if file == shard}
        if set(found) != wanted:
            missing, extra = sorted(wanted - set(found)), sorted(set(found) - wanted)
            raise CheckpointError(f"shard {shard} does not match {BIN_INDEX}: missing {missing[:10]}, "
                                  f"unlisted {extra[:10]}")
        tensors.update(found)
    return {name: tensors[name] for name in weight_map}


# ----------------------------------------------------------------------------------------------
# Checking and loading


def tensor_headers(files) -> dict:
    """name -> (open file, stored dtype, shape), reading headers only; a name in two shards is an error."""
    entries, dupes = {}, []
    for path in files:
        try:
            f = safe_open(path, mmap=True, bf16="raw")
        except SafetensorsError as e:
            raise CheckpointError(f"{path}: {e}") from None
        for name in f.keys():
            if name in entries:
                dupes.append(name)
            entries[name] = (f, f.get_dtype(name), f.get_shape(name))
    if dupes:
        raise CheckpointError(f"tensors stored in more than one shard: {', '.join(sorted(dupes))}")
    return entries


def check_shapes(shapes: dict, spec: dict, where, optional=()) -> None:
    """Compare {name: shape} with the spec: one CheckpointError listing every missing, unexpected, misshaped tensor
    (names in `optional` may be absent)."""
    missing = [n for n in spec if n not in shapes and n not in optional]
    unexpected = [n for n in shapes if n not in spec]
    misshaped = [f"{n} {tuple(shapes[n])} (expected {spec[n]})" for n in spec
                 if n in shapes and tuple(shapes[n]) != spec[n]]
    problems = [(f"{len(missing)} missing", missing), (f"{len(unexpected)} unexpected", unexpected),
                (f"{len(misshaped)} with the wrong shape", misshaped)]
    lines = [f"  {title}: " + _first(names) for title, names in problems if names]
    if lines:
        raise CheckpointError(f"checkpoint {where} does not match its config:\n" + "\n".join(lines))


def _first(names, shown: int = 5) -> str:
    """The first few names and a count of the rest: an error stays a few lines when 916 tensors are missing."""
    return ", ".join(names[:shown]) + (f", ... and {len(names) - shown} more" if len(names) > shown else "")


def _check_float(stored: dict) -> None:  # {name: stored dtype name}
    bad = [f"{n} ({s})" for n, s in stored.items() if s not in _FLOAT_STORED and s not in ("Q8", "Q8T")]
    if bad:
        raise CheckpointError(f"tensors that are not floating point: {_first(bad)}")


def pair_int8(entries: dict) -> dict:
    """Pairs each I8 tensor with its scale (name + SCALE_SUFFIX) into one entry (f, "Q8" or "Q8T", logical shape);
    the scale entries go. "Q8T": stored transposed, as the file's metadata lists. An I8 tensor without its scale
    stays as it is (and _check_float refuses it)."""
    out = dict(entries)
    for name, (f, stored, shape) in entries.items():
        if stored != "I8" or name + SCALE_SUFFIX not in entries or len(shape) != 2:
            continue
        transposed = name in ((f.metadata() or {}).get(METADATA_KEY) or "").split(",")
        out[name] = (f, "Q8T", tuple(shape[::-1])) if transposed else (f, "Q8", tuple(shape))
        del out[name + SCALE_SUFFIX]
    return out


def _as_stored(f, name, stored):
    """The tensor as stored, a zero-copy view (BF16 bits marked as a Bf16Array; int8 pairs as a Q8Matrix)."""
    if stored in ("Q8", "Q8T"):
        try:
            return Q8Matrix(f.get_tensor(name), f.get_tensor(name + SCALE_SUFFIX), stored == "Q8T")
        except ValueError as e:
            raise CheckpointError(f"{f.path}: {e} (tensor {name})") from None
    arr = np.asarray(f.get_tensor(name))
    return as_bf16(arr) if stored == "BF16" else arr


def convert_weight(name, array, dtype="float32"):
    """The default weight hook: `array` in "float32" or "float16", itself when stored so (a zero-copy view),
    else a converted copy (bfloat16 widened exactly, then rounded when float16 is asked for). An int8 matrix
    (Q8Matrix) is kept as it is: the reference dequantizes it where it is used."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return array if isinstance(array, Q8Matrix) else to_dtype(array, dtype)


def _has_only_bin(folder: Path) -> bool:
    if (folder / SAFETENSORS_NAME).is_file() or (folder / SAFETENSORS_INDEX).is_file():
        return False
    return (folder / BIN_NAME).is_file() or (folder / BIN_INDEX).is_file()


def load_weights(folder, spec: dict, dtype: str = "float32", prepare=None, optional=(),
                 quantize=None) -> dict[str, np.ndarray]:
    """name -> array for every tensor of the spec ({name: shape}; names in `optional` only if present).

    prepare: a backend's hook, Ops.prepare_weight(name, array, dtype) (pyclvp/ops); it gets each tensor as
    stored (a zero-copy view; BF16 as a Bf16Array; an int8 pair as a Q8Matrix) and returns what the model keeps,
    or refuses the dtype. The default, convert_weight, keeps "float32" or "float16".
    quantize: {name: transposed} of float matrices to quantize to int8 (quantize_matrix) before `prepare` sees them;
    those stored int8 already are kept.
    """
    (prepare or convert_weight)("", np.zeros(0, np.float32), dtype)  # an unknown dtype fails before any file is read
    folder = check_folder(folder)
    if _has_only_bin(folder):  # through the allow-listed unpickler: nothing in the file is run
        try:
            tensors = load_bin_folder(folder)  # bfloat16 arrives widened to float32
        except torch_pickle.TorchCheckpointError as e:
            raise CheckpointError(f"{folder}: {e}") from None
        check_shapes({name: arr.shape for name, arr in tensors.items()}, spec, folder, optional)
        _check_float({name: arr.dtype.name for name, arr in tensors.items() if arr.dtype.kind != "f"})
        stored = tensors
    else:
        entries = pair_int8(tensor_headers(find_weight_files(folder)))
        check_shapes({name: shape for name, (_, _, shape) in entries.items()}, spec, folder, optional)
        _check_float({name: s for name, (_, s, _) in entries.items()})
        stored = {name: _as_stored(f, name, s) for name, (f, s, _) in entries.items()}
    quantize = quantize or {}

    def load(name, arr):
        if name in quantize and not isinstance(arr, Q8Matrix):
            arr, read = quantize_matrix(arr, quantize[name]), arr
            release_pages(read)  # only the int8 copy is kept: the float pages leave the resident set
        return (prepare or convert_weight)(name, arr, dtype)

    return {name: load(name, arr) for name, arr in stored.items()}
