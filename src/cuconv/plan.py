"""Plans: what one op call will launch, decided once per problem and device.

A ``Plan`` is frozen: the algorithm, the workspace it needs, and the exact ``launches``
(kernel label, grid, block, dynamic shared memory, and the argument list with array slots
as ``Ref``s). ``plan.run(...)`` binds the caller's arrays to the slots and launches —
CUTLASS's can_implement → get_workspace_size → initialize → run, and cuDNN's execution
plan. The op front ends memoize plans per (arguments, device) in a ``PlanCache``, so after
the first call an op is: check the arrays, look the plan up, launch.

Array slots (``Ref(name, offset)``) name an input or output role of the op ("x", "w",
"bias", "out", ...) or a workspace buffer; ``offset`` takes a flat view from that element
on. An absent optional input is passed as a one-element placeholder (``Ref.absent(dtype)``),
its flag argument being 0. A plan may depend on the 16-byte alignment of some arrays
(vector loads, cp.async): it lists them in ``aligned``, and a call whose arrays are not
aligned gets a plan made for its actual alignment (``PlanCache`` does that).

Besides kernel launches a plan may hold library steps (``FftStep``: a batched FFT that the
backend performs, like an allocation; ``CopyStep``: a layout or dtype conversion copy); they sit
in ``launches`` in execution order, so the list is still exactly what the call does.

Conversions are steps of their own. Every layout or dtype conversion a plan performs (an NCHW
input packed to NHWC for the tensor cores, an NHWC array transposed for an NCHW-only kernel, a
strided input copied densely: ``with_input_copies``, which the op front ends apply) is a
step whose label contains ``pack``, ``transpose`` or ``copy``: a ``CopyStep``, or a launch of a
kernel registered as a conversion (``conversion_kernel``). ``Plan.conversions`` lists them,
computed when the plan is made, so a plan tells its whole cost and a native plan shows none.
An algorithm's own operand transforms (im2col's columns, Winograd's and the FFT's transforms and
their zero-padded input copies) are not conversions: they are the algorithm.
"""
from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np

from .backend import FFT_KINDS, current_backend, fft_label, not_built_reason
from .dtypes import name_of, tag
from .registry import KernelEntry


@dataclass(frozen=True)
class Ref:
    """An array slot in a launch's arguments: role or buffer ``name``, flat view from ``offset``."""
    name: str
    offset: int = 0

    @staticmethod
    def absent(dtype) -> "Ref":
        """The placeholder passed for an absent optional pointer."""
        ref = _ABSENT.get(dtype)
        if ref is None:
            ref = _ABSENT[dtype] = Ref("0:" + np.dtype(dtype).name)
        return ref


_ABSENT: dict = {}


@dataclass(frozen=True)
class TensorMapArg:
    """A TMA tensor map in a launch's arguments: ``spec`` over the array in slot ``ref``; the
    backend encodes it when the launch runs (the map holds the array's address)."""
    ref: Ref
    spec: object            # cuconv.tensor_map.TensorMapSpec


# --- NVTX ranges (CUCONV_NVTX=1) ---------------------------------------------------------
# Read once at import: while it is off, Plan.execute pays one test of a module global. While it is
# on, each run is a range "cuconv:<op>:<algo>" holding one range per launch named by its kernel
# label, so an nsys/ncu timeline shows cuconv's ops and kernels by name. `cuconv profile` turns
# it on with nvtx_ranges(True).
_NVTX = os.environ.get("CUCONV_NVTX", "").strip() not in ("", "0")
_nvtx_calls = None           # (push(name), pop()), found when first needed


def nvtx_ranges(enabled: bool | None = None) -> bool:
    """Whether Plan.execute emits NVTX ranges (CUCONV_NVTX=1 at import); ``enabled`` sets it."""
    global _NVTX
    if enabled is not None:
        _NVTX = bool(enabled)
    return _NVTX


def nvtx_functions():
    """CuPy's RangePush/RangePop, or no-ops where CuPy or libnvToolsExt is missing."""
    global _nvtx_calls
    if _nvtx_calls is None:
        calls = None
        try:
            from cupy.cuda import nvtx  # noqa: PLC0415  (optional third-party package)
            if nvtx.available:
                calls = (nvtx.RangePush, nvtx.RangePop)
        except Exception:
            pass
        _nvtx_calls = calls or ((lambda name: None), (lambda: None))
    return _nvtx_calls


