"""The pooling gradients as ops (``cuconv.grad.max_pool2d``, ``avg_pool2d``,
``global_avg_pool2d``; kernels/pool_grad.cu), PyTorch's semantics, float32, float64, float16 or
bfloat16, ``layout="NCHW"`` or ``"NHWC"`` (grad_output and indices N,P,Q,C, ``input_size`` and
dx N,H,W,C), each layout by its own kernels (NHWC: consecutive threads along C, V channels a
thread in 16/8-byte accesses where C and the addresses allow: ops/pool.py's ``vector_width``).

* ``max_pool2d(grad_output, indices, input_size, kernel_size=None, ...)`` — through the
  forward's int64 ``indices``. With the forward's window (``kernel_size`` ...) each input gathers
  from the windows that cover it (``pool_grad_max_gather_*``, PyTorch CUDA's form, summed in
  float32 for the 16-bit types and rounded once); without it the indices are scattered
  (``pool_grad_max_scatter_*``: NCHW a warp per plane, conflicts resolved in output order; NHWC
  a thread per (n, c) column walking its outputs in order), each addition rounded to the
  storage type as PyTorch's CPU kernel adds. Both sum each input's gradients in output order, so
  in float32/float64 they agree bit for bit (in 16 bits they differ only where an input is the
  maximum of three or more windows). The scatter counts indices outside [0, H·W) (skipped) in a
  workspace word it never reads back (reading it would synchronize).
* ``avg_pool2d(grad_output, input_size, kernel_size, ...)`` — ``pool_grad_avg_*``,
  PyTorch's divisor rules.
* ``global_avg_pool2d(grad_output, input_size)`` — ``pool_grad_global_avg_*``.

Each is validate → plan → run (ops/_frontend.py); per kernel one ``*_launch`` function computes
grid, block and arguments.
"""
from __future__ import annotations

import numpy as np

from ..backend import planning_target
from ..dtypes import FLOAT_DTYPES, INT32_MAX, ctype, name_of, tag
from ..plan import Launch, Output, Plan, Ref, layout_buffers
from ..problem import PoolProblem, bool_arg, shape_arg
from ..registry import KernelEntry, register_kernel
from . import _common
from ._common import i32, i64
from ._conv_frontend import check_layout
from ._frontend import FrontEnd, plan_of
from .pool import layout_shape, nchw_shape, read_as, vector_width, vector_widths

FILE = "pool_grad.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4
MAX_BLOCKS = 1 << 16          # grid-stride loops cover the rest
WARPS_PER_BLOCK = THREADS // 32

# CUDA function -> its label's middle part: pool_grad_<part>_<dtype> (NCHW; the NHWC scatter too),
# pool_grad_<part>_<dtype>_v<V> (NHWC, V channels a thread).
KERNELS = {"max_pool2d_backward_gather": "max_gather", "max_pool2d_backward_scatter": "max_scatter",
           "avg_pool2d_backward": "avg", "global_avg_pool2d_backward": "global_avg",
           "max_pool2d_backward_scatter_nhwc": "max_scatter_nhwc"}
VECTOR_KERNELS = {"max_pool2d_backward_gather_nhwc": "max_gather_nhwc", "avg_pool2d_backward_nhwc": "avg_nhwc",
                  "global_avg_pool2d_backward_nhwc": "global_avg_nhwc"}


def name(kernel: str, dtype: str, vec: int | None = None) -> str:
    if vec is None:
        return f"pool_grad_{KERNELS[kernel]}_{tag(dtype)}"
    return f"pool_grad_{VECTOR_KERNELS[kernel]}_{tag(dtype)}_v{vec}"


def expression(kernel: str, dtype: str, vec: int | None = None) -> str:
    return f"{kernel}<{ctype(dtype)}>" if vec is None else f"{kernel}<{ctype(dtype)}, {vec}>"


def _entry(k: str, dt: str, vec: int | None = None) -> KernelEntry:
    # pool.cuh includes cuda_fp16.h / cuda_bf16.h; nothing needs sm_80: every arch.
    return register_kernel(KernelEntry(FILE, expression(k, dt, vec), name(k, dt, vec), block_threads=THREADS,
                                       min_blocks_per_sm=MIN_BLOCKS_PER_SM, cuda_headers=True))


ENTRIES = {(k, dt): _entry(k, dt) for k in KERNELS for dt in FLOAT_DTYPES}
ENTRIES.update({(k, dt, v): _entry(k, dt, v) for k in VECTOR_KERNELS for dt in FLOAT_DTYPES
                for v in vector_widths(dt)})
DY, DX, INDICES = Ref("dy"), Ref("dx"), Ref("indices")


