"""ClvpSelfAttention, shared by the conditioning encoder, the decoder and the two encoders.

Shape legend: B batch, T query positions, S key positions, C hidden, H heads, D = C / H head dim,
R rotary dim.

One attention layer:
    q, k, v = x Wq + bq, x Wk + bk, x Wv + bv        (biases only when use_attention_bias)
    split into H heads of D channels
    [encoders only] rotary position embedding on the first R channels of q, k AND v
    a = softmax(q k^T / sqrt(D) + mask) v            (mask additive: 0 keeps, finfo(float32).min drops)
    y = merge heads(a) Wo + bo                       (out_proj always has a bias)

ref: transformers/models/clvp/modeling_clvp.py, ClvpSelfAttention.forward. Weights are torch Linear
(Cout, Cin) matrices under the keys q_proj/k_proj/v_proj/out_proj.{weight,bias}.
"""
from __future__ import annotations

import numpy as np

MASK_MIN = np.finfo(np.float32).min  # what transformers' masks put on dropped keys


def split_heads(x, H):  # (B, T, C) -> (B, H, T, D)
    B, T, C = x.shape
    return x.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)


def merge_heads(x):  # (B, H, T, D) -> (B, T, C)
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def project_qkv(x, p, H, ops):  # (B, T, C) -> q, k, v each (B, H, T, D)
    return tuple(split_heads(ops.linear(x, p[f"{n}.weight"], p.get(f"{n}.bias")), H)
                 for n in ("q_proj", "k_proj", "v_proj"))


def project_out(a, p, ops):  # (B, H, T, D) -> (B, T, C)
    return ops.linear(merge_heads(a), p["out_proj.weight"], p["out_proj.bias"])


def additive_mask(keep):  # (B, 1, T, S) bool -> (B, 1, T, S) float32: 0 where kept, MASK_MIN where dropped
    # ref: transformers masking_utils (eager): torch.where(mask, 0, torch.finfo(dtype).min)
    return np.where(keep, np.float32(0), MASK_MIN).astype(np.float32)


def self_attention(x, p, H, ops, mask=None, rope=None):  # (B, T, C) -> (B, T, C)
    """One ClvpSelfAttention. mask: additive (B, 1, T, T) or None; rope: (cos, sin) each (T, R) or None."""
    q, k, v = project_qkv(x, p, H, ops)  # (B, H, T, D) x3
    if rope is not None:
        q, k, v = (ops.rotary(t, *rope) for t in (q, k, v))  # yes, v too (as transformers does)
    a = ops.attention(q, k, v, mask, scale=q.shape[-1] ** -0.5)  # (B, H, T, D)
    return project_out(a, p, ops)  # (B, T, C)
