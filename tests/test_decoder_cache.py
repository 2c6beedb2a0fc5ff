"""The KV-cached decoder: prefill + step equals recomputing the whole sequence, on every backend.

The "full recomputation" is a fresh prefill over the entire sequence so far (prompt + the generated
tokens embedded with their mel positions), which uses no cache from earlier calls.
"""
import numpy as np
import pytest

from conftest import CACHE_ATOL, TOLERANCE, assert_close, load_tiny
from pyclvp.io.half import Bf16Array


def _prompt(model, rng, B=2, T=5):
    ids = rng.integers(1, 200, size=(B, T))
    feats = rng.standard_normal((B, 80, 12)).astype(np.float32)
    return model.decoder_prompt(model.conditioning_encoder(feats, ids))  # (B, P, C)


def _recompute(model, prompt, mask, tokens):  # logits after prompt + tokens[:, :k], recomputed from scratch
    B, P, _ = prompt.shape
    k, dec = tokens.shape[1], model.decoder
    positions = np.broadcast_to(np.arange(2, k + 2), tokens.shape)  # the k-th token: mel position k+1
    embeds = model.decoder_ref.embed(tokens, positions)
    seq = np.concatenate([prompt, embeds], axis=1)  # (B, P+k, C)
    full_mask = None if mask is None else np.concatenate([mask, np.ones((B, k), mask.dtype)], axis=1)
    return dec.prefill(seq, full_mask, dec.new_state(B, P + k))


@pytest.mark.parametrize("masked", [False, True])
def test_cached_steps_equal_full_recompute(model, backend, masked):
    rng = np.random.default_rng(1)
    dec, prompt = model.decoder, _prompt(model, rng)
    B, P, _ = prompt.shape
    mask = None
    if masked:
        mask = np.ones((B, P), np.int64)
        mask[1, 2] = 0  # one padded prompt key in row 1
    state = dec.new_state(B, P + 6)
    logits = dec.prefill(prompt, mask, state)
    tokens = np.zeros((B, 0), np.int64)
    for k in range(1, 6):
        assert_close(logits, _recompute(model, prompt, mask, tokens), atol=TOLERANCE[backend, "float32"]["atol"],
                     name=f"logits before token {k}")
        nxt = logits.argmax(-1)  # (B,)
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        logits = dec.step(nxt, np.full(B, k + 1), state)
        assert state.length == P + k


def test_masked_prompt_key_equals_removed_key(model):
    rng = np.random.default_rng(2)
    dec, prompt = model.decoder, _prompt(model, rng, B=1)
    P = prompt.shape[1]
    mask = np.ones((1, P), np.int64)
    mask[0, 3] = 0
    a, b = dec.new_state(1, P + 2), dec.new_state(1, P + 1)
    la = dec.prefill(prompt, mask, a)
    lb = dec.prefill(np.delete(prompt, 3, axis=1), None, b)
    assert_close(la, lb, atol=1e-5, name="prefill")
    tok = la.argmax(-1)
    assert_close(dec.step(tok, np.array([2]), a), dec.step(tok, np.array([2]), b), atol=1e-5, name="step")


def test_select_replicates_and_reorders_rows(model):
    rng = np.random.default_rng(3)
    dec, prompt = model.decoder, _prompt(model, rng)
    B, P, _ = prompt.shape
    state = dec.new_state(B, P + 2)
    dec.prefill(prompt, None, state)
    rows = np.array([1, 0, 0, 1, 1])
    sel = state.select(rows)
    assert type(sel) is type(state) and sel.length == P and sel.k.shape[1] == 5
    ids = np.array([3, 4])
    want = dec.step(ids, np.array([2, 2]), state)
    got = dec.step(ids[rows], np.full(5, 2), sel)
    assert_close(got, want[rows], atol=1e-6, name="replicated rows")


