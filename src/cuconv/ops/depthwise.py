"""Algorithm ``"depthwise"`` and ``cuconv.depthwise_conv2d``: kernels/depthwise.cu.

Depthwise convolution: ``groups == C``, weight ``(M·C, 1, R, S)`` (channel multiplier M),
output channel k filters input channel k // M. Three kernels, picked per problem:

* ``depthwise_f32_k{3,5,7}_s{1,2}_v{V}`` — square 3/5/7 filter, equal stride 1 or 2,
  dilation 1: input tile + halo staged in shared memory, the filter in registers, V output
  rows per thread sliding down the staged rows;
* ``depthwise_f32_generic`` — the same staging for any R, S, stride, dilation;
* ``depthwise_f32_direct`` — one thread per output from global memory: the fallback when no
  tile fits in shared memory (huge filters, huge dilation or multiplier), and the simple
  variant the tests compare the others with.

Shared memory per block is capped at 15 KiB so that four 256-thread blocks fit on every
target (sm_75 has 64 KiB per SM): 50 % theoretical occupancy on sm_90, which is what
``min_blocks_per_sm=4`` promises to the compile matrix.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from ..backend import current_backend
from ..plan import Launch, PlanError
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from . import _common
from ._algorithm import ConvAlgorithm, ConvSpec, conv_plan
from ._common import OUT, W, X, i32
from ._conv_frontend import ConvFrontEnd

FILE = "depthwise.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4
SMEM_LIMIT_BYTES = 15 * 1024
MAX_BLOCKS_DIRECT = 1 << 16          # the direct kernel's grid-stride loop covers the rest
INT_MAX = 2 ** 31 - 1
# Blocks the planner aims for at least (two per SM on a 132-SM H100) before it grows tiles.
TARGET_BLOCKS = 264

VARIANTS = ("auto", "specialized", "generic", "direct")


@dataclass(frozen=True)
class DepthwiseConfig:
    """One instantiation of the tiled kernel: ``ks == 0`` is the generic one."""
    ks: int = 0          # R = S = ks (0: runtime)
    stride: int = 0      # stride_h = stride_w (0: runtime)
    rows: int = 1        # V: output rows per thread

    @property
    def name(self) -> str:
        if self.ks == 0:
            return "depthwise_f32_generic"
        return f"depthwise_f32_k{self.ks}_s{self.stride}_v{self.rows}"

    @property
    def expression(self) -> str:
        return f"depthwise_tiled_f32<{self.ks}, {self.stride}, {self.rows}>"

    def matches(self, p: Conv2dProblem) -> str | None:
        """None if this specialized config's compile-time constants fit ``p``, else why not."""
        if self.ks == 0:
            return None
        if (p.R, p.S) != (self.ks, self.ks):
            return f"{self.name} needs a {self.ks}x{self.ks} filter, got {p.R}x{p.S}"
        if (p.stride_h, p.stride_w) != (self.stride, self.stride):
            return f"{self.name} needs stride {self.stride}, got {(p.stride_h, p.stride_w)}"
        if (p.dilation_h, p.dilation_w) != (1, 1):
            return f"{self.name} needs dilation 1, got {(p.dilation_h, p.dilation_w)}"
        return None

    def entry(self) -> KernelEntry:
        return KernelEntry(FILE, self.expression, self.name, block_threads=THREADS,
                           min_blocks_per_sm=MIN_BLOCKS_PER_SM, dynamic_smem=SMEM_LIMIT_BYTES,
                           main=self.ks == 3)


GENERIC = DepthwiseConfig()
# V per (kernel size, stride): as many rows as keep the filter, V accumulators and one staged
# row within 64 registers (the 4-blocks/SM budget) without spilling on any target.
SPECIALIZED = tuple(DepthwiseConfig(ks, s, v) for ks, s, v in (
    (3, 1, 4), (3, 2, 4), (5, 1, 3), (5, 2, 2), (7, 1, 2), (7, 2, 2)))
DIRECT_NAME = "depthwise_f32_direct"
DIRECT_EXPRESSION = "depthwise_direct_f32"

ENTRIES = {cfg: register_kernel(cfg.entry()) for cfg in (GENERIC, *SPECIALIZED)}
DIRECT_ENTRY = register_kernel(KernelEntry(FILE, DIRECT_EXPRESSION, DIRECT_NAME, block_threads=THREADS,
                                           min_blocks_per_sm=MIN_BLOCKS_PER_SM))


# --------------------------------------------------------------------------- tile planning
@dataclass(frozen=True)
class DepthwiseTile:
    """A block's share: ``tile_c`` input channels (all M outputs of each) × ``tile_p`` output
    rows × ``tile_q`` output columns, and the dynamic shared memory that takes."""
    tile_c: int
    tile_p: int
    tile_q: int
    smem_bytes: int
    blocks: int


