"""How one ``torch.ops.cuconv`` call runs on cuconv's kernels: its *route*.

A route is the layout cuconv's kernels read ("NCHW" or "NHWC"), the dtype they compute in, the
memory format of the op's tensors, which cuconv function runs it and cuconv's ``Plan`` for the
call. It is chosen once per call signature (shapes, dtypes, memory format, arguments, device)
by asking cuconv, in order of preference, whether it can plan each candidate — so kernels
added later (NHWC or float16 pools, say) are picked up without a change here:

1. the tensors as they are: a ``torch.channels_last`` tensor (PyTorch's
   ``suggest_memory_format`` rule) viewed as NHWC, a contiguous one as NCHW — no copy;
2. the other layout, with explicit copies of the inputs and of the output back to the op's
   memory format;
3. for float16/bfloat16 (``algo="auto"`` only), float32 kernels on converted inputs, the output
   rounded once to the input's dtype.

A route that copies says so: ``Route.steps`` lists the copies and ``Route.describe()`` (the
``description`` of the plans ``cuconv.torch.plan_*`` return) names them and the reason the
direct candidate was refused. When no candidate plans, the error lists every refusal.

The memory-format rule is PyTorch's: an op's output (and a backward op's gradients) is
channels_last when its activation input (for a convolution: the input or the weight) suggests
channels_last, else contiguous, with exactly the strides ``torch.empty(..., memory_format=)``
gives — what the fake implementations in ops.py return.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch._prims_common import are_strides_like_channels_last_or_false, suggest_memory_format

from ..backend import backend as _backend
from ..backend import current_backend
from ..plan import PlanCache
from ._bridge import from_array, to_array

HALF = (torch.float16, torch.bfloat16)


# =========================================================================== memory formats
@functools.lru_cache(maxsize=4096)
def _strides_like_channels_last(shape: tuple, stride: tuple) -> bool:
    return are_strides_like_channels_last_or_false(shape, stride)


def _suggests_channels_last(t) -> bool:
    """``t.suggest_memory_format() == torch.channels_last`` (PyTorch's Python equivalent, memoized
    on concrete shapes and strides; symbolic ones, which do not hash, are not memoized)."""
    try:
        return _strides_like_channels_last(tuple(t.shape), t.stride())
    except TypeError:
        return suggest_memory_format(t) == torch.channels_last


def is_channels_last(*tensors) -> bool:
    """PyTorch's rule for a convolution's memory format (cuDNN's): channels_last when any of the
    4-D ``tensors`` suggests channels_last (``Tensor.suggest_memory_format``)."""
    for t in tensors:
        if t is not None and t.dim() == 4 and _suggests_channels_last(t):
            return True
    return False


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def empty(shape, like: torch.Tensor, channels_last: bool, dtype=None) -> torch.Tensor:
    """An op's output as the fake implementations make it (shape may hold SymInts)."""
    fmt = memory_format(channels_last and len(shape) == 4)
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=fmt)


@functools.lru_cache(maxsize=4096)
def _strides(shape: tuple, channels_last: bool) -> tuple:
    return torch.empty(shape, device="meta", memory_format=memory_format(channels_last and len(shape) == 4)).stride()


