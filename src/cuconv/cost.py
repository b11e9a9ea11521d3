"""The textbook's cost formulas (§8–§11), exact, per layer and per model.

Every layer type is a small frozen dataclass whose ``cost(input_shape, dtype)``
returns a :class:`LayerCost`. Convolution layers build a :class:`Conv2dProblem`
(the package's one definition of a convolution) and take every count from it.

Conventions (docs/cost_model.md has the full table and where the book differs):

* ``macs``: multiply-accumulates of conv and linear layers only, bias excluded.
  This is the figure torchvision and fvcore publish as "GFLOPS" and the one most
  papers call FLOPs.
* ``flops``: every layer, by the book's §9 formulas: conv and linear 2·MACs,
  max pool k²−1 per output, average pool k² per output, global average pool
  H·W per channel, batch norm 5 per element, skip add 1 per element; activations
  (which the book does not count) by ``ACTIVATION_FLOPS``.
* Backward: data and weight gradients separately (§9.8). For conv and linear
  each is exactly 2·MACs (plus the bias-gradient sum on the weight side); the
  other layers use the per-element counts documented next to each class.
* Bytes are at the layer's dtype; max-pool indices are ``INDEX_BYTES`` each.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

from . import fft_math as _fm
from . import winograd_math as _wm
from .dtypes import DTYPE_BYTES, dtype_name
from .problem import (
    Conv2dProblem,
    ConvTransposeProblem,
    PoolProblem,
    pair,
    pool_out_size,
)

INDEX_BYTES = 4                       # §9.3: "integers (typically 4 bytes each)"; PyTorch keeps int64
BATCHNORM_FLOPS_PER_ELEMENT = 5       # § Computational Summary: ~5·C·H·W
BATCHNORM_WEIGHT_GRAD_FLOPS_PER_ELEMENT = 3   # dβ = Σdy (1), dγ = Σdy·x̂ (2)
ADAM_STATES = 2                       # m and v: the book's 8P bytes at float32
# Activations are not in the book; a transcendental counts as one operation.
# relu6 clamps twice; silu is a sigmoid and a multiply.
ACTIVATION_FLOPS = {"relu": 1, "relu6": 2, "tanh": 1, "sigmoid": 1, "silu": 2, "identity": 0}

Shape = tuple  # tuple[int, ...]


# ============================================================== small helpers
# pair (int or pair of ints, with the TypeError/ValueError) is Conv2dProblem's, imported above.


def _shape(shape, ndim: int | None, where: str) -> Shape:
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{where}: input shape must be a tuple of ints, got {shape!r}") from None
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"{where}: input shape must be a tuple of ints, got {shape!r}")
        if d <= 0:
            raise ValueError(f"{where}: every dimension of the input shape must be positive, got {shape}")
    if ndim is not None and len(shape) != ndim:
        kind = {4: "4-D NCHW", 2: "2-D (batch, features)"}.get(ndim, f"{ndim}-D")
        hint = " (add a Flatten first)" if ndim == 2 and len(shape) == 4 else ""
        raise ValueError(f"{where}: input must be {kind}, got shape {shape}{hint}")
    return shape


def _is_single_shape(value) -> bool:
    """A flat sequence (of ints, or of anything that is not itself a sequence) is one shape."""
    return isinstance(value, (tuple, list)) and len(value) > 0 and not any(
        isinstance(d, (tuple, list)) for d in value)


def _shapes(value, where: str) -> tuple[Shape, ...]:
    """One shape or a sequence of shapes, as a tuple of shapes."""
    if _is_single_shape(value):
        return (_shape(value, None, where),)
    try:
        shapes = tuple(_shape(s, None, where) for s in value)
    except TypeError:
        raise TypeError(f"{where}: expected a shape or a sequence of shapes, got {value!r}") from None
    if not shapes:
        raise ValueError(f"{where}: expected at least one input shape")
    return shapes


def _single(value, ndim: int | None, where: str) -> Shape:
    shapes = _shapes(value, where)
    if len(shapes) != 1:
        raise ValueError(f"{where} takes one input, got {len(shapes)} shapes {shapes}")
    return _shape(shapes[0], ndim, where)


def _numel(shape) -> int:
    return math.prod(shape)


def _itemsize(dtype: str) -> int:
    return DTYPE_BYTES[dtype]


# ============================================================== results
@dataclass(frozen=True)
class WinogradCost:
    """F(m×m, 3×3) on one convolution (Lavin & Gray; §8.4).

    ``multiplications`` are the element-wise products α²·K·C·T over T tiles, against
    ``direct_multiplications`` (the direct convolution's MACs). Transform FLOPs are
    counted naively from the transform matrices (an add per extra non-zero, a multiply
    per coefficient other than ±1); hand-scheduled transforms share subexpressions and
    do fewer. Workspace is V (α²·C·T) plus M (α²·K·T); the transformed filter U
    (α²·K·C) is ``filter_bytes``.
    """
    m: int
    r: int
    tiles: int
    multiplications: int
    direct_multiplications: int
    input_transform_flops: int
    filter_transform_flops: int
    output_transform_flops: int
    workspace_bytes: int
    filter_bytes: int

    @property
    def alpha(self) -> int:
        return self.m + self.r - 1

    @property
    def name(self) -> str:
        return f"winograd_f{self.m}x{self.m}_{self.r}x{self.r}"

    @property
    def multiplications_per_tile(self) -> int:
        """Per tile and (k, c) pair: α² against m²·r² for the direct method (16 vs 36, 36 vs 144)."""
        return self.alpha ** 2

    @property
    def direct_multiplications_per_tile(self) -> int:
        return self.m ** 2 * self.r ** 2

    @property
    def reduction(self) -> float:
        """Direct multiplications over Winograd's, whole layer (tile padding included)."""
        return self.direct_multiplications / self.multiplications

    @property
    def product_flops(self) -> int:
        """The α² batched GEMMs: one multiply and one add per multiplication."""
        return 2 * self.multiplications

    @property
    def transform_flops(self) -> int:
        return self.input_transform_flops + self.filter_transform_flops + self.output_transform_flops

    @property
    def flops(self) -> int:
        return self.product_flops + self.transform_flops


@dataclass(frozen=True)
class FftCost:
    """FFT convolution (§8.4's "FFT-based" row; the ``fft`` and ``fft_tiling`` algorithms) on
    one convolution: Lh×Lw real transforms of every input tile and channel, of every filter
    plane (K·C/g) and of every output tile and channel, the channel reduction as complex
    multiply-accumulates per frequency, items = N·tiles.

    FLOPs by FFTW benchFFT's convention (http://www.fftw.org/speed/method.html): 5·n·log2(n)
    per complex n-point transform, half that, 2.5·n·log2(n), per real one (n = Lh·Lw for 2-D),
    whatever algorithm the library runs; 8 real FLOPs per complex multiply-accumulate. The
    filter transforms are ``filter_transform_flops``, out of ``flops`` when a transformed
    weight is reused (``flops_reusing_filter``). ``workspace_bytes``: what the plan allocates
    without a workspace cap, for the items of one pass (``pass_items``: the whole batch for
    ``fft``, at most fft_math.TILING_PASS_BYTES of planes for ``fft_tiling``) — real planes
    (the packed filter planes in passes, then the packed inputs, then the inverse transforms:
    max(pass_items·max(C, K), filter planes per pass)·Lh·Lw floats), input and output spectra
    (pass_items·(C + K)·Lh·(Lw/2+1) complex64) and the filter spectra (``filter_bytes``,
    K·C/g·Lh·(Lw/2+1) complex64), plus the non-finite flags (one int32 per item of a pass and
    per output channel, and one more, rounded up to 16 bytes); ``workspace_reusing_filter``
    without the filter's part, when ``transformed_weight=`` is passed. Up to 16 bytes of
    alignment per buffer come on top in the plan.
    """
    algo: str
    Lh: int
    Lw: int
    tiles: int                         # per image
    items: int                         # N · tiles
    pass_items: int                    # items a pass holds (no workspace cap)
    input_transform_flops: int
    filter_transform_flops: int
    output_transform_flops: int
    product_flops: int
    direct_flops: int
    workspace_bytes: int
    workspace_reusing_filter: int
    filter_bytes: int

    @property
    def transform_flops(self) -> int:
        return self.input_transform_flops + self.filter_transform_flops + self.output_transform_flops

    @property
    def flops(self) -> int:
        return self.transform_flops + self.product_flops

    @property
    def flops_reusing_filter(self) -> int:
        return self.flops - self.filter_transform_flops

    @property
    def reduction(self) -> float:
        """Direct FLOPs (2·MACs) over the FFT algorithm's."""
        return self.direct_flops / self.flops


@dataclass(frozen=True)
class TrainingMemory:
    """Training memory (§ Memory formulas): weights, gradients, Adam's m and v, activations."""
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    index_bytes: int

    @property
    def total(self) -> int:
        return (self.param_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes
                + self.index_bytes)


def training_memory(params: int, activation_bytes: int, index_bytes: int, dtype="float32",
                    optimizer_states: int = ADAM_STATES) -> TrainingMemory:
    """Weights + gradients + ``optimizer_states`` moments, all at ``dtype``, plus activations.

    At float32 with Adam this is the book's 4P + 4P + 8P. (Mixed-precision training
    keeps float32 masters and moments; pass dtype="float32" for those.)
    """
    itemsize = _itemsize(dtype_name(dtype))
    return TrainingMemory(params * itemsize, params * itemsize, optimizer_states * params * itemsize,
                          activation_bytes, index_bytes)


@dataclass(frozen=True)
class LayerCost:
    """The cost of one layer on one input (whole batch). See the module docstring for conventions."""
    kind: str
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    dtype: str = "float32"
    params: int = 0
    macs: int = 0                     # conv + linear multiply-accumulates, bias excluded
    flops: int = 0                    # forward, the book's §9 formula for this layer type
    backward_data_flops: int = 0      # gradient w.r.t. the input(s)
    backward_weight_flops: int = 0    # gradient w.r.t. weights and bias
    output_bytes: int = 0             # the output activation
    input_cache_bytes: int = 0        # what backward needs kept from the input(s)
    im2col_bytes: int = 0             # §8.3 column buffer (0 when the input already is one)
    index_bytes: int = 0              # max-pool argmax indices
    is_view: bool = False             # output aliases the input (Flatten, eval Dropout)
    problem: Conv2dProblem | None = None
    winograd: tuple[WinogradCost, ...] = ()
    parts: tuple["LayerCost", ...] = ()
    fft: tuple[FftCost, ...] = ()

    @property
    def input_shape(self) -> Shape:
        return self.input_shapes[0]

    @property
    def itemsize(self) -> int:
        return _itemsize(self.dtype)

    @property
    def param_bytes(self) -> int:
        return self.params * self.itemsize

    @property
    def backward_flops(self) -> int:
        return self.backward_data_flops + self.backward_weight_flops

    @property
    def training_flops(self) -> int:
        """Forward plus backward."""
        return self.flops + self.backward_flops

    @property
    def activation_bytes(self) -> int:
        """Bytes this layer adds to the activations kept for backward (0 for views)."""
        return 0 if self.is_view else self.output_bytes

    def training_memory(self, optimizer_states: int = ADAM_STATES) -> TrainingMemory:
        return training_memory(self.params, self.activation_bytes, self.index_bytes, self.dtype,
                               optimizer_states)


def combine(kind: str, parts, input_shapes, output_shape) -> LayerCost:
    """A composite layer (e.g. depthwise separable): sums of its parts, the largest im2col buffer."""
    parts = tuple(parts)
    return LayerCost(
        kind=kind, input_shapes=tuple(input_shapes), output_shape=tuple(output_shape),
        dtype=parts[0].dtype,
        params=sum(p.params for p in parts), macs=sum(p.macs for p in parts),
        flops=sum(p.flops for p in parts),
        backward_data_flops=sum(p.backward_data_flops for p in parts),
        backward_weight_flops=sum(p.backward_weight_flops for p in parts),
        output_bytes=sum(p.activation_bytes for p in parts),
        input_cache_bytes=sum(p.input_cache_bytes for p in parts),
        im2col_bytes=max(p.im2col_bytes for p in parts),
        index_bytes=sum(p.index_bytes for p in parts), parts=parts)


# ============================================================== Winograd
# The matrices, the shape rule and the buffer sizes are the ones the Winograd op uses
# (cuconv.winograd_math, a leaf module both import).
WINOGRAD_MATRICES = {m: dict(zip(("AT", "G", "BT"), _wm.winograd_matrices(m))) for m in (2, 4)}
_winograd_m = _wm.tile_size
winograd_unsupported_reason = _wm.unsupported_reason
winograd_tiles = _wm.tiles
winograd_workspace_bytes = _wm.workspace_bytes
winograd_filter_bytes = _wm.filter_bytes


def winograd_multiplications(problem: Conv2dProblem, m) -> int:
    """Element-wise multiplications: α²·K·C per tile (16 per tile for F(2x2,3x3) vs 36 direct)."""
    m = _winograd_m(m)
    alpha = m + 2
    return alpha * alpha * problem.K * problem.C * winograd_tiles(problem, m)


def transform_flops_1d(matrix) -> int:
    """FLOPs of multiplying a vector by a constant matrix, counted from its entries.

    Per row: one add per non-zero after the first, one multiply per non-zero other than ±1.
    """
    total = 0
    for row in matrix:
        nonzero = [v for v in row if v != 0]
        total += max(len(nonzero) - 1, 0) + sum(1 for v in nonzero if abs(v) != 1)
    return total


def transform_flops_2d(matrix) -> int:
    """FLOPs of T·X·Tᵀ for a rows×cols matrix T and a cols×cols X: cols + rows 1-D transforms."""
    rows, cols = len(matrix), len(matrix[0])
    return (cols + rows) * transform_flops_1d(matrix)


@functools.cache
def winograd_transform_flops(m) -> tuple[int, int, int]:
    """Per input tile and channel, per filter, per output tile and channel: FLOPs of Bᵀ d B, G g Gᵀ,
    Aᵀ M A counted naively from the matrices (F(2x2,3x3): 32, 70, 24)."""
    mats = WINOGRAD_MATRICES[_winograd_m(m)]
    return tuple(transform_flops_2d(mats[k]) for k in ("BT", "G", "AT"))


def winograd_cost(problem: Conv2dProblem, m) -> WinogradCost:
    """Everything about running ``problem`` as F(m×m, 3×3); ValueError if it cannot."""
    m = _winograd_m(m)
    tiles = winograd_tiles(problem, m)
    per_input, per_filter, per_output = winograd_transform_flops(m)
    return WinogradCost(
        m=m, r=3, tiles=tiles,
        multiplications=winograd_multiplications(problem, m),
        direct_multiplications=problem.macs(),
        input_transform_flops=tiles * problem.C * per_input,
        filter_transform_flops=problem.K * problem.C * per_filter,
        output_transform_flops=tiles * problem.K * per_output,
        workspace_bytes=winograd_workspace_bytes(problem, m),
        filter_bytes=winograd_filter_bytes(problem, m))


# ============================================================== FFT
# The transform sizes, tiles and buffer sizes are the ones the FFT op uses (cuconv.fft_math, a
# leaf module both import).
FFT_ALGORITHMS = _fm.ALGORITHMS
fft_unsupported_reason = _fm.unsupported_reason
fft_tiling = _fm.tiling


def fft_cost(problem: Conv2dProblem, algo: str = "fft", tile=None) -> FftCost:
    """Everything about running ``problem`` as ``algo`` ("fft": whole-image transforms,
    "fft_tiling": overlap-save tiles, ``tile`` as the op takes it); ValueError if it cannot."""
    t = _fm.tiling(problem, algo, tile)
    return FftCost(
        algo=algo, Lh=t.Lh, Lw=t.Lw, tiles=t.tiles, items=t.items, pass_items=t.pass_items,
        input_transform_flops=t.input_transform_flops, filter_transform_flops=t.filter_transform_flops,
        output_transform_flops=t.output_transform_flops, product_flops=t.product_flops,
        direct_flops=problem.flops(), workspace_bytes=t.workspace_bytes(with_filter=True),
        workspace_reusing_filter=t.workspace_bytes(with_filter=False), filter_bytes=t.filter_bytes)


def im2col_overhead(problem: Conv2dProblem) -> float:
    """§8.3: column-matrix elements over input elements, C·R·S·P·Q / (C·H·W).

    About k² for a stride-1 "same" convolution (9 for 3×3, 49 for 7×7); ~k²/s² with stride s.
    """
    return (problem.R * problem.S * problem.P * problem.Q) / (problem.H * problem.W)


# ============================================================== convolution
def conv_kind(problem: Conv2dProblem) -> str:
    """'depthwise', 'pointwise', 'grouped' or 'conv2d' (the §9 layer type of this convolution)."""
    if problem.groups > 1 and problem.groups == problem.C:
        return "depthwise"
    if problem.groups > 1:
        return "grouped"
    if problem.R == 1 and problem.S == 1:
        return "pointwise"
    return "conv2d"


def conv2d_cost(problem: Conv2dProblem, bias: bool = True) -> LayerCost:
    """§9.1 (and §9.4–9.6 as special cases) for one :class:`Conv2dProblem`."""
    macs = problem.macs()
    outputs = problem.N * problem.K * problem.P * problem.Q
    weights = problem.K * problem.C_per_group * problem.R * problem.S
    winograd = ()
    if winograd_unsupported_reason(problem) is None:
        winograd = tuple(winograd_cost(problem, m) for m in (2, 4))
    fft = ()
    if fft_unsupported_reason(problem) is None:
        fft = tuple(fft_cost(problem, a) for a in FFT_ALGORITHMS)
    return LayerCost(
        kind=conv_kind(problem), input_shapes=(problem.input_shape,), output_shape=problem.output_shape,
        dtype=problem.dtype,
        params=weights + (problem.K if bias else 0),
        macs=macs, flops=2 * macs,
        # dX and dW each pair every (output, tap) once, as the forward does (§9.8 a, c);
        # the bias gradient is one add per output element (§9.8 b).
        backward_data_flops=2 * macs,
        backward_weight_flops=2 * macs + (outputs if bias else 0),
        output_bytes=problem.output_bytes(), input_cache_bytes=problem.input_bytes(),
        im2col_bytes=0 if problem.is_pointwise else problem.im2col_bytes(),
        problem=problem, winograd=winograd, fft=fft)


# How the data gradient's FLOPs can be counted (backward_data_flops below; docs/cost_model.md).
DGRAD_COUNTS = ("model", "textbook", "phases", "exact")


def _dgrad_axis_pairs(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int,
                      bounded: bool) -> int:
    """(input position, tap) pairs along one axis whose offset h + pad − r·dil is a multiple of
    the stride; ``bounded`` also asks that it lands on an output 0 <= p < out."""
    pairs = 0
    for h in range(size):
        for r in range(kernel):
            t = h + pad - r * dilation
            if t % stride == 0 and (not bounded or 0 <= t // stride < out):
                pairs += 1
    return pairs


def backward_data_flops(problem: Conv2dProblem, count: str = "model") -> int:
    """FLOPs (2 per multiply-add) of the data gradient dX of ``problem`` (§9.8 (c)), counted as:

    * ``"model"``: every (output, tap) pair once, 2·MACs — the forward's count and the cost
      model's ``LayerCost.backward_data_flops``: what the bench's ``flops`` column and the
      model totals use.
    * ``"textbook"``: §9.8's printed formula 2·B·C_in·H_in·W_in·(C_out/groups)·k² (R·S for a
      non-square kernel): the "full" convolution of dy with the rotated filter at every input
      position, i.e. of dy with stride − 1 zeros inserted, the inserted zeros included.
    * ``"phases"``: what the phase-decomposed kernels multiply (conv_dgrad.cu's implicit GEMM,
      depthwise_grad.cu's tile, tc_grad.cu): dx split into stride_h·stride_w phases, every
      pixel of a phase times that phase's taps — no inserted zero is multiplied, but a tap
      whose dy row or column falls outside dy (the padding border) is still multiplied (by a
      zero the kernel loads).
    * ``"exact"``: only the taps that reach an element of dy (dgrad_direct's count).

    At stride 1 ``textbook == phases``; at stride s the textbook counts about s² times the
    phases. ``model`` and ``exact`` differ by the border pairs only.
    """
    if count not in DGRAD_COUNTS:
        raise ValueError(f"count must be one of {DGRAD_COUNTS}, got {count!r}")
    p = problem
    if count == "model":
        return 2 * p.macs()
    if count == "textbook":
        return 2 * p.N * p.C * p.H * p.W * p.K_per_group * p.R * p.S
    bounded = count == "exact"
    rows = _dgrad_axis_pairs(p.H, p.P, p.R, p.stride_h, p.pad_h, p.dilation_h, bounded)
    cols = _dgrad_axis_pairs(p.W, p.Q, p.S, p.stride_w, p.pad_w, p.dilation_w, bounded)
    return 2 * p.N * p.C * p.K_per_group * rows * cols


@dataclass(frozen=True)
class Conv2d:
    """torch.nn.Conv2d's hyperparameters. Depthwise: groups = in_channels; pointwise: kernel 1."""
    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] | str = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    bias: bool = True

    def weight_shape(self) -> Shape:
        r, s = pair(self.kernel_size, "kernel_size")
        if self.groups <= 0 or self.in_channels % self.groups:
            raise ValueError(f"Conv2d: groups={self.groups} must be positive and divide in_channels={self.in_channels}")
        return (self.out_channels, self.in_channels // self.groups, r, s)

    def problem(self, input_shape, dtype="float32") -> Conv2dProblem:
        x = _single(input_shape, 4, "Conv2d")
        if x[1] != self.in_channels:
            raise ValueError(f"Conv2d({self.in_channels}->{self.out_channels}) got input {x} with "
                             f"{x[1]} channels; expected {self.in_channels}")
        return Conv2dProblem.from_shapes(x, self.weight_shape(), self.stride, self.padding,
                                         self.dilation, self.groups, dtype_name(dtype))

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        return conv2d_cost(self.problem(input_shape, dtype), self.bias)

    def rf_kernel_stride(self, input_shape):
        r, s = pair(self.kernel_size, "kernel_size")
        dh, dw = pair(self.dilation, "dilation")
        return (dh * (r - 1) + 1, dw * (s - 1) + 1), pair(self.stride, "stride")


def depthwise(channels: int, kernel_size, stride=1, padding=0, dilation=1, bias=True,
              multiplier: int = 1) -> Conv2d:
    """§9.5 step 1: one k×k filter per channel (``multiplier`` filters per channel)."""
    return Conv2d(channels, channels * multiplier, kernel_size, stride, padding, dilation, channels, bias)


def pointwise(in_channels: int, out_channels: int, bias=True) -> Conv2d:
    """§9.4: a 1×1 convolution."""
    return Conv2d(in_channels, out_channels, 1, bias=bias)


@dataclass(frozen=True)
class DepthwiseSeparable:
    """§9.5: depthwise k×k then pointwise 1×1 (no norm or activation between, as in the book)."""
    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] | str = 0
    dilation: int | tuple[int, int] = 1
    bias: bool = False

    def parts(self) -> tuple[Conv2d, Conv2d]:
        return (depthwise(self.in_channels, self.kernel_size, self.stride, self.padding, self.dilation, self.bias),
                pointwise(self.in_channels, self.out_channels, self.bias))

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        dw, pw = self.parts()
        x = _single(input_shape, 4, "DepthwiseSeparable")
        c_dw = dw.cost(x, dtype)
        c_pw = pw.cost(c_dw.output_shape, dtype)
        return combine("depthwise_separable", (c_dw, c_pw), (x,), c_pw.output_shape)

    def rf_kernel_stride(self, input_shape):
        return self.parts()[0].rf_kernel_stride(input_shape)


@dataclass(frozen=True)
class ConvTranspose2d:
    """§9.7, torch.nn.ConvTranspose2d's hyperparameters and output size
    H_out = (H_in − 1)·s − 2p + d·(k − 1) + output_padding + 1.

    Its :class:`Conv2dProblem` is the convolution whose data gradient this layer is
    (C = out_channels, K = in_channels, H×W = the output size, P×Q = the input size),
    so MACs are N·C_in·H_in·W_in·(C_out/groups)·k², every input element meeting every tap
    (the count fvcore uses). The book's "standard conv on the zero-inserted input" reading
    multiplies ~s² more, most of them by inserted zeros: :meth:`zero_insertion_problem`.
    """
    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    output_padding: int | tuple[int, int] = 0
    groups: int = 1
    bias: bool = True
    dilation: int | tuple[int, int] = 1

    def _args(self):
        return (pair(self.kernel_size, "kernel_size"), pair(self.stride, "stride"),
                pair(self.padding, "padding"), pair(self.output_padding, "output_padding"),
                pair(self.dilation, "dilation"))

    def transposed_problem(self, input_shape, dtype="float32") -> ConvTransposeProblem:
        """The layer on ``input_shape`` as the package's one definition of a transposed
        convolution (PyTorch's argument rules, output_padding < stride or < dilation)."""
        x = _single(input_shape, 4, "ConvTranspose2d")
        if x[1] != self.in_channels:
            raise ValueError(f"ConvTranspose2d({self.in_channels}->{self.out_channels}) got input {x} with "
                             f"{x[1]} channels; expected {self.in_channels}")
        if self.groups <= 0 or self.out_channels % self.groups:
            raise ValueError(f"ConvTranspose2d: groups={self.groups} must divide in_channels={self.in_channels} "
                             f"and out_channels={self.out_channels}")
        (r, s), stride, padding, output_padding, dilation = self._args()
        w = (self.in_channels, self.out_channels // self.groups, r, s)
        try:
            return ConvTransposeProblem.from_shapes(x, w, stride, padding, output_padding, self.groups,
                                                    dilation, dtype)
        except ValueError as exc:
            raise ValueError(f"ConvTranspose2d: {exc}") from None

    def output_size(self, input_shape) -> Shape:
        return self.transposed_problem(input_shape).output_shape

    def problem(self, input_shape, dtype="float32") -> Conv2dProblem:
        """The convolution Y→X whose data gradient is this layer (shapes swapped)."""
        return self.transposed_problem(input_shape, dtype).as_conv2d()

    def zero_insertion_problem(self, input_shape, dtype="float32") -> Conv2dProblem:
        """§9.7's reading: insert s−1 zeros between inputs, pad d(k−1)−p, run a stride-1 conv."""
        x = _single(input_shape, 4, "ConvTranspose2d")
        n, cout, h, w = self.output_size(x)
        (r, s), (sh, sw), (ph, pw), (oh, ow), (dh, dw) = self._args()
        pad_h, pad_w = dh * (r - 1) - ph, dw * (s - 1) - pw
        if pad_h < 0 or pad_w < 0:
            raise ValueError(f"ConvTranspose2d: padding {(ph, pw)} exceeds d·(k−1) = {(dh * (r - 1), dw * (s - 1))}; "
                             f"no zero-insertion equivalent with non-negative padding")
        up_h, up_w = (x[2] - 1) * sh + 1, (x[3] - 1) * sw + 1
        return Conv2dProblem(n, self.in_channels, up_h, up_w, cout, r, s, 1, 1, pad_h, pad_w, dh, dw,
                             self.groups, dtype_name(dtype), pad_h + oh, pad_w + ow).validate()

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        x = _single(input_shape, 4, "ConvTranspose2d")
        t = self.transposed_problem(x, dtype)
        macs = t.macs()
        outputs = _numel(t.output_shape)
        try:
            p = t.as_conv2d()
        except ValueError:       # output_padding a whole stride past the padding: no such conv
            p = None
        col_rows = (t.C_out // t.groups) * t.R * t.S
        return LayerCost(
            kind="conv_transpose2d", input_shapes=(x,), output_shape=t.output_shape, dtype=t.dtype,
            params=self.in_channels * (self.out_channels // self.groups) * t.R * t.S
            + (self.out_channels if self.bias else 0),
            macs=macs, flops=2 * macs,
            backward_data_flops=2 * macs,          # the gradient is the forward convolution p
            backward_weight_flops=2 * macs + (outputs if self.bias else 0),
            output_bytes=outputs * t.itemsize, input_cache_bytes=_numel(x) * t.itemsize,
            # GEMM then col2im: the column matrix (C_out·R·S) × (H·W) per image (none for 1x1, stride 1,
            # no padding, where the GEMM writes the output directly)
            im2col_bytes=0 if (p is not None and p.is_pointwise) else t.groups * col_rows * t.N * t.H * t.W * t.itemsize,
            problem=p)

    def rf_kernel_stride(self, input_shape):
        (r, s), (sh, sw), _, _, (dh, dw) = self._args()
        # An output sees ⌈k_eff/s⌉ inputs; the jump shrinks by s.
        kh, kw = -(-(dh * (r - 1) + 1) // sh), -(-(dw * (s - 1) + 1) // sw)
        return (kh, kw), (Fraction(1, sh), Fraction(1, sw))


# ============================================================== linear
@dataclass(frozen=True)
class Linear:
    """A fully connected layer on (batch, in_features)."""
    in_features: int
    out_features: int
    bias: bool = True

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        x = _single(input_shape, 2, "Linear")
        if x[1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}->{self.out_features}) got input {x} with "
                             f"{x[1]} features; expected {self.in_features}")
        dtype = dtype_name(dtype)
        n = x[0]
        macs = n * self.in_features * self.out_features
        outputs = n * self.out_features
        return LayerCost(
            kind="linear", input_shapes=(x,), output_shape=(n, self.out_features), dtype=dtype,
            params=self.in_features * self.out_features + (self.out_features if self.bias else 0),
            macs=macs, flops=2 * macs, backward_data_flops=2 * macs,
            backward_weight_flops=2 * macs + (outputs if self.bias else 0),
            output_bytes=outputs * _itemsize(dtype), input_cache_bytes=_numel(x) * _itemsize(dtype))

    def rf_kernel_stride(self, input_shape):
        return None  # sees the whole (flattened) feature map; the model tracks its extent


# ============================================================== pooling
def _pool_shape(layer, kind: str, x: Shape, kernel, stride, padding, dilation, ceil_mode, where: str,
                count_include_pad=True) -> Shape:
    try:
        return PoolProblem.from_shapes(kind, x, kernel, stride, padding, dilation, ceil_mode,
                                       count_include_pad).output_shape
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}; got {layer}") from None


@dataclass(frozen=True)
class MaxPool2d:
    """§9.3 max pooling: k²−1 comparisons per output; backward routes each output's gradient to
    its argmax (one add per output) using stored indices."""
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1
    ceil_mode: bool = False

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        x = _single(input_shape, 4, "MaxPool2d")
        y = _pool_shape(self, "max", x, self.kernel_size, self.stride, self.padding, self.dilation,
                        self.ceil_mode, "MaxPool2d")
        dtype = dtype_name(dtype)
        kh, kw = pair(self.kernel_size, "kernel_size")
        outputs = _numel(y)
        return LayerCost(kind="maxpool", input_shapes=(x,), output_shape=y, dtype=dtype,
                         flops=(kh * kw - 1) * outputs, backward_data_flops=outputs,
                         output_bytes=outputs * _itemsize(dtype), index_bytes=outputs * INDEX_BYTES)

    def rf_kernel_stride(self, input_shape):
        kh, kw = pair(self.kernel_size, "kernel_size")
        dh, dw = pair(self.dilation, "dilation")
        return ((dh * (kh - 1) + 1, dw * (kw - 1) + 1),
                pair(self.kernel_size if self.stride is None else self.stride, "stride"))


@dataclass(frozen=True)
class AvgPool2d:
    """§9.3 average pooling: k²−1 adds and one divide = k² FLOPs per output (forward and backward).
    No indices are stored."""
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        x = _single(input_shape, 4, "AvgPool2d")
        y = _pool_shape(self, "avg", x, self.kernel_size, self.stride, self.padding, 1, self.ceil_mode,
                        "AvgPool2d", self.count_include_pad)
        dtype = dtype_name(dtype)
        kh, kw = pair(self.kernel_size, "kernel_size")
        outputs = _numel(y)
        return LayerCost(kind="avgpool", input_shapes=(x,), output_shape=y, dtype=dtype,
                         flops=kh * kw * outputs, backward_data_flops=kh * kw * outputs,
                         output_bytes=outputs * _itemsize(dtype))

    def rf_kernel_stride(self, input_shape):
        return (pair(self.kernel_size, "kernel_size"),
                pair(self.kernel_size if self.stride is None else self.stride, "stride"))


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows [⌊i·size/out⌋, ⌈(i+1)·size/out⌉)."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


@dataclass(frozen=True)
class AdaptiveAvgPool2d:
    """Average over PyTorch's adaptive windows: one FLOP per input element of each window
    (adds plus the divide). output_size 1 is global average pooling (§9.3: C·H·W per image)."""
    output_size: int | tuple[int, int]

    @property
    def is_global(self) -> bool:
        return pair(self.output_size, "output_size") == (1, 1)

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        x = _single(input_shape, 4, "AdaptiveAvgPool2d")
        oh, ow = pair(self.output_size, "output_size")
        if oh <= 0 or ow <= 0:
            raise ValueError(f"AdaptiveAvgPool2d: output_size must be positive, got {self.output_size}")
        dtype = dtype_name(dtype)
        sum_h = sum(e - s for s, e in adaptive_windows(x[2], oh))
        sum_w = sum(e - s for s, e in adaptive_windows(x[3], ow))
        flops = x[0] * x[1] * sum_h * sum_w
        y = (x[0], x[1], oh, ow)
        return LayerCost(kind="global_avgpool" if self.is_global else "adaptive_avgpool",
                         input_shapes=(x,), output_shape=y, dtype=dtype,
                         flops=flops, backward_data_flops=flops, output_bytes=_numel(y) * _itemsize(dtype))

    def rf_kernel_stride(self, input_shape):
        oh, ow = pair(self.output_size, "output_size")
        h, w = input_shape[2], input_shape[3]
        kh = max(e - s for s, e in adaptive_windows(h, oh))
        kw = max(e - s for s, e in adaptive_windows(w, ow))
        # Uneven windows have no single stride; ⌈size/out⌉ bounds the jump.
        return (kh, kw), (-(-h // oh), -(-w // ow))


def GlobalAvgPool2d() -> AdaptiveAvgPool2d:  # noqa: N802 (a layer constructor, named like the classes)
    """§9.3 global average pooling: B·C·H·W FLOPs, output B×C×1×1."""
    return AdaptiveAvgPool2d(1)


# ============================================================== element-wise layers
@dataclass(frozen=True)
class BatchNorm2d:
    """2C parameters (γ, β; running statistics are buffers, not parameters). Forward 5 FLOPs per
    element (the book's ~5·C·H·W); backward: 5 per element for dX, 3 for dγ and dβ."""
    num_features: int

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        x = _single(input_shape, 4, "BatchNorm2d")
        if x[1] != self.num_features:
            raise ValueError(f"BatchNorm2d({self.num_features}) got input {x} with {x[1]} channels")
        dtype = dtype_name(dtype)
        el = _numel(x)
        return LayerCost(kind="batchnorm", input_shapes=(x,), output_shape=x, dtype=dtype,
                         params=2 * self.num_features,
                         flops=BATCHNORM_FLOPS_PER_ELEMENT * el,
                         backward_data_flops=BATCHNORM_FLOPS_PER_ELEMENT * el,
                         backward_weight_flops=BATCHNORM_WEIGHT_GRAD_FLOPS_PER_ELEMENT * el,
                         output_bytes=el * _itemsize(dtype), input_cache_bytes=el * _itemsize(dtype))

    def rf_kernel_stride(self, input_shape):
        return (1, 1), (1, 1)


@dataclass(frozen=True)
class Activation:
    """An element-wise non-linearity; ``ACTIVATION_FLOPS[fn]`` per element forward and backward.
    Backward keeps its output (or a mask of the same size)."""
    fn: str = "relu"

    def __post_init__(self):
        if self.fn not in ACTIVATION_FLOPS:
            raise ValueError(f"unknown activation {self.fn!r}; expected one of {sorted(ACTIVATION_FLOPS)}")

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        x = _single(input_shape, None, f"Activation({self.fn})")
        dtype = dtype_name(dtype)
        el = _numel(x)
        per = ACTIVATION_FLOPS[self.fn]
        return LayerCost(kind=self.fn, input_shapes=(x,), output_shape=x, dtype=dtype,
                         flops=per * el, backward_data_flops=per * el,
                         output_bytes=el * _itemsize(dtype), input_cache_bytes=el * _itemsize(dtype))

    def rf_kernel_stride(self, input_shape):
        return (1, 1), (1, 1)


def _same_shapes(value, where: str, count: int | None = None) -> tuple[Shape, ...]:
    shapes = _shapes(value, where)
    if count is not None and len(shapes) == 1:
        shapes = shapes * count
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"{where}: all inputs must have the same shape, got {shapes}")
    return shapes


@dataclass(frozen=True)
class Add:
    """§11.5 skip connection: one add per output element, no parameters; the gradient passes
    to both inputs unchanged (0 FLOPs) and nothing is cached."""

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        shapes = _same_shapes(input_shape, "Add", count=2)
        dtype = dtype_name(dtype)
        y = shapes[0]
        return LayerCost(kind="add", input_shapes=shapes, output_shape=y, dtype=dtype,
                         flops=(len(shapes) - 1) * _numel(y), output_bytes=_numel(y) * _itemsize(dtype))

    def rf_kernel_stride(self, input_shape):
        return (1, 1), (1, 1)


@dataclass(frozen=True)
class ChannelScale:
    """x·s with s of shape N×C×1×1 broadcast over H×W (squeeze-and-excitation's last step).
    Forward 1 FLOP per element; backward 1 (dx = dy·s) + 2 (ds = Σ dy·x) per element."""

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        shapes = _shapes(input_shape, "ChannelScale")
        x = _shape(shapes[0], 4, "ChannelScale")
        s = shapes[1] if len(shapes) > 1 else (x[0], x[1], 1, 1)
        if len(shapes) > 2 or tuple(s) != (x[0], x[1], 1, 1):
            raise ValueError(f"ChannelScale: expects inputs x {x} and scale {(x[0], x[1], 1, 1)}, got {shapes}")
        dtype = dtype_name(dtype)
        el = _numel(x)
        return LayerCost(kind="scale", input_shapes=(x, tuple(s)), output_shape=x, dtype=dtype,
                         flops=el, backward_data_flops=3 * el, output_bytes=el * _itemsize(dtype),
                         input_cache_bytes=(el + _numel(s)) * _itemsize(dtype))

    def rf_kernel_stride(self, input_shape):
        return (1, 1), (1, 1)


@dataclass(frozen=True)
class Concat:
    """Channel concatenation (Inception): a copy, no FLOPs."""
    dim: int = 1

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        shapes = _shapes(input_shape, "Concat")
        d = self.dim
        first = shapes[0]
        if not 0 <= d < len(first):
            raise ValueError(f"Concat: dim {d} out of range for shapes {shapes}")
        for s in shapes:
            if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != d):
                raise ValueError(f"Concat: shapes must match except in dim {d}, got {shapes}")
        y = first[:d] + (sum(s[d] for s in shapes),) + first[d + 1:]
        dtype = dtype_name(dtype)
        return LayerCost(kind="concat", input_shapes=shapes, output_shape=y, dtype=dtype,
                         output_bytes=_numel(y) * _itemsize(dtype))

    def rf_kernel_stride(self, input_shape):
        return (1, 1), (1, 1)


@dataclass(frozen=True)
class Flatten:
    """N×C×H×W → N×(C·H·W), a view."""

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        x = _single(input_shape, None, "Flatten")
        dtype = dtype_name(dtype)
        y = (x[0], _numel(x[1:]))
        return LayerCost(kind="flatten", input_shapes=(x,), output_shape=y, dtype=dtype,
                         output_bytes=_numel(y) * _itemsize(dtype), is_view=True)

    def rf_kernel_stride(self, input_shape):
        return (1, 1), (1, 1)


@dataclass(frozen=True)
class Dropout:
    """Identity in evaluation (costs are inference-shaped: no mask, no FLOPs)."""
    p: float = 0.5

    def cost(self, input_shape, dtype="float32") -> LayerCost:
        x = _single(input_shape, None, "Dropout")
        dtype = dtype_name(dtype)
        return LayerCost(kind="dropout", input_shapes=(x,), output_shape=x, dtype=dtype,
                         output_bytes=_numel(x) * _itemsize(dtype), is_view=True)

    def rf_kernel_stride(self, input_shape):
        return (1, 1), (1, 1)


# ============================================================== totals
@dataclass(frozen=True)
class CostTotals:
    """Sums over a list of layers (a model). ``im2col_bytes_max`` is the largest single column
    buffer: a framework reuses one workspace across layers."""
    dtype: str
    layers: int
    params: int
    macs: int
    conv_macs: int
    linear_macs: int
    flops: int
    backward_data_flops: int
    backward_weight_flops: int
    activation_bytes: int
    input_cache_bytes: int
    index_bytes: int
    im2col_bytes_max: int
    memory: TrainingMemory

    @property
    def backward_flops(self) -> int:
        return self.backward_data_flops + self.backward_weight_flops

    @property
    def training_flops(self) -> int:
        return self.flops + self.backward_flops

    @property
    def param_bytes(self) -> int:
        return self.memory.param_bytes

    @property
    def training_memory_bytes(self) -> int:
        return self.memory.total

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "dtype", "layers", "params", "macs", "conv_macs", "linear_macs", "flops", "backward_data_flops",
            "backward_weight_flops", "backward_flops", "training_flops", "activation_bytes",
            "input_cache_bytes", "index_bytes", "im2col_bytes_max", "param_bytes")}
        d.update(grad_bytes=self.memory.grad_bytes, optimizer_bytes=self.memory.optimizer_bytes,
                 training_memory_bytes=self.memory.total)
        return d


