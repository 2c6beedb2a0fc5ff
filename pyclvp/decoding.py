"""Decoding: the options, the logits processors, sampling, and the KV-cached loop that emits speech tokens.

Shape legend: B prompts, R candidate rows = B x num_return_sequences, P prompt length, C hidden,
V speech vocab, N generated tokens, S cache slots.

decode(decoder, prompt, opts, bos, eos) runs any decoder with new_state / prefill / step (the NumPy
reference in pyclvp/model/decoder.py, or a backend's fused one) and knows nothing of the model around it:
  1. prefill the B prompts (B, P, C) once; each chunk of at most batch_size candidate rows gets copies of
     its prompt's cache rows (state.select), in one preallocated (L, rows, H, S, D) cache stored in
     opts.cache_dtype (bfloat16 unless told otherwise)
  2. per step: logits (rows, V) -> processors -> next token; the k-th token (k = 1, 2, ...) is fed back
     with its mel position, its K/V written into slot P + k - 1. Two position rules (opts.positions), both
     Tortoise's UnifiedVoice.inference_speech (the start token is at mel position 0 in both):
       "cached"   token k at k + 1: GPT2InferenceModel with kv_cache=True (get_fixed_embedding(len - mel_len),
                  one past the token's index): transformers' CLVP generate, and pyclvp's generate() default
       "uncached" token k at k: kv_cache=False (the default of api.py's TextToSpeech), where every step re-runs
                  the whole sequence [start, t1 .. tk] with positions 0 .. k; causal attention makes that
                  the same as caching K/V computed at those positions, which is what the loop does. A row
     stops at eos and then only emits eos; decoding stops when every row has, at max_new_tokens, or
     where the mel position table (max_position_embeddings) ends (with a warning, never indexing past it)

Logits processing, in transformers' order (ref: transformers/generation/utils.py _get_logits_processor,
transformers/generation/logits_process.py):
  repetition penalty over the start token and the tokens so far: a seen token's logit is divided
      by the penalty when positive, multiplied when negative     (RepetitionPenaltyLogitsProcessor)
  eos suppressed until min_new_tokens tokens are out              (MinNewTokensLengthLogitsProcessor)
  when sampling: temperature, then top-k (ties with the k-th value kept), then top-p (the smallest
      set of the most likely tokens whose probability reaches top_p, at least one)
      (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
  then greedy argmax (the lowest id on a tie), or a draw from softmax by inverse CDF with uniforms
  from numpy.random.default_rng(seed): one uniform per (step, candidate row), u[k, r] being the table
  rng.random((steps, R)), so a candidate's tokens do not depend on batch_size or on when other rows
  stop. The table is never made whole: each chunk of rows takes its columns by jumping the PCG64
  stream (Uniforms, PCG64.advance), so memory grows with batch_size, not with num_return_sequences.
  The loop reaches these through a picker (HostPicker here, when the decoder's `picker` is None); the
  CUDA decoder brings its own, which runs the same processors and draw on the device
  (csrc/cuda/sampling.cu) so that only token ids cross to the host; its cumulative sums round
  differently, so a sampled token can differ only where one lies within float rounding of its
  threshold. The same holds between the NumPy and the C++ backends: their logits agree to ~1e-6, not
  bitwise, so a draw whose uniform lies that close to a token's cumulative boundary can go either way
  (seen once in 736 random sampled generations). Greedy decoding has the same caveat only for near-ties.
"""
from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from .checks import check_choice, is_int, is_real
from .io.half import DTYPES as CACHE_DTYPES

__all__ = ["GenerationOptions", "PRESETS", "PRESET_SAMPLING", "TORTOISE_SAMPLING", "POSITIONS", "DEFAULT_BATCH_SIZE", "process_logits", "sample",
           "decode", "stream", "chunks", "HostPicker", "ProgressBar", "Uniforms"]

