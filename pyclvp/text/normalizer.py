"""The English text normalizer CLVP's tokenizer runs before BPE, rule for rule as transformers does it.

ref: transformers.models.clvp.number_normalizer.EnglishNormalizer.__call__

`normalize(text)` applies six steps, in this order (each is one function below):

  1. to_ascii              drop every non-ASCII character ("café" -> "caf", "£5" -> "5", emoji -> "")
  2. str.lower
  3. normalize_numbers     six regex rules, in order:
       a. commas inside digit runs are removed          "1,000"  -> "1000"
       b. pounds                                        "£12"    -> "12 pounds"   (see the note below)
       c. dollars, with or without cents                "$1.50"  -> "1 dollar, 50 cents"
       d. decimal points                                "3.14"   -> "3 point 14"
       e. ordinals                                      "22nd"   -> "twenty-twond"  (sic: the suffix stays)
       f. every remaining digit run -> words; 1001-2999 read like years:
            "1900" -> "nineteen hundred", "2005" -> "two thousand five", "2000" -> "two thousand",
            "1999" -> "one thousand, nine hundred ninety-nine" (number_to_words), "-5" -> "-five"
  4. expand_abbreviations  "mr." -> "mister", "st." -> "saint", ... (18 of them, applied one after another)
  5. collapse_whitespace   every run of whitespace -> one space (leading/trailing spaces are kept)
  6. remove '"'

Quirks kept on purpose, because parity with transformers is the point:
  * "£" is non-ASCII, so step 1 has removed it before rule 3b could see it: "£3" reads "three".
  * Rule 3e keeps the suffix: "1st" -> "onest", "11th" -> "eleventh".
  * '"' is removed after whitespace is collapsed, so 'a " b' -> 'a  b' (two spaces). Hence
    normalize() is idempotent only on text without '"'.

Where transformers would raise, this module returns something instead (the only departures):
  * digit runs longer than Python's int-string limit (4300 digits): any number from 10**18 up reads
    "number out of range", so it is decided from the digit count without calling int();
  * a dollar amount with a stray comma ("$,5", "$1,.5"): int(",5") raises there; here commas in
    the amount are ignored.

Beyond transformers, `normalize(text, transliterate=True)` first decomposes the text (unicodedata
NFKD), so accented Latin letters keep their ASCII base: "café" -> "cafe" (what Tortoise's own
unidecode-based cleaner gave) instead of "caf". It is off by default so parity holds.
"""
from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize", "to_ascii", "normalize_numbers", "number_to_words", "expand_abbreviations",
           "collapse_whitespace", "ABBREVIATIONS"]

