"""``cuconv.im2col``: the §8.3 column matrix as an op of its own (kernels/im2col.cu).

``im2col_launch`` builds the launch that ops/im2col_gemm.py puts in its plans per chunk of the batch.
"""
from __future__ import annotations

import math

import numpy as np

from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, tag
from ..plan import Launch, Output, Plan, Ref
from ..problem import Conv2dProblem, pair
from ..registry import KernelEntry, register_kernel
from . import _common
from ._common import OUT, X, i32
from ._frontend import FrontEnd, plan_of

KERNEL_FILE = "im2col.cu"
BLOCK = 128
_GRID_Y_MAX = 65535

# One instantiation per element type (float32, float64): labels im2col_f32_128, im2col_f64_128.
LABELS = {dt: f"im2col_{tag(dt)}_{BLOCK}" for dt in CUDA_CORE_DTYPES}
ENTRIES = {dt: register_kernel(KernelEntry(KERNEL_FILE, f"im2col<{ctype(dt)}, {BLOCK}>", LABELS[dt], BLOCK,
                                           min_blocks_per_sm=8, main=dt == "float32"))
           for dt in CUDA_CORE_DTYPES}
ENTRY, LABEL, EXPRESSION = ENTRIES["float32"], LABELS["float32"], ENTRIES["float32"].expression
# The NHWC lowering (im2col_f32_nhwc_128, im2col_f64_nhwc_128): ops/im2col_gemm.py's NHWC path.
NHWC_ENTRIES = {dt: register_kernel(KernelEntry(KERNEL_FILE, f"im2col_nhwc<{ctype(dt)}, {BLOCK}>",
                                                f"im2col_{tag(dt)}_nhwc_{BLOCK}", BLOCK, min_blocks_per_sm=8))
                for dt in CUDA_CORE_DTYPES}
_NHWC_GRID_MAX = 1 << 20       # blocks of the flat grid (a grid stride covers the rest)


def im2col_launch(x: Ref, cols: Ref, problem: Conv2dProblem, images: int) -> list[Launch]:
    """The launch writing the column matrices of ``images`` images (internal: no checks).

    ``x`` is the first image's first element (NCHW, contiguous: a flat view at an offset
    works); ``cols`` holds ``images`` x (C·R·S) x (P·Q) elements of the problem's dtype.
    """
    p = problem
    PQ = p.P * p.Q
    planes = images * p.C
    if PQ == 0 or planes == 0:
        return []
    grid = (math.ceil(PQ / BLOCK), min(planes, _GRID_Y_MAX), 1)
    args = (x, cols, i32(images), i32(p.C), i32(p.H), i32(p.W), i32(p.R), i32(p.S), i32(p.P), i32(p.Q),
            i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w),
            i32(p.dilation_h), i32(p.dilation_w))
    return [Launch(ENTRIES[p.dtype], grid, (BLOCK, 1, 1), args)]


def im2col_nhwc_launch(x: Ref, cols: Ref, problem: Conv2dProblem, images: int) -> list[Launch]:
    """The launch writing the NHWC column matrix of ``images`` images (internal: no checks): ``x``
    the first image's first element (NHWC), ``cols`` (images·P·Q) x (R·S·C) elements, each row's
    columns per group in (r, s, c) order (kernels/im2col.cu's im2col_nhwc)."""
    p = problem
    total = images * p.P * p.Q * p.C
    if total == 0:
        return []
    grid = (min(math.ceil(total / BLOCK), _NHWC_GRID_MAX), 1, 1)
    args = (x, cols, i32(images), i32(p.C), i32(p.H), i32(p.W), i32(p.R), i32(p.S), i32(p.P), i32(p.Q),
            i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w),
            i32(p.dilation_h), i32(p.dilation_w), i32(p.groups))
    return [Launch(NHWC_ENTRIES[p.dtype], grid, (BLOCK, 1, 1), args)]


def _plan(be, env, args, extra, misaligned) -> Plan:
    kernel_size, stride, padding, dilation = args
    x = _common.as_tensor(env["x"], "input", None, CUDA_CORE_DTYPES, be)
    dt = np.dtype(x.dtype).name
    if x.ndim != 4:
        raise ValueError(f"input must be 3-D (C, H, W, unbatched) or 4-D, got shape {tuple(x.shape)}")
    R, S = pair(kernel_size, "kernel_size")
    if R <= 0 or S <= 0:
        raise ValueError(f"kernel_size must be positive, got {(R, S)} (input {tuple(x.shape)})")
    N, C = int(x.shape[0]), int(x.shape[1])
    try:
        problem = Conv2dProblem.from_shapes(x.shape, (1, C, R, S), stride, padding, dilation, 1, dt)
    except ValueError as exc:
        raise ValueError(f"im2col(input {tuple(x.shape)}, kernel_size {(R, S)}): {exc}") from None
    rows = C * R * S
    if rows > INT32_MAX:
        raise ValueError(f"C·R·S = {rows} rows is larger than 2**31-1 (input {tuple(x.shape)}, kernel {(R, S)})")
    shape = (N, rows, problem.P * problem.Q)
    out = env["out"]
    if out is not None:
        _common.check_out(out, shape, dt, be)
        _common.same_device(be, input=x, out=out)
    return Plan("im2col", LABELS[dt], problem, tuple(im2col_launch(X, OUT, problem, N)), ("x",),
                (Output("out", shape, np.dtype(dt)),), be.device_key(),
                expected=(("x", tuple(x.shape), dt),))


# x is (N, C, H, W), the column matrices (N, C·R·S, P·Q): an unbatched call drops N from both.
_FRONT = FrontEnd("im2col", ("x", "out"), _plan, batched={"x": 4, "out": 3}, names={"x": "input"})


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, *, out=None):
    """The §8.3 column matrix of an NCHW float32 or float64 input: shape (N, C·R·S, P·Q).

    Row ``(c·R + r)·S + s``, column ``p·Q + q`` of image n holds
    ``x[n, c, p·stride - pad + r·dilation, q·stride - pad + s·dilation]`` (0 in the padding).
    ``kernel_size``, ``stride``, ``padding``, ``dilation``: int or pair (``padding`` may be
    "same" or "valid", as in ``cuconv.conv2d``). An unbatched (C, H, W) input gives (C·R·S, P·Q),
    as torch's unfold. Returns ``out`` (allocated when None).
    """
    return _FRONT({"x": x, "out": out}, (kernel_size, stride, padding, dilation))


plan_im2col = plan_of(im2col)
