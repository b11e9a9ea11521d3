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

import collections
import contextlib
import contextvars
import os
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import compile as _compile
from . import emulator as _emulator
from .arch import DEFAULT_MAX_SMEM_PER_BLOCK, MIN_CC, launch_violations, table_arch
from .registry import ARCHS, KernelEntry, file_group
from .tensor_map import DriverMapCache, TensorMapSpec


class NoDeviceError(RuntimeError):
    """No CUDA device (or no working CuPy) for an op on the GPU backend."""


_HOW_TO_EMULATE = ("To run cuconv's kernels on the CPU instead, use "
                   "`with cuconv.backend('emulator'):` with NumPy arrays, or set CUCONV_BACKEND=emulator.")


# A device the CPU backends stand in for when not told otherwise: an H100 SXM (sm_90, 132 SMs,
# 80 GiB). Its memory only decides auto's default workspace cap (DeviceCaps.workspace_cap).
EMULATED_MEMORY_BYTES = 80 << 30
# auto's default workspace cap is 1/WORKSPACE_CAP_DIVISOR of the device's memory (forward and
# backward alike). A fixed share of the total, not of what is free when the plan is made: plans are
# memoized per device, so they must not depend on a transient reading, and the rest is the caller's
# (activations, gradients, the optimizer's state). PyTorch's cuDNN path bounds its workspace by the
# largest free block of its caching allocator and tries the next engine on OutOfMemoryError;
# cuDNN's frontend leaves the bound to the caller (Graph::deselect_workspace_greater_than).
WORKSPACE_CAP_DIVISOR = 4


class UnsupportedDeviceError(RuntimeError):
    """The device's compute capability is outside what cuconv builds kernels for (sm_75 ... sm_120)."""


@dataclass(frozen=True)
class DeviceCaps:
    """What plans depend on: compute capability (75, 80, 90, ...), SM count, the device's name and
    its memory in bytes (``free_bytes``: what was free when the capabilities were read, for
    reports; plans never depend on it). The CPU backends count as an H100 SXM (sm_90, 132 SMs,
    80 GiB) unless told otherwise: there the capability only decides which kernels a plan picks,
    not how fast they run."""
    cc: int = 90
    sms: int = 132
    name: str = "emulated sm_90 (132 SMs, 80 GiB)"
    memory_bytes: int = EMULATED_MEMORY_BYTES
    free_bytes: int | None = field(default=None, compare=False)

    @property
    def arch(self) -> str:
        return f"sm_{self.cc}"

    @property
    def workspace_cap(self) -> int:
        """auto's default bound on a plan's workspace: a quarter of the device's memory."""
        return self.memory_bytes // WORKSPACE_CAP_DIVISOR

    def unsupported_reason(self) -> str | None:
        """Why cuconv cannot run on this device (compute capability below 7.5), or None."""
        if self.cc >= MIN_CC:
            return None
        return (f"{self.name} has compute capability {self.cc // 10}.{self.cc % 10} (sm_{self.cc}); cuconv's "
                f"kernels are built for compute capability 7.5 (Turing) to 12.0 ({', '.join(ARCHS)}), "
                "so nothing can run on it. " + _HOW_TO_EMULATE)


EMULATED_CAPS = DeviceCaps()


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def workspace_cap(caps: DeviceCaps, max_workspace_bytes: int | None) -> tuple[int, str]:
    """(bytes, description) of the workspace bound ``auto`` plans within, forward and backward:
    the caller's ``max_workspace_bytes`` when given, else the device's default
    (``caps.workspace_cap``, a quarter of its memory). The description is what a plan's
    description quotes."""
    if max_workspace_bytes is not None:
        return int(max_workspace_bytes), f"max_workspace_bytes={int(max_workspace_bytes)}"
    cap = caps.workspace_cap
    return cap, (f"default workspace cap {cap} bytes ({_gib(cap)}: 1/{WORKSPACE_CAP_DIVISOR} of the device's "
                 f"{_gib(caps.memory_bytes)})")


