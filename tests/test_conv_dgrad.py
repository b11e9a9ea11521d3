"""The data gradient dX (kernels/conv_dgrad.cu, depthwise_grad.cu; cuconv.ops.conv_dgrad):
every kernel, launched through the DGRAD pass's plans, against the float64 §9.8 reference on
awkward shapes, float32 and float64, the variants against each other, under the emulator's
sanitizers and thread orders; the reference itself against finite differences and (when
installed) torch.autograd."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import put

import cuconv
from cuconv import grad as G
from cuconv.ops import conv_dgrad as dg
from cuconv.ops import depthwise_grad as dwg
from cuconv.ops._algorithm import DGRAD
from cuconv.ops.conv2d import select, spec_of
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_input_ref, conv2d_ref, conv_problem
from cuconv.testing import assert_close, nonfinite_mismatch, poison, random_array

# (N, C, H, W, K, R, S, stride, padding, dilation, groups); padding may be ((top, bottom), (left, right)).
CASES = {
    "stride2_C3": (2, 3, 9, 7, 10, 3, 3, 2, 1, 1, 1),
    "stride3_C13_K9": (1, 13, 11, 10, 9, 3, 3, 3, 1, 1, 1),
    "dilation2_groups2": (1, 16, 9, 9, 6, 3, 3, 1, 2, 2, 2),
    "stem_7x7_stride2_C3": (1, 3, 13, 11, 8, 7, 7, 2, 3, 1, 1),
    "1x1_C20": (2, 20, 7, 6, 9, 1, 1, 1, 0, 1, 1),
    "1x1_stride2_phases_without_taps": (1, 12, 9, 9, 5, 1, 1, 2, 0, 1, 1),
    "padding_larger_than_half_kernel": (1, 9, 7, 7, 5, 3, 3, 1, 3, 1, 1),
    "asymmetric_padding_stride2": (1, 10, 8, 9, 7, 4, 2, 2, ((2, 1), (0, 3)), 1, 1),
    "C1": (2, 1, 9, 9, 4, 3, 3, 1, 1, 1, 1),
    "rect_stride2x3_dil2x1": (1, 9, 10, 11, 8, 3, 2, (2, 3), (1, 2), (2, 1), 1),
    "C70_two_column_tiles": (1, 70, 5, 5, 12, 3, 3, 1, 1, 1, 1),
    "stride_beyond_filter": (1, 8, 9, 9, 3, 2, 2, 3, 0, 1, 1),
    "depthwise_M2_stride2": (2, 6, 9, 7, 12, 3, 3, 2, 1, 1, 6),
    "depthwise_5x5_dil2": (1, 4, 11, 9, 4, 5, 5, 1, 2, 2, 4),
    "depthwise_M3_stride3": (1, 3, 7, 8, 9, 3, 3, 3, 1, 1, 3),
}
DTYPES = ["float32", "float64"]


def _problem(case, dtype) -> Conv2dProblem:
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    return conv_problem((N, C, H, W), (K, C // groups, R, S), stride, padding, dilation, groups, dtype)


def _draw(rng, case, dtype):
    p = _problem(case, dtype)
    return p, random_array(rng, p.weight_shape, dtype), random_array(rng, p.output_shape, dtype)


def _ref(p: Conv2dProblem, w, dy):
    pad = ((p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right))
    return conv2d_input_ref(p.input_shape, w, dy, (p.stride_h, p.stride_w), pad,
                            (p.dilation_h, p.dilation_w), p.groups)


def _plan(p, variant):
    """The DGRAD plan of a variant: a kernel config's name, "depthwise" or "auto"."""
    if variant in dg.CONFIGS_BY_NAME:
        if dg.CONFIGS_BY_NAME[variant] in dg.DIRECT.values():
            return select(spec_of(p, DGRAD), "direct")
        return select(spec_of(p, DGRAD, config=variant), "implicit_gemm")
    return select(spec_of(p, DGRAD), variant)


