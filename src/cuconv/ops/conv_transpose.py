"""``cuconv.conv_transpose2d``: transposed convolution (kernels/conv_transpose.cu).

torch.nn.functional.conv_transpose2d's signature and semantics: input (N, C_in, H, W), weight
(C_in, C_out / groups, R, S), output (N, C_out, H_out, W_out) with the §9.7 size (dilation
included)::

    H_out = (H − 1)·stride_h − 2·pad_h + dilation_h·(R − 1) + output_padding_h + 1

``output_padding`` must be smaller than the stride or the dilation (per dimension), as in
PyTorch (``cuconv.problem.ConvTransposeProblem`` is the one definition, shared with the cost
model). Computed as the gradient of a convolution with respect to its input, by a direct
gather (each output reads the inputs and taps that reach it): no zero-inserted tensor, no
col2im workspace, no atomics.

Kernels: ``conv_transpose2d_f32_simple`` (one output per thread, every tap tested) and
``conv_transpose2d_f32_phase_co{4,8}`` (a block per output phase, so all its threads share one
set of taps, and 4 or 8 output channels per thread); the same in float64 (``..._f64_...``,
4 channels per thread).
"""
from __future__ import annotations

import numpy as np

from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, tag
from ..plan import Launch, Output, Plan
from ..problem import ConvTransposeProblem
from ..registry import KernelEntry, register_kernel
from . import _common
from ._common import OUT, W, X, i32
from ._frontend import FrontEnd, plan_of

FILE = "conv_transpose.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4
MAX_BLOCKS = 1 << 16

VARIANTS = ("auto", "simple", "phase")
# (dtype, kernel) -> (label, expression); kernel "simple" or the phase kernel's CO_TILE: 4 and
# 8 in float32, 4 in float64 (8 double accumulators plus the loop state spill at the 64-register
# budget of 4 blocks/SM on sm_90).
CO_TILES = {"float32": (4, 8), "float64": (4,)}
KERNELS = {}
for _dt in CUDA_CORE_DTYPES:
    _tag, _ct = tag(_dt), ctype(_dt)
    KERNELS[(_dt, "simple")] = (f"conv_transpose2d_{_tag}_simple", f"conv_transpose2d_simple<{_ct}>")
    for _co in CO_TILES[_dt]:
        KERNELS[(_dt, _co)] = (f"conv_transpose2d_{_tag}_phase_co{_co}", f"conv_transpose2d_phase<{_ct}, {_co}>")
SIMPLE_NAME, SIMPLE_EXPRESSION = KERNELS[("float32", "simple")]
PHASE = {co: KERNELS[("float32", co)] for co in (4, 8)}

ENTRIES = {expr: register_kernel(KernelEntry(FILE, expr, label, block_threads=THREADS,
                                             min_blocks_per_sm=MIN_BLOCKS_PER_SM,
                                             main=key == ("float32", 8)))
           for key, (label, expr) in KERNELS.items()}


