"""The backward passes as ops (``cuconv.grad``): torch.nn.grad's functions, with plans.

The textbook's §9.8 gives the three gradients of ``y = conv2d(x, w) + b``:

* ``conv2d_input(input_size, weight, grad_output, ...)`` — dx, the full convolution of dy with
  the rotated filter (kernels/conv_dgrad.cu, depthwise_grad.cu; tc_grad.cu + tc_conv.cu for
  float16/bfloat16);
* ``conv2d_weight(input, weight_size, grad_output, ...)`` — dW, the correlation of x with dy
  (kernels/conv_wgrad.cu's split-K GEMM, reduced deterministically unless
  ``deterministic=False``; depthwise_grad.cu; tc_grad.cu);
* ``conv2d_bias(grad_output)`` — db, dy summed over N, P and Q;

``conv2d_backward`` computes any of the three in one plan (db fused into the wgrad kernel when
both are asked for) — what the autograd layers of ``cuconv.torch`` call. Pooling:
``max_pool2d`` (through the forward's int64 indices), ``avg_pool2d`` (PyTorch's divisor
rules), ``global_avg_pool2d``. Transposed convolution (§9.7): ``conv_transpose2d_input`` is
the forward convolution of dy (any of ``cuconv.algorithms``' algorithms), and
``conv_transpose2d_weight`` the wgrad of that convolution with x and dy exchanged.

Every function is validate → plan → launch, like the forward ops: the first call with given
shapes checks the arguments (ValueError/TypeError naming the shapes and the rule broken) and
builds a ``Plan``; later calls look it up (``plan_*`` returns it; ``algorithms(...)`` lists
what can run a problem and why the rest cannot). Outputs are allocated on the current
backend (CuPy's pool and stream on the GPU) unless ``out=`` is given; every element is written.

Layouts: the backward kernels read NCHW/KCRS. ``layout="NHWC"`` is accepted by the conv
functions and runs the NCHW plan on transposed copies (one copy of each input and of the
output): correct, not native.

Algorithms (``algo=``): "auto", "direct", "implicit_gemm", "depthwise" (groups == C > 1),
"implicit_gemm_tc" and "implicit_gemm_tc_simple" (float16/bfloat16, fp32 accumulation), or a
kernel config's name (``conv_dgrad.CONFIGS_BY_NAME``, ``conv_wgrad.CONFIGS_BY_NAME``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import current_backend, planning_target, workspace_cap
from ..plan import Output, Plan, PlanCache, PlanError, Ref, arch_refusal, layout_buffers, relabel
from ..problem import Conv2dProblem, ConvTransposeProblem, PoolProblem
from . import _common, _grad, conv2d, conv_dgrad, conv_wgrad, depthwise_grad, pool_grad, tc_grad
from ._algorithm import ConvSpec
from ._conv_frontend import layout_shapes
from .pool import _check_bool

CONV_ALGOS = ("direct", "implicit_gemm", "depthwise", "implicit_gemm_tc", "implicit_gemm_tc_simple")
TC_ALGOS = {"implicit_gemm_tc": "auto", "implicit_gemm_tc_simple": "simple"}
FLOAT_DTYPES = ("float32", "float64")
CONV_DTYPES = (*FLOAT_DTYPES, *tc_grad.DTYPES)

# What ``auto`` takes, per gradient: the rule, for algorithms() (conv_dgrad.resolve and
# conv_wgrad.plan are the code).
AUTO_RULES = {
    "input": {
        "depthwise": "groups == C > 1 and a tile of dy fits the 15 KiB shared-memory budget",
        "implicit_gemm": "C/groups >= 8 and the GEMM's 32-bit index limits hold",
        "direct": "otherwise (C/groups < 8: the GEMM's N dimension would fill < 1/8 of its tile)",
        "implicit_gemm_tc": "float16 / bfloat16",
    },
    "weight": {
        "depthwise": "groups == C > 1 (a per-channel reduction over N·P·Q)",
        "implicit_gemm": "the split-K GEMM's 32-bit index limits hold",
        "direct": "otherwise",
        "implicit_gemm_tc": "float16 / bfloat16",
    },
}


# =========================================================================== plan pieces
@dataclass(frozen=True)
class Piece:
    """Launches computing some of a plan's outputs, with their workspace parts and the roles
    whose 16-byte alignment they assume."""
    algo: str
    launches: tuple
    parts: tuple = ()
    aligned: tuple = ()
    description: str = ""


def _check_algo(algo) -> str:
    if not isinstance(algo, str):
        raise TypeError(f"algo must be a string, got {algo!r}")
    known = ("auto", *CONV_ALGOS)
    if algo not in known and algo not in conv_dgrad.CONFIGS_BY_NAME and algo not in conv_wgrad.CONFIGS_BY_NAME:
        raise ValueError(f"unknown algo {algo!r}; use one of {known} or a kernel config name")
    return algo


def _tc_variant(p: Conv2dProblem, algo: str) -> str:
    """The tensor-core variant for a float16/bfloat16 problem, or PlanError."""
    if algo == "auto":
        return "auto"
    if algo in TC_ALGOS:
        return TC_ALGOS[algo]
    raise PlanError(f"algo {algo!r} takes float32 or float64; {p.dtype} gradients run on tensor cores "
                    f"(algo 'implicit_gemm_tc' or 'implicit_gemm_tc_simple')")


def _float_variant(p: Conv2dProblem, algo: str) -> str:
    if algo in TC_ALGOS:
        raise PlanError(f"algo {algo!r} takes float16 or bfloat16, got {p.dtype} (for float32 use "
                        f"'implicit_gemm')")
    return algo


def _family(cfg) -> str:
    if isinstance(cfg, (depthwise_grad.DwDgradPlan, depthwise_grad.DwWgradPlan)):
        return "depthwise"
    config = getattr(cfg, "config", cfg)
    if isinstance(config, _grad.DirectConfig):
        return "direct"
    return "implicit_gemm"


def _guard(fn, *args, **kw):
    """Call a kernel module's planner; its ValueErrors (cannot run) become PlanErrors."""
    try:
        return fn(*args, **kw)
    except PlanError:
        raise
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def dgrad_piece(p: Conv2dProblem, algo: str, caps, device=None, misaligned=frozenset(), max_workspace_bytes=None
                ) -> Piece:
    """Slot ``dx`` from ``w`` and ``dy`` for the forward problem ``p``. ``auto`` plans within the
    workspace cap (``max_workspace_bytes``, else the device's default: backend.workspace_cap, the
    forward's rule): the tensor-core dgrad falls back to its analytic variant, which reads dy in
    place, when the tiled kernel's NHWC pack would exceed it, and is refused when even that does."""
    if p.N == 0:
        return Piece("none", ())
    if p.dtype in tc_grad.DTYPES:
        variant = _tc_variant(p, algo)
        launches, parts, aligned = _guard(tc_grad.dgrad_parts, p, caps, device, variant, misaligned)
        note = ""
        if algo == "auto":
            cap, how = workspace_cap(caps, max_workspace_bytes)
            if layout_buffers(*parts)[1] > cap:
                variant = "simple"
                launches, parts, aligned = _guard(tc_grad.dgrad_parts, p, caps, device, variant, misaligned)
                need = layout_buffers(*parts)[1]
                if need > cap:
                    raise PlanError(f"the tensor-core dgrad needs {need} bytes of workspace even with its analytic "
                                    f"kernel, more than the {how}")
            note = f" [within the {how}]"
        name = algo if algo != "auto" else ("implicit_gemm_tc" if variant == "auto" else "implicit_gemm_tc_simple")
        return Piece(name, tuple(launches), tuple(parts), aligned,
                     "per stride phase: sub-filter, tensor-core forward convolution, scatter" + note)
    cfg = _guard(conv_dgrad.resolve, p, _float_variant(p, algo), caps.sms)
    return Piece(_family(cfg), tuple(cfg.launch(p, Ref("w"), Ref("dy"), Ref("dx"))), description=cfg.name)


