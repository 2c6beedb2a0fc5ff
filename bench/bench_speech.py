"""Speech out on the CPU, pyclvp against Tortoise's own torch classes in the same run.

    python bench/bench_speech.py --torch-python /work/venv-ref/bin/python [--seconds 6] [--threads 1 2] [--runs 5]

hifigan: the full-size HiFi-GAN (tortoise/api_fast.py's HifiganGenerator: 1024 latent channels, 512 -> 32 over
    upsamplings 8, 8, 2, 2) with seeded random weights, on latents for `--seconds` of 24 kHz audio: seconds of
    compute per second of audio (the real-time factor, lower is faster) for torch (HifiganGenerator.inference, eager,
    torch.set_num_threads(n)) and pyclvp (Hifigan.inference on the cpu backend, PYCLVP_NUM_THREADS=n), and the
    ratio torch / pyclvp (above 1: pyclvp is faster); cpu_ratio: the same from CPU seconds (process_time), which a
    machine shared with other processes disturbs far less than wall time (at 1 thread the two agree when quiet).
    --check first compares the two waveforms (max abs error). Each figure is the median of `--runs` timed calls after
    one warm-up, each side in its own process, the two sides alternating so that the machine's drift hits both.
    --pair-site DIR then runs both in one process (torch's interpreter, pyclvp imported from DIR), call by call
    alternating, 2 x --runs rounds: min and median ratios and each round's torch / pyclvp.

The torch side needs an interpreter with torch and Tortoise 3.0.0's dependencies (tools/tortoise_env.sh builds
one) and the sdist (TORTOISE_SDIST, default /work/tortoise_sdist/tortoise-tts-3.0.0). The weights are written
once into bench/checkpoints/speech/ (gitignored): hifidecoder.pth by torch (weight-normed, as released), then
converted by pyclvp (pyclvp convert-tortoise --hifigan) into hifigan/.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "checkpoints" / "speech"
SDIST = Path(os.environ.get("TORTOISE_SDIST", "/work/tortoise_sdist/tortoise-tts-3.0.0"))
LATENTS_PER_SECOND = 22050 / 1024  # one speech token (latent) per 1024 samples at 22.05 kHz

# The torch side, run as `python -c TORCH_WORKER <mode> <args>`: writes the checkpoint, or times inference.
TORCH_WORKER = r'''
import json, sys, time, types
import torch
sys.path.insert(0, sys.argv[2])
sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
from tortoise.models.hifigan_decoder import HifiganGenerator
CONFIG = dict(in_channels=1024, out_channels=1, resblock_type="1", resblock_dilation_sizes=[[1, 3, 5]] * 3,
              resblock_kernel_sizes=[3, 7, 11], upsample_kernel_sizes=[16, 16, 4, 4], upsample_initial_channel=512,
              upsample_factors=[8, 8, 2, 2], cond_channels=1024)  # tortoise/api_fast.py
torch.Tensor.to = (lambda to: lambda self, *a, **k: self if a[:1] == ("cuda",) else to(self, *a, **k))(torch.Tensor.to)
mode, path = sys.argv[1], sys.argv[3]
if mode == "write":
    torch.manual_seed(0)
    g = HifiganGenerator(**CONFIG).eval()
    with torch.no_grad():  # weight norm's g = 1 (each output channel's kernel has norm 1), v and plain kernels random
        for name, p in g.named_parameters():
            p.copy_(torch.ones_like(p) if name.endswith("weight_g") else
                    torch.randn(p.shape) * 0.02 if p.ndim > 1 else torch.zeros_like(p))
    torch.save(g.state_dict(), path)
    print(json.dumps(CONFIG))
elif mode == "pair":  # both sides in this one process, their calls alternating
    T, threads, runs, folder = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
    import numpy as np
    sys.path.insert(0, sys.argv[8])  # ahead of a source checkout's pyclvp/ (no built core) in the working directory
    from pyclvp.io.checkpoints import load_weights
    from pyclvp.ops import get_ops
    from pyclvp.speech.hifigan import Hifigan, HifiganConfig, hifigan_spec
    torch.set_num_threads(threads)
    g = HifiganGenerator(**CONFIG).eval()
    g.load_state_dict(torch.load(path))
    cfg = HifiganConfig.from_pretrained(folder)
    dec = Hifigan(load_weights(folder, hifigan_spec(cfg)), cfg, get_ops("cpu"))
    rng = np.random.default_rng(1)
    latents, cond = rng.standard_normal((1, T, 1024), dtype=np.float32), rng.standard_normal((1, 1024), dtype=np.float32)
    sides = dict(torch=lambda: g.inference(torch.from_numpy(latents), torch.from_numpy(cond)),
                 pyclvp=lambda: dec.inference(latents, cond))
    times = {k: [] for k in sides}
    with torch.no_grad():
        for f in sides.values():
            f()  # warm-up
        for r in range(runs):
            for k in (("torch", "pyclvp") if r % 2 == 0 else ("pyclvp", "torch")):
                t0 = time.perf_counter(); sides[k](); times[k].append(time.perf_counter() - t0)
    print(json.dumps(times))
else:
    T, threads, runs = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    torch.set_num_threads(threads)
    g = HifiganGenerator(**CONFIG).eval()
    g.load_state_dict(torch.load(path))
    latents, cond = torch.randn(1, T, 1024, generator=torch.Generator().manual_seed(1)), torch.randn(1, 1024)
    times, cpu = [], []
    with torch.no_grad():
        for i in range(runs + 1):
            t0, c0 = time.perf_counter(), time.process_time(); wav = g.inference(latents, cond)
            times.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
    if len(sys.argv) > 7:  # the inputs and the waveform, for the parity check
        import numpy as np
        np.savez(sys.argv[7], latents=latents.numpy(), cond=cond.numpy(), wav=wav[:, 0].numpy())
    print(json.dumps(dict(times=times[1:], cpu=cpu[1:], samples=int(wav.shape[-1]))))
'''

PYCLVP_WORKER = r'''
import json, sys, time
import numpy as np
from pyclvp.io.checkpoints import load_weights
from pyclvp.ops import get_ops
from pyclvp.speech.hifigan import Hifigan, HifiganConfig, hifigan_spec
folder, T, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = HifiganConfig.from_pretrained(folder)
dec = Hifigan(load_weights(folder, hifigan_spec(cfg)), cfg, get_ops("cpu"))
rng = np.random.default_rng(1)
latents, cond = rng.standard_normal((1, T, 1024), dtype=np.float32), rng.standard_normal((1, 1024), dtype=np.float32)
times, cpu = [], []
for i in range(runs + 1):
    t0, c0 = time.perf_counter(), time.process_time(); wav = dec.inference(latents, cond)
    times.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
print(json.dumps(dict(times=times[1:], cpu=cpu[1:], samples=int(wav.shape[-1]))))
'''


def _run(cmd, env=None) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(torch_python: str) -> Path:
    """bench/checkpoints/speech/{hifidecoder.pth, hifigan/}: written and converted once."""
    OUT.mkdir(parents=True, exist_ok=True)
    pth, folder = OUT / "hifidecoder.pth", OUT / "hifigan"
    if not (folder / "model.safetensors").is_file():
        if not pth.is_file():
            _run([torch_python, "-c", TORCH_WORKER, "write", str(SDIST), str(pth)])
        sys.path.insert(0, str(ROOT))
        from pyclvp.convert import convert_hifigan

        convert_hifigan(pth, OUT)
    return pth


def bench_hifigan(torch_python: str, seconds: float, threads: list, runs: int) -> list:
    pth = prepare(torch_python)
    T = round(seconds * LATENTS_PER_SECOND)
    rows = []
    for n in threads:
        env = dict(os.environ, PYCLVP_NUM_THREADS=str(n), OMP_NUM_THREADS=str(n))
        torch_t, ours_t, torch_c, ours_c, samples = [], [], [], [], 0
        for _ in range(2):  # alternate the two sides twice; each call times `runs` inferences after a warm-up
            t = _run([torch_python, "-c", TORCH_WORKER, "time", str(SDIST), str(pth), str(T), str(n), str(runs)], env)
            o = _run([sys.executable, "-c", PYCLVP_WORKER, str(OUT / "hifigan"), str(T), str(runs)], env)
            torch_t += t["times"]
            ours_t += o["times"]
            torch_c += t["cpu"]
            ours_c += o["cpu"]
            samples = o["samples"]
            assert t["samples"] == o["samples"], (t["samples"], o["samples"])
        audio = samples / 24000
        tm, om = statistics.median(torch_t), statistics.median(ours_t)
        rows.append(dict(threads=n, latents=T, audio_s=round(audio, 3), torch_rtf=round(tm / audio, 4),
                         pyclvp_rtf=round(om / audio, 4), ratio=round(tm / om, 3),
                         torch_s=[round(x, 4) for x in sorted(torch_t)], pyclvp_s=[round(x, 4) for x in sorted(ours_t)],
                         cpu_ratio=round(statistics.median(torch_c) / statistics.median(ours_c), 3),
                         torch_cpu_s=[round(x, 4) for x in sorted(torch_c)],
                         pyclvp_cpu_s=[round(x, 4) for x in sorted(ours_c)], loadavg=os.getloadavg()))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_hifigan_pair(torch_python: str, site: str, seconds: float, threads: list, runs: int) -> list:
    """Both sides in one process (torch's interpreter, pyclvp from `site`), their calls alternating, so that the
    machine's drift between processes (up to 1.6x here) falls on both alike; per-round ratios reported."""
    pth = prepare(torch_python)
    T = round(seconds * LATENTS_PER_SECOND)
    rows = []
    for n in threads:
        env = dict(os.environ, PYCLVP_NUM_THREADS=str(n), OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n))
        t = _run([torch_python, "-c", TORCH_WORKER, "pair", str(SDIST), str(pth), str(T), str(n), str(runs),
                  str(OUT / "hifigan"), site], env)
        ratios = sorted(a / b for a, b in zip(t["torch"], t["pyclvp"]))
        rows.append(dict(threads=n, latents=T, mode="one process", torch_s=[round(x, 4) for x in t["torch"]],
                         pyclvp_s=[round(x, 4) for x in t["pyclvp"]], ratio_min=round(min(t["torch"]) / min(t["pyclvp"]), 3),
                         ratio_median=round(statistics.median(t["torch"]) / statistics.median(t["pyclvp"]), 3),
                         round_ratios=[round(x, 3) for x in ratios], loadavg=os.getloadavg()))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def check_hifigan(torch_python: str, seconds: float) -> dict:
    """Full-size parity: pyclvp's waveform (numpy and cpu backends) against torch's on the same inputs."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from pyclvp.io.checkpoints import load_weights
    from pyclvp.ops import get_ops
    from pyclvp.speech.hifigan import Hifigan, HifiganConfig, hifigan_spec

    pth, T = prepare(torch_python), round(seconds * LATENTS_PER_SECOND)
    ref = OUT / "hifigan_reference.npz"
    _run([torch_python, "-c", TORCH_WORKER, "time", str(SDIST), str(pth), str(T), "1", "0", str(ref)])
    with np.load(ref) as f:
        want = dict(f)
    folder = OUT / "hifigan"
    cfg = HifiganConfig.from_pretrained(folder)
    weights = load_weights(folder, hifigan_spec(cfg))
    row = dict(latents=T, samples=int(want["wav"].shape[-1]), peak=float(np.abs(want["wav"]).max()))
    for backend in ("numpy", "cpu"):
        got = Hifigan(weights, cfg, get_ops(backend)).inference(want["latents"], want["cond"])
        row[f"{backend}_max_abs_error"] = float(np.abs(got - want["wav"]).max())
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-python", required=True, help="an interpreter with torch and Tortoise's dependencies")
    p.add_argument("--seconds", type=float, default=6.0, help="audio to decode (default 6 s)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    p.add_argument("--runs", type=int, default=3, help="timed calls per process (default 3)")
    p.add_argument("--check", action="store_true", help="first compare the full-size waveforms (max abs error)")
    p.add_argument("--pair-site", default=None, help="also time both sides in one process, alternating call by call: "
                   "a folder holding an importable pyclvp (the package with its built _core) for --torch-python")
    args = p.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename} {os.cpu_count()} CPUs")
    if args.check:
        check_hifigan(args.torch_python, args.seconds)
    bench_hifigan(args.torch_python, args.seconds, args.threads, args.runs)
    if args.pair_site:
        bench_hifigan_pair(args.torch_python, args.pair_site, args.seconds, args.threads, 2 * args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
