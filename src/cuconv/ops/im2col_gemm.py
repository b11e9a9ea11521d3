"""The ``"im2col_gemm"`` and ``"pointwise"`` convolution algorithms (textbook §8.3).

im2col_gemm: per chunk of the batch, ``kernels/im2col.cu`` writes the column matrices
(C·R·S x P·Q per image) into a workspace, then ``kernels/gemm.cu`` computes, per image
and group, ``out[n, g·Kg:(g+1)·Kg] (Kg x P·Q) = W_g (Kg x Cg·R·S) · cols[n, group g rows]``
straight into the NCHW output, with bias, residual and activation fused into the GEMM's
epilogue.

Workspace is bounded: the batch is processed in chunks of as many images as fit in
``max_workspace_bytes`` (default ``DEFAULT_MAX_WORKSPACE_BYTES``, 256 MiB), at least one
image. ``workspace_bytes(problem, limit)`` is exactly what ``run`` allocates; when one
image's columns exceed an explicit limit it reports that size (the front end then refuses)
and ``run`` raises ValueError.

1x1 (``problem.is_pointwise``: 1x1, stride 1, no padding): no im2col at all; the NCHW
input already is the column matrix (C x H·W per image), so the GEMM runs on it directly
with zero workspace. ``"pointwise"`` is the same path registered as its own algorithm for
exactly those problems.

Groups and batch: the GEMM kernel batches over one index with element strides. When
there are at least as many groups as images in the chunk, it batches over groups and the
host loops over images; otherwise it batches over images and loops over groups, so the
number of launches is min(groups, images) per chunk.
"""
from __future__ import annotations

import numpy as np

from ..problem import Conv2dProblem
from .conv2d import ConvAlgorithm, register_algorithm
from .gemm import SIZE_MAX, _resolve_config, choose_config, gemm_launch
from .im2col import im2col_launch

DEFAULT_MAX_WORKSPACE_BYTES = 256 * 2 ** 20


def _flat_view(a, offset: int):
    """The array's elements from ``offset`` on, as a 1-D view (no copy)."""
    return a.reshape(-1)[offset:]


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


def workspace_bytes(problem: Conv2dProblem, limit: int | None = None) -> int:
    """Bytes ``run`` allocates: 0 for 1x1, else the column matrices of one chunk of the batch."""
    if problem.is_pointwise:
        return 0
    return images_per_chunk(problem, limit) * problem.im2col_bytes(1)


def _conv_gemm(be, problem: Conv2dProblem, w, cols, b_image_stride: int, out, bias, residual,
               act: int, n0: int, images: int, config) -> None:
    """out[n0:n0+images] = W · cols per image and group, epilogue fused.

    ``cols`` starts at image n0's column matrix (or input, for 1x1): image i at
    ``i·b_image_stride``, group g's rows at ``g·Cg·R·S·P·Q`` within it.
    """
    p = problem
    G, Kg = p.groups, p.K_per_group
    depth = p.C_per_group * p.R * p.S               # the GEMM's K
    PQ = p.P * p.Q
    a_group_stride = Kg * depth
    b_group_stride = depth * PQ
    c_image_stride, c_group_stride = p.K * PQ, Kg * PQ
    cfg = config or choose_config(Kg, PQ, depth, max(G, images))
    w = w.reshape(-1)
    out_flat = out.reshape(-1)
    res_flat = residual.reshape(-1) if residual is not None else None
    common = dict(lda=depth, ldb=PQ, ldc=PQ, act=act, config=cfg)
    if G >= images:
        for i in range(images):
            c_off = (n0 + i) * c_image_stride
            gemm_launch(be, w, _flat_view(cols, i * b_image_stride), _flat_view(out_flat, c_off),
                        Kg, PQ, depth, batch=G, stride_a=a_group_stride, stride_b=b_group_stride,
                        stride_c=c_group_stride, bias=bias, stride_bias=Kg,
                        residual=None if res_flat is None else _flat_view(res_flat, c_off), **common)
    else:
        for g in range(G):
            c_off = n0 * c_image_stride + g * c_group_stride
            gemm_launch(be, _flat_view(w, g * a_group_stride), _flat_view(cols, g * b_group_stride),
                        _flat_view(out_flat, c_off), Kg, PQ, depth, batch=images, stride_a=0,
                        stride_b=b_image_stride, stride_c=c_image_stride,
                        bias=None if bias is None else _flat_view(bias, g * Kg), stride_bias=0,
                        residual=None if res_flat is None else _flat_view(res_flat, c_off), **common)


