"""Decode benchmarks for the C++ CPU core, side by side with transformers.

    python bench/make_checkpoint.py && python bench/make_checkpoint.py --dtype bfloat16
    python bench/bench_decode.py [--new-tokens 32] [--jobs load,decode1,decode16,bf16,job16,job96,speech,...]
                                 [--torch-python PYTHON] [--json out.json]

Every job runs in a fresh subprocess (`--worker pyclvp|transformers --job NAME`), so each one's load time
and peak RSS are its own. The transformers side runs when a Python with torch and transformers is
given (--torch-python, default: this interpreter if it has them); that worker imports no pyclvp.

Jobs, on the full-size checkpoint of bench/make_checkpoint.py (decoder 30 x 1024, vocab 8194):
  load      from_pretrained(..., backend="cpu"): seconds, and peak RSS against the checkpoint size
  decode1   batch 1: prefill of a P-position prompt (a 40-token text's: 1 + 42 + 1), then N greedy steps
  decode16  the same with 16 rows                                  (end-of-sequence masked: every run decodes N)
  bf16      decode1 with the bfloat16 checkpoint kept in bfloat16 (transformers: its float32 decode1)
  bf16x16   decode16 the same way (transformers: its float32 decode16)
  int8      decode1 with weights="int8" (the decoder's matrices and lm_head; pyclvp/io/q8.py), from the folder
            `pyclvp convert --weights int8` writes (--int8-checkpoint; without it, quantized at load)
  int8x16   decode16 the same way
  int8load  from_pretrained(float32 checkpoint, backend="cpu", weights="int8"): quantization at load, seconds
            and peak RSS (transformers: its load)
  job16     Tortoise's ultra_fast job: 16 sampled candidates (temperature 0.8, top_p 0.8, repetition
            penalty 2.0) for a 40-token text and 6 s of audio (517 mel frames), N new tokens, then the
            speech and text encoders and the scores: model.generate() on both sides, each at its default
            settings otherwise (pyclvp: a bfloat16 KV cache; transformers: its float32 DynamicCache)
  job96     the same with 96 candidates (Tortoise's `fast` preset; pyclvp decodes them 16 rows at a time,
            transformers all 96 together)
  speech    the speech encoder on 16 x 250 tokens
It prints the machine's read bandwidth (a NumPy probe: the best of sum / max / bitwise-or reductions
over 1 GiB, on 1 and on all threads) and the bandwidth decode achieves: bytes of the decoder's
matrices and lm_head (plus the KV cache read) per step / step time.

The two sides decode with explicit loops of identical work (prefill, then one token per row per
step with the Tortoise positions); the greedy step and the eos mask are NumPy/torch one-liners.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "bench" / "checkpoints"
JOBS = ("load", "decode1", "decode16", "bf16", "job16", "job96", "speech", "bf16x16", "int8", "int8x16", "int8load")
DECODE = {"decode1": 1, "decode16": 16, "bf16": 1, "bf16x16": 16, "int8": 1, "int8x16": 16}  # job -> rows
THEIRS = {"bf16": "decode1", "int8": "decode1", "bf16x16": "decode16", "int8x16": "decode16", "int8load": "load"}
INT8_BYTES = 1 + 4 / 32  # per weight: int8 + a float32 scale per 32
CANDIDATES = {"job16": 16, "job96": 96}
P = 44  # prompt positions for a 40-token text: conditioning vector, bos + 40 + eos, start token
TEXT_TOKENS, MEL_FRAMES, SPEECH_SHAPE = 40, 517, (16, 250)  # 6 s at 22.05 kHz, hop 256
EOS = 8193


# ----------------------------------------------------------------------------------------------
# Shared helpers (both workers)


def peak_rss() -> int:  # bytes
    """This process's peak RSS: VmHWM (ru_maxrss would carry the parent's peak over the exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def decoder_bytes(cfg, itemsize: float) -> int:
    """Bytes a decode step must read: every layer's four attention and two MLP matrices, and lm_head."""
    C, F, L, V = cfg["hidden_size"], cfg["n_inner"] or 4 * cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    return int((L * (4 * C * C + 2 * C * F) + V * C) * itemsize)


