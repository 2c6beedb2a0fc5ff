"""The checkpoint: which tensors a CLVP model needs (the spec), and a loader that checks a file against it.

The spec lists every tensor of transformers' `ClvpModelForConditionalGeneration.state_dict()` under
transformers' own names, with the shape the config implies. Shape letters: V vocab, C hidden,
F feed-forward width, M mel bins, R rotary dim, P projection dim (each per sub-model's config).

Loading (`load_checkpoint(folder, config, dtype)`):
  1. find the files: `model.safetensors`, or the shards named by `model.safetensors.index.json`
     (failing both, `pytorch_model.bin` or its shards, read by pyclvp.torch_pickle, see _load_torch);
  2. read every header (no data yet) and compare names and shapes with the spec; collect *all*
     missing, unexpected and wrongly shaped tensors and raise one CheckpointError listing them;
  3. memory-map the data and hand out arrays in the chosen dtype: a tensor already stored in that
     dtype is a zero-copy read-only view of the map; only the others are converted (copied).

NumPy has no bfloat16, so "float32" and "float16" are the dtypes a model can keep its weights in;
bfloat16 checkpoints are widened on load (exact for float32). The ops widen weights to float32 per
call, so the arithmetic is float32 whatever the storage dtype.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import torch_pickle
from ..config import ClvpConfig
from ..ops.half import as_bf16
from ..safetensors import SafetensorsError, bfloat16_to_float32, safe_open

__all__ = ["CheckpointError", "checkpoint_spec", "check_shapes", "OPTIONAL", "load_checkpoint", "find_weight_files",
           "strip_prefix", "checkpoint_info", "DTYPES"]

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}
_FLOAT_STORED = {"F64", "F32", "F16", "BF16"}

# Tensors a checkpoint may omit: rotary inverse frequencies are a buffer that pyclvp recomputes from
# the config (transformers saves it; older checkpoints may not).
OPTIONAL = ("text_encoder_model.rotary_pos_emb.inv_freq", "speech_encoder_model.rotary_pos_emb.inv_freq")


class CheckpointError(ValueError):
    """A checkpoint folder is missing files, or its tensors do not fit the config; the message lists all problems."""


# ----------------------------------------------------------------------------------------------
# The spec: name -> shape, from the config


def _attention_spec(prefix, C, bias):  # ClvpSelfAttention
    spec = {}
    for proj in ("q_proj", "k_proj", "v_proj"):
        spec[f"{prefix}.{proj}.weight"] = (C, C)  # torch Linear layout (Cout, Cin)
        if bias:
            spec[f"{prefix}.{proj}.bias"] = (C,)
    spec[f"{prefix}.out_proj.weight"] = (C, C)
    spec[f"{prefix}.out_proj.bias"] = (C,)  # out_proj always has a bias
    return spec


def _conditioning_spec(cfg: ClvpConfig):  # ClvpConditioningEncoder
    d, C = cfg.decoder_config, cfg.decoder_config.hidden_size
    p = "conditioning_encoder"
    spec = {
        f"{p}.text_token_embedding.weight": (cfg.text_config.vocab_size, C),  # (V_text, C)
        f"{p}.text_position_embedding.weight": (d.max_text_tokens, C),  # (max_text_tokens, C)
        f"{p}.mel_conv.weight": (C, d.feature_size, 1),  # Conv1d (C, M, kernel 1)
        f"{p}.mel_conv.bias": (C,),
    }
    for i in range(d.num_mel_attn_blocks):
        spec[f"{p}.group_norms.{i}.weight"] = (C,)
        spec[f"{p}.group_norms.{i}.bias"] = (C,)
        spec.update(_attention_spec(f"{p}.mel_attn_blocks.{i}", C, d.use_attention_bias))
    return spec


def _decoder_spec(cfg: ClvpConfig):  # ClvpForCausalLM
    d, C, F = cfg.decoder_config, cfg.decoder_config.hidden_size, cfg.decoder_config.inner_dim
    p = "speech_decoder_model.model.decoder"
    spec = {
        f"{p}.input_embeds_layer.weight": (d.vocab_size, C),  # (V, C) mel token embedding
        f"{p}.position_embeds_layer.weight": (d.max_position_embeddings, C),  # learned mel positions
    }
    for i in range(d.num_hidden_layers):
        q = f"{p}.layers.{i}"
        spec[f"{q}.input_layernorm.weight"] = spec[f"{q}.input_layernorm.bias"] = (C,)
        spec.update(_attention_spec(f"{q}.attn", C, d.use_attention_bias))
        spec[f"{q}.post_attention_layernorm.weight"] = spec[f"{q}.post_attention_layernorm.bias"] = (C,)
        spec[f"{q}.mlp.c_fc.weight"] = (C, F)  # GPT-2 Conv1D layout (Cin, Cout)
        spec[f"{q}.mlp.c_fc.bias"] = (F,)
        spec[f"{q}.mlp.c_proj.weight"] = (F, C)  # Conv1D (Cin, Cout)
        spec[f"{q}.mlp.c_proj.bias"] = (C,)
    spec[f"{p}.layer_norm.weight"] = spec[f"{p}.layer_norm.bias"] = (C,)
    spec["speech_decoder_model.final_norm.weight"] = spec["speech_decoder_model.final_norm.bias"] = (C,)
    spec["speech_decoder_model.lm_head.weight"] = (d.vocab_size, C)  # (V, C)
    spec["speech_decoder_model.lm_head.bias"] = (d.vocab_size,)
    return spec


def _encoder_spec(p, e):  # ClvpEncoder (text or speech)
    C, F = e.hidden_size, e.intermediate_size
    spec = {f"{p}.token_embedding.weight": (e.vocab_size, C)}
    if e.use_rotary_embedding:
        spec[f"{p}.rotary_pos_emb.inv_freq"] = (e.rotary_dim // 2,)  # optional, see OPTIONAL
    for i in range(e.num_hidden_layers):
        q = f"{p}.layers.{i}"
        spec.update(_attention_spec(f"{q}.self_attn", C, e.use_attention_bias))
        spec[f"{q}.mlp.fc1.proj.weight"] = (2 * F, C)  # gated unit: [h | gate] stacked
        spec[f"{q}.mlp.fc1.proj.bias"] = (2 * F,)
        spec[f"{q}.mlp.fc2.weight"] = (C, F)
        spec[f"{q}.mlp.fc2.bias"] = (C,)
        spec[f"{q}.input_rmsnorm.weight"] = spec[f"{q}.post_attention_rmsnorm.weight"] = (C,)
    spec[f"{p}.final_layer_norm.weight"] = spec[f"{p}.final_layer_norm.bias"] = (C,)
    spec[f"{p}.projection.weight"] = (e.projection_dim, C)  # (P, C), no bias
    return spec


def checkpoint_spec(cfg: ClvpConfig) -> dict[str, tuple]:
    """Every tensor name of the model's state dict -> its shape (scalar logit_scale: ())."""
    spec = {"logit_scale": ()}
    spec.update(_conditioning_spec(cfg))
    spec.update(_decoder_spec(cfg))
    spec.update(_encoder_spec("text_encoder_model", cfg.text_config))
    spec.update(_encoder_spec("speech_encoder_model", cfg.speech_config))
    return spec


