"""Algorithm ``"direct"``: kernels/direct.cu, one thread per output element.

The always-correct fallback: any stride, padding (asymmetric "same" included),
dilation and groups, no workspace, no size limit beyond the grid-stride loop. float32 and
float64 (accumulated in the input's precision), NCHW/KCRS and NHWC/KRSC (the plan takes
the kernel of the call's dtype and layout).
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

FILE = "direct.cu"

# A grid-stride loop covers the rest: more blocks than this only adds launch overhead
# (2**16 blocks of 256 threads already fill any current GPU many times over).
MAX_BLOCKS = 1 << 16


@dataclass(frozen=True)
class DirectConfig:
    block: int = 256
    dtype: str = "float32"
    layout: str = "NCHW"

    @property
    def name(self) -> str:
        nhwc = "_nhwc" if self.layout == "NHWC" else ""
        return f"direct_{tag(self.dtype)}{nhwc}_{self.block}"

    @property
    def expression(self) -> str:
        return f"direct_conv2d<{ctype(self.dtype)}, {str(self.layout == 'NHWC').lower()}, {self.block}>"

    def can_implement(self, problem: Conv2dProblem) -> str | None:
        if problem.dtype != self.dtype:
            return f"{self.name} takes {self.dtype}, got {problem.dtype}"
        # Per-tensor extents are passed as int (each dimension); element offsets are 64-bit.
        for name in ("N", "C", "H", "W", "K", "R", "S", "P", "Q"):
            if getattr(problem, name) > INT32_MAX:
                return f"{name}={getattr(problem, name)} does not fit a 32-bit int"
        return None

    def entry(self) -> KernelEntry:
        # 2 blocks of 256 threads per SM: at most 64 registers a thread (double included).
        return KernelEntry(FILE, self.expression, self.name, block_threads=self.block,
                           min_blocks_per_sm=2)


CONFIGS = {(dt, layout): DirectConfig(dtype=dt, layout=layout) for dt in CUDA_CORE_DTYPES for layout in ("NCHW", "NHWC")}
CONFIG = CONFIGS[("float32", "NCHW")]
ENTRIES = {cfg: register_kernel(cfg.entry()) for cfg in CONFIGS.values()}
ENTRY = ENTRIES[CONFIG]


def config_for(dtype: str, layout: str = "NCHW") -> DirectConfig:
    """The config of ``dtype`` and ``layout`` (PlanError when there is none)."""
    cfg = CONFIGS.get((dtype, layout))
    if cfg is None:
        raise PlanError(f"direct takes {' or '.join(CUDA_CORE_DTYPES)} in NCHW or NHWC, got {dtype} {layout}")
    return cfg


def can_implement(problem: Conv2dProblem) -> str | None:
    if problem.dtype not in CUDA_CORE_DTYPES:
        return f"direct takes {' or '.join(CUDA_CORE_DTYPES)}, got {problem.dtype}"
    return CONFIGS[(problem.dtype, "NCHW")].can_implement(problem)


def plan(spec: ConvSpec):
    p = spec.problem
    reason = can_implement(p)
    if reason is not None:
        raise PlanError(reason)
    cfg = config_for(p.dtype, spec.layout)
    grid = _common.grid_1d(p.N * p.K * p.P * p.Q, cfg.block, MAX_BLOCKS)
    launch = Launch(ENTRIES[cfg], (grid, 1, 1), (cfg.block, 1, 1), (
        X, W, *_common.epilogue_refs(spec.has_bias, spec.has_residual, p.dtype), OUT,
        *_common.conv_geometry_args(p), i32(spec.act)))
    return conv_plan(spec, "direct", [launch])


ALGORITHM = ConvAlgorithm(
    name="direct",
    plan=plan,
    dtypes=CUDA_CORE_DTYPES,
    layouts=("NCHW", "NHWC"),
    crops=True,
    description="one thread per output element; any stride/padding/dilation/groups; the fallback",
)
