"""Where ops run: CuPy on the GPU (default), cuconv's CPU emulator, or the record backend.

The op code (checks, planning, workspace, launches) is shared; a backend only allocates
arrays and launches the kernel entries a plan hands it::

    with cuconv.backend("emulator", sanitize="address,undefined", order="reverse"):
        y = cuconv.conv2d(x_numpy, w_numpy)      # NumPy in, NumPy out, kernels run on the CPU

    with cuconv.backend("record") as be:           # NumPy in, nothing computed
        y = cuconv.conv2d(x_numpy, w_numpy)      # y is allocated, its contents undefined
        be.launches                              # [LaunchRecord(kernel=..., grid=..., ...)]

Every backend launches through the same ``Backend.launch``: a lookup of the entry's label in
the per-device function table, filled the first time an entry is met (``_load``: NVRTC
through CuPy, g++ through the emulator, a recorder), then the call. After the first call a
launch is a dictionary lookup plus the call.

``CUCONV_BACKEND=emulator`` selects the emulator for a whole process (and
``CUCONV_EMU_SANITIZE`` / ``CUCONV_EMU_ORDER`` / ``CUCONV_EMU_SEED`` its modes).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import compile as _compile
from . import emulator as _emulator
from .registry import KernelEntry, file_group
from .tensor_map import DriverMapCache, TensorMapSpec


class NoDeviceError(RuntimeError):
    """No CUDA device (or no working CuPy) for an op on the GPU backend."""


_HOW_TO_EMULATE = ("To run cuconv's kernels on the CPU instead, use "
                   "`with cuconv.backend('emulator'):` with NumPy arrays, or set CUCONV_BACKEND=emulator.")


@dataclass(frozen=True)
class DeviceCaps:
    """What plans depend on: compute capability (75, 80, 90, ...), SM count, and the device's
    name. The CPU backends count as an H100 SXM (sm_90, 132 SMs) unless told otherwise: there
    the capability only decides which kernels a plan picks, not how fast they run."""
    cc: int = 90
    sms: int = 132
    name: str = "emulated sm_90 (132 SMs)"

    @property
    def arch(self) -> str:
        return f"sm_{self.cc}"


EMULATED_CAPS = DeviceCaps()


def _caps(cc, sms) -> DeviceCaps:
    cc = EMULATED_CAPS.cc if cc is None else int(cc)
    sms = EMULATED_CAPS.sms if sms is None else int(sms)
    if cc < 50 or sms <= 0:
        raise ValueError(f"cc must be a compute capability such as 80 or 90 and sms positive, got cc={cc}, sms={sms}")
    return DeviceCaps(cc, sms, f"emulated sm_{cc} ({sms} SMs)")


class LaunchRecord(NamedTuple):
    """One launch seen by the record backend."""
    kernel: str
    grid: tuple
    block: tuple
    shared_mem: int
    args: tuple = ()

    def __repr__(self) -> str:
        return (f"LaunchRecord(kernel={self.kernel!r}, grid={self.grid}, block={self.block}, "
                f"shared_mem={self.shared_mem})")


def _scalar_error(a, what: str):
    """The TypeError for a Python or NumPy scalar where an array is expected, or None."""
    if isinstance(a, (np.generic, int, float, complex, bool)):
        return TypeError(f"{what} must be an array, got the scalar {a!r} ({type(a).__name__}); "
                         "pass an array of the expected shape (e.g. a bias of shape (K,))")
    return None


# The batched 2-D transforms a backend performs for a plan's FftStep (ops/fft_conv.py).
FFT_KINDS = ("r2c", "c2r")
FFT_PLAN_LIMIT = 64          # cuFFT plans the GPU backend keeps (each holds its work area)


def fft_label(kind: str, shape) -> str:
    """The name of an FFT step in plans, records and the bench's kernel column: fft2d_r2c_32x32."""
    return f"fft2d_{kind}_{int(shape[0])}x{int(shape[1])}"


