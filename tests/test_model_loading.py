"""Loading checkpoints: float32/float16/bfloat16, sharded, memory-mapped, and every bad-checkpoint case.

The micro checkpoints in tests/data/model/ were written by transformers' save_pretrained in bfloat16
(sharded, with model.safetensors.index.json) and float16; micro.npz holds transformers' float32
forward() on each of them reloaded.
"""
import json
import shutil

import numpy as np
import pytest

from conftest import DATA, assert_close
from pyclvp.config import ClvpConfig, ConfigError
from pyclvp.model import CheckpointError, ClvpModelForConditionalGeneration
from pyclvp.model.weights import checkpoint_spec, load_checkpoint
from pyclvp.io.safetensors import load_file, save_file

MODEL = DATA / "model"


@pytest.fixture(scope="module")
def micro():
    with np.load(MODEL / "micro.npz") as f:
        return dict(f)


@pytest.mark.parametrize("tag", ["bf16", "fp16"])
def test_half_checkpoints_match_transformers(micro, tag):
    model = ClvpModelForConditionalGeneration.from_pretrained(MODEL / f"micro_{tag}")
    out = model(micro["input_ids"], micro["input_features"])
    assert_close(out.logits_per_text, micro[f"{tag}_logits_per_text"], atol=1e-4, name="logits_per_text")
    assert_close(out.text_embeds, micro[f"{tag}_text_embeds"], atol=1e-4, name="text_embeds")
    assert_close(out.speech_embeds, micro[f"{tag}_speech_embeds"], atol=1e-4, name="speech_embeds")


