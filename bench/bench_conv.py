"""Time the convolution ops on the full-size HiFi-GAN's layer shapes: pyclvp's CPU kernels vs torch vs the NumPy reference.

    python bench/bench_conv.py [--threads 1 2] [--site DIR] [--no-numpy] [--quick]
    # with torch from another venv (pyclvp never imports torch; only this script, when it can):
    /work/venv-conv-ref/bin/python bench/bench_conv.py --site /work/venv-conv/lib/python3.11/site-packages

HiFi-GAN (the Tortoise/UnivNet-era V1 generator at full size): conv_pre 1024 -> 512 (K 7), four
upsamplings by 8, 8, 2, 2 (ConvTranspose1d, K = 2 u, padding u / 2) to 256, 128, 64, 32 channels, after
each three resblocks (K 3 / 7 / 11; per kernel six convs: dilations 1, 3, 5, then three with dilation 1),
conv_post 32 -> 1 (K 7). T0 = 94 frames into conv_pre give 94 * 256 = 24064 samples (~1 s at 24 kHz).
Each distinct shape is timed once and counted with its multiplicity in the total.

Each thread count runs in a child process with PYCLVP_NUM_THREADS, OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS set (torch.set_num_threads too), so NumPy's BLAS uses the same count. Within
it the implementations are called in turn, round after round, and the minimum is reported (the
median beside it): on a shared machine, load from other processes then hits them alike. Without
torch importable, its column is left empty.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

T0 = 94


def layers(t0=T0):
    """[(name, op, Cin, Cout, T, K, kwargs, count)] for the full-size HiFi-GAN."""
    out = [("conv_pre", "conv1d", 1024, 512, t0, 7, dict(padding=3), 1)]
    C, T = 512, t0
    for i, u in enumerate((8, 8, 2, 2)):
        out.append((f"up{i}", "conv_transpose1d", C, C // 2, T, 2 * u, dict(stride=u, padding=u // 2), 1))
        C, T = C // 2, T * u
        for K in (3, 7, 11):
            for d, n in ((1, 4), (3, 1), (5, 1)):
                out.append((f"res{i} k{K} d{d}", "conv1d", C, C, T, K, dict(padding=d * (K - 1) // 2, dilation=d), n))
    out.append(("conv_post", "conv1d", 32, 1, T, 7, dict(padding=3), 1))
    return out


def _time_interleaved(fns, min_time, min_reps, clock=time.perf_counter):
    """{name: (min, median) ms}: the functions are called in turn, round after round, so that load from
    other processes (this machine is shared) hits all of them alike; the minimum is the figure to compare."""
    for f in fns.values():
        f()  # warm up (allocations, thread pool)
    times = {k: [] for k in fns}
    t_end = time.perf_counter() + min_time
    rounds = 0
    while rounds < min_reps or time.perf_counter() < t_end:
        for k, f in fns.items():
            t = clock()
            f()
            times[k].append(clock() - t)
        rounds += 1
        if rounds >= 100:
            break
    return {k: (min(v) * 1e3, sorted(v)[len(v) // 2] * 1e3) for k, v in times.items()}


def child(impls, quick, min_time, cpu_time=False):
    import numpy as np

    from pyclvp.ops import get_ops

    torch = None
    if "torch" in impls:
        import torch
        import torch.nn.functional as F
    rng = np.random.default_rng(0)
    res = {}
    clock = time.process_time if cpu_time else time.perf_counter
    for name, op, Cin, Cout, T, K, kw, _ in layers():
        x = rng.standard_normal((1, Cin, T)).astype(np.float32)
        w = (rng.standard_normal((Cout, Cin, K) if op == "conv1d" else (Cin, Cout, K)) * 0.05).astype(np.float32)
        b = rng.standard_normal(Cout).astype(np.float32)
        fns = {}
        for impl in impls:
            if impl == "torch":
                xt, wt, bt, fn = *map(torch.from_numpy, (x, w, b)), getattr(F, op)
                fns[impl] = lambda fn=fn, xt=xt, wt=wt, bt=bt: fn(xt, wt, bt, **kw)
            else:
                fn = getattr(get_ops("numpy" if impl == "numpy" else "cpu"), op)
                fns[impl] = lambda fn=fn: fn(x, w, b, **kw)
        if torch is not None:
            with torch.inference_mode():
                res[name] = _time_interleaved(fns, 0.05 if quick else min_time, 1 if quick else 5, clock)
        else:
            res[name] = _time_interleaved(fns, 0.05 if quick else min_time, 1 if quick else 5, clock)
    return res


def run_child(impls, threads, quick, site, min_time, cpu_time=False):
    env = dict(os.environ, PYCLVP_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    args = [sys.executable, __file__, "--child", ",".join(impls), "--nthreads", str(threads)]
    args += (["--quick"] if quick else []) + (["--site", site] if site else []) + ["--min-time", str(min_time)]
    args += ["--cpu-time"] if cpu_time else []
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[1]))
    if proc.returncode != 0:
        sys.exit(f"[x{threads}] child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--site", default=None, help="a site-packages folder to add (.pth files included) for pyclvp, "
                                                 "e.g. the build venv's when running under torch's venv")
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference's column")
    ap.add_argument("--quick", action="store_true", help="one round per shape")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds of rounds per shape (at most 100 rounds)")
    ap.add_argument("--cpu-time", action="store_true", help="time CPU seconds of the process (process_time) instead of "
                    "wall time: a machine shared with other processes disturbs them far less (with 2 threads: the "
                    "CPU spent by both, not the latency)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--nthreads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.site:
        import site

        site.addsitedir(args.site)
    if args.child:
        impls = args.child.split(",")
        if "torch" in impls:
            import torch

            torch.set_num_threads(args.nthreads)
        print(json.dumps(child(impls, args.quick, args.min_time, args.cpu_time)))
        return 0

    impls = ["pyclvp"]
    try:
        import torch

        impls.append("torch")
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
        print("# torch is not importable here: no torch column (run under an interpreter with torch, with --site "
              "or PYTHONPATH for pyclvp)", file=sys.stderr)
    if not args.no_numpy:
        impls.append("numpy")
    from pyclvp import _core

    info = _core.build_info()
    print(f"# pyclvp ISA {info['isa_active']} (supported {', '.join(info['isas_supported'])}), compiler {info['compiler']}"
          f"; torch {torch_version}; figures: min over interleaved rounds (median in parentheses), "
          f"{'CPU ms' if args.cpu_time else 'ms'} per call; load average {os.getloadavg()}")
    L = layers()
    cols = ["pyclvp", "torch", "numpy"]
    for n in args.threads:
        res = run_child(impls, n, args.quick, args.site, args.min_time, args.cpu_time)
        print(f"\n## {n} thread(s); total = sum over the generator's {sum(l[-1] for l in L)} convs (n = count)")
        print("| layer | Cin | Cout | T | K | n | pyclvp | torch | numpy | torch / pyclvp |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        tot = {k: [0.0, 0.0] for k in cols}
        for name, op, Cin, Cout, T, K, kw, cnt in L:
            r = res[name]
            for k in r:
                tot[k][0] += r[k][0] * cnt
                tot[k][1] += r[k][1] * cnt
            cell = lambda k: f"{r[k][0]:.2f} ({r[k][1]:.2f})" if k in r else "-"  # noqa: E731
            ratio = f"{r['torch'][0] / r['pyclvp'][0]:.2f}" if "torch" in r else "-"
            print(f"| {name} | {Cin} | {Cout} | {T} | {K} | {cnt} | {cell('pyclvp')} | {cell('torch')} | {cell('numpy')} | "
                  f"{ratio} |")
        cell = lambda k: f"**{tot[k][0]:.1f}** ({tot[k][1]:.1f})" if k in impls else "-"  # noqa: E731
        ratio = f"**{tot['torch'][0] / tot['pyclvp'][0]:.2f}**" if "torch" in impls else "-"
        print(f"| total | | | | | | {cell('pyclvp')} | {cell('torch')} | {cell('numpy')} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
