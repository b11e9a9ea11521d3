"""Algorithm ``"implicit_gemm"``: kernels/implicit_gemm.cu.

The convolution as a GEMM (M = N·P·Q, N = K/groups, K = C/groups·R·S per group) whose
A tiles are gathered from the NCHW (or NHWC) input while they are loaded: no column matrix,
no workspace. Configs are template instantiations with generated names; the op picks one
of the call's dtype (float32, float64) and layout by the rule in ``choose_config`` (or the
caller names one with ``config=``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dtypes import CUDA_CORE_DTYPES, INT32_MAX, ctype, tag
from ..plan import Launch, PlanError
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from . import _common
from ._algorithm import ConvAlgorithm, ConvSpec, conv_plan
from ._common import OUT, W, X, i32

FILE = "implicit_gemm.cu"
MAX_TAPS_MULTISTAGE = 16   # variant 3's tap mask: 16 bits for r, 16 for s


@dataclass(frozen=True)
class ImplicitGemmConfig:
    """One instantiation: a BM×BN×BK block tile; each thread computes TM×TN outputs.

    ``simple`` selects variant 1 of kernels/implicit_gemm.cu (one output per thread,
    single-buffered, flat reduction order); TM = TN = 1 there. ``stages`` > 0 selects variant 3
    (a ``stages``-deep cp.async pipeline with the single-path loader; 0: variant 2, double
    buffering through registers). ``dtype`` is the element type (float32 or float64),
    ``layout`` "NCHW" (KCRS weights) or "NHWC" (KRSC weights).
    """
    bm: int
    bn: int
    bk: int
    tm: int = 1
    tn: int = 1
    simple: bool = False
    min_blocks_per_sm: int = 2
    main: bool = False
    dtype: str = "float32"
    layout: str = "NCHW"
    stages: int = 0

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def name(self) -> str:
        kind = "implicit_gemm_simple" if self.simple else "implicit_gemm"
        short = tag(self.dtype) + ("_nhwc" if self.layout == "NHWC" else "")
        if self.simple:
            return f"{kind}_{short}_{self.bm}x{self.bn}x{self.bk}"
        return (f"{kind}_{short}_{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}"
                + (f"_s{self.stages}" if self.stages else ""))

    @property
    def expression(self) -> str:
        head = f"{ctype(self.dtype)}, {str(self.layout == 'NHWC').lower()}"
        if self.simple:
            return f"implicit_gemm_simple<{head}, {self.bm}, {self.bn}, {self.bk}>"
        return (f"implicit_gemm<{head}, {self.bm}, {self.bn}, {self.bk}, {self.tm}, {self.tn}, "
                f"{self.min_blocks_per_sm}" + (f", {self.stages}>" if self.stages else ">"))

    @property
    def tile(self) -> tuple:
        """The tile shape, the same across dtypes and layouts."""
        return (self.bm, self.bn, self.bk, self.tm, self.tn, self.simple, self.stages)

    def blocks(self, problem: Conv2dProblem) -> int:
        M, Ng, _ = problem.gemm_mnk()
        return problem.groups * -(-M // self.bm) * -(-Ng // self.bn)

    def can_implement(self, problem: Conv2dProblem) -> str | None:
        if problem.dtype != self.dtype:
            return f"{self.name} takes {self.dtype}, got {problem.dtype}"
        M, Ng, Kg = problem.gemm_mnk()
        # The kernel keeps M = N·P·Q, the tile origins and the block index in 32-bit ints.
        if M > INT32_MAX - self.bm:
            return f"M = N·P·Q = {M} is too large for 32-bit tile indices (limit {INT32_MAX - self.bm})"
        if Kg > INT32_MAX - self.bk:
            return f"C/groups·R·S = {Kg} is too large for 32-bit reduction indices"
        if problem.K > INT32_MAX - self.bn:
            return f"K = {problem.K} is too large for 32-bit channel indices"
        # Offsets within one input plane and within the weight tensor are 32-bit in the
        # main loop (whole-tensor input offsets are 64-bit).
        if problem.H * problem.W > INT32_MAX:
            return f"an input plane H·W = {problem.H * problem.W} has too many elements for 32-bit offsets"
        if (problem.K + self.bn) * Kg > INT32_MAX:
            return (f"the weight tensor ({problem.K}·{Kg} elements, plus a tile of slack) is too "
                    f"large for 32-bit offsets")
        if self.blocks(problem) > INT32_MAX:
            return f"needs {self.blocks(problem)} blocks, more than a 1-D grid holds ({INT32_MAX})"
        if self.stages and max(problem.R, problem.S) > MAX_TAPS_MULTISTAGE:
            return (f"{self.name} keeps a thread's valid filter rows and columns in one 32-bit mask: "
                    f"R and S must be <= {MAX_TAPS_MULTISTAGE}, got {problem.R}x{problem.S}")
        return None

    def entry(self) -> KernelEntry:
        return KernelEntry(FILE, self.expression, self.name, block_threads=self.threads,
                           min_blocks_per_sm=self.min_blocks_per_sm, main=self.main,
                           min_blocks_overrides=stage_overrides(self.stages, self.dtype))


def stage_overrides(stages: int, dtype: str) -> tuple:
    """Blocks per SM where shared memory, not the design, limits a cp.async-pipeline config
    (implicit_gemm.cu, conv_dgrad.cu, conv_wgrad.cu): four stages of 64x64x8 doubles (~33 KiB)
    fit once in sm_75's 64 KiB; the other archs hold two or more."""
    return (("sm_75", 1),) if stages and dtype == "float64" else ()


