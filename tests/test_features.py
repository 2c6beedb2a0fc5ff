"""pyclvp.audio.features: stft/istft against torch, mel filters and ClvpFeatureExtractor against transformers
(fixtures from tools/ref_features.py), STFT properties, and the `pyclvp mel` command."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DATA, MAX_EXAMPLES, assert_close
from pyclvp import cli
from pyclvp.audio import load_audio
from pyclvp.audio.features import (ClvpFeatureExtractor, hertz_to_mel, log_mel_spectrogram, mel_filter_bank,
                                   mel_to_hertz, tortoise_mel_norms)
from pyclvp.audio.stft import hann_window, istft, stft

FEATURES = DATA / "features"
VOICES = Path(__file__).resolve().parent.parent / "third_party" / "tortoise" / "voices"
# relative tolerance (to the largest magnitude) by compute precision, as the issue sets them
REL_TOL = {np.dtype(np.complex128): 1e-10, np.dtype(np.float64): 1e-10,
           np.dtype(np.complex64): 1e-5, np.dtype(np.float32): 1e-5}


def _fixture(name):
    meta = json.loads((FEATURES / f"{name}.json").read_text())
    return meta["cases"], np.load(FEATURES / f"{name}.npz")


def _close_to_reference(got, want, name):
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    scale = max(float(np.abs(want).max()), 1e-300) if want.size else 1.0
    assert_close(got, want, atol=REL_TOL[want.dtype] * scale, name=name)


# ---------------------------------------------------------------------------------------------
# Parity with torch

STFT_CASES, STFT_ARRAYS = _fixture("stft")
ISTFT_CASES, ISTFT_ARRAYS = _fixture("istft")


@pytest.mark.parametrize("i", range(len(STFT_CASES)))
def test_stft_matches_torch(i):
    case = STFT_CASES[i]
    kwargs = {k: case[k] for k in ("hop_length", "win_length", "center", "pad_mode", "normalized", "onesided")}
    window = STFT_ARRAYS[f"w{i}"] if f"w{i}" in STFT_ARRAYS else None
    got = stft(STFT_ARRAYS[f"x{i}"], case["n_fft"], window=window, **kwargs)
    _close_to_reference(got, STFT_ARRAYS[f"y{i}"], f"stft case {i} {case}")


@pytest.mark.parametrize("i", range(len(ISTFT_CASES)))
def test_istft_matches_torch(i):
    case = ISTFT_CASES[i]
    kwargs = {k: case[k] for k in ("hop_length", "win_length", "center", "normalized", "onesided", "length",
                                    "return_complex")}
    run = lambda: istft(ISTFT_ARRAYS[f"x{i}"], case["n_fft"], window=ISTFT_ARRAYS[f"w{i}"], **kwargs)  # noqa: E731
    if case["error"]:
        with pytest.raises(ValueError, match="NOLA"):
            run()
    else:
        _close_to_reference(run(), ISTFT_ARRAYS[f"y{i}"], f"istft case {i} {case}")


def test_hann_window_matches_torch():
    windows = np.load(FEATURES / "windows.npz")
    for key in windows.files:
        n, kind = key[4:].split("_")
        assert_close(hann_window(int(n), periodic=kind == "periodic"), windows[key], atol=1e-15, name=key)
    assert hann_window(8, dtype=np.float32).dtype == np.float32


def test_stft_errors():
    x = np.zeros(20)
    for kwargs, message in [
        (dict(n_fft=0), "n_fft > 0"), (dict(n_fft=8, hop_length=0), "hop_length > 0"),
        (dict(n_fft=8, win_length=9), "win_length <= n_fft"), (dict(n_fft=8, window=np.ones(5)), "length win_length=8"),
        (dict(n_fft=40), "reflect padding"), (dict(n_fft=48, pad_mode="circular"), "circular padding"),
        (dict(n_fft=30, center=False), "exceeds"), (dict(n_fft=8, pad_mode="edge"), "unknown pad_mode"),
        (dict(n_fft=8, onesided=True, window=np.ones(8) * 1j), "onesided"),
    ]:
        with pytest.raises(ValueError, match=message):
            stft(x, **kwargs)
    with pytest.raises(TypeError, match="float32, float64"):
        stft(np.zeros(20, dtype=np.int64), 8)
    with pytest.raises(ValueError, match="samples on the last axis"):
        stft(np.zeros((2, 0)), 8)


def test_istft_errors():
    spec = np.zeros((5, 4), dtype=np.complex128)
    with pytest.raises(ValueError, match="frequency bins"):
        istft(spec, 16)
    with pytest.raises(ValueError, match="hop_length <= win_length"):
        istft(spec, 8, hop_length=9)
    with pytest.raises(ValueError, match="two-sided"):
        istft(spec, 8, return_complex=True, onesided=True)
    with pytest.raises(TypeError, match="complex spectrogram"):
        istft(spec.real, 8)


@pytest.mark.parametrize("dtype, cdtype", [(np.float32, np.complex64), (np.float64, np.complex128),
                                           (np.complex64, np.complex64), (np.complex128, np.complex128)])
def test_dtype_is_kept(dtype, cdtype):
    x = np.random.default_rng(0).standard_normal(64).astype(dtype)
    assert stft(x, 16, window=hann_window(16)).dtype == cdtype
    spec = stft(x.real.astype(dtype) if np.iscomplexobj(x) else x, 16, window=hann_window(16), onesided=False)
    real = np.float32 if cdtype == np.complex64 else np.float64
    assert istft(spec, 16, window=hann_window(16), onesided=False).dtype == real


# ---------------------------------------------------------------------------------------------
# STFT properties, each beside a literal case

def _direct_stft(x, n_fft, hop, window):  # (T,) -> (n_fft, frames): the O(N^2) definition, no centring
    frames = [x[t:t + n_fft] * window for t in range(0, len(x) - n_fft + 1, hop)]
    k = np.arange(n_fft)
    dft = np.exp(-2j * np.pi * np.outer(k, k) / n_fft)
    return np.stack([dft @ f for f in frames], axis=1)


def test_stft_literal_values():
    # a constant through a rectangular window: n_fft at DC, zero elsewhere
    spec = stft(np.ones(12), 4, hop_length=4, center=False)
    assert_close(spec, np.array([[4, 4, 4], [0, 0, 0], [0, 0, 0]], dtype=complex), atol=1e-15, name="constant")
    # an impulse at the start of frame 0: every bin equals the window's first sample
    x = np.zeros(8)
    x[0] = 1.0
    spec = stft(x, 4, hop_length=4, window=np.array([0.5, 1, 1, 1]), center=False)
    assert_close(spec[:, 0], np.full(3, 0.5 + 0j), atol=1e-15, name="impulse")
    # cos(2 pi n / 4) over 4 samples: bin 1 holds n_fft / 2
    spec = stft(np.cos(np.pi / 2 * np.arange(4)), 4, center=False)
    assert_close(spec[:, 0], np.array([0, 2, 0], dtype=complex), atol=1e-15, name="cosine")


stft_args = st.fixed_dictionaries(dict(
    n_fft=st.integers(2, 24), hop_length=st.integers(1, 12), center=st.booleans(),
    pad_mode=st.sampled_from(["reflect", "constant", "replicate", "circular"]), normalized=st.booleans(),
))


def _signal(seed, length, batch=()):
    return np.random.default_rng(seed).standard_normal((*batch, length))


@given(args=stft_args, seed=st.integers(0, 2 ** 32 - 1), a=st.floats(-3, 3), b=st.floats(-3, 3))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_stft_is_linear(args, seed, a, b):
    x, y = _signal(seed, 60), _signal(seed + 1, 60)
    w = hann_window(args["n_fft"])
    lhs = stft(a * x + b * y, window=w, **args)
    rhs = a * stft(x, window=w, **args) + b * stft(y, window=w, **args)
    assert_close(lhs, rhs, atol=1e-12 * (1 + np.abs(rhs).max()), name="linearity")


@given(n_fft=st.integers(1, 16), hop=st.integers(1, 8), extra=st.integers(0, 20), seed=st.integers(0, 2 ** 32 - 1))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_stft_matches_direct_dft(n_fft, hop, extra, seed):
    x = _signal(seed, n_fft + extra)
    w = 0.5 + np.random.default_rng(seed).random(n_fft)
    got = stft(x, n_fft, hop, window=w, center=False, onesided=False)
    assert_close(got, _direct_stft(x, n_fft, hop, w), atol=1e-12 * n_fft * (1 + np.abs(x).max()), name="direct DFT")


@given(args=stft_args, seed=st.integers(0, 2 ** 32 - 1))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_two_sided_stft_is_hermitian(args, seed):
    spec = stft(_signal(seed, 50), window=hann_window(args["n_fft"]), onesided=False, **args)  # (n_fft, frames)
    mirrored = np.conj(spec[(-np.arange(args["n_fft"])) % args["n_fft"]])    # X[-k]*
    assert_close(spec, mirrored, atol=1e-12 * (1 + np.abs(spec).max()), name="Hermitian symmetry")
    onesided = stft(_signal(seed, 50), window=hann_window(args["n_fft"]), **args)
    assert_close(onesided, spec[:args["n_fft"] // 2 + 1], atol=1e-12 * (1 + np.abs(spec).max()), name="onesided")


@given(n_fft=st.sampled_from([4, 8, 15, 16, 32]), overlap=st.sampled_from([2, 3, 4]), length=st.integers(40, 120),
       center=st.booleans(), normalized=st.booleans(), rectangular=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_istft_inverts_stft(n_fft, overlap, length, center, normalized, rectangular, seed):
    """A window whose squares overlap-add to a non-zero envelope (the NOLA condition) inverts exactly."""
    hop = max(1, n_fft // overlap)
    window = np.ones(n_fft) if rectangular else hann_window(n_fft) + (0.0 if center else 0.1)
    x = _signal(seed, length, (2,))
    kwargs = dict(hop_length=hop, window=window, center=center, normalized=normalized)
    spec = stft(x, n_fft, **kwargs)
    y = istft(spec, n_fft, length=None if not center else length, **kwargs)
    covered = min(length, y.shape[-1])  # without centring, the tail after the last frame is not covered
    assert_close(y[..., :covered], x[..., :covered], atol=1e-10, name="istft(stft(x))")


def test_istft_literal_round_trip():
    x = np.array([1.0, -2.0, 3.0, 0.5, 0.0, 4.0, -1.0, 2.0])
    spec = stft(x, 4, hop_length=2, window=hann_window(4))
    assert_close(istft(spec, 4, hop_length=2, window=hann_window(4), length=8), x, atol=1e-14, name="round trip")


@given(n_fft=st.integers(2, 16), hop=st.integers(1, 8), frames=st.integers(3, 8), seed=st.integers(0, 2 ** 32 - 1),
       pad_mode=st.sampled_from(["reflect", "constant", "replicate", "circular"]))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_shift_by_one_hop_shifts_frames(n_fft, hop, frames, seed, pad_mode):
    x = _signal(seed, n_fft + hop * frames + n_fft)
    w = hann_window(n_fft)
    a = stft(x, n_fft, hop, window=w, center=True, pad_mode=pad_mode)
    b = stft(x[hop:], n_fft, hop, window=w, center=True, pad_mode=pad_mode)
    half = n_fft // 2
    first = -(-half // hop) + 1                 # first frame of x[hop:] that does not reach its padding
    last = (len(x) - hop - half - n_fft) // hop  # ... and the last one
    if last >= first:
        assert_close(b[:, first:last + 1], a[:, first + 1:last + 2], atol=1e-12, name="one-hop shift")
    assert_close(stft(x[hop:], n_fft, hop, window=w, center=False),
                 stft(x, n_fft, hop, window=w, center=False)[:, 1:], atol=1e-12, name="one-hop shift, no centring")


@given(n_fft=st.integers(1, 32), hop=st.integers(1, 32), seed=st.integers(0, 2 ** 32 - 1), onesided=st.booleans())
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_parseval_per_frame(n_fft, hop, seed, onesided):
    """With normalized=True the DFT is unitary: each frame's energy equals its windowed samples' energy."""
    x = _signal(seed, n_fft + 3 * hop)
    w = 0.5 + np.random.default_rng(seed).random(n_fft)
    spec = stft(x, n_fft, hop, window=w, center=False, normalized=True, onesided=onesided)  # (F, frames)
    power = np.abs(spec) ** 2
    if onesided:  # the bins other than DC and Nyquist stand for two conjugate bins each
        power[1:(n_fft + 1) // 2] *= 2
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * w               # (frames, n_fft)
    assert_close(power.sum(axis=0), (frames ** 2).sum(axis=1), atol=1e-10 * n_fft, name="Parseval")


def test_parseval_literal():
    spec = stft(np.array([1.0, 1.0, 1.0, 1.0]), 4, center=False, normalized=True, onesided=False)
    assert_close(spec[:, 0], np.array([2, 0, 0, 0], dtype=complex), atol=1e-15, name="unit DFT of ones")


@given(n_fft=st.integers(2, 16), hop=st.integers(1, 8), lead=st.lists(st.integers(1, 3), max_size=3),
       seed=st.integers(0, 2 ** 32 - 1))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_leading_dims_are_a_batch(n_fft, hop, lead, seed):
    x = _signal(seed, 40, tuple(lead))
    w = hann_window(n_fft)
    spec = stft(x, n_fft, hop, window=w)
    rows = np.stack([stft(row, n_fft, hop, window=w) for row in x.reshape(-1, 40)])
    assert np.array_equal(spec.reshape(rows.shape), rows)
    back = istft(spec, n_fft, hop, window=w, length=40) if hop <= n_fft // 2 else None
    if back is not None:
        assert back.shape == x.shape


# ---------------------------------------------------------------------------------------------
# Mel filters (transformers.audio_utils)

def test_mel_filter_bank_matches_transformers():
    meta = json.loads((FEATURES / "mel.json").read_text())
    want = np.load(FEATURES / "mel.npz")
    # float64 filters in [0, 1]; atol 1e-14 is ~45 float64 ulps at 1.0. Each entry is a difference of nearby mel
    # values over a band's width, so the last-ulp differences of NumPy's ISA-specific log/exp grow there:
    # 1.3e-15 on an AVX-512 host against this AVX2-made fixture (2026-11-26).
    for name, args in meta["configs"].items():
        assert_close(mel_filter_bank(*args), want[name], atol=1e-14, rtol=1e-13, name=f"mel {name}")


def test_mel_scales_literal_and_inverse():
    assert hertz_to_mel(1000.0, "slaney") == pytest.approx(15.0)
    assert hertz_to_mel(700.0, "htk") == pytest.approx(2595 * np.log10(2))
    assert hertz_to_mel(700.0, "kaldi") == pytest.approx(1127 * np.log(2))
    f = np.array([0.0, 100.0, 999.0, 1000.0, 4000.0, 11025.0])
    for scale in ("htk", "slaney", "kaldi"):
        assert_close(mel_to_hertz(hertz_to_mel(f, scale), scale), f, atol=1e-9, name=scale)
    with pytest.raises(ValueError, match="mel_scale"):
        hertz_to_mel(1.0, "mels")


def test_mel_filter_bank_errors_and_warning():
    with pytest.raises(ValueError, match="norm"):
        mel_filter_bank(10, 4, 0, 100, 200, norm="area")
    with pytest.raises(ValueError, match="num_frequency_bins"):
        mel_filter_bank(1, 4, 0, 100, 200)
    with pytest.raises(ValueError, match="min_frequency"):
        mel_filter_bank(10, 4, 100, 0, 200)
    with pytest.warns(UserWarning, match="all zero values"):
        mel_filter_bank(5, 40, 0, 100, 200)


# ---------------------------------------------------------------------------------------------
# ClvpFeatureExtractor (transformers.models.clvp.feature_extraction_clvp)

CLVP_CASES, CLVP_ARRAYS = _fixture("clvp")


@pytest.mark.parametrize("case", CLVP_CASES, ids=[c["name"] for c in CLVP_CASES])
def test_features_match_transformers(case):
    clips = [load_audio(VOICES / rel) for rel in case["clips"]]
    sums = [float(c.astype(np.float64).sum()) for c in clips]
    assert sums == pytest.approx(case["clip_sums"], rel=1e-12, abs=1e-9), "decoded samples differ from scipy's"
    norms = tortoise_mel_norms().tolist() if case["mel_norms"] else None
    extractor = ClvpFeatureExtractor(mel_norms=norms, **case["init"])
    got = extractor(clips, sampling_rate=22050, return_tensors="np", **case["kwargs"])
    want = CLVP_ARRAYS[f"{case['name']}_features"]
    assert got["input_features"].dtype == np.float32
    assert_close(got["input_features"], want, atol=1e-4, name=f"{case['name']} input_features")
    assert np.array_equal(got["attention_mask"], CLVP_ARRAYS[f"{case['name']}_mask"])
    assert got["attention_mask"].dtype == np.int32


def test_feature_shapes_and_list_output():
    x = np.random.default_rng(0).standard_normal(30000).astype(np.float32) * 0.1
    out = ClvpFeatureExtractor()(x, sampling_rate=22050)
    assert isinstance(out["input_features"], list) and out["input_features"][0].shape == (80, 517)
    assert out["attention_mask"].shape == (1, 132300) and out["attention_mask"].sum() == 30000
    assert out.input_features is out["input_features"]
    out = ClvpFeatureExtractor()([x, x[:5000]], sampling_rate=22050, padding=False)
    assert [f.shape for f in out["input_features"]] == [(80, 118), (80, 20)]
    assert [len(m) for m in out["attention_mask"]] == [30000, 5000]
    with pytest.raises(ValueError, match="cannot be stacked"):
        ClvpFeatureExtractor()([x, x[:5000]], sampling_rate=22050, padding=False, return_tensors="np")


def test_one_clip_list_and_batch_array_agree():
    x = np.random.default_rng(1).standard_normal((2, 9000)) * 0.1
    fe = ClvpFeatureExtractor()
    batch = fe(x, sampling_rate=22050, return_tensors="np", max_length=9000)["input_features"]
    single = fe(list(x[1]), sampling_rate=22050, return_tensors="np", max_length=9000)["input_features"]
    assert batch.shape == (2, 80, 36) and np.array_equal(batch[1:], single)
    assert np.array_equal(batch, log_mel_spectrogram(x.astype(np.float32), fe.mel_filters))


def test_extractor_errors():
    fe = ClvpFeatureExtractor()
    with pytest.raises(ValueError, match="sampling rate of 22050"):
        fe(np.zeros(100), sampling_rate=16000)
    with pytest.raises(ValueError, match="mono"):
        fe(np.zeros((1, 2, 100)), sampling_rate=22050)
    with pytest.raises(ValueError, match="torch-free"):
        fe(np.zeros(100), sampling_rate=22050, return_tensors="pt")
    with pytest.raises(ValueError, match="padding must be"):
        fe(np.zeros(100), sampling_rate=22050, padding="everything")
    with pytest.raises(ValueError, match="feature_size=80"):
        ClvpFeatureExtractor(mel_norms=[1.0] * 3)
    with pytest.raises(ValueError, match="no samples"):
        fe([np.zeros(0)], sampling_rate=22050, padding=False)
    with pytest.raises(ValueError, match="padding must be"):
        fe(np.zeros(100), sampling_rate=22050, padding=[1])


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(raw_speech=np.r_[np.zeros(99), np.nan]), ValueError, r"clip 0: 1 NaN or infinite sample\(s\).*first at 99"),
    (dict(raw_speech=[np.zeros(9), np.full(9, -np.inf)]), ValueError, "clip 1: 9 NaN or infinite"),
    (dict(raw_speech=np.full(9, 1e300)), ValueError, r"NaN or infinite sample\(s\) \(as float32\)"),
    (dict(raw_speech="hello"), TypeError, "clip 0: expected real-valued samples, got dtype <U5"),
    (dict(raw_speech=np.zeros(9, complex)), TypeError, "got dtype complex128"),
    (dict(raw_speech=np.zeros(9, bool)), TypeError, "got dtype bool"),
    (dict(raw_speech=np.zeros(9), max_length=100.5), ValueError, "max_length must be a positive integer, got 100.5"),
    (dict(raw_speech=np.zeros(9), max_length=-5), ValueError, "max_length must be a positive integer"),
    (dict(raw_speech=np.zeros(9), pad_to_multiple_of=0), ValueError, "pad_to_multiple_of must be a positive integer"),
    (dict(raw_speech=np.zeros(9), pad_to_multiple_of=2.5), ValueError, "pad_to_multiple_of must be"),
])
def test_extractor_rejects_bad_audio_and_sizes(kwargs, error, match):
    """Audio that is not finite real samples, and sizes that are not positive integers, are named (silence is a
    valid signal here: rank() is where a silent voice clip is refused)."""
    with pytest.raises(error, match=match):
        ClvpFeatureExtractor()(sampling_rate=22050, **kwargs)


@pytest.mark.parametrize("key, value", [("hop_length", 0), ("n_fft", -1), ("sampling_rate", "x"),
                                        ("feature_size", 0), ("chunk_length", 2.5), ("default_audio_length", None)])
def test_extractor_rejects_bad_sizes(key, value):
    with pytest.raises(ValueError, match=f"{key} must be a positive integer, got {value!r}"):
        ClvpFeatureExtractor(**{key: value})


def test_from_pretrained_names_a_broken_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"preprocessor_config.json is not valid JSON"):
        ClvpFeatureExtractor.from_pretrained(tmp_path)


def test_from_pretrained_and_save(tmp_path):
    bundled = ClvpFeatureExtractor.from_pretrained()
    assert np.array_equal(np.asarray(bundled.mel_norms, dtype=np.float32), tortoise_mel_norms())
    assert tortoise_mel_norms().shape == (80,) and tortoise_mel_norms().dtype == np.float32
    custom = ClvpFeatureExtractor(default_audio_length=2, padding_side="left", mel_norms=[2.0] * 80, extra_key=7)
    custom.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["feature_extractor_type"] == "ClvpFeatureExtractor" and config["default_audio_length"] == 2
    loaded = ClvpFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == custom.to_dict() and loaded.padding_side == "left"
    assert ClvpFeatureExtractor.from_pretrained(tmp_path / "preprocessor_config.json").to_dict() == custom.to_dict()
    (tmp_path / "empty").mkdir()
    assert ClvpFeatureExtractor.from_pretrained(tmp_path / "empty").to_dict() == bundled.to_dict()
    with pytest.raises(FileNotFoundError):
        ClvpFeatureExtractor.from_pretrained(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# pyclvp mel

def _read_png(path):  # -> (width, height, rgb bytes), checking every chunk's CRC
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


def test_cli_mel_writes_features_and_png(tmp_path, capsys):
    clip = VOICES / "angie" / "2.wav"  # 44.1 kHz: resampled on the way in
    out, png = tmp_path / "mel.npy", tmp_path / "mel.png"
    assert cli.main(["mel", str(clip), "-o", str(out), "--png", str(png)]) == 0
    features = np.load(out)
    want = ClvpFeatureExtractor.from_pretrained()(load_audio(clip), sampling_rate=22050, return_tensors="np")
    assert np.array_equal(features, want["input_features"][0])
    from pyclvp.png import BAR_GAP, BAR_RIGHT, BAR_WIDTH, MEL_BOTTOM, MEL_LEFT, MEL_TOP

    width, height, _ = _read_png(png)  # the 517-frame, 240-row spectrogram inside its axes and colour bar
    assert (width, height) == (MEL_LEFT + 517 + BAR_GAP + BAR_WIDTH + BAR_RIGHT, MEL_TOP + 240 + MEL_BOTTOM)
    assert cli.main(["mel", str(clip), "-o", str(out), "--full", "--no-norms"]) == 0
    assert np.load(out).shape == (80, 1 + len(load_audio(clip)) // 256)
    assert "float32" in capsys.readouterr().out


def test_cli_mel_bad_file(tmp_path, capsys):
    assert cli.main(["mel", str(DATA / "malformed_wav" / "mulaw.wav"), "-o", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "mu-law" in err and "mulaw.wav" in err and len(err.splitlines()) == 1