def test_bf16_fixture_is_sharded():
    index = json.loads((MODEL / "micro_bf16" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2


def test_float32_weights_are_zero_copy_views():
    cfg = ClvpConfig.from_pretrained(DATA / "tiny_b")
    weights = load_checkpoint(DATA / "tiny_b", cfg)
    for name, w in weights.items():
        assert w.dtype == np.float32 and not w.flags.writeable and not w.flags.owndata, name


def test_float16_storage_keeps_fp16_views_and_converts_the_rest():
    cfg = ClvpConfig.from_pretrained(MODEL / "micro_fp16")
    weights = load_checkpoint(MODEL / "micro_fp16", cfg, dtype="float16")
    assert all(w.dtype == np.float16 and not w.flags.writeable for w in weights.values())
    weights = load_checkpoint(MODEL / "micro_bf16", cfg, dtype="float16")  # bf16 -> float16 copies
    assert all(w.dtype == np.float16 and w.flags.writeable for w in weights.values())


def test_float16_storage_model_runs_close_to_float32(micro):
    m16 = ClvpModelForConditionalGeneration.from_pretrained(MODEL / "micro_fp16", dtype="float16")
    out = m16(micro["input_ids"], micro["input_features"])
    assert_close(out.logits_per_text, micro["fp16_logits_per_text"], atol=1e-4, name="fp16 storage")


def test_unknown_dtype_raises():
    with pytest.raises(ValueError, match="dtype must be one of float32, float16"):
        ClvpModelForConditionalGeneration.from_pretrained(DATA / "tiny_b", dtype="bfloat16")


# ----------------------------------------------------------------------------------------------
# Bad checkpoints


def _copy_with(tmp_path, edit):
    """A copy of tiny_b whose tensors went through edit(dict)."""
    shutil.copy(DATA / "tiny_b" / "config.json", tmp_path / "config.json")
    tensors = {k: np.array(v) for k, v in load_file(DATA / "tiny_b" / "model.safetensors").items()}
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors")
    return tmp_path


def test_missing_unexpected_and_misshaped_are_all_listed(tmp_path):
    def edit(t):
        del t["logit_scale"]
        del t["speech_decoder_model.lm_head.bias"]
        t["extra.weight"] = np.zeros(3, np.float32)
        t["text_encoder_model.projection.weight"] = np.zeros((5, 5), np.float32)

    with pytest.raises(CheckpointError) as e:
        ClvpModelForConditionalGeneration.from_pretrained(_copy_with(tmp_path, edit))
    msg = str(e.value)
    for fragment in ("2 missing", "logit_scale", "speech_decoder_model.lm_head.bias", "1 unexpected", "extra.weight",
                     "1 with the wrong shape", "text_encoder_model.projection.weight (5, 5) (expected (128, 96))"):
        assert fragment in msg, msg


def test_rotary_inv_freq_is_optional(tmp_path):
    def edit(t):
        del t["text_encoder_model.rotary_pos_emb.inv_freq"]
        del t["speech_encoder_model.rotary_pos_emb.inv_freq"]

    ClvpModelForConditionalGeneration.from_pretrained(_copy_with(tmp_path, edit))


def test_integer_tensor_is_refused(tmp_path):
    def edit(t):
        t["logit_scale"] = np.array(3, np.int64)

    with pytest.raises(CheckpointError, match=r"not floating point: logit_scale \(I64\)"):
        load_checkpoint(_copy_with(tmp_path, edit), ClvpConfig.from_pretrained(DATA / "tiny_b"))


def test_missing_folder_raises():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClvpModelForConditionalGeneration.from_pretrained(DATA / "no_such_model")


def test_missing_weights_file_raises(tmp_path):
    shutil.copy(DATA / "tiny_b" / "config.json", tmp_path / "config.json")
    (tmp_path / "autoregressive.pth").write_bytes(b"")  # (pytorch_model.bin would be loaded: test_convert.py)
    with pytest.raises(CheckpointError, match=r"no model.safetensors.*autoregressive.pth.*pyclvp convert-tortoise"):
        ClvpModelForConditionalGeneration.from_pretrained(tmp_path)


def test_missing_config_raises(tmp_path):
    with pytest.raises(ConfigError, match="no config file"):
        ClvpModelForConditionalGeneration.from_pretrained(tmp_path)


def test_corrupt_safetensors_raises(tmp_path):
    shutil.copy(DATA / "tiny_b" / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(CheckpointError, match="model.safetensors: .*too small"):
        ClvpModelForConditionalGeneration.from_pretrained(tmp_path)


def _sharded_copy(tmp_path):
    shutil.copytree(MODEL / "micro_bf16", tmp_path / "m")
    return tmp_path / "m"


def test_missing_shard_raises(tmp_path):
    folder = _sharded_copy(tmp_path)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="shard files that are missing: model-00002-of-00002.safetensors"):
        ClvpModelForConditionalGeneration.from_pretrained(folder)


def test_bad_index_raises(tmp_path):
    folder = _sharded_copy(tmp_path)
    (folder / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="weight_map"):
        ClvpModelForConditionalGeneration.from_pretrained(folder)


def test_tensor_in_two_shards_raises(tmp_path):
    folder = _sharded_copy(tmp_path)
    first = load_file(folder / "model-00001-of-00002.safetensors")
    second = dict(load_file(folder / "model-00002-of-00002.safetensors"), logit_scale=np.float32(1.0))
    save_file({k: np.array(v) for k, v in second.items()}, folder / "model-00002-of-00002.safetensors",
              dtypes={k: "BF16" for k in second if k != "logit_scale" and k not in first})
    with pytest.raises(CheckpointError, match="more than one shard: logit_scale"):
        ClvpModelForConditionalGeneration.from_pretrained(folder)


def test_constructor_checks_weights_too():
    cfg = ClvpConfig.from_pretrained(DATA / "tiny_b")
    weights = {k: np.zeros(s, np.float32) for k, s in checkpoint_spec(cfg).items()}
    ClvpModelForConditionalGeneration(cfg, weights)  # every tensor present: fine
    del weights["logit_scale"]
    with pytest.raises(CheckpointError, match="1 missing: logit_scale"):
        ClvpModelForConditionalGeneration(cfg, weights)


@pytest.mark.parametrize("shard", ["../elsewhere.safetensors", "/etc/passwd", "sub/model.safetensors", ".."])
def test_a_safetensors_index_cannot_reach_outside_its_folder(tmp_path, shard):
    import json

    from pyclvp.io.checkpoints import find_weight_files

    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"logit_scale": shard}}))
    with pytest.raises(CheckpointError, match="is not a file name in the folder"):
        find_weight_files(tmp_path)
