"""The gradients in NHWC (issue 25 item 3, CUDA cores): ``layout="NHWC"`` on every
``cuconv.grad`` convolution function and its ``plan_*``, and the float32/float64 kernels of
kernels/conv_dgrad.cu and conv_wgrad.cu that read dy/x NHWC and w KRSC and write dx NHWC and dW
KRSC in place (the ``_nhwc`` configs). Every NHWC config against the float64 reference (the
NCHW answer transposed) on awkward shapes, into poisoned outputs; non-finite weights over dy's
border (the true-terms reference); the same bits as the NCHW kernels; sanitizers and thread
orders; auto's choice (native, no conversion step); the public functions end to end for every
algorithm that lists itself as able; the validation messages."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import put
from test_conv_dgrad import CASES as DGRAD_CASES
from test_conv_dgrad import check_true_terms, nonfinite_border_case
from test_conv_wgrad import CASES as WGRAD_CASES

import cuconv
from cuconv import grad as G
from cuconv.ops import conv_dgrad as dg
from cuconv.ops import conv_wgrad as wg
from cuconv.ops._algorithm import DGRAD, WGRAD
from cuconv.ops.conv2d import select, spec_of
from cuconv.problem import Conv2dProblem, ConvTransposeProblem
from cuconv.reference import conv2d_bias_ref, conv2d_input_ref, conv2d_weight_ref, conv_problem
from cuconv.testing import assert_close, poison, random_array

DTYPES = ["float32", "float64"]
CONVERSIONS = ("pack", "transpose", "copy")


def nhwc(a):
    """An N,C,H,W (or K,C,R,S) array as N,H,W,C (K,R,S,C), contiguous."""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _problem(case, dtype) -> Conv2dProblem:
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    return conv_problem((N, C, H, W), (K, C // groups, R, S), stride, padding, dilation, groups, dtype)


def _pad(p):
    return ((p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right))


def _dx_ref(p, w, dy):
    return conv2d_input_ref(p.input_shape, w, dy, (p.stride_h, p.stride_w), _pad(p), (p.dilation_h, p.dilation_w),
                            p.groups)


def _dw_ref(p, x, dy):
    return conv2d_weight_ref(x, p.weight_shape, dy, (p.stride_h, p.stride_w), _pad(p), (p.dilation_h, p.dilation_w),
                             p.groups)


def _poisoned(be, shape, dtype):
    a = be.empty(shape, dtype)
    poison(a)
    return a


def _no_conversion(plan):
    steps = [k for k in plan.kernels if any(c in k for c in CONVERSIONS)]
    assert not steps, f"an NHWC plan with conversion steps: {steps}"


# --------------------------------------------------------------------------- dgrad kernels
def _dgrad_variants(dtype):
    return [dg.DIRECT_NHWC[dtype].name] + [c.name for c in dg.GEMM_CONFIGS_NHWC if c.dtype == dtype]


def _dgrad_plan(p, variant):
    if variant == dg.DIRECT_NHWC[p.dtype].name:
        return select(spec_of(p, DGRAD, layout="NHWC"), "direct")
    return select(spec_of(p, DGRAD, layout="NHWC", config=variant), "implicit_gemm")


def _dgrad_run(be, p, w, dy, variant):
    """dx (NCHW-ordered for comparison) of the NHWC kernel ``variant`` on the NCHW-ordered w, dy."""
    plan = _dgrad_plan(p, variant)
    assert plan.kernels == [variant]
    _no_conversion(plan)
    dx = _poisoned(be, (p.N, p.H, p.W, p.C), p.dtype)
    assert plan.run(put(be, nhwc(w)), put(be, nhwc(dy)), dx=dx) is dx
    return np.moveaxis(be.to_numpy(dx), -1, 1)


DGRAD_PARAMS = [pytest.param(case, dt, v, id=f"{case}-{v}") for dt in DTYPES for case in DGRAD_CASES
                for v in _dgrad_variants(dt)]


@pytest.mark.parametrize("case,dtype,variant", DGRAD_PARAMS)
def test_nhwc_dgrad_matches_reference(be, rng, case, dtype, variant):
    p = _problem(DGRAD_CASES[case], dtype)
    w, dy = random_array(rng, p.weight_shape, dtype), random_array(rng, p.output_shape, dtype)
    assert_close(_dgrad_run(be, p, w, dy, variant), _dx_ref(p, w, dy), dtype, "dgrad", what=f"{case} {variant}")


@pytest.mark.parametrize("dtype,variant", [(dt, v) for dt in DTYPES for v in _dgrad_variants(dt)])
def test_nhwc_dgrad_nonfinite_weight_over_dy_border(be, rng, dtype, variant):
    """As the NCHW test: an Inf/NaN weight tap whose dy row or column lies outside dy is no term
    of that dx element; the NHWC epilogue's recompute reads KRSC/NHWC."""
    p, w, dy = nonfinite_border_case(rng, dtype)
    check_true_terms(_dgrad_run(be, p, w, dy, variant), p, w, dy, variant)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["stride3_C13_K9", "asymmetric_padding_stride2", "rect_stride2x3_dil2x1",
                                  "dilation2_groups2"])
