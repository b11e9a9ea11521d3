"""The "im2col_gemm" and "pointwise" algorithms of cuconv.conv2d: against the float64 direct
reference on awkward problems, every GEMM config, the fused epilogue, grouped convolutions,
the 1x1 path, bounded workspace (several chunks), the emulator's checking modes."""
from __future__ import annotations

import numpy as np
import pytest

import cuconv
from conftest import auto_order, put
from cuconv.ops import conv2d as conv2d_mod
from cuconv.ops import im2col_gemm as ig
from cuconv.ops.gemm import CONFIGS
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.testing import assert_close, poison, random_array

# x shape, w shape, stride, padding, dilation, groups
CASES = [
    ((1, 1, 7, 7), (5, 1, 3, 3), 1, 1, 1, 1),          # C = 1
    ((3, 3, 9, 9), (7, 3, 3, 3), 2, 1, 1, 1),          # batch 3, stride 2
    ((2, 3, 7, 9), (6, 3, 5, 5), 1, 3, 1, 1),          # 5x5, padding > half the kernel, non-square
    ((2, 4, 9, 9), (6, 2, 3, 3), 1, 2, 2, 2),          # groups 2, dilation 2
    ((1, 3, 11, 10), (9, 3, 7, 7), 2, 3, 1, 1),        # 7x7 stride 2
    ((3, 6, 7, 7), (6, 1, 3, 3), 1, 1, 1, 6),          # depthwise (more groups than images)
    ((2, 3, 9, 9), (5, 3, 1, 1), 2, 0, 1, 1),          # 1x1 stride 2: not pointwise, goes through im2col
    ((2, 3, 8, 8), (4, 3, 4, 4), 1, "same", 1, 1),     # even kernel, asymmetric "same" padding
    ((2, 6, 8, 7), (33, 6, 1, 1), 1, 0, 1, 1),         # 1x1: the GEMM on NCHW, K = 33 (no tile divides)
    ((3, 4, 7, 9), (10, 2, 1, 1), 1, 0, 1, 2),         # grouped 1x1, more images than groups
]


def _id(case):
    xs, ws, s, p, d, g = case
    return f"x{'x'.join(map(str, xs))}_w{'x'.join(map(str, ws))}_s{s}_p{p}_d{d}_g{g}"


def _workspace(problem, limit=None) -> int:
    """The workspace of im2col_gemm's plan for ``problem`` under ``limit``."""
    return {i.name: i for i in cuconv.algorithms(problem, limit)}["im2col_gemm"].workspace_bytes


def run_conv(be, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="im2col_gemm",
             activation=None, residual=None, **kw):
    """conv2d into a poisoned out= on the backend; returns the NumPy result."""
    p = Conv2dProblem.from_shapes(x.shape, w.shape, stride, padding, dilation, groups, x.dtype.name)
    out = be.empty(p.output_shape, x.dtype)
    poison(out)
    res = cuconv.conv2d(put(be, x), put(be, w), put(be, bias), stride, padding, dilation, groups,
                        algo=algo, activation=activation, residual=put(be, residual), out=out, **kw)
    assert res is out
    return be.to_numpy(out)


def draw(rng, case, epilogue=False, dtype="float32"):
    xs, ws, stride, padding, dilation, groups = case
    x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
    bias = random_array(rng, (ws[0],), dtype) if epilogue else None
    return x, w, bias, stride, padding, dilation, groups


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_reference(be, rng, case):
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True)
    got = run_conv(be, x, w, bias, stride, padding, dilation, groups)
    assert_close(got, conv2d_ref(x, w, bias, stride, padding, dilation, groups), "float32", "im2col_gemm")


@pytest.mark.parametrize("case", [c for c in CASES if c[1][2:] == (1, 1) and c[2] == 1],
                         ids=[_id(c) for c in CASES if c[1][2:] == (1, 1) and c[2] == 1])
def test_pointwise_algorithm(be, rng, case):
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True)
    residual_shape = Conv2dProblem.from_shapes(x.shape, w.shape, groups=groups).output_shape
    residual = random_array(rng, residual_shape)
    got = run_conv(be, x, w, bias, groups=groups, algo="pointwise", activation="relu6", residual=residual)
    ref = conv2d_ref(x, w, bias, groups=groups, activation="relu6", residual=residual)
    assert_close(got, ref, "float32", "pointwise")


