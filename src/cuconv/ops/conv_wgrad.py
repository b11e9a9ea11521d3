"""The weight and bias gradients of conv2d, dW and db (kernels/conv_wgrad.cu; depthwise in
depthwise_grad.py).

``dw = conv2d_weight(x, dy)``, ``db = conv2d_bias(dy)`` for the forward ``y = conv2d(x, w) + b``
described by a ``Conv2dProblem`` (NCHW / KCRS, float32 or float64). Internal entries:
``conv2d_weight_launch`` (dW, optionally db fused) and ``conv2d_bias_launch`` (db alone).

Kernels (generated names):

* ``wgrad_direct_{f32,f64}_256`` — one thread per dW element; always correct, deterministic.
* ``wgrad_implicit_gemm_{f32,f64}_BMxBNxBK_TMxTN`` — split-K implicit GEMM (M = K/groups,
  N = Cg·R·S, reduction N·P·Q), deterministic: split partials go to a bounded workspace and
  ``wgrad_splitk_reduce_*`` sums them in split order (bit-identical across runs).
* ``wgrad_implicit_gemm_atomic_*`` — ``deterministic=False``: the splits atomicAdd into dW
  (zeroed first by ``wgrad_zero_*``); no workspace, low bits vary from run to run.
* ``conv_bias_grad_{f32,f64}_256`` — db alone (one block per channel, fixed-tree reduction).
* depthwise problems (groups == C) go to ``depthwise_grad.wgrad_plan`` under ``auto``.

The split count is ``choose_splits`` (documented there). A ``WgradPlan`` holds the config,
split count, chunk and whether db is fused; ``plan.launch(...)`` is the one function computing
grids, blocks and arguments, ``check_arrays`` the one checking the arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..registry import KernelEntry, register_kernel
from ..problem import Conv2dProblem
from . import _common, _grad, depthwise_grad, implicit_gemm, tc_grad
from ._grad import INT_MAX, Launch

FILE = "conv_wgrad.cu"
DIRECT_MAX_BLOCKS = 1 << 16
BIAS_THREADS = 256
# Default bound on the split-K workspace (the caller's max_workspace_bytes overrides it).
DEFAULT_MAX_WORKSPACE_BYTES = 64 << 20
TARGET_BLOCKS_PER_SM = 2          # the occupancy the GEMM configs promise
MIN_STEPS_PER_SPLIT = 16          # BK-steps per split: below this the partial write dominates
MAX_SPLITS = 65535                # gridDim.y
VARIANTS = ("auto", "direct", "implicit_gemm", "depthwise")


@dataclass(frozen=True)
class WgradDirectConfig(_grad.DirectConfig):
    """wgrad_direct<T, BLOCK>: one thread per dW element (launched by WgradPlan.launch)."""
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

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def name(self) -> str:
        kind = "wgrad_implicit_gemm_atomic" if self.atomic else "wgrad_implicit_gemm"
        tile = f"{_grad.tag(self.dtype)}_{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}"
        return f"conv_{kind}_{tile}_s{self.stages}" if self.stages else f"{kind}_{tile}"

    @property
    def expression(self) -> str:
        return (f"wgrad_implicit_gemm<{_grad.ctype(self.dtype)}, {self.bm}, {self.bn}, {self.bk}, "
                f"{self.tm}, {self.tn}, {self.min_blocks_per_sm}, {'true' if self.atomic else 'false'}"
                + (f", {self.stages}>" if self.stages else ">"))

    def tiles(self, p: Conv2dProblem) -> int:
        """Blocks per split: groups · ceil(Kg / BM) · ceil(Cg·R·S / BN)."""
        return (p.groups * -(-p.K_per_group // self.bm)
                * -(-(p.C_per_group * p.R * p.S) // self.bn))

    def can_implement(self, p: Conv2dProblem) -> str | None:
        if p.dtype != self.dtype:
            return f"{self.name} takes {self.dtype}, got {p.dtype}"
        crs = p.C_per_group * p.R * p.S
        if crs > INT_MAX - self.bn:
            return f"Cg·R·S = {crs} is too large for 32-bit column indices"
        if p.K > INT_MAX - self.bm or p.P * p.Q > INT_MAX or p.H * p.W > INT_MAX:
            return "K, P·Q or H·W does not fit a 32-bit int"
        if self.tiles(p) > INT_MAX:
            return f"needs {self.tiles(p)} blocks per split, more than a 1-D grid holds"
        return None

    def entry(self) -> KernelEntry:
        return KernelEntry(FILE, self.expression, self.name, block_threads=self.threads,
                           min_blocks_per_sm=self.min_blocks_per_sm, main=self.main,
                           min_blocks_overrides=implicit_gemm.stage_overrides(self.stages, self.dtype))


def bias_name(dtype: str) -> str:
    return f"conv_bias_grad_{_grad.tag(dtype)}_{BIAS_THREADS}"


def bias_expression(dtype: str) -> str:
    return f"conv_bias_grad<{_grad.ctype(dtype)}, {BIAS_THREADS}>"


DIRECT = {dt: WgradDirectConfig(dt) for dt in _grad.DTYPES}
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
CONFIGS = (*DIRECT.values(), *GEMM_CONFIGS)
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
for _cfg in CONFIGS:
    register_kernel(_cfg.entry())
for _dt in _grad.DTYPES:
    register_kernel(KernelEntry(FILE, bias_expression(_dt), bias_name(_dt), block_threads=BIAS_THREADS,
                                min_blocks_per_sm=4))


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


def _gemm_config(p: Conv2dProblem, atomic: bool, sms: int) -> WgradGemmConfig:
    """128x64 (f32) when K/groups > 64 and its tiles alone give every SM a block; else 64x64."""
    cands = [c for c in GEMM_CONFIGS if c.dtype == p.dtype and c.atomic == atomic]
    big = next((c for c in cands if c.bm == 128), None)
    if big is not None and p.K_per_group > 64 and big.tiles(p) >= sms and big.can_implement(p) is None:
        return big
    return next(c for c in cands if c.bm == 64)


@dataclass(frozen=True)
class WgradPlan:
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

    def workspace_bytes(self, p: Conv2dProblem) -> int:
        return sum(self.workspace_elems(p)) * p.itemsize

    def launch(self, p: Conv2dProblem, x, dy, dw, db, ws_w=None, ws_b=None, placeholder=None) -> list[Launch]:
        """The launches writing dw (and db when self.bias); ws_w / ws_b sized by
        workspace_elems; ``placeholder``: a 1-element array of the dtype for absent pointers."""
        cfg = self.config
        n_w, n_b = p.K * p.C_per_group * p.R * p.S, p.K
        geom = _common.conv_geometry_args(p)
        if isinstance(cfg, WgradDirectConfig):
            grid = _common.grid_1d(n_w, cfg.block, DIRECT_MAX_BLOCKS)
            lns = [Launch(FILE, cfg.expression, (grid, 1, 1), (cfg.block, 1, 1), (x, dy, dw, *geom))]
            if self.bias:
                lns.append(bias_launch(p, dy, db))
            return lns
        db_or_ph = db if self.bias else placeholder
        grid = (cfg.tiles(p), self.splits, 1)
        block = (cfg.threads, 1, 1)
        tail = (np.int32(self.bias), *geom, np.int64(self.chunk))
        if cfg.atomic:
            return [_grad.zero_launch(p.dtype, dw, n_w, db_or_ph, n_b if self.bias else 0),
                    Launch(FILE, cfg.expression, grid, block,
                           (x, dy, dw, np.int64(0), db_or_ph, np.int64(0), *tail))]
        if self.splits == 1:
            return [Launch(FILE, cfg.expression, grid, block,
                           (x, dy, dw, np.int64(n_w), db_or_ph, np.int64(n_b), *tail))]
        wsb = ws_b if self.bias else placeholder
        return [Launch(FILE, cfg.expression, grid, block,
                       (x, dy, ws_w, np.int64(n_w), wsb, np.int64(n_b), *tail)),
                _grad.splitk_reduce_launch(p.dtype, ws_w, wsb, self.splits, n_w,
                                           n_b if self.bias else 0, dw, db_or_ph)]


def bias_only_launch(dtype: str, N: int, K: int, PQ: int, dy, db) -> Launch:
    """db[k] = Σ_{n,p,q} dy[n, k, p, q] over N images of P·Q outputs: one block per channel
    (deterministic)."""
    return Launch(FILE, bias_expression(dtype), (K, 1, 1), (BIAS_THREADS, 1, 1),
                  (dy, db, np.int32(N), np.int32(K), np.int32(PQ)))


def bias_launch(p: Conv2dProblem, dy, db) -> Launch:
    """db for the forward problem ``p``."""
    return bias_only_launch(p.dtype, p.N, p.K, p.P * p.Q, dy, db)


def plan(p: Conv2dProblem, variant: str = "auto", *, deterministic: bool = True, bias: bool = False,
         max_workspace_bytes: int | None = None, sms: int = 132, splits: int | None = None):
    """The WgradPlan (or depthwise plan) for ``p``. ``variant``: "auto", "direct",
    "implicit_gemm", "depthwise" or a config name; ``splits`` overrides choose_splits (tests).
    ValueError when the chosen kernel cannot run ``p``.

    ``auto``: depthwise problems to depthwise_grad (deterministic whatever ``deterministic``
    says: False only permits atomics); otherwise the split-K GEMM (_gemm_config, atomic when
    ``deterministic=False``) unless its 32-bit limits fail, then direct.
    """
    _grad.check_dtype(p.dtype, "the problem's dtype")
    if variant in ("auto", "depthwise") and depthwise_grad.applies(p):
        dwp = depthwise_grad.wgrad_plan(p, sms, max_workspace_bytes if max_workspace_bytes is not None
                                        else DEFAULT_MAX_WORKSPACE_BYTES, bias, splits)
        if dwp is not None:
            return dwp
    if variant == "depthwise":
        raise ValueError(f"variant='depthwise' cannot run {p.describe()}: needs groups == C > 1 "
                         f"and 32-bit sizes")
    if variant == "direct":
        cfg = DIRECT[p.dtype]
    elif variant in ("auto", "implicit_gemm"):
        cfg = _gemm_config(p, not deterministic, sms)
        if variant == "auto" and cfg.can_implement(p) is not None:
            if not deterministic:
                raise ValueError(f"deterministic=False needs the atomic GEMM, which cannot run "
                                 f"{p.describe()}: {cfg.can_implement(p)}")
            cfg = DIRECT[p.dtype]
    elif variant in CONFIGS_BY_NAME:
        cfg = CONFIGS_BY_NAME[variant]
    else:
        raise ValueError(f"unknown wgrad variant {variant!r}; use one of {VARIANTS} or a config "
                         f"name: {', '.join(CONFIGS_BY_NAME)}")
    if getattr(cfg, "atomic", False) and deterministic:
        raise ValueError(f"config {cfg.name} accumulates with atomicAdd (not deterministic); pass "
                         f"deterministic=False to use it")
    reason = cfg.can_implement(p)
    if reason is not None:
        raise ValueError(f"wgrad kernel {cfg.name} cannot run {p.describe()}: {reason}")
    if isinstance(cfg, WgradDirectConfig):
        return WgradPlan(cfg, 1, 0, bias)
    n = choose_splits(p, cfg, sms, max_workspace_bytes, bias) if splits is None else splits
    if not 1 <= n <= MAX_SPLITS:
        raise ValueError(f"splits must be in 1..{MAX_SPLITS}, got {n}")
    n, chunk = _grad.split_chunk(p.N * p.P * p.Q, n, cfg.bk)
    if chunk // cfg.bk > INT_MAX:
        raise ValueError(f"wgrad: {chunk} reduction indices per split is more steps than the kernel's "
                         f"32-bit step counter holds; allow more splits (max_workspace_bytes)")
    return WgradPlan(cfg, n, chunk, bias)


# --------------------------------------------------------------------------- checks and entries
def check_arrays(be, p: Conv2dProblem, x, dy, dw, db):
    """(x, dy, dw, db) against the forward problem: dtypes, C-contiguity, exact shapes (x: the
    input, dy: the output, dw: the weight, db: (K,) or None), outputs overlapping no input."""
    dt = _grad.check_dtype(p.dtype, "the problem's dtype")
    x = _grad.check_array(be, x, "input", p.input_shape, dt)
    dy = _grad.check_array(be, dy, "grad_output", p.output_shape, dt)
    dw = _grad.check_output(be, dw, "grad_weight", p.weight_shape, dt,
                            inputs=(("input", x), ("grad_output", dy)))
    if db is not None:
        db = _grad.check_output(be, db, "grad_bias", (p.K,), dt,
                                inputs=(("input", x), ("grad_output", dy), ("grad_weight", dw)))
    _common.same_device(be, input=x, grad_output=dy, grad_weight=dw, grad_bias=db)
    return x, dy, dw, db


def conv2d_weight_launch(be, problem: Conv2dProblem, x, dy, dw, db=None, variant: str = "auto",
                         deterministic: bool = True, max_workspace_bytes: int | None = None,
                         splits: int | None = None):
    """dw = ∂L/∂w (and db = ∂L/∂b when given) for the forward ``problem`` given dy = ∂L/∂y.

    Every element of dw and db is written. ``deterministic=False`` permits the atomicAdd GEMM
    (no workspace; results vary in the last bits between runs). Allocates the split-K workspace
    (bounded by ``max_workspace_bytes``) from the backend's pool. Returns the plan (for float16 /
    bfloat16, which go to the tensor cores — tc_grad, ``variant`` "auto" or "simple" — the split
    count).
    """
    if problem.dtype in tc_grad.DTYPES:
        if not deterministic:
            raise ValueError("the tensor-core wgrad has no atomic variant; it is always deterministic")
        return tc_grad.tc_conv2d_weight_launch(be, problem, x, dy, dw, db, splits, max_workspace_bytes,
                                               variant)
    x, dy, dw, db = check_arrays(be, problem, x, dy, dw, db)
    pl = plan(problem, variant, deterministic=deterministic, bias=db is not None,
              max_workspace_bytes=max_workspace_bytes, sms=_grad.sm_count(be), splits=splits)
    n_w, n_b = pl.workspace_elems(problem)
    ws = be.empty((n_w + n_b,), problem.dtype) if n_w + n_b else None
    ws_w = ws[:n_w] if ws is not None else None
    ws_b = ws[n_w:] if ws is not None and n_b else None
    _grad.run(be, pl.launch(problem, x, dy, dw, db, ws_w, ws_b, be.placeholder(problem.dtype)))
    return pl


def check_bias_arrays(be, p: Conv2dProblem, dy, db):
    dt = _grad.check_dtype(p.dtype, "the problem's dtype")
    dy = _grad.check_array(be, dy, "grad_output", p.output_shape, dt)
    db = _grad.check_output(be, db, "grad_bias", (p.K,), dt, inputs=(("grad_output", dy),))
    _common.same_device(be, grad_output=dy, grad_bias=db)
    return dy, db


def conv2d_bias_launch(be, problem: Conv2dProblem, dy, db) -> str:
    """db[k] = Σ_{n,p,q} dy[n, k, p, q] (deterministic); returns the kernel's name."""
    dy, db = check_bias_arrays(be, problem, dy, db)
    if problem.K > INT_MAX or problem.N > INT_MAX or problem.P * problem.Q > INT_MAX:
        raise ValueError(f"conv2d_bias: N, K and P·Q must fit 32-bit ints, got {problem.describe()}")
    _grad.run(be, [bias_launch(problem, dy, db)])
    return bias_name(problem.dtype)
