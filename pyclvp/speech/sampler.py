"""The diffusion sampler: Tortoise's respaced ancestral sampling of DiffusionTts (noise -> a mel spectrogram).

Shape legend: B batch, M mel bins (100), T mel frames, S latent frames, N sampler steps.

Tortoise's vocoder diffuser (ref: tortoise/api.py load_discrete_vocoder_diffuser, do_spectrogram_diffusion;
tortoise/utils/diffusion.py GaussianDiffusion, SpacedDiffusion, space_timesteps):
  1. base schedule: 4000 betas, linear from (1000 / 4000) * 1e-4 to (1000 / 4000) * 0.02
  2. respacing to N steps: space_timesteps(4000, [N]) keeps start + round(k (4000 - 1) / (N - 1)), k < N
     (Python's round: halves to even); the kept steps' alphas_cumprod give new betas 1 - ac[i] / ac[previous kept]
     and timestep_map (sampler step n -> the original timestep the model is told)
  3. x_N = randn(B, M, T) * temperature  (T = S * 4 * 24000 // 22050; the temperature scales only this draw)
  4. for n = N-1 .. 0, with t = timestep_map[n]:
       out = model(x, t) (B, 2M, T) -> eps, v (B, M, T) each; with conditioning-free guidance also
       eps_free = model(x, t, conditioning_free=True)[:, :M] and eps = (1 + k_n) eps - k_n eps_free with the ramp
       k_n = k (1 - n / N)    (so the full k at the noisy end, k / N on the last step)
       log_var = f log(beta_n) + (1 - f) posterior_log_variance_clipped_n,  f = (v + 1) / 2   (learned range)
       x0 = clip(sqrt(1 / ac_n) x - sqrt(1 / ac_n - 1) eps, -1, 1)
       mean = posterior_mean_coef1_n x0 + posterior_mean_coef2_n x
       x = mean + [n > 0] exp(log_var / 2) z,  z = randn(B, M, T) (drawn on every step, the last one included)
  5. mel = denormalize_tacotron_mel(x) = (x + 1) / 2 (MAX - MIN) + MIN, cropped to T frames

The schedule is computed in float64 and every per-step coefficient is rounded to float32 before use, as
_extract_into_tensor does; the arithmetic of step 4 is float32, as torch's. Noise comes from a seeded
numpy.random.Generator (standard normal, float32), or is injected: `noise` = the N + 1 draws in the order
Tortoise makes them (x_N's before the temperature, then one per step), which replays a torch run exactly.
"""
from __future__ import annotations

import typing

import numpy as np

__all__ = ["linear_betas", "space_timesteps", "Schedule", "p_sample_loop", "spectrogram_diffusion",
           "denormalize_tacotron_mel", "output_length", "TRAINED_STEPS"]

f32 = np.float32
TRAINED_STEPS = 4000  # the diffusion decoder was trained on a 4000-step linear schedule
TACOTRON_MEL_MAX = 2.3143386840820312  # ref: tortoise/utils/audio.py
TACOTRON_MEL_MIN = -11.512925148010254


