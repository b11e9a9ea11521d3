"""Bench cases: one problem on one op, with its theory, inputs, reference and baseline.

A case knows how to

* describe itself (``args``) and its work in theory (``work(algo)``, from cuconv.cost);
* make its inputs (``input_shapes``) and call the op on the current backend (``call``);
* compute the float64 reference, for all images or a subset (``reference``);
* shrink itself for the CPU emulator (``reduced``), keeping what makes the problem
  awkward (kernel size, stride, padding, dilation, groups; sizes no tile divides);
* run its baseline (cuBLAS through ``cupy.matmul``, cuDNN through PyTorch).

The runner (runner.py) does the measuring; cases only say what to run.
"""
from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, replace

import numpy as np

from .. import cost
from ..backend import current_backend
from ..ops import conv2d as _conv2d
from ..ops import conv_transpose as _conv_transpose  # noqa: F401
from ..ops import depthwise as _depthwise
from ..ops import gemm as _gemm
from ..ops import im2col as _im2col
from ..ops import pool as _pool
from ..ops import separable
from ..ops.separable import fused_reason
from ..problem import Conv2dProblem, pair, conv_out_size, numpy_dtype
from ..reference import conv2d_ref, gemm_ref, im2col_ref
from ..reference import pool as _pool_ref
from ..testing import rel_error, to_numpy, tolerance
from .rows import Work

# Reductions for the emulator. (groups cap, channels-per-group cap), tried in turn: the first
# the algorithm accepts wins; a cap on output rows/columns; images.
REDUCED_CAPS = ((4, 8), (8, 8), (16, 16), (32, 32), (64, 64))
REDUCED_OUTPUT_SIZE = 7          # odd: no tile of 2, 4, 8, 16 divides it
REDUCED_IMAGES = 2               # two, so that batch strides are exercised
REDUCED_GEMM = (67, 45, 53)      # M, N, K: no tile divides them
REDUCED_MAX_FLOPS = 5e7          # the emulator runs ~1e7-1e8 FLOP/s: never hand it a full-size layer
REDUCTION_RULE = (f"verified on the CPU emulator at a reduced size: batch <= {REDUCED_IMAGES}, output <= "
                  f"{REDUCED_OUTPUT_SIZE}x{REDUCED_OUTPUT_SIZE}, groups <= 4 and channels per group <= 8 "
                  f"(raised step by step to 64 when the algorithm needs more); kernel size, stride, "
                  f"padding and dilation kept; GEMMs at most M,N,K = {REDUCED_GEMM}")


_OPS = {"conv2d": _conv2d.conv2d, "plan_conv2d": _conv2d.plan_conv2d, "gemm": _gemm.gemm,
        "plan_gemm": _gemm.plan_gemm, "im2col": _im2col.im2col, "plan_im2col": _im2col.plan_im2col,
        "max_pool2d": _pool.max_pool2d, "avg_pool2d": _pool.avg_pool2d,
        "global_avg_pool2d": _pool.global_avg_pool2d, "plan_max_pool2d": _pool.plan_max_pool2d,
        "plan_avg_pool2d": _pool.plan_avg_pool2d, "plan_global_avg_pool2d": _pool.plan_global_avg_pool2d,
        "separable_conv2d": separable.separable_conv2d, "plan_separable_conv2d": separable.plan_separable_conv2d}


def _op(name: str):
    """A cuconv op (or its plan function) by name."""
    return _OPS[name]


def torch_cuda():
    """PyTorch when it is importable with CUDA, else None (the cuDNN baseline is optional)."""
    try:
        torch = importlib.import_module("torch")
    except Exception:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:
        return None


