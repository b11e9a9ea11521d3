"""cuconv against PyTorch itself on NaN, ±Inf and padding (issue 22; cuconv.testing's docstring
and docs/semantics.md state the rules).

Random problems with NaN/±Inf planted in the inputs, weights, biases, residuals and upstream
gradients, run on the emulator through the public API by every algorithm ``cuconv.algorithms``
(and ``cuconv.grad.algorithms``) lists and by ``auto``, with every activation; torch (CPU,
float64, on the same values) is the reference. NaN positions and ±Inf values must match torch
exactly, finite values within cuconv.testing's tolerance. Also: every algorithm gives the same
NaN/Inf mask as every other on one problem, and the reproducers of issue 22 items 1, 2 and 6.
"""
from __future__ import annotations

import os

import ml_dtypes  # noqa: F401  (bfloat16 arrays)
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cuconv
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref, max_pool2d_backward_ref
from cuconv.testing import assert_close, nonfinite_mismatch, poison

torch = pytest.importorskip("torch")
F = torch.nn.functional
# torch's note that padding="same" with an even kernel copies the input: not ours to act on.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

ACTIVATIONS = (None, "relu", "relu6", "silu")
SPECIALS = (np.nan, np.inf, -np.inf)
# Examples per property (CUCONV_SEMANTICS_EXAMPLES raises it for a longer local run).
EXAMPLES = settings(max_examples=int(os.environ.get("CUCONV_SEMANTICS_EXAMPLES", 40)), deadline=None,
                    derandomize=not os.environ.get("CUCONV_SEMANTICS_EXAMPLES"), database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------- helpers
def t64(a):
    return None if a is None else torch.from_numpy(np.asarray(a).astype(np.float64))


def act_torch(y, activation):
    return {None: lambda v: v, "relu": F.relu, "relu6": F.relu6, "silu": F.silu}[activation](y)


def draw_array(rng, shape, dtype, specials):
    """Seeded values in [-1, 1) with ``specials`` NaN/±Inf at random positions, in ``dtype``."""
    a = rng.uniform(-1, 1, size=shape)
    flat = a.reshape(-1)
    for _ in range(specials if flat.size else 0):
        flat[rng.integers(flat.size)] = SPECIALS[rng.integers(3)]
    return a.astype(dtype)


def run(fn, shape, dtype, **kwargs):
    """``fn(**kwargs, out=out)`` into a NaN-poisoned ``out`` (so an unwritten element fails)."""
    out = np.empty(shape, dtype)
    poison(out)
    fn(**kwargs, out=out)
    return out


def fin_abs(a):
    """|a| with NaN/±Inf as 0, in float64: the inputs of the error's scale (Σ|a|·|b| per output)."""
    if a is None:
        return None
    a = np.asarray(a).astype(np.float64)
    return np.where(np.isfinite(a), np.abs(a), 0.0)


def check(got, want, dtype, algo, what, scale=None):
    assert_close(got, want, dtype, algo, what, scale=scale)


def tol_algo(algo, dtype):
    """cuconv.testing's table key for a forward ``algo`` (``auto`` is held to the loosest bound
    of the algorithms it may pick)."""
    if algo == "auto":
        return {"float16": "implicit_gemm_tc", "bfloat16": "implicit_gemm_tc", "float64": "direct"}.get(
            dtype, "winograd_f4x4_3x3")
    return algo


@st.composite
def conv_cases(draw, depthwise=False):
    """A small convolution with awkward sizes: (x shape, w shape, conv2d keyword arguments)."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if depthwise:
        cg, groups = 1, draw(st.integers(1, 4))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    if draw(st.integers(0, 5)) == 0:
        stride, padding = 1, "same"
        H, W = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 2)))
        h_min = max(1, dh * (R - 1) + 1 - 2 * padding[0])
        w_min = max(1, dw * (S - 1) + 1 - 2 * padding[1])
        H, W = draw(st.integers(h_min, h_min + 6)), draw(st.integers(w_min, w_min + 6))
    N = draw(st.integers(1, 2))
    return ((N, cg * groups, H, W), (kg * groups, cg, R, S),
            dict(stride=stride, padding=padding, dilation=(dh, dw), groups=groups))


# --------------------------------------------------------------------------- forward conv2d
def torch_conv2d(x, w, bias, residual, activation, args):
    y = F.conv2d(t64(x), t64(w), t64(bias), **args)
    if residual is not None:
        y = y + t64(residual)
    return act_torch(y, activation).numpy()


def conv2d_algorithms(problem, layout):
    return [i.name for i in cuconv.algorithms(problem, layout=layout) if i.ok] + ["auto"]


def to_layout(a, layout):
    return a if a is None or layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def from_layout(a, layout):
    return a if layout == "NCHW" else a.transpose(0, 3, 1, 2)


def conv2d_all(x, w, bias, residual, activation, args, layout="NCHW"):
    """{algorithm: NCHW output} for every algorithm that can run the problem, and ``auto``."""
    dtype = x.dtype.name
    problem = Conv2dProblem.from_shapes(x.shape, w.shape, dtype=dtype, **args)
    shape = problem.output_shape if layout == "NCHW" else (problem.N, problem.P, problem.Q, problem.K)
    outs = {}
    for algo in conv2d_algorithms(problem, layout):
        out = run(cuconv.conv2d, shape, x.dtype, x=to_layout(x, layout), w=to_layout(w, layout), bias=bias,
                  residual=to_layout(residual, layout), activation=activation, algo=algo, layout=layout, **args)
        outs[algo] = from_layout(out, layout)
    return outs


@EXAMPLES
@given(case=conv_cases(), seed=st.integers(0, 2 ** 32 - 1),
       dtype=st.sampled_from(["float32", "float32", "float32", "float64", "float16", "bfloat16"]),
       activation=st.sampled_from(ACTIVATIONS), with_bias=st.booleans(), with_residual=st.booleans(),
       layout=st.sampled_from(["NCHW", "NCHW", "NHWC"]))
def test_conv2d_every_algorithm_matches_torch(case, seed, dtype, activation, with_bias, with_residual, layout):
    x_shape, w_shape, args = case
    rng = np.random.default_rng(seed)
    x = draw_array(rng, x_shape, dtype, rng.integers(0, 3))
    w = draw_array(rng, w_shape, dtype, rng.integers(0, 3))
    problem = Conv2dProblem.from_shapes(x_shape, w_shape, dtype=dtype, **args)
    bias = draw_array(rng, (w_shape[0],), dtype, rng.integers(0, 2)) if with_bias else None
    residual = draw_array(rng, problem.output_shape, dtype, rng.integers(0, 2)) if with_residual else None
    want = torch_conv2d(x, w, bias, residual, activation, args)
    scale = torch_conv2d(fin_abs(x), fin_abs(w), fin_abs(bias), fin_abs(residual), None, args)
    with cuconv.backend("emulator"):
        outs = conv2d_all(x, w, bias, residual, activation, args, layout)
    assert len(outs) >= 2, problem.describe()
    for algo, got in outs.items():
        check(got, want, dtype, tol_algo(algo, dtype), f"{algo} {layout} {activation} on {problem.describe()}", scale)


@EXAMPLES
@given(case=conv_cases(), seed=st.integers(0, 2 ** 32 - 1), activation=st.sampled_from(ACTIVATIONS))
def test_every_algorithm_gives_the_same_nonfinite_mask(case, seed, activation):
    """All algorithms agree with each other on where NaN and ±Inf are (and on the Inf signs),
    whatever torch says: one answer per problem."""
    x_shape, w_shape, args = case
    rng = np.random.default_rng(seed)
    x = draw_array(rng, x_shape, "float32", rng.integers(1, 3))
    w = draw_array(rng, w_shape, "float32", rng.integers(1, 3))
    with cuconv.backend("emulator"):
        outs = conv2d_all(x, w, None, None, activation, args)
    first, base = next(iter(outs.items()))
    assert not np.isfinite(base).all() or not np.isfinite(x).all() or not np.isfinite(w).all()
    for algo, got in outs.items():
        assert nonfinite_mismatch(got, base) is None, f"{algo} vs {first}: {nonfinite_mismatch(got, base)}"


def test_numpy_reference_follows_the_semantics():
    """cuconv.reference (the float64 NumPy reference every kernel test uses) agrees with torch on
    non-finite values: padded 0·w, relu(NaN), the epilogue."""
    rng = np.random.default_rng(22)
    for activation in ACTIVATIONS:
        x = draw_array(rng, (2, 3, 6, 7), "float64", 3)
        w = draw_array(rng, (4, 3, 3, 3), "float64", 3)
        bias, residual = draw_array(rng, (4,), "float64", 1), draw_array(rng, (2, 4, 3, 7), "float64", 2)
        args = dict(stride=(2, 1), padding=1, dilation=1, groups=1)
        got = conv2d_ref(x, w, bias, activation=activation, residual=residual, **args)
        assert_close(got, torch_conv2d(x, w, bias, residual, activation, args), "float64", "direct")


@EXAMPLES
@given(M=st.integers(1, 9), N=st.integers(1, 9), K=st.integers(1, 12), seed=st.integers(0, 2 ** 32 - 1),
       dtype=st.sampled_from(["float32", "float64", "float16", "bfloat16"]), activation=st.sampled_from(ACTIVATIONS),
       with_bias=st.booleans(), with_residual=st.booleans(), allow_tf32=st.booleans())
def test_gemm_matches_torch(M, N, K, seed, dtype, activation, with_bias, with_residual, allow_tf32):
    """cuconv.gemm's epilogue (the pointwise and separable paths' GEMM) on NaN/±Inf."""
    rng = np.random.default_rng(seed)
    a, b = draw_array(rng, (M, K), dtype, rng.integers(0, 2)), draw_array(rng, (K, N), dtype, rng.integers(0, 2))
    bias = draw_array(rng, (M,), dtype, rng.integers(0, 2)) if with_bias else None
    residual = draw_array(rng, (M, N), dtype, rng.integers(0, 2)) if with_residual else None

    def reference(a, b, bias, residual, activation):
        y = t64(a) @ t64(b) + (0 if bias is None else t64(bias)[:, None]) + (0 if residual is None else t64(residual))
        return act_torch(y, activation).numpy()

    want = reference(a, b, bias, residual, activation)
    scale = reference(*map(fin_abs, (a, b, bias, residual)), None)
    tf32 = allow_tf32 and dtype == "float32"
    algo = {"float16": "implicit_gemm_tc", "bfloat16": "implicit_gemm_tc"}.get(dtype, "gemm")
    with cuconv.backend("emulator"):
        got = cuconv.gemm(a, b, bias=bias, activation=activation, residual=residual, allow_tf32=tf32)
    check(got, want, dtype, "implicit_gemm_tf32" if tf32 else algo, f"gemm {M}x{N}x{K}", scale)


# --------------------------------------------------------------------------- issue 22 reproducers
@pytest.mark.parametrize("algo", ["direct", "im2col_gemm", "implicit_gemm", "winograd_f2x2_3x3", "winograd_f4x4_3x3",
                                  "winograd_fused_f2x2_3x3", "fft", "fft_tiling", "implicit_gemm_tc_simple",
                                  "implicit_gemm_tf32", "auto"])
def test_issue22_item1_inf_weight_over_padding_gives_nan(algo):
    x = np.ones((1, 1, 3, 3), np.float32)
    w = x.copy()
    w[0, 0, 0, 0] = np.inf
    with cuconv.backend("emulator"):
        got = cuconv.conv2d(x, w, padding=1, algo=algo)
    want = F.conv2d(t64(x), t64(w), padding=1).numpy()
    assert np.isnan(got[0, 0, 0]).all() and np.isnan(got[0, 0, :, 0]).all()
    assert got[0, 0, 1, 1] == np.inf and got[0, 0, 2, 2] == np.inf
    assert nonfinite_mismatch(got, want) is None


@pytest.mark.parametrize("C", [8, 16])
def test_issue22_item1_auto_does_not_change_its_answer_with_the_channel_count(C):
    rng = np.random.default_rng(C)
    x = rng.uniform(-1, 1, (1, C, 6, 6)).astype(np.float32)
    w = rng.uniform(-1, 1, (4, C, 3, 3)).astype(np.float32)
    w[1, 2, 0, 0] = np.inf
    with cuconv.backend("emulator"):
        got = cuconv.conv2d(x, w, padding=1)
    assert_close(got, F.conv2d(t64(x), t64(w), padding=1).numpy(), "float32", "winograd_f4x4_3x3")
    assert np.isnan(got[0, 1, 0]).all()


@pytest.mark.parametrize("activation", ["relu", "relu6", "silu"])
def test_issue22_item2_fused_activations_keep_nan(activation):
    x = np.full((1, 1, 1, 1), np.nan, np.float32)
    with cuconv.backend("emulator"):
        assert np.isnan(cuconv.conv2d(x, np.ones((1, 1, 1, 1), np.float32), activation=activation)).all()
        assert np.isnan(cuconv.depthwise_conv2d(x, np.ones((1, 1, 1, 1), np.float32), activation=activation)).all()
        assert np.isnan(cuconv.conv_transpose2d(x, np.ones((1, 1, 1, 1), np.float32), activation=activation)).all()
        got = cuconv.separable_conv2d(x, np.ones((1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1), np.float32),
                                      activation_depthwise=activation, activation=activation)
        assert np.isnan(got).all()


def test_issue22_item6_max_pool_backward_window_wholly_in_the_padding():
    """x (2,3,6,1), kernel 2, padding (0, 1), dilation 3, ceil_mode: every window's columns are
    −1 and 2, outside the 1-wide input. torch returns −Inf with its CPU kernel's index (the first
    position after stepping out of the padding) and its backward scatters dy there; the gather
    (window arguments) and the scatter (indices only) must both give that."""
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (2, 3, 6, 1))
    args = dict(kernel_size=2, stride=None, padding=(0, 1), dilation=3, ceil_mode=True)
    xt = t64(x).requires_grad_()
    yt, it = F.max_pool2d(xt, return_indices=True, **args)
    dy = rng.uniform(-1, 1, tuple(yt.shape))
    (dxt,) = torch.autograd.grad(yt, xt, t64(dy))
    with cuconv.backend("emulator"):
        y, idx = cuconv.max_pool2d(x, return_indices=True, **args)
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(idx, it.numpy())
        gather = cuconv.grad.max_pool2d(dy, idx, x.shape, **args)
        scatter = cuconv.grad.max_pool2d(dy, idx, x.shape)
    assert_close(scatter, dxt.numpy(), "float64", "pool_grad")
    assert_close(gather, dxt.numpy(), "float64", "pool_grad")
    np.testing.assert_array_equal(gather, scatter)


# --------------------------------------------------------------------------- gradients
def grad_tol_algo(algo, dtype, which):
    if dtype in ("float16", "bfloat16"):
        return "tc_grad"
    return "dgrad" if which == "input" else "wgrad"


@EXAMPLES
@given(case=conv_cases(), seed=st.integers(0, 2 ** 32 - 1),
       dtype=st.sampled_from(["float32", "float32", "float64", "float16", "bfloat16"]))
def test_conv2d_gradients_match_torch(case, seed, dtype):
    """dx by every data-gradient algorithm, dW by every weight-gradient algorithm (bias gradient
    fused and alone), NaN/±Inf planted in x, w and dy."""
    x_shape, w_shape, args = case
    rng = np.random.default_rng(seed)
    problem = Conv2dProblem.from_shapes(x_shape, w_shape, dtype=dtype, **args)
    x = draw_array(rng, x_shape, dtype, rng.integers(0, 3))
    w = draw_array(rng, w_shape, dtype, rng.integers(0, 3))
    dy = draw_array(rng, problem.output_shape, dtype, rng.integers(0, 3))
    def grads(x, w, dy):
        xt, wt = t64(x).requires_grad_(), t64(w).requires_grad_()
        dxt, dwt = torch.autograd.grad(F.conv2d(xt, wt, **args), (xt, wt), t64(dy))
        return dxt.numpy(), dwt.numpy(), t64(dy).sum((0, 2, 3)).numpy()

    want = dict(zip(("input", "weight", "bias"), grads(x, w, dy)))
    scale = dict(zip(("input", "weight", "bias"), grads(fin_abs(x), fin_abs(w), fin_abs(dy))))
    ran = {}
    with cuconv.backend("emulator"):
        for which, shape in (("input", x_shape), ("weight", w_shape)):
            names = [i.name for i in cuconv.grad.algorithms(problem, which) if i.ok]
            # (a problem no algorithm runs — fp16 dgrad with padding past the filter — is refused)
            for algo in names + ["auto"] * bool(names):
                what = f"{which} {algo} on {problem.describe()}"
                if which == "input":
                    got = run(cuconv.grad.conv2d_input, shape, dtype, input_size=x_shape, weight=w, grad_output=dy,
                              algo=algo, **args)
                else:
                    got = run(cuconv.grad.conv2d_weight, shape, dtype, input=x, weight_size=w_shape,
                              grad_output=dy, algo=algo, **args)
                check(got, want[which], dtype, grad_tol_algo(algo, dtype, which), what, scale[which])
            ran[which] = names
        mask = (bool(ran["input"]), True, True)
        got = cuconv.grad.conv2d_backward(x, w, dy, output_mask=mask, **args)
        for which, g, m in zip(("input", "weight", "bias"), got, mask):
            if m:
                check(g, want[which], dtype, grad_tol_algo("auto", dtype, which), f"conv2d_backward {which}",
                      scale[which])
        check(cuconv.grad.conv2d_bias(dy), want["bias"], dtype, grad_tol_algo("auto", dtype, "weight"), "conv2d_bias",
              scale["bias"])
    assert ran["weight"], problem.describe()


# --------------------------------------------------------------------------- depthwise, separable
DEPTHWISE_VARIANTS = ("auto", "specialized", "generic", "direct")


@EXAMPLES
@given(case=conv_cases(depthwise=True), seed=st.integers(0, 2 ** 32 - 1),
       dtype=st.sampled_from(["float32", "float64", "float16", "bfloat16"]),
       activation=st.sampled_from(ACTIVATIONS), with_bias=st.booleans(), with_residual=st.booleans(),
       layout=st.sampled_from(["NCHW", "NHWC"]))
def test_depthwise_every_variant_matches_torch(case, seed, dtype, activation, with_bias, with_residual, layout):
    x_shape, w_shape, args = case
    rng = np.random.default_rng(seed)
    groups = args.pop("groups")
    problem = Conv2dProblem.from_shapes(x_shape, w_shape, dtype=dtype, groups=groups, **args)
    x = draw_array(rng, x_shape, dtype, rng.integers(0, 3))
    w = draw_array(rng, w_shape, dtype, rng.integers(0, 3))
    bias = draw_array(rng, (w_shape[0],), dtype, rng.integers(0, 2)) if with_bias else None
    residual = draw_array(rng, problem.output_shape, dtype, rng.integers(0, 2)) if with_residual else None
    want = torch_conv2d(x, w, bias, residual, activation, dict(args, groups=groups))
    scale = torch_conv2d(fin_abs(x), fin_abs(w), fin_abs(bias), fin_abs(residual), None, dict(args, groups=groups))
    shape = problem.output_shape if layout == "NCHW" else (problem.N, problem.P, problem.Q, problem.K)
    ran = []
    with cuconv.backend("emulator"):
        for variant in DEPTHWISE_VARIANTS:
            try:
                got = run(cuconv.depthwise_conv2d, shape, dtype, x=to_layout(x, layout), w=to_layout(w, layout),
                          bias=bias, residual=to_layout(residual, layout), activation=activation, variant=variant,
                          layout=layout, **args)
            except ValueError:
                assert variant in ("specialized", "generic"), variant
                continue
            check(from_layout(got, layout), want, dtype, "depthwise", f"{variant} {layout} on {problem.describe()}",
                  scale)
            ran.append(variant)
    assert {"auto", "direct"} <= set(ran)


@EXAMPLES
@given(case=conv_cases(depthwise=True), seed=st.integers(0, 2 ** 32 - 1), K=st.integers(1, 5),
       act_d=st.sampled_from(ACTIVATIONS), activation=st.sampled_from(ACTIVATIONS), with_bias=st.booleans(),
       with_residual=st.booleans())
def test_separable_fused_and_unfused_match_torch(case, seed, K, act_d, activation, with_bias, with_residual):
    x_shape, w_shape, args = case
    groups = args.pop("groups")
    problem = Conv2dProblem.from_shapes(x_shape, w_shape, groups=groups, **args)
    rng = np.random.default_rng(seed)
    x = draw_array(rng, x_shape, "float32", rng.integers(0, 3))
    w_dw = draw_array(rng, w_shape, "float32", rng.integers(0, 2))
    w_pw = draw_array(rng, (K, w_shape[0], 1, 1), "float32", rng.integers(0, 2))
    b_dw = draw_array(rng, (w_shape[0],), "float32", rng.integers(0, 2)) if with_bias else None
    b_pw = draw_array(rng, (K,), "float32", rng.integers(0, 2)) if with_bias else None
    out_shape = (problem.N, K, problem.P, problem.Q)
    residual = draw_array(rng, out_shape, "float32", rng.integers(0, 2)) if with_residual else None
    def separable(x, w_dw, w_pw, b_dw, b_pw, residual, act_d, activation):
        mid = act_torch(F.conv2d(t64(x), t64(w_dw), t64(b_dw), groups=groups, **args), act_d)
        y = F.conv2d(mid, t64(w_pw), t64(b_pw))
        return act_torch(y if residual is None else y + t64(residual), activation).numpy()

    want = separable(x, w_dw, w_pw, b_dw, b_pw, residual, act_d, activation)
    scale = separable(*map(fin_abs, (x, w_dw, w_pw, b_dw, b_pw, residual)), None, None)
    with cuconv.backend("emulator"):
        for fused in (True, False, None):
            got = run(cuconv.separable_conv2d, out_shape, "float32", x=x, w_depthwise=w_dw, w_pointwise=w_pw,
                      bias_depthwise=b_dw, bias_pointwise=b_pw, activation_depthwise=act_d, activation=activation,
                      residual=residual, fused=fused, **args)
            check(got, want, "float32", "separable", f"fused={fused} on {problem.describe()} to K={K}", scale)


# --------------------------------------------------------------------------- transposed
@st.composite
def transpose_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    cin, cout = draw(st.integers(1, 3)) * groups, draw(st.integers(1, 3)) * groups
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, max(0, dh * (R - 1)))), draw(st.integers(0, max(0, dw * (S - 1))))
    oph, opw = draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    if (H - 1) * sh - 2 * ph + dh * (R - 1) + oph + 1 < 1 or (W - 1) * sw - 2 * pw + dw * (S - 1) + opw + 1 < 1:
        ph = pw = 0
    N = draw(st.integers(1, 2))
    return ((N, cin, H, W), (cin, cout // groups, R, S),
            dict(stride=(sh, sw), padding=(ph, pw), output_padding=(oph, opw), groups=groups, dilation=(dh, dw)))


@EXAMPLES
@given(case=transpose_cases(), seed=st.integers(0, 2 ** 32 - 1), dtype=st.sampled_from(["float32", "float64"]),
       activation=st.sampled_from(ACTIVATIONS), with_bias=st.booleans())
def test_conv_transpose_and_its_gradients_match_torch(case, seed, dtype, activation, with_bias):
    x_shape, w_shape, args = case
    rng = np.random.default_rng(seed)
    x = draw_array(rng, x_shape, dtype, rng.integers(0, 3))
    w = draw_array(rng, w_shape, dtype, rng.integers(0, 3))
    bias = draw_array(rng, (w_shape[1] * args["groups"],), dtype, rng.integers(0, 2)) if with_bias else None
    out_shape = tuple(F.conv_transpose2d(t64(x), t64(w), **args).shape)
    dy = draw_array(rng, out_shape, dtype, rng.integers(0, 3))

    def reference(x, w, bias, dy, activation):
        xt, wt = t64(x).requires_grad_(), t64(w).requires_grad_()
        yt = F.conv_transpose2d(xt, wt, **args)
        y = act_torch(yt.detach() + (0 if bias is None else t64(bias).reshape(1, -1, 1, 1)), activation).numpy()
        dxt, dwt = torch.autograd.grad(yt, (xt, wt), t64(dy))
        return y, dxt.numpy(), dwt.numpy()

    want = reference(x, w, bias, dy, activation)
    scale = reference(fin_abs(x), fin_abs(w), fin_abs(bias), fin_abs(dy), None)
    what = f"{x_shape} {w_shape} {args}"
    with cuconv.backend("emulator"):
        for variant in ("auto", "simple", "phase"):
            got = run(cuconv.conv_transpose2d, out_shape, dtype, x=x, w=w, bias=bias, activation=activation,
                      variant=variant, **args)
            check(got, want[0], dtype, "conv_transpose", f"{variant} {activation} {what}", scale[0])
        got = run(cuconv.grad.conv_transpose2d_input, x_shape, dtype, input_size=x_shape, weight=w, grad_output=dy,
                  **args)
        check(got, want[1], dtype, "dgrad", f"conv_transpose2d_input {what}", scale[1])
        got = run(cuconv.grad.conv_transpose2d_weight, w_shape, dtype, input=x, weight_size=w_shape, grad_output=dy,
                  **args)
        check(got, want[2], dtype, "wgrad", f"conv_transpose2d_weight {what}", scale[2])


# --------------------------------------------------------------------------- pools
@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ceil = draw(st.booleans())
    H = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), dh * (kh - 1) + 7))
    W = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), dw * (kw - 1) + 7))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W), dict(
        kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), ceil_mode=ceil)


@EXAMPLES
@given(case=pool_cases(), seed=st.integers(0, 2 ** 32 - 1), dtype=st.sampled_from(["float32", "float64"]),
       count_include_pad=st.booleans(), divisor=st.sampled_from([None, None, 3]))
def test_pools_and_their_gradients_match_torch(case, seed, dtype, count_include_pad, divisor):
    """Max pooling's values and int64 indices exactly (NaN rule, windows wholly in the padding),
    its gradient by the gather (window arguments) and the scatter (indices only); average and
    global average pooling and their gradients."""
    x_shape, args = case
    rng = np.random.default_rng(seed)
    x = draw_array(rng, x_shape, dtype, rng.integers(0, 4))
    avg_args = dict(kernel_size=args["kernel_size"], stride=args["stride"], padding=args["padding"],
                    ceil_mode=args["ceil_mode"], count_include_pad=count_include_pad, divisor_override=divisor)
    yt, it = F.max_pool2d(t64(x), return_indices=True, **args)
    shapes = (tuple(yt.shape), tuple(F.avg_pool2d(t64(x), **avg_args).shape), x_shape[:2] + (1, 1))
    dys = [draw_array(rng, shape, dtype, rng.integers(0, 3)) for shape in shapes]

    # An index outside the plane (a window wholly in the padding whose stepped start lies past
    # the input): torch's CPU backward writes out of bounds there; cuconv skips it (README).
    in_plane = bool(((it >= 0) & (it < x_shape[2] * x_shape[3])).all())

    def reference(x, dys):
        """(forward, input gradient) of max, average and global average pooling."""
        xt = t64(x).requires_grad_()
        out = []
        pools = (F.max_pool2d(xt, **args), F.avg_pool2d(xt, **avg_args), xt.mean((2, 3), keepdim=True))
        for i, (y, dy) in enumerate(zip(pools, dys)):
            if i == 0 and not in_plane:     # max pooling: the NumPy reference, skipping
                keep = (it.numpy() >= 0) & (it.numpy() < x_shape[2] * x_shape[3])
                out.append((None, max_pool2d_backward_ref(np.where(keep, np.asarray(dy, np.float64), 0.0),
                                                          np.where(keep, it.numpy(), 0), x_shape)))
                continue
            out.append((y.detach().numpy(), torch.autograd.grad(y, xt, t64(dy))[0].numpy()))
        return out

    (_, dx_max), (avg, dx_avg), (glob, dx_glob) = reference(x, dys)
    (_, s_max), (s_avg, s_dx_avg), (s_glob, s_dx_glob) = reference(fin_abs(x), [fin_abs(d) for d in dys])
    what = f"{x_shape} {args} {avg_args}"
    with cuconv.backend("emulator"):
        y, idx = cuconv.max_pool2d(x, return_indices=True, **args)
        np.testing.assert_array_equal(y, yt.numpy().astype(dtype))
        np.testing.assert_array_equal(idx, it.numpy())
        gather = cuconv.grad.max_pool2d(dys[0], idx, x_shape, **args)
        scatter = cuconv.grad.max_pool2d(dys[0], idx, x_shape)
        check(gather, dx_max, dtype, "pool_grad", f"max gather {what}", s_max)
        check(scatter, dx_max, dtype, "pool_grad", f"max scatter {what}", s_max)
        check(cuconv.avg_pool2d(x, **avg_args), avg, dtype, "pool", f"avg {what}", s_avg)
        check(cuconv.grad.avg_pool2d(dys[1], x_shape, **avg_args), dx_avg, dtype, "pool_grad", f"avg grad {what}",
              s_dx_avg)
        check(cuconv.global_avg_pool2d(x), glob, dtype, "pool", "global avg", s_glob)
        check(cuconv.grad.global_avg_pool2d(dys[2], x_shape), dx_glob, dtype, "pool_grad", "global avg grad",
              s_dx_glob)


# --------------------------------------------------------------------------- emulator checks
@pytest.mark.parametrize("mode", [pytest.param(dict(sanitize="address,undefined", order="reverse"),
                                               id="asan_ubsan_reverse"),
                                  pytest.param(dict(order="random", seed=22), id="random")])
def test_non_finite_paths_under_the_emulators_checks(mode):
    """The code issue 22 added, under ASan/UBSan and reversed or random thread order: padded
    taps multiplied (direct NCHW/NHWC, depthwise direct/NHWC, separable fused), the Winograd and
    FFT fix-ups over padding, the dgrad recomputation (implicit GEMM, depthwise, tensor cores),
    wgrad's padded zeros, the max-pool gather's windows wholly in the padding."""
    rng = np.random.default_rng(2222)
    args = dict(padding=1)
    x = draw_array(rng, (2, 3, 7, 9), "float32", 2)
    w = draw_array(rng, (4, 3, 3, 3), "float32", 0)
    w[1, 0, 0, 0], w[2, 2, 2, 1] = np.inf, np.nan
    dy = draw_array(rng, (2, 4, 7, 9), "float32", 2)
    wd = draw_array(rng, (6, 1, 3, 3), "float32", 0)
    wd[4, 0, 0, 2] = -np.inf
    dyd = draw_array(rng, (2, 6, 7, 9), "float32", 1)

    def grads(x, w, dy, dtype=torch.float64, **kw):
        xt, wt = t64(x).requires_grad_(), t64(w).requires_grad_()
        return [g.numpy() for g in torch.autograd.grad(F.conv2d(xt, wt, **kw, **args), (xt, wt), t64(dy))]

    want = torch_conv2d(x, w, None, None, "relu", args)
    want_dw = torch_conv2d(x, wd, None, None, None, dict(args, groups=3))
    dx, dw = grads(x, w, dy)
    dxd, dwd = grads(x, wd, dyd, groups=3)
    x16, w16, dy16 = (a.astype(np.float16) for a in (x, w, dy))
    dx16 = grads(x16, w16, dy16)[0]
    pool_x = rng.uniform(-1, 1, (2, 3, 6, 1))
    pool_args = dict(kernel_size=2, padding=(0, 1), dilation=3, ceil_mode=True)
    with cuconv.backend("emulator", **mode):
        for algo in ("direct", "winograd_f2x2_3x3", "winograd_fused_f2x2_3x3", "fft"):
            check(cuconv.conv2d(x, w, algo=algo, activation="relu", **args), want, "float32", algo, algo)
        got = cuconv.conv2d(to_layout(x, "NHWC"), to_layout(w, "NHWC"), algo="direct", activation="relu",
                            layout="NHWC", **args)
        check(from_layout(got, "NHWC"), want, "float32", "direct", "direct NHWC")
        for variant in ("direct", "auto"):
            check(cuconv.depthwise_conv2d(x, wd, variant=variant, **args), want_dw, "float32", "depthwise", variant)
        got = cuconv.depthwise_conv2d(to_layout(x, "NHWC"), to_layout(wd, "NHWC"), layout="NHWC", **args)
        check(from_layout(got, "NHWC"), want_dw, "float32", "depthwise", "depthwise NHWC")
        pw = np.ones((2, 6, 1, 1), np.float32)
        check(cuconv.separable_conv2d(x, wd, pw, fused=True, **args), F.conv2d(t64(want_dw), t64(pw)).numpy(),
              "float32", "separable", "separable fused")
        for algo in ("direct", "implicit_gemm"):
            check(cuconv.grad.conv2d_input(x.shape, w, dy, algo=algo, **args), dx, "float32", "dgrad", algo)
            check(cuconv.grad.conv2d_weight(x, w.shape, dy, algo=algo, **args), dw, "float32", "wgrad", algo)
        check(cuconv.grad.conv2d_input(x.shape, wd, dyd, groups=3, algo="depthwise", **args), dxd, "float32",
              "dgrad", "depthwise dgrad")
        check(cuconv.grad.conv2d_weight(x, wd.shape, dyd, groups=3, algo="depthwise", **args), dwd, "float32",
              "wgrad", "depthwise wgrad")
        check(cuconv.grad.conv2d_input(x.shape, w16, dy16, algo="implicit_gemm_tc_simple", **args), dx16,
              "float16", "tc_grad", "tensor-core dgrad")
        y, idx = cuconv.max_pool2d(pool_x, return_indices=True, **pool_args)
        dyp = rng.uniform(-1, 1, y.shape)
        np.testing.assert_array_equal(cuconv.grad.max_pool2d(dyp, idx, pool_x.shape, **pool_args),
                                      cuconv.grad.max_pool2d(dyp, idx, pool_x.shape))
