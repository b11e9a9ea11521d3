"""algo="direct" (kernels/direct.cu) against the float64 reference, on awkward problems.

Every output is poisoned with NaN before the launch, so an element the kernel never
writes fails the comparison.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import auto_order, conv_in_layout, draw_conv, put

import cuconv
from cuconv.ops import direct as direct_op
from cuconv.reference import conv2d_ref
from cuconv.testing import assert_close, poison, random_array

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
PROBLEMS = [
    pytest.param((1, 1, 7, 7, 3, 3, 3, 1, 1, 1, 1), id="C1_7x7_3x3"),
    pytest.param((3, 3, 9, 9, 5, 3, 3, 2, 1, 1, 1), id="N3_C3_9x9_stride2"),
    pytest.param((2, 3, 9, 7, 4, 5, 5, 1, 3, 1, 1), id="5x5_pad3_nonsquare"),
    pytest.param((1, 4, 9, 9, 6, 3, 3, 1, 2, 2, 2), id="dilation2_groups2"),
    pytest.param((2, 6, 7, 7, 6, 3, 3, 1, 1, 1, 6), id="depthwise"),
    pytest.param((2, 6, 9, 7, 12, 3, 3, 2, 1, 1, 6), id="depthwise_multiplier2_stride2"),
    pytest.param((1, 5, 8, 6, 7, 1, 1, 1, 0, 1, 1), id="1x1"),
    pytest.param((1, 2, 11, 9, 3, 7, 7, 2, 3, 1, 1), id="7x7_stride2"),
    pytest.param((1, 3, 7, 9, 2, 2, 4, 1, "same", 1, 1), id="same_even_kernel"),
    pytest.param((1, 3, 9, 7, 2, 3, 3, (2, 1), (0, 2), (1, 2), 1), id="pairs"),
    pytest.param((1, 2, 5, 5, 3, 3, 3, 1, 4, 1, 1), id="padding_larger_than_kernel"),
]


@pytest.mark.parametrize("case", PROBLEMS)
def test_direct_matches_reference(be, rng, case):
    x, w, args = draw_conv(rng, case)
    ref = conv2d_ref(x, w, **args)
    out = be.empty(ref.shape, np.float32)
    poison(out)
    got = cuconv.conv2d(put(be, x), put(be, w), algo="direct", out=out, **args)
    assert got is out
    assert_close(out, ref, np.float32, "direct")


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "silu"])
def test_direct_fused_epilogue(be, rng, activation):
    x, w, args = draw_conv(rng, (2, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1))
    bias = random_array(rng, (5,), low=-2, high=2)
    # A residual large enough that relu6 clips at 6 and relu at 0 on many elements.
    residual = random_array(rng, (2, 5, 9, 7), low=-8, high=8)
    ref = conv2d_ref(x, w, bias, activation=activation, residual=residual, **args)
    if activation == "relu6":
        assert (ref == 6).any() and (ref == 0).any()
    out = be.empty(ref.shape, np.float32)
    poison(out)
    cuconv.conv2d(put(be, x), put(be, w), put(be, bias), algo="direct", activation=activation,
                  residual=put(be, residual), out=out, **args)
    assert_close(out, ref, np.float32, "direct")


def test_direct_bias_only_and_allocating_path(be, rng):
    x, w, args = draw_conv(rng, (1, 4, 7, 9, 3, 3, 3, 2, 1, 1, 1))
    bias = random_array(rng, (3,))
    y = cuconv.conv2d(put(be, x), put(be, w), put(be, bias), algo="direct", **args)
    assert isinstance(y, be.xp.ndarray) and y.dtype == np.float32
    assert_close(y, conv2d_ref(x, w, bias, **args), np.float32, "direct")


def test_grid_stride_loop_covers_every_output(rng, monkeypatch):
    """With the grid capped at 1 block, each thread must loop over many outputs."""
    monkeypatch.setattr(direct_op, "MAX_BLOCKS", 1)
    x, w, args = draw_conv(rng, (2, 3, 9, 9, 5, 3, 3, 1, 1, 1, 1))   # 810 outputs > 256 threads
    ref = conv2d_ref(x, w, **args)
    out = np.empty(ref.shape, np.float32)
    poison(out)
    with cuconv.backend("emulator"):
        cuconv.conv2d(x, w, algo="direct", out=out, **args)
    assert_close(out, ref, np.float32, "direct")


@pytest.mark.parametrize("mode", [
    pytest.param(dict(sanitize="address,undefined"), id="asan_ubsan"),
    pytest.param(dict(order="reverse"), id="reverse"),
    pytest.param(dict(order="random", seed=7), id="random"),
])
def test_direct_under_emulator_checks(rng, mode):
    """Out-of-bounds reads at the padding edges would show under ASan; order-dependence
    (none expected: no shared memory) under reversed/random thread order."""
    x, w, args = draw_conv(rng, (2, 4, 7, 9, 6, 3, 3, 2, 2, 2, 2))
    bias = random_array(rng, (6,))
    residual = random_array(rng, (2, 6, 4, 5))
    ref = conv2d_ref(x, w, bias, activation="silu", residual=residual, **args)
    out = np.empty(ref.shape, np.float32)
    poison(out)
    with cuconv.backend("emulator", **mode):
        cuconv.conv2d(x, w, bias, algo="direct", activation="silu", residual=residual, out=out, **args)
    assert_close(out, ref, np.float32, "direct")


def test_direct_kernel_is_registered():
    from cuconv.compile import registered_kernels
    labels = {e.label: e.expression for e in registered_kernels() if e.file == "direct.cu"}
    assert labels == {"direct_f32_256": "direct_conv2d<float, false, 256>",
                      "direct_f64_256": "direct_conv2d<double, false, 256>",
                      "direct_f32_nhwc_256": "direct_conv2d<float, true, 256>",
                      "direct_f64_nhwc_256": "direct_conv2d<double, true, 256>"}


# --------------------------------------------------------------------------- float64 and NHWC
@pytest.mark.parametrize("case", PROBLEMS)
def test_direct_float64_matches_reference(be, rng, case):
    """Accumulation in double: within 1e-12 of the float64 reference (float32 rounding anywhere
    would be ~1e-7)."""
    x, w, args = draw_conv(rng, case, "float64")
    got = conv_in_layout(be, x, w, algo="direct", **args)
    assert got.dtype == np.float64
    assert_close(got, conv2d_ref(x, w, **args), np.float64, "direct")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", PROBLEMS)
def test_direct_nhwc_matches_reference(be, rng, case, dtype):
    """NHWC input, KRSC weight, NHWC output, read and written natively."""
    x, w, args = draw_conv(rng, case, dtype)
    with cuconv.backend("record") as rec:
        cuconv.conv2d(np.zeros_like(x.transpose(0, 2, 3, 1), order="C"),     # dense NHWC: a strided view
                      np.zeros_like(w.transpose(0, 2, 3, 1), order="C"),     # would add its copy step
                      algo="direct", layout="NHWC", **args)
    assert rec.kernels() == [f"direct_{'f32' if dtype == 'float32' else 'f64'}_nhwc_256"]
    got = conv_in_layout(be, x, w, "NHWC", algo="direct", **args)
    assert_close(got, conv2d_ref(x, w, **args), dtype, "direct")


@pytest.mark.parametrize("dtype,layout", [("float64", "NCHW"), ("float32", "NHWC"), ("float64", "NHWC")])
@pytest.mark.parametrize("activation", ["relu6", "silu"])
def test_direct_fused_epilogue_float64_and_nhwc(be, rng, dtype, layout, activation):
    x, w, args = draw_conv(rng, (2, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1), dtype)
    bias = random_array(rng, (5,), dtype, low=-2, high=2)
    residual = random_array(rng, (2, 5, 9, 7), dtype, low=-8, high=8)
    ref = conv2d_ref(x, w, bias, activation=activation, residual=residual, **args)
    got = conv_in_layout(be, x, w, layout, bias=bias, residual=residual, algo="direct", activation=activation,
                         **args)
    assert_close(got, ref, dtype, "direct")


@pytest.mark.parametrize("mode", [
    pytest.param(dict(sanitize="address,undefined"), id="asan_ubsan"),
    pytest.param(dict(order="reverse"), id="reverse"),
    pytest.param(dict(order="random", seed=7), id="random"),
])
@pytest.mark.parametrize("dtype,layout", [("float64", "NCHW"), ("float32", "NHWC"), ("float64", "NHWC")])
def test_direct_float64_and_nhwc_under_emulator_checks(rng, mode, dtype, layout):
    x, w, args = draw_conv(rng, (2, 4, 7, 9, 6, 3, 3, 2, 2, 2, 2), dtype)
    bias = random_array(rng, (6,), dtype)
    residual = random_array(rng, (2, 6, 4, 5), dtype)
    ref = conv2d_ref(x, w, bias, activation="silu", residual=residual, **args)
    with cuconv.backend("emulator", **mode) as be:
        got = conv_in_layout(be, x, w, layout, bias=bias, residual=residual, algo="direct", activation="silu",
                             **args)
    assert_close(got, ref, dtype, "direct")


def test_direct_auto_priority_is_the_fallback():
    """Direct is the last algorithm auto tries for a dense convolution (the rule table's fallback)."""
    p = cuconv.Conv2dProblem(2, 16, 9, 9, 32, 3, 3, pad_h=1, pad_w=1)
    infos = {i.name: i for i in cuconv.algorithms(p)}
    order = auto_order(p)
    assert infos["direct"].ok and order[-1] == "direct"
    assert order.index("implicit_gemm") < order.index("direct")

