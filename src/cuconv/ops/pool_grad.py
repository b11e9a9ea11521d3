"""Pooling backward passes (kernels/pool_grad.cu), PyTorch's semantics, float32 or float64.

Internal entries (the public ``cuconv.grad`` functions build on them):

* ``max_pool2d_backward_launch(be, dy, indices, dx, window=None)`` — with ``window`` (the
  forward's kernel_size, stride, padding, dilation, ceil_mode) the gather kernel
  ``max_pool2d_backward_gather_*`` (PyTorch CUDA's form); without it the indices-only kernel
  ``max_pool2d_backward_scatter_*`` (a warp per plane, conflicts resolved in output order).
  Both are deterministic and sum each input's gradients in output order, so they agree bit
  for bit. The scatter returns a 1-element uint64 array counting indices outside [0, H·W)
  (skipped); the caller decides when to look at it (reading it synchronizes).
* ``avg_pool2d_backward_launch(be, dy, dx, kernel_size, stride, padding, ceil_mode,
  count_include_pad, divisor_override)`` — ``avg_pool2d_backward_*``.
* ``global_avg_pool2d_backward_launch(be, dy, dx)`` — ``global_avg_pool2d_backward_*``.

Per kernel one ``*_launch_spec`` function computes grid, block and arguments; the
``check_*`` functions check the arrays and the window.
"""
from __future__ import annotations

import numpy as np

from ..registry import KernelEntry, register_kernel
from . import _common, _grad
from ._grad import INT_MAX, Launch
from ..problem import PoolProblem, bool_arg

FILE = "pool_grad.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4
MAX_BLOCKS = 1 << 16          # grid-stride loops cover the rest
WARPS_PER_BLOCK = THREADS // 32

KERNELS = ("max_pool2d_backward_gather", "max_pool2d_backward_scatter", "avg_pool2d_backward",
           "global_avg_pool2d_backward")


def name(kernel: str, dtype: str) -> str:
    return f"{kernel}_{_grad.tag(dtype)}"


def expression(kernel: str, dtype: str) -> str:
    return f"{kernel}<{_grad.ctype(dtype)}>"


for _k in KERNELS:
    for _dt in _grad.DTYPES:
        register_kernel(KernelEntry(FILE, expression(_k, _dt), name(_k, _dt), block_threads=THREADS,
                                    min_blocks_per_sm=MIN_BLOCKS_PER_SM))


# --------------------------------------------------------------------------- checks
def _dtype_of(be, a, what):
    a = be.as_array(a, what)
    return _grad.check_dtype(np.dtype(a.dtype).name, f"{what}'s dtype")


def check_window(input_size, kernel_size, stride, padding, dilation, ceil_mode, op):
    """(kh, kw, sh, sw, ph, pw, dh, dw, P, Q) of the forward pooling, with the forward's checks
    (cuconv.problem.PoolProblem: PyTorch's rules)."""
    ceil_mode = bool_arg(ceil_mode, "ceil_mode")
    kind = "max" if op == "max_pool2d" else "avg"
    p = PoolProblem.from_shapes(kind, tuple(input_size), kernel_size, stride, padding, dilation, ceil_mode)
    return (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w,
            p.P, p.Q)


def _check_sizes(dy, dx_shape, what):
    N, C, H, W = dx_shape
    if min(dx_shape) <= 0:
        raise ValueError(f"{what}: input_size must be positive, got {tuple(dx_shape)}")
    if dy.shape[0] != N or dy.shape[1] != C:
        raise ValueError(f"{what}: grad_output {tuple(dy.shape)} and input_size {tuple(dx_shape)} "
                         f"disagree on N and C")
    if H * W > INT_MAX or dy.shape[2] * dy.shape[3] > INT_MAX:
        raise ValueError(f"{what}: planes of more than 2**31-1 elements are not supported "
                         f"(input_size {tuple(dx_shape)}, grad_output {tuple(dy.shape)})")