def _check_fft(kind: str, src, dst) -> tuple[int, int]:
    """(Lh, Lw) of a batched 2-D transform, after checking the arrays' shapes and dtypes."""
    if kind not in FFT_KINDS:
        raise ValueError(f"fft kind must be one of {FFT_KINDS}, got {kind!r}")
    real, spec = (src, dst) if kind == "r2c" else (dst, src)
    if (real.ndim != 3 or spec.ndim != 3 or real.shape[:2] != spec.shape[:2]
            or spec.shape[2] != real.shape[2] // 2 + 1 or real.dtype != np.float32
            or spec.dtype != np.complex64):
        raise ValueError(f"fft {kind}: needs real float32 (B, Lh, Lw) and complex64 (B, Lh, Lw//2+1) "
                         f"arrays, got {real.dtype} {tuple(real.shape)} and {spec.dtype} {tuple(spec.shape)}")
    return int(real.shape[1]), int(real.shape[2])


class Backend:
    """The shared launch path; subclasses say how to load an entry and which device is current."""
    name = "?"
    array_type = None        # the class of the backend's arrays (the op front ends' fast check)

    def __init__(self):
        self._tables: dict = {}          # device key -> {label: callable}
        self._placeholders: dict = {}

    # --- launching -----------------------------------------------------------------------
    def launch(self, entry: KernelEntry, grid, block, args, shared_mem: int = 0) -> None:
        """Launch ``entry`` with ``grid``, ``block`` and the kernel's ``args`` (queued on the
        current stream on the GPU): a lookup in the current device's function table, filled the
        first time the entry is met, then the call."""
        table = self._tables.get(self.device_key())
        fn = None if table is None else table.get(entry.label)
        if fn is None:
            fn = self._function(entry)
        fn(grid, block, args, shared_mem=shared_mem)

    def _function(self, entry: KernelEntry):
        """Load ``entry`` for the current device and keep it in that device's table (not under
        CUCONV_DEV_RELOAD, where every launch re-checks the sources)."""
        fn = self._load(entry)
        if not _compile.dev_reload():
            self._tables.setdefault(self.device_key(), {})[entry.label] = fn
        return fn

    def _load(self, entry: KernelEntry):
        raise NotImplementedError

    def device_key(self):
        """The key of the current device's function table and of its plans."""
        return 0

    def caps(self) -> DeviceCaps:
        raise NotImplementedError

    # --- arrays ------------------------------------------------------------------------
    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def workspace(self, nbytes: int):
        """A 1-D uint8 array of ``nbytes`` for a plan's workspace (through CuPy's memory pool on
        the GPU, ordered on the current stream)."""
        return self.empty((nbytes,), np.uint8)

    def contiguous(self, a):
        """A C-contiguous copy of the strided array ``a`` (on the GPU: CuPy's pool, current stream)."""
        return self.xp.ascontiguousarray(a)

    def placeholder(self, dtype):
        """A 1-element array to pass for an absent optional pointer (its flag argument is 0)."""
        key = (self.device_key(), dtype)
        a = self._placeholders.get(key)
        if a is None:
            a = self.empty((1,), dtype)
            a[...] = 0
            self._placeholders[key] = a
        return a

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def tensor_map(self, spec: TensorMapSpec, a):
        """The kernel argument for a TMA tensor map ``spec`` over the array ``a`` (a view at the
        tensor's first element): the driver's encoding on the GPU, the emulator's on the
        emulator (cuconv.tensor_map)."""
        raise NotImplementedError(f"the {self.name} backend encodes no tensor maps")

    # --- library calls -------------------------------------------------------------------
    def fft(self, kind: str, src, dst) -> None:
        """A batched 2-D FFT over the last two axes into ``dst`` (a plan's FftStep), unnormalised
        in both directions: ``"r2c"`` float32 (B, Lh, Lw) to complex64 (B, Lh, Lw//2 + 1),
        ``"c2r"`` back (``src`` may be overwritten). Queued like a launch (the current stream)."""
        raise NotImplementedError(f"the {self.name} backend performs no FFT")

    def meta(self, a):
        """What a plan key records of an array: shape, strides, dtype (None for None)."""
        return None if a is None else (a.shape, a.strides, a.dtype)

    def devices(self, *arrays):
        """What a plan key records of where the arrays live (the CPU backends: nothing)."""
        return None