def wgrad_piece(p: Conv2dProblem, algo: str, caps, *, bias: bool = False, deterministic: bool = True,
                max_workspace_bytes=None, misaligned=frozenset(), used: int = 0) -> Piece:
    """Slot ``dw`` (and ``db`` when ``bias``) from ``x`` and ``dy`` for the forward problem ``p``.
    ``deterministic=False`` permits the atomicAdd GEMM (float32/float64). The split-K partials are
    sized within what the workspace cap leaves after the plan's other pieces (``used`` bytes): the
    cap is ``max_workspace_bytes``, else the device's default (backend.workspace_cap, the forward's
    rule) with the partials kept within 64 MiB as before."""
    cap = workspace_cap(caps, max_workspace_bytes)[0] - used
    max_workspace_bytes = max(0, cap if max_workspace_bytes is not None
                              else min(conv_wgrad.DEFAULT_MAX_WORKSPACE_BYTES, cap))
    if p.dtype in tc_grad.DTYPES:
        launches, parts, aligned, n = _guard(tc_grad.wgrad_parts, p, caps, _tc_variant(p, algo), bias, None,
                                             max_workspace_bytes, misaligned)
        return Piece("implicit_gemm_tc" if algo == "auto" else algo, tuple(launches), tuple(parts), aligned,
                     f"{n} split(s), fp32 partials, deterministic reduction")
    dt = p.dtype
    if p.N == 0:       # a sum over nothing: zeros
        n_w = p.K * p.C_per_group * p.R * p.S
        zero = _grad.zero_launch(dt, Ref("dw"), n_w, Ref("db") if bias else Ref.absent(dt), p.K if bias else 0)
        return Piece("zero", (zero,), description="N = 0: zeros")
    pl = _guard(conv_wgrad.plan, p, _float_variant(p, algo), deterministic=deterministic, bias=bias,
                max_workspace_bytes=max_workspace_bytes, sms=caps.sms)
    n_w, n_b = pl.workspace_elems(p)
    parts = tuple(part for part in (("ws_w", dt, n_w), ("ws_b", dt, n_b)) if part[2])
    launches = pl.launch(p, Ref("x"), Ref("dy"), Ref("dw"), Ref("db") if bias else None,
                         Ref("ws_w") if n_w else None, Ref("ws_b") if n_b else None, Ref.absent(dt))
    splits = getattr(pl, "splits", 1)
    how = "atomicAdd (not deterministic)" if not pl.deterministic else "deterministic"
    return Piece(_family(pl), tuple(launches), parts, description=f"{pl.name}, {splits} split(s), {how}")


def bias_piece(dtype: str, N: int, K: int, PQ: int) -> Piece:
    """Slot ``db`` = dy summed over N and P·Q (one block per channel, fixed-order reduction)."""
    for name, v in (("N", N), ("K", K), ("P·Q", PQ)):
        if v > _grad.INT_MAX:
            raise PlanError(f"conv2d_bias: {name} = {v} does not fit a 32-bit int")
    if dtype in tc_grad.DTYPES:
        return Piece("reduce", (tc_grad.bias_launch(dtype, N, K, PQ, Ref("dy"), Ref("db")),))
    return Piece("reduce", (conv_wgrad.bias_only_launch(dtype, N, K, PQ, Ref("dy"), Ref("db")),))


def assemble(op: str, problem, pieces, inputs, outputs, expected, device) -> Plan:
    """One Plan running ``pieces`` in order: their workspaces laid out together. PlanError when a
    piece names a kernel not built for the current backend's device (issue 23: plan.arch_refusal,
    the check ConvAlgorithm.make_plan makes for the forward)."""
    reason = arch_refusal([ln for pc in pieces for ln in pc.launches], planning_target(current_backend())[0].cc)
    if reason is not None:
        raise PlanError(f"{op}: {reason}")
    parts = [part for pc in pieces for part in pc.parts]
    buffers, nbytes = layout_buffers(*parts)
    algo = "+".join(pc.algo for pc in pieces)
    return Plan(op=op, algo=algo, problem=problem, launches=tuple(ln for pc in pieces for ln in pc.launches),
                inputs=tuple(inputs), outputs=tuple(outputs), device=device, workspace_bytes=nbytes,
                buffers=buffers, aligned=tuple(sorted({r for pc in pieces for r in pc.aligned})),
                expected=tuple(expected), description="; ".join(pc.description for pc in pieces if pc.description))


