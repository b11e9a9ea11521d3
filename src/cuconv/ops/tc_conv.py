"""Tensor-core implicit-GEMM convolution (kernels/tc_conv.cu): fp16, bf16, tf32; fp32 accumulation.

* ``tc_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NHWC",
  allow_tf32=False, activation=None, residual=None, out=None, config=None)`` — NHWC input with
  KRSC weights (the tensor-core layout), or NCHW / KCRS with ``layout="NCHW"``.
* conv2d algorithms: ``"implicit_gemm_tc"`` (float16, bfloat16), ``"implicit_gemm_tc_simple"``
  (the analytic variant; no workspace, any layout; float32 runs as tf32), and
  ``"implicit_gemm_tf32"`` (float32 on tf32 tensor cores, only when the caller opts in —
  PyTorch's ``allow_tf32=False`` habit).

Layout paths of the fast kernel: NHWC input whose per-group channel count Cg admits a cp.async
width (Cg even for 16-bit types) and whose arrays are 16-byte aligned runs directly; NCHW
input, and NHWC input with odd Cg or misaligned arrays, are first packed by ``tc_pack_nhwc``
into an NHWC workspace with Cg padded to a multiple of 8 (16-bit) or 4 (tf32); the weights are
packed the same way; the kernel then writes the output in the caller's layout from its epilogue.
The plan's workspace is exactly what its pack launches write (none on the direct NHWC path).
"""
from __future__ import annotations

import math

from ..plan import Launch, PlanError, Ref, layout_buffers
from ..problem import Conv2dProblem
from ._algorithm import ConvAlgorithm, ConvSpec, conv_plan
from ._common import OUT, W, X, i32, i64
from ._conv_frontend import ConvFrontEnd
from .tc_common import (  # noqa: F401
    AUX,
    AUX_ENTRIES,
    CONV_FILE,
    VEC_WIDTHS,
    ELEMENT_VEC,
    ENTRIES,
    TcConfig,
    arch_reason,
    check_dtype,
    conv_limits,
    find_config,
    kernel_dtype,
    pad_to,
    pick_vec,
    resolve_named,
)


def choose_conv_config(kdt: str, p: Conv2dProblem, vec: int, cc: int = 90, sms: int = 132) -> TcConfig:
    """The default convolution config (a heuristic, not tuned by measurement yet): the
    128x128 tile when K/groups > 64, 16-byte copies are possible and it gives every SM a
    block; else 64x64 (small M·K/groups, misaligned channels, grouped layers). sm_75 takes
    the 2-stage fp16 configs. The 128x128 tile runs as 4 warps of 64x64 where two of its
    blocks fit an SM (sm_80, sm_90, sm_100: 8 warps; its static issue ratio is ~35 % above the
    64x32 warps', `cuconv kernels --analyze --file tc_conv.cu`), else as 8 warps of 64x32."""
    M = p.N * p.P * p.Q
    big = math.ceil(M / 128) * math.ceil(p.K_per_group / 128) * p.groups
    if vec == VEC_WIDTHS[kdt][0] and p.K_per_group > 64 and big >= sms:
        wide = find_config("conv", kdt, 128, 4, vec, wn=64) if cc >= 80 else None
        if wide is not None and ENTRIES[wide].min_blocks(f"sm_{cc}") >= 2:
            return wide
        return find_config("conv", kdt, 128, 2 if cc < 80 else 4, vec, wn=32)
    return find_config("conv", kdt, 64, 2 if cc < 80 else 3, vec)


def storage_dtype(kdt: str) -> str:
    """NumPy dtype of a workspace holding kdt elements (bf16 as its 16-bit pattern)."""
    return {"float16": "float16", "bfloat16": "uint16", "tf32": "float32"}[kdt]


def pack_launch(kdt, src: Ref, dst: Ref, n, C, HW, groups, Cgp, strides) -> Launch:
    """tc_pack_nhwc: (n, C, HW) with the given element strides -> NHWC, channels padded per group."""
    grid = (math.ceil(groups * Cgp / 32), math.ceil(HW / 32), n)
    return Launch(AUX_ENTRIES[("tc_pack_nhwc", kdt)], grid, (256, 1, 1),
                  (src, dst, i32(n), i32(C), i32(HW), i32(groups), i32(Cgp), *(i64(s) for s in strides)))


