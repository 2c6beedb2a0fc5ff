"""ClvpModelForConditionalGeneration: the whole CLVP model, and its forward pass.

Shape legend: B batch, T time, C hidden, M mel bins, V vocab, P projection dim.

The parts (each in its own file, each a function of its weights, its config and an ops backend):
    conditioning.py  voice clip + text -> conditioning embeddings (B, 1+T+2, C)
    decoder.py       GPT-2 speech-token decoder with a KV cache -> logits over speech tokens
    encoder.py       the text encoder and the speech encoder -> projected embeddings (B, P)

forward(input_ids, input_features), as transformers' ClvpModelForConditionalGeneration.forward:
    cond = conditioning_encoder(input_features, input_ids)          (B, 1+T+2, C)
    logits = decoder.forward(cond)                                  (B, 1+T+2, V)   positions 0.. added
    speech_ids = fix_speech_decoder_output(argmax(logits))          (B, T+2)
    s = speech_encoder(speech_ids).embeds, t = text_encoder(input_ids).embeds   (B, P) each
    logits_per_text = (t / |t|) @ (s / |s|)^T * exp(logit_scale)    (Bt, Bs); logits_per_speech is its transpose

generate(input_ids, input_features, **options), as transformers' ClvpModelForConditionalGeneration.generate
but with Tortoise's decoder positions (see decoder.py), the decode loop being pyclvp/decoding.py's:
    1. the text gets the extra eos that transformers' generate adds (_pad_extra_bos_eos_tokens with
       add_bos_token=False), then the conditioning encoder adds its bos and eos:    (B, P-1, C)
    2. prompt = [conditioning, start-token embedding + mel position 0]              (B, P, C)
    3. tokens = decode(decoder, prompt, options)                                    (R, N), R = B x num_return_sequences
    4. speech_ids = fix_speech_decoder_output([start, tokens]); the speech encoder embeds each
       candidate, the text encoder the text; logits_per_text = scaled cosine similarities (B, R)
Ranking one text in one voice (Tortoise's pipeline) builds on steps 1-4: pyclvp/rank.py.

ref: transformers/models/clvp/modeling_clvp.py, ClvpModelForConditionalGeneration.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..checks import as_ids, keep_mask
from ..config import ClvpConfig
from ..decoding import DEFAULT_BATCH_SIZE, GenerationOptions, chunks, decode
from ..io.checkpoints import check_folder, check_shapes
from ..ops import BACKEND_CHOICES, get_ops
from .conditioning import conditioning_encoder, pad_extra_bos_eos_tokens
from .decoder import Decoder
from .encoder import Encoder, EncoderOutput
from .weights import OPTIONAL, checkpoint_spec, load_checkpoint, strip_prefix

__all__ = ["ClvpModelForConditionalGeneration", "ClvpOutput"]


@dataclass
class ClvpOutput:
    """transformers' ClvpOutput fields, as NumPy arrays (None when not computed)."""

    loss: Optional[np.ndarray] = None  # () contrastive loss, with return_loss=True
    speech_ids: Optional[np.ndarray] = None  # (B, N) int64 fixed speech tokens (generate)
    logits_per_speech: Optional[np.ndarray] = None  # (Bs, Bt) scaled cosine similarities
    logits_per_text: Optional[np.ndarray] = None  # (Bt, Bs)
    text_embeds: Optional[np.ndarray] = None  # (Bt, P) L2-normalized
    speech_embeds: Optional[np.ndarray] = None  # (Bs, P) L2-normalized
    text_model_output: Optional[np.ndarray] = None  # (Bt, C) the text encoder's pooler_output
    speech_model_output: Optional[np.ndarray] = None  # (Bs, C) the speech encoder's pooler_output
    decoder_hidden_states: Optional[np.ndarray] = None
    text_encoder_hidden_states: Optional[np.ndarray] = None
    speech_encoder_hidden_states: Optional[np.ndarray] = None


