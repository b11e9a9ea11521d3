"""RawModule / RawKernel: CuPy's API over the CPU emulator."""

from __future__ import annotations

import numbers
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _build, _options, _source, _worker
from .errors import CompileError

MAX_DYNAMIC_SHARED = 232448  # 227 KiB, as runtime.h
_ORDER_CODE = {"forward": 0, "reverse": 1, "random": 2}


@dataclass(frozen=True)
class Param:
    kind: str  # "p" pointer, "s" scalar, "v" other by-value type
    dtype: str  # "i" "u" "f" "b" "B" or "V"
    size: int  # sizeof the scalar, or of the pointee (0 for void)
    is_const: bool
    ctype: str  # the C++ type, for messages

    def scalar_dtype(self) -> np.dtype | None:
        if self.dtype == "b":
            return np.dtype(np.bool_)
        if self.dtype in "iuf":
            try:
                return np.dtype(f"{self.dtype}{self.size}")
            except TypeError:
                return None
        if self.dtype == "B":
            try:
                import ml_dtypes
                return np.dtype(ml_dtypes.bfloat16)
            except ImportError:
                return None
        return None


@dataclass(frozen=True)
class KernelInfo:
    index: int
    name: str
    params: tuple[Param, ...]


def _parse_description(text: str) -> dict[str, KernelInfo]:
    kernels: dict[str, KernelInfo] = {}
    current: list | None = None
    name = ""
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "K":
            if current is not None:
                kernels[name] = KernelInfo(len(kernels), name, tuple(current))
            name, current = parts[1], []
        elif parts[0] == "P" and current is not None:
            current.append(Param(parts[1], parts[2], int(parts[3]), parts[4] == "1", parts[5]))
    if current is not None:
        kernels[name] = KernelInfo(len(kernels), name, tuple(current))
    return kernels


