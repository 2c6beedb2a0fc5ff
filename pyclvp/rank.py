"""Ranking: one text in one voice -> speech-token candidates, sorted by their CLVP score (Tortoise's pipeline).

rank(model, text, voice, num_candidates) runs the steps of Tortoise's TextToSpeech.tts up to the choice of
the best candidate:
  1. the text, tokenized (a str; the model folder's vocabulary or the bundled one) or given as ids   (1, T)
  2. the voice: waveforms at 22.05 kHz -> ClvpFeatureExtractor log-mels (N clips, M, frames), or
     features given as they are
  3. conditioning per clip (N, P-1, C); the clips' conditioning vectors (position 0) averaged, as
     Tortoise's UnifiedVoice.get_conditioning does, the text part taken once            (1, P-1, C)
  4. num_candidates candidates, sampled with what tts() really samples with (decoding.TORTOISE_SAMPLING)
     unless told otherwise, scored by CLVP (model.candidates) after padding each to pad_to speech tokens
  5. sorted by score, best first (a stable sort: equal scores keep their sampling order)

Where rank() follows Tortoise's tts() (tortoise/api.py, transformers 4.31) and model.generate() follows
transformers' ClvpModelForConditionalGeneration.generate:
  top_k            rank: 50 (tts() never passes it; transformers 4.31's default top_k=50 applies)
                   generate: none unless given
  fake prompt      rank: code 1 counts as seen by the repetition penalty from the first step
                   (prompt_token_ids=(1,): inference_speech's prompt of 1s)      generate: only the start token
  positions        rank: "uncached", token k at mel position k (TextToSpeech()'s kv_cache=False)
                   generate: "cached", token k at k + 1 (kv_cache=True, transformers' CLVP)
  padding          rank: every candidate padded with the stop token to pad_to = max_new_tokens speech tokens
                   before fix_speech_decoder_output and CLVP (tts(): F.pad(codes, (0, max_mel_tokens -
                   len), value=stop_mel_token)), so the CLVP speech encoder's mean runs over the same length
                   for every candidate       generate: pad_to_max_mel_tokens=None, the batch's generated length
  text             rank: a str is tokenized with normalizer="tortoise" (Tortoise's english_cleaners, what the
                   weights were trained on)     generate: ids, as given
Each can be set back with its argument (top_k=None, prompt_token_ids=(), positions="cached", pad_to=None,
a tokenizer).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from .audio.features import ClvpFeatureExtractor, as_clips
from .checks import check_choice, check_count
from .decoding import PRESETS, TORTOISE_SAMPLING, GenerationOptions
from .text.tokenizer import ClvpTokenizer

__all__ = ["Candidate", "rank", "conditioning", "TOKENS_PER_SECOND", "PAD_TO_MAX_NEW_TOKENS"]

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


PAD_TO_MAX_NEW_TOKENS = "max_new_tokens"


def rank(model, text_or_ids, audio_or_features, num_candidates: int = 16, k: Optional[int] = None, *,
         preset: Optional[str] = None, tokenizer=None, feature_extractor=None,
         pad_to: Union[int, str, None] = PAD_TO_MAX_NEW_TOKENS, **sampling) -> list:
    """Candidates for one text in one voice, best first, as Tortoise's tts() makes and scores them.

    text_or_ids: a str (tokenized with `tokenizer`, default: the model folder's vocabulary or the bundled one,
        with Tortoise's normalizer) or ids.
    audio_or_features: a waveform (T,) at 22.05 kHz (pyclvp.audio.load_voice reads a file as Tortoise does), a
        list of waveforms, or features (M, T) / (N, M, T).
    pad_to: the number of speech tokens CLVP scores per candidate: "max_new_tokens" (the default: tts()'s
        max_mel_tokens padding), an int, or None (no padding: the longest candidate's length, as generate()).
    sampling: GenerationOptions fields; the defaults are decoding.TORTOISE_SAMPLING (temperature 0.8, top_k 50,
        top_p 0.8, repetition_penalty 2.0 with code 1 penalized from the start, 500 tokens, positions="uncached").
        preset: Tortoise's candidate count for num_candidates left at 16. See the module docstring for how these
        differ from model.generate().
    """
    check_count("num_candidates", num_candidates)
    if k is not None:
        check_count("k", k)
    if "num_return_sequences" in sampling:
        raise TypeError("rank takes num_candidates, not num_return_sequences")
    if "pad_to_max_mel_tokens" in sampling:
        raise TypeError("rank takes pad_to (speech tokens scored), not pad_to_max_mel_tokens")
    settings = dict(TORTOISE_SAMPLING)
    settings.update(sampling)
    if preset is not None:
        check_choice("preset", preset, PRESETS)
    # a preset fills in num_candidates left at its default
    settings["num_return_sequences"] = PRESETS[preset] if preset is not None and num_candidates == 16 else num_candidates
    opts = GenerationOptions.resolve(None, **settings)
    if pad_to == PAD_TO_MAX_NEW_TOKENS:
        pad_to = opts.max_new_tokens
    elif pad_to is not None:
        check_count("pad_to", pad_to)
    # pad_to_max_mel_tokens counts the start token, which fix_speech_decoder_output then drops
    opts = dataclasses.replace(opts, pad_to_max_mel_tokens=None if pad_to is None else pad_to + 1).check()
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
        normalize = getattr(tokenizer, "normalize", None)
        if ids.size == 0 or (normalize and not normalize(text_or_ids).strip()):  # emoji, symbols, zero-width spaces
            shown = text_or_ids if len(text_or_ids) <= 40 else text_or_ids[:37] + "..."
            raise ValueError(f"nothing in the text {shown!r} is speakable: the normalizer drops emoji and the "
                             "symbols it cannot spell out; give words")
    else:
        ids = np.asarray(text_or_ids)
    if ids.size == 0:
        raise ValueError("the text is empty")
    if ids.ndim == 2 and ids.shape[0] != 1:
        raise ValueError(f"rank takes one text, got a batch of {ids.shape[0]}")
    return ids.reshape(1, -1)


def _default_tokenizer(model):
    """The model folder's vocabulary (or the bundled one), with Tortoise's normalizer: the weights' own."""
    folder = model.name_or_path
    has_vocab = folder is not None and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    return ClvpTokenizer.from_pretrained(folder if has_vocab else None, normalizer="tortoise")


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
        feature_extractor = ClvpFeatureExtractor.from_pretrained(model.name_or_path)
    feats = feature_extractor(clips, sampling_rate=feature_extractor.sampling_rate,
                              return_tensors="np")["input_features"]
    return feats