def _check_extra(extra: dict) -> object:
    unknown = set(extra) - {"gemm_config"}
    if unknown:
        raise TypeError(f"im2col_gemm got unexpected keyword arguments {sorted(unknown)} "
                        "(it takes gemm_config=<GemmConfig or label>)")
    return _resolve_config(extra.get("gemm_config"))


def _run_pointwise(be, problem, x, w, bias, act, residual, out, config) -> None:
    _conv_gemm(be, problem, w, x.reshape(-1), problem.C * problem.H * problem.W, out, bias, residual,
               act, 0, problem.N, config)


def run(be, problem: Conv2dProblem, x, w, bias, act, residual, out, *, max_workspace_bytes=None,
        **extra) -> None:
    """im2col per chunk of the batch, then the GEMM per image and group into ``out`` (NCHW)."""
    config = _check_extra(extra)
    reason = can_implement(problem)
    if reason is not None:
        raise ValueError(f"im2col_gemm cannot run {problem.describe()}: {reason}")
    if problem.is_pointwise:
        _run_pointwise(be, problem, x, w, bias, act, residual, out, config)
        return
    per_image = problem.im2col_bytes(1)
    if max_workspace_bytes is not None and per_image > max_workspace_bytes:
        raise ValueError(f"im2col_gemm needs {per_image} bytes of workspace for one image's column "
                         f"matrix ({problem.C * problem.R * problem.S} x {problem.P * problem.Q} floats, "
                         f"{problem.describe()}), more than max_workspace_bytes={max_workspace_bytes}")
    chunk = images_per_chunk(problem, max_workspace_bytes)
    rows, PQ = problem.C * problem.R * problem.S, problem.P * problem.Q
    cols = be.empty((chunk * rows * PQ,), np.float32)
    x_flat = x.reshape(-1)
    image_elems = problem.C * problem.H * problem.W
    for n0 in range(0, problem.N, chunk):
        images = min(chunk, problem.N - n0)
        im2col_launch(be, _flat_view(x_flat, n0 * image_elems), cols, problem, images)
        _conv_gemm(be, problem, w, cols, rows * PQ, out, bias, residual, act, n0, images, config)


def run_pointwise(be, problem: Conv2dProblem, x, w, bias, act, residual, out, *,
                  max_workspace_bytes=None, **extra) -> None:
    """The 1x1 path: the batched GEMM on the NCHW input, no workspace."""
    config = _check_extra(extra)
    reason = can_implement_pointwise(problem)
    if reason is not None:
        raise ValueError(f"pointwise cannot run {problem.describe()}: {reason}")
    _run_pointwise(be, problem, x, w, bias, act, residual, out, config)


def can_implement_pointwise(problem: Conv2dProblem) -> str | None:
    if not problem.is_pointwise:
        return (f"needs a 1x1 kernel, stride 1 and no padding, got {problem.R}x{problem.S} kernel, "
                f"stride {(problem.stride_h, problem.stride_w)}, padding "
                f"{(problem.pad_h, problem.pad_w, problem.pad_bottom, problem.pad_right)}")
    return _size_reason(problem)


# auto rule. im2col_gemm: 20 for any problem (a general fallback above the one-thread-per-
# output direct kernel, below algorithms that avoid writing the column matrix), 5 when
# depthwise (M = 1 output channel per group wastes almost every row of a GEMM tile).
# pointwise: 90 for every 1x1 stride-1 unpadded problem: the convolution is exactly a GEMM
# on the NCHW data with no gather and no workspace, so nothing general does better.
# (Heuristic priorities, not yet checked by measurement on a GPU.)
def auto_priority(problem: Conv2dProblem) -> float | None:
    return 5.0 if problem.is_depthwise else 20.0


def auto_priority_pointwise(problem: Conv2dProblem) -> float | None:
    return 90.0 if problem.is_pointwise else None


register_algorithm(ConvAlgorithm(
    name="im2col_gemm", can_implement=can_implement, run=run, workspace_bytes=workspace_bytes,
    auto_priority=auto_priority, dtypes=("float32",),
    description="§8.3: im2col per chunk of the batch (bounded workspace), then the tiled GEMM into NCHW "
                "with a fused epilogue; 1x1 stride-1 problems skip im2col"))

register_algorithm(ConvAlgorithm(
    name="pointwise", can_implement=can_implement_pointwise, run=run_pointwise,
    workspace_bytes=lambda problem, limit=None: 0, auto_priority=auto_priority_pointwise,
    dtypes=("float32",),
    description="1x1, stride 1, no padding: the batched tiled GEMM straight on the NCHW input"))
