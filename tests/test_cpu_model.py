"""The whole model on backend="cpu" (the C++ core, every usable ISA) against backend="numpy".

On each fixture checkpoint: forward()'s outputs and the fused decoder's prefill/step logits match the
reference within TOLERANCE["cpu", "float32"], greedy generation gives identical tokens, and
half-precision weights (kept as stored: float16, or bfloat16 bits) match the reference run on the
same weights widened to float32. The bfloat16/float16 KV cache has its own, looser bound.
"""
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import DATA, TOLERANCE, assert_close, isa_params
from pyclvp import _core
from pyclvp.model import ClvpModelForConditionalGeneration as Model
from pyclvp.ops.half import Bf16Array
from pyclvp.safetensors import load_file, save_file

NAMES = ["tiny_a", "tiny_b"]
TOL = TOLERANCE["cpu", "float32"]
# The half KV cache rounds every key and value (bfloat16: 8 significant bits, float16: 11); the measured
# max |logit error| on the fixtures is 2.7e-3 (bfloat16) and 4e-4 (float16), for logits up to ~2.6.
CACHE_ATOL = {"float16": 2e-3, "bfloat16": 1e-2}
_MODELS = {}


def model(name, backend, folder=None, dtype="float32"):
    key = (name, backend, str(folder), dtype)
    if key not in _MODELS:
        _MODELS[key] = Model.from_pretrained(folder or DATA / name, backend=backend, dtype=dtype)
    return _MODELS[key]


@contextmanager
def using(isa):
    before = _core.get_isa()
    _core.set_isa(isa)
    try:
        yield
    finally:
        _core.set_isa(before)


def inputs(B=2, T=7, F=20, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 200, size=(B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, T - 2:] = 0  # a padded text row
    return ids, rng.standard_normal((B, 80, F)).astype(np.float32), mask


def prompt(m, seed=0):
    ids, feats, mask = inputs(seed=seed)
    return m.decoder_prompt(m.conditioning_encoder(feats, *m.check_text(ids, mask)))  # (B, P, C)


def decode(m, p, n=6):  # prefill + n greedy steps -> every logits (n+1, B, V)
    dec, B, P = m.decoder, p.shape[0], p.shape[1]
    state = dec.new_state(B, P + n)
    out = [dec.prefill(p, None, state)]
    for k in range(1, n + 1):
        out.append(dec.step(out[-1].argmax(-1), np.full(B, k + 1), state))
    return np.stack(out)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_numpy(name, isa):
    want = model(name, "numpy").forward(*inputs())
    with using(isa):
        got = model(name, "cpu").forward(*inputs())
    for field in ("logits_per_text", "text_embeds", "speech_embeds", "text_model_output", "speech_model_output"):
        assert_close(getattr(got, field), getattr(want, field), **TOL, name=field)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("name", NAMES)
def test_fused_decoder_matches_numpy(name, isa):
    ref, cpu = model(name, "numpy"), model(name, "cpu")
    assert type(cpu.decoder).__name__ == "CpuDecoder"
    p = prompt(ref)
    with using(isa):
        assert_close(decode(cpu, p), decode(ref, p), **TOL, name="prefill + step logits")


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("name", NAMES)
def test_greedy_tokens_identical(name, isa):
    ids, feats, mask = inputs(seed=1)
    want = model(name, "numpy").generate(ids, feats, mask, max_new_tokens=12)
    with using(isa):
        got = model(name, "cpu").generate(ids, feats, mask, max_new_tokens=12)
    np.testing.assert_array_equal(got.speech_ids, want.speech_ids)
    assert_close(got.logits_per_text, want.logits_per_text, **TOL, name="logits_per_text")


@pytest.fixture(scope="module", params=["float16", "bfloat16"])
def half_checkpoint(request, tmp_path_factory):
    """tiny_a with its matrices stored in float16 / bfloat16 (vectors stay float32)."""
    dtype = request.param
    folder = tmp_path_factory.mktemp(f"tiny_a_{dtype}")
    tensors = load_file(DATA / "tiny_a" / "model.safetensors", mmap=False)
    matrices = [k for k, v in tensors.items() if v.ndim >= 2]
    if dtype == "float16":
        tensors.update({k: tensors[k].astype(np.float16) for k in matrices})
        save_file(tensors, folder / "model.safetensors")
    else:  # float32 values rounded to bfloat16 by the writer
        save_file(tensors, folder / "model.safetensors", dtypes={k: "BF16" for k in matrices})
    (folder / "config.json").write_bytes((DATA / "tiny_a" / "config.json").read_bytes())
    return folder, dtype


def test_half_weights_stay_half_and_match_numpy(half_checkpoint):
    folder, dtype = half_checkpoint
    ref = model("tiny_a", "numpy", folder)  # widened to float32 on load (exact)
    cpu = model("tiny_a", "cpu", folder, dtype)
    w = cpu.weights["speech_decoder_model.model.decoder.layers.0.mlp.c_fc.weight"]
    assert isinstance(w, Bf16Array) if dtype == "bfloat16" else w.dtype == np.float16
    assert not w.flags.owndata and not w.flags.writeable  # a view into the memory-mapped file, not a copy
    p = prompt(ref)
    assert_close(decode(cpu, p), decode(ref, p), **TOLERANCE["cpu", dtype], name=f"{dtype} weights: decoder logits")
    got, want = cpu.forward(*inputs()), ref.forward(*inputs())
    assert_close(got.logits_per_text, want.logits_per_text, **TOLERANCE["cpu", dtype], name="logits_per_text")


@pytest.mark.parametrize("cache", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_half_kv_cache_within_its_bound(name, cache):
    cpu = model(name, "cpu")
    dec, p = cpu.decoder, prompt(cpu)
    B, P = p.shape[:2]
    full, half = dec.new_state(B, P + 4), dec.new_state(B, P + 4, cache_dtype=cache)
    assert half.k.dtype == (np.float16 if cache == "float16" else np.uint16)
    assert_close(dec.prefill(p, None, half), dec.prefill(p, None, full), atol=CACHE_ATOL[cache], name="prefill")
    for k in range(1, 4):
        ids = np.full(B, 7 * k)
        assert_close(dec.step(ids, np.full(B, k + 1), half), dec.step(ids, np.full(B, k + 1), full),
                     atol=CACHE_ATOL[cache], name=f"step {k}")


def test_decoder_session_rejects_bad_caches():
    dec = model("tiny_a", "cpu").decoder
    s = dec.new_state(2, 3)
    ids, pos = np.array([1, 2]), np.array([2, 2])
    with pytest.raises(ValueError, match="cache holds 3 positions"):
        for _ in range(4):
            dec.step(ids, pos, s)
    s = dec.new_state(2, 3)
    with pytest.raises(ValueError, match=r"cache k has shape"):
        dec.step(np.array([1, 2, 3]), np.array([2, 2, 2]), s)
    s.v = s.v.astype(np.float16)
    with pytest.raises(ValueError, match="same dtype"):
        dec.step(ids, pos, s)
    with pytest.raises(ValueError, match="unknown cache dtype"):
        dec.new_state(1, 2, cache_dtype="int8")
    with pytest.raises(ValueError, match="weights is missing 'lm_head.bias'"):
        params = {k: v for k, v in dec.params.items() if k != "lm_head.bias"}
        type(dec)(params, dec.cfg)
