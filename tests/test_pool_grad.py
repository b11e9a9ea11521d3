"""Pooling backward (kernels/pool_grad.cu, cuconv.ops.pool_grad: cuconv.grad's pooling gradients,
launched through their plans) against float64 references:
max routes dy through the int64 indices (overlapping windows summed, deterministically, gather
and scatter agreeing bit for bit), average spreads dy / divisor with PyTorch's divisor rules
(count_include_pad, ceil_mode's overhang, divisor_override), global average dy / (H·W)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import put

import cuconv
from cuconv.ops import pool_grad as pg
from cuconv.reference import (avg_pool2d_backward_ref, global_avg_pool2d_backward_ref,
                              max_pool2d_backward_ref)
from cuconv.reference.pool import avg_pool2d_ref, max_pool2d_ref
from cuconv.testing import assert_close, poison, random_array

DTYPES = ["float32", "float64"]
# (x shape, kernel_size, stride, padding, dilation, ceil_mode); stride < kernel: windows overlap
MAX_CASES = {
    "k3s2p1_C3_7x9": ((2, 3, 7, 9), 3, 2, 1, 1, False),
    "k3s1_overlap_ceil_9x7": ((1, 3, 9, 7), 3, 1, 1, 1, True),
    "rect_dilated_ceil": ((1, 2, 7, 9), (3, 2), (2, 1), (1, 0), (2, 1), True),
    "ceil_drops_window_in_right_pad": ((1, 3, 5, 5), 3, 3, 1, 1, True),
    "dilation2_k5_pad2": ((1, 2, 11, 10), 5, 1, 2, 2, False),     # padding at PyTorch's limit k // 2
    "k2_default_stride": ((2, 1, 8, 9), 2, None, 0, 1, False),
    "stride_beyond_kernel": ((1, 2, 10, 11), 2, 3, 0, 1, False),
}
# (x shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = {
    "k3s2p1_include_pad": ((2, 3, 7, 9), 3, 2, 1, False, True, None),
    "k3s2p1_exclude_pad": ((2, 3, 7, 9), 3, 2, 1, False, False, None),
    "k3s1_overlap": ((1, 2, 6, 7), 3, 1, 1, False, True, None),
    "ceil_include_pad_overhang": ((1, 3, 8, 6), 3, 2, 1, True, True, None),
    "ceil_exclude_pad": ((1, 1, 8, 6), (3, 2), (2, 3), (1, 1), True, False, None),
    "divisor_override": ((1, 2, 7, 7), 2, 2, 1, True, True, 3),
    "k2_default_stride": ((2, 3, 9, 7), 2, None, 0, False, True, None),
}


def _tied_forward(rng, xs, k, s, pad, dil, ceil, dtype):
    """Small integers: exact ties inside overlapping windows, so an input is the max of several."""
    x = rng.integers(-2, 3, size=xs).astype(dtype)
    y, idx = max_pool2d_ref(x, k, s, pad, dil, ceil, return_indices=True)
    return x, idx, random_array(rng, y.shape, dtype)


def _max_bwd(be, dy, idx, xs, window=None):
    """dx through max_pool2d's gradient plan (gather with the forward's ``window``, scatter
    without), into a poisoned output; the kernel launched; the scatter's count of indices
    outside the plane (its workspace word), or None."""
    dx = be.empty(xs, dy.dtype)
    poison(dx)
    plan = pg.plan_max_pool2d(put(be, dy), put(be, idx), xs, *(window or ()))
    bad = None
    if plan.workspace_bytes:
        bad = be.workspace(plan.workspace_bytes)
        bad[...] = 0
    plan.run(put(be, dy), put(be, idx), dx=dx, workspace=bad)
    (name,) = plan.kernels
    return be.to_numpy(dx), name, None if bad is None else bad.view(np.uint64)


def _avg_bwd(be, dy, dx, k, s=None, pad=0, ceil=False, cip=True, dov=None):
    """avg_pool2d's gradient plan run into ``dx``; the kernel launched."""
    plan = pg.plan_avg_pool2d(put(be, dy), dx.shape, k, s, pad, ceil, cip, dov)
    plan.run(put(be, dy), dx=dx)
    return plan.kernels[0]


def _global_bwd(be, dy, dx):
    pg.plan_global_avg_pool2d(put(be, dy), dx.shape).run(put(be, dy), dx=dx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(MAX_CASES), ids=list(MAX_CASES))