def test_nhwc_dgrad_same_bits_as_nchw(be, rng, case, dtype):
    """The NHWC configs gather with other strides but sum the same terms in the same order: the
    same bits as the NCHW kernel of the same tile (and as each other)."""
    p = _problem(DGRAD_CASES[case], dtype)
    w, dy = random_array(rng, p.weight_shape, dtype), random_array(rng, p.output_shape, dtype)
    base = None
    for cfg in (dg.DIRECT[dtype], *(c for c in dg.GEMM_CONFIGS if c.dtype == dtype)):
        algo, opts = ("direct", {}) if cfg in dg.DIRECT.values() else ("implicit_gemm", {"config": cfg.name})
        ref = _poisoned(be, p.input_shape, dtype)
        select(spec_of(p, DGRAD, **opts), algo).run(put(be, w), put(be, dy), dx=ref)
        twin = dg.DIRECT_NHWC[dtype].name if algo == "direct" else replace(cfg, layout="NHWC", main=False).name
        got = _dgrad_run(be, p, w, dy, twin)
        np.testing.assert_array_equal(got, be.to_numpy(ref), err_msg=twin)
        base = got if base is None else base
        np.testing.assert_array_equal(got, base, err_msg=twin)


# --------------------------------------------------------------------------- wgrad kernels
def _wgrad_variants(dtype):
    vs = [(wg.DIRECT_NHWC[dtype].name, True, None)]
    for c in wg.GEMM_CONFIGS_NHWC:
        if c.dtype == dtype:
            vs += [(c.name, not c.atomic, 1), (c.name, not c.atomic, 3)]
    return vs


def _wgrad_run(be, p, x, dy, variant, deterministic=True, splits=None, bias=True):
    """(dW NCHW-ordered, db, plan) of the NHWC kernel ``variant`` on NCHW-ordered x, dy."""
    if variant == wg.DIRECT_NHWC[p.dtype].name:
        algo, opts = "direct", {}
    else:
        algo, opts = "implicit_gemm", {"config": variant, **({} if splits is None else {"splits": splits})}
    plan = select(spec_of(p, WGRAD, layout="NHWC", has_bias=bias, deterministic=deterministic, **opts), algo)
    assert variant in plan.kernels
    _no_conversion(plan)
    dw = _poisoned(be, (p.K, p.R, p.S, p.C_per_group), p.dtype)
    db = _poisoned(be, (p.K,), p.dtype) if bias else None
    plan.run(put(be, nhwc(x)), put(be, nhwc(dy)), dw=dw, **({"db": db} if bias else {}))
    return np.moveaxis(be.to_numpy(dw), -1, 1), (be.to_numpy(db) if bias else None), plan


WGRAD_PARAMS = [pytest.param(case, dt, v, det, n, id=f"{case}-{v}-splits{n}")
                for dt in DTYPES for case in WGRAD_CASES for v, det, n in _wgrad_variants(dt)]


@pytest.mark.parametrize("case,dtype,variant,deterministic,splits", WGRAD_PARAMS)
def test_nhwc_wgrad_and_fused_bias_match_reference(be, rng, case, dtype, variant, deterministic, splits):
    p = _problem(WGRAD_CASES[case], dtype)
    x, dy = random_array(rng, p.input_shape, dtype), random_array(rng, p.output_shape, dtype)
    dw, db, plan = _wgrad_run(be, p, x, dy, variant, deterministic, splits)
    assert_close(dw, _dw_ref(p, x, dy), dtype, "wgrad", what=f"{case} {plan.description} dW")
    assert_close(db, conv2d_bias_ref(dy), dtype, "wgrad", what=f"{case} {plan.description} db")