@pytest.mark.parametrize("activation", ["relu", "relu6", "silu"])
def test_fused_epilogue(be, rng, activation):
    x, w = random_array(rng, (2, 3, 9, 7), low=-2, high=2), random_array(rng, (10, 3, 3, 3))
    bias = random_array(rng, (10,))
    residual = random_array(rng, (2, 10, 6, 5))
    got = run_conv(be, x, w, bias, 2, 2, 1, 1, activation=activation, residual=residual)
    ref = conv2d_ref(x, w, bias, 2, 2, 1, 1, activation=activation, residual=residual)
    if activation == "relu6":
        assert (ref >= 6).any() and (ref <= 0).any()
    assert_close(got, ref, "float32", "im2col_gemm", activation)


# Both grouped paths: batching over groups (groups >= images) and over images (images > groups).
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.label for c in CONFIGS])
@pytest.mark.parametrize("case", [((1, 6, 9, 8), (9, 2, 3, 3), 1, 1, 1, 3),
                                  ((3, 4, 7, 7), (34, 2, 3, 3), 1, 1, 1, 2)], ids=["g3n1", "g2n3"])
def test_every_gemm_config(be, rng, cfg, case):
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True, dtype=cfg.dtype)
    got = run_conv(be, x, w, bias, stride, padding, dilation, groups, activation="silu", gemm_config=cfg)
    ref = conv2d_ref(x, w, bias, stride, padding, dilation, groups, activation="silu")
    assert_close(got, ref, cfg.dtype, "im2col_gemm", cfg.label)


# --------------------------------------------------------------------------- workspace
def test_workspace_is_chunked(be, rng, monkeypatch):
    """A limit of 2.5 images' columns: chunks of 2, 2, 1 images, one workspace of 2 images."""
    case = ((5, 3, 7, 7), (4, 3, 3, 3), 1, 1, 1, 1)
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True)
    problem = Conv2dProblem.from_shapes(x.shape, w.shape, stride, padding, dilation, groups)
    per_image = problem.im2col_bytes(1)
    limit = per_image * 5 // 2
    assert _workspace(problem, limit) == 2 * per_image
    assert _workspace(problem) == 5 * per_image          # under the 256 MiB default
    info = {i.name: i for i in cuconv.algorithms(problem, limit)}["im2col_gemm"]
    assert info.ok and info.workspace_bytes == 2 * per_image

    residual = random_array(rng, problem.output_shape)
    plan = cuconv.plan_conv2d(put(be, x), put(be, w), put(be, bias), stride, padding, dilation, groups,
                              algo="im2col_gemm", max_workspace_bytes=limit, activation="relu",
                              residual=put(be, residual))
    chunks = [int(ln.args[2]) for ln in plan.launches if ln.kernel == ig.im2col_launch.__globals__["LABEL"]]
    assert chunks == [2, 2, 1]
    assert plan.workspace_bytes == 2 * per_image and [b.nbytes for b in plan.buffers] == [2 * per_image]
    requests, real_workspace = [], be.workspace
    monkeypatch.setattr(be, "workspace", lambda nbytes: (requests.append(nbytes), real_workspace(nbytes))[1])
    got = run_conv(be, x, w, bias, stride, padding, dilation, groups, residual=residual,
                   activation="relu", max_workspace_bytes=limit)
    assert requests == [2 * per_image]          # one workspace for the whole call
    ref = conv2d_ref(x, w, bias, stride, padding, dilation, groups, activation="relu", residual=residual)
    assert_close(got, ref, "float32", "im2col_gemm", "chunked")


def test_workspace_limit_below_one_image_is_refused(be, rng, monkeypatch):
    x, w = random_array(rng, (2, 3, 7, 7)), random_array(rng, (4, 3, 3, 3))
    problem = Conv2dProblem.from_shapes(x.shape, w.shape, padding=1)
    per_image = problem.im2col_bytes(1)
    info = {i.name: i for i in cuconv.algorithms(problem, per_image - 1)}["im2col_gemm"]
    assert info.workspace_bytes == per_image and not info.ok    # what it would need, > limit
    assert f"needs {per_image} bytes of workspace" in info.reason
    monkeypatch.setattr(be, "launch", lambda *a, **k: pytest.fail("launched despite the limit"))
    with pytest.raises(ValueError, match="max_workspace_bytes"):
        cuconv.conv2d(put(be, x), put(be, w), padding=1, algo="im2col_gemm", max_workspace_bytes=per_image - 1)
    with pytest.raises(ValueError, match=f"needs {per_image} bytes of workspace"):
        cuconv.plan_conv2d(put(be, x), put(be, w), padding=1, algo="im2col_gemm",
                           max_workspace_bytes=per_image - 1)


