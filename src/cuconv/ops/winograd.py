"""Winograd convolution F(2x2,3x3) and F(4x4,3x3), fp32 (kernels/winograd.cu).

Three algorithms for ``cuconv.conv2d``:

* ``"winograd_f2x2_3x3"`` and ``"winograd_f4x4_3x3"``, the non-fused pipeline: filter
  transform U = G g Gᵀ (skipped when ``transformed_weight=`` is given), input transform
  V = Bᵀ d B into a workspace, the element-wise stage as α² batched GEMMs
  M[ξ] = U[ξ]·V[ξ] (U laid out [α²][K][C], V [α²][C][T], so this is exactly one batched
  ``gemm_launch``), output transform Aᵀ M A with the bias/residual/activation epilogue.
  The tiles are processed in chunks so that V and M fit ``max_workspace_bytes``.
* ``"winograd_fused_f2x2_3x3"``: input transform, products and output transform of
  F(2x2,3x3) in one kernel with the tiles in shared memory; no V or M in global memory.

``winograd_filter_transform(w, variant)`` returns U (shape (α², K, C)) so that a pipeline
transforms its weights once and passes ``conv2d(..., algo=..., transformed_weight=U)``.

Workspace (what ``workspace_bytes`` reports and ``max_workspace_bytes`` bounds): V and M for
one chunk of tiles, α²·(C + K)·ld floats with ld the chunk's tile count rounded up to a multiple
of 4 (16-byte aligned GEMM rows); when the whole batch is one chunk and N·tiles is a multiple of
4 that is exactly ``cost.winograd_workspace_bytes``. Plus U, α²·K·C floats
(``cost.winograd_filter_bytes``), which the op allocates whenever no ``transformed_weight`` is
passed (counted either way: the front end asks before it knows). The fused kernel needs U only.

Extra ``conv2d`` keyword arguments: ``transformed_weight=U`` and ``multiply="auto" | "gemm" |
"simple"`` (the element-wise stage on the tiled GEMM of ops/gemm.py, or on the one-thread-per-
output reference kernel in winograd.cu; "auto" takes the GEMM when ops/gemm.py is present).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..backend import current_backend
from ..compile import KernelEntry, register_kernel
from ..problem import Conv2dProblem
from ..cost import winograd_unsupported_reason
from . import _common
from ._common import i32, i64
from .conv2d import ConvAlgorithm, register_algorithm
from .gemm import gemm_launch

FILE = "winograd.cu"
THREADS = 256
R = 3                                      # the filter size every variant here is built for

# variant name -> output tile size m
VARIANTS = {"f2x2_3x3": 2, "f4x4_3x3": 4}
# The finite interpolation points of each F(m, 3) (plus the point at infinity); see winograd.cu.
INTERPOLATION_POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -2)}


# =========================================================================== the matrices
def _poly_from_roots(roots) -> list[Fraction]:
    """Coefficients (ascending powers) of Π (x − a) over ``roots``."""
    coeffs = [Fraction(1)]
    for a in roots:
        nxt = [Fraction(0)] * (len(coeffs) + 1)
        for i, c in enumerate(coeffs):
            nxt[i + 1] += c
            nxt[i] -= a * c
        coeffs = nxt
    return coeffs


def interpolation_matrices(points, m: int, r: int = R):
    """(Aᵀ, G, Bᵀ) of F(m, r) from its α − 1 finite interpolation points and ∞, exact.

    Toom-Cook for the linear convolution, transposed into a correlation (the derivation is
    in kernels/winograd.cu): Aᵀ[i][j] = a_j^i, G[i][j] = a_i^j / Π_{l≠i}(a_i − a_l),
    Bᵀ row i = the coefficients of Π_{l≠i}(x − a_l); the ∞ rows are [0 … 0 1] in Aᵀ's last
    column and G, and Π_l (x − a_l) in Bᵀ. Lists of lists of Fractions.
    """
    points = [Fraction(p) for p in points]
    alpha = m + r - 1
    if len(points) != alpha - 1 or len(set(points)) != len(points):
        raise ValueError(f"F({m},{r}) needs {alpha - 1} distinct finite points, got {points}")
    AT = [[a ** i for a in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    G, BT = [], []
    for i, a in enumerate(points):
        others = [b for j, b in enumerate(points) if j != i]
        denom = Fraction(1)
        for b in others:
            denom *= a - b
        G.append([a ** j / denom for j in range(r)])
        BT.append(_poly_from_roots(others) + [Fraction(0)])
    G.append([Fraction(int(j == r - 1)) for j in range(r)])
    BT.append(_poly_from_roots(points))
    return AT, G, BT


# Lavin & Gray's sign choices on top of the derivation (a diagonal scale along ξ may move between
# Aᵀ, G and Bᵀ as long as the three scales multiply to 1): F(2,3) negates row 0 of Bᵀ into G and
# the ∞ row of Bᵀ into Aᵀ; F(4,3) is exactly the derivation.
_SIGNS = {2: dict(BT=(-1, 1, 1, -1), G=(-1, 1, 1, 1), A=(1, 1, 1, -1)),
          4: dict(BT=(1,) * 6, G=(1,) * 6, A=(1,) * 6)}


def winograd_matrices(m: int):
    """The (Aᵀ, G, Bᵀ) the kernels of F(m×m, 3×3) hard-code, as exact Fractions."""
    if m not in INTERPOLATION_POINTS:
        raise ValueError(f"Winograd output tile m must be 2 or 4, got {m!r}")
    AT, G, BT = interpolation_matrices(INTERPOLATION_POINTS[m], m)
    s = _SIGNS[m]
    AT = [[v * s["A"][j] for j, v in enumerate(row)] for row in AT]
    G = [[v * s["G"][i] for v in row] for i, row in enumerate(G)]
    BT = [[v * s["BT"][i] for v in row] for i, row in enumerate(BT)]
    return AT, G, BT


def _variant_m(variant) -> int:
    names = {**VARIANTS, **{f"winograd_{k}": v for k, v in VARIANTS.items()},
             "fused_f2x2_3x3": 2, "winograd_fused_f2x2_3x3": 2}
    if not isinstance(variant, str) or variant not in names:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)} (or an algorithm name "
                         f"{sorted(k for k in names if k.startswith('winograd_'))}), got {variant!r}")
    return names[variant]


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

_MAX_BLOCKS = 1 << 20     # the transform kernels are grid-stride loops


def _grid(total: int) -> tuple[int, int, int]:
    return (_common.grid_1d(total, THREADS, _MAX_BLOCKS), 1, 1)


# =========================================================================== planning
def unsupported_reason(problem: Conv2dProblem) -> str | None:
    """Why F(m×m, 3×3) cannot run ``problem`` (None when it can): the cost model's shape rule
    (3x3, stride 1, dilation 1, groups 1) plus the kernels' float32."""
    reason = winograd_unsupported_reason(problem)
    if problem.dtype != "float32":
        dtype_rule = f"float32 (got {problem.dtype})"
        return f"{reason}, {dtype_rule}" if reason else f"Winograd F(mxm,3x3) needs {dtype_rule}"
    return reason


