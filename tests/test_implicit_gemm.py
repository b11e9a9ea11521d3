"""algo="implicit_gemm" (kernels/implicit_gemm.cu): every config against the float64
reference and against each other, on problems no tile divides.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import auto_order, conv_in_layout, draw_conv, nhwc, put

import cuconv
from cuconv.ops import implicit_gemm as ig
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.testing import assert_close, poison, random_array, rel_error, tolerance

CONFIG_NAMES = [c.name for c in ig.configs_for("float32", "NCHW")]
# The float64 configs (NCHW and NHWC) and the float32 NHWC ones.
OTHER_CONFIGS = [c for c in ig.CONFIGS if (c.dtype, c.layout) != ("float32", "NCHW")]
MAIN = "implicit_gemm_f32_128x64x8_8x4"
SIMPLE = ig.SIMPLE.name
MULTISTAGE = "implicit_gemm_f32_128x128x8_8x8_s4"

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
PROBLEMS = [
    # C = 1 and 3: one partly-zero channel chunk per tap; K = 5 fills a fraction of a tile.
    pytest.param((1, 1, 7, 7, 5, 3, 3, 1, 1, 1, 1), id="C1_K5_7x7"),
    pytest.param((3, 3, 9, 9, 70, 3, 3, 2, 1, 1, 1), id="N3_C3_K70_stride2"),
    # C = 13: two chunks of 8 per tap, the second 5/8 full; K = 67 > 64 spills into a 2nd N tile.
    pytest.param((2, 13, 9, 7, 67, 3, 3, 1, 1, 1, 1), id="C13_K67_nonsquare"),
    pytest.param((1, 4, 9, 9, 6, 3, 3, 1, 2, 2, 2), id="dilation2_groups2"),
    pytest.param((2, 9, 9, 9, 12, 5, 5, 1, 3, 1, 3), id="5x5_pad3_groups3"),
    pytest.param((1, 2, 11, 9, 3, 7, 7, 2, 3, 1, 1), id="7x7_stride2"),
    pytest.param((1, 20, 8, 6, 7, 1, 1, 1, 0, 1, 1), id="1x1_C20"),
    pytest.param((2, 6, 7, 7, 6, 3, 3, 1, 1, 1, 6), id="depthwise"),
    pytest.param((1, 3, 7, 9, 4, 2, 4, 1, "same", 1, 1), id="same_even_kernel"),
    pytest.param((1, 3, 9, 7, 5, 3, 3, (2, 1), (0, 2), (1, 2), 1), id="pairs"),
    pytest.param((1, 2, 5, 5, 3, 3, 3, 1, 4, 1, 1), id="padding_larger_than_kernel"),
]


def _run(be, x, w, config, bias=None, residual=None, activation=None, **args):
    p = Conv2dProblem.from_shapes(x.shape, w.shape, args["stride"], args["padding"], args["dilation"],
                                  args["groups"])
    out = be.empty(p.output_shape, np.float32)
    poison(out)
    cuconv.conv2d(put(be, x), put(be, w), put(be, bias), algo="implicit_gemm", config=config,
                  activation=activation, residual=put(be, residual), out=out, **args)
    return be.to_numpy(out)


@pytest.mark.parametrize("case", PROBLEMS)
@pytest.mark.parametrize("config", CONFIG_NAMES)
def test_config_matches_reference(be, rng, config, case):
    x, w, args = draw_conv(rng, case)
    got = _run(be, x, w, config, **args)
    assert_close(got, conv2d_ref(x, w, **args), np.float32, "implicit_gemm", what=config)


def test_configs_agree_with_each_other_and_with_direct(be, rng):
    """The simple and register-blocked variants and direct compute the same sums: their
    results differ only by float32 rounding in the order of accumulation."""
    x, w, args = draw_conv(rng, (2, 11, 9, 9, 40, 3, 3, 1, 1, 1, 1))
    ref = conv2d_ref(x, w, **args)
    results = {c: _run(be, x, w, c, **args) for c in CONFIG_NAMES}
    d = be.empty(ref.shape, np.float32)
    poison(d)
    cuconv.conv2d(put(be, x), put(be, w), algo="direct", out=d, **args)
    results["direct"] = be.to_numpy(d)
    for name, got in results.items():
        assert_close(got, ref, np.float32, "implicit_gemm", what=name)
        assert rel_error(got, results[SIMPLE]) <= 2 * tolerance(np.float32, "implicit_gemm"), name


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "silu"])
@pytest.mark.parametrize("config", [SIMPLE, MAIN])
def test_fused_epilogue(be, rng, config, activation):
    x, w, args = draw_conv(rng, (2, 5, 9, 7, 10, 3, 3, 1, 1, 1, 1))
    bias = random_array(rng, (10,), low=-2, high=2)
    residual = random_array(rng, (2, 10, 9, 7), low=-8, high=8)   # relu6 clips, relu zeroes
    ref = conv2d_ref(x, w, bias, activation=activation, residual=residual, **args)
    got = _run(be, x, w, config, bias=bias, residual=residual, activation=activation, **args)
    assert_close(got, ref, np.float32, "implicit_gemm", what=f"{config} {activation}")


def test_bias_without_residual_and_auto_config(be, rng):
    x, w, args = draw_conv(rng, (1, 6, 9, 9, 40, 3, 3, 1, 1, 1, 1))
    bias = random_array(rng, (40,))
    y = cuconv.conv2d(put(be, x), put(be, w), put(be, bias), algo="implicit_gemm", **args)  # allocating
    assert y.dtype == np.float32 and y.shape == (1, 40, 9, 9)
    assert_close(y, conv2d_ref(x, w, bias, **args), np.float32, "implicit_gemm")


@pytest.mark.parametrize("mode", [
    pytest.param(dict(sanitize="address,undefined"), id="asan_ubsan"),
    pytest.param(dict(order="reverse"), id="reverse"),
    pytest.param(dict(order="random", seed=11), id="random"),
])
@pytest.mark.parametrize("config", [SIMPLE, MAIN, MULTISTAGE])
def test_under_emulator_checks(rng, config, mode):
    """ASan/UBSan catch a tail load past the tensors; reversed/random thread order catches a
    missing __syncthreads between filling a shared buffer and reading it (double buffering)."""
    # 3 taps·2 channel chunks = 6 steps: both buffers are refilled twice; K = 67 > 64.
    x, w, args = draw_conv(rng, (2, 13, 7, 9, 67, 3, 1, 2, (1, 0), 1, 1))
    bias = random_array(rng, (67,))
    residual = random_array(rng, (2, 67, 4, 5))
    ref = conv2d_ref(x, w, bias, activation="relu", residual=residual, **args)
    out = np.empty(ref.shape, np.float32)
    poison(out)
    with cuconv.backend("emulator", **mode):
        cuconv.conv2d(x, w, bias, algo="implicit_gemm", config=config, activation="relu",
                      residual=residual, out=out, **args)
    assert_close(out, ref, np.float32, "implicit_gemm", what=config)


# --------------------------------------------------------------------------- configs and rules
def test_config_names_and_registry():
    from cuconv.compile import registered_kernels
    entries = {e.label: e for e in registered_kernels() if e.file == "implicit_gemm.cu"}
    assert set(entries) == {c.name for c in ig.CONFIGS}
    assert "implicit_gemm_f32_128x64x8_8x4" in entries and entries[MAIN].main
    assert [e.label for e in entries.values() if e.main] == [MAIN]
    assert entries[MAIN].min_blocks_per_sm == 2 and entries[MAIN].block_threads == 256
    assert entries[SIMPLE].expression == "implicit_gemm_simple<float, false, 16, 16, 16>"
    assert entries["implicit_gemm_f32_64x64x8_4x4"].expression == "implicit_gemm<float, false, 64, 64, 8, 4, 4, 2>"
    assert entries["implicit_gemm_f64_nhwc_64x64x8_4x4"].expression == "implicit_gemm<double, true, 64, 64, 8, 4, 4, 2>"
    assert entries["implicit_gemm_f64_64x64x8_4x4"].min_blocks_per_sm == 2
    assert {c.name for c in ig.configs_for("float64", "NCHW")} == {
        "implicit_gemm_simple_f64_16x16x16", "implicit_gemm_f64_64x64x8_4x4", "implicit_gemm_f64_64x64x8_8x8_s4"}
    assert len(ig.configs_for("float32", "NHWC")) == len(CONFIG_NAMES) == 5
    # variant 3: the stage count is the last template argument and the label's suffix
    assert entries[MULTISTAGE].expression == "implicit_gemm<float, false, 128, 128, 8, 8, 8, 1, 4>"
    assert entries["implicit_gemm_f64_nhwc_64x64x8_8x8_s4"].expression == \
        "implicit_gemm<double, true, 64, 64, 8, 8, 8, 2, 4>"
    assert entries[MULTISTAGE].block_threads == 256 and entries["implicit_gemm_f64_64x64x8_8x8_s4"].block_threads == 64


def test_choose_config_rule():
    dense = Conv2dProblem(8, 64, 56, 56, 128, 3, 3, pad_h=1, pad_w=1)
    assert ig.choose_config(dense, 132).name == "implicit_gemm_f32_128x128x8_8x8_s4"
    # variant 3 keeps 16 bits of tap mask per filter dimension: a 17-row filter takes variant 2
    assert ig.choose_config(dense.with_(R=17, pad_h=8), 132).name == "implicit_gemm_f32_128x128x8_8x4"
    assert ig.choose_config(dense.with_(dtype="float64"), 132).name == "implicit_gemm_f64_64x64x8_8x8_s4"
    assert ig.choose_config(dense.with_(dtype="float64", K=32), 132).name == "implicit_gemm_f64_64x64x8_4x4"
    assert ig.choose_config(dense.with_(K=64), 132).name == "implicit_gemm_f32_128x64x8_8x4"
    assert ig.choose_config(dense.with_(K=32), 132).name == "implicit_gemm_f32_64x64x8_4x4"
    # Too few 128-row tiles to fill the SMs: the smaller tile.
    small = Conv2dProblem(1, 64, 14, 14, 256, 3, 3, pad_h=1, pad_w=1)
    assert ig.choose_config(small, 132).name == "implicit_gemm_f32_64x64x8_4x4"


def test_can_implement_reasons():
    # Shapes only: nothing this large is allocated.
    huge_m = Conv2dProblem(1 << 16, 4, 256, 256, 8, 1, 1)
    reason = ig.can_implement(huge_m)
    assert reason is not None and "N·P·Q" in reason
    infos = {i.name: i for i in cuconv.algorithms(huge_m)}
    assert not infos["implicit_gemm"].ok and "N·P·Q" in infos["implicit_gemm"].reason
    assert infos["direct"].ok
    assert ig.can_implement(Conv2dProblem(1, 1, 1 << 16, 1 << 15, 8, 1, 1)) is not None   # H·W >= 2**31
    assert ig.can_implement(Conv2dProblem(2, 3, 9, 9, 5, 3, 3)) is None
    assert ig.can_implement(Conv2dProblem(2, 3, 9, 9, 5, 3, 3, dtype="float16")) is not None


def test_bad_config_is_rejected_before_launch(rng):
    x, w, args = draw_conv(rng, (1, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1))
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match="unknown implicit_gemm config 'nope'"):
            cuconv.conv2d(x, w, algo="implicit_gemm", config="nope", **args)
        with pytest.raises(TypeError, match="config"):
            cuconv.conv2d(x, w, algo="implicit_gemm", config=3, **args)
        with pytest.raises(TypeError, match="takes only config"):
            cuconv.conv2d(x, w, algo="implicit_gemm", tile=3, **args)


def test_auto_priority_rule():
    # dense: implicit GEMM is the default general algorithm, before im2col_gemm and direct
    dense = Conv2dProblem(1, 16, 9, 9, 32, 5, 5, pad_h=1, pad_w=1)
    order = auto_order(dense)
    assert order.index("implicit_gemm") < order.index("im2col_gemm") < order.index("direct")
    # fewer than 8 output channels per group: only after direct, which does less work than a
    # mostly-empty tile
    depthwise = Conv2dProblem(1, 16, 9, 9, 16, 3, 3, pad_h=1, pad_w=1, groups=16)
    order = auto_order(depthwise)
    assert order.index("implicit_gemm") > order.index("direct")


# --------------------------------------------------------------------------- float64 and NHWC
@pytest.mark.parametrize("case", PROBLEMS)
@pytest.mark.parametrize("config", OTHER_CONFIGS, ids=lambda c: c.name)
def test_float64_and_nhwc_configs_match_reference(be, rng, config, case):
    """Every float64 config within double rounding (1e-12), every NHWC config reading NHWC/KRSC
    and writing NHWC natively, on the same awkward problems as the float32 NCHW ones."""
    x, w, args = draw_conv(rng, case, config.dtype)
    got = conv_in_layout(be, x, w, config.layout, algo="implicit_gemm", config=config.name, **args)
    assert got.dtype == np.dtype(config.dtype)
    assert_close(got, conv2d_ref(x, w, **args), config.dtype, "implicit_gemm", what=config.name)


@pytest.mark.parametrize("activation", ["relu", "silu"])
@pytest.mark.parametrize("config", [c for c in OTHER_CONFIGS if c.simple or c.bm == 64 or c.main],
                         ids=lambda c: c.name)
def test_float64_and_nhwc_fused_epilogue(be, rng, config, activation):
    x, w, args = draw_conv(rng, (2, 5, 9, 7, 10, 3, 3, 1, 1, 1, 1), config.dtype)
    bias = random_array(rng, (10,), config.dtype, low=-2, high=2)
    residual = random_array(rng, (2, 10, 9, 7), config.dtype, low=-8, high=8)
    ref = conv2d_ref(x, w, bias, activation=activation, residual=residual, **args)
    got = conv_in_layout(be, x, w, config.layout, bias=bias, residual=residual, algo="implicit_gemm",
                         config=config.name, activation=activation, **args)
    assert_close(got, ref, config.dtype, "implicit_gemm", what=f"{config.name} {activation}")


@pytest.mark.parametrize("dtype,layout", [("float64", "NCHW"), ("float32", "NHWC"), ("float64", "NHWC")])
def test_auto_config_follows_dtype_and_layout(dtype, layout):
    dense = Conv2dProblem(8, 64, 56, 56, 128, 3, 3, pad_h=1, pad_w=1, dtype=dtype)
    cfg = ig.choose_config(dense, 132, layout)
    assert (cfg.dtype, cfg.layout) == (dtype, layout) and not cfg.simple
    assert (cfg.bm, cfg.bn) == ((128, 128) if dtype == "float32" else (64, 64))
    with cuconv.backend("record") as rec:
        x = np.zeros(dense.input_shape, dtype)
        w = np.zeros(dense.weight_shape, dtype)
        if layout == "NHWC":
            # dense NHWC (a strided view would add its copy step to the launches)
            x, w = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(w.transpose(0, 2, 3, 1))
        cuconv.conv2d(x, w, padding=1, algo="implicit_gemm", layout=layout)
    assert rec.kernels() == [cfg.name]


def test_config_of_another_dtype_or_layout_is_rejected(rng):
    x, w, args = draw_conv(rng, (1, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1), "float64")
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match="computes float32 NCHW, the call is float64 NCHW"):
            cuconv.conv2d(x, w, algo="implicit_gemm", config=MAIN, **args)
        with pytest.raises(ValueError, match="computes float64 NCHW, the call is float64 NHWC"):
            cuconv.conv2d(nhwc(x), nhwc(w), algo="implicit_gemm", config="implicit_gemm_f64_64x64x8_4x4",
                          layout="NHWC", **args)


@pytest.mark.parametrize("mode", [
    pytest.param(dict(sanitize="address,undefined"), id="asan_ubsan"),
    pytest.param(dict(order="reverse"), id="reverse"),
    pytest.param(dict(order="random", seed=11), id="random"),
])
@pytest.mark.parametrize("config", [c.name for c in OTHER_CONFIGS])
def test_float64_and_nhwc_under_emulator_checks(rng, config, mode):
    """The double-buffered float64 and NHWC kernels under ASan/UBSan and reversed/random order
    (6 reduction steps: both buffers refilled twice; K = 67 > 64)."""
    cfg = ig.CONFIGS_BY_NAME[config]
    x, w, args = draw_conv(rng, (2, 13, 7, 9, 67, 3, 1, 2, (1, 0), 1, 1), cfg.dtype)
    bias = random_array(rng, (67,), cfg.dtype)
    residual = random_array(rng, (2, 67, 4, 5), cfg.dtype)
    ref = conv2d_ref(x, w, bias, activation="relu", residual=residual, **args)
    with cuconv.backend("emulator", **mode) as be:
        got = conv_in_layout(be, x, w, cfg.layout, bias=bias, residual=residual, algo="implicit_gemm",
                             config=config, activation="relu", **args)
    assert_close(got, ref, cfg.dtype, "implicit_gemm", what=config)


# --------------------------------------------------------------------------- variant 3 (multistage)
# (N, C, H, W, K, R, S, stride, padding, dilation, groups): C not a multiple of BK (partial
# chunks), K past one N tile, stride 2, dilation 2, padding larger than half the filter, groups.
MULTISTAGE_CASES = [
    pytest.param((2, 13, 9, 7, 67, 3, 3, 1, 1, 1, 1), id="C13_K67"),
    pytest.param((3, 5, 11, 9, 20, 3, 3, 2, 2, 2, 1), id="stride2_dilation2_pad2"),
    pytest.param((1, 12, 9, 9, 18, 5, 3, (2, 1), (3, 2), 1, 3), id="5x3_pad3_groups3"),
    pytest.param((1, 3, 5, 5, 4, 3, 3, 1, 4, 1, 1), id="padding_larger_than_kernel"),
]


@pytest.mark.parametrize("case", MULTISTAGE_CASES)
@pytest.mark.parametrize("dtype,layout", [("float32", "NCHW"), ("float32", "NHWC"), ("float64", "NCHW"),
                                          ("float64", "NHWC")])
def test_multistage_adds_what_the_double_buffered_variant_adds(be, rng, case, dtype, layout):
    """Variant 3 (cp.async stages, single-path loader) walks the reduction in variant 2's
    order — taps outer, chunks of BK = 8 channels inner — so every output is the same chain
    of fma: the two agree bit for bit (and both match the float64 reference)."""
    ms = next(c for c in ig.configs_for(dtype, layout) if c.stages)
    ref_cfg = next(c for c in ig.configs_for(dtype, layout) if not c.simple and not c.stages and c.bk == ms.bk)
    x, w, args = draw_conv(rng, case, dtype)
    got = conv_in_layout(be, x, w, layout, algo="implicit_gemm", config=ms.name, **args)
    ref = conv_in_layout(be, x, w, layout, algo="implicit_gemm", config=ref_cfg.name, **args)
    assert_close(got, conv2d_ref(x, w, **args), dtype, "implicit_gemm", what=ms.name)
    np.testing.assert_array_equal(got, ref, err_msg=f"{ms.name} vs {ref_cfg.name}")


def test_multistage_pipeline_with_more_stages_than_steps(rng):
    """One tap and one channel chunk: a single reduction step, fewer than the 3 the prologue
    issues — the copies past the last step must be zero-size and never read (the emulator's
    deferred cp.async poisons a destination until its wait_group)."""
    x, w, args = draw_conv(rng, (2, 5, 6, 7, 9, 1, 1, 1, 0, 1, 1))
    with cuconv.backend("emulator") as be:
        got = conv_in_layout(be, x, w, "NCHW", algo="implicit_gemm", config=MULTISTAGE, **args)
    assert_close(got, conv2d_ref(x, w, **args), np.float32, "implicit_gemm", what=MULTISTAGE)


def test_multistage_tap_limit():
    cfg = ig.CONFIGS_BY_NAME[MULTISTAGE]
    assert cfg.can_implement(Conv2dProblem(1, 4, 40, 40, 8, 16, 3)) is None
    reason = cfg.can_implement(Conv2dProblem(1, 4, 40, 40, 8, 17, 3))
    assert reason is not None and "R and S must be <= 16, got 17x3" in reason
