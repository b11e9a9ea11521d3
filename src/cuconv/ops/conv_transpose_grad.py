"""The gradients of the transposed convolution as ops (``cuconv.grad.conv_transpose2d_input``,
``conv_transpose2d_weight``), through the convolution passes (§9.7).

``y = conv_transpose2d(x, w)`` is the data gradient of the convolution ``q`` whose input has y's
shape (``ConvTransposeProblem.as_conv2d``), so

* ∂L/∂x is ``q``'s forward convolution of dy with w (any ``cuconv.algorithms(q)`` algorithm: the
  ``FPROP`` pass), and
* ∂L/∂w is ``q``'s weight gradient with the roles of input and grad_output exchanged (the
  ``WGRAD`` pass, weight (C_in, C_out/groups, R, S)); the bias gradient is ``conv2d_bias(dy)``.

Each is validate → select (ops/conv2d.py) → ``plan.run``; the plan is the pass's plan with its
array roles renamed. ``layout="NHWC"``: x, dy and dx N,H,W,C-ordered, the weight (C_in, R, S,
C_out/groups) — a channels_last ConvTranspose2d weight — which is the KRSC weight of the
convolution ``q``; the passes run in that layout (their algorithms say when they cannot).
"""
from __future__ import annotations

import numpy as np

from ..backend import planning_target
from ..plan import Output, Plan, layout_buffers, relabel
from ..problem import ConvTransposeProblem, bool_arg, shape_arg
from . import conv2d
from ._algorithm import WGRAD, ConvSpec
from ._conv_frontend import (
    ROLE_NAMES,
    check_dtypes,
    check_layout,
    check_outputs,
    check_workspace_cap,
    layout_shapes,
)
from ._frontend import FrontEnd, plan_of

_NAMES = {**ROLE_NAMES, "dx": "out", "dw": "out"}


def _nhwc(shape, layout):
    return (shape[0], shape[2], shape[3], shape[1]) if layout == "NHWC" else tuple(shape)


def _problem(what, x_shape, w_shape, dy, stride, padding, output_padding, groups, dilation, dt, layout):
    note = ("" if layout == "NCHW" else f" [layout NHWC: input {tuple(x_shape)} read as N,H,W,C_in and weight "
            f"{tuple(w_shape)} as C_in,R,S,C_out/groups; grad_output is N,H_out,W_out,C_out]")
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"{what}: the input and weight shapes must be 4-D, got {tuple(x_shape)} and "
                         f"{tuple(w_shape)}{note}")
    try:
        tp = ConvTransposeProblem.from_shapes(*layout_shapes(tuple(x_shape), tuple(w_shape), layout), stride, padding,
                                              output_padding, groups, dilation, dt)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}{note}") from None
    if len(dy.shape) != 4:
        raise ValueError(f"grad_output must be 4-D, got shape {tuple(dy.shape)}{note}")
    if tuple(dy.shape) != _nhwc(tp.output_shape, layout):
        raise ValueError(f"grad_output must have shape {_nhwc(tp.output_shape, layout)} (the output of the forward "
                         f"conv_transpose2d {tp.describe()}), got {tuple(dy.shape)}{note}")
    return tp, tp.as_conv2d()


def _renamed(plan: Plan, op: str, tp, names: dict, prefix: str, output: Output, expected, device) -> Plan:
    """``plan`` (a convolution pass's) as the transposed convolution's gradient: its roles renamed
    by ``names``, its workspace buffers prefixed."""
    launches, parts = relabel(plan, names, prefix)
    buffers, nbytes = layout_buffers(*parts)
    return Plan(op, plan.algo, tp, tuple(launches), tuple(r for r, _, _ in expected), (output,), device,
                workspace_bytes=nbytes, buffers=buffers,
                aligned=tuple(sorted(names[r] for r in plan.aligned if r in names)),
                expected=tuple(expected), description=plan.description)


def _plan_input(be, env, args, extra, misaligned) -> Plan:
    input_size, stride, padding, output_padding, groups, dilation, algo, layout = args
    w, dy, out = env["w"], env["dy"], env["dx"]
    dt = check_dtypes(weight=w, grad_output=dy, out=out)
    tp, q = _problem("conv_transpose2d_input", shape_arg(input_size, "input_size"), w.shape, dy, stride, padding,
                     output_padding, groups, dilation, dt, check_layout(layout))
    dx_shape = _nhwc(tp.input_shape, layout)
    check_outputs(be, [("out", out, dx_shape, dt)], {"weight": w, "grad_output": dy})
    caps, device = planning_target(be)
    spec = ConvSpec(q, layout, caps=caps, device=device,
                    misaligned=frozenset({"dy": "x", "w": "w"}[r] for r in misaligned if r in ("dy", "w")))
    return _renamed(conv2d.select(spec, algo), "conv_transpose2d_input", tp, {"x": "dy", "w": "w", "out": "dx"},
                    "f.", Output("dx", dx_shape, np.dtype(dt)),
                    (("w", tuple(w.shape), dt), ("dy", tuple(dy.shape), dt)), device)


