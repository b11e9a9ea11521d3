"""Pooling (kernels/pool.cu, cuconv.ops.pool) against float64 references with PyTorch's
semantics: ceil_mode's last-window rule, count_include_pad, divisor_override, −inf padding,
first-max ties, NaN propagation and int64 plane indices — in float32, float64, float16 and
bfloat16 (references in float64 from the rounded inputs), NCHW and NHWC (layout="NHWC": the
NHWC kernels, 16/8-byte vectors of channels where C allows, one channel otherwise)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cuconv
from conftest import BACKENDS, put
from cuconv.problem import pool_out_size as pool_output_size
from cuconv.reference import avg_pool2d_backward_ref, max_pool2d_backward_ref
from cuconv.reference.pool import (avg_pool2d_ref, global_avg_pool2d_ref, max_pool2d_ref,
                                   pool_out_size_ref)
from cuconv.testing import assert_close, poison, random_array

# (x shape, kernel_size, stride, padding, dilation, ceil_mode)
MAX_CASES = {
    "k3s2p1_C3_7x9": ((2, 3, 7, 9), 3, 2, 1, 1, False),
    "k3s2p1_ceil_9x7": ((1, 3, 9, 7), 3, 2, 1, 1, True),
    "k2_default_stride_8x9": ((2, 1, 8, 9), 2, None, 0, 1, False),
    "rect_dilated_ceil": ((1, 2, 7, 9), (3, 2), (2, 1), (1, 0), (2, 1), True),
    "ceil_drops_window_in_right_pad": ((1, 3, 5, 5), 3, 3, 1, 1, True),
    "dilation2_k5_pad2": ((1, 2, 11, 10), 5, 1, 2, 2, False),     # padding at PyTorch's limit k // 2
    "one_by_one": ((1, 1, 1, 1), 1, 1, 0, 1, False),
    "k3s2p1_ceil_C16_vectors": ((2, 16, 7, 9), 3, 2, 1, 1, True),          # NHWC: 16-byte vectors
    "k3s3_C12_8byte_vectors": ((1, 12, 9, 10), 3, 3, 1, 1, False),        # float16: 8-byte vectors
}
# (x shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = {
    "k3s2p1_include_pad": ((2, 3, 7, 9), 3, 2, 1, False, True, None),
    "k3s2p1_exclude_pad": ((2, 3, 7, 9), 3, 2, 1, False, False, None),
    "ceil_include_pad_overhang": ((1, 3, 8, 6), 3, 2, 1, True, True, None),
    "ceil_exclude_pad": ((1, 1, 8, 6), (3, 2), (2, 3), (1, 1), True, False, None),
    "divisor_override": ((1, 2, 7, 7), 2, 2, 1, True, True, 3),
    "k2_default_stride": ((2, 3, 9, 7), 2, None, 0, False, True, None),
    "ceil_exclude_pad_C16_vectors": ((2, 16, 8, 7), 3, 2, 1, True, False, None),
    "s3_C20_8byte_vectors": ((1, 20, 10, 9), (2, 3), 3, (1, 1), False, True, None),
}


DTYPES = ["float32", "float64", "float16", "bfloat16"]
LAYOUTS = ["NCHW", "NHWC"]


def to_layout(a, layout):
    """An NCHW array in ``layout`` (contiguous)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if layout == "NHWC" else a


def from_layout(a, layout):
    """An array in ``layout`` as NCHW."""
    return a.transpose(0, 3, 1, 2) if layout == "NHWC" else a


def _tied_input(rng, shape, dtype="float32"):
    """Small integers: many exact ties inside every window, so the tie rule is exercised."""
    return rng.integers(-3, 4, size=shape).astype(dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(MAX_CASES), ids=list(MAX_CASES))
