"""The conv2d front end: argument checks before any launch, padding modes, the algorithm
registry and ``auto``, and a property-based test of every registered algorithm.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import GPU, put
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cuconv
from cuconv.backend import EmulatorBackend
from cuconv.ops import heuristics
from cuconv.ops._algorithm import ConvAlgorithm, conv_plan
from cuconv.plan import PlanError
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.testing import TOLERANCES, assert_close, poison, random_array, rel_error

# Modules whose names the package namespace shadows with functions (cuconv.backend, cuconv.ops.conv2d).
backend_mod = importlib.import_module("cuconv.backend")
conv2d_mod = importlib.import_module("cuconv.ops.conv2d")


class RecordingBackend(EmulatorBackend):
    """The emulator, but every launch is recorded first (and, unless allowed, refused)."""

    def __init__(self, allow: bool = False):
        super().__init__()
        self.launches = []
        self.allow = allow

    def launch(self, entry, grid, block, args, shared_mem=0):
        self.launches.append((entry.file, entry.expression))
        if not self.allow:
            raise AssertionError(f"a kernel was launched: {entry.file} {entry.expression}")
        return super().launch(entry, grid, block, args, shared_mem)


@pytest.fixture
def recorder():
    rec = RecordingBackend()
    token = backend_mod._current.set(rec)
    try:
        yield rec
    finally:
        backend_mod._current.reset(token)


def _xw(rng, x_shape=(2, 4, 9, 7), w_shape=(6, 4, 3, 3)):
    return random_array(rng, x_shape), random_array(rng, w_shape)


# --------------------------------------------------------------------------- bad arguments
def test_recorder_sees_a_valid_launch(rng):
    """Positive control: the recorder does record launches, so 'no launch' below means something."""
    rec = RecordingBackend(allow=True)
    token = backend_mod._current.set(rec)
    try:
        x, w = _xw(rng)
        y = cuconv.conv2d(x, w, padding=1, algo="direct")
    finally:
        backend_mod._current.reset(token)
    assert rec.launches == [("direct.cu", "direct_conv2d<float, false, 256>")]
    assert_close(y, conv2d_ref(x, w, padding=1), np.float32, "direct")


class FakeCupyArray:
    """Looks like a cupy.ndarray to the emulator's type check (no GPU needed)."""
    shape = (2, 4, 9, 7)
    ndim = 4


FakeCupyArray.__module__ = "cupy._core.core"


def _bad_cases(rng):
    x, w = _xw(rng)
    b = random_array(rng, (6,))
    ok_out = np.empty((2, 6, 7, 5), np.float32)
    return [
        # (exception, message regex, args, kwargs)
        (ValueError, r"input must be 4-D \(or 3-D unbatched", (x[0, 0], w), {}),
        (ValueError, r"weight must be 4-D", (x, w[0]), {}),
        (TypeError, r"same dtype.*float32 and float64", (x, w.astype(np.float64)), {}),
        (TypeError, r"floating-point arrays .*got input dtype int32", (x.astype(np.int32), w.astype(np.int32)), {}),
        (TypeError, r"floating-point arrays .*int32", (x.astype(np.int32), w.astype(np.int32)), dict(algo="direct")),
        (TypeError, r"takes dtype float16 or bfloat16 or float32, got float64",
         (x.astype(np.float64), w.astype(np.float64)), dict(algo="implicit_gemm_tc_simple")),
        (ValueError, r"weight has 4 input channels per group.*C=5.*\(2, 5, 9, 7\)",
         (random_array(rng, (2, 5, 9, 7)), w), {}),
        (ValueError, r"groups=3 must divide the input channels C=4",
         (x, random_array(rng, (6, 1, 3, 3))), dict(groups=3)),
        (ValueError, r"groups=2 must divide the output channels K=5",
         (x, random_array(rng, (5, 2, 3, 3))), dict(groups=2)),
        (ValueError, r"output size would be .*<= 0", (random_array(rng, (1, 4, 2, 2)), w), {}),
        (ValueError, r"padding must be non-negative", (x, w), dict(padding=-1)),
        (ValueError, r"stride must be positive", (x, w), dict(stride=0)),
        (ValueError, r"dilation must be positive", (x, w), dict(dilation=(1, 0))),
        (ValueError, r"groups must be positive", (x, w), dict(groups=0)),
        (TypeError, r"stride must be an int or a pair", (x, w), dict(stride=1.5)),
        (ValueError, r"padding='same' needs stride 1", (x, w), dict(padding="same", stride=2)),
        (ValueError, r"padding must be an int, a pair, 'valid' or 'same'", (x, w), dict(padding="full")),
        (ValueError, r"out must be C-contiguous", (x, w), dict(out=np.empty((2, 6, 5, 7), np.float32).transpose(0, 1, 3, 2))),
        (TypeError, r"bias must be an array, got the scalar", (x, w, np.float32(1.0)), {}),
        (ValueError, r"input must be 4-D \(or 3-D unbatched", (np.ones((), np.float32), w), {}),
        (ValueError, r"bias must have shape \(6,\), got \(5,\)", (x, w, b[:5]), {}),
        (TypeError, r"bias must have dtype float32, got float64", (x, w, b.astype(np.float64)), {}),
        (ValueError, r"residual must have shape \(2, 6, 7, 5\), got \(2, 6, 9, 7\)",
         (x, w), dict(residual=random_array(rng, (2, 6, 9, 7)))),
        (ValueError, r"out must have shape \(2, 6, 7, 5\), got \(2, 6, 7, 4\)",
         (x, w), dict(out=np.empty((2, 6, 7, 4), np.float32))),
        (TypeError, r"out must have dtype float32, got float64",
         (x, w), dict(out=ok_out.astype(np.float64))),
        (ValueError, r"out overlaps input", (x, w), dict(out=x.reshape(-1)[:420].reshape(2, 6, 7, 5))),
        (ValueError, r"unknown algo 'fastest'", (x, w), dict(algo="fastest")),
        (ValueError, r"activation must be one of", (x, w), dict(activation="gelu")),
        (ValueError, r"max_workspace_bytes must be >= 0", (x, w), dict(max_workspace_bytes=-1)),
        (TypeError, r"input is a cupy array.*emulator", (FakeCupyArray(), w), {}),
        (TypeError, r"must be a numpy.ndarray", (x.tolist(), w), {}),
        (TypeError, r"algo='direct' takes no extra arguments", (x, w), dict(algo="direct", config="x")),
        (ValueError, r"unknown implicit_gemm config", (x, w), dict(algo="implicit_gemm", config="x")),
    ]