def check_max_pool_arrays(be, dy, indices, dx, window=None):
    """dy (N, C, P, Q) float32/64, indices int64 of dy's shape, dx (N, C, H, W) of dy's dtype;
    with ``window`` (kernel_size, stride, padding, dilation, ceil_mode) P, Q must be its output
    size. Returns (dy, indices, dx, geometry or None)."""
    dt = _dtype_of(be, dy, "grad_output")
    dy = _common.as_tensor(dy, "grad_output", ndim=4, dtypes=(dt,), be=be)
    indices = _common.as_tensor(indices, "indices", ndim=4, dtypes=("int64",), be=be)
    if tuple(indices.shape) != tuple(dy.shape):
        raise ValueError(f"max_pool2d backward: indices must have grad_output's shape "
                         f"{tuple(dy.shape)}, got {tuple(indices.shape)}")
    dx = _common.as_tensor(dx, "grad_input", ndim=4, dtypes=(dt,), be=be)
    _check_sizes(dy, tuple(dx.shape), "max_pool2d backward")
    geom = None
    if window is not None:
        geom = check_window(dx.shape, *window, op="max_pool2d")
        if tuple(dy.shape[2:]) != geom[8:]:
            raise ValueError(f"max_pool2d backward: grad_output is {tuple(dy.shape)} but the window "
                             f"{window} on input {tuple(dx.shape)} gives output size {geom[8:]}")
    for nm, a in (("grad_output", dy), ("indices", indices)):
        if _common.overlaps(dx, a):
            raise ValueError(f"grad_input overlaps {nm}")
    _common.same_device(be, grad_output=dy, indices=indices, grad_input=dx)
    return dy, indices, dx, geom


# --------------------------------------------------------------------------- launch specs
def max_pool_gather_launch_spec(dy, indices, dx, x_shape, dtype: str, geom) -> Launch:
    """dx (an N, C, H, W = ``x_shape`` slot) from dy and indices, one thread per dx element
    gathering the windows that cover it (``geom``: check_window's)."""
    kh, kw, sh, sw, ph, pw, dh, dw, P, Q = geom
    N, C, H, W = (int(d) for d in x_shape)
    grid = _common.grid_1d(N * C * H * W, THREADS, MAX_BLOCKS)
    return Launch(FILE, expression("max_pool2d_backward_gather", dtype), (grid, 1, 1), (THREADS, 1, 1), (
        dy, indices, dx, np.int64(N * C), *(np.int32(v) for v in (H, W, P, Q, kh, kw, sh, sw, ph, pw, dh, dw))))


