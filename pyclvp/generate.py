"""Generation and ranking: speech-token candidates from the decoder, scored against the text by CLVP.

Shape legend: B texts (or clips), R candidate rows = B x num_return_sequences, P prompt length,
C hidden, V speech vocab, N generated tokens, S cache slots.

generate(model, input_ids, input_features), as transformers' ClvpModelForConditionalGeneration.generate
but with Tortoise's decoder positions (see pyclvp/model/decoder.py):
  1. the text gets the extra eos that transformers' generate adds (_pad_extra_bos_eos_tokens with
     add_bos_token=False), then the conditioning encoder adds its bos and eos: (B, P-1, C)
  2. prompt = [conditioning, start-token embedding + mel position 0]                  (B, P, C)
  3. prefill the B prompts once; each chunk of at most batch_size candidate rows gets copies of its
     text's cache rows (DecoderState.select), in one preallocated (L, rows, H, S, D) cache
  4. per step: logits (rows, V) -> processors -> next token; the k-th token is fed back with mel
     position k + 1, its K/V written into slot P + k - 1. A row stops at eos and then only emits
     eos; decoding stops when every row has, at max_new_tokens, or where the mel position table
     (max_position_embeddings) ends (with a warning, never indexing past it)
  5. speech_ids = fix_speech_decoder_output([start, tokens]); the speech encoder embeds each
     candidate, the text encoder the text; logits_per_text = scaled cosine similarities (B, R)

Logits processing, in transformers' order (ref: transformers/generation/utils.py _get_logits_processor,
transformers/generation/logits_process.py):
  repetition penalty over the start token and the tokens so far: a seen token's logit is divided
      by the penalty when positive, multiplied when negative     (RepetitionPenaltyLogitsProcessor)
  eos suppressed until min_new_tokens tokens are out              (MinNewTokensLengthLogitsProcessor)
  when sampling: temperature, then top-k (ties with the k-th value kept), then top-p (the smallest
      set of the most likely tokens whose probability reaches top_p, at least one)
      (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
  then greedy argmax (the lowest id on a tie), or a draw from softmax by inverse CDF with uniforms
  from numpy.random.Generator(seed): one uniform per (step, candidate row), drawn up front, so a
  candidate's tokens do not depend on batch_size or on when other rows stop.
  The loop reaches these through a picker (HostPicker here); the CUDA decoder brings its own, which
  runs the same processors and draw on the device (csrc/cuda/sampling.cu) so that only token ids
  cross to the host; its cumulative sums round differently, so a sampled token can differ only
  where one lies within float rounding of its threshold. The same holds between the NumPy and the
  C++ backends: their logits agree to ~1e-6, not bitwise, so a draw whose uniform lies that close to
  a token's cumulative boundary can go either way (seen once in 736 random sampled generations).
  Greedy decoding has the same caveat only for near-ties.

rank(model, text, voice) generates candidates with Tortoise's sampling settings and returns them
sorted by score, best first. Several voice clips are combined as Tortoise's get_conditioning does:
their conditioning vectors are averaged.
"""
from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from .features import ClvpFeatureExtractor, as_clips
from .model.clvp import ClvpOutput
from .model.conditioning import pad_extra_bos_eos_tokens
from .model.encoder import EncoderOutput

__all__ = ["GenerationOptions", "PRESETS", "Candidate", "generate", "rank", "process_logits", "sample"]

# Tortoise's presets (tortoise/api.py, TextToSpeech.tts_with_preset): candidates per text, and the
# sampling settings all of them share.
PRESETS = {"ultra_fast": 16, "fast": 96, "standard": 256, "high_quality": 256}
TORTOISE_SAMPLING = dict(do_sample=True, temperature=0.8, top_p=0.8, repetition_penalty=2.0, max_new_tokens=500)
DEFAULT_BATCH_SIZE = 16  # candidate rows decoded together (Tortoise's autoregressive_batch_size)
TOKENS_PER_SECOND = 20  # roughly: one speech token per 1024 samples at 22.05 kHz


# ----------------------------------------------------------------------------------------------
# Options