def _piece_of(plan: Plan, names: dict, prefix: str = "") -> Piece:
    """Another op's plan as a piece of this one (its roles renamed)."""
    launches, parts = relabel(plan, names, prefix)
    return Piece(plan.algo, tuple(launches), tuple(parts), tuple(names[r] for r in plan.aligned if r in names),
                 plan.description)


def _renamed(piece: Piece, names: dict) -> Piece:
    buffers, _ = layout_buffers(*piece.parts)
    tmp = Plan("piece", piece.algo, None, piece.launches, (), (), buffers=buffers, aligned=piece.aligned)
    return _piece_of(tmp, names)


# =========================================================================== argument checks
def _size(size, what: str) -> tuple:
    try:
        out = tuple(int(d) for d in size)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of ints (a shape), got {size!r}") from None
    if any(d < 0 for d in out):
        raise ValueError(f"{what} must be non-negative, got {out}")
    return out


def _arg(be, a, what: str):
    """A backend array, or (planning) anything with .shape and .dtype; TypeError otherwise."""
    if a is None:
        raise TypeError(f"{what} is required, got None")
    if be.is_array(a) or (hasattr(a, "shape") and hasattr(a, "dtype") and not isinstance(a, np.generic)):
        return a
    return be.as_array(a, what)


def _dtype_of(a, what: str, allowed) -> str:
    name = np.dtype(a.dtype).name
    if name not in allowed:
        raise TypeError(f"{what} must have dtype {' or '.join(allowed)}, got {name} (shape {tuple(a.shape)})")
    return name


def _same_dtype(dt: str, **arrays) -> None:
    for what, a in arrays.items():
        if a is not None and np.dtype(a.dtype).name != dt:
            raise TypeError(f"{what} must have the same dtype as the other arrays ({dt}), got "
                            f"{np.dtype(a.dtype).name}")


def _ndim(what: str, a, n: int) -> None:
    if len(a.shape) != n:
        raise ValueError(f"{what} must be {n}-D, got shape {tuple(a.shape)}")


def _shaped(what: str, a, shape, rule: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)} ({rule}), got {tuple(a.shape)}")


def _layout(layout) -> str:
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout


def _nhwc(shape) -> tuple:
    return (shape[0], shape[2], shape[3], shape[1])


def _in_layout(shape, layout) -> tuple:
    return tuple(shape) if layout == "NCHW" else _nhwc(shape)


def _check_outs(be, outs) -> None:
    """User-given outputs: (what, array, shape, dtype) — contiguous, exact shape and dtype."""
    for what, a, shape, dt in outs:
        if a is not None and be.is_array(a):
            _common.check_out(a, shape, dt, be, what)
        elif a is not None:
            _shaped(what, a, shape, "the gradient's shape")


def _devices(be, **arrays) -> None:
    _common.same_device(be, **{k: a for k, a in arrays.items() if a is not None and be.is_array(a)})


def _conv_problem(x_shape, w_shape, stride, padding, dilation, groups, dtype, layout, what: str) -> Conv2dProblem:
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"{what}: the input and weight shapes must be 4-D, got {tuple(x_shape)} and "
                         f"{tuple(w_shape)}")
    x_nchw, w_kcrs = layout_shapes(x_shape, w_shape, layout)
    try:
        return Conv2dProblem.from_shapes(x_nchw, w_kcrs, stride, padding, dilation, groups, dtype)
    except ValueError as exc:
        note = "" if layout == "NCHW" else " [layout NHWC: input read as N,H,W,C and weight as K,R,S,C/groups]"
        raise ValueError(f"{what}: {exc}{note}") from None


def _conv_args(be, what, x_shape, w_shape, dy, stride, padding, dilation, groups, layout, dt):
    """The forward problem of a conv gradient call, with grad_output checked against its output."""
    _layout(layout)
    p = _conv_problem(x_shape, w_shape, stride, padding, dilation, groups, dt, layout, what)
    _ndim("grad_output", dy, 4)
    _shaped("grad_output", dy, _in_layout(p.output_shape, layout),
            f"the output of the forward conv2d {p.describe()}")
    return p


# =========================================================================== the call path
class _Op:
    """validate → plan → launch for one backward function. Plans are memoized under a key of
    the raw arguments (array shapes, strides, dtypes; the hyperparameters; the device); the
    first call with a key checks everything and builds the plan (``build(misaligned)``)."""

    def __init__(self, name: str):
        self.name = name
        self.plans = PlanCache()

    def __call__(self, be, arrays: dict, params: tuple, build, reads: tuple):
        """Run the plan for ``arrays`` (plan role -> the caller's array, outputs None to be
        allocated) and ``params``; ``reads``: the input roles an output must not overlap.
        Returns the env (role -> array) after the launches."""
        key = (be.device_key(), params, *[be.meta(a) for a in arrays.values()], be.devices(*arrays.values()))
        plan = _common.cached_plan(self.plans, key, arrays, build)
        env = dict(arrays)
        for o in plan.outputs:
            a = env.get(o.role)
            if a is not None:
                _common.check_no_overlap(a, [(r, env.get(r)) for r in reads], o.role)
        plan.allocate_outputs(be, env)
        plan.execute(be, env)
        return env


def _native(be, *arrays):
    return [_common.native(be, a, what) for a, what in arrays]


def _result(be, env, role, out, layout):
    """The gradient ``role`` in the caller's layout (NHWC: a transposed copy, into ``out`` when given)."""
    a = env[role]
    if layout == "NCHW":
        return a
    view = a.transpose(0, 2, 3, 1)
    if out is None:
        return be.contiguous(view)
    out[...] = view
    return out


def _nchw_view(a, layout):
    """An NHWC/KRSC array viewed as NCHW/KCRS without a copy (the plan copies strided inputs)."""
    return a if layout == "NCHW" or a is None else a.transpose(0, 3, 1, 2)


def _plan_input(be, size, w, dy, out, stride, padding, dilation, groups, algo, layout, misaligned) -> Plan:
    w, dy = _arg(be, w, "weight"), _arg(be, dy, "grad_output")
    dt = _dtype_of(w, "weight", CONV_DTYPES)
    _same_dtype(dt, grad_output=dy, out=out)
    algo = _check_algo(algo)
    p = _conv_args(be, "conv2d_input", size, w.shape, dy, stride, padding, dilation, groups, layout, dt)
    _check_outs(be, [("out", out, _in_layout(p.input_shape, layout), dt)])
    _devices(be, weight=w, grad_output=dy, out=out)
    caps, device = planning_target(be)
    piece = dgrad_piece(p, algo, caps, device, misaligned)
    return assemble("conv2d_input", p, [piece], ("w", "dy"), [Output("dx", p.input_shape, np.dtype(dt))],
                    (("w", p.weight_shape, dt), ("dy", p.output_shape, dt)), device)