def total_cost(costs, dtype="float32", optimizer_states: int = ADAM_STATES) -> CostTotals:
    costs = list(costs)
    dtype = dtype_name(costs[0].dtype if costs else dtype)
    params = sum(c.params for c in costs)
    activation = sum(c.activation_bytes for c in costs)
    index = sum(c.index_bytes for c in costs)
    linear = sum(c.macs for c in costs if c.kind == "linear")
    macs = sum(c.macs for c in costs)
    return CostTotals(
        dtype=dtype, layers=len(costs), params=params, macs=macs, conv_macs=macs - linear, linear_macs=linear,
        flops=sum(c.flops for c in costs),
        backward_data_flops=sum(c.backward_data_flops for c in costs),
        backward_weight_flops=sum(c.backward_weight_flops for c in costs),
        activation_bytes=activation, input_cache_bytes=sum(c.input_cache_bytes for c in costs),
        index_bytes=index, im2col_bytes_max=max((c.im2col_bytes for c in costs), default=0),
        memory=training_memory(params, activation, index, dtype, optimizer_states))


# ============================================================== receptive field (§10)
@dataclass(frozen=True)
class ReceptiveField:
    """After one layer: the receptive field on the input and the jump (input pixels per output step)."""
    rf: int | Fraction
    jump: int | Fraction


