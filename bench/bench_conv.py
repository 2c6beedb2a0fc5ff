"""Time the convolution ops on the full-size HiFi-GAN's layer shapes: pyclvp's CPU kernels vs torch vs the NumPy reference.

    python bench/bench_conv.py [--threads 1 2] [--torch-python /path/to/venv-with-torch/bin/python] [--quick]

HiFi-GAN (the Tortoise/UnivNet-era V1 generator at full size): conv_pre 1024 -> 512 (K 7), four
upsamplings by 8, 8, 2, 2 (ConvTranspose1d, K = 2 u, padding u / 2) to 256, 128, 64, 32 channels, after
each three resblocks (K 3 / 7 / 11; per kernel six convs: dilations 1, 3, 5, then three with dilation 1),
conv_post 32 -> 1 (K 7). T0 = 94 frames into conv_pre give 94 * 256 = 24064 samples (~1 s at 24 kHz).
Each distinct shape is timed once (median of repeats) and counted with its multiplicity in the total.

Every implementation runs in a child process per thread count, with PYCLVP_NUM_THREADS,
OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set (torch.set_num_threads too), so NumPy's BLAS uses the
same count. torch comes from this interpreter when importable, else from --torch-python; without
either its column is left empty. pyclvp never imports torch: only the torch child does.
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


def _timeit(f, min_time=0.3, min_reps=3):
    f()  # warm up (allocations, thread pool)
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < min_reps or time.perf_counter() < t_end:
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
        if len(times) >= 50:
            break
    times.sort()
    return times[len(times) // 2] * 1e3  # ms


def child(impl, quick):
    import numpy as np

    rng = np.random.default_rng(0)
    res = {}
    for name, op, Cin, Cout, T, K, kw, _ in layers():
        x = rng.standard_normal((1, Cin, T)).astype(np.float32)
        w = (rng.standard_normal((Cout, Cin, K) if op == "conv1d" else (Cin, Cout, K)) * 0.05).astype(np.float32)
        b = rng.standard_normal(Cout).astype(np.float32)
        if impl == "torch":
            import torch
            import torch.nn.functional as F

            xt, wt, bt = map(torch.from_numpy, (x, w, b))
            fn = getattr(F, op)
            f = lambda: fn(xt, wt, bt, **kw)  # noqa: E731
            ctx = torch.inference_mode()
        else:
            from pyclvp.ops import get_ops

            ops = get_ops("numpy" if impl == "numpy" else "cpu")
            fn = getattr(ops, op)
            f = lambda: fn(x, w, b, **kw)  # noqa: E731
            ctx = None
        if ctx is not None:
            with ctx:
                res[name] = _timeit(f, 0.05 if quick else 0.3, 1 if quick else 3)
        else:
            res[name] = _timeit(f, 0.05 if quick else 0.3, 1 if quick else 3)
    return res


def run_child(python, impl, threads, quick):
    env = dict(os.environ, PYCLVP_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    root = str(Path(__file__).resolve().parents[1])
    if impl == "torch":  # the torch interpreter needs no pyclvp: keep it off the path
        env.pop("PYTHONPATH", None)
    args = [python, __file__, "--child", impl, "--nthreads", str(threads)] + (["--quick"] if quick else [])
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=root)
    if proc.returncode != 0:
        print(f"[{impl} x{threads}] failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--torch-python", default=None, help="an interpreter with torch (when this one has none)")
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference's column")
    ap.add_argument("--quick", action="store_true", help="one repeat per shape")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--nthreads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child == "torch":
            import torch

            torch.set_num_threads(args.nthreads)
        print(json.dumps(child(args.child, args.quick)))
        return 0

    torch_python = args.torch_python
    if torch_python is None:
        try:
            import torch  # noqa: F401

            torch_python = sys.executable
        except ImportError:
            print("torch is not importable here and no --torch-python was given: no torch column", file=sys.stderr)
    from pyclvp import _core

    info = _core.build_info()
    print(f"# pyclvp ISA {info['isa_active']} (supported {', '.join(info['isas_supported'])}), compiler {info['compiler']}")
    L = layers()
    for n in args.threads:
        cols = {"pyclvp": run_child(sys.executable, "cpu", n, args.quick)}
        cols["torch"] = run_child(torch_python, "torch", n, args.quick) if torch_python else None
        cols["numpy"] = None if args.no_numpy else run_child(sys.executable, "numpy", n, args.quick)
        print(f"\n## {n} thread(s), ms per call (median); total = sum over the generator's {sum(l[-1] for l in L)} convs")
        print(f"| {'layer':<16} | {'Cin':>4} | {'Cout':>4} | {'T':>5} | {'K':>2} | {'n':>1} | {'pyclvp':>8} | {'torch':>8} | "
              f"{'numpy':>8} | {'torch/pyclvp':>12} |")
        print("|" + "|".join("-" * (w + 2) for w in (16, 4, 4, 5, 2, 1, 8, 8, 8, 12)) + "|")
        tot = {k: 0.0 for k in cols}
        for name, op, Cin, Cout, T, K, kw, cnt in L:
            v = {k: (c[name] if c else None) for k, c in cols.items()}
            for k in cols:
                if v[k] is not None:
                    tot[k] += v[k] * cnt
            f = lambda t: f"{t:8.2f}" if t is not None else f"{'-':>8}"  # noqa: E731
            ratio = f"{v['torch'] / v['pyclvp']:12.2f}" if v["torch"] and v["pyclvp"] else f"{'-':>12}"
            print(f"| {name:<16} | {Cin:4d} | {Cout:4d} | {T:5d} | {K:2d} | {cnt:1d} | {f(v['pyclvp'])} | {f(v['torch'])} | "
                  f"{f(v['numpy'])} | {ratio} |")
        f = lambda k: f"{tot[k]:8.1f}" if cols[k] else f"{'-':>8}"  # noqa: E731
        ratio = f"{tot['torch'] / tot['pyclvp']:12.2f}" if cols["torch"] and cols["pyclvp"] else f"{'-':>12}"
        print(f"| {'total':<16} | {'':4} | {'':4} | {'':5} | {'':2} | {'':1} | {f('pyclvp')} | {f('torch')} | {f('numpy')} | "
              f"{ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
