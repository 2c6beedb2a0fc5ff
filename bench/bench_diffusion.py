"""Time one full-size diffusion step (DiffusionTts.forward): pyclvp (numpy reference, cpu backend) vs Tortoise's torch
DiffusionTts, on the same random weights, in one run.

    /work/venv-ref/bin/python bench/bench_diffusion.py --site /work/venv-quality/lib/python3.11/site-packages \\
        [--frames 870] [--threads 2] [--rounds 2] [--impl numpy cpu-base cpu cpu-pair torch]

The model is tortoise/api.py's DiffusionTts (model_channels 1024, 10 layers, 16 heads, 100 mel bins, 1024-wide
latents) with pyclvp.speech.diffusion.random_weights (seed 0), written once to the gitignored
bench/checkpoints/diffusion_full/ (config.json + model.safetensors, ~1.1 GB) and loaded by both. The timed call is
one denoising pass at batch 1 on T mel frames with precomputed aligned embeddings (what every sampler step runs;
conditioning-free guidance runs it twice per step). T = 870 frames is 200 speech tokens (200 * 4 * 24000 // 22050),
~9.3 s of audio at 24 kHz (256 samples per frame). Each implementation is called `rounds` times in turn; the
minimum is reported (the machine is shared). Threads: PYCLVP_NUM_THREADS / OMP / OpenBLAS and
torch.set_num_threads are set before anything loads. The outputs are compared (max abs difference to torch).
cpu-base is the cpu backend as it was before the speed branch (baseline_ops); cpu-pair runs the conditioned and the
conditioning-free pass of a guided step as one batch of 2 (DiffusionTts.forward_guided) and reports half its time.

bench/RESULTS.md extrapolates a per-preset diffusion cost from this one pass (steps * passes per step * seconds per
pass / seconds of speech); the measured per-preset costs of the whole path are bench/bench_quality_path.py's.
"""
from __future__ import annotations

import argparse
import json
import os
import site
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "bench" / "checkpoints" / "diffusion_full"
SDIST = Path("/work/tortoise_sdist/tortoise-tts-3.0.0")


def baseline_ops():
    """"cpu-base": the cpu backend as it was before the speed branch (bench/RESULTS.md "Diffusion: speed"), for an
    interleaved comparison in one run: attention with a per-head mask (the relative-position bias) ran the NumPy
    reference, GroupNorm -> SiLU was two ops and silu ran the NumPy reference."""
    from pyclvp.ops import numpy_ops
    from pyclvp.ops.cpu_ops import CpuOps

    class BaselineOps(CpuOps):
        def attention(self, q, k, v, mask=None, scale=1.0):
            if mask is not None and mask.ndim == 4 and mask.shape[1] != 1:
                return numpy_ops.attention(q, k, v, mask, scale)
            return super().attention(q, k, v, mask, scale)

        silu = staticmethod(numpy_ops.silu)

        def group_norm_silu(self, x, g, b, groups, eps):
            return numpy_ops.silu(self.group_norm(x, g, b, groups, eps))

    return BaselineOps()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=870)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--site", help="a site-packages holding pyclvp (when this python has torch but not pyclvp)")
    ap.add_argument("--impl", nargs="+", default=["numpy", "cpu", "torch"])
    ap.add_argument("--sdist", default=str(SDIST), help="the tortoise-tts sdist (for the torch column)")
    args = ap.parse_args()
    for var in ("PYCLVP_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.site:
        site.addsitedir(args.site)
    import numpy as np

    from pyclvp.io.checkpoints import load_weights
    from pyclvp.io.safetensors import save_file
    from pyclvp.ops import get_ops
    from pyclvp.speech.diffusion import DiffusionConfig, DiffusionTts, diffusion_spec, random_weights

    cfg = DiffusionConfig()  # api.py's constructor arguments
    if not (CKPT / "model.safetensors").is_file():
        print(f"writing {CKPT} (random weights, seed 0) ...", flush=True)
        CKPT.mkdir(parents=True, exist_ok=True)
        save_file(random_weights(cfg, 0), CKPT / "model.safetensors", metadata={"format": "pt"})
        cfg.save_pretrained(CKPT)
    weights = load_weights(CKPT, diffusion_spec(cfg))
    T = args.frames
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, cfg.in_channels, T), dtype=np.float32)  # (1, M, T)
    latents = rng.standard_normal((1, (T * 22050 + 95999) // 96000, cfg.in_latent_channels), dtype=np.float32)
    cond = rng.standard_normal((1, 2 * cfg.model_channels), dtype=np.float32) * np.float32(0.1)
    t = np.array([1234])
    results, outputs = {}, {}
    models = {}
    for impl in args.impl:
        if impl == "torch":
            try:
                import torch
            except ImportError:
                print("torch not importable here: its column is skipped")
                continue
            torch.set_num_threads(args.threads)
            sys.path.insert(0, args.sdist)
            sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
            from tortoise.models.diffusion_decoder import DiffusionTts as TorchDiffusion

            m = TorchDiffusion(model_channels=1024, num_layers=10, in_channels=100, out_channels=200,
                               in_latent_channels=1024, in_tokens=8193, dropout=0, use_fp16=False, num_heads=16,
                               layer_drop=0, unconditioned_percentage=0).eval()
            m.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}, strict=False)
            with torch.no_grad():
                emb = m.timestep_independent(torch.from_numpy(latents), torch.from_numpy(cond), T, False)

            def run(m=m, emb=emb):
                with torch.no_grad():
                    return m(torch.from_numpy(x), torch.from_numpy(t), precomputed_aligned_embeddings=emb).numpy()
        elif impl == "cpu-pair":  # a guided step's two passes as one batch of 2 (forward_guided): time / 2
            m = DiffusionTts(weights, cfg, get_ops("cpu"))
            emb = m.timestep_independent(latents, cond, T, False)

            def run(m=m, emb=emb):
                return m.forward_guided(x, t, emb)[0]
        else:
            m = DiffusionTts(weights, cfg, baseline_ops() if impl == "cpu-base" else get_ops(impl))
            emb = m.timestep_independent(latents, cond, T, False)

            def run(m=m, emb=emb):
                return m.forward(x, t, emb)
        models[impl] = run
    for r in range(args.rounds):
        for impl, run in models.items():
            t0 = time.perf_counter()
            outputs[impl] = run()
            results.setdefault(impl, []).append((time.perf_counter() - t0) / (2 if impl == "cpu-pair" else 1))
            print(f"round {r}: {impl:6s} {results[impl][-1]:8.2f} s", flush=True)
    ref = outputs.get("torch")
    summary = {}
    for impl, times in results.items():
        err = None if ref is None else float(np.abs(outputs[impl] - ref).max())
        summary[impl] = dict(seconds=min(times), median=sorted(times)[len(times) // 2], max_abs_diff_vs_torch=err,
                             torch_over_impl=None if "torch" not in results else min(results["torch"]) / min(times))
    print(json.dumps(dict(frames=T, audio_seconds=T * 256 / 24000, threads=args.threads,
                          load_average=os.getloadavg(), results=summary), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
