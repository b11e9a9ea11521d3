"""The convolution gradients as ops (``cuconv.grad``): torch.nn.grad's functions, with plans.

The textbook's §9.8 gives the three gradients of ``y = conv2d(x, w) + b``:

* ``conv2d_input(input_size, weight, grad_output, ...)`` — dx, the ``DGRAD`` pass: the full
  convolution of dy with the rotated filter (ops/conv_dgrad.py, depthwise_grad.py; tc_grad.py for
  float16/bfloat16);
* ``conv2d_weight(input, weight_size, grad_output, ...)`` — dW, the ``WGRAD`` pass: the
  correlation of x with dy (conv_wgrad.py's split-K GEMM, reduced deterministically unless
  ``deterministic=False``; depthwise_grad.py; tc_grad.py);
* ``conv2d_bias(grad_output)`` — db, dy summed over N, P and Q;

``conv2d_backward`` computes any of the three in one plan (db fused into the wgrad kernel when
both are asked for) — what the autograd layers of ``cuconv.torch`` call.

Each is validate → select → ``plan.run`` like ``conv2d``: the conv front end checks the
arguments once per argument shapes (ops/_conv_frontend.py), ``conv2d.select`` picks the pass's
algorithm — ``algo``: "auto" (ops/heuristics.py's ``DGRAD_RULES`` / ``WGRAD_RULES``) or a name
from ``algorithms(problem, which)`` — and later calls look the plan up (``plan_*`` returns it).
Extra keyword arguments go to the named algorithm (``config=`` for implicit_gemm, ``splits=``
for the weight gradient's split-K algorithms). Outputs are allocated on the current backend
(CuPy's pool and stream on the GPU) unless ``out=`` is given; every element is written.

Layouts: the gradient kernels read NCHW/KCRS. ``layout="NHWC"`` is accepted by conv2d_input and
conv2d_weight and runs the NCHW plan on transposed copies (one copy of each input and of the
output, each a ``CopyStep`` of the plan: ``plan.conversions`` lists them): correct, not native.
"""
from __future__ import annotations

import numpy as np

from ..backend import planning_target, workspace_cap
from ..dtypes import TENSOR_CORE_DTYPES
from ..plan import Output, Plan, combine, through_copies
from ..problem import Conv2dProblem, bool_arg, shape_arg
from . import conv2d, conv_wgrad, tc_grad
from ._algorithm import DGRAD, WGRAD, AlgorithmInfo, ConvSpec
from ._conv_frontend import (
    ROLE_NAMES,
    check_dtypes,
    check_layout,
    check_outputs,
    check_workspace_cap,
    dgrad_spec,
    forward_problem,
    wgrad_spec,
)
from ._frontend import FrontEnd, option_items, plan_of

# The gradient algorithms (either pass), and the gradients algorithms() describes.
CONV_ALGOS = tuple(conv2d.ALGORITHMS_BY_PASS[DGRAD])
WHICH = ("input", "weight")
_NAMES = {**ROLE_NAMES, "dx": "out", "dw": "out", "db": "out_bias"}


# --------------------------------------------------------------------------- NHWC through NCHW plans
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def _nchw(a):
    """A stand-in for the NHWC (KRSC) array ``a``, 4-D, read as NCHW (KCRS)."""
    return None if a is None else conv2d.Shape(tuple(a.shape[i] for i in TO_NCHW), a.dtype)


def _nhwc_plan(be, env, args, extra, inner, op, ins, out):
    """An NHWC call of ``op`` as the NCHW plan ``inner(be, stand-ins, args with the NCHW size, extra,
    misaligned)`` makes, with a transposed copy (plan.CopyStep) of each input in ``ins`` and of
    the output ``out`` (the plan lists them: Plan.conversions)."""
    size = shape_arg(args[0], "size")
    nchw_size = tuple(size[i] for i in TO_NCHW) if len(size) == 4 else size
    plan = inner(be, {**{r: _nchw(env[r]) for r in ins}, out: None}, (nchw_size, *args[1:]), extra, frozenset())
    dt = plan.expected[0][2]
    nhwc = tuple(plan.outputs[0].shape[i] for i in TO_NHWC)
    check_outputs(be, [("out", env[out], nhwc, dt)], {r: env[r] for r in ins})
    return through_copies(plan, op, [(r, tuple(env[r].shape), TO_NCHW) for r in ins], [(out, nhwc, TO_NHWC)],
                          [(r, tuple(env[r].shape), dt) for r in ins],
                          "NHWC on the NCHW kernels: transposed copies of the inputs and of the output")


