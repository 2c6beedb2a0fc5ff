"""The C++ CPU kernels against the NumPy reference ops, on every ISA this machine can run.

Each op of pyclvp/ops/numpy_ops.py is run through CpuOps (pyclvp/ops/cpu_ops.py -> pyclvp._core)
with hypothesis-drawn shapes (odd sizes, sizes around the SIMD widths, strided inputs) and compared
with the reference at TOLERANCE["cpu", dtype]. Half-precision weights are compared with the
reference on the same weights widened to float32: the kernels widen on load and accumulate in
float32, so only the summation order differs and float32's 1e-4 bound holds for them too.
Every property has a sibling test with literal values; the bindings' argument checks have theirs.
The convolution section also runs the NumPy reference itself against torch's values (tests/data/conv,
tools/ref_conv.py) and checks that every backend refuses bad arguments with the same ValueError.
"""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume as hypothesis_assume
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import (MASK_MIN, MAX_EXAMPLES, TOLERANCE, assert_close, attention_mask, isa_params, rand, rotary_tables,
                      using)
from pyclvp import _core
from pyclvp.ops import numpy_ops as ref
from pyclvp.ops.cpu_ops import CpuOps
from pyclvp.io.half import Bf16Array, as_bf16, to_dtype, to_float32
from pyclvp.io.q8 import BLOCK, Q8Matrix, quantize_q8

ops = CpuOps()
hyp = settings(deadline=None, max_examples=MAX_EXAMPLES)
ISA = pytest.mark.parametrize("isa", isa_params())
TOL = TOLERANCE["cpu", "float32"]
# sizes around the SIMD widths (8, 16), the kernels' tiles and their ragged ends
SIZES = st.one_of(st.integers(1, 70), st.sampled_from([1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 127, 129, 257]))
SEEDS = st.integers(0, 2**32 - 1)


def strided(rng, *shape):  # a non-contiguous view with these values' shape (every other column)
    full = rand(rng, *shape[:-1], 2 * shape[-1])
    return full[..., ::2]


# ----------------------------------------------------------------------------------------------
# linear


@ISA
@hyp
@given(N=SIZES, Cin=SIZES, Cout=SIZES, seed=SEEDS, dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
       conv1d=st.booleans(), bias=st.booleans(), strided_x=st.booleans())
def test_hyp_linear(isa, N, Cin, Cout, seed, dtype, conv1d, bias, strided_x):
    rng = np.random.default_rng(seed)
    x = strided(rng, N, Cin) if strided_x else rand(rng, N, Cin)
    w = to_dtype(rand(rng, Cin, Cout) if conv1d else rand(rng, Cout, Cin), dtype)  # Conv1D stores (Cin, Cout)
    w = w.T if conv1d else w  # (Cout, Cin) either way; Conv1D's is a Fortran-order view
    b = rand(rng, Cout) if bias else None
    with using(isa):
        got = ops.linear(x, w, b)
    assert_close(got, ref.linear(x, to_float32(w), b), **TOLERANCE["cpu", dtype], name=f"linear {dtype}")


@ISA
@pytest.mark.parametrize("shape", [(1, 1024, 1024), (1, 1024, 4096), (16, 1024, 4096), (3, 4096, 1024), (2, 1024, 8194),
                                   (550, 257, 200), (515, 96, 33)])  # (2 x) 1030-1100 rows: the encoders' GEMM path
def test_linear_decoder_shapes(isa, shape):
    N, Cin, Cout = shape
    rng = np.random.default_rng(0)
    x, w, b = rand(rng, 2, N, Cin), rand(rng, Cin, Cout, scale=0.03), rand(rng, Cout)  # leading dims flattened
    with using(isa):
        assert_close(ops.linear(x, w.T, b), ref.linear(x, w.T, b), **TOL, name="conv1d")
        assert_close(ops.linear(x, to_dtype(w.T.copy(), "bfloat16"), b),
                     ref.linear(x, to_float32(to_dtype(w.T.copy(), "bfloat16")), b), **TOL, name="bf16")


def test_linear_literal():
    x = np.array([[1.0, 2.0]], np.float32)
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    for isa in _core.build_info()["isas_supported"]:
        with using(isa):
            assert ops.linear(x, w, np.array([0, 0, 1], np.float32)).tolist() == [[1.0, 2.0, 4.0]]
            assert ops.linear(x, np.asfortranarray(w)).tolist() == [[1.0, 2.0, 3.0]]


# int8 weights (linear_q8): against the reference on the same dequantized weights, so only the summation order
# differs and float32's bound holds. Cin is a multiple of 32 (one scale per block; the kernel refuses others).
Q8_CIN = st.one_of(st.integers(1, 6).map(lambda b: b * BLOCK), st.sampled_from([1024, 4096]))


@ISA
@hyp
@given(N=st.one_of(st.integers(1, 20), st.sampled_from([16, 33, 70])), Cin=Q8_CIN, Cout=SIZES, seed=SEEDS,
       bias=st.booleans(), strided_x=st.booleans(), zero_block=st.booleans())
def test_hyp_linear_q8(isa, N, Cin, Cout, seed, bias, strided_x, zero_block):
    rng = np.random.default_rng(seed)
    x = strided(rng, N, Cin) if strided_x else rand(rng, N, Cin)
    w = rand(rng, Cout, Cin, scale=0.02)
    if zero_block:
        w[:, :BLOCK] = 0  # an all-zero block: scale 0, q 0
    q, s = quantize_q8(w)
    b = rand(rng, Cout) if bias else None
    with using(isa):
        got = ops.linear_q8(x, q, s, b)
        assert_close(ops.linear(x, Q8Matrix(q, s), b), got, atol=0, name="linear on a Q8Matrix")
    assert_close(got, ref.linear_q8(x, q, s, b), **TOL, name="linear_q8")