def test_pointwise_needs_no_workspace(be, rng):
    x, w = random_array(rng, (2, 5, 6, 7)), random_array(rng, (3, 5, 1, 1))
    problem = Conv2dProblem.from_shapes(x.shape, w.shape)
    assert _workspace(problem, 0) == 0
    got = run_conv(be, x, w, max_workspace_bytes=0)              # im2col_gemm's 1x1 path, no workspace
    assert_close(got, conv2d_ref(x, w), "float32", "im2col_gemm")


# --------------------------------------------------------------------------- registry and auto
def test_registration_and_auto_priorities():
    pointwise = Conv2dProblem(2, 8, 7, 7, 16, 1, 1)
    infos = {i.name: i for i in cuconv.algorithms(pointwise)}
    assert infos["pointwise"].ok and auto_order(pointwise)[0] == "pointwise"     # 1x1: straight to the GEMM
    assert infos["im2col_gemm"].ok and infos["im2col_gemm"].workspace_bytes == 0
    strided = pointwise.with_(stride_h=2, stride_w=2)
    infos = {i.name: i for i in cuconv.algorithms(strided)}
    assert not infos["pointwise"].ok and "stride 1" in infos["pointwise"].reason
    order = auto_order(strided)
    assert infos["im2col_gemm"].ok and order.index("implicit_gemm") < order.index("im2col_gemm") < order.index("direct")
    depthwise = Conv2dProblem(1, 8, 7, 7, 8, 3, 3, groups=8)
    order = auto_order(depthwise)        # after the depthwise kernels, before direct
    assert order.index("depthwise") < order.index("im2col_gemm") < order.index("direct")


def test_bad_arguments(be, rng, monkeypatch):
    x, w = put(be, random_array(rng, (1, 3, 7, 7))), put(be, random_array(rng, (4, 3, 3, 3)))
    monkeypatch.setattr(be, "launch", lambda *a, **k: pytest.fail("launched despite bad arguments"))
    with pytest.raises(ValueError, match="pointwise.*cannot run.*1x1 kernel"):
        cuconv.conv2d(x, w, algo="pointwise")
    with pytest.raises(TypeError, match="unexpected keyword"):
        cuconv.conv2d(x, w, algo="im2col_gemm", tile=3)
    with pytest.raises(ValueError, match="unknown GEMM config"):
        cuconv.conv2d(x, w, algo="im2col_gemm", gemm_config="gemm_f32_1x1x1_1x1")


# --------------------------------------------------------------------------- emulator checking modes
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined"), dict(order="reverse"),
                                  dict(order="random", seed=11)], ids=["asan_ubsan", "reverse", "random"])
def test_emulator_checking_modes(rng, mode, dtype, layout):
    case = ((3, 4, 7, 9), (6, 2, 3, 3), 2, 2, 1, 2)
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True, dtype=dtype)
    problem = Conv2dProblem.from_shapes(x.shape, w.shape, stride, padding, dilation, groups, dtype)
    residual = random_array(rng, problem.output_shape, dtype)
    run = run_conv if layout == "NCHW" else (lambda *a, **k: run_nhwc(*a, **k)[0])
    with cuconv.backend("emulator", **mode) as be:
        got = run(be, x, w, bias, stride, padding, dilation, groups, activation="silu",
                  residual=residual, max_workspace_bytes=2 * problem.im2col_bytes(1))
    ref = conv2d_ref(x, w, bias, stride, padding, dilation, groups, activation="silu", residual=residual)
    assert_close(got, ref, dtype, "im2col_gemm", f"{layout} {mode}")


# --------------------------------------------------------------------------- float64
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_float64_matches_reference(be, rng, case):
    """The column matrix (im2col_f64_128) and the GEMM (gemm_f64_*) in double: within 1e-12."""
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True, dtype="float64")
    got = run_conv(be, x, w, bias, stride, padding, dilation, groups, activation="silu")
    assert got.dtype == np.float64
    ref = conv2d_ref(x, w, bias, stride, padding, dilation, groups, activation="silu")
    assert_close(got, ref, "float64", "im2col_gemm")


@pytest.mark.parametrize("case", [c for c in CASES if c[1][2:] == (1, 1) and c[2] == 1],
                         ids=[_id(c) for c in CASES if c[1][2:] == (1, 1) and c[2] == 1])
