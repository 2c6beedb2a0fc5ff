"""Cleaner fixtures: Tortoise's own english_cleaners over a corpus of hand-written lines.

  tests/data/cleaners/corpus.json
      {"fixture_version", "tortoise_version", "inflect_version", "unidecode_version", "tokenizers_version",
       "lines": [{"text", "expected", "ids"}]} expected: english_cleaners(text), or null where Tortoise raises
                                               (then "error" names the exception); ids: VoiceBpeTokenizer().encode(text)
                                               (Tortoise's tokenizer.json through the `tokenizers` package);
                                               "needs_unidecode": true on a line with a character outside
                                               pyclvp's COVERED blocks that unidecode does not drop (CJK, ...)

Needs only `inflect`, `unidecode` and `tokenizers` (tortoise-tts 3.0.0 leaves all three unpinned; the
fixture was written with the versions recorded in it) and the unpacked tortoise-tts 3.0.0 sdist:

    python -m venv ref && ref/bin/pip install inflect unidecode tokenizers
    TORTOISE_SDIST=/path/to/tortoise-tts-3.0.0 ref/bin/python tools/make_reference.py cleaners

tortoise/utils/tokenizer.py is loaded from the sdist as it is (only torch, which encode never uses, is
stubbed), and its VoiceBpeTokenizer reads the sdist's tortoise/data/tokenizer.json.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
import types
from importlib.metadata import version
from pathlib import Path

from ref_common import FIXTURE_VERSION

ROOT = Path(__file__).resolve().parent.parent
SDIST = Path(os.environ.get("TORTOISE_SDIST", "/work/tortoise_sdist/tortoise-tts-3.0.0"))

ABBREVIATIONS = ["Mr", "Mrs", "Dr", "St", "Co", "Jr", "Maj", "Gen", "Drs", "Rev", "Lt", "Hon", "Sgt", "Capt",
                 "Esq", "Ltd", "Col", "Ft"]

LINES = [
    # years, as Tortoise's _expand_number reads 1001..2999
    *[f"In {y}, it happened." for y in [1000, 1001, 1005, 1009, 1010, 1066, 1099, 1100, 1200, 1492, 1500, 1776,
                                         1800, 1812, 1865, 1900, 1901, 1905, 1914, 1918, 1945, 1969, 1984, 1999,
                                         2000, 2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009, 2010, 2011,
                                         2019, 2020, 2024, 2050, 2099, 2100, 2500, 2999, 3000, 3001, 999]],
    "from 1990 to 2010", "the 1500s and the 1960s", "the '90s", "1999-2001", "circa 0999 or 01999",
    "Born 12 March 1956, died 2 June 2012.",
    # ordinals, every suffix, spelled right and wrong
    *[f"the {n}{s} time" for n, s in [(1, "st"), (2, "nd"), (3, "rd"), (4, "th"), (5, "th"), (8, "th"), (9, "th"),
                                       (10, "th"), (11, "th"), (12, "th"), (13, "th"), (20, "th"), (21, "st"),
                                       (22, "nd"), (23, "rd"), (30, "th"), (40, "th"), (99, "th"), (100, "th"),
                                       (101, "st"), (102, "nd"), (111, "th"), (112, "th"), (113, "th"),
                                       (200, "th"), (999, "th"), (1000, "th"), (1001, "st"), (2001, "st"),
                                       (1000000, "th"), (1234567, "th")]],
    "1ST 2ND 3RD 4TH", "2st 3nd 1rd 11st", "the 0th element", "the 1stly", "5th-6th", "100thousand", "007th",
    "21st century", "On the 4th of July, 1776.",
    # money: dollars with cents and commas, pounds and pence, other currencies
    "$5", "$1", "$1.00", "$0.01", "$.50", "$1.50", "$1.01", "$2.5", "$0", "$00.00", "$007", "$1,000",
    "$1,234.56", "$1.2.3", "It costs $3.", "$10 and $20.99 and $0.99", "$1,000,000 prize", "$ 5", "5$", "$1.",
    "$2,500,000,000", "$1999", "pay $12.345 now", "$0.05 each", "$100.10",
    "£5", "£1", "£1,000", "£3.50", "It cost £12 in 1999.", "£0", "50p and 20 pence", "£2.99 a pint",
    "€20", "¥1000", "₹500", "₽300", "¢50", "₿0.5",
    # decimals
    "3.14", "0.5", ".5", "5.", "10.001", "version 2.0.1", "pi is 3.14159 roughly", "1.000", "0.0", "98.6 degrees",
    "1999.5", "2.50", "1,234.5678",
    # large numbers, commas, zeros, negative numbers
    "0", "00", "007", "10", "19", "99", "100", "101", "110", "999", "1000", "1010", "3456", "10000", "12345",
    "100000", "1000000", "1000001", "1000100", "1001000", "1234567", "123456789", "1000000000",
    "123456789012345", "999999999999999999", "1000000000000000000", "12345678901234567890123",
    "1000000000000000", "100000000000000000", "1,234,567,890", "999999999999999999999999999999999999",
    "1,000", "1,000,000", "12,34", "1,2,3", "1,,000", "a,1,b", "10,000 men", "3,000,000,000 stars",
    "-5", "-1,000", "-3.5 degrees", "minus -0", "-1999", "temperatures of -40 below", "−7 (a real minus sign)",
    "phone 555-1234", "3:45pm", "50%", "2+2=4", "1/2", "4x4", "covid19", "h2o", "mp3", "B-52", "route 66",
    # each abbreviation, three ways, and ones that interact
    *[f"{a}. Smith" for a in ABBREVIATIONS],
    *[f"THE {a.upper()}. WAS HERE" for a in ABBREVIATIONS],
    *[f"({a.lower()}.)" for a in ABBREVIATIONS],
    "dr.st.", "mr.s", "Mrs", "st.Louis", "the co. ltd.", "Lt.Col. Jones", "St. St. St.", "Dr.Dr.", "mrs.mr.",
    "Mr. and Mrs. Smith live on St. James St.", "Gen. Maj. Capt. Sgt. Lt. Col. Ft. Knox", "Rev. Dr. King Jr.",
    "Hon. John Doe, Esq.", "Acme Co. Ltd.", "Drs. Jekyll and Hyde",
    # accented Latin in many languages
    "café", "naïve façade", "Ångström", "Zürich", "São Paulo", "crème brûlée", "résumé", "El Niño", "piñata",
    "Ærøskøbing", "Œuvre, cœur, sœur", "Straße und Fuß", "Łódź, Gdańsk, Kraków, Wrocław", "Źdźbło żółć",
    "Příliš žluťoučký kůň úpěl ďábelské ódy", "Dvořák", "İstanbul, ığdır, Şişli, Çağlayan, Gümüşhane",
    "Ðorđe Đoković", "Þórbergur og Ævar", "Skövde, Malmö, Åre", "Sønderborg", "Hårfagre", "Jalapeño",
    "Ca' Foscari è bella", "Việt Nam, Hà Nội, Phở", "Ólafur Arnalds", "Bjørn Borg", "Česká republika",
    "Słowacja", "Ljubljana, Škofja Loka", "Kuşadası", "Ğ ğ Ş ş İ ı", "Ħamrun, Għajnsielem", "Ŋ ŋ ĸ ŉ",
    "Ǆ ǅ ǆ Ǉ ǈ ǉ", "ﬁne ﬂour, ﬀ ﬃ ﬄ", "Ĳsselmeer", "Ŀl", "Ɛʋe and Ǝ", "ə ɪ ʃ ʒ θ ð ŋ",
    "Ångström Ünter Öl Äpfel", "Schrödinger's cat", "Nöel Coward", "Beyoncé", "Motörhead", "Häagen-Dazs",
    # dashes, quotes, ellipses, guillemets and other punctuation
    "well—maybe", "pages 10–20", "a ‒ b ― c", "non‑breaking‐hyphen", "“smart quotes”", "‘single smart’",
    "it’s", "„German“ quotes", "«French» quotes", "‹single guillemets›", "Wait…", "Wait… what?", "‽",
    "† dagger ‡", "• bullet", "x′ and x″", "¡Hola! ¿Qué tal?", "50‰", "price: 10 €", "©2024 ®™",
    "°C and 20°", "±5", "×3 ÷2", "§12 ¶3", "½ cup", "¼ mile and ¾ done", "⅓ of ⅔", "x² + y³ = z¹", "H₂O",
    "№5", "℃ ℉", "™", "µs", "a · b", "a\u00a0b", "zero\u200bwidth", "en\u2002space em\u2003space", "thin\u2009space",
    "line\u2028separator", "para\u2029graph", "soft\u00adhyphen", "‚low‘", "‛reversed’", "‟double reversed”",
    '"quoted"', "'single'", 'he said "hi" and "bye"', "it's", "don't", "I'LL", "rock 'n' roll", 'a " b', '""',
    "Hello, world! How are you? (fine) -- yes; no: maybe/perhaps...", "#hashtag @user 100%", "a&b", "<html>",
    "~`^_|\\{}", "!!!???", "...", "'", "-", "--", "a-b-c", "[brackets]",
    # fullwidth
    "full-width １２３ ＡＢＣ", "ｈｅｌｌｏ，ｗｏｒｌｄ！", "Ｍｒ． Ｓｍｉｔｈ",
    # Greek
    "Ελληνικά", "Καλημέρα κόσμε", "Γειά σου Κόσμε!", "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.", "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
    "αβγδεζηθικλμνξοπρστυφχψως", "Ὅμηρος", "ἀρετή", "φιλοσοφία", "Ψυχή", "π = 3.14", "Σωκράτης, 470 π.Χ.",
    "μ and Ω", "ΐΰϊϋ",
    # Cyrillic
    "Привет мир", "Москва", "Съешь же ещё этих мягких французских булок, да выпей чаю.", "Щука и ёж",
    "Київ, Україна, Ґалаґан, їжак, єнот", "Беларусь: Мінск, Ўзвышша", "Србија, Ђорђе, Љубав, Њушка, Џеп, Ћирилица",
    "Македонија: Ѓорѓи, Ќерка, Ѕвезда", "Қазақстан: Алматы, Ғалым, Өскемен, Ұлытау, Үй, Һ, Ә",
    "Тбилиси 2024 года", "ЪЫЬЭЮЯ ъыьэюя", "Я люблю 5 котов.", "Д-р Иванов",
    # mixed text
    "Dr. Müller paid €1,234.56 on the 3rd of März 2021—quite a lot!",
    "Mrs. O’Brien’s café opened in 1999 at 21st St.",
    "The 1st prize: $1,000,000; the 2nd: £500.",
    "Ελληνικά and English and Русский in 2005.",
    "He ran 3.5 km in 12 minutes — a record!",
    "“Hello,” said Mr. Smith, “it’s 2023…”",
    "Capt. Jean-Luc Picard, 2364", "At 10:30 on 25/12/2020, 7 people came.",
    "She was born on January 1st, 1901, in St. Petersburg.",
    "The Sgt. earned $45,000.50 in 2007.",
    "Col. Sanders's 11 herbs & spices",
    # whitespace oddities
    "a\tb", "a  b", "a\n\nb", "  leading", "trailing  ", "\t\t", "\r\n", "\x0b\x0c", "a\x1cb", " \u00a0 ",
    "a \t \n b", "\n", " ", "   ", "x" + " " * 7 + "y", "\x00", "a\x7fb",
    # empty, emoji and symbols only
    "", "😀", "😀😀😀", "I ❤️ CLVP 😀", "👍🏽 ok", "a😀b", "🇺🇸", "★☆♥♦", "→ ← ↑ ↓", "✓ done", "∞", "√2 ≈ 1.414",
    # other scripts (need the optional unidecode package to read as Tortoise's)
    "日本語のテキスト", "東京 2020", "中文测试", "한국어", "مرحبا بالعالم", "שלום", "हिन्दी", "ภาษาไทย",
    "arabic digits ٣٤", "ｶﾀｶﾅ", "Ελληνικά 日本", "Hello 世界",
    # literal special tokens, apostrophes before letters (where pyclvp's BPE and Tortoise's differ: see the tests)
    "[STOP]", "a [STOP] b", "[UNK]", "[SPACE]", "<|endoftext|>", "письмо", "'tis", "y'all", "I'd've", "snake_case",
    # plain sentences
    "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "This is an example text.",
    "Tortoise is a text-to-speech program built with the following priorities.",
]


def _generated_lines(rng: random.Random) -> list[str]:
    """Seeded numbers across every magnitude inflect can say, money and ordinals."""
    out = []
    for _ in range(40):
        n = rng.randrange(10 ** rng.randrange(1, 37))
        out.append(f"{n} and {n:,}")
    for _ in range(20):
        out.append(f"${rng.randrange(10 ** rng.randrange(1, 8)):,}.{rng.randrange(100):02d}")
    for _ in range(20):
        n = rng.randrange(10 ** rng.randrange(1, 7))
        out.append(f"the {n}th of {rng.randrange(1000, 3001)}")
    return out


# Lines whose numbers Tortoise cannot say (inflect raises NumOutOfRangeError from 10**36 up); kept with
# expected null so the departure is visible in the fixture.
RAISING = ["1" + "0" * 36, "10" * 20, "the " + "9" * 40 + "th", "$" + "1" * 40]


def corpus() -> list[str]:
    return list(dict.fromkeys([*LINES, *_generated_lines(random.Random(5)), *RAISING]))


def tortoise_tokenizer_module():
    """The sdist's tortoise/utils/tokenizer.py as a module, torch stubbed (encode and the cleaners never use it)."""
    stub = types.ModuleType("torch")
    stub.Tensor = type("Tensor", (), {})
    sys.modules.setdefault("torch", stub)
    spec = importlib.util.spec_from_file_location("tortoise_tokenizer", SDIST / "tortoise" / "utils" / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _needs_unidecode(text: str) -> bool:
    """Whether pyclvp reads `text` as Tortoise only with the optional unidecode package installed."""
    from unidecode import unidecode

    sys.path.insert(0, str(ROOT))
    from pyclvp.text.transliteration_table import COVERED

    return any(not c.isascii() and not any(lo <= ord(c) < hi for lo, hi in COVERED) and unidecode(c)
               for c in text)


def make(data_dir: Path) -> None:
    module = tortoise_tokenizer_module()
    clean, tokenizer = module.english_cleaners, module.VoiceBpeTokenizer()
    lines = []
    for text in corpus():
        try:
            lines.append({"text": text, "expected": clean(text), "ids": tokenizer.encode(text)})
            if _needs_unidecode(text):
                lines[-1]["needs_unidecode"] = True
        except Exception as e:  # inflect.NumOutOfRangeError, int() digit limit
            lines.append({"text": text, "expected": None, "error": type(e).__name__})
    assert len(lines) >= 300, len(lines)
    out = data_dir / "cleaners"
    out.mkdir(parents=True, exist_ok=True)
    doc = {"fixture_version": FIXTURE_VERSION, "tortoise_version": SDIST.name.rpartition("-")[2],
           "inflect_version": version("inflect"), "unidecode_version": version("Unidecode"),
           "tokenizers_version": version("tokenizers"), "lines": lines}
    head = json.dumps({k: v for k, v in doc.items() if k != "lines"}, ensure_ascii=False)[:-1]
    body = ",\n".join(json.dumps(line, ensure_ascii=False) for line in lines)  # one line per corpus line
    (out / "corpus.json").write_text(f'{head}, "lines": [\n{body}\n]}}\n', encoding="utf-8")
    print(f"[cleaners] {len(lines)} lines ({sum(l['expected'] is None for l in lines)} raise), "
          f"inflect {doc['inflect_version']}, unidecode {doc['unidecode_version']}")
