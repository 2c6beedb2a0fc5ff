"""The quality path (TextToSpeech.quality / tts_with_preset: CLVP ranking, latents, calm-token trim, spectrogram
diffusion, UnivNet) and its voice front end (pyclvp/audio/univnet_mel.py) against Tortoise 3.0.0's own api.py
(tests/data/quality, tools/ref_quality.py): the univnet mels of real voice clips, and tts_with_preset("ultra_fast")
on a consistent set of tiny models, fed the same candidates and the same normal draws, step by step."""
import json

import numpy as np
import pytest

from conftest import DATA, assert_close
from pyclvp.audio.univnet_mel import diffusion_conditioning_mels, univnet_mel, univnet_mel_filters
from pyclvp.io.wav import read_wav

HERE = DATA / "quality"
TINY = HERE / "tiny"
VOICES = DATA.parent.parent / "third_party" / "tortoise" / "voices"
CONFIG = json.loads((TINY / "config.json").read_text())


def _clips():  # Tortoise's load_audio on these 22.05 kHz int16 files: int16 / 32768, channel 0
    out = []
    for name in ("mol", "emma"):  # tts_with_preset's order (config.json's keys are sorted)
        clip = CONFIG["clips"][name]
        samples, rate = read_wav(VOICES / clip["file"])
        assert rate == 22050
        out.append(samples[:clip["samples"], 0].astype(np.float32))
    return out


@pytest.fixture(scope="module")
def mels():
    with np.load(HERE / "univnet_mel.npz") as f:
        return dict(f)


@pytest.fixture(scope="module")
def ref():
    with np.load(TINY / "expected.npz") as f:
        return dict(f)


# ----------------------------------------------------------------------------------------------
# The univnet mel


def test_mel_filters_are_librosas(mels):
    assert_close(univnet_mel_filters(), mels["mel_basis"], atol=1e-8, rtol=0, name="mel_basis")


@pytest.mark.parametrize("name", ["mol", "emma"])
def test_univnet_mel_matches_wav_to_univnet_mel(mels, name):
    """From the same 24 kHz samples: within 1e-4 everywhere in the log domain (the largest next to the 1e-5
    clamp, where torch's float32 accumulation counts most), 3e-5 where the mel is above e^-9."""
    got, want = univnet_mel(mels[f"{name}.at_24k"]), mels[f"{name}.mel"]
    assert got.shape == want.shape == (100, 401) and got.dtype == np.float32
    assert_close(got, want, atol=1e-4, rtol=0, name=f"{name} univnet mel")
    loud = want > -9
    assert_close(got[loud], want[loud], atol=3e-5, rtol=0, name=f"{name} univnet mel above e^-9")


def test_diffusion_conditioning_mels_from_the_clips(mels):
    """22.05 kHz clips -> torchaudio's resampler -> 102400 samples (one truncated, one padded) -> mels."""
    got = diffusion_conditioning_mels(_clips())
    want = np.stack([mels["mol.mel"], mels["emma.mel"]])[None]  # (1, 2, 100, 401)
    assert got.shape == want.shape
    # the resampler's float32 rounding (pyclvp's samples are within 1.2e-7 of torchaudio's) moves the quietest bins
    # most: these mels are that ill-conditioned there. torchaudio itself, resampling in float64 instead of float32
    # (samples 5e-6 apart), moves Tortoise's mels by up to 0.044 (2e-3 above e^-9; tools/ref_quality.py, 2026-12-03)
    assert_close(got, want, atol=5e-4, rtol=0, name="conditioning mels")
    loud = want > -9
    assert_close(got[loud], want[loud], atol=1e-4, rtol=0, name="conditioning mels above e^-9")


def test_univnet_mel_refuses_what_tortoise_asserts():
    with pytest.raises(ValueError, match=r"\[-10, 10\]"):
        univnet_mel(np.full(2048, 11.0, np.float32))
    with pytest.raises(ValueError, match="waveforms"):
        from pyclvp.speech.tts import _waveforms

        _waveforms(np.zeros((2, 80, 10), np.float32))


# ----------------------------------------------------------------------------------------------
# The pipeline on tiny models


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from pyclvp.convert import convert_tortoise, convert_univnet
    from pyclvp.io.safetensors import save_file
    from pyclvp.speech.diffusion import DiffusionConfig, random_weights

    out = tmp_path_factory.mktemp("quality")
    convert_tortoise(TINY / "autoregressive.pth", TINY / CONFIG["clvp"], out,
                     decoder_heads=CONFIG["autoregressive"]["heads"])
    convert_univnet(TINY / "vocoder.pth", out, dict(CONFIG["univnet"],
                                                   kpnet_hidden_channels=CONFIG["kpnet_hidden_channels"]))
    cfg = DiffusionConfig.from_dict(CONFIG["diffusion"])
    (out / "diffusion").mkdir()
    save_file(random_weights(cfg, CONFIG["diffusion_seed"]), out / "diffusion" / "model.safetensors")
    cfg.save_pretrained(out / "diffusion")
    return out


