"""The convolution front end: every pass's arguments checked once and described as a ``ConvSpec``.

``build_spec`` (``conv2d``, ``depthwise_conv2d``, ``tc_conv2d``, ``cuconv.find``), ``dgrad_spec``
(``conv2d_input``, ``conv2d_backward``) and ``wgrad_spec`` (``conv2d_weight``,
``conv2d_backward``) check every argument (ValueError/TypeError naming the shapes and the rule
broken, before any allocation or launch) and build the frozen spec of the pass; the op's
``select(spec, algo)`` (ops/conv2d.py) turns it into the plan. ``ConvFrontEnd`` is the
``FrontEnd`` (ops/_frontend.py: unbatched calls, the plan cache, the hot path) of the
conv2d-shaped forward ops.
"""
from __future__ import annotations

import numpy as np

from ..backend import planning_target
from ..dtypes import FLOAT_DTYPES, name_of
from ..problem import Conv2dProblem, bool_arg, shape_arg
from . import _common
from ._algorithm import DGRAD, LAYOUTS, WGRAD, ConvSpec
from ._frontend import FrontEnd, option_items

# The names the error messages use for the plan roles.
ROLE_NAMES = {"x": "input", "w": "weight", "dy": "grad_output"}


def layout_shapes(x_shape, w_shape, layout: str):
    """Input and weight shapes in NCHW/KCRS terms (the one definition of a convolution)."""
    if layout == "NHWC":
        return (x_shape[0], x_shape[3], x_shape[1], x_shape[2]), (w_shape[0], w_shape[3], w_shape[1], w_shape[2])
    return tuple(x_shape), tuple(w_shape)


def check_layout(layout) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout


def check_workspace_cap(max_workspace_bytes):
    if max_workspace_bytes is not None and (isinstance(max_workspace_bytes, bool) or max_workspace_bytes < 0):
        raise ValueError(f"max_workspace_bytes must be None or >= 0, got {max_workspace_bytes!r}")


def _float_dtype(a, what: str) -> str:
    name = name_of(a.dtype)
    if name not in FLOAT_DTYPES:
        raise TypeError(f"convolution takes floating-point arrays ({', '.join(FLOAT_DTYPES)}), got {what} "
                        f"dtype {name} (shape {tuple(a.shape)})")
    return name


def check_dtypes(**arrays) -> str:
    """The dtype of a gradient call: the first array's (a floating-point dtype), which every other
    array given must have; the arrays not named ``out...`` are required."""
    dt = None
    for what, a in arrays.items():
        if a is None:
            if not what.startswith("out"):
                raise TypeError(f"{what} is required, got None")
            continue
        if dt is None:
            dt = _float_dtype(a, what)
        elif name_of(a.dtype) != dt:
            raise TypeError(f"{what} must have the same dtype as the other arrays ({dt}), got "
                            f"{name_of(a.dtype)}")
    return dt


