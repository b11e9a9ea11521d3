"""cuconv.gemm and gemm_launch (kernels/gemm.cu): every config against the naive variant and a
float64 reference, on sizes no tile divides, on the vector and the scalar load paths, batched,
with the fused epilogue; argument checks; on the GPU against cupy.matmul."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cuconv
from conftest import put, requires_gpu
from tc_helpers import check_tc
from cuconv.ops import gemm as gemm_mod
from cuconv.ops.gemm import CONFIGS, MAIN, MAIN_F64, NAIVE, NAIVE_F64, GemmConfig
from cuconv.plan import Ref, launch_all, pointer
from cuconv.reference.conv import _act
from cuconv.testing import assert_close, poison, random_array, rel_error, tolerance

CONFIG_IDS = [c.label for c in CONFIGS]


def ref_gemm(a, b, bias=None, residual=None, activation=None):
    y = np.matmul(np.asarray(a, np.float64), np.asarray(b, np.float64))
    if bias is not None:
        y = y + np.asarray(bias, np.float64)[:, None]
    if residual is not None:
        y = y + np.asarray(residual, np.float64)
    return _act(y, activation)


def run_gemm(be, a, b, **kw):
    """cuconv.gemm into a poisoned out= on the backend; returns the NumPy result."""
    M, N = a.shape[-2], b.shape[-1]
    batch = a.shape[0] if a.ndim == 3 else (b.shape[0] if b.ndim == 3 else None)
    shape = (M, N) if batch is None else (batch, M, N)
    out = be.empty(shape, a.dtype)
    poison(out)
    for k in ("bias", "residual"):
        if kw.get(k) is not None:
            kw[k] = put(be, kw[k])
    res = cuconv.gemm(put(be, a), put(be, b), out=out, **kw)
    assert res is out
    return be.to_numpy(out)


# (M, N, K): 1s, primes no tile divides, multiples of 4 (the vector path with ragged tiles),
# and K spanning several K steps of every config.
SHAPES = [(1, 1, 1), (37, 45, 29), (68, 132, 20), (5, 131, 33)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_config_matches_reference_and_naive(be, rng, cfg, shape):
    """float32 configs within float32 rounding, float64 ones within double rounding (1e-12)."""
    M, N, K = shape
    a, b = random_array(rng, (M, K), cfg.dtype), random_array(rng, (K, N), cfg.dtype)
    got = run_gemm(be, a, b, config=cfg)
    assert got.dtype == np.dtype(cfg.dtype)
    assert_close(got, ref_gemm(a, b), cfg.dtype, "gemm", cfg.label)
    naive_cfg = NAIVE if cfg.dtype == "float32" else NAIVE_F64
    if cfg != naive_cfg:
        naive = run_gemm(be, a, b, config=naive_cfg)
        assert rel_error(got, naive.astype(np.float64)) <= tolerance(cfg.dtype, "gemm")


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_batched_with_fused_epilogue(be, rng, cfg):
    batch, M, N, K = 3, 19, 23, 13
    dt = cfg.dtype
    a, b = random_array(rng, (batch, M, K), dt), random_array(rng, (batch, K, N), dt)
    bias, residual = random_array(rng, (M,), dt), random_array(rng, (batch, M, N), dt)
    got = run_gemm(be, a, b, bias=bias, residual=residual, activation="silu", config=cfg)
    assert_close(got, ref_gemm(a, b, bias, residual, "silu"), dt, "gemm", cfg.label)


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "silu"])
def test_epilogue_activations(be, rng, activation):
    M, N, K = 33, 40, 24
    # Scaled so that relu6's upper clamp and relu's zero both occur.
    a, b = random_array(rng, (M, K), low=-2, high=2), random_array(rng, (K, N), low=-2, high=2)
    bias = random_array(rng, (M,))
    got = run_gemm(be, a, b, bias=bias, activation=activation)
    ref = ref_gemm(a, b, bias, None, activation)
    if activation == "relu6":
        assert (ref >= 6).any() and (ref <= 0).any()
    assert_close(got, ref, "float32", "gemm", str(activation))


def test_broadcast_2d_operand_over_batch(be, rng):
    a, b = random_array(rng, (21, 17)), random_array(rng, (4, 17, 9))
    assert_close(run_gemm(be, a, b), ref_gemm(a, b), "float32", "gemm")
    a3, b2 = random_array(rng, (2, 6, 17)), random_array(rng, (17, 30))
    assert_close(run_gemm(be, a3, b2, config=MAIN), ref_gemm(a3, b2), "float32", "gemm")


def test_allocating_path(be, rng):
    a, b = random_array(rng, (10, 7)), random_array(rng, (7, 12))
    out = cuconv.gemm(put(be, a), put(be, b), activation="relu")
    assert out.shape == (10, 12) and out.dtype == np.float32
    assert_close(be.to_numpy(out), ref_gemm(a, b, activation="relu"), "float32", "gemm")


def test_k_zero_gives_epilogue_of_zero(be, rng):
    a, b = np.empty((5, 0), np.float32), np.empty((0, 6), np.float32)
    bias = random_array(rng, (5,))
    got = run_gemm(be, a, b, bias=bias, activation="relu", config=MAIN)
    assert_close(got, ref_gemm(a, b, bias, None, "relu"), "float32", "gemm")


@settings(max_examples=25, deadline=None)
@given(M=st.integers(1, 70), N=st.integers(1, 70), K=st.integers(0, 40), batch=st.integers(1, 3),
       cfg=st.sampled_from(CONFIGS), activation=st.sampled_from([None, "relu", "silu"]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_property_any_shape_any_config(M, N, K, batch, cfg, activation, seed):
    rng = np.random.default_rng(seed)
    dt = cfg.dtype
    a, b = random_array(rng, (batch, M, K), dt), random_array(rng, (batch, K, N), dt)
    bias = random_array(rng, (M,), dt)
    with cuconv.backend("emulator") as be:
        got = run_gemm(be, a, b, bias=bias, activation=activation, config=cfg)
    # Any shape includes a 1x1 output whose K products and bias nearly cancel: its error relative
    # to |ref| is unbounded (seed=1, M=N=1, K=32 gives 1.7e-5 with a correct kernel). The bound is
    # the research note's (tensor_cores.md §8.9): one output ulp plus 2^-20·sqrt(K) of Σ|a|·|b|
    # + |bias|, about 16x the expected fp32 accumulation error and above the worst case (K+2)·2^-24
    # for these K; silu and relu do not enlarge it (Lipschitz constants 1.1 and 1).
    norm = np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64))) + np.abs(bias)[:, None]
    ref = ref_gemm(a, b, bias, None, activation)
    if dt == "float32":
        check_tc(got, ref, norm, "float32", max(K, 1), cfg.label)
    else:   # float64: the same form at double's precision (2^-49 = 2^-20 scaled by 2^-29)
        err = np.abs(np.asarray(got, np.float64) - ref)
        bound = 2.0 ** -49 * np.sqrt(max(K, 1)) * norm + 4 * np.spacing(np.abs(ref))
        assert np.all(err <= bound), f"{cfg.label}: error {err.max():.3g} exceeds the float64 bound"


# --------------------------------------------------------------------------- the launcher
def _strided(rng, rows, cols, ld, batch=1, stride=None, offset=0, dtype="float32"):
    """A flat buffer holding `batch` rows x cols matrices with leading dimension ld, starting
    at element `offset`; the padding is NaN so a kernel reading it fails the test."""
    stride = rows * ld if stride is None else stride
    buf = np.full(offset + (batch - 1) * stride + rows * ld, np.nan, dtype)
    mats = random_array(rng, (batch, rows, cols), dtype)
    for i in range(batch):
        start = offset + i * stride
        buf[start:start + rows * ld].reshape(rows, ld)[:, :cols] = mats[i]
    return buf, mats


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c.kind == "regblock"],
                         ids=[c.label for c in CONFIGS if c.kind == "regblock"])
@pytest.mark.parametrize("layout", ["aligned", "odd_ld", "misaligned_base", "ragged_n"])
def test_launcher_leading_dimensions_and_strides(be, rng, cfg, layout):
    """Vector loads where ld, stride and base allow them, the scalar path where they do not."""
    check_launcher_layout(be, rng, cfg, layout)


@pytest.mark.parametrize("layout", ["odd_ld", "misaligned_base"])
def test_misaligned_operands_under_sanitizers(rng, layout):
    """A 16-byte access at a misaligned address is undefined behaviour that UBSan reports, so
    this fails if the kernel ever takes the vector path the flags forbid."""
    with cuconv.backend("emulator", sanitize="address,undefined") as be:
        check_launcher_layout(be, rng, MAIN, layout)


def _aligned(*arrays) -> tuple:
    return tuple(a is None or pointer(a) % 16 == 0 for a in arrays)


def gemm_launch(be, a, b, c, M, N, K, *, bias=None, residual=None, **kw):
    """The internal launches of gemm.cu (``gemm_launches``) run on these arrays as they are."""
    env = {"a": a, "b": b, "c": c, "bias": bias, "residual": residual}
    launches = gemm_mod.gemm_launches(Ref("a"), Ref("b"), Ref("c"), M, N, K,
                                      bias=None if bias is None else Ref("bias"),
                                      residual=None if residual is None else Ref("residual"), **kw)
    launch_all(be, launches, env)


def check_launcher_layout(be, rng, cfg, layout):
    batch, M, N, K = 2, 37, 44, 22
    if layout == "aligned":       # every ld and stride a multiple of 4: 16-byte loads and stores
        lda, ldb, ldc, off = 24, 44, 44, 0
    elif layout == "odd_ld":
        lda, ldb, ldc, off = 23, 45, 47, 0
    elif layout == "misaligned_base":   # ld fine, but every matrix starts 1 element past 16 bytes
        lda, ldb, ldc, off = 24, 44, 44, 1
    else:                          # N % 4 != 0 with vector-friendly ld: the guarded edge accesses
        lda, ldb, ldc, off = 24, 48, 48, 0
        N = 41
    sa, sb, sc = M * lda + 4, K * ldb + 8, M * ldc + 4
    dt = cfg.dtype
    a_buf, a = _strided(rng, M, K, lda, batch, sa, off, dt)
    b_buf, b = _strided(rng, K, N, ldb, batch, sb, off, dt)
    r_buf, res = _strided(rng, M, N, ldc, batch, sc, off, dt)
    bias = np.concatenate([np.full(off, np.nan, dt), random_array(rng, (M,), dt)])
    # The op's flags cover the leading dimensions and strides; the kernel checks the pointers
    # (so misaligned_base has host flags 7 and must still never take a vector path: UBSan).
    flags = gemm_mod.vector_flags(lda, ldb, ldc, sa, sb, sc)
    assert (flags == 7) == (layout in ("aligned", "ragged_n", "misaligned_base")), flags
    if layout == "misaligned_base":
        assert not any(_aligned(a_buf[off:], b_buf[off:], r_buf[off:]))
    c_buf = np.full_like(r_buf, np.nan)
    a_d, b_d, r_d, c_d, bias_d = (put(be, t) for t in (a_buf, b_buf, r_buf, c_buf, bias))
    gemm_launch(be, a_d[off:], b_d[off:], c_d[off:], M, N, K, lda=lda, ldb=ldb, ldc=ldc, batch=batch,
                stride_a=sa, stride_b=sb, stride_c=sc, bias=bias_d[off:], act=2, residual=r_d[off:],
                config=cfg, dtype=dt)
    c_host = be.to_numpy(c_d)
    for i in range(batch):
        start = off + i * sc
        got = c_host[start:start + M * ldc].reshape(M, ldc)
        assert_close(got[:, :N], ref_gemm(a[i], b[i], bias[off:], res[i], "relu6"), dt, "gemm")
        assert np.isnan(got[:, N:]).all(), "the kernel wrote into the padding between rows"
    # Nothing outside the matrices was written.
    written = np.zeros(c_host.shape, bool)
    for i in range(batch):
        start = off + i * sc
        written[start:start + M * ldc].reshape(M, ldc)[:, :N] = True
    assert np.isnan(c_host[~written]).all()


def test_launcher_stride_zero_and_bias_stride(be, rng):
    """One A broadcast over the batch (stride 0) and a per-batch bias (the grouped-conv case)."""
    batch, M, N, K = 3, 9, 14, 11
    a = random_array(rng, (M, K))
    b = random_array(rng, (batch, K, N))
    bias = random_array(rng, (batch * M,))
    c = be.empty((batch, M, N), np.float32)
    poison(c)
    gemm_launch(be, put(be, a), put(be, b), c, M, N, K, batch=batch, stride_a=0, stride_b=K * N,
                stride_c=M * N, bias=put(be, bias), stride_bias=M)
    ref = np.stack([ref_gemm(a, b[i], bias[i * M:(i + 1) * M]) for i in range(batch)])
    assert_close(be.to_numpy(c), ref, "float32", "gemm")


def test_launcher_splits_large_grids(be, rng, monkeypatch, request):
    """Grids past gridDim.y/z's limit are split into several launches (limit shrunk to 2 here)."""
    monkeypatch.setattr(gemm_mod, "_GRID_YZ_MAX", 2)
    cuconv.clear_plan_caches()                      # plans made under the shrunk limit do not outlive it
    request.addfinalizer(cuconv.clear_plan_caches)
    launches = []
    real_launch = be.launch
    monkeypatch.setattr(be, "launch", lambda *a, **k: (launches.append(a[1]), real_launch(*a, **k))[1])
    batch, M, N, K = 5, 70, 20, 6
    a, b = random_array(rng, (batch, M, K)), random_array(rng, (batch, K, N))
    got = run_gemm(be, a, b, config=NAIVE)        # 5 row tiles x 5 batches: 3 x 3 launches
    assert len(launches) == 9 and all(g[1] <= 2 and g[2] <= 2 for g in launches)
    assert_close(got, ref_gemm(a, b), "float32", "gemm")


