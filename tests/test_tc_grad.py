"""float16 / bfloat16 conv2d gradients on tensor cores (kernels/tc_grad.cu + tc_conv.cu;
cuconv.ops.tc_grad), launched through their plans, against the float64 §9.8 references of the
same (rounded) inputs: dgrad
by stride phases through the forward's tiled and simple kernels, the split-K simple wgrad with
its deterministic fp32 reduction, the bias gradient; phase bookkeeping against brute force."""
from __future__ import annotations

import dataclasses
import sys

import ml_dtypes
import numpy as np
import pytest
from conftest import put
from test_conv_dgrad import _true_terms_ref

import cuconv
from cuconv import grad as G
from cuconv.ops import tc_grad as tg
from cuconv.ops._algorithm import DGRAD, WGRAD
from cuconv.ops._grad import split_chunk
from cuconv.ops.conv2d import select, spec_of
from cuconv.reference import conv2d_bias_ref, conv2d_input_ref, conv2d_ref, conv2d_weight_ref, conv_problem
from cuconv.testing import assert_close, nonfinite_mismatch, poison

DT = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
CASES = {
    "3x3_stride1": (1, 8, 9, 7, 16, 3, 3, 1, 1, 1, 1),
    "3x3_stride2_groups2": (2, 16, 9, 7, 24, 3, 3, 2, 1, 1, 2),
    "stem_7x7_stride2": (1, 8, 11, 9, 8, 7, 7, 2, 3, 1, 1),
    "1x1_stride2_empty_phases": (1, 16, 8, 9, 8, 1, 1, 2, 0, 1, 1),
    "rect_stride2x3_dil2x1_odd_C": (1, 5, 10, 9, 16, 3, 2, (2, 3), (1, 0), (2, 1), 1),
}


