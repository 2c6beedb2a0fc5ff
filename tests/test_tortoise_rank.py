"""rank()'s Tortoise pipeline against Tortoise 3.0.0's own tts() (tortoise/api.py) on the tiny UnifiedVoice + CLVP
of tests/data/torch_pickle/tortoise (tests/data/tortoise_rank, tools/ref_tortoise_rank.py): the sampling
distributions of its first steps, the fake prompt's penalty on code 1, CLVP's scores of its padded candidates
(with x-transformers' RMSNorm), and its voice loading."""
import dataclasses

import numpy as np
import pytest

from conftest import DATA, assert_close
from pyclvp.audio.voice import CONDITIONING_SAMPLES, load_audio, load_voice
from pyclvp.convert import convert_tortoise
from pyclvp.decoding import TORTOISE_SAMPLING, GenerationOptions, process_logits
from pyclvp.model import ClvpModelForConditionalGeneration

HERE = DATA / "tortoise_rank"
TORTOISE = DATA / "torch_pickle" / "tortoise"


@pytest.fixture(scope="module")
def ref():
    with np.load(HERE / "expected.npz") as f:
        return dict(f)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("tortoise_rank")
    convert_tortoise(TORTOISE / "autoregressive.pth", TORTOISE / "clvp2.pth", out, decoder_heads=2)
    return out