def _caps(cc, sms, memory_bytes=None) -> DeviceCaps:
    cc = EMULATED_CAPS.cc if cc is None else int(cc)
    sms = EMULATED_CAPS.sms if sms is None else int(sms)
    memory_bytes = EMULATED_CAPS.memory_bytes if memory_bytes is None else int(memory_bytes)
    if cc < 50 or sms <= 0 or memory_bytes <= 0:
        raise ValueError(f"cc must be a compute capability such as 80 or 90, sms and memory_bytes positive; got "
                         f"cc={cc}, sms={sms}, memory_bytes={memory_bytes}")
    return DeviceCaps(cc, sms, f"emulated sm_{cc} ({sms} SMs, {memory_bytes / 2**30:.3g} GiB)", memory_bytes)


def not_built_reason(entry: KernelEntry, cc: int) -> str | None:
    """Why ``entry`` cannot launch on a device of compute capability ``cc`` (None: it can)."""
    if _compile.runs_on(entry, cc):
        return None
    return f"kernel {entry.label} is not built for sm_{cc}: it targets {', '.join(entry.archs)}"


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
FFT_PLAN_LIMIT = 16          # cuFFT plans the GPU backend keeps (each holds its work area)


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


class FftPlanCache:
    """A bounded least-recently-used cache of cuFFT plans (or anything): ``get`` marks a hit as
    recent, ``put`` evicts the least recent past ``limit`` (dropping the last reference destroys a
    CuPy plan and frees its work area), ``clear`` drops them all. Thread-safe."""

    def __init__(self, limit: int):
        self.limit = limit
        self._plans: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
            return plan

    def put(self, key, plan):
        with self._lock:
            self._plans[key] = plan
            self._plans.move_to_end(key)
            while len(self._plans) > self.limit:
                self._plans.popitem(last=False)
        return plan

    def clear(self) -> int:
        with self._lock:
            n = len(self._plans)
            self._plans.clear()
        return n

    def __len__(self) -> int:
        return len(self._plans)

    def keys(self) -> list:
        with self._lock:
            return list(self._plans)