class ClvpModelForConditionalGeneration:
    """CLVP on NumPy arrays: ClvpModelForConditionalGeneration.from_pretrained(folder, backend="numpy")."""

    def __init__(self, config: ClvpConfig, weights: dict, backend="numpy"):
        if not isinstance(weights, dict):
            raise TypeError(f"weights must be a dict of arrays by checkpoint key, got {type(weights).__name__}")
        check_shapes({k: np.shape(v) for k, v in weights.items()}, checkpoint_spec(config), "weights", OPTIONAL)
        self.config, self.weights = config, weights
        self.name_or_path: Optional[Path] = None  # the folder it was loaded from (tokenizer/feature config)
        self.ops = _ops(backend)
        self.conditioning_params = strip_prefix(weights, "conditioning_encoder.")
        params, cfg = strip_prefix(weights, "speech_decoder_model."), config.decoder_config
        self.decoder_ref = Decoder(params, cfg, self.ops)  # forward() over whole sequences, embeddings
        # new_state / prefill / step for generation: the backend's fused decoder, or the reference
        self.decoder = self.ops.make_decoder(params, cfg) or self.decoder_ref
        self.text_encoder = Encoder(strip_prefix(weights, "text_encoder_model."), config.text_config, self.ops)
        self.speech_encoder = Encoder(strip_prefix(weights, "speech_encoder_model."), config.speech_config, self.ops)

    @classmethod
    def from_pretrained(cls, path, backend="numpy", dtype: str = "float32", weights=None):
        """A folder with config.json and model.safetensors (or model.safetensors.index.json + shards);
        failing those, pytorch_model.bin (or its index + shards), read without running its pickle.

        dtype: the float matrices' storage ("float32", or with backend "cpu"/"cuda" "float16" / "bfloat16").
        weights="int8": the speech decoder's matrices and lm_head in int8 with a float32 scale per block of 32
        (pyclvp/io/q8.py; which ones: pyclvp/model/weights.py int8_targets), quantized as they are loaded from a
        float checkpoint; a folder written by `pyclvp convert --weights int8` holds them so already (and loads
        as int8 without it). Backends "numpy" (dequantizes on use) and "cpu"; "cuda" refuses int8."""
        path = check_folder(path)
        config = ClvpConfig.from_pretrained(path)
        ops = _ops(backend)  # its prepare_weight may keep half-precision weights as stored
        model = cls(config, load_checkpoint(path, config, dtype, ops.prepare_weight, weights), ops)
        model.name_or_path = path
        return model

    def __repr__(self):
        d = self.config.decoder_config
        return (f"<ClvpModelForConditionalGeneration decoder {d.num_hidden_layers}x{d.hidden_size}, "
                f"backend={self.ops.name!r}>")

    @property
    def logit_scale(self) -> float:
        return float(self.weights["logit_scale"])

    # ------------------------------------------------------------------------------------------
    # Checked inputs

    def check_text(self, input_ids, attention_mask=None):  # -> (B, T) int64, (B, T) int64 or None
        ids = as_ids(input_ids, "input_ids", self.config.text_config.vocab_size, "text_config.vocab_size")
        return ids, _as_mask(attention_mask, ids, "input_ids")

    def check_features(self, input_features):  # -> (B, M, T) float32
        x = np.asarray(input_features)
        if x.ndim == 2:
            x = x[None]
        M = self.config.decoder_config.feature_size
        if x.ndim != 3 or x.shape[1] != M or x.shape[2] == 0 or x.shape[0] == 0:
            raise ValueError(f"input_features must have shape (batch, {M} mel bins, frames >= 1), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            raise ValueError("input_features must be finite floating-point values")
        return x.astype(np.float32, copy=False)

    def check_text_length(self, ids, attention_mask, extra: int):
        """With `extra` tokens added (2 in forward, 3 in generate), do the text positions fit the table?"""
        n = int(np.asarray(attention_mask).sum(1).max()) if attention_mask is not None else ids.shape[1]
        limit = self.config.decoder_config.max_text_tokens
        if n + extra > limit:
            raise ValueError(f"the text is {n} tokens long; this model takes at most {limit - extra} "
                             f"(max_text_tokens {limit} - {extra})")

    # ------------------------------------------------------------------------------------------
    # Parts

    def conditioning_encoder(self, input_features, input_ids, attention_mask=None):  # -> (B, 1+T+2, C)
        ids, mask = self.check_text(input_ids, attention_mask)
        self.check_text_length(ids, mask, 2)
        return self.encode_conditioning(self.check_features(input_features), ids, mask)

    def encode_conditioning(self, feats, ids, mask):  # (B, M, T), (B, T) -> (B, 1+T+2, C); inputs already checked
        return conditioning_encoder(feats, ids, mask, self.conditioning_params, self.config, self.ops)

    def decoder_prompt(self, conditioning_embeds):  # (B, P, C) -> (B, P+1, C)
        """Tortoise's prompt: [conditioning, start-token embedding + mel position 0]. Nothing else is added.

        ref: transformers ClvpForCausalLM._prepare_model_inputs (mel_start_token_embedding), without the
        position subtraction that its generate() pairs with a position-0 broadcast.
        """
        B = conditioning_embeds.shape[0]
        start = self.decoder_ref.embed(np.full(B, self.config.decoder_config.bos_token_id), np.zeros(B, np.int64))
        return np.concatenate([conditioning_embeds, start[:, None, :]], axis=1)

    def fix_speech_decoder_output(self, speech_ids):  # (B, N+1) -> (B, N)
        """Drop the first token; from the first eos on, fill with decoder_fixing_codes[0] and end with the rest.

        ref: ClvpModelForConditionalGeneration.fix_speech_decoder_output (from Tortoise's api.py):
        every eos becomes codes[0]; on a row with an eos, position t >= min(first eos, N-3) becomes
        filler[t], where filler is codes[0] everywhere except its last len(codes)-1 entries = codes[1:].
        """
        codes = list(self.config.decoder_config.decoder_fixing_codes)
        ids = np.asarray(speech_ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"speech_ids must be a (batch, 1 + length) integer array, got {ids.dtype} {ids.shape}")
        ids = ids[:, 1:].astype(np.int64)  # (B, N)
        N = ids.shape[1]
        if N == 0:
            return ids
        is_stop = ids == self.config.decoder_config.eos_token_id  # (B, N)
        ids = np.where(is_stop, codes[0], ids)
        filler = np.full(N, codes[0], np.int64)  # (N,)
        n = min(len(codes) - 1, N)
        if n > 0:
            filler[-n:] = codes[1:][-n:]
        boundary = np.minimum(is_stop.argmax(1), max(0, N - 3))[:, None]  # (B, 1)
        replace = is_stop.any(1, keepdims=True) & (np.arange(N)[None, :] >= boundary)  # (B, N)
        return np.where(replace, filler[None, :], ids)

    def get_text_features(self, input_ids, attention_mask=None):  # (B, T) -> (B, P), not normalized
        ids, mask = self.check_text(input_ids, attention_mask)
        return self.text_encoder(ids, mask).embeds

    def get_speech_features(self, speech_ids, attention_mask=None):  # (B, N) -> (B, P), not normalized
        return self.speech_encoder_output(speech_ids, attention_mask).embeds

    def speech_encoder_output(self, speech_ids, attention_mask=None) -> EncoderOutput:
        s = self.config.speech_config
        ids = as_ids(speech_ids, "speech_ids", s.vocab_size, "speech_config.vocab_size")
        return self.speech_encoder(ids, _as_mask(attention_mask, ids, "speech_ids"))

    def similarity(self, text_out: EncoderOutput, speech_out: EncoderOutput, return_loss=False) -> ClvpOutput:
        """Normalized embeddings, scaled cosine similarities and (optionally) the contrastive loss."""
        for side, out in (("text", text_out), ("speech", speech_out)):
            if not np.isfinite(out.embeds).all():  # a score from NaN would be NaN, and rank order meaningless
                raise ValueError(f"the {side} encoder's embeddings hold NaN or infinity: the checkpoint has "
                                 "non-finite weights, or the inputs overflowed")
        t = _l2_normalize(text_out.embeds)  # (Bt, P)
        s = _l2_normalize(speech_out.embeds)  # (Bs, P)
        logits_per_text = (t @ s.T) * np.float32(np.exp(np.float32(self.logit_scale)))  # (Bt, Bs)
        return ClvpOutput(loss=contrastive_loss(logits_per_text) if return_loss else None,
                          logits_per_speech=logits_per_text.T, logits_per_text=logits_per_text,
                          text_embeds=t, speech_embeds=s, text_model_output=text_out.pooler_output,
                          speech_model_output=speech_out.pooler_output)

    # ------------------------------------------------------------------------------------------
    # The forward pass

    def forward(self, input_ids, input_features, attention_mask=None, return_loss=False) -> ClvpOutput:
        ids, mask = self.check_text(input_ids, attention_mask)
        self.check_text_length(ids, mask, 2)
        cond = self.encode_conditioning(self.check_features(input_features), ids, mask)  # (B, 1+T+2, C)
        limit = self.config.decoder_config.max_position_embeddings
        if cond.shape[1] > limit:
            raise ValueError(f"the decoder input is {cond.shape[1]} positions long (text + 3) but "
                             f"max_position_embeddings is {limit}; shorten the text")
        _, logits = self.decoder_ref.forward(cond)  # (B, 1+T+2, V)
        speech_ids = self.fix_speech_decoder_output(logits.argmax(-1))  # (B, T+2)
        speech_out = self.speech_encoder(speech_ids)
        text_out = self.text_encoder(ids, mask)
        return self.similarity(text_out, speech_out, return_loss)

    __call__ = forward

    # ------------------------------------------------------------------------------------------
    # Generation

    def generate(self, input_ids, input_features, attention_mask=None, *, preset=None, **options) -> ClvpOutput:
        """Speech-token candidates for each text (or clip) and their CLVP scores (speech_ids already fixed).

        options: pyclvp.decoding.GenerationOptions, with transformers' names and defaults: max_new_tokens=500,
        min_new_tokens=0, do_sample=False, temperature=1.0, top_k=None, top_p=None, repetition_penalty=1.0,
        num_return_sequences=1, seed=None, pad_to_max_mel_tokens=None, prompt_token_ids=(), positions="cached",
        batch_size=None, progress=False, cache_dtype="bfloat16" (transformers keeps a float32 cache: "float32").
        preset ("ultra_fast", "fast", "standard", "high_quality"): Tortoise's candidate count with tts()'s own
        arguments (temperature 0.8, top_p 0.8, repetition_penalty 2.0, 500 tokens; decoding.PRESET_SAMPLING) for
        the settings left at their defaults. See pyclvp/decoding.py for the decoding rules.

        This keeps transformers' semantics; Tortoise's tts() (and pyclvp.rank.rank) differs in four ways, each
        an option here: top_k=50 (the transformers default tts() inherits), prompt_token_ids=(1,) (the fake
        prompt's code 1 penalized from the start), positions="uncached" (token k at mel position k, kv_cache=False;
        "cached" is token k at k + 1), and pad_to_max_mel_tokens=max_new_tokens + 1 (every candidate padded with
        the stop token to max_new_tokens speech tokens before CLVP scores it).
        """
        opts = GenerationOptions.resolve(preset, **options)
        ids, mask = self.generation_text(input_ids, attention_mask)
        cond = self.encode_conditioning(self.check_features(input_features), ids, mask)  # (B, P-1, C)
        return self.candidates(cond, ids, mask, opts)[0]

    def generation_text(self, input_ids, attention_mask=None):  # (B, T) -> (B, T+1) ids, (B, T+1) mask or None
        """Checked ids with the extra eos that transformers' generate() adds (no bos here)."""
        ids, mask = self.check_text(input_ids, attention_mask)
        self.check_text_length(ids, mask, 3)
        t = self.config.text_config
        return pad_extra_bos_eos_tokens(ids, mask, add_bos_token=False, bos_token_id=t.bos_token_id,
                                        eos_token_id=t.eos_token_id)

    def candidates(self, cond, ids, mask, opts: GenerationOptions):  # -> (ClvpOutput, raw tokens (R, N))
        """Steps 2-4 of generate() from conditioning embeddings (B, P-1, C) and the generation text ids."""
        d = self.config.decoder_config
        tokens = decode(self.decoder, self.decoder_prompt(cond), opts, d.bos_token_id, d.eos_token_id)  # (R, N)
        return self.score(ids, mask, tokens, opts.pad_to_max_mel_tokens, opts.batch_size), tokens

    def score(self, ids, mask, tokens, pad_to_max_mel_tokens=None, batch_size=None) -> ClvpOutput:
        """CLVP's scores of generated tokens (R, N) (no start token) for the text ids (B, T): the start token put
        in front, padded with the stop token to pad_to_max_mel_tokens (or cropped), fixed, then embedded.
        Tortoise's tts() scores F.pad(codes, (0, max_mel_tokens - N), value=stop): pad_to_max_mel_tokens =
        max_mel_tokens + 1, the start token counted (fix_speech_decoder_output drops it)."""
        d = self.config.decoder_config
        seqs = np.concatenate([np.full((len(tokens), 1), d.bos_token_id), tokens], axis=1)  # (R, 1+N)
        if pad_to_max_mel_tokens is not None:  # ref: transformers generate: F.pad(..., value=eos), which crops
            extra = pad_to_max_mel_tokens - seqs.shape[1]
            seqs = (np.pad(seqs, ((0, 0), (0, extra)), constant_values=d.eos_token_id) if extra >= 0
                    else seqs[:, :extra])
        speech_ids = self.fix_speech_decoder_output(seqs)  # (R, N')
        size = batch_size or DEFAULT_BATCH_SIZE
        parts = [self.speech_encoder(speech_ids[rows]) for rows in chunks(len(speech_ids), size)]
        speech_out = EncoderOutput(*(np.concatenate([getattr(p, f.name) for p in parts])
                                     for f in dataclasses.fields(EncoderOutput)))
        out = self.similarity(self.text_encoder(ids, mask), speech_out)
        out.speech_ids = speech_ids
        return out


def _ops(backend):
    """get_ops(backend) for a backend's name; an Ops object (pyclvp/ops) is used as it is."""
    if isinstance(backend, str):
        return get_ops(backend)
    if not callable(getattr(backend, "linear", None)):
        raise TypeError(f"backend must be a backend's name ({', '.join(BACKEND_CHOICES)}) or an Ops object, got {backend!r}")
    return backend


def _as_mask(attention_mask, ids, name):  # -> (B, T) int64 or None, for ids (B, T)
    return None if attention_mask is None else keep_mask(attention_mask, ids.shape, name).astype(np.int64)


def _l2_normalize(x):  # (B, P) -> (B, P)
    return x / np.sqrt((x * x).sum(-1, keepdims=True))


def contrastive_loss(logits_per_text):  # (B, B) -> ()
    # ref: transformers speech_text_contrastive_loss: mean of the two cross-entropies with targets arange(B)
    if logits_per_text.shape[0] != logits_per_text.shape[1]:
        raise ValueError(f"the contrastive loss needs as many texts as clips, got {logits_per_text.shape}")
    return (_cross_entropy_diag(logits_per_text) + _cross_entropy_diag(logits_per_text.T)) / np.float32(2)


def _cross_entropy_diag(z):  # (B, B) -> (): mean over rows of -log softmax(z)[i, i]
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.diagonal(logp).mean(dtype=np.float32)
