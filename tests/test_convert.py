"""pyclvp.convert and the `convert` / `convert-tortoise` commands, on fixtures from tools/ref_torch_pickle.py.

- The tiny Tortoise checkpoints (built from the tortoise-tts 3.0.0 sdist's own UnifiedVoice and CLVP)
  convert to exactly the tensors transformers loaded from the same conversion (tortoise/tensors.json),
  and pyclvp's model on them gives transformers' outputs (tortoise/expected.npz).
- The generator also checked Tortoise's own modules against transformers on these weights
  (tortoise/parity.json): the mapping is exact; only transformers' RMSNorm epsilon differs.
- The conditioning encoder's head de-interleave equals transformers' script for the released sizes.
- transformers .bin folders convert to safetensors with torch's exact tensors, and load in the model.
"""
from __future__ import annotations

import dataclasses

import hashlib
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import DATA, MAX_EXAMPLES, TOLERANCE, assert_close
from pyclvp import convert
from pyclvp.io import torch_pickle
from pyclvp.cli import main
from pyclvp.io.safetensors import load_file

TP = DATA / "torch_pickle"
TORTOISE = TP / "tortoise"


def _sha(arr) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("tortoise_converted")
    config = convert.convert_tortoise(TORTOISE / "autoregressive.pth", TORTOISE / "clvp2.pth", out, decoder_heads=2)
    return out, config


def _model():
    try:
        from pyclvp.model import ClvpModelForConditionalGeneration
    except ImportError:  # pragma: no cover  (pyclvp.model is part of the package; this only guards a partial tree)
        pytest.skip("pyclvp.model does not exist yet")
    return ClvpModelForConditionalGeneration


# ----------------------------------------------------------------------------------------------
# Tortoise -> transformers layout


def test_tortoise_conversion_equals_what_transformers_loaded(converted):
    out, _ = converted
    got = load_file(out / "model.safetensors")
    want = json.loads((TORTOISE / "tensors.json").read_text())["tensors"]
    assert sorted(got) == sorted(want)
    for key, arr in got.items():
        assert (str(arr.dtype), list(arr.shape), _sha(arr)) == (want[key]["dtype"], want[key]["shape"],
                                                                 want[key]["sha256"]), key


def test_tortoise_config_read_off_the_shapes(converted):
    _, config = converted
    text, speech, decoder = config["text_config"], config["speech_config"], config["decoder_config"]
    assert config["projection_dim"] == 32
    assert {k: text[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                 "num_attention_heads", "use_attention_bias", "bos_token_id", "eos_token_id")} == \
        dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
             use_attention_bias=False, bos_token_id=63, eos_token_id=0)
    assert (speech["vocab_size"], speech["num_hidden_layers"], speech["bos_token_id"], speech["eos_token_id"]) == (256, 1, 98, 99)
    assert {k: decoder[k] for k in ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers",
                                    "num_mel_attn_blocks", "n_inner", "max_position_embeddings", "max_text_tokens",
                                    "feature_size", "bos_token_id", "eos_token_id")} == \
        dict(vocab_size=100, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, num_mel_attn_blocks=6,
             n_inner=None, max_position_embeddings=54, max_text_tokens=32, feature_size=80, bos_token_id=98,
             eos_token_id=99)


def test_tortoise_mapping_was_exact_against_tortoise_itself():
    errors = json.loads((TORTOISE / "parity.json").read_text())["max_abs_error"]
    assert errors["decoder_logits"] < 1e-5 and errors["conditioning_vector"] < 1e-5
    assert errors["clvp_similarity_rmsnorm_eps_0"] < 1e-5


def test_converted_tortoise_matches_transformers_outputs(converted):
    model = _model().from_pretrained(converted[0])
    assert model.config.text_config.rms_norm_style == model.config.speech_config.rms_norm_style == "tortoise"
    # the fixture is transformers' output, whose ClvpRMSNorm puts eps inside the root: compare with that style
    # (Tortoise's own style is compared with Tortoise's CLVP in tests/test_tortoise_rank.py)
    for enc in (model.text_encoder, model.speech_encoder):
        enc.cfg = dataclasses.replace(enc.cfg, rms_norm_style="transformers")
    want = np.load(TORTOISE / "expected.npz")
    tol = TOLERANCE["numpy", "float32"]
    out = model.forward(want["input_ids"], want["input_features"], attention_mask=want["attention_mask"])
    for key in ("logits_per_text", "logits_per_speech", "text_embeds", "speech_embeds"):
        assert_close(getattr(out, key), want[key], name=key, **tol)
    assert_close(model.get_text_features(want["input_ids"], want["attention_mask"]), want["text_features"],
                 name="text_features", **tol)
    assert_close(model.get_speech_features(want["speech_ids"]), want["speech_features"], name="speech_features", **tol)


