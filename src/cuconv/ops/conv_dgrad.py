"""The data gradient of conv2d, dX, on CUDA cores (kernels/conv_dgrad.cu): the ``direct`` and
``implicit_gemm`` algorithms of the ``DGRAD`` pass.

``dx = conv2d_input(w, dy)`` for the forward ``y = conv2d(x, w)`` of the spec (NCHW / KCRS or
NHWC / KRSC read and written in place — every kernel below has an ``_nhwc`` twin —, float32 or
float64, any stride, padding — asymmetric included —, dilation and groups); the
public op is ``cuconv.grad.conv2d_input`` (ops/conv2d_grad.py), ``auto``'s rules are
ops/heuristics.py's ``DGRAD_RULES``. Depthwise problems have their own kernels
(ops/depthwise_grad.py), float16/bfloat16 the tensor cores' (ops/tc_grad.py).

Kernels (generated names):

* ``conv_dgrad_direct_{f32,f64}[_nhwc]_256`` — one thread per dx element; the always-correct variant.
* ``conv_dgrad_implicit_gemm_{f32,f64}[_nhwc]_BMxBNxBK_TMxTN`` — an implicit GEMM per group and stride
  phase over the phase's taps only (no inserted zeros); see the kernel file's header. The
  ``config=`` option names one; by default ``choose_config`` picks the tile.
* ``conv_dgrad_implicit_gemm_{f32_128x128,f64_64x64}x8_8x8_s4`` — the same GEMM through a
  4-stage cp.async pipeline with a single-path loader (kernels/regtile.cuh; filters up to
  16x16), bit-identical to the double-buffered configs (docs/main_loops.md).

Per kernel one ``<config>.launch(problem)`` computes grid, block and arguments; the configs hold
their registered ``KernelEntry``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, tag
from ..plan import Launch, PlanError
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from . import _common, implicit_gemm
from ._algorithm import DGRAD, LAYOUTS, ConvAlgorithm, ConvSpec, conv_plan
from ._grad import DX, DY, W, DirectConfig, layout_tag

FILE = "conv_dgrad.cu"
DIRECT_MAX_BLOCKS = 1 << 16       # the grid-stride loop covers the rest
# Below this many input channels per group the GEMM's N dimension fills under 1/8 of its tile.
GEMM_MIN_CHANNELS = 8


@dataclass(frozen=True)
class DgradDirectConfig(DirectConfig):
    """dgrad_direct<T, BLOCK>: one thread per dx element."""
    KIND: ClassVar[str] = "dgrad"
    FILE: ClassVar[str] = FILE

    def launch(self, p: Conv2dProblem) -> list[Launch]:
        grid = _common.grid_1d(p.N * p.C * p.H * p.W, self.block, DIRECT_MAX_BLOCKS)
        return [Launch(ENTRIES[self], (grid, 1, 1), (self.block, 1, 1), (W, DY, DX, *_common.conv_geometry_args(p)))]


@dataclass(frozen=True)
class DgradGemmConfig:
    """dgrad_implicit_gemm<T, BM, BN, BK, TM, TN, MINB>: GEMM tile BM (dx pixels of one phase)
    × BN (input channels) × BK (output channels per step); TM×TN outputs per thread."""
    dtype: str
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    min_blocks_per_sm: int = 2
    main: bool = False
    stages: int = 0      # > 0: the cp.async pipeline of that depth (kernels/regtile.cuh)
    layout: str = "NCHW"  # "NHWC": dy, dx NHWC and w KRSC, read and written in place

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def name(self) -> str:
        return (f"conv_dgrad_implicit_gemm_{tag(self.dtype)}{layout_tag(self.layout)}_{self.bm}x{self.bn}x{self.bk}_"
                f"{self.tm}x{self.tn}" + (f"_s{self.stages}" if self.stages else ""))

    @property
    def expression(self) -> str:
        tail = f", {self.stages}, true>" if self.layout == "NHWC" else (f", {self.stages}>" if self.stages else ">")
        return (f"dgrad_implicit_gemm<{ctype(self.dtype)}, {self.bm}, {self.bn}, {self.bk}, "
                f"{self.tm}, {self.tn}, {self.min_blocks_per_sm}" + tail)

    def m_tiles(self, p: Conv2dProblem) -> int:
        """M tiles per phase: those of the largest phase (phase 0)."""
        return -(-(p.N * -(-p.H // p.stride_h) * -(-p.W // p.stride_w)) // self.bm)

    def blocks(self, p: Conv2dProblem) -> int:
        return (p.groups * p.stride_h * p.stride_w * self.m_tiles(p)
                * -(-p.C_per_group // self.bn))

    def can_implement(self, p: Conv2dProblem) -> str | None:
        if p.dtype != self.dtype:
            return f"{self.name} takes {self.dtype}, got {p.dtype}"
        m = p.N * -(-p.H // p.stride_h) * -(-p.W // p.stride_w)
        if m > INT32_MAX - self.bm:
            return (f"M = N·ceil(H/stride_h)·ceil(W/stride_w) = {m} is too large for 32-bit tile "
                    f"indices (limit {INT32_MAX - self.bm})")
        if p.P * p.Q > INT32_MAX or p.C > INT32_MAX or p.K > INT32_MAX:
            return "P·Q, C or K does not fit a 32-bit int"
        if (p.K + self.bk) * p.C_per_group * p.R * p.S > INT32_MAX:
            return (f"the weight tensor ({p.K}·{p.C_per_group * p.R * p.S} elements, plus a tile "
                    f"of slack) is too large for 32-bit offsets")
        if self.blocks(p) > INT32_MAX:
            return f"needs {self.blocks(p)} blocks, more than a 1-D grid holds ({INT32_MAX})"
        if self.stages and max(p.R, p.S) > implicit_gemm.MAX_TAPS_MULTISTAGE:
            return (f"{self.name} keeps a pixel's valid tap rows and columns in one 32-bit mask: R and S "
                    f"must be <= {implicit_gemm.MAX_TAPS_MULTISTAGE}, got {p.R}x{p.S}")
        return None

    def launch(self, p: Conv2dProblem) -> list[Launch]:
        return [Launch(ENTRIES[self], (self.blocks(p), 1, 1), (self.threads, 1, 1),
                       (W, DY, DX, *_common.conv_geometry_args(p)))]

    def entry(self) -> KernelEntry:
        return KernelEntry(FILE, self.expression, self.name, block_threads=self.threads,
                           min_blocks_per_sm=self.min_blocks_per_sm, main=self.main,
                           min_blocks_overrides=implicit_gemm.stage_overrides(self.stages, self.dtype))


DIRECT = {dt: DgradDirectConfig(dt) for dt in CUDA_CORE_DTYPES}
DIRECT_NHWC = {dt: DgradDirectConfig(dt, layout="NHWC") for dt in CUDA_CORE_DTYPES}
DIRECT_BY_LAYOUT = {"NCHW": DIRECT, "NHWC": DIRECT_NHWC}
GEMM_CONFIGS = (
    DgradGemmConfig("float32", 64, 64, 8, 4, 4),
    DgradGemmConfig("float32", 128, 64, 8, 8, 4, main=True),
    # double: one block (8 warps) per SM — 128 registers (two blocks) spill on sm_100.
    DgradGemmConfig("float64", 64, 64, 8, 4, 4, min_blocks_per_sm=1),
    # the cp.async pipeline with 8x8 thread tiles: ~150-170 registers (f32; one block of 8 warps),
    # ~230 (f64, 64 threads: 2-4 blocks)
    DgradGemmConfig("float32", 128, 128, 8, 8, 8, min_blocks_per_sm=1, stages=4),
    DgradGemmConfig("float64", 64, 64, 8, 8, 8, min_blocks_per_sm=2, stages=4),
)
# The same tiles reading NHWC/KRSC (none is the file's main kernel).
GEMM_CONFIGS_NHWC = tuple(replace(c, layout="NHWC", main=False) for c in GEMM_CONFIGS)
GEMM_BY_LAYOUT = {"NCHW": GEMM_CONFIGS, "NHWC": GEMM_CONFIGS_NHWC}
CONFIGS = (*DIRECT.values(), *DIRECT_NHWC.values(), *GEMM_CONFIGS, *GEMM_CONFIGS_NHWC)
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
ENTRIES = {c: register_kernel(c.entry()) for c in CONFIGS}


def choose_config(p: Conv2dProblem, sms: int = 132, layout: str = "NCHW") -> DgradGemmConfig:
    """The GEMM tile for ``p``: the 128-row tile (f32) when C/groups > 32 and it still gives every
    SM a block (fewer loads per FMA), else 64x64. Where the 128-row tile is chosen, C/groups > 64
    (the GEMM's N fills a 128-wide tile) and the 128x128 tile too gives every SM a block, it runs
    as the 4-stage cp.async variant with 8x8 thread tiles (filters up to 16x16; the forward's
    rule, ops/implicit_gemm.choose_config: the higher static issue ratio, `cuconv kernels
    --analyze --file conv_dgrad.cu`). float64 keeps its 64x64 4x4 tile. The same rule in
    either ``layout`` (the NHWC configs are the same tiles)."""
    by_dtype = [c for c in GEMM_BY_LAYOUT[layout] if c.dtype == p.dtype]
    big = next((c for c in by_dtype if c.bm == 128 and not c.stages), None)
    if (big is not None and p.C_per_group > 32 and big.blocks(p) >= sms
            and big.can_implement(p) is None):
        fast = next((c for c in by_dtype if (c.bm, c.bn) == (128, 128) and c.stages), None)
        if (fast is not None and p.C_per_group > 64 and fast.blocks(p) >= sms
                and fast.can_implement(p) is None):
            return fast
        return big
    return next(c for c in by_dtype if c.bm == 64 and not c.stages)


def resolve_config(config, p: Conv2dProblem, sms: int = 132, layout: str = "NCHW") -> DgradGemmConfig:
    """``config``: None (``choose_config``) or the name of a GEMM config of the problem's dtype
    and of ``layout``."""
    if config is None:
        return choose_config(p, sms, layout)
    cfg = CONFIGS_BY_NAME.get(config) if isinstance(config, str) else config
    if not isinstance(cfg, DgradGemmConfig) or cfg not in GEMM_BY_LAYOUT[layout]:
        raise ValueError(f"unknown dgrad implicit_gemm config {config!r} (layout {layout}); available: "
                         f"{', '.join(c.name for c in GEMM_BY_LAYOUT[layout])}")
    return cfg


def _plan(spec: ConvSpec, algo: str, cfg) -> object:
    reason = cfg.can_implement(spec.problem)
    if reason is not None:
        raise PlanError(f"dgrad kernel {cfg.name} cannot run {spec.problem.describe()}: {reason}")
    return conv_plan(spec, algo, cfg.launch(spec.problem), description=cfg.name)


def plan_direct(spec: ConvSpec):
    return _plan(spec, "direct", DIRECT_BY_LAYOUT[spec.layout][spec.dtype])


def plan_implicit_gemm(spec: ConvSpec):
    return _plan(spec, "implicit_gemm", resolve_config(spec.option("config"), spec.problem, spec.caps.sms,
                                                            spec.layout))


DIRECT_ALGORITHM = ConvAlgorithm(
    name="direct", plan=plan_direct, dtypes=CUDA_CORE_DTYPES, layouts=LAYOUTS, operator=DGRAD,
    description="one thread per dx element, gathering the taps that reach it: always correct")
IMPLICIT_GEMM = ConvAlgorithm(
    name="implicit_gemm", plan=plan_implicit_gemm, dtypes=CUDA_CORE_DTYPES, layouts=LAYOUTS, options=("config",),
    operator=DGRAD,
    description="an implicit GEMM per group and stride phase over the phase's taps only (no inserted zeros)")
ALGORITHMS = (DIRECT_ALGORITHM, IMPLICIT_GEMM)
