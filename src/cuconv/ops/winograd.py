"""Winograd convolution F(2x2,3x3) and F(4x4,3x3), fp32 (kernels/winograd.cu).

Three algorithms for ``cuconv.conv2d``:

* ``"winograd_f2x2_3x3"`` and ``"winograd_f4x4_3x3"``, the non-fused pipeline: filter
  transform U = G g Gᵀ (skipped when ``transformed_weight=`` is given), input transform
  V = Bᵀ d B into a workspace, the element-wise stage as α² batched GEMMs
  M[ξ] = U[ξ]·V[ξ] (U laid out [α²][K][C], V [α²][C][T], so this is exactly one batched
  GEMM), output transform Aᵀ M A with the bias/residual/activation epilogue.
  The tiles are processed in chunks so that V and M fit ``max_workspace_bytes``.
* ``"winograd_fused_f2x2_3x3"``: input transform, products and output transform of
  F(2x2,3x3) in one kernel with the tiles in shared memory; no V or M in global memory.

``winograd_filter_transform(w, variant)`` returns U (shape (α², K, C)) so that a pipeline
transforms its weights once and passes ``conv2d(..., algo=..., transformed_weight=U)``.

Workspace (what the plan reports and ``max_workspace_bytes`` bounds): V and M for one chunk of
tiles, α²·(C + K)·ld floats with ld the chunk's tile count rounded up to a multiple of 4
(16-byte aligned GEMM rows); when the whole batch is one chunk and N·tiles is a multiple of 4
that is exactly ``cost.winograd_workspace_bytes``. Plus U, α²·K·C floats
(``cost.winograd_filter_bytes``), unless a ``transformed_weight`` is passed. The fused kernel
needs U only.

Extra ``conv2d`` keyword arguments: ``transformed_weight=U`` and ``multiply="auto" | "gemm" |
"simple"`` (the element-wise stage on the tiled GEMM of ops/gemm.py, or on the one-thread-per-
output reference kernel in winograd.cu).

The matrices, the shape rule and the buffer sizes are cuconv.winograd_math's (shared with the
cost model).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dtypes import INT32_MAX
from ..plan import Launch, Output, Plan, PlanError, Ref, layout_buffers
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from ..winograd_math import (  # noqa: F401
    INTERPOLATION_POINTS,
    VARIANTS,
    R,
    interpolation_matrices,
    tile_size,
    winograd_matrices,
)
from ..winograd_math import unsupported_reason as _shape_reason
from . import _common
from ._algorithm import ConvAlgorithm, ConvSpec, conv_plan
from ._common import OUT, W, X, i32, i64
from ._frontend import FrontEnd
from .gemm import gemm_launches

FILE = "winograd.cu"
THREADS = 256


# =========================================================================== configs and kernels
@dataclass(frozen=True)
class FusedConfig:
    """Block tile of the fused F(2x2,3x3) kernel: BK output channels × BT tiles, BC channels a step."""
    bk: int = 32
    bt: int = 16
    bc: int = 8

    @property
    def name(self) -> str:
        return f"winograd_fused_f2x2_3x3_{self.bk}x{self.bt}x{self.bc}"

    @property
    def expression(self) -> str:
        return f"winograd_fused_f2x2_3x3<{self.bk}, {self.bt}, {self.bc}>"


FUSED_CONFIG = FusedConfig()

_PER_VARIANT_KERNELS = ("filter_transform", "input_transform", "output_transform")


def _label(kind: str, m: int) -> str:
    return f"winograd_{kind.split('_')[0]}_f{m}x{m}_3x3"


ENTRIES = {}
for _m in VARIANTS.values():
    for _kind in _PER_VARIANT_KERNELS:
        ENTRIES[(_kind, _m)] = register_kernel(KernelEntry(
            FILE, f"winograd_{_kind}<{_m}>", _label(_kind, _m), block_threads=THREADS,
            min_blocks_per_sm=2, main=_kind != "filter_transform"))
ENTRIES["multiply_simple"] = register_kernel(KernelEntry(
    FILE, "winograd_multiply_simple", "winograd_multiply_simple", block_threads=THREADS, min_blocks_per_sm=2))
ENTRIES["fused"] = register_kernel(KernelEntry(
    FILE, FUSED_CONFIG.expression, FUSED_CONFIG.name, block_threads=THREADS, min_blocks_per_sm=2, main=True))
# Exact non-finite semantics (winograd.cu's header): the flags, and the direct fix-up per tile size.
ENTRIES["flags"] = register_kernel(KernelEntry(
    FILE, "winograd_flags_init", "winograd_flags_init", block_threads=THREADS, min_blocks_per_sm=2))
for _m in VARIANTS.values():
    ENTRIES[("fixup", _m)] = register_kernel(KernelEntry(
        FILE, f"winograd_fixup<{_m}>", f"winograd_fixup_f{_m}x{_m}_3x3", block_threads=THREADS,
        min_blocks_per_sm=2))

_MAX_BLOCKS = 1 << 20     # the transform kernels are grid-stride loops


def _grid(total: int) -> tuple[int, int, int]:
    return (_common.grid_1d(total, THREADS, _MAX_BLOCKS), 1, 1)


# =========================================================================== planning
def unsupported_reason(problem: Conv2dProblem) -> str | None:
    """Why F(m×m, 3×3) cannot run ``problem`` (None when it can): the cost model's shape rule
    (3x3, stride 1, dilation 1, groups 1) plus the kernels' float32."""
    reason = _shape_reason(problem)
    if problem.dtype != "float32":
        dtype_rule = f"float32 (got {problem.dtype})"
        return f"{reason}, {dtype_rule}" if reason else f"Winograd F(mxm,3x3) needs {dtype_rule}"
    return reason