# --------------------------------------------------------------------------- emulator checking modes
# Thread orders for every config (they cost no extra compile); the sanitizers, which need a
# build of their own per config, for the shared-memory variants with distinct load patterns
# (one float4 of A and B per thread; four of B per thread) and the simple tiled one, and every
# float64 kernel.
_SANITIZED = [c for c in CONFIGS if c.label in ("gemm_f32_tiled_16x16x16", "gemm_f32_128x128x8_8x8",
                                                "gemm_f32_32x128x16_4x8")]
_SANITIZED += [c for c in CONFIGS if c.dtype == "float64"]
_MODES = ([pytest.param(dict(sanitize="address,undefined"), c, id=f"asan_ubsan-{c.label}") for c in _SANITIZED]
          + [pytest.param(dict(order="reverse"), c, id=f"reverse-{c.label}") for c in CONFIGS]
          + [pytest.param(dict(order="random", seed=7), c, id=f"random-{c.label}") for c in CONFIGS])


@pytest.mark.parametrize("mode, cfg", _MODES)
def test_emulator_checking_modes(rng, mode, cfg):
    M, N, K = 35, 38, 19
    dt = cfg.dtype
    a, b = random_array(rng, (2, M, K), dt), random_array(rng, (2, K, N), dt)
    bias, residual = random_array(rng, (M,), dt), random_array(rng, (2, M, N), dt)
    with cuconv.backend("emulator", **mode) as be:
        got = run_gemm(be, a, b, bias=bias, residual=residual, activation="relu", config=cfg)
    assert_close(got, ref_gemm(a, b, bias, residual, "relu"), dt, "gemm", cfg.label)


