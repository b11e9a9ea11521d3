"""The call path every op shares: validate → plan (memoized) → run.

An op is a function with PyTorch's signature whose body hands its arrays and its other arguments
to the op's ``FrontEnd``::

    def avg_pool2d(x, kernel_size, stride=None, ..., *, out=None):
        return _AVG(x, out, args=(kernel_size, stride, ...))

On every call the front end

1. takes PyTorch's unbatched call — the lead array one dimension short — as the batched call with
   a batch axis of 1 added to every batched array (and to a batched size argument such as
   ``input_size``), and drops the axis from the batched outputs (the one place cuconv does this);
2. builds the call's ``CallKey`` — the device, each array's shape, strides and dtype, the other
   arguments — and looks the plan up: after the first call with given shapes, one dictionary
   lookup;
3. on a miss, calls the op's ``plan(be, env, args, extra, misaligned)``, which checks every
   argument (ValueError/TypeError naming the shapes and the rule broken, before any allocation
   or launch) and returns the ``Plan``; a plan that assumes 16-byte aligned arrays is made again
   for a call whose arrays are not;
4. checks that the outputs the caller gave overlap no input, allocates the others, runs the plan
   and returns the outputs.

``plan_of(op)`` is ``plan_X`` for every op ``X``: X's signature, returning the Plan the call would
run instead of running it (arrays may be anything with ``.shape`` and ``.dtype``).
"""
from __future__ import annotations

import functools
import inspect
import threading
from typing import Callable, NamedTuple

import numpy as np

from ..backend import current_backend, planning_target
from ..plan import Plan, PlanCache
from ..problem import shape_arg
from . import _common


class CallKey(NamedTuple):
    """What a memoized plan depends on, from one call's raw arguments: the device, each array's
    (shape, strides, dtype) in role order (None when absent; a shape-and-dtype stand-in has
    strides None), the op's other arguments as passed (the algorithm's extra keyword arguments
    last, as sorted (name, value) pairs), and where the arrays live (the GPU backend: their device
    ids; the CPU backends: None)."""
    device: object
    arrays: tuple
    args: tuple
    devices: object


_new_key = tuple.__new__        # CallKey without the Python-level __new__ (the hot path's one record)
_MODE = threading.local()       # .planning: the next front-end call returns its plan (plan_of)