def test_linear_q8_literal():
    x = np.arange(32, dtype=np.float32)[None] / 32  # (1, 32)
    q = np.zeros((2, 32), np.int8)
    q[0, 0], q[0, 31], q[1, :] = 127, -127, 1
    s = np.array([[0.5], [0.25]], np.float32)  # W row 0: 63.5 at k=0, -63.5 at k=31; row 1: 0.25 everywhere
    for isa in _core.build_info()["isas_supported"]:
        with using(isa):
            assert ops.linear_q8(x, q, s, np.array([1, 0], np.float32)).tolist() == [[1 - 63.5 * 31 / 32, 0.25 * 15.5]]


def test_linear_q8_same_result_for_any_thread_count():
    rng = np.random.default_rng(0)
    x, (q, s) = rand(rng, 16, 256), quantize_q8(rand(rng, 700, 256))
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        one = ops.linear_q8(x, q, s)
        _core.set_num_threads(3)
        three = ops.linear_q8(x, q, s)
    finally:
        _core.set_num_threads(before)
    assert np.array_equal(one, three)


def test_linear_same_result_for_any_thread_count():
    rng = np.random.default_rng(0)
    x, w = rand(rng, 5, 300), rand(rng, 700, 300)
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        one = ops.linear(x, w)
        _core.set_num_threads(3)
        three = ops.linear(x, w)
    finally:
        _core.set_num_threads(before)
    assert np.array_equal(one, three)


# transpose_weight: the decoder session's (Cout, Cin) copy of a Conv1D weight; the bits are copied as they are
@ISA
@hyp
@given(Cin=SIZES, Cout=SIZES, seed=SEEDS, dtype=st.sampled_from(["float32", "float16", "uint16"]))
def test_hyp_transpose_weight(isa, Cin, Cout, seed, dtype):
    w = np.random.default_rng(seed).integers(0, 2**16, (Cin, Cout), np.uint16)  # any bits: NaN and inf patterns too
    w = w.view(np.float16) if dtype == "float16" else w.astype(np.uint32).view(np.float32) if dtype == "float32" else w
    with using(isa):
        got = _core.transpose_weight(w)
    assert got.dtype == w.dtype and got.flags.c_contiguous
    assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(w.T).view(np.uint8))


def test_transpose_weight_refuses_bad_input():
    with pytest.raises(ValueError, match="C-contiguous 2-D"):
        _core.transpose_weight(np.zeros((4, 6), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="C-contiguous 2-D"):
        _core.transpose_weight(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="float32, float16 or uint16"):
        _core.transpose_weight(np.zeros((4, 4), np.float64))
    with pytest.raises(ValueError, match="numpy array"):
        _core.transpose_weight([[1.0]])
    assert _core.transpose_weight(np.zeros((0, 5), np.float32)).shape == (5, 0)


# ----------------------------------------------------------------------------------------------
# normalizations


@ISA
@hyp
@given(N=SIZES, C=SIZES, seed=SEEDS, strided_x=st.booleans(), offset=st.floats(-100, 100))
def test_hyp_layer_norm(isa, N, C, seed, strided_x, offset):
    rng = np.random.default_rng(seed)
    x = (strided(rng, N, C) if strided_x else rand(rng, N, C)) + np.float32(offset)  # an offset tests the two passes
    g, b = rand(rng, C), rand(rng, C)
    # Both sides lose float32's resolution at |x| ~ offset (ulp ~ 6e-8 |offset|) in x - mean: the bound grows
    # with it. A one-pass E[x^2] - E[x]^2 would miss it by orders of magnitude at |offset| = 100.
    tol = dict(atol=TOL["atol"] * (1 + abs(offset) / 50), rtol=TOL["rtol"])
    with using(isa):
        assert_close(ops.layer_norm(x, g, b, 1e-5), ref.layer_norm(x, g, b, 1e-5), **tol, name="layer_norm")


@ISA
@hyp
@given(N=SIZES, C=SIZES, seed=SEEDS)
@pytest.mark.parametrize("clamp, eps", [(False, 1e-6), (True, 1e-8)], ids=["transformers", "tortoise"])
def test_hyp_rms_norm(isa, clamp, eps, N, C, seed):
    rng = np.random.default_rng(seed)
    x, g = rand(rng, 2, N, C), rand(rng, C)
    x[0, 0] = 0.0  # an all-zero row: the clamp's (or the epsilon's) case
    with using(isa):
        assert_close(ops.rms_norm(x, g, eps, clamp=clamp), ref.rms_norm(x, g, eps, clamp=clamp), **TOL,
                     name="rms_norm")


def test_rms_norm_styles_literal():
    # [3, 4]: |x| = 5, RMS = 5 / sqrt(2); transformers adds eps inside the root, Tortoise clamps the RMS at eps
    x, one = np.array([[3.0, 4.0], [0.0, 0.0], [3e-9, 4e-9]], np.float32), np.ones(2, np.float32)
    want_t = [[0.8485281, 1.1313708], [0.0, 0.0], [0.3, 0.4]]  # row 3: RMS 3.5e-9 < 1e-8, so x / 1e-8
    for isa in _core.build_info()["isas_supported"]:
        with using(isa):
            assert_close(ops.rms_norm(x, one, 1e-8, clamp=True), want_t, atol=1e-6, name="tortoise rms_norm")
            assert_close(ops.rms_norm(x[:1], one, 1.0), [[3 / np.sqrt(13.5), 4 / np.sqrt(13.5)]], atol=1e-6,
                         name="transformers rms_norm")
    assert_close(ref.rms_norm(x, one, 1e-8, clamp=True), want_t, atol=1e-6, name="reference tortoise rms_norm")


@ISA
@hyp
@given(B=st.integers(1, 3), G=st.integers(1, 8), cpg=st.integers(1, 9), T=SIZES, seed=SEEDS)
def test_hyp_group_norm(isa, B, G, cpg, T, seed):
    rng = np.random.default_rng(seed)
    C = G * cpg
    x, g, b = rand(rng, B, C, T) + np.float32(3), rand(rng, C), rand(rng, C)
    with using(isa):
        assert_close(ops.group_norm(x, g, b, G, 1e-5), ref.group_norm(x, g, b, G, 1e-5), **TOL, name="group_norm")


@ISA
@hyp
@given(B=st.integers(1, 3), G=st.integers(1, 8), cpg=st.integers(1, 9), T=SIZES, seed=SEEDS)
def test_hyp_group_norm_silu(isa, B, G, cpg, T, seed):
    rng = np.random.default_rng(seed)
    C = G * cpg
    x, g, b = rand(rng, B, C, T, scale=3.0), rand(rng, C, scale=3.0), rand(rng, C)
    with using(isa):
        got = ops.group_norm_silu(x, g, b, G, 1e-5)
    assert_close(got, ref.group_norm_silu(x, g, b, G, 1e-5), **TOL, name="group_norm_silu")


@ISA
@hyp
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS)
def test_hyp_silu(isa, shape, seed):
    x = rand(np.random.default_rng(seed), *shape, scale=8.0)
    x.flat[: min(x.size, 4)] = [0.0, -100.0, 100.0, -30.0][: min(x.size, 4)]
    with using(isa):
        assert_close(ops.silu(x), ref.silu(x), **TOL, name="silu")