def test_every_bad_argument_raises_before_any_launch(rng, recorder):
    cases = _bad_cases(rng)
    for exc, pattern, args, kwargs in cases:
        with pytest.raises(exc, match=pattern):
            cuconv.conv2d(*args, **kwargs)
    assert recorder.launches == []


def test_numpy_on_the_gpu_backend_is_a_type_error(rng):
    """The check comes before any device call, so it holds with or without a GPU."""
    x, w = _xw(rng)
    with cuconv.backend("cupy"):
        with pytest.raises(TypeError, match=r"input is a numpy.ndarray, but the current backend is the GPU"):
            cuconv.conv2d(x, w)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs a CUDA device to create a cupy array")
def test_cupy_array_on_the_emulator_is_a_type_error(rng, recorder):
    import cupy
    x, w = _xw(rng)
    with pytest.raises(TypeError, match=r"cupy array, but the current backend is the CPU emulator"):
        cuconv.conv2d(cupy.asarray(x), w)
    assert recorder.launches == []


def test_algo_that_cannot_implement_is_refused_before_launch(rng, recorder, monkeypatch):
    x, w = _xw(rng)

    # An algorithm with a precondition the problem breaks (listed for this test only).
    def only_1x1(spec):
        p = spec.problem
        if (p.R, p.S) != (1, 1):
            raise PlanError(f"needs 1x1, got {p.R}x{p.S}")
        pytest.fail("planned a problem it cannot implement")

    monkeypatch.setitem(conv2d_mod.ALGORITHMS, "test_only_1x1", ConvAlgorithm("test_only_1x1", only_1x1))
    with pytest.raises(ValueError, match=r"algo='test_only_1x1' cannot run N2 C4 H9 W7 K6 R3 S3.*needs 1x1, got 3x3"):
        cuconv.conv2d(x, w, algo="test_only_1x1")
    # A real one: the 1x1 GEMM path refuses a 3x3 kernel.
    with pytest.raises(ValueError, match=r"algo='pointwise' cannot run"):
        cuconv.conv2d(x, w, algo="pointwise")
    # Workspace over the limit: a plan that would launch nothing but asks for 1000 bytes.
    hungry = ConvAlgorithm("test_hungry", lambda spec: conv_plan(spec, "test_hungry", [], workspace=((), 1000)))
    monkeypatch.setitem(conv2d_mod.ALGORITHMS, "test_hungry", hungry)
    with pytest.raises(ValueError, match=r"needs 1000 bytes of workspace.*max_workspace_bytes=10"):
        cuconv.conv2d(x, w, algo="test_hungry", max_workspace_bytes=10)
    assert recorder.launches == []