def _plan_weight(be, x, size, dy, out, out_bias, stride, padding, dilation, groups, algo, layout,
                 deterministic, max_workspace_bytes, misaligned) -> Plan:
    x, dy = _arg(be, x, "input"), _arg(be, dy, "grad_output")
    dt = _dtype_of(x, "input", CONV_DTYPES)
    _same_dtype(dt, grad_output=dy, out=out, out_bias=out_bias)
    algo = _check_algo(algo)
    deterministic = _check_bool(deterministic, "deterministic")
    if max_workspace_bytes is not None and (isinstance(max_workspace_bytes, bool) or max_workspace_bytes < 0):
        raise ValueError(f"max_workspace_bytes must be None or >= 0, got {max_workspace_bytes!r}")
    p = _conv_args(be, "conv2d_weight", x.shape, size, dy, stride, padding, dilation, groups, layout, dt)
    _check_outs(be, [("out", out, _in_layout(p.weight_shape, layout), dt), ("out_bias", out_bias, (p.K,), dt)])
    _devices(be, input=x, grad_output=dy, out=out, out_bias=out_bias)
    caps, device = planning_target(be)
    piece = wgrad_piece(p, algo, caps, bias=False, deterministic=deterministic,
                        max_workspace_bytes=max_workspace_bytes, misaligned=misaligned)
    return assemble("conv2d_weight", p, [piece], ("x", "dy"), [Output("dw", p.weight_shape, np.dtype(dt))],
                    (("x", p.input_shape, dt), ("dy", p.output_shape, dt)), device)


_INPUT, _WEIGHT, _BIAS, _BACKWARD = _Op("conv2d_input"), _Op("conv2d_weight"), _Op("conv2d_bias"), _Op("conv2d_backward")


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *, algo="auto",
                 layout="NCHW", out=None):
    """∂L/∂x of ``y = conv2d(x, weight, stride, padding, dilation, groups)`` given ``grad_output``
    = ∂L/∂y, as torch.nn.grad.conv2d_input. ``input_size``: x's shape (3-D for an unbatched
    grad_output). Returns ``out`` (allocated when None), every element written."""
    if getattr(grad_output, "ndim", None) == 3:      # unbatched, as PyTorch takes it
        return conv2d_input((1, *_size(input_size, "input_size")), weight, grad_output[None], stride, padding,
                            dilation, groups, algo=algo, layout=layout, out=None if out is None else out[None])[0]
    be = current_backend()
    w, dy, out = _native(be, (weight, "weight"), (grad_output, "grad_output"), (out, "out"))
    size = _size(input_size, "input_size")
    nhwc = layout == "NHWC"
    env = _INPUT(be, {"w": _nchw_view(w, layout), "dy": _nchw_view(dy, layout), "dx": None if nhwc else out},
                 (size, stride, padding, dilation, groups, algo, layout, None if out is None else be.meta(out)),
                 lambda mis: _plan_input(be, size, w, dy, out, stride, padding, dilation, groups, algo, layout, mis),
                 ("w", "dy"))
    return _result(be, env, "dx", out, layout)


def plan_conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                      algo="auto", layout="NCHW", out=None) -> Plan:
    """The Plan ``conv2d_input`` runs (arrays, or anything with .shape and .dtype). Roles: inputs
    ``w``, ``dy``, output ``dx``, all NCHW (an NHWC call runs it on transposed copies)."""
    be = current_backend()
    return _plan_input(be, _size(input_size, "input_size"), weight, grad_output, out, stride, padding, dilation,
                       groups, algo, layout, frozenset())


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,  # noqa: A002
                  algo="auto", layout="NCHW", out=None, deterministic=True, max_workspace_bytes=None):
    """∂L/∂w of ``y = conv2d(input, w, ...)`` given ``grad_output``, as
    torch.nn.grad.conv2d_weight. The reduction over N·P·Q is split across blocks (split-K) and
    summed in a fixed order: bit-identical across runs. ``deterministic=False`` permits
    atomicAdd accumulation (float32/float64; no workspace, low bits vary between runs).
    ``max_workspace_bytes`` bounds the split-K workspace (None: 64 MiB, within a quarter of the
    device's memory)."""
    if getattr(grad_output, "ndim", None) == 3:
        return conv2d_weight(input[None], weight_size, grad_output[None], stride, padding, dilation, groups,
                             algo=algo, layout=layout, out=out, deterministic=deterministic,
                             max_workspace_bytes=max_workspace_bytes)
    be = current_backend()
    x, dy, out = _native(be, (input, "input"), (grad_output, "grad_output"), (out, "out"))
    size = _size(weight_size, "weight_size")
    nhwc = layout == "NHWC"
    env = _WEIGHT(be, {"x": _nchw_view(x, layout), "dy": _nchw_view(dy, layout), "dw": None if nhwc else out},
                  (size, stride, padding, dilation, groups, algo, layout, deterministic, max_workspace_bytes,
                   None if out is None else be.meta(out)),
                  lambda mis: _plan_weight(be, x, size, dy, out, None, stride, padding, dilation, groups, algo,
                                           layout, deterministic, max_workspace_bytes, mis),
                  ("x", "dy"))
    return _result(be, env, "dw", out, layout)


def plan_conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,  # noqa: A002
                       algo="auto", layout="NCHW", out=None, deterministic=True, max_workspace_bytes=None) -> Plan:
    """The Plan ``conv2d_weight`` runs. Roles: inputs ``x``, ``dy``, output ``dw`` (NCHW/KCRS)."""
    be = current_backend()
    return _plan_weight(be, input, _size(weight_size, "weight_size"), grad_output, out, None, stride, padding,
                        dilation, groups, algo, layout, deterministic, max_workspace_bytes, frozenset())