ONES = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SCALES = [(10**15, "quadrillion"), (10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand")]
OUT_OF_RANGE = 10**18  # number_to_words reads anything from here up as "number out of range"

# (abbreviation, expansion), in transformers' order; the order matters ("dr.st." -> "doctorst.").
ABBREVIATIONS = [
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
    ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
    ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"),
    ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"),
]
_ABBREVIATION_RES = [(re.compile(r"\b%s\." % a, re.IGNORECASE), e) for a, e in ABBREVIATIONS]
_ANY_ABBREVIATION = re.compile(r"\b(?:%s)\." % "|".join(a for a, _ in ABBREVIATIONS), re.IGNORECASE)

# The number rules. transformers writes `[0-9]++` (possessive, Python >= 3.11) in rules d and e; a
# digit run can never be followed by '.' or a letter after giving back a digit, so `+` matches the same.
_COMMA_NUMBER = re.compile(r"([0-9][0-9,]+[0-9])")
_POUNDS = re.compile(r"£([0-9,]*[0-9])")
_DOLLARS = re.compile(r"\$([0-9.,]*[0-9])")
# (?<![0-9]): a match can only start where a digit run starts (the leftmost match does anyway); without
# it every later start in a long run rescans the rest of the run, quadratic in the run's length.
_DECIMAL = re.compile(r"(?<![0-9])([0-9]+\.[0-9]+)")
_ORDINAL = re.compile(r"(?<![0-9])[0-9]+(st|nd|rd|th)")
_NUMBER = re.compile(r"[0-9]+")
_DIGIT = re.compile(r"[0-9]")
_WHITESPACE = re.compile(r"\s+")


def to_ascii(text: str, transliterate: bool = False) -> str:
    """Drop non-ASCII characters; with transliterate, NFKD first so 'é' keeps its 'e'.

    ref: EnglishNormalizer.convert_to_ascii
    """
    if transliterate:
        text = unicodedata.normalize("NFKD", text)  # 'é' -> 'e' + U+0301, and U+0301 is dropped below
    return text.encode("ascii", "ignore").decode("ascii")


def number_to_words(num: int) -> str:
    """123 -> "one hundred twenty-three"; 1_002_000 -> "one million, two thousand"; up to 10**18 - 1.

    ref: EnglishNormalizer.number_to_words (its elif chain over the scales is the loop below)
    """
    if num == 0:
        return "zero"
    if num < 0:
        return "minus " + number_to_words(-num)
    if num >= OUT_OF_RANGE:
        return "number out of range"
    for scale, name in SCALES:
        if num >= scale:
            head, rest = divmod(num, scale)
            return number_to_words(head) + " " + name + (", " + number_to_words(rest) if rest else "")
    return _below_thousand(num)


def _below_thousand(num: int) -> str:
    if num < 10:
        return ONES[num]
    if num < 20:
        return TEENS[num - 10]
    if num < 100:
        return TENS[num // 10] + ("-" + ONES[num % 10] if num % 10 else "")
    return ONES[num // 100] + " hundred" + (" " + _below_thousand(num % 100) if num % 100 else "")


def _digits_to_int(digits: str) -> int:
    """int(digits), except that numbers past number_to_words' range all become OUT_OF_RANGE.

    Deciding from the digit count avoids Python's 4300-digit int() limit on very long runs.
    """
    digits = digits.lstrip("0")
    return OUT_OF_RANGE if len(digits) > len(str(OUT_OF_RANGE)) - 1 else int(digits or "0")


def _canonical(amount: str) -> str:
    """'%s' % int(amount) for a digit string: "007" -> "7", "" -> "0" (commas ignored, see docstring)."""
    return amount.replace(",", "").lstrip("0") or "0"


def _remove_commas(m: re.Match) -> str:
    return m.group(1).replace(",", "")


def _expand_dollars(m: re.Match) -> str:
    """"$1.50" -> "1 dollar, 50 cents"; "$5" -> "5 dollars"; "$.01" -> "1 cent"; "$1.2.3" -> "1.2.3 dollars".

    ref: EnglishNormalizer._expand_dollars
    """
    match = m.group(1)
    parts = match.split(".")
    if len(parts) > 2:
        return match + " dollars"
    dollars = _canonical(parts[0])
    cents = _canonical(parts[1]) if len(parts) > 1 else "0"
    dollar_unit = "dollar" if dollars == "1" else "dollars"
    cent_unit = "cent" if cents == "1" else "cents"
    if dollars != "0" and cents != "0":
        return f"{dollars} {dollar_unit}, {cents} {cent_unit}"
    if dollars != "0":
        return f"{dollars} {dollar_unit}"
    if cents != "0":
        return f"{cents} {cent_unit}"
    return "zero dollars"


def _expand_decimal_point(m: re.Match) -> str:
    return m.group(1).replace(".", " point ")


def _expand_ordinal(m: re.Match) -> str:
    """"1st" -> "onest", "12th" -> "twelveth"... the written suffix is re-derived, not removed.

    ref: EnglishNormalizer._expand_ordinal
    """
    digits = m.group(0)[:-2]
    last_two = int(digits[-2:])  # == num % 100
    suffix = "th" if 10 <= last_two <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(last_two % 10, "th")
    return number_to_words(_digits_to_int(digits)) + suffix


def _expand_number(m: re.Match) -> str:
    """A digit run -> words; 1001..2999 are read the way years are.

    ref: EnglishNormalizer._expand_number
    """
    num = _digits_to_int(m.group(0))
    if 1000 < num < 3000:
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + number_to_words(num % 100)
        if num % 100 == 0:
            return number_to_words(num // 100) + " hundred"
    return number_to_words(num)


def normalize_numbers(text: str) -> str:
    """Rules 3a-3f of the module docstring, in order.

    ref: EnglishNormalizer.normalize_numbers
    """
    if not _DIGIT.search(text):  # every rule needs a digit
        return text
    text = _COMMA_NUMBER.sub(_remove_commas, text)
    text = _POUNDS.sub(r"\1 pounds", text)
    text = _DOLLARS.sub(_expand_dollars, text)
    text = _DECIMAL.sub(_expand_decimal_point, text)
    text = _ORDINAL.sub(_expand_ordinal, text)
    return _NUMBER.sub(_expand_number, text)


def expand_abbreviations(text: str) -> str:
    """"dr. who" -> "doctor who": the 18 rules one after another (one combined search skips them all).

    ref: EnglishNormalizer.expand_abbreviations
    """
    if not _ANY_ABBREVIATION.search(text):
        return text
    for pattern, expansion in _ABBREVIATION_RES:
        text = pattern.sub(expansion, text)
    return text


def collapse_whitespace(text: str) -> str:
    """Every run of whitespace (as Python's re sees it, so \\x1c-\\x1f too) becomes one space."""
    return _WHITESPACE.sub(" ", text)


def normalize(text: str, transliterate: bool = False) -> str:
    """The whole normalizer: steps 1-6 of the module docstring.

    ref: EnglishNormalizer.__call__
    """
    text = to_ascii(text, transliterate).lower()
    text = expand_abbreviations(normalize_numbers(text))
    return collapse_whitespace(text).replace('"', "")