def kv_bytes(cfg, rows: int, length: int, itemsize: int = 4) -> int:
    return 2 * cfg["num_hidden_layers"] * rows * length * cfg["hidden_size"] * itemsize


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return dict(prompt=(rng.standard_normal((P, 1024)) * 0.02).astype(np.float32),
                text=rng.integers(1, 255, size=(1, TEXT_TOKENS)),
                mel=rng.standard_normal((1, 80, MEL_FRAMES)).astype(np.float32),
                speech=rng.integers(0, 8192, size=SPEECH_SHAPE))


def step_stats(times):
    t = np.asarray(times)
    return dict(steps=len(t), step_median_s=float(np.median(t)), step_min_s=float(t.min()), decode_s=float(t.sum()))


# ----------------------------------------------------------------------------------------------
# pyclvp worker


def pyclvp_worker(job, ckpt, n):
    from pyclvp.model import ClvpModelForConditionalGeneration
    from pyclvp import _core

    dtype = "bfloat16" if job.startswith("bf16") else "float32"
    weights = "int8" if job.startswith("int8") else None
    t0, c0 = time.perf_counter(), time.process_time()
    model = ClvpModelForConditionalGeneration.from_pretrained(ckpt, backend="cpu", dtype=dtype, weights=weights)
    out = dict(load_s=time.perf_counter() - t0, load_cpu_s=time.process_time() - c0, isa=_core.get_isa(),
               threads=_core.get_num_threads())
    x = inputs()
    if job in ("load", "int8load"):
        return out
    if job in DECODE:
        rows = DECODE[job]
        dec = model.decoder
        prompt = np.repeat(x["prompt"][None], rows, axis=0)  # (B, P, C)

        def run(steps):
            state = dec.new_state(rows, P + steps)
            t = time.perf_counter()
            logits = dec.prefill(prompt, None, state)
            prefill = time.perf_counter() - t
            times = []
            for k in range(steps):
                logits[:, EOS] = -np.inf
                t = time.perf_counter()
                logits = dec.step(logits.argmax(-1), np.full(rows, k + 2), state)
                times.append(time.perf_counter() - t)
            return prefill, times

        run(2)  # warm-up: page in the weights, start the threads
        prefill, times = run(n)
        out.update(prefill_s=prefill, rows=rows, **step_stats(times))
    elif job in CANDIDATES:
        t = time.perf_counter()
        res = model.generate(x["text"], x["mel"], num_return_sequences=CANDIDATES[job], do_sample=True, temperature=0.8,
                             top_p=0.8, repetition_penalty=2.0, max_new_tokens=n, min_new_tokens=n, seed=0)
        out.update(job_s=time.perf_counter() - t, tokens=int(res.speech_ids.shape[1]))
    elif job == "speech":
        model.speech_encoder(x["speech"][:2, :16])  # warm-up
        t = time.perf_counter()
        model.speech_encoder(x["speech"])
        out.update(speech_s=time.perf_counter() - t)
    return out


# ----------------------------------------------------------------------------------------------
# transformers worker (imports torch and transformers, no pyclvp)


