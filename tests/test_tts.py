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
@pytest.mark.parametrize("positions, fixture", [("cached", "expected_kv_cache"), ("uncached", "expected_no_kv_cache")])
def test_greedy_tts_matches_api_fast(folder, backend, positions, fixture):
    with np.load(FAST / f"{fixture}.npz") as f:
        ref = dict(f)
    tts = TextToSpeech.from_pretrained(folder, backend=backend)
    ids = ref["text_tokens"][:, :-1].astype(np.int64)  # api_fast's trailing 0 is the extra eos generate adds
    voice = ref["cond_mels"][0]  # (clips, M, frames): features, as rank() takes them
    tokens, cond = tts.speech_tokens(ids, voice, positions=positions, **_greedy())
    np.testing.assert_array_equal(tokens, ref["codes"][0])
    assert_close(cond[:, 0], ref["auto_conditioning"], atol=1e-5, name="auto_conditioning")
    latents = tts.model.decoder_ref.speech_latents(cond, tokens[None])
    assert_close(latents, ref["latents"], atol=1e-4, name="latents")
    wav = tts.tts(ids, voice, positions=positions, **_greedy())
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
@pytest.mark.parametrize("positions, fixture", [("cached", "expected_kv_cache"), ("uncached", "expected_no_kv_cache")])
def test_tts_stream_matches_api_fast(folder, backend, positions, fixture):
    """kv_cache=True: the generation stops at 44 tokens, one chunk; kv_cache=False: 80 tokens (the limit), four
    chunks (after 60, 68, 76 and 80 tokens with stream_chunk_size 8), each cross-faded into the last."""
    with np.load(FAST / f"{fixture}.npz") as f:
        ref = dict(f)
    tts = TextToSpeech.from_pretrained(folder, backend=backend)
    s = json.loads((FAST / "config.json").read_text())["settings"]
    chunks = list(tts.tts_stream(ref["text_tokens"][:, :-1].astype(np.int64), ref["cond_mels"][0],
                                 stream_chunk_size=s["stream_chunk_size"], overlap_wav_len=s["overlap_wav_len"],
                                 first_buffer=s["first_buffer"], positions=positions, **_greedy()))
    assert [len(c) for c in chunks] == ref["stream_chunk_lengths"].tolist()
    assert_close(np.concatenate(chunks), ref["stream_wav"], atol=1e-4, name="streamed waveform")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):  # the demo's random model (Tortoise's vocabularies) with a random HiFi-GAN
    from pyclvp.demo import write_random_checkpoint, write_random_hifigan

    out = tmp_path_factory.mktemp("demo")
    write_random_hifigan(out, write_random_checkpoint(out).decoder_config.hidden_size)
    return out


def _voice(tmp_path):
    from pyclvp.demo import write_voice_clip

    return str(write_voice_clip(tmp_path / "voice.wav", seconds=1.0))


def test_cli_writes_a_24khz_wav(demo, tmp_path, capsys):
    from pyclvp.cli import main
    from pyclvp.io.wav import read_wav

    out = tmp_path / "out.wav"
    assert main(["tts", "--model", str(demo), "--text", "Hi there.", "--voice", _voice(tmp_path), "-o", str(out),
                 "--seed", "0", "--max-new-tokens", "12", "--backend", "cpu"]) == 0
    samples, rate = read_wav(out)
    assert rate == 24000 and samples.shape[1] == 1 and len(samples) > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert "wrote" in capsys.readouterr().err


def test_cli_streams_a_wav_to_stdout(demo, tmp_path, capsysbinary):
    from pyclvp.cli import main

    assert main(["tts", "--model", str(demo), "--text", "Hi there.", "--voice", _voice(tmp_path), "-o", "-",
                 "--stream", "--seed", "0", "--max-new-tokens", "12"]) == 0
    data = capsysbinary.readouterr().out
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and data[40:44] == b"\xff\xff\xff\xff"  # streaming sizes
    from pyclvp.audio import load_audio
    from pyclvp.io.wav import pcm16

    tts = TextToSpeech.from_pretrained(demo)
    chunks = tts.tts_stream("Hi there.", [load_audio(_voice(tmp_path))], seed=0, max_new_tokens=12)
    assert data[44:] == b"".join(pcm16(c) for c in chunks)


@pytest.mark.parametrize("extra, match", [
    (["--stream", "--candidates", "2"], "cannot rank --candidates"),
    (["--text", " "], "the text is empty"),
])
def test_cli_refuses_bad_requests_in_one_line(demo, tmp_path, capsys, extra, match):
    from pyclvp.cli import main

    args = ["tts", "--model", str(demo), "--text", "Hi.", "--voice", _voice(tmp_path), "-o", str(tmp_path / "o.wav")]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("n, want", [(100, [60, 100]), (130, [60, 100, 130]), (30, [30])])
def test_stream_chunks_come_as_the_tokens_do(demo, tmp_path, n, want):
    """A chunk after the first 60 tokens, then every 40 and at the end; chunk i holds the samples of the tokens
    so far, less the 1024 held back for the cross-fade (W(N) samples for N latents: 4x, then 24000/22050, x256)."""
    from pyclvp.audio import load_audio

    tts = TextToSpeech.from_pretrained(demo)
    chunks = list(tts.tts_stream("Hi there.", [load_audio(_voice(tmp_path))], seed=0, max_new_tokens=n,
                                 min_new_tokens=n))

    def W(N):
        return int(int(4 * N) * (24000 / 22050)) * 256

    ends = [W(k) - 1024 for k in want]
    assert [len(c) for c in chunks] == [e - s for s, e in zip([0] + ends, ends)]
