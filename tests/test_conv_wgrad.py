"""The weight and bias gradients dW, db (kernels/conv_wgrad.cu, depthwise_grad.cu;
cuconv.ops.conv_wgrad): every kernel, launched through the WGRAD pass's plans (and
conv2d_bias's), against the float64 §9.8 reference on awkward shapes,
float32 and float64; split-K with its deterministic reduction bit-identical across thread
orders; the atomic variant; the split rule; sanitizers; the reference against finite
differences (no torch needed) and torch.autograd (when installed)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import put

import cuconv
from cuconv import grad as G
from cuconv.ops import conv_wgrad as wg
from cuconv.ops import depthwise_grad as dwg
from cuconv.ops._algorithm import WGRAD
from cuconv.ops.conv2d import select, spec_of
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_bias_ref, conv2d_ref, conv2d_weight_ref, conv_problem
from cuconv.testing import assert_close, poison, random_array, tolerance

# (N, C, H, W, K, R, S, stride, padding, dilation, groups); padding may be ((top, bottom), (left, right)).
CASES = {
    "stride2_C3": (2, 3, 9, 7, 10, 3, 3, 2, 1, 1, 1),
    "stride3_K70_two_row_tiles": (1, 5, 11, 10, 70, 3, 3, 3, 1, 1, 1),
    "dilation2_groups2": (2, 6, 9, 9, 6, 3, 3, 1, 2, 2, 2),
    "stem_7x7_stride2_C3": (1, 3, 13, 11, 8, 7, 7, 2, 3, 1, 1),
    "1x1_C20": (2, 20, 7, 6, 9, 1, 1, 1, 0, 1, 1),
    "padding_larger_than_half_kernel": (1, 4, 7, 7, 5, 3, 3, 1, 3, 1, 1),
    "asymmetric_padding_stride2": (1, 4, 8, 9, 7, 4, 2, 2, ((2, 1), (0, 3)), 1, 1),
    "C1": (2, 1, 9, 9, 4, 3, 3, 1, 1, 1, 1),
    "rect_stride2x3_dil2x1_CRS_over_64": (1, 13, 10, 11, 8, 3, 2, (2, 3), (1, 2), (2, 1), 1),
    "depthwise_M2_stride2": (2, 6, 9, 7, 12, 3, 3, 2, 1, 1, 6),
    "depthwise_5x5_dil2": (1, 4, 11, 9, 4, 5, 5, 1, 2, 2, 4),
    "depthwise_M3_stride3": (1, 3, 7, 8, 9, 3, 3, 3, 1, 1, 3),
}
DTYPES = ["float32", "float64"]


def _problem(case, dtype) -> Conv2dProblem:
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    return conv_problem((N, C, H, W), (K, C // groups, R, S), stride, padding, dilation, groups, dtype)


def _draw(rng, case, dtype):
    p = _problem(case, dtype) if not isinstance(case, Conv2dProblem) else case
    return p, random_array(rng, p.input_shape, p.dtype), random_array(rng, p.output_shape, p.dtype)


def _ref(p: Conv2dProblem, x, dy):
    pad = ((p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right))
    return conv2d_weight_ref(x, p.weight_shape, dy, (p.stride_h, p.stride_w), pad,
                             (p.dilation_h, p.dilation_w), p.groups)


def _plan(p, variant="auto", bias=True, deterministic=True, splits=None, max_ws=None):
    """The WGRAD plan of a variant: a kernel config's name, "direct", "implicit_gemm", "depthwise"
    or "auto" (``splits`` forces the split count)."""
    options = {} if splits is None else {"splits": splits}
    if variant in wg.CONFIGS_BY_NAME:
        if wg.CONFIGS_BY_NAME[variant] in wg.DIRECT.values():
            variant = "direct"
        else:
            variant, options = "implicit_gemm", dict(options, config=variant)
    if variant == "direct":
        options.pop("splits", None)
    return select(spec_of(p, WGRAD, has_bias=bias, deterministic=deterministic, max_workspace_bytes=max_ws,
                          **options), variant)


def _splits(plan) -> int:
    """The split count of a wgrad plan: the grid's y dimension of its main kernel."""
    return max(ln.grid[1] for ln in plan.launches)


