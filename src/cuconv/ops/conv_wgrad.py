"""The weight and bias gradients of conv2d, dW and db, on CUDA cores (kernels/conv_wgrad.cu): the
``direct`` and ``implicit_gemm`` algorithms of the ``WGRAD`` pass, and the bias gradient alone.

``dw = conv2d_weight(x, dy)`` (and ``db``, fused, when the spec's ``has_bias``) for the forward
``y = conv2d(x, w) + b`` of the spec (NCHW / KCRS, or NHWC / KRSC read and written in place by
the ``_nhwc`` twin of every kernel below; float32 or float64); the public ops are
``cuconv.grad.conv2d_weight``, ``conv2d_backward`` and ``conv2d_bias`` (ops/conv2d_grad.py),
``auto``'s rules are ops/heuristics.py's ``WGRAD_RULES``. Depthwise problems have their own
kernels (ops/depthwise_grad.py), float16/bfloat16 the tensor cores' (ops/tc_grad.py).

Kernels (generated names):

* ``conv_wgrad_direct_{f32,f64}[_nhwc]_256`` — one thread per dW element; always correct, deterministic.
* ``conv_wgrad_implicit_gemm_{f32,f64}[_nhwc]_BMxBNxBK_TMxTN`` — split-K implicit GEMM (M = K/groups,
  N = Cg·R·S, reduction N·P·Q), deterministic: split partials go to a bounded workspace and
  ``conv_wgrad_splitk_reduce_*`` sums them in split order (bit-identical across runs).
* ``conv_wgrad_implicit_gemm_atomic_*`` — ``deterministic=False``: the splits atomicAdd into dW
  (zeroed first by ``conv_wgrad_zero_*``); no workspace, low bits vary from run to run.
* ``conv_wgrad_implicit_gemm{,_atomic}_{f32_128x128,f64_64x64}x8_8x8_s4`` — the same split-K
  GEMMs with their gathers issued as cp.async into a 4-stage pipeline (kernels/regtile.cuh,
  docs/main_loops.md).
* ``conv_wgrad_bias_{f32,f64}_256`` — db alone (one block per channel, fixed-tree reduction; NHWC
  dy as N·P·Q images of one pixel: the same kernel, the same bits).

The split count is ``choose_splits`` (documented there; the ``splits=`` option overrides it, the
``config=`` option names the GEMM tile). A ``WgradSchedule`` holds the config, split count,
chunk and whether db is fused; its ``launches(p)`` is the one function computing grids, blocks
and arguments. ``wgrad_plan`` turns a schedule (this module's or depthwise_grad's) into the
pass's Plan.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, tag
from ..plan import Launch, Plan, PlanError, Ref, layout_buffers
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from . import _common, implicit_gemm
from ._algorithm import LAYOUTS, WGRAD, ConvAlgorithm, ConvSpec, conv_plan
from ._grad import DB, DW, DY, X, DirectConfig, layout_tag, split_chunk

FILE = "conv_wgrad.cu"
DIRECT_MAX_BLOCKS = 1 << 16
BIAS_THREADS = 256
# Default bound on the split-K workspace (the caller's max_workspace_bytes overrides it).
DEFAULT_MAX_WORKSPACE_BYTES = 64 << 20
TARGET_BLOCKS_PER_SM = 2          # the occupancy the GEMM configs promise
MIN_STEPS_PER_SPLIT = 16          # BK-steps per split: below this the partial write dominates
MAX_SPLITS = 65535                # gridDim.y
# The split reduction and the zero fill (shared with depthwise_grad: the same [splits][n] layout).
REDUCE_THREADS = 256
REDUCE_MAX_BLOCKS = 1 << 16


@dataclass(frozen=True)
class WgradDirectConfig(DirectConfig):
    """wgrad_direct<T, BLOCK>: one thread per dW element (launched by WgradSchedule.launches)."""
    KIND: ClassVar[str] = "wgrad"
    FILE: ClassVar[str] = FILE


@dataclass(frozen=True)
class WgradGemmConfig:
    """wgrad_implicit_gemm<T, BM, BN, BK, TM, TN, MINB, ATOMIC>: tile BM (output channels) ×
    BN (Cg·R·S columns) × BK (reduction indices per step)."""
    dtype: str
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    atomic: bool = False
    min_blocks_per_sm: int = 2
    main: bool = False
    stages: int = 0      # > 0: the cp.async pipeline of that depth (kernels/regtile.cuh)
    layout: str = "NCHW"  # "NHWC": x, dy NHWC read in place, dW written KRSC

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def name(self) -> str:
        kind = "conv_wgrad_implicit_gemm_atomic" if self.atomic else "conv_wgrad_implicit_gemm"
        return (f"{kind}_{tag(self.dtype)}{layout_tag(self.layout)}_{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}"
                + (f"_s{self.stages}" if self.stages else ""))

    @property
    def expression(self) -> str:
        tail = f", {self.stages}, true>" if self.layout == "NHWC" else (f", {self.stages}>" if self.stages else ">")
        return (f"wgrad_implicit_gemm<{ctype(self.dtype)}, {self.bm}, {self.bn}, {self.bk}, "
                f"{self.tm}, {self.tn}, {self.min_blocks_per_sm}, {'true' if self.atomic else 'false'}" + tail)

    def tiles(self, p: Conv2dProblem) -> int:
        """Blocks per split: groups · ceil(Kg / BM) · ceil(Cg·R·S / BN)."""
        return (p.groups * -(-p.K_per_group // self.bm)
                * -(-(p.C_per_group * p.R * p.S) // self.bn))

    def can_implement(self, p: Conv2dProblem) -> str | None:
        if p.dtype != self.dtype:
            return f"{self.name} takes {self.dtype}, got {p.dtype}"
        crs = p.C_per_group * p.R * p.S
        if crs > INT32_MAX - self.bn:
            return f"Cg·R·S = {crs} is too large for 32-bit column indices"
        if p.K > INT32_MAX - self.bm or p.P * p.Q > INT32_MAX or p.H * p.W > INT32_MAX:
            return "K, P·Q or H·W does not fit a 32-bit int"
        if self.tiles(p) > INT32_MAX:
            return f"needs {self.tiles(p)} blocks per split, more than a 1-D grid holds"
        return None

    def entry(self) -> KernelEntry:
        return KernelEntry(FILE, self.expression, self.name, block_threads=self.threads,
                           min_blocks_per_sm=self.min_blocks_per_sm, main=self.main,
                           min_blocks_overrides=implicit_gemm.stage_overrides(self.stages, self.dtype))


DIRECT = {dt: WgradDirectConfig(dt) for dt in CUDA_CORE_DTYPES}
DIRECT_NHWC = {dt: WgradDirectConfig(dt, layout="NHWC") for dt in CUDA_CORE_DTYPES}
DIRECT_BY_LAYOUT = {"NCHW": DIRECT, "NHWC": DIRECT_NHWC}
# (dtype, BM, BN, BK, TM, TN, blocks per SM, main); double: one block (8 warps) per SM — with
# 128 registers (two blocks) the tile spills on sm_100.
# _TILES_ASYNC: the cp.async pipeline with 8x8 thread tiles (~150-160 registers for f32: one
# block of 8 warps; ~240 for f64 at 64 threads: 2-4 blocks), stages as the last field.
_TILES = (("float32", 64, 64, 8, 4, 4, 2, False), ("float32", 128, 64, 8, 8, 4, 2, True),
          ("float64", 64, 64, 8, 4, 4, 1, False))
_TILES_ASYNC = (("float32", 128, 128, 8, 8, 8, 1, False, 4), ("float64", 64, 64, 8, 8, 8, 2, False, 4))
GEMM_CONFIGS = tuple(WgradGemmConfig(dt, bm, bn, bk, tm, tn, atomic, minb, main=main and not atomic, stages=stages)
                     for atomic in (False, True)
                     for dt, bm, bn, bk, tm, tn, minb, main, stages in (*(t + (0,) for t in _TILES), *_TILES_ASYNC))
# The same tiles reading NHWC and writing KRSC (none is the file's main kernel).
GEMM_CONFIGS_NHWC = tuple(replace(c, layout="NHWC", main=False) for c in GEMM_CONFIGS)
GEMM_BY_LAYOUT = {"NCHW": GEMM_CONFIGS, "NHWC": GEMM_CONFIGS_NHWC}
CONFIGS = (*DIRECT.values(), *DIRECT_NHWC.values(), *GEMM_CONFIGS, *GEMM_CONFIGS_NHWC)
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
ENTRIES = {c: register_kernel(c.entry()) for c in CONFIGS}
# The parameterless kernels, per dtype: db alone, the split reduction, the zero fill.
BIAS_ENTRIES = {dt: register_kernel(KernelEntry(FILE, f"conv_bias_grad<{ctype(dt)}, {BIAS_THREADS}>",
                                                f"conv_wgrad_bias_{tag(dt)}_{BIAS_THREADS}",
                                                block_threads=BIAS_THREADS, min_blocks_per_sm=4))
                for dt in CUDA_CORE_DTYPES}
REDUCE_ENTRIES = {dt: register_kernel(KernelEntry(FILE, f"wgrad_splitk_reduce<{ctype(dt)}>",
                                                  f"conv_wgrad_splitk_reduce_{tag(dt)}", block_threads=REDUCE_THREADS,
                                                  min_blocks_per_sm=4))
                  for dt in CUDA_CORE_DTYPES}
ZERO_ENTRIES = {dt: register_kernel(KernelEntry(FILE, f"wgrad_zero<{ctype(dt)}>", f"conv_wgrad_zero_{tag(dt)}",
                                                block_threads=REDUCE_THREADS, min_blocks_per_sm=4))
                for dt in CUDA_CORE_DTYPES}


# --------------------------------------------------------------------------- the shared launches
def splitk_reduce_launch(dtype: str, ws_w, ws_b, splits: int, n_w: int, n_b: int, dw, db) -> Launch:
    """dw[i] = Σ_z ws_w[z·n_w + i] and db[i] = Σ_z ws_b[z·n_b + i], z in order (n_b = 0: no db;
    ws_b and db are then any placeholder slot)."""
    grid = _common.grid_1d(n_w + n_b, REDUCE_THREADS, REDUCE_MAX_BLOCKS)
    return Launch(REDUCE_ENTRIES[dtype], (grid, 1, 1), (REDUCE_THREADS, 1, 1),
                  (ws_w, ws_b, _common.i32(splits), _common.i64(n_w), _common.i64(n_b), dw, db))


def zero_launch(dtype: str, a, n_a: int, b, n_b: int) -> Launch:
    """a[:n_a] = 0 and b[:n_b] = 0 (the atomic variant accumulates into zeroed outputs)."""
    grid = _common.grid_1d(n_a + n_b, REDUCE_THREADS, REDUCE_MAX_BLOCKS)
    return Launch(ZERO_ENTRIES[dtype], (grid, 1, 1), (REDUCE_THREADS, 1, 1),
                  (a, _common.i64(n_a), b, _common.i64(n_b)))


def bias_launch(dtype: str, N: int, K: int, PQ: int, dy=DY, db=DB) -> Launch:
    """db[k] = Σ_{n,p,q} dy[n, k, p, q] over N images of P·Q outputs: one block per channel
    (deterministic)."""
    i32 = _common.i32
    return Launch(BIAS_ENTRIES[dtype], (K, 1, 1), (BIAS_THREADS, 1, 1),
                  (dy, db, i32(N, "N"), i32(K, "K"), i32(PQ, "P·Q")))


# --------------------------------------------------------------------------- choices
def choose_splits(p: Conv2dProblem, cfg: WgradGemmConfig, sms: int = 132,
                  max_workspace_bytes: int | None = DEFAULT_MAX_WORKSPACE_BYTES,
                  bias: bool = False) -> int:
    """How many blocks share the N·P·Q reduction of each output tile (split-K).

    1. Fill the GPU: enough splits that the grid (tiles(p) blocks per split) has
       TARGET_BLOCKS_PER_SM blocks per SM: ceil(2·SMs / tiles).
    2. Keep each split long enough to pay for writing (and re-reading) its partial tile: at
       least MIN_STEPS_PER_SPLIT steps of BK reduction indices (16·8 = 128), i.e. at most
       ceil(N·P·Q / BK) / 16 splits.
    3. Deterministic only: the workspace — splits · (K·Cg·R·S + K if bias) elements — must fit
       in ``max_workspace_bytes`` (None: DEFAULT_MAX_WORKSPACE_BYTES; 0 allows no workspace,
       hence one split, written straight to dW). The atomic variant needs no workspace.
    At most 65535 (gridDim.y). E.g. ResNet-50's last 3x3 layer (K = C = 512, 7x7, batch 32)
    on 132 SMs with the 64x64 tile: 8·72 = 576 tiles already fill the GPU, 1 split; its first
    3x3 layer (K = C = 64, 56x56) has 9 tiles: at batch 8, 30 splits of ~105 steps; at batch 1
    the 392 steps allow only 24 splits.
    """
    if max_workspace_bytes is None:
        max_workspace_bytes = DEFAULT_MAX_WORKSPACE_BYTES
    tiles = cfg.tiles(p)
    L = p.N * p.P * p.Q
    steps = -(-L // cfg.bk)
    splits = min(-(-(TARGET_BLOCKS_PER_SM * sms) // tiles), max(1, steps // MIN_STEPS_PER_SPLIT),
                 MAX_SPLITS)
    if not cfg.atomic and splits > 1:
        per_split = (p.K * p.C_per_group * p.R * p.S + (p.K if bias else 0)) * p.itemsize
        splits = min(splits, max_workspace_bytes // per_split)
    return max(1, splits)


def choose_config(p: Conv2dProblem, atomic: bool = False, sms: int = 132, layout: str = "NCHW") -> WgradGemmConfig:
    """128x64 (f32) when K/groups > 64 and its tiles alone give every SM a block; else 64x64.
    Where the 128-row tile is chosen, C/groups·R·S > 64 (the GEMM's N fills a 128-wide tile) and
    the 128x128 tiles too give every SM a block, it runs as the 4-stage cp.async variant with
    8x8 thread tiles (the same gathers; the higher static issue ratio, `cuconv kernels --analyze
    --file conv_wgrad.cu`). float64 keeps its 64x64 4x4 tile. The same rule in either ``layout``."""
    cands = [c for c in GEMM_BY_LAYOUT[layout] if c.dtype == p.dtype and c.atomic == atomic]
    big = next((c for c in cands if c.bm == 128 and not c.stages), None)
    if big is not None and p.K_per_group > 64 and big.tiles(p) >= sms and big.can_implement(p) is None:
        fast = next((c for c in cands if (c.bm, c.bn) == (128, 128) and c.stages), None)
        if (fast is not None and p.C_per_group * p.R * p.S > 64 and fast.tiles(p) >= sms
                and fast.can_implement(p) is None):
            return fast
        return big
    return next(c for c in cands if c.bm == 64 and not c.stages)


def resolve_config(config, p: Conv2dProblem, deterministic: bool, sms: int = 132,
                   layout: str = "NCHW") -> WgradGemmConfig:
    """``config``: None (``choose_config``, atomic when not ``deterministic``) or the name of a
    GEMM config of the problem's dtype and ``layout`` (an atomic one only with
    ``deterministic=False``)."""
    if config is None:
        return choose_config(p, not deterministic, sms, layout)
    cfg = CONFIGS_BY_NAME.get(config) if isinstance(config, str) else config
    if not isinstance(cfg, WgradGemmConfig) or cfg not in GEMM_BY_LAYOUT[layout]:
        raise ValueError(f"unknown wgrad implicit_gemm config {config!r} (layout {layout}); available: "
                         f"{', '.join(c.name for c in GEMM_BY_LAYOUT[layout])}")
    if cfg.atomic and deterministic:
        raise ValueError(f"config {cfg.name} accumulates with atomicAdd (not deterministic); pass "
                         f"deterministic=False to use it")
    return cfg


@dataclass(frozen=True)
class WgradSchedule:
    """How a wgrad kernel runs a problem: the config, the split count and chunk, db fused or not."""
    config: WgradDirectConfig | WgradGemmConfig
    splits: int = 1
    chunk: int = 0
    bias: bool = False           # db is computed too (fused in the GEMM, separate for direct)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def deterministic(self) -> bool:
        return not getattr(self.config, "atomic", False)

    def workspace_elems(self, p: Conv2dProblem) -> tuple[int, int]:
        """(dW partials, db partials) workspace elements: [splits][K·Cg·R·S] and [splits][K]
        for the deterministic split-K GEMM with splits > 1, else none."""
        if not isinstance(self.config, WgradGemmConfig) or self.config.atomic or self.splits == 1:
            return 0, 0
        return self.splits * p.K * p.C_per_group * p.R * p.S, self.splits * p.K if self.bias else 0

    def launches(self, p: Conv2dProblem) -> list[Launch]:
        """The launches writing dw (and db when self.bias), the partials in the workspace
        buffers ``ws_w`` / ``ws_b`` (sized by workspace_elems)."""
        cfg = self.config
        n_w, n_b = p.K * p.C_per_group * p.R * p.S, p.K
        geom = _common.conv_geometry_args(p)
        absent = Ref.absent(p.dtype)
        db = DB if self.bias else absent
        if isinstance(cfg, WgradDirectConfig):
            grid = _common.grid_1d(n_w, cfg.block, DIRECT_MAX_BLOCKS)
            lns = [Launch(ENTRIES[cfg], (grid, 1, 1), (cfg.block, 1, 1), (X, DY, DW, *geom))]
            if self.bias:
                lns.append(bias_launch(p.dtype, p.N, p.K, p.P * p.Q) if cfg.layout == "NCHW"
                           else bias_launch(p.dtype, p.N * p.P * p.Q, p.K, 1))
            return lns
        grid = (cfg.tiles(p), self.splits, 1)
        block = (cfg.threads, 1, 1)
        tail = (_common.i32(self.bias), *geom, _common.i64(self.chunk))
        i64 = _common.i64
        if cfg.atomic:
            return [zero_launch(p.dtype, DW, n_w, db, n_b if self.bias else 0),
                    Launch(ENTRIES[cfg], grid, block, (X, DY, DW, i64(0), db, i64(0), *tail))]
        if self.splits == 1:
            return [Launch(ENTRIES[cfg], grid, block, (X, DY, DW, i64(n_w), db, i64(n_b), *tail))]
        ws_b = Ref("ws_b") if self.bias else absent
        return [Launch(ENTRIES[cfg], grid, block, (X, DY, Ref("ws_w"), i64(n_w), ws_b, i64(n_b), *tail)),
                splitk_reduce_launch(p.dtype, Ref("ws_w"), ws_b, self.splits, n_w, n_b if self.bias else 0, DW, db)]


def schedule(p: Conv2dProblem, cfg, *, bias: bool = False, max_workspace_bytes: int | None = None,
             sms: int = 132, splits: int | None = None) -> WgradSchedule:
    """The schedule of ``cfg`` (a config of this module) on ``p``: the split count of
    ``choose_splits`` unless ``splits`` is given. PlanError when ``cfg`` cannot run ``p``."""
    reason = cfg.can_implement(p)
    if reason is not None:
        raise PlanError(f"wgrad kernel {cfg.name} cannot run {p.describe()}: {reason}")
    if isinstance(cfg, WgradDirectConfig):
        return WgradSchedule(cfg, 1, 0, bias)
    n = choose_splits(p, cfg, sms, max_workspace_bytes, bias) if splits is None else splits
    if not 1 <= n <= MAX_SPLITS:
        raise ValueError(f"splits must be in 1..{MAX_SPLITS}, got {n}")
    n, chunk = split_chunk(p.N * p.P * p.Q, n, cfg.bk)
    if chunk // cfg.bk > INT32_MAX:
        raise PlanError(f"wgrad: {chunk} reduction indices per split is more steps than the kernel's "
                        f"32-bit step counter holds; allow more splits (max_workspace_bytes)")
    return WgradSchedule(cfg, n, chunk, bias)


# --------------------------------------------------------------------------- plans
def zeros_plan(spec: ConvSpec, algo: str) -> Plan:
    """N = 0: the gradients are sums over nothing, zeros (float32/float64)."""
    p, dt = spec.problem, spec.dtype
    n_w = p.K * p.C_per_group * p.R * p.S
    zero = zero_launch(dt, DW, n_w, DB if spec.has_bias else Ref.absent(dt), p.K if spec.has_bias else 0)
    return conv_plan(spec, algo, [zero], description="N = 0: zeros")


def wgrad_plan(spec: ConvSpec, algo: str, sched) -> Plan:
    """The Plan of a wgrad schedule (this module's or depthwise_grad's): its launches, its
    split partials' workspace."""
    p, dt = spec.problem, spec.dtype
    n_w, n_b = sched.workspace_elems(p)
    parts = tuple(part for part in (("ws_w", dt, n_w), ("ws_b", dt, n_b)) if part[2])
    how = "deterministic" if sched.deterministic else "atomicAdd (not deterministic)"
    return conv_plan(spec, algo, sched.launches(p), workspace=layout_buffers(*parts) if parts else (),
                     description=f"{sched.name}, {sched.splits} split(s), {how}")