def _meta(a):
    if a is None:
        return None
    return (a.shape, getattr(a, "strides", None), a.dtype)


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

    ``roles``: the op's array arguments, in the order the op passes them (inputs, then the outputs
    it takes as ``out=``); ``plan(be, env, args, extra, misaligned) -> Plan`` validates and plans
    (``env``: role -> the backend's array, or a stand-in when planning); ``batched``: the roles
    with a batch axis, the lead first, as a tuple (batched rank ``rank``) or a dict role -> its
    batched rank (an unbatched call: the lead one dimension short); ``batched_size``: the index
    in ``args`` of a shape argument with a batch axis; ``names``: role -> the argument's name in
    messages; ``array_options``: extra keyword arguments that are arrays the kernels read (passed
    to the plan by role); ``result(env)``: what the call returns (default: the plan's outputs, one
    array or a tuple).
    """

    def __init__(self, op: str, roles: tuple[str, ...], plan: Callable, *, batched=(),
                 rank: int = 4, batched_size: int | None = None, names: dict | None = None,
                 array_options: tuple[str, ...] = (), result: Callable | None = None):
        self.op = op
        self.roles = roles
        self.build = plan
        self.batched = dict(batched) if isinstance(batched, dict) else {r: rank for r in batched}
        lead = next(iter(self.batched), None)
        self._lead = None if lead is None else roles.index(lead)
        self._unbatched_rank = None if lead is None else self.batched[lead] - 1
        self.batched_size = batched_size
        self.names = dict(names or {})
        self.array_options = array_options
        self._array_options = frozenset(array_options)
        self.result = result
        self.plans = PlanCache()
        self._plans = self.plans.dict_view()    # the hot path's lookup, without a method call

    # --- the call --------------------------------------------------------------------------
    def __call__(self, *arrays, args: tuple = (), extra: dict | None = None):
        unbatched = self._lead is not None and getattr(arrays[self._lead], "ndim", None) == self._unbatched_rank
        if unbatched:
            arrays, args = self._with_batch_axis(arrays, args)
        be = current_backend()
        planning = getattr(_MODE, "planning", False)
        if planning:
            _MODE.planning = False          # this call only: the plan's own work runs ops normally
        # The hot path: the backend's own arrays, the key, one dictionary lookup.
        t = be.array_type
        plan = None
        if not planning and not (extra and extra.keys() & self._array_options):
            metas = []
            for a in arrays:
                if a is None:
                    metas.append(None)
                elif a.__class__ is t:
                    metas.append((a.shape, a.strides, a.dtype))
                else:
                    metas = None
                    break
            if metas is not None:
                key = _new_key(CallKey, (be.device_key(), tuple(metas), (*args, option_items(extra)) if extra else args,
                                         be.devices(*arrays)))
                try:
                    plan = self._plans.get(key)
                except TypeError:            # an unhashable argument: planned uncached below
                    plan = None
        if plan is None or plan.aligned:
            plan, env = self.plan(be, arrays, args, extra, planning)
            if planning:
                return plan
        else:
            env = dict(zip(self.roles, arrays))
        for o in plan.outputs:
            a = env.get(o.role)
            if a is None:
                env[o.role] = be.empty(o.shape, o.dtype)
            else:       # a given output must not share memory with an input or an output written before it
                _common.check_no_overlap(a, [(self.names.get(r, r), env.get(r)) for r in self._before(plan, o.role)],
                                         self.names.get(o.role, o.role))
        plan.execute(be, env)
        if unbatched:
            for r, rank in self.batched.items():
                a = env.get(r)
                if a is not None and a.ndim == rank:
                    env[r] = a[0]
        if self.result is not None:
            return self.result(env)
        outs = plan.outputs
        if len(outs) == 1:
            return env[outs[0].role]
        return tuple([env[o.role] for o in outs])

    def plan(self, be, arrays, args, extra=None, planning: bool = False) -> tuple[Plan, dict]:
        """The plan for these arguments and the arrays by role (converted to the backend's;
        ``planning``: stand-ins with ``.shape`` and ``.dtype`` are kept as they are)."""
        native = _common.native_or_shape if planning else _common.native
        env = {r: native(be, a, self.names.get(r, r)) for r, a in zip(self.roles, arrays)}
        key_args = args
        if extra:
            for k in self.array_options:
                if k in extra:
                    env[k] = native(be, extra[k], k)
            key_args = (*args, option_items(extra))
            extra = {k: env.get(k, v) for k, v in extra.items()}
        given = [env[r] for r in self.roles]
        key = CallKey(planning_target(be)[1], tuple(map(_meta, given)), key_args,
                      None if planning else be.devices(*given))
        arrays_only = {r: a for r, a in env.items() if a is not None and be.is_array(a)}
        plan = self._cached(key, arrays_only, lambda misaligned: self.build(be, env, args, extra or {}, misaligned))
        return plan, env

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

    def _before(self, plan: Plan, role: str) -> list[str]:
        """The roles an output ``role`` must not overlap: the plan's inputs (and array options)
        and the outputs before it."""
        outs = [o.role for o in plan.outputs]
        return [*plan.inputs, *outs[:outs.index(role)]]

    def _with_batch_axis(self, arrays, args):
        """PyTorch's unbatched call as the batched one: a batch axis of 1 (views) on the batched
        arrays one dimension short, and on the batched size argument."""
        if getattr(_MODE, "planning", False):
            lead = self.roles[self._lead]
            raise ValueError(f"plan the batched call: {self.names.get(lead, lead)} shape "
                             f"{tuple(arrays[self._lead].shape)} is unbatched; a {self.op} call on it runs the "
                             "plan of the arrays with a batch axis of 1 added")
        arrays = tuple(a[None] if a is not None and getattr(a, "ndim", None) == self.batched.get(r, 0) - 1 else a
                       for r, a in zip(self.roles, arrays))
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
        previous = getattr(_MODE, "planning", False)
        _MODE.planning = True
        try:
            return op(*args, **kwargs)
        finally:
            _MODE.planning = previous
    plan_x.__name__ = plan_x.__qualname__ = f"plan_{op.__name__}"
    plan_x.__doc__ = (f"The ``Plan`` that ``{op.__name__}`` with the same arguments runs: ``plan.algo``, "
                      "``plan.workspace_bytes``, ``plan.launches`` (kernel, grid, block, shared memory) and "
                      "``plan.run(...)``. Arrays may be anything with ``.shape`` and ``.dtype``.")
    plan_x.__signature__ = inspect.signature(op).replace(return_annotation=Plan)
    return plan_x
