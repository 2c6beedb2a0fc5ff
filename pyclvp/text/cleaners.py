"""Tortoise's own text cleaner (english_cleaners), rule for rule, without inflect or unidecode.

ref: tortoise-tts 3.0.0, tortoise/utils/tokenizer.py: english_cleaners (what VoiceBpeTokenizer.encode runs)

The CLVP model was trained on text cleaned this way; transformers' normalizer (normalizer.py, the
ClvpTokenizer default) reads numbers and non-ASCII text differently. `english_cleaners(text)` applies
six steps, in this order (each is one function below):

  1. convert_to_ascii      transliterate, as unidecode does:  "café" -> "cafe", "Straße" -> "Strasse",
                           "—" -> "--", "“x”" -> '"x"', "…" -> "...", "£" -> "PS", "€" -> "EUR",
                           "Привет" -> "Privet", "Ελληνικά" -> "Ellenika", "½" -> " 1/2"
  2. str.lower
  3. normalize_numbers     six regex rules, in order:
       a. commas inside digit runs are removed          "1,000"  -> "1000"
       b. pounds                                        "£12" -> "12 pounds" in Tortoise's source, but it never
                                                         fires: step 1 has made "£" "PS", so "£12" reads "pstwelve"
       c. dollars, with or without cents                "$1.50"  -> "1 dollar, 50 cents"
       d. decimal points                                "3.14"   -> "3 point 14"
       e. ordinals, spoken by inflect                   "22nd"   -> "twenty-second", "101st" -> "one hundred and first"
       f. every remaining digit run, spoken by inflect; 1001-2999 read like years:
            "1999" -> "nineteen ninety-nine", "1905" -> "nineteen oh five", "1900" -> "nineteen hundred",
            "2000" -> "two thousand", "2005" -> "two thousand five", "2010" -> "twenty ten",
            "3000" -> "three thousand", "1234567" -> "one million, two hundred thirty-four thousand, five
            hundred sixty-seven", "-5" -> "-five"
  4. expand_abbreviations  "mr." -> "mister", "st." -> "saint", ... (18 of them, applied one after another)
  5. collapse_whitespace   every run of whitespace -> one space (leading/trailing spaces are kept)
  6. remove '"'

Steps 3a-3d and 4-6 are the same code as normalizer.py's (transformers copied them from Tortoise); the
differences from the transformers normalizer are step 1 and the number words of 3e-3f, which follow
inflect.engine().number_to_words in the three ways Tortoise calls it (number_to_words below).

Step 1, in-house: a character of the COVERED blocks (Latin, IPA, Greek, Cyrillic, general punctuation,
currency, letterlike symbols, number forms, arrows, mathematical operators, enclosed alphanumerics, box
drawing and geometric shapes, miscellaneous symbols, dingbats, fullwidth ASCII) is transliterated by its NFKD
decomposition (ASCII kept, combining marks dropped) unless transliteration_table.TABLE says otherwise;
that table was generated from unidecode's output for those code points only, and with it every covered
code point reads exactly as unidecode reads it. Other scripts (CJK, Arabic, Hebrew, Devanagari, Hangul,
kana, ...): if the optional `unidecode` package is importable they go through it, so the output is
Tortoise's; otherwise they are dropped, as the transformers normalizer drops every non-ASCII character
(emoji and most symbols read "" either way: unidecode drops them too).

Where Tortoise raises, this module returns something instead (the only departures):
  * a number of 10**36 or more (inflect: NumOutOfRangeError; past 4300 digits Python's int() limit)
    is read digit by digit: "10**36" -> "one zero zero ... zero";
  * a dollar amount with a stray comma ("$,5", "$1,.5"): int(",5") raises there; here the commas in the
    amount are ignored, as in normalizer.py.
"""
from __future__ import annotations

import re
import unicodedata

from . import normalizer
from .normalizer import collapse_whitespace, expand_abbreviations
from .transliteration_table import COVERED, TABLE

try:  # optional: transliterates the scripts outside COVERED exactly as Tortoise did
    from unidecode import unidecode as _unidecode
except ImportError:  # pragma: no cover - depends on the environment
    _unidecode = None

__all__ = ["english_cleaners", "convert_to_ascii", "normalize_numbers", "number_to_words", "ordinal_words",
           "year_words", "collapse_whitespace", "expand_abbreviations", "has_unidecode"]

