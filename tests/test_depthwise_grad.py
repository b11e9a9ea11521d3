"""Depthwise gradients (kernels/depthwise_grad.cu, cuconv.ops.depthwise_grad): the tile's rules,
and the kernels, launched through the ``depthwise`` algorithm's plans, on MobileNet-like shapes
and edge cases against the float64 references (the dense-kernel comparisons are in
test_conv_dgrad.py / test_conv_wgrad.py)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import put

from cuconv.ops import depthwise_grad as dwg
from cuconv.ops._algorithm import DGRAD, WGRAD
from cuconv.ops.conv2d import select, spec_of
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_bias_ref, conv2d_input_ref, conv2d_weight_ref, conv_problem
from cuconv.testing import assert_close, poison, random_array

# (N, C, H, W, M, R, S, stride, padding, dilation)
CASES = {
    "mobilenet_3x3_s1": (2, 8, 14, 14, 1, 3, 3, 1, 1, 1),
    "mobilenet_3x3_s2_odd": (1, 8, 15, 13, 1, 3, 3, 2, 1, 1),
    "efficientnet_5x5_s2": (1, 6, 13, 11, 1, 5, 5, 2, 2, 1),
    "7x7_M2": (1, 3, 12, 9, 2, 7, 7, 1, 3, 1),
    "stride4_beyond_3x3_filter": (1, 4, 13, 10, 1, 3, 3, 4, 1, 1),
    "rect_1x5_dil3": (1, 5, 9, 16, 3, 1, 5, 1, (0, 6), 3),
    "wide_plane_W70": (1, 2, 5, 70, 1, 3, 3, 1, 1, 1),
}


def _problem(case, dtype):
    N, C, H, W, M, R, S, st, pd, dl = CASES[case]
    return conv_problem((N, C, H, W), (M * C, 1, R, S), st, pd, dl, C, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_depthwise_gradients(be, rng, case, dtype):
    p = _problem(case, dtype)
    x = random_array(rng, p.input_shape, dtype)
    w = random_array(rng, p.weight_shape, dtype)
    dy = random_array(rng, p.output_shape, dtype)
    args = ((p.stride_h, p.stride_w), (p.pad_h, p.pad_w), (p.dilation_h, p.dilation_w), p.groups)
    dx = be.empty(p.input_shape, dtype)
    poison(dx)
    plan = select(spec_of(p, DGRAD), "depthwise")
    plan.run(put(be, w), put(be, dy), dx=dx)
    assert plan.kernels[0].startswith("depthwise_grad_dgrad")
    assert_close(dx, conv2d_input_ref(p.input_shape, w, dy, *args), dtype, "dgrad", what=case)
    for splits in (1, 3):
        dw = be.empty(p.weight_shape, dtype)
        db = be.empty((p.K,), dtype)
        poison(dw)
        poison(db)
        plan = select(spec_of(p, WGRAD, has_bias=True, splits=splits), "depthwise")
        plan.run(put(be, x), put(be, dy), dw=dw, db=db)
        assert plan.kernels[0].startswith("depthwise_grad_wgrad")
        assert_close(dw, conv2d_weight_ref(x, p.weight_shape, dy, *args), dtype, "wgrad",
                     what=f"{case} {plan.description}")
        assert_close(db, conv2d_bias_ref(dy), dtype, "wgrad", what=f"{case} {plan.description} db")


def test_dgrad_tile_plan_rules():
    # Whole rows when W <= 64, rows a multiple of the stride, <= 2·256 pixels per tile.
    p = Conv2dProblem(8, 32, 112, 112, 32, 3, 3, 2, 2, 1, 1, groups=32)
    t = dwg.dgrad_tile(p)
    assert t.tile_w == 32 and t.tile_h % 2 == 0 and t.tile_h * t.tile_w <= 512 and t.tile_c == 1
    assert t.smem_bytes <= dwg.SMEM_LIMIT_BYTES
    q = Conv2dProblem(8, 64, 7, 7, 64, 3, 3, pad_h=1, pad_w=1, groups=64)
    t = dwg.dgrad_tile(q)            # a 7x7 plane: whole planes, several channels per block
    assert (t.tile_h, t.tile_w) == (7, 7) and t.tile_c == 10
    assert t.blocks == 8 * -(-64 // 10)
    s3 = Conv2dProblem(1, 4, 13, 10, 4, 3, 3, 3, 3, 1, 1, groups=4)
    t = dwg.dgrad_tile(s3)
    assert t.tile_h % 3 == 0 and t.tile_w % 3 == 0 and t.tile_w >= 10
    d = Conv2dProblem(1, 4, 9, 9, 4, 3, 3, 1, 1, 1, 1, groups=4, dtype="float64")
    assert dwg.dgrad_tile(d).smem_bytes == dwg._smem_elems(d, dwg.dgrad_tile(d).tile_c, 9, 9) * 8
