"""Bench cases for the backward passes (``cuconv.grad``, the textbook's §9.8).

One case per gradient, each on the plan ``cuconv.grad.plan_*`` builds, verified against the
float64 references of ``cuconv.reference`` (written from §9.8), with the cost model's counts:

* ``DgradCase``: dx of a convolution (``conv2d_input``). ``flops`` is the cost model's
  ``backward_data_flops`` (2·MACs, the forward's count); ``algo_flops`` what the kernels
  multiply: ``cost.backward_data_flops(p, "phases")`` for the phase-decomposed kernels,
  ``"exact"`` for ``direct``. A strided row's note gives §9.8's printed formula, which counts
  the zeros inserted into dy (docs/cost_model.md).
* ``WgradCase``: dW, with db fused into the same plan when ``bias`` (``conv2d_backward`` with
  output mask (False, True, True), else ``conv2d_weight``). Its output is one flat buffer, dW
  then db, so that the runner's single poisoned output covers both; the error is the larger of
  the two relative errors.
* ``PoolGradCase``: dx of max (through the forward's indices, derived from a random x),
  average and global average pooling.
* ``LinearGradCase``, ``BiasGradCase``: a fully connected layer's dX and dW as GEMMs and its
  db as ``conv2d_bias``.
* ``LayerGradCase``: the backward of a layer cuconv has no kernel for (batch norm, activation,
  add, flatten): its theoretical row only.

``grad_pass`` says which part of a training step a case is ("forward" on the forward cases,
"data" for dx, "weight" for dW and db): the train totals sum by it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .. import cost
from ..backend import current_backend
from ..dtypes import FLOAT_DTYPES, numpy_dtype
from .. import grad as _grad
from ..ops.conv2d import Shape
from ..problem import Conv2dProblem
from ..reference import (
    avg_pool2d_backward_ref,
    conv2d_input_ref,
    conv2d_weight_ref,
    global_avg_pool2d_backward_ref,
    max_pool2d_backward_ref,
    max_pool2d_ref,
)
from ..testing import rel_error, to_numpy, tolerance
from .cases import (
    REDUCED_MAX_FLOPS,
    Case,
    ConvCase,
    GemmCase,
    LayerCase,
    PoolCase,
    torch_cuda,
    conv_padding_arg,
    image_subset,
    reduced_conv_problems,
)
from .rows import Work

# The functions the cases call, by name (cuconv.grad re-exports them). Tests swap one for a
# broken one to prove a wrong gradient fails verification.
GRAD_OPS = {name: getattr(_grad, name) for name in (
    "conv2d_input", "plan_conv2d_input", "conv2d_weight", "plan_conv2d_weight", "plan_conv2d_backward",
    "conv2d_bias", "plan_conv2d_bias", "max_pool2d", "plan_max_pool2d", "avg_pool2d", "plan_avg_pool2d",
    "global_avg_pool2d", "plan_global_avg_pool2d")}


def _op(name: str):
    return GRAD_OPS[name]


def _spec(shape, dtype) -> Shape:
    """An array's shape and dtype, for planning without allocating (the plan_* functions take it)."""
    return Shape(tuple(shape), numpy_dtype(dtype))


def _ref_padding(p: Conv2dProblem):
    return ((p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right))


def _torch_padding(p: Conv2dProblem):
    """The padding torch.nn.grad takes for ``p`` (symmetric only), or None."""
    if p.pad_bottom != p.pad_h or p.pad_right != p.pad_w:
        return None
    return (p.pad_h, p.pad_w)


