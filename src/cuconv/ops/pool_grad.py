"""The pooling gradients as ops (``cuconv.grad.max_pool2d``, ``avg_pool2d``,
``global_avg_pool2d``; kernels/pool_grad.cu), PyTorch's semantics, float32 or float64.

* ``max_pool2d(grad_output, indices, input_size, kernel_size=None, ...)`` — through the
  forward's int64 ``indices``. With the forward's window (``kernel_size`` ...) each input gathers
  from the windows that cover it (``pool_grad_max_gather_*``, PyTorch CUDA's form); without
  it a warp per plane scatters through the indices (``pool_grad_max_scatter_*``, conflicts
  resolved in output order). Both sum each input's gradients in output order, so they agree bit
  for bit. The scatter counts indices outside [0, H·W) (skipped) in a workspace word it never
  reads back (reading it would synchronize).
* ``avg_pool2d(grad_output, input_size, kernel_size, ...)`` — ``pool_grad_avg_*``,
  PyTorch's divisor rules.
* ``global_avg_pool2d(grad_output, input_size)`` — ``pool_grad_global_avg_*``.

Each is validate → plan → run (ops/_frontend.py); per kernel one ``*_launch`` function computes
grid, block and arguments.
"""
from __future__ import annotations

import numpy as np

from ..backend import planning_target
from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, name_of, tag
from ..plan import Launch, Output, Plan, Ref, layout_buffers
from ..problem import PoolProblem, bool_arg, shape_arg
from ..registry import KernelEntry, register_kernel
from . import _common
from ._common import i32, i64
from ._frontend import FrontEnd, plan_of

FILE = "pool_grad.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4
MAX_BLOCKS = 1 << 16          # grid-stride loops cover the rest
WARPS_PER_BLOCK = THREADS // 32

# CUDA function -> its label's middle part: pool_grad_<part>_<dtype>.
KERNELS = {"max_pool2d_backward_gather": "max_gather", "max_pool2d_backward_scatter": "max_scatter",
           "avg_pool2d_backward": "avg", "global_avg_pool2d_backward": "global_avg"}


def name(kernel: str, dtype: str) -> str:
    return f"pool_grad_{KERNELS[kernel]}_{tag(dtype)}"


def expression(kernel: str, dtype: str) -> str:
    return f"{kernel}<{ctype(dtype)}>"


ENTRIES = {(k, dt): register_kernel(KernelEntry(FILE, expression(k, dt), name(k, dt), block_threads=THREADS,
                                                min_blocks_per_sm=MIN_BLOCKS_PER_SM))
           for k in KERNELS for dt in CUDA_CORE_DTYPES}
DY, DX, INDICES = Ref("dy"), Ref("dx"), Ref("indices")


# --------------------------------------------------------------------------- launches
def max_gather_launch(x_shape, dtype: str, geom) -> Launch:
    """dx (an N, C, H, W = ``x_shape`` slot) from dy and indices, one thread per dx element
    gathering the windows that cover it (``geom``: kh, kw, sh, sw, ph, pw, dh, dw, P, Q)."""
    kh, kw, sh, sw, ph, pw, dh, dw, P, Q = geom
    N, C, H, W = (int(d) for d in x_shape)
    grid = _common.grid_1d(N * C * H * W, THREADS, MAX_BLOCKS)
    return Launch(ENTRIES[("max_pool2d_backward_gather", dtype)], (grid, 1, 1), (THREADS, 1, 1), (
        DY, INDICES, DX, i64(N * C), *(i32(v) for v in (H, W, P, Q, kh, kw, sh, sw, ph, pw, dh, dw))))