@dataclass(frozen=True)
class Case:
    """Fields every case has, and the defaults. A case type adds its problem and defines
    ``dtype``, ``args()``, ``work(algo)``, ``input_shapes()``, ``output_shape()``,
    ``call(inputs, algo, out)`` and ``reference(inputs, subset)`` (LayerCase, which never
    runs, only the first three)."""
    suite: str
    name: str
    layer: str = ""
    count: int = 1
    algo: str = "auto"

    op = "?"
    dtypes = ("float32",)       # what the op takes (conv2d: each algorithm says)
    grad_pass = "forward"       # the part of a training step: forward, data (dx) or weight (dW, db)

    def resolve_algo(self) -> tuple[str | None, str | None]:
        """(algorithm that will run, None) or (None, "<status>: why it cannot run")."""
        return self.op, None

    def _dtype_reason(self, op_name: str) -> str | None:
        """Why the public op ``op_name`` cannot run this case's dtype, or None."""
        if self.dtype not in self.dtypes:
            return f"cannot-run: {op_name} takes {' or '.join(self.dtypes)}, not {self.dtype}"
        return None

    def workspace_op_bytes(self, algo: str | None) -> int | None:
        return 0

    def uses_tensor_cores(self, algo: str | None, labels) -> bool:
        """Tensor-core kernels are named so (``*_tc``, ``*_tc_*``, ``tf32``, ``mma``): the roofline
        then takes the tensor-core peak of the dtype."""
        words = set(re.split(r"[^a-z0-9]+", " ".join([algo or "", *labels]).lower()))
        return bool(words & {"tc", "tf32", "mma", "wmma", "tensor"})

    def tolerance(self, algo: str) -> float:
        return tolerance(self.dtype, algo)

    def reduction_length(self) -> int:
        """Products summed per output element (the length the fp32 rounding error grows with)."""
        return 0

    def verify_subsets(self, max_reference_flops: float) -> tuple[object, str]:
        """(index into the output's first axis or None for all, description) for the GPU check."""
        return None, "gpu, full size, the whole output"

    def reduced(self, algo: str) -> "Case | None":
        """A smaller copy for the emulator (None when the algorithm accepts no smaller size)."""
        return self

    def baseline(self, inputs: dict):
        """(name, fn) timing a library's call on the same device inputs, or None."""
        return None

    def plan(self, inputs: dict, algo: str, out=None):
        """(plan, env): the plan the op call runs on the current backend, and its arrays bound
        by role (``out`` allocated when None), ready for ``plan.execute``."""
        plan = self._plan(inputs, algo, out)
        return plan, plan.bind(current_backend(), *self._plan_arrays(inputs), out=out)

    def _plan_arrays(self, inputs: dict) -> tuple:
        return tuple(inputs[k] for k in self.input_shapes())

    def prepare_inputs(self, inputs: dict, asarray, dry: bool = False) -> dict:
        """The op's inputs from the random ones drawn for ``input_shapes``: a case whose op
        takes a derived input (max pooling's indices, from x) adds it here. ``asarray`` puts a
        NumPy array where the inputs live; ``dry``: uninitialised arrays for the record run,
        which executes nothing."""
        return inputs

    def verify_error(self, out, inputs: dict, subset=None) -> float:
        """The relative error of ``out`` (the output's ``subset`` of the first axis, or all)
        against the float64 reference."""
        return rel_error(out if subset is None else out[subset], self.reference(inputs, subset))

    def notes(self, algo: str) -> list[str]:
        """What a reader of this case's row must know (added to its note)."""
        return []

    def problem_size(self) -> int:
        """Elements of inputs plus output (used to decide whether a dry run is cheap)."""
        return sum(math.prod(s) for s in self.input_shapes().values()) + math.prod(self.output_shape())


# =========================================================================== convolution
def conv_padding_arg(p: Conv2dProblem):
    """The ``padding=`` argument of conv2d that builds exactly ``p``, or None if none does."""
    if p.pad_h_end is None and p.pad_w_end is None:
        return (p.pad_h, p.pad_w)
    try:
        same = Conv2dProblem.from_shapes(p.input_shape, p.weight_shape, (p.stride_h, p.stride_w), "same",
                                         (p.dilation_h, p.dilation_w), p.groups, p.dtype)
    except ValueError:
        return None
    return "same" if same == p else None


