"""Algorithm ``"direct"``: kernels/direct.cu, one thread per output element.

The always-correct fallback: any stride, padding (asymmetric "same" included),
dilation and groups, no workspace, no size limit beyond the grid-stride loop.
"""
from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def name(self) -> str:
        return f"direct_f32_{self.block}"

    @property
    def expression(self) -> str:
        return f"direct_conv2d_f32<{self.block}>"

    def can_implement(self, problem: Conv2dProblem) -> str | None:
        if problem.dtype != "float32":
            return f"{self.name} takes float32, got {problem.dtype}"
        # Per-tensor extents are passed as int (each dimension); element offsets are 64-bit.
        for name in ("N", "C", "H", "W", "K", "R", "S", "P", "Q"):
            if getattr(problem, name) >= 2 ** 31:
                return f"{name}={getattr(problem, name)} does not fit a 32-bit int"
        return None

    def entry(self) -> KernelEntry:
        return KernelEntry(FILE, self.expression, self.name, block_threads=self.block,
                           min_blocks_per_sm=2)


CONFIG = DirectConfig()
ENTRY = register_kernel(CONFIG.entry())


def can_implement(problem: Conv2dProblem) -> str | None:
    return CONFIG.can_implement(problem)


def plan(spec: ConvSpec):
    p = spec.problem
    reason = can_implement(p)
    if reason is not None:
        raise PlanError(reason)
    grid = _common.grid_1d(p.N * p.K * p.P * p.Q, CONFIG.block, MAX_BLOCKS)
    launch = Launch(ENTRY, (grid, 1, 1), (CONFIG.block, 1, 1), (
        X, W, *_common.epilogue_refs(spec.has_bias, spec.has_residual), OUT,
        *_common.conv_geometry_args(p), i32(spec.act)))
    return conv_plan(spec, "direct", [launch])

ALGORITHM = ConvAlgorithm(
    name="direct",
    plan=plan,
    dtypes=("float32",),
    description="one thread per output element; any stride/padding/dilation/groups; the fallback",
)