@ISA
@hyp
@given(B=st.integers(1, 2), Cin=st.integers(1, 9), Cout=st.integers(1, 11), K=st.sampled_from([1, 3, 5]),
       L=st.integers(1, 5), hop=st.one_of(st.integers(1, 20), st.sampled_from([32, 40, 64])), seed=SEEDS)
def test_hyp_location_variable_conv(isa, B, Cin, Cout, K, L, hop, seed):
    rng = np.random.default_rng(seed)
    x, kernels, bias = rand(rng, B, Cin, L * hop), rand(rng, B, Cin, Cout, K, L), rand(rng, B, Cout, L)
    with using(isa):
        got = ops.location_variable_conv(x, kernels, bias, hop)
    assert_close(got, ref.location_variable_conv(x, kernels, bias, hop), **TOL, name="location_variable_conv")


def test_norms_literal():
    one, zero = np.ones(3, np.float32), np.zeros(3, np.float32)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    for isa in _core.build_info()["isas_supported"]:
        with using(isa):
            assert_close(ops.layer_norm(x, one, zero, 0.0), [[-1.2247449, 0.0, 1.2247449]], atol=1e-6)
            assert_close(ops.rms_norm(np.array([[3.0, 4.0]], np.float32), one[:2], 0.0), [[0.8485281, 1.1313708]],
                         atol=1e-6)
            assert_close(ops.group_norm(x.reshape(1, 3, 1), one, zero, 1, 0.0), [[[-1.2247449], [0.0], [1.2247449]]],
                         atol=1e-6)


# ----------------------------------------------------------------------------------------------
# activations and softmax


@ISA
@hyp
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS, scale=st.sampled_from([0.01, 1.0, 5.0, 30.0]))
def test_hyp_activations(isa, shape, seed, scale):
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape, scale=scale)
    with using(isa):
        assert_close(ops.gelu_new(x), ref.gelu_new(x), **TOL, name="gelu_new")
        assert_close(ops.gelu(x), ref.gelu(x), **TOL, name="gelu")
        if shape[-1] % 2 == 0:
            assert_close(ops.gated_gelu(x), ref.gated_gelu(x), **TOL, name="gated_gelu")


def test_activations_literal():
    x = np.array([-3.0, -1.0, 0.5, 1.0, 2.0], np.float32)
    for isa in _core.build_info()["isas_supported"]:
        with using(isa):
            assert_close(ops.gelu_new(x), [-0.0036373921, -0.15880801, 0.34571401, 0.84119199, 1.9545977], atol=1e-6)
            assert_close(ops.gelu(x), [-0.0040496941, -0.15865525, 0.34573123, 0.84134475, 1.9544997], atol=1e-6)
            assert_close(ops.gated_gelu(np.array([2.0, 1.0], np.float32)), [1.6826895], atol=1e-6)


@hyp
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS, scale=st.sampled_from([0.01, 1.0, 30.0, 1e4]))
def test_hyp_silu(shape, seed, scale):
    # no kernel yet (the diffusion decoder's): the reference against x * sigmoid(x) in float64, and every backend
    x = rand(np.random.default_rng(seed), *shape, scale=scale)
    x64 = x.astype(np.float64)
    want = x64 / (1 + np.exp(np.clip(-x64, -700, 700)))
    assert_close(ref.silu(x), want, atol=1e-6, rtol=1e-6, name="silu")
    assert_close(ops.silu(x), ref.silu(x), **TOL, name="silu")


def test_silu_literal():
    x = np.array([-100.0, -3.0, -1.0, 0.0, 0.5, 2.0, 100.0], np.float32)
    assert_close(ref.silu(x), [-3.7200760e-42, -0.14227763, -0.26894142, 0.0, 0.31122968, 1.7615942, 100.0], atol=1e-6)


@ISA
@hyp
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS, scale=st.sampled_from([1.0, 20.0, 1e4]),
       axis=st.integers(-3, 2))
def test_hyp_softmax(isa, shape, seed, scale, axis):
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape, scale=scale)
    axis = axis % len(shape)
    with using(isa):
        assert_close(ops.softmax(x, axis=axis), ref.softmax(x, axis=axis), **TOL, name="softmax")