def image_subset(images: int, flops: float, max_reference_flops: float):
    """Which images the float64 reference checks on the GPU: all when it is cheap enough, else
    the first and the last (batch-stride bugs show there), else the first."""
    if flops <= max_reference_flops:
        return None, f"gpu, full size, all {images} images"
    if images > 1 and 2 * flops / images <= max_reference_flops:
        return [0, images - 1], f"gpu, full size, images 0 and {images - 1} of {images}"
    return [0], f"gpu, full size, image 0 of {images}"


def winograd_m(algo: str) -> int | None:
    for m in (2, 4):
        if f"f{m}x{m}_3x3" in algo:
            return m
    return None


@dataclass(frozen=True)
class ConvCase(Case):
    problem: Conv2dProblem = None
    op = "conv2d"

    @property
    def dtype(self) -> str:
        return self.problem.dtype

    def args(self) -> str:
        p = self.problem
        s = (f"N={p.N} C={p.C} H={p.H} W={p.W} K={p.K} R={p.R} S={p.S} stride={p.stride_h}x{p.stride_w} "
             f"pad={p.pad_h}x{p.pad_w}")
        if p.pad_h_end is not None or p.pad_w_end is not None:
            s += f" pad_end={p.pad_bottom}x{p.pad_right}"
        return s + f" dilation={p.dilation_h}x{p.dilation_w} groups={p.groups} (P={p.P} Q={p.Q})"

    def resolve_algo(self):
        if conv_padding_arg(self.problem) is None:
            return None, "cannot-run: asymmetric padding other than 'same' is not a conv2d argument"
        if self.algo == "auto":
            try:
                return _conv2d.choose_algorithm(self.problem), None
            except ValueError as exc:
                return None, f"cannot-run: {exc}"
        if self.algo not in _conv2d.ALGORITHMS:
            return None, (f"not-built: algorithm {self.algo!r} is not registered "
                          f"(registered: {', '.join(_conv2d.ALGORITHMS)})")
        info = next(i for i in _conv2d.algorithms(self.problem) if i.name == self.algo)
        if not info.ok:
            return None, f"cannot-run: {info.reason}"
        return self.algo, None

    def work(self, algo):
        p = self.problem
        algo_flops, workspace = p.flops(), 0
        m = winograd_m(algo or "")
        if m and cost.winograd_unsupported_reason(p) is None:
            algo_flops = cost.winograd_cost(p, m).flops
            workspace = cost.winograd_filter_bytes(p, m)
            if "fused" not in algo:  # the fused kernel keeps V and M in shared memory
                workspace += cost.winograd_workspace_bytes(p, m)
        elif algo in cost.FFT_ALGORITHMS and cost.fft_unsupported_reason(p) is None:
            fft = cost.fft_cost(p, algo)      # transforms (FFTW's 5·n·log2 n convention) + complex MACs
            algo_flops, workspace = fft.flops, fft.workspace_bytes
        elif algo == "im2col_gemm":
            workspace = 0 if p.is_pointwise else p.im2col_bytes()
        return Work(p.flops(), algo_flops, p.min_bytes(), workspace, p.output_bytes())

    def reduction_length(self):
        return self.problem.C_per_group * self.problem.R * self.problem.S

    def notes(self, algo):
        if algo == "depthwise" and self.problem.is_depthwise:
            return [_depthwise.traffic_note(self.problem)]
        return []

    def workspace_op_bytes(self, algo):
        if not algo:
            return None
        info = next(i for i in _conv2d.algorithms(self.problem) if i.name == algo)
        return info.workspace_bytes

    def input_shapes(self):
        return {"x": self.problem.input_shape, "w": self.problem.weight_shape}

    def output_shape(self):
        return self.problem.output_shape

    def _conv_args(self):
        p = self.problem
        return dict(stride=(p.stride_h, p.stride_w), padding=conv_padding_arg(p),
                    dilation=(p.dilation_h, p.dilation_w), groups=p.groups)

    def call(self, inputs, algo, out=None):
        return _op("conv2d")(inputs["x"], inputs["w"], None, algo=algo, out=out, **self._conv_args())

    def _plan(self, inputs, algo, out):
        return _op("plan_conv2d")(inputs["x"], inputs["w"], None, algo=algo, out=out, **self._conv_args())

    def reference(self, inputs, subset=None):
        x = inputs["x"] if subset is None else inputs["x"][subset]
        return conv2d_ref(to_numpy(x), to_numpy(inputs["w"]), None, **self._conv_args())

    def verify_subsets(self, max_reference_flops):
        return image_subset(self.problem.N, self.problem.flops(), max_reference_flops)

    def reduced(self, algo):
        for p in reduced_conv_problems(self.problem):
            if p.flops() <= REDUCED_MAX_FLOPS and any(
                    i.name == algo and i.ok for i in _conv2d.algorithms(p)):
                return replace(self, problem=p)
        return None

    def baseline(self, inputs):
        torch = torch_cuda()
        if torch is None:
            return None
        x, w = torch.from_dlpack(inputs["x"]), torch.from_dlpack(inputs["w"])
        kw = self._conv_args()
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False   # fp32 against fp32
        return "cuDNN (torch.nn.functional.conv2d)", lambda: torch.nn.functional.conv2d(x, w, None, **kw)