def cufft_plan(kind: str, batch: int, lh: int, lw: int):
    """A ``cupy.cuda.cufft.PlanNd`` for ``batch`` contiguous 2-D real-to-complex (``"r2c"``: float32
    (Lh, Lw) to complex64 (Lh, Lw//2+1)) or complex-to-real (``"c2r"``) transforms, with its own work
    area from the current allocator (what cupy.fft builds for ``rfft2``/``irfft2`` over the last two
    axes of a C-contiguous (batch, Lh, Lw) array)."""
    from cupy.cuda import cufft  # noqa: PLC0415  (optional third-party package)
    real, spectrum = (lh, lw), (lh, lw // 2 + 1)
    if kind == "r2c":
        inembed, onembed, fft_type, last = real, spectrum, cufft.CUFFT_R2C, lw // 2 + 1
    else:
        inembed, onembed, fft_type, last = spectrum, real, cufft.CUFFT_C2R, lw
    return cufft.PlanNd(real, inembed, 1, inembed[0] * inembed[1], onembed, 1, onembed[0] * onembed[1],
                        fft_type, batch, "C", 2, last)


class Backend:
    """The shared launch path; subclasses say how to load an entry and which device is current."""
    name = "?"
    array_type = None        # the class of the backend's arrays (the op front ends' fast check)
    multi_device = False     # arrays live on several devices: plan keys record where (``devices``)

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
        CUCONV_DEV_RELOAD, where every launch re-checks the sources). An entry not built for the
        device's compute capability is a RuntimeError on every backend, as on the GPU: plans never
        name one (the algorithms refuse it), so meeting one here is a bug."""
        reason = not_built_reason(entry, self.caps().cc)
        if reason is not None:
            raise RuntimeError(f"{reason} (a plan named a kernel its device cannot run)")
        fn = self._wrap(entry, self._load(entry))
        if not _compile.dev_reload():
            self._tables.setdefault(self.device_key(), {})[entry.label] = fn
        return fn

    def _load(self, entry: KernelEntry):
        raise NotImplementedError

    def _wrap(self, entry: KernelEntry, fn):
        """The callable a launch of ``entry`` goes through (the CPU backends add the driver's launch
        checks; the GPU backend calls the CuPy kernel directly, and the driver checks)."""
        return fn

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

    def copy(self, label: str, dst, src) -> None:
        """A plan's CopyStep ``label``: ``dst`` (dense) = ``src`` (a strided view of the same shape and
        dtype): CuPy's elementwise copy on the current stream on the GPU, NumPy's on the CPU."""
        dst[...] = src

    def devices(self, *arrays):
        """What a plan key records of where the arrays live (the CPU backends: nothing)."""
        return None


class CupyBackend(Backend):
    """Default: kernels compiled by NVRTC through CuPy, launched on CuPy's current stream."""
    name = "cupy"
    multi_device = True

    def __init__(self):
        super().__init__()
        self._checked = False
        self._lock = threading.Lock()
        self._caps: dict[int, DeviceCaps] = {}
        self._runtime = None
        self._ndarray = None
        self._fft_plans = FftPlanCache(FFT_PLAN_LIMIT)
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
            with d:
                free, total = d.mem_info          # cudaMemGetInfo: bytes free and total
            caps = DeviceCaps(int(d.compute_capability), int(d.attributes["MultiProcessorCount"]),
                              name.decode() if isinstance(name, bytes) else str(name),
                              int(total), int(free))
            reason = caps.unsupported_reason()
            if reason is not None:              # never cached: every op call says it again
                raise UnsupportedDeviceError(f"CUDA device {dev}: {reason}")
            self._caps[dev] = caps
        return caps

    def _load(self, entry: KernelEntry):
        return _compile.cupy_function(entry, self.device_key(), self.caps().cc)

    def fft(self, kind: str, src, dst) -> None:
        """cuFFT through CuPy, on the current stream, into ``dst``. One cuFFT plan per (device,
        stream, kind, batch, shape), never shared across streams: a plan owns one work area and
        binds one stream (cufftSetStream) at each execution, so two streams running the same plan
        at once would race on both. The plans are cuconv's own (``cupy.cuda.cufft.PlanNd``, not
        cupy.fft's cache, which every stream shares) in a bounded cache (``FftPlanCache``): the
        FFT_PLAN_LIMIT most recently used are kept, an evicted plan is destroyed and its work area
        goes back to the allocator it came from (CuPy's pool; torch's caching allocator under
        cuconv.torch). ``release_fft_plans()`` empties the cache."""
        lh, lw = _check_fft(kind, src, dst)
        import cupy  # noqa: PLC0415  (optional third-party package)
        batch = int(src.shape[0])
        key = (self.device_key(), cupy.cuda.get_current_stream().ptr, kind, batch, lh, lw)
        plan = self._fft_plans.get(key)
        if plan is None:
            plan = self._fft_plans.put(key, cufft_plan(kind, batch, lh, lw))
        from cupy.cuda import cufft  # noqa: PLC0415  (optional third-party package)
        plan.fft(src, dst, cufft.CUFFT_FORWARD if kind == "r2c" else cufft.CUFFT_INVERSE)

    def release_fft_plans(self) -> int:
        """Destroy every cached cuFFT plan (their work areas go back to their allocator); returns
        how many there were."""
        return self._fft_plans.clear()

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

    def devices(self, *arrays):
        return tuple(None if a is None else a.data.device_id for a in arrays)

    def as_array(self, a, what: str):
        """Accept a cupy.ndarray or any CUDA array CuPy can view without a copy: through DLPack
        first (``cupy.from_dlpack`` passes CuPy's current stream to the producer, which orders its
        pending writes before it: the DLPack stream handshake), else through
        ``__cuda_array_interface__``. A tensor that requires grad is a TypeError pointing to
        cuconv.torch (the autograd functions), as is an array that lives on the CPU."""
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
        return foreign_cuda_array(cupy, a, what)

    def device_of(self, a):
        return a.device.id

    def to_numpy(self, a) -> np.ndarray:
        return a.get() if hasattr(a, "get") else np.asarray(a)