def _plan_weight(be, env, args, extra, misaligned) -> Plan:
    (weight_size, stride, padding, output_padding, groups, dilation, algo, deterministic, max_workspace_bytes,
     layout) = args
    x, dy, out = env["x"], env["dy"], env["dw"]
    dt = check_dtypes(input=x, grad_output=dy, out=out)
    check_workspace_cap(max_workspace_bytes)
    tp, q = _problem("conv_transpose2d_weight", x.shape, shape_arg(weight_size, "weight_size"), dy, stride, padding,
                     output_padding, groups, dilation, dt, check_layout(layout))
    dw_shape = q.weight_shape if layout == "NCHW" else (q.K, q.R, q.S, q.C_per_group)
    check_outputs(be, [("out", out, dw_shape, dt)], {"input": x, "grad_output": dy})
    caps, device = planning_target(be)
    swap = {"x": "dy", "dy": "x"}
    spec = ConvSpec(q, layout, caps=caps, device=device, max_workspace_bytes=max_workspace_bytes,
                    misaligned=frozenset(swap[r] for r in misaligned if r in swap), operator=WGRAD,
                    deterministic=bool_arg(deterministic, "deterministic"))
    return _renamed(conv2d.select(spec, algo), "conv_transpose2d_weight", tp, {"x": "dy", "dy": "x", "dw": "dw"}, "",
                    Output("dw", dw_shape, np.dtype(dt)),
                    (("x", tuple(x.shape), dt), ("dy", tuple(dy.shape), dt)), device)


_INPUT = FrontEnd("conv_transpose2d_input", ("w", "dy", "dx"), _plan_input, batched=("dy", "dx"), batched_size=0,
                  names=_NAMES)
_WEIGHT = FrontEnd("conv_transpose2d_weight", ("x", "dy", "dw"), _plan_weight, batched=("dy", "x"), names=_NAMES)


def conv_transpose2d_input(input_size, weight, grad_output, stride=1, padding=0, output_padding=0, groups=1,
                           dilation=1, *, algo="auto", layout="NCHW", out=None):
    """∂L/∂x of ``y = conv_transpose2d(x, weight, ...)`` (conv_transpose2d's arguments): the
    forward convolution of ``grad_output`` with ``weight`` — the transposed convolution is that
    convolution's data gradient (§9.7) — run by any conv2d algorithm (``algo``: a name from
    ``cuconv.algorithms(ConvTransposeProblem(...).as_conv2d(), layout=layout)``). ``layout="NHWC"``:
    input_size, grad_output and out N,H,W,C-ordered, weight (C_in, R, S, C_out/groups)."""
    return _INPUT({"w": weight, "dy": grad_output, "dx": out},
                  (input_size, stride, padding, output_padding, groups, dilation, algo, layout))


def conv_transpose2d_weight(input, weight_size, grad_output, stride=1, padding=0, output_padding=0,  # noqa: A002
                            groups=1, dilation=1, *, algo="auto", deterministic=True, max_workspace_bytes=None,
                            layout="NCHW", out=None):
    """∂L/∂w of ``y = conv_transpose2d(input, w, ...)``: the wgrad of the convolution whose data
    gradient the transposed convolution is, with its input ``grad_output`` and its output
    gradient ``input``. Weight (C_in, C_out/groups, R, S). The bias gradient is
    ``conv2d_bias(grad_output, layout=layout)``. ``layout="NHWC"``: input and grad_output
    N,H,W,C-ordered, weight_size and out (C_in, R, S, C_out/groups)."""
    return _WEIGHT({"x": input, "dy": grad_output, "dw": out},
                   (weight_size, stride, padding, output_padding, groups, dilation, algo, deterministic,
                    max_workspace_bytes, layout))


plan_conv_transpose2d_input = plan_of(conv_transpose2d_input)
plan_conv_transpose2d_weight = plan_of(conv_transpose2d_weight)
