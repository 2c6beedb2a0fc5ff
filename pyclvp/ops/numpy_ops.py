"""The reference ops: one short NumPy function per op. THE spec the C++ and CUDA kernels are tested against.

Shape legend (used in every numeric file of pyclvp):
    B batch, T time (query positions), S key positions (cache length), C hidden, H heads,
    D head dim, F feed-forward width, V vocab, L layers, G groups, R rotary dim
    (location_variable_conv: L kernel windows of `hop` samples each, K kernel taps)

Every op takes and returns float32 arrays (weights may be stored in another float dtype; they are
widened here). The model code (pyclvp/model) calls these through an Ops object and never knows
which backend it has; pyclvp/ops/cpu_ops.py and cuda_ops.py provide the same names.
"""
from __future__ import annotations

import numpy as np

from ..io.checkpoints import convert_weight
from ..io.q8 import Q8Matrix, dequantize_q8

f32 = np.float32


def _f32(w):  # a weight's float32 values: half-precision widened, int8 (Q8Matrix) dequantized
    if isinstance(w, Q8Matrix):
        return w.dequantize()
    return w if w.dtype == f32 else w.astype(f32)


# ----------------------------------------------------------------------------------------------
# Dense layers


def linear(x, w, b=None):  # (..., Cin), (Cout, Cin), (Cout,) -> (..., Cout)
    # ref: torch.nn.functional.linear: y = x @ w.T + b. transformers' Conv1D stores (Cin, Cout): pass w.T.
    y = x @ _f32(w).T  # (..., Cin) @ (Cin, Cout) -> (..., Cout)
    return y if b is None else y + _f32(b)


def linear_q8(x, q, scale, b=None):  # (..., Cin), (Cout, Cin) int8, (Cout, Cin/32), (Cout,) -> (..., Cout)
    # int8 weights (pyclvp/io/q8.py): the float32 weights q * scale, then linear. The kernels form the same
    # dequantized weights in registers, or scale each block's sum of x * q once: they differ from this only in
    # the order and rounding of the float32 sums.
    return linear(x, dequantize_q8(q, scale), b)


# ----------------------------------------------------------------------------------------------
# Normalizations


def layer_norm(x, g, b, eps):  # (..., C), (C,), (C,) -> (..., C)
    # ref: torch.nn.LayerNorm: biased variance, two passes (mean, then centred variance)
    mu = x.mean(-1, keepdims=True)  # (..., 1)
    xc = x - mu  # (..., C)
    var = (xc * xc).mean(-1, keepdims=True)  # (..., 1)
    return xc / np.sqrt(var + f32(eps)) * _f32(g) + _f32(b)


def rms_norm(x, g, eps, clamp=False):  # (..., C), (C,) -> (..., C)
    # clamp=False, ref: transformers ClvpRMSNorm: x * rsqrt(mean(x^2) + eps) * g (no centring, no bias)
    # clamp=True,  ref: tortoise/models/xtransformers.py RMSNorm (Tortoise's CLVP, eps 1e-8):
    #     norm = torch.norm(x, dim=-1, keepdim=True) * dim ** -0.5;  x / norm.clamp(min=eps) * g
    if clamp:
        rms = np.sqrt((x * x).sum(-1, keepdims=True)) * f32(x.shape[-1] ** -0.5)  # (..., 1)
        return x / np.maximum(rms, f32(eps)) * _f32(g)
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


def silu(x):  # (...) -> (...)
    # ref: torch.nn.functional.silu: x * sigmoid(x); sigmoid(x) = (1 + tanh(x / 2)) / 2 never overflows
    return x * (f32(0.5) + f32(0.5) * np.tanh(f32(0.5) * x))