def test_clvp_key_renames():
    z = np.zeros(1, np.float32)
    keys = {
        "text_transformer.transformer.attn_layers.layers.0.0.0.g": "text_encoder_model.layers.0.input_rmsnorm.weight",
        "text_transformer.transformer.attn_layers.layers.3.0.0.g": "text_encoder_model.layers.1.post_attention_rmsnorm.weight",
        "speech_transformer.transformer.attn_layers.layers.22.1.wrap.to_q.weight":
            "speech_encoder_model.layers.11.self_attn.q_proj.weight",
        "speech_transformer.transformer.attn_layers.layers.22.1.wrap.to_out.bias":
            "speech_encoder_model.layers.11.self_attn.out_proj.bias",
        "text_transformer.transformer.attn_layers.layers.11.1.wrap.net.0.proj.weight":
            "text_encoder_model.layers.5.mlp.fc1.proj.weight",
        "text_transformer.transformer.attn_layers.layers.11.1.wrap.net.3.bias": "text_encoder_model.layers.5.mlp.fc2.bias",
        "text_transformer.transformer.attn_layers.rotary_pos_emb.inv_freq": "text_encoder_model.rotary_pos_emb.inv_freq",
        "speech_transformer.transformer.norm.weight": "speech_encoder_model.final_layer_norm.weight",
        "to_text_latent.weight": "text_encoder_model.projection.weight",
        "speech_emb.weight": "speech_encoder_model.token_embedding.weight",
        "temperature": "logit_scale",
    }
    assert convert.convert_clvp_weights({k: z for k in keys}) == {v: z for v in keys.values()}


def test_autoregressive_key_renames_and_drops():
    C = 4
    sd = {
        "gpt.h.1.ln_1.weight": np.ones(C), "gpt.h.1.mlp.c_fc.weight": np.ones((C, 4 * C)),
        "gpt.h.1.attn.bias": np.ones((1, 1, 3, 3), bool), "gpt.h.1.attn.masked_bias": np.array(-1e4),
        "text_head.weight": np.ones((5, C)), "gpt.ln_f.bias": np.ones(C), "mel_pos_embedding.emb.weight": np.ones((6, C)),
        "conditioning_encoder.attn.2.norm.bias": np.ones(C), "conditioning_encoder.init.weight": np.ones((C, 80, 1)),
        "final_norm.weight": np.ones(C), "mel_head.bias": np.ones(9), "text_pos_embedding.emb.weight": np.ones((3, C)),
    }
    assert sorted(convert.convert_autoregressive_weights(sd, heads=2)) == sorted([
        "speech_decoder_model.model.decoder.layers.1.input_layernorm.weight",
        "speech_decoder_model.model.decoder.layers.1.mlp.c_fc.weight",
        "speech_decoder_model.model.decoder.layer_norm.bias",
        "speech_decoder_model.model.decoder.position_embeds_layer.weight",
        "conditioning_encoder.group_norms.2.bias", "conditioning_encoder.mel_conv.weight",
        "speech_decoder_model.final_norm.weight", "speech_decoder_model.lm_head.bias",
        "conditioning_encoder.text_position_embedding.weight"])


def test_gpt_attention_split_and_transpose():
    C = 3
    w = np.arange(C * 3 * C, dtype=np.float32).reshape(C, 3 * C)  # Conv1D (in, out)
    out = convert.convert_autoregressive_weights({"gpt.h.0.attn.c_attn.weight": w, "gpt.h.0.attn.c_proj.weight": w[:, :C]}, 1)
    base = "speech_decoder_model.model.decoder.layers.0.attn"
    for i, name in enumerate("qkv"):
        np.testing.assert_array_equal(out[f"{base}.{name}_proj.weight"], w[:, i * C:(i + 1) * C].T)
    np.testing.assert_array_equal(out[f"{base}.out_proj.weight"], w[:, :C].T)


def _script_qkv_split(w, dim=1024, sub_dim=64):
    """convert_clvp_to_hf.py's de-interleave for the released model, its unfold indexing in NumPy."""
    s1, s2, s3 = np.split(w, 3, axis=0)

    def windows(start):  # torch.arange(dim)[start:].unfold(0, sub_dim, 3 * sub_dim).flatten()
        firsts = np.arange(start, dim - sub_dim + 1, 3 * sub_dim)
        return (firsts[:, None] + np.arange(sub_dim)).ravel()

    i1, i2, i3 = windows(0), windows(sub_dim), windows(2 * sub_dim)
    return (np.concatenate([s1[i1], s2[i3], s3[i2]]), np.concatenate([s1[i2], s2[i1], s3[i3]]),
            np.concatenate([s1[i3], s2[i2], s3[i1]]))


def test_conditioning_qkv_split_equals_the_script_for_released_sizes():
    rows = np.arange(3 * 1024, dtype=np.float32)
    out = convert.convert_autoregressive_weights({"conditioning_encoder.attn.0.qkv.bias": rows}, heads=16)
    for name, want in zip("qkv", _script_qkv_split(rows)):
        np.testing.assert_array_equal(out[f"conditioning_encoder.mel_attn_blocks.0.{name}_proj.bias"], want)