def _run(be, p, w, dy, variant):
    """dx through the plan of ``variant``, into a poisoned output; and the kernel it launched."""
    plan = _plan(p, variant)
    dx = be.empty(p.input_shape, p.dtype)
    poison(dx)
    assert plan.run(put(be, w), put(be, dy), dx=dx) is dx
    (name,) = plan.kernels
    return be.to_numpy(dx), name


def _variants(case, dtype):
    p = _problem(case, dtype)
    vs = [dg.DIRECT[dtype].name] + [c.name for c in dg.GEMM_CONFIGS if c.dtype == dtype]
    if dwg.applies(p):
        vs.append("depthwise")
    return vs


PARAMS = [pytest.param(case, dt, v, id=f"{case}-{v}") for dt in DTYPES for case in CASES
          for v in _variants(CASES[case], dt)]


@pytest.mark.parametrize("case,dtype,variant", PARAMS)
def test_dgrad_matches_reference(be, rng, case, dtype, variant):
    p, w, dy = _draw(rng, CASES[case], dtype)
    got, name = _run(be, p, w, dy, variant)
    if variant != "depthwise":
        assert name == variant
    assert_close(got, _ref(p, w, dy), dtype, "dgrad", what=f"{case} {name}")


def _true_terms_ref(p: Conv2dProblem, w, dy):
    """dx in float64 as a sum over only the (k, r, s) whose dy pixel exists (no 0·w term for a
    tap that misses dy), one element at a time: the reference for non-finite weights."""
    dx = np.zeros(p.input_shape)
    w64, dy64 = w.astype(np.float64), dy.astype(np.float64)
    Cg, Kg = p.C // p.groups, p.K // p.groups
    for n, c, h, x in np.ndindex(*p.input_shape):
        g = c // Cg
        for k in range(g * Kg, (g + 1) * Kg):
            for r, s in np.ndindex(p.R, p.S):
                ph, pw = h + p.pad_h - r * p.dilation_h, x + p.pad_w - s * p.dilation_w
                if ph % p.stride_h or pw % p.stride_w:
                    continue
                ph, pw = ph // p.stride_h, pw // p.stride_w
                if 0 <= ph < p.P and 0 <= pw < p.Q:
                    dx[n, c, h, x] += dy64[n, k, ph, pw] * w64[k, c - g * Cg, r, s]
    return dx


@pytest.mark.parametrize("dtype,variant", [(dt, v) for dt in DTYPES for v in _variants(CASES["C1"], dt)])
def test_dgrad_nonfinite_weight_over_dy_border(be, rng, dtype, variant):
    """Every variant (the register-tile and cp.async ones included): an Inf/NaN weight tap whose
    dy row or column falls outside dy is no term of that dx element (torch's col2im), so the
    NaN/Inf mask and the finite values are the reference's."""
    p, w, dy = _draw(rng, (2, 5, 7, 6, 3, 3, 3, 2, 1, 1, 1), dtype)
    w[0, 1, 0, 0], w[2, 4, 2, 1], w[1, 0, 1, 2] = np.inf, np.nan, -np.inf
    got, _ = _run(be, p, w, dy, variant)
    want = _true_terms_ref(p, w, dy)
    assert np.isfinite(want).any() and not np.isfinite(want).all()
    assert nonfinite_mismatch(got, want) is None, f"{variant}: {nonfinite_mismatch(got, want)}"
    fin = np.isfinite(want)
    assert_close(np.where(fin, got, 0), np.where(fin, want, 0), dtype, "dgrad", what=variant)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["stride3_C13_K9", "asymmetric_padding_stride2", "rect_stride2x3_dil2x1",
                                  "depthwise_M2_stride2", "depthwise_5x5_dil2"])
