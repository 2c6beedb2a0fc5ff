"""torch_pickle fixtures: real torch.save files, tiny Tortoise checkpoints, and a hostile corpus.

  tests/data/torch_pickle/dtypes.pt, proto4.pt, big_endian.pt   every supported dtype, views, a Parameter,
      dtypes.npz, big_endian.npz                                shared storage, 0-d and empty tensors (+ torch's values)
  tests/data/torch_pickle/nested.pt                             a training-style checkpoint (dict of mixed objects)
  tests/data/torch_pickle/hf_bin/, hf_bin_sharded/              a tiny transformers CLVP as pytorch_model.bin, and
                                                                sharded with pytorch_model.bin.index.json;
                                                                tensors.json holds torch's sha256 of every tensor
  tests/data/torch_pickle/tortoise/autoregressive.pth, clvp2.pth  tiny Tortoise UnifiedVoice and CLVP instances, built
                                                                from the tortoise-tts 3.0.0 sdist's own classes
      expected.npz       inputs and transformers' outputs on the converted weights (pyclvp.convert)
      tensors.json       sha256 of the state_dict transformers loaded from the conversion
      parity.json        Tortoise's own modules vs transformers on the converted weights (max abs errors)
  tests/data/torch_pickle/hostile/*.pt + manifest.json          one file per attack or corruption, and the
                                                                error each must raise

Tortoise's classes import torchaudio (a mel helper) and transformers' LogitsWarper / model_parallel_utils,
which its model constructors never use; they are stubbed so that the sdist imports under transformers 5.
The tiny autoregressive.pth also carries GPT-2's old `attn.bias` / `attn.masked_bias` buffers, as the
released file (saved with an older transformers) does and as transformers' conversion script drops.
"""
from __future__ import annotations

import collections
import copy
import hashlib
import io
import os
import pickle
import shutil
import struct
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, write_json

ROOT = Path(__file__).resolve().parent.parent
TORTOISE_SDIST = Path(os.environ.get("TORTOISE_SDIST", "/work/tortoise_sdist/tortoise-tts-3.0.0"))

# Tiny Tortoise models: the arguments of tortoise/api.py's constructors, shrunk. CLVP's head size is
# fixed at 64 by x-transformers, so 64-wide encoders have one head.
TINY_AR = dict(layers=2, model_dim=32, heads=2, max_text_tokens=30, max_mel_tokens=50, max_conditioning_inputs=2,
               number_text_tokens=63, start_text_token=63, number_mel_codes=100, start_mel_token=98,
               stop_mel_token=99, checkpointing=False, train_solo_embeddings=False)
TINY_CLVP = dict(dim_text=64, dim_speech=64, dim_latent=32, num_text_tokens=64, text_enc_depth=2, text_seq_len=40,
                 text_heads=1, num_speech_tokens=256, speech_enc_depth=1, speech_heads=1, speech_seq_len=60,
                 use_xformers=True)
# A small transformers CLVP for the .bin fixtures (smaller than tests/data/tiny_*).
TINY_BIN = dict(
    text_config=dict(vocab_size=48, hidden_size=32, intermediate_size=32, projection_dim=16, num_hidden_layers=1,
                     num_attention_heads=1, bos_token_id=47, eos_token_id=0),
    speech_config=dict(vocab_size=64, hidden_size=32, intermediate_size=32, projection_dim=16, num_hidden_layers=1,
                       num_attention_heads=1, bos_token_id=62, eos_token_id=63),
    decoder_config=dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        num_mel_attn_blocks=1, max_position_embeddings=24, max_text_tokens=16, bos_token_id=62,
                        eos_token_id=63, decoder_fixing_codes=[3, 4, 4, 5]),
    projection_dim=16,
)