def test_float64_pointwise(be, rng, case):
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True, dtype="float64")
    residual = random_array(rng, Conv2dProblem.from_shapes(x.shape, w.shape, groups=groups).output_shape, "float64")
    got = run_conv(be, x, w, bias, groups=groups, algo="pointwise", activation="relu6", residual=residual)
    assert_close(got, conv2d_ref(x, w, bias, groups=groups, activation="relu6", residual=residual),
                 "float64", "pointwise")


def test_float64_workspace_and_kernels():
    """The float64 column matrix takes 8 bytes an element, and the plan launches the f64 kernels."""
    p32 = Conv2dProblem(2, 3, 9, 9, 8, 3, 3, pad_h=1, pad_w=1)
    p64 = p32.with_(dtype="float64")
    assert _workspace(p64) == 2 * _workspace(p32) == 2 * p32.im2col_bytes()
    plan = {i.name: i for i in cuconv.algorithms(p64)}["im2col_gemm"].plan
    assert set(plan.kernels) == {"im2col_f64_128", "gemm_f64_64x64x8_4x4"}
    assert [b.dtype for b in plan.buffers] == ["float64"]
    with pytest.raises(ValueError, match="computes float32, the operands are float64"):
        with cuconv.backend("record"):
            cuconv.conv2d(np.zeros(p64.input_shape), np.zeros(p64.weight_shape), padding=1, algo="im2col_gemm",
                          gemm_config="gemm_f32_64x64x16_4x4")


# --------------------------------------------------------------------------- NHWC (issue 25 item 4)
def _nhwc(a):
    return None if a is None else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def run_nhwc(be, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="im2col_gemm",
             activation=None, residual=None, **kw):
    """conv2d in NHWC (x, w, residual given NCHW/KCRS and transposed here) into a poisoned out=;
    returns the result back in NCHW, and the plan."""
    p = Conv2dProblem.from_shapes(x.shape, w.shape, stride, padding, dilation, groups, x.dtype.name)
    out = be.empty((p.N, p.P, p.Q, p.K), x.dtype)
    poison(out)
    args = (put(be, _nhwc(x)), put(be, _nhwc(w)), put(be, bias), stride, padding, dilation, groups)
    extra = dict(algo=algo, activation=activation, residual=put(be, _nhwc(residual)), layout="NHWC", **kw)
    res = cuconv.conv2d(*args, out=out, **extra)
    assert res is out
    return be.to_numpy(out).transpose(0, 3, 1, 2), cuconv.plan_conv2d(*args, **extra)


NHWC_CASES = [c for c in CASES if c[3] != "same"] + [
    ((2, 5, 9, 7), (7, 5, 3, 3), 3, 1, 1, 1),          # stride 3, C = 5
    ((1, 6, 9, 9), (10, 3, 3, 3), 1, 2, 2, 2),         # dilation 2, groups, K not a multiple of 8
]
NHWC_POINTWISE = [((2, 3, 9, 9), (5, 3, 1, 1), 2, 0, 1, 1), ((2, 6, 8, 7), (33, 6, 1, 1), 1, 0, 1, 1),
                  ((3, 4, 7, 9), (10, 2, 1, 1), 1, 0, 1, 2), ((2, 8, 9, 9), (12, 2, 1, 1), 3, 0, 1, 4),
                  ((1, 1, 7, 7), (3, 1, 1, 1), 2, 0, 1, 1)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", NHWC_CASES, ids=[_id(c) for c in NHWC_CASES])
def test_nhwc_im2col_gemm_matches_reference(be, rng, case, dtype):
    """NHWC im2col + GEMM (im2col_nhwc, then implicit_gemm's NHWC kernel over the column rows) with
    bias, residual and activation, against the float64 reference; no conversion step."""
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True, dtype=dtype)
    p = Conv2dProblem.from_shapes(x.shape, w.shape, stride, padding, dilation, groups, dtype)
    residual = random_array(rng, p.output_shape, dtype)
    got, plan = run_nhwc(be, x, w, bias, stride, padding, dilation, groups, activation="silu", residual=residual)
    ref = conv2d_ref(x, w, bias, stride, padding, dilation, groups, activation="silu", residual=residual)
    assert_close(got, ref, dtype, "im2col_gemm", "NHWC")
    assert plan.conversions == () and plan.algo == "im2col_gemm"
    short = "f32" if dtype == "float32" else "f64"
    assert [k for k in plan.kernels if k.startswith(f"implicit_gemm_{short}_nhwc")], plan.kernels
    if p.R * p.S > 1 or p.pad_h or p.pad_w:
        assert plan.kernels[0] == f"im2col_{short}_nhwc_128"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", NHWC_POINTWISE, ids=[_id(c) for c in NHWC_POINTWISE])
