"""The CUDA backend (pyclvp/ops/cuda_ops.py -> pyclvp._core.cuda -> csrc/cuda/) against the NumPy reference.

Without a GPU, or with a core built without CUDA, every device test skips with the reason (decided by
cudaGetDeviceCount, through pyclvp._core). What needs no device runs everywhere: get_ops("cuda")
refuses with a clear error, the bindings reject bad arguments with a ValueError naming the
argument before any device memory is touched (a CUDA build without a device then says "no CUDA device"),
and every kernel in csrc/cuda/ keeps common.cuh's rule for programmatic dependent launch.

On a GPU, against pyclvp/ops/numpy_ops.py at TOLERANCE["cuda", dtype]:
  * every op over hypothesis-drawn shapes (odd sizes, the GEMV row blocks 1 / 4 / 16 and the GEMM
    above 16 rows, ragged and 16-byte-aligned widths, Conv1D layout, half weights, every mask kind);
  * the fused decoder's prefill + step logits for batches that take each path (layer norms fused
    into the GEMV for <= 4 rows, separate norms, the GEMM above 16 rows), with the CUDA graph and
    without; half KV caches within test_cpu_model's bound; select/download; its errors;
  * the whole model's forward() and greedy generation (identical tokens) on every fixture;
  * the token choice on the device (csrc/cuda/sampling.cu) against generate.py's host picker: the
    same tokens for every processor setting, and identical sampled generations.
tests/test_decoder_cache.py, test_decoding.py and test_model_parity.py also run the "cuda" backend
when it is available (conftest.backend_params).
"""
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import (CACHE_ATOL, MASK_MIN, MAX_EXAMPLES, TINY, TOLERANCE, assert_close, attention_mask,
                      greedy_logits, inputs, load_tiny, rand, rotary_tables)
from pyclvp import _core
from pyclvp.ops import get_ops
from pyclvp.ops import numpy_ops as ref
from pyclvp.ops.cuda_ops import MAX_HEAD_DIM, CudaUnavailableError, cuda_unavailable_reason
from pyclvp.io.half import to_dtype, to_float32

REASON = cuda_unavailable_reason()
COMPILED = _core.build_info()["cuda_compiled"]
gpu = pytest.mark.skipif(REASON is not None, reason=f"no CUDA backend here: {REASON}")
compiled = pytest.mark.skipif(not COMPILED, reason="pyclvp._core was built without CUDA")
hyp = settings(deadline=None, max_examples=MAX_EXAMPLES)
TOL = TOLERANCE["cuda", "float32"]
# sizes around the warp (32), the 8-wide loads, the GEMV row blocks (1, 4, 16) and the GEMM tiles (64)
SIZES = st.one_of(st.integers(1, 70), st.sampled_from([1, 3, 4, 5, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129, 257]))
SEEDS = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module")
def ops():
    if REASON is not None:
        pytest.skip(f"no CUDA backend here: {REASON}")
    return get_ops("cuda")


# ----------------------------------------------------------------------------------------------
# Without a device


@pytest.mark.skipif(REASON is None, reason="a CUDA device is present")
def test_get_ops_cuda_says_why_it_is_unavailable():
    with pytest.raises(CudaUnavailableError, match="backend 'cuda' is unavailable: pyclvp._core was built with"
                       if COMPILED else "backend 'cuda' is unavailable: pyclvp._core was built without CUDA"):
        get_ops("cuda")
    assert issubclass(CudaUnavailableError, RuntimeError)


