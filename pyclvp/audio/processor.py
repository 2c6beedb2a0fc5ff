"""ClvpProcessor: the tokenizer and the feature extractor behind one call, as transformers' ClvpProcessor.

    processor = ClvpProcessor.from_pretrained()        # bundled Tortoise vocabulary and mel norms
    inputs = processor(text="Hello.", audio=clip, sampling_rate=22050, return_tensors="np")
    # {"input_ids" (B, S), "attention_mask" (B, S), "input_features" (B, M, frames)}

How keyword arguments are routed (ref: transformers/processing_utils.py ProcessorMixin._merge_kwargs and
__call__, transformers/models/clvp/processing_clvp.py):
  - the arguments both sides understand (padding, max_length, truncation, pad_to_multiple_of,
    return_attention_mask, return_tensors) go to both the tokenizer and the feature extractor;
  - sampling_rate goes to the feature extractor; any other flat argument goes to the tokenizer;
  - text_kwargs={...} and audio_kwargs={...} go to one side only (naming a key both there and flat is an error);
  - with both text and audio, the extractor's attention mask is not returned: "attention_mask" is the text's,
    which is the one CLVP uses.
"""
from __future__ import annotations

import os
from pathlib import Path

from .features import BatchFeature, ClvpFeatureExtractor, check_return_tensors

__all__ = ["ClvpProcessor"]

SHARED_KWARGS = ("padding", "max_length", "truncation", "pad_to_multiple_of", "return_attention_mask", "return_tensors")
AUDIO_ONLY_KWARGS = ("sampling_rate",)


class ClvpProcessor:
    """A ClvpFeatureExtractor and a ClvpTokenizer called together."""

    def __init__(self, feature_extractor, tokenizer):
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, path=None) -> "ClvpProcessor":
        """None: the bundled Tortoise tokenizer and extractor; else a directory holding their files."""
        from ..text.tokenizer import ClvpTokenizer

        return cls(ClvpFeatureExtractor.from_pretrained(path), ClvpTokenizer.from_pretrained(path))

    def save_pretrained(self, directory) -> Path:
        directory = Path(os.fspath(directory))
        self.feature_extractor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return directory

    def _route(self, kwargs: dict) -> tuple[dict, dict]:
        """(tokenizer kwargs, feature extractor kwargs) from the flat and the nested arguments."""
        text_kwargs, audio_kwargs = {}, {}
        nested = {name: kwargs.pop(name, None) or {} for name in ("text_kwargs", "audio_kwargs")}
        for name, value in nested.items():
            if not isinstance(value, dict):
                raise TypeError(f"{name} must be a dict of keyword arguments, got {type(value).__name__}")
        for key, value in kwargs.items():
            if key in SHARED_KWARGS or key not in AUDIO_ONLY_KWARGS:
                text_kwargs[key] = value
            if key in SHARED_KWARGS or key in AUDIO_ONLY_KWARGS:
                audio_kwargs[key] = value
        for name, side in (("text_kwargs", text_kwargs), ("audio_kwargs", audio_kwargs)):
            for key, value in nested[name].items():
                if key in kwargs:
                    raise ValueError(f"Keyword argument {key} was passed two times: in {name} and as a **kwarg.")
                side[key] = value
        return text_kwargs, audio_kwargs

    def __call__(self, text=None, audio=None, sampling_rate=None, **kwargs) -> BatchFeature:
        """Tokenize `text` and/or extract features from `audio` (a clip or a batch; `raw_speech` is an alias)."""
        raw_speech = kwargs.pop("raw_speech", None)
        audio = raw_speech if audio is None else audio
        if text is None and audio is None:
            raise ValueError("ClvpProcessor: pass text=..., audio=..., or both")
        if sampling_rate is not None:
            kwargs["sampling_rate"] = sampling_rate
        text_kwargs, audio_kwargs = self._route(kwargs)
        check_return_tensors(text_kwargs.get("return_tensors"))
        out = BatchFeature()
        if text is not None:
            out.update(self.tokenizer(text, **text_kwargs))
        if audio is not None:
            if text is not None:
                audio_kwargs["return_attention_mask"] = False
            out.update(self.feature_extractor(audio, **audio_kwargs))
        return out

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)