_DLPACK_CUDA = (2, 13)       # DLPack device types kDLCUDA, kDLCUDAManaged


def foreign_cuda_array(cupy, a, what: str):
    """``a`` (a torch CUDA tensor, a JAX/Numba array, ...) as a zero-copy cupy.ndarray: DLPack
    first, with the stream handshake, else the CUDA array interface. TypeError for a tensor that
    requires grad, an array on another kind of device, or anything else."""
    if getattr(a, "requires_grad", False) is True:
        raise TypeError(f"{what} is a tensor that requires grad; cuconv's ops take plain CUDA arrays and do not "
                        "record autograd history. Use cuconv.torch (cuconv.torch.conv2d, cuconv.torch.Conv2d, ...), "
                        "whose functions are differentiable, or pass tensor.detach()")
    if hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__"):
        kind, _ = a.__dlpack_device__()
        if int(kind) not in _DLPACK_CUDA:
            raise TypeError(f"{what} lives on DLPack device type {int(kind)} (1 is the CPU), not on a CUDA device; "
                            "the GPU backend takes CUDA arrays (for a torch tensor: .cuda(); for CPU data use "
                            "`with cuconv.backend('emulator'):`)")
        return cupy.from_dlpack(a)      # zero-copy, ordered after the producer's stream
    if hasattr(a, "__cuda_array_interface__"):
        return cupy.asarray(a)          # zero-copy view (version 3: CuPy honours its stream field)
    raise TypeError(f"{what} must be a cupy.ndarray or a CUDA array (DLPack or __cuda_array_interface__), "
                    f"got {type(a).__name__}")


