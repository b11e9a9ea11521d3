"""The call path every op shares: validate → plan (memoized) → run.

An op is a function with PyTorch's signature whose body hands its arrays, by role, and its other
arguments to the op's ``FrontEnd``::

    def avg_pool2d(x, kernel_size, stride=None, ..., *, out=None):
        return _AVG({"x": x, "out": out}, (kernel_size, stride, ...))

On every call the front end

1. takes PyTorch's unbatched call — the lead array one dimension short — as the batched call with
   a batch axis of 1 added to every batched array (and to a batched size argument such as
   ``input_size``), and drops the axis from the batched outputs (the one place cuconv does this);
2. builds the call's ``CallKey`` — the device, each array's shape, strides and dtype, the other
   arguments — and looks the plan up: after the first call with given shapes, one dictionary
   lookup;
3. on a miss, calls the op's ``plan(be, env, args, extra, misaligned)``, which checks every
   argument (ValueError/TypeError naming the shapes and the rule broken, before any allocation
   or launch) and returns the ``Plan``, refused (ValueError) when it names a kernel not built for
   the device's compute capability; a plan that assumes 16-byte aligned arrays is made again
   for a call whose arrays are not;
4. checks that the outputs the caller gave overlap no input, allocates the others, runs the plan
   and returns the outputs.

``plan_of(op)`` is ``plan_X`` for every op ``X``: X's signature, returning the Plan the call would
run instead of running it (arrays may be anything with ``.shape`` and ``.dtype``).
"""
from __future__ import annotations

import contextvars
import functools
import inspect
from typing import Callable, NamedTuple

import numpy as np

from ..backend import current_backend, planning_target
from ..plan import Plan, PlanCache, PlanError, arch_refusal, with_input_copies
from ..problem import shape_arg
from . import _common


class CallKey(NamedTuple):
    """What a memoized plan depends on, from one call's raw arguments: the device, each array's
    (shape, strides, dtype) in role order (None when absent; a shape-and-dtype stand-in has
    strides None), the op's other arguments as passed (the algorithm's extra keyword arguments
    last, as sorted (name, value) pairs), and where the arrays live (the GPU backend: their device
    ids; the CPU backends: None). The hot path builds it as a plain tuple (equal, hashing alike)."""
    device: object
    arrays: tuple
    args: tuple
    devices: object


# Set by plan_X for the front-end call it makes: that call returns its plan instead of running it.
_PLANNING: contextvars.ContextVar = contextvars.ContextVar("cuconv_planning", default=False)


def _meta(a):
    """An array's part of the key (the backend's own arrays: the slow path converts the others);
    a shape-and-dtype stand-in's strides are None."""
    if a is None:
        return None
    return (a.shape, getattr(a, "strides", None), a.dtype)


def _metas_function(roles: tuple[str, ...]) -> Callable:
    """``metas(arrays, t)``: the hot path's array part of the key — each role's (shape, strides,
    dtype), None where absent, in ``roles`` order — or None when an array is not of class ``t``
    (the backend's own: the slow path converts the others or says what is wrong). Generated as
    straight-line code for ``roles`` (as dataclasses generates ``__init__``): a loop over the
    roles costs as much again as the rest of a cached call."""
    n = len(roles)
    lines = ["def metas(arrays, t):", *(f"    a{i} = arrays[{r!r}]" for i, r in enumerate(roles)),
             "    if not (" + " and ".join(f"(a{i} is None or a{i}.__class__ is t)" for i in range(n)) + "):",
             "        return None",
             "    return (" + "".join(f"None if a{i} is None else (a{i}.shape, a{i}.strides, a{i}.dtype), "
                                    for i in range(n)) + ")"]
    namespace: dict = {}
    exec("\n".join(lines), namespace)     # noqa: S102 — the source is built above from role names
    return namespace["metas"]


def option_items(extra: dict) -> tuple:
    """An algorithm's extra keyword arguments as part of the key: arrays by (shape, dtype) — a plan
    depends on their presence and shape only —, lists as tuples."""
    def value(v):
        if isinstance(v, list):
            return tuple(value(e) for e in v)
        if hasattr(v, "shape") and hasattr(v, "dtype"):
            return ("array", tuple(v.shape), np.dtype(v.dtype).name)
        return v
    return tuple(sorted((k, value(v)) for k, v in extra.items()))


