"""The public backward API, ``cuconv.grad`` (ops/conv2d_grad.py, conv_transpose_grad.py,
pool_grad.py): every function end to end against the float64 §9.8 references on awkward
shapes, its plans (launches equal the record backend's,
workspace laid out), determinism across thread orders, NHWC, unbatched and empty inputs,
``out=``, the errors for mismatched shapes, a finite-difference check of conv2d_weight that
needs no torch, and torch.nn.grad when torch is installed. The kernels themselves are tested
in test_conv_dgrad.py, test_conv_wgrad.py, test_depthwise_grad.py, test_pool_grad.py and
test_tc_grad.py."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import put

import cuconv
from cuconv import grad as G
from cuconv.problem import Conv2dProblem, ConvTransposeProblem, numpy_dtype
from cuconv.reference import (
    avg_pool2d_backward_ref,
    conv2d_bias_ref,
    conv2d_input_ref,
    conv2d_ref,
    conv2d_weight_ref,
    global_avg_pool2d_backward_ref,
    max_pool2d_backward_ref,
)
from cuconv.testing import assert_close, poison, random_array

# (x shape, w shape, stride, padding, dilation, groups)
CASES = {
    "stride2_C3": ((2, 3, 9, 7), (10, 3, 3, 3), 2, 1, 1, 1),
    "stride3": ((1, 5, 11, 10), (7, 5, 3, 3), 3, 1, 1, 1),
    "dilation2_groups2": ((2, 6, 9, 9), (6, 3, 3, 3), 1, 2, 2, 2),
    "stem_7x7_stride2": ((1, 3, 13, 11), (8, 3, 7, 7), 2, 3, 1, 1),
    "1x1_C20": ((2, 20, 7, 6), (9, 20, 1, 1), 1, 0, 1, 1),
    "padding_larger_than_half_kernel": ((1, 4, 7, 7), (5, 4, 3, 3), 1, 3, 1, 1),
    "same_even_kernel": ((1, 4, 8, 9), (6, 4, 4, 2), 1, "same", 1, 1),
    "depthwise_M2_stride2": ((2, 6, 9, 7), (12, 1, 3, 3), 2, 1, 1, 6),
    "depthwise_5x5_dil2": ((1, 4, 11, 9), (4, 1, 5, 5), 1, 2, 2, 4),
    "C16_implicit_gemm": ((2, 16, 9, 8), (24, 16, 3, 3), 1, 1, 1, 1),
}
DTYPES = ["float32", "float64"]


def _draw(rng, case, dtype="float32"):
    xs, ws, stride, padding, dilation, groups = case
    p = Conv2dProblem.from_shapes(xs, ws, stride, padding, dilation, groups, dtype)
    args = (stride, padding, dilation, groups)
    return (p, random_array(rng, xs, dtype), random_array(rng, ws, dtype),
            random_array(rng, p.output_shape, dtype), args)


def _ref_padding(p: Conv2dProblem):
    return ((p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right))


def _refs(p, x, w, dy):
    pad, st, dl = _ref_padding(p), (p.stride_h, p.stride_w), (p.dilation_h, p.dilation_w)
    return (conv2d_input_ref(p.input_shape, w, dy, st, pad, dl, p.groups),
            conv2d_weight_ref(x, p.weight_shape, dy, st, pad, dl, p.groups), conv2d_bias_ref(dy))


def _poisoned(be, shape, dtype):
    a = be.empty(shape, dtype)
    poison(a)
    return a


def _np(be, a):
    return be.to_numpy(a) if hasattr(be, "to_numpy") else np.asarray(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_conv_gradients_against_float64(be, rng, case, dtype):
    p, x, w, dy, args = _draw(rng, case, dtype)
    rdx, rdw, rdb = _refs(p, x, w, dy)
    X, Wt, DY = put(be, x), put(be, w), put(be, dy)
    dx = _poisoned(be, p.input_shape, dtype)
    dw = _poisoned(be, p.weight_shape, dtype)
    db = _poisoned(be, (p.K,), dtype)
    assert G.conv2d_input(x.shape, Wt, DY, *args, out=dx) is dx
    assert G.conv2d_weight(X, w.shape, DY, *args, out=dw) is dw
    assert G.conv2d_bias(DY, out=db) is db
    assert_close(_np(be, dx), rdx, dtype, "dgrad")
    assert_close(_np(be, dw), rdw, dtype, "wgrad")
    assert_close(_np(be, db), rdb, dtype, "wgrad")
    # one plan for all three, db fused into the wgrad: the same dx and dw bit for bit
    bx, bw, bb = G.conv2d_backward(X, Wt, DY, *args)
    assert np.array_equal(_np(be, bx), _np(be, dx)) and np.array_equal(_np(be, bw), _np(be, dw))
    assert_close(_np(be, bb), rdb, dtype, "wgrad")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("algo", ["implicit_gemm_tc", "implicit_gemm_tc_simple"])
def test_half_precision_gradients_on_tensor_cores(rng, dtype, algo):
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
    case = CASES["stride2_C3"] if algo == "implicit_gemm_tc_simple" else CASES["C16_implicit_gemm"]
    xs, ws, stride, padding, dilation, groups = case
    dt = numpy_dtype(dtype)
    p = Conv2dProblem.from_shapes(xs, ws, stride, padding, dilation, groups, dtype)
    x, w, dy = (random_array(rng, s).astype(dt) for s in (xs, ws, p.output_shape))
    args = (stride, padding, dilation, groups)
    f64 = [a.astype(np.float64) for a in (x, w, dy)]
    with cuconv.backend("emulator"):
        dx = G.conv2d_input(xs, w, dy, *args, algo=algo)
        dw = G.conv2d_weight(x, ws, dy, *args, algo=algo)
        plan = G.plan_conv2d_input(xs, w, dy, *args, algo=algo)
    rdx, rdw, _ = _refs(p, *f64)
    assert_close(dx.astype(np.float64), rdx, dtype, "tc_grad")
    assert_close(dw.astype(np.float64), rdw, dtype, "tc_grad")
    assert plan.algo == algo and any(k.startswith("tc_conv") for k in plan.kernels)


def test_auto_picks_the_depthwise_kernels_for_depthwise_problems(rng):
    p, x, w, dy, args = _draw(rng, CASES["depthwise_M2_stride2"])
    with cuconv.backend("record"):
        plan = G.plan_conv2d_backward(x, w, dy, *args)
    assert plan.algo == "depthwise+depthwise"
    assert {k.split("_f32")[0] for k in plan.kernels} == {"depthwise_grad_dgrad", "depthwise_grad_wgrad"}


@pytest.mark.parametrize("name, plan_fn, call", [
    ("input", lambda x, w, dy, a: G.plan_conv2d_input(x.shape, w, dy, *a),
     lambda x, w, dy, a: G.conv2d_input(x.shape, w, dy, *a)),
    ("weight", lambda x, w, dy, a: G.plan_conv2d_weight(x, w.shape, dy, *a),
     lambda x, w, dy, a: G.conv2d_weight(x, w.shape, dy, *a)),
    ("backward", lambda x, w, dy, a: G.plan_conv2d_backward(x, w, dy, *a),
     lambda x, w, dy, a: G.conv2d_backward(x, w, dy, *a)),
])
@pytest.mark.parametrize("case", ["stride3", "C16_implicit_gemm", "depthwise_5x5_dil2"])
def test_plans_are_exactly_what_the_calls_launch(rng, name, plan_fn, call, case):
    p, x, w, dy, args = _draw(rng, CASES[case])
    with cuconv.backend("record", sms=8) as rec:
        plan = plan_fn(x, w, dy, args)
        call(x, w, dy, args)
    assert [ln.kernel for ln in rec.launches] == plan.kernels and plan.kernels
    assert [(r.grid, r.block, r.shared_mem) for r in rec.launches] == \
           [(ln.grid, ln.block, ln.shared_mem) for ln in plan.launches]
    assert plan.workspace_bytes == (max(b.offset + b.nbytes for b in plan.buffers) if plan.buffers else 0)


def test_split_k_workspace_is_bounded_and_the_reduction_deterministic(rng):
    # batch 4 of 16x16 with few output tiles: the rule splits the N·P·Q reduction
    case = ((4, 8, 16, 16), (8, 8, 3, 3), 1, 1, 1, 1)
    p, x, w, dy, args = _draw(rng, case)
    with cuconv.backend("record"):
        plan = G.plan_conv2d_weight(x, w.shape, dy, *args)
        capped = G.plan_conv2d_weight(x, w.shape, dy, *args, max_workspace_bytes=0)
        atomic = G.plan_conv2d_weight(x, w.shape, dy, *args, deterministic=False)
    assert plan.workspace_bytes > 0 and "conv_wgrad_splitk_reduce_f32" in plan.kernels
    assert capped.workspace_bytes == 0 and "conv_wgrad_splitk_reduce_f32" not in capped.kernels
    assert atomic.workspace_bytes == 0 and "not deterministic" in atomic.description
    results = []
    for mode in (dict(order="reverse"), dict(order="random", seed=7)):
        with cuconv.backend("emulator", **mode):
            results.append(G.conv2d_weight(x, w.shape, dy, *args))
            results.append(G.conv2d_backward(x, w, dy, *args)[2])
    assert np.array_equal(results[0], results[2]) and np.array_equal(results[1], results[3])
    rdw = _refs(p, x, w, dy)[1]
    assert_close(results[0], rdw, "float32", "wgrad")
    with cuconv.backend("emulator", order="random", seed=3):
        assert_close(G.conv2d_weight(x, w.shape, dy, *args, deterministic=False), rdw, "float32", "wgrad")


def test_nhwc_layout_matches_nchw(rng):
    p, x, w, dy, args = _draw(rng, CASES["dilation2_groups2"])
    nhwc = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))  # noqa: E731
    with cuconv.backend("emulator"):
        dx = G.conv2d_input(x.shape, w, dy, *args)
        dw = G.conv2d_weight(x, w.shape, dy, *args)
        out = np.full(nhwc(dx).shape, np.nan, np.float32)
        dxn = G.conv2d_input(nhwc(x).shape, nhwc(w), nhwc(dy), *args, layout="NHWC", out=out)
        dwn = G.conv2d_weight(nhwc(x), nhwc(w).shape, nhwc(dy), *args, layout="NHWC")
    assert dxn is out and np.array_equal(dxn, nhwc(dx)) and np.array_equal(dwn, nhwc(dw))


def test_unbatched_empty_and_strided_inputs(rng):
    p, x, w, dy, args = _draw(rng, CASES["stride2_C3"])
    x1, dy1 = x[:1], dy[:1]
    with cuconv.backend("emulator"):
        ref_dx = G.conv2d_input(x1.shape, w, dy1, *args)
        ref_dw = G.conv2d_weight(x1, w.shape, dy1, *args)
        assert np.array_equal(G.conv2d_input(x1.shape[1:], w, dy1[0], *args), ref_dx[0])
        assert np.array_equal(G.conv2d_weight(x1[0], w.shape, dy1[0], *args), ref_dw)
        # a strided view gives the same bits as its contiguous copy
        big = np.zeros((2, *dy.shape[1:3], dy.shape[3] * 2), np.float32)
        big[..., ::2] = dy
        assert np.array_equal(G.conv2d_weight(x, w.shape, big[..., ::2], *args), G.conv2d_weight(x, w.shape, dy, *args))
        # N = 0: an empty dx, and dw/db sums over nothing (zeros)
        e = (0, *x.shape[1:])
        ey = np.empty((0, *dy.shape[1:]), np.float32)
        assert G.conv2d_input(e, w, ey, *args).shape == e
        dw0, db0 = G.conv2d_backward(np.empty(e, np.float32), w, ey, *args, output_mask=(False, True, True))[1:]
        assert dw0.shape == w.shape and not dw0.any() and db0.shape == (w.shape[0],) and not db0.any()


def test_cached_calls_do_not_replan(rng):
    p, x, w, dy, args = _draw(rng, CASES["stride3"])
    with cuconv.backend("record"):
        G.conv2d_backward(x, w, dy, *args)
        front = cuconv.ops.conv2d_grad._BACKWARD.plans
        n = len(front)
        G.conv2d_backward(x, w, dy, *args)
        assert len(front) == n
        G.conv2d_backward(np.concatenate([x] * 3), w, np.concatenate([dy] * 3), *args)    # a new batch size
        assert len(front) == n + 1


def test_bad_shapes_and_dtypes_are_rejected_before_any_launch(rng):
    p, x, w, dy, args = _draw(rng, CASES["stride2_C3"])
    with cuconv.backend("record") as rec:
        with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 10, 5, 4\)"):
            G.conv2d_input(x.shape, w, dy[:, :, :4], *args)
        with pytest.raises(ValueError, match="grad_output must have shape"):
            G.conv2d_input((2, 3, 12, 7), w, dy, *args)              # a wrong input_size
        with pytest.raises(ValueError, match="weight's channels|groups|C"):
            G.conv2d_weight(x, (10, 2, 3, 3), dy, *args)
        with pytest.raises(TypeError, match="same dtype"):
            G.conv2d_input(x.shape, w, dy.astype(np.float64), *args)
        with pytest.raises(TypeError, match="input_size must be a sequence"):
            G.conv2d_input(3, w, dy, *args)
        with pytest.raises(ValueError, match="out must have shape"):
            G.conv2d_weight(x, w.shape, dy, *args, out=np.empty((10, 3, 3, 2), np.float32))
        with pytest.raises(ValueError, match="overlaps"):
            G.conv2d_input(dy.shape, np.ones((10, 10, 1, 1), np.float32), dy, out=dy)
        with pytest.raises(TypeError, match="takes dtype float16 or bfloat16"):    # as conv2d's named algorithms
            G.conv2d_input(x.shape, w, dy, *args, algo="implicit_gemm_tc")
        with pytest.raises(ValueError, match="unknown algo"):
            G.conv2d_input(x.shape, w, dy, *args, algo="winograd")
        y = random_array(rng, (2, 3, 5, 4))
        idx = np.zeros((2, 3, 5, 4), np.int64)
        with pytest.raises(TypeError, match="indices must have dtype int64"):
            G.max_pool2d(y, idx.astype(np.int32), (2, 3, 9, 7))
        with pytest.raises(ValueError, match="indices must have shape"):
            G.max_pool2d(y, idx[:, :, :4], (2, 3, 9, 7))
        with pytest.raises(ValueError, match="disagree on N and C"):
            G.max_pool2d(y, idx, (2, 4, 9, 7))
        with pytest.raises(ValueError, match="grad_output must have shape"):
            G.max_pool2d(y, idx, (2, 3, 9, 7), 3, 2, 0)
        with pytest.raises(ValueError, match="grad_output must have shape"):
            G.avg_pool2d(y, (2, 3, 9, 7), 2)
        with pytest.raises(ValueError, match=r"\(N, C, 1, 1\)"):
            G.global_avg_pool2d(y, (2, 3, 9, 7))
    assert rec.launches == []


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_gradients(be, rng, dtype):
    x = random_array(rng, (2, 3, 9, 8), dtype)
    x32 = put(be, x.astype(np.float32))       # the forward pools (and their indices) in float32
    for window in ((3, 2, 1, 1, False), ((3, 2), 1, 1, 2, True), (2, None, 0, 1, True)):
        _, idx = cuconv.max_pool2d(x32, *window, return_indices=True)
        dy = random_array(rng, idx.shape, dtype)
        ref = max_pool2d_backward_ref(dy, _np(be, idx), x.shape)
        scatter = G.max_pool2d(put(be, dy), idx, x.shape)
        gather = G.max_pool2d(put(be, dy), idx, x.shape, *window)
        assert_close(_np(be, scatter), ref, dtype, "pool_grad")
        assert np.array_equal(_np(be, scatter), _np(be, gather))
    for kw in (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
               dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), divisor_override=5),
               dict(kernel_size=3)):
        y = cuconv.avg_pool2d(x32, **kw)
        dy = random_array(rng, y.shape, dtype)
        out = _poisoned(be, x.shape, dtype)
        G.avg_pool2d(put(be, dy), x.shape, out=out, **kw)
        assert_close(_np(be, out), avg_pool2d_backward_ref(dy, x.shape, **kw), dtype, "pool_grad")
    dy = random_array(rng, (2, 3, 1, 1), dtype)
    assert_close(_np(be, G.global_avg_pool2d(put(be, dy), x.shape)), global_avg_pool2d_backward_ref(dy, x.shape),
                 dtype, "pool_grad")


@pytest.mark.parametrize("case", [((2, 4, 5, 7), (4, 3, 3, 3), 2, 1, 1, 1, 1),
                                  ((1, 6, 4, 5), (6, 2, 4, 4), 3, 1, 2, 3, 1),
                                  ((2, 3, 5, 5), (3, 4, 3, 3), 1, 2, 0, 1, 2)],
                         ids=["stride2_outpad1", "stride3_groups3", "dilation2"])
def test_transposed_convolution_gradients(rng, case):
    xs, ws, stride, padding, output_padding, groups, dilation = case
    x, w = random_array(rng, xs), random_array(rng, ws)
    tp = ConvTransposeProblem.from_shapes(xs, ws, stride, padding, output_padding, groups, dilation)
    dy = random_array(rng, tp.output_shape)
    q = tp.as_conv2d()
    args = (stride, padding, output_padding, groups, dilation)
    with cuconv.backend("emulator"):
        dx = G.conv_transpose2d_input(xs, w, dy, *args)
        dw = G.conv_transpose2d_weight(x, ws, dy, *args)
        db = G.conv2d_bias(dy)
    pad = ((q.pad_h, q.pad_bottom), (q.pad_w, q.pad_right))
    padded = np.pad(dy.astype(np.float64), ((0, 0), (0, 0), pad[0], pad[1]))
    ref_dx = conv2d_ref(padded, w.astype(np.float64), None, stride=(q.stride_h, q.stride_w), padding=0,
                        dilation=(q.dilation_h, q.dilation_w), groups=groups)
    assert_close(dx, ref_dx, "float32", "dgrad")
    assert_close(dw, conv2d_weight_ref(dy, ws, x, (q.stride_h, q.stride_w), pad, (q.dilation_h, q.dilation_w),
                                       groups), "float32", "wgrad")
    assert_close(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), "float32", "wgrad")


def test_algorithms_lists_every_gradient_algorithm_with_reasons():
    p = Conv2dProblem.from_shapes((2, 6, 9, 9), (6, 1, 3, 3), 1, 1, 1, 6)
    with cuconv.backend("record"):
        for which in G.WHICH:
            infos = {i.name: i for i in G.algorithms(p, which)}
            assert set(infos) == set(G.CONV_ALGOS)
            assert infos["depthwise"].ok and infos["depthwise"].auto_rule
            assert infos["direct"].ok and infos["direct"].auto_rule is None
            assert not infos["implicit_gemm_tc"].ok and "float16" in infos["implicit_gemm_tc"].reason
        dense = {i.name: i for i in G.algorithms(p.with_(groups=1, C=6, K=6), "weight")}
        assert not dense["depthwise"].ok and dense["depthwise"].reason


def test_conv2d_weight_against_finite_differences(rng):
    """No torch needed: L = Σ dy·conv2d(x, w); ∂L/∂w[i] ≈ (L(w + h·e_i) − L(w − h·e_i)) / 2h,
    exact for a loss linear in w up to float64 rounding of the forward reference."""
    case = ((1, 3, 7, 6), (4, 3, 3, 2), 2, (1, 0), (2, 1), 1)
    p, x, w, dy, args = _draw(rng, case, "float64")
    with cuconv.backend("emulator"):
        dw = G.conv2d_weight(x, w.shape, dy, *args)

    def loss(wt):
        return float((conv2d_ref(x, wt, None, *args) * dy).sum())

    h = 1e-3
    for i in [tuple(rng.integers(0, s) for s in w.shape) for _ in range(12)]:
        e = np.zeros_like(w)
        e[i] = h
        fd = (loss(w + e) - loss(w - e)) / (2 * h)
        assert abs(dw[i] - fd) <= 1e-9 * max(1.0, abs(fd)), (i, dw[i], fd)


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
def test_against_torch_nn_grad(rng):
    torch = pytest.importorskip("torch")
    for name in ("stride3", "dilation2_groups2", "same_even_kernel", "depthwise_M2_stride2"):
        p, x, w, dy, args = _draw(rng, CASES[name], "float64")
        stride, padding, dilation, groups = args
        with cuconv.backend("emulator"):
            dx, dw, db = G.conv2d_backward(x, w, dy, *args)
        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        tb = torch.zeros(w.shape[0], dtype=torch.float64, requires_grad=True)
        torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups).backward(torch.from_numpy(dy))
        for ours, theirs in ((dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-11, atol=1e-11)


# (x, w, stride, padding, output_padding, groups, dilation): output_padding spans a whole stride
# (legal because it is below the dilation), so the convolution whose data gradient the transposed
# one is stops short of its input's end (negative end padding).
CROPPING = {
    "issue22_reproducer": ((1, 1, 3, 3), (1, 1, 2, 2), 1, 0, 1, 1, 2),
    "stride2_outpad2_dil3_groups2": ((2, 8, 5, 4), (8, 4, 3, 3), 2, 0, 2, 2, 3),
    "stride1_outpad2_dil3_C16": ((1, 16, 6, 7), (16, 16, 3, 3), 1, 0, 2, 1, 3),
    "depthwise_stride2_outpad3_dil4": ((2, 4, 5, 5), (4, 1, 3, 3), 2, 0, 3, 4, 4),
}


@pytest.mark.parametrize("case", list(CROPPING))
def test_transposed_gradients_when_output_padding_spans_a_stride(rng, case):
    """Issue 22: the forward runs, so the gradients must (they were refused with a ValueError);
    every algorithm that takes the cropped convolution agrees with torch.autograd."""
    torch = pytest.importorskip("torch")
    xs, ws, stride, padding, output_padding, groups, dilation = CROPPING[case]
    args = (stride, padding, output_padding, groups, dilation)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = torch.nn.functional.conv_transpose2d(tx, tw, None, *args)
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    q = ConvTransposeProblem.from_shapes(xs, ws, *args, dtype="float64").as_conv2d()
    assert min(q.pad_bottom, q.pad_right) < 0, q
    with cuconv.backend("emulator"):
        np.testing.assert_allclose(cuconv.conv_transpose2d(x, w, None, *args), y.detach().numpy(), rtol=1e-12,
                                   atol=1e-12)
        for algo in ["auto"] + [i.name for i in cuconv.algorithms(q) if i.ok]:
            dx = G.conv_transpose2d_input(xs, w, dy, *args, algo=algo)
            np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-11, atol=1e-11, err_msg=algo)
        for algo in ["auto"] + [i.name for i in G.algorithms(q, "weight") if i.ok]:
            dw = G.conv_transpose2d_weight(x, ws, dy, *args, algo=algo)
            np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-11, atol=1e-11, err_msg=algo)
    refused = {i.name: i.reason for i in cuconv.algorithms(q) if not i.ok}
    assert all("negative end padding" not in r or n.startswith("winograd") or n == "pointwise"
               for n, r in refused.items()), refused