def test_softmax_literal():
    for isa in _core.build_info()["isas_supported"]:
        with using(isa):
            assert_close(ops.softmax(np.array([0.0, np.log(3.0)], np.float32)), [0.25, 0.75], atol=1e-7)
            assert_close(ops.softmax(np.array([MASK_MIN, MASK_MIN], np.float32)), [0.5, 0.5], atol=0)


def test_nan_spreads_as_in_the_reference():
    """A NaN score makes its whole softmax row NaN, and a NaN query its attention row, as in NumPy (the
    kernels' exp once clamped NaN to a finite value: softmax([nan, 1]) was [0.5, 0.5])."""
    x = np.array([[np.nan, 1.0], [0.0, 1.0]], np.float32)
    q, k = np.ones((1, 1, 2, 8), np.float32), np.linspace(-1, 1, 24, dtype=np.float32).reshape(1, 1, 3, 8)
    q[0, 0, 0, 3] = np.nan
    for isa in _core.build_info()["isas_supported"]:
        with using(isa):
            for got, want in ((ops.softmax(x), ref.softmax(x)), (ops.attention(q, k, k), ref.attention(q, k, k))):
                np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
                assert np.isnan(got).any() and not np.isnan(got[..., -1, :]).any()


# ----------------------------------------------------------------------------------------------
# attention


@ISA
@hyp
@given(B=st.integers(1, 3), H=st.integers(1, 3), T=SIZES, half_r=st.integers(1, 20), extra=st.integers(0, 17),
       seed=SEEDS)
def test_hyp_rotary(isa, B, H, T, half_r, extra, seed):
    rng = np.random.default_rng(seed)
    R = 2 * half_r
    x = rand(rng, B, H, T, R + extra)
    cos, sin = rotary_tables(T, R)
    with using(isa):
        assert_close(ops.rotary(x, cos, sin), ref.rotary(x, cos, sin), **TOL, name="rotary")


@ISA
@hyp
@given(B=st.integers(1, 3), H=st.integers(1, 3), T=st.integers(1, 40), S=st.one_of(st.integers(1, 40), st.integers(120, 300)),
       D=SIZES, seed=SEEDS, kind=st.sampled_from(["none", "padding", "causal", "all_dropped", "additive"]))
def test_hyp_attention(isa, B, H, T, S, D, seed, kind):
    rng = np.random.default_rng(seed)
    q, k, v = rand(rng, B, H, T, D), rand(rng, B, H, S, D), rand(rng, B, H, S, D)
    mask = attention_mask(rng, kind, B, T, S)
    scale = D ** -0.5
    with using(isa):
        got = ops.attention(q, k, v, mask, scale=scale)
    assert_close(got, ref.attention(q, k, v, mask, scale=scale), **TOL, name=f"attention ({kind} mask)")


@ISA
@hyp
@given(B=st.integers(1, 3), H=st.integers(1, 4), T=st.integers(1, 40), S=st.one_of(st.integers(1, 40), st.integers(120, 300)),
       D=SIZES, seed=SEEDS, mb=st.booleans(), mt=st.booleans(), drop=st.booleans())
def test_hyp_attention_per_head_mask(isa, B, H, T, S, D, seed, mb, mt, drop):
    """A per-head additive mask (B|1, H, T|1, S): the diffusion decoder's relative-position bias is (1, H, T, T)."""
    rng = np.random.default_rng(seed)
    q, k, v = rand(rng, B, H, T, D), rand(rng, B, H, S, D), rand(rng, B, H, S, D)
    mask = rand(rng, B if mb else 1, H, T if mt else 1, S)  # (B|1, H, T|1, S)
    if drop:  # some keys dropped in some heads, as an additive finfo.min
        mask = np.where(rng.random(mask.shape) < 0.3, MASK_MIN, mask).astype(np.float32)
    with using(isa):
        got = ops.attention(q, k, v, mask, scale=D ** -0.5)
    assert_close(got, ref.attention(q, k, v, mask, scale=D ** -0.5), **TOL, name="attention (per-head mask)")


@ISA
@pytest.mark.parametrize("T,S", [(1, 1), (5, 5), (3, 300), (200, 200)])
def test_attention_causal_flag_equals_causal_mask(isa, T, S):
    rng = np.random.default_rng(T)
    q, k, v = rand(rng, 2, 3, T, 16), rand(rng, 2, 3, S, 16), rand(rng, 2, 3, S, 16)
    with using(isa):
        got = _core.attention(q, k, v, None, 0.25, True)
    assert_close(got, ref.attention(q, k, v, attention_mask(rng, "causal", 2, T, S), 0.25), **TOL, name="causal")


@ISA
@hyp
@given(H=st.integers(1, 4), T=st.integers(1, 80), D=SIZES, seed=SEEDS, batch=st.integers(1, 2))
def test_hyp_attention_mask_by_strides(isa, H, T, D, seed, batch):
    """Operands passed by their strides: q, k, v as views of one fused (B, T, H, 3, D) projection (the diffusion
    decoder's qkv), and the mask a sliding window over one vector per head (row t starts one element before row
    t - 1, as its relative-position bias), broadcast over the batch; none of them copied."""
    rng = np.random.default_rng(seed)
    q, k, v = rand(rng, batch, T, H, 3, D).transpose(3, 0, 2, 1, 4)  # (B, H, T, D) each, rows of D contiguous
    u = rand(rng, H, 2 * T - 1)
    window = np.lib.stride_tricks.as_strided(u[:, T - 1:], (1, H, T, T), (0, u.strides[0], -4, 4), writeable=False)
    with using(isa):
        got = _core.attention(q, k, v, window, D ** -0.5, False)
    assert_close(got, ref.attention(q, k, v, np.ascontiguousarray(window), D ** -0.5), **TOL, name="strided mask")


