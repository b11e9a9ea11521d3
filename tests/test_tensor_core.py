"""Tensor-core GEMM and convolution (kernels/tc_gemm.cu, kernels/tc_conv.cu; ops/tc_gemm.py, ops/tc_conv.py, ops/tc_common.py).

Two kinds of checks:
* bit-exact: small-integer inputs make every product and partial sum exact, so the kernels
  (fast and simple) must equal an integer reference exactly — a fragment, ldmatrix or
  swizzle indexing bug is an O(1) error;
* accuracy: random inputs against float64 computed from the *quantized* operands (fp16/bf16
  as stored; tf32 = cvt.rna of the fp32 inputs), element by element
      |out − ref| <= ulp_T(ref) + 2^-20·sqrt(K_red)·(|x| ⊛ |w| + |bias| + |residual|),
  i.e. one unit of the output's rounding plus fp32 accumulation error normalised by Σ|a|·|b|
  (research note §8.9: errors are normalised by Σ|a|·|b|, not |ref|); and the project's
  normwise relative error against the plain float64 reference with cuconv.testing.TOLERANCES.
Shapes are small and awkward (C, K not multiples of 8 or 16, odd H and W, stride 2, dilation
2, groups, batch 1 and 3). Every test body runs on the emulator and, when present, the GPU.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import put

import cuconv
from cuconv.ops import tc_common, tc_conv, tc_gemm
from cuconv.reference import conv2d_ref
from cuconv.reference.conv import apply_epilogue
from cuconv.testing import assert_close, poison

BF16 = ml_dtypes.bfloat16
DT = {"float16": np.float16, "bfloat16": BF16, "float32": np.float32}
MANT = {"float16": (10, -14), "bfloat16": (7, -126), "float32": (23, -126)}


def tf32_rna(a) -> np.ndarray:
    """cvt.rna.tf32.f32 on every element (ties away from zero), as float32."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    special = (u & 0x7F800000) == 0x7F800000
    r = np.where(special, u, ((u + 0x1000) & 0xFFFFE000) & 0xFFFFFFFF).astype(np.uint32)
    return r.view(np.float32)


def operand(a, dtype):
    """The value the tensor cores multiply: the stored value, or its tf32 rounding."""
    a = np.asarray(a)
    return (tf32_rna(a) if dtype == "float32" else a).astype(np.float64)


def ulp(v, dtype):
    mbits, emin = MANT[dtype]
    e = np.floor(np.log2(np.maximum(np.abs(v), 2.0 ** emin)))
    return 2.0 ** (e - mbits)


def check_tc(out, ref, norm, dtype, k_red, what=""):
    """|out − ref| <= ulp_T(ref) + 2^-20·sqrt(k_red)·norm, elementwise; NaN fails."""
    out = np.asarray(out).astype(np.float64)
    assert np.all(np.isfinite(out)), f"{what}: {np.sum(~np.isfinite(out))} non-finite outputs (unwritten?)"
    bound = ulp(np.maximum(np.abs(ref), np.abs(out)), dtype) + 2.0 ** -20 * np.sqrt(k_red) * norm
    excess = np.abs(out - ref) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (f"{what}: error {abs(out[worst] - ref[worst]):.3g} at {worst} exceeds "
                                f"{bound[worst]:.3g} (got {out[worst]}, want {ref[worst]})")


def rand(rng, shape, dtype, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(DT[dtype])


def ints(rng, shape, dtype, lim=3):
    return rng.integers(-lim, lim + 1, shape).astype(DT[dtype])


def nchw_to_nhwc(a):
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


def nhwc_to_nchw(a):
    return np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))


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
    ("bfloat16", 5, 9, "odd C: packed"),
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