def linear_betas(num_steps: int = TRAINED_STEPS) -> np.ndarray:  # -> (num_steps,) float64
    # ref: get_named_beta_schedule("linear", n): Ho et al.'s 1e-4 .. 0.02, scaled by 1000 / n
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def space_timesteps(num_timesteps: int, section_counts) -> set:
    """The original timesteps kept: each of len(section_counts) equal sections strided to its count.

    ref: tortoise/utils/diffusion.py space_timesteps (a "ddimN" string takes the stride giving exactly N steps)."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired:
                    return set(range(0, num_timesteps, i))
            raise ValueError(f"cannot create exactly {num_timesteps} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))  # Python's round: ties to even, as Tortoise
            cur += stride
        start += size
    return set(steps)


class Schedule:
    """A (respaced) Gaussian diffusion schedule: GaussianDiffusion.__init__'s arrays, float64, shape (N,).

    Schedule.respaced(steps) is SpacedDiffusion(space_timesteps(4000, [steps]), betas=linear_betas(4000))."""

    def __init__(self, betas, timestep_map=None):
        betas = np.asarray(betas, np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.betas = betas  # (N,)
        self.num_timesteps = len(betas)
        self.timestep_map = np.arange(len(betas)) if timestep_map is None else np.asarray(timestep_map, np.int64)
        ac = np.cumprod(1.0 - betas)  # alphas_cumprod
        ac_prev = np.append(1.0, ac[:-1])
        self.alphas_cumprod = ac
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1)
        self.posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
        # clipped: the posterior variance is 0 at step 0, so step 1's stands in for it
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(ac_prev) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac)
        self.log_betas = np.log(betas)

    @classmethod
    def respaced(cls, steps: int, trained_steps: int = TRAINED_STEPS) -> "Schedule":
        # ref: SpacedDiffusion.__init__: new betas from the kept steps' alphas_cumprod
        use = space_timesteps(trained_steps, [steps])
        base = np.cumprod(1.0 - linear_betas(trained_steps))  # (trained_steps,)
        last, betas, tmap = 1.0, [], []
        for i, ac in enumerate(base):
            if i in use:
                betas.append(1 - ac / last)
                last = ac
                tmap.append(i)
        return cls(np.array(betas), tmap)

    def coef(self, name: str, n: int):  # a float32 scalar, as _extract_into_tensor rounds it
        return f32(getattr(self, name)[n])


def denormalize_tacotron_mel(norm_mel):  # (...) -> (...)
    # ref: tortoise/utils/audio.py denormalize_tacotron_mel: [-1, 1] -> log-mel
    return ((norm_mel + 1) / 2) * (TACOTRON_MEL_MAX - TACOTRON_MEL_MIN) + TACOTRON_MEL_MIN


def output_length(latent_frames: int) -> int:
    # ref: do_spectrogram_diffusion: 22 kHz latent codes (1024 samples each) -> 24 kHz mel frames (256 samples each)
    return latent_frames * 4 * 24000 // 22050


class _Noise:
    """The sampler's standard-normal draws, in Tortoise's order: injected, or from a Generator."""

    def __init__(self, shape, noise, rng):
        self.shape, self.rng, self.count = tuple(shape), rng, 0
        self.it = None if noise is None else iter(noise)

    def __call__(self):  # -> (B, M, T) float32
        self.count += 1
        if self.it is None:
            return self.rng.standard_normal(self.shape, dtype=f32)
        try:
            z = np.asarray(next(self.it), f32)
        except StopIteration:
            raise ValueError(f"the injected noise ran out at draw {self.count}: give the N + 1 draws "
                             f"(x_N's, then one per step)") from None
        if z.shape != self.shape:
            raise ValueError(f"injected noise draw {self.count - 1} has shape {z.shape}, expected {self.shape}")
        return z


def p_sample_loop(model: typing.Callable, shape, schedule: Schedule, *, cond_free: bool = True,
                  cond_free_k: float = 1.0, temperature: float = 1.0, noise=None, rng=None, seed=None,
                  progress: typing.Callable | None = None, guided: typing.Callable | None = None):
    # -> (B, M, T) float32, normalized to [-1, 1]-ish
    """Ancestral sampling from x_N = noise * temperature down to x_0 (GaussianDiffusion.p_sample_loop).

    model(x, t, conditioning_free) -> (B, 2M, T): t is the original timestep (B,). progress(n_done, N), if given,
    is called after every step. noise: N + 1 injected draws (see the module docstring); otherwise rng, or
    numpy.random.default_rng(seed). guided(x, t) -> (model(x, t, False), model(x, t, True)), if given, runs a
    guided step's two passes at once (DiffusionTts.forward_guided: one batch of 2B)."""
    shape = tuple(shape)
    B, M = shape[:2]
    draw = _Noise(shape, noise, rng if rng is not None else np.random.default_rng(seed))
    x = draw() * f32(temperature)  # (B, M, T): do_spectrogram_diffusion's torch.randn(...) * temperature
    N = schedule.num_timesteps
    for done, n in enumerate(range(N - 1, -1, -1), start=1):
        t = np.full((B,), schedule.timestep_map[n], np.int64)  # (B,) original timestep
        if cond_free and guided is not None:
            out, out_free = (np.asarray(o, f32) for o in guided(x, t))  # (B, 2M, T) each
        else:
            out, out_free = np.asarray(model(x, t, False), f32), None  # (B, 2M, T)
        if out.shape != (B, 2 * M, *shape[2:]):
            raise ValueError(f"the model returned shape {out.shape}, expected {(B, 2 * M, *shape[2:])}")
        eps, v = out[:, :M], out[:, M:]  # (B, M, T) each
        # ref: p_mean_variance, model_var_type learned_range: v in [-1, 1] spans [posterior var, beta]
        min_log, max_log = schedule.coef("posterior_log_variance_clipped", n), schedule.coef("log_betas", n)
        frac = (v + f32(1)) / f32(2)
        log_var = frac * max_log + (f32(1) - frac) * min_log  # (B, M, T)
        if cond_free:
            eps_free = (out_free if out_free is not None else np.asarray(model(x, t, True), f32))[:, :M]  # (B, M, T)
            k = cond_free_k * (1 - n / N)  # the ramp: full strength at the noisy end
            eps = f32(1 + k) * eps - f32(k) * eps_free
        x0 = schedule.coef("sqrt_recip_alphas_cumprod", n) * x - schedule.coef("sqrt_recipm1_alphas_cumprod", n) * eps
        x0 = np.clip(x0, f32(-1), f32(1))  # clip_denoised=True
        mean = schedule.coef("posterior_mean_coef1", n) * x0 + schedule.coef("posterior_mean_coef2", n) * x
        z = draw()  # drawn on the last step too (multiplied by 0 there), as p_sample's randn_like
        x = mean + f32(n != 0) * np.exp(f32(0.5) * log_var) * z  # (B, M, T)
        if progress is not None:
            progress(done, N)
    return x


