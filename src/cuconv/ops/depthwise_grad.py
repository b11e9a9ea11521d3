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

float16 and bfloat16 (``f16``/``bf16``) run the same kernels with fp32 accumulation and one rounding
to the output; split partials are fp32 (``..._split`` kernels) summed and rounded once by tc_grad.cu's
``tc_grad_reduce`` (bfloat16 on sm_75, where that reduction is not built: one split, no workspace).

NHWC (x, dy, dx N,H,W,C; w K,R,S,1): ``depthwise_grad_dgrad_nhwc_*`` — one thread per dx element,
channels fastest, the taps that reach dy only (no tile: the simple variant); and
``depthwise_grad_wgrad_nhwc_*_t9`` — 32 channels per block on the lanes (coalesced along C), the
8 warps striding over N·P·Q, a fixed-order sum over the warps; split as the NCHW one.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dtypes import DTYPES, FLOAT_DTYPES, INT32_MAX, TENSOR_CORE_DTYPES, ctype, tag
from ..plan import Launch, PlanError, Ref, layout_buffers
from ..problem import Conv2dProblem
from ..registry import ARCHS, KernelEntry, register_kernel
from . import tc_grad
from .tc_common import ARCHS_SM80
from ._algorithm import DGRAD, WGRAD, ConvAlgorithm, ConvSpec, conv_plan
from ._common import grid_1d, i32, i64
from ._grad import DB, DW, DX, DY, W, X, problem_int32_reason, split_chunk
from .conv_wgrad import DEFAULT_MAX_WORKSPACE_BYTES, splitk_reduce_launch, wgrad_plan, zeros_plan
from .depthwise import stage_bytes

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
# The 16-bit types accumulate in fp32: float's registers.
DGRAD_MIN_BLOCKS = {"float32": 4, "float64": 3, "float16": 4, "bfloat16": 4}
WGRAD_MIN_BLOCKS = {"float32": 4, "float64": 2, "float16": 4, "bfloat16": 4}
LAYOUT_TAG = {"NCHW": "", "NHWC": "_nhwc"}


def _partial(dtype: str, split: bool) -> str:
    """The dtype a wgrad kernel writes: the output's, or with splits its accumulator's (fp32 partials
    for the 16-bit types)."""
    return DTYPES[dtype].accumulator if split else dtype


def dgrad_expression(dtype: str, layout: str = "NCHW") -> str:
    kernel = "depthwise_dgrad_nhwc" if layout == "NHWC" else "depthwise_dgrad_tiled"
    return f"{kernel}<{ctype(dtype)}, {DGRAD_MIN_BLOCKS[dtype]}>"


def wgrad_expression(dtype: str, layout: str = "NCHW", split: bool = False) -> str:
    kernel = "depthwise_wgrad" + LAYOUT_TAG[layout]
    return f"{kernel}<{ctype(dtype)}, {TAPS}, {WGRAD_MIN_BLOCKS[dtype]}, {ctype(_partial(dtype, split))}>"


def dgrad_name(dtype: str, layout: str = "NCHW") -> str:
    return f"depthwise_grad_dgrad{LAYOUT_TAG[layout]}_{tag(dtype)}"


def wgrad_name(dtype: str, layout: str = "NCHW", split: bool = False) -> str:
    partials = "_split" if _partial(dtype, split) != dtype else ""
    return f"depthwise_grad_wgrad{LAYOUT_TAG[layout]}_{tag(dtype)}_t{TAPS}{partials}"


DGRAD_ENTRIES = {(dt, lay): register_kernel(KernelEntry(
    FILE, dgrad_expression(dt, lay), dgrad_name(dt, lay), block_threads=THREADS, min_blocks_per_sm=DGRAD_MIN_BLOCKS[dt],
    dynamic_smem=SMEM_LIMIT_BYTES if lay == "NCHW" else 0, cuda_headers=True))
    for dt in FLOAT_DTYPES for lay in LAYOUT_TAG}
# (dtype, layout, split): for float32/float64 the split kernel is the unsplit one (partials in T). The
# bfloat16 split kernel is built for sm_80+ only, as the reduction it feeds (tc_grad_reduce_bf16).
WGRAD_ENTRIES = {(dt, lay, split): register_kernel(KernelEntry(
    FILE, wgrad_expression(dt, lay, split), wgrad_name(dt, lay, split), block_threads=THREADS,
    min_blocks_per_sm=WGRAD_MIN_BLOCKS[dt], cuda_headers=True,
    archs=ARCHS_SM80 if split and dt == "bfloat16" else ARCHS))
    for dt in FLOAT_DTYPES for lay in LAYOUT_TAG for split in (False, True)}


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
        return [Launch(DGRAD_ENTRIES[(self.dtype, "NCHW")], (self.blocks, 1, 1), (THREADS, 1, 1), args,
                       self.smem_bytes)]


MAX_BLOCKS_NHWC = 1 << 16      # depthwise_dgrad_nhwc's grid-stride loop covers the rest


