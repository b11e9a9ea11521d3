"""Shared checks of the tensor-core tests (tests/test_tc_conv.py, tests/test_tc_gemm.py).

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
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

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