@dataclass
class GenerationOptions:
    """Every generate() setting, with its default; check() says what is wrong with a bad one."""

    max_new_tokens: int = 500
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    repetition_penalty: float = 1.0
    num_return_sequences: int = 1
    seed: Optional[int] = None
    pad_to_max_mel_tokens: Optional[int] = None
    batch_size: Optional[int] = None
    progress: Union[bool, Callable[[int, int], Any]] = False

    @classmethod
    def resolve(cls, preset: Optional[str] = None, **given) -> "GenerationOptions":
        """The defaults, then the preset's settings for what was left at its default, then `given`."""
        unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        opts = cls(**given)
        if preset is not None:
            if not isinstance(preset, str) or preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
            defaults = cls()
            for key, value in dict(TORTOISE_SAMPLING, num_return_sequences=PRESETS[preset]).items():
                if getattr(opts, key) == getattr(defaults, key):
                    setattr(opts, key, value)
        return opts.check()

    def check(self) -> "GenerationOptions":
        def count(x, least):  # an integer >= least
            return _is_int(x) and x >= least

        def positive(x):  # a real number > 0 (NaN is not)
            return _is_real(x) and x > 0

        rules = [
            ("max_new_tokens", count(self.max_new_tokens, 1), "be an integer >= 1"),
            ("min_new_tokens", count(self.min_new_tokens, 0), "be an integer >= 0"),
            ("num_return_sequences", count(self.num_return_sequences, 1),
             "(the number of candidates) be an integer >= 1"),
            ("do_sample", isinstance(self.do_sample, (bool, np.bool_)), "be True or False"),
            ("repetition_penalty", positive(self.repetition_penalty), "be a number > 0"),
            ("top_p", self.top_p is None or (_is_real(self.top_p) and 0 < self.top_p <= 1), "lie in (0, 1]"),
            ("top_k", self.top_k is None or count(self.top_k, 0), "be an integer >= 0"),
            ("temperature", not self.do_sample or positive(self.temperature), "be a number > 0 when sampling"),
            ("seed", self.seed is None or count(self.seed, 0), "be None or an integer >= 0"),
            ("batch_size", self.batch_size is None or count(self.batch_size, 1), "be an integer >= 1"),
            ("pad_to_max_mel_tokens", self.pad_to_max_mel_tokens is None or count(self.pad_to_max_mel_tokens, 2),
             "be an integer >= 2 (the start token and at least one speech token)"),
        ]
        for name, ok, requirement in rules:
            if not ok:
                raise ValueError(f"{name} must {requirement}, got {getattr(self, name)!r}")
        return self


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


# ----------------------------------------------------------------------------------------------
# Logits processors (each (R, V) float32 -> (R, V) float32; -inf marks a removed token)


def apply_repetition_penalty(logits, seen, penalty):  # (R, V), (R, V) bool
    # ref: RepetitionPenaltyLogitsProcessor: torch.where(score < 0, score * penalty, score / penalty) on seen ids
    penalized = np.where(logits < 0, logits * np.float32(penalty), logits / np.float32(penalty))
    return np.where(seen, penalized, logits)


def suppress_token(logits, token):  # (R, V) -> (R, V) with column `token` at -inf
    out = logits.copy()
    out[:, token] = -np.inf
    return out


def apply_top_k(logits, k):  # (R, V)
    # ref: TopKLogitsWarper: remove scores < the k-th largest (so ties with it stay)
    V = logits.shape[-1]
    kth = np.partition(logits, V - min(k, V), axis=-1)[:, V - min(k, V), None]  # (R, 1)
    return np.where(logits < kth, np.float32(-np.inf), logits)


def apply_top_p(logits, p):  # (R, V)
    # ref: TopPLogitsWarper: stable ascending argsort, softmax, cumulative sum; remove the sorted prefix
    # whose cumulative probability is <= 1 - top_p, never the largest. The same without the argsort:
    # the sorted values give the same cumulative sums, and the stable order puts equal values in id
    # order, so the prefix is every token below the cut value and the lowest ids of those equal to it.
    V = logits.shape[-1]
    ascending = np.sort(logits, axis=-1)  # (R, V)
    e = np.exp(ascending - ascending[:, -1:])  # the last is the max
    cum = np.cumsum(e / e.sum(-1, keepdims=True), axis=-1)  # (R, V) float32, non-decreasing
    n_remove = np.minimum((cum <= np.float32(1 - p)).sum(-1), V - 1)  # (R,) the prefix's length
    cut = np.take_along_axis(ascending, np.maximum(n_remove - 1, 0)[:, None], axis=-1)  # (R, 1) its last value
    below, tied = logits < cut, logits == cut  # (R, V)
    n_tied = n_remove - below.sum(-1)  # (R,) how many of the tied ones go, lowest ids first
    remove = below | (tied & (np.cumsum(tied, axis=-1) <= n_tied[:, None]))
    return np.where(remove, np.float32(-np.inf), logits)


