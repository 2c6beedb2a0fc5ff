#!/usr/bin/env python3
"""Fuzz pyclvp's readers with mutated files (not part of pytest).

    python tools/fuzz.py [--cases N] [--seed S] [--only safetensors,torch,wav,config] [--keep DIR]

Four targets, each fed N mutations of the seed files under tests/data:
  safetensors  pyclvp.io.safetensors.load_file(path), every tensor read (mmap and not, bf16 raw)
  torch        pyclvp.io.torch_pickle.load(path) of a mutated torch.save zip (tests/data/torch_pickle/*.pt)
  wav          pyclvp.io.wav.read_wav + pyclvp.audio.load_audio (resampled to 22,050 Hz)
  config       pyclvp.config.ClvpConfig.from_pretrained(folder) with a mutated config.json

Each case runs in a forked child (the readers imported once, in the parent) under RLIMIT_AS = 1.5 GiB
and a 10 s timeout. Reported: crashes (the child died of a signal), hangs (killed at the timeout),
peak RSS over 1 GiB (wait4's ru_maxrss), and exceptions other than ValueError / OSError (the readers'
contract: a bad file is a ValueError naming the problem, an unreadable one an OSError). A MemoryError
is reported too: under the cap it means a reader sized an allocation from the file without a bound.
Findings are saved under --keep (default: fuzz-findings/) as <target>-<n>.<ext> with a .txt beside.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

AS_LIMIT = int(1.5 * 2 ** 30)
RSS_LIMIT_KB = 2 ** 20  # 1 GiB in KiB (ru_maxrss)
TIMEOUT = 10.0

# ----------------------------------------------------------------------------------------------
# Seeds


def seeds(target: str) -> list[bytes]:
    d = ROOT / "tests" / "data"
    if target == "safetensors":
        files = sorted(d.glob("safetensors_golden/*.safetensors")) + sorted(d.glob("malformed_safetensors/*.safetensors"))
        files += [f for f in d.glob("model/*/*.safetensors") if f.stat().st_size < 2 ** 21]
    elif target == "torch":
        files = sorted(d.glob("torch_pickle/*.pt")) + sorted(d.glob("torch_pickle/hostile/*"))
    elif target == "wav":
        files = sorted(d.glob("malformed_wav/*.wav")) + sorted(d.glob("tortoise_rank/*.wav"))
    else:
        files = sorted(d.glob("**/config.json"))
    files = [f for f in files if f.is_file() and f.stat().st_size < 2 ** 22]
    return [f.read_bytes() for f in files]


# ----------------------------------------------------------------------------------------------
# Mutations

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2 ** 63 - 1, 2 ** 64 - 1, 2 ** 31,
               2 ** 40]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data or b"\0")
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        op = rng.randrange(8)
        i = rng.randrange(len(b))
        if op == 0:  # bit flip
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # random byte
            b[i] = rng.randrange(256)
        elif op == 2:  # an interesting little-endian integer
            v = rng.choice(INTERESTING)
            w = rng.choice([2, 4, 8])
            b[i:i + w] = (v & ((1 << 8 * w) - 1)).to_bytes(w, "little")
        elif op == 3:  # truncate
            del b[rng.randrange(len(b)):]
            if not b:
                b = bytearray(b"\0")
        elif op == 4:  # delete a run
            del b[i:i + rng.randrange(1, 64)]
            if not b:
                b = bytearray(b"\0")
        elif op == 5:  # duplicate a run
            j = rng.randrange(len(b))
            b[j:j] = b[i:i + rng.randrange(1, 256)]
        elif op == 6:  # insert random bytes
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        else:  # an ASCII digit run (sizes in JSON headers)
            b[i:i] = str(rng.choice([0, -1, 2 ** 31, 2 ** 63, 10 ** 30, 1e308])).encode()
    return bytes(b)


def _mutate_json_value(v, rng: random.Random, depth=0):
    if isinstance(v, dict) and v and depth < 8:
        k = rng.choice(list(v))
        out = dict(v)
        r = rng.random()
        if r < 0.15:
            del out[k]
        else:
            out[k] = _mutate_json_value(v[k], rng, depth + 1)
        return out
    if isinstance(v, list) and v and depth < 8:
        out = list(v)
        i = rng.randrange(len(out))
        out[i] = _mutate_json_value(out[i], rng, depth + 1)
        return out
    return rng.choice([None, True, False, 0, -1, 1, 2 ** 31, 2 ** 63, 10 ** 400, -10 ** 400, 1e308, float("nan"),
                       float("inf"), -float("inf"), 0.5, "", "x" * 1000, [], {}, [1, 2], {"a": 1},
                       [[[[[[[[[[]]]]]]]]]], 2 ** 64])


def mutate_json(data: bytes, rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.1:  # deep nesting
        n = rng.choice([100, 1000, 100000])
        return b"[" * n + b"]" * n
    if r < 0.15:
        return b'{"a": ' * 50000 + b"1" + b"}" * 50000
    try:
        obj = json.loads(data)
    except ValueError:
        return mutate_bytes(data, rng)
    if r < 0.7:
        for _ in range(rng.choice([1, 2, 4])):
            obj = _mutate_json_value(obj, rng)
        try:
            return json.dumps(obj).encode()
        except (ValueError, OverflowError):
            return mutate_bytes(data, rng)
    return mutate_bytes(data, rng)


def mutate_zip(data: bytes, rng: random.Random) -> bytes:
    """A torch.save zip: half the time a new, valid zip whose data.pkl (the pickle) is mutated (so the
    unpickler, not the CRC check, meets the damage); else the pickle bytes in place, or anywhere."""
    import io
    import zipfile
    if rng.random() < 0.5:
        try:
            src = zipfile.ZipFile(io.BytesIO(data))
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
                for info in src.infolist():
                    body = src.read(info)
                    if info.filename.endswith("data.pkl"):
                        body = mutate_bytes(body, rng)
                    dst.writestr(info.filename, body)
            return out.getvalue()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            pass
    i = data.find(b"data.pkl")
    if i >= 0 and rng.random() < 0.7:
        # the pickle starts after the local header's name + extra; find PROTO (0x80) after it
        j = data.find(b"\x80", i)
        end = data.find(b".", j) if j >= 0 else -1
        if 0 <= j < len(data) and end > j:
            end = min(len(data), j + max(64, (end - j) * 4))
            body = bytearray(data)
            region = bytearray(body[j:end])
            mutated = mutate_bytes(bytes(region), rng)[:len(region)].ljust(len(region), b"\0")
            body[j:end] = mutated  # same length: the zip's offsets stay valid, only the CRC breaks
            return bytes(body)
    return mutate_bytes(data, rng)


def mutate_wav(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.5 and len(data) > 44:  # the header fields: sizes, channels, rate, bits
        b = bytearray(data)
        pos = rng.choice([4, 16, 20, 22, 24, 28, 32, 34, 36, 40])
        w = 2 if pos in (20, 22, 32, 34) else 4
        b[pos:pos + w] = (rng.choice(INTERESTING) & ((1 << 8 * w) - 1)).to_bytes(w, "little")
        return bytes(b[:rng.choice([len(b), len(b), rng.randrange(1, len(b))])])
    return mutate_bytes(data, rng)


# ----------------------------------------------------------------------------------------------
# Targets (run in the child)


def run_safetensors(path: str) -> None:
    from pyclvp.io import safetensors
    for mmap in (True, False):
        for bf16 in ("float32", "raw"):
            for a in safetensors.load_file(path, mmap=mmap, bf16=bf16).values():
                np.asarray(a).sum()


def run_torch(path: str) -> None:
    from pyclvp.io import torch_pickle

    def walk(obj, depth=0):  # every array in the object (a training checkpoint nests its state_dict)
        if isinstance(obj, np.ndarray):
            obj.sum()
        elif isinstance(obj, dict) and depth < 50:
            for v in obj.values():
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple)) and depth < 50:
            for v in obj:
                walk(v, depth + 1)
    walk(torch_pickle.load_object(path))


def run_wav(path: str) -> None:
    from pyclvp.audio import load_audio
    from pyclvp.io.wav import read_wav
    samples, rate = read_wav(path)
    np.asarray(samples).sum()
    load_audio(path, 22050).sum()


def run_config(path: str) -> None:
    from pyclvp.config import ClvpConfig
    ClvpConfig.from_pretrained(str(Path(path).parent))


TARGETS = {
    "safetensors": (run_safetensors, mutate_bytes, ".safetensors"),
    "torch": (run_torch, mutate_zip, ".pt"),
    "wav": (run_wav, mutate_wav, ".wav"),
    "config": (run_config, mutate_json, ".json"),
}

OK, REPORT, REJECTED = 0, 3, 4


def child(fn, path: str, report_fd: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    code = OK
    try:
        fn(path)
    except (ValueError, OSError):
        code = REJECTED
    except BaseException as e:  # noqa: BLE001: everything else is a finding
        code = REPORT
        tb = traceback.extract_tb(e.__traceback__)[-3:]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb))
        os.write(report_fd, f"{type(e).__name__}: {str(e)[:200]} at {where}".encode())
    os._exit(code)


def run_case(fn, path: str) -> tuple[str, str, int]:
    """-> (kind, detail, peak RSS KiB): kind in ok (read) / rejected (ValueError, OSError) / exception / crash / hang."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child(fn, path, w)
    os.close(w)
    t0 = time.monotonic()
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got:
            break
        if time.monotonic() - t0 > TIMEOUT:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            os.close(r)
            return "hang", f"killed after {TIMEOUT:.0f} s", usage.ru_maxrss
        time.sleep(0.001)
    detail = os.read(r, 4096).decode(errors="replace")
    os.close(r)
    if os.WIFSIGNALED(status):
        return "crash", f"signal {signal.Signals(os.WTERMSIG(status)).name}", usage.ru_maxrss
    if os.WEXITSTATUS(status) == REPORT:
        return "exception", detail, usage.ru_maxrss
    if os.WEXITSTATUS(status) == REJECTED:
        return "rejected", "", usage.ru_maxrss
    if os.WEXITSTATUS(status) != OK:
        return "crash", f"exit status {os.WEXITSTATUS(status)}", usage.ru_maxrss
    return "ok", "", usage.ru_maxrss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=2000, help="cases per target (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(TARGETS))
    ap.add_argument("--keep", default=str(ROOT / "fuzz-findings"))
    args = ap.parse_args(argv)
    # import what the children run once, here: a fork is then cheap
    import pyclvp.audio  # noqa: F401
    import pyclvp.config  # noqa: F401
    import pyclvp.io.safetensors  # noqa: F401
    import pyclvp.io.torch_pickle  # noqa: F401
    keep = Path(args.keep)
    totals = {}
    worst = 0
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.only.split(","):
            fn, mutate, ext = TARGETS[target]
            pool = seeds(target)
            rng = random.Random(f"{args.seed}-{target}")
            counts = dict(cases=0, ok=0, rejected=0, exception=0, crash=0, hang=0, rss=0)
            t0 = time.monotonic()
            folder = Path(tmp) / target
            folder.mkdir()
            path = str(folder / ("config.json" if target == "config" else "case" + ext))
            for n in range(args.cases):
                data = mutate(rng.choice(pool), rng)
                Path(path).write_bytes(data)
                kind, detail, rss = run_case(fn, path)
                worst = max(worst, rss)
                counts["cases"] += 1
                counts[kind] += 1
                big = rss > RSS_LIMIT_KB
                counts["rss"] += big
                if kind not in ("ok", "rejected") or big:
                    keep.mkdir(parents=True, exist_ok=True)
                    stem = keep / f"{target}-{n}"
                    stem.with_suffix(ext).write_bytes(data)
                    msg = f"{kind}: {detail}" + (f" (peak RSS {rss // 1024} MiB)" if big else "")
                    stem.with_suffix(".txt").write_text(msg + "\n")
                    print(f"  {target} #{n}: {msg}", flush=True)
            counts["seconds"] = round(time.monotonic() - t0, 1)
            totals[target] = counts
            print(f"{target}: {counts}", flush=True)
    print(json.dumps(dict(totals=totals, worst_rss_mib=worst // 1024), indent=1))
    return 1 if any(c["crash"] or c["hang"] or c["exception"] or c["rss"] for c in totals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