def dgrad_nhwc_launch(p: Conv2dProblem) -> list[Launch]:
    """depthwise_dgrad_nhwc over the N·H·W·C dx elements (grid-stride)."""
    args = (W, DY, DX, *map(i32, (p.N, p.C, p.H, p.W, p.K // p.C, p.P, p.Q, p.R, p.S, p.stride_h, p.stride_w,
                                  p.pad_h, p.pad_w, p.dilation_h, p.dilation_w)))
    grid = grid_1d(p.N * p.H * p.W * p.C, THREADS, MAX_BLOCKS_NHWC)
    return [Launch(DGRAD_ENTRIES[(p.dtype, "NHWC")], (grid, 1, 1), (THREADS, 1, 1), args)]


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
    if not applies(p) or _int32_reason(p) is not None or p.dtype not in FLOAT_DTYPES:
        return None
    sh, sw = p.stride_h, p.stride_w
    if max(sh, sw) > MAX_STRIDE:
        return None
    limit = smem_limit // stage_bytes(p.dtype)

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
    return DgradTile(p.dtype, tc, th, tw, _smem_elems(p, tc, th, tw) * stage_bytes(p.dtype), blocks)


# --------------------------------------------------------------------------- wgrad
@dataclass(frozen=True)
class WgradSchedule:
    """How depthwise_wgrad runs a problem: the split count and chunk, db fused or not (conv_wgrad's
    ``wgrad_plan`` turns it into the Plan)."""
    dtype: str
    splits: int
    chunk: int
    bias: bool       # db is computed (fused)
    layout: str = "NCHW"

    @property
    def split(self) -> bool:
        return self.splits > 1

    @property
    def partial_dtype(self) -> str:
        """The workspace's element type (fp32 for the 16-bit types)."""
        return _partial(self.dtype, True)

    @property
    def name(self) -> str:
        return wgrad_name(self.dtype, self.layout, self.split)

    @property
    def expression(self) -> str:
        return wgrad_expression(self.dtype, self.layout, self.split)

    deterministic = True

    def workspace_elems(self, p: Conv2dProblem) -> tuple[int, int]:
        """(dW partials, db partials) elements of workspace: [splits][K·R·S], [splits][K]."""
        if self.splits == 1:
            return 0, 0
        return self.splits * p.K * p.R * p.S, self.splits * p.K if self.bias else 0

    def workspace_bytes(self, p: Conv2dProblem) -> int:
        return sum(self.workspace_elems(p)) * DTYPES[self.partial_dtype].itemsize

    def launches(self, p: Conv2dProblem) -> list[Launch]:
        """dw (and db when self.bias) from x and dy, the partials in the workspace buffers
        ``ws_w`` / ``ws_b`` (sized by workspace_elems) when split."""
        n_w, n_b = p.K * p.R * p.S, p.K
        geom = tuple(map(i32, (
            p.N, p.C, p.H, p.W, p.K // p.C, p.P, p.Q, p.R, p.S, p.stride_h, p.stride_w,
            p.pad_h, p.pad_w, p.dilation_h, p.dilation_w)))
        grid = (wgrad_blocks(p, self.layout), self.splits, 1)
        db = DB if self.bias else Ref.absent(self.dtype)
        ws_w, ws_b = Ref("ws_w"), (Ref("ws_b") if self.bias else Ref.absent(self.partial_dtype))
        out_w, out_b = (DW, db) if self.splits == 1 else (ws_w, ws_b)
        lns = [Launch(WGRAD_ENTRIES[(self.dtype, self.layout, self.split)], grid, (THREADS, 1, 1),
                      (X, DY, out_w, i64(n_w), out_b, i64(n_b), i32(self.bias), *geom, i64(self.chunk)))]
        if self.splits > 1 and self.partial_dtype == self.dtype:
            lns.append(splitk_reduce_launch(self.dtype, ws_w, ws_b, self.splits, n_w, n_b if self.bias else 0, DW, db))
        elif self.splits > 1:       # fp32 partials -> the 16-bit dW (and db): one rounding each
            entry = tc_grad.ENTRIES[("tc_grad_reduce", self.dtype)]
            for ws, n, out in ((ws_w, n_w, DW), *(((ws_b, n_b, DB),) if self.bias else ())):
                lns.append(Launch(entry, (grid_1d(n, 256, tc_grad.MAX_BLOCKS), 1, 1), (256, 1, 1),
                                  (ws, i32(self.splits), i64(n), out)))
        return lns


