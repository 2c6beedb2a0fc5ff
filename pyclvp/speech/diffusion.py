"""DiffusionTts: Tortoise's diffusion decoder, the quality path's model (latents -> a 100-bin mel, denoised).

Shape legend: B batch, C model channels (1024), T mel frames (24 kHz / 256), S latent frames (22.05 kHz / 1024),
M mel bins (100), H heads (16), D = C / H head dim, G groups, L layers.

Every activation is channels-first (B, C, T), as torch's Conv1d has it. The model has three entry points,
each run once per call of the sampler (pyclvp/speech/sampler.py) that drives it:

get_conditioning(cond_mels)  the voice: (B, N, M, Tc) univnet mels of N clips -> (B, 2C)
  1. per clip j: contextual_embedder = Conv1d(M -> C, k3, stride 2), Conv1d(C -> 2C, k3, stride 2) (no
     activation between), then 5 AttentionBlocks at width 2C                     (B, 2C, ceil(ceil(Tc/2)/2))
  2. concatenate the clips along time, mean over time                             (B, 2C)

timestep_independent(latents, conditioning_latent, T, return_code_pred)  once per generation
  1. latents (B, S, C_lat) -> channels-first; latent_conditioner = Conv1d(C_lat -> C, k3) then 4
     AttentionBlocks                                                             (B, C, S)
  2. code_emb = GroupNorm(code_emb) * (1 + scale) + shift, where (scale, shift) = chunk(conditioning_latent, 2)
  3. nearest-neighbour resampling to T frames (torch's F.interpolate(mode='nearest'): src = floor(i * S / T)
     in float32)                                                                 (B, C, T)
  4. return_code_pred: also mel_head(code_emb) (Conv1d C -> M, k3)              (B, M, T)
  Tortoise's 4th argument is return_code_pred: conditioning-free guidance happens in forward, not here.

forward(x, timesteps, precomputed_aligned_embeddings, conditioning_free)  twice per sampler step
  1. code_emb = the precomputed embeddings, or (conditioning_free) unconditioned_embedding (1, C, 1)
     repeated over batch and time                                                (B, C, T)
  2. time_emb = Linear, SiLU, Linear of the sinusoidal embedding of t (cos half first)  (B, C)
  3. code_emb = 3 DiffusionLayers (conditioning_timestep_integrator) on (code_emb, time_emb)
  4. x = Conv1d(M -> C, k3)(x), concatenated with code_emb on channels, Conv1d(2C -> C, k1)   (B, C, T)
  5. L DiffusionLayers, then 3 ResBlocks, each with time_emb                     (B, C, T)
  6. out = GroupNorm, SiLU, Conv1d(C -> 2M, k3): the noise estimate eps and the variance fraction  (B, 2M, T)

The blocks (ref: tortoise/models/arch_util.py, tortoise/models/diffusion_decoder.py):
  AttentionBlock(x) = x + proj_out(attn(qkv(GroupNorm(x))))
      qkv: Conv1d k1 to 3C, laid out (H, [q, k, v], D) per channel (QKVAttentionLegacy splits heads first);
      attn: softmax(q k^T / sqrt(D) + bias) v, with the relative position bias of T5 (RelativePositionBias,
      non-causal, 32 buckets, max distance 64): bias[h, i, j] = table[bucket(i - j), h] * sqrt(D)
  ResBlock(x, emb) (use_scale_shift_norm=True, the diffusion decoder's "efficient" variant)
      h = Conv1d_k1(SiLU(GroupNorm(x)));  (scale, shift) = chunk(Linear(SiLU(emb)), 2)
      h = Conv1d_k3(SiLU(GroupNorm(h) * (1 + scale) + shift));  return x + h
  DiffusionLayer(x, emb) = AttentionBlock(ResBlock(x, emb))
  GroupNorm: 32 groups (Tortoise's `normalization`: 8 or 16 for <= 16 or <= 64 channels, halved until it
  divides), eps 1e-5.

Weights: DiffusionTts's state dict under its own names (diffusion_spec lists the tensors used; the token path,
code_embedding and code_converter, is never run by Tortoise's api and is not kept).
"""
from __future__ import annotations