class _ConvGrad(Case):
    """What the dgrad and wgrad cases share: the forward problem, its arguments, resolution of
    ``algo`` through the plan the op would build, and the reduction for the emulator."""
    problem: Conv2dProblem = None
    dtypes = FLOAT_DTYPES

    def _cudnn(self, inputs, *roles):
        """(torch, the inputs as torch tensors, torch.nn.grad's keyword arguments) for the cuDNN
        baseline (exact fp32: no tf32), or None without CUDA torch or for asymmetric padding."""
        torch = torch_cuda()
        pad = _torch_padding(self.problem)
        if torch is None or pad is None:
            return None
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        return torch, [torch.from_dlpack(inputs[r]) for r in roles], dict(self._kw(), padding=pad)

    @property
    def dtype(self) -> str:
        return self.problem.dtype

    def args(self) -> str:
        return ConvCase.args(self)

    def _kw(self, p: Conv2dProblem | None = None) -> dict:
        p = p or self.problem
        return dict(stride=(p.stride_h, p.stride_w), padding=conv_padding_arg(p),
                    dilation=(p.dilation_h, p.dilation_w), groups=p.groups)

    def _ref_kw(self) -> dict:
        p = self.problem
        return dict(stride=(p.stride_h, p.stride_w), padding=_ref_padding(p),
                    dilation=(p.dilation_h, p.dilation_w), groups=p.groups)

    def _shape_plan(self, algo: str, p: Conv2dProblem | None = None):
        raise NotImplementedError

    def resolve_algo(self):
        reason = self._dtype_reason(f"cuconv.grad.{self.op}")
        if reason:
            return None, reason
        if conv_padding_arg(self.problem) is None:
            return None, "cannot-run: asymmetric padding other than 'same' is not a conv2d argument"
        try:
            plan = self._shape_plan(self.algo)
        except ValueError as exc:
            return None, f"cannot-run: {exc}"
        return plan.algo, None

    def workspace_op_bytes(self, algo):
        if not algo:
            return None
        try:
            return self._shape_plan(algo).workspace_bytes
        except ValueError:
            return None

    def _workspace(self, algo) -> int:
        return self.workspace_op_bytes(algo) or 0

    def tolerance(self, algo):
        return tolerance(self.dtype, "tc_grad" if self.dtype in ("float16", "bfloat16") else self._tol_key)

    def reduced(self, algo):
        for q in reduced_conv_problems(self.problem):
            if q.flops() > REDUCED_MAX_FLOPS:
                continue
            try:
                self._shape_plan(algo, q)
            except ValueError:
                continue
            return replace(self, problem=q)
        return None

    def notes(self, algo):
        """The full-size plan's description, and the kernels the emulator verifies when the
        reduced problem's plan launches others (a smaller tile, fewer split-K splits)."""
        if not algo:
            return []
        try:
            full = self._shape_plan(algo)
        except ValueError:
            return []
        out = [full.description]
        small = self.reduced(algo)
        if small is not None:
            plan = small._shape_plan(algo)
            if plan.kernels != full.kernels:
                out.append(f"the emulator verified the reduced problem's plan: {plan.description}")
        return out


# =========================================================================== dgrad
@dataclass(frozen=True)
class DgradCase(_ConvGrad):
    """dx of the forward convolution ``problem`` (§9.8 (c)): inputs w and dy, output dx."""
    problem: Conv2dProblem = None
    op = "conv2d_input"
    grad_pass = "data"
    _tol_key = "dgrad"

    def _shape_plan(self, algo, p=None):
        p = p or self.problem
        return _op("plan_conv2d_input")(p.input_shape, _spec(p.weight_shape, p.dtype), _spec(p.output_shape, p.dtype),
                                        algo=algo, **self._kw(p))

    def work(self, algo):
        p = self.problem
        count = "exact" if algo == "direct" else "phases"
        return Work(cost.backward_data_flops(p), cost.backward_data_flops(p, count),
                    p.weight_bytes() + p.output_bytes() + p.input_bytes(), self._workspace(algo), p.input_bytes())

    def reduction_length(self):
        return self.problem.K_per_group * self.problem.R * self.problem.S

    def input_shapes(self):
        return {"w": self.problem.weight_shape, "dy": self.problem.output_shape}

    def output_shape(self):
        return self.problem.input_shape

    def call(self, inputs, algo, out=None):
        return _op("conv2d_input")(self.problem.input_shape, inputs["w"], inputs["dy"], algo=algo, out=out,
                                   **self._kw())

    def plan(self, inputs, algo, out=None):
        plan = _op("plan_conv2d_input")(self.problem.input_shape, inputs["w"], inputs["dy"], algo=algo, out=out,
                                        **self._kw())
        return plan, plan.bind(current_backend(), inputs["w"], inputs["dy"], dx=out)

    def reference(self, inputs, subset=None):
        dy = to_numpy(inputs["dy"])
        if subset is not None:
            dy = dy[subset]
        size = (dy.shape[0], *self.problem.input_shape[1:])
        return conv2d_input_ref(size, to_numpy(inputs["w"]), dy, **self._ref_kw())

    def verify_subsets(self, max_reference_flops):
        return image_subset(self.problem.N, cost.backward_data_flops(self.problem), max_reference_flops)

    def notes(self, algo):
        out = super().notes(algo)
        p = self.problem
        if p.stride_h > 1 or p.stride_w > 1:
            book = cost.backward_data_flops(p, "textbook")
            done = cost.backward_data_flops(p, "exact" if algo == "direct" else "phases")
            out.append(f"§9.8's printed dX formula gives {book:,} FLOPs here, {book / done:.3g}x what the kernels "
                       f"do ({done:,}): it counts the zeros inserted into dy (docs/cost_model.md)")
        return out

    def baseline(self, inputs):
        setup = self._cudnn(inputs, "w", "dy")
        if setup is None:
            return None
        torch, (w, dy), kw = setup
        size = self.problem.input_shape
        return "cuDNN (torch.nn.grad.conv2d_input)", lambda: torch.nn.grad.conv2d_input(size, w, dy, **kw)