def _run(folder, ref, backend="numpy", **kwargs):
    from pyclvp.speech.tts import TextToSpeech

    tts = TextToSpeech.from_pretrained(folder, backend=backend)
    return tts.quality(np.array([CONFIG["text_ids"]]), _clips(), "ultra_fast", tokens=ref["candidates"],
                       max_new_tokens=CONFIG["max_mel_tokens"], seed=CONFIG["noise_seed"], **kwargs)


@pytest.fixture(scope="module", params=["numpy", "cpu"])
def result(folder, ref, request):
    return _run(folder, ref, request.param)


def test_ranking_matches_tts(result, ref):
    np.testing.assert_array_equal(result.tokens, ref["candidates"])
    assert_close(result.scores, ref["clvp_scores"], atol=1e-4, rtol=0, name="CLVP scores")
    np.testing.assert_array_equal(result.best, [int(ref["best"])])
    np.testing.assert_array_equal(result.codes, ref["best_codes"])  # padded and fixed: 83s, then 45, 45, 248


def test_latents_and_calm_trim_match_tts(result, ref):
    assert_close(result.latents, ref["best_latents"], atol=1e-4, rtol=0, name="best latents")
    (trimmed,) = result.trimmed
    assert trimmed.shape == ref["latents"].shape
    assert ref["latents"].shape[1] < ref["best_latents"].shape[1]  # the fixture does exercise the trim
    assert_close(trimmed, ref["latents"], atol=1e-4, rtol=0, name="trimmed latents")


def test_conditioning_matches_get_conditioning_latents(result, ref):
    assert_close(result.diffusion_conditioning, ref["diffusion_conditioning"], atol=1e-4, rtol=0,
                 name="diffusion conditioning")


def test_mel_and_waveform_match_tts_with_preset(result, ref):
    """30 sampler steps and UnivNet on the same draws: the denormalized log-mel (range ~14) within 2e-4 (measured
    6.7e-5), the waveform within 1e-4 (measured 4.6e-5)."""
    (mel,), (wav,) = result.mel, result.wav
    assert mel.shape == ref["mel"].shape
    assert_close(mel, ref["mel"], atol=2e-4, rtol=0, name="mel")
    assert wav.shape == ref["wav"][0, 0].shape and wav.dtype == np.float32
    assert_close(wav, ref["wav"][0, 0], atol=1e-4, rtol=0, name="waveform")


def test_the_k_best_match_tts_with_preset_k2(folder, ref):
    """k=2: the two best candidates' latents in one batch, then each one's trim, mel and waveform in turn, the noise
    drawn from one generator in Tortoise's order (the first candidate's draws, then the second's)."""
    res = _run(folder, ref, "cpu", k=2)
    np.testing.assert_array_equal(res.best, ref["k2_best"])
    assert_close(res.latents, ref["k2_latents"], atol=1e-4, rtol=0, name="k=2 latents")
    assert len(res.trimmed) == len(res.mel) == len(res.wav) == 2
    for i in range(2):
        assert_close(res.trimmed[i], ref[f"k2_trimmed{i}"], atol=1e-4, rtol=0, name=f"k=2 trimmed {i}")
        assert res.mel[i].shape == ref[f"k2_mel{i}"].shape and res.wav[i].shape == ref[f"k2_wav{i}"][0, 0].shape
        assert_close(res.mel[i], ref[f"k2_mel{i}"], atol=2e-4, rtol=0, name=f"k=2 mel {i}")
        assert_close(res.wav[i], ref[f"k2_wav{i}"][0, 0], atol=1e-4, rtol=0, name=f"k=2 waveform {i}")


def test_k_out_of_range_is_refused(folder, ref):
    for k, match in ((0, "k must be a positive integer"), (17, "k must be at most the number of candidates .16.")):
        with pytest.raises(ValueError, match=match):
            _run(folder, ref, k=k)


def test_calm_trim_literal():
    from pyclvp.speech.tts import calm_trim

    assert calm_trim([1] + [83] * 8 + [2] + [83] * 9 + [5]) == 18  # the 9th calm token of a run is cut, with all after
    assert calm_trim([83] * 8 + [1]) == 9  # never 9 in a row: nothing cut


def test_seed_gives_the_same_audio_and_another_seed_other_audio(folder, ref):
    a = _run(folder, ref, diffusion_steps=3).wav[0]
    b = _run(folder, ref, diffusion_steps=3).wav[0]
    np.testing.assert_array_equal(a, b)
    from pyclvp.speech.tts import TextToSpeech

    tts = TextToSpeech.from_pretrained(folder)
    c = tts.quality(np.array([CONFIG["text_ids"]]), _clips(), "ultra_fast", tokens=ref["candidates"],
                    max_new_tokens=CONFIG["max_mel_tokens"], seed=CONFIG["noise_seed"] + 1, diffusion_steps=3).wav[0]
    assert c.shape == a.shape and np.abs(c - a).max() > 1e-3