# --------------------------------------------------------------------------- padding modes
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("padding,dilation,kernel", [
    ("same", 1, (3, 3)), ("same", 2, (3, 3)), ("same", 1, (2, 4)), ("same", (1, 2), (4, 3)),
    ("valid", 1, (3, 3)), ("valid", 2, (2, 3)),
])
def test_padding_modes(be, rng, algo, padding, dilation, kernel):
    x = random_array(rng, (2, 3, 7, 9))
    w = random_array(rng, (5, 3, *kernel))
    ref = conv2d_ref(x, w, padding=padding, dilation=dilation)
    if padding == "same":
        assert ref.shape[2:] == x.shape[2:]
    out = be.empty(ref.shape, np.float32)
    poison(out)
    cuconv.conv2d(put(be, x), put(be, w), padding=padding, dilation=dilation, algo=algo, out=out)
    assert_close(out, ref, np.float32, algo)


def test_same_padding_puts_the_extra_row_at_the_end():
    p = Conv2dProblem.from_shapes((1, 3, 7, 9), (5, 3, 2, 4), padding="same")
    assert (p.pad_h, p.pad_bottom, p.pad_w, p.pad_right) == (0, 1, 1, 2)
    assert p.output_shape == (1, 5, 7, 9)


# --------------------------------------------------------------------------- registry and auto
def test_algorithms_lists_every_algorithm_with_reasons():
    p = Conv2dProblem(2, 4, 9, 9, 8, 3, 3, pad_h=1, pad_w=1)
    infos = cuconv.algorithms(p)
    names = [i.name for i in infos]
    assert names == list(conv2d_mod.ALGORITHMS)
    assert {"direct", "implicit_gemm"} <= set(names)
    for info in infos:
        assert info.ok == (info.reason is None)
        if info.ok:
            assert info.workspace_bytes is not None and info.workspace_bytes >= 0
        else:
            assert isinstance(info.reason, str) and info.reason
    # A limit of 0 bytes leaves only the algorithms that need no workspace.
    for info in cuconv.algorithms(p, max_workspace_bytes=0):
        assert not info.ok or info.workspace_bytes == 0
    by_name = {i.name: i for i in cuconv.algorithms(p, max_workspace_bytes=0)}
    assert by_name["direct"].ok and by_name["implicit_gemm"].ok


def test_algorithms_explains_an_unsupported_dtype():
    p = Conv2dProblem(1, 4, 9, 9, 8, 3, 3, dtype="int8")
    infos = {i.name: i for i in cuconv.algorithms(p)}
    assert not infos["direct"].ok and "int8" in infos["direct"].reason
    # float64 runs on the CUDA-core algorithms; Winograd and the tensor cores say why not.
    infos = {i.name: i for i in cuconv.algorithms(p.with_(dtype="float64", pad_h=1, pad_w=1, C=16, K=16))}
    assert all(infos[a].ok for a in ("direct", "implicit_gemm", "im2col_gemm")), infos
    for name in ("winograd_f2x2_3x3", "winograd_fused_f2x2_3x3", "winograd_f4x4_3x3", "implicit_gemm_tc",
                 "implicit_gemm_tc_simple", "implicit_gemm_tf32"):
        assert not infos[name].ok and "dtype float64 not supported" in infos[name].reason, infos[name]


AUTO_PROBLEMS = [
    # (problem, algorithms auto may never pick for it)
    (Conv2dProblem(2, 16, 9, 9, 32, 3, 3, pad_h=1, pad_w=1), {"direct"}),                 # dense 3x3
    (Conv2dProblem(2, 16, 9, 9, 32, 5, 5, 2, 2, 2, 2), {"direct", "im2col_gemm"}),        # dense 5x5 s2
    (Conv2dProblem(1, 8, 7, 7, 8, 3, 3, pad_h=1, pad_w=1, groups=8), {"implicit_gemm"}),  # depthwise
    (Conv2dProblem(2, 16, 9, 9, 24, 1, 1), {"direct"}),                                   # 1x1
]


@pytest.mark.parametrize("problem,never", AUTO_PROBLEMS, ids=["dense3x3", "dense5x5s2", "depthwise", "1x1"])
def test_auto_takes_the_first_rule_whose_algorithm_can_run(problem, never):
    choice = conv2d_mod.choose_algorithm(problem)
    infos = {i.name: i for i in cuconv.algorithms(problem)}
    rules = [r.algo for r in heuristics.RULES if r.when(conv2d_mod.spec_of(problem))]
    assert choice == next(a for a in rules if infos[a].ok)
    assert infos[choice].auto_rule is not None
    assert choice not in never
    if problem.R == 5:
        # No specialised algorithm applies to a 5x5 stride-2 problem: implicit GEMM is the default.
        assert choice == "implicit_gemm"