# ---------------------------------------------------------------------------------------------------
# step 1: transliteration


def _transliterate(c: str) -> str:
    """One covered character -> ASCII: TABLE, else its NFKD parts (ASCII kept, TABLE looked up, rest dropped)."""
    if c in TABLE:
        return TABLE[c]
    return "".join(d if d.isascii() else TABLE.get(d, "") for d in unicodedata.normalize("NFKD", c))


# every covered code point -> its ASCII, as one str.translate table
_COVERED_TO_ASCII = {cp: _transliterate(chr(cp)) for lo, hi in COVERED for cp in range(lo, hi)}


def has_unidecode() -> bool:
    """True when the optional unidecode package is importable (scripts outside COVERED then read as Tortoise's)."""
    return _unidecode is not None


def convert_to_ascii(text: str) -> str:
    """Transliterate to ASCII as unidecode does; outside COVERED, unidecode if installed, else drop.

    ref: tortoise/utils/tokenizer.py: convert_to_ascii (unidecode(text))
    """
    if text.isascii():
        return text
    text = text.translate(_COVERED_TO_ASCII)  # "é" -> "e", "ж" -> "zh", "—" -> "--"
    if text.isascii():
        return text
    if _unidecode is not None:
        return _unidecode(text)  # the rest (CJK, Arabic, ...); ASCII passes through unchanged
    return text.encode("ascii", "ignore").decode("ascii")


# ---------------------------------------------------------------------------------------------------
# step 3: number words, as inflect.engine().number_to_words speaks them

UNITS = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
# ref: inflect `mill`: the name of each group of three digits; inflect has none past decillion
SCALES = ["", " thousand", " million", " billion", " trillion", " quadrillion", " quintillion", " sextillion",
          " septillion", " octillion", " nonillion", " decillion"]
