"""ClvpTokenizer: CLVP's byte-level BPE, id for id what transformers' ClvpTokenizer gives.

ref: transformers.models.clvp.tokenization_clvp.ClvpTokenizer (+ PreTrainedTokenizer.tokenize/_decode)

Encoding one string walks five steps:

  0. special split  The added tokens "[STOP]", "[UNK]" and "<|endoftext|>" are cut out of the raw
                    text first and become their ids directly; every piece between them goes through
                    steps 1-4 on its own. (ref: PreTrainedTokenizer.tokenize, Trie.split)
  1. normalize      ASCII only, lower case, numbers and abbreviations spelled out, whitespace
                    collapsed: "Hello  World!" -> "hello world!". Which normalizer is a choice:
                      normalizer="transformers" (default)  normalizer.normalize, transformers' rules
                      normalizer="tortoise"                cleaners.english_cleaners, the cleaner the
                                                           Tortoise model was trained on ("1999" ->
                                                           "nineteen ninety-nine", "café" -> "cafe")
  2. split          the GPT-2 pattern cuts words, keeping each word's leading space:
                                                                 -> ["hello", " world", "!"]
  3. bytes          each word's UTF-8 bytes become printable characters through GPT-2's
                    byte <-> unicode table; the space byte becomes "Ġ"   -> ["hello", "Ġworld", "!"]
  4. BPE            each word starts as single characters; the adjacent pair with the lowest merge
                    rank is merged everywhere, again and again, until no pair has a rank:
                      h e l l o -> he l l o -> he ll o        ("h e" and "l l" are merges)
  5. ids            each piece is looked up in vocab.json; "Ġ" alone is "[SPACE]" (id 2), pieces not
                    in the vocabulary are "[UNK]" (id 1).        -> [62, 84, 28, 2, 179, 79, 3]

With normalizer="tortoise" the ids are those of Tortoise's VoiceBpeTokenizer.encode (english_cleaners,
' ' -> '[SPACE]', tokenizer.json's Whitespace pre-split + BPE) on every line of the cleaners fixture but
two kinds, where the BPE is left as it is (transformers' ClvpTokenizer parts from Tortoise the same way):
  * step 2's GPT-2 pattern cuts "'s 't 're 've 'm 'll 'd" off even before more letters, so they cannot
    merge with them: "k'azak'stan" (from Қазақстан) is ... ' s t an here, ... ' st an in Tortoise;
  * step 0 keeps a literal "[STOP]", "[UNK]" or "<|endoftext|>" as its id; Tortoise lowercases it first
    and spells it out ("[stop]" -> [UNK] s to p [UNK]).
Tortoise's decode also differs: it drops "[STOP]", which the clean-up below makes a space, and keeps
runs of "[SPACE]" as runs of spaces, which the clean-up shrinks.

Decoding maps ids back to their pieces, pieces back to bytes, bytes to UTF-8 text; the clean-up
then turns "[SPACE]" and "[STOP]" into " ", removes "[UNK]" and shrinks runs of spaces
(ref: ClvpTokenizer.clean_up_tokenization: exactly its two replace() calls, so "     " -> "  ").

Two defaults differ from transformers 5.x's, each for a stated reason:
  * decode(..., clean_up_tokenization_spaces=True). transformers 5 defaults to False, which returns
    "hello[SPACE]world"; 4.x (and Tortoise) cleaned up. Pass False for transformers 5's output.
  * add_prefix_space=True puts a space before the text (ids == encode(" " + text)), as the
    transformers docstring describes and 4.x did; transformers 5 silently ignores the flag.

Speed: the whole per-word result (bytes -> BPE -> ids) is cached, patterns are precompiled, the byte
table is a str.translate table, and text without a special token or a digit skips those steps.
"""
from __future__ import annotations

import json
import operator
from pathlib import Path

import numpy as np
import regex

from ..checks import check_choice
from ..io.files import read_json, read_small, write_atomic
from . import cleaners, normalizer