# Each of V and M is indexed with int32 GEMM dimensions by the multiply stage: keep a chunk's
# buffers below 2**31 elements.
_MAX_BUFFER_ELEMENTS = 2 ** 31 - 1


def _round4(n: int) -> int:
    return -(-n // 4) * 4


@dataclass(frozen=True)
class WinogradPlan:
    """How the non-fused pipeline runs one problem: tiles, chunking, buffers, element-wise work.

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


def plan(problem: Conv2dProblem, m: int, max_workspace_bytes: int | None = None) -> WinogradPlan:
    """Tile the problem and choose the chunk of tiles whose V and M (plus U) fit the limit.

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

    def fits(columns: int) -> bool:
        return max_workspace_bytes is None or columns * per_tile + filter_bytes <= max_workspace_bytes

    cap = max(4, _MAX_BUFFER_ELEMENTS // (a2 * max(problem.C, problem.K)) // 4 * 4)
    chunk = min(tiles, cap)
    if fits(_round4(chunk)):
        ld = _round4(chunk)
    elif fits(chunk):
        ld = chunk
    else:
        fit = max(0, (max_workspace_bytes - filter_bytes) // per_tile)
        chunk = fit - fit % 32 if fit >= 32 else fit - fit % 4 if fit >= 4 else max(1, fit)
        ld = chunk
    return WinogradPlan(m, tiles_h, tiles_w, tiles, chunk, ld, filter_bytes, ld * per_tile,
                        problem.K, problem.C)


# =========================================================================== launchers
def filter_transform_launch(be, w, U, m: int) -> None:
    """U[ξ][k][c] = (G w[k, c] Gᵀ)[ξ] (checked arrays: w (K, C, 3, 3), U (α², K, C))."""
    K, C = int(w.shape[0]), int(w.shape[1])
    be.launch(FILE, ENTRIES[("filter_transform", m)].expression, _grid(K * C), (THREADS, 1, 1),
              (w, U, i32(K), i32(C)))


def input_transform_launch(be, x, V, problem: Conv2dProblem, pl: WinogradPlan, tile_begin: int,
                           tile_count: int, ldt: int | None = None) -> None:
    """V (α², C, ldt): the chunk's tiles in columns < tile_count, zeros in the pad columns."""
    ldt = tile_count if ldt is None else ldt
    be.launch(FILE, ENTRIES[("input_transform", pl.m)].expression, _grid(problem.C * ldt),
              (THREADS, 1, 1),
              (x, V, i32(problem.C), i32(problem.H), i32(problem.W), i32(problem.pad_h), i32(problem.pad_w),
               i32(pl.tiles_h), i32(pl.tiles_w), i64(tile_begin), i32(tile_count), i32(ldt)))


def output_transform_launch(be, Mx, out, bias, act: int, residual, problem: Conv2dProblem,
                            pl: WinogradPlan, tile_begin: int, tile_count: int, ldt: int | None = None) -> None:
    """out's tiles of the chunk from Mx (α², K, ldt), with the fused epilogue."""
    ldt = tile_count if ldt is None else ldt
    ph = _common.placeholder(be, "float32")
    be.launch(FILE, ENTRIES[("output_transform", pl.m)].expression, _grid(problem.K * tile_count),
              (THREADS, 1, 1),
              (Mx, out, ph if bias is None else bias, i32(bias is not None),
               ph if residual is None else residual, i32(residual is not None), i32(act),
               i32(problem.K), i32(problem.P), i32(problem.Q), i32(pl.tiles_h), i32(pl.tiles_w),
               i64(tile_begin), i32(tile_count), i32(ldt)))


def _multiply(be, U, V, Mx, batch: int, K: int, C: int, T: int, method: str) -> None:
    """Mx[ξ] (K×T) = U[ξ] (K×C) · V[ξ] (C×T) for ξ < batch (all row-major, contiguous):
    the tiled GEMM of gemm.cu ("auto", "gemm"), or winograd.cu's simple reference ("simple")."""
    if method in ("auto", "gemm"):
        gemm_launch(be, U, V, Mx, K, T, C, lda=C, ldb=T, ldc=T, batch=batch,
                    stride_a=K * C, stride_b=C * T, stride_c=K * T)
        return
    be.launch(FILE, ENTRIES["multiply_simple"].expression, _grid(batch * K * T), (THREADS, 1, 1),
              (U, V, Mx, i32(batch), i32(K), i32(C), i32(T)))


def fused_launch(be, x, U, out, bias, act: int, residual, problem: Conv2dProblem,
                 config: FusedConfig = FUSED_CONFIG) -> None:
    tiles_h, tiles_w = -(-problem.P // 2), -(-problem.Q // 2)
    tiles = problem.N * tiles_h * tiles_w
    grid = (-(-tiles // config.bt), -(-problem.K // config.bk), 1)
    ph = _common.placeholder(be, "float32")
    be.launch(FILE, config.expression, grid, (THREADS, 1, 1),
              (x, U, out, ph if bias is None else bias, i32(bias is not None),
               ph if residual is None else residual, i32(residual is not None), i32(act),
               i32(problem.N), i32(problem.C), i32(problem.H), i32(problem.W), i32(problem.K),
               i32(problem.P), i32(problem.Q), i32(problem.pad_h), i32(problem.pad_w),
               i32(tiles_h), i32(tiles_w)))


# =========================================================================== public API
def winograd_filter_transform(w, variant: str = "f4x4_3x3", *, out=None):
    """U = G w Gᵀ for every (k, c): shape (α², K, C), float32, on the current backend.

    ``variant``: "f2x2_3x3" (α = 4; also what "winograd_fused_f2x2_3x3" takes) or "f4x4_3x3"
    (α = 6). Transform a layer's weights once and pass ``transformed_weight=U`` to
    ``conv2d(..., algo="winograd_...")`` together with the same ``w``. Computed in double and
    rounded once to float32.
    """
    m = _variant_m(variant)
    be = current_backend()
    w = _common.as_tensor(w, "weight", ndim=4, dtypes=("float32",), be=be)
    K, C, r, s = (int(d) for d in w.shape)
    if (r, s) != (R, R):
        raise ValueError(f"winograd_filter_transform needs a 3x3 filter (K, C, 3, 3), "
                         f"got weight shape {tuple(w.shape)}")
    if K <= 0 or C <= 0:
        raise ValueError(f"weight must have K > 0 and C > 0, got shape {tuple(w.shape)}")
    alpha = m + R - 1
    U = _common.prepare_out(out, (alpha * alpha, K, C), np.float32, be, inputs=(("weight", w),))
    _common.same_device(be, weight=w, out=U)
    filter_transform_launch(be, w, U, m)
    return U


def _check_transformed_weight(be, U, problem: Conv2dProblem, m: int, algo: str):
    alpha = m + R - 1
    want = (alpha * alpha, problem.K, problem.C)
    U = _common.as_tensor(U, "transformed_weight", ndim=3, dtypes=("float32",), be=be)
    if tuple(U.shape) != want:
        raise ValueError(f"transformed_weight for algo={algo!r} must have shape (α², K, C) = {want} "
                         f"(winograd_filter_transform(w, 'f{m}x{m}_3x3') of weight {problem.weight_shape}), "
                         f"got {tuple(U.shape)}")
    return U


def _filter(be, w, transformed_weight, problem: Conv2dProblem, m: int, algo: str):
    if transformed_weight is not None:
        U = _check_transformed_weight(be, transformed_weight, problem, m, algo)
        _common.same_device(be, weight=w, transformed_weight=U)
        return U
    alpha = m + R - 1
    U = be.empty((alpha * alpha, problem.K, problem.C), np.float32)
    filter_transform_launch(be, w, U, m)
    return U


def _check_multiply(multiply) -> str:
    if multiply not in ("auto", "gemm", "simple"):
        raise ValueError(f"multiply must be 'auto', 'gemm' or 'simple', got {multiply!r}")
    return multiply


def _run_nonfused(m: int):
    algo = f"winograd_f{m}x{m}_3x3"

    def run(be, problem, x, w, bias, act, residual, out, *, max_workspace_bytes=None,
            transformed_weight=None, multiply="auto"):
        method = _check_multiply(multiply)
        pl = plan(problem, m, max_workspace_bytes)
        U = _filter(be, w, transformed_weight, problem, m, algo)
        a2, C, K = pl.alpha ** 2, problem.C, problem.K
        V_flat = be.empty((a2 * C * pl.ld,), np.float32)
        M_flat = be.empty((a2 * K * pl.ld,), np.float32)
        for begin, count, ldt in pl.chunk_list():
            V = V_flat[:a2 * C * ldt].reshape(a2, C, ldt)
            Mx = M_flat[:a2 * K * ldt].reshape(a2, K, ldt)
            input_transform_launch(be, x, V, problem, pl, begin, count, ldt)
            # The pad columns of V are zeros, so M's pad columns are zeros too; the GEMM runs
            # over all ldt columns so that every row it touches starts 16-byte aligned.
            _multiply(be, U, V, Mx, a2, K, C, ldt, method)
            output_transform_launch(be, Mx, out, bias, act, residual, problem, pl, begin, count, ldt)

    return run


def _run_fused(be, problem, x, w, bias, act, residual, out, *, max_workspace_bytes=None,
               transformed_weight=None):
    U = _filter(be, w, transformed_weight, problem, 2, "winograd_fused_f2x2_3x3")
    fused_launch(be, x, U, out, bias, act, residual, problem)


def _workspace_nonfused(m: int):
    def workspace_bytes(problem, limit=None) -> int:
        return plan(problem, m, limit).workspace_bytes()
    return workspace_bytes


def _workspace_fused(problem, limit=None) -> int:
    """U only (allocated when no transformed_weight is passed); V and M never reach global memory."""
    return 16 * problem.K * problem.C * problem.itemsize


def _fused_reason(problem: Conv2dProblem) -> str | None:
    reason = unsupported_reason(problem)
    if reason is None and -(-problem.K // FUSED_CONFIG.bk) > 65535:
        reason = f"the fused kernel's grid.y = ceil(K/{FUSED_CONFIG.bk}) must be <= 65535, got K={problem.K}"
    return reason


# --------------------------------------------------------------------------- the auto rule
# Per tile the input transform costs O(α²) per input channel and the output transform O(α²) per
# output channel; the saving, m²·9 − α² multiplications, is per (input, output) channel pair, on
# the K·C product term. So the transforms are amortised only when C and K are both large: we take
# Winograd for 3x3 stride 1 with C >= 16 and K >= 16. On the house scale (direct 0, the general
# GEMM algorithms implicit_gemm 10 and im2col_gemm 20, pointwise 90; specialised kernels above the
# general ones where they apply):
#   * fused F(2x2,3x3), 35: 2.25x fewer multiplications than a GEMM formulation, no V/M traffic;
#   * F(4x4,3x3), 40, above it when C, K >= 64 and the output is at least 8x8: 4x fewer
#     multiplications, and large enough that the transforms and the partial edge tiles are a
#     small share. Its error is ~5-10x F(2x2,3x3)'s (docs/winograd_accuracy.md), still within
#     fp32 inference use;
#   * non-fused F(2x2,3x3), 15: a fallback below im2col_gemm (the fused kernel runs every problem
#     it runs, without the V/M round trips through global memory).
# No GPU measurement backs the exact numbers yet (cuconv bench will); the ordering follows the
# multiplication counts.
MIN_CHANNELS = 16
MIN_CHANNELS_F4 = 64
MIN_OUTPUT_F4 = 8


def _winograd_worth_it(problem: Conv2dProblem) -> bool:
    return problem.C >= MIN_CHANNELS and problem.K >= MIN_CHANNELS


def _priority_fused(problem):
    return 35.0 if _winograd_worth_it(problem) else None


def _priority_f2(problem):
    return 15.0 if _winograd_worth_it(problem) else None


def _priority_f4(problem):
    if (problem.C >= MIN_CHANNELS_F4 and problem.K >= MIN_CHANNELS_F4
            and min(problem.P, problem.Q) >= MIN_OUTPUT_F4):
        return 40.0
    return None


register_algorithm(ConvAlgorithm(
    "winograd_f2x2_3x3", unsupported_reason, _run_nonfused(2), _workspace_nonfused(2), _priority_f2,
    ("float32",), "Winograd F(2x2,3x3): transforms + 16 batched GEMMs (2.25x fewer multiplications)"))
register_algorithm(ConvAlgorithm(
    "winograd_f4x4_3x3", unsupported_reason, _run_nonfused(4), _workspace_nonfused(4), _priority_f4,
    ("float32",), "Winograd F(4x4,3x3): transforms + 36 batched GEMMs (4x fewer multiplications)"))
register_algorithm(ConvAlgorithm(
    "winograd_fused_f2x2_3x3", _fused_reason, _run_fused, _workspace_fused, _priority_fused,
    ("float32",), "Winograd F(2x2,3x3) in one kernel, tiles in shared memory (no V/M workspace)"))
