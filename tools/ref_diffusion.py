"""diffusion fixtures: Tortoise 3.0.0's quality path (tortoise/api.py: DiffusionTts + the respaced sampler).

  tests/data/diffusion/full/expected.npz     DiffusionTts at full width (model_channels 1024, 16 heads, so head
                                             dims 64 and 128 in the contextual embedder) with num_layers=1. Its
                                             weights (~170M parameters, 680 MB) are not stored: they are
                                             pyclvp.speech.diffusion.random_weights(cfg, seed=FULL_SEED), which the
                                             tests regenerate; a float64 sum per tensor is stored to check that.
  tests/data/diffusion/small/                diffusion_decoder.pth (the whole state dict, as the released file has
                                             it), config.json, expected.npz: the same cases on a narrow model
                                             (64 channels, 16 heads, 2 layers, 48 latent channels), for the converter
  tests/data/diffusion/schedule.npz          the respaced timestep maps and betas for 30, 80, 200 steps; the
                                             relative-position buckets for k - q in [-600, 600]
Each expected.npz holds: get_conditioning on two clips' mels (1, 2, 100, Tc); timestep_independent with
return_code_pred False and True (Tortoise's 4th argument); forward at one timestep with conditioning_free False
and True; and do_spectrogram_diffusion with load_discrete_vocoder_diffuser(30 steps, cond_free=True,
cond_free_k=2) and temperature 0.8 on 4 latent frames (17 mel frames), with every torch.randn / randn_like draw
it made recorded in order (noise: (31, 1, 100, 17)) and x after every step.

Runs Tortoise's own code under the venv of tools/tortoise_env.sh (transformers 4.31; torchaudio and librosa
stubbed as in ref_speech.py: only wav_to_univnet_mel uses them, and the mels are given here). The weights the
model does not use on the latent path (code_embedding, code_converter) keep torch's seeded init.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, write_json
from ref_speech import _import_api_fast, _np, _savez

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # pyclvp, for random_weights (NumPy only)

FULL = dict(model_channels=1024, num_layers=1, in_channels=100, out_channels=200, in_latent_channels=1024,
            in_tokens=8193, num_heads=16)
SMALL = dict(model_channels=64, num_layers=2, in_channels=100, out_channels=200, in_latent_channels=48,
             in_tokens=16, num_heads=16)
FULL_SEED, SMALL_SEED = 7, 8
COND_FRAMES = 32      # conditioning mel frames per clip (two clips)
LATENT_FRAMES = 4     # -> 4 * 4 * 24000 // 22050 = 17 mel frames
STEPS, COND_FREE_K, TEMPERATURE = 30, 2.0, 0.8
FORWARD_T = 2345      # an original-schedule timestep for the single forward case


def _model(config: dict, seed: int):
    import torch
    from pyclvp.speech.diffusion import DiffusionConfig, diffusion_spec, random_weights
    from tortoise.models.diffusion_decoder import DiffusionTts

    torch.manual_seed(seed)
    constructor = dict(config, dropout=0, use_fp16=False, layer_drop=0, unconditioned_percentage=0)
    model = DiffusionTts(**constructor).eval()
    cfg = DiffusionConfig.from_dict(config)
    weights = random_weights(cfg, seed)
    sd = model.state_dict()
    unused = sorted(set(sd) - set(weights))
    assert all(k.startswith(("code_embedding.", "code_converter.")) for k in unused), unused
    assert set(weights) <= set(sd) and all(tuple(sd[k].shape) == diffusion_spec(cfg)[k] for k in weights)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    sums = np.array([weights[k].astype(np.float64).sum() for k in weights])
    return model, sums


def _record_randn(log: list):
    """torch.randn and torch.randn_like that record what they return (do_spectrogram_diffusion, p_sample)."""
    import torch

    randn, randn_like = torch.randn, torch.randn_like

    def rec(f):
        def wrapper(*args, **kwargs):
            z = f(*args, **kwargs)
            log.append(_np(z).copy())
            return z
        return wrapper

    torch.randn, torch.randn_like = rec(randn), rec(randn_like)
    return lambda: setattr(torch, "randn", randn) or setattr(torch, "randn_like", randn_like)


def _cases(api, model, seed: int, cfg: dict) -> dict:
    import torch
    import tortoise.utils.diffusion as tdiff

    g = torch.Generator().manual_seed(seed)
    C, M = cfg["model_channels"], cfg["in_channels"]
    cond_mels = torch.randn(1, 2, M, COND_FRAMES, generator=g)  # (B, N, M, Tc): get_conditioning_latents' stack
    latents = torch.randn(1, LATENT_FRAMES, cfg["in_latent_channels"], generator=g)  # (B, S, C_lat)
    T = LATENT_FRAMES * 4 * 24000 // 22050
    x = torch.randn(1, M, T, generator=g)
    out = {}
    with torch.no_grad():
        cond = model.get_conditioning(cond_mels)  # (1, 2C)
        emb = model.timestep_independent(latents, cond, T, False)
        emb2, mel_pred = model.timestep_independent(latents, cond, T, True)
        assert torch.equal(emb, emb2)
        ts = torch.tensor([FORWARD_T])
        fwd = model(x, ts, precomputed_aligned_embeddings=emb)
        fwd_free = model(x, ts, precomputed_aligned_embeddings=emb, conditioning_free=True)
        diffuser = api.load_discrete_vocoder_diffuser(desired_diffusion_steps=STEPS, cond_free=True,
                                                      cond_free_k=COND_FREE_K)
        steps = []
        p_sample = diffuser.p_sample

        def p_sample_rec(*args, **kwargs):
            r = p_sample(*args, **kwargs)
            steps.append(_np(r["sample"]).copy())
            return r

        diffuser.p_sample = p_sample_rec
        noise = []
        restore = _record_randn(noise)
        torch.manual_seed(seed + 100)
        try:
            mel = api.do_spectrogram_diffusion(model, diffuser, latents, cond, temperature=TEMPERATURE, verbose=False)
        finally:
            restore()
        assert len(noise) == STEPS + 1 and len(steps) == STEPS, (len(noise), len(steps))
        assert isinstance(diffuser, tdiff.SpacedDiffusion)
    out.update(cond_mels=_np(cond_mels), latents=_np(latents), conditioning_latent=_np(cond), expected_seq_len=T,
               aligned_embeddings=_np(emb), mel_pred=_np(mel_pred), x=_np(x), timestep=FORWARD_T,
               forward=_np(fwd), forward_free=_np(fwd_free), steps=STEPS, cond_free_k=COND_FREE_K,
               temperature=TEMPERATURE, noise=np.stack(noise), loop_steps=np.stack(steps), mel=_np(mel))
    return out


def _schedule(api) -> dict:
    from tortoise.models.xtransformers import RelativePositionBias
    import torch

    out = {}
    for n in (30, 80, 200):
        d = api.load_discrete_vocoder_diffuser(desired_diffusion_steps=n, cond_free=True, cond_free_k=2.0)
        out[f"timestep_map_{n}"] = np.array(d.timestep_map, np.int64)
        out[f"betas_{n}"] = d.betas
        out[f"posterior_log_variance_clipped_{n}"] = d.posterior_log_variance_clipped
    rel = torch.arange(-600, 601)
    out["bucket_relative_position"] = _np(rel)
    out["bucket"] = _np(RelativePositionBias._relative_position_bucket(rel, causal=False, num_buckets=32,
                                                                          max_distance=64))
    return out


def make(data_dir: Path) -> None:
    import torch

    api_fast = _import_api_fast()  # the stubs tortoise.api needs too
    from tortoise import api

    del api_fast
    torch.use_deterministic_algorithms(True)
    out = data_dir / "diffusion"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    _savez(out / "schedule.npz", **_schedule(api))
    for name, config, seed in [("full", FULL, FULL_SEED), ("small", SMALL, SMALL_SEED)]:
        folder = out / name
        folder.mkdir()
        model, sums = _model(config, seed)
        if name == "small":
            torch.save(model.state_dict(), folder / "diffusion_decoder.pth")
        write_json(folder / "config.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__,
                                                constructor=config, weights_seed=seed))
        _savez(folder / "expected.npz", weight_sums=sums, **_cases(api, model, seed + 1, config))