def tc_conv_plan(spec: ConvSpec, algo: str, config=None):
    """The launches of the tensor-core convolution for ``spec`` (config None: the heuristic;
    "simple": the analytic kernel)."""
    p, layout = spec.problem, spec.layout
    kdt = kernel_dtype(p.dtype)
    if kdt not in VEC_WIDTHS:
        raise PlanError(f"tensor cores take float16, bfloat16 or float32 (as tf32), got {p.dtype}")
    cc, sms = spec.caps.cc, spec.caps.sms
    reason = conv_limits(p) or arch_reason(kdt, cc)
    if reason:
        raise PlanError(reason)
    ph = Ref.absent(storage_dtype(kdt) if kdt != "tf32" else "float32")
    epi = (Ref("bias") if spec.has_bias else ph, i32(spec.has_bias),
           Ref("residual") if spec.has_residual else ph, i32(spec.has_residual), OUT,
           i32(p.N), i32(p.H), i32(p.W))
    geom = (i32(p.K), i32(p.R), i32(p.S), i32(p.P), i32(p.Q), i32(p.stride_h), i32(p.stride_w),
            i32(p.pad_h), i32(p.pad_w), i32(p.dilation_h), i32(p.dilation_w), i32(p.groups), i32(spec.act))
    HW, Cg = p.H * p.W, p.C_per_group
    if config == "simple":
        if layout == "NCHW":
            xs, ws = (p.C * HW, HW, p.W, 1), (Cg * p.R * p.S, p.R * p.S, p.S, 1)
            os_ = (p.K * p.P * p.Q, p.P * p.Q, p.Q, 1)
        else:
            xs, ws = (HW * p.C, 1, p.W * p.C, p.C), (p.R * p.S * Cg, 1, p.S * Cg, Cg)
            os_ = (p.P * p.Q * p.K, 1, p.Q * p.K, p.K)
        grid = (p.groups * math.ceil(p.N * p.P * p.Q / 32) * math.ceil(p.K_per_group / 16), 1, 1)
        launch = Launch(AUX_ENTRIES[("tc_conv_simple", kdt)], grid, (128, 1, 1),
                        (X, W, *epi, i32(p.C), *geom, *(i64(v) for v in (*xs, *ws, *os_))))
        return conv_plan(spec, algo, [launch])
    aligned = spec.aligned("x") and spec.aligned("w")
    vec = pick_vec(kdt, (Cg,), aligned) if layout == "NHWC" else None
    if vec is None and layout == "NHWC" and kdt != "tf32":
        vec = ELEMENT_VEC           # odd Cg or unaligned arrays: one element per copy, in place
    pack = vec is None
    Cgp = pad_to(Cg, kdt) if pack else Cg
    if config is None:
        config = choose_conv_config(kdt, p, vec or VEC_WIDTHS[kdt][0], cc, sms)
    reason = config.can_implement(p.with_(C=p.groups * Cgp), cc=cc)
    if reason is None and not pack and not aligned and config.vec != ELEMENT_VEC:
        reason = f"{config.name} needs input and weight {config.vec * config.esize}-byte aligned"
    if reason:
        raise PlanError(f"config {config.name} cannot run {p.describe()} ({layout}): {reason}")
    launches, workspace, xin, win = [], (), X, W
    if pack:
        sdt = storage_dtype(kdt)
        workspace = layout_buffers(("xp", sdt, p.N * HW * p.groups * Cgp), ("wp", sdt, p.K * p.R * p.S * Cgp))
        xin, win, RS = Ref("xp"), Ref("wp"), p.R * p.S
        strides = (p.C * HW, HW, 1) if layout == "NCHW" else (HW * p.C, 1, p.C)
        launches.append(pack_launch(kdt, X, xin, p.N, p.C, HW, p.groups, Cgp, strides))
        strides = (Cg * RS, RS, 1) if layout == "NCHW" else (RS * Cg, 1, Cg)
        launches.append(pack_launch(kdt, W, win, p.K, Cg, RS, 1, Cgp, strides))
    M = p.N * p.P * p.Q
    grid = (p.groups * math.ceil(M / config.bm) * math.ceil(p.K_per_group / config.bn), 1, 1)
    launches.append(Launch(ENTRIES[config], grid, (config.threads, 1, 1),
                           (xin, win, *epi, i32(p.groups * Cgp), *geom, i32(layout == "NCHW")),
                           config.smem_bytes))
    any_alignment = pack or config.vec == ELEMENT_VEC     # packed, or one-element copies: no alignment asked
    return conv_plan(spec, algo, launches, workspace=workspace, aligned=() if any_alignment else ("x", "w"))