def max_pool_scatter_launch_spec(dy, indices, dx, bad, x_shape, y_shape, dtype: str) -> Launch:
    """dx from dy through the indices alone: a warp per plane; ``bad`` (uint64) counts indices
    outside the plane."""
    N, C, H, W = (int(d) for d in x_shape)
    P, Q = int(y_shape[2]), int(y_shape[3])
    grid = -(-(N * C) // WARPS_PER_BLOCK)
    return Launch(FILE, expression("max_pool2d_backward_scatter", dtype), (grid, 1, 1), (THREADS, 1, 1), (
        dy, indices, dx, bad, np.int64(N * C), np.int64(H * W), np.int64(P * Q)))


def avg_pool_launch_spec(dy, dx, x_shape, dtype: str, geom, count_include_pad: bool, divisor_override) -> Launch:
    kh, kw, sh, sw, ph, pw, _, _, P, Q = geom
    N, C, H, W = (int(d) for d in x_shape)
    grid = _common.grid_1d(N * C * H * W, THREADS, MAX_BLOCKS)
    return Launch(FILE, expression("avg_pool2d_backward", dtype), (grid, 1, 1), (THREADS, 1, 1), (
        dy, dx, np.int64(N * C), *(np.int32(v) for v in (H, W, P, Q, kh, kw, sh, sw, ph, pw)),
        np.int32(count_include_pad), np.int32(divisor_override or 0)))


def global_avg_pool_launch_spec(dy, dx, x_shape, dtype: str) -> Launch:
    N, C, H, W = (int(d) for d in x_shape)
    grid = _common.grid_1d(N * C * H * W, THREADS, MAX_BLOCKS)
    return Launch(FILE, expression("global_avg_pool2d_backward", dtype), (grid, 1, 1), (THREADS, 1, 1),
                  (dy, dx, np.int64(N * C), np.int64(H * W)))


# --------------------------------------------------------------------------- entries
def max_pool2d_backward_launch(be, dy, indices, dx, window=None):
    """dx = ∂L/∂x of max_pool2d from dy and the forward's int64 indices (flat ih·W + iw per
    plane). ``window``: None (indices only: the scatter kernel) or the forward's
    (kernel_size, stride, padding, dilation, ceil_mode) (the gather kernel). Returns the
    kernel's name and, for the scatter, the uint64 count of out-of-range indices (else None)."""
    dy, indices, dx, geom = check_max_pool_arrays(be, dy, indices, dx, window)
    dt = np.dtype(dy.dtype).name
    if geom is not None:
        _grad.run(be, [max_pool_gather_launch_spec(dy, indices, dx, dx.shape, dt, geom)])
        return name("max_pool2d_backward_gather", dt), None
    if -(-(dx.shape[0] * dx.shape[1]) // WARPS_PER_BLOCK) > INT_MAX:
        raise ValueError(f"max_pool2d backward: N·C = {dx.shape[0] * dx.shape[1]} planes need more "
                         f"than 2**31-1 blocks")
    bad = be.empty((1,), np.uint64)
    bad[...] = 0
    _grad.run(be, [max_pool_scatter_launch_spec(dy, indices, dx, bad, dx.shape, dy.shape, dt)])
    return name("max_pool2d_backward_scatter", dt), bad


def avg_pool2d_backward_launch(be, dy, dx, kernel_size, stride=None, padding=0, ceil_mode=False,
                               count_include_pad=True, divisor_override=None) -> str:
    """dx = ∂L/∂x of avg_pool2d (PyTorch's divisor rules) from dy. Returns the kernel's name."""
    dt = _dtype_of(be, dy, "grad_output")
    dy = _common.as_tensor(dy, "grad_output", ndim=4, dtypes=(dt,), be=be)
    dx = _common.as_tensor(dx, "grad_input", ndim=4, dtypes=(dt,), be=be)
    count_include_pad = bool_arg(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer)):
            raise TypeError(f"divisor_override must be an int or None, got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError("divisor_override must be nonzero (PyTorch: 'divisor must be not zero')")
        if not -INT_MAX <= divisor_override <= INT_MAX:
            raise ValueError(f"divisor_override={divisor_override} does not fit a 32-bit int")
    _check_sizes(dy, tuple(dx.shape), "avg_pool2d backward")
    geom = check_window(dx.shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    if tuple(dy.shape[2:]) != geom[8:]:
        raise ValueError(f"avg_pool2d backward: grad_output is {tuple(dy.shape)} but the window on "
                         f"input {tuple(dx.shape)} gives output size {geom[8:]}")
    if _common.overlaps(dx, dy):
        raise ValueError("grad_input overlaps grad_output")
    _common.same_device(be, grad_output=dy, grad_input=dx)
    _grad.run(be, [avg_pool_launch_spec(dy, dx, dx.shape, dt, geom, count_include_pad, divisor_override)])
    return name("avg_pool2d_backward", dt)


def global_avg_pool2d_backward_launch(be, dy, dx) -> str:
    """dx[n, c, :, :] = dy[n, c, 0, 0] / (H·W). Returns the kernel's name."""
    dt = _dtype_of(be, dy, "grad_output")
    dy = _common.as_tensor(dy, "grad_output", ndim=4, dtypes=(dt,), be=be)
    dx = _common.as_tensor(dx, "grad_input", ndim=4, dtypes=(dt,), be=be)
    if tuple(dy.shape[2:]) != (1, 1):
        raise ValueError(f"global_avg_pool2d backward: grad_output must be (N, C, 1, 1), got "
                         f"{tuple(dy.shape)}")
    _check_sizes(dy, tuple(dx.shape), "global_avg_pool2d backward")
    if _common.overlaps(dx, dy):
        raise ValueError("grad_input overlaps grad_output")
    _common.same_device(be, grad_output=dy, grad_input=dx)
    _grad.run(be, [global_avg_pool_launch_spec(dy, dx, dx.shape, dt)])
    return name("global_avg_pool2d_backward", dt)