# ----------------------------------------------------------------- GEMM
def gemm_check(be, rng, dtype, M, N, K, batch_a=None, batch_b=None, epilogue=False, config=None):
    a = rand(rng, ((batch_a,) if batch_a else ()) + (M, K), dtype)
    b = rand(rng, ((batch_b,) if batch_b else ()) + (K, N), dtype)
    batch = batch_a or batch_b
    shape = ((batch,) if batch else ()) + (M, N)
    bias = rand(rng, (M,), dtype) if epilogue else None
    residual = rand(rng, shape, dtype) if epilogue else None
    act = "silu" if epilogue else None
    qa, qb = operand(a, dtype), operand(b, dtype)
    f = lambda v: None if v is None else np.asarray(v).astype(np.float64)  # noqa: E731
    ref = apply_epilogue(np.matmul(qa, qb), None, f(residual), act)
    norm = np.matmul(np.abs(qa), np.abs(qb))
    if epilogue:
        ref = apply_epilogue(np.matmul(qa, qb) + f(bias)[:, None], None, f(residual), act)
        norm = norm + np.abs(f(bias))[:, None] + np.abs(f(residual))
    out = put(be, np.empty(shape, DT[dtype]))
    poison(out)
    got = tc_gemm.tc_gemm(put(be, a), put(be, b), out, bias=put(be, bias), residual=put(be, residual),
                     activation=act, allow_tf32=dtype == "float32", config=config)
    assert got is out
    check_tc(be.to_numpy(out), ref, norm, dtype, K, f"tc_gemm {dtype} {M}x{N}x{K}")


@pytest.mark.parametrize("dtype,M,N,K", [
    ("float16", 70, 40, 72),        # 16-byte copies, partial tiles in M and N
    ("bfloat16", 33, 24, 40),
    ("float32", 20, 12, 36),        # tf32, 16-byte copies (4 floats)
    ("float16", 17, 18, 50),        # K % 8 = 2: the 4-byte-copy config
    ("float16", 9, 5, 37),          # odd K and N: no cp.async width fits -> the simple kernel
])
def test_tc_gemm(be, rng, dtype, M, N, K):
    gemm_check(be, rng, dtype, M, N, K)


def test_tc_gemm_batched_with_epilogue(be, rng):
    gemm_check(be, rng, "bfloat16", 24, 16, 24, batch_a=3, epilogue=True)
    gemm_check(be, rng, "float32", 16, 20, 12, batch_b=2)


@pytest.mark.parametrize("config", [None, "simple", "tc_gemm_f16_128x128x32_64x32_s4_v8"])
def test_tc_gemm_integers_bit_exact(be, rng, config):
    """Small integers: exact. The fast kernel reads B through ldmatrix.trans (B is K-major)."""
    a = ints(rng, (40, 64), "float16")
    b = ints(rng, (64, 24), "float16")
    out = put(be, np.empty((40, 24), np.float16))
    poison(out)
    tc_gemm.tc_gemm(put(be, a), put(be, b), out, config=config)
    np.testing.assert_array_equal(be.to_numpy(out).astype(np.float64), a.astype(np.float64) @ b.astype(np.float64))


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
        a = rand(rng, (4, 8), "float32")
        with pytest.raises(TypeError, match="allow_tf32"):
            tc_gemm.tc_gemm(a, a.T.copy())
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
        with pytest.raises(ValueError, match="K of a @ b"):
            tc_gemm.tc_gemm(rand(rng, (4, 8), "float16"), rand(rng, (4, 8), "float16"))
        with pytest.raises(ValueError, match="multiples of 8"):
            tc_gemm.tc_gemm(rand(rng, (4, 12), "float16"), rand(rng, (12, 8), "float16"),
                       config="tc_gemm_f16_64x64x32_32x32_s3_v8")


def test_every_config_is_registered_with_its_reasoning():
    from cuconv.compile import registered_kernels  # noqa: PLC0415
    labels = {e.label: e for e in registered_kernels()}
    for cfg in tc_common.CONFIGS:
        e = labels[cfg.name]
        assert e.dynamic_smem == cfg.smem_bytes and e.block_threads == cfg.threads
        assert ("sm_75" in e.archs) == (cfg.dtype == "float16" and cfg.stages == 2)
    for aux in tc_common.AUX.values():
        assert aux.name in labels