def test_fast_variants_equal_direct_bit_for_bit(be, rng, case, dtype):
    """The phase GEMM and the depthwise tile visit the reachable taps in the direct kernel's
    order (r, then s, then k) with one fma each, so all variants agree exactly."""
    p, w, dy = _draw(rng, CASES[case], dtype)
    results = {v: _run(be, p, w, dy, v)[0] for v in _variants(CASES[case], dtype)}
    base = results[dg.DIRECT[dtype].name]
    for v, got in results.items():
        np.testing.assert_array_equal(got, base, err_msg=v)


def test_auto_rule(be, rng):
    cases = {"stride2_C3": "conv_dgrad_direct_f32_256",                          # C/groups = 3 < 8
             "C70_two_column_tiles": "conv_dgrad_implicit_gemm_f32_64x64x8_4x4",  # too few blocks for 128
             "depthwise_M2_stride2": "depthwise_grad_dgrad_f32"}
    for case, want in cases.items():
        p, w, dy = _draw(rng, CASES[case], "float32")
        got, name = _run(be, p, w, dy, "auto")
        assert name == want, case
        assert_close(got, _ref(p, w, dy), "float32", "dgrad", what=case)
    big = Conv2dProblem(8, 64, 56, 56, 64, 3, 3, pad_h=1, pad_w=1)
    assert dg.choose_config(big, 132).name == "conv_dgrad_implicit_gemm_f32_128x64x8_8x4"
    assert dg.choose_config(big.with_(dtype="float64"), 132).name == "conv_dgrad_implicit_gemm_f64_64x64x8_4x4"
    with cuconv.backend("record"):
        assert select(spec_of(big, DGRAD)).kernels == ["conv_dgrad_implicit_gemm_f32_128x64x8_8x4"]


@pytest.mark.parametrize("mode", [
    pytest.param(dict(sanitize="address,undefined", order="reverse"), id="asan_ubsan_reverse"),
    pytest.param(dict(order="random", seed=5), id="random"),
])
@pytest.mark.parametrize("variant,case,dtype", [
    ("conv_dgrad_direct_f64_256", "asymmetric_padding_stride2", "float64"),
    ("conv_dgrad_direct_f32_256", "depthwise_5x5_dil2", "float32"),
    ("conv_dgrad_implicit_gemm_f32_128x64x8_8x4", "C70_two_column_tiles", "float32"),
    ("conv_dgrad_implicit_gemm_f32_64x64x8_4x4", "rect_stride2x3_dil2x1", "float32"),
    ("conv_dgrad_implicit_gemm_f64_64x64x8_4x4", "stride3_C13_K9", "float64"),
    ("conv_dgrad_implicit_gemm_f32_128x128x8_8x8_s4", "asymmetric_padding_stride2", "float32"),
    ("conv_dgrad_implicit_gemm_f32_128x128x8_8x8_s4", "stride_beyond_filter", "float32"),
    ("conv_dgrad_implicit_gemm_f64_64x64x8_8x8_s4", "rect_stride2x3_dil2x1", "float64"),
    ("depthwise", "depthwise_M2_stride2", "float32"),
    ("depthwise", "depthwise_M3_stride3", "float64"),
])
def test_under_emulator_checks(rng, mode, variant, case, dtype):
    """ASan/UBSan catch loads past dy, w or the shared tile; reversed/random thread order a
    missing barrier between staging and use (double buffers, the epilogue's parking)."""
    p, w, dy = _draw(rng, CASES[case], dtype)
    with cuconv.backend("emulator", **mode) as be:
        got, _ = _run(be, p, w, dy, variant)
    assert_close(got, _ref(p, w, dy), dtype, "dgrad", what=f"{case} {variant}")