@pytest.mark.parametrize("dtype", DTYPES)
def test_nhwc_wgrad_same_bits_as_nchw(be, rng, dtype):
    """The KRSC column order changes where a column's products land, not their order: dW and db
    are the NCHW kernel's bits (deterministic configs, one and three splits)."""
    p = _problem(WGRAD_CASES["rect_stride2x3_dil2x1_CRS_over_64"], dtype)
    x, dy = random_array(rng, p.input_shape, dtype), random_array(rng, p.output_shape, dtype)
    for cfg in (c for c in wg.GEMM_CONFIGS if c.dtype == dtype and not c.atomic):
        for splits in (1, 3):
            plan = select(spec_of(p, WGRAD, has_bias=True, config=cfg.name, splits=splits), "implicit_gemm")
            dw, db = _poisoned(be, p.weight_shape, dtype), _poisoned(be, (p.K,), dtype)
            plan.run(put(be, x), put(be, dy), dw=dw, db=db)
            twin = replace(cfg, layout="NHWC", main=False)
            assert twin in wg.GEMM_CONFIGS_NHWC
            got_w, got_b, _ = _wgrad_run(be, p, x, dy, twin.name, True, splits)
            np.testing.assert_array_equal(got_w, be.to_numpy(dw), err_msg=twin.name)
            np.testing.assert_array_equal(got_b, be.to_numpy(db), err_msg=twin.name)


# --------------------------------------------------------------------------- sanitizers, orders
@pytest.mark.parametrize("mode", [
    pytest.param(dict(sanitize="address,undefined", order="reverse"), id="asan_ubsan_reverse"),
    pytest.param(dict(order="random", seed=11), id="random"),
])
@pytest.mark.parametrize("kind,variant,case,dtype", [
    ("dgrad", "conv_dgrad_direct_f64_nhwc_256", "asymmetric_padding_stride2", "float64"),
    ("dgrad", "conv_dgrad_implicit_gemm_f32_nhwc_128x64x8_8x4", "C70_two_column_tiles", "float32"),
    ("dgrad", "conv_dgrad_implicit_gemm_f32_nhwc_64x64x8_4x4", "rect_stride2x3_dil2x1", "float32"),
    ("dgrad", "conv_dgrad_implicit_gemm_f64_nhwc_64x64x8_4x4", "dilation2_groups2", "float64"),
    ("dgrad", "conv_dgrad_implicit_gemm_f32_nhwc_128x128x8_8x8_s4", "asymmetric_padding_stride2", "float32"),
    ("dgrad", "conv_dgrad_implicit_gemm_f64_nhwc_64x64x8_8x8_s4", "stride3_C13_K9", "float64"),
    ("wgrad", "conv_wgrad_direct_f32_nhwc_256", "dilation2_groups2", "float32"),
    ("wgrad", "conv_wgrad_implicit_gemm_f32_nhwc_128x64x8_8x4", "stride3_K70_two_row_tiles", "float32"),
    ("wgrad", "conv_wgrad_implicit_gemm_f64_nhwc_64x64x8_4x4", "asymmetric_padding_stride2", "float64"),
    ("wgrad", "conv_wgrad_implicit_gemm_f32_nhwc_128x128x8_8x8_s4", "rect_stride2x3_dil2x1_CRS_over_64", "float32"),
    ("wgrad", "conv_wgrad_implicit_gemm_f64_nhwc_64x64x8_8x8_s4", "dilation2_groups2", "float64"),
    ("wgrad", "conv_wgrad_implicit_gemm_atomic_f32_nhwc_64x64x8_4x4", "C1", "float32"),
])
def test_nhwc_under_emulator_checks(rng, mode, kind, variant, case, dtype):
    """ASan/UBSan catch a load past dy, w, x or the shared tiles (the NHWC strides, the KRSC
    tap offsets); reversed/random thread order a missing barrier (the NHWC epilogue's slots)."""
    with cuconv.backend("emulator", **mode) as be:
        if kind == "dgrad":
            p = _problem(DGRAD_CASES[case], dtype)
            w, dy = random_array(rng, p.weight_shape, dtype), random_array(rng, p.output_shape, dtype)
            assert_close(_dgrad_run(be, p, w, dy, variant), _dx_ref(p, w, dy), dtype, "dgrad", what=variant)
        else:
            p = _problem(WGRAD_CASES[case], dtype)
            x, dy = random_array(rng, p.input_shape, dtype), random_array(rng, p.output_shape, dtype)
            dw, db, _ = _wgrad_run(be, p, x, dy, variant, "atomic" not in variant, 3)
            assert_close(dw, _dw_ref(p, x, dy), dtype, "wgrad", what=variant)
            assert_close(db, conv2d_bias_ref(dy), dtype, "wgrad", what=variant)


