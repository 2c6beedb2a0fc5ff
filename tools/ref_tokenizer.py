"""Tokenizer fixtures: transformers' ClvpTokenizer over a corpus of >= 500 lines, plus decode/batch cases.

  tests/data/tokenizer/corpus.json
      {"fixture_version", "transformers_version",
       "cases": [{"text", "normalized", "ids", "decode", "decode_raw", "decode_skip"}],
       "tokens": [{"text", "tokens"}],                          tokenize() pieces for the hand-written lines
       "decodes": [{"ids", "clean", "raw", "clean_skip"}],      random id sequences (any id, any order)
       "calls": [{"texts", "kwargs", "input_ids", "attention_mask"}]}   padding / truncation / tensors
  tests/data/tokenizer/numbers.json
      {"number_to_words": [[n, words]], "normalize": [[text, normalized]]}

The corpus is the sdist's tortoise/data/*.txt (every line, and the small files whole) plus lines written
to hit each normalizer rule (RULE_LINES) and seeded generated numbers. "decode" is
decode(ids, clean_up_tokenization_spaces=True), "decode_raw" transformers 5's default decode(ids),
"decode_skip" the clean decode with skip_special_tokens=True (null when no id is special).
The tokenizer is built from the committed third_party/tortoise/vocab.json and merges.txt.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from ref_common import FIXTURE_VERSION

ROOT = Path(__file__).resolve().parent.parent
TORTOISE = ROOT / "third_party" / "tortoise"

ABBREVIATIONS = ["mrs", "mr", "dr", "st", "co", "jr", "maj", "gen", "drs", "rev", "lt", "hon", "sgt", "capt",
                 "esq", "ltd", "col", "ft"]

RULE_LINES = [
    # the seed page's example, and the leading space it documents
    "Hello world", " Hello world", "  Hello world", "Hello world ", "hello\tworld",
    # money, with and without cents
    "$5", "$1", "$1.00", "$0.01", "$.50", "$1.50", "$1.01", "$2.5", "$0", "$00.00", "$007", "$1,000",
    "$1,234.56", "$1.2.3", "It costs $3.", "$10 and $20.99 and $0.99", "$1,000,000 prize", "$ 5", "5$",
    "$1.", "$.", "pay $12.345 now",
    # pounds (non-ASCII: dropped before the pound rule can see it)
    "£5", "£1,000", "£3.50", "It cost £12 in 1999.", "£0",
    # ordinals
    *[f"the {n}{s} time" for n, s in [(1, "st"), (2, "nd"), (3, "rd"), (4, "th"), (11, "th"), (12, "th"),
                                       (13, "th"), (21, "st"), (22, "nd"), (23, "rd"), (100, "th"), (101, "st"),
                                       (111, "th"), (112, "th"), (1000, "th"), (2001, "st"), (20, "th")]],
    "1ST 2ND 3RD 4TH", "2st 3nd 1rd", "the 1stly", "5th-6th", "100thousand",
    # decimals
    "3.14", "0.5", ".5", "5.", "10.001", "version 2.0.1", "pi is 3.14159 roughly", "1.000", "0.0",
    # years 1000-3000, and 2000-2010
    *[f"In {y}, it happened." for y in [1000, 1001, 1099, 1100, 1492, 1776, 1800, 1900, 1999, 2000, 2001, 2005,
                                         2009, 2010, 2011, 2020, 2099, 2100, 2999, 3000, 3001]],
    "from 1990 to 2010", "1500s", "the '90s",
    # negative numbers, commas, zeros, big numbers
    "-5", "-1,000", "-3.5 degrees", "minus -0", "1,000", "1,000,000", "12,34", "1,2,3", "1,,000", "a,1,b",
    "0", "00", "007", "999", "1000000", "123456789012345", "999999999999999999", "1000000000000000000",
    "12345678901234567890123", "1000000000000000", "100000000000000000", "1,234,567,890",
    "phone 555-1234", "3:45pm", "50%", "2+2=4", "1/2", "4x4", "covid19", "h2o", "mp3",
    # each abbreviation, lower / upper / title case, and the ones that interact
    *[f"{a.capitalize()}. Smith" for a in ABBREVIATIONS],
    *[f"THE {a.upper()}. WAS HERE" for a in ABBREVIATIONS],
    *[f"({a}.)" for a in ABBREVIATIONS],
    "dr.st.", "mr.s", "Mrs", "st.Louis", "the co. ltd.", "Lt.Col. Jones", "St. St. St.", "Dr.Dr.", "mrs.mr.",
    "mr", "Mister", "drs. and dr. and dr", "e.g. i.e. etc.",
    # accented and non-Latin text, emoji
    "café", "naïve façade", "Ångström", "Zürich", "São Paulo", "crème brûlée", "résumé", "El Niño",
    "Привет мир", "日本語のテキスト", "مرحبا بالعالم", "שלום", "हिन्दी", "Ελληνικά", "한국어", "ﬁne ligature",
    "I ❤️ CLVP 😀", "👍🏽 ok", "😀😀😀", "a😀b", "full-width １２３ ＡＢＣ", "arabic digits ٣٤", "x² + y²", "½ cup",
    # quotes and apostrophes
    '"quoted"', "'single'", 'he said "hi" and "bye"', "“smart quotes”", "it's", "don't", "I'LL", "we've",
    "they're", "I'd", "I'm", "o'clock", "'tis", 'a " b', '""', "rock 'n' roll",
    # tabs, runs of whitespace, controls
    "a\tb", "a  b", "a\n\nb", "  leading", "trailing  ", "\t\t", "\r\n", "\x0b\x0c", "a\x1cb", " \u00a0 ",
    "a \t \n b", "\n", " ", "   ", "x" + " " * 7 + "y", "\x00", "a\x7fb", "\x1b[31mred", "a\u2028b",
    # the empty string, very long words
    "", "".join(random.Random(0).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(10_000)),
    # punctuation and symbols
    "Hello, world! How are you? (fine) -- yes; no: maybe/perhaps...", "#hashtag @user 100%", "a&b", "x+y=z",
    "<html>", "~`^_|\\{}", "!!!???", "...", "'", "''", "-", "--", "a-b-c", "e-mail", "semi;colon", "[brackets]",
    # the special tokens, literally
    "[STOP]", "a [STOP] b", "[UNK]", "<|endoftext|>", "[SPACE]", "[stop]", "1[STOP]000", "[STOP][STOP]",
    "x<|endoftext|>y", "[[STOP]]", "[UNK] [SPACE] [STOP]", "<|endoftext|",
    # plain sentences
    "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "This is an example text.",
    "Tortoise is a text-to-speech program built with the following priorities.",
]


def _sdist_lines() -> list[str]:
    lines = []
    for path in sorted((TORTOISE / "data").glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        if len(text) < 5000:
            lines.append(text)  # the whole file, newlines included (got.txt only line by line: size)
        lines.extend(text.split("\n"))
    return lines


def _generated_lines(rng: random.Random) -> list[str]:
    """Seeded numbers across magnitudes, money and ordinals, so every branch of number_to_words runs."""
    out = []
    for _ in range(60):
        n = rng.randrange(10 ** rng.randrange(1, 19))
        out.append(f"{n} and {n:,}")
    for _ in range(30):
        out.append(f"${rng.randrange(10 ** rng.randrange(1, 8)):,}.{rng.randrange(100):02d}")
    for _ in range(30):
        n = rng.randrange(10 ** rng.randrange(1, 6))
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        out.append(f"the {n}{suffix} of {rng.randrange(1000, 3001)}")
    return out


def corpus() -> list[str]:
    lines = [*RULE_LINES, *_sdist_lines(), *_generated_lines(random.Random(1))]
    return list(dict.fromkeys(lines))  # de-duplicated, order kept


def _decode_cases(tok, rng: random.Random) -> list[dict]:
    cases = []
    for n in range(40):
        ids = [rng.randrange(len(tok)) for _ in range(rng.randrange(0, 30))]
        if n % 4 == 0:  # runs of spaces and stops, which the clean-up shrinks
            ids = [rng.choice([0, 1, 2, 14]) for _ in range(rng.randrange(1, 20))]
        cases.append({"ids": ids, "clean": tok.decode(ids, clean_up_tokenization_spaces=True), "raw": tok.decode(ids),
                      "clean_skip": tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)})
    return cases


CALLS = [
    (["a", "hello there", ""], dict(padding=True)),
    (["a", "hello there"], dict(padding="longest")),
    (["a", "hello there"], dict(padding="max_length", max_length=8)),
    (["a", "hello there"], dict(padding="max_length", max_length=3)),
    (["a", "hello there"], dict(padding="max_length", max_length=3, truncation=True)),
    (["a", "hello there"], dict(max_length=3)),
    (["a", "hello there"], dict(max_length=3, truncation=True)),
    (["a", "hello there"], dict(padding=True, max_length=3, truncation=True)),
    (["a", "hello there"], dict(padding=True, max_length=2)),
    (["Hello world"], dict()),
    ("Hello world", dict(padding="max_length", max_length=9)),
    ("Hello world", dict(max_length=4)),
    ("Hello world", dict(return_attention_mask=False)),
    (["one", "two three", "four five six"], dict(padding=True, return_tensors="np")),
    ("Hello world", dict(return_tensors="np")),
]


def _call_cases(tok) -> list[dict]:
    cases = []
    for texts, kwargs in CALLS:
        out = tok(texts, **kwargs)
        cases.append({"texts": texts, "kwargs": kwargs,
                      **{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in out.items()}})
    return cases


def make(data_dir: Path) -> None:
    import transformers
    from transformers import ClvpTokenizer
    from transformers.models.clvp.number_normalizer import EnglishNormalizer

    tok = ClvpTokenizer(str(TORTOISE / "vocab.json"), str(TORTOISE / "merges.txt"))
    assert tok("Hello world")["input_ids"] == [62, 84, 28, 2, 179, 79]
    cases = []
    for text in corpus():
        ids = tok(text)["input_ids"]
        cases.append({"text": text, "normalized": tok.normalizer(text), "ids": ids,
                      "decode": tok.decode(ids, clean_up_tokenization_spaces=True), "decode_raw": tok.decode(ids),
                      "decode_skip": tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
                      if set(ids) & set(tok.all_special_ids) else None})
    assert len(cases) >= 500, len(cases)
    out = data_dir / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    doc = {"fixture_version": FIXTURE_VERSION, "transformers_version": transformers.__version__, "cases": cases,
           "tokens": [{"text": t, "tokens": tok.tokenize(t)} for t in RULE_LINES if len(t) < 200],
           "decodes": _decode_cases(tok, random.Random(2)), "calls": _call_cases(tok)}
    (out / "corpus.json").write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n",
                                     encoding="utf-8")

    normalizer, rng = EnglishNormalizer(), random.Random(3)
    numbers = [*range(0, 130), 999, 1000, 1001, 1010, 1100, 10**6, 10**9, 10**12, 10**15, 10**18 - 1, 10**18,
               -1, -42, -10**18, *(rng.randrange(10 ** rng.randrange(1, 19)) for _ in range(200))]
    pieces = ["1st", "12th", "101st", "$3.07", "$1.2.3", "2005", "3.14", "mr.", "dr.st.", "a  \t b", '"x"', "é"]
    texts = [" ".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6))) for _ in range(100)]
    doc = {"fixture_version": FIXTURE_VERSION, "number_to_words": [[n, normalizer.number_to_words(n)] for n in numbers],
           "normalize": [[t, normalizer(t)] for t in texts]}
    (out / "numbers.json").write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"[tokenizer] {len(cases)} corpus lines, transformers {transformers.__version__}")
