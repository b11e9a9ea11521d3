"""Test helpers shared by the test suite and the bench's verification step — and the one written
semantics every algorithm is held to (docs/semantics.md is the same text for users).

Semantics. cuconv computes what ``torch.nn.functional`` computes in exact arithmetic, with IEEE
rules, and every algorithm differs from another only by rounding:

* Convolution (every algorithm, depthwise, separable, the fused epilogue): a padded input
  position is a zero that is multiplied — it contributes ``0·w``, so a NaN or ±Inf weight tap
  over the padding makes that output NaN (torch pads the input, then multiplies).
* The epilogue ``act(conv + bias + residual)`` in that order, IEEE sums (Inf + −Inf = NaN);
  ``relu(NaN) = relu6(NaN) = silu(NaN) = NaN``, ``relu(±Inf) = Inf / 0``, ``relu6(±Inf) = 6 / 0``,
  ``silu(+Inf) = Inf``, ``silu(−Inf) = NaN`` — torch's values.
* Transposed convolution and the data gradient (dgrad): only the products that exist are
  summed (torch's col2im): a weight tap that reaches no element of the input leaves the outputs
  it does not reach alone, so a non-finite weight does not spread into them.
* The weight gradient (wgrad, and the transposed convolution's): the padded positions of the
  operand that is padded are zeros that are multiplied (``dy·0``; NaN for dy = ±Inf).
* Pooling: max pooling returns NaN when its window holds one (the index of the last NaN in scan
  order), ties keep the first position, and a window with no input element gives −Inf with the
  index of torch's CPU kernel (its first position after stepping out of the padding); average
  pooling sums as torch; the gradients of both scatter to exactly the elements torch's do.

``assert_close`` checks exactly this against a reference: NaN exactly where the reference has NaN,
±Inf exactly where it has ±Inf (same sign), every finite element within the (dtype, algo)
tolerance of the normwise relative error ``max|out − ref| / max|ref|`` over the finite
elements. Tensor-core paths normalise by Σ|a|·|b| instead (see tensor_core tests). The table is
keyed by (dtype, algo), the dtype by its canonical name (cuconv.dtypes).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .dtypes import dtype_name

class Tolerance(NamedTuple):
    """One entry of the table: the largest normwise relative error allowed, and why."""
    bound: float
    reason: str
    grows: bool = False      # a sum's rounding error: beyond REDUCTION products the bound grows as sqrt


# The bounds hold for reductions of up to REDUCTION products — 512·3·3, the longest C/g·R·S of the
# landmark models (cuconv.models) — and, normwise (``max|out − ref| / max|ref|``), for data that
# does not cancel across the whole output (the suite's and the bench's: uniform in [−1, 1) or
# [0, 1)). A sum's rounding error grows as sqrt(K) (a random walk of K roundings), so a ``grows``
# bound is scaled by sqrt(K / REDUCTION) for a longer reduction K (``tolerance(..., reduction=K)``).
# Under cancellation the normwise error of any finite precision is unbounded (issue 22's
# differential run: 2.7e-6 for float32 sums, 1.1e-2 for tf32, torch's own float32 alike); there
# ``assert_close(..., scale=)`` normalises by max Σ|a|·|b| instead, against which every bound
# here holds a fortiori. The figures below are the worst of 30 seeded draws of the problems of
# tests/test_tolerances.py (``PYTHONPATH=src python tests/test_tolerances.py 30``, emulator),
# which also checks that torch's float32, exact tf32 arithmetic and every algorithm stay within
# the bounds; each bound leaves about 2.5x over the worst figure.
REDUCTION = 4608
_F32_SUM = ("float32 sums of up to 4608 products, one rounding per fma: the random-walk model gives "
            "≈ sqrt(K)·2^-24 = 4.0e-6 of Σ|a|·|b| (= max|ref| when nothing cancels); measured 3.8e-6 "
            "(implicit_gemm, 512×3×3, x, w ≥ 0), 3.7e-6 (direct, signed), 2.5e-6 at 64×7×7; torch float32 ≤ "
            "9.4e-7 on the same problems (oneDNN sums in blocks; a sequential sum cannot match that); "
            "bound 1e-5")
_F32_SHORT = ("float32 sums of at most R·S ≤ 49 products (+ the epilogue): sqrt(49)·2^-24 = 4.2e-7; bound 2e-6 "
              "leaves the room of the longer sums")
_F64_SUM = ("float64 sums: sqrt(4608)·2^-53 = 7.5e-15 typical, 4608·2^-53 = 5.1e-13 worst; 1e-12 holds, and a "
            "kernel that rounded anything to float32 (2^-24 = 6e-8) fails it by four orders of magnitude")
_EXACT = "a pure copy (im2col moves values, computes nothing): exact"
_TC16 = ("fp16 operands multiply exactly in fp32 and sum in fp32 (≤ 4.0e-6 of Σ|a|·|b|), then one rounding "
         "to fp16: 2^-11 = 4.9e-4 of |out|; measured 3.8e-4 (emulator: 3×3 layers with C = 3, 64, 256, "
         "x signed or ≥ 0; tc, tc_simple and wgmma alike); bound 1e-3")
_TCBF16 = ("bf16 operands multiply exactly in fp32 and sum in fp32, then one rounding to bf16: 2^-8 = 3.9e-3 of "
           "|out|; measured 2.8e-3 (the same problems as float16); bound 8e-3")
_TF32 = ("tf32 arithmetic: cvt.rna rounds each fp32 operand to 2^-11, so a product is off by ≤ 2^-10 of |a|·|b| "
         "and an output by ≤ 2^-10·Σ|a|·|b| (+ the fp32 sum's 4.0e-6; tests/test_conv2d.py checks that "
         "sharper form, TF32_BOUND); normwise, exact tf32 arithmetic measures up to 4.4e-4 (64×7×7) and "
         "cuconv's tf32 paths the same; bound 2e-3")
_POOL16 = ("a window's (or plane's) float32 sum, divided, rounded once to fp16: 2^-11 = 4.9e-4 of |out|; "
           "measured 4.9e-4 forward, 4.8e-4 backward (worst of 30 draws: PYTHONPATH=src python "
           "tests/test_pool_grad.py 30, emulator); bound 1e-3")
_POOLBF16 = ("as float16 with bf16's rounding, 2^-8 = 3.9e-3 of |out|; measured 3.9e-3 forward and backward (the "
             "same draws); bound 8e-3")
_SCATTER16 = ("the max gradient's scatter in 16 bits (torch's CPU kernel's sum): each of up to k² = 9 additions "
              "(overlapping 3x3 windows) rounded to the storage type, relative to partial sums up to Σ|dy|, which "
              "cancellation can leave larger than the result; measured 1.2e-3 (fp16), 1.2e-2 (bf16) (the same "
              "draws); bounds 2.5x that")
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float32", "direct"): Tolerance(1e-5, _F32_SUM, True),
    ("float32", "im2col_gemm"): Tolerance(1e-5, _F32_SUM, True),
    ("float32", "pointwise"): Tolerance(1e-5, _F32_SUM, True),     # the same GEMM as im2col_gemm's 1x1 path
    ("float32", "implicit_gemm"): Tolerance(1e-5, _F32_SUM, True),
    ("float32", "gemm"): Tolerance(1e-5, _F32_SUM, True),
    ("float32", "im2col"): Tolerance(0.0, _EXACT),
    ("float32", "winograd_f2x2_3x3"): Tolerance(3e-6, (
        "the transforms' rounding on top of the channel sums (C·16 products per tile): measured 1.3e-6 at "
        "512×3×3 (x, w ≥ 0); bound 3e-6"), True),
    ("float32", "winograd_f4x4_3x3"): Tolerance(5e-5, (
        "F(4x4,3x3)'s transforms amplify rounding (entries up to 8 in Aᵀ, 5 in Bᵀ): measured 2.1e-5 at "
        "512×3×3 (signed; 8.6e-6 in docs/winograd_accuracy.md); bound 5e-5"), True),
    ("float32", "winograd_fused_f2x2_3x3"): Tolerance(3e-6, "as winograd_f2x2_3x3 (the same arithmetic, fused)",
                                                      True),
    # FFT (fp32 data, complex64 spectra; NumPy's float32 pocketfft on the emulator, cuFFT not measured).
    ("float32", "fft"): Tolerance(4e-6, (
        "complex64 spectra, the channel sum per frequency: measured 1.7e-6 at 1024×1×1 (x, w ≥ 0: the "
        "C = 1024 sum), 4.3e-7 worst over the layers of docs/fft_accuracy.md; bound 4e-6"), True),
    ("float32", "fft_tiling"): Tolerance(4e-6, "as fft (the same transforms per tile)", True),
    ("float32", "depthwise"): Tolerance(2e-6, _F32_SHORT),
    ("float32", "separable"): Tolerance(1e-5, "a depthwise sum, then the pointwise GEMM's: " + _F32_SUM, True),
    ("float32", "pool"): Tolerance(1e-6, "a max is exact; an average sums at most a window (≤ 49 values) and "
                                         "divides once: ≤ 50·2^-24 = 3.0e-6 worst, ~4e-7 typical"),
    ("float32", "conv_transpose"): Tolerance(1e-5, _F32_SUM, True),
    # Backward passes (ops/conv_dgrad.py, conv_wgrad.py, depthwise_grad.py, pool_grad.py): dgrad sums
    # K/g·R·S products, wgrad N·P·Q (longer at large batches: pass reduction=).
    ("float32", "dgrad"): Tolerance(1e-5, _F32_SUM, True),
    ("float64", "dgrad"): Tolerance(1e-12, _F64_SUM, True),
    ("float32", "wgrad"): Tolerance(1e-5, _F32_SUM, True),
    ("float64", "wgrad"): Tolerance(1e-12, _F64_SUM, True),
    ("float32", "pool_grad"): Tolerance(1e-6, "dx sums the dy of the windows holding an element (≤ 49) once "
                                              "each, an average's divided once: as pool"),
    ("float64", "pool_grad"): Tolerance(1e-12, _F64_SUM),
    # Pooling in 16 bits (ops/pool.py, pool_grad.py): a max is exact; sums in float32, one rounding
    # to the storage type (the max gradient's scatter rounds each addition, as torch's CPU kernel).
    ("float16", "pool"): Tolerance(1e-3, _POOL16),
    ("bfloat16", "pool"): Tolerance(8e-3, _POOLBF16),
    ("float16", "pool_grad"): Tolerance(1e-3, _POOL16),
    ("bfloat16", "pool_grad"): Tolerance(8e-3, _POOLBF16),
    ("float16", "pool_grad_scatter"): Tolerance(3e-3, _SCATTER16),
    ("bfloat16", "pool_grad_scatter"): Tolerance(3e-2, _SCATTER16),
    # Tensor-core gradients (ops/tc_grad.py): fp32 accumulation, one rounding to the output dtype.
    ("float16", "tc_grad"): Tolerance(1e-3, _TC16),
    ("bfloat16", "tc_grad"): Tolerance(8e-3, _TCBF16),
    ("float64", "direct"): Tolerance(1e-12, _F64_SUM, True),
    ("float64", "im2col_gemm"): Tolerance(1e-12, _F64_SUM, True),
    ("float64", "pointwise"): Tolerance(1e-12, _F64_SUM, True),
    ("float64", "implicit_gemm"): Tolerance(1e-12, _F64_SUM, True),
    ("float64", "gemm"): Tolerance(1e-12, _F64_SUM, True),
    ("float64", "im2col"): Tolerance(0.0, _EXACT),
    ("float64", "depthwise"): Tolerance(1e-12, _F64_SUM),
    ("float64", "pool"): Tolerance(1e-12, _F64_SUM),
    ("float64", "conv_transpose"): Tolerance(1e-12, _F64_SUM, True),
    # Tensor cores (ops/tc_conv.py), against the float64 reference of the inputs as given.
    ("float16", "implicit_gemm_tc"): Tolerance(1e-3, _TC16),
    ("bfloat16", "implicit_gemm_tc"): Tolerance(8e-3, _TCBF16),
    ("float16", "implicit_gemm_tc_simple"): Tolerance(1e-3, _TC16),
    ("bfloat16", "implicit_gemm_tc_simple"): Tolerance(8e-3, _TCBF16),
    ("float32", "implicit_gemm_tc_simple"): Tolerance(2e-3, _TF32),
    ("float32", "implicit_gemm_tf32"): Tolerance(2e-3, _TF32),
    # 16-bit depthwise (ops/depthwise.py, depthwise_grad.py): fp32 sums (forward and dx: <= R·S·M
    # products; dW: N·P·Q, whose fp32 error stays far below the rounding at these sizes), one rounding.
    ("float16", "depthwise"): Tolerance(1e-3, (
        "fp32 sums of <= R·S products + the epilogue, one rounding to fp16: 2^-11 = 4.9e-4 of |out|; measured "
        "3.9e-4 (emulator: 3x3/5x5/7x7, C = 3..24, every kernel and layout); bound 1e-3")),
    ("bfloat16", "depthwise"): Tolerance(8e-3, (
        "as float16 with bf16's rounding, 2^-8 = 3.9e-3 of |out|; measured 3.4e-3 (the same problems); bound 8e-3")),
    ("float16", "depthwise_grad"): Tolerance(1e-3, (
        "dx: fp32 sums of the taps that reach dy (<= R·S·M), dW/db: fp32 sums over N·P·Q (<= 3200 here, "
        "sqrt(3200)·2^-24 = 3.4e-6), each rounded once to fp16 (4.9e-4); measured 3.8e-4; bound 1e-3")),
    ("bfloat16", "depthwise_grad"): Tolerance(8e-3, (
        "as float16 with bf16's rounding (3.9e-3); measured 2.7e-3; bound 8e-3")),
    # wgmma (ops/wgmma_conv.py): the same fp32 accumulation and one rounding to the output dtype.
    ("float16", "implicit_gemm_wgmma"): Tolerance(1e-3, _TC16),
    ("bfloat16", "implicit_gemm_wgmma"): Tolerance(8e-3, _TCBF16),
}


def tolerance(dtype, algo: str, reduction: int | None = None) -> float:
    """The bound for (dtype, algo); for a reduction of more than REDUCTION products, a growing
    bound scaled by sqrt(reduction / REDUCTION)."""
    key = (dtype_name(dtype), algo)
    if key not in TOLERANCES:
        raise KeyError(f"no tolerance for {key}; add it to cuconv.testing.TOLERANCES")
    entry = TOLERANCES[key]
    return grown(entry.bound, reduction) if entry.grows and reduction is not None else entry.bound


def grown(bound: float, reduction: int) -> float:
    """A table bound for a reduction of ``reduction`` products: scaled by sqrt(reduction /
    REDUCTION) beyond REDUCTION (the random walk of a sum's roundings; measured slower still:
    direct's float32 error 2.9e-6, 4.3e-6, 4.9e-6 at 4608, 18432, 36864 products of x, w ≥ 0)."""
    return bound * math.sqrt(reduction / REDUCTION) if reduction > REDUCTION else bound


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


def nonfinite_mismatch(out, ref) -> str | None:
    """Where ``out`` breaks the rule for non-finite values against ``ref`` (NaN exactly where ref
    is NaN, ±Inf with ref's sign exactly where ref is ±Inf), as a sentence; None when it does not."""
    o = to_numpy(out).astype(np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if o.shape != r.shape:
        raise AssertionError(f"shape mismatch: got {o.shape}, reference {r.shape}")
    for what, bad in (("NaN", np.isnan(o) != np.isnan(r)),
                      ("±Inf", (np.isinf(o) | np.isinf(r)) & ~((o == r) & np.isinf(r)) & ~np.isnan(r))):
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            return (f"{what} pattern differs at {int(bad.sum())} of {r.size} elements; first at {first}: "
                    f"got {o[first]}, want {r[first]}")
    return None


def assert_close(out, ref, dtype, algo: str, what: str = "", scale=None) -> float:
    """The semantics check (module docstring): the non-finite pattern and values exactly, the
    finite elements within ``tolerance(dtype, algo)`` normwise. Returns the finite error.

    ``scale`` (optional, the reference's shape): normalise by its largest element over the finite
    outputs instead of ``max|ref|`` — the same computation on |inputs| (Σ|a|·|b| per output), for
    inputs whose NaN/Inf leave only a few, possibly cancelled, finite outputs."""
    mismatch = nonfinite_mismatch(out, ref)
    if mismatch:
        raise AssertionError(f"{what or algo}: {mismatch}")
    ref = np.asarray(ref, dtype=np.float64)
    finite = np.isfinite(ref)
    if not finite.all():
        out = np.where(finite, to_numpy(out).astype(np.float64), 0.0)
        ref = np.where(finite, ref, 0.0)
    norm = float(np.max(np.abs(ref))) if ref.size else 0.0
    if scale is not None and ref.size:
        norm = max(norm, float(np.max(np.where(finite, np.abs(np.asarray(scale, dtype=np.float64)), 0.0))))
    diff = float(np.max(np.abs(to_numpy(out).astype(np.float64) - ref))) if ref.size else 0.0
    err = diff / norm if norm > 0 else diff
    tol = tolerance(dtype, algo)
    if not err <= tol:
        o = to_numpy(out)
        bad = np.argwhere(~np.isclose(o.astype(np.float64), ref, rtol=0, atol=max(tol, 1e-30) * norm))
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