def _draw(rng, case, dtype):
    N, C, H, W, K, R, S, st, pd, dl, g = CASES[case]
    p = conv_problem((N, C, H, W), (K, C // g, R, S), st, pd, dl, g, dtype)
    arr = lambda shape: rng.uniform(-1, 1, size=shape).astype(DT[dtype])   # noqa: E731
    return p, arr(p.input_shape), arr(p.weight_shape), arr(p.output_shape)


def _args(p):
    return ((p.stride_h, p.stride_w), ((p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right)),
            (p.dilation_h, p.dilation_w), p.groups)


def f64(a):
    return np.asarray(a).astype(np.float64)


ALGO = {"auto": "implicit_gemm_tc", "simple": "implicit_gemm_tc_simple"}


def _dgrad(be, p, w, dy, variant="auto", dx=None):
    """dx through the tensor-core DGRAD plan of ``variant`` ("auto": the tiled kernels, "simple");
    returns the plan."""
    plan = select(spec_of(p, DGRAD), ALGO[variant])
    plan.run(put(be, w), put(be, dy), dx=dx)
    return plan


def _wgrad(be, p, x, dy, dw, db=None, splits=None, variant="auto", max_workspace_bytes=None):
    """dW (and db) through the tensor-core WGRAD plan; returns the plan."""
    options = {} if splits is None else {"splits": splits}
    plan = select(spec_of(p, WGRAD, has_bias=db is not None, max_workspace_bytes=max_workspace_bytes, **options),
                  ALGO[variant])
    plan.run(put(be, x), put(be, dy), dw=dw, **({"db": db} if db is not None else {}))
    return plan


def _splits(plan) -> int:
    return max(ln.grid[1] for ln in plan.launches)


@pytest.mark.parametrize("variant", ["auto", "simple"])
@pytest.mark.parametrize("dtype", list(DT))
@pytest.mark.parametrize("case", list(CASES))
def test_tc_dgrad(be, rng, case, dtype, variant):
    p, _, w, dy = _draw(rng, case, dtype)
    dx = be.empty(p.input_shape, DT[dtype])
    poison(dx)
    plan = _dgrad(be, p, w, dy, variant, dx)
    convolutions = [k for k in plan.kernels if k.startswith("tc_conv") and "pack" not in k]   # the phases' own
    assert convolutions and all(k.startswith("tc_conv_simple") == (variant == "simple") for k in convolutions)
    ref = conv2d_input_ref(p.input_shape, f64(w), f64(dy), *_args(p))
    assert_close(f64(be.to_numpy(dx)), ref, dtype, "tc_grad", what=f"{case} {variant}")


@pytest.mark.parametrize("variant,splits", [("auto", 1), ("auto", 2), ("simple", 3)])
@pytest.mark.parametrize("dtype", list(DT))
@pytest.mark.parametrize("case", list(CASES))
def test_tc_wgrad_and_bias(be, rng, case, dtype, variant, splits):
    p, x, _, dy = _draw(rng, case, dtype)
    dw = be.empty(p.weight_shape, DT[dtype])
    db = be.empty((p.K,), DT[dtype])
    poison(dw)
    poison(db)
    n = _splits(_wgrad(be, p, x, dy, dw, db, splits=splits, variant=variant))
    assert n == split_chunk(p.N * p.P * p.Q, splits, 32 if variant == "auto" else 16)[0]
    assert_close(f64(be.to_numpy(dw)), conv2d_weight_ref(f64(x), p.weight_shape, f64(dy), *_args(p)), dtype,
                 "tc_grad", what=f"{case} dW")
    assert_close(f64(be.to_numpy(db)), conv2d_bias_ref(f64(dy)), dtype, "tc_grad", what=f"{case} db")


def test_dgrad_taps_against_brute_force():
    for stride in range(1, 6):
        for dil in range(1, 5):
            for R in range(1, 8):
                for base in range(0, 12):
                    first, step, count, off0, doff = tg.dgrad_taps(base, R, stride, dil)
                    want = [r for r in range(R) if (base - r * dil) % stride == 0]
                    got = [first + t * step for t in range(count)]
                    assert got == want, (base, R, stride, dil)
                    for t, r in enumerate(got):
                        assert (base - r * dil) // stride == off0 - t * doff


def test_wgrad_bit_identical_across_thread_orders(rng):
    p, x, _, dy = _draw(rng, "3x3_stride2_groups2", "bfloat16")
    runs = []
    for mode in (dict(order="random", seed=77), dict(order="reverse")):
        with cuconv.backend("emulator", **mode) as be:
            dw = np.full(p.weight_shape, np.nan, DT["bfloat16"])
            _wgrad(be, p, x, dy, dw, splits=4)
            runs.append(dw.view(np.uint16).copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert_close(f64(runs[0].view(DT["bfloat16"])), conv2d_weight_ref(f64(x), p.weight_shape, f64(dy), *_args(p)),
                 "bfloat16", "tc_grad")


def test_under_sanitizers(rng):
    p, x, w, dy = _draw(rng, "rect_stride2x3_dil2x1_odd_C", "float16")
    with cuconv.backend("emulator", sanitize="address,undefined", order="reverse") as be:
        dx = np.full(p.input_shape, np.nan, np.float16)
        _dgrad(be, p, w, dy, "simple", dx)
        dw = np.full(p.weight_shape, np.nan, np.float16)
        db = np.full((p.K,), np.nan, np.float16)
        _wgrad(be, p, x, dy, dw, db, splits=2)
        dw2 = np.full(p.weight_shape, np.nan, np.float16)
        _wgrad(be, p, x, dy, dw2, splits=2, variant="simple")
    assert_close(f64(dw2), conv2d_weight_ref(f64(x), p.weight_shape, f64(dy), *_args(p)), "float16", "tc_grad")
    assert_close(f64(dx), conv2d_input_ref(p.input_shape, f64(w), f64(dy), *_args(p)), "float16", "tc_grad")
    assert_close(f64(dw), conv2d_weight_ref(f64(x), p.weight_shape, f64(dy), *_args(p)), "float16", "tc_grad")
    assert_close(f64(db), conv2d_bias_ref(f64(dy)), "float16", "tc_grad")


def draw_problems(seed: int, n: int) -> list:
    """``n`` random valid float16/bfloat16 problems: groups 1-3, C and K not multiples of 8, filters
    1-5, strides 1-3, dilations 1-2 and padding up to dil·(R−1) + 3 (past the dilated filter)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        g = int(rng.choice([1, 1, 2, 3]))
        C, K = (g * int(v) for v in rng.integers(1, 7, 2))
        R, S = (int(v) for v in rng.integers(1, 6, 2))
        st, dl = tuple(int(v) for v in rng.integers(1, 4, 2)), tuple(int(v) for v in rng.integers(1, 3, 2))
        pd = (int(rng.integers(0, dl[0] * (R - 1) + 4)), int(rng.integers(0, dl[1] * (S - 1) + 4)))
        H, W = (int(v) for v in rng.integers(1, 14, 2))
        dt = list(DT)[int(rng.integers(2))]
        try:
            out.append(conv_problem((int(rng.integers(1, 3)), C, H, W), (K, C // g, R, S), st, pd, dl, g, dt))
        except ValueError:
            continue
    return out


def refused(problems, layout="NCHW") -> list:
    """The problems no tensor-core dgrad algorithm can run (cuconv.grad.algorithms)."""
    return [p for p in problems
            if not any(i.ok for i in G.algorithms(p, "input", layout=layout) if i.name in ALGO.values())]


def past_filter(p) -> bool:
    return p.pad_h > p.dilation_h * (p.R - 1) or p.pad_w > p.dilation_w * (p.S - 1)


def test_no_valid_problem_is_refused_and_every_answer_matches():
    """Every padding (the phase convolution with negative padding, a crop of dy): 400 random valid
    problems, none refused; 40 of them, half with padding past the dilated filter, run through
    both variants against the float64 reference. ``python3 tests/test_tc_grad.py 25 500`` prints
    the refusal count of a draw."""
    problems = draw_problems(20251207, 400)
    assert sum(map(past_filter, problems)) > 100
    with cuconv.backend("emulator") as be:
        assert refused(problems) == []
        assert refused(problems, "NHWC") == []
        # filters over 16 taps a side: the tiled forward refuses its phase (tc_conv's 16-bit tap
        # masks), the analytic one runs it, so the problem is still not refused
        big = conv_problem((1, 3, 20, 19), (4, 3, 17, 18), 1, 19, 1, 1, "bfloat16")
        rows = {i.name: i for i in G.algorithms(big, "input")}
        assert not rows["implicit_gemm_tc"].ok and rows["implicit_gemm_tc_simple"].ok and refused([big]) == []
        rng = np.random.default_rng(7)
        run = [p for p in problems if past_filter(p)][:20] + [p for p in problems if not past_filter(p)][:20]
        for i, p in enumerate(run):
            w = rng.uniform(-1, 1, p.weight_shape).astype(DT[p.dtype])
            dy = rng.uniform(-1, 1, p.output_shape).astype(DT[p.dtype])
            ref = conv2d_input_ref(p.input_shape, f64(w), f64(dy), *_args(p))
            variant = ("auto", "simple")[i % 2]
            dx = np.full(p.input_shape, np.nan, DT[p.dtype])
            _dgrad(be, p, w, dy, variant, dx)
            assert_close(f64(dx), ref, p.dtype, "tc_grad", what=f"{p.describe()} {p.dtype} {variant}")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("variant", ["auto", "simple"])
def test_nonfinite_weight_over_dy_border_large_padding(be, rng, variant, layout):
    """Inf/NaN weight taps whose dy row or column is outside dy, with padding past the dilated
    filter (phases with negative padding) and a cropped end: the NaN/Inf mask and the finite
    values are the true-terms reference's (no 0·Inf term), in both layouts."""
    p = conv_problem((2, 5, 9, 8), (6, 5, 3, 3), 2, ((4, 1), (3, 5)), 1, 1, "float16")
    w = rng.uniform(-1, 1, p.weight_shape).astype(np.float16)
    dy = rng.uniform(-1, 1, p.output_shape).astype(np.float16)
    w[0, 1, 0, 0], w[2, 4, 2, 1], w[1, 0, 1, 2] = np.inf, np.nan, -np.inf
    want = _true_terms_ref(p, w, dy)
    assert np.isfinite(want).any() and not np.isfinite(want).all()
    got = _run_layout(be, p, w, dy, variant, layout)
    assert nonfinite_mismatch(got, want) is None, nonfinite_mismatch(got, want)
    fin = np.isfinite(want)
    assert_close(np.where(fin, got, 0), np.where(fin, want, 0), "float16", "tc_grad", what=variant)


def nhwc(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def _run_layout(be, p, w, dy, variant, layout):
    """dx (float64, NCHW) of the tensor-core DGRAD plan in ``layout``, reading w KRSC and dy NHWC
    and writing dx NHWC as they are in NHWC."""
    algo = next(a for a in tg.DGRAD_ALGORITHMS if a.name == ALGO[variant])
    spec = spec_of(p, DGRAD)
    plan = algo.plan_or_raise(dataclasses.replace(spec, layout=layout))
    if layout == "NCHW":
        dx = be.empty(p.input_shape, w.dtype)
        poison(dx)
        plan.run(put(be, w), put(be, dy), dx=dx)
        return f64(be.to_numpy(dx))
    assert not [k for k in plan.kernels if any(m in k for m in ("pack", "transpose", "copy"))] or p.K_per_group % 2
    dx = be.empty((p.N, p.H, p.W, p.C), w.dtype)
    poison(dx)
    plan.run(put(be, nhwc(w)), put(be, nhwc(dy)), dx=dx)
    return f64(be.to_numpy(dx)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("variant", ["auto", "simple"])
@pytest.mark.parametrize("dtype", list(DT))
@pytest.mark.parametrize("case", list(CASES))
def test_tc_dgrad_nhwc(be, rng, case, dtype, variant):
    """NHWC dy, KRSC w and NHWC dx read and written as they are (no pack where Kg is even)."""
    p, _, w, dy = _draw(rng, case, dtype)
    got = _run_layout(be, p, w, dy, variant, "NHWC")
    assert_close(got, conv2d_input_ref(p.input_shape, f64(w), f64(dy), *_args(p)), dtype, "tc_grad",
                 what=f"{case} {variant} NHWC")


@pytest.mark.parametrize("variant,splits", [("auto", 1), ("auto", 2), ("simple", 3)])
@pytest.mark.parametrize("dtype", list(DT))
@pytest.mark.parametrize("case", list(CASES))
def test_tc_wgrad_nhwc(be, rng, case, dtype, variant, splits):
    """NHWC x and dy read as they are, dW written KRSC (no conversion step)."""
    p, x, _, dy = _draw(rng, case, dtype)
    algo = next(a for a in tg.WGRAD_ALGORITHMS if a.name == ALGO[variant])
    plan = algo.plan_or_raise(spec_of(p, WGRAD, has_bias=True, splits=splits, layout="NHWC"))
    assert plan.outputs[0].shape == (p.K, p.R, p.S, p.C_per_group)
    assert not [k for k in plan.kernels if any(m in k for m in ("pack", "transpose", "copy"))]
    dw = be.empty(plan.outputs[0].shape, DT[dtype])
    db = be.empty((p.K,), DT[dtype])
    poison(dw)
    poison(db)
    plan.run(put(be, nhwc(x)), put(be, nhwc(dy)), dw=dw, db=db)
    ref = conv2d_weight_ref(f64(x), p.weight_shape, f64(dy), *_args(p))
    assert_close(f64(be.to_numpy(dw)).transpose(0, 3, 1, 2), ref, dtype, "tc_grad", what=f"{case} dW NHWC")
    assert_close(f64(be.to_numpy(db)), conv2d_bias_ref(f64(dy)), dtype, "tc_grad", what=f"{case} db")


@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined", order="reverse"), dict(order="random", seed=11)],
                         ids=["asan_ubsan_reverse", "random_order"])
def test_nhwc_and_large_padding_under_sanitizers_and_orders(rng, mode):
    """The NHWC glue kernels and the phases with negative padding (dgrad, both variants) and the
    NHWC wgrads (tiled and simple, db), under ASan/UBSan in reverse thread order and in random order."""
    p = conv_problem((2, 6, 9, 8), (6, 3, 3, 2), (2, 3), ((4, 1), (3, 2)), (1, 2), 2, "float16")
    x, w, dy = (rng.uniform(-1, 1, s).astype(np.float16) for s in (p.input_shape, p.weight_shape, p.output_shape))
    w[1, 2, 0, 1] = np.inf
    want = _true_terms_ref(p, w, dy)
    with cuconv.backend("emulator", **mode) as be:
        for variant in ("auto", "simple"):
            got = _run_layout(be, p, w, dy, variant, "NHWC")
            assert nonfinite_mismatch(got, want) is None
            fin = np.isfinite(want)
            assert_close(np.where(fin, got, 0), np.where(fin, want, 0), "float16", "tc_grad", what=variant)
            algo = next(a for a in tg.WGRAD_ALGORITHMS if a.name == ALGO[variant])
            plan = algo.plan_or_raise(spec_of(p, WGRAD, has_bias=True, splits=2, layout="NHWC"))
            dw, db = np.full(plan.outputs[0].shape, np.nan, np.float16), np.full((p.K,), np.nan, np.float16)
            plan.run(nhwc(x), nhwc(dy), dw=dw, db=db)
            assert_close(f64(dw).transpose(0, 3, 1, 2), conv2d_weight_ref(f64(x), p.weight_shape, f64(dy), *_args(p)),
                         "float16", "tc_grad", what=f"{variant} dW")
            assert_close(f64(db), conv2d_bias_ref(f64(dy)), "float16", "tc_grad")


@pytest.mark.parametrize("dtype", list(DT))
def test_public_nhwc_backward_is_native(rng, dtype):
    """cuconv.grad's NHWC functions (and conv_transpose2d's gradients) in float16/bfloat16: auto
    takes the tensor-core passes, whose plans have no pack/transpose/copy step, and the answers
    match the float64 references (padding past the filter, C and K not multiples of 8)."""
    p, x, w, dy = _draw(rng, "rect_stride2x3_dil2x1_odd_C", dtype)
    p = conv_problem(p.input_shape, p.weight_shape, (2, 3), (5, 2), (2, 1), 1, dtype)
    dy = rng.uniform(-1, 1, p.output_shape).astype(DT[dtype])
    args = ((p.stride_h, p.stride_w), (p.pad_h, p.pad_w), (p.dilation_h, p.dilation_w), p.groups)
    with cuconv.backend("emulator"):
        plan = G.plan_conv2d_backward(nhwc(x), nhwc(w), nhwc(dy), *args, layout="NHWC")
        assert plan.algo == "implicit_gemm_tc+implicit_gemm_tc"
        assert not [k for k in plan.kernels if any(m in k for m in ("pack", "transpose", "copy"))], plan.kernels
        dx, dw, db = G.conv2d_backward(nhwc(x), nhwc(w), nhwc(dy), *args, layout="NHWC")
        # conv_transpose2d(dy, w) is this convolution's dgrad: its weight gradient is this wgrad
        dxt = G.conv_transpose2d_weight(nhwc(dy), nhwc(w).shape, nhwc(x), args[0], args[1],
                                        output_padding=_output_padding(p), dilation=args[2], layout="NHWC")
        # ... and its input gradient is this convolution's forward (tensor cores, NHWC)
        plan = G.plan_conv_transpose2d_input(nhwc(dy).shape, nhwc(w), nhwc(x), args[0], args[1],
                                             output_padding=_output_padding(p), dilation=args[2], layout="NHWC")
        # (C = 5 is odd: the forward reads it in place with one-element copies, no pack step)
        assert plan.algo.startswith("implicit_gemm_") and not plan.conversions, plan.kernels
        dyt = G.conv_transpose2d_input(nhwc(dy).shape, nhwc(w), nhwc(x), args[0], args[1],
                                       output_padding=_output_padding(p), dilation=args[2], layout="NHWC")
    assert_close(f64(dx).transpose(0, 3, 1, 2), conv2d_input_ref(p.input_shape, f64(w), f64(dy), *_args(p)), dtype,
                 "tc_grad", what="dx")
    want_dw = conv2d_weight_ref(f64(x), p.weight_shape, f64(dy), *_args(p))
    assert_close(f64(dw).transpose(0, 3, 1, 2), want_dw, dtype, "tc_grad", what="dW")
    assert_close(f64(db), conv2d_bias_ref(f64(dy)), dtype, "tc_grad", what="db")
    assert_close(f64(dxt).transpose(0, 3, 1, 2), want_dw, dtype, "tc_grad", what="conv_transpose2d_weight")
    want_y = conv2d_ref(f64(x), f64(w), None, (p.stride_h, p.stride_w), (p.pad_h, p.pad_w), (p.dilation_h, p.dilation_w))
    assert_close(f64(dyt).transpose(0, 3, 1, 2), want_y, dtype, "implicit_gemm_tc", what="conv_transpose2d_input")


def _output_padding(p):
    """conv_transpose2d's output_padding that gives back p's input size from its output."""
    return tuple(size - ((out - 1) * st - 2 * pd + dl * (k - 1) + 1) for size, out, st, pd, dl, k in (
        (p.H, p.P, p.stride_h, p.pad_h, p.dilation_h, p.R), (p.W, p.Q, p.stride_w, p.pad_w, p.dilation_w, p.S)))


def test_bf16_on_sm75_is_refused_when_planned_fp16_runs():
    """Arch-aware: bf16 mma needs sm_80, so on sm_75 the bf16 tensor-core dgrad, wgrad and
    conv_transpose2d are refused at planning with the reason (nothing launched); float16 plans
    there on the 2-stage kernels."""
    p = conv_problem((1, 6, 9, 8), (4, 6, 3, 3), 2, 4, 1, 1, "bfloat16")
    x, dy = np.zeros((1, 6, 4, 5), DT["bfloat16"]), np.zeros(p.output_shape, DT["bfloat16"])
    with cuconv.backend("record", cc=75) as rec:
        infos = {i.name: i for i in G.algorithms(p, "input", layout="NHWC")}
        assert not infos["implicit_gemm_tc"].ok and "sm_80" in infos["implicit_gemm_tc"].reason
        with pytest.raises(ValueError, match="sm_80"):
            G.conv2d_input(p.input_shape, np.zeros(p.weight_shape, DT["bfloat16"]), dy, 2, 4)
        with pytest.raises(ValueError, match="sm_80"):
            cuconv.conv_transpose2d(nhwc(x), np.zeros((6, 3, 3, 4), DT["bfloat16"]), stride=2, padding=1, layout="NHWC")
        assert rec.launches == []
        q = p.with_(dtype="float16")
        assert {i.name: i.ok for i in G.algorithms(q, "input", layout="NHWC")}["implicit_gemm_tc"]
        plan = cuconv.plan_conv_transpose2d(nhwc(x).astype(np.float16), np.zeros((6, 3, 3, 4), np.float16), stride=2,
                                            padding=1, layout="NHWC")
        assert [k for k in plan.kernels if k.startswith("tc_conv_f16")] and all(
            "_s2_" in k for k in plan.kernels if k.startswith("tc_conv_f16"))


def test_what_is_not_built_says_so(rng):
    p = conv_problem((1, 8, 9, 9), (8, 8, 3, 3), 1, 3, 1, 1, "float16")      # padding 3 > 2 = dil·(R−1)
    assert tg.can_implement_input(p) is None
    with cuconv.backend("emulator") as be:
        q = conv_problem((1, 8, 9, 9), (8, 8, 3, 3), 1, 1, 1, 1, "float16")
        with pytest.raises(ValueError, match="fp32 workspace"):
            _wgrad(be, q, np.zeros(q.input_shape, np.float16), np.zeros(q.output_shape, np.float16),
                   np.zeros(q.weight_shape, np.float16), max_workspace_bytes=100)
    assert "float16 or bfloat16" in tg.can_implement_input(p.with_(dtype="float32"))


def test_auto_routes_16_bit_problems_here(rng):
    """``auto`` takes the tensor-core gradients for float16/bfloat16 (deterministic whatever
    deterministic= says: they have no atomic variant)."""
    p, x, w, dy = _draw(rng, "3x3_stride2_groups2", "float16")
    args = ((p.stride_h, p.stride_w), (p.pad_h, p.pad_w), (p.dilation_h, p.dilation_w), p.groups)
    with cuconv.backend("emulator"):
        dx = G.conv2d_input(p.input_shape, w, dy, *args)
        assert G.plan_conv2d_input(p.input_shape, w, dy, *args).algo == "implicit_gemm_tc"
        dw = G.conv2d_weight(x, p.weight_shape, dy, *args, splits=2, algo="implicit_gemm_tc")
        plan = G.plan_conv2d_weight(x, p.weight_shape, dy, *args, deterministic=False)
        assert plan.algo == "implicit_gemm_tc" and "deterministic reduction" in plan.description
    assert_close(f64(dx), conv2d_input_ref(p.input_shape, f64(w), f64(dy), *_args(p)), "float16", "tc_grad")
    assert_close(f64(dw), conv2d_weight_ref(f64(x), p.weight_shape, f64(dy), *_args(p)), "float16", "tc_grad")


if __name__ == "__main__":      # python3 tests/test_tc_grad.py SEED COUNT: the refusal count of a draw
    _problems = draw_problems(int(sys.argv[1]), int(sys.argv[2]))
    with cuconv.backend("emulator"):
        _bad = refused(_problems)
    print(f"{len(_bad)} of {len(_problems)} random float16/bfloat16 problems refused by the tensor-core dgrad "
          f"({sum(map(past_filter, _problems))} with padding past the dilated filter)")