def test_max_pool_values_and_indices(be, rng, case, dtype, layout):
    xs, k, s, pad, dil, ceil = MAX_CASES[case]
    x = _tied_input(rng, xs, dtype) if "k3" in case or "dilation" in case else random_array(rng, xs, dtype)
    ref, ref_idx = max_pool2d_ref(x, k, s, pad, dil, ceil, return_indices=True)
    out = put(be, np.empty(to_layout(ref, layout).shape, dtype))
    out_idx = put(be, np.empty(out.shape, np.int64))
    poison(out)
    poison(out_idx)
    y, idx = cuconv.max_pool2d(put(be, to_layout(x, layout)), k, s, pad, dil, ceil, return_indices=True, out=out,
                               out_indices=out_idx, layout=layout)
    assert y is out and idx is out_idx
    y, idx = from_layout(be.to_numpy(y), layout), from_layout(be.to_numpy(idx), layout)
    assert_close(y, ref, dtype, "pool", what=case)
    np.testing.assert_array_equal(y, ref.astype(dtype))    # a max is exact
    np.testing.assert_array_equal(idx, ref_idx)            # h·W + w in both layouts, as torch's channels_last


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_nan_and_minus_inf_follow_pytorch(be, rng, dtype, layout):
    """NaN propagates (index of the last NaN in scan order); a window of −inf keeps its first
    in-bounds position; padding never wins over −inf (it is −inf itself, not a value); +Inf wins
    over every finite value. C = 8: the NHWC vectors hold NaN, ±Inf and finite lanes together."""
    x = random_array(rng, (1, 8, 6, 7), dtype)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 1, 2] = np.nan
    x[0, 1, :3, :3] = -np.inf
    x[0, 2, 4, 4] = np.inf
    x[0, 3, 2, 2] = np.nan
    x[0, 3, 2, 3] = np.inf
    ref, ref_idx = max_pool2d_ref(x, 3, 2, 1, 1, True, return_indices=True)
    assert np.isnan(ref).any() and np.isneginf(ref).any() and np.isposinf(ref).any()
    y, idx = cuconv.max_pool2d(put(be, to_layout(x, layout)), 3, 2, 1, ceil_mode=True, return_indices=True,
                               layout=layout)
    y, idx = from_layout(be.to_numpy(y), layout), from_layout(be.to_numpy(idx), layout)
    np.testing.assert_array_equal(y, ref.astype(dtype))   # NaN == NaN here
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(idx, ref_idx)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pools_propagate_nan_and_inf(be, rng, dtype, layout):
    """A NaN or ±Inf in a window gives NaN / ±Inf (Inf − Inf = NaN), as torch's sums."""
    x = random_array(rng, (1, 8, 5, 6), dtype)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 2, 2] = np.inf
    x[0, 2, 0, 0] = np.inf
    x[0, 2, 0, 1] = -np.inf
    for kind in ("avg", "global"):
        if kind == "avg":
            ref = avg_pool2d_ref(x, 3, 2, 1, True, False)
            y = cuconv.avg_pool2d(put(be, to_layout(x, layout)), 3, 2, 1, True, False, layout=layout)
        else:
            ref = global_avg_pool2d_ref(x)
            y = cuconv.global_avg_pool2d(put(be, to_layout(x, layout)), layout=layout)
        assert not np.isfinite(ref).all()
        assert_close(from_layout(be.to_numpy(y), layout), ref, dtype, "pool", what=kind)


def test_max_pool_without_indices_allocating(be, rng):
    x = random_array(rng, (2, 3, 9, 7))
    ref = max_pool2d_ref(x, 3, 2, 1)
    y = cuconv.max_pool2d(put(be, x), 3, 2, 1)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert_close(y, ref, "float32", "pool")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(AVG_CASES), ids=list(AVG_CASES))
def test_avg_pool(be, rng, case, dtype, layout):
    xs, k, s, pad, ceil, incl, div = AVG_CASES[case]
    x = random_array(rng, xs, dtype, low=0.5, high=1.5)
    ref = avg_pool2d_ref(x, k, s, pad, ceil, incl, div)
    out = put(be, np.empty(to_layout(ref, layout).shape, dtype))
    poison(out)
    y = cuconv.avg_pool2d(put(be, to_layout(x, layout)), k, s, pad, ceil, incl, div, out=out, layout=layout)
    assert y is out
    assert_close(from_layout(be.to_numpy(y), layout), ref, dtype, "pool", what=case)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 9, 1, 3), (1, 2, 33, 40), (2, 40, 5, 3), (1, 66, 3, 5)],
                         ids=["7x7_warp_per_plane", "1x3", "33x40_block_per_plane", "C40_vectors",
                              "C66_lane_blocks"])
def test_global_avg_pool(be, rng, shape, dtype, layout):
    x = random_array(rng, shape, dtype, low=0.5, high=1.5)
    ref = global_avg_pool2d_ref(x)
    out = put(be, np.empty(to_layout(ref, layout).shape, dtype))
    poison(out)
    y = cuconv.global_avg_pool2d(put(be, to_layout(x, layout)), out=out, layout=layout)
    assert_close(from_layout(be.to_numpy(y), layout), ref, dtype, "pool")