def _sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _randomize(module, seed: int) -> None:
    """Seeded weights that exercise every parameter: norms' weights near 1, everything else N(0, 0.1^2)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            norm = p.ndim == 1 and (key.endswith(".g") or (key.endswith("weight") and ("norm" in key or "ln" in key)))
            p.copy_(1.0 + noise if norm else noise)


# ----------------------------------------------------------------------------------------------
# Real torch.save files


def _dtype_state_dict():
    import torch

    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()
    for dt in [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.complex128]:
        sd[f"x_{str(dt)[6:]}"] = (torch.randn(2, 3, generator=g) * 10).to(dt)
    for dt in [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.uint16, torch.uint32, torch.uint64]:
        sd[f"x_{str(dt)[6:]}"] = torch.randint(0, 100, (3, 2), generator=g).to(dt)
    sd["x_bool"] = torch.tensor([True, False, True])
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd["view_base"] = base
    sd["view_transposed"] = base.t()                      # stride (1, 6), shares view_base's storage
    sd["view_slice"] = base[1:3, 2:5]                     # offset 8, stride (6, 1)
    sd["view_step"] = base[::2, ::3]                      # stride (12, 3)
    sd["view_expand"] = torch.arange(3.0).expand(4, 3)    # stride (0, 1)
    sd["bf16_transposed"] = torch.randn(3, 5, generator=g).to(torch.bfloat16).t()
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 7)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    return sd


def _expected_npz(sd) -> dict:
    import torch

    out = {}
    for k, t in sd.items():
        t = t.detach()
        if t.dtype == torch.bfloat16:
            out[k] = t.float().numpy()
            out[k + ".bits"] = t.contiguous().view(torch.int16).numpy().view(np.uint16)
        else:
            out[k] = t.numpy()
    return out


def _storage_codes(pickle_bytes: bytes) -> dict:
    """{storage key: storage class name} of a trusted torch.save pickle (plain pickle, generator only)."""
    found = {}

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "collections":
                return collections.OrderedDict
            return types.SimpleNamespace(name=name) if module == "torch" else (lambda *a, **k: None)

        def persistent_load(self, pid):
            found[pid[2]] = pid[1].name
            return None

    Recorder(io.BytesIO(pickle_bytes)).load()
    return found


_ITEMSIZE = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
             "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
             "ComplexFloatStorage": 4, "ComplexDoubleStorage": 8}  # complex: each part swaps on its own


def _to_big_endian(src: Path, dst: Path) -> None:
    """Rewrite a torch.save zip as a big-endian machine would have written it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        prefix = zin.namelist()[0].split("/")[0] + "/"
        codes = _storage_codes(zin.read(prefix + "data.pkl"))
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == prefix + "byteorder":
                data = b"big"
            elif info.filename.startswith(prefix + "data/"):
                size = _ITEMSIZE[codes[info.filename[len(prefix + "data/"):]]]
                data = np.frombuffer(data, f"<u{size}" if size > 1 else "u1").astype(f">u{size}" if size > 1 else "u1").tobytes()
            _writestr(zout, info.filename, data)


def _make_real_files(out: Path) -> None:
    import torch

    sd = _dtype_state_dict()
    torch.save(sd, out / "dtypes.pt")
    torch.save(sd, out / "proto4.pt", pickle_protocol=4)
    np.savez(out / "dtypes.npz", **_expected_npz(sd))

    big = collections.OrderedDict((k, v) for k, v in sd.items() if not k.startswith(("x_uint16", "x_uint32", "x_uint64")))
    torch.save(big, out / "_little.pt")
    _to_big_endian(out / "_little.pt", out / "big_endian.pt")
    (out / "_little.pt").unlink()
    reread = torch.load(out / "big_endian.pt", weights_only=True)
    for k, v in big.items():  # torch itself reads the rewritten file back to the same values
        assert torch.equal(reread[k], v.detach()), k
    np.savez(out / "big_endian.npz", **_expected_npz(big))

    nested = {"state_dict": collections.OrderedDict(w=torch.arange(4.0)), "epoch": 3, "lr": 0.5, "name": "run",
              "betas": (0.9, 0.99), "flags": [True, False, None], "raw": b"\x00\xff", "ids": {1, 2},
              "size": torch.Size([2, 3]), "big": 2**70, "neg": -5}
    torch.save(nested, out / "nested.pt")


# ----------------------------------------------------------------------------------------------
# transformers .bin folders


