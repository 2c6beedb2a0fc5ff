"""Audio front-end fixtures: torch.stft / torch.istft / hann_window over a grid, transformers' mel filters,
ClvpFeatureExtractor and ClvpProcessor on real Tortoise voice clips, and a corpus of malformed WAVs.

  tests/data/features/stft.npz + stft.json      torch.stft cases: json {"fixture_version", "torch",
      "cases": [{"n_fft", "hop_length", "win_length", "window", "center", "pad_mode", "normalized",
      "onesided", "dtype"}]}; npz x{i} (input), w{i} (window, when not None), y{i} (torch.stft output)
  tests/data/features/istft.npz + istft.json    torch.istft cases, the same layout, plus "length" and
      "return_complex"; "error": true where torch refuses (the window overlap-add is zero)
  tests/data/features/windows.npz               hann{n}_{periodic|symmetric}: torch.hann_window, float64
  tests/data/features/mel.npz + mel.json        transformers.audio_utils.mel_filter_bank, one key per config
  tests/data/features/clvp.npz + clvp.json      ClvpFeatureExtractor outputs: "cases": [{"name", "clips"
      (paths under third_party/tortoise/voices), "clip_sums" (float64 sums of the decoded mono float32
      samples), "mel_norms" (bool: the bundled Tortoise norms), "init" and "kwargs"
      (the constructor's and the call's arguments)}]; npz {name}_features, {name}_mask
  tests/data/features/processor.npz + .json     ClvpProcessor(text, audio) with transformers' ClvpTokenizer
  tests/data/malformed_wav/<failure>.wav        hand-made bad WAVs, one per failure mode, with index.json:
      {file: a fragment the AudioError message must contain}

The voice clips are decoded here with scipy.io.wavfile (an implementation independent of pyclvp's),
averaged to mono in float64 and rounded to float32 before transformers sees them. The malformed corpus
needs neither torch nor scipy: `python tools/ref_features.py --malformed-only` writes just that.
"""
from __future__ import annotations

import argparse
import itertools
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, write_json

ROOT = Path(__file__).resolve().parent.parent
VOICES = ROOT / "third_party" / "tortoise" / "voices"
MEL_NORMS = ROOT / "pyclvp" / "data" / "mel_norms.npy"


# ---------------------------------------------------------------------------------------------
# torch.stft / torch.istft grid

def _stft_cases():
    """~40 combinations of the STFT's arguments: every pad mode and flag, both dtypes, 1-D and batched."""
    rng = np.random.default_rng(5)
    grid = list(itertools.product([8, 15, 16], [None, 3, 5], [None, 6], ["none", "hann", "random"], [True, False],
                                  ["reflect", "constant", "replicate", "circular"], [False, True], [None, False],
                                  ["float64", "float32"]))
    picks = [grid[i] for i in rng.choice(len(grid), 36, replace=False)]
    picks += [(16, 4, None, "hann", True, mode, False, None, dtype)                     # every pad mode, each dtype
              for mode in ["reflect", "constant", "replicate", "circular"] for dtype in ["float64", "float32"]]
    for n_fft, hop, win, window, center, pad_mode, normalized, onesided, dtype in picks:
        yield dict(n_fft=n_fft, hop_length=hop, win_length=win, window=window, center=center, pad_mode=pad_mode,
                   normalized=normalized, onesided=onesided, dtype=dtype)
    yield dict(n_fft=8, hop_length=2, win_length=None, window="hann", center=True, pad_mode="reflect",
               normalized=False, onesided=False, dtype="complex128")                     # complex input: two-sided


def _window(kind, length, dtype, rng):
    import torch

    if kind == "none":
        return None
    if kind == "hann":
        return torch.hann_window(length, dtype=torch.float64).numpy().astype(dtype)
    return (0.2 + rng.random(length)).astype(dtype)  # "random": positive, so the overlap-add never vanishes


