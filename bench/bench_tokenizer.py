"""Tokenizer speed: pyclvp's ClvpTokenizer vs transformers' (when installed), on the parity corpus.

    python bench/bench_tokenizer.py [--repeats 10]

Both tokenizers are built from the same vocab.json/merges.txt and called line by line,
`tok(line)["input_ids"]`, over tests/data/tokenizer/corpus.json's 518 lines. "cold" is the first
pass of a fresh tokenizer (empty per-word caches), "warm" the best of --repeats further passes;
the two tokenizers take turns, pass by pass, so machine load hits them alike. The ids are compared
on the way, so a fast wrong answer cannot pass unnoticed.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "tokenizer" / "corpus.json"


def time_passes(encoders: dict, lines, repeats):
    """Alternate one pass per tokenizer, 1 + repeats times, so machine load hits them alike.

    -> {name: (cold lines/s, best warm lines/s, ids of the last pass)}
    """
    rates = {name: [] for name in encoders}
    ids = {}
    for _ in range(1 + repeats):
        for name, encode in encoders.items():
            t0 = time.perf_counter()
            ids[name] = [encode(line) for line in lines]
            rates[name].append(len(lines) / (time.perf_counter() - t0))
    return {name: (r[0], max(r[1:]), ids[name]) for name, r in rates.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    lines = [case["text"] for case in json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]]

    from pyclvp.text.tokenizer import DATA_DIR, ClvpTokenizer

    ours = ClvpTokenizer.from_pretrained()
    encoders = {"pyclvp": lambda s: ours(s)["input_ids"]}
    try:
        import transformers
        from transformers import ClvpTokenizer as HFClvpTokenizer
    except ImportError:
        transformers = None
    else:
        theirs = HFClvpTokenizer(str(DATA_DIR / "vocab.json"), str(DATA_DIR / "merges.txt"))
        encoders["transformers"] = lambda s: theirs(s)["input_ids"]
    results = time_passes(encoders, lines, args.repeats)
    print(f"{len(lines)} lines, {sum(map(len, lines))} characters; Python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}")
    for name, (cold, warm, _) in results.items():
        print(f"{name:13s} cold {cold:9.0f} lines/s   warm {warm:9.0f} lines/s")
    if transformers is None:
        print("transformers is not installed: no comparison")
        return 0
    (cold, warm, our_ids), (hf_cold, hf_warm, hf_ids) = results["pyclvp"], results["transformers"]
    print(f"ratio (pyclvp / transformers {transformers.__version__}): cold {cold / hf_cold:.1f}x, "
          f"warm {warm / hf_warm:.1f}x; ids identical: {our_ids == hf_ids}")
    return 0 if our_ids == hf_ids else 1


if __name__ == "__main__":
    raise SystemExit(main())