class FrontEnd:
    """validate → plan (memoized) → run, for one op (see the module docstring).

    ``roles``: the op's array arguments (inputs, then the outputs it takes as ``out=``), the keys
    of the dict the op hands over, in that order; ``plan(be, env, args, extra, misaligned) ->
    Plan`` validates and plans (``env``: role -> the backend's array, or a stand-in when
    planning); ``batched``: the roles with a batch axis, the lead first, as a tuple (batched rank
    ``rank``) or a dict role -> its batched rank (an unbatched call: the lead one dimension
    short); ``batched_size``: the index in ``args`` of a shape argument with a batch axis;
    ``names``: role -> the argument's name in messages; ``array_options``: extra keyword
    arguments that are arrays the kernels read (passed to the plan by role); ``result(env)``:
    what the call returns (default: the plan's outputs, one array or a tuple).
    """

    def __init__(self, op: str, roles: tuple[str, ...], plan: Callable, *, batched=(),
                 rank: int = 4, batched_size: int | None = None, names: dict | None = None,
                 array_options: tuple[str, ...] = (), result: Callable | None = None):
        self.op = op
        self.roles = roles
        self._metas = _metas_function(roles)
        self.build = plan
        self.batched = dict(batched) if isinstance(batched, dict) else {r: rank for r in batched}
        self._lead = next(iter(self.batched), None)
        self.batched_size = batched_size
        self.names = dict(names or {})
        self.array_options = array_options
        self._array_options = frozenset(array_options)
        self.result = result
        self.plans = PlanCache()
        # The hot path's plans: those of calls whose inputs were C-contiguous and whose plans do
        # not depend on alignment (its lookup is the dict itself, without a method call).
        self.hot = PlanCache()
        self._hot = self.hot.dict_view()

    # --- the call --------------------------------------------------------------------------
    def __call__(self, arrays: dict, args: tuple = (), extra: dict | None = None):
        """Run the op on ``arrays`` (role -> the caller's array or None, in ``roles`` order),
        ``args`` (its other arguments) and ``extra`` (the algorithm's keyword arguments); see the
        module docstring. The hot path: the backend's own arrays, the key, one dictionary lookup."""
        be = current_backend()
        planning = _PLANNING.get()
        unbatched = False
        while True:
            plan = None
            if not planning and not (extra and extra.keys() & self._array_options):
                metas = self._metas(arrays, be.array_type)
                if metas is not None:
                    try:
                        plan = self._hot.get((be.device_key(), metas,
                                              (*args, option_items(extra)) if extra else args,
                                              be.devices(*arrays.values()) if be.multi_device else None))
                    except TypeError:   # an unhashable argument: planned uncached below
                        plan = None
            if plan is not None:        # the op's own dict takes the outputs
                if unbatched:
                    return self.run(be, plan, arrays, contiguous=True, unbatched=True)
                outs = plan.outputs
                for o in outs:
                    if arrays.get(o.role) is None:
                        arrays[o.role] = be.empty(o.shape, o.dtype)
                    else:
                        self._check_output(plan, arrays, o.role)
                plan.execute(be, arrays, None, True)
                if self.result is not None:
                    return self.result(arrays)
                return arrays[outs[0].role] if len(outs) == 1 else tuple([arrays[o.role] for o in outs])
            if unbatched or getattr(arrays.get(self._lead), "ndim", None) != self.batched.get(self._lead, 0) - 1:
                break
            arrays, args = self._with_batch_axis(arrays, args, planning)     # and look again
            unbatched = True
        if planning:
            _PLANNING.set(False)        # this call only (plan_of restores the flag): the plan's work runs ops
        plan, env = self.plan(be, arrays, args, extra, planning)
        if planning:
            return plan
        return self.run(be, plan, env, unbatched=unbatched)

    def run(self, be, plan: Plan, env: dict, contiguous: bool = False, unbatched: bool = False):
        """Allocate the outputs not given (a given one must not share memory with an input or an
        output written before it), launch, return the result (an unbatched call's outputs
        without their batch axis of 1)."""
        for o in plan.outputs:
            if env.get(o.role) is None:
                env[o.role] = be.empty(o.shape, o.dtype)
            else:
                self._check_output(plan, env, o.role)
        plan.execute(be, env, None, contiguous)
        if unbatched:
            for r, rank in self.batched.items():
                a = env.get(r)
                if a is not None and a.ndim == rank:
                    env[r] = a[0]
        if self.result is not None:
            return self.result(env)
        outs = plan.outputs
        return env[outs[0].role] if len(outs) == 1 else tuple([env[o.role] for o in outs])

    def _check_output(self, plan: Plan, env: dict, role: str) -> None:
        outs = [o.role for o in plan.outputs]
        _common.check_no_overlap(env[role], [(self.names.get(r, r), env.get(r))
                                             for r in (*plan.inputs, *outs[:outs.index(role)])],
                                 self.names.get(role, role))

    def plan(self, be, arrays: dict, args, extra=None, planning: bool = False) -> tuple[Plan, dict]:
        """The plan for these arguments and the arrays by role (converted to the backend's;
        ``planning``: stand-ins with ``.shape`` and ``.dtype`` are kept as they are)."""
        if tuple(arrays) != self.roles:     # the hot path's key reads the arrays in this order
            raise TypeError(f"{self.op}: the front end takes the arrays {self.roles}, got {tuple(arrays)}")
        native = _common.native_or_shape if planning else _common.native
        env = {r: native(be, a, self.names.get(r, r)) for r, a in arrays.items()}
        given = list(env.values())
        key_args = args
        if extra:
            for k in self.array_options:
                if k in extra:
                    env[k] = native(be, extra[k], k)
            key_args = (*args, option_items(extra))
            extra = {k: env.get(k, v) for k, v in extra.items()}
        key = CallKey(planning_target(be)[1], tuple(map(_meta, given)), key_args,
                      be.devices(*given) if be.multi_device and not planning else None)
        live = {r: a for r, a in env.items() if a is not None and be.is_array(a)}
        plan = self._cached(key, live, lambda misaligned: self._build(be, env, args, extra or {}, misaligned))
        if (not planning and not plan.aligned and len(live) == len([a for a in given if a is not None])
                and all(a.flags.c_contiguous for r, a in live.items() if r in plan.inputs)):
            self.hot.put(key, plan)         # the hot path's key is this one: the same arrays, strides, arguments
        return plan, env

    def _build(self, be, env: dict, args, extra: dict, misaligned) -> Plan:
        """The op's plan (a miss: the slow path), refused with PlanError when it names a kernel not
        built for the device's compute capability (plan.arch_refusal; issue 23: the bf16 bias
        gradient on sm_75 was planned and failed at launch, after allocation)."""
        plan = self.build(be, env, args, extra, misaligned)
        reason = arch_refusal(plan.launches, planning_target(be)[0].cc)
        if reason is not None:
            raise PlanError(f"{self.op}: {reason}")
        return with_input_copies(plan, env)     # a strided input's dense copy: a step of the plan

    def _cached(self, key, env: dict, build) -> Plan:
        """The plan for ``key`` (unhashable: not cached), built by ``build(misaligned)`` on a miss.

        ``build`` is first asked for the plan of 16-byte aligned arrays (what every allocator
        returns); when this call's arrays are not aligned where that plan assumes it, the plan for
        their actual alignment is built (and cached under the key plus those roles)."""
        try:
            plan = self.plans.get(key)
        except TypeError:
            key = plan = None
        if plan is None:
            plan = build(frozenset())
            if key is not None:
                self.plans.put(key, plan)
        if plan.aligned:
            bad = _common.misaligned_roles(plan.aligned, env)
            if bad:
                key2 = None if key is None else (key, bad)
                plan = self.plans.get(key2) if key2 is not None else None
                if plan is None:
                    plan = build(_common.misaligned_roles(env.keys(), env))
                    if key2 is not None:
                        self.plans.put(key2, plan)
        return plan

    def _with_batch_axis(self, arrays: dict, args: tuple, planning: bool) -> tuple[dict, tuple]:
        """PyTorch's unbatched call as the batched one: a batch axis of 1 (views) on the batched
        arrays one dimension short, and on the batched size argument."""
        lead = self._lead
        if planning:
            raise ValueError(f"plan the batched call: {self.names.get(lead, lead)} shape "
                             f"{tuple(arrays[lead].shape)} is unbatched; a {self.op} call on it runs the plan of "
                             "the arrays with a batch axis of 1 added")
        arrays = {r: a[None] if a is not None and getattr(a, "ndim", None) == self.batched.get(r, 0) - 1 else a
                  for r, a in arrays.items()}
        if self.batched_size is not None:
            args = list(args)
            args[self.batched_size] = (1, *shape_arg(args[self.batched_size], "input_size"))
            args = tuple(args)
        return arrays, args


def plan_of(op: Callable) -> Callable:
    """``plan_X`` for the op ``X``: the same signature and arguments, returning the ``Plan`` the
    call would run (``plan.algo``, ``plan.workspace_bytes``, ``plan.launches``,
    ``plan.run(...)``) instead of running it. Arrays may be anything with ``.shape`` and
    ``.dtype`` (planning needs no data)."""
    @functools.wraps(op)
    def plan_x(*args, **kwargs):
        token = _PLANNING.set(True)
        try:
            return op(*args, **kwargs)
        finally:
            _PLANNING.reset(token)
    plan_x.__name__ = plan_x.__qualname__ = f"plan_{op.__name__}"
    plan_x.__doc__ = (f"The ``Plan`` that ``{op.__name__}`` with the same arguments runs: ``plan.algo``, "
                      "``plan.workspace_bytes``, ``plan.launches`` (kernel, grid, block, shared memory) and "
                      "``plan.run(...)``. Arrays may be anything with ``.shape`` and ``.dtype``.")
    plan_x.__signature__ = inspect.signature(op).replace(return_annotation=Plan)
    return plan_x