# --------------------------------------------------------------------------- argument checks
def test_bad_arguments_raise_before_launch(monkeypatch):
    with cuconv.backend("emulator") as be:
        monkeypatch.setattr(be, "launch", lambda *a, **k: pytest.fail("launched despite bad arguments"))
        f = np.ones
        a, b = f((4, 5), np.float32), f((5, 6), np.float32)
        cases = [
            ((f((4,), np.float32), b), {}, ValueError, "2-D"),
            ((f((2, 2, 4, 5), np.float32), b), {}, ValueError, "2-D"),
            ((a, f((4, 6), np.float32)), {}, ValueError, r"\(4, 5\).*\(4, 6\)"),
            ((f((2, 4, 5), np.float32), f((3, 5, 6), np.float32)), {}, ValueError, "batch"),
            ((a.astype(np.float64), b), {}, TypeError, "both have dtype float32 or float64.*float64 and float32"),
            ((a.astype(np.int32), b.astype(np.int32)), {}, TypeError, "float32 or float64"),
            ((a.astype(np.float64), b.astype(np.float64)), dict(config="gemm_f32_naive_16x16"), ValueError,
             "computes float32, the operands are float64"),
            ((a, b.astype(np.float16)), {}, TypeError, "float32"),
            ((a, b), dict(out=np.asfortranarray(f((4, 6), np.float32))), ValueError, "out must be C-contiguous"),
            ((a, b), dict(bias=f((6,), np.float32)), ValueError, r"bias.*\(4,\)"),
            ((a, b), dict(residual=f((6, 4), np.float32)), ValueError, r"residual.*\(4, 6\)"),
            ((a, b), dict(out=f((4, 5), np.float32)), ValueError, r"out.*\(4, 6\)"),
            ((a, b), dict(out=f((4, 6), np.float64)), TypeError, "float32"),
            ((a, b), dict(activation="gelu"), ValueError, "activation"),
            ((a, b), dict(config="gemm_f32_999x1x1_1x1"), ValueError, "unknown GEMM config"),
            ((a, b), dict(config=3), TypeError, "config"),
            (([[1.0]], b), {}, TypeError, "numpy.ndarray"),
        ]
        for args, kw, exc, match in cases:
            with pytest.raises(exc, match=match):
                cuconv.gemm(*args, **kw)
        big = f((6, 6), np.float32)
        with pytest.raises(ValueError, match="overlaps"):
            cuconv.gemm(big[:, :], f((6, 6), np.float32), out=big)