# --------------------------------------------------------------------------- conv2d_input
def _plan_input(be, env, args, extra, misaligned) -> Plan:
    input_size, stride, padding, dilation, groups, algo = args
    spec = dgrad_spec(be, env["w"], env["dy"], env["dx"], input_size, stride, padding, dilation, groups, extra,
                      misaligned)
    return conv2d.select(spec, algo)


_INPUT = FrontEnd("conv2d_input", ("w", "dy", "dx"), _plan_input, batched=("dy", "dx"), batched_size=0,
                  names=_NAMES)
_INPUT_NHWC = FrontEnd("conv2d_input", ("w", "dy", "dx"), lambda be, env, args, extra, misaligned: _nhwc_plan(
    be, env, args, extra, _plan_input, "conv2d_input", ("w", "dy"), "dx"), batched=("dy", "dx"), batched_size=0,
    names=_NAMES)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *, algo="auto",
                 layout="NCHW", out=None, **extra):
    """∂L/∂x of ``y = conv2d(x, weight, stride, padding, dilation, groups)`` given ``grad_output``
    = ∂L/∂y, as torch.nn.grad.conv2d_input. ``input_size``: x's shape (3-D for an unbatched
    grad_output). Returns ``out`` (allocated when None), every element written. The plan's roles:
    inputs ``w``, ``dy``, output ``dx``, all NCHW (``layout="NHWC"``: NHWC/KRSC, through copies)."""
    front = _INPUT_NHWC if check_layout(layout) == "NHWC" else _INPUT
    return front({"w": weight, "dy": grad_output, "dx": out},
                  (input_size, stride, padding, dilation, groups, algo), extra)


plan_conv2d_input = plan_of(conv2d_input)


# --------------------------------------------------------------------------- conv2d_weight
def _plan_weight(be, env, args, extra, misaligned) -> Plan:
    weight_size, stride, padding, dilation, groups, algo, deterministic, max_workspace_bytes = args
    spec = wgrad_spec(be, env["x"], env["dy"], env["dw"], None, weight_size, stride, padding, dilation, groups,
                      deterministic, max_workspace_bytes, extra, misaligned)
    return conv2d.select(spec, algo)


_WEIGHT = FrontEnd("conv2d_weight", ("x", "dy", "dw"), _plan_weight, batched=("dy", "x"), names=_NAMES)
_WEIGHT_NHWC = FrontEnd("conv2d_weight", ("x", "dy", "dw"), lambda be, env, args, extra, misaligned: _nhwc_plan(
    be, env, args, extra, _plan_weight, "conv2d_weight", ("x", "dy"), "dw"), batched=("dy", "x"), names=_NAMES)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,  # noqa: A002
                  algo="auto", layout="NCHW", out=None, deterministic=True, max_workspace_bytes=None, **extra):
    """∂L/∂w of ``y = conv2d(input, w, ...)`` given ``grad_output``, as
    torch.nn.grad.conv2d_weight. The reduction over N·P·Q is split across blocks (split-K) and
    summed in a fixed order: bit-identical across runs. ``deterministic=False`` permits
    atomicAdd accumulation (float32/float64; no workspace, low bits vary between runs).
    ``max_workspace_bytes`` bounds the split-K workspace (None: 64 MiB, within a quarter of the
    device's memory). The plan's roles: inputs ``x``, ``dy``, output ``dw`` (NCHW/KCRS; ``layout="NHWC"``:
    NHWC/KRSC, through copies)."""
    front = _WEIGHT_NHWC if check_layout(layout) == "NHWC" else _WEIGHT
    return front({"x": input, "dy": grad_output, "dw": out},
                   (weight_size, stride, padding, dilation, groups, algo, deterministic, max_workspace_bytes), extra)