def test_max_pool_backward_gather_and_scatter(be, rng, case, dtype):
    xs, k, s, pad, dil, ceil = MAX_CASES[case]
    _, idx, dy = _tied_forward(rng, xs, k, s, pad, dil, ceil, dtype)
    ref = max_pool2d_backward_ref(dy, idx, xs)
    gathered, n1, _ = _max_bwd(be, dy, idx, xs, (k, s, pad, dil, ceil))
    scattered, n2, bad = _max_bwd(be, dy, idx, xs)
    assert n1.startswith("pool_grad_max_gather") and n2.startswith("pool_grad_max_scatter")
    assert int(be.to_numpy(bad)[0]) == 0
    assert_close(gathered, ref, dtype, "pool_grad", what=f"{case} gather")
    # Both sum each input's gradients in output order: the same bits.
    np.testing.assert_array_equal(gathered, scattered)
    if "overlap" in case or "dilation2" in case:
        assert (np.bincount(idx[0, 0].ravel()) > 1).any(), "the case must route two dy to one x"


def test_scatter_takes_indices_anywhere_and_counts_bad_ones(be, rng):
    """The indices-only kernel follows PyTorch's CPU loop: any in-plane index, repeats summed in
    output order; an index outside [0, H·W) is skipped and counted."""
    xs = (2, 3, 6, 5)
    dy = random_array(rng, (2, 3, 4, 4), "float64")
    idx = rng.integers(0, 30, size=dy.shape).astype(np.int64)
    idx[0, 0, :2, :2] = 7                       # four outputs on one input
    got, _, bad = _max_bwd(be, dy, idx, xs)
    assert_close(got, max_pool2d_backward_ref(dy, idx, xs), "float64", "pool_grad")
    seq = 0.0
    for o in range(16):                          # plane 0 in output order
        if idx[0, 0].ravel()[o] == 7:
            seq += dy[0, 0].ravel()[o]
    assert got[0, 0].ravel()[7] == seq
    idx[1, 2, 0, 0] = 30
    idx[0, 1, 3, 3] = -1
    got, _, bad = _max_bwd(be, dy, idx, xs)
    assert int(be.to_numpy(bad)[0]) == 2
    keep = idx.copy()
    dy2 = dy.copy()
    dy2[1, 2, 0, 0] = 0.0
    dy2[0, 1, 3, 3] = 0.0
    keep[1, 2, 0, 0] = keep[0, 1, 3, 3] = 0
    assert_close(got, max_pool2d_backward_ref(dy2, keep, xs), "float64", "pool_grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(AVG_CASES), ids=list(AVG_CASES))
def test_avg_pool_backward(be, rng, case, dtype):
    xs, k, s, pad, ceil, cip, dov = AVG_CASES[case]
    P, Q = avg_pool2d_ref(np.zeros(xs), k, s, pad, ceil, cip, dov).shape[2:]
    dy = random_array(rng, (xs[0], xs[1], P, Q), dtype)
    ref = avg_pool2d_backward_ref(dy, xs, k, s, pad, ceil, cip, dov)
    dx = be.empty(xs, dtype)
    poison(dx)
    assert _avg_bwd(be, dy, dx, k, s, pad, ceil, cip, dov) == f"pool_grad_avg_{'f32' if dtype == 'float32' else 'f64'}"
    assert_close(dx, ref, dtype, "pool_grad", what=case)


def test_avg_reference_is_the_adjoint_of_the_forward(rng):
    """<dy, avg_pool(x)> == <avg_pool_backward(dy), x> for every divisor rule (no torch needed)."""
    for case, (xs, k, s, pad, ceil, cip, dov) in AVG_CASES.items():
        x = rng.standard_normal(xs)
        y = avg_pool2d_ref(x, k, s, pad, ceil, cip, dov)
        dy = rng.standard_normal(y.shape)
        dx = avg_pool2d_backward_ref(dy, xs, k, s, pad, ceil, cip, dov)
        assert abs(np.sum(dy * y) - np.sum(dx * x)) < 1e-12 * np.sum(np.abs(dy * y)), case


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avg_pool_backward(be, rng, dtype):
    dy = random_array(rng, (2, 5, 1, 1), dtype)
    dx = be.empty((2, 5, 7, 9), dtype)
    poison(dx)
    _global_bwd(be, dy, dx)
    assert_close(dx, global_avg_pool2d_backward_ref(dy, (2, 5, 7, 9)), dtype, "pool_grad")


@pytest.mark.parametrize("mode", [
    pytest.param(dict(sanitize="address,undefined", order="reverse"), id="asan_ubsan_reverse"),
    pytest.param(dict(order="random", seed=3), id="random"),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_under_emulator_checks(rng, mode, dtype):
    xs, k, s, pad, dil, ceil = MAX_CASES["rect_dilated_ceil"]
    xs = (3, 3, 7, 9)                      # 9 planes: two scatter blocks, the second partial
    _, idx, dy = _tied_forward(rng, xs, k, s, pad, dil, ceil, dtype)
    axs, ak, as_, apad, aceil, acip, adov = AVG_CASES["ceil_include_pad_overhang"]
    ady = random_array(rng, avg_pool2d_ref(np.zeros(axs), ak, as_, apad, aceil).shape, dtype)
    gdy = random_array(rng, (2, 3, 1, 1), dtype)
    with cuconv.backend("emulator", **mode) as be:
        gathered, _, _ = _max_bwd(be, dy, idx, xs, (k, s, pad, dil, ceil))
        scattered, _, bad = _max_bwd(be, dy, idx, xs)
        adx = np.full(axs, np.nan, dtype)
        _avg_bwd(be, ady, adx, ak, as_, apad, aceil, acip, adov)
        gdx = np.full((2, 3, 5, 6), np.nan, dtype)
        _global_bwd(be, gdy, gdx)
    ref = max_pool2d_backward_ref(dy, idx, xs)
    assert_close(gathered, ref, dtype, "pool_grad", what="gather")
    np.testing.assert_array_equal(gathered, scattered)
    assert int(bad[0]) == 0
    assert_close(adx, avg_pool2d_backward_ref(ady, axs, ak, as_, apad, aceil, acip, adov), dtype, "pool_grad")
    assert_close(gdx, global_avg_pool2d_backward_ref(gdy, (2, 3, 5, 6)), dtype, "pool_grad")


@pytest.mark.parametrize("case", ["k3s1_overlap_ceil_9x7", "rect_dilated_ceil", "k3s2p1_C3_7x9"])
def test_max_pool_against_torch(be, rng, case):
    torch = pytest.importorskip("torch")
    xs, k, s, pad, dil, ceil = MAX_CASES[case]
    x, idx, dy = _tied_forward(rng, xs, k, s, pad, dil, ceil, "float32")
    xt = torch.tensor(x, requires_grad=True)
    yt, it = torch.nn.functional.max_pool2d(xt, k, s, pad, dil, ceil, return_indices=True)
    np.testing.assert_array_equal(it.numpy(), idx)       # the forward reference's tie rule is torch's
    yt.backward(torch.tensor(dy))
    got, _, _ = _max_bwd(be, dy, idx, xs)
    # float32 sums in output order, as torch's CPU kernel: equal bits.
    np.testing.assert_array_equal(got, xt.grad.numpy())


@pytest.mark.parametrize("case", list(AVG_CASES), ids=list(AVG_CASES))
def test_avg_pool_against_torch(be, rng, case):
    torch = pytest.importorskip("torch")
    xs, k, s, pad, ceil, cip, dov = AVG_CASES[case]
    xt = torch.tensor(rng.standard_normal(xs), requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, k, s, pad, ceil, cip, dov)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dy))
    assert_close(avg_pool2d_backward_ref(dy, xs, k, s, pad, ceil, cip, dov), xt.grad.numpy(), "float64",
                 "pool_grad", what="reference vs torch")
    dx = be.empty(xs, "float64")
    poison(dx)
    _avg_bwd(be, dy, dx, k, s, pad, ceil, cip, dov)
    assert_close(dx, xt.grad.numpy(), "float64", "pool_grad", what="kernel vs torch")


def test_bad_arguments_are_rejected_before_launch(rng):
    dy = random_array(rng, (1, 2, 3, 3))
    idx = np.zeros((1, 2, 3, 3), np.int64)
    dx = np.empty((1, 2, 7, 7), np.float32)
    with cuconv.backend("record") as rec:
        with pytest.raises(TypeError, match="indices must have dtype int64"):
            pg.max_pool2d(dy, idx.astype(np.int32), dx.shape, out=dx)
        with pytest.raises(ValueError, match="indices must have shape"):
            pg.max_pool2d(dy, idx[:, :, :2].copy(), dx.shape, out=dx)
        with pytest.raises(ValueError, match="disagree on N and C"):
            pg.max_pool2d(dy, idx, (1, 3, 7, 7))
        with pytest.raises(TypeError, match="out must have the same dtype"):
            pg.max_pool2d(dy, idx, dx.shape, out=dx.astype(np.float64))
        with pytest.raises(ValueError, match="the output of max_pool2d's window"):
            pg.max_pool2d(dy, idx, dx.shape, 3, 1, 0, 1, False, out=dx)     # 7x7 -> 5x5
        with pytest.raises(ValueError, match="the output of avg_pool2d's window"):
            pg.avg_pool2d(dy, dx.shape, 3, 1, out=dx)
        with pytest.raises(ValueError, match="padding must be at most half"):
            pg.avg_pool2d(dy, dx.shape, 3, 2, 2, out=dx)
        with pytest.raises(ValueError, match="divisor_override must be nonzero"):
            pg.avg_pool2d(dy, dx.shape, 3, 2, 0, divisor_override=0, out=dx)
        with pytest.raises(ValueError, match=r"\(N, C, 1, 1\)"):
            pg.global_avg_pool2d(dy, dx.shape, out=dx)
        with pytest.raises(TypeError, match="float32 or float64"):
            pg.avg_pool2d(dy.astype(np.float16), dx.shape, 3, 2, out=dx)
    assert rec.launches == []