def _every_kernel(x, xg, layout):
    """Every pooling kernel of ``layout`` on x (C = 3: scalar; C = 8 / 16: vectors) and xg (large
    planes): max with and without indices, average, global average."""
    x, xg = to_layout(x, layout), to_layout(xg, layout)
    y, idx = cuconv.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True, layout=layout)
    return dict(y=y, idx=idx, ym=cuconv.max_pool2d(x, (2, 3), (1, 2), (1, 1), (2, 1), layout=layout),
                ya=cuconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False, layout=layout),
                g=cuconv.global_avg_pool2d(x, layout=layout), g_large=cuconv.global_avg_pool2d(xg, layout=layout))


def _check_every_kernel(r, x, xg, dtype, layout):
    r = {k: from_layout(np.asarray(v), layout) for k, v in r.items()}
    ref, ref_idx = max_pool2d_ref(x, 3, 2, 1, 1, True, True)
    assert_close(r["y"], ref, dtype, "pool")
    np.testing.assert_array_equal(r["idx"], ref_idx)
    assert_close(r["ym"], max_pool2d_ref(x, (2, 3), (1, 2), (1, 1), (2, 1)), dtype, "pool")
    assert_close(r["ya"], avg_pool2d_ref(x, 3, 2, 1, True, False), dtype, "pool")
    assert_close(r["g"], global_avg_pool2d_ref(x), dtype, "pool")
    assert_close(r["g_large"], global_avg_pool2d_ref(xg), dtype, "pool")


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulator_sanitizers_reverse_order(rng, dtype):
    """AddressSanitizer + UBSan, threads in reverse order: every pooling kernel (max with and
    without indices, average, global average with a warp and with a block per plane; NHWC scalar
    and vector)."""
    cases = [(_tied_input(rng, (1, c, 9, 7), dtype), random_array(rng, (1, c, 33, 40), dtype), layout)
             for c, layout in ((3, "NCHW"), (3, "NHWC"), (16, "NHWC"))]
    with cuconv.backend("emulator", sanitize="address,undefined", order="reverse"):
        results = [_every_kernel(x, xg, layout) for x, xg, layout in cases]
    for r, (x, xg, layout) in zip(results, cases):
        _check_every_kernel(r, x, xg, dtype, layout)


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulator_random_order(rng, dtype):
    cases = [(_tied_input(rng, (1, c, 9, 7), dtype), random_array(rng, (1, c, 33, 40), dtype), layout)
             for c, layout in ((3, "NCHW"), (9, "NCHW"), (3, "NHWC"), (8, "NHWC"))]
    with cuconv.backend("emulator", order="random", seed=11):
        results = [_every_kernel(x, xg, layout) for x, xg, layout in cases]
    for r, (x, xg, layout) in zip(results, cases):
        _check_every_kernel(r, x, xg, dtype, layout)