def strip_prefix(weights: dict, prefix: str) -> dict:
    """The tensors under `prefix` with the prefix removed: strip_prefix(w, "speech_decoder_model.")."""
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------------
# Files


def find_weight_files(folder) -> list[Path]:
    """The safetensors file(s) of a checkpoint folder: model.safetensors, or the shards of the index."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder {folder} does not exist (expected config.json + {WEIGHTS_NAME})")
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    if (folder / INDEX_NAME).is_file():
        return _shards(folder / INDEX_NAME)
    others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".ckpt"))
    hint = (f"; found {', '.join(others)}: convert it with `pyclvp convert` (a transformers .bin) or "
            "`pyclvp convert-tortoise` (Tortoise's .pth files)") if others else ""
    raise CheckpointError(f"no {WEIGHTS_NAME} or {INDEX_NAME} in {folder}{hint}")


def _shards(index_path: Path) -> list[Path]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path} is not a safetensors index (needs a 'weight_map' object): {e}") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: 'weight_map' must map tensor names to file names")
    files = [index_path.parent / name for name in dict.fromkeys(weight_map.values())]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise CheckpointError(f"{index_path} names shard files that are missing: {', '.join(absent)}")
    return files


# ----------------------------------------------------------------------------------------------
# Loading


def _open_all(files):
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


def check_shapes(shapes: dict, spec: dict, where) -> None:
    """Compare {name: shape} with the spec: one CheckpointError listing every missing, unexpected, misshaped tensor."""
    missing = [n for n in spec if n not in shapes and n not in OPTIONAL]
    unexpected = [n for n in shapes if n not in spec]
    misshaped = [f"{n} {tuple(shapes[n])} (expected {spec[n]})" for n in spec
                 if n in shapes and tuple(shapes[n]) != spec[n]]
    problems = [(f"{len(missing)} missing", missing), (f"{len(unexpected)} unexpected", unexpected),
                (f"{len(misshaped)} with the wrong shape", misshaped)]
    lines = [f"  {title}: " + ", ".join(names) for title, names in problems if names]
    if lines:
        raise CheckpointError(f"checkpoint {where} does not match its config:\n" + "\n".join(lines))


def _check_float(entries) -> None:
    bad = [f"{n} ({stored})" for n, (_, stored, _) in entries.items() if stored not in _FLOAT_STORED]
    if bad:
        raise CheckpointError(f"tensors that are not floating point: {', '.join(bad)}")


def _as_dtype(f, name, stored, dtype):
    """The tensor in `dtype`: a zero-copy view when stored so, else a converted copy."""
    arr = f.get_tensor(name)  # read-only view into the memory map (BF16: raw uint16 bits)
    if stored == "BF16":
        arr = np.asarray(bfloat16_to_float32(arr))  # (asarray: a 0-d tensor would come back a NumPy scalar)
    return arr if arr.dtype == dtype else arr.astype(dtype)


def _only_torch_weights(folder: Path) -> bool:
    """No safetensors file, but transformers' PyTorch weights: pytorch_model.bin or its index."""
    if (folder / WEIGHTS_NAME).is_file() or (folder / INDEX_NAME).is_file():
        return False
    return any((folder / name).is_file() for name in (torch_pickle.WEIGHTS_NAME, torch_pickle.WEIGHTS_INDEX_NAME))


