"""The whole model on backend="cpu" (the C++ core, every usable ISA) against backend="numpy".

On each fixture checkpoint: forward()'s outputs and the fused decoder's prefill/step logits match the
reference within TOLERANCE["cpu", "float32"], greedy generation gives identical tokens, and
half-precision weights (kept as stored: float16, or bfloat16 bits) match the reference run on the
same weights widened to float32. The bfloat16/float16 KV cache has its own, looser bound.
"""
import numpy as np
import pytest

from conftest import CACHE_ATOL, TINY, TOLERANCE, assert_close, greedy_logits, inputs, isa_params, load_tiny, using
from pyclvp import _core
from pyclvp.io.half import Bf16Array

TOL = TOLERANCE["cpu", "float32"]


def prompt(m, seed=0):
    ids, feats, mask = inputs(seed=seed)
    return m.decoder_prompt(m.conditioning_encoder(feats, *m.check_text(ids, mask)))  # (B, P, C)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("name", TINY)
def test_forward_matches_numpy(name, isa):
    want = load_tiny(name, "numpy").forward(*inputs())
    with using(isa):
        got = load_tiny(name, "cpu").forward(*inputs())
    for field in ("logits_per_text", "text_embeds", "speech_embeds", "text_model_output", "speech_model_output"):
        assert_close(getattr(got, field), getattr(want, field), **TOL, name=field)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("name", TINY)
def test_fused_decoder_matches_numpy(name, isa):
    ref, cpu = load_tiny(name, "numpy"), load_tiny(name, "cpu")
    assert type(cpu.decoder).__name__ == "CpuDecoder"
    p = prompt(ref)
    with using(isa):
        assert_close(greedy_logits(cpu.decoder, p), greedy_logits(ref.decoder, p), **TOL, name="prefill + step logits")


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("name", TINY)
def test_greedy_tokens_identical(name, isa):
    ids, feats, mask = inputs(seed=1)
    want = load_tiny(name, "numpy").generate(ids, feats, mask, max_new_tokens=12)
    with using(isa):
        got = load_tiny(name, "cpu").generate(ids, feats, mask, max_new_tokens=12)
    np.testing.assert_array_equal(got.speech_ids, want.speech_ids)
    assert_close(got.logits_per_text, want.logits_per_text, **TOL, name="logits_per_text")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_decoder_binds_its_conv1d_copies_and_the_originals_read_the_same(dtype):
    """The session reads transposed copies of the MLP's Conv1D matrices from its first call on; the memory-mapped
    originals, whose pages it released, still read the same values (forward() uses them)."""
    cpu = load_tiny("tiny_b", "cpu", dtype)
    key = "speech_decoder_model.model.decoder.layers.0.mlp.c_proj.weight"
    original = cpu.weights[key]
    before = np.array(original.view(np.ndarray))  # bits
    greedy_logits(cpu.decoder, prompt(load_tiny("tiny_b")))
    bound = cpu.decoder._weights[key.removeprefix("speech_decoder_model.")]
    assert bound.flags.f_contiguous and not np.shares_memory(bound, original)  # (Cin, Cout) view of a (Cout, Cin) copy
    assert np.array_equal(bound.view(np.ndarray), before) and np.array_equal(original.view(np.ndarray), before)


def test_half_weights_stay_half_and_match_numpy(half_checkpoint):
    folder, dtype = half_checkpoint
    ref = load_tiny("tiny_a", folder=folder)  # widened to float32 on load (exact)
    cpu = load_tiny("tiny_a", "cpu", dtype, folder)
    w = cpu.weights["speech_decoder_model.model.decoder.layers.0.mlp.c_fc.weight"]
    assert isinstance(w, Bf16Array) if dtype == "bfloat16" else w.dtype == np.float16
    assert not w.flags.owndata and not w.flags.writeable  # a view into the memory-mapped file, not a copy
    p = prompt(ref)
    assert_close(greedy_logits(cpu.decoder, p), greedy_logits(ref.decoder, p), **TOLERANCE["cpu", dtype],
                 name=f"{dtype} weights: decoder logits")
    got, want = cpu.forward(*inputs()), ref.forward(*inputs())
    assert_close(got.logits_per_text, want.logits_per_text, **TOLERANCE["cpu", dtype], name="logits_per_text")


