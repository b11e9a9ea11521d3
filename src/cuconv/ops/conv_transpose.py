"""``cuconv.conv_transpose2d``: transposed convolution (kernels/conv_transpose.cu).

torch.nn.functional.conv_transpose2d's signature and semantics: input (N, C_in, H, W), weight
(C_in, C_out / groups, R, S), output (N, C_out, H_out, W_out) with the §9.7 size (dilation
included)::

    H_out = (H − 1)·stride_h − 2·pad_h + dilation_h·(R − 1) + output_padding_h + 1

``output_padding`` must be smaller than the stride or the dilation (per dimension), as in
PyTorch. Computed as the gradient of a convolution with respect to its input, by a direct
gather (each output reads the inputs and taps that reach it): no zero-inserted tensor, no
col2im workspace, no atomics.

Kernels: ``conv_transpose2d_f32_simple`` (one output per thread, every tap tested) and
``conv_transpose2d_f32_phase_co{4,8}`` (a block per output phase, so all its threads share one
set of taps, and 4 or 8 output channels per thread).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..compile import KernelEntry, register_kernel
from . import _common
from ._common import i32

FILE = "conv_transpose.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4
MAX_BLOCKS = 1 << 16
INT_MAX = 2 ** 31 - 1

SIMPLE_NAME = "conv_transpose2d_f32_simple"
SIMPLE_EXPRESSION = "conv_transpose2d_simple_f32"
PHASE = {co: (f"conv_transpose2d_f32_phase_co{co}", f"conv_transpose2d_phase_f32<{co}>") for co in (4, 8)}
VARIANTS = ("auto", "simple", "phase")

register_kernel(KernelEntry(FILE, SIMPLE_EXPRESSION, SIMPLE_NAME, block_threads=THREADS,
                            min_blocks_per_sm=MIN_BLOCKS_PER_SM))
for _co, (_label, _expr) in PHASE.items():
    register_kernel(KernelEntry(FILE, _expr, _label, block_threads=THREADS,
                                min_blocks_per_sm=MIN_BLOCKS_PER_SM, main=_co == 8))


@dataclass(frozen=True)
class ConvTransposeProblem:
    N: int
    C_in: int
    H: int
    W: int
    C_out: int
    R: int
    S: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    out_pad_h: int
    out_pad_w: int
    dilation_h: int
    dilation_w: int
    groups: int

    @property
    def H_out(self) -> int:
        return ((self.H - 1) * self.stride_h - 2 * self.pad_h + self.dilation_h * (self.R - 1)
                + self.out_pad_h + 1)

    @property
    def W_out(self) -> int:
        return ((self.W - 1) * self.stride_w - 2 * self.pad_w + self.dilation_w * (self.S - 1)
                + self.out_pad_w + 1)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C_out, self.H_out, self.W_out)

    def flops(self) -> int:
        """2·N·C_in·H·W·(C_out/groups)·R·S: every input pixel meets every tap once."""
        return 2 * self.N * self.C_in * self.H * self.W * (self.C_out // self.groups) * self.R * self.S

    def describe(self) -> str:
        return (f"N{self.N} Cin{self.C_in} H{self.H} W{self.W} Cout{self.C_out} R{self.R} S{self.S}"
                f" stride{self.stride_h}x{self.stride_w} pad{self.pad_h}x{self.pad_w}"
                f" outpad{self.out_pad_h}x{self.out_pad_w} dil{self.dilation_h}x{self.dilation_w}"
                + (f" g{self.groups}" if self.groups != 1 else ""))

    @classmethod
    def from_shapes(cls, x_shape, w_shape, stride=1, padding=0, output_padding=0, groups=1,
                    dilation=1) -> "ConvTransposeProblem":
        """Validate PyTorch's conv_transpose2d arguments; ValueError/TypeError naming the shapes."""
        x_shape = tuple(int(d) for d in x_shape)
        w_shape = tuple(int(d) for d in w_shape)
        where = f"(input {x_shape}, weight {w_shape})"
        if len(x_shape) != 4:
            raise ValueError(f"input must be 4-D NCHW, got shape {x_shape}")
        if len(w_shape) != 4:
            raise ValueError(f"weight must be 4-D (C_in, C_out/groups, R, S), got shape {w_shape}")
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
            raise TypeError(f"groups must be an int, got {groups!r}")
        groups = int(groups)
        sh, sw = _common.pair(stride, "stride")
        ph, pw = _common.pair(padding, "padding")
        oph, opw = _common.pair(output_padding, "output_padding")
        dh, dw = _common.pair(dilation, "dilation")
        N, C, H, W = x_shape
        Cw, cout_g, R, S = w_shape
        for name, v in (("N", N), ("C_in", C), ("H", H), ("W", W), ("weight dim 1 (C_out/groups)", cout_g),
                        ("R", R), ("S", S)):
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {v} {where}")
        if groups <= 0:
            raise ValueError(f"groups must be positive, got {groups} {where}")
        if sh <= 0 or sw <= 0:
            raise ValueError(f"stride must be positive, got {(sh, sw)} {where}")
        if dh <= 0 or dw <= 0:
            raise ValueError(f"dilation must be positive, got {(dh, dw)} {where}")
        if ph < 0 or pw < 0:
            raise ValueError(f"padding must be non-negative, got {(ph, pw)} {where}")
        if oph < 0 or opw < 0:
            raise ValueError(f"output_padding must be non-negative, got {(oph, opw)} {where}")
        if not (oph < sh or oph < dh) or not (opw < sw or opw < dw):
            raise ValueError(f"output_padding must be smaller than either stride or dilation (as in "
                             f"PyTorch), got output_padding {(oph, opw)}, stride {(sh, sw)}, "
                             f"dilation {(dh, dw)} {where}")
        if Cw != C:
            raise ValueError(f"weight's first dimension must equal the input channels C_in={C} "
                             f"(weight is C_in x C_out/groups x R x S) {where}")
        if C % groups:
            raise ValueError(f"groups={groups} must divide the input channels C_in={C} {where}")
        p = cls(N, C, H, W, cout_g * groups, R, S, sh, sw, ph, pw, oph, opw, dh, dw, groups)
        if p.H_out <= 0 or p.W_out <= 0:
            raise ValueError(f"output size would be {p.H_out}x{p.W_out} (<= 0): padding {(ph, pw)} "
                             f"removes more than the transposed convolution produces {where}")
        for name, v in (("H_out", p.H_out), ("W_out", p.W_out), ("C_out", p.C_out)):
            if v > INT_MAX:
                raise ValueError(f"{name}={v} does not fit a 32-bit int {where}")
        if cout_g * R * S > INT_MAX:
            raise ValueError(f"C_out/groups·R·S={cout_g * R * S} does not fit the kernels' 32-bit "
                             f"per-channel weight offsets {where}")
        return p