def test_nhwc_misaligned_arrays_take_single_accesses(be, rng):
    """An NHWC input that does not start 16-byte aligned runs the same vector kernel (the plan does
    not depend on the pointers: a cached call stays on the hot path), which checks each access's
    alignment and loads the V channels one by one there: the same results."""
    x = random_array(rng, (2, 16, 7, 9), "float16")
    flat = put(be, np.empty(x.size + 1, np.float16))
    xm = flat[1:].reshape(to_layout(x, "NHWC").shape)
    xm[...] = put(be, to_layout(x, "NHWC"))
    assert cuconv.plan_max_pool2d(put(be, to_layout(x, "NHWC")), 3, 2, 1, layout="NHWC").kernels == \
        ["pool_max_nhwc_f16_v8"]
    assert cuconv.plan_max_pool2d(xm, 3, 2, 1, layout="NHWC").kernels == ["pool_max_nhwc_f16_v8"]
    assert cuconv.plan_max_pool2d(xm, 3, 2, 1, layout="NHWC").aligned == ()
    y, idx = cuconv.max_pool2d(xm, 3, 2, 1, return_indices=True, layout="NHWC")
    ref, ref_idx = max_pool2d_ref(x, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(from_layout(be.to_numpy(y), "NHWC"), ref.astype(np.float16))
    np.testing.assert_array_equal(from_layout(be.to_numpy(idx), "NHWC"), ref_idx)
    ya = cuconv.avg_pool2d(xm, 3, 2, 1, layout="NHWC")
    assert_close(from_layout(be.to_numpy(ya), "NHWC"), avg_pool2d_ref(x, 3, 2, 1), "float16", "pool")

    def misaligned(shape):
        a = put(be, np.empty(int(np.prod(shape)) + 1, np.float16))[1:].reshape(shape)
        poison(a)
        return a
    out = misaligned(ya.shape)                       # a misaligned output: single stores
    assert cuconv.avg_pool2d(put(be, to_layout(x, "NHWC")), 3, 2, 1, layout="NHWC", out=out) is out
    assert_close(from_layout(be.to_numpy(out), "NHWC"), avg_pool2d_ref(x, 3, 2, 1), "float16", "pool")
    dy = random_array(rng, ref.shape, "float16")
    dym = misaligned(to_layout(dy, "NHWC").shape)
    dym[...] = put(be, to_layout(dy, "NHWC"))
    dx = cuconv.grad.avg_pool2d(dym, xm.shape, 3, 2, 1, layout="NHWC", out=misaligned(xm.shape))
    assert_close(from_layout(be.to_numpy(dx), "NHWC"), avg_pool2d_backward_ref(dy, x.shape, 3, 2, 1), "float16",
                 "pool_grad")
    dx = cuconv.grad.max_pool2d(dym, put(be, to_layout(ref_idx, "NHWC")), xm.shape, 3, 2, 1, layout="NHWC")
    assert_close(from_layout(be.to_numpy(dx), "NHWC"), max_pool2d_backward_ref(dy, ref_idx, x.shape), "float16",
                 "pool_grad")


# --------------------------------------------------------------------------- output sizes
def test_output_size_rules():
    # floor: (7 + 2 - 3) // 2 + 1 = 4
    assert pool_output_size(7, 3, 2, 1, 1, False) == 4
    # ceil without the drop: 5x5, k2 s2 -> 3 (the last window starts inside the input)
    assert pool_output_size(5, 2, 2, 0, 1, True) == 3
    # ceil would give 3, but the third window would start at 6 - 1 = 5 >= 5 + 1 - 1: dropped
    assert pool_output_size(5, 3, 3, 1, 1, True) == 2
    for size in range(1, 12):
        for k in range(1, 5):
            for s in range(1, 4):
                for d in (1, 2):
                    for pad in range(0, ((k - 1) * d + 1) // 2 + 1):
                        for ceil in (False, True):
                            assert pool_output_size(size, k, s, pad, d, ceil) == \
                                pool_out_size_ref(size, k, s, pad, d, ceil)


# --------------------------------------------------------------------------- hypothesis
@st.composite
def pool_args(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph = draw(st.integers(0, kh // 2))          # PyTorch: pad <= kernel_size // 2, whatever the dilation
    pw = draw(st.integers(0, kw // 2))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    ceil = draw(st.booleans())
    H, W = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    N, C = draw(st.integers(1, 2)), draw(st.sampled_from([1, 3, 8]))
    return (N, C, H, W), (kh, kw), stride, (ph, pw), (dh, dw), ceil, draw(st.sampled_from(LAYOUTS))


def _fits(xs, k, stride, pad, dil, ceil):
    s = k if stride is None else stride
    return all(pool_out_size_ref(xs[2 + i], k[i], s[i], pad[i], dil[i], ceil) >= 1 for i in (0, 1))


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=pool_args(), seed=st.integers(0, 2 ** 32 - 1), count_include_pad=st.booleans())
def test_hypothesis_pools_match_reference(backend_name, args, seed, count_include_pad):
    xs, k, stride, pad, dil, ceil, layout = args
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=xs).astype(np.float32)
    xl = to_layout(x, layout)
    backends = [backend_name]          # one backend per test id: the GPU's is marked gpu
    for name in backends:
        with cuconv.backend(name) as be:
            xb = put(be, xl)
            if not _fits(xs, k, stride, pad, dil, ceil):
                with pytest.raises(ValueError, match="output size"):
                    cuconv.max_pool2d(xb, k, stride, pad, dil, ceil, layout=layout)
                continue
            ref, ref_idx = max_pool2d_ref(x, k, stride, pad, dil, ceil, True)
            y, idx = cuconv.max_pool2d(xb, k, stride, pad, dil, ceil, True, layout=layout)
            np.testing.assert_array_equal(from_layout(be.to_numpy(y), layout), ref.astype(np.float32))
            np.testing.assert_array_equal(from_layout(be.to_numpy(idx), layout), ref_idx)
            if dil == (1, 1) and _fits(xs, k, stride, pad, (1, 1), ceil):
                ya = cuconv.avg_pool2d(xb, k, stride, pad, ceil, count_include_pad, layout=layout)
                assert_close(from_layout(be.to_numpy(ya), layout),
                             avg_pool2d_ref(x, k, stride, pad, ceil, count_include_pad),
                             "float32", "pool")


# --------------------------------------------------------------------------- bad arguments
def test_bad_arguments_raise_before_any_launch(rng):
    x = random_array(rng, (1, 3, 7, 7))
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match=r"at most half.*padding \(2, 2\)"):
            cuconv.max_pool2d(x, 3, 1, 2)
        # PyTorch checks pad <= kernel_size // 2 whatever the dilation: the dilated window of 5
        # does not allow a padding of 2 (issue 14).
        with pytest.raises(ValueError, match=r"at most half.*padding \(2, 2\).*kernel_size \(3, 3\)"):
            cuconv.max_pool2d(x[:, :1, :5, :5].copy(), 3, 1, padding=2, dilation=2)
        with pytest.raises(ValueError, match="at most half"):
            cuconv.avg_pool2d(x, 2, 1, 2)
        with pytest.raises(ValueError, match="stride must be positive"):
            cuconv.max_pool2d(x, 3, 0)
        with pytest.raises(ValueError, match="kernel_size must be positive"):
            cuconv.avg_pool2d(x, 0)
        with pytest.raises(ValueError, match=r"output size.*\(1, 3, 7, 7\)"):
            cuconv.max_pool2d(x, 8)
        with pytest.raises(ValueError, match="divisor_override must be nonzero"):
            cuconv.avg_pool2d(x, 2, divisor_override=0)
        with pytest.raises(TypeError, match="divisor_override"):
            cuconv.avg_pool2d(x, 2, divisor_override=1.5)
        with pytest.raises(ValueError, match="4-D"):
            cuconv.max_pool2d(x[0, 0], 2)
        with pytest.raises(TypeError, match="int32"):
            cuconv.avg_pool2d(x.astype(np.int32), 2)
        with pytest.raises(TypeError, match="ceil_mode"):
            cuconv.max_pool2d(x, 2, ceil_mode="yes")
        with pytest.raises(ValueError, match="out must have shape"):
            cuconv.max_pool2d(x, 2, out=np.empty((1, 3, 4, 4), np.float32))
        with pytest.raises(ValueError, match="out_indices"):
            cuconv.max_pool2d(x, 2, out_indices=np.empty((1, 3, 3, 3), np.int64))
        with pytest.raises(TypeError, match="int64"):
            cuconv.max_pool2d(x, 2, return_indices=True, out_indices=np.empty((1, 3, 3, 3), np.int32))
        with pytest.raises(ValueError, match="non-zero C, H and W"):
            cuconv.max_pool2d(np.empty((1, 0, 4, 4), np.float32), 2)


def test_bad_nhwc_arguments_name_the_layout(rng):
    """layout="NHWC" reads the input as N,H,W,C: a shape error says so, before any launch."""
    x = random_array(rng, (1, 7, 7, 4), "float16")
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match=r"layout must be 'NCHW' or 'NHWC', got 'NWHC'"):
            cuconv.max_pool2d(x, 2, layout="NWHC")
        with pytest.raises(ValueError, match=r"output size.*\(1, 4, 7, 7\).*layout NHWC: input \(1, 7, 7, 4\) "
                                             r"read as N,H,W,C"):
            cuconv.max_pool2d(x, 8, layout="NHWC")
        with pytest.raises(ValueError, match=r"at most half.*layout NHWC"):
            cuconv.avg_pool2d(x, 2, 1, 2, layout="NHWC")
        with pytest.raises(ValueError, match=r"out must have shape \(1, 3, 3, 4\)"):
            cuconv.max_pool2d(x, 2, out=np.empty((1, 4, 3, 3), np.float16), layout="NHWC")
        with pytest.raises(ValueError, match=r"N, H, W, C"):
            cuconv.global_avg_pool2d(x[0, 0], layout="NHWC")
        y = cuconv.global_avg_pool2d(x[0], layout="NHWC")            # unbatched H, W, C
        assert y.shape == (1, 1, 4)