# --------------------------------------------------------------------------- the reference
def test_reference_against_finite_differences(rng):
    """L(x) = <dy, conv2d(x, w)> is linear in x, so central differences recover ∂L/∂x exactly
    up to rounding; checked at random positions, including the padding-adjacent border."""
    for case in ("stride3_C13_K9", "asymmetric_padding_stride2", "dilation2_groups2", "depthwise_M3_stride3"):
        p = _problem(CASES[case], "float64")
        x = rng.standard_normal(p.input_shape)
        w = rng.standard_normal(p.weight_shape)
        dy = rng.standard_normal(p.output_shape)
        pad = ((p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right))
        ref = _ref(p, w, dy)

        def loss(xv):
            xp = np.pad(xv, ((0, 0), (0, 0), pad[0], pad[1]))
            y = conv2d_ref(xp, w, stride=(p.stride_h, p.stride_w), dilation=(p.dilation_h, p.dilation_w),
                           groups=p.groups)
            return float(np.sum(y * dy))

        h = 0.5
        picks = [tuple(rng.integers(0, d) for d in p.input_shape) for _ in range(12)]
        picks += [(0, 0, 0, 0), tuple(d - 1 for d in p.input_shape)]
        for i in picks:
            e = np.zeros(p.input_shape)
            e[i] = h
            fd = (loss(x + e) - loss(x - e)) / (2 * h)
            assert abs(fd - ref[i]) <= 1e-10 * max(1.0, abs(fd)), (case, i, fd, ref[i])


@pytest.mark.parametrize("case", ["stride2_C3", "stem_7x7_stride2_C3", "rect_stride2x3_dil2x1",
                                  "padding_larger_than_half_kernel", "depthwise_M2_stride2",
                                  "1x1_stride2_phases_without_taps"])
def test_reference_and_kernel_against_torch(be, rng, case):
    torch = pytest.importorskip("torch")
    p, w, dy = _draw(rng, CASES[case], "float64")
    x = torch.tensor(rng.standard_normal(p.input_shape), requires_grad=True)
    y = torch.nn.functional.conv2d(x, torch.tensor(w), None, (p.stride_h, p.stride_w), (p.pad_h, p.pad_w),
                                   (p.dilation_h, p.dilation_w), p.groups)
    y.backward(torch.tensor(dy))
    want = x.grad.numpy()
    via_nn_grad = torch.nn.grad.conv2d_input(p.input_shape, torch.tensor(w), torch.tensor(dy),
                                             (p.stride_h, p.stride_w), (p.pad_h, p.pad_w),
                                             (p.dilation_h, p.dilation_w), p.groups).numpy()
    assert_close(_ref(p, w, dy), want, "float64", "dgrad", what="reference vs torch.autograd")
    assert_close(via_nn_grad, want, "float64", "dgrad", what="torch.nn.grad vs autograd")
    got, name = _run(be, p, w, dy, "auto")
    assert_close(got, want, "float64", "dgrad", what=f"{name} vs torch")


# --------------------------------------------------------------------------- errors
def test_bad_arrays_are_rejected_before_launch(rng):
    p, w, dy = _draw(rng, CASES["stride2_C3"], "float32")
    dx = np.empty(p.input_shape, np.float32)
    args = (p.stride_h, p.pad_h)
    with cuconv.backend("record") as rec:
        with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 10, 5, 4\)"):
            G.conv2d_input(p.input_shape, w, dy[:, :, :4].copy(), *args, out=dx)
        with pytest.raises(ValueError, match="out must have shape"):
            G.conv2d_input(p.input_shape, w, dy, *args, out=np.empty((2, 3, 9, 8), np.float32))
        with pytest.raises(TypeError, match="grad_output must have the same dtype"):
            G.conv2d_input(p.input_shape, w.astype(np.float64), dy, *args, out=dx)
        with pytest.raises(TypeError, match="float32 or float64"):
            select(spec_of(p.with_(dtype="int8"), DGRAD), "direct")
        with pytest.raises(ValueError, match="unknown algo 'nope'"):
            G.conv2d_input(p.input_shape, w, dy, *args, algo="nope")
        with pytest.raises(ValueError, match="unknown dgrad implicit_gemm config 'nope'"):
            G.conv2d_input(p.input_shape, w, dy, *args, algo="implicit_gemm", config="nope")
        with pytest.raises(ValueError, match="conv_dgrad_implicit_gemm_f64_64x64x8_4x4 takes float64"):
            G.conv2d_input(p.input_shape, w, dy, *args, algo="implicit_gemm",
                           config="conv_dgrad_implicit_gemm_f64_64x64x8_4x4")
        with pytest.raises(ValueError, match="needs groups == C"):
            G.conv2d_input(p.input_shape, w, dy, *args, algo="depthwise")
        buf = np.zeros(dx.size + dy.size, np.float32)   # dy and dx: overlapping views of one buffer
        with pytest.raises(ValueError, match="out overlaps grad_output"):
            G.conv2d_input(p.input_shape, w, buf[:dy.size].reshape(dy.shape), *args, out=buf[:dx.size].reshape(dx.shape))
    assert rec.launches == []


