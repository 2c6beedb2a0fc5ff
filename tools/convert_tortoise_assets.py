"""Convert the Tortoise 3.0.0 sdist's assets into the torch-free files pyclvp ships.

    pip download --no-deps tortoise-tts==3.0.0 && tar xzf tortoise-tts-3.0.0.tar.gz
    python tools/convert_tortoise_assets.py tortoise-tts-3.0.0      # needs torch (for mel_norms.pth)

Steps, one function each:
  1. tortoise/data/tokenizer.json -> vocab.json  (its `model.vocab`: token -> id, 255 entries)
                                  -> merges.txt  ("#version: 0.2", then `model.merges`, one per line)
     These are the two files transformers' ClvpTokenizer(vocab_file, merges_file) reads.
  2. tortoise/data/mel_norms.pth   -> mel_norms.npy (float32, shape (80,), one norm per mel bin)
  3. The originals (LICENSE, tokenizer.json, mel_norms.pth, data/*.txt, voices/**/*.wav) are
     copied verbatim into third_party/tortoise/ beside the converted files.

The converted trio is written to both third_party/tortoise/ and pyclvp/data/ (package data).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
THIRD_PARTY = ROOT / "third_party" / "tortoise"
PACKAGE_DATA = ROOT / "pyclvp" / "data"


def convert_vocab(tokenizer_json: dict) -> str:
    """model.vocab -> vocab.json text (token -> id, in id order)."""
    vocab = tokenizer_json["model"]["vocab"]
    return json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])), ensure_ascii=False, indent=1) + "\n"


def convert_merges(tokenizer_json: dict) -> str:
    """model.merges -> merges.txt text ("#version: 0.2" header, one "a b" merge per line, by rank)."""
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]
    return "#version: 0.2\n" + "".join(m + "\n" for m in merges)


def convert_mel_norms(pth: Path) -> np.ndarray:
    """mel_norms.pth (a torch float32 tensor of 80 values) -> (80,) float32 array."""
    import torch

    norms = torch.load(pth, map_location="cpu", weights_only=True)
    return norms.detach().numpy().astype(np.float32).reshape(80)


def copy_originals(sdist: Path, dest: Path) -> None:
    """LICENSE, tokenizer.json, mel_norms.pth, data/*.txt and voices/**/*.wav, byte for byte."""
    shutil.copy2(sdist / "LICENSE", dest / "LICENSE")
    data = sdist / "tortoise" / "data"
    (dest / "data").mkdir(exist_ok=True)
    for name in ["tokenizer.json", "mel_norms.pth", *sorted(p.name for p in data.glob("*.txt"))]:
        shutil.copy2(data / name, dest / "data" / name)
    for wav in sorted((sdist / "tortoise" / "voices").rglob("*.wav")):
        target = dest / "voices" / wav.relative_to(sdist / "tortoise" / "voices")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wav, target)


def write_converted(dest: Path, vocab: str, merges: str, mel_norms: np.ndarray) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(vocab, encoding="utf-8")
    (dest / "merges.txt").write_text(merges, encoding="utf-8")
    np.save(dest / "mel_norms.npy", mel_norms)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sdist", type=Path, help="the extracted tortoise-tts-3.0.0 sdist folder")
    args = parser.parse_args(argv)
    tokenizer_json = json.loads((args.sdist / "tortoise" / "data" / "tokenizer.json").read_text(encoding="utf-8"))
    vocab, merges = convert_vocab(tokenizer_json), convert_merges(tokenizer_json)
    mel_norms = convert_mel_norms(args.sdist / "tortoise" / "data" / "mel_norms.pth")
    THIRD_PARTY.mkdir(parents=True, exist_ok=True)
    copy_originals(args.sdist, THIRD_PARTY)
    for dest in (THIRD_PARTY, PACKAGE_DATA):
        write_converted(dest, vocab, merges, mel_norms)
    print(f"vocab {len(tokenizer_json['model']['vocab'])} tokens, {len(tokenizer_json['model']['merges'])} merges, "
          f"mel_norms {mel_norms.shape} -> {THIRD_PARTY} and {PACKAGE_DATA}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
