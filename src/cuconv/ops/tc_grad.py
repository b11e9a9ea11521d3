"""float16 / bfloat16 conv2d gradients on tensor cores, fp32 accumulation (kernels/tc_grad.cu,
plus the forward's kernels/tc_conv.cu for dgrad): the ``implicit_gemm_tc`` and
``implicit_gemm_tc_simple`` algorithms of the ``DGRAD`` and of the ``WGRAD`` pass.

* dgrad, per stride phase: ``tc_dgrad_filter`` builds the phase's rotated, transposed
  sub-filter; the forward tensor-core convolution (ops/tc_conv.py's plan: the tiled cp.async
  kernel, or ``tc_conv_simple`` for ``implicit_gemm_tc_simple``) runs dy through it at stride 1
  and dilation doff; at stride > 1 ``tc_dgrad_scatter`` puts each phase's result at its positions
  in dx (zeros for phases no tap reaches). Every padding: where the padding reaches past the
  dilated filter (or the end is cropped: conv_transpose2d's output_padding), the phase
  convolution's padding is negative — it starts or stops inside dy, a crop the forward kernels'
  bounds tests already take — so no valid problem is refused. A phase convolution pads dy with
  zeros that a non-finite weight turns into NaN (0·Inf), a term torch's dgrad does not have:
  ``tc_dgrad_flags`` marks the input channels whose weights hold a NaN/Inf (first),
  ``tc_dgrad_fixup`` recomputes those channels' non-finite dx elements over their true terms
  (last; with finite weights it only reads the flags). The spec's bias and activation (set by
  ops/conv_transpose.py, whose float16/bfloat16 path is this dgrad) go into the last write of
  each element: the phase convolution's epilogue at stride 1, else the scatter, and the fix-up.
* wgrad: dW (and db): the tiled ``tc_wgrad_*_64x64x32_32x32`` (``implicit_gemm_tc_simple``:
  ``tc_wgrad_simple``), split-K with fp32 partials in a workspace (``splits=`` overrides the
  rule), + ``tc_grad_reduce`` (one rounding to the output dtype, deterministic); db by
  ``tc_bias_grad``.
* Layouts: NCHW/KCRS, or NHWC/KRSC read and written as they are (no conversion step): the
  phase filter is built KRSC and the forward kernel runs NHWC (packing only where Kg is odd or
  dy misaligned, as the forward does); the wgrad gathers with the layout's strides and takes its
  GEMM columns in (r, s, c) order, so dW comes out KRSC.

Every kernel is registered with ``cuda_headers=True`` (the CUDA include path on the GPU).
"""
from __future__ import annotations

import math

from ..dtypes import INT32_MAX, TENSOR_CORE_DTYPES, ctype, tag
from ..plan import Launch, PlanError, Ref, layout_buffers, relabel
from ..problem import Conv2dProblem
from ..registry import ARCHS, KernelEntry, register_kernel
from . import _common, tc_conv
from ._algorithm import DGRAD, WGRAD, ConvAlgorithm, ConvSpec, conv_plan
from ._common import i32, i64
from ._grad import DB, DW, DX, DY, W, X, split_chunk
from .tc_common import ARCHS_SM80, arch_reason, conv_limits

FILE = "tc_grad.cu"
DTYPES = TENSOR_CORE_DTYPES
# CUDA function -> threads per block; labelled tc_grad_<function without tc_ and grad_>_<dtype>.
KERNELS = {"tc_dgrad_filter": 256, "tc_dgrad_scatter": 256, "tc_wgrad_simple": 128, "tc_grad_reduce": 256,
           "tc_bias_grad": 256, "tc_dgrad_flags": 256, "tc_dgrad_fixup": 256}
# Blocks per SM promised to the compile matrix (all fit on sm_75's 1024 threads per SM).
MIN_BLOCKS = {"tc_dgrad_filter": 4, "tc_dgrad_scatter": 4, "tc_wgrad_simple": 8, "tc_grad_reduce": 4,
              "tc_bias_grad": 4, "tc_dgrad_flags": 4, "tc_dgrad_fixup": 4}
