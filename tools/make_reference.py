"""Regenerate every fixture under tests/data from transformers: the ONLY place torch appears.

    pip install ".[reference]"            # torch==2.13.0, transformers>=5,<6, safetensors
    python tools/make_reference.py        # every part
    python tools/make_reference.py model  # one part

The "cleaners" part needs no torch, only inflect and unidecode (see tools/ref_cleaners.py). The "univnet" part
needs torch and the tortoise-tts sdist only (tools/ref_univnet.py; its --full writes an opt-in full-size case).
The speech part (tools/ref_speech.py: Tortoise's api_fast) runs Tortoise's own code, which needs the transformers
4.31.0 it pins: build that venv with tools/tortoise_env.sh and run `VENV/bin/python tools/make_reference.py speech`.

Each part lives in tools/ref_<part>.py and exposes `make(data_dir: Path) -> None`. Parts write only
under tests/data/, deterministically (fixed seeds), and stamp FIXTURE_VERSION into what they write so
a stale fixture is recognisable. The tests never import torch: they read what this script wrote.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

FIXTURE_VERSION = 1
TOOLS = Path(__file__).resolve().parent
DATA = TOOLS.parent / "tests" / "data"
PARTS = ["foundation", "tokenizer", "features", "model", "generate", "torch_pickle", "conv", "speech", "cleaners",
         "univnet", "diffusion", "tortoise_rank", "quality"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", help=f"parts to regenerate (default: all of {PARTS})")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(TOOLS))
    DATA.mkdir(parents=True, exist_ok=True)
    for part in args.parts or PARTS:
        if part not in PARTS:
            parser.error(f"unknown part {part!r}; choose from {PARTS}")
        try:
            module = importlib.import_module(f"ref_{part}")
        except ModuleNotFoundError as e:
            if e.name == f"ref_{part}":
                print(f"[{part}] no tools/ref_{part}.py yet, skipped")
                continue
            raise
        t0 = time.time()
        module.make(DATA)
        print(f"[{part}] done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