def test_state_layout(model):
    cfg = model.config.decoder_config
    s = model.decoder.new_state(3, 7)
    shape = (cfg.num_hidden_layers, 3, cfg.num_attention_heads, 7, cfg.head_dim)
    assert s.k.shape == s.v.shape == shape and s.k.dtype == np.float32
    assert s.key_mask.shape == (3, 7) and s.key_mask.dtype == bool and s.length == 0


def test_step_errors(model):
    """Every backend's decoder refuses bad steps with a ValueError that names the problem."""
    dec = model.decoder
    cfg = model.config.decoder_config
    state = dec.new_state(2, 1)
    with pytest.raises(ValueError, match=r"position_ids.*(must lie in|outside)"):
        dec.step(np.array([1, 2]), np.array([0, cfg.max_position_embeddings]), state)
    with pytest.raises(ValueError, match=r"input_ids.*(must lie in|outside)"):
        dec.step(np.array([1, cfg.vocab_size]), np.array([0, 0]), state)
    with pytest.raises(ValueError, match="shape"):
        dec.step(np.array([1, 2, 3]), np.array([0, 0, 0]), state)
    dec.step(np.array([1, 2]), np.array([0, 0]), state)
    with pytest.raises(ValueError, match="full|cannot write"):
        dec.step(np.array([1, 2]), np.array([1, 1]), state)
    with pytest.raises(ValueError, match="does not fit|cannot write"):
        dec.prefill(np.zeros((2, 3, cfg.hidden_size), np.float32), None, dec.new_state(2, 2))


@pytest.mark.parametrize("ids, pos, match", [
    ([1.9, 2.9], [3, 3], "input_ids must be integers, got dtype float64"),  # the cpu backend truncated these
    ([1, 2], [3.5, 3.5], "position_ids must be integers"),
    ([True, False], [3, 3], "input_ids must be integers, got dtype bool"),
    ([[1], [2]], [3, 3], r"step needs input_ids of shape \(2,\) for a state of 2 rows, got \(2, 1\)"),
    ([1, 2], [[3, 3]], r"position_ids of shape \(2,\)"),
])
def test_every_backend_refuses_the_same_step_inputs(model, ids, pos, match):
    with pytest.raises(ValueError, match=match):
        model.decoder.step(np.array(ids), np.array(pos), model.decoder.new_state(2, 1))


def test_one_id_or_position_serves_every_row(model):
    dec = model.decoder
    a, b = dec.new_state(2, 1), dec.new_state(2, 1)
    assert_close(dec.step(5, [3], a), dec.step([5, 5], [3, 3], b), atol=0, name="broadcast step")


@pytest.mark.parametrize("rows, match", [
    ([True, False], "1-D sequence of row indices, got bool"),
    ([0.5], "1-D sequence of row indices, got float64"),
    ([[0, 1]], r"1-D sequence of row indices, got int64 \(1, 2\)"),
    (1, r"1-D sequence of row indices, got int64 \(\)"),
    ([0, 2], r"select rows must lie in \[0, 2\)"),
    ([-1], r"select rows must lie in \[0, 2\)"),
])
def test_select_refuses_what_are_not_rows(model, rows, match):
    with pytest.raises(ValueError, match=match):
        model.decoder.new_state(2, 3).select(rows)


def test_prefill_in_chunks_equals_one_prefill(model, backend):
    """prefill appends at the state's length on every backend: two chunks give the one-call logits."""
    dec, prompt = model.decoder, _prompt(model, np.random.default_rng(4))
    B, P, _ = prompt.shape
    mask = np.ones((B, P), bool)
    mask[1, 1] = False
    whole, chunked = dec.new_state(B, P), dec.new_state(B, P)
    want = dec.prefill(prompt, mask, whole)
    dec.prefill(prompt[:, :3], mask[:, :3], chunked)
    got = dec.prefill(prompt[:, 3:], mask[:, 3:], chunked)
    assert chunked.length == P
    assert_close(got, want, atol=TOLERANCE[backend, "float32"]["atol"], name="chunked prefill")


