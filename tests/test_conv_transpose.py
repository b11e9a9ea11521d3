"""Transposed convolution (kernels/conv_transpose.cu, cuconv.ops.conv_transpose) against the
float64 scatter-form reference; the reference itself is checked as the adjoint of conv2d."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cuconv
from conftest import BACKENDS, put
from cuconv.ops import conv_transpose as ct
from cuconv.reference import conv2d_ref
from cuconv.reference.transposed import conv_transpose2d_ref
from cuconv.testing import assert_close, poison, random_array

# (x shape, C_out, (R, S), stride, padding, output_padding, groups, dilation)
CASES = {
    "s2_k3_p1_op1_C3": ((2, 3, 5, 4), 2, (3, 3), 2, 1, 1, 1, 1),
    "s1_k3_C1": ((1, 1, 7, 9), 3, (3, 3), 1, 0, 0, 1, 1),
    "s2_k4_p1_gan_upsample": ((1, 3, 4, 5), 5, (4, 4), 2, 1, 0, 1, 1),
    "s3x2_rect_dil2_op": ((1, 2, 3, 4), 3, (2, 3), (3, 2), (1, 2), (2, 1), 1, 2),
    "groups3_cout9": ((2, 6, 4, 3), 9, (3, 3), 2, 1, 1, 3, 1),
    "depthwise_transposed": ((1, 4, 5, 5), 4, (3, 3), 2, 0, 0, 4, 1),
    "op_below_dilation_not_stride": ((1, 2, 4, 4), 3, (3, 3), 1, 0, 1, 1, 2),
    "cout_tile_partial_11": ((1, 2, 3, 3), 11, (3, 3), 2, 1, 0, 1, 1),
}


def _draw(rng, xs, cout, RS, groups, with_bias, dtype="float32"):
    x = random_array(rng, xs, dtype)
    w = random_array(rng, (xs[1], cout // groups, *RS), dtype)
    b = random_array(rng, (cout,), dtype) if with_bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", ["phase", "simple"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_conv_transpose_matches_reference(be, rng, case, variant, dtype):
    """float32 within float32 rounding, float64 (conv_transpose2d_f64_*) within 1e-12."""
    xs, cout, RS, s, p, op, g, d = CASES[case]
    x, w, b = _draw(rng, xs, cout, RS, g, with_bias=variant == "phase", dtype=dtype)
    act = "relu" if case.startswith("s2") else ("silu" if dtype == "float64" else None)
    ref = conv_transpose2d_ref(x, w, b, s, p, op, g, d, activation=act)
    out = put(be, np.empty(ref.shape, dtype))
    poison(out)
    y = cuconv.conv_transpose2d(put(be, x), put(be, w), put(be, b), s, p, op, g, d,
                                activation=act, out=out, variant=variant)
    assert y is out
    assert_close(y, ref, dtype, "conv_transpose", what=f"{case} {variant}")
    kernel = cuconv.plan_conv_transpose2d(put(be, x), put(be, w), put(be, b), s, p, op, g, d, variant=variant).algo
    assert kernel.startswith(f"conv_transpose2d_{'f32' if dtype == 'float32' else 'f64'}_{variant}")


def test_allocating_path(be, rng):
    x, w, b = _draw(rng, (1, 3, 4, 4), 2, (3, 3), 1, True)
    ref = conv_transpose2d_ref(x, w, b, 2, 1, 1)
    y = cuconv.conv_transpose2d(put(be, x), put(be, w), put(be, b), 2, 1, 1)
    assert y.shape == ref.shape == (1, 2, 8, 8)
    assert_close(y, ref, "float32", "conv_transpose")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined", order="reverse"),
                                  dict(order="random", seed=3)], ids=["asan_ubsan_reverse", "random_order"])
@pytest.mark.parametrize("variant", ["phase", "simple"])
def test_emulator_sanitizers_and_orders(rng, mode, variant, dtype):
    xs, cout, RS, s, p, op, g, d = CASES["groups3_cout9"]
    x, w, b = _draw(rng, xs, cout, RS, g, True, dtype)
    ref = conv_transpose2d_ref(x, w, b, s, p, op, g, d)
    with cuconv.backend("emulator", **mode):
        out = np.empty(ref.shape, dtype)
        poison(out)
        cuconv.conv_transpose2d(x, w, b, s, p, op, g, d, out=out, variant=variant)
    assert_close(out, ref, dtype, "conv_transpose", what=f"{variant} {mode}")


# --------------------------------------------------------------------------- NHWC, float16 / bfloat16
DT16 = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
# The cropped convolution (output_padding spanning the stride, below the dilation) and padding
# past the dilated filter of the convolution whose data gradient the transposed one is.
CASES16 = {**CASES, "crop_op2_stride1_dil3": ((2, 5, 4, 5), 6, (2, 3), 1, 0, 2, 1, 3),
           "pad_past_filter_s2": ((1, 9, 6, 7), 10, (3, 2), 2, (3, 2), 1, 1, (1, 2))}


def nhwc(a):
    """NCHW -> NHWC, and C_in × C_out/g × R × S -> C_in × R × S × C_out/g."""
    return None if a is None else np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def _run(be, x, w, b, args, act, variant, layout, dtype):
    """conv_transpose2d in ``layout`` into a poisoned out; returns (y NCHW float64, plan)."""
    s, p, op, g, d = args
    if layout == "NHWC":
        x, w = nhwc(x), nhwc(w)
    plan = cuconv.plan_conv_transpose2d(put(be, x), put(be, w), put(be, b), s, p, op, g, d, activation=act,
                                        variant=variant, layout=layout)
    out = be.empty(plan.outputs[0].shape, np.dtype(dtype))
    poison(out)
    y = cuconv.conv_transpose2d(put(be, x), put(be, w), put(be, b), s, p, op, g, d, activation=act, out=out,
                                variant=variant, layout=layout)
    assert y is out
    y = be.to_numpy(y).astype(np.float64)
    return (y.transpose(0, 3, 1, 2) if layout == "NHWC" else y), plan


def _converts(plan) -> list:
    return [k for k in plan.kernels if any(m in k for m in ("pack", "transpose_nhwc", "copy"))]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("variant", ["auto", "simple"])
@pytest.mark.parametrize("dtype", list(DT16))
@pytest.mark.parametrize("case", list(CASES16), ids=list(CASES16))
def test_conv_transpose_16bit_on_tensor_cores(be, rng, case, dtype, variant, layout):
    """float16/bfloat16 through the tensor-core data gradient (ops/tc_grad.py) with the bias and
    activation fused, NCHW and NHWC read and written as they are, against the float64 reference
    of the same (rounded) inputs."""
    xs, cout, RS, s, p, op, g, d = CASES16[case]
    x, w, b = (None if a is None else a.astype(DT16[dtype]) for a in _draw(rng, xs, cout, RS, g, g != 3))
    act = ("relu", "silu", None)[len(case) % 3]
    ref = conv_transpose2d_ref(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64),
                               s, p, op, g, d, activation=act)
    y, plan = _run(be, x, w, b, (s, p, op, g, d), act, variant, layout, dtype)
    assert plan.algo == ("implicit_gemm_tc_simple" if variant == "simple" else "implicit_gemm_tc")
    assert any(k.startswith("tc_conv") for k in plan.kernels)
    if layout == "NHWC" and (xs[1] // g) % 2 == 0:
        assert _converts(plan) == [], plan.kernels
    assert_close(y, ref, dtype, "tc_grad", what=f"{case} {variant} {layout}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", ["phase", "simple"])
@pytest.mark.parametrize("case", list(CASES16), ids=list(CASES16))
def test_conv_transpose_nhwc(be, rng, case, variant, dtype):
    """float32/float64 NHWC: conv_transpose.cu's kernels read x (N, H, W, C_in) and w (C_in, R, S,
    C_out/g) and write y (N, H_out, W_out, C_out) directly: no conversion step."""
    xs, cout, RS, s, p, op, g, d = CASES16[case]
    x, w, b = _draw(rng, xs, cout, RS, g, True, dtype)
    ref = conv_transpose2d_ref(x, w, b, s, p, op, g, d, activation="relu")
    y, plan = _run(be, x, w, b, (s, p, op, g, d), "relu", variant, "NHWC", dtype)
    assert len(plan.launches) == 1 and plan.algo.startswith(f"conv_transpose2d_{dtype.replace('float', 'f')}_{variant}")
    assert_close(y, ref, dtype, "conv_transpose", what=f"{case} {variant} NHWC")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", list(DT16))
def test_conv_transpose_16bit_nonfinite_weights_and_relu(be, rng, dtype, layout):
    """Inf/NaN weights whose taps fall outside the input (the tensor-core dgrad's padded phases,
    fixed up after the epilogue) and relu keeping NaN: the NaN/Inf mask and the finite values are
    the scatter reference's."""
    xs, cout, RS, s, p, op, g, d = CASES16["pad_past_filter_s2"]
    x, w, b = (a.astype(DT16[dtype]) for a in _draw(rng, xs, cout, RS, g, True))
    w[0, 1, 0, 0], w[2, 4, 2, 1], w[1, 0, 1, 0] = np.inf, np.nan, -np.inf
    ref = conv_transpose2d_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), s, p, op, g, d,
                               activation="relu")
    assert np.isnan(ref).any() and np.isfinite(ref).any()
    y, _ = _run(be, x, w, b, (s, p, op, g, d), "relu", "auto", layout, dtype)
    assert_close(y, ref, dtype, "tc_grad", what=layout)