class CupyBackend(Backend):
    """Default: kernels compiled by NVRTC through CuPy, launched on CuPy's current stream."""
    name = "cupy"

    def __init__(self):
        super().__init__()
        self._checked = False
        self._lock = threading.Lock()
        self._caps: dict[int, DeviceCaps] = {}
        self._runtime = None
        self._ndarray = None
        self._fft_plans: dict = {}
        self._maps = DriverMapCache()

    @property
    def xp(self):
        self.ensure_device()
        import cupy  # noqa: PLC0415
        return cupy

    def ensure_device(self) -> None:
        if self._checked:
            return
        with self._lock:
            if self._checked:
                return
            try:
                import cupy  # noqa: PLC0415
            except ImportError as exc:
                raise NoDeviceError(
                    f"CuPy is not installed ({exc}); install cuconv[cuda12] or cuconv[cuda13]. "
                    + _HOW_TO_EMULATE) from None
            try:
                count = cupy.cuda.runtime.getDeviceCount()
            except Exception as exc:  # CUDARuntimeError: no driver, insufficient driver, ...
                raise NoDeviceError(f"no CUDA device was found ({exc}). " + _HOW_TO_EMULATE) from None
            if count == 0:
                raise NoDeviceError("no CUDA device was found (the driver reports 0 devices). "
                                    + _HOW_TO_EMULATE)
            self._runtime = cupy.cuda.runtime
            self.array_type = cupy.ndarray
            self._checked = True

    def device_key(self) -> int:
        if self._runtime is None:
            self.ensure_device()
        return self._runtime.getDevice()

    def caps(self) -> DeviceCaps:
        dev = self.device_key()
        caps = self._caps.get(dev)
        if caps is None:
            import cupy  # noqa: PLC0415
            d = cupy.cuda.Device(dev)
            name = cupy.cuda.runtime.getDeviceProperties(dev)["name"]
            caps = DeviceCaps(int(d.compute_capability), int(d.attributes["MultiProcessorCount"]),
                              name.decode() if isinstance(name, bytes) else str(name))
            self._caps[dev] = caps
        return caps

    def _load(self, entry: KernelEntry):
        return _compile.cupy_function(entry, self.device_key(), self.caps().cc)

    def fft(self, kind: str, src, dst) -> None:
        """cuFFT through CuPy, on the current stream, into ``dst``: the PlanNd comes from
        ``cupyx.scipy.fft.get_fft_plan`` (which reads cupy.fft's plan cache) and is kept per
        (device, kind, batch, shape), because cupy.fft's functions allocate their output and a
        plan's spectra live in its workspace. cuFFT's own work area is the PlanNd's (CuPy's pool),
        held while the PlanNd is: the FFT_PLAN_LIMIT most recent are kept."""
        lh, lw = _check_fft(kind, src, dst)
        key = (self.device_key(), kind, int(src.shape[0]), lh, lw)
        plan = self._fft_plans.get(key)
        if plan is None:
            import cupyx.scipy.fft  # noqa: PLC0415  (optional third-party package)
            value_type = "R2C" if kind == "r2c" else "C2R"
            plan = cupyx.scipy.fft.get_fft_plan(src, shape=(lh, lw), axes=(-2, -1), value_type=value_type)
            with self._lock:
                if len(self._fft_plans) >= FFT_PLAN_LIMIT:
                    self._fft_plans.pop(next(iter(self._fft_plans)))
                self._fft_plans[key] = plan
        from cupy.cuda import cufft  # noqa: PLC0415  (optional third-party package)
        plan.fft(src, dst, cufft.CUFFT_FORWARD if kind == "r2c" else cufft.CUFFT_INVERSE)

    def tensor_map(self, spec: TensorMapSpec, a):
        """cuTensorMapEncode* through cuda-bindings, memoized per (device, spec, pointer)."""
        return self._maps.get(self.device_key(), spec, int(a.data.ptr))

    def is_array(self, a) -> bool:
        if self._ndarray is None:
            try:
                import cupy  # noqa: PLC0415
            except ImportError:
                return False
            self._ndarray = cupy.ndarray
        return isinstance(a, self._ndarray)

    def meta(self, a):
        return None if a is None else (a.shape, a.strides, a.dtype, a.data.device_id)

    def devices(self, *arrays):
        return tuple(None if a is None else a.data.device_id for a in arrays)

    def as_array(self, a, what: str):
        """Accept a cupy.ndarray or any CUDA array CuPy can view without a copy."""
        err = _scalar_error(a, what)
        if err is not None:
            raise err
        if isinstance(a, np.ndarray):
            raise TypeError(f"{what} is a numpy.ndarray, but the current backend is the GPU (CuPy). "
                            "Pass a cupy.ndarray, or run on the CPU emulator with "
                            "`with cuconv.backend('emulator'):`.")
        self.ensure_device()
        import cupy  # noqa: PLC0415
        if isinstance(a, cupy.ndarray):
            return a
        if hasattr(a, "__cuda_array_interface__"):
            return cupy.asarray(a)          # zero-copy view
        if hasattr(a, "__dlpack__"):
            return cupy.from_dlpack(a)      # zero-copy (e.g. a PyTorch CUDA tensor)
        raise TypeError(f"{what} must be a cupy.ndarray or a CUDA array (__cuda_array_interface__ "
                        f"or DLPack), got {type(a).__name__}")

    def device_of(self, a):
        return a.device.id

    def to_numpy(self, a) -> np.ndarray:
        return a.get() if hasattr(a, "get") else np.asarray(a)


