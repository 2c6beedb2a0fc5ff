"""generate() and rank(): greedy parity with the reference loop, the processors, sampling, stopping rules.

Reference sequences (tests/data/generate/<tiny>.npz) come from tools/ref_generate.py: an explicit
greedy loop over transformers' modules with Tortoise's positions and no cache. The *_eos cases add
eos_bias to lm_head.bias[eos] so that rows stop; the tests do the same to a copy of the weights.
"""
import numpy as np
import pytest

from conftest import DATA, MAX_EXAMPLES, TOLERANCE, assert_close, load_tiny
from hypothesis import given, settings
from hypothesis import strategies as st
from pyclvp.decoding import PRESETS, GenerationOptions, apply_top_p, decode, process_logits, sample
from pyclvp.rank import rank
from pyclvp.model import ClvpModelForConditionalGeneration

CASES = ["b1", "b2pad", "b1_rep", "b1_eos", "b2_eos"]
_BIASED = {}


def _model(name, backend="numpy", eos_bias=0.0):
    """The tiny model, with eos_bias added to lm_head.bias[eos] when asked (so that rows stop)."""
    base = load_tiny(name, backend)
    if not eos_bias:
        return base
    key = (name, backend, float(eos_bias))
    if key not in _BIASED:
        w = dict(base.weights)
        bias = w["speech_decoder_model.lm_head.bias"].copy()
        bias[base.config.decoder_config.eos_token_id] += np.float32(eos_bias)
        w["speech_decoder_model.lm_head.bias"] = bias
        _BIASED[key] = ClvpModelForConditionalGeneration(base.config, w, backend)
    return _BIASED[key]


def _ref(name):
    with np.load(DATA / "generate" / f"{name}.npz") as f:
        return dict(f)


def _case(ref, c):
    return dict(input_ids=ref[f"{c}_input_ids"], input_features=ref[f"{c}_input_features"],
                attention_mask=ref[f"{c}_attention_mask"]), dict(
        max_new_tokens=int(ref[f"{c}_max_new_tokens"]), min_new_tokens=int(ref[f"{c}_min_new_tokens"]),
        repetition_penalty=float(ref[f"{c}_repetition_penalty"]))


def _inputs(model, B=1, T=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 200, size=(B, T)), rng.standard_normal((B, 80, 16)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Greedy parity


@pytest.mark.parametrize("case", CASES)
def test_greedy_matches_reference(name, backend, case):
    ref = _ref(name)
    model = _model(name, backend, ref[f"{case}_eos_bias"])
    inputs, opts = _case(ref, case)
    out = model.generate(**inputs, **opts)
    np.testing.assert_array_equal(out.speech_ids, ref[f"{case}_speech_ids"])
    tol = TOLERANCE[backend, "float32"]["atol"]
    assert_close(out.logits_per_text, ref[f"{case}_logits_per_text"], atol=tol, name="logits_per_text")
    assert_close(out.text_embeds, ref[f"{case}_text_embeds"], atol=tol, name="text_embeds")
    assert_close(out.speech_embeds, ref[f"{case}_speech_embeds"], atol=tol, name="speech_embeds")
    assert_close(out.logits_per_speech, out.logits_per_text.T, atol=0, name="logits_per_speech")


@pytest.mark.parametrize("case", CASES)
def test_last_step_logits_match_transformers(name, case):
    """The last step's processed logits, recomputed without the cache, equal transformers' loop."""
    ref = _ref(name)
    model = _model(name, "numpy", ref[f"{case}_eos_bias"])
    inputs, opts = _case(ref, case)
    tokens, dec = ref[f"{case}_tokens"], model.decoder_ref
    ids, mask = model.generation_text(inputs["input_ids"], inputs["attention_mask"])
    prompt = model.decoder_prompt(model.conditioning_encoder(inputs["input_features"], ids, mask))
    B, N = tokens.shape
    prev = tokens[:, :-1]
    seq = np.concatenate([prompt, dec.embed(prev, np.broadcast_to(np.arange(2, N + 1), prev.shape))], axis=1)
    logits = model.decoder.prefill(seq, None, model.decoder.new_state(B, seq.shape[1]))
    seen = np.zeros_like(logits, bool)
    seen[:, model.config.decoder_config.bos_token_id] = True
    np.put_along_axis(seen, prev, True, axis=1)
    got = process_logits(logits, seen, N - 1, GenerationOptions(**opts), model.config.decoder_config.eos_token_id)
    assert_close(got, ref[f"{case}_last_logits"], atol=1e-4, name="last step logits")


# ----------------------------------------------------------------------------------------------
# Processors against transformers


def test_processors_match_transformers():
    with np.load(DATA / "generate" / "processors.npz") as f:
        ref = dict(f)
    i = 0
    while f"case_{i}_logits" in ref:
        rep, temp, top_k, top_p = ref[f"case_{i}_params"]
        logits, seen_ids = ref[f"case_{i}_logits"], ref[f"case_{i}_seen"]
        seen = np.zeros(logits.shape, bool)
        np.put_along_axis(seen, seen_ids, True, axis=1)
        opts = GenerationOptions(do_sample=True, temperature=float(temp), top_k=None if top_k < 0 else int(top_k),
                                 top_p=float(top_p), repetition_penalty=float(rep))
        got, want = process_logits(logits, seen, 0, opts, eos=49), ref[f"case_{i}_out"]
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=f"case {i}: removed tokens differ")
        assert_close(np.where(np.isinf(got), 0, got), np.where(np.isinf(want), 0, want), atol=1e-6, name=f"case {i}")
        i += 1
    assert i >= 5