def test_nhwc_pointwise_matches_reference(be, rng, case, dtype):
    """NHWC pointwise (1x1, strides 1, 2 and 3, groups): the GEMM over the input's pixels, no
    im2col, no workspace, no conversion."""
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True, dtype=dtype)
    p = Conv2dProblem.from_shapes(x.shape, w.shape, stride, padding, dilation, groups, dtype)
    residual = random_array(rng, p.output_shape, dtype)
    got, plan = run_nhwc(be, x, w, bias, stride, groups=groups, algo="pointwise", activation="relu6",
                         residual=residual)
    ref = conv2d_ref(x, w, bias, stride, groups=groups, activation="relu6", residual=residual)
    assert_close(got, ref, dtype, "pointwise", "NHWC")
    assert plan.workspace_bytes == 0 and plan.conversions == () and len(plan.kernels) == 1
    assert "_nhwc_" in plan.kernels[0] and "im2col" not in plan.kernels[0]


def test_nhwc_non_finite_weight_over_padding(be, rng):
    """docs/semantics.md: a padded position contributes 0·w, so an Inf weight tap that meets the
    padding gives NaN there (the column matrix holds the zeros the GEMM multiplies); relu(NaN) = NaN."""
    case = ((2, 3, 6, 7), (4, 3, 3, 3), 1, 1, 1, 1)
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True)
    w[1, 2, 0, 0] = np.inf
    w[3, 0, 2, 1] = np.nan
    got, _ = run_nhwc(be, x, w, bias, stride, padding, dilation, groups, activation="relu")
    ref = conv2d_ref(x, w, bias, stride, padding, dilation, groups, activation="relu")
    assert np.isnan(ref).any() and np.isinf(ref).any()
    assert_close(got, ref, "float32", "im2col_gemm", "NHWC non-finite")


def test_nhwc_workspace_is_chunked(be, rng):
    """NHWC chunks like NCHW: a limit of 2.5 images' columns gives chunks of 2, 2, 1 images."""
    case = ((5, 3, 7, 7), (4, 3, 3, 3), 1, 1, 1, 1)
    x, w, bias, stride, padding, dilation, groups = draw(rng, case, epilogue=True)
    p = Conv2dProblem.from_shapes(x.shape, w.shape, stride, padding, dilation, groups)
    got, plan = run_nhwc(be, x, w, bias, stride, padding, dilation, groups,
                         max_workspace_bytes=p.im2col_bytes(1) * 5 // 2)
    assert plan.workspace_bytes == 2 * p.im2col_bytes(1)
    assert [k.startswith("im2col_f32_nhwc") for k in plan.kernels] == [True, False] * 3
    assert_close(got, conv2d_ref(x, w, bias, stride, padding, dilation, groups), "float32", "im2col_gemm")


def test_nhwc_refusals_and_auto():
    """pointwise NHWC needs a 1x1 filter without padding; gemm_config= names the NCHW GEMM's
    configs; auto takes pointwise for NHWC 1x1 (any stride) and keeps im2col_gemm off below 8
    output channels per group (the NHWC GEMM's columns are the output channels)."""
    p = Conv2dProblem(2, 8, 9, 9, 16, 3, 3, pad_h=1, pad_w=1)
    infos = {i.name: i for i in cuconv.algorithms(p, layout="NHWC")}
    assert infos["im2col_gemm"].ok and not infos["pointwise"].ok
    assert "needs a 1x1 kernel and no padding" in infos["pointwise"].reason
    with cuconv.backend("record"):
        with pytest.raises(ValueError, match="gemm_config= names a gemm.cu config"):
            cuconv.plan_conv2d(np.zeros((2, 9, 9, 8), np.float32), np.zeros((16, 3, 3, 8), np.float32), padding=1,
                               layout="NHWC", algo="im2col_gemm", gemm_config="gemm_f32_64x64x16_4x4")
    for stride in (1, 2):
        q = Conv2dProblem(2, 64, 14, 14, 128, 1, 1, stride_h=stride, stride_w=stride)
        assert auto_order(q, layout="NHWC")[0] == "pointwise"
        with cuconv.backend("record"):
            assert conv2d_mod.choose_algorithm(q, layout="NHWC") == "pointwise"
    narrow = Conv2dProblem(2, 128, 14, 14, 128, 3, 3, pad_h=1, pad_w=1, groups=32)
    assert "im2col_gemm" not in auto_order(narrow, layout="NHWC")
