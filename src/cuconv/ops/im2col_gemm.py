"""The ``"im2col_gemm"`` and ``"pointwise"`` convolution algorithms (textbook §8.3).

im2col_gemm: per chunk of the batch, ``kernels/im2col.cu`` writes the column matrices
(C·R·S x P·Q per image) into a workspace, then ``kernels/gemm.cu`` computes, per image
and group, ``out[n, g·Kg:(g+1)·Kg] (Kg x P·Q) = W_g (Kg x Cg·R·S) · cols[n, group g rows]``
straight into the NCHW output, with bias, residual and activation fused into the GEMM's
epilogue.

Workspace is bounded: the batch is processed in chunks of as many images as fit in
``max_workspace_bytes`` (default ``DEFAULT_MAX_WORKSPACE_BYTES``, 256 MiB), at least one
image. The plan's workspace is exactly what it allocates; when one image's columns exceed an
explicit limit the plan is refused with that size.

float32 and float64 (the column matrix and the GEMM in the input's precision: im2col_f64_128
and the gemm_f64_* configs).

1x1 (``problem.is_pointwise``: 1x1, stride 1, no padding): no im2col at all; the NCHW
input already is the column matrix (C x H·W per image), so the GEMM runs on it directly
with zero workspace. ``"pointwise"`` is the same path registered as its own algorithm for
exactly those problems.

NHWC (x N,H,W,C; w K,R,S,C/g; out and residual N,P,Q,K), float32 and float64: the GEMM runs
on implicit_gemm.cu's NHWC register-tile kernel, whose rows are output pixels and columns output
channels, so the output is written in NHWC with the epilogue fused. ``pointwise`` (a 1x1 filter,
no padding, any stride) is that GEMM straight over the input's pixels, no im2col and no
workspace. ``im2col_gemm`` writes, per chunk of the batch, ``kernels/im2col.cu``'s NHWC column
matrix ((N·P·Q) x (R·S·C), each group's columns in (r, s, c) order as the KRSC weights are): the
NHWC input of a 1x1 convolution with R·S·C channels in the same groups, whose weights are the
KRSC tensor itself, which the same kernel then computes into the chunk's output rows.

Groups and batch: the GEMM kernel batches over one index with element strides. When
there are at least as many groups as images in the chunk, it batches over groups and the
host loops over images; otherwise it batches over images and loops over groups, so the
number of launches is min(groups, images) per chunk.
"""
from __future__ import annotations

from ..dtypes import CUDA_CORE_DTYPES
from ..plan import Launch, PlanError, Ref, layout_buffers
from ..problem import Conv2dProblem
from ._algorithm import ConvAlgorithm, ConvSpec, conv_plan
from . import _common, implicit_gemm
from .gemm import SIZE_MAX, resolve_config, choose_config, gemm_launches
from .im2col import im2col_launch, im2col_nhwc_launch

DEFAULT_MAX_WORKSPACE_BYTES = 256 * 2 ** 20


def _size_reason(problem: Conv2dProblem) -> str | None:
    rows = problem.C_per_group * problem.R * problem.S
    PQ = problem.P * problem.Q
    if max(rows, PQ, problem.K_per_group) > SIZE_MAX:
        return (f"the GEMM is {problem.K_per_group} x {PQ} x {rows} per image and group; "
                "each dimension must be at most 2**31-256")
    return None


def can_implement(problem: Conv2dProblem) -> str | None:
    return _size_reason(problem)