def finish(y: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """The op's result: ``y`` itself when it has ``dtype`` and exactly the strides the fake
    implementation promises, else one explicit copy that has."""
    want = _strides(y.shape, channels_last)
    if y.dtype == dtype and y.stride() == want:
        return y
    return torch.empty_strided(y.shape, want, dtype=dtype, device=y.device).copy_(y)


def dense(t, dtype: torch.dtype, layout: str = "NCHW"):
    """``t`` as cuconv's kernels read it: a dense tensor of ``dtype`` in ``layout`` ("NHWC": the
    NHWC-ordered view of a channels_last tensor). No copy when ``t`` already is; else one
    explicit copy (the route lists it). None stays None; 1-D tensors (bias) are made contiguous."""
    if t is None:
        return None
    if t.dim() != 4:
        return t if t.dtype == dtype and t.is_contiguous() else t.to(dtype).contiguous()
    fmt = memory_format(layout == "NHWC")
    if t.dtype != dtype or not t.is_contiguous(memory_format=fmt):
        t = torch.empty_like(t, dtype=dtype, memory_format=fmt).copy_(t)
    return t.permute(0, 2, 3, 1) if layout == "NHWC" else t


def from_layout(y: torch.Tensor, layout: str) -> torch.Tensor:
    """A cuconv result in ``layout`` viewed as an N, C, H, W tensor (NHWC: a channels_last view)."""
    return y.permute(0, 3, 1, 2) if layout == "NHWC" else y


def _nhwc_array(t):
    return to_array(t).transpose(0, 2, 3, 1)


def reader(t, dtype: torch.dtype, layout: str = "NCHW"):
    """``to_array(dense(t, dtype, layout))`` as a function of the tensor, decided once per call
    signature from this call's ``t`` (later calls' tensors have its shape, strides, dtype and
    device): ``to_array`` itself when ``t`` already is dense in ``dtype`` and ``layout``, the NHWC
    view of a channels_last tensor's array, else ``dense``'s explicit copy first. None stays None."""
    if t is None:
        return _none
    if t.dtype == dtype:
        if t.dim() == 4 and layout == "NHWC":
            if t.is_contiguous(memory_format=torch.channels_last):
                return _nhwc_array
        elif t.is_contiguous():
            return to_array
    return lambda t: to_array(dense(t, dtype, layout))


def writer(dtype: torch.dtype, channels_last: bool, layout: str = "NCHW"):
    """``finish(from_layout(from_array(a), layout), dtype, channels_last)`` as a function of the
    array cuconv returns."""
    if layout == "NHWC":
        return lambda a: finish(from_array(a.transpose(0, 3, 1, 2)), dtype, channels_last)
    return lambda a: finish(from_array(a), dtype, channels_last)


def _none(_):
    return None


# =========================================================================== stand-ins
@dataclass(frozen=True)
class Stand:
    """An array's shape and dtype: what cuconv's ``plan_*`` functions take to plan from shapes."""
    shape: tuple
    dtype: np.dtype


@functools.lru_cache(maxsize=None)
def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The NumPy dtype cuconv sees for a torch dtype (bfloat16: ml_dtypes')."""
    return to_array(torch.empty(0, dtype=dtype)).dtype


def stand(shape, dtype: torch.dtype, layout: str = "NCHW") -> Stand | None:
    """A stand-in of an N, C, H, W tensor's shape in ``layout`` (NHWC: N, H, W, C); None stays None."""
    if shape is None:
        return None
    shape = tuple(int(d) for d in shape)
    if layout == "NHWC" and len(shape) == 4:
        shape = (shape[0], shape[2], shape[3], shape[1])
    return Stand(shape, numpy_dtype(dtype))


def zero_strided(shape, dtype: torch.dtype) -> np.ndarray:
    """A NumPy array of ``shape`` and ``dtype`` with a dense array's strides over one element, for
    the ops whose planners take arrays only: planned on the record backend, nothing is read, and
    the plan is the dense call's (zero strides would make it copy the "strided" input first)."""
    dt = numpy_dtype(dtype)
    shape = tuple(int(d) for d in shape)
    strides = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) * dt.itemsize for i in range(len(shape)))
    return np.lib.stride_tricks.as_strided(np.zeros(1, dt), shape, strides, writeable=False)


def on_record_backend(plan_fn):
    """``plan_fn`` run on cuconv's record backend (planning only; for device-independent ops)."""
    @functools.wraps(plan_fn)
    def run(*args, **kwargs):
        with _backend("record"):
            return plan_fn(*args, **kwargs)
    return run


# =========================================================================== routes
@dataclass(frozen=True)
class Candidate:
    """One way to run a call: cuconv's kernels read ``layout`` in ``dtype`` through ``kind``
    (which cuconv function; most ops have one)."""
    layout: str
    dtype: torch.dtype
    kind: str = ""


@dataclass(frozen=True)
class Route:
    """The candidate chosen for a call, cuconv's plan for it, and what the op adds around it."""
    op: str
    layout: str
    dtype: torch.dtype
    kind: str
    channels_last: bool
    steps: tuple[str, ...]
    plan: object = None

    def describe(self) -> str:
        how = "; ".join(self.steps) if self.steps else "no copies"
        return f"cuconv.torch.{self.op}: {self.layout} {str(self.dtype).replace('torch.', '')} kernels, {how}"

    def annotated_plan(self):
        """cuconv's plan with this route's description appended (what ``plan_*`` return)."""
        if self.plan is None:
            return None
        base = getattr(self.plan, "description", "")
        return replace(self.plan, description=f"{base}; {self.describe()}" if base else self.describe())


def candidates(dtype: torch.dtype, channels_last: bool, layouts=("NCHW", "NHWC"), kinds=("",),
               convert: bool = True) -> list[Candidate]:
    """The candidates in order of preference: the tensors' own dtype before float32 (float16 and
    bfloat16 only, when ``convert``), the tensors' layout before the other, ``kinds`` in order."""
    own = "NHWC" if channels_last else "NCHW"
    order = [own, *[lay for lay in layouts if lay != own]] if own in layouts else list(layouts)
    dtypes = [dtype, torch.float32] if convert and dtype in HALF else [dtype]
    return [Candidate(lay, dt, kind) for dt in dtypes for lay in order for kind in kinds]