def max_scatter_launch(x_shape, y_shape, dtype: str, bad=Ref("bad")) -> Launch:
    """dx from dy through the indices alone: a warp per plane; ``bad`` (uint64) counts indices
    outside the plane."""
    N, C, H, W = (int(d) for d in x_shape)
    P, Q = int(y_shape[2]), int(y_shape[3])
    grid = -(-(N * C) // WARPS_PER_BLOCK)
    return Launch(ENTRIES[("max_pool2d_backward_scatter", dtype)], (grid, 1, 1), (THREADS, 1, 1), (
        DY, INDICES, DX, bad, i64(N * C), i64(H * W), i64(P * Q)))


def avg_launch(x_shape, dtype: str, geom, count_include_pad: bool, divisor_override) -> Launch:
    kh, kw, sh, sw, ph, pw, _, _, P, Q = geom
    N, C, H, W = (int(d) for d in x_shape)
    grid = _common.grid_1d(N * C * H * W, THREADS, MAX_BLOCKS)
    return Launch(ENTRIES[("avg_pool2d_backward", dtype)], (grid, 1, 1), (THREADS, 1, 1), (
        DY, DX, i64(N * C), *(i32(v) for v in (H, W, P, Q, kh, kw, sh, sw, ph, pw)),
        i32(count_include_pad), i32(divisor_override or 0)))


def global_avg_launch(x_shape, dtype: str) -> Launch:
    N, C, H, W = (int(d) for d in x_shape)
    grid = _common.grid_1d(N * C * H * W, THREADS, MAX_BLOCKS)
    return Launch(ENTRIES[("global_avg_pool2d_backward", dtype)], (grid, 1, 1), (THREADS, 1, 1),
                  (DY, DX, i64(N * C), i64(H * W)))


def _geometry(pp: PoolProblem) -> tuple:
    return (pp.kernel_h, pp.kernel_w, pp.stride_h, pp.stride_w, pp.pad_h, pp.pad_w, pp.dilation_h,
            pp.dilation_w, pp.P, pp.Q)


# --------------------------------------------------------------------------- checks and plans
def _check(what: str, dy, size, out) -> str:
    """The dtype of a pooling gradient call: dy float32/float64 (N, C, P, Q), the input size
    (N, C, H, W) agreeing on N and C, out (N, C, H, W) of dy's dtype."""
    if dy is None:
        raise TypeError("grad_output is required, got None")
    dt = name_of(dy.dtype)
    if dt not in CUDA_CORE_DTYPES:
        raise TypeError(f"grad_output must have dtype {' or '.join(CUDA_CORE_DTYPES)}, got {dt} (shape "
                        f"{tuple(dy.shape)})")
    if len(dy.shape) != 4:
        raise ValueError(f"grad_output must be 4-D, got shape {tuple(dy.shape)}")
    if len(size) != 4:
        raise ValueError(f"{what}: input_size must be 4-D (N, C, H, W) (3-D with an unbatched grad_output), "
                         f"got {size}")
    if tuple(dy.shape[:2]) != size[:2]:
        raise ValueError(f"{what}: grad_output {tuple(dy.shape)} and input_size {size} disagree on N and C")
    if size[2] * size[3] > INT32_MAX or dy.shape[2] * dy.shape[3] > INT32_MAX:
        raise ValueError(f"{what}: planes of more than 2**31-1 elements are not supported (input_size {size}, "
                         f"grad_output {tuple(dy.shape)})")
    if out is not None:
        if name_of(out.dtype) != dt:
            raise TypeError(f"out must have the same dtype as the other arrays ({dt}), got {name_of(out.dtype)}")
        if tuple(out.shape) != size:
            raise ValueError(f"out must have shape {size} (the gradient's shape), got {tuple(out.shape)}")
    return dt


def _shaped(what: str, a, shape, rule: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)} ({rule}), got {tuple(a.shape)}")


def _plan(be, op: str, env, size, dt, launches, parts, expected) -> Plan:
    if env["dx"] is not None and be.is_array(env["dx"]):
        _common.check_out(env["dx"], size, dt, be)
    _common.same_device(be, **{r: a for r, a in env.items() if a is not None and be.is_array(a)})
    empty = size[0] * size[1] * size[2] * size[3] == 0
    buffers, nbytes = layout_buffers(*parts) if parts and not empty else ((), 0)
    return Plan(op, "none" if empty else "backward", size, () if empty else tuple(launches),
                tuple(r for r, _, _ in expected), (Output("dx", size, np.dtype(dt)),), planning_target(be)[1],
                workspace_bytes=nbytes, buffers=buffers, expected=tuple(expected))