@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined", order="reverse"), dict(order="random", seed=5)],
                         ids=["asan_ubsan_reverse", "random_order"])
def test_16bit_and_nhwc_under_sanitizers_and_orders(rng, mode):
    """The tensor-core dgrad's glue kernels in NHWC with the epilogue (tc_grad.cu), the simple
    phase convolution, and conv_transpose.cu's NHWC kernels, once under ASan/UBSan in reverse
    thread order and once in random order."""
    xs, cout, RS, s, p, op, g, d = CASES16["pad_past_filter_s2"]
    x, w, b = _draw(rng, xs, cout, RS, g, True)
    with cuconv.backend("emulator", **mode) as be:
        for dtype, variant, kind in (("float16", "simple", "tc_grad"), ("float32", "phase", "conv_transpose"),
                                     ("float32", "simple", "conv_transpose")):
            xx, ww, bb = (a.astype(DT16.get(dtype, dtype)) for a in (x, w, b))
            ref = conv_transpose2d_ref(xx.astype(np.float64), ww.astype(np.float64), bb.astype(np.float64), s, p, op,
                                       g, d, activation="relu")
            y, _ = _run(be, xx, ww, bb, (s, p, op, g, d), "relu", variant, "NHWC", dtype)
            assert_close(y, ref, dtype, kind, what=f"{dtype} {variant} {mode}")


