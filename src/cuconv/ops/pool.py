"""Pooling: ``max_pool2d``, ``avg_pool2d``, ``global_avg_pool2d`` (kernels/pool.cu).

torch.nn.functional's signatures and semantics, including its argument checks:

* output size ``floor((H + 2·pad − dilation·(k − 1) − 1) / stride) + 1``; with ``ceil_mode``
  the division rounds up, but the last window must start inside the input or the left
  padding (else that row/column is dropped);
* ``padding <= (dilation·(kernel_size − 1) + 1) // 2`` per dimension (PyTorch's "at most
  half of the effective kernel size"; ``kernel_size // 2`` without dilation);
* padding is −inf for max; for average pooling it counts in the divisor only with
  ``count_include_pad`` (windows clipped to the padded input, so a ``ceil_mode`` window
  hanging past it does not count the overhang);
* ``divisor_override`` (nonzero) replaces the divisor;
* max pooling's tie rule is PyTorch's (CPU and CUDA): a value replaces the running max when it
  is strictly greater or NaN, scanning the window row by row: the first maximum in scan order
  wins, NaN propagates (reported at the last NaN's position). ``return_indices`` gives int64
  flat indices ``ih·W + iw`` within each (n, c) plane, as PyTorch does.
"""
from __future__ import annotations

import numpy as np

from ..compile import KernelEntry, register_kernel
from . import _common
from ._common import i32, i64

FILE = "pool.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4          # 50 % occupancy on sm_90 (checked by the compile matrix)
MAX_BLOCKS = 1 << 16           # grid-stride loops cover the rest
INT_MAX = 2 ** 31 - 1

MAX_POOL = "max_pool2d_f32"
MAX_POOL_INDICES = "max_pool2d_indices_f32"
AVG_POOL = "avg_pool2d_f32"
# Global average pooling: threads per plane -> expression. 32 (a warp per plane, 8 planes per
# block) for small planes such as the 7x7 ones at the end of CNNs; 256 for large planes.
GAP = {32: "global_avg_pool2d_f32<32>", 256: "global_avg_pool2d_f32<256>"}
GAP_LARGE_PLANE = 1024         # H·W from which a whole block reduces one plane