# The tiles, each instantiated for NCHW and NHWC. float32: the simple variant and three
# register-blocked tiles; float64: the simple variant and the 64x64 tile, whose 16 double
# accumulators (32 registers) keep two 256-thread blocks per SM — the 8x4 thread tiles would
# hold 64 accumulator registers and exceed 128 a thread.
_F32_TILES = (
    dict(bm=16, bn=16, bk=16, simple=True),
    dict(bm=64, bn=64, bk=8, tm=4, tn=4),
    dict(bm=128, bn=64, bk=8, tm=8, tn=4, main=True),
    # 512 threads: one block per SM is already 16 warps (an 8x8 thread tile at 256 threads
    # needs ~150 registers on sm_90, too many for two blocks: see the kernel's header).
    dict(bm=128, bn=128, bk=8, tm=8, tn=4, min_blocks_per_sm=1),
    # Variant 3: 8x8 thread tile, 4-stage cp.async; 150-170 registers, so one block of 8 warps.
    dict(bm=128, bn=128, bk=8, tm=8, tn=8, min_blocks_per_sm=1, stages=4),
)
_F64_TILES = (dict(bm=16, bn=16, bk=16, simple=True), dict(bm=64, bn=64, bk=8, tm=4, tn=4),
              # variant 3 with 64 threads of 8x8 doubles (~230 registers): 2-4 blocks per SM
              dict(bm=64, bn=64, bk=8, tm=8, tn=8, min_blocks_per_sm=2, stages=4))
CONFIGS = tuple(ImplicitGemmConfig(**dict(t, main=t.get("main", False) and layout == "NCHW"), dtype=dt,
                                   layout=layout)
                for dt, tiles in (("float32", _F32_TILES), ("float64", _F64_TILES))
                for layout in ("NCHW", "NHWC") for t in tiles)
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
ENTRIES = {c: register_kernel(c.entry()) for c in CONFIGS}
SIMPLE = CONFIGS_BY_NAME["implicit_gemm_simple_f32_16x16x16"]


def configs_for(dtype: str, layout: str = "NCHW") -> tuple[ImplicitGemmConfig, ...]:
    """The registered configs of ``dtype`` and ``layout``, simple first."""
    return tuple(c for c in CONFIGS if c.dtype == dtype and c.layout == layout)


def _config(dtype: str, layout: str, bm: int, bn: int, stages: int = 0) -> ImplicitGemmConfig | None:
    return next((c for c in configs_for(dtype, layout)
                 if not c.simple and (c.bm, c.bn, c.stages) == (bm, bn, stages)), None)


