"""The one definition of each problem kind in cuconv: a 2-D convolution (``Conv2dProblem``),
a transposed convolution (``ConvTransposeProblem``), a pooling window (``PoolProblem``) and a
matrix product (``GemmProblem``).

Kernels, ops, the cost model and the bench harness all describe their work with these
classes, so a layer means the same thing everywhere. Each has ``from_shapes`` (PyTorch's
arguments, checked with PyTorch's rules: ValueError/TypeError naming the shapes and the
rule broken), ``validate`` and its output shape. ``pair``, ``int_arg`` and ``bool_arg`` read PyTorch's
scalar arguments for every op (TypeError for a non-int, ValueError naming the argument for one beyond the
kernels' 32-bit range). Imports nothing of cuconv but its vocabulary (cuconv.dtypes).

Notation (the textbook's §9.1 and cuDNN's): input N×C×H×W, filter K×(C/groups)×R×S,
output N×K×P×Q with

    P = floor((H + pad_top + pad_bottom - dilation_h·(R-1) - 1) / stride_h) + 1
    Q = floor((W + pad_left + pad_right - dilation_w·(S-1) - 1) / stride_w) + 1
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field, replace

import numpy as np

# DTYPE_BYTES, dtype_name and numpy_dtype are re-exported for callers of cuconv.problem.
from .dtypes import DTYPE_BYTES, INT32_MAX, dtype_name, int32_reason, numpy_dtype  # noqa: F401

def pair(value, what: str) -> tuple[int, int]:
    """An int or a pair of ints (PyTorch's ``stride=2`` or ``stride=(2, 1)``) as a pair: TypeError
    for anything else, ValueError naming ``what`` for a value beyond the kernels' 32-bit range."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
        a, b = value
    else:
        a = b = value
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{what} must be an int or a pair of ints, got {value!r}")
        if not -INT32_MAX <= v <= INT32_MAX:
            raise ValueError(f"{what}={value!r} does not fit a 32-bit int (the kernels' argument range)")
    return int(a), int(b)


def int_arg(value, what: str) -> int:
    """An int argument (``groups``, ...): TypeError for anything else, ValueError naming ``what``
    beyond the kernels' 32-bit range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if not -INT32_MAX <= value <= INT32_MAX:
        raise ValueError(f"{what}={value!r} does not fit a 32-bit int (the kernels' argument range)")
    return int(value)


def shape_arg(value, what: str) -> tuple[int, ...]:
    """A shape argument (``input_size``, ...) as a tuple of ints: TypeError for anything else,
    ValueError for a negative extent."""
    try:
        out = tuple(map(operator.index, value))
    except TypeError:
        raise TypeError(f"{what} must be a sequence of ints (a shape), got {value!r}") from None
    if out and min(out) < 0:
        raise ValueError(f"{what} must be non-negative, got {out}")
    return out


def bool_arg(value, what: str) -> bool:
    """A bool argument (``ceil_mode``, ...; NumPy's bool too): TypeError for anything else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a bool, got {value!r}")
    return bool(value)


def check_int32(where: str, *named: tuple[str, int]) -> None:
    """ValueError naming the first (name, value) that does not fit the kernels' 32-bit ints (every
    extent and hyperparameter a kernel takes is a 32-bit argument)."""
    reason = int32_reason(*named)
    if reason is not None:
        raise ValueError(f"{reason} (the kernels' argument range) {where}")


def conv_out_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                  dilation: int) -> int:
    """§9.1: floor((size + pads - dilation·(kernel-1) - 1) / stride) + 1 (may be <= 0)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class Conv2dProblem:
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0          # padding at the top (and the bottom unless pad_h_end is given)
    pad_w: int = 0          # padding at the left (and the right unless pad_w_end is given)
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1
    dtype: str = "float32"
    pad_h_end: int | None = field(default=None)
    pad_w_end: int | None = field(default=None)

    def __post_init__(self):
        # The derived extents: plain attributes (not dataclass fields, so not part of equality),
        # set once, always in this order (instances then share one attribute layout, which keeps
        # attribute reads and hashing fast). Invalid values get placeholders validate() refuses.
        set_ = object.__setattr__
        pb = self.pad_h if self.pad_h_end is None else self.pad_h_end
        pr = self.pad_w if self.pad_w_end is None else self.pad_w_end
        set_(self, "pad_bottom", pb)
        set_(self, "pad_right", pr)
        ok = self.stride_h > 0 and self.stride_w > 0 and self.groups > 0
        set_(self, "P", conv_out_size(self.H, self.R, self.stride_h, self.pad_h, pb, self.dilation_h) if ok else 0)
        set_(self, "Q", conv_out_size(self.W, self.S, self.stride_w, self.pad_w, pr, self.dilation_w) if ok else 0)
        set_(self, "C_per_group", self.C // self.groups if ok else 0)
        set_(self, "K_per_group", self.K // self.groups if ok else 0)

    # ----------------------------------------------------------- construction
    @classmethod
    def from_shapes(cls, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1,
                    dtype="float32") -> "Conv2dProblem":
        """Build from NCHW input and KCRS weight shapes with torch.nn.functional's arguments.

        ``padding`` is an int, a pair, ``"valid"`` or ``"same"`` (stride 1 only, as in
        PyTorch; an even effective kernel puts the extra row/column at the bottom/right).
        Raises ValueError naming the shapes and the rule broken.
        """
        x_shape, w_shape = tuple(map(int, x_shape)), tuple(map(int, w_shape))
        if len(x_shape) != 4:
            raise ValueError(f"input must be 4-D NCHW, got shape {x_shape}")
        if len(w_shape) != 4:
            raise ValueError(f"weight must be 4-D KCRS, got shape {w_shape}")
        N, C, H, W = x_shape
        K, Cg, R, S = w_shape
        sh, sw = pair(stride, "stride")
        dh, dw = pair(dilation, "dilation")
        groups = int_arg(groups, "groups")
        pad_end_h = pad_end_w = None
        if isinstance(padding, str):
            if padding == "valid":
                ph = pw = 0
            elif padding == "same":
                if (sh, sw) != (1, 1):
                    raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), got stride {(sh, sw)}")
                th, tw = dh * (R - 1), dw * (S - 1)
                ph, pw = th // 2, tw // 2
                pad_end_h, pad_end_w = th - ph, tw - pw
            else:
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        else:
            ph, pw = pair(padding, "padding")
        p = cls(N, C, H, W, K, R, S, sh, sw, ph, pw, dh, dw, groups, dtype_name(dtype),
                pad_end_h if pad_end_h != ph else None, pad_end_w if pad_end_w != pw else None)
        p.validate(x_shape=x_shape, w_shape=w_shape)
        return p

    def validate(self, x_shape=None, w_shape=None) -> "Conv2dProblem":
        """Raise ValueError naming the shapes and the rule if this is not a valid convolution."""
        reason = self._invalid(w_shape)
        if reason is not None:
            xs = x_shape or (self.N, self.C, self.H, self.W)
            ws = w_shape or (self.K, self.C // max(self.groups, 1), self.R, self.S)
            raise ValueError(f"{reason} (input {tuple(xs)}, weight {tuple(ws)})")
        return self

    _INT_FIELDS = ("N", "C", "H", "W", "K", "R", "S", "stride_h", "stride_w", "pad_h", "pad_w", "pad_bottom",
                   "pad_right", "dilation_h", "dilation_w", "groups")

    def _invalid(self, w_shape) -> str | None:
        """The rule this problem breaks (the message without the shapes), or None."""
        values = (self.N, self.C, self.H, self.W, self.K, self.R, self.S, self.stride_h, self.stride_w, self.pad_h,
                  self.pad_w, self.pad_bottom, self.pad_right, self.dilation_h, self.dilation_w, self.groups)
        if not (-INT32_MAX <= min(values) and max(values) <= INT32_MAX):
            return int32_reason(*zip(self._INT_FIELDS, values)) + " (the kernels' argument range)"
        if self.N < 0:
            return f"N must be non-negative, got {self.N}"
        # N = 0 (an empty batch) is a valid call with an empty output, as in PyTorch; a zero
        # channel count or kernel extent is refused (PyTorch rejects K = 0 and returns an
        # output without channels for C = 0, which cuconv does not imitate).
        if min(self.C, self.H, self.W, self.K, self.R, self.S) <= 0:
            name = next(n for n in ("C", "H", "W", "K", "R", "S") if getattr(self, n) <= 0)
            return f"{name} must be positive, got {getattr(self, name)}"
        if self.stride_h <= 0 or self.stride_w <= 0:
            return f"stride must be positive, got {(self.stride_h, self.stride_w)}"
        if self.dilation_h <= 0 or self.dilation_w <= 0:
            return f"dilation must be positive, got {(self.dilation_h, self.dilation_w)}"
        # A negative end padding stops the convolution short of the input's end (rows past the last
        # output's reach are never read): ConvTransposeProblem.as_conv2d makes such problems, and
        # only algorithms that say they handle it take them (ConvAlgorithm.crops).
        if min(self.pad_h, self.pad_w) < 0:
            return f"padding must be non-negative, got {(self.pad_h, self.pad_w)}"
        if self.groups <= 0:
            return f"groups must be positive, got {self.groups}"
        if self.C % self.groups:
            return f"groups={self.groups} must divide the input channels C={self.C}"
        if self.K % self.groups:
            return f"groups={self.groups} must divide the output channels K={self.K}"
        if w_shape is not None and w_shape[1] * self.groups != self.C:
            return (f"weight has {w_shape[1]} input channels per group, so input must have "
                    f"{w_shape[1]}*groups={w_shape[1] * self.groups} channels, got C={self.C}")
        P, Q = self.P, self.Q
        if P <= 0 or Q <= 0:
            return (f"output size would be {P}x{Q} (<= 0): the dilated kernel "
                    f"{self.dilation_h * (self.R - 1) + 1}x{self.dilation_w * (self.S - 1) + 1} is larger than "
                    f"the padded input {self.H + self.pad_h + self.pad_bottom}x{self.W + self.pad_w + self.pad_right}")
        return None

    def with_(self, **changes) -> "Conv2dProblem":
        return replace(self, **changes)

    # ----------------------------------------------------------- shapes
    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.K, self.C_per_group, self.R, self.S)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.K, self.P, self.Q)

    @property
    def itemsize(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.C and self.groups > 1

    @property
    def is_pointwise(self) -> bool:
        """1x1, stride 1, no padding: the convolution is a plain GEMM on NCHW data."""
        return (self.R == 1 and self.S == 1 and self.stride_h == 1 and self.stride_w == 1
                and self.pad_h == 0 and self.pad_w == 0 and self.pad_bottom == 0 and self.pad_right == 0)

    def torch_args(self) -> dict:
        """The torch.nn.functional.conv2d keyword arguments of this problem."""
        return dict(stride=(self.stride_h, self.stride_w), padding=(self.pad_h, self.pad_w),
                    dilation=(self.dilation_h, self.dilation_w), groups=self.groups)

    def describe(self) -> str:
        """A short, complete, human-readable description (used in bench rows and test ids)."""
        s = (f"N{self.N} C{self.C} H{self.H} W{self.W} K{self.K} R{self.R} S{self.S}"
             f" stride{self.stride_h}x{self.stride_w} pad{self.pad_h}x{self.pad_w}")
        if self.pad_h_end is not None or self.pad_w_end is not None:
            s += f"(end {self.pad_bottom}x{self.pad_right})"
        s += f" dil{self.dilation_h}x{self.dilation_w}"
        if self.groups != 1:
            s += f" g{self.groups}"
        return s

    # ----------------------------------------------------------- costs
    def gemm_mnk(self) -> tuple[int, int, int]:
        """The implicit-GEMM view per group: M = N·P·Q, N = K/groups, K = (C/groups)·R·S."""
        return (self.N * self.P * self.Q, self.K_per_group, self.C_per_group * self.R * self.S)

    def macs(self) -> int:
        """Multiply-accumulates of the direct convolution (bias excluded)."""
        return self.N * self.K * self.P * self.Q * self.C_per_group * self.R * self.S

    def flops(self) -> int:
        """The direct count 2·N·K·P·Q·(C/groups)·R·S, the same for every algorithm."""
        return 2 * self.macs()

    def input_bytes(self) -> int:
        return self.N * self.C * self.H * self.W * self.itemsize

    def weight_bytes(self) -> int:
        return self.K * self.C_per_group * self.R * self.S * self.itemsize

    def output_bytes(self) -> int:
        return self.N * self.K * self.P * self.Q * self.itemsize

    def min_bytes(self, bias: bool = False, residual: bool = False) -> int:
        """Compulsory DRAM traffic: read input and weight (and bias, residual) once, write output once."""
        b = self.input_bytes() + self.weight_bytes() + self.output_bytes()
        if bias:
            b += self.K * self.itemsize
        if residual:
            b += self.output_bytes()
        return b

    def im2col_bytes(self, images: int | None = None) -> int:
        """The §8.3 column matrix (C·R·S) × (P·Q) per image, for ``images`` images (default N)."""
        n = self.N if images is None else images
        return n * self.C * self.R * self.S * self.P * self.Q * self.itemsize


# =========================================================================== transposed convolution
@dataclass(frozen=True)
class ConvTransposeProblem:
    """torch.nn.functional.conv_transpose2d: input (N, C_in, H, W), weight (C_in, C_out/groups,
    R, S), output (N, C_out, H_out, W_out) with the §9.7 size (dilation included)::

        H_out = (H − 1)·stride_h − 2·pad_h + dilation_h·(R − 1) + output_padding_h + 1

    ``output_padding`` must be smaller than the stride or the dilation, per dimension
    (PyTorch's rule, the only one in cuconv).
    """
    N: int
    C_in: int
    H: int
    W: int
    C_out: int
    R: int
    S: int
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    out_pad_h: int = 0
    out_pad_w: int = 0
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1
    dtype: str = "float32"

    @classmethod
    def from_shapes(cls, x_shape, w_shape, stride=1, padding=0, output_padding=0, groups=1,
                    dilation=1, dtype="float32") -> "ConvTransposeProblem":
        """Check PyTorch's conv_transpose2d arguments; ValueError/TypeError naming the shapes."""
        x_shape, w_shape = tuple(map(int, x_shape)), tuple(map(int, w_shape))
        if len(x_shape) != 4:
            raise ValueError(f"input must be 4-D NCHW, got shape {x_shape}")
        if len(w_shape) != 4:
            raise ValueError(f"weight must be 4-D (C_in, C_out/groups, R, S), got shape {w_shape}")
        groups = int_arg(groups, "groups")
        sh, sw = pair(stride, "stride")
        ph, pw = pair(padding, "padding")
        oph, opw = pair(output_padding, "output_padding")
        dh, dw = pair(dilation, "dilation")
        where = f"(input {x_shape}, weight {w_shape})"
        N, C, H, W = x_shape
        Cw, cout_g, R, S = w_shape
        if Cw != C:
            raise ValueError(f"weight's first dimension must equal the input channels C_in={C} "
                             f"(weight is C_in x C_out/groups x R x S) {where}")
        return cls(N, C, H, W, cout_g * groups, R, S, sh, sw, ph, pw, oph, opw, dh, dw, groups,
                   dtype_name(dtype)).validate(w_shape)

    def validate(self, w_shape=None) -> "ConvTransposeProblem":
        ws = w_shape or (self.C_in, self.C_out // max(self.groups, 1), self.R, self.S)
        where = f"(input {self.input_shape}, weight {tuple(ws)})"
        check_int32(where, ("N", self.N), ("C_in", self.C_in), ("H", self.H), ("W", self.W), ("C_out", self.C_out),
                    ("R", self.R), ("S", self.S))
        if self.N < 0:
            raise ValueError(f"N must be non-negative, got {self.N} {where}")
        for name, v in (("C_in", self.C_in), ("H", self.H), ("W", self.W),
                        ("weight dim 1 (C_out/groups)", ws[1]), ("R", self.R), ("S", self.S)):
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {v} {where}")
        if self.groups <= 0:
            raise ValueError(f"groups must be positive, got {self.groups} {where}")
        if self.stride_h <= 0 or self.stride_w <= 0:
            raise ValueError(f"stride must be positive, got {(self.stride_h, self.stride_w)} {where}")
        if self.dilation_h <= 0 or self.dilation_w <= 0:
            raise ValueError(f"dilation must be positive, got {(self.dilation_h, self.dilation_w)} {where}")
        if self.pad_h < 0 or self.pad_w < 0:
            raise ValueError(f"padding must be non-negative, got {(self.pad_h, self.pad_w)} {where}")
        oph, opw = self.out_pad_h, self.out_pad_w
        if oph < 0 or opw < 0:
            raise ValueError(f"output_padding must be non-negative, got {(oph, opw)} {where}")
        if not (oph < self.stride_h or oph < self.dilation_h) or not (opw < self.stride_w or opw < self.dilation_w):
            raise ValueError(f"output_padding must be smaller than either stride or dilation (as in "
                             f"PyTorch), got output_padding {(oph, opw)}, stride {(self.stride_h, self.stride_w)}, "
                             f"dilation {(self.dilation_h, self.dilation_w)} {where}")
        if self.C_in % self.groups:
            raise ValueError(f"groups={self.groups} must divide the input channels C_in={self.C_in} {where}")
        if self.C_out % self.groups:
            raise ValueError(f"groups={self.groups} must divide the output channels C_out={self.C_out} {where}")
        if self.H_out <= 0 or self.W_out <= 0:
            raise ValueError(f"output size would be {self.H_out}x{self.W_out} (<= 0): padding "
                             f"{(self.pad_h, self.pad_w)} removes more than the transposed convolution "
                             f"produces {where}")
        return self

    @property
    def H_out(self) -> int:
        return ((self.H - 1) * self.stride_h - 2 * self.pad_h + self.dilation_h * (self.R - 1)
                + self.out_pad_h + 1)

    @property
    def W_out(self) -> int:
        return ((self.W - 1) * self.stride_w - 2 * self.pad_w + self.dilation_w * (self.S - 1)
                + self.out_pad_w + 1)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C_in, self.H, self.W)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.C_in, self.C_out // self.groups, self.R, self.S)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C_out, self.H_out, self.W_out)

    @property
    def itemsize(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def macs(self) -> int:
        """N·C_in·H·W·(C_out/groups)·R·S: every input element meets every tap once."""
        return self.N * self.C_in * self.H * self.W * (self.C_out // self.groups) * self.R * self.S

    def flops(self) -> int:
        return 2 * self.macs()

    def as_conv2d(self) -> Conv2dProblem:
        """The convolution X (N, C_out, H_out, W_out) -> Y (N, C_in, H, W) whose data gradient
        this transposed convolution is (§9.7). With output_padding >= stride (allowed when it
        is below the dilation) the rows past the last stride step would give that convolution
        more outputs than H; its bottom/right padding is reduced to drop them — below zero when
        the output padding spans a whole stride more than the padding: the convolution then stops
        short of its input's end (the rows output_padding added reach no input element)."""
        def end_pad(pad, out_pad, stride):
            return pad - stride * (out_pad // stride)
        peh = end_pad(self.pad_h, self.out_pad_h, self.stride_h)
        pew = end_pad(self.pad_w, self.out_pad_w, self.stride_w)
        p = Conv2dProblem(self.N, self.C_out, self.H_out, self.W_out, self.C_in, self.R, self.S,
                          self.stride_h, self.stride_w, self.pad_h, self.pad_w, self.dilation_h,
                          self.dilation_w, self.groups, self.dtype,
                          peh if peh != self.pad_h else None, pew if pew != self.pad_w else None)
        p.validate()
        assert (p.P, p.Q) == (self.H, self.W), (p, self)
        return p

    def describe(self) -> str:
        return (f"N{self.N} Cin{self.C_in} H{self.H} W{self.W} Cout{self.C_out} R{self.R} S{self.S}"
                f" stride{self.stride_h}x{self.stride_w} pad{self.pad_h}x{self.pad_w}"
                f" outpad{self.out_pad_h}x{self.out_pad_w} dil{self.dilation_h}x{self.dilation_w}"
                + (f" g{self.groups}" if self.groups != 1 else ""))


# =========================================================================== pooling
def pool_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape (may be <= 0; ``PoolProblem.validate`` rejects that): the
    division rounds down, or up with ``ceil_mode``, but then the last window must start inside
    the input or the left padding (else that row/column is dropped)."""
    numerator = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


POOL_KINDS = ("max", "avg", "global_avg")


@dataclass(frozen=True)
class PoolProblem:
    """A 2-D pooling window over an NCHW input (torch.nn.functional.max_pool2d / avg_pool2d /
    adaptive_avg_pool2d(x, 1)): ``kind`` "max", "avg" or "global_avg" (one window the size of
    the plane)."""
    kind: str
    N: int
    C: int
    H: int
    W: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int = 0
    pad_w: int = 0
    dilation_h: int = 1
    dilation_w: int = 1
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    dtype: str = "float32"

    @classmethod
    def from_shapes(cls, kind: str, x_shape, kernel_size=None, stride=None, padding=0, dilation=1,
                    ceil_mode=False, count_include_pad=True, divisor_override=None,
                    dtype="float32") -> "PoolProblem":
        """PyTorch's arguments and checks (``stride`` None or () means ``kernel_size``)."""
        if kind not in POOL_KINDS:
            raise ValueError(f"pooling kind must be one of {POOL_KINDS}, got {kind!r}")
        x_shape = tuple(map(int, x_shape))
        if len(x_shape) != 4:
            raise ValueError(f"input must be 4-D NCHW, got shape {x_shape}")
        N, C, H, W = x_shape
        if kind == "global_avg":
            return cls(kind, N, C, H, W, H, W, H, W, dtype=dtype_name(dtype)).validate()
        kh, kw = pair(kernel_size, "kernel_size")
        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
            sh, sw = kh, kw
        else:
            sh, sw = pair(stride, "stride")
        ph, pw = pair(padding, "padding")
        dh, dw = pair(dilation, "dilation")
        ceil_mode, count_include_pad = bool_arg(ceil_mode, "ceil_mode"), bool_arg(count_include_pad, "count_include_pad")
        if divisor_override is not None:
            divisor_override = int_arg(divisor_override, "divisor_override")
        return cls(kind, N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, bool(ceil_mode),
                   bool(count_include_pad), divisor_override, dtype_name(dtype)).validate()

    def _where(self) -> str:
        op = {"max": "max_pool2d", "avg": "avg_pool2d", "global_avg": "global_avg_pool2d"}[self.kind]
        if self.kind == "global_avg":
            return f"({op}: input {self.input_shape})"
        return (f"({op}: input {self.input_shape}, kernel_size {(self.kernel_h, self.kernel_w)}, stride "
                f"{(self.stride_h, self.stride_w)}, padding {(self.pad_h, self.pad_w)}"
                + (f", dilation {(self.dilation_h, self.dilation_w)})" if self.kind == "max" else ")"))

    def validate(self) -> "PoolProblem":
        where = self._where()
        check_int32(where, *zip("NCHW", self.input_shape))
        if self.kind == "global_avg":
            # PyTorch's adaptive_avg_pool2d(x, 1) takes any empty dimension: an empty output for
            # N = 0 or C = 0, NaN (the mean of nothing) for H·W = 0.
            if min(self.input_shape) < 0:
                raise ValueError(f"input dimensions must be non-negative, got shape {self.input_shape} {where}")
            return self
        kh, kw = self.kernel_h, self.kernel_w
        if kh <= 0 or kw <= 0:
            raise ValueError(f"kernel_size must be positive, got {(kh, kw)} {where}")
        if self.stride_h <= 0 or self.stride_w <= 0:
            raise ValueError(f"stride must be positive, got {(self.stride_h, self.stride_w)} {where}")
        if self.dilation_h <= 0 or self.dilation_w <= 0:
            raise ValueError(f"dilation must be positive, got {(self.dilation_h, self.dilation_w)} {where}")
        if self.kind == "avg" and (self.dilation_h, self.dilation_w) != (1, 1):
            raise ValueError(f"avg_pool2d has no dilation {where}")
        if self.pad_h < 0 or self.pad_w < 0:
            raise ValueError(f"padding must be non-negative, got {(self.pad_h, self.pad_w)} {where}")
        # PyTorch (pool2d_shape_check and max_pool2d): pad <= kernel_size // 2 per dimension,
        # whatever the dilation.
        if self.pad_h > kh // 2 or self.pad_w > kw // 2:
            raise ValueError(f"padding must be at most half the kernel size (pad <= kernel_size // 2, "
                             f"as in PyTorch, whatever the dilation), got padding {(self.pad_h, self.pad_w)} "
                             f"for kernel_size {(kh, kw)} {where}")
        if self.divisor_override is not None and self.divisor_override == 0:
            raise ValueError(f"divisor_override must be nonzero (PyTorch: 'divisor must be not zero') {where}")
        if self.N < 0 or min(self.C, self.H, self.W) <= 0:
            raise ValueError(f"input must have non-zero C, H and W (N may be 0, as in PyTorch), got shape "
                             f"{self.input_shape} {where}")
        if self.P < 1 or self.Q < 1:
            raise ValueError(f"output size would be {self.P}x{self.Q} (<= 0): the input {self.H}x{self.W} is too "
                             f"small for the window {where}")
        return self

    @property
    def P(self) -> int:
        if self.kind == "global_avg":
            return 1
        return pool_out_size(self.H, self.kernel_h, self.stride_h, self.pad_h, self.dilation_h, self.ceil_mode)

    @property
    def Q(self) -> int:
        if self.kind == "global_avg":
            return 1
        return pool_out_size(self.W, self.kernel_w, self.stride_w, self.pad_w, self.dilation_w, self.ceil_mode)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.P, self.Q)

    @property
    def window(self) -> int:
        return self.kernel_h * self.kernel_w

    def describe(self) -> str:
        if self.kind == "global_avg":
            return f"global_avg N{self.N} C{self.C} H{self.H} W{self.W}"
        s = (f"{self.kind} N{self.N} C{self.C} H{self.H} W{self.W} k{self.kernel_h}x{self.kernel_w}"
             f" stride{self.stride_h}x{self.stride_w} pad{self.pad_h}x{self.pad_w}")
        if (self.dilation_h, self.dilation_w) != (1, 1):
            s += f" dil{self.dilation_h}x{self.dilation_w}"
        if self.ceil_mode:
            s += " ceil"
        if self.kind == "avg" and not self.count_include_pad:
            s += " excl_pad"
        if self.divisor_override is not None:
            s += f" div{self.divisor_override}"
        return s


# =========================================================================== matrix product
@dataclass(frozen=True)
class GemmProblem:
    """``C (M×N) = A (M×K) · B (K×N)``, ``batch`` times; ``a_batched``/``b_batched`` say which
    operand has a batch axis (the other is broadcast), as ``cuconv.gemm`` takes them."""
    M: int
    N: int
    K: int
    batch: int = 1
    a_batched: bool = False
    b_batched: bool = False
    dtype: str = "float32"

    @classmethod
    def from_shapes(cls, a_shape, b_shape, dtype="float32") -> "GemmProblem":
        a_shape, b_shape = tuple(map(int, a_shape)), tuple(map(int, b_shape))
        if len(a_shape) not in (2, 3) or len(b_shape) not in (2, 3):
            raise ValueError(f"a and b must be 2-D (M, K), (K, N) or 3-D batched, got shapes "
                             f"{a_shape} and {b_shape}")
        M, K = a_shape[-2:]
        K2, N = b_shape[-2:]
        if K != K2:
            raise ValueError(f"a's last dimension must equal b's second-to-last (the K of a @ b), "
                             f"got a {a_shape} and b {b_shape}")
        if len(a_shape) == 3 and len(b_shape) == 3 and a_shape[0] != b_shape[0]:
            raise ValueError(f"a and b must have the same batch size, got a {a_shape} and b {b_shape}")
        batch = a_shape[0] if len(a_shape) == 3 else (b_shape[0] if len(b_shape) == 3 else 1)
        return cls(M, N, K, batch, len(a_shape) == 3, len(b_shape) == 3, dtype_name(dtype))

    @property
    def batched(self) -> bool:
        return self.a_batched or self.b_batched

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, self.M, self.N) if self.batched else (self.M, self.N)

    def flops(self) -> int:
        return 2 * self.batch * self.M * self.N * self.K

    def describe(self) -> str:
        return f"M{self.M} N{self.N} K{self.K}" + (f" batch{self.batch}" if self.batched else "")