# --------------------------------------------------------------------------- auto
def test_auto_takes_the_native_nhwc_kernels():
    """auto on an NHWC float32/float64 gradient: the NHWC configs of the NCHW rules (no
    conversion step); the algorithms without NHWC kernels list themselves as unable, saying so."""
    wide = Conv2dProblem(8, 64, 56, 56, 64, 3, 3, pad_h=1, pad_w=1)
    narrow = Conv2dProblem(2, 3, 9, 7, 10, 3, 3, stride_h=2, stride_w=2, pad_h=1, pad_w=1)
    with cuconv.backend("record"):
        for p, dx_kernel, dw_kernels in (
                (wide, "conv_dgrad_implicit_gemm_f32_nhwc_128x64x8_8x4",
                 ["conv_wgrad_implicit_gemm_f32_nhwc_64x64x8_4x4"]),
                (wide.with_(dtype="float64"), "conv_dgrad_implicit_gemm_f64_nhwc_64x64x8_4x4",
                 ["conv_wgrad_implicit_gemm_f64_nhwc_64x64x8_4x4"]),
                (narrow, "conv_dgrad_direct_f32_nhwc_256", ["conv_wgrad_implicit_gemm_f32_nhwc_64x64x8_4x4"])):
            dx_plan = select(spec_of(p, DGRAD, layout="NHWC"))
            dw_plan = select(spec_of(p, WGRAD, layout="NHWC", has_bias=True))
            assert dx_plan.kernels == [dx_kernel], p.describe()
            assert [k for k in dw_plan.kernels if "reduce" not in k] == dw_kernels, p.describe()
            for plan in (dx_plan, dw_plan):
                _no_conversion(plan)
            for which in G.WHICH:
                rows = {i.name: i for i in G.algorithms(p, which, layout="NHWC")}
                assert rows["direct"].ok and rows["implicit_gemm"].ok
                assert all(i.ok or i.reason for i in rows.values())
        # an algorithm without NHWC kernels says so (ConvAlgorithm.refusal) and auto passes it over
        for which in G.WHICH:
            for info in G.algorithms(wide.with_(dtype="float16"), which, layout="NHWC"):
                if info.name in ("direct", "implicit_gemm"):
                    assert not info.ok and "dtype float16 not supported" in info.reason
                elif info.name.startswith("implicit_gemm_tc"):    # until their NHWC kernels exist
                    assert info.ok or "layout NHWC not supported (takes NCHW)" in info.reason, info


# --------------------------------------------------------------------------- the public functions
# (x shape NCHW, w shape KCRS, stride, padding, dilation, groups)
API_CASES = {
    "stride2_C3": ((2, 3, 9, 7), (10, 3, 3, 3), 2, 1, 1, 1),
    "stride3_C13_K9": ((1, 13, 11, 10), (9, 13, 3, 3), 3, 1, 1, 1),
    "dilation2_groups2": ((2, 6, 9, 9), (6, 3, 3, 3), 1, 2, 2, 2),
    "C1_asymmetric_same": ((1, 1, 8, 9), (4, 1, 4, 2), 1, "same", 1, 1),
    "C16_groups2_stride2": ((2, 16, 9, 8), (10, 8, 3, 3), 2, 1, 1, 2),
}


def _draw_api(rng, case, dtype):
    xs, ws, stride, padding, dilation, groups = API_CASES[case]
    p = Conv2dProblem.from_shapes(xs, ws, stride, padding, dilation, groups, dtype)
    return (p, random_array(rng, xs, dtype), random_array(rng, ws, dtype), random_array(rng, p.output_shape, dtype),
            (stride, padding, dilation, groups))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", API_CASES)
