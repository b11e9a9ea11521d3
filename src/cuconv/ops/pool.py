"""Pooling: ``max_pool2d``, ``avg_pool2d``, ``global_avg_pool2d`` (kernels/pool.cu).

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

from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, tag
from ..plan import Launch, Output, Plan, Ref
from ..problem import PoolProblem, bool_arg
from ..registry import KernelEntry, register_kernel
from . import _common
from ._common import OUT, X, i32, i64
from ._frontend import FrontEnd, plan_of

FILE = "pool.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4          # 50 % occupancy on sm_90 (checked by the compile matrix)
MAX_BLOCKS = 1 << 16           # grid-stride loops cover the rest

# Kernel keys: "max", "max_indices", "avg", ("gap", threads per plane). Global average
# pooling takes 32 threads a plane (a warp per plane, 8 planes per block) for small planes such
# as the 7x7 ones at the end of CNNs, 256 for large planes. Each kernel in float32 and float64:
# labels pool_max_f32, pool_max_f64, ..., pool_global_avg_f64_t256.
GAP_LARGE_PLANE = 1024         # H·W from which a whole block reduces one plane


def _kernels(dt: str) -> dict:
    t, ct = tag(dt), ctype(dt)
    return {"max": (f"max_pool2d<{ct}>", f"pool_max_{t}"),
            "max_indices": (f"max_pool2d_indices<{ct}>", f"pool_max_indices_{t}"),
            "avg": (f"avg_pool2d<{ct}>", f"pool_avg_{t}"),
            ("gap", 32): (f"global_avg_pool2d<{ct}, 32>", f"pool_global_avg_{t}_t32"),
            ("gap", 256): (f"global_avg_pool2d<{ct}, 256>", f"pool_global_avg_{t}_t256")}


ENTRIES = {(dt, key): register_kernel(KernelEntry(FILE, expr, label, block_threads=THREADS,
                                                  min_blocks_per_sm=MIN_BLOCKS_PER_SM))
           for dt in CUDA_CORE_DTYPES for key, (expr, label) in _kernels(dt).items()}


def _limits(p: PoolProblem) -> None:
    """The kernels' 32-bit extents (ValueError naming them)."""
    for name, v in (("H", p.H), ("W", p.W), ("P", p.P), ("Q", p.Q), ("H·W", p.H * p.W)):
        if v > INT32_MAX:
            raise ValueError(f"{name}={v} does not fit a 32-bit int {p._where()}")
    if p.divisor_override is not None and not -INT32_MAX <= p.divisor_override <= INT32_MAX:
        raise ValueError(f"divisor_override={p.divisor_override} does not fit a 32-bit int")


def pool_launches(p: PoolProblem, x=X, out=OUT, indices=None) -> list[Launch]:
    """The launch computing pooling problem ``p`` from slot ``x`` into ``out`` (and ``indices``)."""
    planes = p.N * p.C
    if planes * p.P * p.Q == 0:          # an empty batch (or no channels): nothing to launch
        return []
    dt = p.dtype
    if p.kind == "global_avg":
        tpp = 256 if p.H * p.W >= GAP_LARGE_PLANE else 32
        grid = -(-planes // (THREADS // tpp))
        if grid > INT32_MAX:
            raise ValueError(f"N·C={planes} planes need more than 2**31-1 blocks (input {p.input_shape})")
        return [Launch(ENTRIES[(dt, ("gap", tpp))], (grid, 1, 1), (THREADS, 1, 1),
                       (x, out, i64(planes), i32(p.H * p.W)))]
    grid = _common.grid_1d(planes * p.P * p.Q, THREADS, MAX_BLOCKS)
    geom = (i64(planes), i32(p.H), i32(p.W), i32(p.P), i32(p.Q), i32(p.kernel_h), i32(p.kernel_w),
            i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w))
    if p.kind == "max":
        dil = (i32(p.dilation_h), i32(p.dilation_w))
        if indices is not None:
            return [Launch(ENTRIES[(dt, "max_indices")], (grid, 1, 1), (THREADS, 1, 1),
                           (x, out, indices, *geom, *dil))]
        return [Launch(ENTRIES[(dt, "max")], (grid, 1, 1), (THREADS, 1, 1), (x, out, *geom, *dil))]
    return [Launch(ENTRIES[(dt, "avg")], (grid, 1, 1), (THREADS, 1, 1),
                   (x, out, *geom, i32(p.count_include_pad), i32(p.divisor_override or 0)))]