import functools
import math
import typing
from dataclasses import dataclass, field

import numpy as np

from ..config import ConfigError, _check_positive, _Config, _key
from ..model.conditioning import groupnorm_groups

__all__ = ["DiffusionConfig", "DiffusionTts", "diffusion_spec", "random_weights", "timestep_embedding",
           "relative_position_bucket", "interpolate_nearest"]

f32 = np.float32
GN_EPS = 1e-5           # nn.GroupNorm's default
NUM_BUCKETS = 32        # AttentionBlock's RelativePositionBias(num_buckets=32, max_distance=64, causal=False)
MAX_DISTANCE = 64
CONTEXT_BLOCKS = 5      # AttentionBlocks in contextual_embedder (at width 2C)
LATENT_BLOCKS = 4       # ... in latent_conditioner
INTEGRATOR_LAYERS = 3   # DiffusionLayers in conditioning_timestep_integrator
TAIL_RESBLOCKS = 3      # ResBlocks after the DiffusionLayers in `layers`


@dataclass
class DiffusionConfig(_Config):
    """DiffusionTts's constructor arguments; the defaults are tortoise/api.py's (dropout, layer_drop and
    unconditioned_percentage only matter in training, use_fp16 is False there: none is kept)."""

    model_type: typing.ClassVar[str] = "diffusion_tts"
    model_channels: int = 1024
    num_layers: int = 10
    in_channels: int = 100
    in_latent_channels: int = 1024
    in_tokens: int = 8193
    out_channels: int = 200
    num_heads: int = 16
    extra: dict = field(default_factory=dict)

    def _check_values(self) -> None:
        _check_positive(self, "model_channels", "num_layers", "in_channels", "in_latent_channels", "in_tokens",
                        "out_channels", "num_heads")
        if self.model_channels % self.num_heads:
            raise ConfigError(f"{_key(self, 'model_channels')} ({self.model_channels}) must be divisible by "
                              f"{_key(self, 'num_heads')} ({self.num_heads})")
        if self.out_channels != 2 * self.in_channels:
            raise ConfigError(f"{_key(self, 'out_channels')} ({self.out_channels}) must be 2 * in_channels "
                              f"({self.in_channels}): the noise estimate and the learned variance")


# ----------------------------------------------------------------------------------------------
# The spec: every tensor the model uses -> its shape


def _attention_spec(prefix: str, C: int, H: int) -> dict:  # an AttentionBlock at width C
    return {f"{prefix}norm.weight": (C,), f"{prefix}norm.bias": (C,),
            f"{prefix}qkv.weight": (3 * C, C, 1), f"{prefix}qkv.bias": (3 * C,),          # rows (H, [q, k, v], D)
            f"{prefix}proj_out.weight": (C, C, 1), f"{prefix}proj_out.bias": (C,),
            f"{prefix}relative_pos_embeddings.relative_attention_bias.weight": (NUM_BUCKETS, H)}


def _resblock_spec(prefix: str, C: int) -> dict:  # a ResBlock(C, C, use_scale_shift_norm=True)
    return {f"{prefix}in_layers.0.weight": (C,), f"{prefix}in_layers.0.bias": (C,),      # GroupNorm
            f"{prefix}in_layers.2.weight": (C, C, 1), f"{prefix}in_layers.2.bias": (C,),  # Conv1d k1
            f"{prefix}emb_layers.1.weight": (2 * C, C), f"{prefix}emb_layers.1.bias": (2 * C,),  # Linear -> scale, shift
            f"{prefix}out_layers.0.weight": (C,), f"{prefix}out_layers.0.bias": (C,),    # GroupNorm
            f"{prefix}out_layers.3.weight": (C, C, 3), f"{prefix}out_layers.3.bias": (C,)}  # Conv1d k3


def _layer_spec(prefix: str, C: int, H: int) -> dict:  # a DiffusionLayer
    return {**_resblock_spec(prefix + "resblk.", C), **_attention_spec(prefix + "attn.", C, H)}