def _phase_blocks(p: ConvTransposeProblem, co_tile: int) -> int:
    cout_g = p.C_out // p.groups
    hp = -(-p.H_out // p.stride_h)
    wp = -(-p.W_out // p.stride_w)
    return (p.N * p.groups * (-(-cout_g // co_tile)) * p.stride_h * p.stride_w
            * (-(-(hp * wp) // THREADS)))


def plan(p: ConvTransposeProblem, variant: str = "auto") -> tuple[str, str, int]:
    """(kernel label, expression, grid blocks) for ``p``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant in ("auto", "phase"):
        co = 8 if p.C_out // p.groups >= 8 else 4
        hp = -(-p.H_out // p.stride_h)
        wp = -(-p.W_out // p.stride_w)
        blocks = _phase_blocks(p, co)
        if blocks <= INT_MAX and hp * wp <= INT_MAX:
            label, expr = PHASE[co]
            return label, expr, blocks
        if variant == "phase":
            raise ValueError(f"variant='phase' cannot run {p.describe()}: {blocks} blocks exceed "
                             "the grid limit 2**31-1")
    total = p.N * p.C_out * p.H_out * p.W_out
    return SIMPLE_NAME, SIMPLE_EXPRESSION, _common.grid_1d(total, THREADS, MAX_BLOCKS)


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, activation=None, out=None, variant: str = "auto"):
    """Transposed 2-D convolution (torch.nn.functional.conv_transpose2d), NCHW, float32.

    ``y = activation(conv_transpose(x, w) + bias)``. ``variant`` ("auto", "simple", "phase")
    forces a kernel, for tests and benchmarks.
    """
    be = _common.current_backend()
    x = _common.as_tensor(x, "input", ndim=4, dtypes=("float32",), be=be)
    w = _common.as_tensor(w, "weight", ndim=4, dtypes=("float32",), be=be)
    p = ConvTransposeProblem.from_shapes(x.shape, w.shape, stride, padding, output_padding,
                                         groups, dilation)
    bias = _common.optional_tensor(bias, "bias", (p.C_out,), np.float32, be)
    act = _common.activation_code(activation)
    _common.same_device(be, input=x, weight=w, bias=bias, out=out)
    label, expr, grid = plan(p, variant)
    y = _common.prepare_out(out, p.output_shape, np.float32, be,
                            inputs=(("input", x), ("weight", w), ("bias", bias)))
    ph = _common.placeholder(be, "float32")
    be.launch(FILE, expr, (grid, 1, 1), (THREADS, 1, 1), (
        x, w, bias if bias is not None else ph, y,
        i32(p.N), i32(p.C_in), i32(p.H), i32(p.W), i32(p.C_out), i32(p.H_out), i32(p.W_out),
        i32(p.R), i32(p.S), i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w),
        i32(p.dilation_h), i32(p.dilation_w), i32(p.groups), i32(bias is not None), i32(act)))
    return y