def stored_as(t) -> str:
    """How a 4-D tensor's memory is laid out: "NHWC" (dense channels_last), "NCHW" (contiguous),
    or "strided" (neither: a slice, a transpose)."""
    if t.is_contiguous():
        return "NCHW"
    return "NHWC" if t.is_contiguous(memory_format=torch.channels_last) else "strided"


def _names(names) -> str:
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def _steps(c: Candidate, dtype: torch.dtype, channels_last: bool, refused: list, layouts: set, stored: dict,
           outputs: str) -> tuple:
    """The copies a route adds, in words (``stored``: input name -> ``stored_as``)."""
    steps = []
    own = "NHWC" if channels_last else "NCHW"
    why = f" ({refused[0][1]})" if refused else ""
    moved = [name for name, how in stored.items() if how != c.layout]
    fmt = {"NHWC": "channels_last", "NCHW": "contiguous"}
    if c.layout != own:
        lacks = f"cuconv has no {own} kernel for this call{why}" if own in layouts else \
            f"cuconv's kernels for it read {' or '.join(sorted(layouts))} only"
        copied = f"{_names(moved)} copied to {c.layout}, " if moved else ""
        steps.append(f"{copied}{outputs} copied back to {fmt[own]}: {lacks}")
    elif moved:
        steps.append(f"{_names(moved)} copied to {c.layout} ({fmt[c.layout]}, "
                     + ("not dense" if all(stored[m] == "strided" for m in moved) else "the call's memory format")
                     + ")")
    if c.dtype != dtype:
        name, to = (str(d).replace("torch.", "") for d in (dtype, c.dtype))
        steps.append(f"{_names(list(stored))} converted from {name} to {to}, {outputs} rounded to {name}: cuconv "
                     f"has no {name} kernel for this call{why}")
    read = [name for name, how in stored.items() if how == c.layout == "NHWC"]
    if read and c.dtype == dtype:
        steps.append(f"channels_last {_names(read)} read as NHWC without a copy")
    return tuple(steps)


_ROUTES = PlanCache()        # bounded; cuconv.clear_plan_caches() clears it too


def route(op: str, key: tuple, tensors: dict, probe, dtype: torch.dtype, channels_last: bool, *, check=None,
          layouts=("NCHW", "NHWC"), kinds=("",), convert: bool = True, outputs: str = "the output") -> Route:
    """The route of a call: memoized under ``key``, the layout of the 4-D ``tensors`` (name ->
    tensor or None) and the current backend's device; on the first call, ``check()`` (the
    arguments, before anything else) and then the first of ``candidates(dtype, channels_last,
    layouts, kinds, convert)`` that ``probe(candidate) -> Plan`` plans (TypeError/ValueError: it
    cannot). When none plans: the one candidate's own error, or an error listing every
    candidate's refusal."""
    stored = {name: stored_as(t) for name, t in tensors.items() if t is not None and t.dim() == 4}
    full = (op, current_backend().device_key(), *key, *stored.values())
    r = _ROUTES.get(full)
    if r is not None:
        return r
    if check is not None:
        check()
    cands = candidates(dtype, channels_last, layouts, kinds, convert)
    refused = []
    for c in cands:
        try:
            plan = probe(c)
        except OverflowError as exc:     # an int beyond a kernel's 32-bit argument: a bad argument
            refused.append((c, ValueError(f"{exc} (an argument beyond the kernels' 32-bit limits)")))
            continue
        except (TypeError, ValueError) as exc:
            refused.append((c, exc))
            continue
        r = Route(op, c.layout, c.dtype, c.kind, channels_last,
                  _steps(c, dtype, channels_last, [(rc, str(e)) for rc, e in refused], {k.layout for k in cands},
                         stored, outputs), plan)
        return _ROUTES.put(full, r)
    if len(refused) == 1:
        raise refused[0][1]
    kind = TypeError if all(isinstance(e, TypeError) for _, e in refused) else ValueError
    reasons = "; ".join(f"{c.layout} {str(c.dtype).replace('torch.', '')}{' ' + c.kind if c.kind else ''}: {e}"
                        for c, e in refused)
    raise kind(f"cuconv.torch.{op}: cuconv cannot run this call in any layout or dtype it could convert to "
               f"({reasons})")