def _dims(value, what: str) -> tuple[int, int, int]:
    if isinstance(value, numbers.Integral):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not 1 <= len(value) <= 3:
        raise ValueError(f"{what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    dims = []
    for v in value:
        if not isinstance(v, numbers.Integral) or isinstance(v, bool):
            raise ValueError(f"{what} must hold ints, got {value!r}")
        if v < 1:
            raise ValueError(f"{what} dimensions must be >= 1, got {tuple(value)}")
        dims.append(int(v))
    return tuple(dims + [1] * (3 - len(dims)))


class RawModule:
    """A CUDA source compiled for the CPU emulator; mirrors ``cupy.RawModule``.

    ``get_function(name)`` accepts a plain ``extern "C"`` kernel name or one of
    ``name_expressions`` (e.g. ``"gemm<64, 64, 8>"``); another name expression
    is compiled on demand. ``sanitize``, ``order``, ``seed`` and ``timeout``
    default to $CUCONV_EMU_SANITIZE / _ORDER / _SEED / _TIMEOUT.
    """

    def __init__(self, code: str | None = None, options=(), name_expressions=(), *, path: str | None = None,
                 sanitize: str | None = None, order: str | None = None, seed: int | None = None,
                 timeout: float | None = None, source_name: str | None = None, backend: str = "nvrtc",
                 jitify: bool = False, translate_cucomplex: bool = False, enable_cooperative_groups: bool = False):
        if (code is None) == (path is None):
            raise TypeError("RawModule needs exactly one of code= (CUDA source) or path= (a .cu file)")
        if path is not None:
            code = Path(path).read_text()
            source_name = source_name or Path(path).name
        if not isinstance(code, str):
            raise TypeError(f"code must be a string of CUDA source, got {type(code).__name__}")
        if jitify:
            raise ValueError("the CPU emulator does not support jitify=True")
        if isinstance(name_expressions, str):
            raise TypeError("name_expressions must be a sequence of strings, not a single string")
        self.code = code
        self.options = tuple(options) if not isinstance(options, str) else (options,)
        self.name_expressions = tuple(name_expressions or ())
        for n in self.name_expressions:
            if not isinstance(n, str) or not n.strip():
                raise TypeError(f"name_expressions must hold non-empty strings, got {n!r}")
        self.source_name = source_name or "kernel.cu"
        self.sanitize = _options.resolve_sanitize(sanitize)
        self.order = _options.resolve_order(order)
        self.seed = _options.resolve_seed(seed)
        self.timeout = _options.resolve_timeout(timeout)
        self._compile_options = _options.parse_options(self.options)
        self._lock = threading.RLock()
        self._library: Path | None = None
        self._kernels: dict[str, KernelInfo] = {}
        self._names: list[str] = []

    # --- compiling -----------------------------------------------------------------------------
    def _build(self, names: list[str]) -> tuple[Path, dict[str, KernelInfo], list[str]]:
        detected = [n for n in _source.global_kernel_names(self.code) if n not in names]
        try:
            lib = _build.build_library(self.code, self._compile_options, names + detected, self.sanitize,
                                       self.source_name)
            names = names + detected
        except CompileError:
            if not detected:
                raise
            # A scanned name may not be a kernel get_function can reach (a macro, a
            # namespace, a preprocessor branch): build only what was asked for.
            lib = _build.build_library(self.code, self._compile_options, names, self.sanitize, self.source_name)
        kernels = _parse_description(_worker.worker(self.sanitize).describe(str(lib)))
        return lib, kernels, names

    def compile(self) -> "RawModule":
        """Compile now (otherwise the first get_function does)."""
        with self._lock:
            if self._library is None:
                self._library, self._kernels, self._names = self._build(list(self.name_expressions))
        return self

    @property
    def library_path(self) -> Path:
        return self.compile()._library

    def get_function(self, name: str) -> "Function":
        if not isinstance(name, str):
            raise TypeError(f"kernel name must be a string, got {name!r}")
        with self._lock:
            self.compile()
            if name not in self._kernels:
                try:
                    lib, kernels, names = self._build(self._names + [name])
                except CompileError as e:
                    raise CompileError(f"cannot find or instantiate kernel {name!r} in this module "
                                       f"(kernels: {sorted(self._kernels)}):\n{e}", log=e.log,
                                       command=e.command) from None
                self._library, self._kernels, self._names = lib, kernels, names
            return Function(self, self._library, self._kernels[name])

    def __repr__(self) -> str:
        return (f"<cuconv.emulator.RawModule {self.source_name} sanitize={self.sanitize!r} order={self.order!r} "
                f"kernels={sorted(self._kernels) if self._library else '(not compiled)'}>")


class Function:
    """One kernel of a RawModule; call it like ``cupy.RawKernel``."""

    def __init__(self, module: RawModule, library: Path, info: KernelInfo):
        self.module = module
        self.library = str(library)
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def num_params(self) -> int:
        return len(self.info.params)

    def __repr__(self) -> str:
        sig = ", ".join(p.ctype for p in self.info.params)
        return f"<cuconv.emulator kernel {self.name}({sig})>"

    def _marshal(self, args):
        """Check the arguments against the kernel's parameters; returns (groups, packed args)."""
        params = self.info.params
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args must be a tuple of arguments for kernel {self.name!r}, got {type(args).__name__}")
        if len(args) != len(params):
            sig = ", ".join(f"{i}: {p.ctype}" for i, p in enumerate(params))
            raise TypeError(f"kernel {self.name!r} takes {len(params)} argument(s) ({sig}), got {len(args)}")
        ranges = []  # (start, end, arg index, writes)
        packed: list = [None] * len(args)
        for i, (p, a) in enumerate(zip(params, args)):
            where = f"argument {i} ({p.ctype}) of kernel {self.name!r}"
            if p.kind == "p":
                if a is None:
                    packed[i] = ("ptr", -1, 0)
                    continue
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{where} is a pointer: pass a NumPy array (or None for a null pointer), "
                                    f"got {type(a).__name__}")
                if not a.flags.c_contiguous:
                    raise ValueError(f"{where}: the array (shape {a.shape}, strides {a.strides}) must be "
                                     f"C-contiguous, as device memory is")
                self._check_pointee(p, a, where)
                writes = not p.is_const
                if writes and not a.flags.writeable:
                    raise ValueError(f"{where}: the array is read-only but the kernel may write through a "
                                     f"non-const pointer")
                start = a.__array_interface__["data"][0]
                ranges.append((start, start + a.nbytes, i, writes))
            else:
                packed[i] = ("bytes", self._scalar_bytes(p, a, where))
        # Groups of overlapping arrays (views of one buffer) travel together, so
        # that they alias in the kernel as they do here.
        groups = []
        for start, end, i, writes in sorted(ranges):
            if groups and start < groups[-1][1] and end > groups[-1][0]:
                g = groups[-1]
                g[1] = max(g[1], end)
                g[2] = g[2] or writes
                g[3].append((i, start))
            else:
                groups.append([start, end, writes, [(i, start)]])
        out_groups = []
        for gi, (start, end, writes, members) in enumerate(groups):
            out_groups.append((start, end - start, writes))
            for i, s in members:
                packed[i] = ("ptr", gi, s - start)
        return out_groups, packed

    @staticmethod
    def _check_pointee(p: Param, a: np.ndarray, where: str) -> None:
        dt = a.dtype
        if p.size in (0, 1) or p.dtype == "V":
            return  # void*, char*, structs, vector types: any bytes
        ok = True
        if p.dtype == "f":
            ok = dt.kind == "f" and dt.itemsize == p.size
        elif p.dtype in "iu":
            ok = dt.kind in "iu" and dt.itemsize == p.size
        elif p.dtype == "B":
            ok = dt.name == "bfloat16" or (dt.kind in "iu" and dt.itemsize == 2)
        if not ok:
            raise TypeError(f"{where} points to {p.size}-byte {'floats' if p.dtype == 'f' else 'integers'}, "
                            f"but the array's dtype is {dt}")

    @staticmethod
    def _scalar_bytes(p: Param, a, where: str) -> bytes:
        if isinstance(a, np.ndarray):
            raise TypeError(f"{where} is passed by value: pass a NumPy scalar, not an array (shape {a.shape})")
        if p.kind == "s":
            want = p.scalar_dtype()
            if want is None:
                raise TypeError(f"{where}: no NumPy type matches this parameter")
            if not isinstance(a, np.generic) or a.dtype != want:
                got = f"numpy.{a.dtype}" if isinstance(a, np.generic) else f"{type(a).__name__} {a!r}"
                example = a.item() if isinstance(a, np.generic) else a
                raise TypeError(f"{where} needs a NumPy scalar of type numpy.{want} "
                                f"(e.g. numpy.{want}({example!r})), got {got}")
            return a.tobytes()
        # A struct or vector type by value: its exact bytes.
        if isinstance(a, np.void) or (isinstance(a, np.generic) and a.dtype.fields):
            data = a.tobytes()
        elif isinstance(a, (bytes, bytearray, memoryview)):
            data = bytes(a)
        else:
            raise TypeError(f"{where} is a {p.size}-byte value: pass a NumPy structured scalar or bytes of that "
                            f"size, got {type(a).__name__}")
        if len(data) != p.size:
            raise TypeError(f"{where} is {p.size} bytes, got {len(data)} bytes")
        return data

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None,
                 enable_cooperative_groups: bool = False) -> None:
        grid3 = _dims(grid, "grid")
        block3 = _dims(block, "block")
        if block3[0] * block3[1] * block3[2] > 1024 or block3[0] > 1024 or block3[1] > 1024 or block3[2] > 64:
            raise ValueError(f"block {block3} is too large for CUDA: at most 1024 threads per block, "
                             f"blockDim.z <= 64")
        if grid3[0] > 2**31 - 1 or grid3[1] > 65535 or grid3[2] > 65535:
            raise ValueError(f"grid {grid3} exceeds CUDA's limits (2**31-1, 65535, 65535)")
        if not isinstance(shared_mem, numbers.Integral) or isinstance(shared_mem, bool) or shared_mem < 0:
            raise ValueError(f"shared_mem must be a non-negative int, got {shared_mem!r}")
        if shared_mem > MAX_DYNAMIC_SHARED:
            raise ValueError(f"shared_mem={shared_mem} exceeds {MAX_DYNAMIC_SHARED} bytes (227 KiB), the most "
                             f"dynamic shared memory any CUDA device gives a block")
        groups, packed = self._marshal(args)
        m = self.module
        _worker.worker(m.sanitize).launch(
            self.library, self.info.index, grid3, block3, int(shared_mem), _ORDER_CODE[m.order], m.seed, groups,
            packed, timeout=m.timeout, kernel=self.name)


class RawKernel:
    """A single kernel; mirrors ``cupy.RawKernel(code, name, options)``."""

    def __init__(self, code: str, name: str, options=(), *, sanitize: str | None = None, order: str | None = None,
                 seed: int | None = None, timeout: float | None = None, source_name: str | None = None,
                 backend: str = "nvrtc", translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 jitify: bool = False):
        if not isinstance(name, str):
            raise TypeError(f"kernel name must be a string, got {name!r}")
        self.name = name
        self.module = RawModule(code=code, options=options, name_expressions=(name,), sanitize=sanitize,
                                order=order, seed=seed, timeout=timeout, source_name=source_name, jitify=jitify)
        self._function: Function | None = None

    @property
    def function(self) -> Function:
        if self._function is None:
            self._function = self.module.get_function(self.name)
        return self._function

    def compile(self) -> "RawKernel":
        self.function  # noqa: B018 - compiles
        return self

    @property
    def num_params(self) -> int:
        return self.function.num_params

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None,
                 enable_cooperative_groups: bool = False) -> None:
        self.function(grid, block, args, shared_mem=shared_mem)

    def __repr__(self) -> str:
        return f"<cuconv.emulator.RawKernel {self.name}>"