def test_attention_operand_rows_must_be_contiguous():
    q = np.zeros((1, 1, 4, 8), np.float32)
    with pytest.raises(ValueError, match="mask must have contiguous rows"):
        _core.attention(q, q, q, np.zeros((1, 1, 4, 4), np.float32).transpose(0, 1, 3, 2), 1.0, False)
    with pytest.raises(ValueError, match="k must have contiguous rows"):
        _core.attention(q, np.zeros((1, 1, 8, 4), np.float32).transpose(0, 1, 3, 2), q, None, 1.0, False)


def test_attention_literal():
    v = np.arange(6, dtype=np.float32).reshape(1, 1, 3, 2)  # keys' values [0,1], [2,3], [4,5]
    q = np.zeros((1, 1, 1, 2), np.float32)  # equal scores: the mean of the values
    for isa in _core.build_info()["isas_supported"]:
        with using(isa):
            assert_close(ops.attention(q, v, v), [[[[2.0, 3.0]]]], atol=1e-6)
            drop_last = np.array([0, 0, MASK_MIN], np.float32).reshape(1, 1, 1, 3)
            assert_close(ops.attention(q, v, v, drop_last), [[[[1.0, 2.0]]]], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# the bindings refuse bad arguments with a ValueError naming the argument


@pytest.mark.parametrize("call,match", [
    (lambda: _core.linear(np.zeros((2, 3), np.float64), np.zeros((4, 3), np.float32)), "x must be float32"),
    (lambda: _core.linear(np.zeros((2, 3), np.float32)[:, ::2], np.zeros((4, 2), np.float32)), "x must be C-contiguous"),
    (lambda: _core.linear(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)), r"w has shape \(4, 5\)"),
    (lambda: _core.linear(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.int32)), "w must be float32, float16 or uint16"),
    (lambda: _core.linear(np.zeros((2, 3), np.float32), np.zeros((4, 6), np.float32)[:, ::2]), "w must be C- or Fortran"),
    (lambda: _core.linear(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), np.zeros(5, np.float32)),
     r"b has shape \(5,\)"),
    (lambda: _core.linear(np.zeros(3, np.float32), np.zeros((4, 3), np.float32)), "x must have 2 dimensions"),
    (lambda: _core.linear([[1.0]], np.zeros((1, 1), np.float32)), "x must be a numpy array"),
    (lambda: _core.linear(np.zeros((2, 32), np.float32), np.zeros((4, 32), np.int8)), "w must be float32, float16 or"),
    (lambda: _core.linear_q8(np.zeros((2, 32), np.float32), np.zeros((4, 32), np.float32), np.zeros((4, 1), np.float32)),
     "q must be a 2-D numpy int8 array"),
    (lambda: _core.linear_q8(np.zeros((2, 48), np.float32), np.zeros((4, 48), np.int8), np.zeros((4, 1), np.float32)),
     "Cin to be a multiple of 32"),
    (lambda: _core.linear_q8(np.zeros((2, 32), np.float32), np.zeros((4, 64), np.int8)[:, ::2], np.zeros((4, 1), np.float32)),
     "q must be C-contiguous"),
    (lambda: _core.linear_q8(np.zeros((2, 64), np.float32), np.zeros((4, 64), np.int8), np.zeros((4, 1), np.float32)),
     r"q scale has shape \(4, 1\), expected dimension 1 = 2"),
    (lambda: _core.linear_q8(np.zeros((2, 32), np.float32), np.zeros((4, 32), np.int8), np.zeros((4, 1), np.float64)),
     "q scale must be float32"),
    (lambda: _core.linear_q8(np.zeros((2, 32), np.float32), np.zeros((4, 32), np.int8), None), "scale is missing"),
    (lambda: _core.linear_q8(np.zeros((2, 64), np.float32), np.zeros((4, 32), np.int8), np.zeros((4, 1), np.float32)),
     r"q has shape \(4, 32\), expected \(4, 64\)"),
    (lambda: _core.layer_norm(np.zeros((2, 3), np.float32), np.zeros(4, np.float32), np.zeros(3, np.float32), 1e-5),
     r"g has shape \(4,\)"),
    (lambda: _core.group_norm(np.zeros((1, 6, 2), np.float32), np.zeros(6, np.float32), np.zeros(6, np.float32), 4, 1e-5),
     "groups must"),
    (lambda: _core.gated_gelu(np.zeros((2, 3), np.float32)), "must be even"),
    (lambda: _core.softmax(np.zeros((2, 0), np.float32)), "must not be empty"),
    (lambda: _core.rotary(np.zeros((1, 2, 4), np.float32), np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)),
     "must be even"),
    (lambda: _core.attention(np.zeros((1, 1, 2, 4), np.float32), np.zeros((1, 1, 3, 4), np.float32),
                             np.zeros((1, 1, 2, 4), np.float32)), r"v has shape"),
    (lambda: _core.attention(np.zeros((1, 1, 2, 4), np.float32), np.zeros((1, 1, 3, 4), np.float32),
                             np.zeros((1, 1, 3, 4), np.float32), np.zeros((1, 2, 2, 3), np.float32)), r"mask has shape"),
    (lambda: _core.location_variable_conv(np.zeros((1, 2, 6), np.float32), np.zeros((1, 2, 3, 3, 2), np.float32),
                                          np.zeros((1, 3, 2), np.float32), 4), r"T = L \* hop"),
    (lambda: _core.location_variable_conv(np.zeros((1, 2, 6), np.float32), np.zeros((1, 2, 3, 3, 2), np.float32),
                                          np.zeros((1, 3, 3), np.float32), 3), r"bias has shape"),
    (lambda: _core.set_num_threads(0), r"n must be in \[1, 256\]"),
])
def test_bindings_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_core_builds_messages_without_iostreams():
    """csrc/common/check.h's rule: messages are built with concat(). A number put into an ostream is formatted
    by the locale's num_put facet, which crashed every message with a number in it where the process held two
    copies of libstdc++ (seen on a GPU machine's image, Ubuntu 24.04 / GCC 13; bench/RESULTS.md)."""
    csrc = Path(__file__).resolve().parents[1] / "csrc"
    sources = [p for p in sorted(csrc.rglob("*")) if p.suffix in (".h", ".cc", ".cu", ".cuh")]
    assert sources
    for path in sources:
        text = path.read_text()
        for banned in ("<sstream>", "<iostream>", "<ostream>", "stringstream", "std::cout", "std::cerr"):
            assert banned not in text, f"csrc/{path.relative_to(csrc)}: {banned}; build the message with concat()"


