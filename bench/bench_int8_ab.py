"""int8 against bfloat16 decode, step by step in one process: a fair ratio on a shared, noisy machine.

    python bench/bench_int8_ab.py [--rows 1 16] [--new-tokens 32] [--rounds 3]

bench/bench_decode.py runs each job in its own process, minutes apart; when other jobs come and go, the ratio of two
such runs measures the neighbours. Here both models (the bfloat16 checkpoint kept in bfloat16, and the int8 folder of
`pyclvp convert --weights int8`, both memory-mapped) decode the same prompt in one process, alternating one step of
each, so both see the same load; per step the wall time and the process CPU time are recorded, and the medians are
reported with the load average before and after. Same prompt and loop as bench_decode.py's decode jobs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_decode import CKPT, EOS, P, inputs  # noqa: E402
from pyclvp.model import ClvpModelForConditionalGeneration  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bf16-checkpoint", type=Path, default=CKPT / "clvp-default-bfloat16")
    ap.add_argument("--int8-checkpoint", type=Path, default=CKPT / "clvp-default-int8")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    models = {"bf16": ClvpModelForConditionalGeneration.from_pretrained(args.bf16_checkpoint, backend="cpu",
                                                                        dtype="bfloat16"),
              "int8": ClvpModelForConditionalGeneration.from_pretrained(args.int8_checkpoint, backend="cpu")}
    x = inputs()["prompt"]
    for rows in args.rows:
        prompt = np.repeat(x[None], rows, axis=0)  # (B, P, C)
        wall = {k: [] for k in models}
        cpu = {k: [] for k in models}
        load = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            states, logits = {}, {}
            for k, m in models.items():
                states[k] = m.decoder.new_state(rows, P + args.new_tokens)
                logits[k] = m.decoder.prefill(prompt, None, states[k])
            for step in range(args.new_tokens):
                for k, m in models.items():
                    logits[k][:, EOS] = -np.inf
                    ids = logits[k].argmax(-1)
                    t, c = time.perf_counter(), time.process_time()
                    logits[k] = m.decoder.step(ids, np.full(rows, step + 2), states[k])
                    wall[k].append(time.perf_counter() - t)
                    cpu[k].append(time.process_time() - c)
        load.append(os.getloadavg()[0])
        med = {k: (np.median(wall[k]), np.median(cpu[k])) for k in models}
        print(f"rows {rows}: " + "; ".join(f"{k} step median {w * 1e3:.1f} ms wall, {c * 1e3:.1f} ms CPU"
                                           for k, (w, c) in med.items())
              + f"; bf16 / int8 = {med['bf16'][0] / med['int8'][0]:.2f}x wall, {med['bf16'][1] / med['int8'][1]:.2f}x CPU"
              + f" ({len(wall['int8'])} steps each; load average {load[0]:.2f} -> {load[1]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