def _rf_step(item, input_shape=None):
    """(effective kernel, stride) of a stack element: a layer spec or (k, s) / (k, s, d)."""
    if isinstance(item, tuple) and all(isinstance(v, int) for v in item):
        if len(item) == 2:
            k, s = item
            d = 1
        elif len(item) == 3:
            k, s, d = item
        else:
            raise ValueError(f"receptive_field: expected (kernel, stride) or (kernel, stride, dilation), got {item}")
        if min(k, s, d) <= 0:
            raise ValueError(f"receptive_field: kernel, stride and dilation must be positive, got {item}")
        return d * (k - 1) + 1, s
    step = item.rf_kernel_stride(input_shape)
    if step is None:
        raise ValueError(f"receptive_field: {item} sees its whole input; use a model to track extents")
    (kh, _), (sh, _) = step
    return kh, sh


def receptive_field(stack) -> list[ReceptiveField]:
    """§10.1: RF_l = RF_{l−1} + (k_l − 1)·j_l, j_l = Π_{i<l} s_i, RF_0 = 1, along one axis.

    ``stack`` holds (kernel, stride[, dilation]) tuples or layer specs (their height axis);
    a dilated kernel counts as k_eff = d·(k − 1) + 1 (§9.2).
    """
    rf, jump = 1, 1
    out = []
    for item in stack:
        k, s = _rf_step(item)
        rf = rf + (k - 1) * jump
        jump = jump * s
        out.append(ReceptiveField(rf, jump))
    return out