# --------------------------------------------------------------------------- launches
# x_shape is N, C, H, W whatever the layout; in NHWC ``vec`` channels a thread.
def _entry_of(kernel: str, dtype: str, layout: str, vec: int) -> KernelEntry:
    return ENTRIES[(kernel, dtype)] if layout == "NCHW" else ENTRIES[(kernel + "_nhwc", dtype, vec)]


def _elementwise(x_shape, layout: str, vec: int):
    """(grid, leading arguments) of a kernel with a thread per dx element (NHWC: per vec channels)."""
    N, C, H, W = (int(d) for d in x_shape)
    grid = _common.grid_1d(N * C * H * W // (vec if layout == "NHWC" else 1), THREADS, MAX_BLOCKS)
    return grid, ((i64(N * C), i32(H), i32(W)) if layout == "NCHW" else (i64(N), i32(C), i32(H), i32(W)))


def max_gather_launch(x_shape, dtype: str, geom, layout: str = "NCHW", vec: int = 1) -> Launch:
    """dx (an N, C, H, W = ``x_shape`` problem) from dy and indices, one thread per dx element
    gathering the windows that cover it (``geom``: kh, kw, sh, sw, ph, pw, dh, dw, P, Q)."""
    kh, kw, sh, sw, ph, pw, dh, dw, P, Q = geom
    grid, lead = _elementwise(x_shape, layout, vec)
    return Launch(_entry_of("max_pool2d_backward_gather", dtype, layout, vec), (grid, 1, 1), (THREADS, 1, 1), (
        DY, INDICES, DX, *lead, *(i32(v) for v in (P, Q, kh, kw, sh, sw, ph, pw, dh, dw))))


def max_scatter_launch(x_shape, y_shape, dtype: str, bad=Ref("bad"), layout: str = "NCHW") -> Launch:
    """dx from dy through the indices alone (``y_shape``: N, C, P, Q): NCHW a warp per plane, NHWC a
    thread per (n, c) column; ``bad`` (uint64) counts indices outside the plane."""
    N, C, H, W = (int(d) for d in x_shape)
    P, Q = int(y_shape[2]), int(y_shape[3])
    if layout == "NHWC":
        grid = _common.grid_1d(N * C, THREADS, MAX_BLOCKS)
        return Launch(ENTRIES[("max_pool2d_backward_scatter_nhwc", dtype)], (grid, 1, 1), (THREADS, 1, 1), (
            DY, INDICES, DX, bad, i64(N), i32(C), i64(H * W), i64(P * Q)))
    grid = -(-(N * C) // WARPS_PER_BLOCK)
    return Launch(ENTRIES[("max_pool2d_backward_scatter", dtype)], (grid, 1, 1), (THREADS, 1, 1), (
        DY, INDICES, DX, bad, i64(N * C), i64(H * W), i64(P * Q)))


def avg_launch(x_shape, dtype: str, geom, count_include_pad: bool, divisor_override, layout: str = "NCHW",
               vec: int = 1) -> Launch:
    kh, kw, sh, sw, ph, pw, _, _, P, Q = geom
    grid, lead = _elementwise(x_shape, layout, vec)
    return Launch(_entry_of("avg_pool2d_backward", dtype, layout, vec), (grid, 1, 1), (THREADS, 1, 1), (
        DY, DX, *lead, *(i32(v) for v in (P, Q, kh, kw, sh, sw, ph, pw)),
        i32(count_include_pad), i32(divisor_override or 0)))


def global_avg_launch(x_shape, dtype: str, layout: str = "NCHW", vec: int = 1) -> Launch:
    N, C, H, W = (int(d) for d in x_shape)
    grid, _ = _elementwise(x_shape, layout, vec)
    args = (i64(N * C), i64(H * W)) if layout == "NCHW" else (i64(N), i32(C), i64(H * W))
    return Launch(_entry_of("global_avg_pool2d_backward", dtype, layout, vec), (grid, 1, 1), (THREADS, 1, 1),
                  (DY, DX, *args))


def _geometry(pp: PoolProblem) -> tuple:
    return (pp.kernel_h, pp.kernel_w, pp.stride_h, pp.stride_w, pp.pad_h, pp.pad_w, pp.dilation_h,
            pp.dilation_w, pp.P, pp.Q)


# --------------------------------------------------------------------------- checks and plans
def _check(what: str, dy, size, out, layout: str) -> tuple[str, tuple, tuple]:
    """(dtype, input size as N, C, H, W, dy's shape as N, C, P, Q) of a pooling gradient call: dy
    float32/float64/float16/bfloat16 4-D, the input size (in ``layout``) agreeing on N and C, out
    of the input size and dy's dtype."""
    if dy is None:
        raise TypeError("grad_output is required, got None")
    dt = name_of(dy.dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"grad_output must have dtype {', '.join(FLOAT_DTYPES)}, got {dt} (shape "
                        f"{tuple(dy.shape)})")
    dims = ", ".join(layout)
    if len(dy.shape) != 4:
        raise ValueError(f"grad_output must be 4-D ({dims}), got shape {tuple(dy.shape)}")
    if len(size) != 4:
        raise ValueError(f"{what}: input_size must be 4-D ({dims}) (3-D with an unbatched grad_output), "
                         f"got {size}")
    note = read_as(layout, "input_size", size) + ("" if layout == "NCHW" else
                                                    f" [grad_output {tuple(dy.shape)} read as N,P,Q,C]")
    size4, dy4 = nchw_shape(size, layout), nchw_shape(dy.shape, layout)
    if dy4[:2] != size4[:2]:
        raise ValueError(f"{what}: grad_output {tuple(dy.shape)} and input_size {size} disagree on N and C{note}")
    if size4[2] * size4[3] > INT32_MAX or dy4[2] * dy4[3] > INT32_MAX:
        raise ValueError(f"{what}: planes of more than 2**31-1 elements are not supported (input_size {size}, "
                         f"grad_output {tuple(dy.shape)}){note}")
    if out is not None:
        if name_of(out.dtype) != dt:
            raise TypeError(f"out must have the same dtype as the other arrays ({dt}), got {name_of(out.dtype)}")
        if tuple(out.shape) != size:
            raise ValueError(f"out must have shape {size} (the gradient's shape), got {tuple(out.shape)}")
    return dt, size4, dy4


def _shaped(what: str, a, shape, rule: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)} ({rule}), got {tuple(a.shape)}")


def _vec(layout: str, dt: str, size4) -> int:
    return vector_width(dt, size4[1]) if layout == "NHWC" else 1


def _plan(be, op: str, env, size, dt, launches, parts, expected, layout: str) -> Plan:
    if env["dx"] is not None and be.is_array(env["dx"]):
        _common.check_out(env["dx"], size, dt, be)
    _common.same_device(be, **{r: a for r, a in env.items() if a is not None and be.is_array(a)})
    empty = size[0] * size[1] * size[2] * size[3] == 0
    buffers, nbytes = layout_buffers(*parts) if parts and not empty else ((), 0)
    return Plan(op, "none" if empty else "backward", size, () if empty else tuple(launches),
                tuple(r for r, _, _ in expected), (Output("dx", size, np.dtype(dt)),), planning_target(be)[1],
                workspace_bytes=nbytes, buffers=buffers, expected=tuple(expected), description=f"layout {layout}")


def _plan_max(be, env, args, extra, misaligned) -> Plan:
    input_size, kernel_size, stride, padding, dilation, ceil_mode, layout = args
    what = "max_pool2d backward"
    layout = check_layout(layout)
    dy, indices, size = env["dy"], env["indices"], shape_arg(input_size, "input_size")
    dt, size4, dy4 = _check(what, dy, size, env["dx"], layout)
    if indices is None:
        raise TypeError("indices is required, got None")
    if name_of(indices.dtype) != "int64":
        raise TypeError(f"indices must have dtype int64 (max_pool2d(..., return_indices=True)), got "
                        f"{name_of(indices.dtype)}")
    _shaped("indices", indices, dy.shape, "grad_output's shape")
    expected = (("dy", tuple(dy.shape), dt), ("indices", tuple(dy.shape), "int64"))
    if kernel_size is not None:
        pp = PoolProblem.from_shapes("max", size4, kernel_size, stride, padding, dilation,
                                     bool_arg(ceil_mode, "ceil_mode"), dtype=dt)
        _shaped("grad_output", dy, layout_shape((*size4[:2], pp.P, pp.Q), layout),
                f"the output of max_pool2d's window on input {size}{read_as(layout, 'input_size', size)}")
        return _plan(be, "max_pool2d_backward", env, size, dt,
                     [max_gather_launch(size4, dt, _geometry(pp), layout, _vec(layout, dt, size4))], [], expected,
                     layout)
    if layout == "NCHW" and -(-(size4[0] * size4[1]) // WARPS_PER_BLOCK) > INT32_MAX:
        raise ValueError(f"{what}: N·C = {size4[0] * size4[1]} planes need more than 2**31-1 blocks")
    return _plan(be, "max_pool2d_backward", env, size, dt, [max_scatter_launch(size4, dy4, dt, layout=layout)],
                 [("bad", "uint64", 1)], expected, layout)


def _plan_avg(be, env, args, extra, misaligned) -> Plan:
    input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, layout = args
    layout = check_layout(layout)
    dy, size = env["dy"], shape_arg(input_size, "input_size")
    dt, size4, _ = _check("avg_pool2d backward", dy, size, env["dx"], layout)
    count_include_pad = bool_arg(count_include_pad, "count_include_pad")
    pp = PoolProblem.from_shapes("avg", size4, kernel_size, stride, padding, 1, bool_arg(ceil_mode, "ceil_mode"),
                                 count_include_pad, divisor_override, dtype=dt)
    _shaped("grad_output", dy, layout_shape((*size4[:2], pp.P, pp.Q), layout),
            f"the output of avg_pool2d's window on input {size}{read_as(layout, 'input_size', size)}")
    vec = _vec(layout, dt, size4)
    return _plan(be, "avg_pool2d_backward", env, size, dt,
                 [avg_launch(size4, dt, _geometry(pp), count_include_pad, divisor_override, layout, vec)], [],
                 (("dy", tuple(dy.shape), dt),), layout)


def _plan_global(be, env, args, extra, misaligned) -> Plan:
    layout = check_layout(args[1])
    dy, size = env["dy"], shape_arg(args[0], "input_size")
    dt, size4, _ = _check("global_avg_pool2d backward", dy, size, env["dx"], layout)
    _shaped("grad_output", dy, layout_shape((*size4[:2], 1, 1), layout),
            f"global_avg_pool2d's output ({'N, 1, 1, C' if layout == 'NHWC' else 'N, C, 1, 1'})")
    return _plan(be, "global_avg_pool2d_backward", env, size, dt,
                 [global_avg_launch(size4, dt, layout, _vec(layout, dt, size4))], [], (("dy", tuple(dy.shape), dt),),
                 layout)


_NAMES = {"dy": "grad_output", "dx": "out"}
_MAX = FrontEnd("max_pool2d_backward", ("dy", "indices", "dx"), _plan_max, batched=("dy", "indices", "dx"),
                batched_size=0, names=_NAMES)
_AVG = FrontEnd("avg_pool2d_backward", ("dy", "dx"), _plan_avg, batched=("dy", "dx"), batched_size=0, names=_NAMES)
_GLOBAL = FrontEnd("global_avg_pool2d_backward", ("dy", "dx"), _plan_global, batched=("dy", "dx"), batched_size=0,
                   names=_NAMES)


# --------------------------------------------------------------------------- the ops
def max_pool2d(grad_output, indices, input_size, kernel_size=None, stride=None, padding=0, dilation=1,
               ceil_mode=False, *, out=None, layout="NCHW"):
    """∂L/∂x of ``max_pool2d`` from ``grad_output`` and the forward's int64 ``indices``
    (``return_indices=True``: ih·W + iw within each plane). Each input gets the sum of the
    gradients of the outputs whose maximum it was, added in output order (deterministic).
    With the forward's window (``kernel_size`` ...) each input gathers from the windows that
    cover it (PyTorch CUDA's kernel); without it a warp per plane scatters through the
    indices. Indices outside the plane are skipped (PyTorch's CPU kernel raises on them).
    ``layout="NHWC"``: grad_output and indices N,P,Q,C, input_size and the result N,H,W,C."""
    return _MAX({"dy": grad_output, "indices": indices, "dx": out},
                (input_size, kernel_size, stride, padding, dilation, ceil_mode, layout))


def avg_pool2d(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, out=None, layout="NCHW"):
    """∂L/∂x of ``avg_pool2d``: each output's gradient spread over its window divided by the
    forward's divisor (PyTorch's rules: ``count_include_pad``, ``divisor_override``, windows
    clipped at the padded border under ``ceil_mode``); ``layout`` as for ``max_pool2d``."""
    return _AVG({"dy": grad_output, "dx": out}, (input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                                 divisor_override, layout))


def global_avg_pool2d(grad_output, input_size, *, out=None, layout="NCHW"):
    """∂L/∂x of ``global_avg_pool2d`` (AdaptiveAvgPool2d(1)): dx[n, c] = dy[n, c] / (H·W);
    ``layout="NHWC"``: grad_output N,1,1,C, input_size and the result N,H,W,C."""
    return _GLOBAL({"dy": grad_output, "dx": out}, (input_size, layout))


plan_max_pool2d = plan_of(max_pool2d)
plan_avg_pool2d = plan_of(avg_pool2d)
plan_global_avg_pool2d = plan_of(global_avg_pool2d)