def _smem_floats(p: Conv2dProblem, rows: int, tc: int, tp: int, tq: int) -> int:
    M = p.K // p.C
    strips = -(-tp // rows)
    in_rows = (strips * rows - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1
    in_cols = (tq - 1) * p.stride_w + (p.S - 1) * p.dilation_w + 1
    return tc * in_rows * in_cols + tc * M * p.R * p.S


def plan_tile(p: Conv2dProblem, rows: int, smem_limit: int = SMEM_LIMIT_BYTES) -> DepthwiseTile | None:
    """The tile for the tiled kernel with ``rows`` output rows per thread, or None if even the
    smallest tile does not fit in ``smem_limit`` bytes.

    Rule: whole output rows when Q <= 128 (a block's input rows are then contiguous in
    memory), else 64-column tiles; as many rows (a multiple of ``rows``) as give each thread
    one strip, fewer when the problem is small (keep >= TARGET_BLOCKS blocks); when a tile
    covers a whole plane, several channels per block (late MobileNet layers are 7x7).
    """
    floats = smem_limit // 4
    M = p.K // p.C
    total = p.N * p.K * p.P * p.Q
    target = max(32 * rows, min(THREADS * rows, total // TARGET_BLOCKS))   # outputs per block

    def fits(tc, tp, tq):
        return _smem_floats(p, rows, tc, tp, tq) <= floats

    widths = ([p.Q] if p.Q <= 128 else []) + [w for w in (64, 32, 16, 8, 4, 2, 1) if w < p.Q]
    tq = next((w for w in widths if fits(1, rows, w)), None)
    if tq is None:
        return None
    max_rows = -(-p.P // rows) * rows
    tp = rows
    while (tp + rows <= max_rows and (tp + rows) * tq * M <= max(target, rows * tq * M)
           and fits(1, tp + rows, tq)):
        tp += rows
    tc = 1
    if tp >= p.P and tq >= p.Q:
        per_plane = M * p.P * p.Q
        while tc < p.C and (tc + 1) * per_plane <= target and fits(tc + 1, tp, tq):
            tc += 1
    blocks = p.N * (-(-p.C // tc)) * (-(-p.P // tp)) * (-(-p.Q // tq))
    if blocks > INT_MAX:
        return None
    return DepthwiseTile(tc, tp, tq, _smem_floats(p, rows, tc, tp, tq) * 4, blocks)


def _int32_reason(p: Conv2dProblem) -> str | None:
    for name in ("N", "C", "H", "W", "K", "R", "S", "P", "Q"):
        if getattr(p, name) > INT_MAX:
            return f"{name}={getattr(p, name)} does not fit a 32-bit int"
    if p.K * p.R * p.S > INT_MAX:
        return f"K·R·S={p.K * p.R * p.S} does not fit a 32-bit int"
    return None


def can_implement(p: Conv2dProblem) -> str | None:
    if p.dtype != "float32":
        return f"depthwise takes float32, got {p.dtype}"
    if p.groups != p.C:
        return (f"depthwise needs groups == C (one filter group per input channel), got "
                f"groups={p.groups}, C={p.C}")
    return _int32_reason(p)


@dataclass(frozen=True)
class DepthwisePlan:
    kernel: str                       # the config's name (pytest id, bench `kernel` column)
    config: DepthwiseConfig | None    # None: the direct kernel
    tile: DepthwiseTile | None


@functools.lru_cache(maxsize=4096)   # problems are frozen (hashable); planning is per shape
def plan(p: Conv2dProblem, variant: str = "auto") -> DepthwisePlan:
    """Which kernel runs ``p``: ``variant`` "auto" (specialized, else generic, else direct),
    or force "specialized" / "generic" / "direct" (ValueError when it cannot run ``p``)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    reason = can_implement(p)
    if reason is not None:
        raise ValueError(f"depthwise cannot run {p.describe()}: {reason}")
    if variant in ("auto", "specialized"):
        reasons = [cfg.matches(p) for cfg in SPECIALIZED]
        cfg = next((c for c, r in zip(SPECIALIZED, reasons) if r is None), None)
        tile = plan_tile(p, cfg.rows) if cfg is not None else None
        if tile is not None:
            return DepthwisePlan(cfg.name, cfg, tile)
        if variant == "specialized":
            why = ("no specialized config for a {}x{} filter, stride {}, dilation {} (they cover "
                   "3/5/7 square, stride 1 or 2, dilation 1)".format(
                       p.R, p.S, (p.stride_h, p.stride_w), (p.dilation_h, p.dilation_w))
                   if cfg is None else f"{cfg.name}'s smallest tile needs more than "
                                       f"{SMEM_LIMIT_BYTES} bytes of shared memory")
            raise ValueError(f"variant='specialized' cannot run {p.describe()}: {why}")
    if variant in ("auto", "generic"):
        tile = plan_tile(p, 1)
        if tile is not None:
            return DepthwisePlan(GENERIC.name, GENERIC, tile)
        if variant == "generic":
            raise ValueError(f"variant='generic' cannot run {p.describe()}: its smallest tile "
                             f"({_smem_floats(p, 1, 1, 1, 1) * 4} bytes) exceeds the "
                             f"{SMEM_LIMIT_BYTES}-byte shared-memory budget")
    return DepthwisePlan(DIRECT_NAME, None, None)


def launches(p: Conv2dProblem, x, w, out, has_bias: bool, has_residual: bool, act_code: int,
             variant: str = "auto", bias=None, residual=None) -> tuple[DepthwisePlan, list[Launch]]:
    """The depthwise kernel ``plan(p, variant)`` picks, as a launch over the array slots
    ``x``, ``w``, ``out`` (and ``bias``/``residual`` slots when given, else the roles)."""
    pl = plan(p, variant)
    ph = _common.Ref.absent("float32")
    M = p.K // p.C
    bias = (bias or _common.Ref("bias")) if has_bias else ph
    residual = (residual or _common.Ref("residual")) if has_residual else ph
    common = (x, w, bias, residual, out,
              i32(p.N), i32(p.C), i32(p.H), i32(p.W), i32(M), i32(p.P), i32(p.Q), i32(p.R),
              i32(p.S), i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w),
              i32(p.dilation_h), i32(p.dilation_w))
    flags = (i32(has_bias), i32(has_residual), i32(act_code))
    if pl.config is None:
        grid = _common.grid_1d(p.N * p.K * p.P * p.Q, THREADS, MAX_BLOCKS_DIRECT)
        return pl, [Launch(DIRECT_ENTRY, (grid, 1, 1), (THREADS, 1, 1), (*common, *flags))]
    t = pl.tile
    return pl, [Launch(ENTRIES[pl.config], (t.blocks, 1, 1), (THREADS, 1, 1),
                       (*common, i32(t.tile_c), i32(t.tile_p), i32(t.tile_q), *flags), t.smem_bytes)]


def conv_plan_depthwise(spec: ConvSpec):
    p = spec.problem
    reason = can_implement(p)
    if reason is not None:
        raise PlanError(reason)
    variant = spec.option("variant", "auto")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    pl, ls = launches(p, X, W, OUT, spec.has_bias, spec.has_residual, spec.act, variant)
    return conv_plan(spec, "depthwise", ls, description=pl.kernel)


ALGORITHM = ConvAlgorithm(
    name="depthwise",
    plan=conv_plan_depthwise,
    dtypes=("float32",),
    options=("variant",),
    description="groups == C (channel multiplier M): shared-memory tiles with halo, 3/5/7 "
                "specialized, generic and direct fallbacks; bias/activation/residual fused",
)


_FRONT = ConvFrontEnd(lambda spec, algo: ALGORITHM.plan_or_raise(spec))


def _depthwise_args(x, w, variant: str) -> int:
    """The channel count (groups) of a depthwise call; ValueError for a non-depthwise weight."""
    xs, ws = getattr(x, "shape", None), getattr(w, "shape", None)
    C = 1   # without shapes the front end reports the type or rank
    if xs is not None and ws is not None and len(xs) in (3, 4) and len(ws) == 4:
        C = int(xs[-3])
        if ws[1] != 1 or ws[0] % C != 0 or ws[0] == 0:
            raise ValueError(f"depthwise_conv2d needs a weight of shape (M·C, 1, R, S) with C={C} the "
                             f"input channels (input {tuple(xs)}), got weight {tuple(ws)}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return C


def plan_depthwise_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, *, activation=None,
                          residual=None, variant: str = "auto"):
    """The ``Plan`` that ``depthwise_conv2d`` with the same arguments runs."""
    C = _depthwise_args(x, w, variant)
    return _FRONT.plan(current_backend(), x, w, bias, residual, None, stride, padding, dilation, C, "depthwise",
                       activation, None, "NCHW", None, {"variant": variant}, arrays_required=False)[0]


def depthwise_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, *, activation=None,
                     residual=None, out=None, variant: str = "auto"):
    """Depthwise 2-D convolution (``conv2d`` with ``groups = C``), NCHW.

    ``w`` has shape ``(M·C, 1, R, S)``: M filters per input channel (channel multiplier),
    output channel k filtering input channel k // M, as in PyTorch. ``y = activation(conv +
    bias + residual)`` with the epilogue fused. ``variant`` ("auto", "specialized", "generic",
    "direct") forces a kernel, for tests and benchmarks.
    """
    C = _depthwise_args(x, w, variant)
    return _FRONT(x, w, bias, stride, padding, dilation, C, "depthwise", activation, residual, out, None,
                  "NCHW", None, {"variant": variant})