def process_logits(logits, seen, n_generated: int, opts: GenerationOptions, eos: int):  # (R, V) -> (R, V)
    """The processors in transformers' order. seen (R, V) bool: the start token and the tokens so far."""
    logits = logits.astype(np.float32)
    if opts.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, opts.repetition_penalty)
    if n_generated < opts.min_new_tokens:
        logits = suppress_token(logits, eos)
    if opts.do_sample:
        if opts.temperature != 1.0:
            with np.errstate(over="ignore"):  # an overflow to inf is refused by sample(), with the reason
                logits = logits / np.float32(opts.temperature)
        if opts.top_k:
            logits = apply_top_k(logits, opts.top_k)
        if opts.top_p is not None and opts.top_p < 1.0:
            logits = apply_top_p(logits, opts.top_p)
    return logits


def sample(logits, u):  # (R, V) processed logits, (R,) uniforms in [0, 1) -> (R,) int64
    """Inverse-CDF draw from softmax(logits): the first token whose cumulative weight exceeds u * total."""
    z = logits.astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf: reported below
        c = np.cumsum(np.exp(z - z.max(-1, keepdims=True)), axis=-1)  # (R, V); removed tokens add 0
    bad = np.flatnonzero(~np.isfinite(c[:, -1]))
    if bad.size:  # as torch.multinomial, which refuses such rows; a draw from them would be meaningless
        raise ValueError(f"cannot sample row {bad[0]}: its processed logits hold NaN or overflowed to inf "
                         "(a temperature too small for float32, or NaN logits)")
    return np.minimum((c <= u[:, None] * c[:, -1:]).sum(-1), logits.shape[-1] - 1).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Progress


class ProgressBar:
    """progress(done, total) as a one-line text bar on a stream: `decoding [#####     ] 50/100 steps`."""

    def __init__(self, stream=None, width: int = 30):
        self.stream, self.width = stream or sys.stderr, width

    def __call__(self, done: int, total: int) -> None:
        filled = self.width * done // max(total, 1)
        end = "\n" if done >= total else ""
        self.stream.write(f"\rdecoding [{'#' * filled}{' ' * (self.width - filled)}] {done}/{total} steps{end}")
        self.stream.flush()


def _progress_fn(progress):
    if callable(progress):
        return progress
    return ProgressBar() if progress else None


# ----------------------------------------------------------------------------------------------
# Decoding


def _chunks(R: int, size: int):
    return [np.arange(i, min(i + size, R)) for i in range(0, R, size)]