# =========================================================================== wgrad
@dataclass(frozen=True)
class WgradCase(_ConvGrad):
    """dW (and db, fused into the same plan, when ``bias``) of the forward ``problem`` (§9.8 (a),
    (b)): inputs x and dy (and w, which the backward plan takes and the wgrad kernels never read),
    output one flat buffer holding dW then db."""
    problem: Conv2dProblem = None
    bias: bool = False
    deterministic: bool = True
    op = "conv2d_weight"
    grad_pass = "weight"
    _tol_key = "wgrad"

    def args(self):
        return super().args() + (" + db (fused)" if self.bias else "") + (
            "" if self.deterministic else " deterministic=False")

    def _sizes(self, p=None) -> tuple[int, int]:
        p = p or self.problem
        return p.K * p.C_per_group * p.R * p.S, (p.K if self.bias else 0)

    def _shape_plan(self, algo, p=None):
        p = p or self.problem
        x, dy = _spec(p.input_shape, p.dtype), _spec(p.output_shape, p.dtype)
        if self.bias:
            return _op("plan_conv2d_backward")(x, _spec(p.weight_shape, p.dtype), dy, output_mask=(False, True, True),
                                               weight_algo=algo, deterministic=self.deterministic, **self._kw(p))
        return _op("plan_conv2d_weight")(x, p.weight_shape, dy, algo=algo, deterministic=self.deterministic,
                                         **self._kw(p))

    def work(self, algo):
        p = self.problem
        nw, nb = self._sizes()
        flops = cost.conv2d_cost(p, self.bias).backward_weight_flops
        out = (nw + nb) * p.itemsize
        return Work(flops, flops, p.input_bytes() + p.output_bytes() + out, self._workspace(algo), out)

    def reduction_length(self):
        return self.problem.N * self.problem.P * self.problem.Q

    def input_shapes(self):
        p = self.problem
        shapes = {"x": p.input_shape, "dy": p.output_shape}
        if self.bias:
            shapes["w"] = p.weight_shape
        return shapes

    def output_shape(self):
        return (sum(self._sizes()),)

    def _views(self, out) -> dict:
        nw, nb = self._sizes()
        views = {"dw": out[:nw].reshape(self.problem.weight_shape)}
        if self.bias:
            views["db"] = out[nw:]
        return views

    def _plan(self, inputs, algo, out=None):
        if self.bias:
            return _op("plan_conv2d_backward")(inputs["x"], inputs["w"], inputs["dy"], output_mask=(False, True, True),
                                               weight_algo=algo, deterministic=self.deterministic, **self._kw())
        return _op("plan_conv2d_weight")(inputs["x"], self.problem.weight_shape, inputs["dy"], algo=algo,
                                         deterministic=self.deterministic, **self._kw())

    def plan(self, inputs, algo, out=None):
        be = current_backend()
        if out is None:
            out = be.empty(self.output_shape(), np.dtype(self.dtype))
        plan = self._plan(inputs, algo)
        arrays = (inputs["x"], inputs["w"], inputs["dy"]) if self.bias else (inputs["x"], inputs["dy"])
        return plan, plan.bind(be, *arrays, **self._views(out))

    def call(self, inputs, algo, out=None):
        """Without bias ``conv2d_weight`` into a view of ``out``; with bias the one plan of
        ``conv2d_backward`` (which has no ``out=``) bound to views of ``out`` and executed —
        what ``conv2d_backward`` runs, into the caller's poisoned buffer."""
        be = current_backend()
        if out is None:
            out = be.empty(self.output_shape(), np.dtype(self.dtype))
        if not self.bias:
            _op("conv2d_weight")(inputs["x"], self.problem.weight_shape, inputs["dy"], algo=algo,
                                 deterministic=self.deterministic, out=self._views(out)["dw"], **self._kw())
            return out
        plan, env = self.plan(inputs, algo, out)
        plan.execute(be, env)
        return out

    def reference(self, inputs, subset=None):
        """dW then db in float64; ``subset``: the output channels k to check (None: all)."""
        p = self.problem
        x, dy = to_numpy(inputs["x"]), to_numpy(inputs["dy"])
        ks = list(range(p.K)) if subset is None else sorted(subset)
        parts = []
        cg, kg = p.C_per_group, p.K_per_group
        kw = dict(self._ref_kw(), groups=1)
        for g in range(p.groups):       # one group's channels at a time: the subset need not be whole groups
            mine = [k for k in ks if k // kg == g]
            if mine:
                parts.append(conv2d_weight_ref(x[:, g * cg:(g + 1) * cg], (len(mine), cg, p.R, p.S), dy[:, mine],
                                               **kw))
        dw = np.concatenate(parts).reshape(-1)
        if not self.bias:
            return dw
        db = dy[:, ks].astype(np.float64).sum(axis=(0, 2, 3))
        return np.concatenate([dw, db])

    def verify_error(self, out, inputs, subset=None):
        """The larger of dW's and db's relative errors (each against its own magnitude)."""
        p = self.problem
        ref = self.reference(inputs, subset)
        views = self._views(out)
        ks = list(range(p.K)) if subset is None else sorted(subset)
        n = len(ks) * p.C_per_group * p.R * p.S
        err = rel_error(views["dw"][ks], ref[:n].reshape(len(ks), *p.weight_shape[1:]))
        if self.bias:
            err = max(err, rel_error(views["db"][ks], ref[n:]))
        return err

    def verify_subsets(self, max_reference_flops):
        p = self.problem
        flops = 2 * p.macs()
        if flops <= max_reference_flops:
            return None, f"gpu, full size, all {p.K} filters"
        rows = max(1, int(max_reference_flops // (flops / p.K)))
        if rows >= p.K:
            return None, f"gpu, full size, all {p.K} filters"
        ks = sorted(set(np.linspace(0, p.K - 1, rows).astype(int).tolist()))
        return ks, f"gpu, full size, {len(ks)} of {p.K} filters (first, last and evenly spaced)"

    def notes(self, algo):
        out = super().notes(algo)
        if self.bias:
            out.append("db fused into the wgrad plan (conv2d_backward, output_mask=(False, True, True))")
        return out

    def baseline(self, inputs):
        setup = self._cudnn(inputs, "x", "dy")
        if setup is None:
            return None
        torch, (x, dy), kw = setup
        size, bias = self.problem.weight_shape, self.bias

        def fn():
            dw = torch.nn.grad.conv2d_weight(x, size, dy, **kw)
            return (dw, dy.sum((0, 2, 3))) if bias else dw
        return "cuDNN (torch.nn.grad.conv2d_weight" + (" + dy.sum)" if bias else ")"), fn


# =========================================================================== pooling
@dataclass(frozen=True)
class PoolGradCase(PoolCase):
    """dx of max_pool2d (the forward's int64 indices, computed from a random x by the float64
    reference, passed with the forward's window: the gather kernel), avg_pool2d or
    global_avg_pool2d (cuconv/ops/pool_grad.py), in the case's ``layout`` (NHWC: dy, indices and
    dx N,H,W,C / N,P,Q,C)."""
    grad_pass = "data"
    dtypes = FLOAT_DTYPES

    @property
    def op(self):
        return f"{self.kind}_pool2d_backward"

    def resolve_algo(self):
        reason = self._dtype_reason(f"cuconv.grad.{self.kind}_pool2d")
        return (None, reason) if reason else ("pool_grad", None)

    def tolerance(self, algo):
        return tolerance(self.dtype, "pool_grad")

    def work(self, algo):
        c = self._layer().cost(self.x_shape, self.dtype)
        dy = math.prod(c.output_shape) * c.itemsize
        indices = math.prod(c.output_shape) * 8 if self.kind == "max" else 0     # int64, as PyTorch's
        dx = math.prod(self.x_shape) * c.itemsize
        return Work(c.backward_data_flops, c.backward_data_flops, dy + indices + dx, 0, dx)

    def input_shapes(self):
        y = self._layer().cost(self.x_shape, self.dtype).output_shape
        # x only to derive max pooling's indices (prepare_inputs); the backward kernel never reads it
        y = self._laid_out(y)
        return {"x": self._laid_out(self.x_shape), "dy": y} if self.kind == "max" else {"dy": y}

    def output_shape(self):
        return self._laid_out(self.x_shape)

    def prepare_inputs(self, inputs, asarray, dry=False):
        if self.kind != "max":
            return inputs
        y = self._layer().cost(self.x_shape, self.dtype).output_shape
        if dry:
            idx = np.zeros(y, np.int64)
        else:
            idx = max_pool2d_ref(self._nchw(inputs["x"]), return_indices=True, **self._kwargs())[1]
        return dict(inputs, indices=asarray(np.ascontiguousarray(self._laid_out_array(idx))))

    def _laid_out_array(self, a):
        return a.transpose(0, 2, 3, 1) if self.layout == "NHWC" else a

    def _window(self):
        kw = self._kwargs()
        if self.kind == "max":
            return dict(kernel_size=kw["kernel_size"], stride=kw["stride"], padding=kw["padding"],
                        dilation=kw["dilation"], ceil_mode=kw["ceil_mode"])
        return kw

    def _arrays(self, inputs):
        return (inputs["dy"], inputs["indices"]) if self.kind == "max" else (inputs["dy"],)

    def call(self, inputs, algo, out=None):
        return _op(f"{self.kind}_pool2d")(*self._arrays(inputs), self._laid_out(self.x_shape), out=out,
                                          layout=self.layout, **self._window())

    def _plan(self, inputs, algo, out=None):
        return _op(f"plan_{self.kind}_pool2d")(*self._arrays(inputs), self._laid_out(self.x_shape), out=out,
                                               layout=self.layout, **self._window())

    def plan(self, inputs, algo, out=None):
        plan = self._plan(inputs, algo, out)
        return plan, plan.bind(current_backend(), *self._arrays(inputs), dx=out)

    def reference(self, inputs, subset=None):
        dy = self._nchw(inputs["dy"])
        if self.kind == "max":
            dx = max_pool2d_backward_ref(dy, self._nchw(inputs["indices"]), self.x_shape)
        elif self.kind == "avg":
            kw = self._kwargs()
            dx = avg_pool2d_backward_ref(dy, self.x_shape, kw["kernel_size"], kw["stride"], kw["padding"],
                                         kw["ceil_mode"], kw["count_include_pad"])
        else:
            dx = global_avg_pool2d_backward_ref(dy, self.x_shape)
        return self._laid_out_array(dx)

    def baseline(self, inputs):
        torch = torch_cuda()
        if torch is None:
            return None
        nchw = (lambda t: t.permute(0, 3, 1, 2)) if self.layout == "NHWC" else (lambda t: t)   # channels_last views
        dy = nchw(torch.from_dlpack(inputs["dy"]))
        x = nchw(torch.empty(self._laid_out(self.x_shape), dtype=dy.dtype, device=dy.device))
        aten, kw = torch.ops.aten, self._kwargs()
        if self.kind == "max":
            idx = nchw(torch.from_dlpack(inputs["indices"]))
            return "PyTorch max_pool2d_with_indices_backward", lambda: aten.max_pool2d_with_indices_backward(
                dy, x, kw["kernel_size"], kw["stride"], kw["padding"], kw["dilation"], kw["ceil_mode"], idx)
        if self.kind == "avg":
            return "PyTorch avg_pool2d_backward", lambda: aten.avg_pool2d_backward(
                dy, x, kw["kernel_size"], kw["stride"], kw["padding"], kw["ceil_mode"], kw["count_include_pad"], None)
        return "PyTorch _adaptive_avg_pool2d_backward", lambda: aten._adaptive_avg_pool2d_backward(dy, x)


# =========================================================================== fully connected
@dataclass(frozen=True)
class LinearGradCase(GemmCase):
    """A fully connected layer's dX (``grad="data"``: dY (batch×out) · W (out×in)) or dW
    (``grad="weight"``: Xᵀ (in×batch) · dY (batch×out)) as one cuconv.gemm of that shape. The
    transposed operand is drawn already transposed: cuconv.gemm takes row-major A·B, so a
    training step would pass a transposed copy or view (copied by the plan), not timed here."""
    grad: str = "data"

    @property
    def grad_pass(self):
        return self.grad

    def notes(self, algo):
        what = "dX = dY·W" if self.grad == "data" else "dW = Xᵀ·dY"
        return [f"{what} as one GEMM, its transposed operand drawn already transposed (the transpose a "
                "training step needs is not timed)"]


@dataclass(frozen=True)
class BiasGradCase(Case):
    """db = dy summed over every axis but the channel axis 1 (``conv2d_bias``): a fully connected
    layer's bias gradient (a convolution's is fused into its WgradCase)."""
    dy_shape: tuple = ()
    bias_dtype: str = "float32"
    op = "conv2d_bias"
    grad_pass = "weight"
    dtypes = FLOAT_DTYPES

    @property
    def dtype(self):
        return self.bias_dtype

    def args(self):
        return f"dy {'x'.join(map(str, self.dy_shape))} -> db ({self.dy_shape[1]})"

    def resolve_algo(self):
        reason = self._dtype_reason("cuconv.grad.conv2d_bias")
        return (None, reason) if reason else ("reduce", None)

    def tolerance(self, algo):
        return tolerance(self.dtype, "tc_grad" if self.dtype in ("float16", "bfloat16") else "wgrad")

    def reduction_length(self):
        return math.prod(self.dy_shape) // self.dy_shape[1]

    def work(self, algo):
        item = np.dtype(self.dtype).itemsize if self.dtype != "bfloat16" else 2
        n = math.prod(self.dy_shape)
        out = self.dy_shape[1] * item
        return Work(n, n, n * item + out, 0, out)

    def input_shapes(self):
        return {"dy": tuple(self.dy_shape)}

    def output_shape(self):
        return (self.dy_shape[1],)

    def call(self, inputs, algo, out=None):
        return _op("conv2d_bias")(inputs["dy"], out=out)

    def plan(self, inputs, algo, out=None):
        plan = _op("plan_conv2d_bias")(inputs["dy"], out=out)
        return plan, plan.bind(current_backend(), inputs["dy"], db=out)

    def reference(self, inputs, subset=None):
        dy = to_numpy(inputs["dy"]).astype(np.float64)
        return dy.sum(axis=(0, *range(2, dy.ndim)))

    def reduced(self, algo):
        return replace(self, dy_shape=(min(self.dy_shape[0], 5), min(self.dy_shape[1], 45), *self.dy_shape[2:]))

    def baseline(self, inputs):
        torch = torch_cuda()
        if torch is None:
            return None
        dy = torch.from_dlpack(inputs["dy"])
        dims = (0, *range(2, dy.ndim))
        return "PyTorch dy.sum", lambda: dy.sum(dims)


# =========================================================================== no kernel
@dataclass(frozen=True)
class LayerGradCase(LayerCase):
    """The backward of a layer cuconv has no kernel for: its data (``grad="data"``) or parameter
    (``grad="weight"``: batch norm's dγ, dβ) gradient, theory only."""
    grad: str = "data"
    reason: str = ("no-kernel: no cuconv backward kernel for this layer type (batch norm, activations, the "
                   "residual add and views are left to the framework), theory only")

    @property
    def grad_pass(self):
        return self.grad

    @property
    def op(self):
        return f"{self.cost.kind}_backward"

    def work(self, algo):
        c = self.cost
        flops = c.backward_data_flops if self.grad == "data" else c.backward_weight_flops
        if c.is_view:
            return Work(flops, flops, 0, 0, 0)
        item = c.itemsize
        dy = math.prod(c.output_shape) * item
        if self.grad == "data":      # read dy and what backward keeps, write dx
            dx = sum(math.prod(s) for s in c.input_shapes) * item
            return Work(flops, flops, dy + c.input_cache_bytes + dx, 0, dx)
        return Work(flops, flops, dy + c.input_cache_bytes + c.param_bytes, 0, c.param_bytes)