class _Ranged:
    """A backend whose launches are NVTX ranges named by kernel label (everything else is ``be``'s)."""

    def __init__(self, be):
        self._be = be

    def __getattr__(self, name):
        return getattr(self._be, name)

    def launch(self, entry, grid, block, args, shared_mem: int = 0) -> None:
        push, pop = nvtx_functions()
        push(entry.label)
        try:
            self._be.launch(entry, grid, block, args, shared_mem)
        finally:
            pop()


def _ranged_execute(plan: "Plan", be, env: dict, workspace) -> None:
    push, pop = nvtx_functions()
    push(f"cuconv:{plan.op}:{plan.algo}")
    try:
        plan.execute(_Ranged(be), env, workspace)
    finally:
        pop()


@dataclass(frozen=True)
class Buffer:
    """A named part of a plan's workspace: ``size`` elements of ``dtype`` at byte ``offset``."""
    name: str
    dtype: str
    size: int
    offset: int

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


# Each workspace buffer starts 16-byte aligned: the widest access any kernel makes (float4
# loads, 16-byte cp.async). Buffers whose sizes are multiples of 16 bytes pack without gaps, so a
# plan's workspace is then exactly the sum of its buffers.
WORKSPACE_ALIGN = 16


def layout_buffers(*parts: tuple[str, str, int]) -> tuple[tuple[Buffer, ...], int]:
    """Buffers for (name, dtype, elements) parts, each starting 16-byte aligned; returns
    (buffers, total bytes)."""
    out, offset = [], 0
    for name, dtype, size in parts:
        offset = -(-offset // WORKSPACE_ALIGN) * WORKSPACE_ALIGN
        b = Buffer(name, name_of(dtype), int(size), offset)
        out.append(b)
        offset += b.nbytes
    return tuple(out), offset


@dataclass(frozen=True)
class Launch:
    """One kernel launch of a plan."""
    entry: KernelEntry = field(repr=False)
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple = field(repr=False)
    shared_mem: int = 0

    def __post_init__(self):
        object.__setattr__(self, "grid", tuple(map(int, self.grid)))
        object.__setattr__(self, "block", tuple(map(int, self.block)))
        object.__setattr__(self, "shared_mem", int(self.shared_mem))
        object.__setattr__(self, "_slots", tuple([(i, a.name, a.offset) for i, a in enumerate(self.args)
                                                  if isinstance(a, Ref)]))
        object.__setattr__(self, "_maps", tuple([(i, a.ref.name, a.ref.offset, a.spec)
                                                 for i, a in enumerate(self.args) if isinstance(a, TensorMapArg)]))

    @property
    def kernel(self) -> str:
        """The KernelEntry label: the kernel's name in the resource report and the bench."""
        return self.entry.label

    def describe(self) -> str:
        return f"{self.kernel} grid={self.grid} block={self.block} smem={self.shared_mem}"


@dataclass(frozen=True)
class FftStep:
    """A batched 2-D FFT in a plan, next to its kernel launches: the backend's ``fft`` runs it
    (cuFFT through CuPy on the GPU, NumPy's pocketfft on the emulator; the record backend
    records it), so ``plan.launches`` lists every step a call performs, in order.

    ``batch`` transforms of ``shape`` = (Lh, Lw) over the last two axes, unnormalised in both
    directions (cuFFT's convention). ``"r2c"``: ``src`` real float32 (batch, Lh, Lw) to ``dst``
    complex64 (batch, Lh, Lw//2 + 1); ``"c2r"``: the inverse (it may overwrite ``src``, as
    cuFFT's C2R does). ``src`` and ``dst`` are slots like a Launch's: the step uses the first
    batch·plane elements from the slot's offset. A library call has no kernel entry, grid or
    block of its own: ``entry`` is None, ``block`` is () and ``grid`` is (batch, 1, 1), the
    number of transforms, which is also what the record backend records.
    """
    kind: str
    src: Ref
    dst: Ref
    batch: int
    shape: tuple[int, int]

    entry = None
    block = ()
    shared_mem = 0

    def __post_init__(self):
        if self.kind not in FFT_KINDS:
            raise ValueError(f"FftStep kind must be one of {FFT_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "batch", int(self.batch))
        object.__setattr__(self, "shape", tuple(map(int, self.shape)))
        object.__setattr__(self, "_slots", ((0, self.src.name, self.src.offset), (1, self.dst.name, self.dst.offset)))

    @property
    def kernel(self) -> str:
        return fft_label(self.kind, self.shape)

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.batch, 1, 1)

    @property
    def args(self) -> tuple:
        return (self.src, self.dst)

    def describe(self) -> str:
        return f"{self.kernel} batch={self.batch} (backend FFT)"

    def renamed(self, rename) -> "FftStep":
        return FftStep(self.kind, rename(self.src), rename(self.dst), self.batch, self.shape)

    def run(self, be, env: dict) -> None:
        lh, lw = self.shape
        real, spectrum = (self.batch, lh, lw), (self.batch, lh, lw // 2 + 1)
        src_shape, dst_shape = (real, spectrum) if self.kind == "r2c" else (spectrum, real)
        views = []
        for (_, name, offset), shape in zip(self._slots, (src_shape, dst_shape)):
            n = shape[0] * shape[1] * shape[2]
            views.append(env[name].reshape(-1)[offset:offset + n].reshape(shape))
        be.fft(self.kind, views[0], views[1])


# Words one of which every conversion step's label contains (issue 25 item 5).
CONVERSION_WORDS = ("pack", "transpose", "copy")
_CONVERSION_KERNELS: set = set()


def conversion_kernel(entry: KernelEntry) -> KernelEntry:
    """Mark ``entry`` as a layout or dtype conversion kernel (its launches are listed by
    ``Plan.conversions``); its label must name what it does. Returns the entry."""
    if not any(word in entry.label for word in CONVERSION_WORDS):
        raise ValueError(f"conversion kernel {entry.label!r}: the label must contain one of {CONVERSION_WORDS}")
    _CONVERSION_KERNELS.add(entry.label)
    return entry


def is_conversion(step) -> bool:
    """Whether a plan step is a layout or dtype conversion (a CopyStep or a conversion kernel's launch)."""
    if isinstance(step, CopyStep):
        return True
    return step.entry is not None and step.entry.label in _CONVERSION_KERNELS


_LAYOUT_NAMES = {(0, 2, 3, 1): ("nchw", "nhwc"), (0, 3, 1, 2): ("nhwc", "nchw")}


@dataclass(frozen=True)
class CopyStep:
    """A layout or dtype conversion the backend performs (CuPy's strided copy kernel on the GPU,
    NumPy's on the CPU backends; the record backend records it like a launch): the first
    prod(``shape``) elements at ``src``, read as a dense ``shape`` array and permuted by
    ``axes``, written densely at ``dst`` (a bit copy: a workspace buffer holds bfloat16 as uint16,
    the storage dtype the tensor-core packs use too). Like ``FftStep`` it has no entry,
    block or shared memory; ``grid`` is (elements, 1, 1). ``kernel`` (the label) says what it does:
    ``transpose_nhwc_to_nchw_f32`` for a 4-D (0, 3, 1, 2) permutation, ``copy_...`` otherwise."""
    src: Ref
    dst: Ref
    shape: tuple[int, ...]
    axes: tuple[int, ...]
    dtype: str
    # strided: ``src`` is the caller's strided array itself (offset 0, its own shape and strides,
    # ``shape`` its shape, ``axes`` the identity), copied densely; ``label`` then names the copy.
    strided: bool = False
    label: str = ""

    entry = None
    block = ()
    shared_mem = 0

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(map(int, self.shape)))
        object.__setattr__(self, "axes", tuple(map(int, self.axes)))
        if sorted(self.axes) != list(range(len(self.shape))):
            raise ValueError(f"CopyStep axes {self.axes} are not a permutation of {len(self.shape)} axes")
        object.__setattr__(self, "dtype", name_of(self.dtype))
        object.__setattr__(self, "_slots", ((0, self.src.name, self.src.offset), (1, self.dst.name, self.dst.offset)))
        names = _LAYOUT_NAMES.get(self.axes)
        what = f"transpose_{names[0]}_to_{names[1]}" if names else (
            "copy" if self.axes == tuple(range(len(self.axes))) else "transpose_" + "".join(map(str, self.axes)))
        object.__setattr__(self, "_label", self.label or f"{what}_{tag(self.dtype)}")

    @property
    def kernel(self) -> str:
        return self._label

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.elements, 1, 1)

    @property
    def args(self) -> tuple:
        return (self.src, self.dst)

    def describe(self) -> str:
        return f"{self.kernel} {self.shape} axes={self.axes} (backend copy)"

    def renamed(self, rename) -> "CopyStep":
        return CopyStep(rename(self.src), rename(self.dst), self.shape, self.axes, self.dtype, self.strided,
                        self.label)

    def run(self, be, env: dict) -> None:
        n = self.elements
        (_, sname, soff), (_, dname, doff) = self._slots
        if self.strided:
            src = env[sname]
            be.copy(self.kernel, env[dname].reshape(-1)[doff:doff + n].view(src.dtype).reshape(src.shape), src)
            return
        src = env[sname].reshape(-1)[soff:soff + n]
        dst = env[dname].reshape(-1)[doff:doff + n]
        if dst.dtype != src.dtype:       # a bit copy through the storage dtype (bfloat16 as uint16),
            if dst.dtype.kind == "u":    # viewed while both are flat and contiguous
                src = src.view(dst.dtype)
            else:
                dst = dst.view(src.dtype)
        src = src.reshape(self.shape).transpose(self.axes)
        be.copy(self.kernel, dst.reshape(src.shape), src)