def transformers_worker(job, ckpt, n):
    import torch
    from transformers import ClvpModelForConditionalGeneration
    from transformers.cache_utils import DynamicCache

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    model = ClvpModelForConditionalGeneration.from_pretrained(ckpt).eval()
    out = dict(load_s=time.perf_counter() - t0, threads=torch.get_num_threads(), torch=torch.__version__)
    x = inputs()
    if job == "load":
        return out
    if job in ("decode1", "decode16"):
        rows = 16 if job == "decode16" else 1
        lm = model.speech_decoder_model
        prompt = torch.from_numpy(np.repeat(x["prompt"][None], rows, axis=0))

        def run(steps):
            cache = DynamicCache(config=lm.config)
            t = time.perf_counter()
            o = lm(inputs_embeds=prompt, cache=cache, use_cache=True,
                   position_ids=torch.zeros((rows, P), dtype=torch.long))  # ClvpDecoder always adds one; timing only
            prefill = time.perf_counter() - t
            logits, times = o.logits[:, -1], []
            for k in range(steps):
                logits[:, EOS] = -float("inf")
                t = time.perf_counter()
                o = lm(input_ids=logits.argmax(-1)[:, None], cache=cache, use_cache=True,
                       position_ids=torch.full((rows, 1), k + 2))
                logits = o.logits[:, -1]
                times.append(time.perf_counter() - t)
            return prefill, times

        run(2)
        prefill, times = run(n)
        out.update(prefill_s=prefill, rows=rows, **step_stats(times))
    elif job in CANDIDATES:
        torch.manual_seed(0)
        t = time.perf_counter()
        res = model.generate(input_ids=torch.from_numpy(x["text"]), input_features=torch.from_numpy(x["mel"]),
                             num_return_sequences=CANDIDATES[job], do_sample=True, temperature=0.8, top_p=0.8,
                             repetition_penalty=2.0, max_new_tokens=n, min_new_tokens=n,
                             return_dict_in_generate=True)  # (5.24's tuple path never binds speech_ids)
        out.update(job_s=time.perf_counter() - t, tokens=int(res.speech_ids.shape[1]))
    elif job == "speech":
        ids = torch.from_numpy(x["speech"])
        model.speech_encoder_model(input_ids=ids[:2, :16])
        t = time.perf_counter()
        model.speech_encoder_model(input_ids=ids)
        out.update(speech_s=time.perf_counter() - t)
    return out


# ----------------------------------------------------------------------------------------------
# The parent: bandwidth probe, subprocesses, report