@dataclass(frozen=True)
class StackComparison:
    """One row of §10.3: ``layers`` stacked k×k convolutions C→C, "same" padding, stride 1."""
    layers: int
    kernel: int
    channels: int
    rf: int
    params: int
    macs: int                 # whole stack on one H×W image
    macs_per_position: int
    flops_per_position: int
    nonlinearities: int

    @property
    def config(self) -> str:
        return f"{self.layers} x ({self.kernel}x{self.kernel})"


def stack_cost(layers: int, kernel: int, channels: int, height: int = 56, width: int = 56,
               bias: bool = False, dtype="float32") -> StackComparison:
    """Params, per-position MACs/FLOPs and RF of ``layers`` k×k C→C convolutions, computed through
    :class:`Conv2dProblem` (the book's per-position figure is total / (H·W))."""
    x = (1, channels, height, width)
    params = macs = 0
    for _ in range(layers):
        c = Conv2d(channels, channels, kernel, padding=kernel // 2, bias=bias).cost(x, dtype)
        params += c.params
        macs += c.macs
        x = c.output_shape
    rf = receptive_field([(kernel, 1)] * layers)[-1].rf
    per = macs // (height * width)
    return StackComparison(layers, kernel, channels, rf, params, macs, per, 2 * per, layers)


def kernel_stack_comparison(channels: int = 64, large_kernels=(5, 7, 11), small_kernel: int = 3,
                            height: int = 56, width: int = 56, bias: bool = False) -> list[StackComparison]:
    """§10.3: for each large kernel K, one K×K layer against (K−1)/(k−1) stacked k×k layers
    with the same receptive field."""
    rows = []
    for big in large_kernels:
        if (big - 1) % (small_kernel - 1):
            raise ValueError(f"kernel {big} is not reachable with stacked {small_kernel}x{small_kernel} layers")
        rows.append(stack_cost(1, big, channels, height, width, bias))
        rows.append(stack_cost((big - 1) // (small_kernel - 1), small_kernel, channels, height, width, bias))
    return rows


__all__ = [
    "INDEX_BYTES", "ACTIVATION_FLOPS", "BATCHNORM_FLOPS_PER_ELEMENT", "ADAM_STATES", "WINOGRAD_MATRICES",
    "LayerCost", "WinogradCost", "TrainingMemory", "CostTotals", "ReceptiveField", "StackComparison",
    "Conv2d", "depthwise", "pointwise", "DepthwiseSeparable", "ConvTranspose2d", "Linear",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "GlobalAvgPool2d", "BatchNorm2d", "Activation",
    "Add", "ChannelScale", "Concat", "Flatten", "Dropout",
    "conv2d_cost", "conv_kind", "combine", "total_cost", "training_memory",
    "backward_data_flops", "DGRAD_COUNTS",
    "winograd_tiles", "winograd_multiplications", "winograd_workspace_bytes", "winograd_filter_bytes",
    "winograd_cost", "winograd_transform_flops", "winograd_unsupported_reason", "transform_flops_1d", "transform_flops_2d",
    "im2col_overhead", "pool_out_size", "adaptive_windows",
    "receptive_field", "stack_cost", "kernel_stack_comparison",
]