__all__ = ["ClvpTokenizer", "bytes_to_unicode", "bpe", "DATA_DIR"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # pyclvp/data: vocab.json, merges.txt

# ref: ClvpTokenizer.pat (the GPT-2 pattern; needs `regex` for \p{L} and \p{N})
GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
SPACE_PIECE = "\u0120"  # "Ġ": the space byte after bytes_to_unicode
CACHE_LIMIT = 100_000  # words kept in the per-word cache before it is emptied
NORMALIZERS = ("transformers", "tortoise")  # step 1: normalizer.normalize or cleaners.english_cleaners


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table: printable Latin-1 bytes map to themselves, the
    other 68 (controls, space, ...) to U+0100 onwards, so BPE never sees whitespace or controls.

    ref: transformers.models.clvp.tokenization_clvp.bytes_to_unicode
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return dict(sorted(table.items()))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}
_BYTES_AS_LATIN1 = str.maketrans({chr(b): c for b, c in BYTE_ENCODER.items()})


def byte_encode(word: str) -> str:
    """UTF-8 bytes of `word`, each shown as its bytes_to_unicode character: " hi" -> "Ġhi"."""
    return word.encode("utf-8").decode("latin-1").translate(_BYTES_AS_LATIN1)


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Merge a word's characters by rank: the lowest-ranked adjacent pair, everywhere, until none is left.

    ref: ClvpTokenizer.bpe
    """
    parts = list(word)
    while len(parts) > 1:
        mergeable = [pair for pair in zip(parts, parts[1:]) if pair in ranks]
        if not mergeable:
            break
        parts = _merge_pair(parts, min(mergeable, key=ranks.__getitem__))
    return parts


def _merge_pair(parts: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every non-overlapping occurrence of `pair`, left to right, by the joined piece."""
    merged, i = [], 0
    while i < len(parts):
        if i + 1 < len(parts) and parts[i] == pair[0] and parts[i + 1] == pair[1]:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(parts[i])
            i += 1
    return merged


def read_vocab(path: Path) -> dict[str, int]:
    vocab = read_json(path)
    if not isinstance(vocab, dict) or not all(isinstance(i, int) and i >= 0 for i in vocab.values()):
        raise ValueError(f"{path}: expected a JSON object mapping tokens to non-negative integer ids")
    return vocab


def read_merges(path: Path) -> dict[tuple[str, str], int]:
    """merges.txt -> {(a, b): rank}. Like transformers: the first line (the "#version" header) and
    everything after the last newline are skipped. ref: ClvpTokenizer.__init__"""
    try:
        lines = read_small(path).decode("utf-8").split("\n")[1:-1]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    return {tuple(line.split()): rank for rank, line in enumerate(lines)}


