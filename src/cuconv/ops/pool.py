"""Pooling: ``max_pool2d``, ``avg_pool2d``, ``global_avg_pool2d`` (kernels/pool.cu).

float32, float64, float16 and bfloat16 (the 16-bit types sum in float32 and round once; a max
compares the stored values exactly and returns the stored element), ``layout="NCHW"`` or
``"NHWC"`` (as ``conv2d`` takes it: the input N,H,W,C, the output and indices N,P,Q,C). NHWC runs
its own kernels — consecutive threads along C, V channels a thread where C is a multiple of V
(``vector_width``), each access one load or store of 16 or 8 bytes where its address is aligned
for it (every access, when the arrays start aligned; the check is in the kernel, so the plan does
not depend on the pointers), V single ones otherwise — so an NHWC or 16-bit plan is one launch of
a native kernel, no conversion step.

torch.nn.functional's signatures and semantics, including its argument checks:

* output size ``floor((H + 2·pad − dilation·(k − 1) − 1) / stride) + 1``; with ``ceil_mode``
  the division rounds up, but the last window must start inside the input or the left
  padding (else that row/column is dropped);
* ``padding <= kernel_size // 2`` per dimension, whatever the dilation (PyTorch's
  pool2d_shape_check and max_pool2d; ``cuconv.problem.PoolProblem`` is the one definition);
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

from ..dtypes import DTYPE_BYTES, FLOAT_DTYPES, INT32_MAX, ctype, tag
from ..plan import Launch, Output, Plan, Ref
from ..problem import PoolProblem, bool_arg
from ..registry import KernelEntry, register_kernel
from . import _common
from ._common import OUT, X, i32, i64
from ._conv_frontend import check_layout
from ._frontend import FrontEnd, plan_of

FILE = "pool.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4          # 50 % occupancy on sm_90 (checked by the compile matrix)
MAX_BLOCKS = 1 << 16           # grid-stride loops cover the rest
GAP_NHWC_LANES = 32            # global_avg_pool2d_nhwc: a block is 32 lanes along C by 8 rows

# Kernel keys: "max", "max_indices", "avg", ("gap", threads per plane) in NCHW; in NHWC ("max_nhwc",
# V), ("max_indices_nhwc", V), ("avg_nhwc", V), ("gap_nhwc", V), V channels a thread. Global average
# pooling takes 32 threads a plane (a warp per plane, 8 planes per block) for small planes such as
# the 7x7 ones at the end of CNNs, 256 for large planes. Each kernel in float32, float64, float16
# and bfloat16: labels pool_max_f32, ..., pool_global_avg_f64_t256, pool_max_nhwc_f16_v8, ...
GAP_LARGE_PLANE = 1024         # H·W from which a whole block reduces one plane


def vector_widths(dt: str) -> tuple[int, ...]:
    """The channels an NHWC thread takes: 16 and 8 bytes' worth (LDG.128 / LDG.64), and 1."""
    size = DTYPE_BYTES[dt]
    return tuple(sorted({1, max(1, 8 // size), 16 // size}))


def vector_width(dt: str, C: int) -> int:
    """The widest of ``vector_widths(dt)`` dividing C."""
    return max(v for v in vector_widths(dt) if C % v == 0)


def _kernels(dt: str) -> dict:
    t, ct = tag(dt), ctype(dt)
    k = {"max": (f"max_pool2d<{ct}>", f"pool_max_{t}"),
         "max_indices": (f"max_pool2d_indices<{ct}>", f"pool_max_indices_{t}"),
         "avg": (f"avg_pool2d<{ct}>", f"pool_avg_{t}"),
         ("gap", 32): (f"global_avg_pool2d<{ct}, 32>", f"pool_global_avg_{t}_t32"),
         ("gap", 256): (f"global_avg_pool2d<{ct}, 256>", f"pool_global_avg_{t}_t256")}
    for v in vector_widths(dt):
        for key, fn, middle in (("max_nhwc", "max_pool2d_nhwc", "max_nhwc"),
                                ("max_indices_nhwc", "max_pool2d_indices_nhwc", "max_indices_nhwc"),
                                ("avg_nhwc", "avg_pool2d_nhwc", "avg_nhwc"),
                                ("gap_nhwc", "global_avg_pool2d_nhwc", "global_avg_nhwc")):
            k[(key, v)] = (f"{fn}<{ct}, {v}>", f"pool_{middle}_{t}_v{v}")
    return k


# The 16-bit types include cuda_fp16.h / cuda_bf16.h (pool.cuh), so the whole file does; nothing
# in it needs sm_80 (bfloat16 is converted, never multiplied on tensor cores): every arch.
ENTRIES = {(dt, key): register_kernel(KernelEntry(FILE, expr, label, block_threads=THREADS,
                                                  min_blocks_per_sm=MIN_BLOCKS_PER_SM, cuda_headers=True))
           for dt in FLOAT_DTYPES for key, (expr, label) in _kernels(dt).items()}


def _limits(p: PoolProblem) -> None:
    """The kernels' 32-bit extents (ValueError naming them)."""
    for name, v in (("H", p.H), ("W", p.W), ("P", p.P), ("Q", p.Q), ("H·W", p.H * p.W)):
        if v > INT32_MAX:
            raise ValueError(f"{name}={v} does not fit a 32-bit int {p._where()}")
    if p.divisor_override is not None and not -INT32_MAX <= p.divisor_override <= INT32_MAX:
        raise ValueError(f"divisor_override={p.divisor_override} does not fit a 32-bit int")


def pool_launches(p: PoolProblem, x=X, out=OUT, indices=None, layout: str = "NCHW", vec: int = 1) -> list[Launch]:
    """The launch computing pooling problem ``p`` from slot ``x`` into ``out`` (and ``indices``);
    in NHWC ``vec`` channels a thread (``vector_width``)."""
    planes = p.N * p.C
    if planes * p.P * p.Q == 0:          # an empty batch (or no channels): nothing to launch
        return []
    dt = p.dtype
    if layout == "NHWC":
        return [_nhwc_launch(p, x, out, indices, vec)]
    if p.kind == "global_avg":
        tpp = 256 if p.H * p.W >= GAP_LARGE_PLANE else 32
        grid = -(-planes // (THREADS // tpp))
        if grid > INT32_MAX:
            raise ValueError(f"N·C={planes} planes need more than 2**31-1 blocks (input {p.input_shape})")
        return [Launch(ENTRIES[(dt, ("gap", tpp))], (grid, 1, 1), (THREADS, 1, 1),
                       (x, out, i64(planes), i32(p.H * p.W)))]
    grid = _common.grid_1d(planes * p.P * p.Q, THREADS, MAX_BLOCKS)
    geom = (i64(planes), i32(p.H), i32(p.W), i32(p.P), i32(p.Q), *_window(p))
    return [_window_launch(p, lambda kind: ENTRIES[(dt, kind)], grid, x, out, indices, geom)]


def _window(p: PoolProblem) -> tuple:
    return (i32(p.kernel_h), i32(p.kernel_w), i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w))


def _window_launch(p: PoolProblem, entry, grid, x, out, indices, geom) -> Launch:
    """max (with or without indices) or avg over ``geom``; ``entry(kind)`` the kernel of a kind."""
    if p.kind == "max":
        dil = (i32(p.dilation_h), i32(p.dilation_w))
        if indices is not None:
            return Launch(entry("max_indices"), (grid, 1, 1), (THREADS, 1, 1), (x, out, indices, *geom, *dil))
        return Launch(entry("max"), (grid, 1, 1), (THREADS, 1, 1), (x, out, *geom, *dil))
    return Launch(entry("avg"), (grid, 1, 1), (THREADS, 1, 1),
                  (x, out, *geom, i32(p.count_include_pad), i32(p.divisor_override or 0)))


def _nhwc_launch(p: PoolProblem, x, out, indices, vec: int) -> Launch:
    dt, cv = p.dtype, p.C // vec
    if p.kind == "global_avg":
        grid = p.N * -(-cv // GAP_NHWC_LANES)
        if grid > INT32_MAX:
            raise ValueError(f"N·ceil(C/{vec}/32)={grid} blocks exceed 2**31-1 (input {p.input_shape})")
        return Launch(ENTRIES[(dt, ("gap_nhwc", vec))], (grid, 1, 1), (THREADS, 1, 1),
                      (x, out, i32(p.C), i32(p.H * p.W)))
    grid = _common.grid_1d(p.N * p.P * p.Q * cv, THREADS, MAX_BLOCKS)
    geom = (i64(p.N), i32(p.C), i32(p.H), i32(p.W), i32(p.P), i32(p.Q), *_window(p))
    return _window_launch(p, lambda kind: ENTRIES[(dt, (kind + "_nhwc", vec))], grid, x, out, indices, geom)


def nchw_shape(shape, layout: str) -> tuple:
    """An N,H,W,C shape as N,C,H,W (``layout`` "NHWC"); an NCHW shape as it is."""
    shape = tuple(int(d) for d in shape)
    return (shape[0], shape[3], shape[1], shape[2]) if layout == "NHWC" else shape


def layout_shape(shape, layout: str) -> tuple:
    """An N,C,H,W shape in ``layout`` (N,H,W,C for "NHWC")."""
    n, c, h, w = shape
    return (n, h, w, c) if layout == "NHWC" else tuple(shape)


def read_as(layout: str, what: str, shape) -> str:
    """The note ValueErrors of an NHWC call end with (how the shape was read)."""
    return f" [layout NHWC: {what} {tuple(shape)} read as N,H,W,C]" if layout == "NHWC" else ""


def _plan(be, kind, env, args: dict, return_indices: bool, layout) -> Plan:
    x, out, out_indices = env["x"], env["out"], env["indices"]
    layout = check_layout(layout)
    x = _common.as_tensor(x, "input", dtypes=FLOAT_DTYPES, be=be)
    if x.ndim != 4:
        raise ValueError(f"input must be 3-D (unbatched) or 4-D ({', '.join(layout)}), got shape {tuple(x.shape)}"
                         + read_as(layout, "input", x.shape))
    dt = np.dtype(x.dtype).name
    try:
        p = PoolProblem.from_shapes(kind, nchw_shape(x.shape, layout), dtype=dt, **args)
        _limits(p)
    except ValueError as exc:
        raise ValueError(f"{exc}{read_as(layout, 'input', x.shape)}") from None
    out_shape = layout_shape(p.output_shape, layout)
    outputs = [Output("out", out_shape, np.dtype(dt))]
    if out is not None:
        _common.check_out(out, out_shape, dt, be)
    indices = None
    if return_indices:
        outputs.append(Output("indices", out_shape, np.dtype(np.int64)))
        indices = Ref("indices")
        if out_indices is not None:
            _common.check_out(out_indices, out_shape, np.int64, be, "out_indices")
    _common.same_device(be, input=x, out=out, out_indices=out_indices)
    vec = vector_width(dt, p.C) if layout == "NHWC" else 1
    launches = pool_launches(p, indices=indices, layout=layout, vec=vec)
    op = {"max": "max_pool2d", "avg": "avg_pool2d", "global_avg": "global_avg_pool2d"}[kind]
    return Plan(op, launches[0].kernel if launches else "empty", p, tuple(launches), ("x",), tuple(outputs),
                be.device_key(), expected=(("x", tuple(x.shape), dt),), description=f"layout {layout}")


def _plan_max(be, env, args, extra, misaligned) -> Plan:
    return_indices, kernel_size, stride, padding, dilation, ceil_mode, layout = args
    return _plan(be, "max", env, dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                                      ceil_mode=ceil_mode), return_indices, layout)


def _plan_avg(be, env, args, extra, misaligned) -> Plan:
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, layout = args
    return _plan(be, "avg", dict(env, indices=None), dict(
        kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
        count_include_pad=count_include_pad, divisor_override=divisor_override), False, layout)


def _plan_global(be, env, args, extra, misaligned) -> Plan:
    return _plan(be, "global_avg", dict(env, indices=None), {}, False, args[0])


_NAMES = {"x": "input", "indices": "out_indices"}
_MAX = FrontEnd("max_pool2d", ("x", "out", "indices"), _plan_max, batched=("x", "out", "indices"), names=_NAMES)
_AVG = FrontEnd("avg_pool2d", ("x", "out"), _plan_avg, batched=("x", "out"), names=_NAMES)
_GLOBAL = FrontEnd("global_avg_pool2d", ("x", "out"), _plan_global, batched=("x", "out"), names=_NAMES)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None, out_indices=None, layout="NCHW"):
    """2-D max pooling (torch.nn.functional.max_pool2d) of a float32, float64, float16 or bfloat16
    tensor, ``layout="NCHW"`` (N, C, H, W) or ``"NHWC"`` (N, H, W, C; the output N, P, Q, C).

    Returns ``y``, or ``(y, indices)`` with ``return_indices`` (int64, flat ``ih·W + iw``
    within each (n, c) plane in both layouts, as PyTorch returns for channels_last too; laid
    out like ``y``). ``out`` / ``out_indices`` receive the results when given.
    """
    return_indices = bool_arg(return_indices, "return_indices")
    if out_indices is not None and not return_indices:
        raise ValueError("out_indices was given but return_indices is False")
    return _MAX({"x": x, "out": out, "indices": out_indices},
                (return_indices, kernel_size, stride, padding, dilation, ceil_mode, layout))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None, layout="NCHW"):
    """2-D average pooling (torch.nn.functional.avg_pool2d) of a float32, float64, float16 or
    bfloat16 tensor in ``layout`` "NCHW" or "NHWC"; the 16-bit types sum in float32."""
    return _AVG({"x": x, "out": out},
                (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, layout))


def global_avg_pool2d(x, *, out=None, layout="NCHW"):
    """Mean over H and W (torch.nn.functional.adaptive_avg_pool2d(x, 1)) of a float32, float64,
    float16 or bfloat16 tensor: shape (N, C, 1, 1), or (N, 1, 1, C) with ``layout="NHWC"``; the
    16-bit types sum in float32."""
    return _GLOBAL({"x": x, "out": out}, (layout,))


plan_max_pool2d = plan_of(max_pool2d)
plan_avg_pool2d = plan_of(avg_pool2d)
plan_global_avg_pool2d = plan_of(global_avg_pool2d)