plan_conv2d_weight = plan_of(conv2d_weight)


# --------------------------------------------------------------------------- conv2d_bias
def bias_plan(dtype: str, N: int, K: int, PQ: int, expected, device) -> Plan:
    """db = dy (N, K, ...) summed over N and the P·Q other elements of each channel, in a fixed order
    (one block per channel): the bias gradient of a convolution or a linear layer. A size beyond
    the kernel's 32-bit arguments is a ValueError naming it (_common.i32)."""
    kernels = tc_grad if dtype in TENSOR_CORE_DTYPES else conv_wgrad
    launches = (kernels.bias_launch(dtype, N, K, PQ),) if K else ()
    return Plan("conv2d_bias", "reduce" if K else "none", None, launches, ("dy",),
                (Output("db", (K,), conv2d.numpy_dtype(dtype)),), device, expected=tuple(expected))


def _plan_bias(be, env, args, extra, misaligned) -> Plan:
    dy, out = env["dy"], env["db"]
    dt = check_dtypes(grad_output=dy, out=out)
    if len(dy.shape) < 2:
        raise ValueError(f"grad_output must have a batch and a channel axis (N, K, ...), got shape {tuple(dy.shape)}")
    N, K = int(dy.shape[0]), int(dy.shape[1])
    PQ = int(np.prod(dy.shape[2:], dtype=np.int64))
    check_outputs(be, [("out", out, (K,), dt)], {"grad_output": dy})
    return bias_plan(dt, N, K, PQ, (("dy", tuple(dy.shape), dt),), planning_target(be)[1])


_BIAS = FrontEnd("conv2d_bias", ("dy", "db"), _plan_bias, batched=("dy",), names=_NAMES)


def conv2d_bias(grad_output, *, out=None):
    """∂L/∂b of a convolution's bias: ``grad_output`` (N, K, ...) summed over every axis but the
    channel axis 1, in a fixed order (deterministic). Returns ``out`` (K,)."""
    return _BIAS({"dy": grad_output, "db": out})


plan_conv2d_bias = plan_of(conv2d_bias)


# --------------------------------------------------------------------------- conv2d_backward
def _wgrad_cap(caps, max_workspace_bytes, plans) -> int | None:
    """The weight gradient's max_workspace_bytes in conv2d_backward: what the ``plans`` before it
    (the dgrad's) leave of the caller's max_workspace_bytes, else of the device's default cap
    (backend.workspace_cap); None — auto's default, the split-K partials within
    conv_wgrad.DEFAULT_MAX_WORKSPACE_BYTES — while that leaves at least as much."""
    used = sum(pl.workspace_bytes for pl in plans)
    if max_workspace_bytes is not None:
        return max(0, max_workspace_bytes - used)
    left = max(0, workspace_cap(caps, None)[0] - used)
    return None if left >= conv_wgrad.DEFAULT_MAX_WORKSPACE_BYTES else left


