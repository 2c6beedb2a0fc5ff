"""HiFi-GAN: the autoregressive model's speech latents -> a 24 kHz waveform (Tortoise's fast decoder).

Shape legend: B batch, T latent frames, C channels, K kernel taps, W waveform samples.

HifiganGenerator.inference(latents, conditioning), with the configuration tortoise/api_fast.py builds
(1024 latent channels, 512 -> 256 -> 128 -> 64 -> 32 channels over four upsamplings by 8, 8, 2, 2):
  1. x = latents (B, T, C_in) as channels-first (B, C_in, T), linearly interpolated by 4 (a latent per
     1024 samples at 22.05 kHz -> a frame per 256), then by 24000 / 22050 (to 24 kHz); torch's
     interpolate(mode="linear", align_corners=False) with those scale factors       (B, C_in, T')
  2. o = conv_pre(x) + cond_layer(g): a kernel-7 convolution, plus a 1x1 convolution of the conditioning
     latent g (1, C_cond) taken as one frame and broadcast over time                 (B, C0, T')
  3. for each upsampling i: o = leaky_relu(o, 0.1); o = ups[i](o), a transposed convolution with stride
     u_i, kernel k_i and padding (k_i - u_i) / 2, so T' grows u_i times and C halves; then o = the mean
     of the multi-receptive-field blocks resblock_j(o), one per kernel size           (B, C0 / 2^(i+1), T' prod u)
     ResBlock1 (kernel k, dilations d1 d2 d3): for each d, x = x + conv(lrelu(conv_d(lrelu(x, 0.1))), 0.1),
     both convolutions "same" length (padding d (k - 1) / 2, then (k - 1) / 2); ResBlock2: x = x + conv_d(lrelu(x))
  4. o = leaky_relu(o, 0.01) (torch's default slope, not 0.1), conv_post (kernel 7), tanh  -> (B, 1, W) -> (B, W)

Weights are the generator's state dict with weight normalization folded (w = g v / |v|, the norm over
every axis but the first; `pyclvp convert-tortoise --hifigan` does it), under the same names.
ref: tortoise/models/hifigan_decoder.py (HifiganGenerator, ResBlock1, ResBlock2), tortoise/api_fast.py.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field

import numpy as np

from ..config import ConfigError, _check_positive, _Config, _key

__all__ = ["HifiganConfig", "Hifigan", "hifigan_spec", "LRELU_SLOPE"]

LRELU_SLOPE = 0.1  # every leaky ReLU but the last, which is torch's default 0.01
LATENT_UPSAMPLE = 1024 / 256  # latents at 22.05 kHz / 1024 -> frames at 22.05 kHz / 256
RATE_UPSAMPLE = 24000 / 22050  # the decoder's frames at 24 kHz


@dataclass
class HifiganConfig(_Config):
    """HifiganGenerator's constructor arguments; the defaults are tortoise/api_fast.py's."""

    model_type: typing.ClassVar[str] = "hifigan"
    in_channels: int = 1024
    out_channels: int = 1
    resblock_type: str = "1"
    resblock_dilation_sizes: typing.List[typing.List[int]] = field(default_factory=lambda: [[1, 3, 5]] * 3)
    resblock_kernel_sizes: typing.List[int] = field(default_factory=lambda: [3, 7, 11])
    upsample_kernel_sizes: typing.List[int] = field(default_factory=lambda: [16, 16, 4, 4])
    upsample_initial_channel: int = 512
    upsample_factors: typing.List[int] = field(default_factory=lambda: [8, 8, 2, 2])
    cond_channels: int = 1024
    conv_post_bias: bool = True
    sampling_rate: int = 24000
    extra: dict = field(default_factory=dict)

    def _check_values(self) -> None:
        _check_positive(self, "in_channels", "out_channels", "upsample_initial_channel", "cond_channels")
        if self.resblock_type not in ("1", "2"):
            raise ConfigError(f"{_key(self, 'resblock_type')}: expected '1' or '2', got {self.resblock_type!r}")
        if len(self.upsample_factors) != len(self.upsample_kernel_sizes) or not self.upsample_factors:
            raise ConfigError(f"{_key(self, 'upsample_factors')} and upsample_kernel_sizes must be non-empty lists "
                              "of the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes) or not self.resblock_kernel_sizes:
            raise ConfigError(f"{_key(self, 'resblock_kernel_sizes')} and resblock_dilation_sizes must be non-empty "
                              "lists of the same length")
        dilations = 3 if self.resblock_type == "1" else 2
        if any(len(d) != dilations or min(d) < 1 for d in self.resblock_dilation_sizes):
            raise ConfigError(f"{_key(self, 'resblock_dilation_sizes')}: ResBlock{self.resblock_type} takes "
                              f"{dilations} dilations >= 1 per block, got {self.resblock_dilation_sizes}")
        sizes = self.upsample_factors + self.upsample_kernel_sizes + self.resblock_kernel_sizes
        if min(sizes) < 1:
            raise ConfigError(f"{_key(self, 'upsample_factors')}: kernel sizes and factors must be >= 1")
        if self.upsample_initial_channel % 2 ** len(self.upsample_factors):
            raise ConfigError(f"{_key(self, 'upsample_initial_channel')} ({self.upsample_initial_channel}) must be "
                              f"divisible by 2^{len(self.upsample_factors)} (one halving per upsampling)")

    def channels(self, i: int) -> int:  # channels after upsampling i (i = -1: before the first)
        return self.upsample_initial_channel // 2 ** (i + 1)

    @property
    def samples_per_latent(self) -> float:  # waveform samples per latent frame: 1024 * 24000 / 22050
        return LATENT_UPSAMPLE * RATE_UPSAMPLE * float(np.prod(self.upsample_factors))


def _resblock_convs(cfg: HifiganConfig, k: int, dilations) -> list:  # [(name, dilation)] in the order they run
    if cfg.resblock_type == "1":
        return [c for n, d in enumerate(dilations) for c in ((f"convs1.{n}", d), (f"convs2.{n}", 1))]
    return [(f"convs.{n}", d) for n, d in enumerate(dilations)]


def hifigan_spec(cfg: HifiganConfig) -> dict[str, tuple]:
    """Every tensor of the generator (weight norm folded) -> its shape."""
    C0 = cfg.upsample_initial_channel
    spec = {"conv_pre.weight": (C0, cfg.in_channels, 7), "conv_pre.bias": (C0,),
            "cond_layer.weight": (C0, cfg.cond_channels, 1), "cond_layer.bias": (C0,)}
    for i, k in enumerate(cfg.upsample_kernel_sizes):
        spec[f"ups.{i}.weight"] = (cfg.channels(i - 1), cfg.channels(i), k)  # ConvTranspose1d: (Cin, Cout, K)
        spec[f"ups.{i}.bias"] = (cfg.channels(i),)
        for j, (k_res, dil) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
            block = i * len(cfg.resblock_kernel_sizes) + j
            for name, _ in _resblock_convs(cfg, k_res, dil):
                spec[f"resblocks.{block}.{name}.weight"] = (cfg.channels(i), cfg.channels(i), k_res)
                spec[f"resblocks.{block}.{name}.bias"] = (cfg.channels(i),)
    C = cfg.channels(len(cfg.upsample_factors) - 1)
    spec["conv_post.weight"] = (cfg.out_channels, C, 7)
    if cfg.conv_post_bias:
        spec["conv_post.bias"] = (cfg.out_channels,)
    return spec


class Hifigan:
    """Hifigan(weights, cfg, ops): weights by hifigan_spec's names (float32 arrays)."""

    def __init__(self, weights: dict, cfg: HifiganConfig, ops):
        self.w, self.cfg, self.ops = weights, cfg, ops

    def conv(self, x, name, dilation=1, slope=None, residual=None):  # (B, Cin, T) -> (B, Cout, T)
        # residual + a "same" convolution of odd kernel of leaky_relu(x, slope) (of x when slope is None)
        w = self.w[f"{name}.weight"]  # (Cout, Cin, K)
        pad = dilation * (w.shape[2] - 1) // 2
        return self.ops.conv1d(x, w, self.w.get(f"{name}.bias"), padding=pad, dilation=dilation, leaky_slope=slope,
                               residual=residual)

    def resblock(self, x, block: int, k: int, dilations):  # (B, C, T) -> (B, C, T)
        convs = _resblock_convs(self.cfg, k, dilations)
        if self.cfg.resblock_type == "1":  # x = x + conv2(lrelu(conv1_d(lrelu(x))))
            for (name1, d), (name2, _) in zip(convs[0::2], convs[1::2]):
                xt = self.conv(x, f"resblocks.{block}.{name1}", d, slope=LRELU_SLOPE)
                x = self.conv(xt, f"resblocks.{block}.{name2}", slope=LRELU_SLOPE, residual=x)
        else:  # x = x + conv_d(lrelu(x))
            for name, d in convs:
                x = self.conv(x, f"resblocks.{block}.{name}", d, slope=LRELU_SLOPE, residual=x)
        return x

    def forward(self, x, g):  # (B, C_in, T'), (1, C_cond, 1) -> (B, out_channels, W)
        cfg, ops = self.cfg, self.ops
        o = self.conv(x, "conv_pre") + self.conv(g, "cond_layer")  # (B, C0, T') + (1, C0, 1)
        blocks = list(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
        for i, (u, k) in enumerate(zip(cfg.upsample_factors, cfg.upsample_kernel_sizes)):
            o = ops.conv_transpose1d(o, self.w[f"ups.{i}.weight"], self.w[f"ups.{i}.bias"], stride=u,
                                     padding=(k - u) // 2, leaky_slope=LRELU_SLOPE)  # (B, C_i, T' * u) of lrelu(o)
            o = sum(self.resblock(o, i * len(blocks) + j, kj, dj) for j, (kj, dj) in enumerate(blocks)) / len(blocks)
        return np.tanh(self.conv(o, "conv_post", slope=0.01))  # (B, out_channels, W) of lrelu(o, 0.01)

    def inference(self, latents, conditioning):  # (B, T, C_in), (1, C_cond) -> (B, W) float32
        """The waveform for speech latents and the voice's conditioning latent (HifiganGenerator.inference)."""
        x = np.ascontiguousarray(np.swapaxes(latents, 1, 2), dtype=np.float32)  # (B, C_in, T)
        x = self.ops.interpolate_linear(self.ops.interpolate_linear(x, LATENT_UPSAMPLE), RATE_UPSAMPLE)  # (B, C_in, T')
        g = np.asarray(conditioning, np.float32).reshape(1, -1, 1)  # (1, C_cond, 1)
        return self.forward(x, g)[:, 0]  # (B, W)
