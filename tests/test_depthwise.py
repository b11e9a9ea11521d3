"""Depthwise convolution (kernels/depthwise.cu, cuconv.ops.depthwise) against the float64
reference, on the emulator (always) and the GPU (when present)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import cuconv
from conftest import auto_order, put
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


def _draw(rng, xs, M, RS, p, with_bias, with_residual):
    x = random_array(rng, xs)
    w = random_array(rng, (M * xs[1], 1, *RS))
    bias = random_array(rng, (M * xs[1],)) if with_bias else None
    res = random_array(rng, p.output_shape) if with_residual else None
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
            cuconv.depthwise_conv2d(x.astype(np.float64), random_array(rng, (3, 1, 3, 3)).astype(np.float64))
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
