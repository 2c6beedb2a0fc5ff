"""The HiFi-GAN decoder (pyclvp/speech/hifigan.py) against Tortoise's HifiganGenerator.inference, on weights
converted without torch from a weight-normed hifidecoder.pth (tests/data/speech/hifigan_small, tools/ref_speech.py)."""
import json

import numpy as np
import pytest

from conftest import DATA, assert_close
from pyclvp.cli import main
from pyclvp.convert import convert_hifigan
from pyclvp.io.checkpoints import CheckpointError, load_weights
from pyclvp.ops import get_ops
from pyclvp.speech.hifigan import Hifigan, HifiganConfig, hifigan_spec

SMALL = DATA / "speech" / "hifigan_small"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("hifigan")
    convert_hifigan(SMALL / "hifidecoder.pth", out, json.loads((SMALL / "config.json").read_text())["constructor"])
    return out / "hifigan"


@pytest.fixture(scope="module")
def ref():
    with np.load(SMALL / "expected.npz") as f:
        return dict(f)


def _decoder(folder, backend="numpy"):
    cfg = HifiganConfig.from_pretrained(folder)
    return Hifigan(load_weights(folder, hifigan_spec(cfg)), cfg, get_ops(backend))


@pytest.mark.parametrize("case", ["b1", "b2"])
def test_waveform_matches_tortoise(converted, ref, case):
    wav = _decoder(converted).inference(ref[f"{case}.latents"], ref[f"{case}.conditioning"])  # (B, W)
    assert_close(wav, ref[f"{case}.wav"][:, 0], atol=1e-4, name=f"{case} waveform")


def test_stages_match_tortoise(converted, ref):
    dec, ops = _decoder(converted), get_ops("numpy")
    x = np.swapaxes(ref["b1.latents"], 1, 2)
    up_1 = ops.interpolate_linear(x, 4.0)
    assert_close(up_1, ref["b1.up_1"], atol=1e-6, name="up_1")
    assert_close(ops.interpolate_linear(up_1, 24000 / 22050), ref["b1.up_2"], atol=1e-6, name="up_2")
    o = dec.conv(ref["b1.up_2"], "conv_pre") + dec.conv(ref["b1.conditioning"].reshape(1, -1, 1), "cond_layer")
    assert_close(o, ref["b1.conv_pre_cond"], atol=1e-5, name="conv_pre + cond_layer")


def test_convert_refuses_a_checkpoint_of_another_shape(tmp_path):
    with pytest.raises(CheckpointError, match="does not match its config"):
        convert_hifigan(SMALL / "hifidecoder.pth", tmp_path)  # api_fast's full-size config: every shape differs


def test_cli_converts_and_reports(tmp_path, capsys):
    cfg = tmp_path / "hifigan.json"
    cfg.write_text(json.dumps(json.loads((SMALL / "config.json").read_text())["constructor"]))
    assert main(["convert-tortoise", "--hifigan", str(SMALL / "hifidecoder.pth"), "--hifigan-config", str(cfg),
                 "-o", str(tmp_path / "m")]) == 0
    assert "hifigan/config.json" in capsys.readouterr().out
    assert main(["convert-tortoise", "-o", str(tmp_path / "m")]) == 2
    assert "nothing to convert" in capsys.readouterr().err
