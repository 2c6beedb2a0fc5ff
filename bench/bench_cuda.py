"""GPU decode benchmarks: pyclvp's CUDA core beside transformers' eager CUDA model, in the same run.

    python bench/make_checkpoint.py --dtype float16
    python bench/bench_decode.py --backend cuda [--jobs decode1,decode16,decode256,job16] [--new-tokens 64]
                                 [--checkpoint DIR] [--dtype float16|bfloat16|float32] [--no-graph]
                                 [--no-transformers] [--torch-python PYTHON] [--json out.json]

(bench/bench_decode.py hands `--backend cuda` to this file; `python bench/bench_cuda.py ...` is the same.)

Every job runs in a fresh subprocess with the GPU to itself. Jobs, on the full-size checkpoint of
bench/make_checkpoint.py (decoder 30 x 1024, vocab 8194), weights in --dtype (float16 by default, the
issue's "half-precision decode"; the KV cache in the same dtype):
  decode1, decode16, decode256   B rows: prefill of the P = 44-position prompt of a 40-token text, then
                                 N greedy steps (end-of-sequence masked: every run decodes N); tokens/s
                                 from the median step
  job16                          Tortoise's ultra_fast job: model.generate() of 16 sampled candidates
                                 (temperature 0.8, top_p 0.8, repetition penalty 2.0) for a 40-token text
                                 and 6 s of audio, N new tokens, then both encoders and the scores
transformers runs the same work (ClvpForCausalLM with a DynamicCache, and generate()) in --dtype on
the GPU, eagerly, as shipped. The transformers worker also measures the device's bandwidth: a 2 GiB
device-to-device copy, bytes read + written over time (torch CUDA events).

Roofline, as bench_decode.py counts it: a step reads every decoder matrix and lm_head once
(decoder_bytes) plus the KV cache so far; bytes / step time is the achieved bandwidth, reported as a
share of the measured copy bandwidth. Issue 9's targets: batch-1 half-precision decode >= 60% of that
roofline and >= 5x transformers' eager float16; batch 16 >= 2x.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import CKPT, MEL_FRAMES, P, ROOT, TEXT_TOKENS, decoder_bytes, kv_bytes, step_stats  # noqa: E402

JOBS = ("decode1", "decode16", "decode256", "job16")
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


def rows_of(job: str) -> int:
    return int(job[len("decode"):])


def inputs(C: int, seed=0):  # a prompt of the checkpoint's width; the text and mel of bench_decode's jobs
    rng = np.random.default_rng(seed)
    return dict(prompt=(rng.standard_normal((P, C)) * 0.02).astype(np.float32),
                text=rng.integers(1, 255, size=(1, TEXT_TOKENS)),
                mel=rng.standard_normal((1, 80, MEL_FRAMES)).astype(np.float32))


def timed_decode(prefill, step, n, eos):
    """prefill() -> logits; then n greedy steps with eos masked; (prefill seconds, per-step seconds)."""
    t = time.perf_counter()
    logits = prefill()
    pre = time.perf_counter() - t
    times = []
    for k in range(n):
        logits[:, eos] = -np.inf
        t = time.perf_counter()
        logits = step(logits.argmax(-1), k)
        times.append(time.perf_counter() - t)
    return pre, times


# ----------------------------------------------------------------------------------------------
# pyclvp worker


def pyclvp_worker(job, ckpt, n, dtype, graph=True):
    os.environ["PYCLVP_CUDA_GRAPH"] = "1" if graph else "0"  # read by CudaDecoder
    from pyclvp import _core
    from pyclvp.model import ClvpModelForConditionalGeneration

    t0 = time.perf_counter()
    model = ClvpModelForConditionalGeneration.from_pretrained(ckpt, backend="cuda", dtype=dtype)
    out = dict(load_s=time.perf_counter() - t0, device=(_core.build_info()["cuda_devices"] or ["?"])[0])
    cfg = model.config.decoder_config
    x = inputs(cfg.hidden_size)
    if job.startswith("decode"):
        rows, dec = rows_of(job), model.decoder  # a CudaDecoder
        prompt = np.repeat(x["prompt"][None], rows, axis=0)  # (B, P, C)

        def run(steps):
            state = dec.new_state(rows, P + steps, cache_dtype=dtype)
            return timed_decode(lambda: dec.prefill(prompt, None, state),
                                lambda ids, k: dec.step(ids, np.full(rows, k + 2), state), steps, cfg.eos_token_id)

        run(2)  # warm-up: first launches, allocator
        prefill, times = run(n)
        out.update(prefill_s=prefill, rows=rows, first_step_s=times[0], **step_stats(times[1:]))  # [0]: graph capture
    else:  # job16
        t = time.perf_counter()
        res = model.generate(x["text"], x["mel"], num_return_sequences=16, do_sample=True, temperature=0.8,
                             top_p=0.8, repetition_penalty=2.0, max_new_tokens=n, min_new_tokens=n, seed=0)
        out.update(job_s=time.perf_counter() - t, tokens=int(res.speech_ids.shape[1]))
    return out


# ----------------------------------------------------------------------------------------------
# transformers worker (torch + transformers, no pyclvp)


def copy_bandwidth(torch, device, nbytes=2 << 30, repeats=10):
    """Device-to-device copy bandwidth (GB/s, bytes read + written), best of `repeats`, CUDA events."""
    if device != "cuda":
        return None
    a = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    best = np.inf
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop) / 1e3)
    return 2 * a.numel() / best / 1e9


def transformers_worker(job, ckpt, n, dtype, device):
    import torch
    from transformers import ClvpModelForConditionalGeneration
    from transformers.cache_utils import DynamicCache

    torch.set_grad_enabled(False)
    tdtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    out = dict(torch=torch.__version__)
    if device == "cuda":
        out.update(device=torch.cuda.get_device_name(), copy_bw=copy_bandwidth(torch, device))
    t0 = time.perf_counter()
    # .to(dtype) also casts the encoders' rotary inv_freq buffers, which from_pretrained leaves float32: with them
    # the encoders' attention turns float32 and generate()'s scoring fails in float16 (transformers 5.17 / 5.24)
    model = ClvpModelForConditionalGeneration.from_pretrained(ckpt, dtype=tdtype).to(device, tdtype).eval()
    out["load_s"] = time.perf_counter() - t0
    cfg = model.config.decoder_config
    x = inputs(cfg.hidden_size)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    if job.startswith("decode"):
        rows = rows_of(job)
        lm = model.speech_decoder_model
        cache_kw = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
        prompt = torch.from_numpy(np.repeat(x["prompt"][None], rows, axis=0)).to(device, tdtype)

        def run(steps):
            cache = DynamicCache(config=lm.config)

            def prefill():
                o = lm(inputs_embeds=prompt, use_cache=True, position_ids=torch.zeros((rows, P), dtype=torch.long,
                                                                                      device=device), **{cache_kw: cache})
                sync()
                return o.logits[:, -1].float().cpu().numpy()

            def step(ids, k):
                o = lm(input_ids=torch.from_numpy(ids)[:, None].to(device), use_cache=True,
                       position_ids=torch.full((rows, 1), k + 2, device=device), **{cache_kw: cache})
                logits = o.logits[:, -1].float().cpu().numpy()  # the host copy ends the step, as pyclvp's
                return logits

            return timed_decode(prefill, step, steps, cfg.eos_token_id)

        run(2)
        prefill, times = run(n)
        out.update(prefill_s=prefill, rows=rows, first_step_s=times[0], **step_stats(times[1:]))
    else:  # job16
        torch.manual_seed(0)
        t = time.perf_counter()
        res = model.generate(input_ids=torch.from_numpy(x["text"]).to(device),
                             input_features=torch.from_numpy(x["mel"]).to(device, tdtype),
                             num_return_sequences=16, do_sample=True, temperature=0.8, top_p=0.8,
                             repetition_penalty=2.0, max_new_tokens=n, min_new_tokens=n,
                             return_dict_in_generate=True)  # without it, transformers 5.24's generate() fails
        sync()
        out.update(job_s=time.perf_counter() - t, tokens=int(res.speech_ids.shape[1]))
    return out


# ----------------------------------------------------------------------------------------------
# The parent


def run_worker(python, side, job, args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [python, __file__, "--worker", side, "--job", job, "--checkpoint", str(args.checkpoint),
           "--new-tokens", str(args.new_tokens), "--dtype", args.dtype, "--torch-device", args.torch_device]
    cmd += ["--no-graph"] if args.no_graph else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return dict(error=(proc.stderr or proc.stdout).strip().splitlines()[-3:] or ["failed"])
    return json.loads(lines[-1])


def report(res, cfg, dtype, n, copy_bw):
    """One line per job: pyclvp's figures, transformers', the ratio; batch-1 against the roofline."""
    lines = []
    for job, sides in res.items():
        p, t = sides.get("pyclvp", {}), sides.get("transformers", {})
        if "error" in p:
            lines.append(f"{job:10s} pyclvp failed: {p['error']}")
            continue
        if job.startswith("decode"):
            rows, step = p["rows"], p["step_median_s"]
            nbytes = decoder_bytes(cfg, ITEMSIZE[dtype]) + kv_bytes(cfg, rows, P + n // 2, ITEMSIZE[dtype])
            line = (f"{job:10s} pyclvp {rows / step:9.1f} tok/s (step median {step * 1e3:.3f} ms, first "
                    f"{p['first_step_s'] * 1e3:.1f} ms, prefill {p['prefill_s'] * 1e3:.1f} ms); {nbytes / step / 1e9:.0f} GB/s")
            if copy_bw:
                line += f" = {nbytes / step / 1e9 / copy_bw:.0%} of the copy bandwidth"
            if "step_median_s" in t:
                line += (f" | transformers {t['rows'] / t['step_median_s']:9.1f} tok/s -> "
                         f"{t['step_median_s'] / step:.2f}x")
        else:
            line = f"{job:10s} pyclvp {p['job_s']:.2f} s ({p['tokens']} tokens/candidate)"
            if "job_s" in t:
                line += f" | transformers {t['job_s']:.2f} s -> {t['job_s'] / p['job_s']:.2f}x"
        lines.append(line)
    return "\n".join(lines)


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["cuda"], default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", type=Path, default=CKPT / "clvp-default-float16")
    ap.add_argument("--dtype", choices=sorted(ITEMSIZE), default="float16",
                    help="weights (and KV cache) dtype on both sides")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--jobs", default=",".join(JOBS))
    ap.add_argument("--no-graph", action="store_true", help="pyclvp: launch the step's kernels eagerly")
    ap.add_argument("--torch-python", default=None, help="a Python with torch + transformers (default: this one)")
    ap.add_argument("--torch-device", default="cuda", help="transformers' device (cpu: a dry run of the script)")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    ap.add_argument("--worker", choices=["pyclvp", "transformers"], help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.worker:
        if args.worker == "pyclvp":
            out = pyclvp_worker(args.job, args.checkpoint, args.new_tokens, args.dtype, not args.no_graph)
        else:
            out = transformers_worker(args.job, args.checkpoint, args.new_tokens, args.dtype, args.torch_device)
        print(json.dumps(out))
        return 0

    jobs = [j for j in args.jobs.split(",") if j]
    if set(jobs) - set(JOBS):
        ap.error(f"unknown jobs {sorted(set(jobs) - set(JOBS))}; choose from {JOBS}")
    if not (args.checkpoint / "config.json").is_file():
        ap.error(f"no checkpoint at {args.checkpoint}: run bench/make_checkpoint.py --dtype {args.dtype}")
    torch_python = args.torch_python or sys.executable
    with_torch = not args.no_transformers and subprocess.run(
        [torch_python, "-c", "import torch, transformers"], capture_output=True).returncode == 0
    cfg = json.loads((args.checkpoint / "config.json").read_text())["decoder_config"]
    print(f"pyclvp CUDA vs transformers ({torch_python if with_torch else 'off'}); {args.dtype} weights and KV "
          f"cache; N = {args.new_tokens}; graph {'off' if args.no_graph else 'on'}; {time.strftime('%Y-%m-%d')}",
          flush=True)
    res, copy_bw = {}, None
    for job in jobs:
        res[job] = {"pyclvp": run_worker(sys.executable, "pyclvp", job, args)}
        if with_torch:
            res[job]["transformers"] = run_worker(torch_python, "transformers", job, args)
            copy_bw = copy_bw or res[job]["transformers"].get("copy_bw")
        print(json.dumps({job: res[job]}), flush=True)
    print()
    if copy_bw:
        print(f"device-to-device copy bandwidth: {copy_bw:.0f} GB/s (read + written)")
    print(report(res, cfg, args.dtype, args.new_tokens, copy_bw))
    if args.json:
        args.json.write_text(json.dumps(dict(copy_bw=copy_bw, dtype=args.dtype, new_tokens=args.new_tokens,
                                             results=res), indent=1))
    return 0


def delegate(argv=None):
    """bench_decode.py's hook: with `--backend cuda`, run this benchmark and return its exit code; else None."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", default="cpu")
    known, _ = pre.parse_known_args(argv)
    return main(argv) if known.backend == "cuda" else None


if __name__ == "__main__":
    sys.exit(main())