# ----------------------------------------------------------------------------------------------
# half-precision weights in NumPy (pyclvp/io/half.py)


def test_bf16array_views_keep_bits_and_arithmetic_widens():
    w = to_dtype(np.array([[1.0, -2.5], [3.0, 0.15625]], np.float32), "bfloat16")
    assert isinstance(w, Bf16Array) and w.dtype == np.uint16
    assert isinstance(w.T, Bf16Array) and isinstance(w[0], Bf16Array) and isinstance(w[[1, 0]], Bf16Array)
    assert w.view(np.ndarray).tolist() == [[0x3F80, 0xC020], [0x4040, 0x3E20]]  # exact bfloat16 bits
    x = np.array([1.0, 1.0], np.float32)
    assert (x @ w.T).tolist() == [-1.5, 3.15625]  # matmul sees the values, not the bits
    assert (w + 0).tolist() == [[1.0, -2.5], [3.0, 0.15625]]
    assert w.astype(np.float32).tolist() == [[1.0, -2.5], [3.0, 0.15625]]
    assert np.dot(x, w).tolist() == [4.0, -2.34375]  # non-layout np functions widen too
    assert np.concatenate([w, w]).dtype == np.uint16  # layout functions keep the bits
    assert to_float32(as_bf16(np.array([0x7F80], np.uint16))).tolist() == [np.inf]


def test_prepare_weight_keeps_matrices_in_the_storage_dtype_without_copies():
    m = np.ones((4, 3), np.float16)
    assert ops.prepare_weight("w", m, "float16") is m
    bits = as_bf16(np.zeros((4, 3), np.uint16))
    assert ops.prepare_weight("w", bits, "bfloat16") is bits
    assert isinstance(ops.prepare_weight("w", np.ones((4, 3), np.float32), "bfloat16"), Bf16Array)
    assert ops.prepare_weight("b", np.ones(3, np.float16), "float16").dtype == np.float32  # vectors widen
    assert ops.prepare_weight("logit_scale", np.float16(2.5), "float16").dtype == np.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        ops.prepare_weight("w", m, "int8")


def test_unusable_pyclvp_isa_falls_back_with_a_warning(tmp_path):
    import subprocess
    import sys

    code = "import warnings; warnings.simplefilter('error'); from pyclvp.ops import get_ops; get_ops('cpu')"
    env = dict(__import__("os").environ, PYCLVP_ISA="sse9")
    # cwd: not the checkout, whose pyclvp/ (no built _core) `python -c` would import first
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "PYCLVP_ISA='sse9' is not usable here" in proc.stderr


# ----------------------------------------------------------------------------------------------
# convolutions (B, C, T): conv1d, conv_transpose1d, leaky_relu, interpolate_linear


def conv_backend_params():  # the NumPy reference, then the C++ kernels on every ISA (skipped with the reason)
    return [pytest.param("numpy", id="numpy")] + [pytest.param(f"cpu-{p.values[0]}", id=f"cpu-{p.values[0]}",
                                                                marks=p.marks) for p in isa_params()]


CONV_BACKENDS = pytest.mark.parametrize("backend", conv_backend_params())
KERNEL_BACKENDS = pytest.mark.parametrize("backend", conv_backend_params()[1:])  # compared with the reference


def run_op(backend, name, *args, **kwargs):
    if backend == "numpy":
        return getattr(ref, name)(*args, **kwargs)
    with using(backend.split("-", 1)[1]):
        return getattr(ops, name)(*args, **kwargs)


def fixture_cases(op):  # tests/data/conv/<op>.npz (tools/ref_conv.py): [(x, w, b, args, y)]
    z = np.load(Path(__file__).parent / "data" / "conv" / f"{op}.npz")
    assert int(z["version"]) == 1
    cases, i = [], 0
    while f"c{i}_x" in z:
        cases.append((z[f"c{i}_x"], z.get(f"c{i}_w"), z.get(f"c{i}_b"), z[f"c{i}_args"].tolist(), z[f"c{i}_y"]))
        i += 1
    return cases


@CONV_BACKENDS
@pytest.mark.parametrize("op", ["conv1d", "conv_transpose1d", "leaky_relu", "interpolate_linear"])
def test_conv_ops_match_torch_fixtures(backend, op):
    cases = fixture_cases(op)
    assert len(cases) >= 3
    for i, (x, w, b, args, want) in enumerate(cases):
        if op in ("conv1d", "conv_transpose1d"):
            got = run_op(backend, op, x, w, b, *map(int, args))
        else:
            got = run_op(backend, op, x, *args)
        if op == "leaky_relu":  # exact, signed zeros and infinities included
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
        else:
            assert_close(got, want, **TOL, name=f"{op} case {i} {args}")