def _run(be, p, x, dy, variant="auto", bias=True, deterministic=True, splits=None, max_ws=None):
    """dW (and db) through the plan of ``variant``, into poisoned outputs; and the plan."""
    plan = _plan(p, variant, bias, deterministic, splits, max_ws)
    dw = be.empty(p.weight_shape, p.dtype)
    poison(dw)
    db = None
    if bias:
        db = be.empty((p.K,), p.dtype)
        poison(db)
    plan.run(put(be, x), put(be, dy), dw=dw, **({"db": db} if bias else {}))
    return be.to_numpy(dw), (be.to_numpy(db) if bias else None), plan


def _deterministic(plan) -> bool:
    return not any("atomic" in k for k in plan.kernels)


def _bias_run(be, dy, out):
    """conv2d_bias's plan, run into ``out``."""
    return G.plan_conv2d_bias(put(be, dy), out=out).run(put(be, dy), db=out)


def _variants(case, dtype):
    """(variant, deterministic, splits) to run for a case."""
    p = _problem(case, dtype)
    vs = [(wg.DIRECT[dtype].name, True, None)]
    for c in wg.GEMM_CONFIGS:
        if c.dtype == dtype:
            vs += [(c.name, not c.atomic, 1), (c.name, not c.atomic, 3)]
    if dwg.applies(p):
        vs += [("depthwise", True, 1), ("depthwise", True, 2)]
    return vs


PARAMS = [pytest.param(case, dt, v, det, n, id=f"{case}-{v}-splits{n}")
          for dt in DTYPES for case in CASES for v, det, n in _variants(CASES[case], dt)]


@pytest.mark.parametrize("case,dtype,variant,deterministic,splits", PARAMS)
def test_wgrad_and_fused_bias_match_reference(be, rng, case, dtype, variant, deterministic, splits):
    p, x, dy = _draw(rng, CASES[case], dtype)
    dw, db, plan = _run(be, p, x, dy, variant, True, deterministic, splits)
    assert _deterministic(plan) == deterministic
    assert_close(dw, _ref(p, x, dy), dtype, "wgrad", what=f"{case} {plan.description} dW")
    assert_close(db, conv2d_bias_ref(dy), dtype, "wgrad", what=f"{case} {plan.description} db")


@pytest.mark.parametrize("dtype", DTYPES)
def test_without_bias_and_standalone_bias(be, rng, dtype):
    p, x, dy = _draw(rng, CASES["dilation2_groups2"], dtype)        # 162 reduction indices
    dw, _, plan = _run(be, p, x, dy, "implicit_gemm", bias=False, splits=4)
    assert _splits(plan) == 4 and plan.workspace_bytes == 4 * p.K * 3 * 9 * p.itemsize
    assert_close(dw, _ref(p, x, dy), dtype, "wgrad")
    db = be.empty((p.K,), dtype)
    poison(db)
    _bias_run(be, dy, db)
    assert G.plan_conv2d_bias(dy).kernels == [f"conv_wgrad_bias_{dtype[0]}{dtype[-2:]}_256"]
    assert_close(db, conv2d_bias_ref(dy), dtype, "wgrad", what="conv_bias_grad")