def _algorithm_plan(algo: str):
    def plan(spec: ConvSpec):
        config = spec.option("config")
        kdt = kernel_dtype(spec.dtype)
        if config is not None:
            config = resolve_named(config, "conv", kdt)
        if algo == "implicit_gemm_tc_simple":
            config = "simple"
        return tc_conv_plan(spec, algo, config)
    return plan


IMPLICIT_GEMM_TC = ConvAlgorithm(
    name="implicit_gemm_tc", plan=_algorithm_plan("implicit_gemm_tc"), dtypes=("float16", "bfloat16"),
    layouts=("NCHW", "NHWC"), options=("config",), crops=True,
    description="tensor-core implicit GEMM (mma.sync, ldmatrix, cp.async pipeline), fp32 accumulation; "
                "NCHW packed to NHWC in a workspace")
IMPLICIT_GEMM_TC_SIMPLE = ConvAlgorithm(
    name="implicit_gemm_tc_simple", plan=_algorithm_plan("implicit_gemm_tc_simple"),
    dtypes=("float16", "bfloat16", "float32"), layouts=("NCHW", "NHWC"), tf32=True, crops=True,
    description="tensor-core implicit GEMM, analytic variant: one warp per 16x8 tile, fragments "
                "gathered from global memory; any layout, no workspace (float32 runs as tf32)")
IMPLICIT_GEMM_TF32 = ConvAlgorithm(
    name="implicit_gemm_tf32", plan=_algorithm_plan("implicit_gemm_tf32"), dtypes=("float32",),
    layouts=("NCHW", "NHWC"), tf32=True, options=("config",), crops=True,
    description="float32 convolution on tf32 tensor cores (operands rounded to 10-bit mantissas, "
                "fp32 accumulation); auto considers it only with allow_tf32=True")
ALGORITHMS = (IMPLICIT_GEMM_TC, IMPLICIT_GEMM_TC_SIMPLE, IMPLICIT_GEMM_TF32)


# --------------------------------------------------------------------------- tc_conv2d
_BY_NAME = {a.name: a for a in ALGORITHMS}


_FRONT = ConvFrontEnd(lambda spec, algo: _BY_NAME[algo].plan_or_raise(spec), "tc_conv2d")


def tc_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NHWC",
              allow_tf32=False, activation=None, residual=None, out=None, config=None):
    """2-D convolution on tensor cores (cross-correlation, torch.nn.functional.conv2d's arguments).

    ``layout="NHWC"``: ``x`` is (N, H, W, C), ``w`` is (K, R, S, C/groups) (KRSC), the output
    and ``residual`` are (N, P, Q, K). ``layout="NCHW"``: x (N, C, H, W), w (K, C/groups, R, S),
    output (N, K, P, Q) — run through an NHWC workspace (see the module docstring).
    float16 / bfloat16, or float32 with ``allow_tf32=True``; fp32 accumulation; the output, bias
    (K,) and residual have the input dtype. ``config``: None, "simple" or a conv config name.
    """
    dt = getattr(x, "dtype", None)
    kdt = check_dtype(str(dt), allow_tf32, "tc_conv2d") if dt is not None else None
    if config == "simple":
        algo = "implicit_gemm_tc_simple"
    else:
        algo = "implicit_gemm_tf32" if kdt == "tf32" else "implicit_gemm_tc"
    extra = {} if config in (None, "simple") else {"config": config}
    tf32 = True if allow_tf32 else None
    return _FRONT({"x": x, "w": w, "bias": bias, "residual": residual, "out": out},
                  (stride, padding, dilation, groups, algo, activation, None, layout, tf32), extra)