def make_stft(out: Path) -> None:
    import torch

    rng = np.random.default_rng(6)
    cases, arrays = [], {}
    for i, case in enumerate(_stft_cases()):
        real = "float32" if case["dtype"] == "float32" else "float64"
        length = int(rng.integers(case["n_fft"], 48))
        shape = (length,) if i % 3 == 0 else (2, length)
        x = rng.standard_normal(shape)
        if case["dtype"] == "complex128":
            x = x + 1j * rng.standard_normal(shape)
        x = x.astype(case["dtype"])
        w = _window(case["window"], case["win_length"] or case["n_fft"], real, rng)
        y = torch.stft(torch.from_numpy(x), case["n_fft"], hop_length=case["hop_length"], win_length=case["win_length"],
                       window=None if w is None else torch.from_numpy(w), center=case["center"],
                       pad_mode=case["pad_mode"], normalized=case["normalized"], onesided=case["onesided"],
                       return_complex=True)
        arrays[f"x{i}"], arrays[f"y{i}"] = x, y.numpy()
        if w is not None:
            arrays[f"w{i}"] = w
        cases.append(case)
    np.savez_compressed(out / "stft.npz", **arrays)
    write_json(out / "stft.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__, cases=cases))


def _istft_cases():
    rng = np.random.default_rng(7)
    grid = list(itertools.product([8, 15, 16], [None, 2, 4], [None, 12], [True, False], [False, True],
                                  [None, False], [None, 10, 60], [False, True], ["float64", "float32"]))
    picks = [g for g in grid if not (g[7] and g[5] is None)]  # return_complex needs a two-sided input
    for n_fft, hop, win, center, normalized, onesided, length, return_complex, dtype in \
            [picks[i] for i in rng.choice(len(picks), 28, replace=False)]:
        yield dict(n_fft=n_fft, hop_length=hop, win_length=win if (win or n_fft) <= n_fft else None,
                   window="hann" if center else "hann+0.05", center=center, normalized=normalized,
                   onesided=onesided, length=length, return_complex=return_complex, dtype=dtype)
    # torch refuses: a Hann window's overlap-add is zero at the first sample when not centred
    yield dict(n_fft=16, hop_length=4, win_length=None, window="hann", center=False, normalized=False,
               onesided=None, length=None, return_complex=False, dtype="float64")


def make_istft(out: Path) -> None:
    import torch

    rng = np.random.default_rng(8)
    cases, arrays = [], {}
    for i, case in enumerate(_istft_cases()):
        n_fft, cdtype = case["n_fft"], np.complex64 if case["dtype"] == "float32" else np.complex128
        n_freq = n_fft if case["onesided"] is False else n_fft // 2 + 1
        shape = (n_freq, 7) if i % 3 == 0 else (2, n_freq, 7)
        spec = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(cdtype)
        w = torch.hann_window(case["win_length"] or n_fft, dtype=torch.float64).numpy()
        w = (w + (0.05 if case["window"] == "hann+0.05" else 0.0)).astype(case["dtype"])
        arrays[f"x{i}"], arrays[f"w{i}"] = spec, w
        try:
            y = torch.istft(torch.from_numpy(spec), n_fft, hop_length=case["hop_length"], win_length=case["win_length"],
                            window=torch.from_numpy(w), center=case["center"], normalized=case["normalized"],
                            onesided=case["onesided"], length=case["length"], return_complex=case["return_complex"])
            arrays[f"y{i}"] = y.numpy()
            case["error"] = False
        except RuntimeError:
            case["error"] = True
        cases.append(case)
    np.savez_compressed(out / "istft.npz", **arrays)
    write_json(out / "istft.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__, cases=cases))


def make_windows(out: Path) -> None:
    import torch

    arrays = {f"hann{n}_{'periodic' if p else 'symmetric'}": torch.hann_window(n, periodic=p, dtype=torch.float64).numpy()
              for n in [0, 1, 2, 5, 16, 1024] for p in [True, False]}
    np.savez_compressed(out / "windows.npz", **arrays)


# ---------------------------------------------------------------------------------------------
# transformers: mel filters, ClvpFeatureExtractor, ClvpProcessor

MEL_CONFIGS = {  # name -> mel_filter_bank arguments
    "clvp": (513, 80, 0.0, 8000.0, 22050, "slaney", "htk"),
    "whisper": (201, 80, 0.0, 8000.0, 16000, "slaney", "slaney"),
    "kaldi": (257, 23, 20.0, 7800.0, 16000, None, "kaldi"),
    "htk_plain": (129, 40, 133.3, 6855.5, 16000, None, "htk"),
    "odd_rate": (300, 64, 50.0, 11000.0, 22051, "slaney", "slaney"),
}


def make_mel(out: Path) -> None:
    import transformers
    from transformers.audio_utils import mel_filter_bank

    arrays = {name: mel_filter_bank(*args) for name, args in MEL_CONFIGS.items()}
    np.savez_compressed(out / "mel.npz", **arrays)
    write_json(out / "mel.json", dict(fixture_version=FIXTURE_VERSION, transformers=transformers.__version__,
                                      configs={k: list(v) for k, v in MEL_CONFIGS.items()}))


def _voice(rel: str) -> np.ndarray:  # -> (T,) float32
    """A voice clip as mono float32, decoded by scipy: ints scaled by their full range, channels averaged."""
    from scipy.io import wavfile

    rate, data = wavfile.read(VOICES / rel)
    assert rate == 22050, (rel, rate)
    scale = {np.dtype(np.int16): 32768.0, np.dtype(np.float32): 1.0}[data.dtype]
    data = data.astype(np.float64) / scale
    return (data.mean(axis=1) if data.ndim == 2 else data).astype(np.float32)


FEATURE_CASES = [  # name, clips, mel_norms, constructor kwargs, call kwargs
    # 20.7 s (truncated) and 3.5 s stereo IEEE-float (padded): the default 6 s, with Tortoise's norms
    ("default_norms", ["geralt/2.wav", "train_lescault/lescault_new1.wav"], True, {}, {}),
    # no norms, 1 s
    ("no_norms_1s", ["emma/3.wav"], False, {}, {"max_length": 22050}),
    # left padding to the longest of a batch, rounded up to a multiple
    ("longest_multiple_left", ["emma/1.wav", "tom/3.wav"], False, {"padding_side": "left"},
     {"padding": "longest", "max_length": 20000, "pad_to_multiple_of": 4096}),
]


def make_clvp_features(out: Path) -> None:
    import transformers
    from transformers import ClvpFeatureExtractor

    norms = np.load(MEL_NORMS).tolist()
    cases, arrays = [], {}
    for name, rels, use_norms, init, kwargs in FEATURE_CASES:
        clips = [_voice(r) for r in rels]
        extractor = ClvpFeatureExtractor(mel_norms=norms if use_norms else None, **init)
        got = extractor(clips, sampling_rate=22050, return_tensors="np", **kwargs)
        arrays[f"{name}_features"] = got["input_features"]
        arrays[f"{name}_mask"] = got["attention_mask"]
        cases.append(dict(name=name, clips=rels, clip_sums=[float(c.astype(np.float64).sum()) for c in clips],
                          mel_norms=use_norms, init=init, kwargs=kwargs))
    np.savez_compressed(out / "clvp.npz", **arrays)
    write_json(out / "clvp.json", dict(fixture_version=FIXTURE_VERSION, transformers=transformers.__version__,
                                       cases=cases))


PROCESSOR_CASES = [  # name, text, clips, kwargs
    ("text_and_audio", ["Hello there, how are you?", "It costs $5."], ["emma/3.wav", "daniel/4.wav"],
     {"padding": True, "max_length": 22050}),
]


def make_processor(out: Path) -> None:
    import transformers
    from transformers import ClvpFeatureExtractor, ClvpProcessor, ClvpTokenizer

    tokenizer = ClvpTokenizer(str(ROOT / "pyclvp" / "data" / "vocab.json"), str(ROOT / "pyclvp" / "data" / "merges.txt"))
    processor = ClvpProcessor(ClvpFeatureExtractor(mel_norms=np.load(MEL_NORMS).tolist()), tokenizer)
    cases, arrays = [], {}
    for name, text, rels, kwargs in PROCESSOR_CASES:
        got = processor(text=text, audio=[_voice(r) for r in rels], sampling_rate=22050, return_tensors="np", **kwargs)
        for key, value in got.items():
            arrays[f"{name}_{key}"] = value
        cases.append(dict(name=name, text=text, clips=rels, kwargs=kwargs, keys=sorted(got)))
    np.savez_compressed(out / "processor.npz", **arrays)
    write_json(out / "processor.json", dict(fixture_version=FIXTURE_VERSION, transformers=transformers.__version__,
                                            cases=cases))


# ---------------------------------------------------------------------------------------------
# Malformed WAVs (no torch, no scipy: struct only)

def _chunk(cid: bytes, payload: bytes, size: int | None = None) -> bytes:
    """One RIFF chunk; `size` overrides the declared size (to fake truncation)."""
    return cid + struct.pack("<I", len(payload) if size is None else size) + payload + b"\0" * (len(payload) & 1)


def _fmt(tag=1, channels=1, rate=22050, bits=16, block_align=None, extra=b"") -> bytes:
    block_align = channels * bits // 8 if block_align is None else block_align
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits) + extra


def _extensible(sub_tag: int, guid_tail: bytes = bytes.fromhex("000000001000800000aa00389b71")) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE 'fmt ' payload: mono 16-bit, SubFormat = sub_tag + guid_tail."""
    return _fmt(0xFFFE, 1, 8000, 16, extra=struct.pack("<HHI", 22, 16, 4) + struct.pack("<H", sub_tag) + guid_tail)


def _riff(*chunks: bytes, form: bytes = b"WAVE") -> bytes:
    body = form + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


PCM = _chunk(b"data", struct.pack("<4h", 0, 1000, -1000, 0))
MALFORMED_WAVS = {  # failure name -> (file bytes, a fragment the AudioError message must contain)
    "empty": (b"", "empty file"),
    "text_file": (b"this is not audio\n", "not a RIFF/WAVE"),
    "mp3_renamed_id3": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\0" * 64, "MP3"),
    "mp3_renamed_frames": (b"\xff\xfb\x90\x64" + b"\0" * 64, "MP3"),
    "flac_renamed": (b"fLaC\x00\x00\x00\x22" + b"\0" * 34, "FLAC"),
    "rf64": (b"RF64\xff\xff\xff\xffWAVE" + b"\0" * 32, "RF64"),
    "riff_avi": (_riff(_chunk(b"avih", b"\0" * 8), form=b"AVI "), "not WAVE"),
    "truncated_header": (b"RIFF\x24\x00", "truncated"),
    "truncated_data": (_riff(_chunk(b"fmt ", _fmt()), _chunk(b"data", b"\0" * 100, size=1000)), "truncated"),
    "truncated_fmt": (_riff(_chunk(b"fmt ", _fmt()[:10], size=16)), "truncated"),
    "partial_frame": (_riff(_chunk(b"fmt ", _fmt(channels=2)), _chunk(b"data", b"\0" * 6)), "whole number"),
    "mulaw": (_riff(_chunk(b"fmt ", _fmt(7, bits=8)), _chunk(b"data", b"\x7f" * 8)), "mu-law"),
    "alaw": (_riff(_chunk(b"fmt ", _fmt(6, bits=8)), _chunk(b"data", b"\xd5" * 8)), "A-law"),
    "ms_adpcm": (_riff(_chunk(b"fmt ", _fmt(2, bits=4, block_align=256)), _chunk(b"data", b"\0" * 256)), "ADPCM"),
    "ima_adpcm": (_riff(_chunk(b"fmt ", _fmt(0x11, bits=4, block_align=256)), _chunk(b"data", b"\0" * 256)), "ADPCM"),
    "mp3_in_wav": (_riff(_chunk(b"fmt ", _fmt(0x55, bits=0, block_align=1)), _chunk(b"data", b"\xff\xfb" * 8)), "MP3"),
    "extensible_mulaw": (_riff(_chunk(b"fmt ", _extensible(7)), PCM), "mu-law"),
    "extensible_unknown_guid": (_riff(_chunk(b"fmt ", _extensible(1, b"\x11" * 14)), PCM), "SubFormat GUID"),
    "extensible_short_fmt": (_riff(_chunk(b"fmt ", _fmt(0xFFFE, extra=b"\0\0")), PCM), "needs 40"),
    "zero_channels": (_riff(_chunk(b"fmt ", _fmt(channels=0, block_align=0)), PCM), "zero channels"),
    "zero_rate": (_riff(_chunk(b"fmt ", _fmt(rate=0)), PCM), "0 Hz"),
    "pcm_12_bit": (_riff(_chunk(b"fmt ", _fmt(bits=12, block_align=2)), PCM), "12 bits"),
    "float_16_bit": (_riff(_chunk(b"fmt ", _fmt(3, bits=16)), PCM), "16 bits"),
    "bad_block_align": (_riff(_chunk(b"fmt ", _fmt(block_align=3)), PCM), "block align"),
    "fmt_too_short": (_riff(_chunk(b"fmt ", _fmt()[:14]), PCM), "at least 16"),
    "no_fmt_chunk": (_riff(_chunk(b"LIST", b"INFO"), PCM), "no 'fmt ' chunk"),
    "no_data_chunk": (_riff(_chunk(b"fmt ", _fmt())), "no 'data' chunk"),
    "nan_samples": (_riff(_chunk(b"fmt ", _fmt(3, bits=32)), _chunk(b"data", struct.pack("<3f", 0.5, float("nan"), 0.0))),
                    "NaN or infinite"),
    "inf_samples": (_riff(_chunk(b"fmt ", _fmt(3, channels=2, bits=64)),
                          _chunk(b"data", struct.pack("<4d", 0.0, 0.1, float("inf"), 0.0))), "NaN or infinite"),
}


def make_malformed_wavs(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, (data, _) in MALFORMED_WAVS.items():
        (out / f"{name}.wav").write_bytes(data)
    write_json(out / "index.json", {f"{name}.wav": fragment for name, (_, fragment) in MALFORMED_WAVS.items()})


# ---------------------------------------------------------------------------------------------

def make(data_dir: Path) -> None:
    out = data_dir / "features"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    make_stft(out)
    make_istft(out)
    make_windows(out)
    make_mel(out)
    make_clvp_features(out)
    make_processor(out)
    make_malformed_wavs(data_dir / "malformed_wav")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--malformed-only", action="store_true", help="write only the malformed WAV corpus (no torch)")
    args = parser.parse_args()
    data = ROOT / "tests" / "data"
    if args.malformed_only:
        make_malformed_wavs(data / "malformed_wav")
    else:
        make(data)
    sys.exit(0)