@pytest.mark.parametrize("kind", ["gemm", "depthwise", "bias"])
def test_deterministic_bit_identical_across_thread_orders(rng, kind):
    """Split-K partials reduced in split order (and the fixed-tree block sums) give the same
    bits whatever order blocks and threads run in: random order vs reversed order."""
    if kind == "depthwise":
        p, x, dy = _draw(rng, _problem((3, 4, 17, 15, 8, 3, 3, 1, 1, 1, 4), "float32"), "float32")
        variant, splits = "depthwise", 3                     # 3·17·15 = 765 reduction elements
    else:
        p, x, dy = _draw(rng, _problem((2, 9, 13, 11, 20, 3, 3, 1, 1, 1, 1), "float32"), "float32")
        variant, splits = "conv_wgrad_implicit_gemm_f32_64x64x8_4x4", 6    # 6 chunks of 48 of 286
    runs = []
    for mode in (dict(order="random", seed=1234), dict(order="reverse")):
        with cuconv.backend("emulator", **mode) as be:
            if kind == "bias":
                db = np.full((p.K,), np.nan, np.float32)
                _bias_run(be, dy, db)
                runs.append((db,))
            else:
                dw, db, plan = _run(be, p, x, dy, variant, splits=splits)
                assert _splits(plan) == splits and _deterministic(plan)
                runs.append((dw, db))
    for a, b in zip(*runs):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert_close(runs[0][-1], conv2d_bias_ref(dy), "float32", "wgrad")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_agrees_with_direct(be, rng, dtype):
    """The split-K GEMM and the one-thread-per-weight kernel sum the same products in different
    orders: they agree to the rounding of the element type."""
    p, x, dy = _draw(rng, CASES["rect_stride2x3_dil2x1_CRS_over_64"], dtype)
    ref = _ref(p, x, dy)
    direct, _, _ = _run(be, p, x, dy, "direct", bias=False)
    for v, n in (("implicit_gemm", 1), ("implicit_gemm", 3)):
        got, _, plan = _run(be, p, x, dy, v, bias=False, splits=n)
        assert np.abs(got - direct).max() <= 2 * tolerance(dtype, "wgrad") * np.abs(ref).max(), plan.description


def test_atomic_variant_says_so_and_is_accurate(be, rng):
    p, x, dy = _draw(rng, CASES["stride3_K70_two_row_tiles"], "float32")
    dw, db, plan = _run(be, p, x, dy, "implicit_gemm", deterministic=False, splits=5)
    atomic = next(k for k in plan.kernels if "atomic" in k)
    assert not _deterministic(plan) and plan.workspace_bytes == 0 and "not deterministic" in plan.description
    assert_close(dw, _ref(p, x, dy), "float32", "wgrad")
    assert_close(db, conv2d_bias_ref(dy), "float32", "wgrad")
    with pytest.raises(ValueError, match="pass deterministic=False"):
        _plan(p, atomic)


# --------------------------------------------------------------------------- the split rule
def test_choose_splits_rule():
    cfg = wg.CONFIGS_BY_NAME["conv_wgrad_implicit_gemm_f32_64x64x8_4x4"]
    # Enough tiles already: one split.
    late = Conv2dProblem(32, 512, 7, 7, 512, 3, 3, pad_h=1, pad_w=1)
    assert cfg.tiles(late) == 8 * 72 and wg.choose_splits(late, cfg, 132) == 1
    # Few tiles: splits fill 2 blocks per SM (ceil(264 / 9) = 30) ...
    early = Conv2dProblem(8, 64, 56, 56, 64, 3, 3, pad_h=1, pad_w=1)
    assert cfg.tiles(early) == 9 and wg.choose_splits(early, cfg, 132) == 30
    # ... but keep >= 16 steps of 8 reduction indices per split (batch 1: 392 steps) ...
    assert wg.choose_splits(early.with_(N=1), cfg, 132) == 24
    tiny = Conv2dProblem(1, 64, 8, 8, 64, 3, 3, pad_h=1, pad_w=1)        # 64 indices: 8 steps
    assert wg.choose_splits(tiny, cfg, 132) == 1
    # ... and the workspace within the bound (0: none at all); the atomic variant needs none.
    per_split = (64 * 64 * 9 + 64) * 4
    assert wg.choose_splits(early, cfg, 132, 4 * per_split, bias=True) == 4
    assert wg.choose_splits(early, cfg, 132, per_split - 1, bias=True) == 1
    assert wg.choose_splits(early, cfg, 132, 0) == 1
    atomic = wg.CONFIGS_BY_NAME["conv_wgrad_implicit_gemm_atomic_f32_64x64x8_4x4"]
    assert wg.choose_splits(early, atomic, 132, 0) == 30
    pl = wg.schedule(early, wg.choose_config(early), bias=True, max_workspace_bytes=4 * per_split)
    assert pl.splits == 4 and sum(pl.workspace_elems(early)) * 4 == 4 * per_split
    assert pl.chunk % cfg.bk == 0 and (pl.splits - 1) * pl.chunk < 8 * 56 * 56 <= pl.splits * pl.chunk
    with cuconv.backend("record"):
        plan = _plan(early, max_ws=4 * per_split)
        assert _splits(plan) == 4 and plan.workspace_bytes == 4 * per_split
    # depthwise: K·ceil(RS/9) blocks per split; >= 2048 indices per split
    dw = Conv2dProblem(8, 32, 112, 112, 32, 3, 3, pad_h=1, pad_w=1, groups=32)
    assert dwg.wgrad_splits(dw, 132, None, True) == 9                  # ceil(264 / 32)
    assert dwg.wgrad_splits(dw.with_(N=1), 132, None, True) == 6       # 12544 // 2048
    assert dwg.wgrad_splits(dw, 132, 0, True) == 1


