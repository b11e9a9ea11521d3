"""Tensor-core implicit-GEMM convolution (kernels/tc_conv.cu, ops/tc_conv.py; configs in ops/tc_common.py):
bit-exact on small integers and accurate on random inputs (the checks of tests/tc_helpers.py).
Shapes are small and awkward (C, K not multiples of 8 or 16, odd H and W, stride 2, dilation
2, groups, batch 1 and 3). Every test body runs on the emulator and, when present, the GPU.
"""
from __future__ import annotations

import ml_dtypes  # noqa: F401  (bfloat16 arrays)
import numpy as np
import pytest
from conftest import put
from tc_helpers import BF16, DT, check_tc, ints, nchw_to_nhwc, nhwc_to_nchw, operand, rand  # noqa: F401

import cuconv
from cuconv.ops import tc_common, tc_conv, tc_gemm  # noqa: F401
from cuconv.reference import conv2d_ref
from cuconv.reference.conv import apply_epilogue  # noqa: F401
from cuconv.testing import assert_close, poison


# ----------------------------------------------------------------- convolution, NCHW through conv2d
# (N, C, H, W, K, R, S, stride, pad, dilation, groups, epilogue)
CONV_CASES = [
    (1, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1, "bias+relu"),          # C = 3: channels padded to 8
    (3, 20, 7, 9, 16, 3, 3, 2, 1, 1, 1, "residual+silu"),    # stride 2, batch 3, C = 20
    (2, 12, 9, 9, 20, 1, 1, 1, 0, 1, 1, "none"),              # 1x1, C = 12, K = 20
    (1, 32, 9, 7, 12, 3, 3, 1, 2, 2, 2, "bias+residual+relu6"),  # dilation 2, groups 2
]