# Tortoise's presets (tortoise/api.py, TextToSpeech.tts_with_preset): candidates per text, and the
# sampling settings all of them share.
PRESETS = {"ultra_fast": 16, "fast": 96, "standard": 256, "high_quality": 256}
# What generate(preset=...) fills in: tts()'s own arguments, nothing transformers adds (transformers' semantics).
PRESET_SAMPLING = dict(do_sample=True, temperature=0.8, top_p=0.8, repetition_penalty=2.0, max_new_tokens=500)
# What Tortoise's tts() actually samples with (rank(), the CLI): PRESET_SAMPLING plus
#   top_k=50                 tts() never passes top_k, so the transformers it pins (4.31) applies its default
#                            GenerationConfig.top_k = 50 (warpers: temperature, top-k 50, top-p, after the penalty)
#   prompt_token_ids=(1,)    inference_speech's fake prompt of 1s is in input_ids, so the repetition penalty
#                            counts code 1 as seen from the first step
#   positions="uncached"     TextToSpeech() builds the model with kv_cache=False: token k at mel position k
TORTOISE_SAMPLING = dict(PRESET_SAMPLING, top_k=50, prompt_token_ids=(1,), positions="uncached")
POSITIONS = ("cached", "uncached")
DEFAULT_BATCH_SIZE = 16  # candidate rows decoded together (Tortoise's autoregressive_batch_size)


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
    # token ids the repetition penalty counts as seen from the first step, beside the start token: Tortoise's
    # inference_speech hands generate() a fake prompt of 1s, so code 1 is penalized from the start ((1,) there)
    prompt_token_ids: tuple = ()
    # the mel position of generated token k: "cached" k + 1 (kv_cache=True), "uncached" k (kv_cache=False)
    positions: str = "cached"
    batch_size: Optional[int] = None
    progress: Union[bool, Callable[[int, int], Any]] = False
    # the KV cache's storage: "bfloat16" halves the bytes every step reads (the cache grows to ~1 GB for 16 rows of
    # 244 positions in float32); its effect on the tokens is measured in bench/RESULTS.md ("CPU core"). "float32"
    # matches transformers' cache, "float16" is the other half type. Every backend, the NumPy reference included.
    cache_dtype: str = "bfloat16"

    @classmethod
    def resolve(cls, preset: Optional[str] = None, **given) -> "GenerationOptions":
        """The defaults, then the preset's settings (PRESET_SAMPLING and its candidate count) for what was left
        at its default, then `given`."""
        unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        opts = cls(**given)
        if preset is not None:
            check_choice("preset", preset, PRESETS)
            defaults = cls()
            for key, value in dict(PRESET_SAMPLING, num_return_sequences=PRESETS[preset]).items():
                if getattr(opts, key) == getattr(defaults, key):
                    setattr(opts, key, value)
        return opts.check()

    def check(self) -> "GenerationOptions":
        def count(x, least):  # an integer >= least
            return is_int(x) and x >= least

        def positive(x):  # a real number > 0 (NaN is not)
            return is_real(x) and x > 0

        rules = [
            ("max_new_tokens", count(self.max_new_tokens, 1), "be an integer >= 1"),
            ("min_new_tokens", count(self.min_new_tokens, 0), "be an integer >= 0"),
            ("num_return_sequences", count(self.num_return_sequences, 1),
             "(the number of candidates) be an integer >= 1"),
            ("do_sample", isinstance(self.do_sample, (bool, np.bool_)), "be True or False"),
            ("repetition_penalty", positive(self.repetition_penalty), "be a number > 0"),
            ("top_p", self.top_p is None or (is_real(self.top_p) and 0 < self.top_p <= 1), "lie in (0, 1]"),
            ("top_k", self.top_k is None or count(self.top_k, 0), "be an integer >= 0"),
            ("temperature", not self.do_sample or positive(self.temperature), "be a number > 0 when sampling"),
            ("seed", self.seed is None or count(self.seed, 0), "be None or an integer >= 0"),
            ("batch_size", self.batch_size is None or count(self.batch_size, 1), "be an integer >= 1"),
            ("prompt_token_ids", isinstance(self.prompt_token_ids, (tuple, list)) and
             all(is_int(t) and t >= 0 for t in self.prompt_token_ids), "be a tuple of token ids >= 0"),
            ("positions", self.positions in POSITIONS, f"be one of {', '.join(map(repr, POSITIONS))}"),
            ("cache_dtype", self.cache_dtype in CACHE_DTYPES, f"be one of {', '.join(map(repr, CACHE_DTYPES))}"),
            ("pad_to_max_mel_tokens", self.pad_to_max_mel_tokens is None or count(self.pad_to_max_mel_tokens, 2),
             "be an integer >= 2 (the start token and at least one speech token)"),
        ]
        for name, ok, requirement in rules:
            if not ok:
                raise ValueError(f"{name} must {requirement}, got {getattr(self, name)!r}")
        return self