def conv_shapes(draw, transposed):
    B, Cin, Cout = draw(st.integers(1, 3)), draw(SIZES), draw(SIZES)
    K, stride, dilation = draw(st.integers(1, 12)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    extra = draw(st.one_of(st.integers(0, 40), st.sampled_from([0, 1, 23, 24, 25, 47, 48, 49, 200])))
    if transposed:
        T = 1 + extra
        output_padding = draw(st.integers(0, max(stride, dilation) - 1))
        full = (T - 1) * stride + dilation * (K - 1) + output_padding  # To + 2 padding - 1
        padding = min(draw(st.integers(0, 20)), full // 2)
        return B, Cin, Cout, T, K, dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    padding = draw(st.integers(0, 12))
    T = max(1, dilation * (K - 1) + 1 - 2 * padding) + extra  # To >= 1
    return B, Cin, Cout, T, K, dict(stride=stride, padding=padding, dilation=dilation)


SLOPES = st.sampled_from([None, None, 0.1, 0.01, 0.0])  # the fused input activation (None: none)


@KERNEL_BACKENDS
@hyp
@given(data=st.data(), seed=SEEDS, bias=st.booleans(), slope=SLOPES, residual=st.booleans())
def test_hyp_conv1d(backend, data, seed, bias, slope, residual):
    B, Cin, Cout, T, K, kw = conv_shapes(data.draw, transposed=False)
    rng = np.random.default_rng(seed)
    x, w, b = rand(rng, B, Cin, T), rand(rng, Cout, Cin, K, scale=0.3), rand(rng, Cout) if bias else None
    if residual:
        kw["residual"] = rand(rng, *ref.conv1d(x, w, None, **kw).shape)
    kw["leaky_slope"] = slope
    got = run_op(backend, "conv1d", x, w, b, **kw)
    assert_close(got, ref.conv1d(x, w, b, **kw), **TOL, name=f"conv1d {x.shape} {w.shape} {slope} {residual}")


@KERNEL_BACKENDS
@hyp
@given(data=st.data(), seed=SEEDS, bias=st.booleans(), slope=SLOPES)
def test_hyp_conv_transpose1d(backend, data, seed, bias, slope):
    B, Cin, Cout, T, K, kw = conv_shapes(data.draw, transposed=True)
    rng = np.random.default_rng(seed)
    x, w, b = rand(rng, B, Cin, T), rand(rng, Cin, Cout, K, scale=0.3), rand(rng, Cout) if bias else None
    kw["leaky_slope"] = slope
    got = run_op(backend, "conv_transpose1d", x, w, b, **kw)
    assert_close(got, ref.conv_transpose1d(x, w, b, **kw), **TOL, name=f"conv_transpose1d {x.shape} {w.shape} {kw}")




@KERNEL_BACKENDS
@pytest.mark.parametrize("Cin,K,kw", [(300, 3, dict(padding=1)), (200, 7, dict(padding=9, dilation=3)),
                                      (130, 11, dict(padding=25, dilation=5)), (260, 5, dict(stride=3, padding=2))])
def test_conv1d_wide(backend, Cin, K, kw):
    """Many input channels: the source panels come in several chunks (partial sums kept in y between them);
    with stride 3 the taps reach into other planes (rows read in place). Same result at 1 and 2 threads."""
    rng = np.random.default_rng(Cin)
    x, w, b = rand(rng, 2, Cin, 61), rand(rng, 9, Cin, K, scale=0.1), rand(rng, 9)
    got = run_op(backend, "conv1d", x, w, b, **kw)
    assert_close(got, ref.conv1d(x, w, b, **kw), **TOL, name=f"conv1d {x.shape} {w.shape} {kw}")
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(1 if before > 1 else 3)
        np.testing.assert_array_equal(run_op(backend, "conv1d", x, w, b, **kw), got)
    finally:
        _core.set_num_threads(before)

@KERNEL_BACKENDS
def test_conv_transpose1d_packed(backend):
    """The packed weight (made once, cached per weight array) gives the per-call packing's result bit for bit;
    a packing for other sizes is refused; the cache entry goes with the array."""
    from pyclvp.ops import cpu_ops
    rng = np.random.default_rng(5)
    x, w, b = rand(rng, 2, 9, 13), rand(rng, 9, 11, 6), rand(rng, 11)
    with using(backend.split("-", 1)[1]):
        for kw in (dict(stride=3, padding=1), dict(stride=2, padding=2, dilation=2), dict(stride=1)):
            args = (kw.get("stride", 1), kw.get("padding", 0), 0, kw.get("dilation", 1))
            packed = _core.pack_conv_transpose1d(w, args[0], args[1], args[3])
            want = _core.conv_transpose1d(x, w, b, *args)
            np.testing.assert_array_equal(_core.conv_transpose1d(x, w, b, *args, packed=packed), want)
            np.testing.assert_array_equal(ops.conv_transpose1d(x, w, b, **kw), want)  # the cached packing
            np.testing.assert_array_equal(ops.conv_transpose1d(x, w, b, **kw), want)
        with pytest.raises(ValueError, match="packed"):
            _core.conv_transpose1d(x, w, b, 2, 1, 0, 1, packed=_core.pack_conv_transpose1d(w, 3, 1, 1))
        with pytest.raises(ValueError, match="packed"):
            _core.conv_transpose1d(x, w, b, 2, 1, 0, 1, packed=packed[: len(packed) - 1])
        assert id(w) in cpu_ops._PACKED
        key = id(w)
        del w
        assert key not in cpu_ops._PACKED

@KERNEL_BACKENDS
@hyp
@given(shape=st.lists(SIZES, min_size=1, max_size=3), seed=SEEDS, slope=st.sampled_from([0.1, 0.01, 0.0, 0.5, 1.0]))
def test_hyp_leaky_relu(backend, shape, seed, slope):
    x = rand(np.random.default_rng(seed), *shape, scale=3.0)
    x.flat[: min(x.size, 3)] = [0.0, -0.0, np.nan][: min(x.size, 3)]
    got = run_op(backend, "leaky_relu", x, slope)
    np.testing.assert_array_equal(got, ref.leaky_relu(x, slope))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(ref.leaky_relu(x, slope)))


@hyp
@given(C=st.integers(1, 3), T=st.integers(1, 60), s=st.floats(0.3, 6.0), seed=SEEDS)
def test_hyp_interpolate_linear(C, T, s, seed):
    """Linear interpolation keeps constants, stays inside each neighbour pair's range, and has torch's length."""
    hypothesis_assume(int(np.floor(T * s)) >= 1)
    x = rand(np.random.default_rng(seed), 2, C, T)
    y = ref.interpolate_linear(x, s)
    assert y.shape == (2, C, int(np.floor(T * s)))
    assert np.all(y <= x.max(-1, keepdims=True) + 1e-6) and np.all(y >= x.min(-1, keepdims=True) - 1e-6)
    assert_close(ref.interpolate_linear(np.full((1, C, T), 0.75, np.float32), s), np.full((1, C, y.shape[-1]), 0.75),
                 atol=1e-7)


def test_conv_literal():
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]], np.float32)  # (1, 1, 4)
    w = np.array([[[1.0, 10.0]]], np.float32)  # (1, 1, 2)
    for backend in ["numpy"] + [f"cpu-{i}" for i in _core.build_info()["isas_supported"]]:
        # y[t] = x[t] + 10 x[t + 1] (no flip: torch's conv1d is a correlation)
        assert run_op(backend, "conv1d", x, w).tolist() == [[[21.0, 32.0, 43.0]]]
        assert run_op(backend, "conv1d", x, w, np.array([0.5], np.float32), stride=2, padding=1).tolist() == \
            [[[10.5, 32.5, 4.5]]]  # x padded: [0, 1, 2, 3, 4, 0]
        # every x[t] scatters (x[t], 10 x[t]) to t * 2 + (0, 1): the stride-2 interleave
        assert run_op(backend, "conv_transpose1d", x, w, stride=2).tolist() == [[[1, 10, 2, 20, 3, 30, 4, 40]]]
        assert run_op(backend, "leaky_relu", np.array([-2.0, 3.0], np.float32), 0.1).tolist() == \
            [np.float32(-0.2), 3.0]
    assert ref.interpolate_linear(x, 2.0).tolist() == [[[1.0, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.0]]]