MAX_BLOCKS = 1 << 16
WGRAD_TILE_M, WGRAD_TILE_N = 32, 16     # tc_wgrad_simple's block tile
# The tiled wgrad: (BM, BN, BK, WM, WN, blocks per SM); 4 warps of 32x32, 128 threads.
TILED = (64, 64, 32, 32, 32, 2)
TARGET_BLOCKS_PER_SM = 2
MIN_SPLIT_LEN = 256               # reduction indices per wgrad split (16 mma k-steps)
DEFAULT_MAX_WORKSPACE_BYTES = 64 << 20
# The activation layouts each pass reads and writes as they are (NHWC: KRSC weights).
LAYOUTS = {DGRAD: ("NCHW", "NHWC"), WGRAD: ("NCHW", "NHWC")}


def name(kernel: str, dtype: str) -> str:
    middle = kernel.removeprefix("tc_").removeprefix("grad_").replace("bias_grad", "bias")
    return f"tc_grad_{middle}_{tag(dtype)}"


def expression(kernel: str, dtype: str) -> str:
    return f"{kernel}<{ctype(dtype)}>"


# bf16 mma needs sm_80 (the project's convention for every bf16 tensor-core kernel)
ENTRIES = {(k, dt): register_kernel(KernelEntry(FILE, expression(k, dt), name(k, dt), block_threads=threads,
                                                min_blocks_per_sm=MIN_BLOCKS[k], cuda_headers=True,
                                                archs=ARCHS if dt == "float16" else ARCHS_SM80))
           for k, threads in KERNELS.items() for dt in DTYPES}


def tiled_name(dtype: str) -> str:
    bm, bn, bk, wm, wn, _ = TILED
    return f"tc_grad_wgrad_{tag(dtype)}_{bm}x{bn}x{bk}_{wm}x{wn}"


def tiled_expression(dtype: str) -> str:
    return f"tc_wgrad<{ctype(dtype)}, {', '.join(map(str, TILED))}>"


TILED_ENTRIES = {dt: register_kernel(KernelEntry(FILE, tiled_expression(dt), tiled_name(dt), block_threads=128,
                                                 min_blocks_per_sm=TILED[5], cuda_headers=True,
                                                 archs=ARCHS if dt == "float16" else ARCHS_SM80,
                                                 main=dt == "float16"))
                 for dt in DTYPES}


def _launch(kernel, dtype, grid, block, args) -> Launch:
    return Launch(ENTRIES[(kernel, dtype)], grid, block, args)


def _phase_conv(spec: ConvSpec, q: Conv2dProblem, dy: Ref, wp: Ref, out: Ref, config, prefix: str, epilogue: bool):
    """(launches, workspace parts, aligned roles) of the forward tensor-core convolution of a
    dgrad phase: dy through the phase filter wp into out (ops/tc_conv.py's plan, relabelled), in
    the spec's layout; ``epilogue``: with the spec's bias and activation."""
    sub = ConvSpec(q, spec.layout, spec.caps, spec.device, has_bias=epilogue and spec.has_bias,
                   act=spec.act if epilogue else 0,
                   misaligned=frozenset("x" for r in (dy.name,) if r in spec.misaligned))
    plan = tc_conv.tc_conv_plan(sub, "implicit_gemm_tc_simple" if config == "simple" else "implicit_gemm_tc",
                                config)
    names = {"x": dy.name, "w": wp.name, "out": out.name, "bias": "bias"}
    launches, parts = relabel(plan, names, prefix)
    return launches, parts, tuple(names[r] for r in plan.aligned if names.get(r) == dy.name)


# --------------------------------------------------------------------------- phases
def dgrad_taps(base: int, R: int, stride: int, dil: int) -> tuple[int, int, int, int, int]:
    """(first, step, count, off0, doff) — kernels/common.cuh's cc_dgrad_taps: the taps r with
    base − r·dil ≡ 0 (mod stride) are first + t·step, t < count; tap t sends phase row i to
    dy row i + off0 − t·doff."""
    step = stride // math.gcd(stride, dil)
    first = next((r for r in range(min(step, R)) if (base - r * dil) % stride == 0), R)
    count = (R - 1 - first) // step + 1 if first < R else 0
    off0 = (base - first * dil) // stride if first < R else 0
    return first, step, count, off0, step * dil // stride