def test_config_validation_and_labels():
    assert MAIN.label == "gemm_f32_128x128x8_8x8"
    assert {c.label for c in CONFIGS} == {e.label for e in cuconv.compile.registered_kernels()
                                         if e.file == "gemm.cu"}
    with pytest.raises(ValueError, match="multiples of 4"):
        GemmConfig("regblock", 64, 64, 8, 3, 4)
    with pytest.raises(ValueError, match="kind"):
        GemmConfig("fast", 64, 64)
    assert MAIN.can_implement(10, 10, 10) is None
    assert "lda" in MAIN.can_implement(10, 10, 10, lda=5)
    assert "2**31" in MAIN.can_implement(2 ** 31 - 255, 1, 1)


# --------------------------------------------------------------------------- GPU
@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_against_cupy_matmul_on_gpu(rng, cfg):
    import cupy
    with cuconv.backend("cupy"):
        for M, N, K in [(1, 1, 1), (257, 129, 67), (1000, 515, 300), (4, 2000, 1003)]:
            a = cupy.asarray(random_array(rng, (M, K)))
            b = cupy.asarray(random_array(rng, (K, N)))
            out = cupy.full((M, N), cupy.nan, cupy.float32)
            cuconv.gemm(a, b, out=out, config=cfg)
            want = cupy.matmul(a.astype(cupy.float64), b.astype(cupy.float64))
            assert_close(out, cupy.asnumpy(want), "float32", "gemm", cfg.label)
            ours_vs_cublas = rel_error(out, cupy.asnumpy(cupy.matmul(a, b)))
            assert ours_vs_cublas <= 2 * 2e-6, ours_vs_cublas



# --------------------------------------------------------------------------- float64
def test_float64_default_config_and_epilogue(be, rng):
    """float64 operands pick the double register-blocked config and accumulate in double; the
    fused epilogue (bias, residual, SiLU with exp) stays within 1e-12."""
    a, b = random_array(rng, (2, 37, 29), "float64"), random_array(rng, (29, 45), "float64")
    bias, residual = random_array(rng, (37,), "float64"), random_array(rng, (2, 37, 45), "float64", -4, 4)
    assert cuconv.plan_gemm(put(be, a), put(be, b)).kernels == [MAIN_F64.label]
    got = run_gemm(be, a, b, bias=bias, residual=residual, activation="silu")
    assert_close(got, ref_gemm(a, b, bias, residual, "silu"), "float64", "gemm")
    y = cuconv.gemm(put(be, a), put(be, b), allow_tf32=True)     # tf32 does not apply to float64
    assert y.dtype == np.float64
    assert_close(be.to_numpy(y), ref_gemm(a, b), "float64", "gemm")
