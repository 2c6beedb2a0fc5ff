"""pyclvp.audio: the WAV reader (every encoding, the real Tortoise voices, the malformed corpus) and the
polyphase resampler (sines keep their frequency, content above the new Nyquist is gone, scipy agrees)."""
from __future__ import annotations

import json
import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DATA, MAX_EXAMPLES, assert_close
from pyclvp.audio.resample import kaiser_sinc_filter, resample
from pyclvp.audio.voice import load_audio
from pyclvp.io.wav import AudioError, read_wav

VOICES = Path(__file__).resolve().parent.parent / "third_party" / "tortoise" / "voices"
VOICE_FILES = sorted(VOICES.rglob("*.wav"))
MALFORMED = DATA / "malformed_wav"

# ---------------------------------------------------------------------------------------------
# A WAV writer for the tests, from the format's definition (independent of the reader under test)

# name -> (format tag, bits per sample, numpy dtype of the stored integers/floats, full scale)
ENCODINGS = {
    "pcm8": (1, 8, np.uint8, 128), "pcm16": (1, 16, np.int16, 2 ** 15), "pcm24": (1, 24, None, 2 ** 23),
    "pcm32": (1, 32, np.int32, 2 ** 31), "float32": (3, 32, np.float32, 1), "float64": (3, 64, np.float64, 1),
}
KSDATAFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def quantize(x: np.ndarray, encoding: str) -> np.ndarray:
    """The float values an encoding can hold nearest x (which is in [-1, 1))."""
    tag, bits, dtype, scale = ENCODINGS[encoding]
    if tag == 3:
        return x.astype(dtype).astype(np.float64)
    return np.clip(np.round(x * scale), -scale, scale - 1) / scale


def encode(x: np.ndarray, encoding: str) -> bytes:  # (T, channels) quantized floats -> data bytes
    tag, bits, dtype, scale = ENCODINGS[encoding]
    if tag == 3:
        return x.astype("<" + np.dtype(dtype).str[1:]).tobytes()
    ints = np.round(x * scale).astype(np.int64).ravel()
    if bits == 8:
        return (ints + 128).astype(np.uint8).tobytes()
    if bits == 24:
        return b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    return ints.astype(f"<i{bits // 8}").tobytes()


def chunk(cid: bytes, payload: bytes) -> bytes:
    return cid + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)


def wav_bytes(x: np.ndarray, rate: int, encoding: str, extensible: bool = False,
              before: tuple = (), after: tuple = ()) -> bytes:
    """A RIFF/WAVE file holding x (T, channels), with extra chunks before and after the data."""
    tag, bits, _, _ = ENCODINGS[encoding]
    channels = x.shape[1]
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * align, align, bits)
    if extensible:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + KSDATAFORMAT_TAIL
    body = b"WAVE" + chunk(b"fmt ", fmt) + b"".join(before) + chunk(b"data", encode(x, encoding)) + b"".join(after)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# ---------------------------------------------------------------------------------------------
# Reading: literal values, every encoding, properties

def test_literal_sample_values():
    x = np.array([[0.0], [-1.0], [0.5], [1 - 2 ** -15]])
    data = wav_bytes(x, 8000, "pcm16")
    assert data[44:] == bytes.fromhex("0000" "0080" "0040" "ff7f")
    samples, rate = read_wav(data)
    assert rate == 8000 and samples.dtype == np.float64
    assert samples[:, 0].tolist() == [0.0, -1.0, 0.5, 1 - 2 ** -15]