def plan_direct(spec: ConvSpec) -> Plan:
    if spec.problem.N == 0:
        return zeros_plan(spec, "direct")
    cfg = DIRECT_BY_LAYOUT[spec.layout][spec.dtype]
    return wgrad_plan(spec, "direct", schedule(spec.problem, cfg, bias=spec.has_bias))


def plan_implicit_gemm(spec: ConvSpec) -> Plan:
    if spec.problem.N == 0:
        return zeros_plan(spec, "implicit_gemm")
    cfg = resolve_config(spec.option("config"), spec.problem, spec.deterministic, spec.caps.sms, spec.layout)
    sched = schedule(spec.problem, cfg, bias=spec.has_bias, max_workspace_bytes=spec.max_workspace_bytes,
                     sms=spec.caps.sms, splits=spec.option("splits"))
    return wgrad_plan(spec, "implicit_gemm", sched)


DIRECT_ALGORITHM = ConvAlgorithm(
    name="direct", plan=plan_direct, dtypes=CUDA_CORE_DTYPES, layouts=LAYOUTS, operator=WGRAD, crops=True,
    description="one thread per dW element (db by its own reduction): always correct, deterministic")
IMPLICIT_GEMM = ConvAlgorithm(
    name="implicit_gemm", plan=plan_implicit_gemm, dtypes=CUDA_CORE_DTYPES, layouts=LAYOUTS,
    options=("config", "splits"),
    operator=WGRAD, crops=True,
    description="split-K implicit GEMM, db fused; partials reduced in split order (deterministic=False: "
                "atomicAdd, no workspace)")
ALGORITHMS = (DIRECT_ALGORITHM, IMPLICIT_GEMM)