def test_workspace_limit_is_respected_end_to_end(be, rng):
    p, x, dy = _draw(rng, _problem((2, 8, 16, 16, 16, 3, 3, 1, 1, 1, 1), "float32"), "float32")
    cfg = wg.CONFIGS_BY_NAME["conv_wgrad_implicit_gemm_f32_64x64x8_4x4"]
    per_split = (16 * 8 * 9 + 16) * 4
    assert wg.choose_splits(p, cfg, 132) > 3
    dw, db, plan = _run(be, p, x, dy, max_ws=3 * per_split)
    assert _splits(plan) == 3 and plan.workspace_bytes <= 3 * per_split
    assert_close(dw, _ref(p, x, dy), "float32", "wgrad")
    assert_close(db, conv2d_bias_ref(dy), "float32", "wgrad")


@pytest.mark.parametrize("mode", [
    pytest.param(dict(sanitize="address,undefined", order="reverse"), id="asan_ubsan_reverse"),
    pytest.param(dict(order="random", seed=9), id="random"),
])
@pytest.mark.parametrize("variant,case,dtype,deterministic,splits", [
    ("conv_wgrad_direct_f64_256", "asymmetric_padding_stride2", "float64", True, None),
    ("conv_wgrad_direct_f32_256", "depthwise_M3_stride3", "float32", True, None),
    ("conv_wgrad_implicit_gemm_f32_64x64x8_4x4", "1x1_C20", "float32", True, 4),
    ("conv_wgrad_implicit_gemm_f32_128x64x8_8x4", "stride3_K70_two_row_tiles", "float32", True, 2),
    ("conv_wgrad_implicit_gemm_f64_64x64x8_4x4", "rect_stride2x3_dil2x1_CRS_over_64", "float64", True, 2),
    ("conv_wgrad_implicit_gemm_atomic_f32_64x64x8_4x4", "dilation2_groups2", "float32", False, 3),
    ("conv_wgrad_implicit_gemm_atomic_f64_64x64x8_4x4", "stride2_C3", "float64", False, 2),
    ("conv_wgrad_implicit_gemm_atomic_f32_128x64x8_8x4", "C1", "float32", False, 1),
    ("conv_wgrad_implicit_gemm_f32_128x128x8_8x8_s4", "stride3_K70_two_row_tiles", "float32", True, 2),
    ("conv_wgrad_implicit_gemm_atomic_f64_64x64x8_8x8_s4", "rect_stride2x3_dil2x1_CRS_over_64", "float64", False, 3),
    ("depthwise", "depthwise_M2_stride2", "float32", True, 1),
    ("depthwise", "depthwise_5x5_dil2", "float64", True, 1),
])
def test_under_emulator_checks(rng, mode, variant, case, dtype, deterministic, splits):
    p, x, dy = _draw(rng, CASES[case], dtype)
    if variant == "depthwise":     # a reduction long enough for 2 splits: 3·16·15 = 720
        p, x, dy = _draw(rng, p.with_(N=3, H=32, W=30) if p.stride_h == 2 else p.with_(N=3, H=20, W=19), dtype)
        splits = 2
    with cuconv.backend("emulator", **mode) as be:
        dw, db, plan = _run(be, p, x, dy, variant, True, deterministic, splits)
        db2 = np.full((p.K,), np.nan, dtype)
        _bias_run(be, dy, db2)
    assert _splits(plan) == (splits or 1)
    assert_close(dw, _ref(p, x, dy), dtype, "wgrad", what=f"{case} {plan.description}")
    assert_close(db, conv2d_bias_ref(dy), dtype, "wgrad", what=f"{case} {plan.description} db")
    assert_close(db2, conv2d_bias_ref(dy), dtype, "wgrad", what="conv_bias_grad")