def test_top_p_keeps_at_least_one_token():
    logits = np.array([[0.0, 50.0, 1.0]], np.float32)
    out = apply_top_p(logits, 1e-6)
    assert np.isfinite(out).sum() == 1 and np.isfinite(out[0, 1])


@given(st.integers(2, 40), st.floats(0.05, 1.0), st.data())
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_top_p_keeps_the_smallest_set_reaching_p(V, p, data):
    logits = np.array([data.draw(st.lists(st.integers(-40, 40), min_size=V, max_size=V, unique=True))],
                      np.float32) / 8  # distinct values: no ties in probability
    kept = np.isfinite(apply_top_p(logits, p))[0]
    probs = np.exp(logits[0] - logits[0].max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    n = int(kept.sum())
    assert set(np.flatnonzero(kept)) == set(order[:n])  # the most likely ones
    assert probs[order[:n]].sum() >= p - 1e-5  # reaching p ...
    assert n == 1 or probs[order[:n - 1]].sum() < p + 1e-5  # ... with no smaller set


def _top_p_by_argsort(logits, p):  # (R, V): TopPLogitsWarper's steps, literally
    order = np.argsort(logits, axis=-1, kind="stable")  # (R, V) ascending, ties by id
    ascending = np.take_along_axis(logits, order, axis=-1)
    e = np.exp(ascending - ascending[:, -1:])
    cum = np.cumsum(e / e.sum(-1, keepdims=True), axis=-1)
    remove_sorted = cum <= np.float32(1 - p)
    remove_sorted[:, -1] = False
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, np.float32(-np.inf), logits)


@given(st.integers(1, 300), st.integers(1, 4), st.floats(0.01, 1.0), st.integers(0, 2**32 - 1),
       st.sampled_from(["normal", "ties", "with -inf", "flat"]))
@settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_top_p_equals_the_argsort_definition(V, R, p, seed, kind):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((R, V)) * 3).astype(np.float32)
    if kind == "ties":
        logits = np.round(logits) / 2  # few distinct values, -0.0 among them
    elif kind == "with -inf":
        logits[rng.random((R, V)) < 0.5] = -np.inf
        logits[:, 0] = 0.0
    elif kind == "flat":
        logits[:] = 1.5
    np.testing.assert_array_equal(apply_top_p(logits, p), _top_p_by_argsort(logits, p))


def test_sample_never_picks_a_removed_token():
    logits = np.full((1, 6), -np.inf, np.float32)
    logits[0, [1, 4]] = [0.0, 1.0]
    picks = sample(np.repeat(logits, 1000, 0), np.random.default_rng(0).random(1000))
    assert set(picks.tolist()) == {1, 4}


# ----------------------------------------------------------------------------------------------
# Sampling


def test_same_seed_same_candidates_any_batch_size():
    model = _model("tiny_b")
    ids, feats = _inputs(model)
    kw = dict(do_sample=True, temperature=0.9, top_p=0.9, max_new_tokens=8, num_return_sequences=5, seed=123)
    a = model.generate(ids, feats, **kw)
    b = model.generate(ids, feats, **kw, batch_size=2)
    np.testing.assert_array_equal(a.speech_ids, b.speech_ids)
    assert_close(a.logits_per_text, b.logits_per_text, atol=1e-6)
    c = model.generate(ids, feats, **dict(kw, seed=124))
    assert not np.array_equal(a.speech_ids, c.speech_ids)
    assert len({tuple(r) for r in a.speech_ids.tolist()}) > 1  # the candidates differ from each other