def _plan_bias(be, dy, out, misaligned=frozenset()) -> Plan:
    dy = _arg(be, dy, "grad_output")
    dt = _dtype_of(dy, "grad_output", CONV_DTYPES)
    if len(dy.shape) < 2:
        raise ValueError(f"grad_output must have a batch and a channel axis (N, K, ...), got shape {tuple(dy.shape)}")
    N, K = int(dy.shape[0]), int(dy.shape[1])
    PQ = int(np.prod(dy.shape[2:], dtype=np.int64))
    _same_dtype(dt, out=out)
    _check_outs(be, [("out", out, (K,), dt)])
    _devices(be, grad_output=dy, out=out)
    _, device = planning_target(be)
    piece = bias_piece(dt, N, K, PQ) if K else Piece("none", ())
    return assemble("conv2d_bias", None, [piece], ("dy",), [Output("db", (K,), np.dtype(dt))],
                    (("dy", tuple(dy.shape), dt),), device)


def conv2d_bias(grad_output, *, out=None):
    """∂L/∂b of a convolution's bias: ``grad_output`` (N, K, ...) summed over every axis but the
    channel axis 1, in a fixed order (deterministic). Returns ``out`` (K,)."""
    be = current_backend()
    (dy, out) = _native(be, (grad_output, "grad_output"), (out, "out"))
    if getattr(dy, "ndim", 4) == 3:          # unbatched (K, P, Q)
        dy = dy[None]
    env = _BIAS(be, {"dy": dy, "db": out}, (None if out is None else be.meta(out),),
                lambda mis: _plan_bias(be, dy, out), ("dy",))
    return env["db"]


def plan_conv2d_bias(grad_output, *, out=None) -> Plan:
    be = current_backend()
    return _plan_bias(be, grad_output, out)


def _plan_backward(be, x, w, dy, mask, stride, padding, dilation, groups, algo, weight_algo, deterministic,
                   max_workspace_bytes, misaligned) -> Plan:
    x, w, dy = _arg(be, x, "input"), _arg(be, w, "weight"), _arg(be, dy, "grad_output")
    dt = _dtype_of(x, "input", CONV_DTYPES)
    _same_dtype(dt, weight=w, grad_output=dy)
    if not (isinstance(mask, tuple) and len(mask) == 3 and all(isinstance(m, (bool, np.bool_)) for m in mask)):
        raise TypeError(f"output_mask must be a tuple of three bools (input, weight, bias), got {mask!r}")
    algo, weight_algo = _check_algo(algo), _check_algo(weight_algo)
    deterministic = _check_bool(deterministic, "deterministic")
    p = _conv_args(be, "conv2d_backward", x.shape, w.shape, dy, stride, padding, dilation, groups, "NCHW", dt)
    _devices(be, input=x, weight=w, grad_output=dy)
    caps, device = planning_target(be)
    pieces, outputs = [], []
    if mask[0]:
        pieces.append(dgrad_piece(p, algo, caps, device, misaligned, max_workspace_bytes))
        outputs.append(Output("dx", p.input_shape, np.dtype(dt)))
    if mask[1]:      # the split-K partials within what the dgrad left of the workspace cap
        used = layout_buffers(*(x for pc in pieces for x in pc.parts))[1]
        pieces.append(wgrad_piece(p, weight_algo, caps, bias=mask[2], deterministic=deterministic,
                                  max_workspace_bytes=max_workspace_bytes, misaligned=misaligned, used=used))
        outputs.append(Output("dw", p.weight_shape, np.dtype(dt)))
    elif mask[2]:
        pieces.append(bias_piece(dt, p.N, p.K, p.P * p.Q))
    if mask[2]:
        outputs.append(Output("db", (p.K,), np.dtype(dt)))
    return assemble("conv2d_backward", p, pieces, ("x", "w", "dy"), outputs,
                    (("x", p.input_shape, dt), ("w", p.weight_shape, dt), ("dy", p.output_shape, dt)), device)


def conv2d_backward(input, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,  # noqa: A002
                    output_mask=(True, True, True), algo="auto", weight_algo="auto", deterministic=True,
                    max_workspace_bytes=None):
    """(dx, dw, db) of ``y = conv2d(input, weight, bias, ...)`` in one plan (PyTorch's
    convolution_backward): the gradients ``output_mask`` (input, weight, bias) asks for, None
    for the others; db is fused into the wgrad kernel when dw is computed too. ``algo`` picks
    the dgrad, ``weight_algo`` the wgrad. NCHW; unbatched 3-D inputs as PyTorch takes them."""
    if getattr(input, "ndim", None) == 3:
        dx, dw, db = conv2d_backward(input[None], weight, grad_output[None], stride, padding, dilation, groups,
                                     output_mask=output_mask, algo=algo, weight_algo=weight_algo,
                                     deterministic=deterministic, max_workspace_bytes=max_workspace_bytes)
        return (None if dx is None else dx[0]), dw, db
    be = current_backend()
    x, w, dy = _native(be, (input, "input"), (weight, "weight"), (grad_output, "grad_output"))
    mask = tuple(output_mask) if isinstance(output_mask, list) else output_mask
    env = _BACKWARD(be, {"x": x, "w": w, "dy": dy},
                    (mask, stride, padding, dilation, groups, algo, weight_algo, deterministic, max_workspace_bytes),
                    lambda mis: _plan_backward(be, x, w, dy, mask, stride, padding, dilation, groups, algo,
                                               weight_algo, deterministic, max_workspace_bytes, mis),
                    ("x", "w", "dy"))
    return env.get("dx"), env.get("dw"), env.get("db")


def plan_conv2d_backward(input, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,  # noqa: A002
                         output_mask=(True, True, True), algo="auto", weight_algo="auto", deterministic=True,
                         max_workspace_bytes=None) -> Plan:
    """The Plan ``conv2d_backward`` runs. Roles: inputs ``x``, ``w``, ``dy``; outputs ``dx``,
    ``dw``, ``db`` (those the mask asks for)."""
    be = current_backend()
    mask = tuple(output_mask) if isinstance(output_mask, list) else output_mask
    return _plan_backward(be, input, weight, grad_output, mask, stride, padding, dilation, groups, algo,
                          weight_algo, deterministic, max_workspace_bytes, frozenset())