def _load_torch(folder: Path, cfg: ClvpConfig, dtype) -> dict[str, np.ndarray]:
    """pytorch_model.bin (or its shards) through the allow-listed unpickler: nothing in the file is run.
    Tensors stored in `dtype` are zero-copy views of the memory map; bfloat16 arrives widened to float32."""
    try:
        tensors = torch_pickle.load_pretrained(folder)
    except torch_pickle.TorchCheckpointError as e:
        raise CheckpointError(f"{folder}: {e}") from None
    check_shapes({name: arr.shape for name, arr in tensors.items()}, checkpoint_spec(cfg), folder)
    bad = [f"{name} ({arr.dtype})" for name, arr in tensors.items() if arr.dtype.kind != "f"]
    if bad:
        raise CheckpointError(f"tensors that are not floating point: {', '.join(bad)}")
    return {name: arr if arr.dtype == dtype else arr.astype(dtype) for name, arr in tensors.items()}


def load_checkpoint(folder, cfg: ClvpConfig, dtype: str = "float32", prepare=None) -> dict[str, np.ndarray]:
    """name -> array for every tensor of the spec (OPTIONAL ones only if present), in `dtype`.

    prepare: a backend's hook, Ops.prepare_weight(name, array, dtype) (pyclvp/ops/cpu_ops.py). It gets each
    tensor as stored (a zero-copy view; BF16 as a pyclvp.ops.half.Bf16Array) and returns what the model
    keeps, so a backend with half-precision kernels can keep "float16" or "bfloat16" weights unconverted.
    """
    if dtype not in DTYPES and not (prepare is not None and dtype == "bfloat16"):
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if _only_torch_weights(Path(folder)):
        weights = _load_torch(Path(folder), cfg, DTYPES.get(dtype, DTYPES["float32"]))
        return weights if prepare is None else {name: prepare(name, arr, dtype) for name, arr in weights.items()}
    files = find_weight_files(folder)
    entries = _open_all(files)
    check_shapes({name: shape for name, (_, _, shape) in entries.items()}, checkpoint_spec(cfg), folder)
    _check_float(entries)
    if prepare is not None:
        return {name: prepare(name, _as_stored(f, name, stored), dtype) for name, (f, stored, _) in entries.items()}
    return {name: _as_dtype(f, name, stored, DTYPES[dtype]) for name, (f, stored, _) in entries.items()}


def _as_stored(f, name, stored):
    """The tensor as stored, a zero-copy view (BF16 bits marked as a Bf16Array)."""
    arr = np.asarray(f.get_tensor(name))
    return as_bf16(arr) if stored == "BF16" else arr


# ----------------------------------------------------------------------------------------------
# Summary (`pyclvp info`)

PARTS = ("conditioning_encoder", "speech_decoder_model", "text_encoder_model", "speech_encoder_model")


def checkpoint_info(folder) -> dict:
    """What a safetensors checkpoint holds, from its headers only: files and sizes, parameter counts
    (in all and per part), stored dtypes, and whether the tensors fit config.json (problems: None or text)."""
    folder = Path(folder)
    cfg = ClvpConfig.from_pretrained(folder)
    files = find_weight_files(folder)
    entries = _open_all(files)
    shapes = {name: shape for name, (_, _, shape) in entries.items()}
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    dtypes = {}
    for _, stored, _ in entries.values():
        dtypes[stored] = dtypes.get(stored, 0) + 1
    try:
        check_shapes(shapes, checkpoint_spec(cfg), folder)
        problems = None
    except CheckpointError as e:
        problems = str(e)
    return dict(config=cfg, files={f.name: f.stat().st_size for f in files}, tensors=len(entries),
                parameters=sum(sizes.values()), dtypes=dtypes, problems=problems,
                parts={p: sum(n for k, n in sizes.items() if k.startswith(p + ".")) for p in PARTS})