def _reduced_extent(size, kernel, stride, pad_begin, pad_end, dilation, out_cap) -> int:
    """An input extent whose output is min(current output, out_cap), keeping one spare row
    when the stride leaves one (so the floor in the output-size formula is exercised)."""
    out = min(conv_out_size(size, kernel, stride, pad_begin, pad_end, dilation), out_cap)
    need = (out - 1) * stride + dilation * (kernel - 1) + 1 - pad_begin - pad_end
    need = max(need, 1)
    spare = need + stride - 1
    if spare <= size and conv_out_size(spare, kernel, stride, pad_begin, pad_end, dilation) == out:
        need = spare
    return min(size, need)


def reduced_conv_problems(p: Conv2dProblem):
    """Smaller versions of ``p`` for the emulator, most aggressive first, then ``p`` itself."""
    H = _reduced_extent(p.H, p.R, p.stride_h, p.pad_h, p.pad_bottom, p.dilation_h, REDUCED_OUTPUT_SIZE)
    W = _reduced_extent(p.W, p.S, p.stride_w, p.pad_w, p.pad_right, p.dilation_w, REDUCED_OUTPUT_SIZE)
    N = min(p.N, REDUCED_IMAGES)
    seen = []
    for group_cap, channel_cap in REDUCED_CAPS:
        groups = min(p.groups, group_cap)
        if p.is_depthwise:   # one input channel per group, K/C filters each
            C, K = groups, groups * min(p.K_per_group, channel_cap)
        else:
            C, K = groups * min(p.C_per_group, channel_cap), groups * min(p.K_per_group, channel_cap)
        q = p.with_(N=N, H=H, W=W, C=C, K=K, groups=groups).validate()
        if q not in seen:
            seen.append(q)
            yield q
    if p not in seen:
        yield p