# --------------------------------------------------------------------------- finite differences, torch
@pytest.mark.parametrize("case", ["stride2_C3", "asymmetric_padding_stride2", "dilation2_groups2",
                                  "depthwise_M3_stride3"])
def test_conv2d_weight_against_finite_differences(be, rng, case):
    """No torch needed: L(w) = <dy, conv2d(x, w)> is linear in w, so central differences give
    ∂L/∂w up to rounding. Checks the reference (float64, tightly) and the kernel (float64)."""
    p = _problem(CASES[case], "float64")
    x = rng.standard_normal(p.input_shape)
    w = rng.standard_normal(p.weight_shape)
    dy = rng.standard_normal(p.output_shape)
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right)))

    def loss(wv):
        y = conv2d_ref(xp, wv, stride=(p.stride_h, p.stride_w), dilation=(p.dilation_h, p.dilation_w),
                       groups=p.groups)
        return float(np.sum(y * dy))

    ref = _ref(p, x, dy)
    got, _, _ = _run(be, p, x, dy, bias=False)
    h = 0.5
    for _ in range(10):
        i = tuple(rng.integers(0, d) for d in p.weight_shape)
        e = np.zeros(p.weight_shape)
        e[i] = h
        fd = (loss(w + e) - loss(w - e)) / (2 * h)
        assert abs(fd - ref[i]) <= 1e-10 * max(1.0, abs(fd)), (i, fd, ref[i])
        assert abs(fd - got[i]) <= 1e-10 * max(1.0, abs(fd)), (i, fd, got[i])


@pytest.mark.parametrize("case", ["stride2_C3", "stem_7x7_stride2_C3", "rect_stride2x3_dil2x1_CRS_over_64",
                                  "padding_larger_than_half_kernel", "depthwise_M2_stride2", "1x1_C20"])
