"""The UnivNet vocoder (pyclvp/speech/univnet.py) against Tortoise's UnivNetGenerator.inference, on weights converted
without torch from a weight-normed vocoder.pth (tests/data/univnet/univnet_small, tools/ref_univnet.py), and its op,
ops.location_variable_conv, against Tortoise's LVCBlock.location_variable_convolution and a plain loop."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DATA, MAX_EXAMPLES, TOLERANCE, assert_close, backend_params
from pyclvp.cli import main
from pyclvp.convert import convert_univnet
from pyclvp.io import torch_pickle
from pyclvp.io.checkpoints import CheckpointError, load_weights
from pyclvp.ops import get_ops
from pyclvp.ops.numpy_ops import location_variable_conv
from pyclvp.speech.univnet import (MEL_PAD_FRAMES, MEL_PAD_VALUE, UnivNet, UnivNetConfig, denormalize_tacotron_mel,
                                   univnet_spec)

SMALL = DATA / "univnet" / "univnet_small"
FULL = Path(__file__).resolve().parent.parent / "bench" / "checkpoints" / "univnet_full"  # tools/ref_univnet.py --full


def _overrides(folder):  # UnivNetConfig fields: the generator's constructor + the LVCBlock default the tool changed
    c = json.loads((folder / "config.json").read_text())
    return dict(c["constructor"], kpnet_hidden_channels=c["kpnet_hidden_channels"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("univnet")
    convert_univnet(SMALL / "vocoder.pth", out, _overrides(SMALL))
    return out / "univnet"


@pytest.fixture(scope="module")
def ref():
    with np.load(SMALL / "expected.npz") as f:
        return dict(f)


def _vocoder(folder, backend="numpy"):
    cfg = UnivNetConfig.from_pretrained(folder)
    return UnivNet(load_weights(folder, univnet_spec(cfg)), cfg, get_ops(backend))


def _padded(mel):  # (B, M, T) -> (B, M, T + 10), as inference pads
    return np.concatenate([mel, np.full(mel.shape[:2] + (MEL_PAD_FRAMES,), MEL_PAD_VALUE, np.float32)], axis=2)


# ----------------------------------------------------------------------------------------------
# The model against Tortoise


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("case", ["b1", "b2"])
def test_waveform_matches_tortoise(converted, ref, case, backend):
    wav = _vocoder(converted, backend).inference(ref[f"{case}.mel"], noise=ref[f"{case}.noise"])  # (B, W)
    assert wav.shape == (ref[f"{case}.mel"].shape[0], ref[f"{case}.mel"].shape[2] * 12)  # T frames x hop 12
    assert_close(wav, ref[f"{case}.wav"][:, 0], **TOLERANCE[backend, "float32"], name=f"{case} waveform")


def test_stages_match_tortoise(converted, ref):
    voc = _vocoder(converted)
    mel, z = _padded(ref["b2.mel"]), ref["b2.noise"]
    x = voc.conv(z, "conv_pre", reflect=True)
    assert_close(x, ref["b2.conv_pre"], atol=1e-5, name="conv_pre (reflect padding)")
    kernels, bias = voc.kernel_predictor(mel, 0)
    assert_close(kernels, ref["b2.block0.kernels"], atol=1e-5, name="block 0 kernels")
    assert_close(bias, ref["b2.block0.bias"], atol=1e-5, name="block 0 bias")
    assert_close(voc.lvc_block(ref["b2.conv_pre"], mel, 0), ref["b2.block0.out"], atol=1e-5, name="after block 0")


def test_denormalize_tacotron_mel(ref):
    assert_close(denormalize_tacotron_mel(ref["b2.norm_mel"]), ref["b2.mel"], atol=1e-6, name="denormalized mel")
    assert_close(denormalize_tacotron_mel([-1.0, 1.0]), [-11.512925148010254, 2.3143386840820312], atol=1e-6)


def test_default_noise_is_seeded_and_checked(converted, ref):
    voc, mel = _vocoder(converted), ref["b1.mel"]
    a, b = voc.inference(mel, seed=3), voc.inference(mel, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, voc.inference(mel, seed=4))
    with pytest.raises(ValueError, match=r"noise: expected shape \(1, 8, 15\)"):
        voc.inference(mel, noise=ref["b1.noise"][:, :, :-1])
    with pytest.raises(ValueError, match=r"mel: expected \(B, 16, T\)"):
        voc.inference(mel[:, :-1])


def test_config_defaults_are_tortoises():
    cfg = UnivNetConfig()
    assert (cfg.noise_dim, cfg.channel_size, cfg.dilations, cfg.strides, cfg.hop_length, cfg.n_mel_channels) == \
        (64, 32, [1, 3, 9, 27], [8, 8, 4], 256, 100)
    spec = univnet_spec(cfg)
    assert spec["res_stack.0.kernel_predictor.kernel_conv.weight"] == (4 * 32 * 64 * 3, 64, 3)
    assert spec["res_stack.2.convt_pre.1.weight"] == (32, 32, 8)
    assert sum(int(np.prod(s)) for s in spec.values()) == 14_789_153  # UnivNetGenerator() after remove_weight_norm


# ----------------------------------------------------------------------------------------------
# The converter and the CLI


def test_convert_folds_weight_norm(converted):
    sd = torch_pickle.load_object(SMALL / "vocoder.pth")["model_g"]
    w = load_weights(converted, univnet_spec(UnivNetConfig.from_pretrained(converted)))
    key = "res_stack.1.convt_pre.1"  # a ConvTranspose1d: g is per *input* channel (dim=0 of (Cin, Cout, K))
    v, g = sd[key + ".weight_v"], sd[key + ".weight_g"]
    assert_close(w[key + ".weight"], g * v / np.sqrt((v.astype(np.float64) ** 2).sum(axis=(1, 2), keepdims=True)),
                 atol=1e-7, name=key)
    assert not any(k.endswith(("_g", "_v")) for k in w)


def test_convert_refuses_a_checkpoint_of_another_shape(tmp_path):
    with pytest.raises(CheckpointError, match="does not match its config") as e:
        convert_univnet(SMALL / "vocoder.pth", tmp_path)  # UnivNetGenerator()'s full-size config: every shape differs
    assert "conv_pre.weight (4, 8, 7) (expected (32, 64, 7))" in str(e.value)
    with pytest.raises(CheckpointError, match=r"res_stack.0.kernel_predictor.kernel_conv.weight \(384, 8, 3\) "
                                              r"\(expected \(288, 8, 3\)\)"):
        convert_univnet(SMALL / "vocoder.pth", tmp_path, dict(_overrides(SMALL), dilations=[1, 3, 9]))


def test_convert_refuses_a_file_without_model_g(tmp_path):
    with pytest.raises(CheckpointError, match="'model_g'"):
        convert_univnet(DATA / "speech" / "hifigan_small" / "hifidecoder.pth", tmp_path)  # a bare state dict


def test_cli_converts_and_reports(tmp_path, capsys):
    cfg = tmp_path / "univnet.json"
    cfg.write_text(json.dumps(_overrides(SMALL)))
    assert main(["convert-tortoise", "--vocoder", str(SMALL / "vocoder.pth"), "--vocoder-config", str(cfg),
                 "-o", str(tmp_path / "m")]) == 0
    assert "univnet/config.json" in capsys.readouterr().out
    assert UnivNetConfig.from_pretrained(tmp_path / "m" / "univnet").strides == [2, 3, 2]
    assert main(["convert-tortoise", "-o", str(tmp_path / "m")]) == 2
    assert "nothing to convert" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# The op: location_variable_conv


def _lvc_loop(x, kernels, bias, hop):  # the definition, one output sample at a time
    B, Cin, T = x.shape
    _, _, Cout, K, L = kernels.shape
    pad = (K - 1) // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad)))
    y = np.zeros((B, Cout, T))
    for b in range(B):
        for t in range(T):
            l = t // hop  # noqa: E741  (the window, as in the formula)
            y[b, :, t] = bias[b, :, l] + np.einsum("cok,ck->o", kernels[b, :, :, :, l], xp[b, :, t: t + K])
    return y


def test_lvc_matches_tortoise(ref):
    got = location_variable_conv(ref["b2.lvc.x"], ref["b2.lvc.kernel"], ref["b2.lvc.bias"], int(ref["b2.lvc.hop"]))
    assert_close(got, ref["b2.lvc.out"], atol=1e-5, name="LVCBlock.location_variable_convolution")


def test_lvc_literal_values():
    x = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 6)  # two windows of 3: [1 2 3] [4 5 6]
    kernels = np.zeros((1, 1, 1, 3, 2), np.float32)
    kernels[0, 0, 0, :, 0] = [1, 0, 0]  # window 0: y[t] = x[t - 1] (zero before the start)
    kernels[0, 0, 0, :, 1] = [0, 0, 1]  # window 1: y[t] = x[t + 1] (zero past the end)
    bias = np.array([[[0.5, -1.0]]], np.float32)
    got = location_variable_conv(x, kernels, bias, 3)
    np.testing.assert_array_equal(got, [[[0.5, 1.5, 2.5, 4.0, 5.0, -1.0]]])


@pytest.mark.parametrize("backend", backend_params())
@given(B=st.integers(1, 2), Cin=st.integers(1, 5), Cout=st.integers(1, 6), K=st.sampled_from([1, 3, 5]),
       L=st.integers(1, 4), hop=st.integers(1, 7), seed=st.integers(0, 2**16))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_location_variable_conv_matches_loop(backend, B, Cin, Cout, K, L, hop, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, Cin, L * hop), dtype=np.float32)
    kernels = rng.standard_normal((B, Cin, Cout, K, L), dtype=np.float32)
    bias = rng.standard_normal((B, Cout, L), dtype=np.float32)
    got = get_ops(backend).location_variable_conv(x, kernels, bias, hop)
    assert_close(got, _lvc_loop(x, kernels, bias, hop), **TOLERANCE[backend, "float32"], name="location_variable_conv")


def test_lvc_refuses_bad_shapes():
    x, k, b = np.zeros((1, 2, 6), np.float32), np.zeros((1, 2, 3, 3, 2), np.float32), np.zeros((1, 3, 2), np.float32)
    with pytest.raises(ValueError, match="T = L \\* hop"):
        location_variable_conv(x, k, b, 4)
    with pytest.raises(ValueError, match="odd kernel size"):
        location_variable_conv(x, np.zeros((1, 2, 3, 2, 2), np.float32), b, 3)
    with pytest.raises(ValueError, match="do not fit x"):
        location_variable_conv(x, k, np.zeros((1, 3, 3), np.float32), 3)


# ----------------------------------------------------------------------------------------------
# Opt-in: Tortoise's full-size generator (seeded weights), written by `python tools/ref_univnet.py --full`


@pytest.mark.skipif(os.environ.get("PYCLVP_SLOW") != "1" or not (FULL / "expected.npz").exists(),
                    reason="opt-in: PYCLVP_SLOW=1 and bench/checkpoints/univnet_full (tools/ref_univnet.py --full)")
def test_full_size_waveform_matches_tortoise(tmp_path):
    convert_univnet(FULL / "vocoder.pth", tmp_path)  # UnivNetGenerator()'s own config: no overrides
    with np.load(FULL / "expected.npz") as f:
        ref = dict(f)
    wav = _vocoder(tmp_path / "univnet").inference(ref["b1.mel"], noise=ref["b1.noise"])
    assert_close(wav, ref["b1.wav"][:, 0], atol=1e-4, name="full-size waveform")
    # float32's own error here is ~1e-4 (Tortoise's float32 run is 8e-5 from the float64 one): ours is no further
    assert_close(wav, ref["b1.wav_float64"][:, 0], atol=1e-4, name="full-size waveform vs float64")