def _make_hf_bin(out: Path) -> None:
    import torch
    from transformers import ClvpConfig, ClvpModelForConditionalGeneration

    torch.manual_seed(0)
    model = ClvpModelForConditionalGeneration(ClvpConfig(**TINY_BIN)).eval()
    _randomize(model, 1)
    sd = model.state_dict()
    single, sharded = out / "hf_bin", out / "hf_bin_sharded"
    for folder in (single, sharded):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        model.config.save_pretrained(folder)
    torch.save(sd, single / "pytorch_model.bin")
    names = list(sd)
    half = len(names) // 2
    shards = {"pytorch_model-00001-of-00002.bin": names[:half], "pytorch_model-00002-of-00002.bin": names[half:]}
    weight_map = {}
    for file, keys in shards.items():
        torch.save({k: sd[k] for k in keys}, sharded / file)
        weight_map.update({k: file for k in keys})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    write_json(sharded / "pytorch_model.bin.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    for folder in (single, sharded):  # transformers itself loads both folders to the same weights
        loaded = ClvpModelForConditionalGeneration.from_pretrained(folder).state_dict()
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    tensors = {k: dict(dtype=str(t.numpy().dtype), shape=list(t.shape), sha256=_sha(t.numpy())) for k, t in sd.items()}
    write_json(out / "hf_bin_tensors.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__, tensors=tensors))


# ----------------------------------------------------------------------------------------------
# Tortoise checkpoints and the conversion


def _import_tortoise():
    import transformers  # noqa: F401  (imported before the stubs so its availability checks see the real world)
    from transformers import GPT2Model  # noqa: F401

    try:
        from transformers import ClvpModelForConditionalGeneration  # noqa: F401
    except ImportError:  # transformers 4.31 (tools/tortoise_env.sh, the speech part) has no CLVP
        pass

    sys.path.insert(0, str(TORTOISE_SDIST))
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    sampling = types.ModuleType("tortoise.utils.typical_sampling")
    sampling.TypicalLogitsWarper = None
    sys.modules["tortoise.utils.typical_sampling"] = sampling
    parallel = types.ModuleType("transformers.utils.model_parallel_utils")
    parallel.get_device_map = parallel.assert_device_map = None
    sys.modules["transformers.utils.model_parallel_utils"] = parallel
    from tortoise.models.autoregressive import UnifiedVoice
    from tortoise.models.clvp import CLVP

    return UnifiedVoice, CLVP


def _tortoise_models():
    import torch

    UnifiedVoice, CLVP = _import_tortoise()
    torch.manual_seed(0)
    ar = UnifiedVoice(**TINY_AR).eval()
    clvp = CLVP(**TINY_CLVP).eval()
    _randomize(ar, 2)
    _randomize(clvp, 3)
    with torch.no_grad():
        clvp.temperature.fill_(0.7)
    return ar, clvp


def _ar_state_dict(ar):
    """UnifiedVoice's state_dict plus the GPT-2 mask buffers the released autoregressive.pth carries."""
    import torch

    sd = collections.OrderedDict(ar.state_dict())
    n = ar.max_mel_tokens + 2 + ar.max_conditioning_inputs + ar.max_text_tokens + 2
    for i in range(ar.layers):
        sd[f"gpt.h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n)
        sd[f"gpt.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return sd


def _parity(ar, clvp, model, seed: int) -> dict:
    """Max abs differences between Tortoise's modules and transformers' on the converted weights."""
    import torch

    g = torch.Generator().manual_seed(seed)
    errors = {}
    with torch.no_grad():
        text = torch.randint(1, 63, (2, 9), generator=g)
        codes = torch.randint(0, 256, (2, 14), generator=g)
        sim = clvp(text, codes, return_loss=False)  # (2,): exp(temperature) * cos(text, speech)
        t = model.get_text_features(input_ids=text).embeds  # (2, projection_dim)
        s = model.get_speech_features(speech_ids=codes)
        t, s = t / t.norm(dim=-1, keepdim=True), s / s.norm(dim=-1, keepdim=True)
        errors["clvp_similarity"] = float(((t * s).sum(-1) * model.logit_scale.exp() - sim).abs().max())

        mel = torch.randint(0, 100, (2, 11), generator=g)
        emb = ar.mel_embedding(mel) + ar.mel_pos_embedding(mel)
        hidden = ar.gpt(inputs_embeds=emb, return_dict=True).last_hidden_state
        want = ar.mel_head(ar.final_norm(hidden))
        got = model.speech_decoder_model(input_ids=mel).logits
        errors["decoder_logits"] = float((got - want).abs().max())

        feats = torch.randn(2, 80, 13, generator=g)
        want = ar.conditioning_encoder(feats)  # (2, C): frame 0 after the attention blocks
        got = model.conditioning_encoder(input_features=feats, input_ids=text)[:, 0]
        errors["conditioning_vector"] = float((got - want).abs().max())
    return errors


def _make_tortoise(out: Path) -> None:
    import torch
    from transformers import ClvpModelForConditionalGeneration

    sys.path.insert(0, str(ROOT))
    from pyclvp.convert import convert_tortoise

    folder = out / "tortoise"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    ar, clvp = _tortoise_models()
    torch.save(_ar_state_dict(ar), folder / "autoregressive.pth")
    torch.save(clvp.state_dict(), folder / "clvp2.pth")

    with tempfile.TemporaryDirectory() as tmp:
        convert_tortoise(folder / "autoregressive.pth", folder / "clvp2.pth", tmp, decoder_heads=TINY_AR["heads"])
        model, info = ClvpModelForConditionalGeneration.from_pretrained(tmp, output_loading_info=True)
    model.eval()
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"transformers did not load the converted checkpoint cleanly: {problems}"

    # transformers' ClvpRMSNorm adds eps=1e-5 to the mean square; x-transformers' RMSNorm clamps the
    # norm at 1e-8 instead. That, and only that, separates the two CLVPs: with eps 0 they agree to 1e-7.
    parity = _parity(ar, clvp, model, seed=5)
    exact = copy.deepcopy(model)
    for module in exact.modules():
        if type(module).__name__ == "ClvpRMSNorm":
            module.variance_epsilon = 0.0
    parity["clvp_similarity_rmsnorm_eps_0"] = _parity(ar, clvp, exact, seed=5)["clvp_similarity"]
    assert max(v for k, v in parity.items() if k != "clvp_similarity") < 1e-5, parity
    write_json(folder / "parity.json", dict(
        fixture_version=FIXTURE_VERSION, max_abs_error=parity,
        note="Tortoise modules vs transformers on the converted weights; clvp_similarity differs only by "
             "transformers' RMSNorm epsilon (clvp_similarity_rmsnorm_eps_0 sets it to 0)"))

    g = torch.Generator().manual_seed(6)

    input_ids = torch.randint(1, 63, (2, 7), generator=g)
    attention_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    input_features = torch.randn(2, 80, 16, generator=g)
    speech_ids = torch.randint(0, 256, (2, 10), generator=g)
    with torch.no_grad():
        fwd = model(input_ids=input_ids, input_features=input_features, attention_mask=attention_mask)
        text_features = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).embeds
        speech_features = model.get_speech_features(speech_ids=speech_ids)
    np.savez(folder / "expected.npz", input_ids=input_ids.numpy(), attention_mask=attention_mask.numpy(),
             input_features=input_features.numpy(), speech_ids=speech_ids.numpy(),
             logits_per_text=fwd.logits_per_text.numpy(), logits_per_speech=fwd.logits_per_speech.numpy(),
             text_embeds=fwd.text_embeds.numpy(), speech_embeds=fwd.speech_embeds.numpy(),
             text_features=text_features.numpy(), speech_features=speech_features.numpy())
    tensors = {k: dict(dtype=str(t.numpy().dtype), shape=list(t.shape), sha256=_sha(t.numpy()))
               for k, t in model.state_dict().items()}
    write_json(folder / "tensors.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__, tensors=tensors))


# ----------------------------------------------------------------------------------------------
# The hostile corpus: hand-written pickles and zips


def _u32(n):
    return struct.pack("<I", n)


def _str(s: str) -> bytes:  # BINUNICODE
    b = s.encode()
    return b"X" + _u32(len(b)) + b


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(module: str, name: str, *args: str) -> bytes:
    """A protocol-2 pickle of module.name(*args)."""
    return b"\x80\x02" + _global(module, name) + b"(" + b"".join(_str(a) for a in args) + b"tR."


def _tensor_pickle(key="0", storage="FloatStorage", numel=4, offset=0, size=(2, 2), stride=(2, 1),
                   name="w") -> bytes:
    """{name: tensor} pickled as torch does, with every field under the caller's control."""
    ints = lambda t: b"(" + b"".join(b"J" + struct.pack("<i", v) for v in t) + b"t"  # noqa: E731
    pid = b"(" + _str("storage") + _global("torch", storage) + _str(key) + _str("cpu") + b"J" + struct.pack("<i", numel) + b"tQ"
    tensor = (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"J" + struct.pack("<i", offset)
              + ints(size) + ints(stride) + b"\x89" + _global("collections", "OrderedDict") + b")RtR")
    return b"\x80\x02}" + _str(name) + tensor + b"s."


def _writestr(z: zipfile.ZipFile, name: str, data: bytes, compress=zipfile.ZIP_STORED) -> None:
    """writestr with a fixed timestamp, so that regenerating gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compress
    z.writestr(info, data)


def _zip(entries, prefix="archive/") -> bytes:
    """A stored zip of (name, bytes); names without '/' get the archive prefix."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            _writestr(z, name if "/" in name else prefix + name, data)
    return buf.getvalue()


def _checkpoint(pkl: bytes, storages=None) -> bytes:
    storages = storages if storages is not None else {"0": np.arange(4, dtype="<f4").tobytes()}
    return _zip([("data.pkl", pkl), ("byteorder", b"little")] + [(f"archive/data/{k}", v) for k, v in storages.items()])


def _central_records(data: bytes):
    """(offset, name) of every central-directory record (ref: APPNOTE.TXT 4.3.12)."""
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack("<H", data[pos + 28:pos + 30])[0]
        yield pos, data[pos + 46:pos + 46 + name_len].decode()
        pos = data.find(b"PK\x01\x02", pos + 46 + name_len)


def _patch_central(data: bytes, name: str, **fields) -> bytes:
    """Overwrite size/offset fields of `name`'s central-directory record."""
    offsets = {"compress_size": 20, "file_size": 24, "header_offset": 42}
    pos = next(p for p, n in _central_records(data) if n == name)
    out = bytearray(data)
    for field, value in fields.items():
        out[pos + offsets[field]:pos + offsets[field] + 4] = _u32(value)
    return bytes(out)


def _overlapping_bomb() -> bytes:
    """Two storages whose entries share bytes: data/1's local header and data sit inside data/0's data."""
    inner = _zip([("archive/data/1", b"\0" * 16)])
    inner_local = inner[:inner.index(b"PK\x01\x02")]  # data/1's local header + its 16 bytes
    inner_local += b"\0" * (-len(inner_local) % 4)
    outer = _checkpoint(_tensor_pickle(numel=len(inner_local) // 4, size=(1,), stride=(1,)), {"0": inner_local})
    central_start = outer.index(b"PK\x01\x02")
    eocd = outer.rindex(b"PK\x05\x06")
    record_1 = inner[inner.index(b"PK\x01\x02"):inner.rindex(b"PK\x05\x06")]
    record_1 = record_1[:42] + _u32(outer.index(inner_local[:30])) + record_1[46:]  # point into data/0
    central = outer[central_start:eocd] + record_1
    count = len(list(_central_records(central)))
    return (outer[:central_start] + central
            + b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, count, count, len(central), central_start, 0))


def _ratio_bomb() -> bytes:
    """A deflated storage that claims to inflate 1 GiB from a few bytes."""
    pkl = _tensor_pickle(numel=2**28, size=(2**28,), stride=(1,))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        _writestr(z, "archive/data.pkl", pkl)
        _writestr(z, "archive/data/0", b"\0" * 4096, zipfile.ZIP_DEFLATED)
    return _patch_central(buf.getvalue(), "archive/data/0", file_size=2**30)


def _hostile_cases():
    """(file name, bytes, expected error class name, regex the message must match, what it tries)."""
    t = _tensor_pickle
    yield ("evil_reduce_posix_system.pt", None, "UnsafeCheckpointError", r"posix\.system|os\.system",
           "torch.save of a dict holding an object whose __reduce__ is os.system('touch pwned_reduce')")
    yield ("global_os_system.pt", _checkpoint(_call("os", "system", "touch pwned_os_system")),
           "UnsafeCheckpointError", r"os\.system", "GLOBAL os.system + REDUCE")
    yield ("builtins_eval.pt", _checkpoint(_call("builtins", "eval", "__import__('os').system('touch pwned_eval')")),
           "UnsafeCheckpointError", r"builtins\.eval", "builtins.eval of a shell command")
    yield ("builtins_exec_stack_global.pt",
           _checkpoint(b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93" + _str("open('pwned_exec', 'w')") + b"\x85R."),
           "UnsafeCheckpointError", r"builtins\.exec", "protocol-4 STACK_GLOBAL builtins.exec")
    yield ("subprocess_popen.pt",
           _checkpoint(b"\x80\x02" + _global("subprocess", "Popen") + b"((" + _str("touch") + _str("pwned_popen") + b"ltR."),
           "UnsafeCheckpointError", r"subprocess\.Popen", "subprocess.Popen(['touch', 'pwned_popen'])")
    yield ("posix_spawn.pt", _checkpoint(_call("os", "posix_spawn", "/usr/bin/touch")),
           "UnsafeCheckpointError", r"os\.posix_spawn", "os.posix_spawn")
    yield ("getattr_gadget.pt", _checkpoint(b"\x80\x02" + _global("builtins", "getattr") + b"(" + _global("collections", "OrderedDict")
                                            + _str("__init__") + b"tR."),
           "UnsafeCheckpointError", r"builtins\.getattr", "builtins.getattr on an allowed class")
    yield ("torch_other_function.pt", _checkpoint(_call("torch._utils", "_rebuild_from_type_v2", "x")),
           "UnsafeCheckpointError", r"_rebuild_from_type_v2", "a torch._utils function outside the allow-list")
    yield ("torch_load_nested.pt", _checkpoint(_call("torch", "load", "other.pt")),
           "UnsafeCheckpointError", r"torch\.load", "torch.load of another file")
    yield ("inst_opcode.pt", _checkpoint(b"(" + _str("touch pwned_inst") + b"ios\nsystem\n."),
           "UnsafeCheckpointError", r"INST", "protocol-0 INST os.system")
    yield ("obj_opcode.pt", _checkpoint(b"\x80\x02(" + _global("os", "system") + _str("touch pwned_obj") + b"o."),
           "UnsafeCheckpointError", r"os\.system|OBJ", "OBJ opcode")
    yield ("newobj_opcode.pt", _checkpoint(b"\x80\x02" + _global("collections", "OrderedDict") + b")\x81."),
           "UnsafeCheckpointError", r"NEWOBJ", "NEWOBJ on an allowed class")
    yield ("ext_opcode.pt", _checkpoint(b"\x80\x02\x82\x01."), "UnsafeCheckpointError", r"EXT1",
           "EXT1 (copyreg extension registry)")
    yield ("reduce_on_storage_class.pt", _checkpoint(b"\x80\x02" + _global("torch", "FloatStorage") + b"(" + _str("x") + b"tR."),
           "UnsafeCheckpointError", r"REDUCE", "REDUCE calling a non-callable stand-in")
    yield ("build_on_list.pt", _checkpoint(b"\x80\x02]}" + _str("__class__") + _str("x") + b"sb."),
           "UnsafeCheckpointError", r"BUILD", "BUILD (__setstate__) on a list")
    yield ("append_to_dict.pt", _checkpoint(b"\x80\x02}" + _str("x") + b"a."),
           "UnsafeCheckpointError", r"APPEND", "APPEND to a non-list")
    yield ("persid_fake_class.pt", _checkpoint(b"\x80\x02(" + _str("storage") + _str("os.system") + _str("0") + _str("cpu")
                                               + b"K\x04tQ."),
           "UnsafeCheckpointError", r"storage class", "a persistent id naming a string, not a storage class")
    yield ("storage_key_traversal.pt", _checkpoint(t(key="../../../etc/passwd")),
           "TorchCheckpointError", r"not a plain name", "a storage key that walks out of data/")
    yield ("member_traversal.pt", _zip([("data.pkl", t()), ("archive/../../pwned_zip", b"x"), ("archive/data/0", b"\0" * 16)]),
           "TorchCheckpointError", r"escapes", "a zip member named archive/../../pwned_zip")
    yield ("member_absolute.pt", _zip([("data.pkl", t()), ("/tmp/pwned_abs", b"x"), ("archive/data/0", b"\0" * 16)]),
           "TorchCheckpointError", r"escapes", "a zip member with an absolute name")
    yield ("duplicate_member.pt", _zip([("data.pkl", t()), ("archive/data/0", b"\0" * 16), ("archive/data/0", b"\1" * 16)]),
           "TorchCheckpointError", r"twice", "a storage member that appears twice")
    yield ("missing_storage.pt", _checkpoint(t(key="7")), "TorchCheckpointError", r"missing", "a storage that is not in the zip")
    yield ("storage_wrong_size.pt", _checkpoint(t(), {"0": b"\0" * 6}), "TorchCheckpointError", r"6 bytes.*declares 16",
           "a storage shorter than its id declares")
    yield ("storage_beyond_zip.pt", _patch_central(_checkpoint(t(numel=2**20, size=(2**20,), stride=(1,)), {"0": b"\0" * 16}),
                                                   "archive/data/0", compress_size=2**22, file_size=2**22),
           "TorchCheckpointError", r"past the end", "a storage whose zip entry runs past the end of the file")
    yield ("tensor_beyond_storage.pt", _checkpoint(t(size=(3, 2))), "TorchCheckpointError", r"needs 6 elements.*holds 4",
           "a tensor view larger than its storage")
    yield ("tensor_offset_beyond_storage.pt", _checkpoint(t(offset=4, size=(1,), stride=(1,))), "TorchCheckpointError",
           r"needs 5 elements", "a tensor offset past its storage")
    yield ("too_many_dims.pt", _checkpoint(t(size=(1,) * 40, stride=(1,) * 40)), "TorchCheckpointError", r"at most 32",
           "a 40-dimensional tensor")
    yield ("expanded_huge.pt", _checkpoint(t(size=(2**31 - 1, 2**31 - 1), stride=(0, 0))), "TorchCheckpointError",
           r"more than \d+ elements", "a stride-0 view of 2^62 elements over one element")
    yield ("negative_stride.pt", _checkpoint(t(size=(2,), stride=(-1,))), "TorchCheckpointError", r"non-negative",
           "a negative stride")
    yield ("zip_bomb_overlap.pt", _overlapping_bomb(), "TorchCheckpointError", r"overlap",
           "overlapping zip entries (the overlapping-file zip bomb)")
    yield ("zip_bomb_ratio.pt", _ratio_bomb(), "TorchCheckpointError", r"zip bomb",
           "a deflated storage claiming 1 GiB from 4 kB")
    yield ("corrupted_zip.pt", _checkpoint(t())[:150], "TorchCheckpointError", r"corrupted zip", "a truncated zip")
    yield ("legacy_format.pt", None, "TorchCheckpointError", r"legacy", "torch.save(_use_new_zipfile_serialization=False)")
    yield ("not_a_checkpoint.pt", b"hello, this is not a checkpoint\n" * 4, "TorchCheckpointError",
           r"not a PyTorch zip", "a text file")
    yield ("no_data_pkl.pt", _zip([("byteorder", b"little"), ("archive/data/0", b"\0" * 16)]), "TorchCheckpointError",
           r"data\.pkl", "a zip without data.pkl")
    yield ("pickle_truncated.pt", _checkpoint(t()[:-20]), "TorchCheckpointError", r"truncated",
           "data.pkl cut short")
    yield ("memo_undefined.pt", _checkpoint(b"\x80\x02h\x05."), "TorchCheckpointError", r"memo", "BINGET of an unset memo slot")
    yield ("long4_huge.pt", _checkpoint(b"\x80\x02\x8b\xff\xff\xff\x7f."), "TorchCheckpointError", r"LONG4",
           "a LONG4 claiming 2 GiB of digits")
    yield ("unknown_storage_class.pt", _checkpoint(t(storage="Float8_e4m3fnStorage")), "UnsafeCheckpointError",
           r"Float8_e4m3fnStorage", "a storage class outside the allow-list")
    yield ("unsupported_float8.pt", None, "TorchCheckpointError", r"float8_e4m3fn.*not support",
           "a real float8 tensor: a known dtype this reader cannot represent")


def _make_hostile(out: Path) -> None:
    import torch

    folder = out / "hostile"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return os.system, ("touch pwned_reduce",)

    manifest = {}
    for name, data, error, match, what in _hostile_cases():
        path = folder / name
        if name == "evil_reduce_posix_system.pt":
            torch.save({"weight": torch.ones(2), "payload": Evil()}, path)
        elif name == "legacy_format.pt":  # its head only: the rest names storages by memory address, new every run
            torch.save({"weight": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
            path.write_bytes(path.read_bytes()[:64])
        elif name == "unsupported_float8.pt":
            torch.save({"weight": torch.ones(2).to(torch.float8_e4m3fn)}, path)
        else:
            path.write_bytes(data)
        manifest[name] = dict(error=error, match=match, what=what)
    write_json(folder / "manifest.json", dict(fixture_version=FIXTURE_VERSION, files=manifest))


def make(data_dir: Path) -> None:
    out = data_dir / "torch_pickle"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    _make_real_files(out)
    _make_hf_bin(out)
    _make_tortoise(out)
    _make_hostile(out)