def _softmax(z):  # (R, V) -> (R, V), -inf -> 0
    z = z.astype(np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _probs(ref, step, **changes):  # pyclvp's distribution at `step` from Tortoise's raw logits (R, V)
    opts = GenerationOptions.resolve(**dict(TORTOISE_SAMPLING, **changes))
    raw, codes = ref["raw_logits"][step], ref["codes"]
    R, V = raw.shape
    seen = np.zeros((R, V), bool)
    seen[:, 98] = True  # the start token (TINY_AR's start_mel_token)
    seen[:, list(opts.prompt_token_ids)] = True
    for k in range(step):
        seen[np.arange(R), codes[:, k]] = True
    return _softmax(process_logits(raw, seen, step, opts, eos=99))


@pytest.mark.parametrize("step", range(4))
def test_sampling_distributions_match_tts(ref, step):
    assert_close(_probs(ref, step), ref["probs"][step], atol=1e-6, rtol=0, name=f"probabilities at step {step}")


def test_tts_applies_top_k_50(ref):
    # without transformers' default top_k=50 the same logits give other distributions
    assert np.abs(_probs(ref, 0, top_k=None) - ref["probs"][0]).max() > 1e-3
    assert ((ref["probs"][0] > 0).sum(-1) <= 50).all()


def test_fake_prompt_penalizes_code_1(ref):
    raw = ref["raw_logits"][0]
    assert (raw.argmax(-1) == 1).all(), "the probe: code 1 has the largest raw logit at the first step"
    assert (ref["probs"][0].argmax(-1) != 1).all(), "Tortoise's penalty on its fake prompt of 1s"
    assert (_probs(ref, 0).argmax(-1) != 1).all()
    assert (_probs(ref, 0, prompt_token_ids=()).argmax(-1) == 1).all(), "without the fake prompt code 1 wins"


def _model(folder, ref, backend="numpy", style=None):
    model = ClvpModelForConditionalGeneration.from_pretrained(folder, backend=backend)
    if style is not None:
        for enc in (model.text_encoder, model.speech_encoder):
            enc.cfg = dataclasses.replace(enc.cfg, rms_norm_style=style)
    return model


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_clvp_scores_of_padded_candidates_match_tts(folder, ref, backend):
    model = _model(folder, ref, backend)
    assert model.config.text_config.rms_norm_style == "tortoise"  # convert-tortoise's choice
    pad_to = int(ref["max_mel_tokens"]) + 1  # rank(pad_to=max_new_tokens): the start token counted
    out = model.score(ref["text_tokens"], None, ref["codes"], pad_to_max_mel_tokens=pad_to)
    np.testing.assert_array_equal(out.speech_ids, ref["clvp_input"])
    assert_close(out.logits_per_text[0], ref["clvp_scores"], atol=1e-4, rtol=0, name="CLVP scores")


def test_padding_and_rms_norm_change_the_scores(folder, ref):
    model = _model(folder, ref)
    unpadded = model.score(ref["text_tokens"], None, ref["codes"]).logits_per_text[0]
    assert np.abs(unpadded - ref["clvp_scores"]).max() > 1e-3  # generate()'s scoring is not tts()'s
    styled = _model(folder, ref, style="transformers")
    out = styled.score(ref["text_tokens"], None, ref["codes"], pad_to_max_mel_tokens=int(ref["max_mel_tokens"]) + 1)
    assert np.abs(out.logits_per_text[0] - ref["clvp_scores"]).max() > 1e-4  # transformers' RMSNorm: 2.5e-4 off


@pytest.mark.parametrize("name", ["voice_stereo_44k", "voice_mono_48k"])
def test_load_voice_matches_tortoise_load_audio(ref, name):
    got = load_voice(HERE / f"{name}.wav", window=None)
    assert_close(got, ref[f"{name}.loaded"], atol=1e-5, rtol=0, name=f"{name} at 22.05 kHz")
    window = load_voice(HERE / f"{name}.wav")  # format_conditioning's 6 s window, zero-padded here
    assert window.shape == (CONDITIONING_SAMPLES,)
    np.testing.assert_array_equal(window[:len(got)], got)
    assert int((window != 0).sum()) == int(ref[f"{name}.conditioning_window_nonzero"])


def test_load_voice_keeps_the_first_channel_where_load_audio_mixes():
    stereo = HERE / "voice_stereo_44k.wav"
    assert np.abs(load_voice(stereo, window=None) - load_audio(stereo)).max() > 0.05


def test_rank_uses_tortoises_settings(folder, ref, monkeypatch):
    from pyclvp import rank as rank_module

    model = _model(folder, ref)
    seen = {}

    def candidates(cond, ids, mask, opts):
        seen["opts"] = opts
        raise StopIteration

    monkeypatch.setattr(model, "candidates", candidates)
    with pytest.raises(StopIteration):
        rank_module.rank(model, ref["text_tokens"][:, :-1], ref["cond_mels"][0], 2, max_new_tokens=7)
    opts = seen["opts"]
    assert (opts.top_k, opts.top_p, opts.temperature, opts.repetition_penalty) == (50, 0.8, 0.8, 2.0)
    assert opts.prompt_token_ids == (1,) and opts.positions == "uncached" and opts.pad_to_max_mel_tokens == 8
    with pytest.raises(StopIteration):
        rank_module.rank(model, ref["text_tokens"][:, :-1], ref["cond_mels"][0], 2, pad_to=None, positions="cached")
    assert seen["opts"].pad_to_max_mel_tokens is None and seen["opts"].positions == "cached"


def test_cli_rank_pad_to_and_positions(tmp_path, capsys):
    from pyclvp.cli import main
    from pyclvp.demo import write_voice_clip

    clip = write_voice_clip(tmp_path / "v.wav", seconds=0.5)
    base = ["rank", "--model", str(DATA / "tiny_a"), "--text", "Hi.", "--voice", str(clip), "--candidates", "2",
            "--max-new-tokens", "4", "--seed", "1", "--json"]
    for extra in (["--pad-to", "none", "--positions", "cached"], ["--pad-to", "9"], []):
        assert main(base + extra) == 0
        assert len(capsys.readouterr().out.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(base + ["--pad-to", "0"])


def test_voice_files_give_tortoises_conditioning(folder, ref):
    """WAV files -> load_voice -> features -> the averaged conditioning vector, as get_conditioning_latents."""
    from pyclvp.audio.features import ClvpFeatureExtractor
    from pyclvp.rank import conditioning

    clips = [load_voice(HERE / f"{name}.wav") for name in ("voice_stereo_44k", "voice_mono_48k")]
    fe = ClvpFeatureExtractor.from_pretrained(folder)  # what rank() uses: Tortoise's mel_norms when no config
    feats = fe(clips, sampling_rate=22050, return_tensors="np")["input_features"]  # (2, 80, frames)
    assert_close(feats, ref["voices.auto_conds"][0], atol=1e-4, rtol=0, name="conditioning mels")
    model = _model(folder, ref)
    cond, _, _ = conditioning(model, ref["text_tokens"][:, :-1], clips)
    assert_close(cond[:, 0], ref["voices.auto_conditioning"], atol=1e-4, rtol=0, name="auto_conditioning")


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_decoder_logits_match_tts_at_uncached_positions(folder, ref, backend):
    """pyclvp's logits for tts()'s sampled codes, fed at the uncached positions (token k at mel position k), are
    the raw logits Tortoise sampled from (the probe's mel_head bias copied in)."""
    from pyclvp.io.safetensors import load_file
    from pyclvp.rank import conditioning

    model = ClvpModelForConditionalGeneration(model_config(folder), dict(load_file(folder / "model.safetensors"),
                                              **{"speech_decoder_model.lm_head.bias": ref["mel_head_bias"]}), backend)
    cond, _, _ = conditioning(model, ref["text_tokens"][:, :-1], ref["cond_mels"][0])  # (1, P-1, C)
    codes = ref["codes"]  # (R, N)
    R, steps = codes.shape[0], ref["raw_logits"].shape[0]
    prompt = np.repeat(model.decoder_prompt(cond), R, axis=0)  # (R, P, C)
    dec = model.decoder
    state = dec.new_state(R, prompt.shape[1] + steps)
    got = [dec.prefill(prompt, None, state)]
    for k in range(1, steps):  # token k (1-based) at mel position k
        got.append(dec.step(codes[:, k - 1], np.full(R, k), state))
    assert_close(np.stack(got), ref["raw_logits"], atol=1e-4, rtol=0, name="decoder logits")


def model_config(folder):
    from pyclvp.config import ClvpConfig

    return ClvpConfig.from_pretrained(folder)