@pytest.mark.parametrize("cache", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", TINY)
def test_half_kv_cache_within_its_bound(name, cache):
    cpu = load_tiny(name, "cpu")
    dec, p = cpu.decoder, prompt(cpu)
    B, P = p.shape[:2]
    full, half = dec.new_state(B, P + 4), dec.new_state(B, P + 4, cache_dtype=cache)
    assert half.k.dtype == (np.float16 if cache == "float16" else np.uint16)
    assert_close(dec.prefill(p, None, half), dec.prefill(p, None, full), atol=CACHE_ATOL[cache], name="prefill")
    for k in range(1, 4):
        ids = np.full(B, 7 * k)
        assert_close(dec.step(ids, np.full(B, k + 1), half), dec.step(ids, np.full(B, k + 1), full),
                     atol=CACHE_ATOL[cache], name=f"step {k}")


@pytest.mark.parametrize("change, match", [
    (dict(L="2"), "decoder: config 'L' must be an integer, got '2'"),
    (dict(H=2.5), "config 'H' must be an integer, got 2.5"),
    (dict(V=True), "config 'V' must be an integer, got True"),
    (dict(eps=None), "config 'eps' must be a number, got None"),
    (dict(C=0), "config sizes must be positive"),
])
def test_decoder_session_names_a_bad_config(change, match):
    config = {**dict(L=1, C=4, H=2, F=8, V=5, P=6, eps=1e-5), **change}
    with pytest.raises(ValueError, match=match):
        _core.DecoderSession(config, {})


def test_decoder_session_rejects_bad_caches():
    dec = load_tiny("tiny_a", "cpu").decoder
    s = dec.new_state(2, 3)
    ids, pos = np.array([1, 2]), np.array([2, 2])
    with pytest.raises(ValueError, match="cache holds 3 positions"):
        for _ in range(4):
            dec.step(ids, pos, s)
    for length in (2**63 - 1, 2**63 - 3, -1):  # length + T must not wrap around past the check
        s.length = length
        with pytest.raises(ValueError, match="cache holds 3 positions"):
            dec.step(ids, pos, s)
        with pytest.raises(ValueError, match="cache holds 3 positions"):
            dec.prefill(np.zeros((2, 2, dec.cfg.hidden_size), np.float32), None, s)
    s = dec.new_state(2, 3)
    with pytest.raises(ValueError, match=r"step needs input_ids of shape \(2,\) for a state of 2 rows, got \(3,\)"):
        dec.step(np.array([1, 2, 3]), np.array([2, 2, 2]), s)
    s.v = s.v[:, :1]  # v does not match k: the binding's own check
    with pytest.raises(ValueError, match=r"cache v has shape"):
        dec.step(ids, pos, s)
    s = dec.new_state(2, 3)
    s.v = s.v.astype(np.float16)
    with pytest.raises(ValueError, match="same dtype"):
        dec.step(ids, pos, s)
    s = dec.new_state(2, 3)
    s.v = s.k  # the same memory twice: the step would write keys over values
    with pytest.raises(ValueError, match="must not share memory"):
        dec.step(ids, pos, s)
    s = dec.new_state(2, 3)
    s.key_mask = s.k.view(np.uint8).reshape(-1)[:6].view(bool).reshape(2, 3)  # a view into k
    with pytest.raises(ValueError, match="must not share memory"):
        dec.step(ids, pos, s)
    with pytest.raises(ValueError, match="unknown cache dtype"):
        dec.new_state(1, 2, cache_dtype="int8")
    with pytest.raises(ValueError, match="weights is missing 'lm_head.bias'"):
        params = {k: v for k, v in dec.params.items() if k != "lm_head.bias"}
        type(dec)(params, dec.cfg)
