"""The speech-token decoder (ClvpForCausalLM): a GPT-2 with learned positions and a KV cache.

Shape legend: B batch (rows), T new positions, S cache slots, C hidden, H heads, D head dim,
F inner width (n_inner or 4C), V vocab, L layers.

One forward over T new positions, x (B, T, C) already embedded:
    per layer:  x = x + attention(layer_norm_1(x))      causal, padded keys masked, no rotary
                x = x + c_proj(gelu_new(c_fc(layer_norm_2(x))))
    h = layer_norm(x)                                    the decoder's last_hidden_state
    logits = lm_head(final_norm(h))                      (B, T, V)

Three entry points over the same layers:
  forward(inputs_embeds, attention_mask, position_ids)   transformers' ClvpForCausalLM.forward without
                                                          a cache: adds position embeddings (0..T-1 by
                                                          default) and returns every position's logits.
  prefill(inputs_embeds, attention_mask, state)          the prompt, embedded by the caller with its final
                                                          positions (nothing is added here); writes cache
                                                          slots [length, length + P) (the prompt: [0, P)) and
                                                          returns the last position's logits.
  step(input_ids, position_ids, state)                   one new token per row: embeds it with its mel
                                                          position, writes K/V into slot state.length (no
                                                          concatenation), attends to slots [0, length].

Generation positions (Tortoise's UnifiedVoice.inference_speech, which transformers' decode steps
reproduce): the prompt is [conditioning vector, text embeddings with their text positions,
start-token embedding + mel position 0], and nothing more is added to it. The k-th generated token
(k = 1, 2, ...) is embedded with mel position k + 1 with the KV cache (kv_cache=True: Tortoise's own
off-by-one, transformers' rule), or k without it (kv_cache=False, api.py's default); the decode loop
(pyclvp/decoding.py, GenerationOptions.positions "cached" | "uncached") passes them to step(). Do not copy
transformers' generate() prefill, whose first call adds position 0 to every prompt entry.

The KV cache layout (L, B, H, S, D), float32 (or float16 / bfloat16 with new_state(..., cache_dtype):
rounded to nearest even when stored, widened when read), is shared with the C++ and CUDA decoders: a backend
whose Ops object has make_decoder(params, cfg) supplies its own decoder for generation, with
new_state / prefill / step and a state with select(); forward() and embed() always come from this
class (run through the backend's ops). The cache state and its checks are pyclvp/ops/state.py.

ref: transformers/models/clvp/modeling_clvp.py: ClvpForCausalLM.forward, ClvpDecoder.forward,
ClvpDecoderLayer, ClvpSelfAttention, ClvpDecoderMLP (GPT-2's, Conv1D weights in (Cin, Cout) layout).
"""
from __future__ import annotations

import numpy as np

from ..checks import check_index
from ..io.half import Bf16Array, to_dtype, to_float32
from ..ops.state import DecoderState, empty_state, prefill_inputs, step_inputs
from .attention import additive_mask, project_out, project_qkv
from .weights import strip_prefix

