"""TextToSpeech: text + a voice -> a 24 kHz waveform, torch-free (Tortoise's fast path, tortoise/api_fast.py).

Shape legend: N speech tokens, C hidden, W waveform samples.

tts(text, voice_samples) runs:
  1. conditioning: the text's ids and the voice clips' averaged conditioning vector, as rank() builds
     them (pyclvp/rank.py conditioning)                                                 (1, P-1, C)
  2. candidates: `candidates` samples with api_fast's settings (top_k 50, top_p 0.8, temperature 0.8,
     repetition penalty 2.0 over the generated tokens, the start token and code 1, which inference_speech's
     fake prompt of 1s puts in front), at the KV-cached positions (token k at k + 1; positions="uncached" for
     kv_cache=False's); with more than one, CLVP ranks them, each padded with the stop token to max_new_tokens
     as api.py's tts() pads them, and the best is spoken (api_fast samples one and skips CLVP)
     The text is tokenized with Tortoise's normalizer and the CLI reads voices with load_voice (rank.py)
  3. latents: the chosen tokens, their stop token included as api_fast passes them, through the decoder
     at training positions (Decoder.speech_latents)                                    (1, N, C)
  4. waveform: HiFi-GAN on the latents and the voice's conditioning vector              (W,) at 24 kHz
tts_stream(text, voice_samples) yields the waveform in chunks as the tokens come (api_fast.tts_stream): one
candidate is decoded token by token (pyclvp/decoding.py stream); after the first `first_buffer` = 60 tokens, then
every `stream_chunk_size` = 40 and at the end, every token so far goes through the decoder at the KV-cached
positions (the latents the generation computed) and HiFi-GAN, and the samples not yet given out are cut off
and cross-faded with the last chunk's tail (handle_chunks):
    chunk = wav[len(previous wav) - overlap : -overlap]  (the first chunk: wav[: -overlap])
    chunk[:overlap] = previous wav[-overlap:] * linspace(1, 0) + chunk[:overlap] * linspace(0, 1)
so the last `overlap_wav_len` = 1024 samples of the final decode are never given out, as in Tortoise.
A model folder holds the CLVP model (config.json, model.safetensors) and the decoder in hifigan/
(`pyclvp convert-tortoise --hifigan hifidecoder.pth`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..decoding import GenerationOptions, stream
from ..io.checkpoints import load_weights
from ..model import ClvpModelForConditionalGeneration
from ..rank import conditioning
from .hifigan import Hifigan, HifiganConfig, hifigan_spec

__all__ = ["TextToSpeech", "FAST_SAMPLING", "HIFIGAN_FOLDER"]

HIFIGAN_FOLDER = "hifigan"
# api_fast.tts's sampling (its top_k is passed explicitly there)
FAST_SAMPLING = dict(do_sample=True, top_k=50, top_p=0.8, temperature=0.8, repetition_penalty=2.0, max_new_tokens=500,
                     prompt_token_ids=(1,))  # inference_speech's fake prompt of 1s: code 1 penalized from the start


class TextToSpeech:
    """TextToSpeech.from_pretrained(folder, backend="cpu").tts("Hello.", [clip]) -> (W,) float32 at 24 kHz."""

    def __init__(self, model: ClvpModelForConditionalGeneration, hifigan: Hifigan | None):
        self.model, self.hifigan = model, hifigan

    @classmethod
    def from_pretrained(cls, path, backend="numpy") -> "TextToSpeech":
        model = ClvpModelForConditionalGeneration.from_pretrained(path, backend=backend)
        folder = Path(path) / HIFIGAN_FOLDER
        if not folder.is_dir():
            return cls(model, None)  # it still ranks; tts() says what is missing
        cfg = HifiganConfig.from_pretrained(folder)
        if cfg.in_channels != model.config.decoder_config.hidden_size:
            raise ValueError(f"{folder}: the HiFi-GAN takes {cfg.in_channels}-wide latents but the decoder's are "
                             f"{model.config.decoder_config.hidden_size} wide")
        return cls(model, Hifigan(load_weights(folder, hifigan_spec(cfg)), cfg, model.ops))

    @property
    def sampling_rate(self) -> int:
        return self.hifigan.cfg.sampling_rate if self.hifigan else 24000

    def check_ready(self) -> None:
        """Raise FileNotFoundError, saying how to convert it, when the folder has no HiFi-GAN decoder."""
        self._decoder()

    def _decoder(self) -> Hifigan:
        if self.hifigan is None:
            folder = self.model.name_or_path or "the model folder"
            raise FileNotFoundError(f"no HiFi-GAN decoder in {folder}/{HIFIGAN_FOLDER}: convert Tortoise's "
                                    f"hifidecoder.pth with `pyclvp convert-tortoise --hifigan hifidecoder.pth "
                                    f"-o {folder}`")
        return self.hifigan

    def get_conditioning_latents(self, voice_samples, text="") -> np.ndarray:  # -> (1, C)
        """The voice's conditioning vector: the clips' vectors averaged (UnifiedVoice.get_conditioning)."""
        cond, _, _ = conditioning(self.model, text or [self.model.config.text_config.eos_token_id], voice_samples)
        return cond[:, 0]

    def speech_tokens(self, text, voice_samples, candidates: int = 1, **sampling):  # -> (N,), (1, P-1, C)
        """The speech tokens to speak (the best of `candidates` by CLVP score), stop token included, and the
        conditioning they were generated from."""
        self._decoder()  # no decoder: say so before any heavy work
        opts = GenerationOptions.resolve(**dict(FAST_SAMPLING, **sampling, num_return_sequences=candidates))
        if candidates > 1 and opts.pad_to_max_mel_tokens is None:  # scored as api.py's tts() scores them
            opts = dataclasses.replace(opts, pad_to_max_mel_tokens=opts.max_new_tokens + 1)
        cond, ids, mask = conditioning(self.model, text, voice_samples)
        out, tokens = self.model.candidates(cond, ids, mask, opts)  # (1, R), (R, N)
        best = int(np.argmax(out.logits_per_text[0])) if candidates > 1 else 0
        eos = self.model.config.decoder_config.eos_token_id
        row = tokens[best]
        stops = np.flatnonzero(row == eos)
        return (row[:stops[0] + 1] if stops.size else row), cond

    def tts(self, text, voice_samples, candidates: int = 1, **sampling) -> np.ndarray:  # -> (W,) float32
        """The waveform at 24 kHz; sampling: GenerationOptions (seed=..., do_sample=False for greedy, ...)."""
        tokens, cond = self.speech_tokens(text, voice_samples, candidates, **sampling)
        latents = self.model.decoder_ref.speech_latents(cond, tokens[None])  # (1, N, C)
        return self._decoder().inference(latents, cond[:, 0])[0]  # (W,)

    def tts_stream(self, text, voice_samples, *, stream_chunk_size: int = 40, overlap_wav_len: int = 1024,
                   first_buffer: int = 60, **sampling):  # -> yields (S_i,) float32 chunks at 24 kHz
        """The waveform in chunks as the speech tokens come; their concatenation is api_fast.tts_stream's output."""
        hifigan = self._decoder()
        opts = GenerationOptions.resolve(**dict(FAST_SAMPLING, **sampling))
        if opts.positions != "cached":  # the chunks' latents are the KV-cached generation's
            raise ValueError("tts_stream decodes at the KV-cached positions (positions='cached') only")
        cond, _, _ = conditioning(self.model, text, voice_samples)  # (1, P-1, C)
        d = self.model.config.decoder_config
        tokens, new, wav_prev, overlap = [], 0, None, None
        source = stream(self.model.decoder, self.model.decoder_prompt(cond), opts, d.bos_token_id, d.eos_token_id)
        while True:
            token = next(source, None)
            if token is not None:
                tokens.append(token)
                new += 1
            elif new == 0 and wav_prev is not None:  # the last chunk took every token: nothing is left to say
                return  # (Tortoise's handle_chunks fails here, cross-fading into an empty chunk)
            if token is None or (stream_chunk_size > 0 and new >= max(stream_chunk_size, first_buffer)):
                first_buffer, new = 0, 0
                latents = self.model.decoder_ref.speech_latents(cond, np.array([tokens]), positions="cached")
                wav = hifigan.inference(latents, cond[:, 0])[0]  # (W,)
                chunk, wav_prev, overlap = _handle_chunk(wav, wav_prev, overlap, overlap_wav_len)
                yield chunk
            if token is None:
                return


def _handle_chunk(wav, wav_prev, overlap, n: int):  # -> (chunk, wav, its tail)
    """The samples of a new decode `wav` (W,) not given out yet, cross-faded over n samples with the last tail.
    ref: tortoise/api_fast.py TextToSpeech.handle_chunks"""
    chunk = (wav[:-n] if wav_prev is None else wav[len(wav_prev) - n:-n]).copy()
    if overlap is not None:
        fade = np.linspace(0.0, 1.0, n, dtype=np.float32)  # torch.linspace(0.0, 1.0, n)
        chunk[:n] = overlap * fade[::-1] + chunk[:n] * fade
    return chunk, wav, wav[-n:]