def group_norm_silu(x, g, b, groups, eps):  # (B, C, T), (C,), (C,) -> (B, C, T)
    # ref: diffusion_decoder.ResBlock's in_layers / DiffusionTts.out: nn.Sequential(normalization(C), nn.SiLU(), ...)
    return silu(group_norm(x, g, b, groups, eps))


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
    # Edge cases, shared with the C++ and CUDA kernels (tests/test_hardening.py):
    #   every key masked: the scores are all finfo(float32).min, so the weights are uniform (the mean of v);
    #     a -inf mask entry counts as finfo(float32).min, so an all -inf row gives that mean too, not NaN
    #   no keys (S = 0): softmax over nothing is empty and the product is zeros, as torch computes it
    scores = (q * f32(scale)) @ k.transpose(0, 1, 3, 2)  # (B,H,T,D) @ (B,H,D,S) -> (B,H,T,S)
    if k.shape[-2] == 0:
        return np.zeros(np.broadcast_shapes(q.shape[:-1], v.shape[:-2] + (1,)) + v.shape[-1:], f32)  # (B,H,T,D)
    if mask is not None:
        # additive: 0 keeps, finfo(float32).min drops (not -inf: no NaN rows)
        scores = scores + np.maximum(mask, np.finfo(f32).min)
    return softmax(scores, axis=-1) @ v  # (B,H,T,S) @ (B,H,S,D) -> (B,H,T,D)


# ----------------------------------------------------------------------------------------------
# Convolutions and the vocoders' other ops (HiFi-GAN, the diffusion decoder, UnivNet), in torch's (B, C, T) layout
#
# Extra letters in this section: Cin/Cout a convolution's input/output channels, K its taps, To its output length.


def _conv_check(x, w, b, stride, padding, dilation, cin_axis):  # the arguments' checks, as the C++ bindings'
    if x.ndim != 3:
        raise ValueError(f"x must have 3 dimensions, got shape {x.shape}")
    if w.ndim != 3:
        raise ValueError(f"w must have 3 dimensions, got shape {w.shape}")
    if w.shape[cin_axis] != x.shape[1]:
        raise ValueError(f"w has shape {w.shape}, expected dimension {cin_axis} = {x.shape[1]} (x's channels)")
    if w.shape[2] < 1:
        raise ValueError(f"w has shape {w.shape}: no taps")
    cout = w.shape[1 - cin_axis]
    if b is not None and np.shape(b) != (cout,):
        raise ValueError(f"b has shape {np.shape(b)}, expected ({cout},)")
    if stride < 1 or dilation < 1 or padding < 0:
        raise ValueError(f"stride = {stride} and dilation = {dilation} must be >= 1, padding = {padding} >= 0")


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, leaky_slope=None, residual=None):
    # (B, Cin, T), (Cout, Cin, K), (Cout,) -> (B, Cout, To)
    # ref: torch.nn.functional.conv1d (groups=1, zero padding):
    #   y[:, o, t] = b[o] + sum_{c, k} w[o, c, k] * x_padded[:, c, t * stride + k * dilation]
    # Two optional fusions (the fast kernels apply them in passes they make anyway): x is read as
    # leaky_relu(x, leaky_slope) unless that is None, and residual (B, Cout, To) is added to y unless None.
    _conv_check(x, w, b, stride, padding, dilation, 1)
    K = w.shape[2]
    To = (x.shape[2] + 2 * padding - dilation * (K - 1) - 1) // stride + 1
    if To < 1:
        raise ValueError(f"output length To = {To} < 1 (T = {x.shape[2]}, K = {K}, padding = {padding}, "
                         f"dilation = {dilation}, stride = {stride})")
    if residual is not None and np.shape(residual) != (x.shape[0], w.shape[0], To):
        raise ValueError(f"residual has shape {np.shape(residual)}, expected {(x.shape[0], w.shape[0], To)}")
    w = _f32(w)
    if leaky_slope is not None:
        x = leaky_relu(x, leaky_slope)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding)))  # (B, Cin, T + 2 padding)
    y = np.zeros((x.shape[0], w.shape[0], To), f32)  # (B, Cout, To)
    for k in range(K):  # one shifted (strided) GEMM per tap
        xk = xp[:, :, k * dilation: k * dilation + stride * (To - 1) + 1: stride]  # (B, Cin, To)
        y += w[:, :, k] @ xk  # (Cout, Cin) @ (B, Cin, To) -> (B, Cout, To)
    y = y if b is None else y + _f32(b)[:, None]
    return y if residual is None else y + residual