class _NumpyBackend(Backend):
    """The CPU backends: NumPy arrays, one fixed (emulated) device."""
    xp = np
    array_type = np.ndarray

    def __init__(self, cc=None, sms=None):
        super().__init__()
        self._device_caps = _caps(cc, sms)
        self._key = (self._device_caps.cc, self._device_caps.sms)
        self._local = threading.local()

    def ensure_device(self) -> None:
        return None

    def device_key(self):
        return self._key

    def caps(self) -> DeviceCaps:
        return self._device_caps

    def is_array(self, a) -> bool:
        return isinstance(a, np.ndarray)

    def as_array(self, a, what: str):
        if isinstance(a, np.ndarray):
            return a
        err = _scalar_error(a, what)
        if err is not None:
            raise err
        if type(a).__module__.startswith("cupy"):
            raise TypeError(f"{what} is a cupy array, but the current backend is {self.name!r}, "
                            "which takes numpy.ndarray (call .get() first, or leave this backend)")
        raise TypeError(f"{what} must be a numpy.ndarray on the {self.name} backend, got {type(a).__name__}")

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def workspace(self, nbytes: int):
        """One workspace buffer per thread, grown when a plan needs more and reused: the CPU
        backends run a plan's launches synchronously, so no two plans hold it at once (CuPy's
        pool gives the GPU the same reuse)."""
        buf = getattr(self._local, "workspace", None)
        if buf is None or buf.nbytes < nbytes:
            buf = self._local.workspace = np.empty(max(nbytes, 1), np.uint8)
        return buf[:nbytes]

    def device_of(self, a):
        return "cpu"