def test_every_able_algorithm_end_to_end(be, rng, case, dtype):
    """cuconv.grad.conv2d_input / conv2d_weight / conv2d_backward / conv2d_bias with
    layout="NHWC", every algorithm ``algorithms(..., layout="NHWC")`` lists as able (and auto),
    into poisoned ``out=``: the float64 NCHW answer transposed."""
    p, x, w, dy, args = _draw_api(rng, case, dtype)
    rdx, rdw, rdb = _dx_ref(p, w, dy), _dw_ref(p, x, dy), conv2d_bias_ref(dy)
    X, Wt, DY = put(be, nhwc(x)), put(be, nhwc(w)), put(be, nhwc(dy))
    for which, ref in (("input", rdx), ("weight", rdw)):
        able = [i.name for i in G.algorithms(p, which, layout="NHWC") if i.ok]
        assert {"direct", "implicit_gemm"} <= set(able)
        for algo in [*able, "auto"]:
            out = _poisoned(be, nhwc(ref).shape, dtype)
            if which == "input":
                got = G.conv2d_input(tuple(nhwc(x).shape), Wt, DY, *args, algo=algo, layout="NHWC", out=out)
                plan = G.plan_conv2d_input(tuple(nhwc(x).shape), Wt, DY, *args, algo=algo, layout="NHWC")
            else:
                got = G.conv2d_weight(X, tuple(nhwc(w).shape), DY, *args, algo=algo, layout="NHWC", out=out)
                plan = G.plan_conv2d_weight(X, tuple(nhwc(w).shape), DY, *args, algo=algo, layout="NHWC")
            assert got is out
            _no_conversion(plan)
            assert_close(np.moveaxis(be.to_numpy(got), -1, 1), ref, dtype, "dgrad" if which == "input" else "wgrad",
                         what=f"{case} {which} {algo}")
    dx, dw, db = G.conv2d_backward(X, Wt, DY, *args, layout="NHWC")
    plan = G.plan_conv2d_backward(X, Wt, DY, *args, layout="NHWC")
    _no_conversion(plan)
    assert [o.shape for o in plan.outputs] == [nhwc(x).shape, nhwc(w).shape, (p.K,)]
    assert_close(np.moveaxis(be.to_numpy(dx), -1, 1), rdx, dtype, "dgrad", what="conv2d_backward dx")
    assert_close(np.moveaxis(be.to_numpy(dw), -1, 1), rdw, dtype, "wgrad", what="conv2d_backward dw")
    assert_close(be.to_numpy(db), rdb, dtype, "wgrad", what="conv2d_backward db")
    _, dw2, db2 = G.conv2d_backward(X, Wt, DY, *args, layout="NHWC", output_mask=(False, False, True))
    assert dw2 is None
    db_out = _poisoned(be, (p.K,), dtype)
    assert G.conv2d_bias(DY, layout="NHWC", out=db_out) is db_out
    for got in (db2, db_out):
        assert_close(be.to_numpy(got), rdb, dtype, "wgrad", what="conv2d_bias NHWC")


def test_nhwc_bias_is_the_nchw_bits(rng):
    """conv2d_bias in NHWC: the same kernel over N·P·Q rows of one element per channel, the same
    order of terms: the NCHW call's bits."""
    dy = random_array(rng, (3, 7, 5, 6), "float32")
    with cuconv.backend("emulator"):
        assert np.array_equal(G.conv2d_bias(nhwc(dy), layout="NHWC"), G.conv2d_bias(dy))
        assert G.plan_conv2d_bias(nhwc(dy), layout="NHWC").kernels == ["conv_wgrad_bias_f32_256"]
        assert np.array_equal(G.conv2d_bias(nhwc(dy)[0], layout="NHWC"), G.conv2d_bias(dy[:1]))   # unbatched


def test_unbatched_and_empty_nhwc(rng):
    p, x, w, dy, args = _draw_api(rng, "dilation2_groups2", "float32")
    x1, dy1 = nhwc(x[:1]), nhwc(dy[:1])
    with cuconv.backend("emulator"):
        dx1 = G.conv2d_input(x1.shape, nhwc(w), dy1, *args, layout="NHWC")
        assert np.array_equal(G.conv2d_input(x1.shape[1:], nhwc(w), dy1[0], *args, layout="NHWC"), dx1[0])
        dw1 = G.conv2d_weight(x1, nhwc(w).shape, dy1, *args, layout="NHWC")
        assert np.array_equal(G.conv2d_weight(x1[0], nhwc(w).shape, dy1[0], *args, layout="NHWC"), dw1)
        e = (0, *x1.shape[1:])
        ey = np.empty((0, *dy1.shape[1:]), np.float32)
        assert G.conv2d_input(e, nhwc(w), ey, *args, layout="NHWC").shape == e
        dw0, db0 = G.conv2d_backward(np.empty(e, np.float32), nhwc(w), ey, *args, layout="NHWC",
                                     output_mask=(False, True, True))[1:]
        assert dw0.shape == nhwc(w).shape and not dw0.any() and db0.shape == (p.K,) and not db0.any()