def diffusion_spec(cfg: DiffusionConfig) -> dict[str, tuple]:
    """Every tensor DiffusionTts uses on the latent path (Tortoise's api) -> its shape, under the state dict's names."""
    C, H, M = cfg.model_channels, cfg.num_heads, cfg.in_channels
    spec = {"inp_block.weight": (C, M, 3), "inp_block.bias": (C,),
            "time_embed.0.weight": (C, C), "time_embed.0.bias": (C,),
            "time_embed.2.weight": (C, C), "time_embed.2.bias": (C,),
            "latent_conditioner.0.weight": (C, cfg.in_latent_channels, 3), "latent_conditioner.0.bias": (C,)}
    for i in range(1, 1 + LATENT_BLOCKS):
        spec.update(_attention_spec(f"latent_conditioner.{i}.", C, H))
    spec.update({"code_norm.weight": (C,), "code_norm.bias": (C,),
                 "contextual_embedder.0.weight": (C, M, 3), "contextual_embedder.0.bias": (C,),
                 "contextual_embedder.1.weight": (2 * C, C, 3), "contextual_embedder.1.bias": (2 * C,)})
    for i in range(2, 2 + CONTEXT_BLOCKS):
        spec.update(_attention_spec(f"contextual_embedder.{i}.", 2 * C, H))
    spec["unconditioned_embedding"] = (1, C, 1)
    for i in range(INTEGRATOR_LAYERS):
        spec.update(_layer_spec(f"conditioning_timestep_integrator.{i}.", C, H))
    spec.update({"integrating_conv.weight": (C, 2 * C, 1), "integrating_conv.bias": (C,),
                 "mel_head.weight": (M, C, 3), "mel_head.bias": (M,)})
    for i in range(cfg.num_layers):
        spec.update(_layer_spec(f"layers.{i}.", C, H))
    for i in range(cfg.num_layers, cfg.num_layers + TAIL_RESBLOCKS):
        spec.update(_resblock_spec(f"layers.{i}.", C))
    spec.update({"out.0.weight": (C,), "out.0.bias": (C,),
                 "out.2.weight": (cfg.out_channels, C, 3), "out.2.bias": (cfg.out_channels,)})
    return spec


def _is_norm(name: str, shape: tuple) -> bool:  # a GroupNorm's affine parameters
    return len(shape) == 1 and any(f".{n}." in f".{name}" for n in ("norm", "code_norm", "in_layers.0",
                                                                     "out_layers.0", "out.0"))


def random_weights(cfg: DiffusionConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random weights for diffusion_spec(cfg) (the fixtures' and the demo's): norms' weights in 1 +- 0.1,
    their biases in +-0.1, matrices uniform with std 1 / sqrt(fan_in), other biases in +-0.05, the position
    tables in +-0.1, unconditioned_embedding in +-1. Drawn with uniform doubles from PCG64 (stable across
    NumPy versions), one array per tensor in spec order, then rounded to float32."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in diffusion_spec(cfg).items():
        u = rng.random(shape) - 0.5  # uniform in [-0.5, 0.5)
        if _is_norm(name, shape):
            w = (1.0 + 0.2 * u) if name.endswith("weight") else 0.2 * u
        elif name.endswith("relative_attention_bias.weight"):
            w = 0.2 * u
        elif name == "unconditioned_embedding":
            w = 2.0 * u
        elif len(shape) >= 2:
            w = u * (2 * math.sqrt(3.0) / math.sqrt(float(np.prod(shape[1:]))))  # std 1/sqrt(fan_in)
        else:
            w = 0.1 * u
        out[name] = w.astype(f32)
    return out


# ----------------------------------------------------------------------------------------------
# Position helpers (index arithmetic, no weights)


def timestep_embedding(timesteps, dim: int, max_period: int = 10000):  # (B,) -> (B, dim) float32
    # ref: diffusion_decoder.timestep_embedding, in float32 as torch computes it:
    #   freqs = exp(-log(max_period) * arange(half) / half);  [cos(t freqs), sin(t freqs)] (+ a zero column if odd)
    half = dim // 2
    freqs = np.exp(f32(-math.log(max_period)) * np.arange(half, dtype=f32) / f32(half))  # (half,)
    args = np.asarray(timesteps).astype(f32)[:, None] * freqs[None]  # (B, half)
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=-1)  # (B, 2 half)
    if dim % 2:
        emb = np.concatenate([emb, np.zeros_like(emb[:, :1])], axis=-1)  # (B, dim)
    return emb


