"""What PyTorch users pass every day (issue 14): empty batches, strided and non-contiguous views
(NHWC memory read as NCHW, slices with steps, negative strides, Fortran order), unbatched 3-D
inputs, scalars where arrays belong. Every op, through the emulator (and the GPU when present);
strided results must equal the contiguous ones bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import put
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cuconv
from cuconv import grad as G
from cuconv.reference import conv2d_ref
from cuconv.testing import assert_close, poison, random_array, to_numpy

# --------------------------------------------------------------------------- empty tensors
EMPTY_CALLS = {
    "conv2d": (lambda x, be, rng: cuconv.conv2d(x, put(be, random_array(rng, (4, 3, 3, 3))), padding=1),
               (0, 4, 7, 9)),
    "conv2d_bias_relu": (lambda x, be, rng: cuconv.conv2d(x, put(be, random_array(rng, (4, 3, 3, 3))),
                                                          put(be, random_array(rng, (4,))), activation="relu"),
                         (0, 4, 5, 7)),
    "depthwise": (lambda x, be, rng: cuconv.depthwise_conv2d(x, put(be, random_array(rng, (6, 1, 3, 3))), padding=1),
                  (0, 6, 7, 9)),
    "separable": (lambda x, be, rng: cuconv.separable_conv2d(
        x, put(be, random_array(rng, (3, 1, 3, 3))), put(be, random_array(rng, (5, 3, 1, 1))), padding=1),
        (0, 5, 7, 9)),
    "max_pool2d": (lambda x, be, rng: cuconv.max_pool2d(x, 3, 2, 1), (0, 3, 4, 5)),
    "max_pool2d_indices": (lambda x, be, rng: cuconv.max_pool2d(x, 3, 2, 1, return_indices=True)[1], (0, 3, 4, 5)),
    "avg_pool2d": (lambda x, be, rng: cuconv.avg_pool2d(x, 2), (0, 3, 3, 4)),
    "global_avg_pool2d": (lambda x, be, rng: cuconv.global_avg_pool2d(x), (0, 3, 1, 1)),
    "conv_transpose2d": (lambda x, be, rng: cuconv.conv_transpose2d(x, put(be, random_array(rng, (3, 2, 3, 3))),
                                                                    stride=2), (0, 2, 15, 19)),
    "im2col": (lambda x, be, rng: cuconv.im2col(x, 3, padding=1), (0, 27, 63)),
}


@pytest.mark.parametrize("op", sorted(EMPTY_CALLS))
def test_empty_batch_gives_an_empty_output_and_launches_nothing(be, rng, op):
    call, shape = EMPTY_CALLS[op]
    x = put(be, np.empty((0, 3, 7, 9), np.float32))
    with cuconv.backend("record") as rec:
        y = call(np.empty((0, 3, 7, 9), np.float32), rec, rng)
    assert rec.launches == [] and tuple(y.shape) == shape
    y = call(x, be, rng)
    assert tuple(y.shape) == shape


@pytest.mark.parametrize("algo", ["direct", "implicit_gemm", "im2col_gemm", "winograd_f4x4_3x3",
                                  "winograd_fused_f2x2_3x3"])
def test_empty_batch_for_every_algorithm(be, algo):
    x = put(be, np.empty((0, 16, 9, 9), np.float32))
    w = put(be, np.ones((16, 16, 3, 3), np.float32))
    with cuconv.backend("record") as rec:
        plan = cuconv.plan_conv2d(np.empty((0, 16, 9, 9), np.float32), np.ones((16, 16, 3, 3), np.float32),
                                  padding=1, algo=algo)
    assert plan.launches == () and plan.workspace_bytes == 0 and rec.launches == []
    assert cuconv.conv2d(x, w, padding=1, algo=algo).shape == (0, 16, 9, 9)


def test_gemm_with_zero_sizes(be, rng):
    a, b = random_array(rng, (5, 0)), random_array(rng, (0, 7))
    bias = random_array(rng, (5,))
    y = cuconv.gemm(put(be, a), put(be, b), bias=put(be, bias), activation="relu")   # K = 0: only the epilogue
    np.testing.assert_array_equal(to_numpy(y), np.maximum(np.repeat(bias[:, None], 7, 1), 0))
    assert cuconv.gemm(put(be, random_array(rng, (0, 4))), put(be, random_array(rng, (4, 3)))).shape == (0, 3)
    assert cuconv.gemm(put(be, random_array(rng, (3, 4))), put(be, random_array(rng, (4, 0)))).shape == (3, 0)


def test_global_avg_pool_of_an_empty_plane_is_nan_as_in_pytorch(be):
    y = to_numpy(cuconv.global_avg_pool2d(put(be, np.empty((2, 3, 0, 4), np.float32))))
    assert y.shape == (2, 3, 1, 1) and np.isnan(y).all()
    assert cuconv.global_avg_pool2d(put(be, np.empty((2, 0, 5, 4), np.float32))).shape == (2, 0, 1, 1)


def test_zero_sizes_pytorch_refuses_are_refused():
    with cuconv.backend("record"):
        with pytest.raises(ValueError, match="K must be positive"):
            cuconv.conv2d(np.ones((1, 3, 5, 5), np.float32), np.ones((0, 3, 3, 3), np.float32))
        with pytest.raises(ValueError, match="H must be positive"):
            cuconv.conv2d(np.ones((1, 3, 0, 5), np.float32), np.ones((4, 3, 1, 1), np.float32))
        with pytest.raises(ValueError, match="C must be positive"):      # a deliberate difference (README)
            cuconv.conv2d(np.ones((1, 0, 5, 5), np.float32), np.ones((4, 0, 3, 3), np.float32))
        with pytest.raises(ValueError, match="non-zero C, H and W"):
            cuconv.avg_pool2d(np.ones((1, 0, 5, 5), np.float32), 2)


# --------------------------------------------------------------------------- unbatched, scalars
def test_unbatched_inputs_work_as_in_pytorch(be, rng):
    x, w, b = random_array(rng, (3, 9, 7)), random_array(rng, (5, 3, 3, 3)), random_array(rng, (5,))
    y = cuconv.conv2d(put(be, x), put(be, w), put(be, b), padding=1, activation="relu")
    assert y.shape == (5, 9, 7)
    assert_close(y, conv2d_ref(x[None], w, b, padding=1, activation="relu")[0], "float32", "im2col_gemm")
    nhwc = cuconv.conv2d(put(be, np.ascontiguousarray(x.transpose(1, 2, 0)).astype(np.float16)),
                         put(be, np.ascontiguousarray(w.transpose(0, 2, 3, 1)).astype(np.float16)),
                         padding=1, layout="NHWC")
    assert nhwc.shape == (9, 7, 5)
    ym, idx = cuconv.max_pool2d(put(be, x), 3, 2, 1, return_indices=True)
    yb, ib = cuconv.max_pool2d(put(be, x[None]), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(to_numpy(ym), to_numpy(yb)[0])
    np.testing.assert_array_equal(to_numpy(idx), to_numpy(ib)[0])
    np.testing.assert_array_equal(to_numpy(cuconv.global_avg_pool2d(put(be, x))),
                                  to_numpy(cuconv.global_avg_pool2d(put(be, x[None])))[0])
    wt = random_array(rng, (3, 4, 3, 3))
    np.testing.assert_array_equal(to_numpy(cuconv.conv_transpose2d(put(be, x), put(be, wt), stride=2)),
                                  to_numpy(cuconv.conv_transpose2d(put(be, x[None]), put(be, wt), stride=2))[0])
    np.testing.assert_array_equal(to_numpy(cuconv.im2col(put(be, x), 3)), to_numpy(cuconv.im2col(put(be, x[None]), 3))[0])


def test_ranks_other_than_3_and_4_and_scalars_are_refused():
    w = np.ones((4, 3, 3, 3), np.float32)
    with cuconv.backend("record"):
        with pytest.raises(ValueError, match=r"input must be 4-D \(or 3-D unbatched"):
            cuconv.conv2d(np.ones((5, 5), np.float32), w)
        with pytest.raises(ValueError, match=r"input must be 4-D \(or 3-D unbatched"):
            cuconv.conv2d(np.ones((), np.float32), w)
        with pytest.raises(TypeError, match="bias must be an array, got the scalar"):
            cuconv.conv2d(np.ones((1, 3, 5, 5), np.float32), w, np.float32(1.0))
        with pytest.raises(TypeError, match="bias must be an array, got the scalar 1.5"):
            cuconv.conv2d(np.ones((1, 3, 5, 5), np.float32), w, 1.5)
        with pytest.raises(ValueError, match=r"bias must have shape \(4,\), got \(\)"):
            cuconv.conv2d(np.ones((1, 3, 5, 5), np.float32), w, np.ones((), np.float32))
        with pytest.raises(ValueError, match="3-D .*unbatched.* or 4-D"):
            cuconv.max_pool2d(np.ones((5, 5), np.float32), 2)


# --------------------------------------------------------------------------- strided views
def _views(rng, shape, kind: str):
    """An array of ``shape`` laid out in memory as ``kind`` says, and its contiguous copy."""
    base = random_array(rng, shape)
    if kind == "contiguous":
        v = base.copy()
    elif kind == "nhwc_memory":          # NHWC memory read as NCHW (channels_last)
        v = np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif kind == "fortran":
        v = np.asfortranarray(base)
    elif kind == "negative":             # every axis reversed in memory
        v = np.ascontiguousarray(base[::-1, ::-1, ::-1, ::-1])[::-1, ::-1, ::-1, ::-1]
    elif kind == "stepped":              # a slice with steps of a bigger array
        big = np.zeros((shape[0], 2 * shape[1], shape[2], 3 * shape[3]), np.float32)
        big[:, ::2, :, ::3] = base
        v = big[:, ::2, :, ::3]
    else:
        raise ValueError(kind)
    assert np.array_equal(v, base)
    return v, base


KINDS = ["contiguous", "nhwc_memory", "fortran", "negative", "stepped"]


@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KINDS), st.sampled_from(KINDS), st.sampled_from(KINDS),
       st.sampled_from(["auto", "direct", "implicit_gemm", "im2col_gemm", "winograd_fused_f2x2_3x3"]),
       st.integers(0, 2 ** 32 - 1))
def test_strided_views_give_the_contiguous_result_bit_for_bit(kx, kw, kr, algo, seed):
    rng = np.random.default_rng(seed)
    x, xc = _views(rng, (2, 16, 7, 9), kx)
    w, wc = _views(rng, (16, 16, 3, 3), kw)
    r, rc = _views(rng, (2, 16, 7, 9), kr)
    b = random_array(rng, (32,))[::2]                      # a stepped bias
    snapshot = [a.copy() for a in (x, w, r, b)]
    with cuconv.backend("emulator"):
        got = cuconv.conv2d(x, w, b, padding=1, residual=r, activation="relu", algo=algo)
        want = cuconv.conv2d(xc, wc, b.copy(), padding=1, residual=rc, activation="relu", algo=algo)
    np.testing.assert_array_equal(got, want)
    for a, s in zip((x, w, r, b), snapshot):
        np.testing.assert_array_equal(a, s)            # inputs are never modified


@pytest.mark.parametrize("kind", KINDS[1:])
def test_strided_views_for_every_op(be, rng, kind):
    """Each op on a strided view equals the op on the contiguous copy, bit for bit."""
    x, xc = _views(rng, (2, 6, 9, 8), kind)
    wd, wdc = _views(rng, (6, 1, 3, 3), kind)
    wp, wpc = _views(rng, (4, 6, 1, 1), kind)
    wt, wtc = _views(rng, (6, 3, 3, 3), kind)
    calls = [
        lambda x, wd, wp, wt: cuconv.depthwise_conv2d(x, wd, padding=1),
        lambda x, wd, wp, wt: cuconv.separable_conv2d(x, wd, wp, padding=1, fused=True),
        lambda x, wd, wp, wt: cuconv.separable_conv2d(x, wd, wp, padding=1, fused=False),
        lambda x, wd, wp, wt: cuconv.max_pool2d(x, 3, 2, 1, return_indices=True)[1],
        lambda x, wd, wp, wt: cuconv.avg_pool2d(x, 3, 2, 1),
        lambda x, wd, wp, wt: cuconv.global_avg_pool2d(x),
        lambda x, wd, wp, wt: cuconv.conv_transpose2d(x, wt, stride=2, padding=1),
        lambda x, wd, wp, wt: cuconv.im2col(x, 3, padding=1),
        lambda x, wd, wp, wt: cuconv.gemm(x[0, 0], x[1, 0].T),
        lambda x, wd, wp, wt: cuconv.winograd_filter_transform(x[:, :3, :3, :3], "f2x2_3x3"),
    ]
    for call in calls:
        got = to_numpy(call(*(put(be, a) for a in (x, wd, wp, wt))))
        want = to_numpy(call(*(put(be, a) for a in (xc, wdc, wpc, wtc))))
        np.testing.assert_array_equal(got, want)


def test_out_keeps_its_rules(rng):
    x, w = random_array(rng, (1, 3, 5, 5)), random_array(rng, (4, 3, 3, 3))
    with cuconv.backend("record"):
        out = np.empty((1, 4, 3, 3), np.float32)
        with pytest.raises(ValueError, match="out must be C-contiguous"):
            cuconv.conv2d(x, w, out=np.empty((1, 4, 3, 3), np.float32, order="F"))
        with pytest.raises(ValueError, match="out overlaps input"):
            cuconv.conv2d(x, w, out=x.reshape(-1)[:36].reshape(1, 4, 3, 3))
        assert cuconv.conv2d(x, w, out=out) is out
    poison(out)


# --------------------------------------------------------------------------- huge integers
HUGE = [2 ** 31, 2 ** 40, -(2 ** 40), 2 ** 100]


def _huge_calls(rng):
    """(name, argument, call(value)) for every int argument of every op, forward and backward."""
    x, w, b = random_array(rng, (1, 4, 8, 8)), random_array(rng, (6, 4, 3, 3)), random_array(rng, (6,))
    dy, wd, wp = random_array(rng, (1, 6, 8, 8)), random_array(rng, (4, 1, 3, 3)), random_array(rng, (5, 4, 1, 1))
    wt, dyt = random_array(rng, (4, 3, 3, 3)), random_array(rng, (1, 3, 10, 10))
    y, idx = random_array(rng, (1, 4, 4, 4)), np.zeros((1, 4, 4, 4), np.int64)
    calls = []
    for arg in ("stride", "padding", "dilation", "groups"):
        calls += [("conv2d", arg, lambda h, a=arg: cuconv.conv2d(x, w, b, **{a: h})),
                  ("conv2d", f"{arg} pair", lambda h, a=arg: cuconv.conv2d(x, w, b, **{a: (1, h)})),
                  ("grad.conv2d_input", arg, lambda h, a=arg: G.conv2d_input(x.shape, w, dy, **{a: h})),
                  ("grad.conv2d_weight", arg, lambda h, a=arg: G.conv2d_weight(x, w.shape, dy, **{a: h})),
                  ("grad.conv2d_backward", arg, lambda h, a=arg: G.conv2d_backward(x, w, dy, **{a: h}))]
    for arg in ("stride", "padding", "dilation"):
        calls += [("depthwise_conv2d", arg, lambda h, a=arg: cuconv.depthwise_conv2d(x, wd, None, **{a: h})),
                  ("separable_conv2d", arg, lambda h, a=arg: cuconv.separable_conv2d(x, wd, wp, **{a: h})),
                  ("im2col", arg, lambda h, a=arg: cuconv.im2col(x, 3, **{a: h}))]
    for arg in ("stride", "padding", "output_padding", "groups", "dilation"):
        calls += [("conv_transpose2d", arg, lambda h, a=arg: cuconv.conv_transpose2d(x, wt, **{a: h})),
                  ("grad.conv_transpose2d_input", arg,
                   lambda h, a=arg: G.conv_transpose2d_input(x.shape, wt, dyt, **{a: h})),
                  ("grad.conv_transpose2d_weight", arg,
                   lambda h, a=arg: G.conv_transpose2d_weight(x, wt.shape, dyt, **{a: h}))]
    for arg in ("kernel_size", "stride", "padding", "dilation"):
        calls += [("max_pool2d", arg, lambda h, a=arg: cuconv.max_pool2d(x, **{"kernel_size": 2, a: h})),
                  ("grad.max_pool2d", arg, lambda h, a=arg: G.max_pool2d(y, idx, x.shape, **{"kernel_size": 2, a: h}))]
    for arg in ("kernel_size", "stride", "padding", "divisor_override"):
        calls += [("avg_pool2d", arg, lambda h, a=arg: cuconv.avg_pool2d(x, **{"kernel_size": 2, a: h})),
                  ("grad.avg_pool2d", arg, lambda h, a=arg: G.avg_pool2d(y, x.shape, **{"kernel_size": 2, a: h}))]
    calls += [("im2col", "kernel_size", lambda h: cuconv.im2col(x, h)),
              ("grad.conv2d_input", "input_size", lambda h: G.conv2d_input((1, 4, h, 8), w, dy)),
              ("grad.conv2d_weight", "weight_size", lambda h: G.conv2d_weight(x, (6, 4, h, 3), dy)),
              ("grad.conv2d_weight", "splits", lambda h: G.conv2d_weight(x, w.shape, dy, padding=1,
                                                                           algo="implicit_gemm", splits=h)),
              ("grad.max_pool2d", "input_size", lambda h: G.max_pool2d(y, idx, (1, 4, h, 8))),
              ("grad.global_avg_pool2d", "input_size", lambda h: G.global_avg_pool2d(y[:, :, :1, :1], (1, 4, h, 8))),
              ("fft_filter_transform", "padding", lambda h: cuconv.fft_filter_transform(w, x.shape, padding=h)),
              ("fft_filter_transform", "input_shape", lambda h: cuconv.fft_filter_transform(w, (1, 4, h, 8)))]
    return calls


def test_huge_integers_are_a_value_error_naming_the_argument_never_an_overflow(rng):
    """Issue 22: stride=2**40, padding=2**31 and every other int beyond the kernels' 32-bit
    arguments is refused with a ValueError (or TypeError) before any launch — never an
    OverflowError from deep inside."""
    with cuconv.backend("record") as rec:
        for op, arg, call in _huge_calls(rng):
            for h in HUGE:
                with pytest.raises((ValueError, TypeError)) as info:
                    call(h)
                assert "Overflow" not in type(info.value).__name__, (op, arg, h)
        for op, arg in (("conv2d", "stride"), ("conv2d", "padding")):
            call = next(c for o, a, c in _huge_calls(rng) if (o, a) == (op, arg))
            with pytest.raises(ValueError, match=f"{arg}=.*does not fit a 32-bit int"):
                call(2 ** 40)
    assert rec.launches == []