OUT_OF_RANGE_DIGITS = 3 * len(SCALES) + 1  # 37 digits (10**36) and up: inflect raises NumOutOfRangeError
# ref: inflect `ordinal` / `ordinal_suff`: the last word's ending -> its ordinal ending; otherwise add "th"
_ORDINAL_ENDINGS = {"ty": "tieth", "one": "first", "two": "second", "three": "third", "five": "fifth",
                    "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_ORDINAL_ENDING = re.compile(rf"({'|'.join(_ORDINAL_ENDINGS)})\Z")


def _tens(n: int) -> str:
    """0..99 -> "", "seven", "thirteen", "forty", "forty-two".  ref: inflect engine.tenfn"""
    if n // 10 == 1:
        return TEENS[n % 10]
    return TENS[n // 10] + ("-" if n // 10 and n % 10 else "") + UNITS[n % 10]


def _hundreds(n: int, andword: str) -> str:
    """1..999 -> "five", "one hundred", "one hundred and five" (andword "and") or "one hundred five" ("").

    ref: inflect engine.hundfn (its double spaces, when andword is "", are collapsed by number_to_words)
    """
    if n < 100:
        return _tens(n)
    rest = " " + (andword + " " if andword else "") + _tens(n % 100) if n % 100 else ""
    return f"{UNITS[n // 100]} hundred{rest}"


def _digit_by_digit(digits: str) -> str:
    """The departure for numbers inflect cannot say: "1000" -> "one zero zero zero"."""
    return " ".join(UNITS[int(d)] or "zero" for d in digits)


def number_to_words(digits: str | int, andword: str = "and") -> str:
    """inflect.engine().number_to_words(n, andword=andword) for a whole number n >= 0 (digits, or an int).

    The number is cut into groups of three digits from the right; each non-zero group is spoken
    ("two hundred and five") followed by its scale ("thousand", "million", ...), and the groups are
    joined with ", ". One more inflect rule: when the last group spoken is the units group and it is a
    single word ("five", "twenty-three", not "one hundred"), it is joined with " and " (andword) instead:
        1_000_005 -> "one million and five"        1_000_105 -> "one million, one hundred and five"
        1_005_000 -> "one million, five thousand"  1_234     -> "one thousand, two hundred and thirty-four"
    With andword="" (Tortoise's plain numbers), "and" is left out and the double space collapses.

    ref: inflect engine.number_to_words -> enword (group 0), hundsub/tensub/unitsub, COMMA_WORD
    """
    digits = str(digits).lstrip("0")
    if not digits:
        return "zero"
    if len(digits) >= OUT_OF_RANGE_DIGITS:
        return _digit_by_digit(digits)
    groups = [int(digits[max(0, i - 3):i]) for i in range(len(digits), 0, -3)]  # units group first
    spoken = [_hundreds(g, andword) + SCALES[i] for i, g in reversed(list(enumerate(groups))) if g]
    if len(spoken) > 1 and groups[0] and " " not in spoken[-1]:
        last = spoken.pop()
        spoken[-1] += f" {andword} {last}" if andword else f" {last}"
    return ", ".join(spoken)


def ordinal_words(digits: str) -> str:
    """"21" -> "twenty-first", "101" -> "one hundred and first", "0" -> "zeroth", "1000" -> "one thousandth".

    Tortoise calls number_to_words("21st"): inflect drops the suffix (whichever it is: "2st" is
    "second"), speaks the number with andword "and", then makes the last word ordinal.
    ref: inflect engine.number_to_words (myord) -> engine._sub_ord
    """
    words = number_to_words(digits)
    if len(digits.lstrip("0")) >= OUT_OF_RANGE_DIGITS:
        return words  # the departure: digit by digit, no ordinal
    head, sep, last = words.rpartition(", ")
    ordinal = _ORDINAL_ENDING.sub(lambda m: _ORDINAL_ENDINGS[m.group(1)], last)
    return head + sep + (ordinal if ordinal != last else last + "th")


def year_words(num: int) -> str:
    """1001..2999 the way Tortoise reads years; every other number as inflect with andword="".

        2000 -> "two thousand"        2001..2009 -> "two thousand one" .. "two thousand nine"
        1900 -> "nineteen hundred"    (any multiple of 100 in the range: "<n // 100> hundred")
        1999 -> "nineteen ninety-nine", 1905 -> "nineteen oh five", 2010 -> "twenty ten"
        1000 -> "one thousand", 3000 -> "three thousand", 123 -> "one hundred twenty-three"

    The pairs are inflect's number_to_words(num, andword='', zero='oh', group=2) with ", " -> " ".
    ref: tortoise/utils/tokenizer.py: _expand_number; inflect engine.enword (group 2), group2sub
    """
    if not 1000 < num < 3000:
        return number_to_words(num, andword="")
    if num == 2000:
        return "two thousand"
    if 2000 < num < 2010:
        return "two thousand " + number_to_words(num % 100)
    if num % 100 == 0:
        return number_to_words(num // 100) + " hundred"
    high, low = divmod(num, 100)
    return _tens(high) + " " + (_tens(low) if low >= 10 else "oh " + UNITS[low])


def _expand_ordinal(m: re.Match) -> str:
    return ordinal_words(m.group(0)[:-2])


def _expand_number(m: re.Match) -> str:
    digits = m.group(0).lstrip("0") or "0"
    if len(digits) >= OUT_OF_RANGE_DIGITS:
        return _digit_by_digit(digits)
    return year_words(int(digits))


def normalize_numbers(text: str) -> str:
    """Rules 3a-3f of the module docstring, in order.

    ref: tortoise/utils/tokenizer.py: normalize_numbers
    """
    if not normalizer._DIGIT.search(text):  # every rule needs a digit
        return text
    text = normalizer._COMMA_NUMBER.sub(normalizer._remove_commas, text)
    text = normalizer._POUNDS.sub(r"\1 pounds", text)
    text = normalizer._DOLLARS.sub(normalizer._expand_dollars, text)
    text = normalizer._DECIMAL.sub(normalizer._expand_decimal_point, text)
    text = normalizer._ORDINAL.sub(_expand_ordinal, text)
    return normalizer._NUMBER.sub(_expand_number, text)


# ---------------------------------------------------------------------------------------------------
# the whole cleaner


def english_cleaners(text: str) -> str:
    """Tortoise's cleaner: steps 1-6 of the module docstring.

    ref: tortoise/utils/tokenizer.py: english_cleaners
    """
    text = convert_to_ascii(text).lower()
    text = expand_abbreviations(normalize_numbers(text))
    return collapse_whitespace(text).replace('"', "")