def relative_position_bucket(relative_position, num_buckets: int = NUM_BUCKETS, max_distance: int = MAX_DISTANCE):
    # (...) int, k - q -> (...) int64 in [0, num_buckets)
    # ref: xtransformers.RelativePositionBias._relative_position_bucket (causal=False): half the buckets for each
    # sign of q - k; distances below a quarter of the buckets are exact, the rest log-spaced up to max_distance.
    n = -np.asarray(relative_position, dtype=np.int64)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    with np.errstate(divide="ignore"):  # log(0) where n == 0: not selected below
        large = np.log(n.astype(f32) / f32(max_exact)) / f32(math.log(max_distance / max_exact)) * f32(half - max_exact)
    large = max_exact + np.where(np.isfinite(large), large, 0).astype(np.int64)  # .long(): toward zero
    large = np.minimum(large, half - 1)
    return ret + np.where(n < max_exact, n, large)


@functools.lru_cache(maxsize=8)
def _offset_buckets(T: int):  # T -> (2T-1,) int64, read-only: bucket(r) for r = k_pos - q_pos in [-(T-1), T-1]
    buckets = relative_position_bucket(np.arange(-(T - 1), T))
    buckets.setflags(write=False)
    return buckets


def position_bias(table, T: int, scale: float):  # (NUM_BUCKETS, H), T -> (1, H, T, T) additive attention bias
    # ref: RelativePositionBias.forward: qk_dots + rearrange(table[bucket(k_pos - q_pos)], 'i j h -> () h i j') * scale
    # bias[h, q, k] depends on k - q only: row q is the window u[h, T-1-q : 2T-1-q] of one vector per head,
    # u[h, i] = table[bucket(i - (T-1)), h] * scale. A read-only view of those windows (rows contiguous, q stepping
    # back one element), never materialized: attention reads it by its strides.
    u = np.take(np.asarray(table, f32).T * f32(scale), _offset_buckets(T), axis=1)  # (H, 2T-1)
    H = u.shape[0]
    bias = np.lib.stride_tricks.as_strided(u[:, T - 1:], shape=(1, H, T, T),
                                           strides=(0, u.strides[0], -u.strides[1], u.strides[1]), writeable=False)
    return bias  # (1, H, T, T)


def interpolate_nearest(x, size: int):  # (B, C, S) -> (B, C, size)
    # ref: F.interpolate(x, size=size, mode='nearest'): src = min(floor(i * (S / size)), S - 1), scale in float32
    # (aten/src/ATen/native/UpSample.h nearest_idx)
    S = x.shape[-1]
    if size == S:
        return x.copy()
    src = np.floor(np.arange(size, dtype=f32) * f32(S / size)).astype(np.int64)  # (size,)
    return x[..., np.minimum(src, S - 1)]


# ----------------------------------------------------------------------------------------------
# The model