def _plan_backward(be, env, args, extra, misaligned) -> Plan:
    mask, stride, padding, dilation, groups, algo, weight_algo, deterministic, max_workspace_bytes = args
    x, w, dy = env["x"], env["w"], env["dy"]
    if not (isinstance(mask, tuple) and len(mask) == 3 and all(isinstance(m, (bool, np.bool_)) for m in mask)):
        raise TypeError(f"output_mask must be a tuple of three bools (input, weight, bias), got {mask!r}")
    dt = check_dtypes(input=x, weight=w, grad_output=dy)
    p = forward_problem("conv2d_backward", x.shape, w.shape, dy, stride, padding, dilation, groups, dt)
    check_outputs(be, [], {"input": x, "weight": w, "grad_output": dy})
    caps, device = planning_target(be)
    check_workspace_cap(max_workspace_bytes)
    plans = []
    if mask[0]:
        plans.append(conv2d.select(ConvSpec(p, caps=caps, device=device, max_workspace_bytes=max_workspace_bytes,
                                            misaligned=misaligned, operator=DGRAD), algo))
    if mask[1]:      # within what the dgrad's plan left of the workspace cap
        plans.append(conv2d.select(ConvSpec(p, caps=caps, device=device,
                                            max_workspace_bytes=_wgrad_cap(caps, max_workspace_bytes, plans),
                                            has_bias=mask[2], options=option_items(extra), misaligned=misaligned,
                                            operator=WGRAD,
                                            deterministic=bool_arg(deterministic, "deterministic")),
                                   weight_algo))
    elif mask[2]:
        plans.append(bias_plan(dt, p.N, p.K, p.P * p.Q, (), device))
    return combine("conv2d_backward", p, plans, ("x", "w", "dy"), [o for pl in plans for o in pl.outputs],
                   (("x", p.input_shape, dt), ("w", p.weight_shape, dt), ("dy", p.output_shape, dt)), device)


_BACKWARD = FrontEnd("conv2d_backward", ("x", "w", "dy"), _plan_backward, batched=("x", "dy", "dx"),
                     names=_NAMES, result=lambda env: (env.get("dx"), env.get("dw"), env.get("db")))


def conv2d_backward(input, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,  # noqa: A002
                    output_mask=(True, True, True), algo="auto", weight_algo="auto", deterministic=True,
                    max_workspace_bytes=None, weight_options=None):
    """(dx, dw, db) of ``y = conv2d(input, weight, bias, ...)`` in one plan (PyTorch's
    convolution_backward): the gradients ``output_mask`` (input, weight, bias) asks for, None
    for the others; db is fused into the wgrad kernel when dw is computed too. ``algo`` picks
    the dgrad, ``weight_algo`` the wgrad; ``weight_options``: keyword arguments for the named
    ``weight_algo`` (``config=``, ``splits=``). ``max_workspace_bytes`` caps the plan's workspace
    (None: auto's default, a quarter of the device's memory): the dgrad plans within it, the wgrad
    within what the dgrad left. NCHW; unbatched 3-D inputs as PyTorch takes them. The plan's
    roles: inputs ``x``, ``w``, ``dy``; outputs ``dx``, ``dw``, ``db`` (those the mask asks for)."""
    mask = tuple(output_mask) if isinstance(output_mask, list) else output_mask
    if not isinstance(weight_options, (dict, type(None))):
        raise TypeError(f"weight_options must be a dict of keyword arguments or None, got {weight_options!r}")
    return _BACKWARD({"x": input, "w": weight, "dy": grad_output},
                     (mask, stride, padding, dilation, groups, algo, weight_algo, deterministic,
                      max_workspace_bytes), weight_options)


plan_conv2d_backward = plan_of(conv2d_backward)


# --------------------------------------------------------------------------- algorithms
def algorithms(problem: Conv2dProblem, which: str = "input", *, deterministic: bool = True, bias: bool = False,
               max_workspace_bytes: int | None = None) -> list[AlgorithmInfo]:
    """Every gradient algorithm on the forward ``problem``, as ``cuconv.algorithms`` lists the
    forward's: for ``which="input"`` (dgrad) or ``"weight"`` (wgrad, with db fused when ``bias``),
    whether it can run, why not, its workspace, its plan (on the current backend's device) and,
    on the one ``auto`` takes, the rule that takes it."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if not isinstance(problem, Conv2dProblem):
        raise TypeError(f"problem must be a Conv2dProblem, got {type(problem).__name__}")
    operator = DGRAD if which == "input" else WGRAD
    spec = conv2d.spec_of(problem, operator, deterministic=deterministic, has_bias=bias and operator == WGRAD,
                          max_workspace_bytes=max_workspace_bytes)
    return conv2d.infos(spec)
