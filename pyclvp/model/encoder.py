"""ClvpEncoder: the text encoder and the speech encoder (same architecture, separate weights).

Shape legend: B batch, T time, C hidden, F intermediate, R rotary dim, P projection dim.

    ids (B, T) --token embedding--> (B, T, C)
    rms_norm: transformers' x / sqrt(mean(x^2) + eps) * g, or with config rms_norm_style="tortoise" (what
    convert-tortoise writes) x-transformers' x / max(|x| / sqrt(C), 1e-8) * g, Tortoise's own CLVP
    num_hidden_layers x:
        x = x + attention(rms_norm(x))        rotary on the first R = max(P // (2 H), 32) channels
                                              of q, k and v; padded keys masked out
                                              (inv_freq: the checkpoint's buffer if it has one)
        x = x + fc2(gated_gelu(fc1(rms_norm(x))))     fc1: C -> 2F, [h | gate] -> h * gelu(gate)
    h = layer_norm(x)                                      last_hidden_state (B, T, C)
    pooled = summary(h): mean | last | first | cls_index   pooler_output     (B, C)
    embeds = pooled @ W_projection^T                       embeds            (B, P)

Note the summaries ignore the attention mask: "mean" averages padded positions too, "last" takes
position T-1 even when it is padding (transformers' behaviour, kept for parity).

ref: transformers/models/clvp/modeling_clvp.py: ClvpEncoder.forward, ClvpEncoderLayer,
ClvpRotaryPositionalEmbedding, ClvpEncoderMLP, ClvpGatedLinearUnit, ClvpSequenceSummary.
Weights are the checkpoint's `text_encoder_model.*` or `speech_encoder_model.*` tensors, prefix removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attention import additive_mask, self_attention
from .weights import strip_prefix


TORTOISE_RMS_NORM_EPS = 1e-8  # x-transformers RMSNorm's clamp (tortoise/models/xtransformers.py)


@dataclass
class EncoderOutput:
    """transformers' ClvpEncoderOutput fields."""

    embeds: np.ndarray  # (B, P) projected summary
    last_hidden_state: np.ndarray  # (B, T, C) after the final LayerNorm
    pooler_output: np.ndarray  # (B, C) the summary


def rotary_inv_freq(R: int):  # -> (R/2,)
    # ref: ClvpRotaryPositionalEmbedding.__init__: inv_freq = 1 / 10000^(2i/R)
    return np.float32(1.0) / (np.float32(10000) ** (np.arange(0, R, 2, dtype=np.float32) / np.float32(R)))


def rotary_tables(inv_freq, T: int):  # (R/2,) -> cos, sin each (T, R)
    # ref: ClvpRotaryPositionalEmbedding.forward: angles = t * inv_freq, the R/2 angles twice
    freqs = np.arange(T, dtype=np.float32)[:, None] * inv_freq[None, :]  # (T, R/2)
    angles = np.concatenate([freqs, freqs], axis=-1)  # (T, R)
    return np.cos(angles), np.sin(angles)


def padding_mask(attention_mask, T):  # (B, S) 0/1 or None -> (B, 1, T, S) additive, or None
    # ref: masking_utils.create_bidirectional_mask: every query sees every non-padded key
    if attention_mask is None:
        return None
    keep = np.broadcast_to(attention_mask.astype(bool)[:, None, None, :], (attention_mask.shape[0], 1, T,
                                                                             attention_mask.shape[1]))
    return additive_mask(keep)


def summary(h, kind: str):  # (B, T, C) -> (B, C)
    # ref: ClvpSequenceSummary.forward (no projection or activation for the encoders' config)
    if kind == "mean":
        return h.mean(axis=1)
    if kind == "first":
        return h[:, 0]
    if kind in ("last", "cls_index"):  # cls_index without an index takes the last position
        return h[:, -1]
    raise ValueError(f"summary_type {kind!r} is not supported; use 'mean', 'last', 'first' or 'cls_index'")


class Encoder:
    """One ClvpEncoder: Encoder(params, cfg: ClvpEncoderConfig, ops)(input_ids, attention_mask) -> EncoderOutput."""

    def __init__(self, params: dict, cfg, ops):
        if cfg.hidden_act != "gelu":
            raise ValueError(f"encoder hidden_act {cfg.hidden_act!r} is not supported (only 'gelu')")
        summary(np.zeros((1, 1, 1), np.float32), cfg.summary_type)  # unknown summary types fail at load
        if cfg.use_rotary_embedding and cfg.rotary_dim > cfg.head_dim:
            raise ValueError(f"rotary dim {cfg.rotary_dim} exceeds the head dim {cfg.head_dim}")
        self.cfg, self.ops, self.p = cfg, ops, params
        self.layers = [strip_prefix(params, f"layers.{i}.") for i in range(cfg.num_hidden_layers)]
        # transformers loads the checkpoint's inv_freq buffer when there is one (it may have been rounded
        # to the checkpoint's dtype), else computes it
        stored = params.get("rotary_pos_emb.inv_freq")
        self.inv_freq = rotary_inv_freq(cfg.rotary_dim) if stored is None else stored.astype(np.float32)

    def rms_norm(self, x, g):  # (B, T, C) -> (B, T, C): the config's RMSNorm
        if self.cfg.rms_norm_style == "tortoise":  # ref: tortoise/models/xtransformers.py RMSNorm(dim, eps=1e-8)
            return self.ops.rms_norm(x, g, TORTOISE_RMS_NORM_EPS, clamp=True)
        return self.ops.rms_norm(x, g, self.cfg.layer_norm_eps)  # ref: transformers ClvpRMSNorm

    def layer(self, x, p, mask, rope):  # (B, T, C) -> (B, T, C)
        ops, H = self.ops, self.cfg.num_attention_heads
        h = self.rms_norm(x, p["input_rmsnorm.weight"])
        x = x + self_attention(h, strip_prefix(p, "self_attn."), H, ops, mask, rope)
        h = self.rms_norm(x, p["post_attention_rmsnorm.weight"])
        h = ops.gated_gelu(ops.linear(h, p["mlp.fc1.proj.weight"], p["mlp.fc1.proj.bias"]))  # (B, T, 2F) -> (B, T, F)
        return x + ops.linear(h, p["mlp.fc2.weight"], p["mlp.fc2.bias"])  # (B, T, C)

    def __call__(self, input_ids, attention_mask=None) -> EncoderOutput:  # (B, T) int, (B, T) 0/1
        cfg, ops, p = self.cfg, self.ops, self.p
        T = input_ids.shape[1]
        x = p["token_embedding.weight"][input_ids].astype(np.float32)  # (B, T, C)
        mask = padding_mask(attention_mask, T)  # (B, 1, T, T) or None
        rope = rotary_tables(self.inv_freq, T) if cfg.use_rotary_embedding else None
        for lp in self.layers:
            x = self.layer(x, lp, mask, rope)
        h = ops.layer_norm(x, p["final_layer_norm.weight"], p["final_layer_norm.bias"], cfg.layer_norm_eps)
        pooled = summary(h, cfg.summary_type)  # (B, C)
        return EncoderOutput(embeds=ops.linear(pooled, p["projection.weight"]), last_hidden_state=h,
                             pooler_output=pooled)