def decode(decoder, prompt, opts: GenerationOptions, bos: int, eos: int):  # (B, P, C) -> (R, N) int64
    """Generate num_return_sequences rows per prompt; rows b*n .. b*n+n-1 belong to prompt b."""
    B, P, _ = prompt.shape
    n, R = opts.num_return_sequences, B * opts.num_return_sequences
    table = decoder.cfg.max_position_embeddings
    steps = min(opts.max_new_tokens, table - 1)  # token k is fed at mel position k + 1 <= table - 1
    state0 = decoder.new_state(B, P + steps - 1)
    logits0 = decoder.prefill(prompt, None, state0)  # (B, V)
    u = np.random.default_rng(opts.seed).random((steps, R)) if opts.do_sample else None
    tokens = np.full((R, steps), eos, np.int64)
    chunks = _chunks(R, opts.batch_size or DEFAULT_BATCH_SIZE)
    report, used, total = _progress_fn(opts.progress), 0, len(chunks) * steps
    for c, rows in enumerate(chunks):
        def on_step(k, first=c * steps):
            if report:
                report(first + k, total)

        used = max(used, _decode_chunk(decoder, state0.select(rows // n), logits0[rows // n], rows, tokens, u,
                                       opts, bos, eos, on_step))
        on_step(steps)  # a chunk that stopped early jumps to its end
    if used == steps < opts.max_new_tokens and (tokens[:, -1] != eos).any():
        warnings.warn(f"generation stopped at {steps} tokens: the decoder's mel position table "
                      f"(max_position_embeddings={table}) ends there", stacklevel=3)
    return tokens[:, :used]


class HostPicker:
    """Chooses each row's next token on the host: process_logits, then argmax or sample().

    The picker seam of the decode loop (a decoder may name its own class as `decoder.picker`, as the
    CUDA decoder does to choose on the device; it keeps this contract):
        first(logits, state, u)       the first tokens (rows,) from the prompt's logits (rows, V)
        feed(ids, positions, state)   the decoder takes the chosen tokens in ...
        next(state, k, u)             ... and its next tokens come out: token k of each row (rows,)
        select(state, keep) -> state  only rows `keep` go on
    u: (rows,) uniforms when sampling, else None. `seen` holds each row's start token and tokens so far.
    """

    def __init__(self, decoder, opts: GenerationOptions, bos: int, eos: int, rows: int):
        self.decoder, self.opts, self.eos = decoder, opts, eos
        self.seen = np.zeros((rows, decoder.cfg.vocab_size), bool)  # (rows, V)
        self.seen[:, bos] = True
        self.logits = None

    def _pick(self, logits, k, u):  # (rows, V) -> (rows,)
        proc = process_logits(logits, self.seen, k, self.opts, self.eos)
        nxt = sample(proc, u) if self.opts.do_sample else proc.argmax(-1)
        self.seen[np.arange(len(nxt)), nxt] = True
        return nxt

    def first(self, logits, state, u):
        return self._pick(logits, 0, u)

    def feed(self, ids, positions, state):
        self.logits = self.decoder.step(ids, positions, state)

    def next(self, state, k, u):
        return self._pick(self.logits, k, u)

    def select(self, state, keep):
        self.seen = self.seen[keep]
        return state.select(keep)


def _decode_chunk(decoder, state, logits, rows, tokens, u, opts, bos, eos, on_step) -> int:
    """Decode one chunk of rows into tokens[rows]; returns the number of steps taken.

    `live` lists the chunk rows still held in `state` (aligned with its rows and with `logits`). When
    half of them have finished, they are dropped from the state (a copy) so that no step is spent
    on them; finished rows still in the state emit eos.
    """
    steps = tokens.shape[1]
    picker = (getattr(decoder, "picker", None) or HostPicker)(decoder, opts, bos, eos, len(rows))
    finished = np.zeros(len(rows), bool)
    live = np.arange(len(rows))
    for k in range(steps):  # producing token k + 1
        uk = u[k, rows[live]] if opts.do_sample else None  # (live,)
        nxt = picker.first(logits, state, uk) if k == 0 else picker.next(state, k, uk)  # (live,)
        nxt = np.where(finished[live], eos, nxt)
        tokens[rows[live], k] = nxt
        finished[live] |= nxt == eos
        on_step(k + 1)
        if finished.all() or k + 1 == steps:
            return k + 1
        if 2 * finished[live].sum() >= len(live):  # compact: keep only the rows still going
            keep = np.flatnonzero(~finished[live])
            state, live, nxt = picker.select(state, keep), live[keep], nxt[keep]
        picker.feed(nxt, np.full(len(live), k + 2), state)  # token k+1 at mel position k+2
    return steps


# ----------------------------------------------------------------------------------------------
# generate()


def prepare_text(model, input_ids, attention_mask=None):  # -> (B, T+1) ids, mask or None
    """Checked ids with the extra eos that transformers' generate() adds (no bos here)."""
    ids, mask = model.check_text(input_ids, attention_mask)
    model.check_text_length(ids, mask, 3)
    t = model.config.text_config
    return pad_extra_bos_eos_tokens(ids, mask, add_bos_token=False, bos_token_id=t.bos_token_id,
                                    eos_token_id=t.eos_token_id)


def generate(model, input_ids, input_features, attention_mask=None, *, preset=None, **options) -> ClvpOutput:
    """Candidates for each text (or clip) and their CLVP scores; see the module docstring and GenerationOptions."""
    opts = GenerationOptions.resolve(preset, **options)
    ids, mask = prepare_text(model, input_ids, attention_mask)
    cond = model.conditioning_encoder(model.check_features(input_features), ids, mask)  # (B, P-1, C)
    return generate_from_conditioning(model, cond, ids, mask, opts)[0]


def generate_from_conditioning(model, cond, ids, mask, opts):  # -> (ClvpOutput, raw tokens (R, N))
    d = model.config.decoder_config
    tokens = decode(model.decoder, model.decoder_prompt(cond), opts, d.bos_token_id, d.eos_token_id)  # (R, N)
    seqs = np.concatenate([np.full((len(tokens), 1), d.bos_token_id), tokens], axis=1)  # (R, 1+N)
    if opts.pad_to_max_mel_tokens is not None:  # ref: transformers generate: F.pad(..., value=eos), which crops too
        extra = opts.pad_to_max_mel_tokens - seqs.shape[1]
        seqs = np.pad(seqs, ((0, 0), (0, extra)), constant_values=d.eos_token_id) if extra >= 0 else seqs[:, :extra]
    speech_ids = model.fix_speech_decoder_output(seqs)  # (R, N')
    speech_out = _encode_in_chunks(model.speech_encoder, speech_ids, opts.batch_size or DEFAULT_BATCH_SIZE)
    out = model.similarity(model.text_encoder(ids, mask), speech_out)
    out.speech_ids = speech_ids
    return out, tokens


def _encode_in_chunks(encoder, ids, size) -> EncoderOutput:
    parts = [encoder(ids[rows]) for rows in _chunks(len(ids), size)]
    return EncoderOutput(*(np.concatenate([getattr(p, f.name) for p in parts])
                           for f in dataclasses.fields(EncoderOutput)))


# ----------------------------------------------------------------------------------------------
# rank()


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
    if not _is_int(num_candidates) or num_candidates <= 0:
        raise ValueError(f"num_candidates must be a positive integer, got {num_candidates!r}")
    if k is not None and (not _is_int(k) or k <= 0):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if "num_return_sequences" in sampling:
        raise TypeError("rank takes num_candidates, not num_return_sequences")
    settings = dict(TORTOISE_SAMPLING) if preset is None else {}
    settings.update(sampling)
    if preset is None or num_candidates != 16:  # a preset fills in num_candidates left at its default
        settings["num_return_sequences"] = num_candidates
    opts = GenerationOptions.resolve(preset, **settings)
    ids, mask = prepare_text(model, _text_ids(model, text_or_ids, tokenizer))
    feats = _voice_features(model, audio_or_features, feature_extractor)  # (N, M, T)
    cond = model.conditioning_encoder(feats, ids, mask)  # (N, P-1, C): the text repeated per clip
    cond = np.concatenate([cond[:, :1].mean(0, keepdims=True), cond[:1, 1:]], axis=1)  # (1, P-1, C): the clips'
    # conditioning vectors averaged, as Tortoise's UnifiedVoice.get_conditioning does
    out, tokens = generate_from_conditioning(model, cond, ids, mask, opts)
    eos = model.config.decoder_config.eos_token_id
    lengths = np.where((tokens == eos).any(1), (tokens == eos).argmax(1), tokens.shape[1])
    scores = out.logits_per_text[0]  # (R,)
    order = np.argsort(-scores, kind="stable")[:k]
    return [Candidate(speech_ids=out.speech_ids[i], length=int(lengths[i]), score=float(scores[i])) for i in order]


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
    from .tokenizer import ClvpTokenizer

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
            return model.check_features(voice)
        if voice.ndim != 1:
            raise ValueError(f"the voice must be a waveform (T,), a list of waveforms, or features ({M}, T) / "
                             f"(N, {M}, T); got shape {voice.shape}")
        clips = [voice]
    if not clips:
        raise ValueError("no voice clip given")
    clips = as_clips(clips)  # real-valued, mono, finite: the feature extractor's checks
    for i, clip in enumerate(clips):
        if clip.size == 0 or np.abs(clip).max() < 1e-4:
            raise ValueError(f"voice clip {i} is empty or silent (peak below -80 dBFS); use a recording of the voice")
    if feature_extractor is None:
        feature_extractor = ClvpFeatureExtractor.from_pretrained(getattr(model, "name_or_path", None))
    feats = feature_extractor(clips, sampling_rate=feature_extractor.sampling_rate,
                              return_tensors="np")["input_features"]
    return model.check_features(feats)