# ----------------------------------------------------------------------------------------------
# Logits processors (each (R, V) float32 -> (R, V) float32; -inf marks a removed token)


def apply_repetition_penalty(logits, seen, penalty):  # (R, V), (R, V) bool
    # ref: RepetitionPenaltyLogitsProcessor: torch.where(score < 0, score * penalty, score / penalty) on seen ids
    out, x = logits.copy(), logits[seen]  # only the seen entries: (R, V) passes cost ~1 ms a step at 16 x 8194
    out[seen] = np.where(x < 0, x * np.float32(penalty), x / np.float32(penalty))
    return out


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
    remove = below | tied
    part = np.flatnonzero(n_tied < tied.sum(-1))  # rows where only some tied ones go (equal logits: rare)
    if part.size:
        t = tied[part]  # (r, V)
        remove[part] = below[part] | (t & (np.cumsum(t, axis=-1) <= n_tied[part, None]))
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


def chunks(R: int, size: int):  # -> row indices, `size` at a time
    return [np.arange(i, min(i + size, R)) for i in range(0, R, size)]


class Uniforms:
    """The table u = numpy.random.default_rng(seed).random((steps, R)), one chunk of columns at a time.

    Generator.random draws one 64-bit PCG64 output per double, in C order, so u[k, r] is output
    k * R + r: columns(r0, n) copies the stream, advances it to output r0, and per step takes n
    outputs and skips the other R - n (PCG64.advance jumps in O(log) time). Bitwise the same values as
    the whole table (tests/test_hardening.py), in O(steps * n) memory.
    """

    def __init__(self, seed, steps: int, R: int):
        self.state = np.random.PCG64(seed).state  # seed None: fresh entropy, fixed here for every chunk
        self.steps, self.R = steps, R

    def columns(self, r0: int, n: int) -> np.ndarray:  # -> (steps, n) = u[:, r0:r0 + n]
        bits = np.random.PCG64()
        bits.state = self.state
        bits.advance(r0)
        gen, out = np.random.Generator(bits), np.empty((self.steps, n))
        for k in range(self.steps):
            out[k] = gen.random(n)
            if k + 1 < self.steps:
                bits.advance(self.R - n)
        return out


def _start(decoder, prompt, opts: GenerationOptions, R: int):  # -> steps, state (B rows), logits (B, V), uniforms
    """Prefill the B prompts (B, P, C) once, in a cache long enough for every step; the uniforms of R rows."""
    B, P, _ = prompt.shape
    # the last token fed is token steps-1, at mel position steps (cached) or steps-1 (uncached)
    steps = min(opts.max_new_tokens, decoder.cfg.max_position_embeddings - (opts.positions == "cached"))
    state = decoder.new_state(B, P + steps - 1, opts.cache_dtype)
    logits = decoder.prefill(prompt, None, state)  # (B, V)
    uniforms = Uniforms(opts.seed, steps, R) if opts.do_sample else None
    return steps, state, logits, uniforms