for _expr, _label in ((MAX_POOL, "max_pool2d_f32"), (MAX_POOL_INDICES, "max_pool2d_indices_f32"),
                      (AVG_POOL, "avg_pool2d_f32"), (GAP[32], "global_avg_pool2d_f32_t32"),
                      (GAP[256], "global_avg_pool2d_f32_t256")):
    register_kernel(KernelEntry(FILE, _expr, _label, block_threads=THREADS,
                                min_blocks_per_sm=MIN_BLOCKS_PER_SM))


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int,
                     ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape (may return <= 0; the caller rejects that)."""
    numerator = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1                     # floor division, as div_rtn
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1                                      # the last window must start inside
    return out


def _check_bool(value, what):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a bool, got {value!r}")
    return bool(value)


def _pool_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode, op):
    """Checked (kh, kw, sh, sw, ph, pw, dh, dw, P, Q) for a pooling op on an NCHW input."""
    kh, kw = _common.pair(kernel_size, "kernel_size")
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw                               # PyTorch: stride defaults to kernel_size
    else:
        sh, sw = _common.pair(stride, "stride")
    ph, pw = _common.pair(padding, "padding")
    dh, dw = _common.pair(dilation, "dilation")
    _, _, H, W = x_shape
    where = f"({op}: input {tuple(x_shape)}, kernel_size {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}" + (
        f", dilation {(dh, dw)})" if op == "max_pool2d" else ")")
    if kh <= 0 or kw <= 0:
        raise ValueError(f"kernel_size must be positive, got {(kh, kw)} {where}")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got {(sh, sw)} {where}")
    if dh <= 0 or dw <= 0:
        raise ValueError(f"dilation must be positive, got {(dh, dw)} {where}")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {(ph, pw)} {where}")
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if ph > eff_h // 2 or pw > eff_w // 2:
        raise ValueError(f"padding must be at most half the effective kernel size "
                         f"(pad <= (dilation·(kernel_size − 1) + 1) // 2, as in PyTorch), got padding "
                         f"{(ph, pw)} for effective kernel {(eff_h, eff_w)} {where}")
    if min(x_shape) <= 0:
        raise ValueError(f"input must be non-empty, got shape {tuple(x_shape)} {where}")
    P = pool_output_size(H, kh, sh, ph, dh, ceil_mode)
    Q = pool_output_size(W, kw, sw, pw, dw, ceil_mode)
    if P < 1 or Q < 1:
        raise ValueError(f"output size would be {P}x{Q}: the input {H}x{W} is too small for the "
                         f"window {where}")
    for name, v in (("H", H), ("W", W), ("P", P), ("Q", Q)):
        if v > INT_MAX:
            raise ValueError(f"{name}={v} does not fit a 32-bit int {where}")
    return kh, kw, sh, sw, ph, pw, dh, dw, P, Q


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None, out_indices=None):
    """2-D max pooling of an NCHW float32 tensor (torch.nn.functional.max_pool2d).

    Returns ``y``, or ``(y, indices)`` with ``return_indices`` (int64, flat ``ih·W + iw``
    within each plane). ``out`` / ``out_indices`` receive the results when given.
    """
    be = _common.current_backend()
    x = _common.as_tensor(x, "input", ndim=4, dtypes=("float32",), be=be)
    ceil_mode = _check_bool(ceil_mode, "ceil_mode")
    return_indices = _check_bool(return_indices, "return_indices")
    kh, kw, sh, sw, ph, pw, dh, dw, P, Q = _pool_geometry(
        x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    N, C, H, W = (int(d) for d in x.shape)
    if out_indices is not None and not return_indices:
        raise ValueError("out_indices was given but return_indices is False")
    _common.same_device(be, input=x, out=out, out_indices=out_indices)
    y = _common.prepare_out(out, (N, C, P, Q), np.float32, be, inputs=(("input", x),))
    idx = None
    if return_indices:
        idx = _common.prepare_out(out_indices, (N, C, P, Q), np.int64, be, what="out_indices",
                                  inputs=(("input", x), ("out", y)))
    planes = N * C
    grid = _common.grid_1d(planes * P * Q, THREADS, MAX_BLOCKS)
    geom = (i64(planes), i32(H), i32(W), i32(P), i32(Q), i32(kh), i32(kw), i32(sh), i32(sw),
            i32(ph), i32(pw), i32(dh), i32(dw))
    if return_indices:
        be.launch(FILE, MAX_POOL_INDICES, (grid, 1, 1), (THREADS, 1, 1), (x, y, idx, *geom))
        return y, idx
    be.launch(FILE, MAX_POOL, (grid, 1, 1), (THREADS, 1, 1), (x, y, *geom))
    return y


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """2-D average pooling of an NCHW float32 tensor (torch.nn.functional.avg_pool2d)."""
    be = _common.current_backend()
    x = _common.as_tensor(x, "input", ndim=4, dtypes=("float32",), be=be)
    ceil_mode = _check_bool(ceil_mode, "ceil_mode")
    count_include_pad = _check_bool(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer)):
            raise TypeError(f"divisor_override must be an int or None, got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError("divisor_override must be nonzero (PyTorch: 'divisor must be not zero')")
        if not -INT_MAX <= divisor_override <= INT_MAX:
            raise ValueError(f"divisor_override={divisor_override} does not fit a 32-bit int")
    kh, kw, sh, sw, ph, pw, _, _, P, Q = _pool_geometry(
        x.shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    N, C, H, W = (int(d) for d in x.shape)
    _common.same_device(be, input=x, out=out)
    y = _common.prepare_out(out, (N, C, P, Q), np.float32, be, inputs=(("input", x),))
    planes = N * C
    grid = _common.grid_1d(planes * P * Q, THREADS, MAX_BLOCKS)
    be.launch(FILE, AVG_POOL, (grid, 1, 1), (THREADS, 1, 1), (
        x, y, i64(planes), i32(H), i32(W), i32(P), i32(Q), i32(kh), i32(kw), i32(sh), i32(sw),
        i32(ph), i32(pw), i32(count_include_pad), i32(divisor_override or 0)))
    return y


def global_avg_pool2d(x, *, out=None):
    """Mean over H and W of an NCHW float32 tensor: shape (N, C, 1, 1)
    (torch.nn.functional.adaptive_avg_pool2d(x, 1))."""
    be = _common.current_backend()
    x = _common.as_tensor(x, "input", ndim=4, dtypes=("float32",), be=be)
    N, C, H, W = (int(d) for d in x.shape)
    if min(N, C, H, W) <= 0:
        raise ValueError(f"global_avg_pool2d needs a non-empty input, got shape {tuple(x.shape)}")
    if H * W > INT_MAX:
        raise ValueError(f"H·W={H * W} does not fit a 32-bit int (input {tuple(x.shape)})")
    _common.same_device(be, input=x, out=out)
    y = _common.prepare_out(out, (N, C, 1, 1), np.float32, be, inputs=(("input", x),))
    planes = N * C
    tpp = 256 if H * W >= GAP_LARGE_PLANE else 32
    grid = -(-planes // (THREADS // tpp))
    if grid > INT_MAX:
        raise ValueError(f"N·C={planes} planes need more than 2**31-1 blocks (input {tuple(x.shape)})")
    be.launch(FILE, GAP[tpp], (grid, 1, 1), (THREADS, 1, 1), (x, y, i64(planes), i32(H * W)))
    return y