def images_per_chunk(problem: Conv2dProblem, limit: int | None = None) -> int:
    """Images whose column matrices fit in ``limit`` bytes (default 256 MiB); at least 1."""
    cap = DEFAULT_MAX_WORKSPACE_BYTES if limit is None else limit
    per_image = problem.im2col_bytes(1)
    return max(1, min(problem.N, cap // per_image))


def _conv_gemm(spec: ConvSpec, cols: Ref, b_image_stride: int, n0: int, images: int, config) -> list:
    """The launches of out[n0:n0+images] = W · cols per image and group, epilogue fused.

    ``cols`` is image n0's column matrix (or input, for 1x1): image i at ``i·b_image_stride``,
    group g's rows at ``g·Cg·R·S·P·Q`` within it.
    """
    p = spec.problem
    G, Kg = p.groups, p.K_per_group
    depth = p.C_per_group * p.R * p.S               # the GEMM's K
    PQ = p.P * p.Q
    a_group_stride = Kg * depth
    b_group_stride = depth * PQ
    c_image_stride, c_group_stride = p.K * PQ, Kg * PQ
    cfg = config or choose_config(Kg, PQ, depth, max(G, images), p.dtype)
    common = dict(lda=depth, ldb=PQ, ldc=PQ, act=spec.act, config=cfg, dtype=p.dtype)

    def res(off):
        return Ref("residual", off) if spec.has_residual else None

    launches = []
    if G >= images:
        for i in range(images):
            c_off = (n0 + i) * c_image_stride
            launches += gemm_launches(
                Ref("w"), Ref(cols.name, cols.offset + i * b_image_stride), Ref("out", c_off), Kg, PQ, depth,
                batch=G, stride_a=a_group_stride, stride_b=b_group_stride, stride_c=c_group_stride,
                bias=Ref("bias") if spec.has_bias else None, stride_bias=Kg, residual=res(c_off), **common)
    else:
        for g in range(G):
            c_off = n0 * c_image_stride + g * c_group_stride
            launches += gemm_launches(
                Ref("w", g * a_group_stride), Ref(cols.name, cols.offset + g * b_group_stride),
                Ref("out", c_off), Kg, PQ, depth, batch=images, stride_a=0, stride_b=b_image_stride,
                stride_c=c_image_stride, bias=Ref("bias", g * Kg) if spec.has_bias else None, stride_bias=0,
                residual=res(c_off), **common)
    return launches


def _config(spec: ConvSpec):
    return resolve_config(spec.option("gemm_config"), spec.dtype)


def _plan_pointwise(spec: ConvSpec, algo: str):
    p = spec.problem
    launches = _conv_gemm(spec, Ref("x"), p.C * p.H * p.W, 0, p.N, _config(spec))
    return conv_plan(spec, algo, launches)


# --------------------------------------------------------------------------- NHWC
def _nhwc_gemm(spec: ConvSpec, q: Conv2dProblem, a: Ref, out_offset: int) -> Launch:
    """implicit_gemm.cu's NHWC kernel on the 1x1-shaped problem ``q`` (no padding) reading ``a``,
    writing ``out`` (and reading ``residual``) from element ``out_offset``, the call's epilogue."""
    cfg = implicit_gemm.choose_config(q, spec.caps.sms, "NHWC")
    reason = cfg.can_implement(q)
    if reason is not None:
        raise PlanError(f"the NHWC GEMM {cfg.name} cannot run {q.describe()}: {reason}")
    bias = Ref("bias") if spec.has_bias else Ref.absent(q.dtype)
    res = Ref("residual", out_offset) if spec.has_residual else Ref.absent(q.dtype)
    return Launch(implicit_gemm.ENTRIES[cfg], (cfg.blocks(q), 1, 1), (cfg.threads, 1, 1),
                  (a, Ref("w"), bias, _common.i32(spec.has_bias), res, _common.i32(spec.has_residual),
                   Ref("out", out_offset), *_common.conv_geometry_args(q), _common.i32(spec.act)))


def _nhwc_plan(spec: ConvSpec, algo: str):
    """NHWC: ``pointwise`` the GEMM over the input's pixels; ``im2col_gemm`` (any other filter) the
    NHWC column matrix per chunk of the batch, then the GEMM over its rows (module docstring)."""
    p = spec.problem
    if spec.option("gemm_config") is not None:
        raise PlanError("gemm_config= names a gemm.cu config (the NCHW GEMM); the NHWC path runs "
                        "implicit_gemm.cu's NHWC kernel")
    if _pointwise_nhwc(p):
        return conv_plan(spec, algo, [_nhwc_gemm(spec, p, Ref("x"), 0)])
    chunk = images_per_chunk(p, spec.max_workspace_bytes)
    PQ, cols = p.P * p.Q, p.C * p.R * p.S
    workspace = layout_buffers(("cols", p.dtype, chunk * PQ * cols))
    launches = []
    for n0 in range(0, p.N, chunk):
        images = min(chunk, p.N - n0)
        q = Conv2dProblem(images, cols, p.P, p.Q, p.K, 1, 1, groups=p.groups, dtype=p.dtype)
        launches += im2col_nhwc_launch(Ref("x", n0 * p.H * p.W * p.C), Ref("cols"), p, images)
        launches.append(_nhwc_gemm(spec, q, Ref("cols"), n0 * PQ * p.K))
    return conv_plan(spec, algo, launches, workspace=workspace)


def _pointwise_nhwc(p: Conv2dProblem) -> bool:
    return p.R == p.S == 1 and not (p.pad_h or p.pad_w or p.pad_bottom or p.pad_right)


def plan(spec: ConvSpec):
    """im2col per chunk of the batch, then the GEMM per image and group into ``out`` (NCHW; NHWC:
    ``_nhwc_plan``)."""
    p = spec.problem
    reason = can_implement(p)
    if reason is not None:
        raise PlanError(f"im2col_gemm cannot run {p.describe()}: {reason}")
    if spec.layout == "NHWC":
        return _nhwc_plan(spec, "im2col_gemm")
    if p.is_pointwise:
        return _plan_pointwise(spec, "im2col_gemm")
    # Under a limit below one image's column matrix the plan still says what one image needs
    # (so cuconv.algorithms can report it); make_plan then refuses it.
    chunk = images_per_chunk(p, spec.max_workspace_bytes)
    rows, PQ = p.C * p.R * p.S, p.P * p.Q
    workspace = layout_buffers(("cols", p.dtype, chunk * rows * PQ))
    image_elems = p.C * p.H * p.W
    launches = []
    for n0 in range(0, p.N, chunk):
        images = min(chunk, p.N - n0)
        launches += im2col_launch(Ref("x", n0 * image_elems), Ref("cols"), p, images)
        launches += _conv_gemm(spec, Ref("cols"), rows * PQ, n0, images, _config(spec))
    return conv_plan(spec, "im2col_gemm", launches, workspace=workspace)


def pointwise_plan(spec: ConvSpec):
    """The 1x1 path: the batched GEMM on the NCHW input (NHWC: over the input's pixels, any
    stride), no workspace."""
    reason = can_implement_pointwise(spec.problem, spec.layout)
    if reason is not None:
        raise PlanError(reason)
    if spec.layout == "NHWC":
        return _nhwc_plan(spec, "pointwise")
    return _plan_pointwise(spec, "pointwise")


def can_implement_pointwise(problem: Conv2dProblem, layout: str = "NCHW") -> str | None:
    if layout == "NHWC":
        if not _pointwise_nhwc(problem):
            return (f"needs a 1x1 kernel and no padding, got {problem.R}x{problem.S} kernel, padding "
                    f"{(problem.pad_h, problem.pad_w, problem.pad_bottom, problem.pad_right)}")
        return _size_reason(problem)
    if not problem.is_pointwise:
        return (f"needs a 1x1 kernel, stride 1 and no padding, got {problem.R}x{problem.S} kernel, "
                f"stride {(problem.stride_h, problem.stride_w)}, padding "
                f"{(problem.pad_h, problem.pad_w, problem.pad_bottom, problem.pad_right)}")
    return _size_reason(problem)


IM2COL_GEMM = ConvAlgorithm(
    name="im2col_gemm", plan=plan, dtypes=CUDA_CORE_DTYPES, layouts=("NCHW", "NHWC"), options=("gemm_config",),
    crops=True,
    description="§8.3: im2col per chunk of the batch (bounded workspace), then the tiled GEMM into NCHW "
                "with a fused epilogue; 1x1 stride-1 problems skip im2col; NHWC: the (r,s,c) column "
                "matrix, then implicit_gemm's NHWC kernel over its rows")
POINTWISE = ConvAlgorithm(
    name="pointwise", plan=pointwise_plan, dtypes=CUDA_CORE_DTYPES, layouts=("NCHW", "NHWC"),
    options=("gemm_config",),
    description="1x1, no padding: the batched tiled GEMM straight on the NCHW input (stride 1); NHWC: "
                "implicit_gemm's NHWC kernel over the input's pixels (any stride)")
ALGORITHMS = (IM2COL_GEMM, POINTWISE)
