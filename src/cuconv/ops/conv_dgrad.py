"""The data gradient of conv2d, dX (kernels/conv_dgrad.cu; depthwise in depthwise_grad.py).

``dx = conv2d_input(dy, w)`` for the forward ``y = conv2d(x, w)`` described by a
``Conv2dProblem`` (NCHW / KCRS, float32 or float64, any stride, padding — asymmetric
included —, dilation and groups). The internal entry is ``conv2d_input_launch``; the public
``cuconv.grad`` API builds on it.

Kernels (generated names):

* ``dgrad_direct_{f32,f64}_256`` — one thread per dx element; the always-correct variant.
* ``dgrad_implicit_gemm_{f32,f64}_BMxBNxBK_TMxTN`` — an implicit GEMM per group and stride
  phase over the phase's taps only (no inserted zeros); see the kernel file's header.
* depthwise problems (groups == C) go to ``depthwise_grad``'s kernels under ``auto``.

Per kernel: ``<config>.launch(problem, w, dy, dx)`` is the one function that computes grid,
block, shared memory and arguments; ``check_arrays`` is the one that checks the arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..registry import KernelEntry, register_kernel
from ..problem import Conv2dProblem
from . import _common, _grad, depthwise_grad, implicit_gemm, tc_grad
from ._grad import INT_MAX, Launch

FILE = "conv_dgrad.cu"
DIRECT_MAX_BLOCKS = 1 << 16       # the grid-stride loop covers the rest
VARIANTS = ("auto", "direct", "implicit_gemm", "depthwise")


@dataclass(frozen=True)
class DgradDirectConfig(_grad.DirectConfig):
    """dgrad_direct<T, BLOCK>: one thread per dx element."""
    KIND: ClassVar[str] = "dgrad"
    FILE: ClassVar[str] = FILE

    def launch(self, p: Conv2dProblem, w, dy, dx) -> list[Launch]:
        grid = _common.grid_1d(p.N * p.C * p.H * p.W, self.block, DIRECT_MAX_BLOCKS)
        return [Launch(FILE, self.expression, (grid, 1, 1), (self.block, 1, 1),
                       (w, dy, dx, *_common.conv_geometry_args(p)))]


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

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def name(self) -> str:
        tile = f"{_grad.tag(self.dtype)}_{self.bm}x{self.bn}x{self.bk}_{self.tm}x{self.tn}"
        return f"conv_dgrad_implicit_gemm_{tile}_s{self.stages}" if self.stages else f"dgrad_implicit_gemm_{tile}"

    @property
    def expression(self) -> str:
        return (f"dgrad_implicit_gemm<{_grad.ctype(self.dtype)}, {self.bm}, {self.bn}, {self.bk}, "
                f"{self.tm}, {self.tn}, {self.min_blocks_per_sm}" + (f", {self.stages}>" if self.stages else ">"))

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
        if m > INT_MAX - self.bm:
            return (f"M = N·ceil(H/stride_h)·ceil(W/stride_w) = {m} is too large for 32-bit tile "
                    f"indices (limit {INT_MAX - self.bm})")
        if p.P * p.Q > INT_MAX or p.C > INT_MAX or p.K > INT_MAX:
            return "P·Q, C or K does not fit a 32-bit int"
        if (p.K + self.bk) * p.C_per_group * p.R * p.S > INT_MAX:
            return (f"the weight tensor ({p.K}·{p.C_per_group * p.R * p.S} elements, plus a tile "
                    f"of slack) is too large for 32-bit offsets")
        if self.blocks(p) > INT_MAX:
            return f"needs {self.blocks(p)} blocks, more than a 1-D grid holds ({INT_MAX})"
        return None

    def launch(self, p: Conv2dProblem, w, dy, dx) -> list[Launch]:
        return [Launch(FILE, self.expression, (self.blocks(p), 1, 1), (self.threads, 1, 1),
                       (w, dy, dx, *_common.conv_geometry_args(p)))]

    def entry(self) -> KernelEntry:
        return KernelEntry(FILE, self.expression, self.name, block_threads=self.threads,
                           min_blocks_per_sm=self.min_blocks_per_sm, main=self.main,
                           min_blocks_overrides=implicit_gemm.stage_overrides(self.stages, self.dtype))


DIRECT = {dt: DgradDirectConfig(dt) for dt in _grad.DTYPES}
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
CONFIGS = (*DIRECT.values(), *GEMM_CONFIGS)
CONFIGS_BY_NAME = {c.name: c for c in CONFIGS}
for _cfg in CONFIGS:
    register_kernel(_cfg.entry())


def _gemm_config(p: Conv2dProblem, sms: int) -> DgradGemmConfig:
    """The 128-row tile (f32) when C/groups > 32 and it still gives every SM a block (fewer
    loads per FMA), else 64x64."""
    by_dtype = [c for c in GEMM_CONFIGS if c.dtype == p.dtype]
    big = next((c for c in by_dtype if c.bm == 128), None)
    if (big is not None and p.C_per_group > 32 and big.blocks(p) >= sms
            and big.can_implement(p) is None):
        return big
    return next(c for c in by_dtype if c.bm == 64)


def choose_config(p: Conv2dProblem, sms: int = 132):
    """The ``auto`` rule for a non-depthwise dgrad: the implicit GEMM (``_gemm_config``) when
    C/groups >= 8 and its 32-bit index limits hold; else direct. Below 8 input channels per
    group the GEMM's N dimension fills less than 1/8 of its 64-column tile and direct, which
    computes only real outputs, does less work (the forward's rule with C and K swapped).
    """
    if p.C_per_group >= 8:
        cfg = _gemm_config(p, sms)
        if cfg.can_implement(p) is None:
            return cfg
    return DIRECT[p.dtype]


def resolve(p: Conv2dProblem, variant: str = "auto", sms: int = 132):
    """The config (or depthwise plan) that runs ``p`` for ``variant``: "auto", "direct",
    "implicit_gemm", "depthwise" or a config name. ValueError if it cannot run ``p``."""
    _grad.check_dtype(p.dtype, "the problem's dtype")
    if variant == "auto":
        if depthwise_grad.applies(p):
            plan = depthwise_grad.dgrad_plan(p)
            if plan is not None:
                return plan
        cfg = choose_config(p, sms)
    elif variant == "direct":
        cfg = DIRECT[p.dtype]
    elif variant == "implicit_gemm":
        cfg = _gemm_config(p, sms)
    elif variant == "depthwise":
        if not depthwise_grad.applies(p):
            raise ValueError(f"variant='depthwise' needs groups == C > 1, got {p.describe()}")
        plan = depthwise_grad.dgrad_plan(p)
        if plan is None:
            raise ValueError(f"variant='depthwise' cannot run {p.describe()}: its smallest tile "
                             f"exceeds the shared-memory budget")
        return plan
    elif variant in CONFIGS_BY_NAME:
        cfg = CONFIGS_BY_NAME[variant]
    else:
        raise ValueError(f"unknown dgrad variant {variant!r}; use one of {VARIANTS} or a config "
                         f"name: {', '.join(CONFIGS_BY_NAME)}")
    reason = cfg.can_implement(p)
    if reason is not None:
        raise ValueError(f"dgrad kernel {cfg.name} cannot run {p.describe()}: {reason}")
    return cfg


def check_arrays(be, p: Conv2dProblem, w, dy, dx):
    """(w, dy, dx) checked against the forward problem: dtype, C-contiguity, exact shapes
    (w: the weight, dy: the forward's output, dx: its input), dx overlapping neither."""
    dt = _grad.check_dtype(p.dtype, "the problem's dtype")
    w = _grad.check_array(be, w, "weight", p.weight_shape, dt)
    dy = _grad.check_array(be, dy, "grad_output", p.output_shape, dt)
    dx = _grad.check_output(be, dx, "grad_input", p.input_shape, dt,
                            inputs=(("weight", w), ("grad_output", dy)))
    _common.same_device(be, weight=w, grad_output=dy, grad_input=dx)
    return w, dy, dx


def launches(p: Conv2dProblem, w, dy, dx, variant: str = "auto", sms: int = 132) -> list[Launch]:
    """The launches that write dx (no checks on the arrays: see check_arrays)."""
    return resolve(p, variant, sms).launch(p, w, dy, dx)


def conv2d_input_launch(be, problem: Conv2dProblem, w, dy, dx, variant: str = "auto") -> str:
    """dx[...] = ∂L/∂x for the forward ``problem`` given ∂L/∂y = dy; returns the kernel's name.

    Every element of ``dx`` is written (no need to zero it first). float16 / bfloat16 problems
    go to the tensor cores (tc_grad; ``variant`` "auto" or "simple").
    """
    if problem.dtype in tc_grad.DTYPES:
        return tc_grad.tc_conv2d_input_launch(be, problem, w, dy, dx, variant)
    w, dy, dx = check_arrays(be, problem, w, dy, dx)
    cfg = resolve(problem, variant, _grad.sm_count(be))
    _grad.run(be, cfg.launch(problem, w, dy, dx))
    return cfg.name
