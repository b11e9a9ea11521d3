"""The conv2d call path shared by every convolution front end: validate → plan → launch.

``ConvFrontEnd(select)`` is what ``cuconv.conv2d``, ``tc_conv2d`` and ``depthwise_conv2d``
have in common: on the first call with given argument shapes it checks every argument once
(ValueError/TypeError naming the shapes and the rule broken, before any launch), builds the
frozen ``ConvSpec`` and asks ``select(spec, algo)`` for the plan; the plan is memoized under a
key made of the raw arguments (shapes, strides, dtypes, the hyperparameters, the device), so a
later call with the same shapes is: convert the arrays, build the key, one dictionary lookup,
allocate the output, launch.
"""
from __future__ import annotations

import functools

import numpy as np

from ..backend import current_backend, planning_target
from ..dtypes import FLOAT_DTYPES
from ..plan import Plan, PlanCache
from ..problem import Conv2dProblem
from . import _common
from ._algorithm import LAYOUTS, ConvSpec

# The names the error messages use for the plan roles.
_ROLE_NAMES = {"x": "input", "w": "weight"}


def layout_shapes(x_shape, w_shape, layout: str):
    """Input and weight shapes in NCHW/KCRS terms (the one definition of a convolution)."""
    if layout == "NHWC":
        return (x_shape[0], x_shape[3], x_shape[1], x_shape[2]), (w_shape[0], w_shape[3], w_shape[1], w_shape[2])
    return tuple(x_shape), tuple(w_shape)


def build_spec(be, x, w, bias, residual, out, stride, padding, dilation, groups, activation,
               max_workspace_bytes, layout, allow_tf32, extra: dict, misaligned=frozenset(),
               float_only: bool = True) -> ConvSpec:
    """Check every conv2d argument (arrays or anything with .shape/.dtype) and describe the call.
    ``float_only=False`` (``cuconv.algorithms`` on a problem) lets any dtype through, for each
    algorithm to say why it refuses it."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if allow_tf32 not in (None, True, False):
        raise TypeError(f"allow_tf32 must be True, False or None, got {allow_tf32!r}")
    arrays = be is not None and be.is_array(x)
    for name, a in (("input", x), ("weight", w)):
        if len(a.shape) != 4:
            raise ValueError(f"{name} must be 4-D (or 3-D unbatched for the input), got shape {tuple(a.shape)}")
    dtype = np.dtype(x.dtype)
    if float_only and dtype.name not in FLOAT_DTYPES:
        raise TypeError(f"convolution takes floating-point arrays ({', '.join(FLOAT_DTYPES)}), got input "
                        f"dtype {dtype.name} (shape {tuple(x.shape)})")
    if np.dtype(w.dtype) != dtype:
        raise TypeError(f"input and weight must have the same dtype, got {dtype.name} and {np.dtype(w.dtype).name}")
    x_shape, w_shape = layout_shapes(x.shape, w.shape, layout)
    try:
        problem = Conv2dProblem.from_shapes(x_shape, w_shape, stride, padding, dilation, groups, dtype.name)
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
    options = tuple(sorted((k, _option_value(v)) for k, v in extra.items()))
    return ConvSpec(problem, layout, caps, device, allow_tf32, max_workspace_bytes, bias is not None,
                    residual is not None, act, options, frozenset(misaligned))


def unbatched(x, *others):
    """PyTorch's unbatched call: a 3-D input (and residual/out) gets a batch axis of 1 (views)."""
    return (x[None], *(a[None] if a is not None and getattr(a, "ndim", 0) == 3 else a for a in others))


def _option_value(v):
    """An algorithm option as the spec keeps it: arrays by (shape, dtype) — the plan depends on
    their presence and shape only; lists as tuples (the spec is a dictionary key)."""
    if isinstance(v, list):
        return tuple(_option_value(e) for e in v)
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return ("array", tuple(v.shape), np.dtype(v.dtype).name)
    return v