def check_outputs(be, outputs, inputs) -> None:
    """Given outputs (what, array, shape, dtype): the backend's, contiguous, exactly ``shape`` and
    ``dtype`` (a stand-in: the shape); and every array on one device."""
    for what, a, shape, dt in outputs:
        if a is not None and be is not None and be.is_array(a):
            _common.check_out(a, shape, dt, be, what)
        elif a is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{what} must have shape {tuple(shape)} (the gradient's shape), got {tuple(a.shape)}")
    if be is not None:
        arrays = {**inputs, **{what: a for what, a, _, _ in outputs}}
        _common.same_device(be, **{k: a for k, a in arrays.items() if a is not None and be.is_array(a)})


# --------------------------------------------------------------------------- the forward pass
def build_spec(be, x, w, bias, residual, out, stride, padding, dilation, groups, activation,
               max_workspace_bytes, layout, allow_tf32, extra: dict, misaligned=frozenset(),
               float_only: bool = True) -> ConvSpec:
    """Check every conv2d argument (arrays or anything with .shape/.dtype) and describe the call.
    ``float_only=False`` (``cuconv.algorithms`` on a problem) lets any dtype through, for each
    algorithm to say why it refuses it."""
    check_layout(layout)
    if allow_tf32 not in (None, True, False):
        raise TypeError(f"allow_tf32 must be True, False or None, got {allow_tf32!r}")
    arrays = be is not None and be.is_array(x)
    for name, a in (("input", x), ("weight", w)):
        if len(a.shape) != 4:
            raise ValueError(f"{name} must be 4-D (or 3-D unbatched for the input), got shape {tuple(a.shape)}")
    dtype = np.dtype(x.dtype)
    if float_only:
        _float_dtype(x, "input")
    if np.dtype(w.dtype) != dtype:
        raise TypeError(f"input and weight must have the same dtype, got {name_of(dtype)} and {name_of(w.dtype)}")
    x_shape, w_shape = layout_shapes(x.shape, w.shape, layout)
    try:
        problem = Conv2dProblem.from_shapes(x_shape, w_shape, stride, padding, dilation, groups, name_of(dtype))
    except ValueError as exc:
        if layout == "NCHW":
            raise
        raise ValueError(f"{exc} [layout NHWC: input {tuple(x.shape)} read as N,H,W,C and weight "
                         f"{tuple(w.shape)} as K,R,S,C/groups]") from None
    out_shape = problem.output_shape if layout == "NCHW" else (problem.N, problem.P, problem.Q, problem.K)
    if arrays:
        _common.optional_tensor(bias, "bias", (problem.K,), dtype, be)
        _common.optional_tensor(residual, "residual", out_shape, dtype, be)
        if out is not None:
            _common.check_out(out, out_shape, dtype, be)
        _common.same_device(be, input=x, weight=w, bias=bias, residual=residual, out=out)
    else:
        for name, a, shape in (("bias", bias, (problem.K,)), ("residual", residual, out_shape)):
            if a is not None and tuple(a.shape) != tuple(shape):
                raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    act = _common.activation_code(activation)
    if max_workspace_bytes is not None and max_workspace_bytes < 0:
        raise ValueError(f"max_workspace_bytes must be >= 0, got {max_workspace_bytes}")
    caps, device = planning_target(be)
    return ConvSpec(problem, layout, caps, device, allow_tf32, max_workspace_bytes, bias is not None,
                    residual is not None, act, option_items(extra), frozenset(misaligned))


class ConvFrontEnd(FrontEnd):
    """The front end of the conv2d-shaped forward ops (conv2d, depthwise_conv2d, tc_conv2d): the
    arguments of ``conv2d`` (args: stride, padding, dilation, groups, algo, activation,
    max_workspace_bytes, layout, allow_tf32), ``select(spec, algo) -> Plan`` picking and planning
    the algorithm (ValueError with the reason when it cannot)."""

    def __init__(self, select, op: str = "conv2d"):
        super().__init__(op, ("x", "w", "bias", "residual", "out"), self._plan, batched=("x", "residual", "out"),
                         names=ROLE_NAMES, array_options=("transformed_weight",))
        self.select = select

    def _plan(self, be, env, args, extra, misaligned):
        stride, padding, dilation, groups, algo, activation, max_workspace_bytes, layout, allow_tf32 = args
        spec = build_spec(be, env["x"], env["w"], env["bias"], env["residual"], env["out"], stride, padding,
                          dilation, groups, activation, max_workspace_bytes, layout, allow_tf32, extra, misaligned)
        return self.select(spec, algo)


# --------------------------------------------------------------------------- the gradients
def layout_note(layout: str, x_shape, w_shape) -> str:
    """What an NHWC call's shapes were read as, appended to its error messages ("" for NCHW)."""
    if layout == "NCHW":
        return ""
    return (f" [layout NHWC: input {tuple(x_shape)} read as N,H,W,C and weight {tuple(w_shape)} as "
            "K,R,S,C/groups; grad_output is N,P,Q,K]")


def forward_problem(what: str, x_shape, w_shape, dy, stride, padding, dilation, groups, dtype,
                    layout: str = "NCHW") -> Conv2dProblem:
    """The forward problem of a gradient call, with grad_output checked against its output.
    ``x_shape``, ``w_shape`` and dy in ``layout`` (NCHW/KCRS/NKPQ or NHWC/KRSC/NPQK)."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"{what}: the input and weight shapes must be 4-D, got {tuple(x_shape)} and "
                         f"{tuple(w_shape)}{layout_note(layout, x_shape, w_shape)}")
    nchw_x, kcrs_w = layout_shapes(tuple(x_shape), tuple(w_shape), check_layout(layout))
    try:
        p = Conv2dProblem.from_shapes(nchw_x, kcrs_w, stride, padding, dilation, groups, dtype)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}{layout_note(layout, x_shape, w_shape)}") from None
    if len(dy.shape) != 4:
        raise ValueError(f"grad_output must be 4-D, got shape {tuple(dy.shape)}{layout_note(layout, x_shape, w_shape)}")
    out_shape = p.output_shape if layout == "NCHW" else (p.N, p.P, p.Q, p.K)
    if tuple(dy.shape) != out_shape:
        raise ValueError(f"grad_output must have shape {out_shape} (the output of the forward conv2d "
                         f"{p.describe()}{', as N,P,Q,K' if layout == 'NHWC' else ''}), got {tuple(dy.shape)}"
                         f"{layout_note(layout, x_shape, w_shape)}")
    return p


def grad_shapes(p: Conv2dProblem, layout: str) -> tuple[tuple, tuple]:
    """The input's and the weight's shapes of ``p`` in ``layout`` (those of dx and dW)."""
    if layout == "NHWC":
        return (p.N, p.H, p.W, p.C), (p.K, p.R, p.S, p.C_per_group)
    return p.input_shape, p.weight_shape


def dgrad_spec(be, w, dy, dx, input_size, stride, padding, dilation, groups, extra: dict,
               misaligned=frozenset(), layout: str = "NCHW") -> ConvSpec:
    """Check conv2d_input's arguments (arrays or stand-ins in ``layout``) and describe the data
    gradient of the forward convolution."""
    dt = check_dtypes(weight=w, grad_output=dy, out=dx)
    p = forward_problem("conv2d_input", shape_arg(input_size, "input_size"), w.shape, dy, stride, padding,
                        dilation, groups, dt, layout)
    check_outputs(be, [("out", dx, grad_shapes(p, layout)[0], dt)], {"weight": w, "grad_output": dy})
    caps, device = planning_target(be)
    return ConvSpec(p, layout, caps=caps, device=device, options=option_items(extra),
                    misaligned=frozenset(misaligned), operator=DGRAD)


def wgrad_spec(be, x, dy, dw, db, weight_size, stride, padding, dilation, groups, deterministic,
               max_workspace_bytes, extra: dict, misaligned=frozenset(), has_bias: bool = False,
               layout: str = "NCHW") -> ConvSpec:
    """Check conv2d_weight's arguments (arrays or stand-ins in ``layout``) and describe the weight
    gradient (and the bias gradient when ``has_bias``) of the forward convolution."""
    dt = check_dtypes(input=x, grad_output=dy, out=dw, out_bias=db)
    deterministic = bool_arg(deterministic, "deterministic")
    check_workspace_cap(max_workspace_bytes)
    p = forward_problem("conv2d_weight", x.shape, shape_arg(weight_size, "weight_size"), dy, stride, padding,
                        dilation, groups, dt, layout)
    check_outputs(be, [("out", dw, grad_shapes(p, layout)[1], dt), ("out_bias", db, (p.K,), dt)],
                    {"input": x, "grad_output": dy})
    caps, device = planning_target(be)
    return ConvSpec(p, layout, caps=caps, device=device, max_workspace_bytes=max_workspace_bytes, has_bias=has_bias,
                    options=option_items(extra), misaligned=frozenset(misaligned), operator=WGRAD,
                    deterministic=deterministic)