def phase_problems(p: Conv2dProblem):
    """For each stride phase (a, b) with pixels: (a, b, Hp, Wp, taps_h, taps_w, forward problem of
    the phase's stride-1 convolution of dy, or None when no tap reaches the phase)."""
    out = []
    for a in range(p.stride_h):
        Hp = -(-(p.H - a) // p.stride_h)
        for b in range(p.stride_w):
            Wp = -(-(p.W - b) // p.stride_w)
            if Hp <= 0 or Wp <= 0:
                continue
            th = dgrad_taps(a + p.pad_h, p.R, p.stride_h, p.dilation_h)
            tw = dgrad_taps(b + p.pad_w, p.S, p.stride_w, p.dilation_w)
            if th[2] == 0 or tw[2] == 0:
                out.append((a, b, Hp, Wp, th, tw, None))
                continue
            pt = (th[2] - 1) * th[4] - th[3]
            pl = (tw[2] - 1) * tw[4] - tw[3]
            pb = Hp - p.P + th[3]
            pr = Wp - p.Q + tw[3]
            q = Conv2dProblem(p.N, p.K, p.P, p.Q, p.C, th[2], tw[2], 1, 1, pt, pl, th[4], tw[4], p.groups,
                              p.dtype, pb, pr)
            out.append((a, b, Hp, Wp, th, tw, q))
    return out


def can_implement_input(p: Conv2dProblem) -> str | None:
    """None for every valid float16/bfloat16 problem within the kernels' 32-bit limits: a phase
    convolution whose padding is negative (the padding reaches past the dilated filter, or a
    cropped end) starts or stops inside dy; the forward kernels' bounds tests cover that."""
    if p.dtype not in DTYPES:
        return f"the tensor-core gradients take float16 or bfloat16, got {p.dtype}"
    for *_, q in phase_problems(p):
        if q is None:
            continue
        reason = conv_limits(q)
        if reason:
            return reason
    if p.N * p.C * p.H * p.W > INT32_MAX * 4:
        return "dx too large"
    return None


def plan_dgrad(spec: ConvSpec, simple: bool) -> object:
    """dx from w and dy on tensor cores, per stride phase (see the module docstring), in the
    spec's layout (NCHW/KCRS or NHWC/KRSC, read and written as they are); ``simple``: the phases'
    convolutions on tc_conv_simple. The spec's bias and activation (conv_transpose2d's fused
    epilogue; none for the gradient) apply to every element of dx."""
    p, caps = spec.problem, spec.caps
    reason = can_implement_input(p)
    if reason:
        raise PlanError(f"tensor-core dgrad cannot run {p.describe()}: {reason}")
    reason = arch_reason(p.dtype, caps.cc)
    if reason:
        raise PlanError(f"tensor-core dgrad: {reason}")
    config = "simple" if simple else None
    unit = p.stride_h == p.stride_w == 1
    nhwc = spec.layout == "NHWC"
    bias = Ref("bias") if spec.has_bias else Ref.absent(tc_conv.storage_dtype(p.dtype))
    epi = (bias, i32(spec.has_bias), i32(spec.act))
    # Non-finite weights: per-channel flags first, the fix-up last (kernels/tc_grad.cu).
    c_flags = Ref("c_flags")
    parts, aligned = [(c_flags.name, "int32", p.C)], set()
    launches = [_launch("tc_dgrad_flags", p.dtype, (min(p.C, 1024), 1, 1), (256, 1, 1),
                        (W, c_flags, *(i32(v) for v in (p.K, p.C, p.R * p.S, p.groups, nhwc))))]
    for i, (a, b, Hp, Wp, th, tw, q) in enumerate(phase_problems(p)):
        geom = (*(i32(v) for v in (p.N, p.C, p.H, p.W, Hp, Wp, a, b, p.stride_h, p.stride_w)), i32(nhwc))
        grid = (_common.grid_1d(p.N * p.C * Hp * Wp, 256, MAX_BLOCKS), 1, 1)
        if q is None:
            launches.append(_launch("tc_dgrad_scatter", p.dtype, grid, (256, 1, 1), (DX, i32(0), DX, *epi, *geom)))
            continue
        wp = Ref(f"wp{i}")
        n_wp = p.C * p.K_per_group * q.R * q.S
        parts.append((wp.name, p.dtype, n_wp))
        launches.append(_launch("tc_dgrad_filter", p.dtype, (_common.grid_1d(n_wp, 256, MAX_BLOCKS), 1, 1),
                                (256, 1, 1), (W, wp, *(i32(v) for v in (
                                    p.K, p.C_per_group, p.R, p.S, p.groups, th[0], th[1], th[2],
                                    tw[0], tw[1], tw[2], nhwc)))))
        out = DX if unit else Ref(f"ph{i}")
        if not unit:
            parts.append((out.name, p.dtype, p.N * p.C * Hp * Wp))
        lns, sub_parts, sub_aligned = _phase_conv(spec, q, DY, wp, out, config, f"q{i}.", unit)
        launches += lns
        parts += sub_parts
        aligned.update(sub_aligned)
        if not unit:
            launches.append(_launch("tc_dgrad_scatter", p.dtype, grid, (256, 1, 1), (out, i32(1), DX, *epi, *geom)))
    c_blocks = min(p.C, 256)       # at most 1024 blocks, each reading a flag per channel it owns
    launches.append(_launch("tc_dgrad_fixup", p.dtype, (_common.grid_1d(p.N * p.H * p.W, 256, 1024 // c_blocks),
                                                         c_blocks, 1),
                            (256, 1, 1), (W, DY, DX, c_flags, *epi, i32(nhwc), *_common.conv_geometry_args(p))))
    return conv_plan(spec, "implicit_gemm_tc_simple" if simple else "implicit_gemm_tc", launches,
                     workspace=layout_buffers(*parts), aligned=tuple(sorted(aligned)),
                     description="per stride phase: sub-filter, tensor-core forward convolution, scatter; "
                                 "the fix-up of elements a non-finite weight met over dy's padding")


# --------------------------------------------------------------------------- wgrad
def wgrad_tiles(p: Conv2dProblem, tiled: bool = True) -> int:
    """Blocks per split of the tiled (64x64) or simple (32x16) wgrad."""
    bm, bn = (TILED[0], TILED[1]) if tiled else (WGRAD_TILE_M, WGRAD_TILE_N)
    return p.groups * -(-p.K_per_group // bm) * -(-(p.C_per_group * p.R * p.S) // bn)


def choose_wgrad_splits(p: Conv2dProblem, sms: int = 132, max_workspace_bytes: int | None = None,
                        tiled: bool = True) -> int:
    """Splits of the N·P·Q reduction: enough for TARGET_BLOCKS_PER_SM blocks per SM, at least
    MIN_SPLIT_LEN reduction indices each, and the fp32 workspace splits·K·Cg·R·S·4 bytes within
    ``max_workspace_bytes`` (None: DEFAULT_MAX_WORKSPACE_BYTES). At least 1: the fp32 partials
    always go through the workspace (the output is rounded once, by the reduction)."""
    limit = DEFAULT_MAX_WORKSPACE_BYTES if max_workspace_bytes is None else max_workspace_bytes
    per_split = p.K * p.C_per_group * p.R * p.S * 4
    if limit < per_split:
        raise ValueError(f"the tensor-core wgrad needs at least {per_split} bytes of fp32 workspace "
                         f"(one split of K·Cg·R·S), max_workspace_bytes={limit}")
    L = p.N * p.P * p.Q
    splits = min(-(-(TARGET_BLOCKS_PER_SM * sms) // wgrad_tiles(p, tiled)), max(1, L // MIN_SPLIT_LEN), 65535,
                 limit // per_split)
    return max(1, splits)


def can_implement_weight(p: Conv2dProblem) -> str | None:
    if p.dtype not in DTYPES:
        return f"the tensor-core gradients take float16 or bfloat16, got {p.dtype}"
    if p.C_per_group * p.R * p.S > INT32_MAX - 64 or p.K > INT32_MAX - 64 or p.P * p.Q > INT32_MAX:
        return "K, Cg·R·S or P·Q does not fit the kernel's 32-bit indices"
    if p.K * p.P * p.Q > INT32_MAX or p.C * p.H * p.W > INT32_MAX:
        return "an image of dy (K·P·Q) or of x (C·H·W) has more than 2**31-1 elements (32-bit offsets)"
    if wgrad_tiles(p) > INT32_MAX:
        return "too many blocks for a 1-D grid"
    return None


def wgrad_splits(p: Conv2dProblem, sms: int, max_workspace_bytes: int | None, splits: int | None,
                 tiled: bool) -> tuple[int, int]:
    """(splits, chunk) of the tensor-core wgrad (``splits`` overrides the rule)."""
    n = choose_wgrad_splits(p, sms, max_workspace_bytes, tiled) if splits is None else splits
    if not 1 <= n <= 65535:
        raise ValueError(f"splits must be in 1..65535, got {n}")
    n, chunk = split_chunk(p.N * p.P * p.Q, n, TILED[2] if tiled else 16)
    if chunk > INT32_MAX:
        raise ValueError(f"tensor-core wgrad: {chunk} reduction indices per split exceed the kernel's 32-bit "
                         f"reduction length; allow more splits")
    return n, chunk


def bias_launch(dtype: str, N: int, K: int, PQ: int, dy=DY, db=DB) -> Launch:
    """db[k] = Σ dy[n, k, :] over n and the P·Q outputs, fp32 accumulation (one block per channel)."""
    return _launch("tc_bias_grad", dtype, (K, 1, 1), (256, 1, 1), (dy, db, i32(N, "N"), i32(K, "K"), i32(PQ, "P·Q")))


def plan_wgrad(spec: ConvSpec, simple: bool) -> object:
    """dW (and db when the spec asks for it) from x and dy: fp32 split-K partials in the workspace,
    one rounding in the deterministic reduction; ``simple``: tc_wgrad_simple. N = 0 gives zeros
    (the reduction over no splits). NHWC: x and dy read as they are, dW written KRSC (the GEMM's
    columns taken in (r, s, c) order)."""
    p, caps = spec.problem, spec.caps
    tiled = not simple
    reason = can_implement_weight(p) or arch_reason(p.dtype, caps.cc)
    if reason:
        raise PlanError(f"tensor-core wgrad cannot run {p.describe()}: {reason}")
    dt = p.dtype
    algo = "implicit_gemm_tc_simple" if simple else "implicit_gemm_tc"
    n_w = p.K * p.C_per_group * p.R * p.S
    grid = (_common.grid_1d(n_w, 256, MAX_BLOCKS), 1, 1)
    # NHWC dy: the same kernel on N·P·Q rows of one element per channel (conv2d_grad.bias_plan)
    rows, per_row = (p.N * p.P * p.Q, 1) if spec.layout == "NHWC" else (p.N, p.P * p.Q)
    tail = [bias_launch(dt, rows, p.K, per_row)] if spec.has_bias else []
    if p.N == 0:
        zeros = _launch("tc_grad_reduce", dt, grid, (256, 1, 1), (Ref.absent("float32"), i32(0), i64(n_w), DW))
        return conv_plan(spec, algo, [zeros, *tail], description="0 split(s), fp32 partials, deterministic reduction")
    try:
        n, chunk = wgrad_splits(p, caps.sms, spec.max_workspace_bytes, spec.option("splits"), tiled)
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    ws = Ref("ws")
    nhwc = spec.layout == "NHWC"
    args = (X, DY, ws, *_common.conv_geometry_args(p), i64(chunk))
    aligned = ()
    if tiled:
        # dy pairs as 32-bit words: NCHW, P·Q even and dy aligned (a view may not be).
        pairs = not nhwc and (p.P * p.Q) % 2 == 0 and spec.aligned("dy")
        aligned = ("dy",) if pairs else ()
        main = Launch(TILED_ENTRIES[dt], (wgrad_tiles(p, True), n, 1), (128, 1, 1), (*args, i32(pairs), i32(nhwc)))
    else:
        main = _launch("tc_wgrad_simple", dt, (wgrad_tiles(p, False), n, 1), (128, 1, 1), (*args, i32(nhwc)))
    reduce = _launch("tc_grad_reduce", dt, grid, (256, 1, 1), (ws, i32(n), i64(n_w), DW))
    return conv_plan(spec, algo, [main, reduce, *tail], workspace=layout_buffers(("ws", "float32", n * n_w)),
                     aligned=aligned, description=f"{n} split(s), fp32 partials, deterministic reduction")


def _algorithms(operator: str, plan):
    what = "dx per stride phase through the forward tensor-core convolution" if operator == DGRAD else \
        "split-K dW (db fused) with fp32 partials and a deterministic reduction"
    common = dict(dtypes=DTYPES, options=() if operator == DGRAD else ("splits",), operator=operator, crops=True,
                  layouts=LAYOUTS[operator])
    return (ConvAlgorithm(name="implicit_gemm_tc", plan=lambda spec: plan(spec, False), **common,
                          description=f"tensor cores (mma.sync), fp32 accumulation: {what}, tiled kernels"),
            ConvAlgorithm(name="implicit_gemm_tc_simple", plan=lambda spec: plan(spec, True), **common,
                          description=f"tensor cores, analytic kernels: {what}"))


DGRAD_ALGORITHMS = _algorithms(DGRAD, plan_dgrad)
WGRAD_ALGORITHMS = _algorithms(WGRAD, plan_wgrad)