def spectrogram_diffusion(model, latents, conditioning_latent, *, steps: int = 100, cond_free: bool = True,
                          cond_free_k: float = 2.0, temperature: float = 1.0, noise=None, rng=None, seed=None,
                          progress=None):  # (B, S, C_lat), (B, 2C) -> (B, M, T) float32 log-mel
    """Tortoise's do_spectrogram_diffusion with load_discrete_vocoder_diffuser(desired_diffusion_steps=steps):
    a DiffusionTts (pyclvp/speech/diffusion.py) turns the autoregressive latents into a denormalized mel.

    Presets (tortoise/api.py): ultra_fast 30 steps without cond_free, fast 80, standard 200, high_quality 400;
    cond_free_k 2, temperature 1."""
    latents = np.asarray(latents, f32)
    T = output_length(latents.shape[1])
    shape = (latents.shape[0], model.cfg.in_channels, T)
    emb = model.timestep_independent(latents, conditioning_latent, T, False)  # (B, C, T)

    def run(x, t, conditioning_free):  # (B, M, T), (B,) -> (B, 2M, T)
        return model.forward(x, t, emb, conditioning_free=conditioning_free)

    def guided(x, t):  # (B, M, T), (B,) -> (B, 2M, T) conditioned, (B, 2M, T) conditioning-free
        return model.forward_guided(x, t, emb)

    mel = p_sample_loop(run, shape, Schedule.respaced(steps), cond_free=cond_free, cond_free_k=cond_free_k,
                        temperature=temperature, noise=noise, rng=rng, seed=seed, progress=progress,
                        guided=guided if hasattr(model, "forward_guided") else None)
    return denormalize_tacotron_mel(mel)[:, :, :T].astype(f32)  # (B, M, T)
