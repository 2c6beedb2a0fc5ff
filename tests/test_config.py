"""pyclvp.config against transformers' defaults and the config.json files it writes."""
import json
import math
import re

import pytest

from conftest import DATA
from pyclvp.config import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, ConfigError


def _known(cfg_dict, cls):
    return {k: v for k, v in cfg_dict.items() if k in {f for f in cls.__dataclass_fields__ if f != "extra"}}


def test_defaults_equal_transformers():
    want = json.loads((DATA / "config_default.json").read_text())
    got = ClvpConfig().to_dict()
    for key in ("projection_dim", "logit_scale_init_value", "initializer_factor"):
        assert got[key] == want[key], key
    for sub, cls in [("text_config", ClvpEncoderConfig), ("speech_config", ClvpEncoderConfig),
                     ("decoder_config", ClvpDecoderConfig)]:
        assert _known(got[sub], cls) == _known(want[sub], cls), sub
        assert got[sub]["model_type"] == want[sub]["model_type"]


def test_transformers_dict_roundtrips_including_unknown_keys():
    want = json.loads((DATA / "config_default.json").read_text())
    cfg = ClvpConfig.from_dict(want)
    assert cfg == ClvpConfig()
    assert cfg.extra["id2label"] == want["id2label"]  # unknown keys are kept ...
    assert cfg.to_dict() == want  # ... and written back


@pytest.mark.parametrize("name", ["tiny_a", "tiny_b"])
def test_reads_save_pretrained_output(name, tmp_path):
    cfg = ClvpConfig.from_pretrained(DATA / name)
    raw = json.loads((DATA / name / "config.json").read_text())
    assert cfg.decoder_config.hidden_size == raw["decoder_config"]["hidden_size"]
    assert cfg.text_config.summary_type == raw["text_config"]["summary_type"]
    cfg.save_pretrained(tmp_path)
    assert ClvpConfig.from_pretrained(tmp_path / "config.json") == cfg


def test_derived_sizes():
    cfg = ClvpConfig.from_pretrained(DATA / "tiny_b")
    assert cfg.text_config.rotary_dim == 64 and cfg.decoder_config.inner_dim == 72
    assert ClvpConfig().decoder_config.inner_dim == 4096 and ClvpConfig().text_config.rotary_dim == 32


@pytest.mark.parametrize("key,value", [("hidden_size", "64"), ("hidden_size", 64.0), ("hidden_size", True),
                                       ("use_rotary_embedding", 1), ("layer_norm_eps", "small"),
                                       ("summary_type", 3), ("eos_token_id", [1, "2"])])
def test_wrong_type_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"ClvpEncoderConfig.{key}"):
        ClvpEncoderConfig.from_dict({key: value})


def _tiny_a_with(sub, key, value) -> dict:
    """tiny_a's config.json with one value replaced (sub None: a top-level key)."""
    d = json.loads((DATA / "tiny_a" / "config.json").read_text())
    (d if sub is None else d[sub])[key] = value
    return d


SIZE, EPS = "expected an integer >= 1", "expected a finite number > 0"
WHERE = {None: "ClvpConfig", "text_config": "text_config: ClvpEncoderConfig",
         "speech_config": "speech_config: ClvpEncoderConfig", "decoder_config": "decoder_config: ClvpDecoderConfig"}


@pytest.mark.parametrize("sub, key, value, problem", [
    # sizes and counts: integers >= 1
    ("text_config", "num_attention_heads", 0, SIZE),
    ("text_config", "intermediate_size", 0, SIZE),
    ("text_config", "vocab_size", 0, SIZE),
    ("speech_config", "hidden_size", 0, SIZE),
    ("speech_config", "projection_dim", -1, SIZE),
    ("decoder_config", "num_hidden_layers", 0, SIZE),
    ("decoder_config", "num_attention_heads", 0, SIZE),
    ("decoder_config", "n_inner", 0, SIZE),
    ("decoder_config", "max_position_embeddings", -1, SIZE),
    ("decoder_config", "vocab_size", 0, SIZE),
    (None, "projection_dim", 0, SIZE),
    # epsilons: finite and > 0
    ("decoder_config", "layer_norm_epsilon", -1, EPS),
    ("decoder_config", "layer_norm_epsilon", math.inf, EPS),
    ("text_config", "layer_norm_eps", 0, EPS),
    ("speech_config", "layer_norm_eps", math.nan, EPS),
    # token ids lie in their vocabulary: the text encoder's in text_config's, the decoder's in its own
    ("text_config", "eos_token_id", 9999, "expected a token id in [0, 256) (vocab_size), got 9999"),
    ("text_config", "bos_token_id", -1, "expected a token id in [0, 256)"),
    ("text_config", "bos_token_id", None, "expected a token id in [0, 256)"),
    ("decoder_config", "eos_token_id", -1, "expected a token id in [0, 8194) (vocab_size), got -1"),
    ("decoder_config", "eos_token_id", [8193], "expected a token id in [0, 8194)"),
    ("decoder_config", "bos_token_id", 8194, "expected a token id in [0, 8194)"),
    ("decoder_config", "decoder_fixing_codes", [], "expected at least one token id, got []"),
    ("decoder_config", "decoder_fixing_codes", [83, 9000],
     "expected a token id in [0, 8194) (speech_config.vocab_size), got 9000"),
    ("decoder_config", "decoder_fixing_codes", [-1], "expected a token id in [0, 8194) (speech_config.vocab_size)"),
])
def test_unusable_value_names_the_key(sub, key, value, problem):
    with pytest.raises(ConfigError, match=re.escape(f"{WHERE[sub]}.{key}: {problem}")):
        ClvpConfig.from_dict(_tiny_a_with(sub, key, value))


