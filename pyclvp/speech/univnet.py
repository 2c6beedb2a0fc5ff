"""UnivNet: a (denormalized) 100-bin log-mel -> a 24 kHz waveform (the vocoder of Tortoise's quality path).

Shape legend: B batch, M mel bins, T mel frames, C channels (channel_size), K kernel taps, L kernel windows
(= mel frames: the kernels change once per frame), W waveform samples, N noise channels (noise_dim),
H the kernel predictor's hidden channels (kpnet_hidden_channels, 64).

UnivNetGenerator.inference(mel), with the configuration tortoise/api.py builds (UnivNetGenerator(): noise 64,
32 channels, strides 8, 8, 4, dilations 1, 3, 9, 27, hop 256, 100 mel bins):
  1. the mel gets 10 frames of -11.5129 (log of ~1e-5: silence) appended, to cut the artifact at its end
     (seungwonpark/melgan issue 8); noise z ~ N(0, 1) is drawn, one step per padded frame  (B, M, T + 10), (B, N, T + 10)
  2. x = conv_pre(z): a kernel-7 convolution with *reflect* padding 3                       (B, C, T + 10)
  3. for each LVCBlock i (stride s_i; hop_i = s_0 ... s_i samples per mel frame after it):
     a. kernels, bias = kernel_predictor_i(mel): a kernel-5 conv (M -> 64), leaky ReLU, three residual blocks of
        two kernel-3 convs with leaky ReLUs, then two kernel-3 heads, reshaped per mel frame:
        kernels (B, layers, C, 2C, K, T + 10), bias (B, layers, 2C, T + 10)
     b. x = convt_pre(leaky_relu(x)): a transposed conv, stride s_i, kernel 2 s_i, padding s_i // 2 + s_i % 2,
        output_padding s_i % 2, so exactly s_i times longer                              (B, C, (T + 10) hop_i)
     c. for each dilation d (layer j): o = leaky_relu(conv_d(leaky_relu(x))), a "same" kernel-3 conv of dilation d;
        o = LVC(o, kernels[:, j], bias[:, j], hop_i): every window of hop_i samples convolved (K taps, C -> 2C)
        with its own frame's kernel (ops.location_variable_conv)                          (B, 2C, (T + 10) hop_i)
        x = x + sigmoid(o[:, :C]) * tanh(o[:, C:])  (a gated activation unit)               (B, C, (T + 10) hop_i)
  4. wav = tanh(conv_post(leaky_relu(x))): kernel 7, reflect padding 3, one output channel  (B, 1, (T + 10) 256)
  5. the last 10 * hop_length samples (the padding's) are cut, and the result clamped to [-1, 1]  -> (B, W = 256 T)
Every leaky ReLU has slope lReLU_slope (0.2). Tortoise calls `vocoder.inference(mel)` on the diffusion model's
output after denormalize_tacotron_mel (below): the mel given here is already denormalized.

Weights are the generator's state dict (vocoder.pth's "model_g") with weight normalization folded, under the same
names (`pyclvp convert-tortoise --vocoder` does it).
ref: tortoise/models/vocoder.py (UnivNetGenerator, LVCBlock, KernelPredictor), tortoise/api.py (TextToSpeech.__init__,
tts), tortoise/utils/audio.py (denormalize_tacotron_mel).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field

import numpy as np

from ..config import ConfigError, _check_positive, _Config, _key

__all__ = ["UnivNetConfig", "UnivNet", "univnet_spec", "denormalize_tacotron_mel",
           "TACOTRON_MEL_MAX", "TACOTRON_MEL_MIN", "MEL_PAD_FRAMES", "MEL_PAD_VALUE"]

TACOTRON_MEL_MAX = 2.3143386840820312  # tortoise/utils/audio.py
TACOTRON_MEL_MIN = -11.512925148010254
MEL_PAD_FRAMES = 10  # UnivNetGenerator.inference: frames of silence appended, and their samples cut
MEL_PAD_VALUE = -11.5129  # ... of this value (the literal in inference, not TACOTRON_MEL_MIN)
KPNET_INPUT_KERNEL = 5  # KernelPredictor.input_conv's kernel size (fixed in Tortoise)
KPNET_RESIDUAL_BLOCKS = 3  # KernelPredictor's residual convolution blocks (fixed)
PRE_POST_KERNEL = 7  # conv_pre's and conv_post's kernel size (fixed, reflect padding 3)


def denormalize_tacotron_mel(norm_mel):  # (...) in [-1, 1] -> (...) log-mel
    """ref: tortoise/utils/audio.py denormalize_tacotron_mel: ((x + 1) / 2) (MAX - MIN) + MIN."""
    x = np.asarray(norm_mel, np.float32)
    return ((x + 1) / 2) * np.float32(TACOTRON_MEL_MAX - TACOTRON_MEL_MIN) + np.float32(TACOTRON_MEL_MIN)


@dataclass
class UnivNetConfig(_Config):
    """UnivNetGenerator's constructor arguments (defaults: UnivNetGenerator(), as tortoise/api.py builds it), plus
    two LVCBlock arguments the generator does not pass on (their LVCBlock defaults)."""

    model_type: typing.ClassVar[str] = "univnet"
    noise_dim: int = 64
    channel_size: int = 32
    dilations: typing.List[int] = field(default_factory=lambda: [1, 3, 9, 27])
    strides: typing.List[int] = field(default_factory=lambda: [8, 8, 4])
    lReLU_slope: float = 0.2
    kpnet_conv_size: int = 3
    hop_length: int = 256  # only inference's trim uses it: 10 * hop_length samples; prod(strides) is the real hop
    n_mel_channels: int = 100
    kpnet_hidden_channels: int = 64  # LVCBlock's default
    conv_kernel_size: int = 3  # LVCBlock's default: the dilated convs' and the location-variable convs' taps
    sampling_rate: int = 24000
    extra: dict = field(default_factory=dict)

    def _check_values(self) -> None:
        _check_positive(self, "noise_dim", "channel_size", "kpnet_conv_size", "hop_length", "n_mel_channels",
                        "kpnet_hidden_channels", "conv_kernel_size", "sampling_rate")
        for name in ("dilations", "strides"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise ConfigError(f"{_key(self, name)}: expected a non-empty list of integers >= 1, got {values}")
        for name in ("kpnet_conv_size", "conv_kernel_size"):
            if getattr(self, name) % 2 == 0:
                raise ConfigError(f"{_key(self, name)}: expected an odd kernel size (Tortoise's 'same' padding "
                                  f"(K - 1) // 2 shortens even ones), got {getattr(self, name)}")

    def hop(self, i: int) -> int:  # waveform samples per mel frame after block i
        return int(np.prod(self.strides[:i + 1]))


def univnet_spec(cfg: UnivNetConfig) -> dict[str, tuple]:
    """Every tensor of the generator (weight norm folded) -> its shape."""
    C, H, M, K = cfg.channel_size, cfg.kpnet_hidden_channels, cfg.n_mel_channels, cfg.conv_kernel_size
    kp = cfg.kpnet_conv_size
    layers = len(cfg.dilations)
    spec = {"conv_pre.weight": (C, cfg.noise_dim, PRE_POST_KERNEL), "conv_pre.bias": (C,)}
    for i, s in enumerate(cfg.strides):
        p = f"res_stack.{i}.kernel_predictor."
        spec[p + "input_conv.0.weight"], spec[p + "input_conv.0.bias"] = (H, M, KPNET_INPUT_KERNEL), (H,)
        for j in range(KPNET_RESIDUAL_BLOCKS):
            for n in (1, 3):  # Sequential(Dropout, conv, LeakyReLU, conv, LeakyReLU): the convs are .1 and .3
                spec[p + f"residual_convs.{j}.{n}.weight"], spec[p + f"residual_convs.{j}.{n}.bias"] = (H, H, kp), (H,)
        spec[p + "kernel_conv.weight"] = (layers * C * 2 * C * K, H, kp)  # rows: (layers, Cin, Cout, K)
        spec[p + "kernel_conv.bias"] = (layers * C * 2 * C * K,)
        spec[p + "bias_conv.weight"], spec[p + "bias_conv.bias"] = (layers * 2 * C, H, kp), (layers * 2 * C,)
        p = f"res_stack.{i}."
        spec[p + "convt_pre.1.weight"], spec[p + "convt_pre.1.bias"] = (C, C, 2 * s), (C,)  # ConvTranspose1d
        for j in range(layers):
            spec[p + f"conv_blocks.{j}.1.weight"], spec[p + f"conv_blocks.{j}.1.bias"] = (C, C, K), (C,)
    spec["conv_post.1.weight"], spec["conv_post.1.bias"] = (1, C, PRE_POST_KERNEL), (1,)
    return spec


def _sigmoid(x):  # (...) -> (...); as tanh, so that no exp overflows
    return np.float32(0.5) * (np.float32(1) + np.tanh(np.float32(0.5) * x))


class UnivNet:
    """UnivNet(weights, cfg, ops): weights by univnet_spec's names (float32 arrays)."""

    def __init__(self, weights: dict, cfg: UnivNetConfig, ops):
        self.w, self.cfg, self.ops = weights, cfg, ops

    def conv(self, x, name, dilation=1, reflect=False, slope=None):  # (B, Cin, T) -> (B, Cout, T)
        # a "same" conv of odd kernel, of leaky_relu(x, slope) (of x when slope is None)
        w = self.w[f"{name}.weight"]  # (Cout, Cin, K)
        pad = dilation * (w.shape[2] - 1) // 2
        if reflect:  # padding_mode="reflect" (torch's reflect = NumPy's: the edge sample is not repeated)
            x, pad = np.pad(x, ((0, 0), (0, 0), (pad, pad)), mode="reflect"), 0  # (B, Cin, T + 2 pad)
        return self.ops.conv1d(x, w, self.w[f"{name}.bias"], padding=pad, dilation=dilation, leaky_slope=slope)

    def kernel_predictor(self, mel, i: int):  # (B, M, L) -> (B, layers, C, 2C, K, L), (B, layers, 2C, L)
        """KernelPredictor.forward: block i's location-variable kernels and biases, one set per mel frame."""
        cfg, ops, p = self.cfg, self.ops, f"res_stack.{i}.kernel_predictor."
        slope = cfg.lReLU_slope
        c = ops.leaky_relu(self.conv(mel, p + "input_conv.0"), slope)  # (B, M, L) -> (B, H, L)
        for j in range(KPNET_RESIDUAL_BLOCKS):  # c = c + lrelu(conv_3(lrelu(conv_1(c))))
            r = self.conv(c, p + f"residual_convs.{j}.1")  # (B, H, L)
            c = c + ops.leaky_relu(self.conv(r, p + f"residual_convs.{j}.3", slope=slope), slope)  # (B, H, L)
        B, _, L = mel.shape
        C, layers = cfg.channel_size, len(cfg.dilations)
        kernels = self.conv(c, p + "kernel_conv").reshape(B, layers, C, 2 * C, cfg.conv_kernel_size, L)
        # (B, layers C 2C K, L) -> (B, layers, C, 2C, K, L), as Tortoise's .view
        bias = self.conv(c, p + "bias_conv").reshape(B, layers, 2 * C, L)  # (B, layers 2C, L) -> (B, layers, 2C, L)
        return kernels, bias

    def lvc_block(self, x, mel, i: int):  # (B, C, L hop_{i-1}), (B, M, L) -> (B, C, L hop_i)
        """LVCBlock.forward: upsample by strides[i], then one gated location-variable convolution per dilation."""
        cfg, ops, p = self.cfg, self.ops, f"res_stack.{i}."
        s, slope, C = cfg.strides[i], cfg.lReLU_slope, cfg.channel_size
        x = ops.conv_transpose1d(x, self.w[p + "convt_pre.1.weight"], self.w[p + "convt_pre.1.bias"], stride=s,
                                 padding=s // 2 + s % 2, output_padding=s % 2,
                                 leaky_slope=slope)  # lrelu(x) (B, C, L hop_{i-1}) -> (B, C, L hop_i)
        kernels, bias = self.kernel_predictor(mel, i)  # (B, layers, C, 2C, K, L), (B, layers, 2C, L)
        for j, d in enumerate(cfg.dilations):
            o = ops.leaky_relu(self.conv(x, p + f"conv_blocks.{j}.1", dilation=d, slope=slope), slope)
            o = ops.location_variable_conv(o, kernels[:, j], bias[:, j], cfg.hop(i))  # (B, C, .) -> (B, 2C, L hop_i)
            x = x + _sigmoid(o[:, :C]) * np.tanh(o[:, C:])  # (B, C, L hop_i)
        return x

    def forward(self, mel, z):  # (B, M, L), (B, N, L) -> (B, 1, L prod(strides))
        """UnivNetGenerator.forward: noise z, conditioned on the mel, to a waveform in (-1, 1)."""
        x = self.conv(z, "conv_pre", reflect=True)  # (B, N, L) -> (B, C, L)
        for i in range(len(self.cfg.strides)):
            x = self.lvc_block(x, mel, i)  # (B, C, L hop_i)
        # (B, C, W') -> (B, 1, W'): lrelu commutes with the reflect padding (both act per sample)
        return np.tanh(self.conv(x, "conv_post.1", reflect=True, slope=self.cfg.lReLU_slope))

    def inference(self, mel, noise=None, seed=0):  # (B, M, T) -> (B, W), W = T prod(strides) if hop_length = prod
        """The waveform for a denormalized mel (UnivNetGenerator.inference): 10 frames of silence appended, noise
        z (B, noise_dim, T + 10) from `noise` if given (e.g. Tortoise's draw), else standard normal from
        np.random.default_rng(seed) (an int or a Generator); the last 10 * hop_length samples cut; clamped."""
        mel = np.asarray(mel, np.float32)
        if mel.ndim != 3 or mel.shape[1] != self.cfg.n_mel_channels:
            raise ValueError(f"mel: expected (B, {self.cfg.n_mel_channels}, T), got shape {mel.shape}")
        B, M, T = mel.shape
        pad = np.full((B, M, MEL_PAD_FRAMES), MEL_PAD_VALUE, np.float32)
        mel = np.concatenate([mel, pad], axis=2)  # (B, M, T) -> (B, M, T + 10)
        shape = (B, self.cfg.noise_dim, T + MEL_PAD_FRAMES)
        if noise is None:
            noise = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)  # (B, N, T + 10)
        noise = np.asarray(noise, np.float32)
        if noise.shape != shape:
            raise ValueError(f"noise: expected shape {shape} (B, noise_dim, T + {MEL_PAD_FRAMES}), got {noise.shape}")
        wav = self.forward(mel, noise)[:, 0]  # (B, (T + 10) prod(strides))
        return np.clip(wav[:, :-(self.cfg.hop_length * MEL_PAD_FRAMES)], -1, 1)  # (B, W)