def wgrad_blocks(p: Conv2dProblem, layout: str) -> int:
    """Blocks per split: K channels (NHWC: groups of 32) times the tap chunks."""
    channels = p.K if layout == "NCHW" else -(-p.K // 32)
    return channels * -(-(p.R * p.S) // TAPS)


def wgrad_splits(p: Conv2dProblem, sms: int, max_workspace_bytes: int | None, bias: bool,
                 layout: str = "NCHW") -> int:
    """Splits of the depthwise wgrad reduction (before split_chunk evens them out).

    Enough splits that the grid has TARGET_BLOCKS_PER_SM blocks per SM (K·ceil(R·S/9) blocks
    per split: 32 for the first MobileNet layer, far too few for 132 SMs), but at least
    MIN_SPLIT_LEN reduction elements per split, and the workspace splits·(K·R·S + K)·itemsize
    within ``max_workspace_bytes`` (None: no limit; 0: no workspace, one split).
    """
    blocks = wgrad_blocks(p, layout)
    L = p.N * p.P * p.Q
    want = -(-(TARGET_BLOCKS_PER_SM * sms) // blocks)
    splits = max(1, min(want, L // MIN_SPLIT_LEN, 65535))
    if splits > 1 and max_workspace_bytes is not None:
        per_split = (p.K * p.R * p.S + (p.K if bias else 0)) * DTYPES[_partial(p.dtype, True)].itemsize
        splits = max(1, min(splits, max_workspace_bytes // per_split))
    return splits if splits > 1 else 1


def wgrad_schedule(p: Conv2dProblem, sms: int = 132, max_workspace_bytes: int | None = None,
                   bias: bool = False, splits: int | None = None, layout: str = "NCHW",
                   cc: int = 90) -> WgradSchedule | None:
    """The depthwise wgrad schedule for ``p`` (None if the kernel's int limits do not hold).
    ``splits`` overrides the rule. bfloat16 below sm_80 (``cc``): one split (its fp32 partials'
    reduction, tc_grad_reduce, is built for sm_80+)."""
    if not applies(p) or _int32_reason(p) is not None or p.dtype not in FLOAT_DTYPES:
        return None
    if wgrad_blocks(p, layout) > INT32_MAX:
        return None
    L = p.N * p.P * p.Q
    n = wgrad_splits(p, sms, max_workspace_bytes, bias, layout) if splits is None else splits
    if p.dtype == "bfloat16" and cc < 80:
        n = 1
    n, chunk = split_chunk(L, min(n, 65535), THREADS) if L else (1, 0)    # L = 0: one split of nothing
    return WgradSchedule(p.dtype, n, chunk, bias, layout)



# --------------------------------------------------------------------------- the algorithms
def plan_dgrad(spec: ConvSpec):
    p = spec.problem
    if not applies(p):
        raise PlanError(f"needs groups == C > 1 (a depthwise convolution), got {p.describe()}")
    if spec.layout == "NHWC":
        if _int32_reason(p) is not None:
            raise PlanError(f"a size does not fit the kernel's 32-bit ints: {p.describe()}")
        return conv_plan(spec, "depthwise", dgrad_nhwc_launch(p), description=dgrad_name(p.dtype, "NHWC"))
    tile = dgrad_tile(p)
    if tile is None:
        raise PlanError(f"its smallest tile exceeds the {SMEM_LIMIT_BYTES}-byte shared-memory budget, the "
                        f"stride {(p.stride_h, p.stride_w)} exceeds {MAX_STRIDE}, or a size does not fit a 32-bit int")
    return conv_plan(spec, "depthwise", tile.launch(p), description=tile.name)


def plan_wgrad(spec: ConvSpec):
    p = spec.problem
    if not applies(p):
        raise PlanError(f"needs groups == C > 1 (a depthwise convolution), got {p.describe()}")
    if p.N == 0 and p.dtype not in TENSOR_CORE_DTYPES:
        return zeros_plan(spec, "depthwise")
    cap = spec.max_workspace_bytes if spec.max_workspace_bytes is not None else DEFAULT_MAX_WORKSPACE_BYTES
    # 16-bit N = 0: one split of the kernel itself sums nothing into zeros (no zero-fill kernel for them).
    splits = 1 if p.N == 0 else spec.option("splits")
    sched = wgrad_schedule(p, spec.caps.sms, cap, spec.has_bias, splits, spec.layout, spec.caps.cc)
    if sched is None:
        raise PlanError(f"a size does not fit the kernel's 32-bit ints: {p.describe()}")
    if sched.partial_dtype == p.dtype:
        return wgrad_plan(spec, "depthwise", sched)
    n_w, n_b = sched.workspace_elems(p)
    parts = tuple(part for part in (("ws_w", sched.partial_dtype, n_w), ("ws_b", sched.partial_dtype, n_b)) if part[2])
    return conv_plan(spec, "depthwise", sched.launches(p), workspace=layout_buffers(*parts) if parts else (),
                     description=f"{sched.name}, {sched.splits} split(s), fp32 partials, deterministic")


DGRAD_ALGORITHM = ConvAlgorithm(
    name="depthwise", plan=plan_dgrad, dtypes=FLOAT_DTYPES, layouts=("NCHW", "NHWC"), operator=DGRAD,
    description="groups == C: dx through a shared-memory tile of dy, each warp on one stride phase's taps")
WGRAD_ALGORITHM = ConvAlgorithm(
    name="depthwise", plan=plan_wgrad, dtypes=FLOAT_DTYPES, layouts=("NCHW", "NHWC"), options=("splits",),
    operator=WGRAD, crops=True,
    description="groups == C: dW (db fused) as a per-channel reduction over N·P·Q, split with a "
                "deterministic second pass")