# =========================================================================== pooling
_MAX_POOL, _AVG_POOL, _GLOBAL_POOL = _Op("max_pool2d_backward"), _Op("avg_pool2d_backward"), _Op("global_avg_pool2d_backward")


def _pool_args(be, what: str, dy, size, out):
    """(dtype, input size) of a pooling gradient call: dy float32/float64 (N, C, P, Q), the
    input size (N, C, H, W) agreeing on N and C, out (N, C, H, W)."""
    dy = _arg(be, dy, "grad_output")
    dt = _dtype_of(dy, "grad_output", FLOAT_DTYPES)
    _ndim("grad_output", dy, 4)
    if len(size) != 4:
        raise ValueError(f"{what}: input_size must be 4-D (N, C, H, W) (3-D with an unbatched grad_output), "
                         f"got {size}")
    if tuple(dy.shape[:2]) != size[:2]:
        raise ValueError(f"{what}: grad_output {tuple(dy.shape)} and input_size {size} disagree on N and C")
    if size[2] * size[3] > _grad.INT_MAX or dy.shape[2] * dy.shape[3] > _grad.INT_MAX:
        raise ValueError(f"{what}: planes of more than 2**31-1 elements are not supported (input_size {size}, "
                         f"grad_output {tuple(dy.shape)})")
    _same_dtype(dt, out=out)
    _check_outs(be, [("out", out, size, dt)])
    return dt


def _pool_plan(op: str, size, dt, launches, parts, inputs, expected, device) -> Plan:
    empty = size[0] * size[1] * size[2] * size[3] == 0
    piece = Piece("none" if empty else "backward", () if empty else tuple(launches), () if empty else tuple(parts))
    return assemble(op, size, [piece], inputs, [Output("dx", size, np.dtype(dt))], expected, device)


def _plan_max_pool(be, dy, indices, size, window, out) -> Plan:
    what = "max_pool2d backward"
    dt = _pool_args(be, what, dy, size, out)
    indices = _arg(be, indices, "indices")
    if np.dtype(indices.dtype).name != "int64":
        raise TypeError(f"indices must have dtype int64 (max_pool2d(..., return_indices=True)), got "
                        f"{np.dtype(indices.dtype).name}")
    _shaped("indices", indices, dy.shape, "grad_output's shape")
    _devices(be, grad_output=dy, indices=indices, out=out)
    _, device = planning_target(be)
    expected = (("dy", tuple(dy.shape), dt), ("indices", tuple(dy.shape), "int64"))
    if window is not None:
        kernel_size, stride, padding, dilation, ceil_mode = window
        ceil_mode = _check_bool(ceil_mode, "ceil_mode")
        pp = PoolProblem.from_shapes("max", size, kernel_size, stride, padding, dilation, ceil_mode, dtype=dt)
        _shaped("grad_output", dy, (*size[:2], pp.P, pp.Q), f"the output of max_pool2d's window on input {size}")
        geom = (pp.kernel_h, pp.kernel_w, pp.stride_h, pp.stride_w, pp.pad_h, pp.pad_w, pp.dilation_h,
                pp.dilation_w, pp.P, pp.Q)
        launch = pool_grad.max_pool_gather_launch_spec(Ref("dy"), Ref("indices"), Ref("dx"), size, dt, geom)
        return _pool_plan("max_pool2d_backward", size, dt, [launch], [], ("dy", "indices"), expected, device)
    if -(-(size[0] * size[1]) // pool_grad.WARPS_PER_BLOCK) > _grad.INT_MAX:
        raise ValueError(f"{what}: N·C = {size[0] * size[1]} planes need more than 2**31-1 blocks")
    # The scatter counts indices outside [0, H·W) in a workspace word it never reads back
    # (reading it would synchronize); such indices are skipped.
    launch = pool_grad.max_pool_scatter_launch_spec(Ref("dy"), Ref("indices"), Ref("dx"), Ref("bad"), size,
                                                    dy.shape, dt)
    return _pool_plan("max_pool2d_backward", size, dt, [launch], [("bad", "uint64", 1)], ("dy", "indices"),
                      expected, device)


def max_pool2d(grad_output, indices, input_size, kernel_size=None, stride=None, padding=0, dilation=1,
               ceil_mode=False, *, out=None):
    """∂L/∂x of ``max_pool2d`` from ``grad_output`` and the forward's int64 ``indices``
    (``return_indices=True``: ih·W + iw within each plane). Each input gets the sum of the
    gradients of the outputs whose maximum it was, added in output order (deterministic).
    With the forward's window (``kernel_size`` ...) each input gathers from the windows that
    cover it (PyTorch CUDA's kernel); without it a warp per plane scatters through the
    indices. Indices outside the plane are skipped (PyTorch's CPU kernel raises on them)."""
    if getattr(grad_output, "ndim", None) == 3:
        return max_pool2d(grad_output[None], indices[None] if getattr(indices, "ndim", 0) == 3 else indices,
                          (1, *_size(input_size, "input_size")), kernel_size, stride, padding, dilation,
                          ceil_mode, out=None if out is None else out[None])[0]
    be = current_backend()
    dy, idx, out = _native(be, (grad_output, "grad_output"), (indices, "indices"), (out, "out"))
    size = _size(input_size, "input_size")
    window = None if kernel_size is None else (kernel_size, stride, padding, dilation, ceil_mode)
    env = _MAX_POOL(be, {"dy": dy, "indices": idx, "dx": out}, (size, window),
                    lambda mis: _plan_max_pool(be, dy, idx, size, window, out), ("dy", "indices"))
    return env["dx"]


def plan_max_pool2d(grad_output, indices, input_size, kernel_size=None, stride=None, padding=0, dilation=1,
                    ceil_mode=False, *, out=None) -> Plan:
    be = current_backend()
    window = None if kernel_size is None else (kernel_size, stride, padding, dilation, ceil_mode)
    return _plan_max_pool(be, grad_output, indices, _size(input_size, "input_size"), window, out)


def _plan_avg_pool(be, dy, size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                   out) -> Plan:
    dt = _pool_args(be, "avg_pool2d backward", dy, size, out)
    ceil_mode = _check_bool(ceil_mode, "ceil_mode")
    count_include_pad = _check_bool(count_include_pad, "count_include_pad")
    pp = PoolProblem.from_shapes("avg", size, kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                                 divisor_override, dtype=dt)
    _shaped("grad_output", dy, (*size[:2], pp.P, pp.Q), f"the output of avg_pool2d's window on input {size}")
    _devices(be, grad_output=dy, out=out)
    _, device = planning_target(be)
    geom = (pp.kernel_h, pp.kernel_w, pp.stride_h, pp.stride_w, pp.pad_h, pp.pad_w, 1, 1, pp.P, pp.Q)
    launch = pool_grad.avg_pool_launch_spec(Ref("dy"), Ref("dx"), size, dt, geom, count_include_pad,
                                            divisor_override)
    return _pool_plan("avg_pool2d_backward", size, dt, [launch], [], ("dy",), (("dy", tuple(dy.shape), dt),), device)


def avg_pool2d(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, out=None):
    """∂L/∂x of ``avg_pool2d``: each output's gradient spread over its window divided by the
    forward's divisor (PyTorch's rules: ``count_include_pad``, ``divisor_override``, windows
    clipped at the padded border under ``ceil_mode``)."""
    if getattr(grad_output, "ndim", None) == 3:
        return avg_pool2d(grad_output[None], (1, *_size(input_size, "input_size")), kernel_size, stride, padding,
                          ceil_mode, count_include_pad, divisor_override,
                          out=None if out is None else out[None])[0]
    be = current_backend()
    dy, out = _native(be, (grad_output, "grad_output"), (out, "out"))
    size = _size(input_size, "input_size")
    args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    env = _AVG_POOL(be, {"dy": dy, "dx": out}, (size, args),
                    lambda mis: _plan_avg_pool(be, dy, size, *args, out), ("dy",))
    return env["dx"]


def plan_avg_pool2d(grad_output, input_size, kernel_size, stride=None, padding=0, ceil_mode=False,
                    count_include_pad=True, divisor_override=None, *, out=None) -> Plan:
    be = current_backend()
    return _plan_avg_pool(be, grad_output, _size(input_size, "input_size"), kernel_size, stride, padding, ceil_mode,
                          count_include_pad, divisor_override, out)


def _plan_global_pool(be, dy, size, out) -> Plan:
    dt = _pool_args(be, "global_avg_pool2d backward", dy, size, out)
    _shaped("grad_output", dy, (*size[:2], 1, 1), "global_avg_pool2d's output (N, C, 1, 1)")
    _devices(be, grad_output=dy, out=out)
    _, device = planning_target(be)
    launch = pool_grad.global_avg_pool_launch_spec(Ref("dy"), Ref("dx"), size, dt)
    return _pool_plan("global_avg_pool2d_backward", size, dt, [launch], [], ("dy",), (("dy", tuple(dy.shape), dt),),
                      device)


def global_avg_pool2d(grad_output, input_size, *, out=None):
    """∂L/∂x of ``global_avg_pool2d`` (AdaptiveAvgPool2d(1)): dx[n, c] = dy[n, c] / (H·W)."""
    if getattr(grad_output, "ndim", None) == 3:
        return global_avg_pool2d(grad_output[None], (1, *_size(input_size, "input_size")),
                                 out=None if out is None else out[None])[0]
    be = current_backend()
    dy, out = _native(be, (grad_output, "grad_output"), (out, "out"))
    size = _size(input_size, "input_size")
    env = _GLOBAL_POOL(be, {"dy": dy, "dx": out}, (size,), lambda mis: _plan_global_pool(be, dy, size, out), ("dy",))
    return env["dx"]


def plan_global_avg_pool2d(grad_output, input_size, *, out=None) -> Plan:
    be = current_backend()
    return _plan_global_pool(be, grad_output, _size(input_size, "input_size"), out)


# =========================================================================== transposed convolution
_T_INPUT, _T_WEIGHT = _Op("conv_transpose2d_input"), _Op("conv_transpose2d_weight")


def _transpose_problem(what, x_shape, w_shape, dy, stride, padding, output_padding, groups, dilation, dt):
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"{what}: the input and weight shapes must be 4-D, got {tuple(x_shape)} and "
                         f"{tuple(w_shape)}")
    tp = ConvTransposeProblem.from_shapes(x_shape, w_shape, stride, padding, output_padding, groups, dilation, dt)
    _ndim("grad_output", dy, 4)
    _shaped("grad_output", dy, tp.output_shape, f"the output of the forward conv_transpose2d {tp.describe()}")
    return tp, tp.as_conv2d()


