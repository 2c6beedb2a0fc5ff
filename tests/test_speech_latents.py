"""Speech latents (Decoder.speech_latents) against Tortoise's UnifiedVoice.forward(..., return_latent=True,
clip_inputs=False), and the conditioning vector against UnifiedVoice.get_conditioning, on two tiny random
UnifiedVoice configurations with batch 2 (tests/data/speech/unified_voice, tools/ref_speech.py)."""
import json

import numpy as np
import pytest

from conftest import DATA, assert_close
from conftest import tortoise_folder
from pyclvp.decoding import GenerationOptions
from pyclvp.model import ClvpModelForConditionalGeneration

UV = DATA / "speech" / "unified_voice"


def _model(name, tmp_path, backend):
    heads = json.loads((UV / name / "config.json").read_text())["constructor"]["heads"]
    return ClvpModelForConditionalGeneration.from_pretrained(tortoise_folder(UV / name / "autoregressive.pth", heads,
                                                                             tmp_path), backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("name", ["tiny_ar", "tiny_ar_b"])
def test_latents_match_unified_voice(name, backend, tmp_path):
    model = _model(name, tmp_path, backend)
    with np.load(UV / name / "expected.npz") as f:
        ref = dict(f)
    B, N, M, frames = ref["cond_mels"].shape  # N clips per row
    ids = np.repeat(ref["text"], N, axis=0)  # forward() with clip_inputs=False reads every text column
    cond = model.encode_conditioning(ref["cond_mels"].reshape(B * N, M, frames), ids, None)  # (B*N, 1+T+2, C)
    cond = cond.reshape(B, N, *cond.shape[1:])
    vector = cond[:, :, 0].mean(1)  # (B, C): the clips averaged, as get_conditioning
    assert_close(vector, ref["conditioning"], atol=1e-5, name="conditioning vector")
    prompt = np.concatenate([vector[:, None], cond[:, 0, 1:]], axis=1)  # (B, 1+T+2, C)
    latents = model.decoder_ref.speech_latents(prompt, ref["codes_after_set_mel_padding"])  # (B, N, C)
    assert_close(latents, ref["latents"], atol=1e-4, name="latents")


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("name", ["tiny_ar", "tiny_ar_b"])
@pytest.mark.parametrize("kv_cache, positions", [(True, "cached"), (False, "uncached")])
def test_greedy_tokens_match_inference_speech(name, backend, kv_cache, positions, tmp_path):
    """generate(positions=...) against UnifiedVoice.inference_speech(do_sample=False) with kv_cache True / False:
    token k at mel position k + 1 ("cached") or k ("uncached")."""
    model = _model(name, tmp_path, backend)
    with np.load(UV / name / "expected.npz") as f:
        ref = dict(f)
    want = ref[f"greedy_tokens.kv_cache_{kv_cache}"]  # (B, <=30), eos-padded after a row stops
    B, N, M, frames = ref["cond_mels"].shape
    # inference_speech(text) was called directly: its F.pad(text, (0, 1), value=stop) is the conditioning encoder's
    # eos, so the ids go in as they are (tts() pads one more 0 first: what generate()'s extra eos stands for)
    ids = ref["text"]  # (B, T)
    cond = model.encode_conditioning(ref["cond_mels"].reshape(B * N, M, frames), np.repeat(ids, N, axis=0), None)
    cond = cond.reshape(B, N, *cond.shape[1:])
    prompt = np.concatenate([cond[:, :, :1].mean(1), cond[:, 0, 1:]], axis=1)  # (B, P-1, C)
    # exact tokens against torch's float32 cache: so a float32 cache here (the bfloat16 default flips near-ties)
    opts = GenerationOptions.resolve(max_new_tokens=30, positions=positions, cache_dtype="float32")
    _, tokens = model.candidates(prompt, ids, None, opts)  # (B, N')
    eos = model.config.decoder_config.eos_token_id
    got = np.full(want.shape, eos)
    n = min(tokens.shape[1], want.shape[1])
    got[:, :n] = tokens[:, :n]
    np.testing.assert_array_equal(got, want)
    other = ref[f"greedy_tokens.kv_cache_{not kv_cache}"]
    assert other.shape != want.shape or not np.array_equal(other, want), "the fixture does not tell the rules apart"


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("positions, latent_positions", [("cached", "cached"), ("uncached", "training")])
def test_stream_latents_are_speech_latents(backend, positions, latent_positions, tmp_path):
    """decoding.stream(latents=True): each token comes with the final-normed hidden state its logits came from (the
    prefill's last position, then each step's), i.e. speech_latents of the tokens at the generation's positions:
    KV-cached, or training ones when uncached (kv_cache=False reruns the whole sequence each step)."""
    from pyclvp.decoding import stream

    model = _model("tiny_ar", tmp_path, backend)
    with np.load(UV / "tiny_ar" / "expected.npz") as f:
        ref = dict(f)
    _, N, M, frames = ref["cond_mels"].shape
    ids = ref["text"][:1]
    cond = model.encode_conditioning(ref["cond_mels"][0], np.repeat(ids, N, axis=0), None)  # (N, P-1, C)
    prompt = np.concatenate([cond[:, :1].mean(0, keepdims=True), cond[:1, 1:]], axis=1)  # (1, P-1, C)
    opts = GenerationOptions.resolve(max_new_tokens=12, positions=positions, cache_dtype="float32", do_sample=True,
                                     seed=3)
    d = model.config.decoder_config
    pairs = list(stream(model.decoder, model.decoder_prompt(prompt), opts, d.bos_token_id, d.eos_token_id,
                        latents=True))
    tokens = np.array([[t for t, _ in pairs]])  # (1, n)
    got = np.stack([lat for _, lat in pairs])[None]  # (1, n, C)
    plain = list(stream(model.decoder, model.decoder_prompt(prompt), opts, d.bos_token_id, d.eos_token_id))
    assert plain == tokens[0].tolist()  # the same draws with or without the latents
    want = model.decoder_ref.speech_latents(prompt, tokens, positions=latent_positions)  # (1, n, C)
    assert_close(got, want, atol=1e-5, name=f"stream latents ({positions})")
