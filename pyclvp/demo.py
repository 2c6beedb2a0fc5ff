"""What `pyclvp demo` runs on when no weights are downloaded: a small CLVP and a small HiFi-GAN with seeded
random weights, and a synthesized voice clip.

The model has Tortoise's vocabularies and token ids (text 256; speech 8194 with start 8192 and stop
8193), so the real tokenizer, feature extractor, decoding and ranking all run unchanged; only the
sizes are small and the weights random. Its scores mean nothing: it demonstrates the pipeline.

Weights follow the checkpoint spec (pyclvp/model/weights.py): norms' weights 1 and biases 0, everything else
N(0, 0.02^2), logit_scale transformers' initial 2.6592. lm_head.bias[stop] is raised so that
candidates stop at varied lengths, as a trained model's do. The HiFi-GAN's kernels are N(0, 1/fan-in) and
its biases 0: what it says is noise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import ClvpConfig
from .io.safetensors import save_file
from .io.wav import write_wav
from .model.weights import checkpoint_spec
from .speech.hifigan import HifiganConfig, hifigan_spec
from .speech.diffusion import DiffusionConfig, random_weights
from .speech.tts import DIFFUSION_FOLDER, HIFIGAN_FOLDER, UNIVNET_FOLDER
from .speech.univnet import UnivNetConfig, univnet_spec

DEMO_CONFIG = dict(
    text_config=dict(vocab_size=256, hidden_size=64, intermediate_size=128, projection_dim=64, num_hidden_layers=1,
                     num_attention_heads=2),
    speech_config=dict(vocab_size=8194, hidden_size=64, intermediate_size=128, projection_dim=64,
                       num_hidden_layers=1, num_attention_heads=2, bos_token_id=8192, eos_token_id=8193),
    decoder_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_mel_attn_blocks=1,
                        max_position_embeddings=256, max_text_tokens=128),
    projection_dim=64,
)
STOP_BIAS = 4.0  # about a 2% chance per step to stop at temperature 0.8


def _is_norm(name: str) -> bool:
    return any(part in name for part in ("norm", "layernorm"))


def write_random_checkpoint(folder, seed: int = 0) -> ClvpConfig:
    """config.json + model.safetensors of the demo model, with seeded random weights."""
    folder = Path(folder)
    config = ClvpConfig.from_dict(DEMO_CONFIG)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in checkpoint_spec(config).items():
        if name == "logit_scale":
            weights[name] = np.array(config.logit_scale_init_value, np.float32)
        elif _is_norm(name):
            weights[name] = (np.ones if name.endswith("weight") else np.zeros)(shape, np.float32)
        elif name.endswith("inv_freq"):
            continue  # recomputed from the config
        else:
            weights[name] = (rng.standard_normal(shape) * 0.02).astype(np.float32)
    weights["speech_decoder_model.lm_head.bias"][config.decoder_config.eos_token_id] = STOP_BIAS
    config.save_pretrained(folder)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt", "pyclvp": "random demo weights"})
    return config


def write_voice_clip(path, seconds: float = 3.0, rate: int = 22050, seed: int = 0) -> Path:
    """A voice-like 16-bit mono WAV: a 120 Hz glottal tone with vibrato, shaped by two formants, in syllables."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate  # (T,)
    f0 = 120 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))  # pitch with vibrato
    phase = 2 * np.pi * np.cumsum(f0) / rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 25))  # a sawtooth-like glottal source
    formants = sum(np.exp(-((k * f0 - fc) / 150.0) ** 2) * np.sin(k * phase)
                   for fc in (700, 1200) for k in range(1, 25))
    syllables = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 0.5  # three syllables a second
    x = (0.25 * harmonics + 0.5 * formants) * syllables + 0.003 * rng.standard_normal(t.shape)
    return write_wav(path, 0.5 * x / np.abs(x).max(), rate)


def write_random_hifigan(folder, in_channels: int, seed: int = 0) -> HifiganConfig:
    """folder/hifigan/{config.json, model.safetensors}: a small HiFi-GAN with seeded random weights (fan-in
    scaled, so that its output is audible noise rather than silence)."""
    folder = Path(folder) / HIFIGAN_FOLDER
    cfg = HifiganConfig(in_channels=in_channels, cond_channels=in_channels, upsample_initial_channel=32)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in hifigan_spec(cfg).items():  # kernels N(0, 1 / fan-in), biases 0
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
        weights[name] = (rng.standard_normal(shape) / np.sqrt(fan_in) if fan_in else np.zeros(shape)).astype(np.float32)
    cfg.save_pretrained(folder)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt", "pyclvp": "random demo weights"})
    return cfg


def write_random_quality(folder, latent_channels: int, seed: int = 0) -> tuple:
    """folder/diffusion/ and folder/univnet/: a small diffusion decoder (32 channels, 1 layer, 100 mel bins) on
    `latent_channels`-wide latents and a small UnivNet (4 channels, Tortoise's strides 8, 8, 4: 256 samples per
    frame), seeded random weights (random_weights for the first; N(0, 1/fan-in) kernels, zero biases for the second).
    Their output is noise: they exercise the quality path (TextToSpeech.quality, `pyclvp tts --decoder diffusion`)."""
    dcfg = DiffusionConfig(model_channels=32, num_layers=1, in_latent_channels=latent_channels, num_heads=4)
    dcfg.save_pretrained(Path(folder) / DIFFUSION_FOLDER)
    save_file(random_weights(dcfg, seed), Path(folder) / DIFFUSION_FOLDER / "model.safetensors",
              metadata={"format": "pt", "pyclvp": "random demo weights"})
    ucfg = UnivNetConfig(noise_dim=8, channel_size=4, kpnet_hidden_channels=8)
    rng = np.random.default_rng(seed + 1)
    weights = {}
    for name, shape in univnet_spec(ucfg).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
        weights[name] = (rng.standard_normal(shape) / np.sqrt(fan_in) if fan_in else np.zeros(shape)).astype(np.float32)
    ucfg.save_pretrained(Path(folder) / UNIVNET_FOLDER)
    save_file(weights, Path(folder) / UNIVNET_FOLDER / "model.safetensors",
              metadata={"format": "pt", "pyclvp": "random demo weights"})
    return dcfg, ucfg