class ConvFrontEnd:
    """validate → select → run, with the plans memoized (see the module docstring).

    ``select(spec, algo) -> Plan`` picks and plans the algorithm (raising ValueError with the
    reason when it cannot). ``array_options`` are the extra keyword arguments that are arrays
    the kernels read (Winograd's ``transformed_weight``): passed to the plan by role.
    """

    def __init__(self, select, array_options=("transformed_weight",)):
        self.select = select
        self.array_options = array_options
        self.plans = PlanCache()
        self._plans = self.plans.dict_view()    # the hot path's lookup, without a method call

    def plan(self, be, x, w, bias, residual, out, stride, padding, dilation, groups, algo, activation,
             max_workspace_bytes, layout, allow_tf32, extra: dict, arrays_required: bool = True
             ) -> tuple[Plan, dict]:
        """The plan for these arguments, and the arrays by role (converted to the backend's).
        ``arrays_required=False`` (plan_conv2d): anything with ``.shape`` and ``.dtype`` stands
        for an array (taken as contiguous and aligned)."""
        if getattr(x, "ndim", None) == 3 or len(getattr(x, "shape", ())) == 3:
            raise ValueError(f"plan the batched call: input shape {tuple(x.shape)} is unbatched (3-D); a "
                             "conv2d call on it runs the plan of the input with a batch axis of 1 added")
        native = _common.native if arrays_required else _common.native_or_shape
        env = {"x": native(be, x, "input"), "w": native(be, w, "weight"), "bias": native(be, bias, "bias"),
               "residual": native(be, residual, "residual"), "out": native(be, out, "out")}
        if extra:
            for k in self.array_options:
                if k in extra:
                    env[k] = native(be, extra[k], k)
        meta = be.meta if arrays_required else functools.partial(_common.meta_or_shape, be)
        if extra:
            key = (be.device_key(), meta(env["x"]), meta(env["w"]), meta(env["bias"]), meta(env["residual"]),
                   meta(env["out"]), stride, padding, dilation, groups, algo, activation, max_workspace_bytes,
                   layout, allow_tf32, tuple(sorted((k, meta(env[k]) if k in env else v) for k, v in extra.items())))
        else:   # the key of the hot path in __call__
            x_, w_, b_, r_, o_ = (env[r] for r in ("x", "w", "bias", "residual", "out"))
            key = (be.device_key(), *meta(x_)[:3], *meta(w_)[:3], None if b_ is None else meta(b_)[:3],
                   None if r_ is None else meta(r_)[:3], None if o_ is None else meta(o_), stride, padding,
                   dilation, groups, algo, activation, max_workspace_bytes, layout, allow_tf32,
                   be.devices(x_, w_, b_, r_, o_) if arrays_required else None)

        def build(misaligned):
            spec = build_spec(be, env["x"], env["w"], env["bias"], env["residual"], env["out"], stride, padding,
                              dilation, groups, activation, max_workspace_bytes, layout, allow_tf32,
                              {k: env.get(k, v) for k, v in extra.items()}, misaligned)
            return self.select(spec, algo)

        arrays = env if arrays_required else {r: a for r, a in env.items() if be.is_array(a)}
        return _common.cached_plan(self.plans, key, arrays, build), env

    def __call__(self, x, w, bias, stride, padding, dilation, groups, algo, activation, residual, out,
                 max_workspace_bytes, layout, allow_tf32, extra: dict):
        if getattr(x, "ndim", None) == 3:     # unbatched (C, H, W) / (H, W, C), as PyTorch takes it
            x, residual, out = unbatched(x, residual, out)
            return self(x, w, bias, stride, padding, dilation, groups, algo, activation, residual, out,
                        max_workspace_bytes, layout, allow_tf32, extra)[0]
        be = current_backend()
        # The hot path, inlined: the backend's own arrays, a key of shapes/strides/dtypes and the
        # hyperparameters, one dictionary lookup. Anything else takes self.plan (which also
        # converts foreign arrays and handles alignment-dependent plans).
        t = be.array_type
        plan = None
        if (x.__class__ is t and w.__class__ is t and (bias is None or bias.__class__ is t)
                and (residual is None or residual.__class__ is t) and not extra):
            try:
                plan = self._plans.get((
                    be.device_key(), x.shape, x.strides, x.dtype, w.shape, w.strides, w.dtype,
                    None if bias is None else (bias.shape, bias.strides, bias.dtype),
                    None if residual is None else (residual.shape, residual.strides, residual.dtype),
                    None if out is None else be.meta(out), stride, padding, dilation, groups, algo,
                    activation, max_workspace_bytes, layout, allow_tf32, be.devices(x, w, bias, residual, out)))
            except TypeError:     # unhashable arguments: self.plan validates and plans uncached
                plan = None
        if plan is None or plan.aligned:
            plan, env = self.plan(be, x, w, bias, residual, out, stride, padding, dilation, groups, algo,
                                  activation, max_workspace_bytes, layout, allow_tf32, extra)
        else:
            env = {"x": x, "w": w, "bias": bias, "residual": residual, "out": out}
        if out is not None:
            _common.check_no_overlap(env["out"], [(_ROLE_NAMES.get(r, r), env.get(r)) for r in
                                                  ("x", "w", "bias", "residual", *self.array_options)])
        else:
            o = plan.outputs[0]
            env["out"] = out = be.empty(o.shape, o.dtype)
        plan.execute(be, env)
        return env["out"]