@settings(deadline=None, max_examples=MAX_EXAMPLES)
@given(heads=st.integers(1, 6), head_dim=st.integers(1, 5), cols=st.integers(1, 3))
def test_hyp_conditioning_qkv_split_follows_qkv_attention_legacy(heads, head_dim, cols):
    C = heads * head_dim
    w = np.random.default_rng(heads * 100 + head_dim).standard_normal((3 * C, cols, 1)).astype(np.float32)
    out = convert.convert_autoregressive_weights({"conditioning_encoder.attn.0.qkv.weight": w}, heads)
    # QKVAttentionLegacy: qkv.reshape(B * H, 3 * D, T).split(D, dim=1): head h's q/k/v are rows h*3D + [0|D|2D, +D)
    for i, name in enumerate("qkv"):
        want = np.concatenate([w[h * 3 * head_dim + i * head_dim:h * 3 * head_dim + (i + 1) * head_dim, :, 0]
                               for h in range(heads)])
        np.testing.assert_array_equal(out[f"conditioning_encoder.mel_attn_blocks.0.{name}_proj.weight"], want)


def test_conversion_errors_are_clear(tmp_path):
    ar = torch_pickle.load(TORTOISE / "autoregressive.pth")
    clvp = torch_pickle.load(TORTOISE / "clvp2.pth")
    with pytest.raises(ValueError, match="does not split into 0 heads.*pass decoder_heads"):
        convert.tortoise_config(ar, clvp)
    with pytest.raises(ValueError, match="does not split into 3 heads"):
        convert.tortoise_config(ar, clvp, decoder_heads=3)
    with pytest.raises(ValueError, match="no 'mel_embedding.weight'"):
        convert.convert_tortoise(TORTOISE / "clvp2.pth", TORTOISE / "autoregressive.pth", tmp_path, decoder_heads=2)
    with pytest.raises(ValueError, match=r"not part of Tortoise's model: \['extra.weight'\]"):
        convert.convert_clvp_weights({**clvp, "extra.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="text vocabulary"):
        convert.tortoise_config({**ar, "text_embedding.weight": np.zeros((10, 32))}, clvp, decoder_heads=2)


# ----------------------------------------------------------------------------------------------
# transformers .bin -> safetensors, and the model's .bin fallback


def test_convert_bin_keeps_torch_tensors(tmp_path):
    n = convert.convert_bin(TP / "hf_bin_sharded", tmp_path)
    want = json.loads((TP / "hf_bin_tensors.json").read_text())["tensors"]
    got = load_file(tmp_path / "model.safetensors")
    assert n == len(want) and sorted(got) == sorted(want)
    for key, arr in got.items():
        assert (str(arr.dtype), list(arr.shape), _sha(arr)) == (want[key]["dtype"], want[key]["shape"],
                                                                 want[key]["sha256"]), key
    assert (tmp_path / "config.json").read_text() == (TP / "hf_bin_sharded" / "config.json").read_text()


@pytest.mark.parametrize("folder", ["hf_bin", "hf_bin_sharded"])
def test_from_pretrained_falls_back_to_pytorch_model_bin(folder, tmp_path):
    Model = _model()
    convert.convert_bin(TP / folder, tmp_path)
    from_bin, from_safetensors = Model.from_pretrained(TP / folder), Model.from_pretrained(tmp_path)
    assert sorted(from_bin.weights) == sorted(from_safetensors.weights)
    for key in from_bin.weights:
        np.testing.assert_array_equal(from_bin.weights[key], from_safetensors.weights[key], err_msg=key)
    ids, feats = np.array([[5, 6, 7, 8]]), np.random.default_rng(0).standard_normal((1, 80, 6)).astype(np.float32)
    np.testing.assert_array_equal(from_bin.forward(ids, feats).logits_per_text,
                                  from_safetensors.forward(ids, feats).logits_per_text)


def test_from_pretrained_refuses_a_hostile_bin(tmp_path):
    Model = _model()
    shutil.copy(TP / "hf_bin" / "config.json", tmp_path / "config.json")
    shutil.copy(TP / "hostile" / "evil_reduce_posix_system.pt", tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"posix\.system.*refused"):
        Model.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------
# The commands


def test_cli_convert_tortoise(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert-tortoise", "--autoregressive", str(TORTOISE / "autoregressive.pth"),
                 "--clvp", str(TORTOISE / "clvp2.pth"), "-o", str(out), "--decoder-heads", "2"]) == 0
    assert "decoder 2 layers x 32, 2 heads" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_cli_convert(tmp_path, capsys):
    assert main(["convert", str(TP / "hf_bin"), "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    shutil.copy(TP / "hf_bin" / "config.json", tmp_path / "config.json")
    shutil.copy(TP / "hostile" / "global_os_system.pt", tmp_path / "pytorch_model.bin")
    assert main(["convert", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyclvp convert: error:") and "os.system" in err and err.count("\n") == 1
    assert main(["convert-tortoise", "--autoregressive", str(TORTOISE / "autoregressive.pth"),
                 "--clvp", str(TORTOISE / "clvp2.pth"), "-o", str(tmp_path / "t")]) == 2
    assert "pass decoder_heads" in capsys.readouterr().err