def test_reference_and_kernel_against_torch(be, rng, case):
    torch = pytest.importorskip("torch")
    p, x, dy = _draw(rng, CASES[case], "float64")
    w = torch.tensor(rng.standard_normal(p.weight_shape), requires_grad=True)
    b = torch.zeros(p.K, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(torch.tensor(x), w, b, (p.stride_h, p.stride_w), (p.pad_h, p.pad_w),
                                   (p.dilation_h, p.dilation_w), p.groups)
    y.backward(torch.tensor(dy))
    nn_grad = torch.nn.grad.conv2d_weight(torch.tensor(x), p.weight_shape, torch.tensor(dy),
                                          (p.stride_h, p.stride_w), (p.pad_h, p.pad_w),
                                          (p.dilation_h, p.dilation_w), p.groups).numpy()
    assert_close(_ref(p, x, dy), w.grad.numpy(), "float64", "wgrad", what="reference vs autograd")
    assert_close(nn_grad, w.grad.numpy(), "float64", "wgrad", what="torch.nn.grad vs autograd")
    dw, db, plan = _run(be, p, x, dy)
    assert_close(dw, w.grad.numpy(), "float64", "wgrad", what=f"{plan.kernels} vs torch")
    assert_close(db, b.grad.numpy(), "float64", "wgrad", what=f"{plan.kernels} db vs torch")


# --------------------------------------------------------------------------- errors
def test_bad_arrays_are_rejected_before_launch(rng):
    p, x, dy = _draw(rng, CASES["stride2_C3"], "float32")
    dw = np.empty(p.weight_shape, np.float32)
    args = (p.stride_h, p.pad_h)
    with cuconv.backend("record") as rec:
        with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 10, 5, 4\)"):
            G.conv2d_weight(x, p.weight_shape, dy[:, :, :4].copy(), *args, out=dw)
        with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 10, 4, 4\)"):    # x (2, 3, 8, 7)
            G.conv2d_weight(x[:, :, :8].copy(), p.weight_shape, dy, *args, out=dw)
        with pytest.raises(ValueError, match=r"db must be a C-contiguous \(10,\) float32 array"):
            _plan(p, "direct").run(x, dy, dw=dw, db=np.empty(9, np.float32))
        with pytest.raises(TypeError, match="out must have the same dtype"):
            G.conv2d_weight(x, p.weight_shape, dy, *args, out=dw.astype(np.float64))
        with pytest.raises(ValueError, match="unknown algo 'nope'"):
            G.conv2d_weight(x, p.weight_shape, dy, *args, algo="nope")
        with pytest.raises(ValueError, match="splits must be in 1..65535"):
            G.conv2d_weight(x, p.weight_shape, dy, *args, algo="implicit_gemm", splits=0)
        with pytest.raises(ValueError, match="algo='depthwise' cannot run"):
            G.conv2d_weight(x, p.weight_shape, dy, *args, algo="depthwise")
        with pytest.raises(ValueError, match="out overlaps input"):
            G.conv2d_weight(x, p.weight_shape, dy, *args, out=x.reshape(-1)[:dw.size].reshape(dw.shape))
        with pytest.raises(ValueError, match=r"out must have shape"):
            G.conv2d_bias(dy, out=np.empty(9, np.float32))
    assert rec.launches == []


def test_can_implement_reasons():
    gemm = wg.CONFIGS_BY_NAME["conv_wgrad_implicit_gemm_f32_64x64x8_4x4"]
    assert gemm.can_implement(Conv2dProblem(2, 16, 9, 9, 8, 3, 3)) is None
    assert "takes float32" in gemm.can_implement(Conv2dProblem(2, 16, 9, 9, 8, 3, 3, dtype="float64"))
    wide = Conv2dProblem(1, 1 << 20, 46, 46, 4, 46, 46)   # Cg·R·S > 2**31 (shapes only)
    assert "Cg·R·S" in gemm.can_implement(wide)
    with cuconv.backend("record"):
        assert _plan(wide, bias=False).kernels == ["conv_wgrad_direct_f32_256"]      # auto: the GEMM cannot


def test_transposed_conv_gradients_map_onto_these_kernels(be, rng):
    """For the lead's conv_transpose2d_input / _weight: y = conv_transpose2d(x, w) is the dgrad of
    the conv2d whose input has y's shape, so ∂L/∂x = conv2d(dy, w) (the forward) and ∂L/∂w is
    this wgrad with the roles of input and grad_output swapped (weight C_in × C_out/g × R × S)."""
    torch = pytest.importorskip("torch")
    N, cin, H, W, cout_g, R, S, s, pad, dil, g = 2, 4, 5, 4, 3, 3, 3, 2, 1, 1, 2
    x = torch.tensor(rng.standard_normal((N, cin, H, W)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((cin, cout_g, R, S)), requires_grad=True)
    y = torch.nn.functional.conv_transpose2d(x, w, None, s, pad, 0, g, dil)
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    # The conv2d seen from y: input (N, C_out, H_out, W_out), weight (C_in, C_out/g, R, S).
    p = conv_problem(tuple(y.shape), (cin, cout_g, R, S), s, pad, dil, g, "float64")
    assert p.output_shape == (N, cin, H, W)
    dw, _, _ = _run(be, p, dy, x.detach().numpy(), bias=False)
    assert_close(dw, w.grad.numpy(), "float64", "wgrad", what="conv_transpose2d weight grad")