class EmulatorBackend(_NumpyBackend):
    """The same kernels, compiled with g++ by cuconv.emulator and run on the CPU on NumPy arrays.

    One emulator module per (kernel file, options, checking mode) holds every registered
    instantiation of that file: one g++ build per file, not per config, shared by every
    EmulatorBackend with the same mode (a later ``with cuconv.backend("emulator")`` block
    reuses what an earlier one loaded)."""
    name = "emulator"

    _modules: dict = {}
    _shared_tables: dict = {}
    _lock = threading.Lock()

    def __init__(self, sanitize=None, order=None, seed=None, timeout=None, cc=None, sms=None):
        super().__init__(cc, sms)
        self.sanitize = sanitize
        self.order = order
        self.seed = seed
        self.timeout = timeout
        self._mode = (sanitize, order, seed, timeout)
        # Function tables are per checking mode, shared by every backend object in that mode.
        self._tables = EmulatorBackend._shared_tables.setdefault(self._mode, {})

    def _module(self, file: str, options: tuple, expression: str):
        source = _compile.load_source(file)
        key = (file, options, self._mode, _compile.source_hash(source) if _compile.dev_reload() else None)
        with self._lock:
            mod = self._modules.get(key)
            if mod is not None and expression in mod.cuconv_expressions:
                return mod
            expressions = {e.expression for e in file_group(file, options)} | {expression}
            if mod is not None:   # an instantiation registered after the build: rebuild with it
                expressions |= mod.cuconv_expressions
            kwargs = {k: v for k, v in zip(("sanitize", "order", "seed", "timeout"), self._mode) if v is not None}
            mod = _emulator.RawModule(code=source, options=(*_compile.BASE_OPTIONS, *options),
                                      name_expressions=sorted(expressions), source_name=file, **kwargs)
            mod.cuconv_expressions = frozenset(expressions)
            self._modules[key] = mod
        return mod

    def _load(self, entry: KernelEntry):
        return self._module(entry.file, entry.options, entry.expression).get_function(entry.expression)

    def tensor_map(self, spec: TensorMapSpec, a):
        """cuconv.emulator's encoder over ``a`` (its launch path carries the array along)."""
        return spec.emulator_encode(a)

    def fft(self, kind: str, src, dst) -> None:
        """NumPy's FFT (pocketfft: in float32 for float32/complex64 data since NumPy 2.0, in double
        and rounded to the destination before) on the emulator's arrays, in the interpreter: the
        transforms are a library's on every backend; the plan's own kernels around them run
        through the emulator."""
        lh, lw = _check_fft(kind, src, dst)
        # NaN/Inf in the data are the FFT plans' to handle (their flags and direct fix-up), and
        # cuFFT raises nothing for them: no RuntimeWarning from NumPy either.
        with np.errstate(invalid="ignore", over="ignore"):
            if kind == "r2c":
                dst[...] = np.fft.rfft2(src)
            else:
                dst[...] = np.fft.irfft2(src, s=(lh, lw), norm="forward")   # "forward": inverse unscaled


class RecordBackend(_NumpyBackend):
    """Runs every op's real host path — checks, plan selection, the per-device function cache —
    on NumPy arrays, with the compiled functions replaced by recorders: ``launches`` lists what
    would have run (kernel label, grid, block, shared_mem, args). Outputs are allocated with
    undefined contents; no data is computed. ``cc``/``sms`` set the device plans are made for."""
    name = "record"

    def __init__(self, cc=None, sms=None, keep_args: bool = True):
        super().__init__(cc, sms)
        self.launches: list[LaunchRecord] = []
        self.keep_args = keep_args

    def _load(self, entry: KernelEntry):
        launches, label, keep = self.launches, entry.label, self.keep_args

        def record(grid, block, args, shared_mem=0):
            launches.append(LaunchRecord(label, grid, block, shared_mem, tuple(args) if keep else ()))
        return record

    def tensor_map(self, spec: TensorMapSpec, a):
        """Nothing is encoded: the launch records the spec."""
        return spec

    def fft(self, kind: str, src, dst) -> None:
        """Recorded like a launch (kernel ``fft2d_<kind>_<Lh>x<Lw>``, grid (batch, 1, 1), block ()),
        nothing computed."""
        shape = _check_fft(kind, src, dst)
        self.launches.append(LaunchRecord(fft_label(kind, shape), (int(src.shape[0]), 1, 1), (), 0,
                                          (src, dst) if self.keep_args else ()))

    def clear(self) -> None:
        self.launches.clear()

    def kernels(self) -> list[str]:
        """The labels launched, in order."""
        return [r.kernel for r in self.launches]