def kernel_limits(p: ConvTransposeProblem) -> str | None:
    """The kernels' 32-bit extents, or None."""
    for name, v in (("H_out", p.H_out), ("W_out", p.W_out), ("C_out", p.C_out)):
        if v > INT32_MAX:
            return f"{name}={v} does not fit a 32-bit int"
    if (p.C_out // p.groups) * p.R * p.S > INT32_MAX:
        return (f"C_out/groups·R·S={(p.C_out // p.groups) * p.R * p.S} does not fit the kernels' 32-bit "
                "per-channel weight offsets")
    return None


def _phase_blocks(p: ConvTransposeProblem, co_tile: int) -> int:
    cout_g = p.C_out // p.groups
    hp = -(-p.H_out // p.stride_h)
    wp = -(-p.W_out // p.stride_w)
    return (p.N * p.groups * (-(-cout_g // co_tile)) * p.stride_h * p.stride_w
            * (-(-(hp * wp) // THREADS)))


def choose_kernel(p: ConvTransposeProblem, variant: str = "auto") -> tuple[str, str, int]:
    """(kernel label, expression, grid blocks) for ``p`` (of its dtype)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant in ("auto", "phase"):
        co = 8 if p.C_out // p.groups >= 8 and 8 in CO_TILES[p.dtype] else 4
        hp = -(-p.H_out // p.stride_h)
        wp = -(-p.W_out // p.stride_w)
        blocks = _phase_blocks(p, co)
        if blocks <= INT32_MAX and hp * wp <= INT32_MAX:
            label, expr = KERNELS[(p.dtype, co)]
            return label, expr, blocks
        if variant == "phase":
            raise ValueError(f"variant='phase' cannot run {p.describe()}: {blocks} blocks exceed "
                             "the grid limit 2**31-1")
    total = p.N * p.C_out * p.H_out * p.W_out
    label, expr = KERNELS[(p.dtype, "simple")]
    return label, expr, _common.grid_1d(total, THREADS, MAX_BLOCKS)


def _plan(be, env, args, extra, misaligned) -> Plan:
    stride, padding, output_padding, groups, dilation, activation, variant = args
    x, w, bias, out = env["x"], env["w"], env["bias"], env["out"]
    x = _common.as_tensor(x, "input", dtypes=CUDA_CORE_DTYPES, be=be)
    if x.ndim != 4:
        raise ValueError(f"input must be 3-D (C_in, H, W, unbatched) or 4-D, got shape {tuple(x.shape)}")
    dt = np.dtype(x.dtype).name
    w = _common.as_tensor(w, "weight", ndim=4, dtypes=CUDA_CORE_DTYPES, be=be)
    if np.dtype(w.dtype).name != dt:
        raise TypeError(f"input and weight must have the same dtype, got {dt} and {np.dtype(w.dtype).name}")
    p = ConvTransposeProblem.from_shapes(x.shape, w.shape, stride, padding, output_padding, groups, dilation, dt)
    reason = kernel_limits(p)
    if reason:
        raise ValueError(f"{reason} ({p.describe()})")
    _common.optional_tensor(bias, "bias", (p.C_out,), dt, be)
    act = _common.activation_code(activation)
    _common.same_device(be, input=x, weight=w, bias=bias, out=out)
    if out is not None:
        _common.check_out(out, p.output_shape, dt, be)
    label, expr, grid = choose_kernel(p, variant)
    launches = [] if p.N == 0 else [Launch(ENTRIES[expr], (grid, 1, 1), (THREADS, 1, 1), (
        X, W, _common.optional_ref(bias is not None, "bias", dt), OUT,
        i32(p.N), i32(p.C_in), i32(p.H), i32(p.W), i32(p.C_out), i32(p.H_out), i32(p.W_out),
        i32(p.R), i32(p.S), i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w),
        i32(p.dilation_h), i32(p.dilation_w), i32(p.groups), i32(bias is not None), i32(act)))]
    return Plan("conv_transpose2d", label, p, tuple(launches), ("x", "w", "bias"),
                (Output("out", p.output_shape, np.dtype(dt)),), be.device_key(),
                absent=frozenset(() if bias is not None else ("bias",)),
                expected=(("x", p.input_shape, dt), ("w", p.weight_shape, dt), ("bias", (p.C_out,), dt)))


_FRONT = FrontEnd("conv_transpose2d", ("x", "w", "bias", "out"), _plan, batched=("x", "out"),
                  names={"x": "input", "w": "weight"})


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, activation=None, out=None, variant: str = "auto"):
    """Transposed 2-D convolution (torch.nn.functional.conv_transpose2d), NCHW, float32 or float64.

    ``y = activation(conv_transpose(x, w) + bias)``. ``variant`` ("auto", "simple", "phase")
    forces a kernel, for tests and benchmarks.
    """
    return _FRONT({"x": x, "w": w, "bias": bias, "out": out},
                  (stride, padding, output_padding, groups, dilation, activation, variant))


plan_conv_transpose2d = plan_of(conv_transpose2d)