# Each of V and M is indexed with int32 GEMM dimensions by the multiply stage: keep a chunk's
# buffers below 2**31 elements.
_MAX_BUFFER_ELEMENTS = INT32_MAX


def _round4(n: int) -> int:
    return -(-n // 4) * 4


@dataclass(frozen=True)
class WinogradChunks:
    """How the non-fused pipeline splits one problem: tiles, chunks, buffers, element-wise work.

    V is (α², C, ld) and M (α², K, ld) per chunk: ld >= chunk_tiles, a multiple of 4 where the
    limit allows, so that the GEMM's rows start 16-byte aligned (its vectorised loads/stores).
    """
    m: int
    tiles_h: int
    tiles_w: int
    tiles: int                 # N · tiles_h · tiles_w
    chunk_tiles: int           # tiles per pass
    ld: int                    # row length of V and M (chunk_tiles rounded up to a multiple of 4)
    filter_bytes: int          # U, α²·K·C floats
    chunk_bytes: int           # V + M, α²·(C + K)·ld floats
    K: int
    C: int

    @property
    def alpha(self) -> int:
        return self.m + R - 1

    @property
    def chunks(self) -> int:
        return -(-self.tiles // self.chunk_tiles)

    def workspace_bytes(self, with_filter: bool = True) -> int:
        return self.chunk_bytes + (self.filter_bytes if with_filter else 0)

    def chunk_list(self) -> list[tuple[int, int, int]]:
        """(first tile, tile count, row length) of each pass."""
        out = []
        for begin in range(0, self.tiles, self.chunk_tiles):
            count = min(self.chunk_tiles, self.tiles - begin)
            ldt = _round4(count) if _round4(count) <= self.ld else count
            out.append((begin, count, ldt))
        return out

    def multiply_calls(self) -> list[tuple[int, int, int, int]]:
        """(batch, M, N, K) of each batched GEMM of the element-wise stage, in launch order."""
        return [(self.alpha ** 2, self.K, ldt, self.C) for _, _, ldt in self.chunk_list()]


def chunking(problem: Conv2dProblem, m: int, max_workspace_bytes: int | None = None,
             with_filter: bool = True, fixed_bytes: int = 0) -> WinogradChunks:
    """Tile the problem and choose the chunk of tiles whose V and M (plus U) fit the limit.

    ``with_filter``: U is part of the workspace (no ``transformed_weight`` given); ``fixed_bytes``:
    the rest of the workspace that does not depend on the chunk (the non-finite flags).
    Without a limit the whole batch is one chunk. With one, the chunk is the largest that fits,
    rounded down to a multiple of 32 tiles (else of 4) when that leaves any; when not even one
    tile fits, the plan reports the one-tile figure and the front end refuses.
    """
    reason = unsupported_reason(problem)
    if reason is not None:
        raise ValueError(f"{reason}: {problem.describe()}")
    tiles_h, tiles_w = -(-problem.P // m), -(-problem.Q // m)
    tiles = problem.N * tiles_h * tiles_w
    a2 = (m + R - 1) ** 2
    item = problem.itemsize
    filter_bytes = a2 * problem.K * problem.C * item
    per_tile = a2 * (problem.C + problem.K) * item

    u_bytes = (filter_bytes if with_filter else 0) + fixed_bytes

    def fits(columns: int) -> bool:
        return max_workspace_bytes is None or columns * per_tile + u_bytes <= max_workspace_bytes

    cap = max(4, _MAX_BUFFER_ELEMENTS // (a2 * max(problem.C, problem.K)) // 4 * 4)
    chunk = min(tiles, cap)
    if fits(_round4(chunk)):
        ld = _round4(chunk)
    elif fits(chunk):
        ld = chunk
    else:
        fit = max(0, (max_workspace_bytes - u_bytes) // per_tile)
        chunk = fit - fit % 32 if fit >= 32 else fit - fit % 4 if fit >= 4 else max(1, fit)
        ld = chunk
    return WinogradChunks(m, tiles_h, tiles_w, tiles, chunk, ld, filter_bytes, ld * per_tile,
                        problem.K, problem.C)


# =========================================================================== launches
def filter_transform_launch(w: Ref, U: Ref, K: int, C: int, m: int) -> Launch:
    """U[ξ][k][c] = (G w[k, c] Gᵀ)[ξ] (w (K, C, 3, 3), U (α², K, C))."""
    return Launch(ENTRIES[("filter_transform", m)], _grid(K * C), (THREADS, 1, 1), (w, U, i32(K), i32(C)))


def input_transform_launch(x: Ref, V: Ref, problem: Conv2dProblem, ch: WinogradChunks, tile_begin: int,
                           tile_count: int, ldt: int | None = None, tile_flags: Ref = Ref("tile_flags")) -> Launch:
    """V (α², C, ldt): the chunk's tiles in columns < tile_count, zeros in the pad columns; the
    flag of every tile whose input window holds a non-finite value set in ``tile_flags``."""
    ldt = tile_count if ldt is None else ldt
    p = problem
    return Launch(ENTRIES[("input_transform", ch.m)], _grid(p.C * ldt), (THREADS, 1, 1),
                  (x, V, i32(p.C), i32(p.H), i32(p.W), i32(p.pad_h), i32(p.pad_w),
                   i32(ch.tiles_h), i32(ch.tiles_w), i64(tile_begin), i32(tile_count), i32(ldt), tile_flags))


def output_transform_launch(Mx: Ref, out: Ref, has_bias: bool, act: int, has_residual: bool,
                            problem: Conv2dProblem, ch: WinogradChunks, tile_begin: int, tile_count: int,
                            ldt: int | None = None) -> Launch:
    """out's tiles of the chunk from Mx (α², K, ldt), with the fused epilogue."""
    ldt = tile_count if ldt is None else ldt
    p = problem
    return Launch(ENTRIES[("output_transform", ch.m)], _grid(p.K * tile_count), (THREADS, 1, 1),
                  (Mx, out, *_common.epilogue_refs(has_bias, has_residual), i32(act),
                   i32(p.K), i32(p.P), i32(p.Q), i32(ch.tiles_h), i32(ch.tiles_w),
                   i64(tile_begin), i32(tile_count), i32(ldt)))


def multiply_launches(U: Ref, V: Ref, Mx: Ref, batch: int, K: int, C: int, T: int, method: str) -> list[Launch]:
    """Mx[ξ] (K×T) = U[ξ] (K×C) · V[ξ] (C×T) for ξ < batch (all row-major, contiguous):
    the tiled GEMM of gemm.cu ("auto", "gemm"), or winograd.cu's simple reference ("simple")."""
    if method in ("auto", "gemm"):
        return gemm_launches(U, V, Mx, K, T, C, lda=C, ldb=T, ldc=T, batch=batch,
                             stride_a=K * C, stride_b=C * T, stride_c=K * T)
    return [Launch(ENTRIES["multiply_simple"], _grid(batch * K * T), (THREADS, 1, 1),
                   (U, V, Mx, i32(batch), i32(K), i32(C), i32(T)))]


def fused_launch(x: Ref, U: Ref, out: Ref, has_bias: bool, act: int, has_residual: bool,
                 problem: Conv2dProblem, config: FusedConfig = FUSED_CONFIG) -> Launch:
    p = problem
    tiles_h, tiles_w = -(-p.P // 2), -(-p.Q // 2)
    tiles = p.N * tiles_h * tiles_w
    grid = (-(-tiles // config.bt), -(-p.K // config.bk), 1)
    bias, hb, res, hr = _common.epilogue_refs(has_bias, has_residual)
    return Launch(ENTRIES["fused"], grid, (THREADS, 1, 1),
                  (x, U, out, bias, hb, res, hr, i32(act),
                   i32(p.N), i32(p.C), i32(p.H), i32(p.W), i32(p.K),
                   i32(p.P), i32(p.Q), i32(p.pad_h), i32(p.pad_w), i32(tiles_h), i32(tiles_w), Ref("tile_flags")))


def flag_parts(problem: Conv2dProblem, m: int) -> tuple:
    """The workspace parts of the non-finite flags: one int per tile of the batch, one per filter."""
    th, tw = -(-problem.P // m), -(-problem.Q // m)
    return (("tile_flags", "int32", problem.N * th * tw), ("k_flags", "int32", problem.K))


def flags_bytes(problem: Conv2dProblem, m: int) -> int:
    """Their bytes, up to the 16-byte boundary where the next buffer starts."""
    return -(-layout_buffers(*flag_parts(problem, m))[1] // 16) * 16


def flags_launch(problem: Conv2dProblem, m: int) -> Launch:
    """Clears the tile flags and marks the filters holding a non-finite weight."""
    tiles = problem.N * (-(-problem.P // m)) * (-(-problem.Q // m))
    return Launch(ENTRIES["flags"], _grid(max(tiles, problem.K)), (THREADS, 1, 1),
                  (W, Ref("k_flags"), Ref("tile_flags"), i32(problem.K), i32(problem.C), i64(tiles)))


def fixup_launch(problem: Conv2dProblem, m: int, has_bias: bool, act: int, has_residual: bool) -> Launch:
    """Recomputes the flagged tiles and filters directly (exact NaN/Inf semantics)."""
    p = problem
    tiles_h, tiles_w = -(-p.P // m), -(-p.Q // m)
    bias, hb, res, hr = _common.epilogue_refs(has_bias, has_residual)
    return Launch(ENTRIES[("fixup", m)], _grid(p.N * tiles_h * tiles_w * p.K), (THREADS, 1, 1),
                  (X, W, OUT, bias, hb, res, hr, i32(act), Ref("tile_flags"), Ref("k_flags"),
                   i32(p.N), i32(p.C), i32(p.H), i32(p.W), i32(p.K), i32(p.P), i32(p.Q),
                   i32(p.pad_h), i32(p.pad_w), i32(tiles_h), i32(tiles_w)))


# =========================================================================== plans
def _check_multiply(multiply) -> str:
    if multiply not in ("auto", "gemm", "simple"):
        raise ValueError(f"multiply must be 'auto', 'gemm' or 'simple', got {multiply!r}")
    return multiply


def _filter_stage(spec: ConvSpec, m: int, algo: str):
    """(U slot, its launches, its workspace part): the given transformed weight, or the
    filter transform into the workspace."""
    p = spec.problem
    alpha = m + R - 1
    given = spec.option("transformed_weight")
    if given is not None:
        want = (alpha * alpha, p.K, p.C)
        _, shape, dtype = given
        if len(shape) != 3:
            raise ValueError(f"transformed_weight must be 3-D (α², K, C) = {want}, got shape {tuple(shape)}")
        if dtype != "float32":
            raise TypeError(f"transformed_weight must have dtype float32, got {dtype} (shape {tuple(shape)})")
        if tuple(shape) != want:
            raise ValueError(f"transformed_weight for algo={algo!r} must have shape (α², K, C) = {want} "
                             f"(winograd_filter_transform(w, 'f{m}x{m}_3x3') of weight {p.weight_shape}), "
                             f"got {tuple(shape)}")
        return Ref("transformed_weight"), [], [], [("transformed_weight", want)]
    return Ref("U"), [filter_transform_launch(W, Ref("U"), p.K, p.C, m)], [("U", "float32", alpha * alpha * p.K * p.C)], []


def _plan_nonfused(m: int):
    algo = f"winograd_f{m}x{m}_3x3"

    def plan(spec: ConvSpec):
        p = spec.problem
        reason = unsupported_reason(p)
        if reason is not None:
            raise PlanError(reason)
        method = _check_multiply(spec.option("multiply", "auto"))
        U, launches, parts, extra = _filter_stage(spec, m, algo)
        launches.insert(0, flags_launch(p, m))
        ch = chunking(p, m, spec.max_workspace_bytes, with_filter=not extra, fixed_bytes=flags_bytes(p, m))
        a2, C, K = ch.alpha ** 2, p.C, p.K
        workspace = layout_buffers(*parts, *flag_parts(p, m), ("V", "float32", a2 * C * ch.ld),
                                   ("M", "float32", a2 * K * ch.ld))
        for begin, count, ldt in ch.chunk_list():
            # V and M of a chunk are (α², C, ldt) and (α², K, ldt) at the start of their buffers.
            # The pad columns of V are zeros, so M's pad columns are zeros too; the GEMM runs over
            # all ldt columns so that every row it touches starts 16-byte aligned.
            launches.append(input_transform_launch(X, Ref("V"), p, ch, begin, count, ldt))
            launches += multiply_launches(U, Ref("V"), Ref("M"), a2, K, C, ldt, method)
            launches.append(output_transform_launch(Ref("M"), OUT, spec.has_bias, spec.act, spec.has_residual,
                                                    p, ch, begin, count, ldt))
        launches.append(fixup_launch(p, m, spec.has_bias, spec.act, spec.has_residual))
        return conv_plan(spec, algo, launches, workspace=workspace, extra_inputs=extra)

    return plan


def _fused_reason(problem: Conv2dProblem) -> str | None:
    reason = unsupported_reason(problem)
    if reason is None and -(-problem.K // FUSED_CONFIG.bk) > 65535:
        reason = f"the fused kernel's grid.y = ceil(K/{FUSED_CONFIG.bk}) must be <= 65535, got K={problem.K}"
    return reason


def _plan_fused(spec: ConvSpec):
    """U (unless a transformed_weight is passed) and the flags; V and M never reach global memory."""
    p = spec.problem
    reason = _fused_reason(p)
    if reason is not None:
        raise PlanError(reason)
    U, launches, parts, extra = _filter_stage(spec, 2, "winograd_fused_f2x2_3x3")
    launches = [flags_launch(p, 2), *launches, fused_launch(X, U, OUT, spec.has_bias, spec.act, spec.has_residual, p),
                fixup_launch(p, 2, spec.has_bias, spec.act, spec.has_residual)]
    return conv_plan(spec, "winograd_fused_f2x2_3x3", launches,
                     workspace=layout_buffers(*parts, *flag_parts(p, 2)), extra_inputs=extra)


WINOGRAD_F2 = ConvAlgorithm(
    "winograd_f2x2_3x3", _plan_nonfused(2), options=("transformed_weight", "multiply"),
    description="Winograd F(2x2,3x3): transforms + 16 batched GEMMs (2.25x fewer multiplications)")
WINOGRAD_F4 = ConvAlgorithm(
    "winograd_f4x4_3x3", _plan_nonfused(4), options=("transformed_weight", "multiply"),
    description="Winograd F(4x4,3x3): transforms + 36 batched GEMMs (4x fewer multiplications)")
WINOGRAD_FUSED = ConvAlgorithm(
    "winograd_fused_f2x2_3x3", _plan_fused, options=("transformed_weight",),
    description="Winograd F(2x2,3x3) in one kernel, tiles in shared memory (no V/M workspace)")
ALGORITHMS = (WINOGRAD_F2, WINOGRAD_F4, WINOGRAD_FUSED)


# =========================================================================== winograd_filter_transform
def _filter_plan(be, env, args, extra, misaligned) -> Plan:
    (variant,), w, out = args, env["w"], env["out"]
    m = tile_size(variant)
    w = _common.as_tensor(w, "weight", ndim=4, dtypes=("float32",), be=be)
    K, C, r, s = (int(d) for d in w.shape)
    if (r, s) != (R, R):
        raise ValueError(f"winograd_filter_transform needs a 3x3 filter (K, C, 3, 3), "
                         f"got weight shape {tuple(w.shape)}")
    if K <= 0 or C <= 0:
        raise ValueError(f"weight must have K > 0 and C > 0, got shape {tuple(w.shape)}")
    alpha = m + R - 1
    shape = (alpha * alpha, K, C)
    if out is not None:
        _common.check_out(out, shape, np.float32, be)
        _common.same_device(be, weight=w, out=out)
    return Plan("winograd_filter_transform", f"f{m}x{m}_3x3", None,
                (filter_transform_launch(W, OUT, K, C, m),), ("w",),
                (Output("out", shape, np.dtype(np.float32)),), be.device_key(),
                expected=(("w", tuple(w.shape), "float32"),))


_FILTER = FrontEnd("winograd_filter_transform", ("w", "out"), _filter_plan, names={"w": "weight"})


def winograd_filter_transform(w, variant: str = "f4x4_3x3", *, out=None):
    """U = G w Gᵀ for every (k, c): shape (α², K, C), float32, on the current backend.

    ``variant``: "f2x2_3x3" (α = 4; also what "winograd_fused_f2x2_3x3" takes) or "f4x4_3x3"
    (α = 6). Transform a layer's weights once and pass ``transformed_weight=U`` to
    ``conv2d(..., algo="winograd_...")`` together with the same ``w``. Computed in double and
    rounded once to float32.
    """
    return _FILTER({"w": w, "out": out}, (variant,))