class _NumpyBackend(Backend):
    """The CPU backends: NumPy arrays, one fixed (emulated) device."""
    xp = np
    array_type = np.ndarray

    def __init__(self, cc=None, sms=None, memory_bytes=None):
        super().__init__()
        caps = self._device_caps = _caps(cc, sms, memory_bytes)
        self._key = (caps.cc, caps.sms) + (() if caps.memory_bytes == EMULATED_MEMORY_BYTES else (caps.memory_bytes,))
        self._unsupported = caps.unsupported_reason()
        self._limits_arch = table_arch(caps.cc) if self._unsupported is None else None
        self._local = threading.local()

    def ensure_device(self) -> None:
        return None

    def device_key(self):
        return self._key

    def caps(self) -> DeviceCaps:
        """The emulated device's capabilities: UnsupportedDeviceError below sm_75, as the GPU backend."""
        if self._unsupported is not None:
            raise UnsupportedDeviceError(self._unsupported)
        return self._device_caps

    def _wrap(self, entry: KernelEntry, fn):
        """``fn`` behind the launch checks the CUDA driver makes: every launch's grid, block and
        dynamic shared memory against the emulated device's limits (and the function's opt-in, as
        the GPU backend sets it), a RuntimeError naming the limit when one is broken. Checked once
        per distinct (grid, block, shared memory) of each function."""
        arch, label = self._limits_arch, entry.label
        opt_in = entry.dynamic_smem if entry.dynamic_smem > DEFAULT_MAX_SMEM_PER_BLOCK else 0
        seen: set = set()

        def checked(grid, block, args, shared_mem=0):
            if grid.__class__ is not tuple or block.__class__ is not tuple:     # plans pass tuples
                grid, block = tuple(grid), tuple(block)
            key = (grid, block, shared_mem)
            if key not in seen:
                reasons = launch_violations(arch, grid, block, shared_mem, opt_in_smem=opt_in)
                if reasons:
                    raise RuntimeError(f"launch of {label} with grid {key[0]}, block {key[1]}, {shared_mem} bytes of "
                                       f"dynamic shared memory would fail on {arch}: {'; '.join(reasons)}")
                if len(seen) < 4096:
                    seen.add(key)
            fn(grid, block, args, shared_mem=shared_mem)
        return checked

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

    def __init__(self, sanitize=None, order=None, seed=None, timeout=None, cc=None, sms=None, memory_bytes=None):
        super().__init__(cc, sms, memory_bytes)
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
    undefined contents; no data is computed. ``cc``/``sms``/``memory_bytes`` set the device plans are
    made for. Every launch is checked as the GPU would check it (built for the device's arch, the
    launch limits): a RuntimeError here is a plan's bug, never a fallback."""
    name = "record"

    def __init__(self, cc=None, sms=None, keep_args: bool = True, memory_bytes=None):
        super().__init__(cc, sms, memory_bytes)
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

    def copy(self, label: str, dst, src) -> None:
        """Recorded like a launch (kernel ``label``, grid (elements, 1, 1), block ()), nothing copied."""
        self.launches.append(LaunchRecord(label, (int(dst.size), 1, 1), (), 0, (src, dst) if self.keep_args else ()))

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
            cc=None, sms=None, memory_bytes=None):
    """Run the ops in this block on ``"emulator"`` (NumPy, CPU), ``"cupy"`` (GPU) or
    ``"record"`` (NumPy, nothing computed, launches recorded in ``be.launches``).

    ``sanitize`` ("address,undefined"), ``order`` ("forward" | "reverse" | "random"), ``seed``
    and ``timeout`` select the emulator's checking modes (see cuconv.emulator). ``cc``, ``sms``
    and ``memory_bytes`` (emulator and record) describe the device plans are made for: compute
    capability, SM count and memory (default an H100 SXM: sm_90, 132 SMs, 80 GiB; the memory
    decides auto's default workspace cap, a quarter of it). Below cc 75 the first op call raises
    UnsupportedDeviceError, as on such a GPU.
    """
    key = _NAMES.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown backend {name!r}; use 'cupy', 'emulator' or 'record'")
    emulator_only = dict(sanitize=sanitize, order=order, seed=seed, timeout=timeout)
    device = dict(cc=cc, sms=sms, memory_bytes=memory_bytes)
    if key == "cupy":
        if any(v is not None for v in (*emulator_only.values(), *device.values())):
            raise ValueError("sanitize/order/seed/timeout/cc/sms/memory_bytes are options of the CPU backends; "
                             "the cupy backend takes none")
        be = _DEFAULT_CUPY
    elif key == "emulator":
        be = EmulatorBackend(**emulator_only, **device)
    else:
        if any(v is not None for v in emulator_only.values()):
            raise ValueError("sanitize/order/seed/timeout are emulator options; the record backend "
                             "computes nothing and takes only cc=, sms= and memory_bytes=")
        be = RecordBackend(**device)
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
    key when the GPU backend has no device (planning and ``algorithms()`` on a CPU machine).
    UnsupportedDeviceError (compute capability below 7.5) is raised, not replaced."""
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


def release_fft_plans() -> int:
    """Destroy the GPU backend's cached cuFFT plans (FFT convolution); their work areas go back to
    the allocator they came from. Returns how many there were (0 without a GPU)."""
    return _DEFAULT_CUPY.release_fft_plans()


def gpu_unsupported_reason(index: int | None = None) -> str | None:
    """Why CUDA device ``index`` (default: the current one) cannot run cuconv (compute capability
    below 7.5), None when it can or when there is no GPU at all (``gpu_available`` says that).
    What ``cuconv check --gpu``, the bench and bench/gpu_session.sh say once instead of failing
    every case."""
    if not gpu_available():
        return None
    import cupy  # noqa: PLC0415
    try:
        with cupy.cuda.Device(index if index is not None else cupy.cuda.runtime.getDevice()):
            _DEFAULT_CUPY.caps()
    except UnsupportedDeviceError as exc:
        return str(exc)
    return None
