"""The `pyclvp` command: one sub-command per job.

  pyclvp tokenize TEXT        normalized text and ids
  pyclvp mel CLIP.wav -o F    log-mel features (and a PNG picture)
  pyclvp info DIR             what a checkpoint holds
  pyclvp rank / demo          generate candidates and rank them with CLVP
  pyclvp convert / convert-tortoise   PyTorch checkpoints -> safetensors

Each sub-command is a pair: `_add_<name>(subparsers)` declares its arguments and `_cmd_<name>(args)`
runs it. Errors that are the user's (a bad file, bad text) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

COMMANDS = []  # list of (name, add_fn): filled by the @command decorator below


def command(name):
    def register(add_fn):
        COMMANDS.append((name, add_fn))
        return add_fn
    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyclvp", description="Torch-free CLVP (Tortoise TTS) tools")
    parser.add_argument("--version", action="store_true", help="print the version and build info")
    sub = parser.add_subparsers(dest="command")
    for name, add_fn in COMMANDS:
        add_fn(sub)
    return parser


@command("version")
def _add_version(sub):
    p = sub.add_parser("version", help="print the version and the C++ core's build info")
    p.set_defaults(func=_cmd_version)


def _cmd_version(args):
    import json

    import pyclvp
    from pyclvp import _core

    print(f"pyclvp {pyclvp.__version__}")
    print(json.dumps(_core.build_info(), indent=2))


@command("tokenize")
def _add_tokenize(sub):
    p = sub.add_parser("tokenize", help="normalize text and print its CLVP token ids")
    p.add_argument("text", nargs="+", help="one or more texts (each is tokenized on its own)")
    p.add_argument("--json", action="store_true", help="one JSON object per text: text, normalized, ids, tokens")
    p.add_argument("--vocab", metavar="DIR", help="folder with vocab.json and merges.txt (default: bundled)")
    p.add_argument("--transliterate", action="store_true", help="keep accented letters' ASCII base (café -> cafe)")
    p.set_defaults(func=_cmd_tokenize)


def _cmd_tokenize(args):
    import json

    from pyclvp.tokenizer import ClvpTokenizer

    tok = ClvpTokenizer.from_pretrained(args.vocab, transliterate=args.transliterate)
    for text in args.text:
        ids = tok.encode(text)
        if args.json:
            print(json.dumps({"text": text, "normalized": tok.normalize(text), "ids": ids,
                              "tokens": tok.convert_ids_to_tokens(ids)}, ensure_ascii=False))
        else:
            print(f"normalized: {tok.normalize(text)}")
            print(f"ids: {' '.join(map(str, ids))}")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        args.func = _cmd_version
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, OSError) as e:  # user errors: one clear line, no traceback
        print(f"pyclvp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