class Decoder:
    """Decoder(params, cfg: ClvpDecoderConfig, ops).

    params: the checkpoint's `speech_decoder_model.*` tensors with that prefix removed, i.e.
    `model.decoder.{input_embeds_layer, position_embeds_layer, layers.{i}.*, layer_norm}.*`,
    `final_norm.{weight,bias}` and `lm_head.{weight,bias}` (see pyclvp/model/weights.py for shapes).
    """

    picker = None  # generation chooses tokens on the host (pyclvp/decoding.py HostPicker)

    def __init__(self, params: dict, cfg, ops):
        if cfg.activation_function != "gelu_new":
            raise ValueError(f"decoder activation_function {cfg.activation_function!r} is not supported "
                             f"(only 'gelu_new')")
        self.cfg, self.ops = cfg, ops
        d = strip_prefix(params, "model.decoder.")
        self.wte = d["input_embeds_layer.weight"]  # (V, C)
        self.wpe = d["position_embeds_layer.weight"]  # (max_position_embeddings, C)
        self.layers = [strip_prefix(d, f"layers.{i}.") for i in range(cfg.num_hidden_layers)]
        self.attn = [strip_prefix(p, "attn.") for p in self.layers]
        self.ln_f = d["layer_norm.weight"], d["layer_norm.bias"]  # (C,), (C,)
        self.final_norm = params["final_norm.weight"], params["final_norm.bias"]  # (C,), (C,); eps 1e-5
        self.lm_head = params["lm_head.weight"], params["lm_head.bias"]  # (V, C), (V,)

    # ------------------------------------------------------------------------------------------
    # Pieces

    def new_state(self, batch: int, max_len: int, cache_dtype: str = "float32") -> DecoderState:
        return empty_state(self.cfg, batch, max_len, cache_dtype)

    def embed(self, input_ids, position_ids):  # (...), (...) int -> (..., C)
        ids, pos = np.asarray(input_ids), np.asarray(position_ids)
        check_index("input_ids", ids, self.cfg.vocab_size, "vocab_size")
        check_index("position_ids", pos, self.cfg.max_position_embeddings, "max_position_embeddings")
        return self.wte[ids].astype(np.float32) + self.wpe[pos].astype(np.float32)

    def block(self, i, x, mask, state=None, start=0):  # (B, T, C) -> (B, T, C)
        ops, cfg, p = self.ops, self.cfg, self.layers[i]
        eps, T = cfg.layer_norm_epsilon, x.shape[1]
        h = ops.layer_norm(x, p["input_layernorm.weight"], p["input_layernorm.bias"], eps)
        q, k, v = project_qkv(h, self.attn[i], cfg.num_attention_heads, ops)  # (B, H, T, D) x3
        if state is not None:  # write this chunk's K/V into its slots (rounded), attend to everything so far
            state.k[i, :, :, start:start + T] = _as_cache(k, state.k)
            state.v[i, :, :, start:start + T] = _as_cache(v, state.v)
            k, v = to_float32(state.k[i, :, :, :start + T]), to_float32(state.v[i, :, :, :start + T])  # (B, H, S, D)
        a = ops.attention(q, k, v, mask, scale=cfg.head_dim ** -0.5)  # (B, H, T, D)
        x = x + project_out(a, self.attn[i], ops)
        h = ops.layer_norm(x, p["post_attention_layernorm.weight"], p["post_attention_layernorm.bias"], eps)
        h = ops.gelu_new(ops.linear(h, p["mlp.c_fc.weight"].T, p["mlp.c_fc.bias"]))  # (B, T, F); Conv1D: w.T
        return x + ops.linear(h, p["mlp.c_proj.weight"].T, p["mlp.c_proj.bias"])  # (B, T, C)

    def layers_and_norm(self, x, mask, state=None, start=0):  # (B, T, C) -> (B, T, C)
        for i in range(self.cfg.num_hidden_layers):
            x = self.block(i, x, mask, state, start)
        return self.ops.layer_norm(x, *self.ln_f, self.cfg.layer_norm_epsilon)

    def latent(self, h):  # (..., C) -> (..., C): what lm_head reads, Tortoise's speech latent
        # ref: ClvpForCausalLM.forward: final_norm is nn.LayerNorm(C), eps 1e-5 (UnifiedVoice.final_norm)
        return self.ops.layer_norm(h, *self.final_norm, 1e-5)

    def head(self, h):  # (..., C) -> (..., V)
        # ref: ClvpForCausalLM.forward: lm_head(final_norm(hidden))
        return self.ops.linear(self.latent(h), *self.lm_head)

    # ------------------------------------------------------------------------------------------
    # Entry points

    def forward(self, inputs_embeds, attention_mask=None, position_ids=None):  # -> (B, T, C), (B, T, V)
        """transformers' ClvpForCausalLM(inputs_embeds=..., attention_mask=..., position_ids=...), no cache."""
        B, T, _ = inputs_embeds.shape
        if position_ids is None:
            position_ids = np.arange(T)[None, :]  # (1, T)
        check_index("position_ids", np.asarray(position_ids), self.cfg.max_position_embeddings,
                     "max_position_embeddings")
        x = inputs_embeds + self.wpe[position_ids].astype(np.float32)  # (B, T, C)
        h = self.layers_and_norm(x, causal_mask(attention_mask, B, T))
        return h, self.head(h)

    def speech_latents(self, prompt, speech_ids, positions: str = "training"):  # (B, P, C), (B, N) -> (B, N, C)
        """The latents of N speech tokens after a prompt, in one forward: latent k is final_norm(hidden) at the
        input that predicts token k + 1, i.e. at [start, t_1 .. t_{N-1}].

        positions="training": UnifiedVoice.forward(..., return_latent=True, clip_inputs=False), the fast path's
            latents (ref: tortoise/models/autoregressive.py): the tokens framed as [start, t_1 .. t_N, stop]
            with mel positions 0 .. N+1 (token k at k) after the prompt [conditioning vector, text]. (api_fast
            passes wav_lengths = N * 1024, so set_mel_padding changes nothing.)
        positions="cached": the positions of the KV-cached generation (start at 0, token k at k + 1), the latents
            its steps compute on the way; what tts_stream's generator yields (stream_generator.py:
            final_norm(hidden_states[-1][:, -1])). Causal attention makes one forward equal to those steps.
        """
        B, N = speech_ids.shape
        if positions == "training":
            framed = np.concatenate([np.full((B, 1), self.cfg.bos_token_id), speech_ids,
                                     np.full((B, 1), self.cfg.eos_token_id)], axis=1)  # (B, N+2)
            x = self.embed(framed, np.arange(N + 2)[None])  # (B, N+2, C)
        elif positions == "cached":
            framed = np.concatenate([np.full((B, 1), self.cfg.bos_token_id), speech_ids[:, :-1]], axis=1)  # (B, N)
            x = self.embed(framed, np.concatenate([[0], np.arange(2, N + 1)])[None])  # (B, N, C)
        else:
            raise ValueError(f"positions must be 'training' or 'cached', got {positions!r}")
        x = np.concatenate([prompt, x], axis=1)  # (B, P + N (+2), C)
        h = self.layers_and_norm(x, causal_mask(None, B, x.shape[1]))
        return self.latent(h[:, prompt.shape[1]:prompt.shape[1] + N])  # (B, N, C)

    def prefill(self, inputs_embeds, attention_mask, state: DecoderState):  # (B, P, C), (B, P) -> (B, V)
        """Run P positions (already in inputs_embeds) into cache slots [length, length + P) (a fresh state: the
        prompt, [0, P)); each attends to the slots before it. Returns the last position's logits."""
        x, keep = prefill_inputs(inputs_embeds, attention_mask, state.batch, self.cfg.hidden_size)
        B, P, _ = x.shape
        s = state.length
        if s + P > state.max_len:
            raise ValueError(f"prefill of {B} rows x {P} positions does not fit a state of {state.batch} rows "
                             f"x {state.max_len} slots after length {s}")
        state.key_mask[:, s:s + P] = True if keep is None else keep
        mask = causal_mask(state.key_mask[:, :s + P], B, P, offset=s)  # (B, 1, P, s + P)
        h = self.layers_and_norm(x, mask, state, start=s)
        state.length = s + P
        return self._head_of_last(h[:, -1], state)  # (B, V)

    def step(self, input_ids, position_ids, state: DecoderState):  # (B,), (B,) -> (B, V)
        """One token per row at cache slot state.length; returns its logits and advances the state by one."""
        s = state.length
        if s >= state.max_len:
            raise ValueError(f"the decoder state is full ({state.max_len} slots); allocate a longer one")
        x = self.embed(*step_inputs(input_ids, position_ids, state.batch))  # (B, C)
        state.key_mask[:, s] = True
        mask = additive_mask(state.key_mask[:, None, None, :s + 1])  # (B, 1, 1, S)
        h = self.layers_and_norm(x[:, None, :], mask, state, start=s)  # (B, 1, C)
        state.length = s + 1
        return self._head_of_last(h[:, 0], state)  # (B, V)

    def _head_of_last(self, h, state):  # (B, C) -> (B, V); the latents kept in the state for last_latents
        state.latents = self.latent(h)  # (B, C)
        return self.ops.linear(state.latents, *self.lm_head)

    def last_latents(self, state: DecoderState):  # -> (B, C)
        """The final-normed hidden states (what lm_head read: Tortoise's speech latents) of each row's last position
        in the last prefill or step on `state`: the latents a KV-cached generation computes on its way (see
        speech_latents(positions="cached"))."""
        if state.latents is None:
            raise ValueError("no prefill or step has run on this state yet")
        return state.latents


def _as_cache(x, cache):  # float32 x -> the cache's storage (float16: numpy's assignment rounds to nearest even)
    return to_dtype(x, "bfloat16") if isinstance(cache, Bf16Array) else x


def causal_mask(attention_mask, B, T, offset=0):  # (B, S) 0/1 or None, S = offset + T -> (B, 1, T, S) additive
    # ref: masking_utils.create_causal_mask (eager): query t (at offset + t) sees keys <= offset + t that are
    # not padding
    S = offset + T
    keep = np.tril(np.ones((T, S), bool), k=offset)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        keep = keep & np.asarray(attention_mask).astype(bool)[:, None, None, :]  # (B, 1, T, S)
    return additive_mask(np.broadcast_to(keep, (B, 1, T, S)))
