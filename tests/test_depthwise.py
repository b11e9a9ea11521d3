"""Depthwise convolution (kernels/depthwise.cu, cuconv.ops.depthwise) against the float64
reference, on the emulator (always) and the GPU (when present)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import cuconv
from conftest import auto_order, nchw, nhwc, put
from cuconv.dtypes import tag
from cuconv.ops import depthwise as dw
from cuconv.ops.conv2d import choose_algorithm
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.testing import assert_close, poison, random_array

# (x shape, multiplier M, (R, S), stride, padding, dilation, the kernel auto must pick)
CASES = {
    "k3s1_C3_7x9": ((2, 3, 7, 9), 1, (3, 3), 1, 1, 1, "depthwise_f32_k3_s1_v4"),
    "k3s2_C1_M2_9x7": ((1, 1, 9, 7), 2, (3, 3), 2, 1, 1, "depthwise_f32_k3_s2_v4"),
    "k5s1_C3_M2_9x7": ((1, 3, 9, 7), 2, (5, 5), 1, 2, 1, "depthwise_f32_k5_s1_v3"),
    "k5s2_C2_11x10": ((1, 2, 11, 10), 1, (5, 5), 2, 2, 1, "depthwise_f32_k5_s2_v2"),
    "k7s1_C3_9x9_nopad": ((1, 3, 9, 9), 1, (7, 7), 1, 0, 1, "depthwise_f32_k7_s1_v2"),
    "k7s2_C2_13x9": ((1, 2, 13, 9), 1, (7, 7), 2, 3, 1, "depthwise_f32_k7_s2_v2"),
    "k3s1_dil2": ((1, 3, 9, 7), 1, (3, 3), 1, 2, 2, "depthwise_f32_generic"),
    "k3x5_s2x1_dil2x1": ((2, 3, 9, 7), 2, (3, 5), (2, 1), (2, 1), (2, 1), "depthwise_f32_generic"),
    "k4_same_even": ((1, 3, 7, 9), 1, (4, 4), 1, "same", 1, "depthwise_f32_generic"),
    # 7x7... planes: one block packs several channels.
    "many_small_planes": ((1, 21, 5, 5), 1, (3, 3), 1, 1, 1, "depthwise_f32_k3_s1_v4"),
    # Q > 128: column tiles with a halo on both sides.
    "wide_row_tiles": ((1, 1, 5, 140), 1, (3, 3), 1, 1, 1, "depthwise_f32_k3_s1_v4"),
    # A filter too large for a shared-memory tile: the direct fallback.
    "huge_filter_direct": ((1, 2, 8, 8), 1, (45, 45), 1, 22, 1, "depthwise_f32_direct"),
}

EPILOGUES = [(False, None, False), (True, "relu6", False), (True, "silu", True)]


def _problem(xs, M, RS, stride, padding, dilation):
    C = xs[1]
    return Conv2dProblem.from_shapes(xs, (M * C, 1, *RS), stride, padding, dilation, C)


def _draw(rng, xs, M, RS, p, with_bias, with_residual, dtype="float32"):
    x = random_array(rng, xs, dtype)
    w = random_array(rng, (M * xs[1], 1, *RS), dtype)
    bias = random_array(rng, (M * xs[1],), dtype) if with_bias else None
    res = random_array(rng, p.output_shape, dtype) if with_residual else None
    return x, w, bias, res


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_depthwise_matches_reference(be, rng, case):
    xs, M, RS, stride, padding, dilation, kernel = CASES[case]
    p = _problem(xs, M, RS, stride, padding, dilation)
    assert dw.plan(p).kernel == kernel
    with_bias, act, with_res = EPILOGUES[zlib.crc32(case.encode()) % len(EPILOGUES)]
    x, w, bias, res = _draw(rng, xs, M, RS, p, with_bias, with_res)
    ref = conv2d_ref(x, w, bias, stride, padding, dilation, xs[1], activation=act, residual=res)
    out = put(be, np.empty(p.output_shape, np.float32))
    poison(out)
    y = cuconv.depthwise_conv2d(put(be, x), put(be, w), put(be, bias), stride, padding, dilation,
                                activation=act, residual=put(be, res), out=out)
    assert y is out
    assert_close(y, ref, "float32", "depthwise", what=f"{case} via {kernel}")


@pytest.mark.parametrize("variant", ["specialized", "generic", "direct"])
def test_variants_agree_with_each_other_and_reference(be, rng, variant):
    """The simple (direct) kernel and the tiled ones on one problem, channel multiplier 2."""
    xs, M, RS, stride, padding = (2, 3, 9, 11), 2, (3, 3), 2, 1
    p = _problem(xs, M, RS, stride, padding, 1)
    x, w, bias, _ = _draw(rng, xs, M, RS, p, True, False)
    ref = conv2d_ref(x, w, bias, stride, padding, 1, xs[1], activation="relu")
    out = put(be, np.empty(p.output_shape, np.float32))
    poison(out)
    cuconv.depthwise_conv2d(put(be, x), put(be, w), put(be, bias), stride, padding,
                            activation="relu", out=out, variant=variant)
    assert_close(out, ref, "float32", "depthwise", what=variant)


def test_allocating_path_and_conv2d_routes_here(be, rng):
    """conv2d(..., groups=C) with algo='auto' picks depthwise and gives the same numbers."""
    xs = (1, 3, 7, 9)
    x = random_array(rng, xs)
    w = random_array(rng, (3, 1, 3, 3))
    p = Conv2dProblem.from_shapes(xs, w.shape, 1, 1, 1, 3)
    assert choose_algorithm(p) == "depthwise"
    ref = conv2d_ref(x, w, None, 1, 1, 1, 3)
    y1 = cuconv.depthwise_conv2d(put(be, x), put(be, w), padding=1)
    y2 = cuconv.conv2d(put(be, x), put(be, w), padding=1, groups=3)
    assert_close(y1, ref, "float32", "depthwise")
    assert_close(y2, ref, "float32", "depthwise")
    assert be.to_numpy(y1).dtype == np.float32 and y1.shape == ref.shape


# Each kernel once under AddressSanitizer + UBSan with threads run in reverse order, and once
# in a random order (a sanitized build costs a g++ compile each, so one config per kernel).
SANITIZED = [("specialized", (3, 3), 1, 1), ("generic", (3, 3), 1, 2), ("direct", (3, 3), 2, 1)]
RANDOM_ORDER = SANITIZED + [("specialized", (5, 5), 2, 1), ("specialized", (7, 7), 1, 1)]


def _order_cases():
    for mode, cases, tag in ((dict(sanitize="address,undefined", order="reverse"), SANITIZED, "asan_ubsan_reverse"),
                             (dict(order="random", seed=7), RANDOM_ORDER, "random_order")):
        for variant, RS, stride, dil in cases:
            yield pytest.param(mode, variant, RS, stride, dil,
                               id=f"{tag}-{variant}-k{RS[0]}x{RS[1]}-s{stride}-d{dil}")


@pytest.mark.parametrize("mode,variant,RS,stride,dil", list(_order_cases()))
def test_emulator_sanitizers_and_block_orders(rng, mode, variant, RS, stride, dil):
    """Out-of-bounds shared/global accesses, UB and inter-thread ordering bugs (a missing
    barrier) are caught by the emulator's sanitizers and shuffled execution orders."""
    xs, M = (1, 5, 9, 7), 2
    p = _problem(xs, M, RS, stride, dil, dil)
    x, w, bias, res = _draw(rng, xs, M, RS, p, True, True)
    ref = conv2d_ref(x, w, bias, stride, dil, dil, xs[1], activation="silu", residual=res)
    with cuconv.backend("emulator", **mode):
        out = np.empty(p.output_shape, np.float32)
        poison(out)
        cuconv.depthwise_conv2d(x, w, bias, stride, dil, dil, activation="silu", residual=res,
                                out=out, variant=variant)
    assert_close(out, ref, "float32", "depthwise", what=f"{variant} {mode}")


