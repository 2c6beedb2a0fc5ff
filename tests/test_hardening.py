"""Hardening: Ctrl-C stops a long C++ call, zero-size work returns at once, the decoder session owns
its weights, attention with no visible key, generation memory per chunk."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pyclvp import _core
from pyclvp.ops import numpy_ops

# ----------------------------------------------------------------------------------------------
# 1. Ctrl-C during a long C++ call

_LONG_CALL = """
import sys, time, numpy as np
from pyclvp import _core
r = np.random.default_rng(0)
if sys.argv[1] == "attention":
    q = r.standard_normal((1, 8, 1024, 64), dtype=np.float32)
    k = r.standard_normal((1, 8, 16384, 64), dtype=np.float32)
    call = lambda: [_core.attention(q, k, k) for _ in range(4)]  # each ~0.3-1 s: the signal comes during one
else:
    x = r.standard_normal((2048, 4096), dtype=np.float32)
    w = r.standard_normal((4096, 4096), dtype=np.float32)
    call = lambda: [_core.linear(x, w) for _ in range(3)]
print("ready", flush=True)
t0 = time.monotonic()
try:
    call()
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted after %.2f s" % (time.monotonic() - t0), flush=True)
    sys.exit(42)
"""


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("op", ["attention", "linear"])
def test_ctrl_c_stops_a_long_call(op, threads, monkeypatch, tmp_path):
    monkeypatch.setenv("PYCLVP_NUM_THREADS", threads)
    # cwd: away from a source checkout, whose pyclvp/ (no built core) `python -c` would import first
    child = subprocess.Popen([sys.executable, "-c", _LONG_CALL, op], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    t0 = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        out, _ = child.communicate(timeout=10)
    finally:
        child.kill()
    elapsed = time.monotonic() - t0
    assert child.returncode == 42, out
    assert "interrupted" in out
    assert elapsed < 2.0, f"the call took {elapsed:.2f} s to stop"


def test_zero_size_work_returns_at_once():
    huge = 10 ** 12
    z = np.zeros(0, np.float32)
    t0 = time.monotonic()
    assert _core.rotary(np.lib.stride_tricks.as_strided(z, (huge, 0, 4), (0, 0, 0)),
                        np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)).shape == (huge, 0, 4)
    assert _core.layer_norm(np.lib.stride_tricks.as_strided(z, (huge, 0), (0, 0)), z, z, 1e-5).shape == (huge, 0)
    q = np.lib.stride_tricks.as_strided(z, (huge, 4, 0, 8), (0, 0, 0, 0))
    assert _core.attention(q, q[:, :, :, :0].reshape(huge, 4, 0, 8), q).shape == (huge, 4, 0, 8)
    k = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (huge, 4, 3, 8), (0, 0, 0, 0))
    with pytest.raises(ValueError):  # k is not contiguous (and not empty): refused, not read
        _core.attention(q, k, k)
    assert _core.gelu(np.lib.stride_tricks.as_strided(z, (huge, 0), (0, 0))).shape == (huge, 0)
    assert time.monotonic() - t0 < 1.0


# ----------------------------------------------------------------------------------------------
# 2. A DecoderSession holds exactly the arrays it points into

from conftest import load_tiny  # noqa: E402
from pyclvp.ops.cpu_decoder import CpuDecoder  # noqa: E402


class CopyingT(np.ndarray):
    """An ndarray subclass whose .T is a fresh copy (not a view): a pointer taken from it dangles."""

    @property
    def T(self):
        return np.array(np.asarray(self).T, order="C")


def _greedy(dec, steps=3):
    p = np.random.default_rng(1).standard_normal((2, 4, dec.cfg.hidden_size)).astype(np.float32)
    s = dec.new_state(2, 4 + steps)
    out = [dec.prefill(p, None, s)]
    for k in range(steps):
        out.append(dec.step(out[-1].argmax(-1), np.full(2, k + 2), s))
    return np.stack(out)


def _owned(params, wrap=lambda k, a: a):  # every array a fresh copy that owns its memory
    return {k: (None if a is None else wrap(k, np.array(np.asarray(a)))) for k, a in params.items()}


def test_session_points_into_the_arrays_it_holds_not_temporaries():
    base = load_tiny("tiny_a", "cpu").decoder
    want = _greedy(CpuDecoder(_owned(base.params), base.cfg))
    params = _owned(base.params, lambda k, a: a.view(CopyingT) if "mlp.c_" in k and a.ndim == 2 else a)
    dec = CpuDecoder(params, base.cfg)
    del params
    dec.params = None  # the session alone keeps its arrays
    junk = [np.full(1 << 16, np.nan, np.float32) for _ in range(64)]  # reuse whatever memory was freed
    np.testing.assert_array_equal(_greedy(dec), want)
    del junk


def test_resizing_a_bound_weight_is_refused_or_caught():
    base = load_tiny("tiny_a", "cpu").decoder
    params = _owned(base.params)
    key = next(k for k in params if k.endswith("lm_head.weight"))
    w = params[key]
    dec = CpuDecoder(params, base.cfg)
    want = _greedy(dec)
    dec.params = params = None
    with pytest.raises(ValueError, match="cannot resize"):  # the session's view pins it (refcheck)
        w.resize((w.shape[0] * 64, w.shape[1]))
    np.testing.assert_array_equal(_greedy(dec), want)
    w.resize((w.shape[0] * 64, w.shape[1]), refcheck=False)  # numpy's unchecked path: reallocates anyway
    with pytest.raises(ValueError, match=f"weight '{key.split('speech_decoder_model.')[-1]}' was resized"):
        _greedy(dec)


# ----------------------------------------------------------------------------------------------
# 3. Attention with every key masked, or with no key at all

@pytest.mark.parametrize("T, S", [(1, 1), (3, 5), (40, 70)])
@pytest.mark.parametrize("fill", [np.finfo(np.float32).min, -np.inf, -1e30])
def test_attention_with_every_key_masked_agrees(T, S, fill):
    from pyclvp.ops.cpu_ops import CpuOps
    r = np.random.default_rng(T * S)
    q, k, v = (r.standard_normal(shape, dtype=np.float32) for shape in [(2, 2, T, 8), (2, 2, S, 8), (2, 2, S, 8)])
    mask = np.full((2, 1, T, S), fill, np.float32)
    want = numpy_ops.attention(q, k, v, mask)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(CpuOps().attention(q, k, v, mask), want, atol=1e-6)
    np.testing.assert_allclose(want, np.broadcast_to(v.mean(2, keepdims=True), want.shape), atol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_attention_without_keys_is_zeros_on_both(masked):
    from pyclvp.ops.cpu_ops import CpuOps
    q = np.ones((2, 3, 4, 8), np.float32)
    k = np.zeros((2, 3, 0, 8), np.float32)
    mask = np.zeros((2, 1, 4, 0), np.float32) if masked else None
    want = numpy_ops.attention(q, k, k, mask)
    assert want.shape == q.shape and not want.any()
    np.testing.assert_array_equal(CpuOps().attention(q, k, k, mask), want)


# ----------------------------------------------------------------------------------------------
# 4. Generation allocates per chunk of batch_size rows

from pyclvp.decoding import Uniforms  # noqa: E402


@pytest.mark.parametrize("steps, R, size", [(7, 10, 3), (1, 1, 1), (5, 16, 16), (4, 33, 5)])
@pytest.mark.parametrize("seed", [0, 123])
def test_uniform_columns_equal_the_whole_table(seed, steps, R, size):
    full = np.random.default_rng(seed).random((steps, R))  # the draw rule: unchanged
    u = Uniforms(seed, steps, R)
    got = np.concatenate([u.columns(r0, min(size, R - r0)) for r0 in range(0, R, size)], axis=1)
    np.testing.assert_array_equal(got, full)


class _Stop(Exception):
    pass


def test_a_million_candidates_allocate_per_chunk():
    import tracemalloc

    model = load_tiny("tiny_b", "numpy")
    rng = np.random.default_rng(0)
    ids, feats = rng.integers(1, 200, size=(1, 6)), rng.standard_normal((1, 80, 16)).astype(np.float32)

    def progress(done, total):
        if done >= 8:  # the first chunk is through: stop there
            raise _Stop

    tracemalloc.start()
    try:
        with pytest.raises(_Stop):
            model.generate(ids, feats, do_sample=True, max_new_tokens=8, num_return_sequences=10 ** 6, seed=1,
                           batch_size=4, progress=progress)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # whole-table uniforms and tokens would be 10**6 x 8 x (8 + 8) bytes = 128 MB
    assert peak < 16 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB"


def test_sampled_tokens_unchanged_for_a_seed_any_batch_size():
    model = load_tiny("tiny_b", "numpy")
    rng = np.random.default_rng(0)
    ids, feats = rng.integers(1, 200, size=(2, 6)), rng.standard_normal((2, 80, 16)).astype(np.float32)
    kw = dict(do_sample=True, temperature=0.9, top_p=0.9, max_new_tokens=6, num_return_sequences=5, seed=7)
    want = model.generate(ids, feats, **kw, batch_size=10).speech_ids
    for size in (1, 3, 4):
        np.testing.assert_array_equal(model.generate(ids, feats, **kw, batch_size=size).speech_ids, want)


# ----------------------------------------------------------------------------------------------
# 5. The CLI: every expected failure from an input file is one line and exit code 2

@pytest.mark.parametrize("exc, words", [
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (OverflowError("cannot convert float infinity to integer"), "too large"),
    (MemoryError(), "out of memory"),
    (ValueError("bad header"), "bad header"),
])
def test_cli_input_failures_are_one_line_exit_2(exc, words, tmp_path, monkeypatch, capsys):
    import pyclvp.audio
    from pyclvp import cli

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(pyclvp.audio, "load_audio", boom)
    clip = tmp_path / "x.wav"
    clip.write_bytes(b"RIFF")
    assert cli.main(["mel", str(clip), "-o", str(tmp_path / "out.npy")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, err


# ----------------------------------------------------------------------------------------------
# 6. Unspeakable text is named so, not "empty"

@pytest.mark.parametrize("text", ["\U0001F600\U0001F600", "\u200b", "\U0001F44D \U0001F600"])
def test_unspeakable_text_is_named_so(text):
    from pyclvp.rank import rank
    model = load_tiny("tiny_a", "numpy")
    clip = np.sin(np.arange(22050) / 10).astype(np.float32)
    with pytest.raises(ValueError, match="is speakable"):
        rank(model, text, clip, num_candidates=1, max_new_tokens=2)
    with pytest.raises(ValueError, match="the text is empty"):
        rank(model, "   ", clip, num_candidates=1, max_new_tokens=2)


# ----------------------------------------------------------------------------------------------
# 7. What tools/fuzz.py found: a WAV at 127 Hz upsampled for 20 s+; resampling kernels sized by a rate

def test_a_clip_below_speech_rates_is_refused_at_once(tmp_path):
    from pyclvp.audio import load_audio, load_voice
    from pyclvp.io.wav import write_wav
    path = write_wav(tmp_path / "low.wav", np.zeros(44100, np.float32), 127)
    t0 = time.monotonic()
    for load in (load_audio, load_voice):
        with pytest.raises(ValueError, match="127 Hz, below 4000 Hz"):
            load(path)
    assert time.monotonic() - t0 < 1.0


def test_resampling_bounds_and_both_polyphase_paths_agree(monkeypatch):
    from pyclvp.audio import resample as R
    with pytest.raises(ValueError, match="too fine a ratio"):  # a 22050 x 44127 kernel: 3.9 GB in torchaudio
        R.sinc_resample(np.zeros(100, np.float32), 44101, 22050)
    x = np.random.default_rng(0).standard_normal(3000)
    for rate in (8000, 16000, 48000, 4001):
        want = R.resample(x, rate, 22050)
        monkeypatch.setattr(R, "BRANCH_LOOP_MAX", 0)  # every rate pair through the blocked gather
        np.testing.assert_allclose(R.resample(x, rate, 22050), want, rtol=0, atol=1e-12)
        monkeypatch.undo()


def test_config_epsilon_past_float_range_is_a_config_error(tmp_path):
    import json

    from pyclvp.config import ClvpConfig
    cfg = json.loads((Path(__file__).parent / "data" / "tiny_a" / "config.json").read_text())
    cfg.setdefault("text_config", {})["layer_norm_eps"] = 10 ** 400  # fuzz: OverflowError in math.isfinite
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"layer_norm_eps: expected a finite number > 0, got 1000.*\.\.\.$"):
        ClvpConfig.from_pretrained(str(tmp_path))