def test_top_k_1_equals_greedy():
    model = _model("tiny_a")
    ids, feats = _inputs(model, B=2)
    greedy = model.generate(ids, feats, max_new_tokens=10, repetition_penalty=2.0)
    sampled = model.generate(ids, feats, max_new_tokens=10, repetition_penalty=2.0, do_sample=True, top_k=1,
                             temperature=0.7, seed=5)
    np.testing.assert_array_equal(sampled.speech_ids, greedy.speech_ids)


def test_num_return_sequences_groups_rows_by_text():
    model = _model("tiny_b")
    ids, feats = _inputs(model, B=2)
    one = model.generate(ids, feats, max_new_tokens=6)
    three = model.generate(ids, feats, max_new_tokens=6, num_return_sequences=3)
    np.testing.assert_array_equal(three.speech_ids, np.repeat(one.speech_ids, 3, axis=0))
    assert three.logits_per_text.shape == (2, 6)


# Chi-square critical values at significance 0.001 (scipy.stats.chi2.ppf(0.999, df)), df = 1..12
CHI2_999 = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26, 32.91]


@pytest.mark.parametrize("opts", [dict(temperature=2.0, top_k=6), dict(temperature=3.0, top_p=0.6, top_k=12),
                                  dict(temperature=2.5, repetition_penalty=1.5, top_k=9)])
def test_chi_square_first_token_follows_processed_distribution(opts):
    model, n = _model("tiny_b"), 3000
    ids, feats = _inputs(model, seed=3)
    kw = dict(do_sample=True, max_new_tokens=1, num_return_sequences=n, seed=11, batch_size=n, **opts)
    first = model.generate(ids, feats, **kw)
    # the processed distribution of the first token, computed independently of generate()
    ids_gen, mask = model.generation_text(ids)
    prompt = model.decoder_prompt(model.conditioning_encoder(feats, ids_gen, mask))
    logits = model.decoder.prefill(prompt, None, model.decoder.new_state(1, prompt.shape[1]))
    seen = np.zeros_like(logits, bool)
    seen[:, model.config.decoder_config.bos_token_id] = True
    z = process_logits(logits, seen, 0, GenerationOptions.resolve(**kw), model.config.decoder_config.eos_token_id)[0]
    p = np.exp(z - z.max())
    p /= p.sum()
    # speech_ids after fix: [token 1] (fix only drops the start token here: one token, no eos)
    counts = np.bincount(first.speech_ids[:, 0], minlength=len(p))
    support = np.flatnonzero(p > 0)
    assert counts[p == 0].sum() == 0, "a removed token was sampled"
    chi2 = (((counts[support] - n * p[support]) ** 2) / (n * p[support])).sum()
    assert 2 <= len(support) <= len(CHI2_999) + 1
    assert chi2 < CHI2_999[len(support) - 2], f"chi2 {chi2:.1f} with {len(support) - 1} dof"


# ----------------------------------------------------------------------------------------------
# Stopping


def _raw_tokens(model, inputs, opts):  # decode() on the generate-time prompt: (R, N) tokens, eos included
    d = model.config.decoder_config
    ids, mask = model.generation_text(inputs["input_ids"], inputs["attention_mask"])
    prompt = model.decoder_prompt(model.conditioning_encoder(inputs["input_features"], ids, mask))
    return decode(model.decoder, prompt, GenerationOptions(**opts), d.bos_token_id, d.eos_token_id)


def test_rows_that_stop_early_do_not_disturb_the_others(name):
    ref = _ref(name)
    model = _model(name, "numpy", ref["b2_eos_eos_bias"])
    inputs, opts = _case(ref, "b2_eos")
    both = _raw_tokens(model, inputs, opts)
    np.testing.assert_array_equal(both, ref["b2_eos_tokens"])
    for row in range(2):
        alone = _raw_tokens(model, {k: v[row:row + 1] for k, v in inputs.items()}, opts)
        np.testing.assert_array_equal(alone[0], both[row, :alone.shape[1]])
        assert (both[row, alone.shape[1]:] == model.config.decoder_config.eos_token_id).all()


def test_finished_rows_emit_only_eos(name):
    ref = _ref(name)
    model = _model(name, "numpy", ref["b2_eos_eos_bias"])
    inputs, opts = _case(ref, "b2_eos")
    eos = model.config.decoder_config.eos_token_id
    tokens = _raw_tokens(model, inputs, opts)
    stopped = (tokens == eos).any(1)
    assert stopped.sum() == 1 and tokens.shape[1] == opts["max_new_tokens"]
    row = tokens[stopped][0]
    assert (row[(row == eos).argmax():] == eos).all()