@compiled
@pytest.mark.skipif(REASON is None, reason="a CUDA device is present")
def test_calls_without_a_device_raise_runtime_error():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _core.cuda.Weight(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _core.cuda.layer_norm(np.zeros((2, 3), np.float32), np.ones(3, np.float32), np.zeros(3, np.float32), 1e-5)


def _bad_calls():
    c = getattr(_core, "cuda", None)
    z = np.zeros
    return [
        (lambda: c.Weight(z((4, 3), np.int32)), "w must be float32, float16 or uint16"),
        (lambda: c.Weight(z((4, 6), np.float32)[:, ::2]), "w must be C- or Fortran"),
        (lambda: c.Weight(z(3, np.float32)), "w must be a 2-D numpy array"),
        (lambda: c.layer_norm(z((2, 3), np.float64), z(3, np.float32), z(3, np.float32), 1e-5), "x must be float32"),
        (lambda: c.layer_norm(z((2, 3), np.float32), z(4, np.float32), z(3, np.float32), 1e-5), r"g has shape \(4,\)"),
        (lambda: c.rms_norm(z((2, 3), np.float32)[:, ::2], z(2, np.float32), 1e-5), "x must be C-contiguous"),
        (lambda: c.group_norm(z((1, 6, 2), np.float32), z(6, np.float32), z(6, np.float32), 4, 1e-5), "groups must"),
        (lambda: c.gated_gelu(z((2, 3), np.float32)), "must be even"),
        (lambda: c.softmax(z((2, 0), np.float32)), "must not be empty"),
        (lambda: c.gelu([1.0]), "x must be a numpy array"),
        (lambda: c.rotary(z((1, 2, 4), np.float32), z((2, 3), np.float32), z((2, 3), np.float32)), "must be even"),
        (lambda: c.attention(z((1, 1, 2, 4), np.float32), z((1, 1, 3, 4), np.float32), z((1, 1, 2, 4), np.float32)),
         r"v has shape"),
        (lambda: c.attention(z((1, 1, 2, 4), np.float32), z((1, 1, 3, 4), np.float32), z((1, 1, 3, 4), np.float32),
                             z((1, 2, 2, 3), np.float32)), r"mask has shape"),
        (lambda: c.attention(*(z((1, 1, 2, 129), np.float32),) * 3), "exceeds the CUDA attention kernel's limit"),
        (lambda: c.conv1d(z((3, 5), np.float32), z((4, 3, 2), np.float32)), "x must have 3 dimensions"),
        (lambda: c.conv1d(z((1, 3, 5), np.float32), z((4, 5, 2), np.float32)), r"w has shape \(4, 5, 2\), expected dimension 1"),
        (lambda: c.conv_transpose1d(z((1, 3, 5), np.float32), z((4, 5, 2), np.float32)), "expected dimension 0 = 3"),
        (lambda: c.conv1d(z((1, 3, 2), np.float32), z((4, 3, 5), np.float32)), "output length To = -2 < 1"),
        (lambda: c.conv1d(z((1, 3, 5), np.float32), z((4, 3, 2), np.float32), z(5, np.float32)), r"b has shape \(5,\)"),
        (lambda: c.conv_transpose1d(z((1, 3, 5), np.float32), z((3, 4, 2), np.float32), None, 2, 0, 2),
         "output_padding = 2 must be"),
        (lambda: c.leaky_relu([1.0], 0.1), "x must be a numpy array"),
        (lambda: c.DecoderSession(dict(L=1, C=4, H=2, F=8, V=5, P=6, eps=1e-5), {}), "weights is missing"),
        (lambda: c.DecoderSession(dict(L=1, C=4, H=3, F=8, V=5, P=6, eps=1e-5), {}), "must be divisible"),
        (lambda: c.DecoderSession(dict(C=4), {}), "config is missing 'L'"),
    ]


@compiled
@pytest.mark.parametrize("call,match", _bad_calls())
def test_bindings_reject_bad_arguments_before_touching_the_device(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@compiled
def test_decoder_session_checks_weights_before_the_device():
    """Mismatched q/k/v dtypes are refused by the decoder's checks, which precede its first CUDA call."""
    cfg = load_tiny("tiny_b").config.decoder_config
    params = _decoder_params("tiny_b")
    params["model.decoder.layers.0.attn.k_proj.weight"] = params["model.decoder.layers.0.attn.k_proj.weight"].astype(
        np.float16)
    from pyclvp.ops.cpu_decoder import weights_for_core

    config = dict(L=cfg.num_hidden_layers, C=cfg.hidden_size, H=cfg.num_attention_heads, F=cfg.inner_dim,
                  V=cfg.vocab_size, P=cfg.max_position_embeddings, eps=cfg.layer_norm_epsilon)
    with pytest.raises(ValueError, match="must share a dtype"):
        _core.cuda.DecoderSession(config, weights_for_core(params))


CUDA_SOURCES = sorted((Path(__file__).resolve().parents[1] / "csrc" / "cuda").glob("*.cu"))


def _code(text):  # the source without its comments
    return re.sub(r"//[^\n]*", "", text)


@pytest.mark.parametrize("path", CUDA_SOURCES, ids=lambda p: p.name)
def test_every_kernel_waits_for_the_previous_kernel_first(path):
    """common.cuh's launch rule, checked in the sources (a GPU could race silently, the emulator would not show it):
    kernels are launched only through launch() (so never with <<<>>>), and each kernel's first statement is
    wait_for_previous_kernel(), after at most __shared__ declarations and prefetch_ calls."""
    code = _code(path.read_text())
    assert "<<<" not in code, f"{path.name}: a kernel launched with <<<>>>; use common.cuh's launch()"
    kernels = [m.start() for m in re.finditer(r"__global__", code)]
    for start in kernels:
        body = code[code.index("{", start) + 1:]
        line = code.count("\n", 0, start) + 1
        before = body[:body.find("wait_for_previous_kernel();")]  # to the end if it never waits
        for statement in filter(None, (s.strip() for s in before.split(";"))):
            assert statement.startswith(("__shared__", "prefetch_")), (
                f"{path.name}:{line}: {statement!r} comes before wait_for_previous_kernel()")
    assert kernels or path.name in ("device.cu", "memory.cu"), f"{path.name}: no kernel found"


def _decoder_params(name):
    w = load_tiny(name).weights
    return {k[len("speech_decoder_model."):]: v for k, v in w.items() if k.startswith("speech_decoder_model.")}


# ----------------------------------------------------------------------------------------------
# Ops (on a GPU)


@gpu
@hyp
@given(N=SIZES, Cin=SIZES, Cout=SIZES, seed=SEEDS, dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
       conv1d=st.booleans(), bias=st.booleans(), strided_x=st.booleans())
def test_hyp_linear(N, Cin, Cout, seed, dtype, conv1d, bias, strided_x):
    ops = get_ops("cuda")
    rng = np.random.default_rng(seed)
    x = rand(rng, N, 2 * Cin)[:, ::2] if strided_x else rand(rng, N, Cin)
    w = to_dtype(rand(rng, Cin, Cout) if conv1d else rand(rng, Cout, Cin), dtype)  # Conv1D stores (Cin, Cout)
    w = w.T if conv1d else w  # (Cout, Cin) either way; Conv1D's is a Fortran-order view, transposed on upload
    b = rand(rng, Cout) if bias else None
    assert_close(ops.linear(x, w, b), ref.linear(x, to_float32(w), b), **TOL, name=f"linear {dtype}")


@gpu
@pytest.mark.parametrize("shape", [(1, 1024, 1024), (3, 1024, 3072), (16, 1024, 4096), (17, 4096, 1024),
                                   (1, 1024, 8194), (200, 1024, 1024)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_linear_decoder_shapes(ops, shape, dtype):
    N, Cin, Cout = shape
    rng = np.random.default_rng(0)
    x, w, b = rand(rng, N, Cin), to_dtype(rand(rng, Cin, Cout, scale=0.03), dtype), rand(rng, Cout)
    assert_close(ops.linear(x, w.T, b), ref.linear(x, to_float32(w).T, b), **TOL, name=f"conv1d {dtype} {shape}")


@gpu
def test_linear_literal_and_weight_cache(ops):
    from pyclvp.ops.cuda_ops import _WEIGHTS

    x = np.array([[1.0, 2.0]], np.float32)
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    before = len(_WEIGHTS)
    assert ops.linear(x, w, np.array([0, 0, 1], np.float32)).tolist() == [[1.0, 2.0, 4.0]]
    assert ops.linear(x, w).tolist() == [[1.0, 2.0, 3.0]]  # the same upload
    assert len(_WEIGHTS) == before + 1
    assert ops.linear(x, np.asfortranarray(w)).tolist() == [[1.0, 2.0, 3.0]]  # a new array: a new upload
    del w
    assert len(_WEIGHTS) == before  # both uploads dropped with their arrays


@gpu
@hyp
@given(N=SIZES, C=SIZES, seed=SEEDS, offset=st.floats(-100, 100))
def test_hyp_norms(N, C, seed, offset):
    ops = get_ops("cuda")
    rng = np.random.default_rng(seed)
    x = rand(rng, N, C) + np.float32(offset)  # an offset tests the two passes
    g, b = rand(rng, C), rand(rng, C)
    assert_close(ops.layer_norm(x, g, b, 1e-5), ref.layer_norm(x, g, b, 1e-5), **TOL, name="layer_norm")
    assert_close(ops.rms_norm(x, g, 1e-6), ref.rms_norm(x, g, 1e-6), **TOL, name="rms_norm")


@gpu
@hyp
@given(N=SIZES, C=SIZES, seed=SEEDS)
def test_hyp_rms_norm_tortoise(N, C, seed):
    ops = get_ops("cuda")
    rng = np.random.default_rng(seed)
    x, g = rand(rng, N, C), rand(rng, C)
    x[0] = 0.0  # an all-zero row: the clamp's case
    assert_close(ops.rms_norm(x, g, 1e-8, clamp=True), ref.rms_norm(x, g, 1e-8, clamp=True), **TOL,
                 name="rms_norm (tortoise)")


@gpu
def test_rms_norm_tortoise_literal(ops):
    x, one = np.array([[3.0, 4.0], [0.0, 0.0], [3e-9, 4e-9]], np.float32), np.ones(2, np.float32)
    assert_close(ops.rms_norm(x, one, 1e-8, clamp=True), [[0.8485281, 1.1313708], [0.0, 0.0], [0.3, 0.4]],
                 atol=1e-6, name="rms_norm (tortoise)")


@gpu
@hyp
@given(B=st.integers(1, 3), G=st.integers(1, 8), cpg=st.integers(1, 9), T=SIZES, seed=SEEDS)
def test_hyp_group_norm(B, G, cpg, T, seed):
    ops = get_ops("cuda")
    rng = np.random.default_rng(seed)
    C = G * cpg
    x, g, b = rand(rng, B, C, T) + np.float32(3), rand(rng, C), rand(rng, C)
    assert_close(ops.group_norm(x, g, b, G, 1e-5), ref.group_norm(x, g, b, G, 1e-5), **TOL, name="group_norm")
    assert_close(ops.group_norm_silu(x, g, b, G, 1e-5), ref.group_norm_silu(x, g, b, G, 1e-5), **TOL,
                 name="group_norm_silu")


@gpu
def test_norms_and_activations_literal(ops):
    one, zero = np.ones(3, np.float32), np.zeros(3, np.float32)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    assert_close(ops.layer_norm(x, one, zero, 0.0), [[-1.2247449, 0.0, 1.2247449]], atol=1e-6)
    assert_close(ops.rms_norm(np.array([[3.0, 4.0]], np.float32), one[:2], 0.0), [[0.8485281, 1.1313708]], atol=1e-6)
    assert_close(ops.group_norm(x.reshape(1, 3, 1), one, zero, 1, 0.0), [[[-1.2247449], [0.0], [1.2247449]]], atol=1e-6)
    a = np.array([-3.0, -1.0, 0.5, 1.0, 2.0], np.float32)
    assert_close(ops.gelu_new(a), [-0.0036373921, -0.15880801, 0.34571401, 0.84119199, 1.9545977], atol=1e-6)
    assert_close(ops.gelu(a), [-0.0040496941, -0.15865525, 0.34573123, 0.84134475, 1.9544997], atol=1e-6)
    assert_close(ops.silu(a), ref.silu(a), atol=1e-6)
    assert_close(ops.gated_gelu(np.array([2.0, 1.0], np.float32)), [1.6826895], atol=1e-6)
    assert_close(ops.softmax(np.array([0.0, np.log(3.0)], np.float32)), [0.25, 0.75], atol=1e-7)
    assert_close(ops.softmax(np.array([MASK_MIN, MASK_MIN], np.float32)), [0.5, 0.5], atol=0)


@gpu
@hyp
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS, scale=st.sampled_from([0.01, 1.0, 5.0, 30.0]),
       axis=st.integers(-3, 2))
def test_hyp_activations_and_softmax(shape, seed, scale, axis):
    ops = get_ops("cuda")
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape, scale=scale)
    assert_close(ops.gelu_new(x), ref.gelu_new(x), **TOL, name="gelu_new")
    assert_close(ops.gelu(x), ref.gelu(x), **TOL, name="gelu")
    if shape[-1] % 2 == 0:
        assert_close(ops.gated_gelu(x), ref.gated_gelu(x), **TOL, name="gated_gelu")
    axis = axis % len(shape)
    assert_close(ops.softmax(x, axis=axis), ref.softmax(x, axis=axis), **TOL, name="softmax")


@gpu
@hyp
@given(B=st.integers(1, 3), H=st.integers(1, 3), T=SIZES, half_r=st.integers(1, 20), extra=st.integers(0, 17),
       seed=SEEDS)
def test_hyp_rotary(B, H, T, half_r, extra, seed):
    ops = get_ops("cuda")
    rng = np.random.default_rng(seed)
    R = 2 * half_r
    x = rand(rng, B, H, T, R + extra)
    cos, sin = rotary_tables(T, R)
    assert_close(ops.rotary(x, cos, sin), ref.rotary(x, cos, sin), **TOL, name="rotary")


@gpu
@hyp
@given(B=st.integers(1, 3), H=st.integers(1, 3), T=st.integers(1, 40),
       S=st.one_of(st.integers(1, 40), st.integers(120, 300)), D=st.one_of(SIZES, st.sampled_from([64, 96, 128])),
       seed=SEEDS, kind=st.sampled_from(["none", "padding", "causal", "all_dropped", "additive"]))
@example(B=1, H=2, T=1, S=250, D=64, seed=1, kind="padding")  # the decoder step's shape: 4 warps split the keys
@example(B=2, H=1, T=1, S=77, D=128, seed=2, kind="all_dropped")
def test_hyp_attention(B, H, T, S, D, seed, kind):
    ops = get_ops("cuda")
    rng = np.random.default_rng(seed)
    q, k, v = rand(rng, B, H, T, D), rand(rng, B, H, S, D), rand(rng, B, H, S, D)
    mask = attention_mask(rng, kind, B, T, S)
    got = ops.attention(q, k, v, mask, scale=D ** -0.5)  # D > 128: the reference (fallback)
    assert_close(got, ref.attention(q, k, v, mask, scale=D ** -0.5), **TOL, name=f"attention ({kind} mask, D={D})")


@gpu
@pytest.mark.parametrize("T,S", [(1, 1), (1, 600), (5, 5), (3, 300), (200, 200)])
def test_attention_causal_flag_equals_causal_mask(T, S):
    rng = np.random.default_rng(T)
    q, k, v = rand(rng, 2, 3, T, 64), rand(rng, 2, 3, S, 64), rand(rng, 2, 3, S, 64)
    got = _core.cuda.attention(q, k, v, None, 0.125, True)
    assert_close(got, ref.attention(q, k, v, attention_mask(rng, "causal", 2, T, S), 0.125), **TOL, name="causal")


@gpu
def test_attention_literal(ops):
    v = np.arange(6, dtype=np.float32).reshape(1, 1, 3, 2)  # keys' values [0,1], [2,3], [4,5]
    q = np.zeros((1, 1, 1, 2), np.float32)  # equal scores: the mean of the values
    assert_close(ops.attention(q, v, v), [[[[2.0, 3.0]]]], atol=1e-6)
    drop_last = np.array([0, 0, MASK_MIN], np.float32).reshape(1, 1, 1, 3)
    assert_close(ops.attention(q, v, v, drop_last), [[[[1.0, 2.0]]]], atol=1e-6)
    assert MAX_HEAD_DIM == 128


@gpu
@pytest.mark.parametrize("fill", [MASK_MIN, -np.inf])
def test_attention_every_key_masked_or_none(ops, fill):
    # tests/test_hardening.py's edge cases on the CUDA kernel: the mean of v, and zeros for S = 0
    rng = np.random.default_rng(3)
    q, k, v = rand(rng, 2, 2, 3, 8), rand(rng, 2, 2, 5, 8), rand(rng, 2, 2, 5, 8)
    mask = np.full((2, 1, 3, 5), fill, np.float32)
    assert_close(ops.attention(q, k, v, mask), ref.attention(q, k, v, mask), **TOL, name="every key masked")
    none = np.zeros((2, 2, 0, 8), np.float32)
    assert_close(ops.attention(q, none, none), ref.attention(q, none, none), atol=0, name="no keys")
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (10 ** 12, 2, 0, 8), (0, 0, 0, 0))
    assert _core.cuda.gelu(huge).shape == huge.shape  # zero-size work returns at once


# ----------------------------------------------------------------------------------------------
# Convolutions (on a GPU): tests/test_ops.py's conv tests, on the CUDA backend


def _conv_draw(draw, transposed):  # as tests/test_ops.py conv_shapes: valid sizes only (To >= 1)
    B, Cin, Cout = draw(st.integers(1, 3)), draw(SIZES), draw(SIZES)
    K, stride, dilation = draw(st.integers(1, 12)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    extra = draw(st.one_of(st.integers(0, 40), st.sampled_from([0, 1, 127, 128, 129, 300])))
    if transposed:
        T = 1 + extra
        op = draw(st.integers(0, max(stride, dilation) - 1))
        padding = min(draw(st.integers(0, 20)), ((T - 1) * stride + dilation * (K - 1) + op) // 2)
        return B, Cin, Cout, T, K, dict(stride=stride, padding=padding, output_padding=op, dilation=dilation)
    padding = draw(st.integers(0, 12))
    T = max(1, dilation * (K - 1) + 1 - 2 * padding) + extra
    return B, Cin, Cout, T, K, dict(stride=stride, padding=padding, dilation=dilation)


@gpu
@hyp
@given(data=st.data(), seed=SEEDS, bias=st.booleans(), transposed=st.booleans(),
       slope=st.sampled_from([None, 0.1, 0.0]), residual=st.booleans())
def test_hyp_conv1d_and_conv_transpose1d(data, seed, bias, transposed, slope, residual):
    ops = get_ops("cuda")
    B, Cin, Cout, T, K, kw = _conv_draw(data.draw, transposed)
    rng = np.random.default_rng(seed)
    x, b = rand(rng, B, Cin, T), rand(rng, Cout) if bias else None
    op = "conv_transpose1d" if transposed else "conv1d"
    w = rand(rng, *((Cin, Cout, K) if transposed else (Cout, Cin, K)), scale=0.3)
    if residual and not transposed:  # the fused skip (conv1d only)
        kw["residual"] = rand(rng, *ref.conv1d(x, w, None, **kw).shape)
    kw["leaky_slope"] = slope  # the fused input activation
    assert_close(getattr(ops, op)(x, w, b, **kw), getattr(ref, op)(x, w, b, **kw), **TOL, name=f"{op} {x.shape} {kw}")


@gpu
@hyp
@given(B=st.integers(1, 2), Cin=st.integers(1, 9), Cout=st.integers(1, 12), K=st.sampled_from([1, 3, 5]),
       L=st.integers(1, 6), hop=st.sampled_from([1, 3, 8, 40]), seed=SEEDS)
def test_hyp_location_variable_conv(B, Cin, Cout, K, L, hop, seed):
    rng = np.random.default_rng(seed)
    x, kernels, bias = rand(rng, B, Cin, L * hop), rand(rng, B, Cin, Cout, K, L, scale=0.3), rand(rng, B, Cout, L)
    assert_close(get_ops("cuda").location_variable_conv(x, kernels, bias, hop),
                 ref.location_variable_conv(x, kernels, bias, hop), **TOL, name="location_variable_conv")


@gpu
@hyp
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS, slope=st.sampled_from([0.1, 0.01, 0.0]))
def test_hyp_leaky_relu(shape, seed, slope):
    x = rand(np.random.default_rng(seed), *shape, scale=3.0)
    x.flat[: min(x.size, 3)] = [0.0, -0.0, np.nan][: min(x.size, 3)]
    got = get_ops("cuda").leaky_relu(x, slope)
    np.testing.assert_array_equal(got, ref.leaky_relu(x, slope))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(ref.leaky_relu(x, slope)))


@gpu
@pytest.mark.parametrize("op", ["conv1d", "conv_transpose1d"])
def test_conv_matches_torch_fixtures_and_literal(ops, op):
    z = np.load(Path(__file__).parent / "data" / "conv" / f"{op}.npz")
    i = 0
    while f"c{i}_x" in z:
        got = getattr(ops, op)(z[f"c{i}_x"], z[f"c{i}_w"], z.get(f"c{i}_b"), *map(int, z[f"c{i}_args"]))
        assert_close(got, z[f"c{i}_y"], **TOL, name=f"{op} case {i}")
        i += 1
    x, w = np.array([[[1.0, 2.0, 3.0, 4.0]]], np.float32), np.array([[[1.0, 10.0]]], np.float32)
    want = [[[21.0, 32.0, 43.0]]] if op == "conv1d" else [[[1, 10, 2, 20, 3, 30, 4, 40]]]
    assert getattr(ops, op)(x, w, **({} if op == "conv1d" else dict(stride=2))).tolist() == want


@gpu
@pytest.mark.parametrize("transposed", [False, True])
def test_conv_hifigan_like_shapes(ops, transposed):
    rng = np.random.default_rng(1)
    if transposed:
        x, w, kw = rand(rng, 1, 256, 90), rand(rng, 256, 128, 16, scale=0.05), dict(stride=8, padding=4)
    else:
        x, w, kw = rand(rng, 2, 128, 700), rand(rng, 128, 128, 11, scale=0.05), dict(padding=25, dilation=5)
    b = rand(rng, w.shape[1] if transposed else w.shape[0])
    op = "conv_transpose1d" if transposed else "conv1d"
    assert_close(getattr(ops, op)(x, w, b, **kw), getattr(ref, op)(x, w, b, **kw), **TOL, name=op)


# ----------------------------------------------------------------------------------------------
# The fused decoder (on a GPU)


def _prompt(name, B, P, seed=0):  # random prompt embeddings (B, P, C) at the scale of real ones
    C = load_tiny(name).config.decoder_config.hidden_size
    return rand(np.random.default_rng(seed), B, P, C, scale=0.5)


@gpu
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("B,P", [(1, 3), (1, 9), (3, 4), (6, 5), (20, 4)])  # fused norms <= 4 rows; GEMM > 16 rows
@pytest.mark.parametrize("use_graph", [True, False])
def test_fused_decoder_matches_numpy(name, B, P, use_graph):
    from pyclvp.ops.cuda_decoder import CudaDecoder

    m = load_tiny(name, "cuda")
    dec = CudaDecoder(m.decoder.params, m.config.decoder_config, use_graph=use_graph)
    p = _prompt(name, B, P)
    mask = np.ones((B, P), bool)
    mask[0, 1] = False  # one padded prompt key
    assert_close(greedy_logits(dec, p, mask=mask), greedy_logits(load_tiny(name).decoder, p, mask=mask), **TOL,
                 name=f"prefill + step logits (B={B}, graph={use_graph})")


@gpu
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("pick_on_device", [True, False])
def test_stream_latents_match_numpy(name, pick_on_device):
    """decoding.stream(latents=True) on the device decoder (its last_latents after the prefill, each step and each
    step_pick) against the NumPy decoder's."""
    from pyclvp.decoding import GenerationOptions, stream
    from pyclvp.ops.cuda_decoder import CudaDecoder

    m = load_tiny(name, "cuda")
    ref = load_tiny(name)
    dec = CudaDecoder(m.decoder.params, m.config.decoder_config, pick_on_device=pick_on_device)
    p = _prompt(name, 1, 5)
    d = m.config.decoder_config
    opts = GenerationOptions.resolve(max_new_tokens=8, min_new_tokens=8, cache_dtype="float32")
    got = list(stream(dec, p, opts, d.bos_token_id, d.eos_token_id, latents=True))
    want = list(stream(ref.decoder, p, opts, d.bos_token_id, d.eos_token_id, latents=True))
    assert [t for t, _ in got] == [t for t, _ in want]
    assert_close(np.stack([x for _, x in got]), np.stack([x for _, x in want]), **TOL, name="stream latents")


@gpu
@pytest.mark.parametrize("name", TINY)
def test_forward_matches_numpy(name):
    want, got = load_tiny(name).forward(*inputs()), load_tiny(name, "cuda").forward(*inputs())
    for field in ("logits_per_text", "text_embeds", "speech_embeds", "text_model_output", "speech_model_output"):
        assert_close(getattr(got, field), getattr(want, field), **TOL, name=field)


@gpu
@pytest.mark.parametrize("name", TINY)
def test_greedy_tokens_identical(name):
    ids, feats, mask = inputs(seed=1)
    want = load_tiny(name).generate(ids, feats, mask, max_new_tokens=12)
    got = load_tiny(name, "cuda").generate(ids, feats, mask, max_new_tokens=12)
    np.testing.assert_array_equal(got.speech_ids, want.speech_ids)
    assert_close(got.logits_per_text, want.logits_per_text, **TOL, name="logits_per_text")


@gpu
def test_half_weights_stay_half_and_match_numpy(half_checkpoint):
    folder, dtype = half_checkpoint
    want, got = load_tiny("tiny_a", folder=folder), load_tiny("tiny_a", "cuda", dtype, folder)
    p = _prompt("tiny_a", 2, 6)
    assert_close(greedy_logits(got.decoder, p), greedy_logits(want.decoder, p), **TOLERANCE["cuda", dtype],
                 name=f"{dtype} weights: decoder logits")
    assert_close(got.forward(*inputs()).logits_per_text, want.forward(*inputs()).logits_per_text,
                 **TOLERANCE["cuda", dtype], name="logits_per_text")


@gpu
@pytest.mark.parametrize("cache", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", TINY)
def test_half_kv_cache_within_its_bound(name, cache):
    dec, p = load_tiny(name, "cuda").decoder, _prompt(name, 2, 6)
    assert dec.new_state(2, 3, cache).k.dtype == (np.float16 if cache == "float16" else np.uint16)
    assert_close(greedy_logits(dec, p, cache_dtype=cache), greedy_logits(dec, p), atol=CACHE_ATOL[cache],
                 name=f"{cache} cache")


@gpu
def test_state_select_download_and_errors():
    dec, p = load_tiny("tiny_b", "cuda").decoder, _prompt("tiny_b", 2, 4)
    cfg = load_tiny("tiny_b").config.decoder_config
    ref_dec = load_tiny("tiny_b").decoder
    st, want = dec.new_state(2, 6), ref_dec.new_state(2, 6)
    assert_close(dec.prefill(p, None, st), ref_dec.prefill(p, None, want), **TOL, name="prefill")
    assert st.k.shape == (cfg.num_hidden_layers, 2, cfg.num_attention_heads, 6, cfg.head_dim)
    assert_close(st.k, want.k, **TOL, name="cache k")
    assert_close(st.v, want.v, **TOL, name="cache v")
    np.testing.assert_array_equal(st.key_mask, want.key_mask)
    rows = np.array([1, 0, 0, 1, 1])
    sel = st.select(rows)
    assert type(sel) is type(st) and sel.length == 4 and sel.batch == 5
    ids = np.array([3, 4])
    assert_close(dec.step(ids[rows], np.full(5, 2), sel), dec.step(ids, np.full(2, 2), st)[rows], atol=1e-6,
                 name="selected rows")
    other = load_tiny("tiny_a", "cuda").decoder
    with pytest.raises(ValueError, match="another decoder"):
        other.step(np.array([1, 2]), np.array([2, 2]), st)
    with pytest.raises(ValueError, match=r"select rows must lie in \[0, 2\)"):  # as every backend's select
        st.select([2])
    with pytest.raises(ValueError, match=r"rows\[0\] = 2 is outside"):  # the binding's own check
        st._session.select(st._handle, np.array([2]))
    with pytest.raises(ValueError, match="unknown cache dtype"):
        dec.new_state(1, 2, "int8")


# ----------------------------------------------------------------------------------------------
# The token choice on the device (on a GPU)

PICK_CASES = {
    "greedy": dict(),
    "greedy, eos suppressed": dict(min_new_tokens=3, temperature=0.0),  # unused (and unchecked) when greedy
    "sample": dict(do_sample=True),
    "temperature": dict(do_sample=True, temperature=0.7),
    "top_k 1": dict(do_sample=True, top_k=1),
    "top_k 7": dict(do_sample=True, top_k=7, temperature=1.3),
    "top_p": dict(do_sample=True, top_p=0.8),
    "top_k and top_p": dict(do_sample=True, top_k=20, top_p=0.5, temperature=0.9),
    "tortoise": dict(do_sample=True, top_p=0.8, temperature=0.8, repetition_penalty=2.0),
}


def _host_choices(dec, opts, logits, u):  # (variants, R): the host's tokens, and with top_p and u nudged
    """The host picker's choice, then its choices with top_p moved by 1e-4 and u by 1e-9: what float
    rounding can change. The device sums top-p's probabilities exactly (fixed point) and the draw's
    weights in another order (csrc/cuda/sampling.cu); the host's float32 cumulative sum over 8194
    tokens is itself only good to ~1e-5."""
    from pyclvp.decoding import HostPicker

    R, cfg, out = len(logits), dec.cfg, []
    for dp in ((0.0, -1e-4, 1e-4) if opts.do_sample and opts.top_p else (0.0,)):
        for du in ((0.0, -1e-9, 1e-9) if opts.do_sample else (0.0,)):
            o = dataclasses.replace(opts, top_p=min(opts.top_p + dp, 1.0) if dp else opts.top_p)
            uu = None if u is None else np.clip(u + du, 0.0, 1.0 - 1e-16)
            out.append(HostPicker(dec, o, cfg.bos_token_id, cfg.eos_token_id, R).first(logits, None, uu))
    return np.stack(out)


@gpu
@pytest.mark.parametrize("case", PICK_CASES)
@pytest.mark.parametrize("name", TINY)
def test_device_choice_equals_host(name, case):
    """The first choice from given logits (ties from quantized logits, -inf, narrow and wide spreads):
    the host's token, or where a cumulative sum lies within rounding of its threshold, one of the
    tokens the host picks with the threshold nudged; without top-p always the host's token."""
    from pyclvp.decoding import GenerationOptions
    from pyclvp.ops.cuda_decoder import DevicePicker

    dec = load_tiny(name, "cuda").decoder
    V, R, cfg = dec.cfg.vocab_size, 6, dec.cfg
    opts = GenerationOptions.resolve(**PICK_CASES[case])
    rng = np.random.default_rng(0)
    exact = 0
    for trial in range(8):
        logits = rand(rng, R, V, scale=[0.5, 3.0, 10.0][trial % 3])
        if trial % 2:
            logits = np.round(logits * 2) / 2  # many ties
        logits[0, rng.integers(0, V, 5)] = -np.inf
        u = rng.random(R) if opts.do_sample else None
        got = DevicePicker(dec, opts, cfg.bos_token_id, cfg.eos_token_id, R).first(logits, dec.new_state(R, 2), u)
        host = _host_choices(dec, opts, logits, u)
        assert (host == got).any(0).all(), f"{case}, trial {trial}: device {got}, host {host}"
        exact += (host[0] == got).sum()
    assert exact >= (0.9 if opts.top_p else 1.0) * 8 * R, f"{case}: only {exact} of {8 * R} choices equal the host's"


@gpu
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("case", ["greedy, eos suppressed", "top_k 7", "tortoise"])
def test_sampled_generation_identical_to_numpy(name, case):
    """Whole generations (the device choice step after step, seen tokens carried through select);
    with top-p a rounding flip (see above) is possible in principle but has p < 1e-2 here."""
    ids, feats, mask = inputs(seed=2)
    kw = dict(PICK_CASES[case], max_new_tokens=10, num_return_sequences=3, batch_size=2, seed=5)
    want = load_tiny(name).generate(ids, feats, mask, **kw)
    got = load_tiny(name, "cuda").generate(ids, feats, mask, **kw)
    np.testing.assert_array_equal(got.speech_ids, want.speech_ids)


@gpu
@pytest.mark.parametrize("backend", ["numpy", "cuda"])
def test_overflowed_logits_are_refused_on_both_sides(backend):
    """A temperature that overflows float32 logits leaves nothing to draw from: the host's sample() and the
    device's choice (out = -1, checked by the binding) refuse it alike."""
    ids, feats, mask = inputs(seed=2)
    with pytest.raises(ValueError, match="cannot sample row 0: its processed logits hold NaN or overflowed"):
        load_tiny("tiny_a", backend).generate(ids, feats, mask, do_sample=True, temperature=1e-45, max_new_tokens=3,
                                              seed=0)


@gpu
def test_device_choice_rejects_bad_arguments():
    dec = load_tiny("tiny_b", "cuda").decoder
    V, session, st = dec.cfg.vocab_size, dec._session, dec.new_state(2, 4)
    good = dict(penalty=1.0, suppress=-1, do_sample=True, temperature=1.0, top_k=0, top_p=None)
    logits, u = np.zeros((2, V), np.float32), np.full(2, 0.5)
    for change, match in [(dict(penalty=0.0), "penalty must be"), (dict(temperature=-1.0), "temperature must be"),
                          (dict(suppress=V), "suppress must be"), (dict(top_k=-2), "top_k must be"),
                          (dict(top_p=0.0), "top_p must lie")]:
        with pytest.raises(ValueError, match=match):
            session.pick_first(st._handle, logits, 0, dict(good, **change), u)
    with pytest.raises(ValueError, match="missing 'top_p'"):
        session.pick_first(st._handle, logits, 0, {k: v for k, v in good.items() if k != "top_p"}, u)
    with pytest.raises(ValueError, match=r"u\[1\] = 1 is outside"):
        session.pick_first(st._handle, logits, 0, good, np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="u must be a C-contiguous float64"):
        session.pick_first(st._handle, logits, 0, good, u.astype(np.float32))
    with pytest.raises(ValueError, match="start token"):
        session.pick_first(st._handle, logits, V, good, u)
    with pytest.raises(ValueError, match="logits has shape"):
        session.pick_first(st._handle, logits[:, :-1].copy(), 0, good, u)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        session.step_pick(st._handle, np.array([0, V]), np.array([1, 1]), good, u)
