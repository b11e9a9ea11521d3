"""cuconv.im2col (kernels/im2col.cu): exact against the float64 reference on awkward shapes,
under the emulator's sanitizers and thread orders; argument checks."""
from __future__ import annotations

import numpy as np
import pytest

import cuconv
from conftest import put
from cuconv.ops.im2col import im2col_nhwc_launch
from cuconv.plan import Ref, launch_all
from cuconv.problem import Conv2dProblem
from cuconv.reference import im2col_ref
from cuconv.testing import assert_close, poison, random_array

# (N, C, H, W), kernel_size, stride, padding, dilation
CASES = [
    ((1, 1, 7, 7), 3, 1, 0, 1),
    ((3, 3, 9, 9), 3, 2, 1, 1),                 # stride 2, batch 3
    ((2, 3, 7, 9), 5, 1, 3, 1),                 # padding larger than the kernel's half, non-square
    ((1, 2, 9, 7), 3, 1, 2, 2),                 # dilation 2
    ((2, 3, 8, 11), 7, 2, 3, 1),                # 7x7 stride 2 (a ResNet stem in miniature)
    ((1, 3, 9, 9), 1, 1, 0, 1),                 # 1x1: the columns are the input
    ((1, 2, 10, 6), (3, 5), (2, 1), (1, 2), (1, 2)),   # every pair argument different
    ((2, 1, 6, 7), 4, 1, "same", 1),            # even kernel, "same": extra padding at bottom/right
    ((1, 3, 5, 5), 3, 3, 0, 1),                 # stride 3: a 1 x 1 output
]


def _id(case):
    shape, k, s, p, d = case
    return f"x{'x'.join(map(str, shape))}_k{k}_s{s}_p{p}_d{d}".replace(" ", "")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_im2col_matches_reference(be, rng, case, dtype):
    shape, k, stride, padding, dilation = case
    x = random_array(rng, shape, dtype)
    ref = im2col_ref(x, k, stride, padding, dilation)
    out = be.empty(ref.shape, dtype)
    poison(out)
    res = cuconv.im2col(put(be, x), k, stride, padding, dilation, out=out)
    assert res is out
    assert_close(be.to_numpy(out), ref, dtype, "im2col")     # exact: a copy


def test_allocating_path(be, rng):
    x = random_array(rng, (2, 3, 7, 8))
    out = cuconv.im2col(put(be, x), 3, padding=1)
    assert out.shape == (2, 27, 56) and out.dtype == np.float32
    assert_close(be.to_numpy(out), im2col_ref(x, 3, 1, 1, 1), "float32", "im2col")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined"), dict(order="reverse"),
                                  dict(order="random", seed=3)], ids=["asan_ubsan", "reverse", "random"])
def test_emulator_checking_modes(rng, mode, dtype):
    x = random_array(rng, (2, 3, 9, 7), dtype)
    ref = im2col_ref(x, 3, 2, 2, 2)
    with cuconv.backend("emulator", **mode) as be:
        out = be.empty(ref.shape, dtype)
        poison(out)
        cuconv.im2col(x, 3, 2, 2, 2, out=out)
    assert_close(out, ref, dtype, "im2col")


def test_bad_arguments_raise_before_launch(monkeypatch):
    with cuconv.backend("emulator") as be:
        monkeypatch.setattr(be, "launch", lambda *a, **k: pytest.fail("launched despite bad arguments"))
        x = np.ones((1, 2, 5, 5), np.float32)
        cases = [
            ((np.ones((5, 5), np.float32), 3), {}, ValueError, "4-D"),
            ((x.astype(np.float16), 3), {}, TypeError, "float32 or float64, got float16"),
            ((x, 0), {}, ValueError, "kernel_size must be positive"),
            ((x, (3, 3, 3)), {}, ValueError, "kernel_size"),
            ((x, 3.0), {}, TypeError, "kernel_size"),
            ((x, 7), {}, ValueError, r"im2col\(input \(1, 2, 5, 5\), kernel_size \(7, 7\)\).*output size"),
            ((x, 3), dict(padding=-1), ValueError, "non-negative"),
            ((x, 3), dict(stride=0), ValueError, "stride"),
            ((x, 3), dict(out=np.ones((1, 18, 10), np.float32)), ValueError, r"\(1, 18, 9\)"),
            ((x, 3), dict(out=np.ones((1, 9, 18), np.float32).transpose(0, 2, 1)), ValueError, "out must be C-contiguous"),
        ]
        for args, kw, exc, match in cases:
            with pytest.raises(exc, match=match):
                cuconv.im2col(*args, **kw)


# --------------------------------------------------------------------------- NHWC (im2col_nhwc)
def _nhwc_reference(x, R, S, stride, padding, dilation, groups):
    """im2col_ref's columns rearranged as im2col_nhwc writes them: (N·P·Q) x (G, R, S, C/G)."""
    N, C = x.shape[:2]
    p = Conv2dProblem.from_shapes(x.shape, (groups, C // groups, R, S), stride, padding, dilation, groups)
    cols = im2col_ref(x, (R, S), stride, padding, dilation).reshape(N, groups, C // groups, R, S, p.P, p.Q)
    return p, cols.transpose(0, 5, 6, 1, 3, 4, 2).reshape(N * p.P * p.Q, R * S * C)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [((2, 3, 7, 9), 3, 3, 1, 1, 1, 1), ((1, 6, 9, 7), 3, 3, 2, 2, 2, 3),
                                  ((3, 5, 8, 6), 5, 3, 1, 3, 1, 1), ((2, 4, 7, 7), 1, 1, 2, 0, 1, 2),
                                  ((1, 1, 9, 9), 7, 7, 3, 3, 1, 1), ((2, 8, 5, 6), 3, 1, 1, (1, 0), 1, 4)],
                         ids=["c3_s1_p1", "g3_s2_d2", "5x3_s1", "1x1_s2_g2", "c1_7x7_s3", "3x1_g4"])
def test_im2col_nhwc_kernel_matches_reference(be, rng, case, dtype):
    """kernels/im2col.cu's im2col_nhwc (ops/im2col_gemm.py's NHWC column matrix): exact, every
    element written (poisoned), padding zero."""
    shape, R, S, stride, padding, dilation, groups = case
    x = random_array(rng, shape, dtype)
    p, ref = _nhwc_reference(x, R, S, stride, padding, dilation, groups)
    p = p.with_(dtype=dtype)
    cols = be.empty(ref.shape, dtype)
    poison(cols)
    launch_all(be, im2col_nhwc_launch(Ref("x"), Ref("cols"), p, p.N),
               {"x": put(be, np.ascontiguousarray(x.transpose(0, 2, 3, 1))), "cols": cols})
    np.testing.assert_array_equal(be.to_numpy(cols), ref)


@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined"), dict(order="reverse"),
                                  dict(order="random", seed=25)], ids=["asan_ubsan", "reverse", "random"])
def test_im2col_nhwc_checking_modes(rng, mode):
    x = random_array(rng, (2, 6, 7, 5), "float32")
    p, ref = _nhwc_reference(x, 3, 3, 2, 1, 1, 2)
    with cuconv.backend("emulator", **mode) as be:
        cols = be.empty(ref.shape, "float32")
        poison(cols)
        launch_all(be, im2col_nhwc_launch(Ref("x"), Ref("cols"), p, p.N),
                   {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "cols": cols})
    np.testing.assert_array_equal(cols, ref)