def _plan(be, kind, env, args: dict, return_indices: bool) -> Plan:
    x, out, out_indices = env["x"], env["out"], env["indices"]
    x = _common.as_tensor(x, "input", dtypes=CUDA_CORE_DTYPES, be=be)
    if x.ndim != 4:
        raise ValueError(f"input must be 3-D (C, H, W, unbatched) or 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    dt = np.dtype(x.dtype).name
    p = PoolProblem.from_shapes(kind, x.shape, dtype=dt, **args)
    _limits(p)
    outputs = [Output("out", p.output_shape, np.dtype(dt))]
    if out is not None:
        _common.check_out(out, p.output_shape, dt, be)
    indices = None
    if return_indices:
        outputs.append(Output("indices", p.output_shape, np.dtype(np.int64)))
        indices = Ref("indices")
        if out_indices is not None:
            _common.check_out(out_indices, p.output_shape, np.int64, be, "out_indices")
    _common.same_device(be, input=x, out=out, out_indices=out_indices)
    launches = pool_launches(p, indices=indices)
    op = {"max": "max_pool2d", "avg": "avg_pool2d", "global_avg": "global_avg_pool2d"}[kind]
    return Plan(op, launches[0].kernel if launches else "empty", p, tuple(launches), ("x",), tuple(outputs),
                be.device_key(), expected=(("x", tuple(x.shape), dt),))


def _plan_max(be, env, args, extra, misaligned) -> Plan:
    return_indices, kernel_size, stride, padding, dilation, ceil_mode = args
    return _plan(be, "max", env, dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                                      ceil_mode=ceil_mode), return_indices)


def _plan_avg(be, env, args, extra, misaligned) -> Plan:
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override = args
    return _plan(be, "avg", dict(env, indices=None), dict(
        kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
        count_include_pad=count_include_pad, divisor_override=divisor_override), False)


def _plan_global(be, env, args, extra, misaligned) -> Plan:
    return _plan(be, "global_avg", dict(env, indices=None), {}, False)


_NAMES = {"x": "input", "indices": "out_indices"}
_MAX = FrontEnd("max_pool2d", ("x", "out", "indices"), _plan_max, batched=("x", "out", "indices"), names=_NAMES)
_AVG = FrontEnd("avg_pool2d", ("x", "out"), _plan_avg, batched=("x", "out"), names=_NAMES)
_GLOBAL = FrontEnd("global_avg_pool2d", ("x", "out"), _plan_global, batched=("x", "out"), names=_NAMES)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None, out_indices=None):
    """2-D max pooling of an NCHW float32 or float64 tensor (torch.nn.functional.max_pool2d).

    Returns ``y``, or ``(y, indices)`` with ``return_indices`` (int64, flat ``ih·W + iw``
    within each plane). ``out`` / ``out_indices`` receive the results when given.
    """
    return_indices = bool_arg(return_indices, "return_indices")
    if out_indices is not None and not return_indices:
        raise ValueError("out_indices was given but return_indices is False")
    return _MAX({"x": x, "out": out, "indices": out_indices},
                (return_indices, kernel_size, stride, padding, dilation, ceil_mode))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """2-D average pooling of an NCHW float32 or float64 tensor (torch.nn.functional.avg_pool2d)."""
    return _AVG({"x": x, "out": out}, (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override))


def global_avg_pool2d(x, *, out=None):
    """Mean over H and W of an NCHW float32 or float64 tensor: shape (N, C, 1, 1)
    (torch.nn.functional.adaptive_avg_pool2d(x, 1))."""
    return _GLOBAL({"x": x, "out": out})


plan_max_pool2d = plan_of(max_pool2d)
plan_avg_pool2d = plan_of(avg_pool2d)
plan_global_avg_pool2d = plan_of(global_avg_pool2d)