@pytest.mark.parametrize("raw, expected", [
    (bytes([0, 128, 255]), [-1.0, 0.0, 127 / 128]),                                  # 8-bit is unsigned
    (bytes.fromhex("000080" "ffff7f" "010000" "ffffff"), [-1.0, 1 - 2 ** -23, 2 ** -23, -(2 ** -23)]),  # 24-bit
])
def test_literal_8_and_24_bit(raw, expected):
    bits = 8 if len(expected) == len(raw) else 24
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 8000 * bits // 8, bits // 8, bits)
    body = b"WAVE" + chunk(b"fmt ", fmt) + chunk(b"data", raw)
    samples, _ = read_wav(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert samples[:, 0].tolist() == expected


@pytest.mark.parametrize("extensible", [False, True], ids=["plain", "extensible"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_encoding(encoding, extensible, tmp_path):
    rng = np.random.default_rng(len(encoding))
    x = quantize(rng.uniform(-1, 1, (50, 2)), encoding)
    path = tmp_path / "clip.wav"
    path.write_bytes(wav_bytes(x, 16000, encoding, extensible))
    samples, rate = read_wav(path)
    assert rate == 16000
    assert np.array_equal(samples, x)
    mono = load_audio(path, sampling_rate=16000)
    assert mono.dtype == np.float32 and mono.shape == (50,)
    assert np.array_equal(mono, x.mean(axis=1).astype(np.float32))


def test_odd_and_unknown_chunks_are_skipped():
    x = quantize(np.linspace(-0.5, 0.5, 7)[:, None], "pcm16")
    odd = chunk(b"LIST", b"INFOabc")           # 7 bytes + pad byte
    data = wav_bytes(x, 22050, "pcm16", before=(odd, chunk(b"JUNK", b"\0" * 12)), after=(chunk(b"cue ", b"x"),))
    assert np.array_equal(read_wav(data)[0], x)


def test_sources_path_bytes_and_file_object(tmp_path):
    data = wav_bytes(np.zeros((3, 1)), 8000, "pcm16")
    (tmp_path / "a.wav").write_bytes(data)
    with open(tmp_path / "a.wav", "rb") as f:
        from_file = read_wav(f)[0]
    for got in (read_wav(tmp_path / "a.wav")[0], read_wav(str(tmp_path / "a.wav"))[0], read_wav(data)[0], from_file):
        assert got.shape == (3, 1)


def test_empty_data_chunk_gives_no_samples():
    assert read_wav(wav_bytes(np.zeros((0, 2)), 8000, "pcm16"))[0].shape == (0, 2)
    assert load_audio(wav_bytes(np.zeros((0, 1)), 8000, "pcm16"), 22050).shape == (0,)


@given(encoding=st.sampled_from(sorted(ENCODINGS)), extensible=st.booleans(),
       frames=st.integers(0, 40), channels=st.integers(1, 6), rate=st.integers(1, 200_000),
       seed=st.integers(0, 2 ** 32 - 1), extra=st.lists(st.binary(max_size=9), max_size=3))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_wav_round_trip(encoding, extensible, frames, channels, rate, seed, extra):
    x = quantize(np.random.default_rng(seed).uniform(-1, 1, (frames, channels)), encoding)
    extras = tuple(chunk(b"zz%02d" % i, payload) for i, payload in enumerate(extra))
    samples, got_rate = read_wav(wav_bytes(x, rate, encoding, extensible, before=extras, after=extras))
    assert got_rate == rate
    assert np.array_equal(samples, x)


@given(data=st.binary(max_size=80))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_garbage_raises_audio_error_only(data):
    header = b"RIFF" + struct.pack("<I", len(data) + 4) + b"WAVE"
    for blob in (data, header + data):
        try:
            read_wav(blob)
        except AudioError:
            pass


# ---------------------------------------------------------------------------------------------
# Malformed files

MALFORMED_INDEX = json.loads((MALFORMED / "index.json").read_text())


@pytest.mark.parametrize("name", sorted(MALFORMED_INDEX))
def test_malformed_wav_raises_audio_error(name):
    with pytest.raises(AudioError, match=MALFORMED_INDEX[name]):
        load_audio(MALFORMED / name)


def test_audio_error_is_a_value_error():
    assert issubclass(AudioError, ValueError)


# ---------------------------------------------------------------------------------------------
# The Tortoise voices

def test_voices_present():
    assert len(VOICE_FILES) >= 60, f"expected the Tortoise voices under {VOICES}"
    rates = {read_wav(f)[1] for f in VOICE_FILES}
    assert rates == {22050, 44100}


@pytest.mark.parametrize("path", VOICE_FILES, ids=[str(p.relative_to(VOICES)) for p in VOICE_FILES])
def test_every_voice_loads(path):
    samples, rate = read_wav(path)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == math.ceil(len(samples) * 22050 / rate)
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.01
    assert len(audio) > 22050  # every voice clip is over a second long
    if rate == 22050:
        assert np.array_equal(audio, samples.mean(axis=1).astype(np.float32))


@pytest.mark.parametrize("path", VOICE_FILES[::7], ids=[str(p.relative_to(VOICES)) for p in VOICE_FILES[::7]])
def test_voice_pcm_matches_stdlib_wave(path):
    samples, _ = read_wav(path)
    try:
        with wave.open(str(path)) as w:
            raw = w.readframes(w.getnframes())
            width, channels = w.getsampwidth(), w.getnchannels()
    except wave.Error:  # IEEE float: the stdlib rejects it (scipy covers it below)
        pytest.skip("the wave module does not read IEEE float WAVs")
    assert width == 2
    want = np.frombuffer(raw, "<i2").reshape(-1, channels) / 32768.0
    assert np.array_equal(samples, want)


def test_voices_match_scipy_wavfile():
    wavfile = pytest.importorskip("scipy.io.wavfile")
    float_files = 0
    for path in VOICE_FILES:
        rate, data = wavfile.read(path)
        scale = 32768.0 if data.dtype == np.int16 else 1.0
        want = data.astype(np.float64).reshape(len(data), -1) / scale
        samples, got_rate = read_wav(path)
        assert got_rate == rate and np.array_equal(samples, want), path
        float_files += data.dtype == np.float32
    assert float_files >= 1  # the lescault clips are stereo IEEE float


# ---------------------------------------------------------------------------------------------
# Resampling

RATE_PAIRS = [(44100, 22050), (16000, 22050), (48000, 22050), (22050, 44100), (8000, 22050), (22050, 16000)]


def _tone(freq, rate, seconds=0.5):
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def _interior(y, margin=0.1):
    k = int(len(y) * margin)
    return slice(k, len(y) - k)


@pytest.mark.parametrize("orig, new", RATE_PAIRS)
@pytest.mark.parametrize("freq", [220.0, 1000.0, 3100.0])
def test_resample_keeps_a_sine(orig, new, freq):
    y = resample(_tone(freq, orig), orig, new)
    want = _tone(freq, new)[:len(y)]
    inner = _interior(y)
    assert_close(y[inner], want[inner], atol=2e-4, name=f"{freq} Hz, {orig}->{new}")


@pytest.mark.parametrize("orig, new, freq", [
    (44100, 22050, 11100.0), (44100, 22050, 15000.0), (44100, 22050, 21000.0),  # above the new Nyquist
    (48000, 22050, 12000.0), (22050, 16000, 9000.0),
])
def test_resample_removes_content_above_the_new_nyquist(orig, new, freq):
    y = resample(_tone(freq, orig), orig, new)
    rms = np.sqrt(np.mean(y[_interior(y)] ** 2))
    assert 20 * np.log10(rms / np.sqrt(0.5)) < -80


@pytest.mark.parametrize("orig, new, freq", [(16000, 22050, 7000.0), (22050, 44100, 9000.0)])
def test_upsampling_leaves_no_images(orig, new, freq):
    y = resample(_tone(freq, orig, 1.0), orig, new)
    inner = _interior(y)
    image = orig - freq  # the tone's mirror image around the old Nyquist frequency
    n = np.arange(len(y))[inner]
    level = 2 * np.abs(np.mean(y[inner] * np.exp(-2j * np.pi * image * n / new)))
    assert 20 * np.log10(level) < -80


@pytest.mark.parametrize("orig, new", RATE_PAIRS)
def test_filter_design(orig, new):
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    h = kaiser_sinc_filter(up, down) / up
    assert len(h) % 2 == 1 and np.allclose(h, h[::-1])               # odd, linear phase
    response = np.abs(np.fft.rfft(h, 1 << 21))
    freq = np.linspace(0, 1, len(response))                         # in units of the upsampled Nyquist
    stop = 1 / max(up, down)
    assert 20 * np.log10(response[freq >= stop].max()) < -80        # stopband
    passband = 20 * np.log10(response[freq <= 0.9 * stop])
    assert np.abs(passband).max() < 0.01                             # flat to 0.01 dB


@pytest.mark.parametrize("orig, new", RATE_PAIRS)
def test_resample_matches_scipy_resample_poly(orig, new):
    signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(orig + new).standard_normal(3001)
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    want = signal.resample_poly(x, up, down, window=kaiser_sinc_filter(up, down) / up)
    assert_close(resample(x, orig, new), want, atol=1e-12, name="resample vs scipy")


def test_resample_identity_and_errors():
    x = np.arange(5.0)
    assert np.array_equal(resample(x, 22050, 22050), x)
    assert np.array_equal(resample(x, 44100, 88200 // 2), x)
    with pytest.raises(ValueError, match="positive integers"):
        resample(x, 0, 22050)
    with pytest.raises(ValueError, match="positive integers"):
        resample(x, 22050.5, 22050)
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((2, 5)), 44100, 22050)
    for orig, new in ((1_000_003, 999_983), (22050, 10**9)):  # coprime / huge: ~10^8 and ~10^9 taps
        with pytest.raises(ValueError, match=r"too fine a ratio"):
            resample(x, orig, new)


@given(orig=st.sampled_from([8000, 11025, 16000, 22050, 24000, 44100, 48000]),
       new=st.sampled_from([16000, 22050, 44100]), n=st.integers(0, 3000), level=st.floats(-1, 1))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_resample_length_and_dc(orig, new, n, level):
    y = resample(np.full(n, level), orig, new)
    assert len(y) == -(-n * new // orig)
    inner = y[_interior(y, 0.25)] if n > 2000 else y[:0]
    assert_close(inner, np.full_like(inner, level), atol=1e-4, name="DC gain")


def test_resample_literal_values():
    # an impulse at 44.1 kHz becomes the filter's even-indexed taps around the centre at 22.05 kHz
    h = kaiser_sinc_filter(1, 2)
    x = np.zeros(1001)
    x[500] = 1.0
    y = resample(x, 44100, 22050)
    centre = (len(h) - 1) // 2
    assert y[250] == pytest.approx(h[centre] * 1, abs=1e-15)
    assert y[251] == pytest.approx(h[centre - 2], abs=1e-15)
    assert h[centre] == pytest.approx(0.475, abs=1e-3)  # cutoff (0.95 / 2) of the upsampled Nyquist