@pytest.mark.parametrize("problem", [p for p, _ in AUTO_PROBLEMS], ids=["dense3x3", "dense5x5s2", "depthwise", "1x1"])
def test_auto_runs_and_is_right(rng, problem):
    x = random_array(rng, problem.input_shape)
    w = random_array(rng, problem.weight_shape)
    args = dict(stride=(problem.stride_h, problem.stride_w), padding=(problem.pad_h, problem.pad_w),
                dilation=(problem.dilation_h, problem.dilation_w), groups=problem.groups)
    ref = conv2d_ref(x, w, **args)
    out = np.empty(ref.shape, np.float32)
    poison(out)
    with cuconv.backend("emulator"):
        cuconv.conv2d(x, w, out=out, **args)
    _check(conv2d_mod.choose_algorithm(problem), out, x, w, args)


def test_auto_with_no_candidate_explains_why():
    p = Conv2dProblem(1, 4, 9, 9, 8, 3, 3, dtype="int32")
    with pytest.raises(ValueError, match=r"no algorithm can run .*direct: dtype int32 not supported"):
        conv2d_mod.choose_algorithm(p)


# --------------------------------------------------------------------------- property-based
def _is_tensor_core(name: str) -> bool:
    return "tf32" in name or name.endswith("_tc") or "_tc_" in name


# tf32 rounds each operand to an 11-bit significand (unit roundoff 2**-11), so each product is
# off by at most ~2**-10 of |x|·|w|; the error is normalised by the conv of |x| and |w|.
TF32_BOUND = 1.25 * 2.0 ** -10


def _check(name, out, x, w, args):
    if _is_tensor_core(name):
        ref = conv2d_ref(x, w, **args)
        scale = np.max(conv2d_ref(np.abs(x), np.abs(w), **args))
        got = np.asarray(out, dtype=np.float64)
        assert np.all(np.isfinite(got)), f"{name}: non-finite output (unwritten element?)"
        diff = np.max(np.abs(got - ref))
        err = diff / scale if scale > 0 else diff   # all taps in the padding: exactly 0
        assert err <= TF32_BOUND, f"{name}: error {err:.3g} of sum|x||w| > {TF32_BOUND:.3g}"
        return
    if ("float32", name) not in TOLERANCES:
        pytest.fail(f"algorithm {name!r} has no float32 entry in cuconv.testing.TOLERANCES")
    assert_close(out, conv2d_ref(x, w, **args), np.float32, name)


@st.composite
def conv_problems(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, kg = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    R, S = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    N = draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    if draw(st.integers(0, 4)) == 0:
        stride, padding = 1, "same"
        H = draw(st.integers(1, 9))
        W = draw(st.integers(1, 9))
    else:
        sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        stride, padding = (sh, sw), (ph, pw)
        # The smallest input with a non-empty output, plus up to 6.
        H = draw(st.integers(max(1, dh * (R - 1) + 1 - 2 * ph), max(1, dh * (R - 1) + 1 - 2 * ph) + 6))
        W = draw(st.integers(max(1, dw * (S - 1) + 1 - 2 * pw), max(1, dw * (S - 1) + 1 - 2 * pw) + 6))
    x_shape = (N, cg * groups, H, W)
    w_shape = (kg * groups, cg, R, S)
    return x_shape, w_shape, dict(stride=stride, padding=padding, dilation=(dh, dw), groups=groups)


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(conv_problems(), st.integers(0, 2 ** 32 - 1))
def test_every_applicable_algorithm_matches_the_reference(case, seed):
    x_shape, w_shape, args = case
    rng = np.random.default_rng(seed)
    x, w = random_array(rng, x_shape), random_array(rng, w_shape)
    problem = Conv2dProblem.from_shapes(x_shape, w_shape, **args)
    ran = []
    with cuconv.backend("emulator"):
        for info in cuconv.algorithms(problem):
            if not info.ok:
                continue
            out = np.empty(problem.output_shape, np.float32)
            poison(out)
            cuconv.conv2d(x, w, algo=info.name, out=out, **args)
            _check(info.name, out, x, w, args)
            ran.append(info.name)
    assert {"direct", "implicit_gemm"} <= set(ran), (problem.describe(), ran)


def test_check_catches_a_wrong_answer(rng):
    """The property test's comparison fails on an off-by-one-row result."""
    x, w = _xw(rng)
    args = dict(stride=1, padding=1, dilation=1, groups=1)
    ref = conv2d_ref(x, w, **args).astype(np.float32)
    shifted = np.roll(ref, 1, axis=2)
    with pytest.raises(AssertionError):
        _check("direct", shifted, x, w, args)
    assert rel_error(ref, conv2d_ref(x, w, **args)) < 1e-6
