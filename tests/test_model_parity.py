"""Every CLVP module against transformers' outputs (tests/data/model/<tiny>.npz, from tools/ref_model.py).

Each test runs on every backend that exists here (numpy always; cpu when the C++ core is built) and
on both tiny configurations, which differ in head count, rotary dim, n_inner, attention bias and summary.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DATA, MAX_EXAMPLES, TOLERANCE, assert_close, load_tiny
from pyclvp.model.conditioning import groupnorm_groups, pad_extra_bos_eos_tokens

@pytest.fixture
def ref(name):
    with np.load(DATA / "model" / f"{name}.npz") as f:
        return dict(f)


@pytest.fixture
def tol(backend):
    return dict(atol=TOLERANCE[backend, "float32"]["atol"])


# ----------------------------------------------------------------------------------------------
# Text padding and the conditioning encoder


def test_pad_extra_bos_eos_tokens(ref, model):
    t = model.config.text_config
    ids, mask = pad_extra_bos_eos_tokens(ref["input_ids"], ref["attention_mask"], bos_token_id=t.bos_token_id,
                                         eos_token_id=t.eos_token_id)
    np.testing.assert_array_equal(ids, ref["pad_ids"])
    np.testing.assert_array_equal(mask, ref["pad_mask"])
    ids, mask = pad_extra_bos_eos_tokens(ref["input_ids"], ref["attention_mask"], add_bos_token=False,
                                         bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id)
    np.testing.assert_array_equal(ids, ref["pad_gen_ids"])
    np.testing.assert_array_equal(mask, ref["pad_gen_mask"])


def _pad_loop(ids, pad, bos, eos):  # one row at a time: bos first, eos inserted at the first pad
    rows = []
    for row in ids.tolist():
        row = [bos] + row
        first = row.index(pad) if pad in row else len(row)
        rows.append(row[:first] + [eos] + row[first:])
    return np.array(rows)


@given(st.integers(1, 4), st.integers(1, 9), st.data())
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_pad_extra_bos_eos_matches_loop(B, T, data):
    ids = np.array(data.draw(st.lists(st.lists(st.integers(0, 5), min_size=T, max_size=T), min_size=B, max_size=B)))
    got, mask = pad_extra_bos_eos_tokens(ids, np.ones_like(ids), bos_token_id=255, eos_token_id=7)
    np.testing.assert_array_equal(got, _pad_loop(ids, 0, 255, 7))
    assert mask.shape == got.shape and mask.all()


def test_conditioning_encoder(ref, model, tol):
    got = model.conditioning_encoder(ref["input_features"], ref["input_ids"], ref["attention_mask"])
    assert_close(got, ref["cond"], **tol, name="conditioning embeds")


def test_conditioning_repeat_rules(ref, model, tol):
    got = model.conditioning_encoder(ref["input_features"], ref["ids_1"])
    assert_close(got, ref["cond_1text_2clips"], **tol, name="1 text vs 2 clips")
    got = model.conditioning_encoder(ref["features_1"], ref["input_ids"], ref["attention_mask"])
    assert_close(got, ref["cond_2texts_1clip"], **tol, name="2 texts vs 1 clip")


def test_conditioning_n_texts_vs_m_clips_raises(ref, model):
    feats = np.concatenate([ref["input_features"]] * 2)[:3]  # 3 clips, 2 texts
    with pytest.raises(ValueError, match="2 texts and 3 clips"):
        model.conditioning_encoder(feats, ref["input_ids"], ref["attention_mask"])


def test_groupnorm_groups():
    assert [groupnorm_groups(c) for c in (16, 32, 48, 64, 80, 1024)] == [8, 16, 16, 16, 16, 32]
    with pytest.raises(ValueError, match="more than 2 groups"):
        groupnorm_groups(18)


# ----------------------------------------------------------------------------------------------
# Decoder


@pytest.mark.parametrize("suffix", ["", "_nomask"])
def test_decoder_hidden_states_and_logits(ref, model, tol, suffix):
    mask = ref["dec_mask"] if suffix == "" else None
    hidden, logits = model.decoder_ref.forward(ref["cond"], mask)
    assert_close(hidden, ref[f"dec_hidden{suffix}"], **tol, name="decoder hidden states")
    assert_close(logits[..., :300], ref[f"dec_logits_head{suffix}"], **tol, name="decoder logits")
    assert_close(logits[:, -1], ref[f"dec_logits_last{suffix}"], **tol, name="decoder last logits")


# ----------------------------------------------------------------------------------------------
# Encoders


def _check_encoder(out, ref, prefix, tol):
    assert_close(out.last_hidden_state, ref[f"{prefix}_last_hidden"], **tol, name=f"{prefix} last_hidden_state")
    assert_close(out.pooler_output, ref[f"{prefix}_pooled"], **tol, name=f"{prefix} pooler_output")
    assert_close(out.embeds, ref[f"{prefix}_embeds"], **tol, name=f"{prefix} embeds")


def test_text_encoder(ref, model, tol):
    _check_encoder(model.text_encoder(ref["input_ids"], ref["attention_mask"]), ref, "text", tol)
    _check_encoder(model.text_encoder(ref["ids_1"]), ref, "text1", tol)
    assert_close(model.get_text_features(ref["input_ids"], ref["attention_mask"]), ref["text_embeds"], **tol)


def test_speech_encoder(ref, model, tol):
    _check_encoder(model.speech_encoder(ref["speech_ids"], ref["speech_mask"]), ref, "speech", tol)
    _check_encoder(model.speech_encoder(ref["speech_ids"]), ref, "speech_nomask", tol)
    assert_close(model.get_speech_features(ref["speech_ids"], ref["speech_mask"]), ref["speech_embeds"], **tol)


# ----------------------------------------------------------------------------------------------
# The whole model


def test_fix_speech_decoder_output(ref, model):
    np.testing.assert_array_equal(model.fix_speech_decoder_output(ref["fix_in"]), ref["fix_out"])


def _fix_loop(ids, eos, codes):  # Tortoise's api.fix_autoregressive_output, one row at a time (N >= 3)
    out = ids[:, 1:].copy()
    for row in out:
        stops = np.flatnonzero(row == eos)
        if len(stops):
            row[stops] = codes[0]
            row[stops[0]:] = codes[0]
            row[-3:] = codes[1:]
    return out


@given(st.integers(1, 4), st.integers(4, 12), st.data())
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_fix_speech_decoder_output_matches_loop(B, T, data):
    model = load_tiny("tiny_b")
    eos, codes = 299, model.config.decoder_config.decoder_fixing_codes
    ids = np.array(data.draw(st.lists(st.lists(st.sampled_from([1, 2, 299]), min_size=T, max_size=T),
                                      min_size=B, max_size=B)))
    np.testing.assert_array_equal(model.fix_speech_decoder_output(ids), _fix_loop(ids, eos, codes))


def test_forward(ref, model, tol):
    cond = model.conditioning_encoder(ref["input_features"], ref["input_ids"], ref["attention_mask"])
    speech_ids = model.fix_speech_decoder_output(model.decoder_ref.forward(cond)[1].argmax(-1))
    np.testing.assert_array_equal(speech_ids, ref["fwd_speech_ids"])
    out = model(ref["input_ids"], ref["input_features"], ref["attention_mask"], return_loss=True)
    for field, key in [("logits_per_text", "fwd_logits_per_text"), ("logits_per_speech", "fwd_logits_per_speech"),
                       ("text_embeds", "fwd_text_embeds"), ("speech_embeds", "fwd_speech_embeds"),
                       ("text_model_output", "fwd_text_pooled"), ("speech_model_output", "fwd_speech_pooled"),
                       ("loss", "fwd_loss")]:
        assert_close(getattr(out, field), ref[key], **tol, name=field)


def test_forward_without_loss_has_none(ref, model):
    out = model(ref["ids_1"], ref["features_1"])
    assert out.loss is None and out.logits_per_text.shape == (1, 1)


@pytest.mark.parametrize("args, match", [
    (dict(input_ids=np.zeros((1, 0), np.int64)), "non-empty"),
    (dict(input_ids=np.array([[1.5, 2.0]])), "must be integers"),
    (dict(input_ids=np.array([[1, 999]])), r"input_ids must lie in \[0, 256\)"),
    (dict(input_ids=np.ones((1, 60), np.int64)), "the text is 60 tokens long"),
    (dict(attention_mask=np.ones((1, 4), np.int64)), "attention_mask has shape"),
    (dict(attention_mask=np.full((1, 3), 2)), "only 0 and 1"),
    (dict(input_features=np.zeros((1, 79, 5), np.float32)), r"shape \(batch, 80 mel bins"),
    (dict(input_features=np.full((1, 80, 5), np.nan, np.float32)), "finite"),
    (dict(input_ids=[[1, 2], [3]]), "rows of different lengths need padding"),
])
def test_bad_inputs_raise(args, match):
    model = load_tiny("tiny_b")
    kw = dict(input_ids=np.array([[5, 6, 7]]), input_features=np.zeros((1, 80, 5), np.float32), attention_mask=None)
    kw.update(args)
    with pytest.raises(ValueError, match=match):
        model(**kw)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.get_speech_features([[1, 2, 3]], attention_mask=np.ones((1, 2))), ValueError,
     r"attention_mask has shape \(1, 2\), speech_ids \(1, 3\)"),
    (lambda m: m.get_speech_features([[1, 2, 3]], attention_mask=[[1, 7, 1]]), ValueError, "only 0 and 1"),
    (lambda m: m.get_speech_features([[1, 2, 3]], attention_mask=[[1, np.nan, 1]]), ValueError, "only 0 and 1"),
    (lambda m: m.fix_speech_decoder_output(np.array([1, 2, 3])), ValueError, r"speech_ids must be a \(batch, 1 \+"),
    (lambda m: type(m)(m.config, None), TypeError, "weights must be a dict"),
    (lambda m: type(m)(m.config, m.weights, backend=None), TypeError, "backend must be a backend's name"),
])
def test_bad_speech_inputs_and_arguments_raise(call, error, match):
    with pytest.raises(error, match=match):
        call(load_tiny("tiny_b"))