# --------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_reference_is_the_adjoint_of_conv2d(rng, case):
    """<conv2d(u, w), v> == <u, conv_transpose2d(v, w)>: the transposed convolution is the
    gradient of conv2d with respect to its input (§9.8), so the scatter reference is checked
    against the independent conv2d reference."""
    xs, cout, RS, s, p, op, g, d = CASES[case]
    v = rng.standard_normal(xs)
    w = rng.standard_normal((xs[1], cout // g, *RS))
    t = conv_transpose2d_ref(v, w, None, s, p, op, g, d)
    u = rng.standard_normal(t.shape)
    fwd = conv2d_ref(u, w, None, s, p, d, g)
    # conv2d maps u back to at least v's size (one row/column more when output_padding >= stride,
    # which the transposed convolution never reads from): compare on v's extent.
    assert fwd.shape[2] >= v.shape[2] and fwd.shape[3] >= v.shape[3]
    fwd = fwd[:, :, :v.shape[2], :v.shape[3]]
    lhs, rhs = float(np.sum(fwd * v)), float(np.sum(u * t))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_output_size_is_the_textbook_formula():
    p = ct.ConvTransposeProblem.from_shapes((1, 3, 5, 7), (3, 2, 3, 4), (2, 3), (1, 2), (1, 2), 1, (1, 2))
    assert p.H_out == (5 - 1) * 2 - 2 * 1 + 1 * (3 - 1) + 1 + 1
    assert p.W_out == (7 - 1) * 3 - 2 * 2 + 2 * (4 - 1) + 2 + 1


# --------------------------------------------------------------------------- hypothesis
@st.composite
def transpose_args(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    oph = draw(st.integers(0, max(sh, dh) - 1))
    opw = draw(st.integers(0, max(sw, dw) - 1))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    H, W = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    N = draw(st.integers(1, 2))
    return (N, cin, H, W), cout, (R, S), (sh, sw), (ph, pw), (oph, opw), groups, (dh, dw)


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=transpose_args(), seed=st.integers(0, 2 ** 32 - 1), variant=st.sampled_from(["phase", "simple"]))
def test_hypothesis_shapes_match_reference(backend_name, args, seed, variant):
    xs, cout, RS, s, p, op, g, d = args
    rng = np.random.default_rng(seed)
    x, w, b = _draw(rng, xs, cout, RS, g, True)
    h_out = (xs[2] - 1) * s[0] - 2 * p[0] + d[0] * (RS[0] - 1) + op[0] + 1
    w_out = (xs[3] - 1) * s[1] - 2 * p[1] + d[1] * (RS[1] - 1) + op[1] + 1
    valid = h_out > 0 and w_out > 0
    if valid:
        ref = conv_transpose2d_ref(x, w, b, s, p, op, g, d)
        assert ref.shape == (xs[0], cout, h_out, w_out)
    for name in [backend_name]:        # one backend per test id: the GPU's is marked gpu
        with cuconv.backend(name) as be:
            if not valid:
                with pytest.raises(ValueError, match="output size"):
                    cuconv.conv_transpose2d(put(be, x), put(be, w), put(be, b), s, p, op, g, d)
                continue
            y = cuconv.conv_transpose2d(put(be, x), put(be, w), put(be, b), s, p, op, g, d,
                                        variant=variant)
            assert_close(y, ref, "float32", "conv_transpose", what=f"{args} {variant}")


# --------------------------------------------------------------------------- bad arguments
def test_bad_arguments_raise_before_any_launch(rng):
    x = random_array(rng, (1, 4, 5, 5))
    w = random_array(rng, (4, 3, 3, 3))
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match=r"output_padding must be smaller.*\(1, 4, 5, 5\)"):
            cuconv.conv_transpose2d(x, w, stride=2, output_padding=2)
        with pytest.raises(ValueError, match="output_padding must be smaller"):
            cuconv.conv_transpose2d(x, w, stride=1, output_padding=1)
        with pytest.raises(ValueError, match=r"C_in=4.*\(3, 3, 3, 3\)"):
            cuconv.conv_transpose2d(x, random_array(rng, (3, 3, 3, 3)))
        with pytest.raises(ValueError, match="groups=3 must divide"):
            cuconv.conv_transpose2d(x, w, groups=3)
        with pytest.raises(ValueError, match="bias must have shape"):
            cuconv.conv_transpose2d(x, w, random_array(rng, (4,)))
        with pytest.raises(ValueError, match="output size"):
            cuconv.conv_transpose2d(x, w, padding=5)
        with pytest.raises(ValueError, match="stride must be positive"):
            cuconv.conv_transpose2d(x, w, stride=0)
        with pytest.raises(TypeError, match="groups must be an int"):
            cuconv.conv_transpose2d(x, w, groups=1.0)
        with pytest.raises(TypeError, match="same dtype, got float64 and float32"):
            cuconv.conv_transpose2d(x.astype(np.float64), w)
        with pytest.raises(TypeError, match="float32 or float64 or float16 or bfloat16, got int32"):
            cuconv.conv_transpose2d(x.astype(np.int32), w.astype(np.int32))
        with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC'"):
            cuconv.conv_transpose2d(x, w, layout="NCWH")
        with pytest.raises(ValueError, match="variant='phase' is conv_transpose.cu's float32/float64 kernel"):
            cuconv.conv_transpose2d(x.astype(np.float16), w.astype(np.float16), variant="phase")
        with pytest.raises(ValueError, match="4-D"):
            cuconv.conv_transpose2d(x, w[0])
        with pytest.raises(ValueError, match="out must have shape"):
            cuconv.conv_transpose2d(x, w, out=np.empty((1, 3, 5, 5), np.float32))
        with pytest.raises(ValueError, match="variant"):
            cuconv.conv_transpose2d(x, w, variant="fast")