def conv_case(rng, case, dtype, make=rand):
    N, C, H, W, K, R, S, st, pad, dil, groups, epi = case
    x = make(rng, (N, C, H, W), dtype)
    w = make(rng, (K, C // groups, R, S), dtype)
    P = (H + 2 * pad - dil * (R - 1) - 1) // st + 1
    Q = (W + 2 * pad - dil * (S - 1) - 1) // st + 1
    bias = make(rng, (K,), dtype) if "bias" in epi else None
    residual = make(rng, (N, K, P, Q), dtype) if "residual" in epi else None
    act = next((a for a in ("relu6", "relu", "silu") if a in epi), None)
    return x, w, bias, residual, act, dict(stride=st, padding=pad, dilation=dil, groups=groups)


def conv_reference(x, w, bias, residual, act, args, dtype):
    """(reference from the multiplied operand values, normaliser, reference from the inputs)."""
    q = lambda a: None if a is None else operand(a, dtype)  # noqa: E731
    f = lambda a: None if a is None else np.asarray(a).astype(np.float64)  # noqa: E731
    ref = conv2d_ref(q(x), q(w), f(bias), activation=act, residual=f(residual), **args)
    norm = conv2d_ref(np.abs(q(x)), np.abs(q(w)), **args)
    if bias is not None:
        norm = norm + np.abs(f(bias)).reshape(1, -1, 1, 1)
    if residual is not None:
        norm = norm + np.abs(f(residual))
    plain = conv2d_ref(f(x), f(w), f(bias), activation=act, residual=f(residual), **args)
    return ref, norm, plain


def run_conv2d(be, x, w, bias, residual, act, args, algo, dtype, **extra):
    N, K = x.shape[0], w.shape[0]
    ref, norm, plain = conv_reference(x, w, bias, residual, act, args, dtype)
    out = put(be, np.empty(ref.shape, DT[dtype]))
    poison(out)
    got = cuconv.conv2d(put(be, x), put(be, w), put(be, bias), **args, algo=algo, activation=act,
                        residual=put(be, residual), out=out, **extra)
    assert got is out
    k_red = w.shape[1] * w.shape[2] * w.shape[3]
    res = be.to_numpy(out)
    check_tc(res, ref, norm, dtype, k_red, f"{algo} {dtype}")
    assert_close(res, plain, dtype, algo)
    return res


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"_s{c[7]}d{c[9]}g{c[10]}")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_conv2d_tc_nchw(be, rng, case, dtype):
    x, w, bias, residual, act, args = conv_case(rng, case, dtype)
    run_conv2d(be, x, w, bias, residual, act, args, "implicit_gemm_tc", dtype)


@pytest.mark.parametrize("case", CONV_CASES[1:3], ids=["stride2", "1x1"])
def test_conv2d_tf32_nchw(be, rng, case):
    x, w, bias, residual, act, args = conv_case(rng, case, "float32")
    run_conv2d(be, x, w, bias, residual, act, args, "implicit_gemm_tf32", "float32")


@pytest.mark.parametrize("dtype,case", [("float16", CONV_CASES[3]), ("bfloat16", CONV_CASES[0]),
                                        ("float32", CONV_CASES[1])])
def test_conv2d_tc_simple(be, rng, dtype, case):
    """The analytic variant (fragments gathered from NCHW global memory, no workspace)."""
    x, w, bias, residual, act, args = conv_case(rng, case, dtype)
    run_conv2d(be, x, w, bias, residual, act, args, "implicit_gemm_tc_simple", dtype)


def test_conv2d_auto_picks_tensor_cores_for_fp16(be, rng):
    x, w, bias, residual, act, args = conv_case(rng, CONV_CASES[0], "float16")
    problem = cuconv.problem.Conv2dProblem.from_shapes(x.shape, w.shape, dtype="float16", **args)
    from cuconv.ops.conv2d import choose_algorithm  # noqa: PLC0415
    assert choose_algorithm(problem) == "implicit_gemm_tc"
    assert choose_algorithm(problem, max_workspace_bytes=0) == "implicit_gemm_tc_simple"
    # The allocating path, once.
    y = cuconv.conv2d(put(be, x), put(be, w), put(be, bias), **args, activation=act)
    ref, norm, _ = conv_reference(x, w, bias, None, act, args, "float16")
    assert y.dtype == np.float16
    check_tc(be.to_numpy(y), ref, norm, "float16", 27, "auto")


# ----------------------------------------------------------------- NHWC through tc_conv2d
@pytest.mark.parametrize("dtype,C,K,path", [
    ("float16", 8, 12, "16-byte copies"),
    ("float16", 6, 10, "4-byte copies"),
    ("bfloat16", 5, 9, "odd C: one-element copies, in place"),
    ("float16", 3, 16, "odd C: one-element copies, in place"),
    ("float32", 3, 7, "tf32, 4-byte copies"),
])
def test_tc_conv2d_nhwc(be, rng, dtype, C, K, path):
    args = dict(stride=(2, 1), padding=(1, 2), dilation=1, groups=1)
    x = rand(rng, (3, C, 7, 9), dtype)
    w = rand(rng, (K, C, 3, 2), dtype)
    bias = rand(rng, (K,), dtype)
    ref, norm, plain = conv_reference(x, w, bias, None, "relu", args, dtype)
    out = put(be, np.empty(nchw_to_nhwc(ref).shape, DT[dtype]))
    poison(out)
    tc_conv.tc_conv2d(put(be, nchw_to_nhwc(x)), put(be, nchw_to_nhwc(w)), put(be, bias), **args, layout="NHWC",
                 activation="relu", out=out, allow_tf32=dtype == "float32")
    res = nhwc_to_nchw(be.to_numpy(out))
    check_tc(res, ref, norm, dtype, C * 6, path)
    assert_close(res, plain, dtype, "implicit_gemm_tf32" if dtype == "float32" else "implicit_gemm_tc")


def test_tc_conv2d_main_config(be, rng):
    """The 128x128 4-stage main config (256 threads, 2 M tiles, a partial N tile)."""
    args = dict(stride=1, padding=1, dilation=1, groups=1)
    x = rand(rng, (2, 16, 9, 9), "float16")
    w = rand(rng, (24, 16, 3, 3), "float16")
    residual = rand(rng, (2, 9, 9, 24), "float16")
    ref, norm, _ = conv_reference(x, w, None, nhwc_to_nchw(residual), None, args, "float16")
    out = put(be, np.empty((2, 9, 9, 24), np.float16))
    poison(out)
    tc_conv.tc_conv2d(put(be, nchw_to_nhwc(x)), put(be, nchw_to_nhwc(w)), residual=put(be, residual), **args,
                 out=out, config="tc_conv_f16_128x128x32_64x32_s4_v8")
    check_tc(nhwc_to_nchw(be.to_numpy(out)), ref, norm, "float16", 144, "main config")


@pytest.mark.parametrize("config", [None, "simple"])
def test_tc_conv2d_integers_bit_exact(be, rng, config):
    """Small integers: every product and sum exact, so the result equals the integer
    convolution bit for bit (fast kernel: ldmatrix on the swizzled KRSC tile; simple kernel).
    C = 40: two channel chunks per tap, both k-halves of every mma carry data (with C <= 8
    the upper half of each k16 step is zero padding and hides half of the layout)."""
    args = dict(stride=1, padding=1, dilation=1, groups=1)
    x = ints(rng, (2, 40, 7, 9), "float16", lim=2)
    w = ints(rng, (16, 40, 3, 3), "float16", lim=2)
    want = conv2d_ref(x, w, **args)
    assert np.abs(want).max() < 2048              # exactly representable in fp16
    out = put(be, np.empty((2, 7, 9, 16), np.float16))
    poison(out)
    tc_conv.tc_conv2d(put(be, nchw_to_nhwc(x)), put(be, nchw_to_nhwc(w)), **args, out=out, config=config)
    assert np.abs(want).max() > 16            # (not a vacuous all-small result)
    np.testing.assert_array_equal(nhwc_to_nchw(be.to_numpy(out)).astype(np.float64), want)



@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_odd_channels_run_in_place_bit_exact_under_sanitizers_and_orders(rng, dtype):
    """C/groups odd (a 3-channel stem, groups 3 of 3): the one-element-copy config reads NHWC in
    place — the plan has no pack — and on small integers equals the integer convolution bit for
    bit, plainly, under ASan+UBSan and in reverse and random thread order."""
    for C, groups in ((3, 1), (9, 3)):
        args = dict(stride=2, padding=3, dilation=1, groups=groups)
        x = ints(rng, (2, C, 11, 9), dtype, lim=2)
        w = ints(rng, (18, C // groups, 7, 7), dtype, lim=2)
        want = conv2d_ref(x.astype(np.float64), w.astype(np.float64), **args)
        assert 16 < np.abs(want).max() < 256
        xh, wh = nchw_to_nhwc(x), nchw_to_nhwc(w)
        with cuconv.backend("record", cc=80):
            plan = cuconv.plan_conv2d(xh, wh, **args, layout="NHWC", algo="implicit_gemm_tc")
        assert list(plan.kernels) == [f"tc_conv_{'f16' if dtype == 'float16' else 'bf16'}_64x64x32_32x32_s3_v1"]
        assert not plan.conversions and not plan.workspace_bytes
        for settings in (dict(), dict(sanitize="address,undefined"), dict(order="reverse"),
                         dict(order="random", seed=5)):
            with cuconv.backend("emulator", **settings):
                out = np.empty(nchw_to_nhwc(want).shape, DT[dtype])
                poison(out)
                tc_conv.tc_conv2d(xh, wh, **args, out=out)
            np.testing.assert_array_equal(nhwc_to_nchw(out).astype(np.float64), want, err_msg=str(settings))


# ----------------------------------------------------------------- sanitizers and thread order
def test_conv_under_sanitizers_and_random_order(rng):
    """Once with ASan+UBSan (out-of-bounds gathers, misaligned copies) and once each in reverse
    and random thread/block order (the pipeline's barriers must not depend on the order)."""
    args = dict(stride=2, padding=1, dilation=1, groups=1)
    x = rand(rng, (1, 8, 9, 7), "float16")
    w = rand(rng, (12, 8, 3, 3), "float16")
    ref, norm, _ = conv_reference(x, w, None, None, None, args, "float16")
    for settings in (dict(sanitize="address,undefined"), dict(order="reverse"), dict(order="random", seed=3)):
        with cuconv.backend("emulator", **settings) as be:
            out = np.empty((1, ref.shape[2], ref.shape[3], 12), np.float16)
            poison(out)
            tc_conv.tc_conv2d(nchw_to_nhwc(x), nchw_to_nhwc(w), **args, out=out)
            check_tc(nhwc_to_nchw(out), ref, norm, "float16", 72, str(settings))


# ----------------------------------------------------------------- argument checks (no kernel runs)
def test_float32_needs_allow_tf32(rng):
    with cuconv.backend("emulator"):
        with pytest.raises(TypeError, match="allow_tf32"):
            tc_conv.tc_conv2d(rand(rng, (1, 3, 3, 4), "float32"), rand(rng, (2, 1, 1, 4), "float32"))
        x, w = rand(rng, (1, 4, 3, 3), "float32"), rand(rng, (2, 4, 1, 1), "float32")
        with pytest.raises(TypeError, match="float16 or bfloat16"):
            cuconv.conv2d(x, w, algo="implicit_gemm_tc")
        with pytest.raises(ValueError, match="allow_tf32=False"):
            cuconv.conv2d(x, w, algo="implicit_gemm_tf32", allow_tf32=False)
        problem = cuconv.problem.Conv2dProblem.from_shapes(x.shape, w.shape, dtype="float32")
        from cuconv.ops.conv2d import choose_algorithm  # noqa: PLC0415
        assert "tf32" not in choose_algorithm(problem)        # auto never picks tf32 for float32


def test_bad_arguments(rng):
    with cuconv.backend("emulator"):
        x16 = rand(rng, (1, 5, 5, 4), "float16")
        w16 = rand(rng, (2, 3, 3, 4), "float16")
        with pytest.raises(ValueError, match="layout"):
            tc_conv.tc_conv2d(x16, w16, layout="NWHC")
        with pytest.raises(TypeError, match="same dtype"):
            tc_conv.tc_conv2d(x16, w16.astype(BF16))
        with pytest.raises(ValueError, match="channels"):
            tc_conv.tc_conv2d(x16, rand(rng, (2, 3, 3, 5), "float16"))
        with pytest.raises(ValueError, match="unknown tensor-core config"):
            tc_conv.tc_conv2d(x16, w16, config="tc_conv_f16_1x1")
        with pytest.raises(ValueError, match="bfloat16 conv kernel|needs a float16"):
            tc_conv.tc_conv2d(x16, w16, config="tc_conv_bf16_64x64x32_32x32_s3_v8")
        with pytest.raises(ValueError, match="NHWC"):
            cuconv.conv2d(nhwc_to_nchw(x16), rand(rng, (2, 4, 3, 3), "float16"), algo="implicit_gemm_tc",
                          layout="NHWC")


def test_every_config_is_registered_with_its_reasoning():
    from cuconv.compile import registered_kernels  # noqa: PLC0415
    labels = {e.label: e for e in registered_kernels()}
    for cfg in tc_common.CONFIGS:
        e = labels[cfg.name]
        assert e.dynamic_smem == cfg.smem_bytes and e.block_threads == cfg.threads
        assert ("sm_75" in e.archs) == (cfg.dtype == "float16" and cfg.stages == 2)
    for aux in tc_common.AUX.values():
        assert aux.name in labels



# ----------------------------------------------------------------- 64x64 warp tiles
WARP64 = {"float16": "tc_conv_f16_128x128x32_64x64_s4_v8", "bfloat16": "tc_conv_bf16_128x128x32_64x64_s4_v8",
          "float32": "tc_conv_tf32_128x128x16_64x64_s4_v4"}
# (N, C, H, W, K, R, S, stride, pad, dilation, groups): C not a multiple of BK (a partial last
# chunk per tap), K not a multiple of 128 (a partial N tile, warps with no filters), M past one
# tile, stride 2, dilation 2, padding larger than half the filter, groups, a 5x3 filter.
WARP64_CASES = [
    (2, 40, 9, 11, 24, 3, 3, 1, 1, 1, 1),
    (3, 16, 11, 9, 136, 3, 3, 2, 2, 2, 1),
    (1, 48, 7, 9, 40, 5, 3, 1, 3, 1, 2),
]


@pytest.mark.parametrize("case", WARP64_CASES, ids=["C40_K24", "K136_stride2_dil2_pad2", "5x3_pad3_groups2"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_64x64_warp_tiles(be, rng, dtype, case):
    """The 128x128 block as 4 warps of 64x64 (MI = 4, NI = 8 mma tiles per warp): every fragment
    position of the wider warp tile, on shapes that leave partial chunks, tiles and taps."""
    N, C, H, W, K, R, S, st, pad, dil, groups = case
    args = dict(stride=st, padding=pad, dilation=dil, groups=groups)
    x = rand(rng, (N, C, H, W), dtype)
    w = rand(rng, (K, C // groups, R, S), dtype)
    ref, norm, plain = conv_reference(x, w, None, None, None, args, dtype)
    out = put(be, np.empty((N, ref.shape[2], ref.shape[3], K), DT[dtype]))
    poison(out)
    tc_conv.tc_conv2d(put(be, nchw_to_nhwc(x)), put(be, nchw_to_nhwc(w)), **args, layout="NHWC", out=out,
                      config=WARP64[dtype], allow_tf32=dtype == "float32")
    res = nhwc_to_nchw(be.to_numpy(out))
    check_tc(res, ref, norm, dtype, (C // groups) * R * S, WARP64[dtype])
    assert_close(res, plain, dtype, "implicit_gemm_tf32" if dtype == "float32" else "implicit_gemm_tc")


def test_64x64_warp_tiles_integers_bit_exact_under_sanitizers_and_orders(rng):
    """Small integers (exact sums): the layout of all 64x64 fragments and the single-path loader
    (padding, channel tail, filters past K) bit for bit, with ASan+UBSan and in reversed and
    random thread order (the cp.async stages' waits and barriers)."""
    args = dict(stride=2, padding=2, dilation=1, groups=1)
    x = ints(rng, (2, 40, 9, 7), "float16", lim=2)
    w = ints(rng, (20, 40, 3, 3), "float16", lim=2)
    want = conv2d_ref(x, w, **args)
    assert 16 < np.abs(want).max() < 2048
    for settings in (dict(sanitize="address,undefined"), dict(order="reverse"), dict(order="random", seed=4)):
        with cuconv.backend("emulator", **settings):
            out = np.empty((2, want.shape[2], want.shape[3], 20), np.float16)
            poison(out)
            tc_conv.tc_conv2d(nchw_to_nhwc(x), nchw_to_nhwc(w), **args, out=out, config=WARP64["float16"])
            np.testing.assert_array_equal(nhwc_to_nchw(out).astype(np.float64), want, err_msg=str(settings))


def test_tap_limit_of_the_fast_kernel():
    cfg = tc_common.CONFIGS_BY_NAME[WARP64["float16"]]
    p = cuconv.problem.Conv2dProblem(1, 8, 40, 40, 8, 16, 3, dtype="float16")
    assert cfg.can_implement(p) is None
    reason = cfg.can_implement(p.with_(S=17))
    assert reason is not None and "R and S must be <= 16, got 16x17" in reason