def test_conv_transpose_gradients_in_nhwc(rng):
    """conv_transpose2d_input / _weight with layout="NHWC" (weight C_in, R, S, C_out/groups): the
    NCHW results transposed, natively planned."""
    tp = ConvTransposeProblem.from_shapes((2, 6, 5, 4), (6, 2, 3, 3), 2, 1, 1, 3, 1, "float32")
    x, w = random_array(rng, tp.input_shape, "float32"), random_array(rng, (6, 2, 3, 3), "float32")
    dy = random_array(rng, tp.output_shape, "float32")
    args = (2, 1, 1, 3, 1)
    with cuconv.backend("emulator"):
        dx = G.conv_transpose2d_input(x.shape, w, dy, *args)
        dxn = G.conv_transpose2d_input(nhwc(x).shape, nhwc(w), nhwc(dy), *args, layout="NHWC")
        plan = G.plan_conv_transpose2d_input(nhwc(x).shape, nhwc(w), nhwc(dy), *args, layout="NHWC")
        dw = G.conv_transpose2d_weight(x, w.shape, dy, *args)
        dwn = G.conv_transpose2d_weight(nhwc(x), nhwc(w).shape, nhwc(dy), *args, layout="NHWC")
        wplan = G.plan_conv_transpose2d_weight(nhwc(x), nhwc(w).shape, nhwc(dy), *args, layout="NHWC")
    assert_close(dxn, nhwc(dx), "float32", "dgrad", what="conv_transpose2d_input NHWC")
    assert_close(dwn, nhwc(dw), "float32", "wgrad", what="conv_transpose2d_weight NHWC")
    assert any("nhwc" in k for k in plan.kernels) and any("nhwc" in k for k in wplan.kernels)
    _no_conversion(plan)
    _no_conversion(wplan)


def test_nhwc_arguments_are_checked_before_launch(rng):
    p, x, w, dy, args = _draw_api(rng, "stride2_C3", "float32")
    xs, ws, dys = nhwc(x).shape, nhwc(w).shape, nhwc(dy).shape      # (2, 9, 7, 3), (10, 3, 3, 3), (2, 5, 4, 10)
    with cuconv.backend("record") as rec:
        with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 5, 4, 10\) .*as N,P,Q,K.*got "
                                             r"\(2, 10, 5, 4\).*layout NHWC"):
            G.conv2d_input(xs, nhwc(w), dy, *args, layout="NHWC")        # an NCHW dy
        with pytest.raises(ValueError, match=r"input channels.*layout NHWC: input \(2, 3, 9, 7\) read as N,H,W,C"):
            G.conv2d_weight(x, ws, nhwc(dy), *args, layout="NHWC")      # an NCHW x
        with pytest.raises(ValueError, match=r"out must have shape \(2, 9, 7, 3\)"):
            G.conv2d_input(xs, nhwc(w), nhwc(dy), *args, layout="NHWC", out=np.empty(x.shape, np.float32))
        with pytest.raises(ValueError, match=r"out must have shape \(10, 3, 3, 3\)"):
            G.conv2d_weight(nhwc(x), ws, nhwc(dy), *args, layout="NHWC", out=np.empty((10, 3, 3, 4), np.float32))
        with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC', got 'NCWH'"):
            G.conv2d_backward(nhwc(x), nhwc(w), nhwc(dy), *args, layout="NCWH")
        with pytest.raises(ValueError, match="layout must be"):
            G.conv2d_bias(nhwc(dy), layout="nhwc")
        with pytest.raises(ValueError, match=r"unknown dgrad implicit_gemm config .*\(layout NHWC\)"):
            G.conv2d_input(xs, nhwc(w), nhwc(dy), *args, algo="implicit_gemm", layout="NHWC",
                           config="conv_dgrad_implicit_gemm_f32_64x64x8_4x4")      # the NCHW config
    assert rec.launches == []