def choose_config(problem: Conv2dProblem, sms: int = 132, layout: str = "NCHW") -> ImplicitGemmConfig:
    """The largest tile that still gives every SM a block, in its fastest variant.

    Bigger tiles load less per FMA ((BM+BN)/(BM·BN) elements: 0.016 for 128x128, 0.023 for
    128x64, 0.031 for 64x64) but waste work when K/groups is below BN and leave SMs idle
    when the grid is small, so: 128x128 when K/groups > 64 and it makes at least one
    block per SM; else 128x64 when K/groups > 32 and it does; else 64x64. The 128x128 tile
    runs as variant 3 (8x8 thread tiles, 4-stage cp.async, single-path loop: the higher
    static issue ratio, `cuconv kernels --analyze --file implicit_gemm.cu`) where it can (R and
    S at most 16). float64 has the 64x64 tile, as variant 3 (64 threads of 8x8 doubles) when
    K/groups > 32 and it gives every SM two blocks, else the 256-thread 4x4 one. The same rule
    in both layouts.
    """
    _, Ng, _ = problem.gemm_mnk()
    dt = problem.dtype if problem.dtype in CUDA_CORE_DTYPES else "float32"
    big, mid, small = (_config(dt, layout, 128, 128), _config(dt, layout, 128, 64), _config(dt, layout, 64, 64))
    staged_big, staged_small = _config(dt, layout, 128, 128, stages=4), _config(dt, layout, 64, 64, stages=4)
    if big and Ng > 64 and big.blocks(problem) >= sms and big.can_implement(problem) is None:
        return staged_big if staged_big and staged_big.can_implement(problem) is None else big
    if mid and Ng > 32 and mid.blocks(problem) >= sms and mid.can_implement(problem) is None:
        return mid
    if (staged_small and Ng > 32 and staged_small.blocks(problem) >= 2 * sms
            and staged_small.can_implement(problem) is None):
        return staged_small
    return small


def resolve_config(config, problem: Conv2dProblem, sms: int = 132, layout: str = "NCHW") -> ImplicitGemmConfig:
    """``config``: None (the rule above, for ``sms`` SMs), a config name, or an
    ImplicitGemmConfig — of the problem's dtype and of ``layout`` (ValueError otherwise)."""
    if config is None:
        return choose_config(problem, sms, layout)
    if isinstance(config, str):
        if config not in CONFIGS_BY_NAME:
            raise ValueError(f"unknown implicit_gemm config {config!r}; available: {', '.join(CONFIGS_BY_NAME)}")
        cfg = CONFIGS_BY_NAME[config]
    elif isinstance(config, ImplicitGemmConfig):
        if config not in CONFIGS:
            raise ValueError(f"implicit_gemm config {config.name} is not a registered instantiation; "
                             f"available: {', '.join(CONFIGS_BY_NAME)}")
        cfg = config
    else:
        raise TypeError(f"config must be None, a config name or an ImplicitGemmConfig, got {type(config).__name__}")
    if (cfg.dtype, cfg.layout) != (problem.dtype, layout):
        raise ValueError(f"implicit_gemm config {cfg.name} computes {cfg.dtype} {cfg.layout}, the call is "
                         f"{problem.dtype} {layout}; configs for it: "
                         f"{', '.join(c.name for c in configs_for(problem.dtype, layout)) or 'none'}")
    return cfg


def can_implement(problem: Conv2dProblem, layout: str = "NCHW") -> str | None:
    # Every config shares the limits that matter; the smallest tile has the loosest ones.
    if problem.dtype not in CUDA_CORE_DTYPES:
        return f"implicit_gemm takes {' or '.join(CUDA_CORE_DTYPES)}, got {problem.dtype}"
    return _config(problem.dtype, layout, 64, 64).can_implement(problem)


def plan(spec: ConvSpec):
    p = spec.problem
    cfg = resolve_config(spec.option("config"), p, spec.caps.sms, spec.layout)
    reason = cfg.can_implement(p)
    if reason is not None:
        raise PlanError(f"implicit_gemm config {cfg.name} cannot run {p.describe()}: {reason}")
    launch = Launch(ENTRIES[cfg], (cfg.blocks(p), 1, 1), (cfg.threads, 1, 1), (
        X, W, *_common.epilogue_refs(spec.has_bias, spec.has_residual, p.dtype), OUT,
        *_common.conv_geometry_args(p), i32(spec.act)))
    return conv_plan(spec, "implicit_gemm", [launch])


ALGORITHM = ConvAlgorithm(
    name="implicit_gemm",
    crops=True,
    plan=plan,
    dtypes=CUDA_CORE_DTYPES,
    layouts=("NCHW", "NHWC"),
    options=("config",),
    description="tiled GEMM gathering input patches while loading tiles; no workspace",
)