@pytest.mark.parametrize("cache", ["float16", "bfloat16"])
def test_half_caches_round_alike_on_every_host_backend(cache):
    """new_state(..., cache_dtype) on the NumPy reference too: the same stored bits as the C++ core, and
    logits within the half cache's bound of the float32 cache's."""
    ref, cpu = load_tiny("tiny_a"), load_tiny("tiny_a", "cpu")
    prompt = _prompt(ref, np.random.default_rng(5))
    B, P, _ = prompt.shape
    states = {name: m.decoder.new_state(B, P + 2, cache) for name, m in (("numpy", ref), ("cpu", cpu))}
    assert isinstance(states["numpy"].k, Bf16Array) == (cache == "bfloat16")
    full = ref.decoder.new_state(B, P + 2)
    want = ref.decoder.prefill(prompt, None, full)
    for name, m in (("numpy", ref), ("cpu", cpu)):
        assert_close(m.decoder.prefill(prompt, None, states[name]), want, atol=CACHE_ATOL[cache], name=name)
        want_step = ref.decoder.step([7, 9], [2, 2], full.select([0, 1]))  # a copy: full stays at length P
        assert_close(m.decoder.step([7, 9], [2, 2], states[name]), want_step, atol=CACHE_ATOL[cache], name=f"{name} step")
    bits = [np.asarray(states[name].k).view(np.uint16).astype(np.int32) for name in ("numpy", "cpu")]
    assert np.abs(bits[0] - bits[1]).max() <= 1  # the same rounding of nearly equal float32 keys: <= 1 ulp apart


def test_a_fully_padded_row_matches_the_reference(model, backend):
    """Queries that see only padding: the reference (transformers' eager mask) gives every masked score,
    the causally hidden ones included, finfo.min, so they average all the keys' values; the kernels too."""
    ref = load_tiny(model.name_or_path.name)
    rng = np.random.default_rng(6)
    C = model.config.decoder_config.hidden_size
    e = rng.standard_normal((2, 4, C)).astype(np.float32)
    mask = np.array([[0, 0, 0, 0], [0, 1, 1, 1]])  # row 0: all padding; row 1: its first query sees only padding
    want = ref.decoder.prefill(e, mask, ref.decoder.new_state(2, 4))
    got = model.decoder.prefill(e, mask, model.decoder.new_state(2, 4))
    assert_close(got, want, atol=TOLERANCE[backend, "float32"]["atol"], name="fully padded rows")
    fwd = [m.decoder_ref.forward(e, mask)[1] for m in (model, ref)]  # every position's logits, through ops.attention
    assert_close(fwd[0], fwd[1], atol=TOLERANCE[backend, "float32"]["atol"], name="forward")


@pytest.mark.parametrize("embeds, mask, match", [
    (lambda C: np.zeros((2, 3, C + 1), np.float32), None, r"inputs_embeds of shape \(2, P >= 1, {C}\)"),
    (lambda C: np.zeros((2, 0, C), np.float32), None, "inputs_embeds of shape"),
    (lambda C: np.zeros((3, C), np.float32), None, "inputs_embeds of shape"),
    (lambda C: np.full((2, 3, C), np.nan, np.float32), None, "finite floating-point"),
    (lambda C: np.zeros((2, 3, C), np.int64), None, "finite floating-point"),
    (lambda C: np.zeros((2, 3, C), np.float32), np.ones((1, 3)), r"attention_mask has shape \(1, 3\)"),
    (lambda C: np.zeros((2, 3, C), np.float32), np.full((2, 3), 0.5), "only 0 and 1"),
    (lambda C: np.zeros((2, 3, C), np.float32), np.full((2, 3), -1), "only 0 and 1"),
])
def test_every_backend_refuses_the_same_prefill_inputs(model, embeds, mask, match):
    C = model.config.decoder_config.hidden_size
    with pytest.raises(ValueError, match=match.format(C=C)):
        model.decoder.prefill(embeds(C), mask, model.decoder.new_state(2, 3))
