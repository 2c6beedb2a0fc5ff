"""pyclvp.text.tokenizer.ClvpTokenizer: exact ids and decodes vs transformers, then properties (tiktoken style).

The expected values are transformers' ClvpTokenizer outputs, written by tools/ref_tokenizer.py into
tests/data/tokenizer/corpus.json (518 lines: the Tortoise sample texts and one line per normalizer rule).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import DATA, MAX_EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclvp import cli
from pyclvp.text.tokenizer import DATA_DIR, ClvpTokenizer, bytes_to_unicode

CORPUS = json.loads((DATA / "tokenizer" / "corpus.json").read_text(encoding="utf-8"))
TOK = ClvpTokenizer.from_pretrained()
THIRD_PARTY = DATA.parent.parent / "third_party" / "tortoise"
BOS = "<|endoftext|>"


def _first_mismatches(triples):
    bad = [(text, got, want) for text, got, want in triples if got != want]
    return f"{len(bad)} differ; first: {bad[:3]!r:.800}" if bad else ""


# ---------------------------------------------------------------------------------------------
# parity with transformers

def test_seed_page_example():
    assert TOK("Hello world")["input_ids"] == [62, 84, 28, 2, 179, 79]
    assert TOK(" Hello world")["input_ids"] == [2, 62, 84, 28, 2, 179, 79]


def test_corpus_is_large_enough():
    assert len(CORPUS["cases"]) >= 500


def test_corpus_ids():
    assert not _first_mismatches((c["text"], TOK(c["text"])["input_ids"], c["ids"]) for c in CORPUS["cases"])


@pytest.mark.parametrize("field, kwargs", [
    ("decode", {}),
    ("decode_raw", {"clean_up_tokenization_spaces": False}),
    ("decode_skip", {"skip_special_tokens": True}),
])
def test_corpus_decodes(field, kwargs):
    cases = [c for c in CORPUS["cases"] if c[field] is not None]
    assert not _first_mismatches((c["ids"], TOK.decode(c["ids"], **kwargs), c[field]) for c in cases)


def test_tokenize_pieces():
    assert not _first_mismatches((c["text"], TOK.tokenize(c["text"]), c["tokens"]) for c in CORPUS["tokens"])


@pytest.mark.parametrize("field, kwargs", [
    ("clean", {}), ("raw", {"clean_up_tokenization_spaces": False}), ("clean_skip", {"skip_special_tokens": True}),
])
def test_decode_any_ids(field, kwargs):
    assert not _first_mismatches((c["ids"], TOK.decode(c["ids"], **kwargs), c[field]) for c in CORPUS["decodes"])


@pytest.mark.parametrize("case", CORPUS["calls"], ids=lambda c: f"{c['texts']!r}-{c['kwargs']}")
def test_call_padding_truncation_tensors(case):
    out = TOK(case["texts"], **case["kwargs"])
    assert sorted(out) == sorted(k for k in ("input_ids", "attention_mask") if k in case)
    for key, value in out.items():
        if case["kwargs"].get("return_tensors") == "np":
            assert isinstance(value, np.ndarray) and value.dtype == np.int64
            value = value.tolist()
        assert value == case[key], key


def test_special_tokens_and_sizes():
    assert (TOK.vocab_size, len(TOK)) == (255, 256)
    assert TOK.encode(f"a{BOS}") == [14, 255]
    assert TOK.get_vocab()[BOS] == 255 and TOK.get_vocab()["[STOP]"] == 0
    assert TOK.all_special_ids == [0, 1, 255]


def test_bytes_to_unicode_is_a_bijection_onto_printables():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord(" ")] == "\u0120"


# ---------------------------------------------------------------------------------------------
# options beyond transformers 5

def test_add_prefix_space_prepends_a_space():
    for text in ["Hello world", "[STOP]x", ""]:
        assert TOK.encode(text, add_prefix_space=True) == TOK.encode(" " + text)
    assert TOK("Hello", add_prefix_space=True)["input_ids"] == [2, 62, 84, 28]
    assert ClvpTokenizer.from_pretrained(add_prefix_space=True).encode("Hello") == [2, 62, 84, 28]


def test_transliterate():
    plain, translit = ClvpTokenizer.from_pretrained(), ClvpTokenizer.from_pretrained(transliterate=True)
    assert plain.decode(plain.encode("Café")) == "caf"
    assert translit.decode(translit.encode("Café")) == "cafe"
    assert translit.encode("Café") == plain.encode("cafe")


# ---------------------------------------------------------------------------------------------
# assets and loading

def test_bundled_assets_match_third_party():
    for name in ["vocab.json", "merges.txt", "mel_norms.npy"]:
        assert (DATA_DIR / name).read_bytes() == (THIRD_PARTY / name).read_bytes(), name
    norms = np.load(DATA_DIR / "mel_norms.npy")
    assert norms.shape == (80,) and norms.dtype == np.float32 and np.isfinite(norms).all()


def test_from_pretrained_folder_and_save_round_trip(tmp_path):
    assert ClvpTokenizer.from_pretrained(THIRD_PARTY).encode("Hello world") == [62, 84, 28, 2, 179, 79]
    written = TOK.save_pretrained(tmp_path / "tok")
    assert {p.rsplit("/", 1)[-1] for p in written} == {"vocab.json", "merges.txt", "tokenizer_config.json"}
    again = ClvpTokenizer.from_pretrained(tmp_path / "tok")
    assert again.get_vocab() == TOK.get_vocab() and again.bpe_ranks == TOK.bpe_ranks
    sample = [c["text"] for c in CORPUS["cases"][:50]]
    assert again(sample)["input_ids"] == TOK(sample)["input_ids"]


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        ClvpTokenizer.from_pretrained(tmp_path)
    shutil.copy(DATA_DIR / "merges.txt", tmp_path)
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping tokens"):
        ClvpTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_bytes(b"{\"a\": 1,")
    with pytest.raises(ValueError, match="vocab.json is not valid JSON"):
        ClvpTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="vocab.json is not valid JSON"):
        ClvpTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("call, error, match", [
    (lambda: TOK(3), TypeError, "got an item of type int"),
    (lambda: TOK(["a", None]), TypeError, "NoneType"),
    (lambda: TOK([]), ValueError, "empty"),
    (lambda: TOK.encode(b"bytes"), TypeError, "bytes"),
    (lambda: TOK("a", padding="max_length"), ValueError, "need max_length"),
    (lambda: TOK("a", truncation=True), ValueError, "need max_length"),
    (lambda: TOK("a", padding="left"), ValueError, "padding must be"),
    (lambda: TOK("a", max_length=0), ValueError, "positive int"),
    (lambda: TOK("a", return_tensors="pt"), ValueError, "return_tensors"),
    (lambda: TOK(["a", "bb cc"], return_tensors="np"), ValueError, "padding=True"),
    (lambda: TOK.decode([256]), ValueError, "256 is not a token id"),
    (lambda: TOK.decode([-1]), ValueError, "-1 is not a token id"),
    (lambda: TOK.decode([1.5]), ValueError, "token ids"),
    (lambda: TOK.decode(np.zeros((2, 2), np.int64)), ValueError, "1-D integer array"),
    (lambda: TOK.batch_decode(None), TypeError, "expected a list of id sequences, got NoneType"),
    (lambda: TOK.convert_tokens_to_string([1, 2]), TypeError, "expected token strings"),
])
def test_bad_input_raises_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_decode_accepts_arrays_and_ints():
    ids = TOK.encode("hello world")
    assert TOK.decode(np.array(ids)) == TOK.decode(ids) == "hello world"
    assert TOK.decode([np.int64(i) for i in ids]) == "hello world"
    assert TOK.decode(14) == "a"
    assert TOK.batch_decode([ids, [14]]) == ["hello world", "a"]


def test_cli_tokenize(capsys):
    assert cli.main(["tokenize", "Hello world"]) == 0
    assert capsys.readouterr().out.splitlines() == ["normalized: hello world", "ids: 62 84 28 2 179 79"]
    assert cli.main(["tokenize", "--json", "Dr. X", "café", "--transliterate"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["normalized"] for r in rows] == ["doctor x", "cafe"]
    assert rows[0]["ids"] == TOK.encode("Dr. X") and rows[0]["tokens"] == TOK.tokenize("Dr. X")


# ---------------------------------------------------------------------------------------------
# properties

ALPHABET = sorted({c for token in TOK.encoder if len(token) == 1 for c in token} | {" "})
texts = st.text(max_size=80)
# any str, lone surrogates included, or a run of special tokens, digits and '$'
any_str = st.text(st.characters(blacklist_categories=())) | st.lists(
    st.sampled_from(["[STOP]", BOS, "[UNK]", "1", "$", " "])).map("".join)


@settings(deadline=None, max_examples=MAX_EXAMPLES)
@given(any_str)
def test_hyp_never_raises_and_ids_in_range(s):
    ids = TOK.encode(s)
    limit = len(TOK) if BOS in s else TOK.vocab_size  # only the literal "<|endoftext|>" gives id 255
    assert all(0 <= i < limit for i in ids)
    TOK.decode(ids)


@settings(deadline=None, max_examples=MAX_EXAMPLES)
@given(st.text(alphabet=ALPHABET))
def test_hyp_round_trip_over_vocabulary_alphabet(s):
    assert TOK.decode(TOK.encode(s)) == TOK.normalize(s)


@settings(deadline=None, max_examples=MAX_EXAMPLES)
@given(st.lists(texts, min_size=1, max_size=5))
def test_hyp_batch_equals_one_by_one(batch):
    assert TOK(batch)["input_ids"] == [TOK(s)["input_ids"] for s in batch]


@settings(deadline=None, max_examples=MAX_EXAMPLES)
@given(st.lists(texts, min_size=1, max_size=5), st.sampled_from([True, "max_length"]), st.integers(1, 40),
       st.booleans())
def test_hyp_padding_and_attention_mask_agree(batch, padding, max_length, truncation):
    out = TOK(batch, padding=padding, max_length=max_length, truncation=truncation, return_tensors=None)
    plain = [TOK.encode(s) for s in batch]
    if truncation:
        plain = [ids[:max_length] for ids in plain]
    width = max(map(len, plain)) if padding is True else max_length
    for ids, mask, want in zip(out["input_ids"], out["attention_mask"], plain):
        assert len(ids) == len(mask) == max(width, len(want))
        assert mask == [1] * len(want) + [0] * (len(ids) - len(want))
        assert ids == want + [TOK.pad_token_id] * (len(ids) - len(want))
