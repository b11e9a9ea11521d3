"""Algorithm ``"implicit_gemm"``: kernels/implicit_gemm.cu.

The convolution as a GEMM (M = N·P·Q, N = K/groups, K = C/groups·R·S per group) whose
A tiles are gathered from the NCHW input while they are loaded: no column matrix, no
workspace. Configs are template instantiations with generated names; the op picks one
by the rule in ``choose_config`` (or the caller names one with ``config=``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..plan import Launch, PlanError
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from . import _common
from ._algorithm import ConvAlgorithm, ConvSpec, conv_plan
from ._common import OUT, W, X, i32

FILE = "implicit_gemm.cu"
INT_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class ImplicitGemmConfig:
    """One instantiation: a BM×BN×BK block tile; each thread computes TM×TN outputs.

    ``simple`` selects variant 1 of kernels/implicit_gemm.cu (one output per thread,
    single-buffered, flat reduction order); TM = TN = 1 there.
    """
    bm: int
    bn: int
    bk: int
    tm: int = 1
    tn: int = 1
    simple: bool = False
    min_blocks_per_sm: int = 2
    main: bool = False

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def name(self) -> str:
        if self.simple:
            return f"implicit_gemm_simple_f32_{self.bm}x{self.bn}x{self.bk}"
        return f"implicit_gemm_f32_{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}"

    @property
    def expression(self) -> str:
        if self.simple:
            return f"implicit_gemm_simple_f32<{self.bm}, {self.bn}, {self.bk}>"
        return (f"implicit_gemm_f32<{self.bm}, {self.bn}, {self.bk}, {self.tm}, {self.tn}, "
                f"{self.min_blocks_per_sm}>")

    def blocks(self, problem: Conv2dProblem) -> int:
        M, Ng, _ = problem.gemm_mnk()
        return problem.groups * -(-M // self.bm) * -(-Ng // self.bn)

    def can_implement(self, problem: Conv2dProblem) -> str | None:
        if problem.dtype != "float32":
            return f"{self.name} takes float32, got {problem.dtype}"
        M, Ng, Kg = problem.gemm_mnk()
        # The kernel keeps M = N·P·Q, the tile origins and the block index in 32-bit ints.
        if M > INT_MAX - self.bm:
            return f"M = N·P·Q = {M} is too large for 32-bit tile indices (limit {INT_MAX - self.bm})"
        if Kg > INT_MAX - self.bk:
            return f"C/groups·R·S = {Kg} is too large for 32-bit reduction indices"
        if problem.K > INT_MAX - self.bn:
            return f"K = {problem.K} is too large for 32-bit channel indices"
        # Offsets within one input plane and within the weight tensor are 32-bit in the
        # main loop (whole-tensor input offsets are 64-bit).
        if problem.H * problem.W > INT_MAX:
            return f"an input plane H·W = {problem.H * problem.W} has too many elements for 32-bit offsets"
        if (problem.K + self.bn) * Kg > INT_MAX:
            return (f"the weight tensor ({problem.K}·{Kg} elements, plus a tile of slack) is too "
                    f"large for 32-bit offsets")
        if self.blocks(problem) > INT_MAX:
            return f"needs {self.blocks(problem)} blocks, more than a 1-D grid holds ({INT_MAX})"
        return None

    def entry(self) -> KernelEntry:
        return KernelEntry(FILE, self.expression, self.name, block_threads=self.threads,
                           min_blocks_per_sm=self.min_blocks_per_sm, main=self.main)


SIMPLE = ImplicitGemmConfig(16, 16, 16, simple=True)
CONFIGS = (
    SIMPLE,
    ImplicitGemmConfig(64, 64, 8, 4, 4),
    ImplicitGemmConfig(128, 64, 8, 8, 4, main=True),
    # 512 threads: one block per SM is already 16 warps (an 8x8 thread tile at 256 threads
    # needs ~150 registers on sm_90, too many for two blocks: see the kernel's header).
    ImplicitGemmConfig(128, 128, 8, 8, 4, min_blocks_per_sm=1),
)
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
ENTRIES = {c: register_kernel(c.entry()) for c in CONFIGS}


def choose_config(problem: Conv2dProblem, sms: int = 132) -> ImplicitGemmConfig:
    """The largest tile that still gives every SM a block.

    Bigger tiles load less per FMA ((BM+BN)/(BM·BN) elements: 0.016 for 128x128, 0.023 for
    128x64, 0.031 for 64x64) but waste work when K/groups is below BN and leave SMs idle
    when the grid is small, so: 128x128 when K/groups > 64 and it makes at least one
    block per SM; else 128x64 when K/groups > 32 and it does; else 64x64.
    """
    _, Ng, _ = problem.gemm_mnk()
    big = CONFIGS_BY_NAME["implicit_gemm_f32_128x128x8_8x4"]
    mid = CONFIGS_BY_NAME["implicit_gemm_f32_128x64x8_8x4"]
    small = CONFIGS_BY_NAME["implicit_gemm_f32_64x64x8_4x4"]
    if Ng > 64 and big.blocks(problem) >= sms and big.can_implement(problem) is None:
        return big
    if Ng > 32 and mid.blocks(problem) >= sms and mid.can_implement(problem) is None:
        return mid
    return small


def resolve_config(config, problem: Conv2dProblem, sms: int = 132) -> ImplicitGemmConfig:
    """``config``: None (the rule above, for ``sms`` SMs), a config name, or an ImplicitGemmConfig."""
    if config is None:
        return choose_config(problem, sms)
    if isinstance(config, str):
        if config not in CONFIGS_BY_NAME:
            raise ValueError(f"unknown implicit_gemm config {config!r}; available: {', '.join(CONFIGS_BY_NAME)}")
        return CONFIGS_BY_NAME[config]
    if isinstance(config, ImplicitGemmConfig):
        if config not in CONFIGS:
            raise ValueError(f"implicit_gemm config {config.name} is not a registered instantiation; "
                             f"available: {', '.join(CONFIGS_BY_NAME)}")
        return config
    raise TypeError(f"config must be None, a config name or an ImplicitGemmConfig, got {type(config).__name__}")


def can_implement(problem: Conv2dProblem) -> str | None:
    # Every config shares the limits that matter; the smallest tile has the loosest ones.
    return CONFIGS_BY_NAME["implicit_gemm_f32_64x64x8_4x4"].can_implement(problem)


def plan(spec: ConvSpec):
    p = spec.problem
    cfg = resolve_config(spec.option("config"), p, spec.caps.sms)
    reason = cfg.can_implement(p)
    if reason is not None:
        raise PlanError(f"implicit_gemm config {cfg.name} cannot run {p.describe()}: {reason}")
    launch = Launch(ENTRIES[cfg], (cfg.blocks(p), 1, 1), (cfg.threads, 1, 1), (
        X, W, *_common.epilogue_refs(spec.has_bias, spec.has_residual), OUT,
        *_common.conv_geometry_args(p), i32(spec.act)))
    return conv_plan(spec, "implicit_gemm", [launch])


ALGORITHM = ConvAlgorithm(
    name="implicit_gemm",
    plan=plan,
    dtypes=("float32",),
    options=("config",),
    description="tiled GEMM gathering input patches while loading tiles; no workspace",
)
