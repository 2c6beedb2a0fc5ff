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
candidate is decoded token by token (pyclvp/decoding.py stream), each token with the latent the generation computed
for it (the final-normed hidden state its logits came from: at the KV-cached positions, or the training ones with
positions="uncached"); after the first `first_buffer` = 60 tokens, then every `stream_chunk_size` = 40 and at the
end, the latents so far go through HiFi-GAN, and the samples not yet given out are cut off and cross-faded with the
last chunk's tail (handle_chunks):
    chunk = wav[len(previous wav) - overlap : -overlap]  (the first chunk: wav[: -overlap])
    chunk[:overlap] = previous wav[-overlap:] * linspace(1, 0) + chunk[:overlap] * linspace(0, 1)
so the last `overlap_wav_len` = 1024 samples of the final decode are never given out, as in Tortoise.

The quality path, tts(..., decoder="diffusion", preset=...) / tts_with_preset(text, voice_samples, preset)
(ref: tortoise/api.py TextToSpeech.tts_with_preset and tts, get_conditioning_latents):
  1. conditioning: as above for the autoregressive model; for the diffusion decoder, the clips (22.05 kHz
     waveforms) -> 24 kHz univnet mels (pyclvp/audio/univnet_mel.py) -> DiffusionTts.get_conditioning  (1, 2C')
  2. candidates: the preset's count (QUALITY_PRESETS), sampled as tts() samples them (decoding.TORTOISE_SAMPLING:
     temperature 0.8, top_p 0.8, top_k 50, repetition penalty 2.0 with the fake prompt, token k at mel position k),
     up to max_new_tokens (tts()'s max_mel_tokens, 500)                                 (R, N)
  3. ranking: every candidate padded with the stop token to max_new_tokens and fixed (fix_autoregressive_output:
     the stop tokens and all after the first become the calm token 83, the last three 45, 45, 248), scored by
     CLVP (model.score); the best k kept (torch.topk: best first; k = 1 by default)   (k, N') with N' = max_new_tokens
  4. latents: UnifiedVoice.forward(..., return_latent=True, clip_inputs=False) on the FIXED, padded codes, at
     training positions (Decoder.speech_latents(positions="training")), the k in one batch  (k, N', C)
  then for each of the k in turn, best first:
  5. trim: scanning the fixed codes, a run of calm tokens that reaches 9 at index j cuts the latents to [:j]
     (8 calm tokens kept: "breathing room" for the diffusion model to end the speech)  (1, S, C)
  6. mel: spectrogram diffusion (pyclvp/speech/sampler.py) with the preset's steps and cond_free, cond_free_k 2,
     temperature 1                                                                      (1, 100, T), T = S 4 24000 // 22050
  7. waveform: UnivNet (pyclvp/speech/univnet.py)                                        (W = 256 T,) at 24 kHz
Every normal draw of 6 and 7 (x_T, one per sampler step, UnivNet's z; the first candidate's, then the next one's)
comes, in Tortoise's order, from one numpy.random.default_rng(seed); the candidates' uniforms from another seeded
the same (decoding.py). With k > 1, tts() returns the k waveforms in a list, as Tortoise does.
Not done: Tortoise's redaction of [bracketed] text (a wav2vec2 aligner) and CVVP (cvvp_amount 0 by default).

A model folder holds the CLVP model (config.json, model.safetensors) and beside it, each optional: hifigan/
(`pyclvp convert-tortoise --hifigan hifidecoder.pth`), diffusion/ (`--diffusion diffusion_decoder.pth`) and
univnet/ (`--vocoder vocoder.pth`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..audio.univnet_mel import diffusion_conditioning_mels
from ..checks import check_choice, check_count
from ..decoding import TORTOISE_SAMPLING, GenerationOptions, decode, stream
from ..io.checkpoints import load_weights
from ..model import ClvpModelForConditionalGeneration
from ..rank import conditioning
from .diffusion import DiffusionConfig, DiffusionTts, diffusion_spec
from .hifigan import Hifigan, HifiganConfig, hifigan_spec
from .sampler import spectrogram_diffusion
from .univnet import UnivNet, UnivNetConfig, univnet_spec

__all__ = ["TextToSpeech", "QualityResult", "FAST_SAMPLING", "QUALITY_PRESETS", "QUALITY_SETTINGS", "CALM_TOKEN",
           "HIFIGAN_FOLDER", "DIFFUSION_FOLDER", "UNIVNET_FOLDER", "DECODERS", "calm_trim",
           "memory_estimate", "MEMORY_SAFETY"]

HIFIGAN_FOLDER, DIFFUSION_FOLDER, UNIVNET_FOLDER = "hifigan", "diffusion", "univnet"
DECODERS = ("hifigan", "diffusion")
WEIGHTS_FILE = "model.safetensors"
# ref: tortoise/api.py tts_with_preset: the shared settings, then the presets (candidates, sampler steps, cond_free)
QUALITY_SETTINGS = dict(temperature=0.8, length_penalty=1.0, repetition_penalty=2.0, top_p=0.8, cond_free_k=2.0,
                        diffusion_temperature=1.0)
QUALITY_PRESETS = {
    "ultra_fast": dict(num_autoregressive_samples=16, diffusion_iterations=30, cond_free=False),
    "fast": dict(num_autoregressive_samples=96, diffusion_iterations=80, cond_free=True),
    "standard": dict(num_autoregressive_samples=256, diffusion_iterations=200, cond_free=True),
    "high_quality": dict(num_autoregressive_samples=256, diffusion_iterations=400, cond_free=True),
}
CALM_TOKEN = 83   # ref: tts(): "the token for coding silence, which is fixed in place with fix_autoregressive_output"
CALM_RUN = 8      # latents are cut where a run of calm tokens grows past this
# where each optional decoder lives and how to make it
_CONVERT = {HIFIGAN_FOLDER: "--hifigan hifidecoder.pth", DIFFUSION_FOLDER: "--diffusion diffusion_decoder.pth",
            UNIVNET_FOLDER: "--vocoder vocoder.pth"}
# api_fast.tts's sampling (its top_k is passed explicitly there)
FAST_SAMPLING = dict(do_sample=True, top_k=50, top_p=0.8, temperature=0.8, repetition_penalty=2.0, max_new_tokens=500,
                     prompt_token_ids=(1,))  # inference_speech's fake prompt of 1s: code 1 penalized from the start


def calm_trim(codes) -> int:  # (N,) fixed codes -> the number of latent frames kept
    """ref: tts(): count consecutive calm tokens; where the count exceeds 8 at index j, latents = latents[:, :j]."""
    run = 0
    for j, code in enumerate(np.asarray(codes).tolist()):
        run = run + 1 if code == CALM_TOKEN else 0
        if run > CALM_RUN:
            return j
    return len(codes)


@dataclass
class QualityResult:
    """What the quality path computed, step by step (TextToSpeech.quality)."""

    tokens: np.ndarray          # (R, N) the candidates as sampled (or given), no start token
    scores: np.ndarray          # (R,) CLVP's scores of the padded, fixed candidates
    best: np.ndarray            # (k,) the indices of the k best candidates, best first
    codes: np.ndarray           # (k, N') those candidates padded to max_new_tokens and fixed: what the latents see
    latents: np.ndarray         # (k, N', C) the autoregressive latents of `codes`
    trimmed: list               # k arrays (1, S_i, C) cut at the calm-token run: the diffusion decoder's inputs
    diffusion_conditioning: np.ndarray  # (1, 2C') DiffusionTts.get_conditioning of the voice
    mel: list                   # k arrays (1, M, T_i), the denormalized mels, T_i = S_i * 4 * 24000 // 22050
    wav: list                   # k arrays (W_i,) float32 at 24 kHz, W_i = 256 T_i


def _spoken(result: QualityResult):  # the waveform, or with k > 1 the list of them (Tortoise's tts return value)
    return result.wav[0] if len(result.wav) == 1 else result.wav


class TextToSpeech:
    """TextToSpeech.from_pretrained(folder, backend="cpu").tts("Hello.", [clip]) -> (W,) float32 at 24 kHz;
    .tts_with_preset("Hello.", [clip], "fast") for the quality path (diffusion + UnivNet)."""

    def __init__(self, model: ClvpModelForConditionalGeneration, hifigan: Hifigan | None,
                 diffusion: DiffusionTts | None = None, univnet: UnivNet | None = None):
        self.model, self.hifigan, self.diffusion, self.univnet = model, hifigan, diffusion, univnet

    @classmethod
    def from_pretrained(cls, path, backend="numpy", weights=None) -> "TextToSpeech":
        """The CLVP model in `path` (weights="int8": its decoder in int8, see ClvpModelForConditionalGeneration.
        from_pretrained) and whichever of hifigan/, diffusion/ and univnet/ are beside it."""
        model = ClvpModelForConditionalGeneration.from_pretrained(path, backend=backend, weights=weights)
        width = model.config.decoder_config.hidden_size
        decoders = {}  # without one, it still ranks; tts() says what is missing
        for name, config, spec, make, latent_width in (
                (HIFIGAN_FOLDER, HifiganConfig, hifigan_spec, Hifigan, lambda c: c.in_channels),
                (DIFFUSION_FOLDER, DiffusionConfig, diffusion_spec, DiffusionTts, lambda c: c.in_latent_channels),
                (UNIVNET_FOLDER, UnivNetConfig, univnet_spec, UnivNet, None)):
            if (Path(path) / name).is_dir():
                folder = _weights_folder(path, name)
                cfg = config.from_pretrained(folder)
                if latent_width is not None and latent_width(cfg) != width:
                    raise ValueError(f"{folder}: it takes {latent_width(cfg)}-wide latents but the autoregressive "
                                     f"decoder's are {width} wide")
                decoders[name] = make(load_weights(folder, spec(cfg)), cfg, model.ops)
        hifigan, diffusion, univnet = (decoders.get(n) for n in (HIFIGAN_FOLDER, DIFFUSION_FOLDER, UNIVNET_FOLDER))
        if diffusion is not None and univnet is not None and univnet.cfg.n_mel_channels != diffusion.cfg.in_channels:
            raise ValueError(f"{path}: UnivNet takes {univnet.cfg.n_mel_channels} mel bins but the diffusion "
                             f"decoder makes {diffusion.cfg.in_channels}")
        return cls(model, hifigan, diffusion, univnet)

    @property
    def sampling_rate(self) -> int:
        return self.hifigan.cfg.sampling_rate if self.hifigan else 24000

    def check_ready(self, decoder: str = "hifigan") -> None:
        """Raise FileNotFoundError, saying which folder is missing and how to convert it, when the model folder
        lacks what `decoder` needs (hifigan: hifigan/; diffusion: diffusion/ and univnet/)."""
        check_choice("decoder", decoder, DECODERS)
        if decoder == "hifigan":
            self._decoder()
            return
        for name, part in ((DIFFUSION_FOLDER, self.diffusion), (UNIVNET_FOLDER, self.univnet)):
            if part is None:
                raise FileNotFoundError(_missing(self.model.name_or_path, name))

    def _decoder(self) -> Hifigan:
        if self.hifigan is None:
            raise FileNotFoundError(_missing(self.model.name_or_path, HIFIGAN_FOLDER))
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

    def tts(self, text, voice_samples, candidates: Optional[int] = None, *, decoder: str = "hifigan",
            preset: Optional[str] = None, **kwargs) -> np.ndarray:  # -> (W,) float32
        """The waveform at 24 kHz.

        decoder="hifigan" (the default, api_fast's fast path): `candidates` (default 1) ranked by CLVP, kwargs are
            GenerationOptions (seed=..., do_sample=False for greedy, ...).
        decoder="diffusion" (api.py's quality path): `preset` (default "ultra_fast") sets the candidates and the
            diffusion; kwargs as quality() takes them (k=2 speaks the two best candidates: a list of waveforms).
            voice_samples must be waveforms at 22.05 kHz."""
        check_choice("decoder", decoder, DECODERS)
        if decoder == "diffusion":
            return _spoken(self.quality(text, voice_samples, preset or "ultra_fast", candidates=candidates, **kwargs))
        if preset is not None:
            raise ValueError("preset chooses the quality path's settings: pass decoder='diffusion' with it")
        tokens, cond = self.speech_tokens(text, voice_samples, 1 if candidates is None else candidates, **kwargs)
        latents = self.model.decoder_ref.speech_latents(cond, tokens[None])  # (1, N, C)
        return self._decoder().inference(latents, cond[:, 0])[0]  # (W,)

    def tts_with_preset(self, text, voice_samples, preset: str = "fast", **kwargs) -> np.ndarray:  # -> (W,)
        """ref: tortoise/api.py tts_with_preset: the quality path with one of QUALITY_PRESETS (ultra_fast, fast,
        standard, high_quality); kwargs override the preset's settings, as in Tortoise (k > 1: a list of waveforms)."""
        return _spoken(self.quality(text, voice_samples, preset, **kwargs))

    def quality(self, text, voice_samples, preset: str = "ultra_fast", *, k: int = 1, candidates: Optional[int] = None,
                diffusion_steps: Optional[int] = None, cond_free: Optional[bool] = None,
                cond_free_k: Optional[float] = None, diffusion_temperature: Optional[float] = None,
                tokens: Optional[np.ndarray] = None, seed: Optional[int] = None,
                progress: Optional[Callable[[int, int], None]] = None,
                diffusion_progress: Optional[Callable[[int, int], None]] = None, **sampling) -> QualityResult:
        """The quality path step by step (see the module docstring); .wav[0] is tts_with_preset's output.

        k: how many of the best candidates to speak (1 <= k <= candidates), best first.
        candidates, diffusion_steps, cond_free, cond_free_k, diffusion_temperature: override the preset's.
        tokens: (R, N) candidates to rank instead of sampling (no start token; stop tokens where they stopped).
        seed: the candidates' sampling and the diffusion's and UnivNet's noise (None: fresh).
        progress / diffusion_progress: callables (done, total) for the sampling and the diffusion steps.
        sampling: GenerationOptions fields over decoding.TORTOISE_SAMPLING (max_new_tokens=500, ...)."""
        check_choice("preset", preset, QUALITY_PRESETS)
        self.check_ready("diffusion")  # before any heavy work
        p = dict(QUALITY_SETTINGS, **QUALITY_PRESETS[preset])
        R = p["num_autoregressive_samples"] if candidates is None else candidates
        check_count("candidates", R)
        k = check_count("k", k)
        if k > R:
            raise ValueError(f"k must be at most the number of candidates ({R}), got {k}")
        steps = p["diffusion_iterations"] if diffusion_steps is None else diffusion_steps
        check_count("diffusion_steps", steps)
        cond_free = p["cond_free"] if cond_free is None else bool(cond_free)
        cond_free_k = p["cond_free_k"] if cond_free_k is None else float(cond_free_k)
        temperature = p["diffusion_temperature"] if diffusion_temperature is None else float(diffusion_temperature)
        clips = _waveforms(voice_samples)
        opts = GenerationOptions.resolve(**dict(TORTOISE_SAMPLING, **sampling, num_return_sequences=R, seed=seed,
                                                progress=progress or False))
        # 1. conditioning: the autoregressive model's (1, P-1, C) and the diffusion decoder's (1, 2C')
        cond, ids, mask = conditioning(self.model, text, clips)
        dcond = self.diffusion.get_conditioning(diffusion_conditioning_mels(clips))  # (1, 2C')
        # 2-3. candidates, padded to max_new_tokens, fixed, scored
        pad_to = opts.max_new_tokens + 1  # the start token counted (fix_speech_decoder_output drops it)
        if tokens is None:
            d = self.model.config.decoder_config
            tokens = decode(self.model.decoder, self.model.decoder_prompt(cond), opts, d.bos_token_id,
                            d.eos_token_id)  # (R, N)
        tokens = np.asarray(tokens, np.int64)
        out = self.model.score(ids, mask, tokens, pad_to, opts.batch_size)
        scores = out.logits_per_text[0]  # (R,)
        best = np.argsort(-scores, kind="stable")[:k]  # (k,) torch.topk(k): best first
        codes = out.speech_ids[best]  # (k, N')
        # 4. the latents of the fixed codes at training positions
        latents = self.model.decoder_ref.speech_latents(np.repeat(cond, k, axis=0), codes, positions="training")
        # 5-7. each candidate cut at its calm-token run, its mel, its waveform: all noise from one generator, in
        # Tortoise's order
        rng = np.random.default_rng(seed)
        trimmed, mels, wavs = [], [], []
        for i in range(k):
            trimmed.append(latents[i:i + 1, :calm_trim(codes[i])])  # (1, S, C)
            mels.append(spectrogram_diffusion(self.diffusion, trimmed[-1], dcond, steps=steps, cond_free=cond_free,
                                              cond_free_k=cond_free_k, temperature=temperature, rng=rng,
                                              progress=diffusion_progress))  # (1, M, T)
            wavs.append(self.univnet.inference(mels[-1], seed=rng)[0])  # (W,)
        return QualityResult(tokens=tokens, scores=scores, best=best, codes=codes, latents=latents, trimmed=trimmed,
                             diffusion_conditioning=dcond, mel=mels, wav=wavs)

    def tts_stream(self, text, voice_samples, *, stream_chunk_size: int = 40, overlap_wav_len: int = 1024,
                   first_buffer: int = 60, **sampling):  # -> yields (S_i,) float32 chunks at 24 kHz
        """The waveform in chunks as the speech tokens come; their concatenation is api_fast.tts_stream's output."""
        hifigan = self._decoder()
        # a float32 cache unless told otherwise: the latents HiFi-GAN speaks come straight from the generation, and a
        # bfloat16 cache moves them by ~1e-3 (one row: the cache is a small part of each step's reads)
        opts = GenerationOptions.resolve(**dict(FAST_SAMPLING, cache_dtype="float32", **sampling))
        cond, _, _ = conditioning(self.model, text, voice_samples)  # (1, P-1, C)
        d = self.model.config.decoder_config
        # Each token comes with the latent the generation computed for it, as Tortoise's stream generator yields
        # them (decoding.stream): at the KV-cached positions, or, uncached (kv_cache=False: every step reruns the
        # whole sequence), at the training positions, where they equal UnifiedVoice.forward's
        latents, new, wav_prev, overlap = [], 0, None, None
        source = stream(self.model.decoder, self.model.decoder_prompt(cond), opts, d.bos_token_id, d.eos_token_id,
                        latents=True)
        while True:
            item = next(source, None)
            if item is not None:
                latents.append(item[1])
                new += 1
            elif new == 0 and wav_prev is not None:  # the last chunk took every token: nothing is left to say
                return  # (Tortoise's handle_chunks fails here, cross-fading into an empty chunk)
            if item is None or (stream_chunk_size > 0 and new >= max(stream_chunk_size, first_buffer)):
                first_buffer, new = 0, 0
                wav = hifigan.inference(np.stack(latents)[None], cond[:, 0])[0]  # (1, N, C) -> (W,)
                chunk, wav_prev, overlap = _handle_chunk(wav, wav_prev, overlap, overlap_wav_len)
                yield chunk
            if item is None:
                return


# ----------------------------------------------------------------------------------------------
# Memory


CACHE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}  # bytes per KV-cache value, by storage dtype


def memory_estimate(tts: "TextToSpeech", preset: str = "ultra_fast", *, candidates: Optional[int] = None,
                    max_new_tokens: int = 500, batch_size: Optional[int] = None,
                    cache_dtype: str = "bfloat16") -> dict:
    """The quality path's peak memory in bytes, estimated before the run (float32, 4 bytes, but for the KV cache,
    kept in cache_dtype as generation keeps it: bfloat16 by default, 2 bytes):

        peak = SAFETY * (weights + max(sampling, scoring, latents, diffusion, univnet))

    the phases running one after another, each holding its own working set on top of the loaded weights:
      weights    the float32 arrays of every loaded model (CLVP + decoder, HiFi-GAN, DiffusionTts, UnivNet)
      sampling   the KV cache of one chunk of rows = min(R, batch_size or 16): 2 L rows (P + N) C, with P the
                 longest prompt (1 + max_text_tokens + 2), N = max_new_tokens; plus 4 rows V for the logits and their
                 processed copies, and the uniforms (N, R) in float64
      scoring    CLVP's speech encoder on one chunk: rows H_s N'^2 (attention scores and probabilities, x2) +
                 8 rows N' C_s activations, N' = N
      latents    one pass of P + N + 2 positions: H (P+N+2)^2 x 2 + 8 (P+N+2) C
      diffusion  T = N 4 24000 // 22050 mel frames, one denoising pass at a time (batch 1): an attention block's
                 scores, probabilities and position bias 3 H' T^2 (+ the cached buckets, 8 bytes T^2 as int64),
                 and ~16 C' T live activations
      univnet    L = T + 10 frames, W = 256 L samples: the kernel predictor's kernels for every layer plus one
                 reordered copy (layers + 1) C 2C K L, and ~8 C W for the location-variable convolution's operands
    SAFETY = 1.25 covers NumPy temporaries the formula does not name. Returns every term and "peak"."""
    check_choice("preset", preset, QUALITY_PRESETS)
    check_choice("cache_dtype", cache_dtype, CACHE_BYTES)
    tts.check_ready("diffusion")
    R = QUALITY_PRESETS[preset]["num_autoregressive_samples"] if candidates is None else candidates
    rows = min(R, batch_size or 16)
    cfg = tts.model.config
    d, sp = cfg.decoder_config, cfg.speech_config
    N = int(max_new_tokens)
    P = 1 + d.max_text_tokens + 2
    f = 4
    dc, uc = tts.diffusion.cfg, tts.univnet.cfg
    T = N * 4 * 24000 // 22050
    L = T + 10
    W = L * int(np.prod(uc.strides))
    C2 = 2 * uc.channel_size
    weights = sum(int(np.asarray(a).nbytes) for part in (tts.diffusion.w, tts.univnet.w) for a in part.values())
    weights += _model_bytes(tts)
    terms = dict(
        weights=weights,
        sampling=(CACHE_BYTES[cache_dtype] * 2 * d.num_hidden_layers * rows * (P + N) * d.hidden_size
                  + f * 4 * rows * d.vocab_size + 8 * N * R),
        scoring=f * (2 * rows * sp.num_attention_heads * N * N + 8 * rows * N * sp.hidden_size),
        latents=f * (2 * d.num_attention_heads * (P + N + 2) ** 2 + 8 * (P + N + 2) * d.hidden_size),
        diffusion=f * (3 * dc.num_heads * T * T + 16 * dc.model_channels * T) + 8 * T * T,
        univnet=f * ((len(uc.dilations) + 1) * uc.channel_size * C2 * uc.conv_kernel_size * L + 8 * uc.channel_size * W),
    )
    work = max(terms[k] for k in ("sampling", "scoring", "latents", "diffusion", "univnet"))
    terms["peak"] = int(MEMORY_SAFETY * (weights + work))
    return terms


MEMORY_SAFETY = 1.25


def _model_bytes(tts) -> int:  # the CLVP model's and the HiFi-GAN's weights, as loaded
    arrays = list(tts.model.weights.values()) + (list(tts.hifigan.w.values()) if tts.hifigan is not None else [])
    return sum(int(np.asarray(a).nbytes) for a in arrays)


def _weights_folder(path, name: str) -> Path:  # -> path/name, with its weights file there
    folder = Path(path) / name
    if not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_FILE}: " + _how_to_convert(path, name))
    return folder


def _missing(path, name: str) -> str:
    what = {HIFIGAN_FOLDER: "HiFi-GAN decoder", DIFFUSION_FOLDER: "diffusion decoder",
            UNIVNET_FOLDER: "UnivNet vocoder"}[name]
    folder = path or "the model folder"
    return f"no {what} in {folder}/{name}: " + _how_to_convert(folder, name)


def _how_to_convert(folder, name: str) -> str:
    source = _CONVERT[name].split()[-1]
    return f"convert Tortoise's {source} with `pyclvp convert-tortoise {_CONVERT[name]} -o {folder}`"


def _waveforms(voice_samples) -> list:  # -> [(T_j,) float32] at 22.05 kHz
    """The quality path needs the clips' waveforms (the diffusion decoder reads them at 24 kHz), not features."""
    clips = [voice_samples] if isinstance(voice_samples, np.ndarray) and voice_samples.ndim == 1 else voice_samples
    clips = [np.asarray(c) for c in clips]
    if not clips or any(c.ndim != 1 for c in clips):
        raise ValueError("the quality path takes the voice as waveforms at 22.05 kHz (a list of (T,) arrays), not "
                         "features: the diffusion decoder conditions on their 24 kHz univnet mels")
    return clips


def _handle_chunk(wav, wav_prev, overlap, n: int):  # -> (chunk, wav, its tail)
    """The samples of a new decode `wav` (W,) not given out yet, cross-faded over n samples with the last tail.
    ref: tortoise/api_fast.py TextToSpeech.handle_chunks"""
    chunk = (wav[:-n] if wav_prev is None else wav[len(wav_prev) - n:-n]).copy()
    if overlap is not None:
        fade = np.linspace(0.0, 1.0, n, dtype=np.float32)  # torch.linspace(0.0, 1.0, n)
        chunk[:n] = overlap * fade[::-1] + chunk[:n] * fade
    return chunk, wav, wav[-n:]
