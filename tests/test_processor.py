"""pyclvp.audio.processor.ClvpProcessor: transformers' ClvpProcessor outputs (fixture) and its argument routing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, assert_close
from pyclvp.audio import load_audio
from pyclvp.audio.features import ClvpFeatureExtractor
from pyclvp.audio.processor import ClvpProcessor

pytest.importorskip("pyclvp.text.tokenizer")
from pyclvp.text.tokenizer import ClvpTokenizer  # noqa: E402

VOICES = Path(__file__).resolve().parent.parent / "third_party" / "tortoise" / "voices"
META = json.loads((DATA / "features" / "processor.json").read_text())
ARRAYS = np.load(DATA / "features" / "processor.npz")


@pytest.fixture(scope="module")
def processor():
    return ClvpProcessor.from_pretrained()


@pytest.fixture(scope="module")
def clip():
    return load_audio(VOICES / "emma" / "3.wav")[:30000]


@pytest.mark.parametrize("case", META["cases"], ids=[c["name"] for c in META["cases"]])
def test_matches_transformers(processor, case):
    audio = [load_audio(VOICES / rel) for rel in case["clips"]]
    got = processor(text=case["text"], audio=audio, sampling_rate=22050, return_tensors="np", **case["kwargs"])
    assert sorted(got) == case["keys"]
    for key in ("input_ids", "attention_mask"):
        assert np.array_equal(got[key], ARRAYS[f"{case['name']}_{key}"]), key
    assert_close(got["input_features"], ARRAYS[f"{case['name']}_input_features"], atol=1e-4, name="input_features")


def test_text_only_and_audio_only(processor, clip):
    text = processor(text="Hello there.", return_tensors="np")
    assert set(text) == {"input_ids", "attention_mask"}
    assert np.array_equal(text["input_ids"], processor.tokenizer("Hello there.", return_tensors="np")["input_ids"])
    audio = processor(audio=clip, sampling_rate=22050, return_tensors="np")
    want = processor.feature_extractor(clip, sampling_rate=22050, return_tensors="np")
    assert set(audio) == {"input_features", "attention_mask"}
    assert np.array_equal(audio["input_features"], want["input_features"])
    assert audio["attention_mask"].shape == (1, 132300)  # the extractor's mask over samples


def test_both_keep_the_text_attention_mask(processor, clip):
    out = processor(text="Hi", audio=clip, sampling_rate=22050, return_tensors="np")
    assert out["attention_mask"].shape == out["input_ids"].shape == (1, 2)
    assert out["input_features"].shape == (1, 80, 517)
    assert out.input_ids is out["input_ids"]


def test_argument_routing(processor, clip):
    # a flat max_length goes to both sides, as in transformers
    out = processor(text="Hello there, my friend.", audio=clip, sampling_rate=22050, max_length=5000,
                    return_tensors="np")
    assert out["input_features"].shape == (1, 80, 20)
    # nested arguments go to one side only
    out = processor(text="Hello there, my friend.", audio=clip, sampling_rate=22050, return_tensors="np",
                    audio_kwargs={"max_length": 3000}, text_kwargs={"max_length": 3, "truncation": True})
    assert out["input_features"].shape == (1, 80, 12) and out["input_ids"].shape == (1, 3)
    with pytest.raises(ValueError, match="passed two times"):
        processor(audio=clip, sampling_rate=22050, max_length=5, audio_kwargs={"max_length": 3})
    with pytest.raises(TypeError, match="text_kwargs must be a dict of keyword arguments, got list"):
        processor(text="Hi.", text_kwargs=[1])
    # the deprecated raw_speech name
    old = processor(raw_speech=clip, sampling_rate=22050, return_tensors="np")["input_features"]
    assert np.array_equal(old, processor(audio=clip, sampling_rate=22050, return_tensors="np")["input_features"])


def test_lists_without_return_tensors(processor, clip):
    out = processor(text=["a b", "c"], audio=[clip, clip[:9000]], sampling_rate=22050, padding=True)
    assert isinstance(out["input_ids"], list) and isinstance(out["input_features"], list)
    assert [f.shape for f in out["input_features"]] == [(80, 118), (80, 118)]


def test_errors(processor, clip):
    with pytest.raises(ValueError, match="sampling rate of 22050"):
        processor(audio=clip, sampling_rate=16000)
    with pytest.raises(ValueError, match="text=..., audio=..."):
        processor()
    with pytest.raises(ValueError, match="torch-free"):
        processor(text="hi", return_tensors="pt")


def test_decode_and_save_load(processor, tmp_path):
    ids = processor.tokenizer.encode("hello world")
    assert processor.decode(ids) == processor.tokenizer.decode(ids)
    assert processor.batch_decode([ids, ids]) == [processor.tokenizer.decode(ids)] * 2
    processor.save_pretrained(tmp_path)
    loaded = ClvpProcessor.from_pretrained(tmp_path)
    assert loaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()
    assert loaded.tokenizer.encode("hello world") == ids
    custom = ClvpProcessor(ClvpFeatureExtractor(default_audio_length=1), ClvpTokenizer.from_pretrained())
    assert custom(audio=np.zeros(100), sampling_rate=22050, return_tensors="np")["input_features"].shape == (1, 80, 87)
