"""TextToSpeech: text + a voice -> a 24 kHz waveform, torch-free (Tortoise's fast path, tortoise/api_fast.py).

Shape legend: N speech tokens, C hidden, W waveform samples.

tts(text, voice_samples) runs:
  1. conditioning: the text's ids and the voice clips' averaged conditioning vector, as rank() builds
     them (pyclvp/rank.py conditioning)                                                 (1, P-1, C)
  2. candidates: `candidates` samples with api_fast's settings (top_k 50, top_p 0.8, temperature 0.8,
     repetition penalty 2.0 over the generated tokens, the start token and code 1, which inference_speech's
     fake prompt of 1s puts in front); with more than one, CLVP ranks them and the best is spoken (api_fast
     samples one and skips CLVP)
  3. latents: the chosen tokens, their stop token included as api_fast passes them, through the decoder
     at training positions (Decoder.speech_latents)                                    (1, N, C)
  4. waveform: HiFi-GAN on the latents and the voice's conditioning vector              (W,) at 24 kHz
A model folder holds the CLVP model (config.json, model.safetensors) and the decoder in hifigan/
(`pyclvp convert-tortoise --hifigan hifidecoder.pth`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..decoding import GenerationOptions
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
