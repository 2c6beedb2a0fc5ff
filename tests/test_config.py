"""pyclvp.config against transformers' defaults and the config.json files it writes."""
import json

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
