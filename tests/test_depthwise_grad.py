"""Depthwise gradients (kernels/depthwise_grad.cu, cuconv.ops.depthwise_grad): the tile's rules,
and the kernels, launched through the ``depthwise`` algorithm's plans, on MobileNet-like shapes
and edge cases against the float64 references (the dense-kernel comparisons are in
test_conv_dgrad.py / test_conv_wgrad.py)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import nchw, nhwc, put

import cuconv
from cuconv.dtypes import tag

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
    return _problem_of(CASES[case], dtype)


def _problem_of(case, dtype):
    N, C, H, W, M, R, S, st, pd, dl = case
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


# --------------------------------------------------------------------------- float16/bfloat16, NHWC
HALF = ("float16", "bfloat16")
# The cases above plus one long enough (N·P·Q = 3200) for 3 wgrad splits.
GRAD_CASES = {**CASES, "split_40x40_C8_N2": (2, 8, 40, 40, 1, 3, 3, 1, 1, 1)}
LAYOUT_DTYPES = [(dt, "NCHW") for dt in HALF] + [(dt, "NHWC") for dt in (*HALF, "float32", "float64")]


def _check_gradients(be, rng, p, dtype, layout, what, splits=(1, 3)):
    """dx, dW and db of ``p`` through the depthwise algorithm in ``layout`` against the float64
    references of fresh inputs; the kernels the weight gradients ran."""
    x = random_array(rng, p.input_shape, dtype)
    w = random_array(rng, p.weight_shape, dtype)
    dy = random_array(rng, p.output_shape, dtype)
    args = ((p.stride_h, p.stride_w), (p.pad_h, p.pad_w), (p.dilation_h, p.dilation_w), p.groups)
    cv, back = (nhwc, nchw) if layout == "NHWC" else ((lambda a: a), (lambda a: a))
    tol_d, tol_w = ((dtype, "depthwise_grad"),) * 2 if dtype in HALF else ((dtype, "dgrad"), (dtype, "wgrad"))
    dx = put(be, np.empty(cv(np.empty(p.input_shape, np.float32)).shape, x.dtype))
    poison(dx)
    plan = select(spec_of(p, DGRAD, layout=layout), "depthwise")
    plan.run(put(be, cv(w)), put(be, cv(dy)), dx=dx)
    assert plan.kernels == [dwg.dgrad_name(dtype, layout)] or (layout == "NCHW" and plan.kernels[0].startswith(
        "depthwise_grad_dgrad")), plan.kernels
    ref = conv2d_input_ref(p.input_shape, w, dy, *args)
    assert_close(back(be.to_numpy(dx)), ref, *tol_d, what=f"{what} dx")
    kernels = set()
    for n in splits:
        dw = put(be, np.empty(cv(w).shape, x.dtype))
        db = put(be, np.empty((p.K,), x.dtype))
        poison(dw)
        poison(db)
        plan = select(spec_of(p, WGRAD, layout=layout, has_bias=True, splits=n), "depthwise")
        plan.run(put(be, cv(x)), put(be, cv(dy)), dw=dw, db=db)
        kernels.update(plan.kernels)
        assert_close(back(be.to_numpy(dw)), conv2d_weight_ref(x, p.weight_shape, dy, *args), *tol_w,
                     what=f"{what} dW {plan.description}")
        assert_close(be.to_numpy(db), conv2d_bias_ref(dy), *tol_w, what=f"{what} db {plan.description}")
    return kernels


@pytest.mark.parametrize("dtype,layout", LAYOUT_DTYPES, ids=[f"{d}-{l}" for d, l in LAYOUT_DTYPES])
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_16bit_and_nhwc_gradients(be, rng, case, dtype, layout):
    p = _problem_of(GRAD_CASES[case], dtype)
    kernels = _check_gradients(be, rng, p, dtype, layout, case)
    # splits=3 (when N·P·Q allows it): fp32 partials (16-bit) or T partials, then the reduction.
    wg = dwg.wgrad_name(dtype, layout)
    reduce = f"tc_grad_reduce_{tag(dtype)}" if dtype in HALF else f"conv_wgrad_splitk_reduce_{tag(dtype)}"
    split = {wg, dwg.wgrad_name(dtype, layout, split=True), reduce}
    assert kernels == split if case.startswith("split") else wg in kernels and kernels <= split, kernels


@pytest.mark.parametrize("dtype,layout", LAYOUT_DTYPES, ids=[f"{d}-{l}" for d, l in LAYOUT_DTYPES])
def test_gradient_nan_rules(be, rng, dtype, layout):
    """docs/semantics.md, against torch (float64 autograd on the same values): dx has no term for a
    tap that misses dy (an Inf weight leaves the dx elements it does not reach finite); dW's padded
    taps multiply dy·0 (NaN for a non-finite dy)."""
    torch = pytest.importorskip("torch")
    p = _problem_of((1, 5, 9, 8, 1, 3, 3, 2, 1, 1), dtype)
    x = random_array(rng, p.input_shape, dtype)
    w = random_array(rng, p.weight_shape, dtype)
    dy = random_array(rng, p.output_shape, dtype)
    w[1, 0, 2, 2] = np.inf
    dy[0, 3, 0, 0] = np.nan
    x[0, 4, 4, 4] = -np.inf

    def grads(x, w, dy):
        xt, wt = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (x, w))
        y = torch.nn.functional.conv2d(xt, wt, stride=2, padding=1, groups=p.C)
        dyt = torch.from_numpy(dy.astype(np.float64))
        return [g.numpy() for g in torch.autograd.grad(y, (xt, wt), dyt)] + [dyt.sum((0, 2, 3)).numpy()]

    fin = (lambda a: np.where(np.isfinite(a.astype(np.float64)), np.abs(a.astype(np.float64)), 0.0))
    want, scale = grads(x, w, dy), grads(fin(x), fin(w), fin(dy))
    assert np.isnan(want[0]).any() and np.isfinite(want[0]).any() and np.isnan(want[1]).any()
    cv, back = (nhwc, nchw) if layout == "NHWC" else ((lambda a: a), (lambda a: a))
    tol = (dtype, "depthwise_grad") if dtype in HALF else (dtype, "dgrad")
    dx = put(be, np.empty(cv(x).shape, x.dtype))
    dw = put(be, np.empty(cv(w).shape, x.dtype))
    db = put(be, np.empty((p.K,), x.dtype))
    for a in (dx, dw, db):
        poison(a)
    select(spec_of(p, DGRAD, layout=layout), "depthwise").run(put(be, cv(w)), put(be, cv(dy)), dx=dx)
    select(spec_of(p, WGRAD, layout=layout, has_bias=True), "depthwise").run(put(be, cv(x)), put(be, cv(dy)),
                                                                              dw=dw, db=db)
    for name, got, i in (("dx", back(be.to_numpy(dx)), 0), ("dW", back(be.to_numpy(dw)), 1), ("db", db, 2)):
        assert_close(got, want[i], *tol, what=f"{name} {dtype} {layout}", scale=scale[i])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", HALF)
def test_auto_takes_depthwise_gradients_in_16bit(dtype, layout):
    """The backward of a 16-bit depthwise layer: the depthwise kernels under auto (not the tensor
    cores), dx with no workspace, dW with fp32 split partials only (splits·(K·R·S + K)·4 bytes)."""
    p = Conv2dProblem(32, 192, 150, 150, 192, 3, 3, pad_h=1, pad_w=1, groups=192, dtype=dtype)
    with cuconv.backend("record"):
        d = select(spec_of(p, DGRAD, layout=layout))
        wg = select(spec_of(p, WGRAD, layout=layout, has_bias=True))
    assert d.algo == "depthwise" and d.workspace_bytes == 0 and d.kernels == [dwg.dgrad_name(dtype, layout)]
    assert wg.algo == "depthwise" and wg.kernels[0].startswith(dwg.wgrad_name(dtype, layout))
    assert wg.workspace_bytes <= 65535 * (p.K * 9 + p.K) * 4
    sched = dwg.wgrad_schedule(p, 132, None, True, layout=layout, cc=75)
    assert (sched.splits == 1) == (dtype == "bfloat16")   # no bf16 tc_grad_reduce below sm_80


def _grad_order_cases():
    kernels = [("float16", "NCHW"), ("bfloat16", "NHWC"), ("float32", "NHWC"), ("float64", "NHWC")]
    for mode, tag_ in ((dict(sanitize="address,undefined", order="reverse"), "asan_ubsan_reverse"),
                       (dict(order="random", seed=7), "random_order")):
        for dtype, layout in kernels:
            yield pytest.param(mode, dtype, layout, id=f"{tag_}-{dtype}-{layout}")


@pytest.mark.parametrize("mode,dtype,layout", list(_grad_order_cases()))
def test_gradients_under_emulator_checks(rng, mode, dtype, layout):
    """The new gradient kernels (16-bit NCHW tile and wgrad with fp32 partials, NHWC dgrad/wgrad)
    under ASan/UBSan with threads in reverse order, and in a random order; 3 wgrad splits."""
    p = _problem_of((2, 5, 40, 33, 2, 3, 3, 2, 1, 1), dtype)
    with cuconv.backend("emulator", **mode) as be:
        _check_gradients(be, rng, p, dtype, layout, f"{mode}")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", HALF)
def test_16bit_weight_gradient_of_an_empty_batch_is_zeros(dtype, layout):
    """N = 0: one split of the wgrad kernel sums nothing into dW = 0 and db = 0 (no zero-fill
    kernel is built for the 16-bit types, and no reduction: bf16 on sm_75 plans it too)."""
    p = _problem_of((0, 4, 7, 7, 1, 3, 3, 1, 1, 1), dtype)
    cv = nhwc if layout == "NHWC" else (lambda a: a)
    with cuconv.backend("emulator"):
        plan = select(spec_of(p, WGRAD, layout=layout, has_bias=True), "depthwise")
        x = np.zeros(cv(np.zeros(p.input_shape)).shape, random_array(np.random.default_rng(0), (1,), dtype).dtype)
        dw = np.empty(cv(np.zeros(p.weight_shape)).shape, x.dtype)
        db = np.empty((p.K,), x.dtype)
        poison(dw)
        poison(db)
        plan.run(x, np.zeros(cv(np.zeros(p.output_shape)).shape, x.dtype), dw=dw, db=db)
    assert plan.kernels == [dwg.wgrad_name(dtype, layout)] and plan.workspace_bytes == 0
    assert not np.asarray(dw, np.float64).any() and not np.asarray(db, np.float64).any()
