"""CpuDecoder: the speech decoder (ClvpForCausalLM) as one fused C++ call per prompt or token.

The same API as the NumPy decoder of pyclvp/model (the model picks this one through
CpuOps.make_decoder):

    dec = CpuDecoder(params, cfg)
    state = dec.new_state(batch, max_len)              # pyclvp.model.decoder.DecoderState: the KV cache
    logits = dec.prefill(inputs_embeds, mask, state)   # (B, P, C), (B, P) | None -> (B, V), last position
    logits = dec.step(input_ids, position_ids, state)  # (B,), (B,) -> (B, V); one new token per row
    state = state.select(rows)                         # keep / repeat / reorder rows (candidates)

The state is the model's DecoderState (k, v (L, B, H, S, D), key_mask (B, S), length), whose layout
csrc/cpu/decoder_step.h (KVCache) shares; here k and v may also be float16 or bfloat16 (uint16 bits).
The arithmetic (every layer, decoder.layer_norm, final_norm, lm_head) is csrc/cpu/decoder_step.cc;
csrc/bindings/decoder.cc checks the arguments. Python only allocates the cache and counts positions.
The weights are bound once, by reference: memory-mapped or half-precision matrices are not copied, except the
MLP's Conv1D matrices (c_fc, c_proj; stored (Cin, Cout)), which the session holds transposed, (Cout, Cin): every
linear kernel reads that layout faster (one contiguous run of weights per output, no packing per call: measured
1.3-1.6x on these shapes at 1, 16 and 44 rows). The copies are made by the first prefill or step, which reads every
weight anyway (loading stays a memory map), and the pages of a memory-mapped original are released from the
resident set once copied, so the copy does not add to the process's memory.
"""
from __future__ import annotations

import weakref

import numpy as np

from .. import _core
from ..io.half import Bf16Array, to_float32
from ..io.q8 import SCALE_SUFFIX, Q8Matrix
from ..io.safetensors import release_pages
from .state import DecoderState, empty_state, prefill_inputs, step_inputs

PREFIX = "speech_decoder_model."
CONV1D = (".mlp.c_fc.weight", ".mlp.c_proj.weight")  # transformers' Conv1D: stored (Cin, Cout)


def session_config(cfg) -> dict:
    """The decoder's sizes as the C++ and CUDA sessions take them (csrc/bindings/decoder_model.h)."""
    return dict(L=cfg.num_hidden_layers, C=cfg.hidden_size, H=cfg.num_attention_heads, F=cfg.inner_dim,
                V=cfg.vocab_size, P=cfg.max_position_embeddings, eps=float(cfg.layer_norm_epsilon))


def weights_for_core(params) -> dict:
    """Checkpoint key (relative to speech_decoder_model.) -> array as the binding takes it; an int8 matrix as its
    q (Cout, Cin) under the key and its scales under key + SCALE_SUFFIX (csrc/bindings/decoder_model.h)."""
    out = {}
    for key, a in params.items():
        key = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if a is None:
            continue
        if isinstance(a, Q8Matrix):
            out[key], out[key + SCALE_SUFFIX] = a.q, a.scale
        elif isinstance(a, Bf16Array):
            out[key] = a.view(np.ndarray)  # uint16 bits
        elif np.ndim(a) >= 2 and a.dtype in (np.float32, np.float16):
            out[key] = a
        else:
            out[key] = np.ascontiguousarray(to_float32(a))
    return out


def _as_rows(weights: dict) -> dict:
    """weights_for_core's dict with each float Conv1D matrix (Cin, Cout) replaced by its transpose's C-order copy,
    given as the (Cin, Cout) Fortran-order view of it (csrc/bindings/arrays.h conv1d_weight: the (Cout, Cin) rows)."""
    for key, a in weights.items():
        if key.endswith(CONV1D) and a.dtype != np.int8 and a.ndim == 2 and a.flags.c_contiguous:
            weights[key] = _core.transpose_weight(a).T
            release_pages(a)
    return weights


def _cache(state: DecoderState):
    """The state's k, v, key_mask, made C-contiguous and writeable in place (a state put together by hand may hold
    strided or read-only arrays; new_state and select make contiguous ones)."""
    for name in ("k", "v", "key_mask"):
        a = getattr(state, name)
        if not (a.flags.c_contiguous and a.flags.writeable):
            setattr(state, name, np.array(a, order="C", subok=True))  # subok: a Bf16Array stays one
    return state.k, state.v, state.key_mask


class CpuDecoder:
    """The fused KV-cached decoder on the C++ core; see the module docstring."""

    picker = None  # the decode loop chooses tokens on the host (pyclvp/decoding.py HostPicker)

    def __init__(self, params, cfg, cache_dtype: str = "float32"):
        cfg = getattr(cfg, "decoder_config", cfg)
        self.cfg, self.params = cfg, params  # the session holds pointers into these arrays
        self.cache_dtype = cache_dtype
        self._weights = weights_for_core(params)
        self._session = _core.DecoderSession(session_config(cfg), self._weights)  # checks every key and shape now
        self._as_stored = True  # until the first call rebinds the session to the transposed Conv1D copies
        self._last = None  # a weak reference to the state of the last prefill / step (the session holds its latents)

    def _ready(self):
        """The session, bound to the Conv1D copies (_as_rows) from the first prefill or step on."""
        if self._as_stored:
            self._session = _core.DecoderSession(session_config(self.cfg), _as_rows(self._weights))
            self._as_stored = False
        return self._session

    def new_state(self, batch: int, max_len: int, cache_dtype: str | None = None) -> DecoderState:
        """An empty cache for `batch` rows of up to `max_len` positions (prompt + new tokens)."""
        return empty_state(self.cfg, batch, max_len, cache_dtype or self.cache_dtype)

    def prefill(self, inputs_embeds, attention_mask, state: DecoderState) -> np.ndarray:
        """Runs the prompt (B, P, C) through the decoder into the cache; the logits (B, V) of position P-1."""
        x, mask = prefill_inputs(inputs_embeds, attention_mask, state.batch, self.cfg.hidden_size)  # (B, P, C), (B, P)
        logits = self._ready().prefill(x, mask, *_cache(state), state.length)  # (B, V)
        state.length += x.shape[1]
        self._last = weakref.ref(state)
        return logits

    def step(self, input_ids, position_ids, state: DecoderState) -> np.ndarray:
        """One new token per row: ids (B,), mel positions (B,) -> logits (B, V)."""
        ids, pos = step_inputs(input_ids, position_ids, state.batch)  # (B,), (B,)
        logits = self._ready().step(ids, pos, *_cache(state), state.length)  # (B, V)
        state.length += 1
        self._last = weakref.ref(state)
        return logits

    def last_latents(self, state: DecoderState) -> np.ndarray:
        """(B, C): the final-normed hidden states of each row's last position in the last prefill / step, which must
        have run on `state` (the session keeps one call's); see Decoder.last_latents."""
        if self._last is None or self._last() is not state:
            raise ValueError("the decoder's last prefill or step did not run on this state")
        return self._session.latent()