class ClvpTokenizer:
    """CLVP's tokenizer. `ClvpTokenizer.from_pretrained()` loads the bundled Tortoise vocabulary.

    vocab_size is the vocabulary file's size (255); len(tokenizer) also counts the added token
    "<|endoftext|>" (id 255), which only text containing that literal string can produce.

    normalizer: "transformers" (default: transformers' EnglishNormalizer, ids as transformers gives them)
    or "tortoise" (Tortoise's english_cleaners, the text the model was trained on). transliterate=True
    ("café" -> "cafe") belongs to the transformers normalizer; the Tortoise one always transliterates.
    """

    UNK_TOKEN, PAD_TOKEN, EOS_TOKEN, BOS_TOKEN = "[UNK]", "[STOP]", "[STOP]", "<|endoftext|>"
    SPACE_TOKEN = "[SPACE]"

    def __init__(self, vocab_file, merges_file, *, add_prefix_space: bool = False, transliterate: bool = False,
                 errors: str = "replace", normalizer: str = "transformers"):
        self.normalizer = check_choice("normalizer", normalizer, NORMALIZERS)
        if transliterate and normalizer == "tortoise":
            raise ValueError("transliterate=True applies to normalizer='transformers'; "
                             "normalizer='tortoise' always transliterates")
        self.encoder = read_vocab(vocab_file)
        self.bpe_ranks = read_merges(merges_file)
        self.add_prefix_space = add_prefix_space
        self.transliterate = transliterate
        self.errors = errors
        self.added_tokens = self._added_tokens()
        self.decoder = {i: t for t, i in self.encoder.items()} | {i: t for t, i in self.added_tokens.items()}
        self.unk_token_id = self.added_tokens[self.UNK_TOKEN]
        self.pad_token_id = self.added_tokens[self.PAD_TOKEN]
        self.all_special_ids = sorted(set(self.added_tokens.values()))
        self._has_space = self.SPACE_TOKEN in self.encoder  # then a lone "Ġ" piece is "[SPACE]"
        self._special_split = regex.compile(
            "(" + "|".join(regex.escape(t) for t in sorted(self.added_tokens, key=len, reverse=True)) + ")")
        self._special_first_chars = {t[0] for t in self.added_tokens}
        self._cache: dict[str, tuple[int, ...]] = {}

    # -----------------------------------------------------------------------------------------
    # loading and saving

    @classmethod
    def from_pretrained(cls, path=None, **kwargs) -> "ClvpTokenizer":
        """None: the bundled Tortoise vocabulary; else a folder holding vocab.json and merges.txt."""
        folder = DATA_DIR if path is None else Path(path)
        files = [folder / "vocab.json", folder / "merges.txt"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"ClvpTokenizer.from_pretrained: missing {', '.join(missing)}")
        return cls(*files, **kwargs)

    def save_pretrained(self, directory) -> tuple[str, ...]:
        """Write vocab.json, merges.txt and a tokenizer_config.json that transformers can also load."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        merges = sorted(self.bpe_ranks, key=self.bpe_ranks.get)
        config = {"tokenizer_class": "ClvpTokenizer", "add_prefix_space": self.add_prefix_space,
                  "errors": self.errors, "bos_token": self.BOS_TOKEN, "eos_token": self.EOS_TOKEN,
                  "pad_token": self.PAD_TOKEN, "unk_token": self.UNK_TOKEN}
        written = {
            "vocab.json": json.dumps(self.encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
            "merges.txt": "#version: 0.2\n" + "".join(" ".join(m) + "\n" for m in merges),
            "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        }
        for name, content in written.items():
            write_atomic(directory / name, content.encode("utf-8"))
        return tuple(str(directory / name) for name in written)

    def _added_tokens(self) -> dict[str, int]:
        """The special tokens: their vocabulary id, or (like "<|endoftext|>") the next free id.

        ref: PreTrainedTokenizer.__init__ -> _add_tokens(all_special_tokens): bos, eos, unk, pad
        """
        added, next_id = {}, len(self.encoder)
        for token in (self.BOS_TOKEN, self.EOS_TOKEN, self.UNK_TOKEN, self.PAD_TOKEN):
            if token not in added:
                added[token] = self.encoder.get(token, next_id)
                next_id += token not in self.encoder
        return added

    # -----------------------------------------------------------------------------------------
    # vocabulary

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def __len__(self) -> int:
        return len(self.get_vocab())

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder, **self.added_tokens)

    # -----------------------------------------------------------------------------------------
    # encoding: steps 0-5 of the module docstring

    def normalize(self, text: str) -> str:
        """Step 1: this tokenizer's normalizer (with its transliterate setting for "transformers")."""
        if self.normalizer == "tortoise":
            return cleaners.english_cleaners(text)
        return normalizer.normalize(text, self.transliterate)

    def encode(self, text: str, add_prefix_space: bool | None = None) -> list[int]:
        """One string -> its ids (no special tokens are added around them)."""
        ids: list[int] = []
        cache = self._cache
        for special, unit in self._pieces(text, add_prefix_space):
            if special:
                ids.append(self.added_tokens[unit])
            else:
                for word in unit:
                    ids.extend(cache.get(word) or self._word_ids(word))
        return ids

    def tokenize(self, text: str, add_prefix_space: bool | None = None) -> list[str]:
        """The pieces behind encode(text), as transformers' tokenize gives them (before [UNK] mapping)."""
        pieces: list[str] = []
        for special, unit in self._pieces(text, add_prefix_space):
            if special:
                pieces.append(unit)
            else:
                for word in unit:
                    pieces.extend(self._word_pieces(word))
        return pieces

    def _pieces(self, text: str, add_prefix_space: bool | None):
        """Steps 0-2: yield (True, special token) or (False, words of one normalized piece), in order."""
        if not isinstance(text, str):
            raise TypeError(f"ClvpTokenizer expects a str, got {type(text).__name__}")
        if self.add_prefix_space if add_prefix_space is None else add_prefix_space:
            text = " " + text
        for piece, special in self._split_special(text):
            yield (True, piece) if special else (False, GPT2_SPLIT.findall(self.normalize(piece)))

    def _split_special(self, text: str):
        """Step 0: yield (piece, is_special_token), skipping empty pieces.

        For these three tokens (none contains another) a longest-first alternation cuts exactly
        where transformers' Trie.split cuts.
        """
        if not any(c in text for c in self._special_first_chars):
            if text:
                yield text, False
            return
        for i, piece in enumerate(self._special_split.split(text)):
            if piece:
                yield piece, i % 2 == 1

    def _word_pieces(self, word: str) -> list[str]:
        """Steps 3-4 for one word: bytes -> BPE pieces, a lone "Ġ" shown as "[SPACE]"."""
        pieces = bpe(byte_encode(word), self.bpe_ranks)
        return [self.SPACE_TOKEN if p == SPACE_PIECE and self._has_space else p for p in pieces]

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """Steps 3-5 for one word, stored in the per-word cache; unknown pieces -> [UNK]."""
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        ids = self._cache[word] = tuple(self.encoder.get(p, self.unk_token_id) for p in self._word_pieces(word))
        return ids

    def __call__(self, text, padding=False, max_length=None, truncation=None, return_tensors=None,
                 return_attention_mask=True, add_prefix_space=None) -> dict:
        """Encode a str or a list of str -> {"input_ids", "attention_mask"}, right-padded with [STOP] (0).

        padding:    False | "do_not_pad"; True | "longest" (to the longest in the batch);
                    "max_length" (to max_length; needs it).
        truncation: True | "longest_first" cuts each sequence to max_length (needs it). None (the
                    default) truncates only when max_length is given and padding is off, as transformers.
        return_tensors: None -> lists; "np" -> int64 arrays of shape (B, T), B = 1 for a single str.
        """
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        if batched and not texts:
            raise ValueError("ClvpTokenizer: the batch is empty")
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"ClvpTokenizer expects a str or a list of str, got an item of type {bad[0]}")
        pad_to, cut_to = _padding_and_truncation(padding, truncation, max_length)
        ids = [self.encode(t, add_prefix_space)[:cut_to] for t in texts]
        width = {"longest": max(map(len, ids)), "max_length": max_length, None: None}[pad_to]
        masks = [[1] * len(x) + [0] * max(0, (width or 0) - len(x)) for x in ids]
        ids = [x + [self.pad_token_id] * (len(m) - len(x)) for x, m in zip(ids, masks)]
        out = {"input_ids": ids, "attention_mask": masks} if return_attention_mask else {"input_ids": ids}
        if return_tensors is None:
            return out if batched else {k: v[0] for k, v in out.items()}
        if return_tensors != "np":
            raise ValueError(f"return_tensors must be None or 'np', got {return_tensors!r}")
        if len(set(map(len, ids))) > 1:
            raise ValueError("return_tensors='np' needs equal lengths: pass padding=True or 'max_length'")
        return {k: np.array(v, dtype=np.int64).reshape(len(v), -1) for k, v in out.items()}  # (B, T)

    # -----------------------------------------------------------------------------------------
    # decoding

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> list[str]:
        """ids -> vocabulary strings; with skip_special_tokens, [STOP], [UNK] and <|endoftext|> are dropped."""
        skip = set(self.all_special_ids) if skip_special_tokens else ()
        tokens = []
        for i in _id_list(ids):
            token = self.decoder.get(i)
            if token is None:
                raise ValueError(f"ClvpTokenizer.decode: {i} is not a token id (ids are 0..{len(self) - 1})")
            if i not in skip:
                tokens.append(token)
        return tokens

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Pieces -> bytes (inverse byte table) -> UTF-8 text. ref: ClvpTokenizer.convert_tokens_to_string"""
        if not all(isinstance(t, str) for t in tokens):
            raise TypeError(f"ClvpTokenizer.convert_tokens_to_string: expected token strings, got {tokens!r:.80}")
        joined = "".join(tokens)
        unknown = set(joined) - BYTE_DECODER.keys()
        if unknown:
            raise ValueError(f"ClvpTokenizer.decode: characters {sorted(unknown)!r} are outside the byte table")
        return bytes(BYTE_DECODER[c] for c in joined).decode("utf-8", errors=self.errors)

    def clean_up_tokenization(self, text: str) -> str:
        """[SPACE] and [STOP] -> ' ', [UNK] removed, then two passes shrink runs of spaces.

        ref: ClvpTokenizer.clean_up_tokenization
        """
        vocab = self.get_vocab()
        if self.SPACE_TOKEN in vocab:
            text = text.replace(self.SPACE_TOKEN, " ")
        if self.PAD_TOKEN in vocab:
            text = text.replace(self.PAD_TOKEN, " ")
        return text.replace(self.UNK_TOKEN, "").replace("   ", " ").replace("  ", " ")

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = True) -> str:
        """ids (a list or a 1-D array) -> text. See the module docstring for the clean-up default."""
        text = self.convert_tokens_to_string(self.convert_ids_to_tokens(ids, skip_special_tokens))
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__iter__"):
            raise TypeError(f"ClvpTokenizer.batch_decode: expected a list of id sequences, got {type(sequences).__name__}")
        return [self.decode(ids, **kwargs) for ids in sequences]


def _id_list(ids) -> list[int]:
    """An int, a list of ints or a 1-D integer array -> list of Python ints (clear errors otherwise)."""
    if isinstance(ids, np.ndarray):
        if ids.ndim > 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"ClvpTokenizer.decode: expected a 1-D integer array, got {ids.dtype} {ids.shape}")
        return ids.tolist()
    try:
        return [operator.index(ids)] if not isinstance(ids, (list, tuple)) else [operator.index(i) for i in ids]
    except TypeError:
        raise ValueError(f"ClvpTokenizer.decode: expected token ids (ints), got {ids!r:.80}") from None


def _padding_and_truncation(padding, truncation, max_length):
    """Resolve transformers' padding/truncation arguments -> (pad_to, cut_to).

    pad_to is None, "longest" or "max_length"; cut_to is None or max_length.
    ref: PreTrainedTokenizerBase._get_padding_truncation_strategies
    """
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    pad_to = {False: None, "do_not_pad": None, True: "longest", "longest": "longest",
              "max_length": "max_length"}.get(padding, "invalid") if isinstance(padding, (bool, str)) else "invalid"
    if pad_to == "invalid":
        raise ValueError(f"padding must be False, True, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
    if truncation is None:
        truncation = max_length is not None and pad_to is None
    if truncation not in (True, False, "longest_first", "only_first", "do_not_truncate"):
        raise ValueError(f"truncation must be None, a bool or 'longest_first', got {truncation!r}")
    cut = truncation not in (False, "do_not_truncate")
    if (cut or pad_to == "max_length") and max_length is None:
        raise ValueError("truncation and padding='max_length' need max_length")
    return pad_to, (max_length if cut else None)