def conv_transpose1d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, leaky_slope=None):
    # (B, Cin, T), (Cin, Cout, K) as ConvTranspose1d stores it, (Cout,) -> (B, Cout, To)
    # ref: torch.nn.functional.conv_transpose1d (groups=1), the adjoint of conv1d: every input step t
    # scatters w[:, :, k]^T x[:, :, t] to output position t * stride + k * dilation - padding;
    # output_padding lengthens the output at the end (only to pick one of the lengths a strided conv1d maps from).
    # x is read as leaky_relu(x, leaky_slope) unless that is None (as conv1d).
    _conv_check(x, w, b, stride, padding, dilation, 0)
    if not 0 <= output_padding < max(stride, dilation):
        raise ValueError(f"output_padding = {output_padding} must be >= 0 and smaller than stride ({stride}) "
                         f"or dilation ({dilation})")
    T, K = x.shape[2], w.shape[2]
    To = (T - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1
    if To < 1:
        raise ValueError(f"output length To = {To} < 1 (T = {T}, K = {K}, padding = {padding}, "
                         f"dilation = {dilation}, stride = {stride}, output_padding = {output_padding})")
    w = _f32(w)
    if leaky_slope is not None:
        x = leaky_relu(x, leaky_slope)
    full = np.zeros((x.shape[0], w.shape[1], To + 2 * padding), f32)  # (B, Cout, To + 2 padding), before cropping
    for k in range(K):
        yk = w[:, :, k].T @ x  # (Cout, Cin) @ (B, Cin, T) -> (B, Cout, T)
        full[:, :, k * dilation: k * dilation + stride * (T - 1) + 1: stride] += yk
    y = full[:, :, padding: padding + To]  # (B, Cout, To)
    return y if b is None else y + _f32(b)[:, None]


def leaky_relu(x, slope=0.01):  # (...) -> (...)
    # ref: torch.nn.functional.leaky_relu: x if x > 0 else x * slope (NaN stays NaN, -0.0 stays -0.0)
    return np.where(x > 0, x, x * f32(slope))


def interpolate_linear(x, scale_factor):  # (B, C, T) -> (B, C, To), To = floor(T * scale_factor)
    # ref: torch.nn.functional.interpolate(x, scale_factor=s, mode="linear") (align_corners=False,
    # recompute_scale_factor=None): aten/src/ATen/native/UpSample.h area_pixel_compute_scale uses 1/s,
    # the given factor (not T/To), rounded to float32, and the source coordinate is computed in float32:
    #   src = max(0, (i + 0.5) / s - 0.5),  i0 = floor(src),  i1 = min(i0 + 1, T - 1),  l = src - i0
    # except that To == T copies x (upsample_linear1d's shortcut: the formula would shift it when s != 1).
    T = x.shape[-1]
    To = int(np.floor(T * float(scale_factor)))
    if x.ndim != 3 or To < 1 or not scale_factor > 0:
        raise ValueError(f"interpolate_linear takes x (B, C, T) and scale_factor > 0 with T * scale_factor >= 1, "
                         f"got shape {x.shape} and {scale_factor}")
    if To == T:
        return x.copy()
    src = f32(1.0 / scale_factor) * (np.arange(To, dtype=f32) + f32(0.5)) - f32(0.5)  # (To,)
    src = np.maximum(src, f32(0))
    i0 = src.astype(np.int64)  # floor (src >= 0)
    i1 = np.minimum(i0 + 1, T - 1)
    l1 = src - i0.astype(f32)  # (To,) weight of x[i1]
    return x[..., i0] * (f32(1) - l1) + x[..., i1] * l1  # (B, C, To)


# ----------------------------------------------------------------------------------------------
# Location-variable convolution (UnivNet's LVC): a convolution whose kernel changes every `hop` samples


def location_variable_conv(x, kernels, bias, hop):
    # (B, Cin, T), (B, Cin, Cout, K, L), (B, Cout, L), T = L * hop -> (B, Cout, T); K odd, stride 1, dilation 1
    # ref: tortoise/models/vocoder.py, LVCBlock.location_variable_convolution (dilation=1, as LVCBlock calls it):
    #   y[:, o, l * hop + s] = bias[:, o, l] + sum_{c, k} kernels[:, c, o, k, l] * x_padded[:, c, l * hop + s + k]
    # where x_padded has (K - 1) / 2 zeros each side: window l sees the samples around its own hop, across the
    # window's edges, but always with window l's kernel. Its unfold/einsum, as one GEMM per tap and window.
    B, Cin, T = x.shape
    _, _, Cout, K, L = kernels.shape
    if kernels.shape[:2] != (B, Cin) or bias.shape != (B, Cout, L):
        raise ValueError(f"kernels {kernels.shape} and bias {bias.shape} do not fit x {x.shape}: expected "
                         f"(B, Cin, Cout, K, L) = ({B}, {Cin}, ...) and (B, Cout, L)")
    if K % 2 == 0 or T != L * hop:
        raise ValueError(f"location_variable_conv needs an odd kernel size (got K = {K}) and T = L * hop "
                         f"(got T = {T}, L = {L}, hop = {hop})")
    pad = (K - 1) // 2
    xp = np.pad(_f32(x), ((0, 0), (0, 0), (pad, pad)))  # (B, Cin, T + 2 pad)
    w = np.ascontiguousarray(_f32(kernels).transpose(0, 4, 3, 2, 1))  # (B, Cin, Cout, K, L) -> (B, L, K, Cout, Cin)
    y = np.zeros((B, L, Cout, hop), f32)  # (B, L, Cout, hop): window l's outputs
    for k in range(K):  # one batched GEMM per tap
        xk = xp[:, :, k: k + T].reshape(B, Cin, L, hop).transpose(0, 2, 1, 3)  # (B, Cin, T) -> (B, L, Cin, hop)
        y += w[:, :, k] @ xk  # (B, L, Cout, Cin) @ (B, L, Cin, hop) -> (B, L, Cout, hop)
    y += _f32(bias).transpose(0, 2, 1)[..., None]  # + (B, L, Cout, 1)
    return y.transpose(0, 2, 1, 3).reshape(B, Cout, T)  # (B, L, Cout, hop) -> (B, Cout, L, hop) -> (B, Cout, T)


# ----------------------------------------------------------------------------------------------
# The backend object


class NumpyOps:
    """The reference backend: every op is the NumPy function of the same name."""

    name = "numpy"
    linear = staticmethod(linear)
    linear_q8 = staticmethod(linear_q8)
    layer_norm = staticmethod(layer_norm)
    rms_norm = staticmethod(rms_norm)
    group_norm = staticmethod(group_norm)
    group_norm_silu = staticmethod(group_norm_silu)
    gelu_new = staticmethod(gelu_new)
    gelu = staticmethod(gelu)
    gated_gelu = staticmethod(gated_gelu)
    silu = staticmethod(silu)
    softmax = staticmethod(softmax)
    rotary = staticmethod(rotary)
    attention = staticmethod(attention)
    conv1d = staticmethod(conv1d)
    conv_transpose1d = staticmethod(conv_transpose1d)
    leaky_relu = staticmethod(leaky_relu)
    interpolate_linear = staticmethod(interpolate_linear)
    location_variable_conv = staticmethod(location_variable_conv)
    prepare_weight = staticmethod(convert_weight)

    @staticmethod
    def make_decoder(params, cfg):
        return None

    def __repr__(self):
        return f"<pyclvp ops backend={self.name!r}>"