_DEFAULT_CUPY = CupyBackend()
_current: contextvars.ContextVar = contextvars.ContextVar("cuconv_backend", default=None)

_NAMES = {"cupy": "cupy", "gpu": "cupy", "cuda": "cupy", "emulator": "emulator", "cpu": "emulator",
          "emu": "emulator", "record": "record"}


def _from_env():
    raw = os.environ.get("CUCONV_BACKEND", "cupy").strip().lower() or "cupy"
    name = _NAMES.get(raw)
    if name == "cupy":
        return _DEFAULT_CUPY
    if name == "emulator":
        return EmulatorBackend()
    raise ValueError(f"CUCONV_BACKEND={raw!r} is not a backend; use 'cupy' or 'emulator'")


_ENV_BACKEND = None


def current_backend():
    """The backend ops run on: the innermost ``cuconv.backend(...)`` block, else CUCONV_BACKEND."""
    global _ENV_BACKEND
    be = _current.get()
    if be is not None:
        return be
    if _ENV_BACKEND is None:
        _ENV_BACKEND = _from_env()
    return _ENV_BACKEND


@contextlib.contextmanager
def backend(name: str = "emulator", *, sanitize=None, order=None, seed=None, timeout=None,
            cc=None, sms=None):
    """Run the ops in this block on ``"emulator"`` (NumPy, CPU), ``"cupy"`` (GPU) or
    ``"record"`` (NumPy, nothing computed, launches recorded in ``be.launches``).

    ``sanitize`` ("address,undefined"), ``order`` ("forward" | "reverse" | "random"), ``seed``
    and ``timeout`` select the emulator's checking modes (see cuconv.emulator). ``cc`` and
    ``sms`` (emulator and record) set the compute capability and SM count plans are made for
    (default sm_90 with 132 SMs).
    """
    key = _NAMES.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown backend {name!r}; use 'cupy', 'emulator' or 'record'")
    emulator_only = dict(sanitize=sanitize, order=order, seed=seed, timeout=timeout)
    if key == "cupy":
        if any(v is not None for v in (*emulator_only.values(), cc, sms)):
            raise ValueError("sanitize/order/seed/timeout/cc/sms are options of the CPU backends; "
                             "the cupy backend takes none")
        be = _DEFAULT_CUPY
    elif key == "emulator":
        be = EmulatorBackend(sanitize=sanitize, order=order, seed=seed, timeout=timeout, cc=cc, sms=sms)
    else:
        if any(v is not None for v in emulator_only.values()):
            raise ValueError("sanitize/order/seed/timeout are emulator options; the record backend "
                             "computes nothing and takes only cc= and sms=")
        be = RecordBackend(cc=cc, sms=sms)
    token = _current.set(be)
    try:
        yield be
    finally:
        _current.reset(token)


@contextlib.contextmanager
def using(be):
    """Run the ops in this block on the backend object ``be`` (e.g. an instance of a Backend
    subclass that a test or a profiler wraps)."""
    token = _current.set(be)
    try:
        yield be
    finally:
        _current.reset(token)


def planning_target(be) -> tuple[DeviceCaps, object]:
    """(capabilities, device key) plans are made for on ``be``: the emulated sm_90 with no device
    key when the GPU backend has no device (planning and ``algorithms()`` on a CPU machine)."""
    try:
        return be.caps(), be.device_key()
    except NoDeviceError:
        return EMULATED_CAPS, None


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (never raises)."""
    try:
        _DEFAULT_CUPY.ensure_device()
        return True
    except NoDeviceError:
        return False