@pytest.mark.parametrize("sub, hidden, heads", [("decoder_config", 32, 3), ("text_config", 64, 3),
                                                ("speech_config", 32, 64)])
def test_hidden_size_must_split_into_the_heads(sub, hidden, heads):
    # ref: ClvpSelfAttention / GPT2Attention: "embed_dim must be divisible by num_heads"
    cls = WHERE[sub].split(": ")[1]
    match = f"{WHERE[sub]}.hidden_size ({hidden}) must be divisible by {cls}.num_attention_heads ({heads})"
    with pytest.raises(ConfigError, match=re.escape(match)):
        ClvpConfig.from_dict(_tiny_a_with(sub, "num_attention_heads", heads))


def test_speech_encoder_token_ids_are_not_checked():
    # unused by the model; a Tortoise conversion writes the decoder's start/stop ids there (8192, 8193 of 8192)
    cfg = ClvpConfig.from_dict({"speech_config": {"vocab_size": 8192, "bos_token_id": 8192, "eos_token_id": 8193}})
    assert cfg.speech_config.eos_token_id == 8193


def test_fixing_codes_belong_to_the_speech_encoder_vocabulary():
    # the speech encoder embeds them: a decoder vocabulary below 249 is fine (as in tests/data/torch_pickle/tortoise)
    cfg = ClvpConfig.from_dict({"decoder_config": {"vocab_size": 100, "bos_token_id": 98, "eos_token_id": 99}})
    assert cfg.decoder_config.decoder_fixing_codes == [83, 45, 45, 248] and cfg.speech_config.vocab_size == 256
    with pytest.raises(ConfigError, match=re.escape("(speech_config.vocab_size), got 248")):
        ClvpConfig.from_dict({"speech_config": {"vocab_size": 200, "bos_token_id": 0, "eos_token_id": 1}})


def test_constructor_checks_like_from_dict():
    with pytest.raises(ConfigError, match="ClvpEncoderConfig.hidden_size: expected int"):
        ClvpEncoderConfig(hidden_size="64")
    with pytest.raises(ConfigError, match=re.escape("ClvpDecoderConfig.hidden_size (30) must be divisible")):
        ClvpDecoderConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ConfigError, match="text_config: ClvpEncoderConfig.eos_token_id"):
        ClvpConfig(text_config=dict(vocab_size=100, bos_token_id=99, eos_token_id=100))
    assert ClvpConfig(speech_config=dict(vocab_size=8194)).speech_config.vocab_size == 8194  # bench/make_checkpoint.py


def test_sub_config_wrong_type():
    with pytest.raises(ConfigError, match="decoder_config"):
        ClvpConfig.from_dict({"decoder_config": 5})
    with pytest.raises(ConfigError, match="ClvpDecoderConfig.n_inner"):
        ClvpConfig.from_dict({"decoder_config": {"n_inner": "big"}})


def test_int_accepted_for_float_and_none_for_optional():
    cfg = ClvpDecoderConfig.from_dict({"layer_norm_epsilon": 1, "n_inner": None, "decoder_fixing_codes": [1, 2]})
    assert cfg.layer_norm_epsilon == 1 and cfg.inner_dim == 4 * cfg.hidden_size


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no config file"):
        ClvpConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ClvpConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(ConfigError, match="expected a dict"):
        ClvpConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("key, value", [("num_hidden_layers", 10**6), ("hidden_size", 10**9), ("vocab_size", 2**40),
                                        ("max_position_embeddings", 10**7)])
def test_absurd_sizes_are_refused_at_once_in_one_short_line(key, value):
    import time

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"ClvpDecoderConfig.{key}: expected an integer <= \d+") as e:
        ClvpConfig.from_dict({"decoder_config": {key: value}})
    assert time.perf_counter() - t0 < 2 and len(str(e.value)) < 200


def test_a_checkpoint_error_lists_a_few_names_and_counts_the_rest(tmp_path):
    from pyclvp.io.checkpoints import CheckpointError, check_shapes

    spec = {f"layer.{i}.weight": (2,) for i in range(1000)}
    with pytest.raises(CheckpointError) as e:
        check_shapes({}, spec, tmp_path)
    assert "1000 missing" in str(e.value) and "and 995 more" in str(e.value) and len(str(e.value)) < 2000


@pytest.mark.parametrize("content, words", [
    ({"foo": 1}, "is not a ClvpConfig: none of its keys (foo)"),
    ({}, "none of its keys (none)"),
    ({"model_type": "gpt2", "n_embd": 768, "n_layer": 12}, "is a 'gpt2' configuration, not 'clvp'"),
])
def test_unrecognised_config_is_refused_not_defaulted(tmp_path, content, words):
    import json

    (tmp_path / "config.json").write_text(json.dumps(content))
    with pytest.raises(ConfigError) as e:
        ClvpConfig.from_pretrained(tmp_path)
    assert words in str(e.value) and "\n" not in str(e.value)