# =========================================================================== GEMM
@dataclass(frozen=True)
class GemmCase(Case):
    M: int = 0
    N: int = 0
    K: int = 0
    gemm_dtype: str = "float32"
    op = "gemm"
    dtypes = ("float32", "float64")

    @property
    def dtype(self):
        return self.gemm_dtype

    def args(self):
        return f"M={self.M} N={self.N} K={self.K} (a MxK @ b KxN, row-major)"

    def resolve_algo(self):
        reason = self._dtype_reason("gemm")
        return (None, reason) if reason else ("gemm", None)

    def work(self, algo):
        item = numpy_dtype(self.dtype).itemsize
        flops = 2 * self.M * self.N * self.K
        out = self.M * self.N * item
        return Work(flops, flops, (self.M * self.K + self.K * self.N) * item + out, 0, out)

    def input_shapes(self):
        return {"a": (self.M, self.K), "b": (self.K, self.N)}

    def output_shape(self):
        return (self.M, self.N)

    def call(self, inputs, algo, out=None):
        return _op("gemm")(inputs["a"], inputs["b"], out=out)

    def _plan(self, inputs, algo, out):
        return _op("plan_gemm")(inputs["a"], inputs["b"], out=out)

    def reference(self, inputs, subset=None):
        a = inputs["a"] if subset is None else inputs["a"][subset]
        return gemm_ref(to_numpy(a), to_numpy(inputs["b"]))

    def verify_subsets(self, max_reference_flops):
        flops = 2 * self.M * self.N * self.K
        if flops <= max_reference_flops:
            return None, "gpu, full size, every row"
        rows = max(1, int(max_reference_flops // (2 * self.N * self.K)))
        if rows >= self.M:
            return None, "gpu, full size, every row"
        idx = sorted(set(np.linspace(0, self.M - 1, rows).astype(int).tolist()))
        return idx, f"gpu, full size, {len(idx)} of {self.M} rows (first, last and evenly spaced)"

    def reduction_length(self):
        return self.K

    def reduced(self, algo):
        m, n, k = REDUCED_GEMM
        return replace(self, M=min(self.M, m), N=min(self.N, n), K=min(self.K, k))

    def baseline(self, inputs):
        import cupy  # noqa: PLC0415
        a, b = inputs["a"], inputs["b"]
        c = cupy.empty((self.M, self.N), dtype=a.dtype)
        return "cuBLAS (cupy.matmul)", lambda: cupy.matmul(a, b, out=c)


# =========================================================================== im2col
@dataclass(frozen=True)
class Im2colCase(Case):
    """The §8.3 column matrix alone: its output is the k²-times-the-input buffer."""
    problem: Conv2dProblem = None
    op = "im2col"
    dtypes = ("float32", "float64")

    @property
    def dtype(self):
        return self.problem.dtype

    def args(self):
        return ConvCase.args(self)

    def resolve_algo(self):
        reason = self._dtype_reason("im2col")
        if reason:
            return None, reason
        if conv_padding_arg(self.problem) is None:
            return None, "cannot-run: asymmetric padding other than 'same'"
        return "im2col", None

    def work(self, algo):
        p = self.problem
        cols = p.im2col_bytes()
        return Work(0, 0, p.input_bytes() + cols, 0, cols)

    def input_shapes(self):
        return {"x": self.problem.input_shape}

    def output_shape(self):
        p = self.problem
        return (p.N, p.C * p.R * p.S, p.P * p.Q)

    def _args(self):
        p = self.problem
        return dict(kernel_size=(p.R, p.S), stride=(p.stride_h, p.stride_w), padding=conv_padding_arg(p),
                    dilation=(p.dilation_h, p.dilation_w))

    def call(self, inputs, algo, out=None):
        return _op("im2col")(inputs["x"], out=out, **self._args())

    def _plan(self, inputs, algo, out):
        return _op("plan_im2col")(inputs["x"], **self._args())

    def reference(self, inputs, subset=None):
        x = inputs["x"] if subset is None else inputs["x"][subset]
        return im2col_ref(to_numpy(x), **self._args())

    def verify_subsets(self, max_reference_flops):
        return None, f"gpu, full size, all {self.problem.N} images"

    def reduced(self, algo):
        return replace(self, problem=next(reduced_conv_problems(self.problem)))


# =========================================================================== pooling
@dataclass(frozen=True)
class PoolCase(Case):
    """max_pool2d, avg_pool2d or global_avg_pool2d (cuconv/ops/pool.py) on an input of N, C, H, W
    = ``x_shape`` laid out in ``layout`` ("NHWC": the NHWC kernels, the input N,H,W,C). Pooling is
    memory-bound: the row's args state the compulsory bytes per output (input read once, output
    written once; the max gradient's int64 indices included), the figure its bandwidth ceiling
    divides into."""
    kind: str = "max"                 # "max" | "avg" | "global_avg"
    x_shape: tuple = ()
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True
    pool_dtype: str = "float32"
    layout: str = "NCHW"
    dtypes = ("float32", "float64", "float16", "bfloat16")

    @property
    def op(self):
        return f"{self.kind}_pool2d"

    @property
    def dtype(self):
        return self.pool_dtype

    def args(self):
        n, c, h, w = self.x_shape
        s = f"N={n} C={c} H={h} W={w}" + (f" layout={self.layout}" if self.layout != "NCHW" else "")
        outputs = math.prod(self.output_shape())
        s += f" bytes/output={self.work(self.algo).min_bytes / outputs:.6g}" if outputs else ""
        if self.kind == "global_avg":
            return s
        s += (f" kernel={self.kernel[0]}x{self.kernel[1]} stride={self.stride[0]}x{self.stride[1]} "
              f"pad={self.padding[0]}x{self.padding[1]}")
        if self.kind == "max":
            s += f" dilation={self.dilation[0]}x{self.dilation[1]}"
        else:
            s += f" count_include_pad={self.count_include_pad}"
        return s + (" ceil_mode" if self.ceil_mode else "")

    def resolve_algo(self):
        reason = self._dtype_reason(self.op)
        return (None, reason) if reason else ("pool", None)

    def _layer(self):
        if self.kind == "max":
            return cost.MaxPool2d(self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode)
        if self.kind == "avg":
            return cost.AvgPool2d(self.kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad)
        return cost.GlobalAvgPool2d()

    def work(self, algo):
        c = self._layer().cost(self.x_shape, self.dtype)
        inp = math.prod(self.x_shape) * c.itemsize
        return Work(c.flops, c.flops, inp + c.output_bytes, 0, c.output_bytes)

    def input_shapes(self):
        return {"x": self._laid_out(self.x_shape)}

    def _laid_out(self, shape):
        n, c, h, w = shape
        return (n, h, w, c) if self.layout == "NHWC" else tuple(shape)

    def _nchw(self, a):
        """A result or input of this case's layout as an N, C, H, W NumPy array."""
        a = to_numpy(a)
        return a.transpose(0, 3, 1, 2) if self.layout == "NHWC" else a

    def output_shape(self):
        return self._laid_out(self._layer().cost(self.x_shape, self.dtype).output_shape)

    def _kwargs(self):
        if self.kind == "max":
            return dict(kernel_size=self.kernel, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, ceil_mode=self.ceil_mode)
        if self.kind == "avg":
            return dict(kernel_size=self.kernel, stride=self.stride, padding=self.padding,
                        ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)
        return {}

    def call(self, inputs, algo, out=None):
        return _op(self.op)(inputs["x"], out=out, layout=self.layout, **self._kwargs())

    def _plan(self, inputs, algo, out):
        return _op("plan_" + self.op)(inputs["x"], layout=self.layout, **self._kwargs())

    def reference(self, inputs, subset=None):
        x = inputs["x"] if subset is None else inputs["x"][subset]
        y = getattr(_pool_ref, f"{self.op}_ref")(self._nchw(x), **self._kwargs())
        return y.transpose(0, 2, 3, 1) if self.layout == "NHWC" else y

    def verify_subsets(self, max_reference_flops):
        return None, f"gpu, full size, all {self.x_shape[0]} images"

    def reduced(self, algo):
        n, c, h, w = self.x_shape
        channels = 5 if self.layout == "NCHW" else 16      # NHWC: enough channels for the vector kernels
        if self.kind == "global_avg":
            return replace(self, x_shape=(min(n, REDUCED_IMAGES), min(c, channels), min(h, 9), min(w, 9)))
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        hh = _reduced_extent(h, kh, sh, ph, ph, dh, REDUCED_OUTPUT_SIZE)
        ww = _reduced_extent(w, kw, sw, pw, pw, dw, REDUCED_OUTPUT_SIZE)
        # pooling's padding is at most half the window, so these extents give outputs >= 1
        assert conv_out_size(hh, kh, sh, ph, ph, dh) >= 1 and conv_out_size(ww, kw, sw, pw, pw, dw) >= 1
        return replace(self, x_shape=(min(n, REDUCED_IMAGES), min(c, channels), hh, ww))

    def baseline(self, inputs):
        torch = torch_cuda()
        if torch is None:
            return None
        x = torch.from_dlpack(inputs["x"])
        if self.layout == "NHWC":            # PyTorch's channels_last: the same memory, N,C,H,W view
            x = x.permute(0, 3, 1, 2)
        F = torch.nn.functional
        if self.kind == "max":
            return "PyTorch max_pool2d (cuDNN/native)", lambda: F.max_pool2d(x, **self._kwargs())
        if self.kind == "avg":
            return "PyTorch avg_pool2d (cuDNN/native)", lambda: F.avg_pool2d(x, **self._kwargs())
        return "PyTorch adaptive_avg_pool2d(1)", lambda: F.adaptive_avg_pool2d(x, 1)


def pool_case_from_layer(suite: str, name: str, layer_spec, input_shape, dtype: str) -> "PoolCase | None":
    """The PoolCase of a cuconv.cost pooling layer, or None when cuconv has no op for it."""
    x = tuple(input_shape)
    if isinstance(layer_spec, cost.MaxPool2d):
        k = pair(layer_spec.kernel_size, "kernel_size")
        return PoolCase(suite, name, layer=name, algo="pool", kind="max", x_shape=x, kernel=k,
                        stride=pair(layer_spec.stride if layer_spec.stride is not None else k, "stride"),
                        padding=pair(layer_spec.padding, "padding"),
                        dilation=pair(layer_spec.dilation, "dilation"), ceil_mode=layer_spec.ceil_mode,
                        pool_dtype=dtype)
    if isinstance(layer_spec, cost.AvgPool2d):
        k = pair(layer_spec.kernel_size, "kernel_size")
        return PoolCase(suite, name, layer=name, algo="pool", kind="avg", x_shape=x, kernel=k,
                        stride=pair(layer_spec.stride if layer_spec.stride is not None else k, "stride"),
                        padding=pair(layer_spec.padding, "padding"), ceil_mode=layer_spec.ceil_mode,
                        count_include_pad=layer_spec.count_include_pad, pool_dtype=dtype)
    if isinstance(layer_spec, cost.AdaptiveAvgPool2d) and layer_spec.is_global:
        return PoolCase(suite, name, layer=name, algo="pool", kind="global_avg", x_shape=x, pool_dtype=dtype)
    return None


# =========================================================================== separable
@dataclass(frozen=True)
class SeparableCase(Case):
    """§9.5's block in one op: depthwise ``dw`` then a 1x1 to ``K`` channels (ops/separable.py).
    ``algo``: "auto", "fused" (the intermediate stays in shared memory) or "unfused"."""
    dw: Conv2dProblem = None
    K: int = 0
    op = "separable_conv2d"

    @property
    def dtype(self):
        return self.dw.dtype

    def args(self):
        d = self.dw
        return (f"N={d.N} C={d.C} H={d.H} W={d.W} depthwise {d.R}x{d.S} x{d.K // d.C} stride={d.stride_h}x"
                f"{d.stride_w} pad={d.pad_h}x{d.pad_w} dilation={d.dilation_h}x{d.dilation_w} then 1x1 "
                f"{d.K}->{self.K} (P={d.P} Q={d.Q})")

    def _pointwise(self) -> Conv2dProblem:
        d = self.dw
        return Conv2dProblem(d.N, d.K, d.P, d.Q, self.K, 1, 1, dtype=d.dtype)

    def resolve_algo(self):
        reason = self._dtype_reason("separable_conv2d")
        if reason:
            return None, reason
        reason = fused_reason(self.dw, self.K)
        if self.algo in ("auto", "fused"):
            if reason is None:
                return "fused", None
            if self.algo == "fused":
                return None, f"cannot-run: {reason}"
            return "unfused", None
        if self.algo == "unfused":
            return "unfused", None
        return None, f"cannot-run: separable_conv2d's algo is auto, fused or unfused, not {self.algo!r}"

    def tolerance(self, algo):
        return tolerance(self.dtype, "separable")

    def reduction_length(self):
        return max(self.dw.R * self.dw.S, self.dw.K)

    def work(self, algo):
        d, pw = self.dw, self._pointwise()
        flops = d.flops() + pw.flops()
        algo_flops = flops
        mid = pw.input_bytes()
        workspace = 0 if algo == "fused" else mid
        if algo == "fused":   # each TILE_K-channel slice of K recomputes the depthwise part
            algo_flops = d.flops() * math.ceil(self.K / separable.TILE_K) + pw.flops()
        out = pw.output_bytes()
        return Work(flops, algo_flops, d.input_bytes() + d.weight_bytes() + pw.weight_bytes() + out,
                    workspace, out)

    def workspace_op_bytes(self, algo):
        return 0 if algo == "fused" else self._pointwise().input_bytes()

    def input_shapes(self):
        return {"x": self.dw.input_shape, "wd": self.dw.weight_shape, "wp": (self.K, self.dw.K, 1, 1)}

    def output_shape(self):
        return (self.dw.N, self.K, self.dw.P, self.dw.Q)

    def _dw_args(self):
        d = self.dw
        return dict(stride=(d.stride_h, d.stride_w), padding=(d.pad_h, d.pad_w), dilation=(d.dilation_h, d.dilation_w))

    def call(self, inputs, algo, out=None):
        return _op("separable_conv2d")(inputs["x"], inputs["wd"], inputs["wp"], fused=(algo == "fused"),
                                       out=out, **self._dw_args())

    def _plan(self, inputs, algo, out):
        return _op("plan_separable_conv2d")(inputs["x"], inputs["wd"], inputs["wp"], fused=(algo == "fused"),
                                            **self._dw_args())

    def reference(self, inputs, subset=None):
        x = inputs["x"] if subset is None else inputs["x"][subset]
        mid = conv2d_ref(to_numpy(x), to_numpy(inputs["wd"]), None, groups=self.dw.C, **self._dw_args())
        return conv2d_ref(mid, to_numpy(inputs["wp"]))

    def verify_subsets(self, max_reference_flops):
        return image_subset(self.dw.N, self.dw.flops() + self._pointwise().flops(), max_reference_flops)

    def reduced(self, algo):
        q = next(reduced_conv_problems(self.dw))
        return replace(self, dw=q, K=min(self.K, 8))

    def baseline(self, inputs):
        torch = torch_cuda()
        if torch is None:
            return None
        x, wd, wp = (torch.from_dlpack(inputs[k]) for k in ("x", "wd", "wp"))
        F, kw, c = torch.nn.functional, self._dw_args(), self.dw.C
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        return "cuDNN depthwise + 1x1 (torch)", lambda: F.conv2d(F.conv2d(x, wd, None, groups=c, **kw), wp)


# =========================================================================== no kernel
@dataclass(frozen=True)
class LayerCase(Case):
    """A model layer cuconv has no kernel for (batch norm, activation, add, flatten, ...):
    its theoretical row only, from the cost model."""
    cost: object = None        # cuconv.cost.LayerCost
    reason: str = "no-kernel"  # "<status>: <why>", status no-kernel or not-built

    @property
    def op(self):
        return self.cost.kind

    @property
    def dtype(self):
        return self.cost.dtype

    def args(self):
        shapes = " + ".join("x".join(map(str, s)) for s in self.cost.input_shapes)
        return f"{shapes} -> {'x'.join(map(str, self.cost.output_shape))}"

    def resolve_algo(self):
        return None, self.reason

    def work(self, algo):
        c = self.cost
        item = c.itemsize
        inputs = 0 if c.is_view else sum(math.prod(s) for s in c.input_shapes) * item
        out = 0 if c.is_view else c.output_bytes
        return Work(c.flops, c.flops, inputs + out, 0, out)


