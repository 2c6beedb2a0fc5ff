"""The reference ops: one short NumPy function per op. THE spec the C++ and CUDA kernels are tested against.

Shape legend (used in every numeric file of pyclvp):
    B batch, T time (query positions), S key positions (cache length), C hidden, H heads,
    D head dim, F feed-forward width, V vocab, L layers, G groups, R rotary dim

Every op takes and returns float32 arrays (weights may be stored in another float dtype; they are
widened here). The model code (pyclvp/model) calls these through an Ops object and never knows
which backend it has; pyclvp/ops/cpu_ops.py and cuda_ops.py provide the same names.
"""
from __future__ import annotations

import numpy as np

from ..io.checkpoints import convert_weight

f32 = np.float32


def _f32(w):
    return w if w.dtype == f32 else w.astype(f32)


# ----------------------------------------------------------------------------------------------
# Dense layers


def linear(x, w, b=None):  # (..., Cin), (Cout, Cin), (Cout,) -> (..., Cout)
    # ref: torch.nn.functional.linear: y = x @ w.T + b. transformers' Conv1D stores (Cin, Cout): pass w.T.
    y = x @ _f32(w).T  # (..., Cin) @ (Cin, Cout) -> (..., Cout)
    return y if b is None else y + _f32(b)


# ----------------------------------------------------------------------------------------------
# Normalizations


def layer_norm(x, g, b, eps):  # (..., C), (C,), (C,) -> (..., C)
    # ref: torch.nn.LayerNorm: biased variance, two passes (mean, then centred variance)
    mu = x.mean(-1, keepdims=True)  # (..., 1)
    xc = x - mu  # (..., C)
    var = (xc * xc).mean(-1, keepdims=True)  # (..., 1)
    return xc / np.sqrt(var + f32(eps)) * _f32(g) + _f32(b)


def rms_norm(x, g, eps):  # (..., C), (C,) -> (..., C)
    # ref: transformers ClvpRMSNorm: x * rsqrt(mean(x^2) + eps) * g (no centring, no bias)
    ms = (x * x).mean(-1, keepdims=True)  # (..., 1)
    return _f32(g) * (x / np.sqrt(ms + f32(eps)))


def group_norm(x, g, b, groups, eps):  # (B, C, T), (C,), (C,) -> (B, C, T)
    # ref: torch.nn.GroupNorm: normalize over (C/G channels x T) per group, then per-channel affine
    B, C, T = x.shape
    xg = x.reshape(B, groups, (C // groups) * T)  # (B, G, C/G*T)
    mu = xg.mean(-1, keepdims=True)  # (B, G, 1)
    xc = xg - mu
    var = (xc * xc).mean(-1, keepdims=True)  # (B, G, 1)
    y = (xc / np.sqrt(var + f32(eps))).reshape(B, C, T)
    return y * _f32(g)[:, None] + _f32(b)[:, None]


# ----------------------------------------------------------------------------------------------
# Activations


def gelu_new(x):  # (...) -> (...)
    # ref: transformers.activations.NewGELUActivation (GPT-2's tanh approximation)
    return f32(0.5) * x * (f32(1.0) + np.tanh(f32(np.sqrt(2.0 / np.pi)) * (x + f32(0.044715) * x ** 3)))


def erf(x):  # (...) -> (...), |error| < 1.2e-7
    # NumPy has no erf. W. H. Press et al., Numerical Recipes (3rd ed.) §6.2.2, `erfc` via Chebyshev
    # fitting (fractional error < 1.2e-7 everywhere), evaluated in float64.
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(x.dtype)


def gelu(x):  # (...) -> (...)
    # ref: torch.nn.functional.gelu (approximate='none'): x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
    return f32(0.5) * x * (f32(1.0) + erf(x * f32(1.0 / np.sqrt(2.0))))


def gated_gelu(x):  # (..., 2F) -> (..., F)
    # ref: transformers ClvpGatedLinearUnit: h, gate = x.chunk(2, -1); h * gelu(gate)
    h, gate = np.split(x, 2, axis=-1)  # (..., F), (..., F)
    return h * gelu(gate)


def softmax(x, axis=-1):  # (...) -> (...)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Attention


def rotary(x, cos, sin):  # (B, H, T, D), (T, R), (T, R) -> (B, H, T, D)
    # ref: transformers clvp apply_rotary_pos_emb on the first R channels (q, k AND v); the rest pass.
    R = cos.shape[-1]
    xr, xp = x[..., :R], x[..., R:]  # (B, H, T, R), (B, H, T, D-R)
    rotated = np.concatenate([-xr[..., R // 2:], xr[..., : R // 2]], axis=-1)  # rotate_half
    return np.concatenate([xr * cos + rotated * sin, xp], axis=-1)


def attention(q, k, v, mask=None, scale=1.0):  # (B,H,T,D), (B,H,S,D), (B,H,S,D), (B,1,T,S) -> (B,H,T,D)
    # ref: transformers ClvpSelfAttention.forward: softmax((q * scale) @ k^T + mask) @ v
    scores = (q * f32(scale)) @ k.transpose(0, 1, 3, 2)  # (B,H,T,D) @ (B,H,D,S) -> (B,H,T,S)
    if mask is not None:
        scores = scores + mask  # additive: 0 keeps, finfo(float32).min drops (not -inf: no NaN rows)
    return softmax(scores, axis=-1) @ v  # (B,H,T,S) @ (B,H,S,D) -> (B,H,T,D)


# ----------------------------------------------------------------------------------------------
# The backend object


class NumpyOps:
    """The reference backend: every op is the NumPy function of the same name."""

    name = "numpy"
    linear = staticmethod(linear)
    layer_norm = staticmethod(layer_norm)
    rms_norm = staticmethod(rms_norm)
    group_norm = staticmethod(group_norm)
    gelu_new = staticmethod(gelu_new)
    gelu = staticmethod(gelu)
    gated_gelu = staticmethod(gated_gelu)
    softmax = staticmethod(softmax)
    rotary = staticmethod(rotary)
    attention = staticmethod(attention)
    prepare_weight = staticmethod(convert_weight)

    @staticmethod
    def make_decoder(params, cfg):
        return None

    def __repr__(self):
        return f"<pyclvp ops backend={self.name!r}>"