def decode(decoder, prompt, opts: GenerationOptions, bos: int, eos: int):  # (B, P, C) -> (R, N) int64
    """Generate num_return_sequences rows per prompt; rows b*n .. b*n+n-1 belong to prompt b.

    Memory per chunk of batch_size rows (the cache, the uniforms, the tokens); the result is put
    together at the end, each chunk's tokens trimmed to the steps it ran."""
    n, R = opts.num_return_sequences, prompt.shape[0] * opts.num_return_sequences
    steps, state0, logits0, uniforms = _start(decoder, prompt, opts, R)
    size = opts.batch_size or DEFAULT_BATCH_SIZE
    report, used, total = _progress_fn(opts.progress), 0, -(-R // size) * steps
    done_parts = []  # (first row, tokens (rows, done))
    for c, r0 in enumerate(range(0, R, size)):
        rows = np.arange(r0, min(r0 + size, R))
        tokens = np.full((len(rows), steps), eos, np.int64)  # (rows, steps)
        u = uniforms.columns(r0, len(rows)) if uniforms else None  # (steps, rows)
        done = 0
        for done in _decode_chunk(decoder, state0.select(rows // n), logits0[rows // n], tokens, u, opts, bos, eos):
            if report:
                report(c * steps + done, total)
        used = max(used, done)
        done_parts.append((r0, tokens[:, :done].copy()))
        del tokens
        if report:
            report((c + 1) * steps, total)  # a chunk that stopped early jumps to its end
    out = np.full((R, used), eos, np.int64)  # (R, N)
    for r0, part in done_parts:
        out[r0:r0 + len(part), :part.shape[1]] = part
    table = decoder.cfg.max_position_embeddings
    if used == steps < opts.max_new_tokens and (out[:, -1] != eos).any():
        warnings.warn(f"generation stopped at {steps} tokens: the decoder's mel position table "
                      f"(max_position_embeddings={table}) ends there", stacklevel=3)
    return out


def stream(decoder, prompt, opts: GenerationOptions, bos: int, eos: int, latents: bool = False):
    """One candidate's tokens as they are chosen (one prompt, one row, as decode() would make it), eos last:
    yields token ids, or with latents=True (token id, its latent (C,)).

    Token k's latent is the final-normed hidden state whose logits chose it, i.e. at the input before it (the start
    token for the first): decoder.last_latents of the call that made those logits (the prefill, then each step).
    They equal the decoder's speech_latents(prompt, tokens) at positions="cached" (or "training" when
    opts.positions is "uncached"), computed on the way."""
    if prompt.shape[0] != 1 or opts.num_return_sequences != 1:
        raise ValueError("stream() decodes one prompt into one candidate")
    steps, state, logits, uniforms = _start(decoder, prompt, opts, 1)
    tokens = np.full((1, steps), eos, np.int64)
    u = uniforms.columns(0, 1) if uniforms else None
    for done in _decode_chunk(decoder, state, logits, tokens, u, opts, bos, eos):
        token = int(tokens[0, done - 1])
        # the last decoder call made the logits token done-1 was chosen from (a picker feeds the next token after this)
        yield (token, decoder.last_latents(state)[0]) if latents else token


class HostPicker:
    """Chooses each row's next token on the host: process_logits, then argmax or sample().

    The picker seam of the decode loop (a decoder names its own class as `decoder.picker`, as the
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
        self.seen[:, list(opts.prompt_token_ids)] = True
        self.logits = None

    def _pick(self, logits, k, u):  # (rows, V) -> (rows,)
        # NaN or +inf: argmax would emit token 0 forever, with plausible-looking scores (-inf only removes a token)
        bad = np.flatnonzero((np.isnan(logits) | (logits == np.inf)).any(-1))
        if bad.size:
            raise ValueError(f"the decoder's logits hold NaN or infinity at step {k + 1} (row {bad[0]}): the "
                             "checkpoint has non-finite weights, or the inputs overflowed")
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


def _decode_chunk(decoder, state, logits, tokens, u, opts, bos, eos):
    """Decode one chunk of rows into tokens (rows, steps), yielding the number of steps done after each step.
    u: the chunk's uniforms (steps, rows) when sampling.

    `live` lists the chunk rows still held in `state` (aligned with its rows and with `logits`). When
    half of them have finished, they are dropped from the state (a copy) so that no step is spent
    on them; finished rows still in the state emit eos.
    """
    steps = tokens.shape[1]
    # the device picker marks only the start token as seen: extra prompt tokens are chosen on the host
    device = decoder.picker if not opts.prompt_token_ids else None
    rows = tokens.shape[0]
    picker = (device or HostPicker)(decoder, opts, bos, eos, rows)
    finished = np.zeros(rows, bool)
    live = np.arange(rows)
    for k in range(steps):  # producing token k + 1
        uk = u[k, live] if opts.do_sample else None  # (live,)
        nxt = picker.first(logits, state, uk) if k == 0 else picker.next(state, k, uk)  # (live,)
        nxt = np.where(finished[live], eos, nxt)
        tokens[live, k] = nxt
        finished[live] |= nxt == eos
        yield k + 1
        if finished.all() or k + 1 == steps:
            return
        if 2 * finished[live].sum() >= len(live):  # compact: keep only the rows still going
            keep = np.flatnonzero(~finished[live])
            state, live, nxt = picker.select(state, keep), live[keep], nxt[keep]
        shift = 2 if opts.positions == "cached" else 1  # token k+1 at mel position k+2 (cached) or k+1 (uncached)
        picker.feed(nxt, np.full(len(live), k + shift), state)
