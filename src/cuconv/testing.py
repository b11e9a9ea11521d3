"""Test helpers shared by the test suite and the bench's verification step.

One tolerance table keyed by (dtype, algo), the dtype by its canonical name (cuconv.dtypes).
Errors are relative: ``max|out-ref| / max|ref|`` (the normwise relative error, robust to
outputs near zero). Tensor-core paths normalise
by Σ|a|·|b| instead (see tensor_core tests).
"""
from __future__ import annotations

import numpy as np

from .dtypes import dtype_name

# (dtype, algo) -> max allowed normwise relative error. fp32 kernels sum up to C·R·S
# products in float32: about sqrt(CRS)·2^-24 typical, CRS·2^-24 worst case; the bounds
# below hold for the reduction lengths the tests use (CRS up to a few thousand).
TOLERANCES: dict[tuple[str, str], float] = {
    ("float32", "direct"): 2e-6,
    ("float32", "im2col_gemm"): 2e-6,
    ("float32", "pointwise"): 2e-6,          # the same GEMM as im2col_gemm's 1x1 path
    ("float32", "implicit_gemm"): 2e-6,
    ("float32", "gemm"): 2e-6,
    ("float32", "im2col"): 0.0,              # a pure copy: exact
    # Winograd: about 2.5x the worst error measured at C = 512 (docs/winograd_accuracy.md).
    ("float32", "winograd_f2x2_3x3"): 2e-6,
    ("float32", "winograd_f4x4_3x3"): 5e-5,
    ("float32", "winograd_fused_f2x2_3x3"): 2e-6,
    # FFT (fp32 data, complex64 spectra): the worst error measured over the landmark stride-1
    # large-kernel layers and synthetic 5x5 ... 15x15 at C up to 128 is 4.3e-7 with NumPy's float32
    # pocketfft (docs/fft_accuracy.md); the bound leaves room for cuFFT's, not yet measured.
    ("float32", "fft"): 2e-6,
    ("float32", "fft_tiling"): 2e-6,
    ("float32", "depthwise"): 2e-6,
    ("float32", "separable"): 2e-6,
    ("float32", "pool"): 1e-6,
    ("float32", "conv_transpose"): 2e-6,
    # Backward passes (ops/conv_dgrad.py, conv_wgrad.py, depthwise_grad.py, pool_grad.py):
    # sums of at most a few thousand products in the element type; float64 to the bar.
    ("float32", "dgrad"): 2e-6,
    ("float64", "dgrad"): 1e-12,
    ("float32", "wgrad"): 2e-6,
    ("float64", "wgrad"): 1e-12,
    ("float32", "pool_grad"): 1e-6,
    ("float64", "pool_grad"): 1e-12,
    # Tensor-core gradients (ops/tc_grad.py): fp32 accumulation, one rounding to the output
    # dtype, so the same bounds as the forward tensor-core convolution.
    ("float16", "tc_grad"): 1e-3,
    ("bfloat16", "tc_grad"): 8e-3,
    # float64 kernels accumulate in double: CRS·2^-53 worst case is 1.1e-13 at CRS = 1000, so
    # 1e-12 holds with room for the reduction lengths the tests use, and a kernel that
    # rounded anything to float32 (2^-24 = 6e-8) fails it by four orders of magnitude.
    ("float64", "direct"): 1e-12,
    ("float64", "im2col_gemm"): 1e-12,
    ("float64", "pointwise"): 1e-12,
    ("float64", "implicit_gemm"): 1e-12,
    ("float64", "gemm"): 1e-12,
    ("float64", "im2col"): 0.0,              # a pure copy: exact
    ("float64", "depthwise"): 1e-12,
    ("float64", "pool"): 1e-12,
    ("float64", "conv_transpose"): 1e-12,
    # Tensor cores (ops/tensor_core.py), against the float64 reference of the inputs as given:
    # dominated by the output's rounding (fp16 2^-11, bf16 2^-8 of |out|) and, for tf32, by
    # the cvt.rna rounding of the fp32 operands (2^-11); measured 3.8e-4 / 2.6e-3 / 3.5e-4
    # (tests/test_tensor_core.py). The tests' sharper check is normalised by Σ|a|·|b|.
    ("float16", "implicit_gemm_tc"): 1e-3,
    ("bfloat16", "implicit_gemm_tc"): 8e-3,
    ("float16", "implicit_gemm_tc_simple"): 1e-3,
    ("bfloat16", "implicit_gemm_tc_simple"): 8e-3,
    ("float32", "implicit_gemm_tc_simple"): 2e-3,
    ("float32", "implicit_gemm_tf32"): 2e-3,
    # wgmma (ops/wgmma_conv.py): the same fp32 accumulation and one rounding to the output dtype.
    ("float16", "implicit_gemm_wgmma"): 1e-3,
    ("bfloat16", "implicit_gemm_wgmma"): 8e-3,
}


def tolerance(dtype, algo: str) -> float:
    key = (dtype_name(dtype), algo)
    if key not in TOLERANCES:
        raise KeyError(f"no tolerance for {key}; add it to cuconv.testing.TOLERANCES")
    return TOLERANCES[key]


def to_numpy(a) -> np.ndarray:
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


def rel_error(out, ref) -> float:
    """max|out - ref| / max|ref| in float64; NaN or Inf in ``out`` give inf."""
    out = to_numpy(out).astype(np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        raise AssertionError(f"shape mismatch: got {out.shape}, reference {ref.shape}")
    if not np.all(np.isfinite(out)):
        return float("inf")
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    diff = np.max(np.abs(out - ref)) if ref.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def assert_close(out, ref, dtype, algo: str, what: str = "") -> float:
    err = rel_error(out, ref)
    tol = tolerance(dtype, algo)
    if not err <= tol:
        o = to_numpy(out)
        bad = np.argwhere(~np.isclose(o.astype(np.float64), ref, rtol=0, atol=max(tol, 1e-30) * np.max(np.abs(ref))))
        first = tuple(bad[0]) if len(bad) else None
        raise AssertionError(f"{what or algo}: relative error {err:.3g} > tolerance {tol:.3g} "
                             f"({len(bad)} of {ref.size} elements off; first at {first}: "
                             f"got {o[first] if first else None}, want {ref[first] if first else None})")
    return err


def poison(a) -> None:
    """Fill an output buffer with NaN (or an int sentinel) so an unwritten element fails."""
    if np.dtype(a.dtype).kind == "f" or np.dtype(a.dtype).name == "bfloat16":
        a[...] = np.nan
    else:
        a[...] = -0x5A5A5A5A if np.dtype(a.dtype).kind == "i" else 0xA5


def random_array(rng: np.random.Generator, shape, dtype="float32", low=-1.0, high=1.0):
    """Fresh uniform random values in [low, high), never all zeros."""
    return rng.uniform(low, high, size=shape).astype(dtype)