def test_min_new_tokens_suppresses_eos():
    model = _model("tiny_b", "numpy", 100.0)  # eos is always the argmax unless suppressed
    ids, feats = _inputs(model)
    eos = model.config.decoder_config.eos_token_id
    inputs = dict(input_ids=ids, input_features=feats, attention_mask=None)
    for m in (0, 1, 5):
        tokens = _raw_tokens(model, inputs, dict(max_new_tokens=20, min_new_tokens=m))
        assert tokens.shape == (1, m + 1) and tokens[0, m] == eos and (tokens[0, :m] != eos).all()


def test_position_limit_ends_generation_cleanly():
    model = _model("tiny_b")  # max_position_embeddings 40: at most 39 tokens
    ids, feats = _inputs(model)
    with pytest.warns(UserWarning, match="position table"):
        out = model.generate(ids, feats, max_new_tokens=100)
    assert out.speech_ids.shape == (1, 39)


def test_pad_to_max_mel_tokens():
    model = _model("tiny_b")
    ids, feats = _inputs(model)
    out = model.generate(ids, feats, max_new_tokens=5, pad_to_max_mel_tokens=12)
    codes = model.config.decoder_config.decoder_fixing_codes
    assert out.speech_ids.shape == (1, 11)
    np.testing.assert_array_equal(out.speech_ids[0, 5:], [codes[0]] * 3 + codes[1:])