def test_can_implement_reasons():
    huge = Conv2dProblem(1 << 16, 4, 256, 256, 8, 3, 3, pad_h=1, pad_w=1)   # shapes only
    gemm = dg.CONFIGS_BY_NAME["conv_dgrad_implicit_gemm_f32_64x64x8_4x4"]
    assert "M = N·ceil" in gemm.can_implement(huge)
    with cuconv.backend("record"):
        assert select(spec_of(huge, DGRAD)).kernels == ["conv_dgrad_direct_f32_256"]     # auto: the GEMM cannot
    assert dg.DIRECT["float32"].can_implement(huge) is None
    assert gemm.can_implement(Conv2dProblem(2, 16, 9, 9, 8, 3, 3)) is None
    # depthwise planning gives up (None) when no tile fits — 16 filters of 41x41 per channel
    # take 105 KiB alone — and auto falls back to the direct kernel.
    no_tile = Conv2dProblem(1, 4, 64, 64, 64, 41, 41, groups=4)
    assert dwg.dgrad_tile(no_tile) is None
    with cuconv.backend("record"):
        assert select(spec_of(no_tile, DGRAD)).kernels == ["conv_dgrad_direct_f32_256"]
    assert dwg.dgrad_tile(Conv2dProblem(1, 4, 64, 64, 4, 3, 3, stride_h=17, stride_w=17, groups=4)) is None


FAST = "conv_dgrad_implicit_gemm_f32_128x128x8_8x8_s4"


def test_multistage_tap_limit():
    """The cp.async configs keep a pixel's valid tap rows (bits 0-15) and columns (16-31) in one
    mask: a 17-row filter would spill its 17th row into the column bits, so they refuse it (and
    name the rule) while the double-buffered configs take it."""
    p = _problem((1, 8, 20, 20, 8, 17, 3, 1, (8, 1), 1, 1), "float32")
    for name in (FAST, "conv_dgrad_implicit_gemm_f64_64x64x8_8x8_s4"):
        cfg = dg.CONFIGS_BY_NAME[name]
        reason = cfg.can_implement(p.with_(dtype=cfg.dtype))
        assert reason is not None and "R and S must be <= 16, got 17x3" in reason
        assert cfg.can_implement(p.with_(dtype=cfg.dtype, S=17, R=3)) is not None
    assert dg.CONFIGS_BY_NAME["conv_dgrad_implicit_gemm_f32_128x64x8_8x4"].can_implement(p) is None
    with cuconv.backend("record"), pytest.raises(ValueError, match="R and S must be <= 16"):
        select(spec_of(p, DGRAD, config=FAST), "implicit_gemm")


def test_multistage_at_the_tap_limit(be, rng):
    """16 tap rows at stride 1 (mask bit 15, the last row bit) and 16 columns at stride 2 with
    dilation 2 (8 columns a phase), padding on both sides: the fast config against the reference."""
    p, w, dy = _draw(rng, (1, 9, 21, 23, 7, 16, 16, (1, 2), ((8, 7), (15, 14)), (1, 2), 1), "float32")
    got, name = _run(be, p, w, dy, FAST)
    assert name == FAST
    assert_close(got, _ref(p, w, dy), "float32", "dgrad", what=FAST)