def read_bandwidth(nbytes=1 << 30, repeats=3):
    """Best NumPy read bandwidth (GB/s): reductions over 1 GiB on one thread and on all of them, and
    BLAS (a dot product and a matrix-vector product, threaded by NumPy's BLAS itself)."""
    a = np.ones(nbytes // 4, np.float32)
    nt_all = os.cpu_count() or 1

    def threaded(fn, nt):
        parts = np.array_split(a, nt)

        def run():
            ths = [threading.Thread(target=fn, args=(p,)) for p in parts]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
        return run

    half = a[: a.size // 2], a[a.size // 2:]
    m = a.reshape(1 << 14, -1)
    v = np.ones(m.shape[1], np.float32)
    probes = {f"{name} x{nt}": threaded(fn, nt) for name, fn in
              (("sum", np.sum), ("max", np.max), ("or", lambda p: np.bitwise_or.reduce(p.view(np.uint64))))
              for nt in sorted({1, nt_all})}
    probes["blas dot"] = lambda: np.dot(*half)
    probes["blas gemv"] = lambda: m @ v
    best = {}
    for name, run in probes.items():
        t_best = np.inf
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            t_best = min(t_best, time.perf_counter() - t)
        best[name] = a.nbytes / t_best / 1e9
    return max(best.values()), best


def run_worker(python, side, job, ckpt, n):
    env = dict(os.environ)
    if side == "pyclvp":
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # NumPy's BLAS threads would spin beside the core's pool
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [python, __file__, "--worker", side, "--job", job, "--checkpoint", str(ckpt), "--new-tokens", str(n)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return dict(error=(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"])
    return json.loads(lines[-1])


def best_of(repeat, *worker_args):
    """The fastest of `repeat` runs (this machine is shared: the slow runs measure the neighbours)."""
    runs = [run_worker(*worker_args) for _ in range(max(repeat, 1))]
    key = next((k for k in ("step_median_s", "job_s", "speech_s", "load_s") if k in runs[0]), None)
    return min(runs, key=lambda r: r.get(key, np.inf)) if key else runs[0]


def has_torch(python) -> bool:
    code = "import torch, transformers"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def report(res, cfg, sizes, bw, n):
    """One line per job: pyclvp's figures, transformers', the ratio; bandwidth and RSS against their limits."""
    lines = []

    def ratio(theirs, ours):
        return f"{theirs / ours:.2f}x" if theirs and ours else "n/a"

    def rss_line(side, job, rows=0):
        size = sizes["bf16" if job.startswith("bf16") else "f32"]
        factor = 0.3 if job.startswith("int8") else 1.15  # int8: <= 0.3 x (the float32 checkpoint + KV cache)
        kv = kv_bytes(cfg, rows, P + n)
        limit = factor * (size + kv) if job.startswith("int8") else factor * size + kv
        sum_ = f"({size / 1e9:.2f} GB + KV)" if job.startswith("int8") else f"{size / 1e9:.2f} GB + KV"
        return f"peak RSS {side['rss'] / 1e9:.2f} GB (limit {factor} x {sum_} = {limit / 1e9:.2f})"

    for job, sides in res.items():
        p, t = sides.get("pyclvp", {}), sides.get("transformers", {})
        if "error" in p:
            lines.append(f"{job:9s} pyclvp failed: {p['error']}")
            continue
        theirs = ""
        if job in ("load", "int8load"):
            ours = f"{p['load_s']:.3f} s ({p['load_cpu_s']:.2f} s CPU), {rss_line(p, job)}"
            if "load_s" in t:
                theirs = f"{t['load_s']:.2f} s, peak RSS {t['rss'] / 1e9:.2f} GB"
        elif job in DECODE:
            rows, step = p["rows"], p["step_median_s"]
            itemsize = 2 if job.startswith("bf16") else INT8_BYTES if job.startswith("int8") else 4
            nbytes = decoder_bytes(cfg, itemsize) + kv_bytes(cfg, rows, P + n // 2)
            ours = (f"{rows / step:6.2f} tok/s (step median {step * 1e3:.1f} ms, min {p['step_min_s'] * 1e3:.1f} ms; "
                    f"prefill {p['prefill_s']:.2f} s); {nbytes / step / 1e9:.1f} GB/s = {nbytes / step / 1e9 / bw:.0%} "
                    f"of read BW; {rss_line(p, job, rows)}")
            if "step_median_s" in t:
                theirs = (f"float32 {t['rows'] / t['step_median_s']:6.2f} tok/s (prefill {t['prefill_s']:.2f} s) "
                          f"-> {ratio(t['step_median_s'], step)}")
            base = {"int8": "bf16", "int8x16": "bf16x16"}.get(job)
            if base in res and "step_median_s" in res[base].get("pyclvp", {}):
                ours += f"; vs pyclvp {base}: {ratio(res[base]['pyclvp']['step_median_s'], step)}"
        elif job in CANDIDATES:
            ours = f"{p['job_s']:.1f} s ({p['tokens']} tokens/candidate)"
            if "job_s" in t:
                theirs = f"{t['job_s']:.1f} s -> {ratio(t['job_s'], p['job_s'])}"
        else:  # speech
            ours = f"{p['speech_s']:.2f} s"
            if "speech_s" in t:
                theirs = f"{t['speech_s']:.2f} s -> {ratio(t['speech_s'], p['speech_s'])}"
        lines.append(f"{job:9s} pyclvp {ours}" + (f" | transformers {theirs}" if theirs else ""))
        lines.append(" " * 10 + " | ".join(f"{name}: process CPU {side['cpu_s']:.1f} s, load {side['load'][0]:.2f} -> "
                                           f"{side['load'][1]:.2f}" for name, side in (("pyclvp", p), ("transformers", t))
                                           if "cpu_s" in side))
    return "\n".join(lines)


def main(argv=None) -> int:
    from bench_cuda import delegate  # --backend cuda: the GPU benchmark, bench/bench_cuda.py

    if (code := delegate(argv)) is not None:
        return code
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["cpu", "cuda"], default="cpu", help="cuda: see bench/bench_cuda.py")
    ap.add_argument("--checkpoint", type=Path, default=CKPT / "clvp-default-float32")
    ap.add_argument("--bf16-checkpoint", type=Path, default=CKPT / "clvp-default-bfloat16")
    ap.add_argument("--int8-checkpoint", type=Path, default=CKPT / "clvp-default-int8",
                    help="`pyclvp convert CHECKPOINT -o DIR --weights int8`; absent: the int8 jobs quantize at load")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--jobs", default=",".join(JOBS))
    ap.add_argument("--torch-python", default=None, help="a Python with torch + transformers (default: this one, if it has them)")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="run every worker this many times, keep the fastest")
    ap.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    ap.add_argument("--worker", choices=["pyclvp", "transformers"], help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        fn = pyclvp_worker if args.worker == "pyclvp" else transformers_worker
        load0 = os.getloadavg()[0]
        out = fn(args.job, args.checkpoint, args.new_tokens)
        t = os.times()  # the shared machine: the CPU seconds this process got, and the load around it
        out.update(rss=peak_rss(), cpu_s=t.user + t.system, load=[load0, os.getloadavg()[0]])
        print(json.dumps(out))
        return 0

    jobs = [j for j in args.jobs.split(",") if j]
    unknown = set(jobs) - set(JOBS)
    if unknown:
        ap.error(f"unknown jobs {sorted(unknown)}; choose from {JOBS}")
    for ck in (args.checkpoint,) + ((args.bf16_checkpoint,) if any(j.startswith("bf16") for j in jobs) else ()):
        if not (ck / "model.safetensors").is_file():
            ap.error(f"no checkpoint at {ck}: run bench/make_checkpoint.py (--dtype bfloat16 for the bf16 job)")
    torch_python = args.torch_python or sys.executable
    with_torch = not args.no_transformers and has_torch(torch_python)
    cfg = json.loads((args.checkpoint / "config.json").read_text())["decoder_config"]
    sizes = {name: (ck / "model.safetensors").stat().st_size if (ck / "model.safetensors").is_file() else 0
             for name, ck in (("f32", args.checkpoint), ("bf16", args.bf16_checkpoint))}

    bw, probes = read_bandwidth()  # (its 1 GiB array is freed before the workers start)
    print(f"read bandwidth (NumPy probe): {bw:.1f} GB/s  ({', '.join(f'{k} {v:.1f}' for k, v in probes.items())})")
    print(f"{os.cpu_count()} CPUs; N = {args.new_tokens} new tokens; transformers side: "
          f"{torch_python if with_torch else 'off (no torch/transformers)'}", flush=True)
    res = {}
    for job in jobs:
        int8_file = job in ("int8", "int8x16") and (args.int8_checkpoint / "model.safetensors").is_file()
        ck = args.bf16_checkpoint if job.startswith("bf16") else args.int8_checkpoint if int8_file else args.checkpoint
        res[job] = {"pyclvp": best_of(args.repeat, sys.executable, "pyclvp", job, ck, args.new_tokens)}
        if with_torch:
            tjob = THEIRS.get(job, job)  # bf16 and int8 are compared with transformers in float32
            res[job]["transformers"] = best_of(args.repeat, torch_python, "transformers", tjob, args.checkpoint,
                                               args.new_tokens)
        print(json.dumps({job: res[job]}), flush=True)
    print()
    print(report(res, cfg, sizes, bw, args.new_tokens))
    if args.json:
        args.json.write_text(json.dumps(dict(bandwidth=bw, probes=probes, new_tokens=args.new_tokens, results=res), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
