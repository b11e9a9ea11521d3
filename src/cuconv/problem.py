"""Conv2dProblem: the one definition of a 2-D convolution in cuconv.

Kernels, ops, the cost model and the bench harness all describe a convolution
with this class, so a layer means the same thing everywhere.

Notation (the textbook's §9.1 and cuDNN's): input N×C×H×W, filter K×(C/groups)×R×S,
output N×K×P×Q with

    P = floor((H + pad_top + pad_bottom - dilation_h·(R-1) - 1) / stride_h) + 1
    Q = floor((W + pad_left + pad_right - dilation_w·(S-1) - 1) / stride_w) + 1
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "tf32": 4,
               "int8": 1, "int32": 4}


def dtype_name(dtype) -> str:
    """Canonical dtype name ('float32', 'float16', 'bfloat16', ...) for a dtype-like."""
    if isinstance(dtype, str):
        aliases = {"fp32": "float32", "f32": "float32", "fp16": "float16", "f16": "float16",
                   "half": "float16", "bf16": "bfloat16", "fp64": "float64", "double": "float64"}
        name = aliases.get(dtype, dtype)
        if name not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPE_BYTES)}")
        return name
    name = np.dtype(dtype).name
    if name not in DTYPE_BYTES:
        raise ValueError(f"unsupported dtype {name!r}; expected one of {sorted(DTYPE_BYTES)}")
    return name


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
        a, b = value
    else:
        a = b = value
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{what} must be an int or a pair of ints, got {value!r}")
    return int(a), int(b)


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

    # ----------------------------------------------------------- construction
    @classmethod
    def from_shapes(cls, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1,
                    dtype="float32") -> "Conv2dProblem":
        """Build from NCHW input and KCRS weight shapes with torch.nn.functional's arguments.

        ``padding`` is an int, a pair, ``"valid"`` or ``"same"`` (stride 1 only, as in
        PyTorch; an even effective kernel puts the extra row/column at the bottom/right).
        Raises ValueError naming the shapes and the rule broken.
        """
        x_shape, w_shape = tuple(int(d) for d in x_shape), tuple(int(d) for d in w_shape)
        if len(x_shape) != 4:
            raise ValueError(f"input must be 4-D NCHW, got shape {x_shape}")
        if len(w_shape) != 4:
            raise ValueError(f"weight must be 4-D KCRS, got shape {w_shape}")
        N, C, H, W = x_shape
        K, Cg, R, S = w_shape
        sh, sw = _pair(stride, "stride")
        dh, dw = _pair(dilation, "dilation")
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
            raise TypeError(f"groups must be an int, got {groups!r}")
        groups = int(groups)
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
            ph, pw = _pair(padding, "padding")
        p = cls(N, C, H, W, K, R, S, sh, sw, ph, pw, dh, dw, groups, dtype_name(dtype),
                pad_end_h if pad_end_h != ph else None, pad_end_w if pad_end_w != pw else None)
        p.validate(x_shape=x_shape, w_shape=w_shape)
        return p

    def validate(self, x_shape=None, w_shape=None) -> "Conv2dProblem":
        """Raise ValueError naming the shapes and the rule if this is not a valid convolution."""
        xs = x_shape or (self.N, self.C, self.H, self.W)
        ws = w_shape or (self.K, self.C // max(self.groups, 1), self.R, self.S)
        where = f"(input {tuple(xs)}, weight {tuple(ws)})"
        for name in ("N", "C", "H", "W", "K", "R", "S"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)} {where}")
        if self.stride_h <= 0 or self.stride_w <= 0:
            raise ValueError(f"stride must be positive, got {(self.stride_h, self.stride_w)} {where}")
        if self.dilation_h <= 0 or self.dilation_w <= 0:
            raise ValueError(f"dilation must be positive, got {(self.dilation_h, self.dilation_w)} {where}")
        if min(self.pad_h, self.pad_w, self.pad_bottom, self.pad_right) < 0:
            raise ValueError(f"padding must be non-negative, got {(self.pad_h, self.pad_w)} {where}")
        if self.groups <= 0:
            raise ValueError(f"groups must be positive, got {self.groups} {where}")
        if self.C % self.groups:
            raise ValueError(f"groups={self.groups} must divide the input channels C={self.C} {where}")
        if self.K % self.groups:
            raise ValueError(f"groups={self.groups} must divide the output channels K={self.K} {where}")
        if w_shape is not None and w_shape[1] * self.groups != self.C:
            raise ValueError(
                f"weight has {w_shape[1]} input channels per group, so input must have "
                f"{w_shape[1]}*groups={w_shape[1] * self.groups} channels, got C={self.C} {where}")
        P, Q = self.P, self.Q
        if P <= 0 or Q <= 0:
            raise ValueError(
                f"output size would be {P}x{Q} (<= 0): the dilated kernel "
                f"{self.dilation_h * (self.R - 1) + 1}x{self.dilation_w * (self.S - 1) + 1} is larger than "
                f"the padded input {self.H + self.pad_h + self.pad_bottom}x{self.W + self.pad_w + self.pad_right} {where}")
        return self

    def with_(self, **changes) -> "Conv2dProblem":
        return replace(self, **changes)

    # ----------------------------------------------------------- shapes
    @property
    def pad_bottom(self) -> int:
        return self.pad_h if self.pad_h_end is None else self.pad_h_end

    @property
    def pad_right(self) -> int:
        return self.pad_w if self.pad_w_end is None else self.pad_w_end

    @property
    def P(self) -> int:
        return conv_out_size(self.H, self.R, self.stride_h, self.pad_h, self.pad_bottom, self.dilation_h)

    @property
    def Q(self) -> int:
        return conv_out_size(self.W, self.S, self.stride_w, self.pad_w, self.pad_right, self.dilation_w)

    @property
    def C_per_group(self) -> int:
        return self.C // self.groups

    @property
    def K_per_group(self) -> int:
        return self.K // self.groups

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

    def workspace_bytes(self, algo: str = "direct") -> int:
        """Workspace an algorithm needs beyond input, weight and output (whole batch).

        The ops may chunk the batch to stay under a limit; this is the unchunked figure.
        """
        if algo == "im2col_gemm":
            return 0 if self.is_pointwise else self.im2col_bytes()
        if algo.startswith("winograd"):
            from .cost import winograd_workspace_bytes  # noqa: PLC0415 (cost imports problem)
            return winograd_workspace_bytes(self, algo)
        return 0
