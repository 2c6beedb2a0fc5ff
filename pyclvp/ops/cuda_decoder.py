"""CudaDecoder: the speech decoder (ClvpForCausalLM) on the GPU, with its KV cache on the device.

The API of the NumPy decoder (pyclvp/model/decoder.py) and of CpuDecoder; the model picks it
through CudaOps.make_decoder:

    dec = CudaDecoder(params, cfg)                     weights uploaded once, float16/bfloat16 as stored
    state = dec.new_state(batch, max_len)              a CudaDecoderState: the cache, on the device
    logits = dec.prefill(inputs_embeds, mask, state)   (B, P, C), (B, P) | None -> (B, V), last position
    logits = dec.step(input_ids, position_ids, state)  (B,), (B,) -> (B, V): ids and positions go to the
                                                       device, the logits come back, nothing else crosses
    state = state.select(rows)                         keep / repeat / reorder rows: a gather on the device
    dec.picker                                         DevicePicker: generate() chooses the tokens on the
                                                       device (None with pick_on_device=False: on the host)

The arithmetic is csrc/cuda/decoder_step.cu: per layer a handful of kernels (the layer norms fused
into the products for up to 4 rows), the whole step captured once per state in a CUDA graph and
replayed; PYCLVP_CUDA_GRAPH=0 (or use_graph=False) launches the same kernels one by one instead. With
PYCLVP_CUDA_PDL=1, on compute capability >= 9.0, each kernel may start while the one before finishes
(programmatic dependent launch: a product's weights are fetched into L2 meanwhile); measured slower on
an H200, so off by default.
During generate() the next tokens are chosen on the device (csrc/cuda/sampling.cu: the repetition
penalty, temperature, top-k, top-p and the draw of pyclvp/decoding.py), so a step returns B ids
instead of B x V logits and the host does no per-token work; PYCLVP_CUDA_PICK=0 (or
pick_on_device=False) chooses on the host instead, from the logits.
csrc/bindings/cuda_decoder.cc checks every argument. The cache layout is DecoderState's, (L, B, H, S, D) k
and v in float32 / float16 / bfloat16 and a (B, S) key mask; state.k, .v and .key_mask download copies.
"""
from __future__ import annotations

import os

import numpy as np

from .. import _core
from ..checks import check_count
from .cpu_decoder import session_config, weights_for_core
from .state import check_cache_dtype, prefill_inputs, select_rows, step_inputs


class CudaDecoderState:
    """A batch's KV cache on the device, with DecoderState's API (batch, max_len, length, select, k, v, key_mask)."""

    def __init__(self, session, handle):
        self._session, self._handle = session, handle

    @property
    def batch(self) -> int:
        return self._handle.batch

    @property
    def max_len(self) -> int:
        return self._handle.max_len

    @property
    def length(self) -> int:
        return self._handle.length

    @property
    def cache_dtype(self) -> str:
        return self._handle.cache_dtype

    @property
    def k(self) -> np.ndarray:  # (L, B, H, S, D), a host copy (bfloat16 as uint16 bits)
        return self._session.download(self._handle)[0]

    @property
    def v(self) -> np.ndarray:  # (L, B, H, S, D), a host copy
        return self._session.download(self._handle)[1]

    @property
    def key_mask(self) -> np.ndarray:  # (B, S) bool, a host copy
        return self._session.download(self._handle)[2]

    def select(self, rows) -> "CudaDecoderState":
        """A new state holding rows `rows` of this one, in that order (repeat, reorder, drop)."""
        return CudaDecoderState(self._session, self._session.select(self._handle, select_rows(rows, self.batch)))


class CudaDecoder:
    """The fused KV-cached decoder on the GPU; see the module docstring."""

    def __init__(self, params, cfg, cache_dtype: str = "float32", use_graph: bool | None = None,
                 pick_on_device: bool | None = None):
        cfg = getattr(cfg, "decoder_config", cfg)
        check_cache_dtype(cache_dtype)
        if use_graph is None:
            use_graph = os.environ.get("PYCLVP_CUDA_GRAPH", "1") != "0"
        if pick_on_device is None:
            pick_on_device = os.environ.get("PYCLVP_CUDA_PICK", "1") != "0"
        self.picker = DevicePicker if pick_on_device else None
        self.cfg, self.params, self.cache_dtype = cfg, params, cache_dtype
        self._session = _core.cuda.DecoderSession(session_config(cfg), weights_for_core(params), bool(use_graph))

    def new_state(self, batch: int, max_len: int, cache_dtype: str | None = None) -> CudaDecoderState:
        """An empty cache for `batch` rows of up to `max_len` positions (prompt + new tokens)."""
        cache_dtype = check_cache_dtype(cache_dtype or self.cache_dtype)
        batch, max_len = check_count("new_state's batch", batch), check_count("new_state's max_len", max_len)
        return CudaDecoderState(self._session, self._session.new_state(batch, max_len, cache_dtype))

    def prefill(self, inputs_embeds, attention_mask, state: CudaDecoderState) -> np.ndarray:
        """Runs the prompt (B, P, C) through the decoder into the cache; the logits (B, V) of position P-1."""
        x, mask = prefill_inputs(inputs_embeds, attention_mask, state.batch, self.cfg.hidden_size)  # (B, P, C), (B, P)
        return self._session.prefill(state._handle, x, mask)  # (B, V)

    def step(self, input_ids, position_ids, state: CudaDecoderState) -> np.ndarray:
        """One new token per row: ids (B,), mel positions (B,) -> logits (B, V)."""
        ids, pos = step_inputs(input_ids, position_ids, state.batch)  # (B,), (B,)
        return self._session.step(state._handle, ids, pos)  # (B, V)

    def last_latents(self, state: CudaDecoderState) -> np.ndarray:
        """(B, C): the final-normed hidden states of each row's last position in the state's last prefill / step
        (step_pick's included); see Decoder.last_latents."""
        return self._session.latent(state._handle)


class DevicePicker:
    """generate()'s picker seam (pyclvp/decoding.py HostPicker) with the choice made on the device.

    Each row's seen tokens live in its CudaDecoderState (and follow it through select); feed() only
    records the tokens, and next() runs the decoder step and the choice in one device round trip:
    B ids and positions (and B uniforms) go up, B tokens come back.
    """

    def __init__(self, decoder: CudaDecoder, opts, bos: int, eos: int, rows: int):
        self._session, self.opts, self.bos = decoder._session, opts, bos
        # the processors generate.process_logits applies: eos suppressed before min_new_tokens, then not
        after = dict(penalty=float(opts.repetition_penalty), suppress=-1, do_sample=bool(opts.do_sample),
                     temperature=float(opts.temperature), top_k=int(opts.top_k or 0), top_p=opts.top_p)
        self._before, self._after = dict(after, suppress=eos), after
        self._fed = None

    def _options(self, k: int) -> dict:  # for token k
        return self._before if k < self.opts.min_new_tokens else self._after

    def first(self, logits, state: CudaDecoderState, u):  # (rows, V) -> (rows,)
        return self._session.pick_first(state._handle, np.ascontiguousarray(logits, dtype=np.float32), self.bos,
                                        self._options(0), u)

    def feed(self, ids, positions, state: CudaDecoderState):
        self._fed = (np.ascontiguousarray(ids, dtype=np.int64), np.ascontiguousarray(positions, dtype=np.int64))

    def next(self, state: CudaDecoderState, k: int, u):  # -> (rows,)
        ids, positions = self._fed
        return self._session.step_pick(state._handle, ids, positions, self._options(k), u)

    def select(self, state: CudaDecoderState, keep) -> CudaDecoderState:
        return state.select(keep)
