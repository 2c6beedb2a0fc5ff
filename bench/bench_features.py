"""Log-mel features for a batch of 16 six-second voice clips: pyclvp vs transformers vs torch.stft.

    PYTHONPATH=. python bench/bench_features.py [--repeats 7] [--batch 16]

The clips are the first `--batch` Tortoise voices (third_party/tortoise/voices), loaded at 22,050 Hz
by pyclvp.audio.load_audio and cut or repeated to exactly 6 s, so no side pads or truncates.
Contenders, each taking the batch to (B, 80, 517) float32 log-mel features with Tortoise's mel norms:

  pyclvp        ClvpFeatureExtractor (float64 STFT); with its default threads and with PYCLVP_NUM_THREADS=1
  transformers  transformers.ClvpFeatureExtractor (float64 STFT, one frame at a time), when installed
  torch.stft    torch.stft (float32, torch's default threads) + the same mel matrix, log, norms, when installed

The contenders take turns, run after run, with a pause between them so that no contender's idle
threads spin into the next one's time; each reports its best and median wall time over --repeats runs,
its best CPU time (all threads; for the one-thread contenders the figure least moved by other jobs on a
shared machine), and its largest difference from transformers' output (or pyclvp's without transformers).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyclvp.audio import load_audio  # noqa: E402
from pyclvp.audio.features import ClvpFeatureExtractor, tortoise_mel_norms  # noqa: E402

RATE, SECONDS = 22050, 6


def load_batch(size: int) -> list[np.ndarray]:  # -> size x (RATE * SECONDS,) float32
    files = sorted((ROOT / "third_party" / "tortoise" / "voices").rglob("*.wav"))[:size]
    return [np.resize(load_audio(f, RATE), RATE * SECONDS) for f in files]


def pyclvp_contender(threads: int | None):
    extractor = ClvpFeatureExtractor(mel_norms=tortoise_mel_norms().tolist())

    def run(batch):
        saved = os.environ.get("PYCLVP_NUM_THREADS")
        if threads is not None:
            os.environ["PYCLVP_NUM_THREADS"] = str(threads)
        try:
            return extractor(batch, sampling_rate=RATE, return_tensors="np")["input_features"]
        finally:
            if threads is not None:
                os.environ.pop("PYCLVP_NUM_THREADS") if saved is None else os.environ.update(PYCLVP_NUM_THREADS=saved)
    return run


def transformers_contender():
    import transformers

    extractor = transformers.ClvpFeatureExtractor(mel_norms=tortoise_mel_norms().tolist())
    transformers.logging.set_verbosity_error()
    return lambda batch: extractor(batch, sampling_rate=RATE, return_tensors="np")["input_features"]


def torch_contender():
    import torch

    mel = torch.from_numpy(ClvpFeatureExtractor().mel_filters.T.astype(np.float32))   # (M, F)
    norms = torch.from_numpy(tortoise_mel_norms())[:, None]                             # (M, 1)
    window = torch.hann_window(1024)

    def run(batch):
        x = torch.from_numpy(np.stack(batch))                                           # (B, T)
        spec = torch.stft(x, 1024, 256, window=window, center=True, pad_mode="reflect", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2                                         # (B, F, frames)
        return (torch.log(torch.clamp(mel @ power, min=1e-5)) / norms).numpy()          # (B, M, frames)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    batch = load_batch(args.batch)
    contenders = {"pyclvp": pyclvp_contender(None), "pyclvp 1 thread": pyclvp_contender(1)}
    for name, make in (("transformers", transformers_contender), ("torch.stft", torch_contender)):
        try:
            contenders[name] = make()
        except ImportError as e:
            print(f"{name}: not installed ({e}), skipped")
    outputs = {name: run(batch) for name, run in contenders.items()}  # warm-up, and the outputs to compare
    times = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            time.sleep(0.1)  # let the previous contender's idle threads (torch's OpenMP pool spins) go to sleep
            t0, c0 = time.perf_counter(), time.process_time()
            run(batch)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    reference = "transformers" if "transformers" in outputs else "pyclvp"
    print(f"batch: {len(batch)} clips x {SECONDS} s -> {outputs['pyclvp'].shape} float32; "
          f"{os.cpu_count()} CPUs; best / median of {args.repeats} runs")
    print(f"{'contender':<16} {'best ms':>9} {'median ms':>10} {'best cpu ms':>12} {'max |diff| vs ' + reference:>24}")
    for name in contenders:
        diff = float(np.abs(outputs[name] - outputs[reference]).max())
        print(f"{name:<16} {min(times[name]) * 1e3:9.1f} {statistics.median(times[name]) * 1e3:10.1f} "
              f"{min(cpu[name]) * 1e3:12.1f} {diff:24.2e}")
    for other in contenders:
        if not other.startswith("pyclvp"):
            for mine in ("pyclvp", "pyclvp 1 thread"):
                print(f"ratio {other} / {mine}: best {min(times[other]) / min(times[mine]):.2f}x, "
                      f"median {statistics.median(times[other]) / statistics.median(times[mine]):.2f}x, "
                      f"cpu {min(cpu[other]) / min(cpu[mine]):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
