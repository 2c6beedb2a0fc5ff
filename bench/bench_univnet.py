"""Time the full-size UnivNet vocoder: pyclvp (cpu-base, cpu; numpy on request) vs Tortoise's torch UnivNetGenerator,
on the same seeded weights, in one run.

    /work/venv-ref/bin/python bench/bench_univnet.py --site /work/venv-speed/lib/python3.11/site-packages \\
        [--frames 870] [--threads 2] [--rounds 3] [--impl cpu-base cpu torch]

The weights are tools/ref_univnet.py --full's (UnivNetGenerator(): 100 mel bins, noise 64, 32 channels, strides
8, 8, 4, hop 256; seed 40), read from the gitignored bench/checkpoints/univnet_full/vocoder.pth by both: torch loads
the state dict, pyclvp converts it (pyclvp/convert.py convert_univnet) into a temporary folder. The timed call is
UnivNetGenerator.inference / UnivNet.inference at batch 1 on a mel of T frames (T = 870: 9.28 s of 24 kHz audio, the
length bench_diffusion.py times), with the same noise on both sides. Each implementation is called `rounds` times in
turn, the machine's drift hitting all; the minimum is reported, and the ratio torch / impl (above 1: faster than
torch). Threads: PYCLVP_NUM_THREADS / OMP / OpenBLAS and torch.set_num_threads are set before anything loads.
cpu-base is the cpu backend as it was before the speed branch: location_variable_conv ran the NumPy reference.
"""
from __future__ import annotations

import argparse
import json
import os
import site
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "bench" / "checkpoints" / "univnet_full"
SDIST = Path("/work/tortoise_sdist/tortoise-tts-3.0.0")


def baseline_ops():
    """"cpu-base": CpuOps with location_variable_conv on the NumPy reference (before lvc.cc)."""
    from pyclvp.ops import numpy_ops
    from pyclvp.ops.cpu_ops import CpuOps

    class BaselineOps(CpuOps):
        location_variable_conv = staticmethod(numpy_ops.location_variable_conv)

    return BaselineOps()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=870)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--site", help="a site-packages holding pyclvp (when this python has torch but not pyclvp)")
    ap.add_argument("--impl", nargs="+", default=["cpu-base", "cpu", "torch"])
    ap.add_argument("--sdist", default=str(SDIST), help="the tortoise-tts sdist (for the torch column)")
    args = ap.parse_args()
    for var in ("PYCLVP_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.site:
        site.addsitedir(args.site)
    import numpy as np

    from pyclvp.convert import convert_univnet
    from pyclvp.io.checkpoints import load_weights
    from pyclvp.ops import get_ops
    from pyclvp.speech.univnet import UnivNet, UnivNetConfig, univnet_spec

    if not (CKPT / "vocoder.pth").is_file():
        print(f"no {CKPT}/vocoder.pth: run `python tools/ref_univnet.py --full` (with torch) first")
        return 1
    cfg_json = json.loads((CKPT / "config.json").read_text())
    T = args.frames
    rng = np.random.default_rng(1)
    mel = (rng.standard_normal((1, 100, T), dtype=np.float32) - np.float32(5))  # (1, M, T), a log-mel's range
    noise = rng.standard_normal((1, cfg_json["constructor"]["noise_dim"], T + 10), dtype=np.float32)  # (1, N, T + 10)
    tmp = Path(tempfile.mkdtemp(prefix="bench_univnet_"))
    convert_univnet(CKPT / "vocoder.pth", tmp)
    cfg = UnivNetConfig.from_pretrained(tmp / "univnet")
    weights = load_weights(tmp / "univnet", univnet_spec(cfg))
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
            from tortoise.models.vocoder import UnivNetGenerator

            g = UnivNetGenerator(**cfg_json["constructor"])
            g.load_state_dict(torch.load(CKPT / "vocoder.pth")["model_g"])
            g.eval(inference=True)  # as tortoise/api.py: the weight norm folded

            def run(g=g):
                with torch.no_grad():
                    return g.inference(torch.from_numpy(mel), torch.from_numpy(noise)).numpy()[:, 0]
        else:
            v = UnivNet(weights, cfg, baseline_ops() if impl == "cpu-base" else get_ops(impl))

            def run(v=v):
                return v.inference(mel, noise=noise)
        models[impl] = run
    results, outputs = {}, {}
    for r in range(args.rounds):
        for impl, run in models.items():
            t0 = time.perf_counter()
            outputs[impl] = run()
            results.setdefault(impl, []).append(time.perf_counter() - t0)
            print(f"round {r}: {impl:8s} {results[impl][-1]:8.2f} s", flush=True)
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
