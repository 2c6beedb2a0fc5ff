"""Text to token ids. Read in this order:

  normalizer.py  the English normalizer (numbers, abbreviations, ASCII) transformers' ClvpTokenizer runs
  tokenizer.py   byte-level BPE: ClvpTokenizer (encode, decode, padding)
"""
from .tokenizer import ClvpTokenizer

__all__ = ["ClvpTokenizer"]