@ISA
@pytest.mark.parametrize("transposed", [False, True])
def test_conv_tiles_and_channel_chunks(isa, transposed):
    """Sizes past one task (MC channels, NC times) and one channel chunk (KC = 1024 / taps on AVX2)."""
    rng = np.random.default_rng(1)
    if transposed:
        x, w, b, kw = rand(rng, 2, 300, 90), rand(rng, 300, 150, 16, scale=0.05), rand(rng, 150), dict(stride=8, padding=4)
    else:
        x, w, b, kw = rand(rng, 2, 200, 500), rand(rng, 150, 200, 11, scale=0.05), rand(rng, 150), dict(padding=15, dilation=3)
    op = "conv_transpose1d" if transposed else "conv1d"
    with using(isa):
        got = getattr(ops, op)(x, w, b, **kw)
    assert_close(got, getattr(ref, op)(x, w, b, **kw), **TOL, name=op)


def test_conv_same_result_for_any_thread_count():
    rng = np.random.default_rng(0)
    x, w = rand(rng, 1, 70, 400), rand(rng, 90, 70, 7)
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        one = ops.conv1d(x, w, None, 1, 3, 1), ops.conv_transpose1d(x, w.transpose(1, 0, 2).copy(), None, 4, 2)
        _core.set_num_threads(3)
        three = ops.conv1d(x, w, None, 1, 3, 1), ops.conv_transpose1d(x, w.transpose(1, 0, 2).copy(), None, 4, 2)
    finally:
        _core.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(one, three))


def _conv_bad_calls(z=np.zeros, f=np.float32):
    return [
        ("conv1d", (z((3, 5), f), z((4, 3, 2), f)), "x must have 3 dimensions"),
        ("conv1d", (z((1, 3, 5), f), z((4, 3), f)), "w must have 3 dimensions"),
        ("conv1d", (z((1, 3, 5), f), z((4, 5, 2), f)), r"w has shape \(4, 5, 2\), expected dimension 1 = 3"),
        ("conv_transpose1d", (z((1, 3, 5), f), z((4, 5, 2), f)), r"w has shape \(4, 5, 2\), expected dimension 0 = 3"),
        ("conv1d", (z((1, 3, 5), f), z((4, 3, 0), f)), "no taps"),
        ("conv1d", (z((1, 3, 5), f), z((4, 3, 2), f), z(5, f)), r"b has shape \(5,\)"),
        ("conv1d", (z((1, 3, 2), f), z((4, 3, 5), f)), "output length To = -2 < 1"),
        ("conv1d", (z((1, 3, 2), f), z((4, 3, 2), f), None, 1, 0, 3), "output length To = -1 < 1"),
        ("conv_transpose1d", (z((1, 3, 1), f), z((3, 4, 1), f), None, 1, 1), "output length To = -1 < 1"),
        ("conv1d", (z((1, 3, 5), f), z((4, 3, 2), f), None, 0), "stride = 0 and dilation = 1 must be >= 1"),
        ("conv1d", (z((1, 3, 5), f), z((4, 3, 2), f), None, 1, -1), "padding = -1 >= 0"),
        ("conv_transpose1d", (z((1, 3, 5), f), z((3, 4, 2), f), None, 2, 0, 2), "output_padding = 2 must be"),
        ("conv1d", (z((1, 3, 5), f), z((4, 3, 2), f), None, 1, 0, 1, None, z((1, 4, 5), f)),
         r"residual has shape \(1, 4, 5\), expected \(1, 4, 4\)"),
    ]


@CONV_BACKENDS
@pytest.mark.parametrize("op,args,match", _conv_bad_calls())
def test_conv_rejects_bad_arguments(backend, op, args, match):
    with pytest.raises(ValueError, match=match):
        run_op(backend, op, *args)