def _plan_max(be, env, args, extra, misaligned) -> Plan:
    input_size, kernel_size, stride, padding, dilation, ceil_mode = args
    what = "max_pool2d backward"
    dy, indices, size = env["dy"], env["indices"], shape_arg(input_size, "input_size")
    dt = _check(what, dy, size, env["dx"])
    if indices is None:
        raise TypeError("indices is required, got None")
    if name_of(indices.dtype) != "int64":
        raise TypeError(f"indices must have dtype int64 (max_pool2d(..., return_indices=True)), got "
                        f"{name_of(indices.dtype)}")
    _shaped("indices", indices, dy.shape, "grad_output's shape")
    expected = (("dy", tuple(dy.shape), dt), ("indices", tuple(dy.shape), "int64"))
    if kernel_size is not None:
        pp = PoolProblem.from_shapes("max", size, kernel_size, stride, padding, dilation,
                                     bool_arg(ceil_mode, "ceil_mode"), dtype=dt)
        _shaped("grad_output", dy, (*size[:2], pp.P, pp.Q), f"the output of max_pool2d's window on input {size}")
        return _plan(be, "max_pool2d_backward", env, size, dt, [max_gather_launch(size, dt, _geometry(pp))], [],
                     expected)
    if -(-(size[0] * size[1]) // WARPS_PER_BLOCK) > INT32_MAX:
        raise ValueError(f"{what}: N·C = {size[0] * size[1]} planes need more than 2**31-1 blocks")
    return _plan(be, "max_pool2d_backward", env, size, dt, [max_scatter_launch(size, dy.shape, dt)],
                 [("bad", "uint64", 1)], expected)


def _plan_avg(be, env, args, extra, misaligned) -> Plan:
    input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override = args
    dy, size = env["dy"], shape_arg(input_size, "input_size")
    dt = _check("avg_pool2d backward", dy, size, env["dx"])
    count_include_pad = bool_arg(count_include_pad, "count_include_pad")
    pp = PoolProblem.from_shapes("avg", size, kernel_size, stride, padding, 1, bool_arg(ceil_mode, "ceil_mode"),
                                 count_include_pad, divisor_override, dtype=dt)
    _shaped("grad_output", dy, (*size[:2], pp.P, pp.Q), f"the output of avg_pool2d's window on input {size}")
    return _plan(be, "avg_pool2d_backward", env, size, dt,
                 [avg_launch(size, dt, _geometry(pp), count_include_pad, divisor_override)], [],
                 (("dy", tuple(dy.shape), dt),))


def _plan_global(be, env, args, extra, misaligned) -> Plan:
    dy, size = env["dy"], shape_arg(args[0], "input_size")
    dt = _check("global_avg_pool2d backward", dy, size, env["dx"])
    _shaped("grad_output", dy, (*size[:2], 1, 1), "global_avg_pool2d's output (N, C, 1, 1)")
    return _plan(be, "global_avg_pool2d_backward", env, size, dt, [global_avg_launch(size, dt)], [],
                 (("dy", tuple(dy.shape), dt),))


_NAMES = {"dy": "grad_output", "dx": "out"}
_MAX = FrontEnd("max_pool2d_backward", ("dy", "indices", "dx"), _plan_max, batched=("dy", "indices", "dx"),
                batched_size=0, names=_NAMES)
_AVG = FrontEnd("avg_pool2d_backward", ("dy", "dx"), _plan_avg, batched=("dy", "dx"), batched_size=0, names=_NAMES)
_GLOBAL = FrontEnd("global_avg_pool2d_backward", ("dy", "dx"), _plan_global, batched=("dy", "dx"), batched_size=0,
                   names=_NAMES)


# --------------------------------------------------------------------------- the ops
def max_pool2d(grad_output, indices, input_size, kernel_size=None, stride=None, padding=0, dilation=1,
               ceil_mode=False, *, out=None):
    """∂L/∂x of ``max_pool2d`` from ``grad_output`` and the forward's int64 ``indices``
    (``return_indices=True``: ih·W + iw within each plane). Each input gets the sum of the
    gradients of the outputs whose maximum it was, added in output order (deterministic).
    With the forward's window (``kernel_size`` ...) each input gathers from the windows that
    cover it (PyTorch CUDA's kernel); without it a warp per plane scatters through the
    indices. Indices outside the plane are skipped (PyTorch's CPU kernel raises on them)."""
    return _MAX({"dy": grad_output, "indices": indices, "dx": out},
                (input_size, kernel_size, stride, padding, dilation, ceil_mode))


def avg_pool2d(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, out=None):
    """∂L/∂x of ``avg_pool2d``: each output's gradient spread over its window divided by the
    forward's divisor (PyTorch's rules: ``count_include_pad``, ``divisor_override``, windows
    clipped at the padded border under ``ceil_mode``)."""
    return _AVG({"dy": grad_output, "dx": out}, (input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                        divisor_override))


def global_avg_pool2d(grad_output, input_size, *, out=None):
    """∂L/∂x of ``global_avg_pool2d`` (AdaptiveAvgPool2d(1)): dx[n, c] = dy[n, c] / (H·W)."""
    return _GLOBAL({"dy": grad_output, "dx": out}, (input_size,))


plan_max_pool2d = plan_of(max_pool2d)
plan_avg_pool2d = plan_of(avg_pool2d)
plan_global_avg_pool2d = plan_of(global_avg_pool2d)
