"""Where ops run: CuPy on the GPU (default) or cuconv's CPU emulator.

The op code (checks, planning, workspace, launches) is shared; a backend only
allocates arrays and launches kernels::

    with cuconv.backend("emulator", sanitize="address,undefined", order="reverse"):
        y = cuconv.conv2d(x_numpy, w_numpy)      # NumPy in, NumPy out, kernels run on the CPU

``CUCONV_BACKEND=emulator`` selects the emulator for a whole process (and
``CUCONV_EMU_SANITIZE`` / ``CUCONV_EMU_ORDER`` / ``CUCONV_EMU_SEED`` its modes).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading

import numpy as np

from . import compile as _compile


class NoDeviceError(RuntimeError):
    """No CUDA device (or no working CuPy) for an op on the GPU backend."""


_HOW_TO_EMULATE = ("To run cuconv's kernels on the CPU instead, use "
                   "`with cuconv.backend('emulator'):` with NumPy arrays, or set CUCONV_BACKEND=emulator.")


class CupyBackend:
    """Default: kernels compiled by NVRTC through CuPy, launched on CuPy's current stream."""
    name = "cupy"

    def __init__(self):
        self._checked = False
        self._lock = threading.Lock()

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
            self._checked = True

    def is_array(self, a) -> bool:
        import cupy  # noqa: PLC0415
        return isinstance(a, cupy.ndarray)

    def as_array(self, a, what: str):
        """Accept a cupy.ndarray or any CUDA array CuPy can view without a copy."""
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

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def device_of(self, a):
        return a.device.id

    def launch(self, file: str, expression: str, grid, block, args, shared_mem: int = 0,
               options=()) -> None:
        fn = _compile.get_cupy_function(file, expression, options)
        if shared_mem > _compile_arch_default_smem():
            fn.max_dynamic_shared_size_bytes = shared_mem
        fn(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)

    def to_numpy(self, a) -> np.ndarray:
        return a.get() if hasattr(a, "get") else np.asarray(a)


def _compile_arch_default_smem() -> int:
    from .arch import DEFAULT_MAX_SMEM_PER_BLOCK  # noqa: PLC0415
    return DEFAULT_MAX_SMEM_PER_BLOCK


class EmulatorBackend:
    """The same kernels, compiled with g++ by cuconv.emulator and run on the CPU on NumPy arrays."""
    name = "emulator"
    xp = np

    def __init__(self, sanitize=None, order=None, seed=None, timeout=None):
        self.sanitize = sanitize
        self.order = order
        self.seed = seed
        self.timeout = timeout

    # Shared by every EmulatorBackend instance: a `with cuconv.backend("emulator")` block
    # must not recompile what an earlier block already loaded.
    _modules: dict = {}
    _lock = threading.Lock()

    def ensure_device(self) -> None:
        return None

    def is_array(self, a) -> bool:
        return isinstance(a, np.ndarray)

    def as_array(self, a, what: str):
        if isinstance(a, np.ndarray):
            return a
        if type(a).__module__.startswith("cupy"):
            raise TypeError(f"{what} is a cupy array, but the current backend is the CPU emulator, "
                            "which takes numpy.ndarray (call .get() first, or leave the emulator backend)")
        raise TypeError(f"{what} must be a numpy.ndarray on the emulator backend, got {type(a).__name__}")

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def device_of(self, a):
        return "cpu"

    def _module(self, file: str, expression: str, options):
        """One emulator module per (kernel file, options, checking mode) holding every
        registered instantiation of that file: one g++ build per file, not per config."""
        from . import emulator  # noqa: PLC0415
        source = _compile.load_source(file)
        key = (file, tuple(options), _compile.source_hash(source),
               self.sanitize, self.order, self.seed, self.timeout)
        with self._lock:
            mod = self._modules.get(key)
            if mod is not None and expression in mod.cuconv_expressions:
                return mod
            expressions = {e.expression for e in _compile.registered_kernels()
                           if e.file == file and tuple(e.options) == tuple(options)}
            expressions.add(expression)
            if mod is not None:   # an unregistered instantiation: rebuild with it added
                expressions |= mod.cuconv_expressions
            kwargs = {k: getattr(self, k) for k in ("sanitize", "order", "seed", "timeout")
                      if getattr(self, k) is not None}
            mod = emulator.RawModule(code=source, options=(*_compile.BASE_OPTIONS, *options),
                                     name_expressions=sorted(expressions), source_name=file, **kwargs)
            mod.cuconv_expressions = frozenset(expressions)
            self._modules[key] = mod
        return mod

    def launch(self, file: str, expression: str, grid, block, args, shared_mem: int = 0,
               options=()) -> None:
        fn = self._module(file, expression, options).get_function(expression)
        fn(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)


_DEFAULT_CUPY = CupyBackend()
_current: contextvars.ContextVar = contextvars.ContextVar("cuconv_backend", default=None)


def _from_env():
    name = os.environ.get("CUCONV_BACKEND", "cupy").strip().lower() or "cupy"
    if name in ("cupy", "gpu", "cuda"):
        return _DEFAULT_CUPY
    if name in ("emulator", "cpu", "emu"):
        return EmulatorBackend()
    raise ValueError(f"CUCONV_BACKEND={name!r} is not a backend; use 'cupy' or 'emulator'")


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
def backend(name: str = "emulator", *, sanitize=None, order=None, seed=None, timeout=None):
    """Run the ops in this block on ``"emulator"`` (NumPy, CPU) or ``"cupy"`` (GPU).

    ``sanitize`` ("address,undefined"), ``order`` ("forward" | "reverse" | "random"), ``seed``
    and ``timeout`` select the emulator's checking modes (see cuconv.emulator).
    """
    name = name.lower()
    if name in ("cupy", "gpu", "cuda"):
        if any(v is not None for v in (sanitize, order, seed, timeout)):
            raise ValueError("sanitize/order/seed/timeout are emulator options; the cupy backend takes none")
        be = _DEFAULT_CUPY
    elif name in ("emulator", "cpu", "emu"):
        be = EmulatorBackend(sanitize=sanitize, order=order, seed=seed, timeout=timeout)
    else:
        raise ValueError(f"unknown backend {name!r}; use 'cupy' or 'emulator'")
    token = _current.set(be)
    try:
        yield be
    finally:
        _current.reset(token)


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (never raises)."""
    try:
        _DEFAULT_CUPY.ensure_device()
        return True
    except NoDeviceError:
        return False