# --------------------------------------------------------------------------- planning (no kernels)
def test_tile_plans_respect_the_shared_memory_budget():
    for xs, M, RS, stride, pad, dil in [((8, 32, 112, 112), 1, (3, 3), 1, 1, 1),
                                        ((8, 96, 112, 112), 1, (3, 3), 2, 1, 1),
                                        ((8, 960, 7, 7), 1, (3, 3), 1, 1, 1),
                                        ((1, 3, 300, 1000), 1, (7, 7), 2, 3, 1),
                                        ((2, 8, 64, 64), 4, (5, 5), 1, 4, 2)]:
        p = _problem(xs, M, RS, stride, pad, dil)
        pl = dw.plan(p)
        assert pl.tile is not None, p.describe()
        t = pl.tile
        assert t.smem_bytes <= dw.SMEM_LIMIT_BYTES
        assert t.tile_p % pl.config.rows == 0
        assert t.blocks == xs[0] * -(-xs[1] // t.tile_c) * -(-p.P // t.tile_p) * -(-p.Q // t.tile_q)


def test_small_planes_pack_channels_and_big_ones_do_not():
    small = dw.plan(_problem((8, 960, 7, 7), 1, (3, 3), 1, 1, 1))
    assert small.tile.tile_c > 1 and small.tile.tile_p >= 7 and small.tile.tile_q == 7
    big = dw.plan(_problem((8, 32, 112, 112), 1, (3, 3), 1, 1, 1))
    assert big.tile.tile_c == 1 and big.tile.tile_q == 112


def test_auto_priority_rule():
    dwp = Conv2dProblem.from_shapes((1, 8, 9, 9), (16, 1, 3, 3), 1, 1, 1, 8)
    assert auto_order(dwp)[0] == "depthwise" and dw.can_implement(dwp) is None
    dense = Conv2dProblem.from_shapes((1, 8, 9, 9), (16, 8, 3, 3), 1, 1, 1, 1)
    assert "depthwise" not in auto_order(dense)
    assert "groups == C" in dw.can_implement(dense)
    grouped = Conv2dProblem.from_shapes((1, 8, 9, 9), (8, 2, 3, 3), 1, 1, 1, 4)
    assert "groups == C" in dw.can_implement(grouped)


# --------------------------------------------------------------------------- bad arguments
def test_bad_arguments_raise_before_any_launch(rng):
    with cuconv.backend("emulator"):
        x = random_array(rng, (1, 3, 7, 7))
        with pytest.raises(ValueError, match=r"\(M·C, 1, R, S\).*\(4, 1, 3, 3\)"):
            cuconv.depthwise_conv2d(x, random_array(rng, (4, 1, 3, 3)))
        with pytest.raises(ValueError, match=r"\(3, 2, 3, 3\)"):
            cuconv.depthwise_conv2d(x, random_array(rng, (3, 2, 3, 3)))
        with pytest.raises(ValueError, match="4-D"):
            cuconv.depthwise_conv2d(x[0, 0], random_array(rng, (3, 1, 3, 3)))
        with pytest.raises(ValueError, match="bias must have shape"):
            cuconv.depthwise_conv2d(x, random_array(rng, (3, 1, 3, 3)), random_array(rng, (4,)))
        with pytest.raises(TypeError, match="dtype"):
            cuconv.depthwise_conv2d(x.astype(np.int32), random_array(rng, (3, 1, 3, 3)).astype(np.int32))
        with pytest.raises(ValueError, match="output size"):
            cuconv.depthwise_conv2d(x, random_array(rng, (3, 1, 9, 9)))
        with pytest.raises(ValueError, match="variant"):
            cuconv.depthwise_conv2d(x, random_array(rng, (3, 1, 3, 3)), variant="fastest")
        with pytest.raises(ValueError, match="no specialized config"):
            cuconv.depthwise_conv2d(x, random_array(rng, (3, 1, 3, 5)), variant="specialized")
        with pytest.raises(ValueError, match="out must have shape"):
            cuconv.depthwise_conv2d(x, random_array(rng, (3, 1, 3, 3)), out=np.empty((1, 3, 7, 7), np.float32))
        with pytest.raises(ValueError, match="activation"):
            cuconv.depthwise_conv2d(x, random_array(rng, (3, 1, 3, 3)), activation="tanh")


# --------------------------------------------------------------------------- float64 and NHWC
def _run(be, x, w, bias, res, stride, padding, dilation, act, layout="NCHW", variant="auto"):
    """depthwise_conv2d on NCHW NumPy inputs passed in ``layout`` (NHWC weight: (M·C, R, S, 1)),
    into a poisoned out=; the result in NCHW."""
    p = Conv2dProblem.from_shapes(x.shape, w.shape, stride, padding, dilation, x.shape[1], x.dtype.name)
    conv = nhwc if layout == "NHWC" else (lambda a: a)
    out = put(be, np.empty(p.output_shape if layout == "NCHW" else (p.N, p.P, p.Q, p.K), x.dtype))
    poison(out)
    y = cuconv.depthwise_conv2d(put(be, conv(x)), put(be, conv(w)), put(be, bias), stride, padding, dilation,
                                activation=act, residual=put(be, conv(res)), out=out, variant=variant,
                                layout=layout)
    assert y is out
    got = be.to_numpy(out)
    return got if layout == "NCHW" else nchw(got)


# (x shape, M, (R, S), stride, padding, dilation) -> kernel, per (dtype, layout)
LAYOUT_CASES = {
    "k3s1_C3_7x9": ((2, 3, 7, 9), 1, (3, 3), 1, 1, 1),
    "k3s2_C1_M2_9x7": ((1, 1, 9, 7), 2, (3, 3), 2, 1, 1),
    "k5s1_C3_M2_9x7": ((1, 3, 9, 7), 2, (5, 5), 1, 2, 1),
    "k5s2_C2_11x10_pad3": ((1, 2, 11, 10), 1, (5, 5), 2, 3, 1),
    "k7s2_C2_13x9": ((1, 2, 13, 9), 1, (7, 7), 2, 3, 1),
    "k3s1_dil2": ((1, 3, 9, 7), 1, (3, 3), 1, 2, 2),
    "k3x5_s2x1_dil2x1": ((2, 3, 9, 7), 2, (3, 5), (2, 1), (2, 1), (2, 1)),
    "many_small_planes": ((1, 21, 5, 5), 1, (3, 3), 1, 1, 1),
}
KERNELS = {
    ("float64", "NCHW"): ["depthwise_f64_k3_s1_v2", "depthwise_f64_k3_s2_v2", "depthwise_f64_generic",
                          "depthwise_f64_generic", "depthwise_f64_generic", "depthwise_f64_generic",
                          "depthwise_f64_generic", "depthwise_f64_k3_s1_v2"],
    ("float32", "NHWC"): ["depthwise_f32_nhwc_k3_s1_v4", "depthwise_f32_nhwc_k3_s2_v4", "depthwise_f32_nhwc_k5_s1_v4",
                          "depthwise_f32_nhwc_k5_s2_v4", "depthwise_f32_nhwc_direct", "depthwise_f32_nhwc_direct",
                          "depthwise_f32_nhwc_direct", "depthwise_f32_nhwc_k3_s1_v4"],
    ("float64", "NHWC"): ["depthwise_f64_nhwc_k3_s1_v4", "depthwise_f64_nhwc_k3_s2_v2", "depthwise_f64_nhwc_k5_s1_v2",
                          "depthwise_f64_nhwc_k5_s2_v2", "depthwise_f64_nhwc_direct", "depthwise_f64_nhwc_direct",
                          "depthwise_f64_nhwc_direct", "depthwise_f64_nhwc_k3_s1_v4"],
}


@pytest.mark.parametrize("dtype,layout", list(KERNELS), ids=[f"{d}-{l}" for d, l in KERNELS])
@pytest.mark.parametrize("case", list(LAYOUT_CASES), ids=list(LAYOUT_CASES))
def test_float64_and_nhwc_match_reference(be, rng, case, dtype, layout):
    xs, M, RS, stride, padding, dilation = LAYOUT_CASES[case]
    p = _problem(xs, M, RS, stride, padding, dilation).with_(dtype=dtype)
    kernel = KERNELS[(dtype, layout)][list(LAYOUT_CASES).index(case)]
    assert dw.plan(p, "auto", layout).kernel == kernel
    with_bias, act, with_res = EPILOGUES[zlib.crc32(case.encode()) % len(EPILOGUES)]
    x, w, bias, res = _draw(rng, xs, M, RS, p, with_bias, with_res, dtype)
    ref = conv2d_ref(x, w, bias, stride, padding, dilation, xs[1], activation=act, residual=res)
    got = _run(be, x, w, bias, res, stride, padding, dilation, act, layout)
    assert got.dtype == np.dtype(dtype)
    assert_close(got, ref, dtype, "depthwise", what=f"{case} via {kernel}")


@pytest.mark.parametrize("dtype,layout", list(KERNELS), ids=[f"{d}-{l}" for d, l in KERNELS])
def test_float64_and_nhwc_variants_and_conv2d(be, rng, dtype, layout):
    """Every variant the layout has agrees with the reference (channel multiplier 2, bias,
    residual, relu6), and conv2d(groups=C) takes the same kernel under auto."""
    xs, M, RS, stride, padding = (2, 3, 9, 11), 2, (3, 3), 2, 1
    p = _problem(xs, M, RS, stride, padding, 1).with_(dtype=dtype)
    x, w, bias, res = _draw(rng, xs, M, RS, p, True, True, dtype)
    ref = conv2d_ref(x, w, bias, stride, padding, 1, xs[1], activation="relu6", residual=res)
    variants = ["specialized", "generic", "direct"] if layout == "NCHW" else ["specialized", "direct"]
    for variant in variants:
        got = _run(be, x, w, bias, res, stride, padding, 1, "relu6", layout, variant)
        assert_close(got, ref, dtype, "depthwise", what=variant)
    assert choose_algorithm(p, layout=layout) == "depthwise"
    conv = nhwc if layout == "NHWC" else (lambda a: a)
    y = cuconv.conv2d(put(be, conv(x)), put(be, conv(w)), put(be, bias), stride, padding, groups=3,
                      activation="relu6", residual=put(be, conv(res)), layout=layout)
    assert_close(be.to_numpy(y) if layout == "NCHW" else nchw(be.to_numpy(y)), ref, dtype, "depthwise")


def test_nhwc_variant_rules():
    p = _problem((1, 3, 9, 9), 1, (7, 7), 1, 3, 1)
    with pytest.raises(ValueError, match="'generic' is the NCHW tiled kernel"):
        dw.plan(p, "generic", "NHWC")
    with pytest.raises(ValueError, match="NHWC kernels cover 3x3 and 5x5"):
        dw.plan(p, "specialized", "NHWC")
    assert dw.plan(p, "auto", "NHWC").kernel == "depthwise_f32_nhwc_direct"
    with pytest.raises(ValueError, match=r"weight of shape \(M·C, R, S, 1\)"):
        cuconv.depthwise_conv2d(np.zeros((1, 9, 9, 3), np.float32), np.zeros((3, 1, 3, 3), np.float32),
                                layout="NHWC")
    with pytest.raises(ValueError, match="no specialized config .* 3x3 \\(float64\\)"):
        dw.plan(p.with_(dtype="float64"), "specialized")


def _layout_order_cases():
    # Every new kernel: the float64 NCHW tiles and direct, every NHWC strip config and direct.
    kernels = [("float64", "NCHW", "specialized", (3, 3), 1, 1), ("float64", "NCHW", "specialized", (3, 3), 2, 1),
               ("float64", "NCHW", "generic", (3, 3), 1, 2), ("float64", "NCHW", "direct", (3, 3), 2, 1)]
    for dtype in ("float32", "float64"):
        kernels += [(dtype, "NHWC", "specialized", (k, k), s, 1) for k in (3, 5) for s in (1, 2)]
        kernels += [(dtype, "NHWC", "direct", (3, 3), 1, 2)]
    for mode, tag in ((dict(sanitize="address,undefined", order="reverse"), "asan_ubsan_reverse"),
                      (dict(order="random", seed=7), "random_order")):
        for dtype, layout, variant, RS, stride, dil in kernels:
            yield pytest.param(mode, dtype, layout, variant, RS, stride, dil,
                               id=f"{tag}-{dtype}-{layout}-{variant}-k{RS[0]}-s{stride}-d{dil}")


@pytest.mark.parametrize("mode,dtype,layout,variant,RS,stride,dil", list(_layout_order_cases()))
def test_float64_and_nhwc_under_emulator_checks(rng, mode, dtype, layout, variant, RS, stride, dil):
    xs, M = (1, 5, 9, 7), 2
    p = _problem(xs, M, RS, stride, dil, dil).with_(dtype=dtype)
    x, w, bias, res = _draw(rng, xs, M, RS, p, True, True, dtype)
    ref = conv2d_ref(x, w, bias, stride, dil, dil, xs[1], activation="silu", residual=res)
    with cuconv.backend("emulator", **mode) as be:
        got = _run(be, x, w, bias, res, stride, dil, dil, "silu", layout, variant)
    assert_close(got, ref, dtype, "depthwise", what=f"{dtype} {layout} {variant} {mode}")


# --------------------------------------------------------------------------- float16 / bfloat16
# (x shape, M, (R, S), stride, padding, dilation): awkward sizes, C not a multiple of 8.
HALF_CASES = {
    "k3s1_C16_N2_7x9": ((2, 16, 7, 9), 1, (3, 3), 1, 1, 1),
    "k3s2_C12_9x7": ((1, 12, 9, 7), 1, (3, 3), 2, 1, 1),
    "k5s2_C8_11x10_pad3": ((1, 8, 11, 10), 1, (5, 5), 2, 3, 1),
    "k7s1_C8_9x9": ((1, 8, 9, 9), 1, (7, 7), 1, 3, 1),
    "k7s2_C3_13x9": ((1, 3, 13, 9), 1, (7, 7), 2, 3, 1),
    "k3s1_C3_M2_7x9": ((1, 3, 7, 9), 2, (3, 3), 1, 1, 1),
    "k3s1_dil2_C5": ((1, 5, 9, 7), 1, (3, 3), 1, 2, 2),
    "k3_stride3_C1": ((2, 1, 10, 11), 1, (3, 3), 3, 1, 1),
    "k5s1_C24_N2_6x13": ((2, 24, 6, 13), 1, (5, 5), 1, 2, 1),
}
# The kernel auto picks per (layout, case), "{t}" standing for the dtype's tag.
HALF_KERNELS = {
    "NCHW": ["k3_s1_v4", "k3_s2_v4", "k5_s2_v2", "k7_s1_v2", "k7_s2_v2", "k3_s1_v4", "generic", "generic", "k5_s1_v3"],
    "NHWC": ["nhwc_vec8_k3_s1_v2", "nhwc_vec4_k3_s2_v2", "nhwc_vec8_k5_s2_v2", "nhwc_vec8_k7_s1_v1", "nhwc_direct",
             "nhwc_k3_s1_v4", "nhwc_direct", "nhwc_direct", "nhwc_vec8_k5_s1_v2"],
}
HALF = ("float16", "bfloat16")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("case", list(HALF_CASES), ids=list(HALF_CASES))
def test_16bit_matches_reference(be, rng, case, dtype, layout):
    """Every 16-bit kernel family against the float64 reference of the same (rounded) inputs,
    with the fused epilogue; auto's choice per layout."""
    xs, M, RS, stride, padding, dilation = HALF_CASES[case]
    p = _problem(xs, M, RS, stride, padding, dilation).with_(dtype=dtype)
    kernel = f"depthwise_{tag(dtype)}_" + HALF_KERNELS[layout][list(HALF_CASES).index(case)]
    assert dw.plan(p, "auto", layout).kernel == kernel
    with_bias, act, with_res = EPILOGUES[zlib.crc32(case.encode()) % len(EPILOGUES)]
    x, w, bias, res = _draw(rng, xs, M, RS, p, with_bias, with_res, dtype)
    ref = conv2d_ref(x, w, bias, stride, padding, dilation, xs[1], activation=act, residual=res)
    got = _run(be, x, w, bias, res, stride, padding, dilation, act, layout)
    assert got.dtype == np.dtype(x.dtype)
    assert_close(got, ref, dtype, "depthwise", what=f"{case} via {kernel}")


@pytest.mark.parametrize("dtype", HALF)
def test_16bit_variants_misaligned_views_and_conv2d(be, rng, dtype):
    """Every variant agrees (multiplier 1 so NHWC takes the vector kernel); an NHWC input that
    starts 2 bytes past a 16-byte boundary is planned onto the scalar strip kernel; conv2d(groups=C)
    takes depthwise under auto, with no workspace."""
    xs, M, RS, stride, padding = (2, 16, 9, 11), 1, (3, 3), 1, 1
    p = _problem(xs, M, RS, stride, padding, 1).with_(dtype=dtype)
    x, w, bias, res = _draw(rng, xs, M, RS, p, True, True, dtype)
    ref = conv2d_ref(x, w, bias, stride, padding, 1, xs[1], activation="relu6", residual=res)
    for layout, variants in (("NCHW", ["specialized", "generic", "direct"]), ("NHWC", ["specialized", "direct"])):
        for variant in variants:
            got = _run(be, x, w, bias, res, stride, padding, 1, "relu6", layout, variant)
            assert_close(got, ref, dtype, "depthwise", what=f"{layout} {variant}")
    assert dw.plan(p, "auto", "NHWC", aligned=False).kernel == f"depthwise_{tag(dtype)}_nhwc_k3_s1_v4"
    flat = be.empty((1 + x.size,), x.dtype)
    xv = flat[1:].reshape(nhwc(x).shape)            # 2 bytes past the allocation's alignment
    xv[...] = put(be, nhwc(x))
    out = be.empty((p.N, p.P, p.Q, p.K), x.dtype)
    poison(out)
    cuconv.depthwise_conv2d(xv, put(be, nhwc(w)), put(be, bias), stride, padding, activation="relu6",
                            residual=put(be, nhwc(res)), out=out, layout="NHWC")
    assert_close(nchw(be.to_numpy(out)), ref, dtype, "depthwise", what="misaligned NHWC input")
    scalar, vec = (cuconv.plan_depthwise_conv2d(a, put(be, nhwc(w)), padding=padding, layout="NHWC").kernels
                   for a in (xv, put(be, nhwc(x))))
    assert scalar == [f"depthwise_{tag(dtype)}_nhwc_k3_s1_v4"] and vec == [f"depthwise_{tag(dtype)}_nhwc_vec8_k3_s1_v2"]
    for layout in ("NCHW", "NHWC"):
        info = next(i for i in cuconv.algorithms(p, layout=layout) if i.name == "depthwise")
        assert choose_algorithm(p, layout=layout) == "depthwise" and info.workspace_bytes == 0


def test_16bit_auto_needs_no_workspace_on_efficientnet_b7():
    """Issue 25: EfficientNet-B7's depthwise layer at batch 32 in float16 took the tensor-core
    implicit GEMM with an 8.2 GiB workspace; it now takes the depthwise kernels with none."""
    with cuconv.backend("record"):
        for dtype in HALF:
            for layout in ("NCHW", "NHWC"):
                p = Conv2dProblem.from_shapes((32, 192, 150, 150), (192, 1, 3, 3), 1, 1, 1, 192, dtype)
                info = next(i for i in cuconv.algorithms(p, layout=layout) if i.name == "depthwise")
                assert info.ok and info.workspace_bytes == 0 and choose_algorithm(p, layout=layout) == "depthwise"
                assert info.kernels[0].startswith(f"depthwise_{tag(dtype)}")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", HALF)
def test_16bit_nan_rules(be, rng, dtype, layout):
    """docs/semantics.md: an Inf weight over the padding gives NaN (0·Inf), relu keeps NaN, an Inf
    input spreads Inf (or NaN against a weight of the other sign) — in every 16-bit kernel family."""
    for xs, RS, stride in (((1, 16, 7, 9), (3, 3), 1), ((1, 8, 11, 10), (5, 5), 2), ((1, 3, 9, 7), (3, 5), 1)):
        p = _problem(xs, 1, RS, stride, 1, 1).with_(dtype=dtype)
        x, w, _, _ = _draw(rng, xs, 1, RS, p, False, False, dtype)
        w[0, 0, 0, 0] = np.inf                      # channel 0's top-left tap: over the padding in row 0
        x[0, 1, 3, 4] = np.nan
        x[0, 2, 5, 2] = -np.inf
        ref = conv2d_ref(x, w, None, stride, 1, 1, xs[1], activation="relu")
        assert np.isnan(ref).any() and np.isinf(ref).any()
        got = _run(be, x, w, None, None, stride, 1, 1, "relu", layout)
        assert_close(got, ref, dtype, "depthwise", what=f"{xs} {RS} via {dw.plan(p, 'auto', layout).kernel}")


def _half_order_cases():
    kernels = [("float16", "NCHW", "specialized", (3, 3), 1, 1, 16), ("bfloat16", "NCHW", "generic", (3, 3), 1, 2, 16),
               ("float16", "NCHW", "direct", (3, 3), 2, 1, 5), ("float16", "NHWC", "specialized", (3, 3), 1, 1, 16),
               ("bfloat16", "NHWC", "specialized", (5, 5), 2, 1, 12),
               ("bfloat16", "NHWC", "specialized", (3, 3), 2, 1, 5),
               ("float16", "NHWC", "direct", (3, 3), 1, 2, 5)]
    for mode, tag_ in ((dict(sanitize="address,undefined", order="reverse"), "asan_ubsan_reverse"),
                       (dict(order="random", seed=7), "random_order")):
        for dtype, layout, variant, RS, stride, dil, C in kernels:
            yield pytest.param(mode, dtype, layout, variant, RS, stride, dil, C,
                               id=f"{tag_}-{dtype}-{layout}-{variant}-k{RS[0]}-s{stride}-d{dil}-C{C}")


@pytest.mark.parametrize("mode,dtype,layout,variant,RS,stride,dil,C", list(_half_order_cases()))
def test_16bit_under_emulator_checks(rng, mode, dtype, layout, variant, RS, stride, dil, C):
    """The 16-bit kernels (tiled, generic, direct, NHWC strips, 16- and 8-byte vectors, NHWC direct)
    under ASan/UBSan with threads in reverse order, and in a random order."""
    xs = (2, C, 9, 7)
    p = _problem(xs, 1, RS, stride, dil, dil).with_(dtype=dtype)
    x, w, bias, res = _draw(rng, xs, 1, RS, p, True, True, dtype)
    ref = conv2d_ref(x, w, bias, stride, dil, dil, C, activation="silu", residual=res)
    with cuconv.backend("emulator", **mode) as be:
        got = _run(be, x, w, bias, res, stride, dil, dil, "silu", layout, variant)
    assert_close(got, ref, dtype, "depthwise", what=f"{dtype} {layout} {variant} {mode}")
