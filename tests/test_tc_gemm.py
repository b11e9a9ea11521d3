"""Tensor-core GEMM (kernels/tc_gemm.cu, ops/tc_gemm.py; configs in ops/tc_common.py): bit-exact
on small integers and accurate on random inputs (the checks of tests/tc_helpers.py), batched and
with the fused epilogue. Every test body runs on the emulator and, when present, the GPU.
"""
from __future__ import annotations

import ml_dtypes  # noqa: F401  (bfloat16 arrays)
import numpy as np
import pytest
from conftest import put
from tc_helpers import BF16, DT, check_tc, ints, nchw_to_nhwc, nhwc_to_nchw, operand, rand  # noqa: F401

import cuconv
from cuconv.ops import tc_common, tc_conv, tc_gemm  # noqa: F401
from cuconv.reference.conv import apply_epilogue  # noqa: F401
from cuconv.testing import poison


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



# ----------------------------------------------------------------- argument checks (no kernel runs)
def test_float32_needs_allow_tf32(rng):
    with cuconv.backend("emulator"):
        a = rand(rng, (4, 8), "float32")
        with pytest.raises(TypeError, match="allow_tf32"):
            tc_gemm.tc_gemm(a, a.T.copy())


def test_bad_arguments(rng):
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match="K of a @ b"):
            tc_gemm.tc_gemm(rand(rng, (4, 8), "float16"), rand(rng, (4, 8), "float16"))
        with pytest.raises(ValueError, match="multiples of 8"):
            tc_gemm.tc_gemm(rand(rng, (4, 12), "float16"), rand(rng, (12, 8), "float16"),
                            config="tc_gemm_f16_64x64x32_32x32_s3_v8")
