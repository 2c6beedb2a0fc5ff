"""Ranking: one text in one voice -> speech-token candidates, sorted by their CLVP score (Tortoise's pipeline).

rank(model, text, voice, num_candidates) runs the steps of Tortoise's TextToSpeech.tts up to the choice of
the best candidate:
  1. the text, tokenized (a str; the model folder's vocabulary or the bundled one) or given as ids   (1, T)
  2. the voice: waveforms at 22.05 kHz -> ClvpFeatureExtractor log-mels (N clips, M, frames), or
     features given as they are
  3. conditioning per clip (N, P-1, C); the clips' conditioning vectors (position 0) averaged, as
     Tortoise's UnifiedVoice.get_conditioning does, the text part taken once            (1, P-1, C)
  4. num_candidates candidates, sampled with Tortoise's settings (temperature 0.8, top_p 0.8,
     repetition_penalty 2.0, 500 new tokens) unless told otherwise, scored by CLVP (model.candidates)
  5. sorted by score, best first (a stable sort: equal scores keep their sampling order)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .audio.features import ClvpFeatureExtractor, as_clips
from .checks import check_count
from .decoding import TORTOISE_SAMPLING, GenerationOptions
from .text.tokenizer import ClvpTokenizer

__all__ = ["Candidate", "rank", "conditioning", "TOKENS_PER_SECOND"]

TOKENS_PER_SECOND = 20  # roughly: one speech token per 1024 samples at 22.05 kHz


@dataclass
class Candidate:
    """One generated candidate: its fixed speech tokens, its length and its CLVP score."""

    speech_ids: np.ndarray  # (N,) int64, fixed (fix_speech_decoder_output)
    length: int  # tokens before the first eos (all N when it never stopped)
    score: float  # cosine(text, speech) * exp(logit_scale), as logits_per_text

    @property
    def seconds(self) -> float:
        return self.length / TOKENS_PER_SECOND


def rank(model, text_or_ids, audio_or_features, num_candidates: int = 16, k: Optional[int] = None, *,
         preset: Optional[str] = None, tokenizer=None, feature_extractor=None, **sampling) -> list:
    """Candidates for one text in one voice, best first. Sampling defaults to Tortoise's settings.

    text_or_ids: a str (tokenized with `tokenizer`, default: the model folder's or the bundled one) or ids.
    audio_or_features: a waveform (T,) at 22.05 kHz, a list of waveforms, or features (M, T) / (N, M, T).
    """
    check_count("num_candidates", num_candidates)
    if k is not None:
        check_count("k", k)
    if "num_return_sequences" in sampling:
        raise TypeError("rank takes num_candidates, not num_return_sequences")
    settings = dict(TORTOISE_SAMPLING) if preset is None else {}
    settings.update(sampling)
    if preset is None or num_candidates != 16:  # a preset fills in num_candidates left at its default
        settings["num_return_sequences"] = num_candidates
    opts = GenerationOptions.resolve(preset, **settings)
    cond, ids, mask = conditioning(model, text_or_ids, audio_or_features, tokenizer, feature_extractor)
    out, tokens = model.candidates(cond, ids, mask, opts)
    eos = model.config.decoder_config.eos_token_id
    lengths = np.where((tokens == eos).any(1), (tokens == eos).argmax(1), tokens.shape[1])
    scores = out.logits_per_text[0]  # (R,)
    order = np.argsort(-scores, kind="stable")[:k]
    return [Candidate(speech_ids=out.speech_ids[i], length=int(lengths[i]), score=float(scores[i])) for i in order]


def conditioning(model, text_or_ids, voice, tokenizer=None, feature_extractor=None):  # -> (1, P-1, C), ids, mask
    """Steps 1-3: the decoder's conditioning for one text in one voice, with the generation text ids (1, T+1)."""
    ids, mask = model.generation_text(_text_ids(model, text_or_ids, tokenizer))  # (1, T+1)
    feats = model.check_features(_voice_features(model, voice, feature_extractor))  # (N, M, frames)
    cond = model.encode_conditioning(feats, ids, mask)  # (N, P-1, C): the text repeated per clip
    # the clips' conditioning vectors averaged, as Tortoise's UnifiedVoice.get_conditioning does
    return np.concatenate([cond[:, :1].mean(0, keepdims=True), cond[:1, 1:]], axis=1), ids, mask  # (1, P-1, C)


def _text_ids(model, text_or_ids, tokenizer):  # -> (1, T) int64
    if isinstance(text_or_ids, str):
        if not text_or_ids.strip():
            raise ValueError("the text is empty")
        tokenizer = tokenizer or _default_tokenizer(model)
        ids = np.array(tokenizer.encode(text_or_ids), dtype=np.int64)
    else:
        ids = np.asarray(text_or_ids)
    if ids.size == 0:
        raise ValueError("the text is empty")
    if ids.ndim == 2 and ids.shape[0] != 1:
        raise ValueError(f"rank takes one text, got a batch of {ids.shape[0]}")
    return ids.reshape(1, -1)


def _default_tokenizer(model):
    folder = getattr(model, "name_or_path", None)
    has_vocab = folder is not None and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    return ClvpTokenizer.from_pretrained(folder if has_vocab else None)


def _voice_features(model, voice, feature_extractor):  # -> (N, M, T) float32
    M = model.config.decoder_config.feature_size
    if isinstance(voice, (list, tuple)):
        clips = [np.asarray(c) for c in voice]
    else:
        voice = np.asarray(voice)
        if voice.ndim == 3 or (voice.ndim == 2 and voice.shape[0] == M):
            return voice
        if voice.ndim != 1:
            raise ValueError(f"the voice must be a waveform (T,), a list of waveforms, or features ({M}, T) / "
                             f"(N, {M}, T); got shape {voice.shape}")
        clips = [voice]
    if not clips:
        raise ValueError("no voice clip given")
    clips = as_clips(clips)  # real-valued, mono, finite: the feature extractor's checks
    for i, clip in enumerate(clips):
        if clip.size == 0 or np.abs(clip).max() < 1e-4:
            raise ValueError(f"voice clip {i + 1} of {len(clips)} is empty or silent (peak below -80 dBFS); use a recording of the voice")
    if feature_extractor is None:
        feature_extractor = ClvpFeatureExtractor.from_pretrained(getattr(model, "name_or_path", None))
    feats = feature_extractor(clips, sampling_rate=feature_extractor.sampling_rate,
                              return_tensors="np")["input_features"]
    return feats