@dataclass(frozen=True)
class Output:
    role: str
    shape: tuple[int, ...]
    dtype: np.dtype


class PlanError(ValueError):
    """An algorithm cannot run a problem (the message says why). ``plan``: the plan it would
    run, when only a limit refused it (the workspace cap), for ``algorithms()`` to show."""

    def __init__(self, reason: str, plan: "Plan | None" = None):
        super().__init__(reason)
        self.plan = plan


@dataclass(frozen=True)
class Plan:
    """What one call of ``op`` launches on one device.

    ``inputs``: the array roles ``run`` takes positionally (optional ones may be None when the
    plan was made without them); ``outputs``: the roles it writes, with shapes and dtypes.
    ``device``: the key of the device it was made for. ``workspace_bytes`` is what ``run``
    allocates (through the backend's allocator, CuPy's pool on the GPU) unless a
    ``workspace=`` array of at least that many bytes is passed.
    """
    op: str
    algo: str
    problem: object
    launches: tuple[Launch, ...]
    inputs: tuple[str, ...]
    outputs: tuple[Output, ...]
    device: object = None
    workspace_bytes: int = 0
    buffers: tuple[Buffer, ...] = ()
    aligned: tuple[str, ...] = ()        # roles whose data pointers this plan assumes 16-byte aligned
    absent: frozenset = frozenset()      # optional input roles the plan was made without
    expected: tuple = ()                 # (role, shape, dtype) of each input, checked by run()
    description: str = ""
    strided: frozenset = frozenset()     # input roles the plan copies itself (CopyStep strided)
    # conversions: the steps of ``launches`` that convert a layout or dtype (is_conversion), in
    # order; set when the plan is made (no cost on the call path)

    def __post_init__(self):
        absent = sorted({name[2:] for ln in self.launches for _, name, _ in ln._slots if name.startswith("0:")})
        object.__setattr__(self, "_placeholders", tuple(absent))
        # The placeholder arrays of the last backend that ran this plan (a plan is made for one
        # device, so they change only with the backend object): [backend, ((slot, array), ...)].
        object.__setattr__(self, "_placeholder_arrays", [None, ()])
        object.__setattr__(self, "_views", tuple([(b.name, b.offset, b.offset + b.nbytes, np.dtype(b.dtype))
                                                  for b in self.buffers]))
        object.__setattr__(self, "conversions", tuple([ln for ln in self.launches if is_conversion(ln)]))

    def described(self, description: str) -> "Plan":
        """This plan with another ``description`` (a copy without re-deriving anything: a
        ``dataclasses.replace`` costs ``auto`` more than choosing)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        object.__setattr__(new, "description", description)
        object.__setattr__(new, "_placeholder_arrays", [None, ()])
        return new

    # --- reading -------------------------------------------------------------------------
    @property
    def kernels(self) -> list[str]:
        """The labels launched, in launch order (repeats included)."""
        return [ln.kernel for ln in self.launches]

    def describe(self) -> str:
        lines = [f"{self.op} plan: algo={self.algo}, workspace {self.workspace_bytes} bytes, "
                 f"{len(self.launches)} launch(es)"]
        lines += ["  " + ln.describe() for ln in self.launches]
        return "\n".join(lines)

    # --- running -------------------------------------------------------------------------
    def run(self, *arrays, workspace=None, **named):
        """Launch the plan on the current backend with the given arrays (by position in
        ``inputs`` order, or by role name); outputs are allocated when not given by role
        (``out=``). Returns the output (a tuple when the op has several). The arrays must have
        the shapes and dtypes the plan was made for (ValueError otherwise)."""
        be = current_backend()
        env = self.bind(be, *arrays, **named)
        self.execute(be, env, workspace)
        outs = [env[o.role] for o in self.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def bind(self, be, *arrays, **named) -> dict:
        """The arrays by role for ``execute``, checked against the plan (shapes, dtypes,
        contiguity, the device it was made for), outputs allocated where not given."""
        given = self._bind(arrays, named)
        if be.device_key() != self.device:
            raise ValueError(f"this {self.op} plan was made for device {self.device!r}; the current "
                             f"backend's device is {be.device_key()!r}")
        env = {role: (be.as_array(a, role) if a is not None else None) for role, a in given.items()}
        self._check(env)
        self.allocate_outputs(be, env)
        return env

    def _bind(self, arrays, named) -> dict:
        if len(arrays) > len(self.inputs):
            raise TypeError(f"{self.op} plan takes {len(self.inputs)} arrays ({', '.join(self.inputs)}), "
                            f"got {len(arrays)}")
        env = dict(zip(self.inputs, arrays))
        roles = set(self.inputs) | {o.role for o in self.outputs}
        for k, v in named.items():
            if k not in roles:
                raise TypeError(f"{self.op} plan has no array role {k!r} (roles: {', '.join(sorted(roles))})")
            if k in env:
                raise TypeError(f"{k} given twice")
            env[k] = v
        return env

    def _check(self, env: dict) -> None:
        for role in self.inputs:
            a = env.get(role)
            if (a is None) != (role in self.absent):
                state = "without" if role in self.absent else "with"
                raise ValueError(f"this {self.op} plan was made {state} {role!r}; pass the same arrays "
                                 f"as when it was planned")
        for role, shape, dtype in self.expected:
            a = env.get(role)
            if a is not None and (tuple(a.shape) != tuple(shape) or np.dtype(a.dtype).name != dtype):
                raise ValueError(f"{role} must be {tuple(shape)} {dtype} for this {self.op} plan, got "
                                 f"{tuple(a.shape)} {np.dtype(a.dtype).name}")
        for o in self.outputs:
            a = env.get(o.role)
            if a is not None and (tuple(a.shape) != o.shape or np.dtype(a.dtype) != o.dtype
                                  or not a.flags.c_contiguous):
                raise ValueError(f"{o.role} must be a C-contiguous {o.shape} {o.dtype.name} array for this "
                                 f"{self.op} plan, got {tuple(a.shape)} {np.dtype(a.dtype).name}")

    def allocate_outputs(self, be, env: dict) -> list:
        outs = []
        for o in self.outputs:
            a = env.get(o.role)
            if a is None:
                a = be.empty(o.shape, o.dtype)
                env[o.role] = a
            outs.append(a)
        return outs

    def execute(self, be, env: dict, workspace=None, contiguous: bool = False) -> None:
        """Launch every kernel with the arrays in ``env`` (role -> array; every output present).
        No checks: the op front ends call this after their own. An input that is a strided view
        (a transpose, a slice with steps, negative strides, Fortran order) is first copied to a
        C-contiguous array through the backend (CuPy's pool and current stream on the GPU): the
        kernels index dense rows; the caller's array is never written (a plan the op front end made
        for strided inputs lists that copy as a CopyStep: its ``strided`` roles are left to it). ``contiguous=True``: the
        caller knows every input is C-contiguous (the front ends' hot path: the plan key holds
        the strides).

        Capturable in a CUDA graph (``cupy.cuda.Stream.begin_capture``) after one run outside
        the capture (which compiles the kernels): it never synchronises, reads no device data
        and allocates only through the backend (CuPy's pool). Pass ``workspace`` when capturing
        a plan that has one: a workspace allocated here goes back to the pool when the call
        returns, and a replayed graph would write into whatever reuses it; pass contiguous
        inputs too (a strided input's copy is an allocation of its own)."""
        if _NVTX and be.__class__ is not _Ranged:
            return _ranged_execute(self, be, env, workspace)
        if not contiguous:
            for role in self.inputs:
                a = env.get(role)
                if a is not None and not a.flags.c_contiguous and role not in self.strided:
                    env[role] = be.contiguous(a)
        if self.workspace_bytes:
            ws = workspace
            if ws is None:
                ws = be.workspace(self.workspace_bytes)
            elif ws.nbytes < self.workspace_bytes or ws.dtype != np.uint8 or ws.ndim != 1:
                raise ValueError(f"workspace must be a 1-D uint8 array of at least {self.workspace_bytes} "
                                 f"bytes, got {ws.dtype} shape {tuple(ws.shape)}")
            for name, start, end, dtype in self._views:
                env[name] = ws[start:end].view(dtype)
        if self._placeholders:
            cached = self._placeholder_arrays
            if cached[0] is not be:
                cached[1] = tuple([("0:" + dt, be.placeholder(dt)) for dt in self._placeholders])
                cached[0] = be
            for slot, a in cached[1]:
                env[slot] = a
        launch = be.launch
        for ln in self.launches:
            if ln.entry is None:      # a library step (FftStep): the backend's own call
                ln.run(be, env)
                continue
            args = list(ln.args)
            for i, name, offset in ln._slots:
                a = env[name]
                args[i] = a if not offset else a.reshape(-1)[offset:]
            for i, name, offset, spec in ln._maps:
                a = env[name]
                args[i] = be.tensor_map(spec, a if not offset else a.reshape(-1)[offset:])
            launch(ln.entry, ln.grid, ln.block, args, ln.shared_mem)


def launch_all(be, launches, env: dict) -> None:
    """Launch ``launches`` with their array slots filled from ``env`` (role or buffer -> array;
    placeholders ``0:<dtype>`` are filled from the backend when missing). For running a few
    launches outside a plan (the kernel-stage tests)."""
    env = dict(env)
    for ln in launches:
        for _, name, _ in ln._slots:
            if name not in env:
                if not name.startswith("0:"):
                    raise KeyError(f"{ln.kernel}: no array for slot {name!r}")
                env[name] = be.placeholder(name[2:])
    Plan("launches", "", None, tuple(launches), (), ()).execute(be, env)


def relabel(plan: Plan, names: dict, prefix: str) -> tuple[list, list]:
    """``plan``'s launches as part of a larger plan: role slots renamed by ``names`` (role -> the
    outer plan's role or buffer), its workspace buffers prefixed with ``prefix``; placeholders
    stay. Returns (launches, workspace parts as layout_buffers takes them). The tensor-core
    dgrad runs the forward convolution this way, the transposed convolution's gradients run
    conv2d's and dgrad's plans."""
    buffers = {b.name for b in plan.buffers}

    def rename(a):
        if isinstance(a, TensorMapArg):
            return TensorMapArg(rename(a.ref), a.spec)
        if not isinstance(a, Ref) or a.name.startswith("0:"):
            return a
        if a.name in buffers:
            return Ref(prefix + a.name, a.offset)
        if a.name not in names:
            raise KeyError(f"relabel: {plan.op} plan slot {a.name!r} has no new name")
        return Ref(names[a.name], a.offset)

    launches = []
    for ln in plan.launches:
        if ln.entry is None:          # a library step (FftStep, CopyStep)
            launches.append(ln.renamed(rename))
        else:
            launches.append(Launch(ln.entry, ln.grid, ln.block, tuple(rename(a) for a in ln.args), ln.shared_mem))
    return launches, [(prefix + b.name, b.dtype, b.size) for b in plan.buffers]


_STORAGE = {"bfloat16": "uint16"}      # a workspace buffer's dtype for an element dtype CuPy lacks


def through_copies(plan: Plan, op: str, inputs, outputs, expected=(), note: str = "") -> Plan:
    """``plan`` run on the caller's arrays in another layout, every conversion a ``CopyStep``:
    ``inputs`` ((role, shape, axes), ...): the caller's dense ``shape`` array of ``role`` permuted
    by ``axes`` into a workspace buffer that ``plan`` reads as ``role``; ``outputs`` ((role, shape,
    axes), ...): ``plan``'s output ``role`` written to a buffer, then permuted by ``axes`` into the
    caller's ``role`` of ``shape``. ``plan``'s own buffers keep their names behind ``inner.``.
    Used where a pass has no kernel for the caller's layout (the gradients' NHWC calls on NCHW
    kernels): the plan then shows the copies it costs."""
    kept = {role: dt for role, _, dt in plan.expected}
    parts, names, steps, after, outs = [], {}, [], [], []
    for role, shape, axes in inputs:
        buf = f"{role}.copy"
        parts.append((buf, _STORAGE.get(kept[role], kept[role]), int(np.prod(shape, dtype=np.int64))))
        names[role] = buf
        steps.append(CopyStep(Ref(role), Ref(buf), shape, axes, kept[role]))
    for role, shape, axes in outputs:
        inner = next(o for o in plan.outputs if o.role == role)
        buf = f"{role}.copy"
        parts.append((buf, _STORAGE.get(inner.dtype.name, inner.dtype.name), int(np.prod(inner.shape, dtype=np.int64))))
        names[role] = buf
        after.append(CopyStep(Ref(buf), Ref(role), inner.shape, axes, inner.dtype.name))
        outs.append(Output(role, tuple(shape), inner.dtype))
    launches, inner_parts = relabel(plan, names, "inner.")
    buffers, nbytes = layout_buffers(*parts, *inner_parts)
    return Plan(op=op, algo=plan.algo, problem=plan.problem, launches=(*steps, *launches, *after),
                inputs=tuple(r for r, _, _ in inputs), outputs=tuple(outs), device=plan.device,
                workspace_bytes=nbytes, buffers=buffers, expected=tuple(expected),
                description="; ".join(d for d in (note, plan.description) if d))


def _copy_label(a, dtype: str) -> str:
    """A strided array's copy step label: ``transpose_<memory>_to_<logical>`` when it is a 4-D
    permutation of a dense array in a named layout (an NCHW view of NHWC memory), else
    ``copy_strided``."""
    if a.ndim == 4 and min(a.strides) > 0:
        order = tuple(sorted(range(4), key=lambda i: -a.strides[i]))
        dense = np.empty(tuple(a.shape[i] for i in order), dtype=a.dtype).strides
        names = _LAYOUT_NAMES.get(tuple(int(np.argsort(order)[i]) for i in range(4)))
        if names and tuple(a.strides[i] for i in order) == dense:
            return f"transpose_{names[0]}_to_{names[1]}_{tag(dtype)}"
    return f"copy_strided_{tag(dtype)}"


def with_input_copies(plan: Plan, env: dict) -> Plan:
    """``plan`` for a call whose input arrays in ``env`` are strided views (not C-contiguous: a
    transpose, a slice with steps): each such input copied densely into a workspace buffer by a
    ``CopyStep`` the plan lists (a plan tells its whole cost), the launches reading the buffers.
    ``plan`` itself when every input is C-contiguous (or a stand-in)."""
    copied = [r for r in plan.inputs
              if env.get(r) is not None and hasattr(env[r], "flags") and not env[r].flags.c_contiguous]
    if not copied:
        return plan
    buffers = {b.name for b in plan.buffers}
    roles = {name for ln in plan.launches for _, name, _ in ln._slots
             if not name.startswith("0:") and name not in buffers}
    names = {r: (f"{r}.copy" if r in copied else r) for r in roles}
    steps, parts = [], []
    for r in copied:
        a, dt = env[r], name_of(env[r].dtype)
        parts.append((f"{r}.copy", _STORAGE.get(dt, dt), int(np.prod(a.shape, dtype=np.int64))))
        steps.append(CopyStep(Ref(r), Ref(f"{r}.copy"), a.shape, tuple(range(a.ndim)), dt, True,
                              _copy_label(a, dt)))
    launches, inner_parts = relabel(plan, names, "inner.")
    bufs, nbytes = layout_buffers(*parts, *inner_parts)
    new = object.__new__(Plan)
    new.__dict__.update(plan.__dict__)
    for k, v in (("launches", (*steps, *launches)), ("buffers", bufs), ("workspace_bytes", nbytes),
                 ("aligned", tuple(r for r in plan.aligned if r not in copied)), ("strided", frozenset(copied))):
        object.__setattr__(new, k, v)
    new.__post_init__()
    return new


def combine(op: str, problem, plans, inputs, outputs, expected, device) -> Plan:
    """One Plan running ``plans`` in order, on shared roles (conv2d_backward's dgrad, wgrad and
    bias plans): their launches concatenated, their workspace buffers laid out one after the
    other, the alignment each assumes kept; ``algo`` and ``description`` joined."""
    parts = [(b.name, b.dtype, b.size) for p in plans for b in p.buffers]
    names = [name for name, _, _ in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"combine: the plans' workspace buffers share names {sorted(names)}")
    buffers, nbytes = layout_buffers(*parts)
    return Plan(op=op, algo="+".join(p.algo for p in plans), problem=problem,
                launches=tuple(ln for p in plans for ln in p.launches), inputs=tuple(inputs), outputs=tuple(outputs),
                device=device, workspace_bytes=nbytes, buffers=buffers,
                aligned=tuple(sorted({r for p in plans for r in p.aligned})), expected=tuple(expected),
                description="; ".join(p.description for p in plans if p.description))


def arch_refusal(launches, cc: int) -> str | None:
    """Why a plan with ``launches`` cannot run on a device of compute capability ``cc``: the first
    kernel it names that is not built for that arch (None: every one is). The check every plan
    passes before it is handed out (ConvAlgorithm.make_plan for each algorithm of each pass, so
    ``auto`` takes the next rule; the op front end for every op's plan: ops/_frontend.py), so a
    plan never names a kernel its device cannot load."""
    seen = set()
    for ln in launches:
        entry = ln.entry
        if entry is None or entry.label in seen:
            continue
        seen.add(entry.label)
        reason = not_built_reason(entry, cc)
        if reason is not None:
            return reason
    return None


_CACHES: "weakref.WeakSet[PlanCache]" = weakref.WeakSet()


class PlanCache:
    """Plans memoized by a key the op front end builds from its raw arguments and device.

    Bounded: past ``limit`` entries the oldest is dropped. Thread-safe for concurrent readers
    (a dict lookup); builds happen outside the lock (two threads may both build once)."""

    def __init__(self, limit: int = 4096):
        self._plans: dict = {}
        self._limit = limit
        self._lock = threading.Lock()
        _CACHES.add(self)

    def get(self, key):
        return self._plans.get(key)

    def dict_view(self) -> dict:
        """The underlying dict (read-only use: the op front ends' hot-path lookup)."""
        return self._plans

    def put(self, key, plan):
        with self._lock:
            if len(self._plans) >= self._limit:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        return plan

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()      # in place: dict_view() readers see the cleared dict

    def __len__(self) -> int:
        return len(self._plans)


def clear_plan_caches() -> None:
    """Forget every memoized plan (the next call of each op plans again)."""
    for cache in list(_CACHES):
        cache.clear()


def pointer(a) -> int:
    """The data pointer of a NumPy or CuPy array."""
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    return int(a.data.ptr)


def misaligned(plan: Plan, env: dict, align: int = 16) -> bool:
    """True when an array the plan assumes aligned is not (then it needs another plan)."""
    for role in plan.aligned:
        a = env.get(role)
        if a is not None and pointer(a) % align:
            return True
    return False
