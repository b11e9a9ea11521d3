"""Depthwise gradients (groups == C > 1, channel multiplier M), kernels/depthwise_grad.cu: the
``depthwise`` algorithm of the ``DGRAD`` and of the ``WGRAD`` pass (``auto`` takes them for
depthwise problems: ops/heuristics.py).

* ``depthwise_grad_dgrad_{f32,f64}`` — dx through a shared-memory tile of dy (with its halo) and the
  channels' filters, items ordered by stride phase so each warp visits only the taps that reach
  its pixels. The tile is chosen by ``dgrad_tile``; when no tile fits the 15 KiB budget (huge
  filters, dilation or multiplier) or the stride exceeds 16 it returns None and the algorithm
  refuses (``auto`` then takes conv_dgrad's direct kernel).
* ``depthwise_grad_wgrad_{f32,f64}_t9`` — dW (and db, fused) as a per-channel reduction over
  N·P·Q, 9 taps per block in registers, split across ``splits`` blocks per channel with a
  deterministic second pass (conv_wgrad.cu's wgrad_splitk_reduce) when the grid would
  otherwise not fill the GPU; ``wgrad_splits`` is the rule (the ``splits=`` option overrides it).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, tag
from ..plan import Launch, PlanError, Ref
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from ._algorithm import DGRAD, WGRAD, ConvAlgorithm, ConvSpec, conv_plan
from ._common import i32, i64
from ._grad import DB, DW, DX, DY, W, X, problem_int32_reason, split_chunk
from .conv_wgrad import DEFAULT_MAX_WORKSPACE_BYTES, splitk_reduce_launch, wgrad_plan, zeros_plan

FILE = "depthwise_grad.cu"
THREADS = 256
SMEM_LIMIT_BYTES = 15 * 1024      # four 256-thread blocks on every target (sm_75: 64 KiB/SM)
MAX_STRIDE = 16                   # the kernel's per-phase tap tables (CC_DWG_MAX_STRIDE)
TAPS = 9                          # taps per wgrad block (a 3x3 filter in one block)
MIN_SPLIT_LEN = 8 * THREADS       # reduction elements per wgrad split: >= 8 per thread
TARGET_BLOCKS_PER_SM = 2


# Blocks per SM the kernels promise (the compile matrix checks them): double needs more
# registers than the 64 of four 256-thread blocks — the dgrad tile spills 8 bytes at 64 on
# sm_100/sm_120, the wgrad's 9 accumulators take twice float's registers.
DGRAD_MIN_BLOCKS = {"float32": 4, "float64": 3}
WGRAD_MIN_BLOCKS = {"float32": 4, "float64": 2}


def dgrad_expression(dtype: str) -> str:
    return f"depthwise_dgrad_tiled<{ctype(dtype)}, {DGRAD_MIN_BLOCKS[dtype]}>"


def wgrad_expression(dtype: str) -> str:
    return f"depthwise_wgrad<{ctype(dtype)}, {TAPS}, {WGRAD_MIN_BLOCKS[dtype]}>"


def dgrad_name(dtype: str) -> str:
    return f"depthwise_grad_dgrad_{tag(dtype)}"


def wgrad_name(dtype: str) -> str:
    return f"depthwise_grad_wgrad_{tag(dtype)}_t{TAPS}"


DGRAD_ENTRIES = {dt: register_kernel(KernelEntry(FILE, dgrad_expression(dt), dgrad_name(dt), block_threads=THREADS,
                                                 min_blocks_per_sm=DGRAD_MIN_BLOCKS[dt], dynamic_smem=SMEM_LIMIT_BYTES))
                 for dt in CUDA_CORE_DTYPES}
WGRAD_ENTRIES = {dt: register_kernel(KernelEntry(FILE, wgrad_expression(dt), wgrad_name(dt), block_threads=THREADS,
                                                 min_blocks_per_sm=WGRAD_MIN_BLOCKS[dt]))
                 for dt in CUDA_CORE_DTYPES}


def applies(p: Conv2dProblem) -> bool:
    return p.is_depthwise


def _int32_reason(p: Conv2dProblem) -> str | None:
    return problem_int32_reason(p, ("P·Q", p.P * p.Q), ("K·R·S", p.K * p.R * p.S))


# --------------------------------------------------------------------------- dgrad
@dataclass(frozen=True)
class DgradTile:
    """The shared-memory tile of ``depthwise_dgrad``: tile_c channels × tile_h × tile_w dx pixels."""
    dtype: str
    tile_c: int
    tile_h: int      # multiples of the stride: every tile starts on phase (0, 0)
    tile_w: int
    smem_bytes: int
    blocks: int

    @property
    def name(self) -> str:
        return dgrad_name(self.dtype)

    @property
    def expression(self) -> str:
        return dgrad_expression(self.dtype)

    def launch(self, p: Conv2dProblem) -> list[Launch]:
        args = (W, DY, DX, *map(i32, (
            p.N, p.C, p.H, p.W, p.K // p.C, p.P, p.Q, p.R, p.S, p.stride_h, p.stride_w,
            p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, self.tile_c, self.tile_h, self.tile_w)))
        return [Launch(DGRAD_ENTRIES[self.dtype], (self.blocks, 1, 1), (THREADS, 1, 1), args, self.smem_bytes)]


def _halo(tile: int, pad: int, k: int, dil: int, stride: int) -> int:
    """dy rows (columns) that reach a tile of ``tile`` dx rows starting on a stride multiple
    (Python's // floors, as cc_floor_div does)."""
    return (tile - 1 + pad) // stride - (pad - (k - 1) * dil) // stride + 1


def _smem_elems(p: Conv2dProblem, tc: int, th: int, tw: int) -> int:
    M = p.K // p.C
    rows = _halo(th, p.pad_h, p.R, p.dilation_h, p.stride_h)
    cols = _halo(tw, p.pad_w, p.S, p.dilation_w, p.stride_w)
    return tc * M * rows * cols + tc * M * p.R * p.S


def dgrad_tile(p: Conv2dProblem, smem_limit: int = SMEM_LIMIT_BYTES) -> DgradTile | None:
    """The tile for depthwise_dgrad_tiled, or None when it cannot run ``p``.

    Rule: whole rows when W <= 64, else 32-column tiles (rounded up to a multiple of the
    stride); as many rows (a multiple of the stride) as keep the tile within 2·THREADS pixels
    (two items per thread); when a tile covers a whole plane, several channels per block.
    Each step keeps the shared memory within ``smem_limit``.
    """
    if not applies(p) or _int32_reason(p) is not None or p.dtype not in CUDA_CORE_DTYPES:
        return None
    sh, sw = p.stride_h, p.stride_w
    if max(sh, sw) > MAX_STRIDE:
        return None
    limit = smem_limit // p.itemsize

    def rup(a, m):
        return -(-a // m) * m

    def fits(tc, th, tw):
        return _smem_elems(p, tc, th, tw) <= limit

    widths = [rup(p.W, sw)] if p.W <= 64 else []
    widths += sorted({rup(w, sw) for w in (32, 16, 8, 4, 2, 1) if rup(w, sw) < p.W}, reverse=True)
    tw = next((w for w in widths if fits(1, sh, w)), None)
    if tw is None:
        return None
    th = sh
    while th < rup(p.H, sh) and (th + sh) * tw <= 2 * THREADS and fits(1, th + sh, tw):
        th += sh
    tc = 1
    if th >= p.H and tw >= p.W:
        while tc < p.C and (tc + 1) * th * tw <= 2 * THREADS and fits(tc + 1, th, tw):
            tc += 1
    blocks = p.N * -(-p.C // tc) * -(-p.H // th) * -(-p.W // tw)
    if blocks > INT32_MAX or tc * th * tw > INT32_MAX:
        return None
    return DgradTile(p.dtype, tc, th, tw, _smem_elems(p, tc, th, tw) * p.itemsize, blocks)


# --------------------------------------------------------------------------- wgrad
@dataclass(frozen=True)
class WgradSchedule:
    """How depthwise_wgrad runs a problem: the split count and chunk, db fused or not (conv_wgrad's
    ``wgrad_plan`` turns it into the Plan)."""
    dtype: str
    splits: int
    chunk: int
    bias: bool       # db is computed (fused)

    @property
    def name(self) -> str:
        return wgrad_name(self.dtype)

    @property
    def expression(self) -> str:
        return wgrad_expression(self.dtype)

    deterministic = True

    def workspace_elems(self, p: Conv2dProblem) -> tuple[int, int]:
        """(dW partials, db partials) elements of workspace: [splits][K·R·S], [splits][K]."""
        if self.splits == 1:
            return 0, 0
        return self.splits * p.K * p.R * p.S, self.splits * p.K if self.bias else 0

    def workspace_bytes(self, p: Conv2dProblem) -> int:
        return sum(self.workspace_elems(p)) * p.itemsize

    def launches(self, p: Conv2dProblem) -> list[Launch]:
        """dw (and db when self.bias) from x and dy, the partials in the workspace buffers
        ``ws_w`` / ``ws_b`` (sized by workspace_elems) when split."""
        n_w, n_b = p.K * p.R * p.S, p.K
        geom = tuple(map(i32, (
            p.N, p.C, p.H, p.W, p.K // p.C, p.P, p.Q, p.R, p.S, p.stride_h, p.stride_w,
            p.pad_h, p.pad_w, p.dilation_h, p.dilation_w)))
        grid = (p.K * -(-(p.R * p.S) // TAPS), self.splits, 1)
        absent = Ref.absent(self.dtype)
        db = DB if self.bias else absent
        ws_w, ws_b = Ref("ws_w"), (Ref("ws_b") if self.bias else absent)
        out_w, out_b = (DW, db) if self.splits == 1 else (ws_w, ws_b)
        lns = [Launch(WGRAD_ENTRIES[self.dtype], grid, (THREADS, 1, 1),
                      (X, DY, out_w, i64(n_w), out_b, i64(n_b), i32(self.bias), *geom, i64(self.chunk)))]
        if self.splits > 1:
            lns.append(splitk_reduce_launch(self.dtype, ws_w, ws_b, self.splits, n_w, n_b if self.bias else 0, DW, db))
        return lns


def wgrad_splits(p: Conv2dProblem, sms: int, max_workspace_bytes: int | None, bias: bool) -> int:
    """Splits of the depthwise wgrad reduction (before split_chunk evens them out).

    Enough splits that the grid has TARGET_BLOCKS_PER_SM blocks per SM (K·ceil(R·S/9) blocks
    per split: 32 for the first MobileNet layer, far too few for 132 SMs), but at least
    MIN_SPLIT_LEN reduction elements per split, and the workspace splits·(K·R·S + K)·itemsize
    within ``max_workspace_bytes`` (None: no limit; 0: no workspace, one split).
    """
    blocks = p.K * -(-(p.R * p.S) // TAPS)
    L = p.N * p.P * p.Q
    want = -(-(TARGET_BLOCKS_PER_SM * sms) // blocks)
    splits = max(1, min(want, L // MIN_SPLIT_LEN, 65535))
    if splits > 1 and max_workspace_bytes is not None:
        per_split = (p.K * p.R * p.S + (p.K if bias else 0)) * p.itemsize
        splits = max(1, min(splits, max_workspace_bytes // per_split))
    return splits if splits > 1 else 1


def wgrad_schedule(p: Conv2dProblem, sms: int = 132, max_workspace_bytes: int | None = None,
                   bias: bool = False, splits: int | None = None) -> WgradSchedule | None:
    """The depthwise wgrad schedule for ``p`` (None if the kernel's int limits do not hold).
    ``splits`` overrides the rule."""
    if not applies(p) or _int32_reason(p) is not None or p.dtype not in CUDA_CORE_DTYPES:
        return None
    if p.K * -(-(p.R * p.S) // TAPS) > INT32_MAX:
        return None
    L = p.N * p.P * p.Q
    n = wgrad_splits(p, sms, max_workspace_bytes, bias) if splits is None else splits
    n, chunk = split_chunk(L, min(n, 65535), THREADS)
    return WgradSchedule(p.dtype, n, chunk, bias)



# --------------------------------------------------------------------------- the algorithms
def plan_dgrad(spec: ConvSpec):
    p = spec.problem
    if not applies(p):
        raise PlanError(f"needs groups == C > 1 (a depthwise convolution), got {p.describe()}")
    tile = dgrad_tile(p)
    if tile is None:
        raise PlanError(f"its smallest tile exceeds the {SMEM_LIMIT_BYTES}-byte shared-memory budget, the "
                        f"stride {(p.stride_h, p.stride_w)} exceeds {MAX_STRIDE}, or a size does not fit a 32-bit int")
    return conv_plan(spec, "depthwise", tile.launch(p), description=tile.name)


def plan_wgrad(spec: ConvSpec):
    p = spec.problem
    if not applies(p):
        raise PlanError(f"needs groups == C > 1 (a depthwise convolution), got {p.describe()}")
    if p.N == 0:
        return zeros_plan(spec, "depthwise")
    cap = spec.max_workspace_bytes if spec.max_workspace_bytes is not None else DEFAULT_MAX_WORKSPACE_BYTES
    sched = wgrad_schedule(p, spec.caps.sms, cap, spec.has_bias, spec.option("splits"))
    if sched is None:
        raise PlanError(f"a size does not fit the kernel's 32-bit ints: {p.describe()}")
    return wgrad_plan(spec, "depthwise", sched)


DGRAD_ALGORITHM = ConvAlgorithm(
    name="depthwise", plan=plan_dgrad, dtypes=CUDA_CORE_DTYPES, operator=DGRAD,
    description="groups == C: dx through a shared-memory tile of dy, each warp on one stride phase's taps")
WGRAD_ALGORITHM = ConvAlgorithm(
    name="depthwise", plan=plan_wgrad, dtypes=CUDA_CORE_DTYPES, options=("splits",), operator=WGRAD, crops=True,
    description="groups == C: dW (db fused) as a per-channel reduction over N·P·Q, split with a "
                "deterministic second pass")
