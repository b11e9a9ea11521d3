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
4 channels per thread). ``layout="NHWC"``: the same kernels with NHWC strides (x N,H,W,C_in; w
C_in,R,S,C_out/g; y N,H_out,W_out,C_out), no conversion. float16/bfloat16: the tensor-core data
gradient of ``as_conv2d()`` (ops/tc_grad.py's plan, any padding, either layout) with the bias and
activation fused into its last write of each element.
"""
from __future__ import annotations

from ..backend import planning_target
from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, TENSOR_CORE_DTYPES, ctype, name_of, numpy_dtype, tag
from ..plan import Launch, Output, Plan, PlanError, layout_buffers, relabel
from ..problem import ConvTransposeProblem
from ..registry import KernelEntry, register_kernel
from . import _common, tc_grad
from ._algorithm import DGRAD, ConvSpec
from ._common import OUT, W, X, i32
from ._conv_frontend import check_layout, layout_shapes
from ._frontend import FrontEnd, plan_of

FILE = "conv_transpose.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4
MAX_BLOCKS = 1 << 16

VARIANTS = ("auto", "simple", "phase")
DTYPES = CUDA_CORE_DTYPES + TENSOR_CORE_DTYPES
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


def _tc_plan(be, p: ConvTransposeProblem, layout: str, has_bias: bool, act: int, variant: str, misaligned) -> Plan:
    """float16/bfloat16: the tensor-core data gradient (ops/tc_grad.py) of the convolution whose
    data gradient this transposed convolution is, with the bias and activation fused into its
    last write of each element; its roles renamed (dy -> x, dx -> out)."""
    if variant == "phase":
        raise ValueError("variant='phase' is conv_transpose.cu's float32/float64 kernel; float16 and bfloat16 run "
                         "on tensor cores (variant 'auto' or 'simple')")
    caps, device = planning_target(be)
    spec = ConvSpec(p.as_conv2d(), layout, caps, device, has_bias=has_bias, act=act, operator=DGRAD,
                    misaligned=frozenset({"x": "dy", "w": "w"}[r] for r in misaligned if r in ("x", "w")))
    algo = next(a for a in tc_grad.DGRAD_ALGORITHMS
                if a.name == ("implicit_gemm_tc_simple" if variant == "simple" else "implicit_gemm_tc"))
    try:
        inner = algo.make_plan(spec)
    except PlanError as exc:
        raise ValueError(f"conv_transpose2d cannot run {p.describe()} on tensor cores: {exc}") from None
    names = {"dy": "x", "w": "w", "dx": "out", "bias": "bias"}
    launches, parts = relabel(inner, names, "")
    buffers, nbytes = layout_buffers(*parts)
    return _transpose_plan(p, inner.algo, launches, layout, has_bias, device, workspace_bytes=nbytes,
                           buffers=buffers, aligned=tuple(sorted(names[r] for r in inner.aligned if r in names)),
                           description=inner.description)


def _transpose_plan(p: ConvTransposeProblem, label: str, launches, layout: str, has_bias: bool, device,
                    **extra) -> Plan:
    dt = p.dtype
    x_shape, w_shape, y_shape = p.input_shape, p.weight_shape, p.output_shape
    if layout == "NHWC":
        x_shape, w_shape, y_shape = (_nhwc(s) for s in (x_shape, w_shape, y_shape))
    return Plan("conv_transpose2d", label, p, tuple(launches), ("x", "w", "bias"),
                (Output("out", y_shape, numpy_dtype(dt)),), device,
                absent=frozenset(() if has_bias else ("bias",)),
                expected=(("x", x_shape, dt), ("w", w_shape, dt), ("bias", (p.C_out,), dt)), **extra)


def _nhwc(shape):
    """(A, B, C, D) -> (A, C, D, B): NCHW -> NHWC, and C_in × C_out/g × R × S -> C_in × R × S × C_out/g."""
    return (shape[0], shape[2], shape[3], shape[1])


def _plan(be, env, args, extra, misaligned) -> Plan:
    stride, padding, output_padding, groups, dilation, activation, variant, layout = args
    x, w, bias, out = env["x"], env["w"], env["bias"], env["out"]
    check_layout(layout)
    x = _common.as_tensor(x, "input", dtypes=DTYPES, be=be)
    if x.ndim != 4:
        raise ValueError(f"input must be 3-D (C_in, H, W, unbatched) or 4-D, got shape {tuple(x.shape)}")
    dt = name_of(x.dtype)
    w = _common.as_tensor(w, "weight", ndim=4, dtypes=DTYPES, be=be)
    if w.dtype != x.dtype:
        raise TypeError(f"input and weight must have the same dtype, got {x.dtype} and {w.dtype}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    p = ConvTransposeProblem.from_shapes(*layout_shapes(tuple(x.shape), tuple(w.shape), layout), stride, padding,
                                         output_padding, groups, dilation, dt)
    reason = kernel_limits(p)
    if reason:
        raise ValueError(f"{reason} ({p.describe()})")
    _common.optional_tensor(bias, "bias", (p.C_out,), dt, be)
    act = _common.activation_code(activation)
    _common.same_device(be, input=x, weight=w, bias=bias, out=out)
    if out is not None:
        _common.check_out(out, p.output_shape if layout == "NCHW" else _nhwc(p.output_shape), dt, be)
    if dt in TENSOR_CORE_DTYPES:
        return _tc_plan(be, p, layout, bias is not None, act, variant, misaligned)
    label, expr, grid = choose_kernel(p, variant)
    launches = [] if p.N == 0 else [Launch(ENTRIES[expr], (grid, 1, 1), (THREADS, 1, 1), (
        X, W, _common.optional_ref(bias is not None, "bias", dt), OUT,
        i32(p.N), i32(p.C_in), i32(p.H), i32(p.W), i32(p.C_out), i32(p.H_out), i32(p.W_out),
        i32(p.R), i32(p.S), i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w),
        i32(p.dilation_h), i32(p.dilation_w), i32(p.groups), i32(bias is not None), i32(act),
        i32(layout == "NHWC")))]
    return _transpose_plan(p, label, launches, layout, bias is not None, be.device_key())


_FRONT = FrontEnd("conv_transpose2d", ("x", "w", "bias", "out"), _plan, batched=("x", "out"),
                  names={"x": "input", "w": "weight"})


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, activation=None, out=None, variant: str = "auto", layout: str = "NCHW"):
    """Transposed 2-D convolution (torch.nn.functional.conv_transpose2d): float32, float64,
    float16 or bfloat16 (tensor cores, fp32 accumulation, one rounding).

    ``y = activation(conv_transpose(x, w) + bias)``. ``layout="NHWC"``: x (N, H, W, C_in), w
    (C_in, R, S, C_out/groups), y (N, H_out, W_out, C_out), read and written as they are.
    ``variant`` ("auto", "simple", "phase") forces a kernel, for tests and benchmarks (float16/
    bfloat16: "auto" the tiled tensor-core kernels, "simple" the analytic ones).
    """
    return _FRONT({"x": x, "w": w, "bias": bias, "out": out},
                  (stride, padding, output_padding, groups, dilation, activation, variant, layout))


plan_conv_transpose2d = plan_of(conv_transpose2d)