def test_progress_callback():
    model = _model("tiny_b")
    ids, feats = _inputs(model)
    calls = []
    model.generate(ids, feats, max_new_tokens=4, num_return_sequences=3, batch_size=2,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (8, 8) and all(d <= t for d, t in calls)


# ----------------------------------------------------------------------------------------------
# Presets and bad input


def test_presets():
    for preset, n in PRESETS.items():
        o = GenerationOptions.resolve(preset)
        assert (o.num_return_sequences, o.do_sample, o.temperature, o.top_p, o.repetition_penalty,
                o.max_new_tokens) == (n, True, 0.8, 0.8, 2.0, 500)
    assert PRESETS == {"ultra_fast": 16, "fast": 96, "standard": 256, "high_quality": 256}
    o = GenerationOptions.resolve("fast", max_new_tokens=20, temperature=0.5)
    assert (o.max_new_tokens, o.temperature, o.num_return_sequences) == (20, 0.5, 96)


@pytest.mark.parametrize("kw, match", [
    (dict(preset="turbo"), "unknown preset 'turbo'"),
    (dict(top_p=0.0), r"top_p must lie in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must lie in \(0, 1\]"),
    (dict(preset=["x"]), r"unknown preset \['x'\]"),
    (dict(do_sample=True, temperature=0.0), "temperature must be a number > 0 when sampling"),
    (dict(do_sample=True, temperature="1"), "temperature must be a number > 0 when sampling, got '1'"),
    (dict(do_sample=True, temperature=None), "temperature must be"),
    (dict(do_sample=True, temperature=float("nan")), "temperature must be"),
    (dict(do_sample="no"), "do_sample must be True or False"),
    (dict(repetition_penalty="2"), "repetition_penalty must be a number > 0"),
    (dict(top_p="0.5"), r"top_p must lie in \(0, 1\]"),
    (dict(seed="abc"), "seed must be None or an integer >= 0, got 'abc'"),
    (dict(seed=-1), "seed must be None or an integer >= 0"),
    (dict(seed=1.5), "seed must be"),
    (dict(pad_to_max_mel_tokens=1), "pad_to_max_mel_tokens must be an integer >= 2"),
    (dict(do_sample=True, temperature=1e-45, seed=0), "cannot sample row 0: its processed logits hold NaN or overflowed"),
    (dict(num_return_sequences=0), "number of candidates"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_options_raise(kw, match):
    model = _model("tiny_b")
    ids, feats = _inputs(model)
    with pytest.raises(ValueError, match=match):
        model.generate(ids, feats, **kw)


def test_text_too_long_raises():
    model = _model("tiny_b")  # max_text_tokens 32: at most 29 tokens
    _, feats = _inputs(model)
    model.generate(np.ones((1, 29), np.int64), feats, max_new_tokens=1)
    with pytest.raises(ValueError, match=r"the text is 30 tokens long; this model takes at most 29"):
        model.generate(np.ones((1, 30), np.int64), feats, max_new_tokens=1)


# ----------------------------------------------------------------------------------------------
# rank()


def _clip(seconds=1.0, rate=22050, f0=140.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_rank_scores_sorted_and_equal_forward_style_scoring():
    model = _model("tiny_a")
    ids, _ = _inputs(model)
    cands = rank(model, ids, _clip(), num_candidates=5, max_new_tokens=8, seed=1)
    scores = [c.score for c in cands]
    assert len(cands) == 5 and scores == sorted(scores, reverse=True)
    ids_gen, mask = model.generation_text(ids)
    text = model.text_encoder(ids_gen, mask)
    for c in cands:
        out = model.similarity(text, model.speech_encoder(c.speech_ids[None]))
        assert abs(out.logits_per_text[0, 0] - c.score) < 1e-5
        assert c.length == 8 and c.seconds == 8 / 20
    top2 = rank(model, ids, _clip(), num_candidates=5, k=2, max_new_tokens=8, seed=1)
    assert [c.score for c in top2] == scores[:2]


def test_rank_with_text_and_repeated_clips():
    model = _model("tiny_a")
    one = rank(model, "Hello there.", _clip(), num_candidates=3, max_new_tokens=5, seed=2)
    two = rank(model, "Hello there.", [_clip(), _clip()], num_candidates=3, max_new_tokens=5, seed=2)
    for a, b in zip(one, two):  # averaging two identical clips' conditioning changes nothing
        np.testing.assert_array_equal(a.speech_ids, b.speech_ids)
        assert abs(a.score - b.score) < 1e-5


@pytest.mark.parametrize("text, voice, kw, match", [
    ("", "clip", {}, "the text is empty"),
    ("   ", "clip", {}, "the text is empty"),
    ("word " * 40, "clip", {}, "tokens long; this model takes at most"),
    ("Hi.", np.zeros(22050, np.float32), {}, "silent"),
    ("Hi.", np.full(100, np.nan, np.float32), {}, "NaN"),

    ("Hi.", np.zeros(0, np.float32), {}, "empty"),
    ("Hi.", "clip", dict(num_candidates=0), "num_candidates must be a positive integer"),
    ("Hi.", "clip", dict(preset="slow"), "unknown preset"),
    ("Hi.", "clip", dict(top_p=2.0), "top_p"),
    ("Hi.", "clip", dict(temperature=-1.0), "temperature"),
])
def test_rank_bad_input_raises(text, voice, kw, match):
    model = _model("tiny_a")
    voice = _clip() if isinstance(voice, str) else voice
    with pytest.raises(ValueError, match=match):
        rank(model, text, voice, **kw)


@pytest.mark.parametrize("voice", [np.ones(100, bool), np.ones(100, complex), ["not", "audio"]])
def test_rank_refuses_non_real_voices_as_the_feature_extractor_does(voice):
    with pytest.raises(TypeError, match=r"clip 0: expected real-valued samples, got dtype (bool|complex128|<U3)"):
        rank(_model("tiny_a"), "Hi.", voice)


# ----------------------------------------------------------------------------------------------
# CLI: rank, demo, info


def test_cli_rank_table_and_json(tmp_path, capsys):
    import json

    from pyclvp.cli import main
    from pyclvp.demo import write_voice_clip

    clip = write_voice_clip(tmp_path / "v.wav", seconds=1.0)
    argv = ["rank", "--model", str(DATA / "tiny_a"), "--text", "Hello there.", "--voice", str(clip), "--voice",
            str(clip), "--candidates", "3", "--max-new-tokens", "6", "--seed", "4"]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].split() == ["rank", "score", "tokens", "seconds"] and len(table) == 6
    assert table[1].startswith("score: ") and "before the stop token" in table[1] and "20 tokens" in table[1]
    assert main(argv + ["--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    scores = [c["score"] for c in got["candidates"]]
    assert [c["rank"] for c in got["candidates"]] == [1, 2, 3] and scores == sorted(scores, reverse=True)
    assert all(c["seconds"] == c["tokens"] / 20 for c in got["candidates"])


@pytest.mark.parametrize("argv, match", [
    (["--model", "/no/such/model", "--text", "Hi.", "--voice", "v.wav"], "model folder /no/such/model does not exist"),
    (["--model", str(DATA / "tiny_a"), "--text", "  ", "--voice", "v.wav"], "the text is empty"),
    (["--model", str(DATA / "tiny_a"), "--text", "Hi.", "--voice", "v.wav", "--preset", "x"], "unknown preset"),
    (["--model", str(DATA / "tiny_a"), "--text", "Hi.", "--voice", "v.wav", "--candidates", "0"], "--candidates must be at least 1, got 0"),
])
def test_cli_rank_errors(tmp_path, capsys, argv, match):
    from pyclvp.cli import main
    from pyclvp.demo import write_voice_clip

    write_voice_clip(tmp_path / "v.wav", seconds=0.5)
    argv = [str(tmp_path / a) if a == "v.wav" else a for a in argv]
    assert main(["rank"] + argv) == 2
    assert match in capsys.readouterr().err


def test_cli_rank_negative_seed_names_the_option(capsys):
    from pyclvp.cli import main

    with pytest.raises(SystemExit) as e:  # argparse's own error line, before any work
        main(["rank", "--model", str(DATA / "tiny_a"), "--text", "Hi.", "--voice", "v.wav", "--seed", "-1"])
    assert e.value.code == 2
    assert "argument --seed: expected a non-negative integer, got '-1'" in capsys.readouterr().err


def test_cli_rank_cuda_unavailable_is_one_line(tmp_path, capsys, monkeypatch):
    cuda_ops = pytest.importorskip("pyclvp.ops.cuda_ops")
    from pyclvp.cli import main
    from pyclvp.demo import write_voice_clip

    monkeypatch.setattr(cuda_ops, "cuda_unavailable_reason", lambda: "no GPU here (test)")
    clip = write_voice_clip(tmp_path / "v.wav", seconds=0.5)
    argv = ["rank", "--model", str(DATA / "tiny_a"), "--text", "Hi.", "--voice", str(clip), "--backend", "cuda"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "pyclvp rank: error: backend 'cuda' is unavailable: no GPU here (test)\n"


def test_python_m_pyclvp_is_the_cli():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "pyclvp", "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("usage: pyclvp") and "rank" in run.stdout


def test_cli_demo_and_info(tmp_path, capsys):
    from pyclvp.cli import main

    assert main(["demo", "--candidates", "2", "--max-new-tokens", "5", "--keep", str(tmp_path),
                 "--wav", str(tmp_path / "demo.wav")]) == 0
    out = capsys.readouterr().out
    assert "RANDOM weights" in out and "meaningless" in out and len(out.splitlines()[-2:]) == 2
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "F32" in out and "the tensors fit config.json" in out


def _broken_tiny_a(tmp_path, kind):
    """tiny_a's config.json with a model.safetensors that misses every tensor, or has one misshaped."""
    from pyclvp.io.safetensors import load_file, save_file

    folder = DATA / "tiny_a"
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    tensors = {"not_a_clvp_tensor": np.zeros(3, np.float32)}
    if kind == "misshaped":
        tensors = load_file(folder / "model.safetensors", mmap=False)
        tensors["logit_scale"] = np.zeros(2, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    return tmp_path


@pytest.mark.parametrize("kind, problem", [("nothing", "missing: logit_scale"),
                                           ("misshaped", "logit_scale (2,) (expected ())")])
def test_cli_info_fails_when_the_checks_fail(tmp_path, capsys, kind, problem):
    from pyclvp.cli import main

    folder = _broken_tiny_a(tmp_path, kind)
    assert main(["info", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "parameters:" in out and "checks: checkpoint" in out and problem in out


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_nan_weights_stop_generation_with_the_reason(backend):
    model = _model("tiny_a", backend)
    ids, feats = _inputs(model)
    w = dict(model.weights)
    key = "speech_decoder_model.lm_head.bias"
    w[key] = np.full_like(w[key], np.nan)
    broken = ClvpModelForConditionalGeneration(model.config, w, backend)
    with pytest.raises(ValueError, match="logits hold NaN or infinity at step 1"):
        broken.generate(ids, feats, max_new_tokens=3)
    w = dict(model.weights)
    key = "text_encoder_model.projection.weight"
    w[key] = np.full_like(w[key], np.nan)
    with pytest.raises(ValueError, match="text encoder's embeddings hold NaN"):
        ClvpModelForConditionalGeneration(model.config, w, backend).generate(ids, feats, max_new_tokens=2)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32])
def test_integer_pcm_voices_are_refused_with_how_to_scale(dtype):
    with pytest.raises(TypeError, match=r"look like PCM integers; pass floats in \[-1, 1\]"):
        rank(_model("tiny_a"), "Hi.", (np.arange(22050) % 200).astype(dtype))