def _plan_t_input(be, size, w, dy, out, stride, padding, output_padding, groups, dilation, algo, misaligned) -> Plan:
    w, dy = _arg(be, w, "weight"), _arg(be, dy, "grad_output")
    dt = np.dtype(w.dtype).name
    _same_dtype(dt, grad_output=dy, out=out)
    tp, q = _transpose_problem("conv_transpose2d_input", size, w.shape, dy, stride, padding, output_padding,
                               groups, dilation, dt)
    _check_outs(be, [("out", out, tp.input_shape, dt)])
    _devices(be, weight=w, grad_output=dy, out=out)
    caps, device = planning_target(be)
    spec = ConvSpec(q, "NCHW", caps, device, misaligned=frozenset({"dy": "x", "w": "w"}[r] for r in misaligned
                                                                  if r in ("dy", "w")))
    forward = conv2d.select(spec, algo)
    piece = _piece_of(forward, {"x": "dy", "w": "w", "out": "dx"}, "f.")
    return assemble("conv_transpose2d_input", tp, [piece], ("w", "dy"), [Output("dx", tp.input_shape, np.dtype(dt))],
                    (("w", tuple(w.shape), dt), ("dy", tp.output_shape, dt)), device)


def conv_transpose2d_input(input_size, weight, grad_output, stride=1, padding=0, output_padding=0, groups=1,
                           dilation=1, *, algo="auto", out=None):
    """∂L/∂x of ``y = conv_transpose2d(x, weight, ...)`` (conv_transpose2d's arguments): the
    forward convolution of ``grad_output`` with ``weight`` — the transposed convolution is that
    convolution's data gradient (§9.7) — run by any conv2d algorithm (``algo``: a name from
    ``cuconv.algorithms(ConvTransposeProblem(...).as_conv2d())``)."""
    if getattr(grad_output, "ndim", None) == 3:
        return conv_transpose2d_input((1, *_size(input_size, "input_size")), weight, grad_output[None], stride,
                                      padding, output_padding, groups, dilation, algo=algo,
                                      out=None if out is None else out[None])[0]
    be = current_backend()
    w, dy, out = _native(be, (weight, "weight"), (grad_output, "grad_output"), (out, "out"))
    size = _size(input_size, "input_size")
    args = (stride, padding, output_padding, groups, dilation, algo)
    env = _T_INPUT(be, {"w": w, "dy": dy, "dx": out}, (size, args),
                   lambda mis: _plan_t_input(be, size, w, dy, out, *args, mis), ("w", "dy"))
    return env["dx"]