class DiffusionTts:
    """DiffusionTts(weights, cfg, ops): weights by diffusion_spec's names (float32 arrays)."""

    def __init__(self, weights: dict, cfg: DiffusionConfig, ops):
        self.w, self.cfg, self.ops = weights, cfg, ops

    # -- blocks -----------------------------------------------------------------------------------

    def group_norm(self, x, name, silu=False):  # (B, C, T) -> (B, C, T); silu: GroupNorm -> SiLU, as one op
        C = x.shape[1]
        op = self.ops.group_norm_silu if silu else self.ops.group_norm
        return op(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], groupnorm_groups(C), GN_EPS)

    def conv(self, x, name, stride=1, residual=None):  # (B, Cin, T) -> (B, Cout, T'): a "same" conv of odd kernel
        # residual: (B, Cout, T') added to the output (a block's skip, in the conv's own pass)
        w = self.w[f"{name}.weight"]  # (Cout, Cin, K)
        return self.ops.conv1d(x, w, self.w[f"{name}.bias"], stride=stride, padding=(w.shape[2] - 1) // 2,
                               residual=residual)

    def attention_block(self, x, prefix):  # (B, C, T) -> (B, C, T)
        # ref: arch_util.AttentionBlock.forward + QKVAttentionLegacy.forward (no mask)
        B, C, T = x.shape
        H = self.cfg.num_heads
        D = C // H
        # qkv, a K = 1 conv, as a linear over the channels of each time: its (B, T, 3C) output holds every head's
        # q, k and v rows contiguous, which attention reads in place (the conv's (B, 3C, T) needed three transposes)
        h = np.ascontiguousarray(self.group_norm(x, f"{prefix}norm").transpose(0, 2, 1))  # (B, T, C)
        qkv = self.ops.linear(h, self.w[f"{prefix}qkv.weight"][:, :, 0], self.w[f"{prefix}qkv.bias"])  # (B, T, 3C)
        qkv = qkv.reshape(B, T, H, 3, D).transpose(3, 0, 2, 1, 4)  # channel h*3D + i*D + d -> (3, B, H, T, D) views
        table = self.w[f"{prefix}relative_pos_embeddings.relative_attention_bias.weight"]  # (NUM_BUCKETS, H)
        bias = position_bias(table, T, math.sqrt(D))  # (1, H, T, T)
        a = self.ops.attention(qkv[0], qkv[1], qkv[2], bias, scale=D ** -0.5)  # (B, H, T, D)
        a = np.ascontiguousarray(a.transpose(0, 1, 3, 2)).reshape(B, C, T)  # (B, H, D, T) -> (B, C, T)
        return self.conv(a, f"{prefix}proj_out", residual=x)  # x + proj_out(a)

    def resblock(self, x, emb, prefix):  # (B, C, T), (B, C) -> (B, C, T)
        # ref: diffusion_decoder.ResBlock.forward with use_scale_shift_norm=True, efficient_config=True
        ops = self.ops
        h = self.conv(self.group_norm(x, f"{prefix}in_layers.0", silu=True), f"{prefix}in_layers.2")  # (B, C, T)
        e = ops.linear(ops.silu(emb), self.w[f"{prefix}emb_layers.1.weight"], self.w[f"{prefix}emb_layers.1.bias"])  # (B, 2C)
        scale, shift = np.split(e[:, :, None], 2, axis=1)  # (B, C, 1) each
        h = self.group_norm(h, f"{prefix}out_layers.0")  # (B, C, T), a fresh array: scaled and shifted in place
        h *= 1 + scale
        h += shift
        return self.conv(ops.silu(h), f"{prefix}out_layers.3", residual=x)  # x + out_layers(h)

    def diffusion_layer(self, x, emb, prefix):  # (B, C, T), (B, C) -> (B, C, T)
        return self.attention_block(self.resblock(x, emb, f"{prefix}resblk."), f"{prefix}attn.")

    # -- entry points -----------------------------------------------------------------------------

    def get_conditioning(self, cond_mels):  # (B, N, M, Tc) or (B, M, Tc) -> (B, 2C) float32
        """The voice's conditioning latent from univnet mels of its clips (DiffusionTts.get_conditioning)."""
        x = np.asarray(cond_mels, f32)
        if x.ndim == 3:
            x = x[:, None]  # (B, 1, M, Tc)
        conds = []
        for j in range(x.shape[1]):
            h = self.conv(np.ascontiguousarray(x[:, j]), "contextual_embedder.0", stride=2)  # (B, C, ceil(Tc/2))
            h = self.conv(h, "contextual_embedder.1", stride=2)  # (B, 2C, Tc')
            for i in range(2, 2 + CONTEXT_BLOCKS):
                h = self.attention_block(h, f"contextual_embedder.{i}.")  # (B, 2C, Tc')
            conds.append(h)
        return np.concatenate(conds, axis=-1).mean(axis=-1)  # (B, 2C, N Tc') -> (B, 2C)

    def timestep_independent(self, latents, conditioning_latent, expected_seq_len: int, return_code_pred=False):
        # (B, S, C_lat), (B, 2C), T -> (B, C, T) [, (B, M, T)]
        """The aligned embeddings every sampler step reuses (DiffusionTts.timestep_independent, latent input)."""
        x = np.ascontiguousarray(np.swapaxes(np.asarray(latents, f32), 1, 2))  # (B, C_lat, S)
        cond = np.asarray(conditioning_latent, f32)
        cond_scale, cond_shift = np.split(cond[:, :, None], 2, axis=1)  # (B, C, 1) each
        h = self.conv(x, "latent_conditioner.0")  # (B, C, S)
        for i in range(1, 1 + LATENT_BLOCKS):
            h = self.attention_block(h, f"latent_conditioner.{i}.")  # (B, C, S)
        h = self.group_norm(h, "code_norm") * (1 + cond_scale) + cond_shift  # (B, C, S)
        code_emb = interpolate_nearest(h, int(expected_seq_len))  # (B, C, T)
        if not return_code_pred:
            return code_emb
        return code_emb, self.conv(code_emb, "mel_head")  # (B, C, T), (B, M, T)

    def forward(self, x, timesteps, precomputed_aligned_embeddings=None, conditioning_free=False):
        # (B, M, T), (B,) -> (B, 2M, T)
        """One denoising pass: eps and the variance fraction for x at (original-schedule) timesteps."""
        x = np.asarray(x, f32)
        B, _, T = x.shape
        if conditioning_free:
            code_emb = self._unconditioned(B, T)  # (B, C, T)
        else:
            if precomputed_aligned_embeddings is None:
                raise ValueError("forward needs precomputed_aligned_embeddings (from timestep_independent) "
                                 "unless conditioning_free")
            code_emb = np.asarray(precomputed_aligned_embeddings, f32)  # (B, C, T)
        return self._forward(x, timesteps, code_emb)

    __call__ = forward

    def forward_guided(self, x, timesteps, precomputed_aligned_embeddings):
        # (B, M, T), (B,), (B, C, T) -> (B, 2M, T), (B, 2M, T)
        """The conditioned and the conditioning-free pass of one guided sampler step, run as one batch of 2B
        (every weight is read once for both): (forward(x, t, emb), forward(x, t, conditioning_free=True)).
        Every op works per batch item, so each half is the pass it replaces."""
        x = np.asarray(x, f32)
        B, _, T = x.shape
        code_emb = np.concatenate([np.asarray(precomputed_aligned_embeddings, f32), self._unconditioned(B, T)])  # (2B, C, T)
        t = np.asarray(timesteps).reshape(-1)
        out = self._forward(np.concatenate([x, x]), np.concatenate([t, t]), code_emb)  # (2B, 2M, T)
        return out[:B], out[B:]

    def _unconditioned(self, B: int, T: int):  # -> (B, C, T): the learned embedding of conditioning-free passes
        return np.broadcast_to(self.w["unconditioned_embedding"], (B, self.cfg.model_channels, T)).astype(f32)

    def _forward(self, x, timesteps, code_emb):  # (B, M, T), (B,), (B, C, T) -> (B, 2M, T)
        ops, w, cfg = self.ops, self.w, self.cfg
        t_emb = timestep_embedding(np.asarray(timesteps).reshape(-1), cfg.model_channels)  # (B, C)
        t_emb = ops.linear(ops.silu(ops.linear(t_emb, w["time_embed.0.weight"], w["time_embed.0.bias"])),
                           w["time_embed.2.weight"], w["time_embed.2.bias"])  # (B, C)
        for i in range(INTEGRATOR_LAYERS):
            code_emb = self.diffusion_layer(code_emb, t_emb, f"conditioning_timestep_integrator.{i}.")  # (B, C, T)
        h = np.concatenate([self.conv(x, "inp_block"), code_emb], axis=1)  # (B, C, T) ++ (B, C, T) -> (B, 2C, T)
        h = self.conv(h, "integrating_conv")  # (B, C, T)
        for i in range(cfg.num_layers):
            h = self.diffusion_layer(h, t_emb, f"layers.{i}.")  # (B, C, T)
        for i in range(cfg.num_layers, cfg.num_layers + TAIL_RESBLOCKS):
            h = self.resblock(h, t_emb, f"layers.{i}.")  # (B, C, T)
        return self.conv(self.group_norm(h, "out.0", silu=True), "out.2")  # (B, 2M, T)
