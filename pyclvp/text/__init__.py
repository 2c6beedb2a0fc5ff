"""Text to token ids. Read in this order:

  normalizer.py  the English normalizer (numbers, abbreviations, ASCII) transformers' ClvpTokenizer runs
  cleaners.py    Tortoise's own english_cleaners (inflect's number words, unidecode's transliteration),
                 ClvpTokenizer(normalizer="tortoise"); transliteration_table.py is its generated table
  tokenizer.py   byte-level BPE: ClvpTokenizer (encode, decode, padding)
"""
from .tokenizer import ClvpTokenizer

__all__ = ["ClvpTokenizer"]