def test_a_folder_without_the_quality_decoders_says_what_to_convert(folder, tmp_path):
    import shutil

    from pyclvp.speech.tts import TextToSpeech

    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, tmp_path / name)
    shutil.copytree(folder / "univnet", tmp_path / "univnet")
    tts = TextToSpeech.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="diffusion.*convert-tortoise --diffusion diffusion_decoder.pth"):
        tts.tts_with_preset("Hi.", _clips(), "ultra_fast")  # before any conditioning or sampling
    (tmp_path / "diffusion").mkdir()  # a folder without its weights file
    with pytest.raises(FileNotFoundError, match="model.safetensors.*--diffusion diffusion_decoder.pth"):
        TextToSpeech.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------
# End to end: text and two voice clips -> a WAV (the demo's random model: Tortoise's vocabularies)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from pyclvp.demo import write_random_checkpoint, write_random_quality

    out = tmp_path_factory.mktemp("demo_quality")
    write_random_quality(out, write_random_checkpoint(out).decoder_config.hidden_size)
    return out


def _voices(tmp_path):
    from pyclvp.demo import write_voice_clip

    return [str(write_voice_clip(tmp_path / f"v{i}.wav", seconds=s, seed=i)) for i, s in enumerate((1.0, 5.0))]


def test_cli_quality_path_writes_a_24khz_wav(demo, tmp_path, capsys):
    """ultra_fast (the default preset): 16 candidates, 30 steps, from text and two WAV clips to a WAV."""
    from pyclvp.cli import main
    from pyclvp.io.wav import read_wav

    out = tmp_path / "out.wav"
    a, b = _voices(tmp_path)
    args = ["tts", "--model", str(demo), "--text", "Hi there.", "--voice", a, "--voice", b, "--decoder", "diffusion",
            "--max-new-tokens", "12", "--seed", "3", "--backend", "cpu", "--max-memory", "24"]
    assert main(args + ["-o", str(out)]) == 0
    samples, rate = read_wav(out)
    assert rate == 24000 and samples.shape[1] == 1 and len(samples) % 256 == 0 and len(samples) > 0
    err = capsys.readouterr().err
    assert "estimated peak memory" in err and "wrote" in err
    again = tmp_path / "again.wav"
    assert main(args + ["-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()  # same seed, same audio


def test_cli_refuses_a_run_over_max_memory(demo, tmp_path, capsys):
    from pyclvp.cli import main
    from pyclvp.speech.tts import TextToSpeech, memory_estimate

    est = memory_estimate(TextToSpeech.from_pretrained(demo), "fast", max_new_tokens=500)
    assert est["peak"] > est["weights"] > 0 and est["diffusion"] > 3 * 4 * 2176 ** 2  # T = 2176 frames, 4 heads
    out = tmp_path / "o.wav"
    assert main(["tts", "--model", str(demo), "--text", "Hi.", "--voice", _voices(tmp_path)[0], "-o", str(out),
                 "--decoder", "diffusion", "--preset", "fast", "--max-memory", "0.01"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("estimated peak memory:")
    assert "over --max-memory 0.01 GB" in err[1] and len(err) == 2
    assert not out.exists()


def test_memory_estimate_grows_with_the_preset(demo):
    from pyclvp.speech.tts import TextToSpeech, memory_estimate

    tts = TextToSpeech.from_pretrained(demo)
    small = memory_estimate(tts, "ultra_fast", max_new_tokens=100)
    big = memory_estimate(tts, "ultra_fast", max_new_tokens=400)
    assert big["diffusion"] > 10 * small["diffusion"] and big["peak"] > small["peak"]
    assert memory_estimate(tts, "fast")["sampling"] >= memory_estimate(tts, "ultra_fast")["sampling"]


def test_tts_entry_points_choose_the_path(demo, tmp_path, monkeypatch):
    from pyclvp.audio import load_voice
    from pyclvp.speech import tts as tts_module

    tts = tts_module.TextToSpeech.from_pretrained(demo)
    clips = [load_voice(p, window=None) for p in _voices(tmp_path)]
    seen = []
    monkeypatch.setattr(tts, "quality", lambda text, voice, preset, **kw: seen.append((preset, kw)) or
                        tts_module.QualityResult(*[None] * 8, wav=[np.zeros(3, np.float32)]))
    assert tts.tts("Hi.", clips, decoder="diffusion").shape == (3,)
    tts.tts_with_preset("Hi.", clips, "standard", diffusion_steps=5)
    assert seen == [("ultra_fast", dict(candidates=None)), ("standard", dict(diffusion_steps=5))]
    with pytest.raises(ValueError, match="decoder='diffusion'"):
        tts.tts("Hi.", clips, preset="fast")
    with pytest.raises(ValueError, match="decoder"):
        tts.tts("Hi.", clips, decoder="wavenet")
    assert tts_module.QUALITY_PRESETS["fast"] == dict(num_autoregressive_samples=96, diffusion_iterations=80,
                                                      cond_free=True)
