"""Algorithm ``"direct"``: kernels/direct.cu, one thread per output element.

The always-correct fallback: any stride, padding (asymmetric "same" included),
dilation and groups, no workspace, no size limit beyond the grid-stride loop.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..compile import KernelEntry, register_kernel
from ..problem import Conv2dProblem
from . import _common
from ._common import i32
from .conv2d import ConvAlgorithm, register_algorithm

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
register_kernel(CONFIG.entry())


def can_implement(problem: Conv2dProblem) -> str | None:
    return CONFIG.can_implement(problem)


def run(be, problem: Conv2dProblem, x, w, bias, act_code: int, residual, out, *,
        max_workspace_bytes=None, **extra) -> None:
    if extra:
        raise TypeError(f"algo='direct' takes no extra arguments, got {sorted(extra)}")
    p = problem
    total = p.N * p.K * p.P * p.Q
    grid = _common.grid_1d(total, CONFIG.block, MAX_BLOCKS)
    be.launch(FILE, CONFIG.expression, (grid, 1, 1), (CONFIG.block, 1, 1), (
        x, w, *_common.optional_pointer_args(be, bias, residual), out,
        *_common.conv_geometry_args(p), i32(act_code)))


def auto_priority(problem: Conv2dProblem) -> float:
    """The ``auto`` rule for direct: lowest priority of all (0). It is chosen only when no
    other algorithm can run the problem — it re-reads every input element C/g·R·S times
    from cache, while the tiled algorithms stage tiles in shared memory."""
    return 0.0


register_algorithm(ConvAlgorithm(
    name="direct",
    can_implement=can_implement,
    run=run,
    auto_priority=auto_priority,
    dtypes=("float32",),
    description="one thread per output element; any stride/padding/dilation/groups; the fallback",
))
