"""TextToSpeech (pyclvp/speech/tts.py) end to end against Tortoise's api_fast pipeline run greedily on tiny random
weights (tests/data/speech/api_fast_greedy, tools/ref_speech.py): the speech tokens of inference_speech (its
KV-cached positions), the latents and the 24 kHz waveform."""
import json

import numpy as np
import pytest

from conftest import DATA, assert_close, tortoise_folder
from pyclvp.convert import convert_hifigan
from pyclvp.speech.tts import TextToSpeech

FAST = DATA / "speech" / "api_fast_greedy"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    cfg = json.loads((FAST / "config.json").read_text())
    out = tortoise_folder(FAST / "autoregressive.pth", cfg["autoregressive"]["heads"], tmp_path_factory.mktemp("m"))
    convert_hifigan(FAST / cfg["hifidecoder"], out, cfg["hifigan"])
    return out


@pytest.fixture(scope="module")
def ref():
    with np.load(FAST / "expected_kv_cache.npz") as f:
        return dict(f)


def _greedy():
    s = json.loads((FAST / "config.json").read_text())["settings"]
    return dict(do_sample=False, repetition_penalty=s["repetition_penalty"], max_new_tokens=s["max_new_tokens"])


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_greedy_tts_matches_api_fast(folder, ref, backend):
    tts = TextToSpeech.from_pretrained(folder, backend=backend)
    ids = ref["text_tokens"][:, :-1].astype(np.int64)  # api_fast's trailing 0 is the extra eos generate adds
    voice = ref["cond_mels"][0]  # (clips, M, frames): features, as rank() takes them
    tokens, cond = tts.speech_tokens(ids, voice, **_greedy())
    np.testing.assert_array_equal(tokens, ref["codes"][0])
    assert_close(cond[:, 0], ref["auto_conditioning"], atol=1e-5, name="auto_conditioning")
    latents = tts.model.decoder_ref.speech_latents(cond, tokens[None])
    assert_close(latents, ref["latents"], atol=1e-4, name="latents")
    wav = tts.tts(ids, voice, **_greedy())
    assert wav.shape == ref["wav"][0, 0].shape and wav.dtype == np.float32
    assert_close(wav, ref["wav"][0, 0], atol=1e-4, name="waveform")


def test_a_folder_without_a_decoder_says_how_to_convert(folder, tmp_path, ref):
    import shutil

    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, tmp_path / name)
    tts = TextToSpeech.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="convert-tortoise --hifigan hifidecoder.pth"):
        tts.tts(ref["text_tokens"][:, :-1].astype(np.int64), ref["cond_mels"][0], max_new_tokens=2)


def test_cached_latents_equal_the_stream_generators(folder, ref):
    tts = TextToSpeech.from_pretrained(folder)
    _, cond = tts.speech_tokens(ref["text_tokens"][:, :-1].astype(np.int64), ref["cond_mels"][0], **_greedy())
    latents = tts.model.decoder_ref.speech_latents(cond, ref["stream_codes"][None], positions="cached")
    assert_close(latents[0], ref["stream_latents"], atol=1e-4, name="stream latents")


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_tts_stream_matches_api_fast(folder, ref, backend):
    tts = TextToSpeech.from_pretrained(folder, backend=backend)
    s = json.loads((FAST / "config.json").read_text())["settings"]
    chunks = list(tts.tts_stream(ref["text_tokens"][:, :-1].astype(np.int64), ref["cond_mels"][0],
                                 stream_chunk_size=s["stream_chunk_size"], overlap_wav_len=s["overlap_wav_len"],
                                 first_buffer=s["first_buffer"], **_greedy()))
    assert [len(c) for c in chunks] == ref["stream_chunk_lengths"].tolist()
    assert_close(np.concatenate(chunks), ref["stream_wav"], atol=1e-4, name="streamed waveform")