def plan_conv_transpose2d_input(input_size, weight, grad_output, stride=1, padding=0, output_padding=0, groups=1,
                                dilation=1, *, algo="auto", out=None) -> Plan:
    be = current_backend()
    return _plan_t_input(be, _size(input_size, "input_size"), weight, grad_output, out, stride, padding,
                         output_padding, groups, dilation, algo, frozenset())


def _plan_t_weight(be, x, size, dy, out, stride, padding, output_padding, groups, dilation, algo, deterministic,
                   max_workspace_bytes, misaligned) -> Plan:
    x, dy = _arg(be, x, "input"), _arg(be, dy, "grad_output")
    dt = _dtype_of(x, "input", CONV_DTYPES)
    _same_dtype(dt, grad_output=dy, out=out)
    algo = _check_algo(algo)
    deterministic = _check_bool(deterministic, "deterministic")
    tp, q = _transpose_problem("conv_transpose2d_weight", x.shape, size, dy, stride, padding, output_padding,
                               groups, dilation, dt)
    _check_outs(be, [("out", out, q.weight_shape, dt)])
    _devices(be, input=x, grad_output=dy, out=out)
    caps, device = planning_target(be)
    swap = {"x": "dy", "dy": "x"}
    piece = wgrad_piece(q, algo, caps, deterministic=deterministic, max_workspace_bytes=max_workspace_bytes,
                        misaligned=frozenset(swap[r] for r in misaligned if r in swap))
    piece = _renamed(piece, {"x": "dy", "dy": "x", "dw": "dw"})
    return assemble("conv_transpose2d_weight", tp, [piece], ("x", "dy"), [Output("dw", q.weight_shape, np.dtype(dt))],
                    (("x", tp.input_shape, dt), ("dy", tp.output_shape, dt)), device)


def conv_transpose2d_weight(input, weight_size, grad_output, stride=1, padding=0, output_padding=0,  # noqa: A002
                            groups=1, dilation=1, *, algo="auto", deterministic=True, max_workspace_bytes=None,
                            out=None):
    """∂L/∂w of ``y = conv_transpose2d(input, w, ...)``: the wgrad of the convolution whose data
    gradient the transposed convolution is, with its input ``grad_output`` and its output
    gradient ``input``. Weight (C_in, C_out/groups, R, S). The bias gradient is
    ``conv2d_bias(grad_output)``."""
    if getattr(grad_output, "ndim", None) == 3:
        return conv_transpose2d_weight(input[None], weight_size, grad_output[None], stride, padding, output_padding,
                                       groups, dilation, algo=algo, deterministic=deterministic,
                                       max_workspace_bytes=max_workspace_bytes, out=out)
    be = current_backend()
    x, dy, out = _native(be, (input, "input"), (grad_output, "grad_output"), (out, "out"))
    size = _size(weight_size, "weight_size")
    args = (stride, padding, output_padding, groups, dilation, algo, deterministic, max_workspace_bytes)
    env = _T_WEIGHT(be, {"x": x, "dy": dy, "dw": out}, (size, args),
                    lambda mis: _plan_t_weight(be, x, size, dy, out, *args, mis), ("x", "dy"))
    return env["dw"]


def plan_conv_transpose2d_weight(input, weight_size, grad_output, stride=1, padding=0, output_padding=0,  # noqa: A002
                                 groups=1, dilation=1, *, algo="auto", deterministic=True, max_workspace_bytes=None,
                                 out=None) -> Plan:
    be = current_backend()
    return _plan_t_weight(be, input, _size(weight_size, "weight_size"), grad_output, out, stride, padding,
                          output_padding, groups, dilation, algo, deterministic, max_workspace_bytes, frozenset())


# =========================================================================== algorithms
WHICH = ("input", "weight")


def algorithms(problem: Conv2dProblem, which: str = "input", *, deterministic: bool = True, bias: bool = False,
               max_workspace_bytes: int | None = None) -> list[conv2d.AlgorithmInfo]:
    """Every gradient algorithm on the forward ``problem``: for ``which="input"`` (dgrad) or
    ``"weight"`` (wgrad, with db fused when ``bias``), whether it can run, why not, its
    workspace, its plan (on the current backend's device) and, for the one ``auto`` takes,
    the rule that takes it."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if not isinstance(problem, Conv2dProblem):
        raise TypeError(f"problem must be a Conv2dProblem, got {type(problem).__name__}")
    be = current_backend()
    caps, device = planning_target(be)
    dt = problem.dtype

    def build(algo):
        if which == "input":
            pc = dgrad_piece(problem, algo, caps, device)
            return assemble("conv2d_input", problem, [pc], ("w", "dy"),
                            [Output("dx", problem.input_shape, np.dtype(dt))], (), device)
        pc = wgrad_piece(problem, algo, caps, bias=bias, deterministic=deterministic,
                         max_workspace_bytes=max_workspace_bytes)
        outs = [Output("dw", problem.weight_shape, np.dtype(dt))] + ([Output("db", (problem.K,), np.dtype(dt))]
                                                                      if bias else [])
        return assemble("conv2d_weight", problem, [pc], ("x", "dy"), outs, (), device)

    try:
        auto = build("auto").algo
    except ValueError:
        auto = None
    infos = []
    for name in CONV_ALGOS:
        try:
            plan = build(name)
        except ValueError as exc:
            infos.append(conv2d.AlgorithmInfo(name, False, str(exc), None))
            continue
        rule = AUTO_RULES[which].get(name) if name == auto else None
        infos.append(conv2d.AlgorithmInfo(name, True, None, plan.workspace_bytes, plan, rule))
    return infos
