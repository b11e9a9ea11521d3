"""RawModule / RawKernel: CuPy's API over the CPU emulator."""

from __future__ import annotations

import dataclasses
import numbers
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _build, _options, _source, _worker
from ._tensor_map import ADDRESS_OFFSET, TensorMap
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


@dataclass(frozen=True)
class GlobalInfo:
    """A __constant__ / __device__ variable of a library (RawModule.get_global)."""
    index: int
    name: str
    size: int
    dtype: np.dtype
    shape: tuple[int, ...]


def _global_dtype(code: str, itemsize: int) -> np.dtype:
    if code in "iuf":
        try:
            return np.dtype(f"{code}{itemsize}")
        except TypeError:
            pass
    if code == "b":
        return np.dtype(np.bool_)
    return np.dtype(np.uint8)


def _parse_description(text: str) -> tuple[dict[str, KernelInfo], dict[str, GlobalInfo]]:
    kernels: dict[str, KernelInfo] = {}
    variables: dict[str, GlobalInfo] = {}
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
        elif parts[0] == "G":
            gname, size, code, itemsize, rank = parts[1], int(parts[2]), parts[3], int(parts[4]), int(parts[5])
            extents = tuple(int(v) for v in parts[6].split(","))[:rank]
            dtype = _global_dtype(code, itemsize)
            if dtype == np.uint8:
                shape = (size,)  # a struct (or an array of them): its bytes
            else:
                shape = extents if rank else ()
                if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != size:
                    dtype, shape = np.dtype(np.uint8), (size,)
            variables[gname] = GlobalInfo(len(variables), gname, size, dtype, shape)
    if current is not None:
        kernels[name] = KernelInfo(len(kernels), name, tuple(current))
    return kernels, variables


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
            raise ValueError(f"{what} dimensions must be >= 1, got {tuple(value)} (CUDA refuses a zero dimension; "
                             f"CuPy's RawKernel would launch one block or thread for it)")
        dims.append(int(v))
    return tuple(dims + [1] * (3 - len(dims)))


def _check_stream(stream) -> None:
    if stream is not None and not isinstance(getattr(stream, "ptr", None), numbers.Integral):
        raise TypeError(f"stream must be None or a stream object with an int .ptr (e.g. cupy.cuda.Stream), got "
                        f"{type(stream).__name__}")


class RawModule:
    """A CUDA source compiled for the CPU emulator; mirrors ``cupy.RawModule``.

    ``get_function(name)`` accepts a plain ``extern "C"`` kernel name or one of
    ``name_expressions`` (e.g. ``"gemm<64, 64, 8>"``); another name expression
    is compiled on demand. ``get_global(name)`` returns a writable NumPy view of
    a ``__constant__`` / ``__device__`` variable. ``sanitize``, ``order``,
    ``seed`` and ``timeout`` default to $CUCONV_EMU_SANITIZE / _ORDER / _SEED /
    _TIMEOUT. ``enable_cooperative_groups=True`` launches its kernels as
    cooperative launches (``this_grid().is_valid()``); cooperative groups work
    either way. ``translate_cucomplex=True`` does what CuPy does: CuPy's headers
    before the source and ``#include <cuComplex.h>`` replaced by a bridge that maps
    cuComplex.h's names onto CuPy's ``complex<T>`` (Thrust's formulas); without it
    ``cuComplex.h`` is CUDA's (its formulas). ``backend="nvcc"`` compiles the same
    here but, as in CuPy, cannot take ``name_expressions``; ``jitify=True`` is
    refused.
    """

    def __init__(self, code: str | None = None, options=(), name_expressions=(), *, path: str | None = None,
                 sanitize: str | None = None, order: str | None = None, seed: int | None = None,
                 timeout: float | None = None, source_name: str | None = None, backend: str = "nvrtc",
                 jitify: bool = False, translate_cucomplex: bool = False, enable_cooperative_groups: bool = False):
        if (code is None) == (path is None):
            raise TypeError("RawModule needs exactly one of code= (CUDA source) or path= (a .cu file)")
        quote_dir = os.getcwd()  # NVRTC resolves #include "x.h" of a source string from the current directory
        if path is not None:
            if str(path).endswith((".cubin", ".ptx", ".fatbin", ".o", ".hsaco")):
                raise ValueError(f"path={str(path)!r}: the CPU emulator runs CUDA C++ source (a .cu file), not "
                                 f"compiled GPU code")
            code = Path(path).read_text()
            source_name = source_name or Path(path).name
            quote_dir = os.path.dirname(os.path.abspath(path))  # relative includes: next to the file, as nvcc
        if not isinstance(code, str):
            raise TypeError(f"code must be a string of CUDA source, got {type(code).__name__}")
        if jitify:
            raise ValueError("the CPU emulator does not support jitify=True: Jitify preprocesses a source for "
                             "NVRTC (supplying the C++ standard headers, dropping missing ones); the emulator "
                             "compiles it with g++, which has the standard headers: pass jitify=False")
        if backend not in ("nvrtc", "nvcc"):
            raise ValueError(f"backend must be 'nvrtc' or 'nvcc', got {backend!r}")
        if backend != "nvrtc" and name_expressions:
            raise ValueError("name_expressions need backend='nvrtc' (as in CuPy: only NVRTC returns the mangled "
                             "names of the given name expressions)")
        for flag, value in (("translate_cucomplex", translate_cucomplex),
                            ("enable_cooperative_groups", enable_cooperative_groups)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{flag} must be a bool, got {value!r}")
        if isinstance(name_expressions, str):
            raise TypeError("name_expressions must be a sequence of strings, not a single string")
        self.code = code
        self.path = None if path is None else str(path)
        self.options = tuple(options) if not isinstance(options, str) else (options,)
        self.name_expressions = tuple(name_expressions or ())
        for n in self.name_expressions:
            if not isinstance(n, str) or not n.strip():
                raise TypeError(f"name_expressions must hold non-empty strings, got {n!r}")
        self.source_name = source_name or "kernel.cu"
        self.backend = backend
        self.translate_cucomplex = bool(translate_cucomplex)
        self.enable_cooperative_groups = bool(enable_cooperative_groups)
        self.sanitize = _options.resolve_sanitize(sanitize)
        self.order = _options.resolve_order(order)
        self.seed = _options.resolve_seed(seed)
        self.timeout = _options.resolve_timeout(timeout)
        opts = _options.parse_options(self.options)
        self._compile_options = dataclasses.replace(opts, quote_dirs=(quote_dir,))
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.RLock()
        self._library: Path | None = None
        self._kernels: dict[str, KernelInfo] = {}
        self._variables: dict[str, GlobalInfo] = {}
        self._names: list[str] = []
        self._global_names: list[str] = []
        self._arrays: dict[str, np.ndarray] = {}  # get_global's views, written to the library at each launch

    # Pickling keeps the source and the settings (as CuPy's does); it compiles again when used.
    _TRANSIENT = ("_lock", "_library", "_kernels", "_variables", "_names", "_global_names", "_arrays")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_state()

    # --- compiling -----------------------------------------------------------------------------
    def _build(self, names: list[str], global_names: list[str]):
        detected = [n for n in _source.global_kernel_names(self.code) if n not in names]
        found_vars = [n for n in _source.global_variable_names(self.code) if n not in global_names]
        attempts = [(names + detected, global_names + found_vars)]
        if detected or found_vars:
            # A scanned name may not be something the table can reach (a macro, a
            # preprocessor branch): then build only what was asked for.
            attempts.append((names, global_names))
        for k, (kernel_names, var_names) in enumerate(attempts):
            try:
                lib = _build.build_library(self.code, self._compile_options, kernel_names, self.sanitize,
                                           self.source_name, var_names, self.translate_cucomplex)
                break
            except CompileError:
                if k == len(attempts) - 1:
                    raise
        kernels, variables = _parse_description(_worker.worker(self.sanitize).describe(str(lib)))
        return lib, kernels, variables, kernel_names, var_names

    def _install(self, built) -> None:
        self._library, self._kernels, self._variables, self._names, self._global_names = built

    def compile(self, log_stream=None) -> "RawModule":
        """Compile now (otherwise the first get_function does). log_stream (a file
        object, as CuPy's): written the compiler's messages for this source (its
        warnings; empty when there are none), also when the build came from the cache."""
        with self._lock:
            if self._library is None:
                self._install(self._build(list(self.name_expressions), []))
            library = self._library
        if log_stream is not None:
            log = library.parent / _build.LOG_NAME
            log_stream.write(log.read_text() if log.exists() else "")
        return self

    @property
    def library_path(self) -> Path:
        return self.compile()._library

    def _kernel_listing(self) -> str:
        plain = sorted(self._kernels)
        templates = [t for t in _source.template_kernel_names(self.code)
                     if not any(k.startswith(t + "<") for k in plain)]
        text = ", ".join(plain) if plain else "none"
        if templates:
            text += "; template kernels (ask for an instantiation, e.g. 'name<args>'): " + ", ".join(templates)
        return text

    def get_function(self, name: str) -> "Function":
        if not isinstance(name, str):
            raise TypeError(f"kernel name must be a string, got {name!r}")
        with self._lock:
            self.compile()
            if name not in self._kernels:
                try:
                    built = self._build(self._names + [name], self._global_names)
                except CompileError as e:
                    raise CompileError(f"kernel {name!r} is not in the source {self.source_name} (or does not "
                                       f"compile as a name expression); its kernels: {self._kernel_listing()}\n{e}",
                                       log=e.log, command=e.command) from None
                self._install(built)
            return Function(self, self._library, self._kernels[name])

    def get_global(self, name: str) -> np.ndarray:
        """A writable NumPy array holding the ``__constant__`` / ``__device__`` variable
        `name` (namespace-qualified if need be): its element type and shape for arithmetic
        types and arrays of them, else its bytes (uint8). Writes to it are what the next
        launch sees; after each launch it holds what the kernels left there (the emulator's
        analogue of CuPy's ``MemoryPointer`` to the symbol). The same array every time."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"get_global needs a variable name, got {name!r}")
        with self._lock:
            self.compile()
            if name in self._arrays:
                return self._arrays[name]
            if name not in self._variables:
                try:
                    built = self._build(self._names, self._global_names + [name])
                except CompileError as e:
                    found = ", ".join(sorted(self._variables)) or "none"
                    raise CompileError(f"no __constant__ or __device__ variable {name!r} in {self.source_name} "
                                       f"(its variables: {found})\n{e}", log=e.log, command=e.command) from None
                self._install(built)
            info = self._variables[name]
            data = bytearray(_worker.worker(self.sanitize).read_global(str(self._library), info.index))
            array = np.frombuffer(data, dtype=info.dtype).reshape(info.shape)
            self._arrays[name] = array
            return array

    def _bindings(self):
        """(library, [(global index, array)]) for a launch: every get_global view."""
        with self._lock:
            return self._library, [(self._variables[n].index, a) for n, a in self._arrays.items()
                                   if n in self._variables]

    def __repr__(self) -> str:
        return (f"<cuconv.emulator.RawModule {self.source_name} sanitize={self.sanitize!r} order={self.order!r} "
                f"kernels={sorted(self._kernels) if self._library else '(not compiled)'}>")


# What a kernel's attributes mean on the CPU (RawKernel.attributes): the limits the
# emulator enforces, and -1 for figures that only the GPU compiler knows (registers,
# local memory, PTX and SASS versions: see `cuconv analyze` for those).
_SETTABLE = ("max_dynamic_shared_size_bytes", "preferred_shared_memory_carveout")


class Function:
    """One kernel of a RawModule; call it like ``cupy.RawKernel``."""

    def __init__(self, module: RawModule, library: Path, info: KernelInfo):
        self.module = module
        self.library = str(library)
        self.info = info
        self.enable_cooperative_groups = module.enable_cooperative_groups
        self._attributes = {"max_dynamic_shared_size_bytes": MAX_DYNAMIC_SHARED,
                            "preferred_shared_memory_carveout": -1}

    def __getstate__(self):
        return {"module": self.module, "name": self.info.name, "attributes": self._attributes,
                "enable_cooperative_groups": self.enable_cooperative_groups}

    def __setstate__(self, state):
        fn = state["module"].get_function(state["name"])
        self.__dict__.update(fn.__dict__)
        self._attributes = dict(state["attributes"])
        self.enable_cooperative_groups = state["enable_cooperative_groups"]

    # --- attributes, as cupy.RawKernel has them ----------------------------------------------------
    @property
    def attributes(self) -> dict:
        """CuPy's kernel attributes with their CPU meaning: max_threads_per_block is
        CUDA's 1024 (``__launch_bounds__`` is not read); const_size_bytes the bytes of
        the module's ``__constant__``/``__device__`` variables the emulator knows of;
        max_dynamic_shared_size_bytes and preferred_shared_memory_carveout what was set
        (the first starts at 227 KiB, not CUDA's 48 KiB, so no launch needs the opt-in, and a
        launch with more dynamic shared memory is refused, as CUDA does; the second, a hint,
        is recorded); shared_size_bytes, local_size_bytes, num_regs, ptx_version,
        binary_version and cache_mode_ca are -1, figures only the GPU compiler has
        (``cuconv analyze``)."""
        m = self.module
        with m._lock:
            const = sum(v.size for v in m._variables.values())
        return {"max_threads_per_block": 1024, "shared_size_bytes": -1, "const_size_bytes": const,
                "local_size_bytes": -1, "num_regs": -1, "ptx_version": -1, "binary_version": -1,
                "cache_mode_ca": -1, **self._attributes}

    def __getattr__(self, name):
        if name in ("max_threads_per_block", "shared_size_bytes", "const_size_bytes", "local_size_bytes",
                    "num_regs", "ptx_version", "binary_version", "cache_mode_ca", *_SETTABLE):
            return self.attributes[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in _SETTABLE:
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if name == "max_dynamic_shared_size_bytes" and not 0 <= value <= MAX_DYNAMIC_SHARED:
                raise ValueError(f"max_dynamic_shared_size_bytes={value} must be in [0, {MAX_DYNAMIC_SHARED}] "
                                 f"(227 KiB, the most any CUDA device allows)")
            if name == "preferred_shared_memory_carveout" and not -1 <= value <= 100:
                raise ValueError(f"preferred_shared_memory_carveout={value} must be -1 or a percentage 0..100")
            self._attributes[name] = int(value)
        elif name in ("max_threads_per_block", "shared_size_bytes", "const_size_bytes", "local_size_bytes",
                      "num_regs", "ptx_version", "binary_version", "cache_mode_ca"):
            raise AttributeError(f"{name} is read-only (as in CUDA, only max_dynamic_shared_size_bytes and "
                                 f"preferred_shared_memory_carveout can be set)")
        else:
            object.__setattr__(self, name, value)

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
            elif isinstance(a, TensorMap) and p.kind == "v" and p.size == len(a.data):
                # A tensor map by value: its array travels like a pointer argument (read-only),
                # and the worker writes its address of that array into the map.
                start = a.array.__array_interface__["data"][0]
                ranges.append((start, start + a.array.nbytes, i, False))
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
                a = args[i]
                packed[i] = (("map", a.data, gi, s - start + a.offset, ADDRESS_OFFSET) if isinstance(a, TensorMap)
                             else ("ptr", gi, s - start))
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
            # CuPy's idiom for a struct by value: a NumPy array of size one of its dtype
            # passes its element. For an arithmetic parameter an array is taken for a
            # mistake (a forgotten index), though CuPy would pass its first element.
            if p.kind != "v" or a.size != 1:
                alt = "" if p.kind == "s" else " (or a NumPy array of size one)"
                raise TypeError(f"{where} is passed by value: pass a NumPy scalar{alt}, not an array of shape "
                                f"{a.shape}")
            a = a.reshape(-1)[0]
        if p.kind == "s":
            want = p.scalar_dtype()
            if want is None:
                raise TypeError(f"{where}: no NumPy type matches this parameter")
            if isinstance(a, (bool, int, float)) and not isinstance(a, np.generic):
                return Function._python_scalar(want, a, where)
            if not isinstance(a, np.generic) or a.dtype != want:
                got = f"numpy.{a.dtype}" if isinstance(a, np.generic) else f"{type(a).__name__} {a!r}"
                example = a.item() if isinstance(a, np.generic) else a
                raise TypeError(f"{where} needs a NumPy scalar of type numpy.{want} "
                                f"(e.g. numpy.{want}({example!r})), got {got}")
            return a.tobytes()
        # A struct or vector type by value: its exact bytes (a Python complex for a
        # float2/double2-sized value such as cuFloatComplex / cuDoubleComplex).
        if isinstance(a, complex) and p.size in (8, 16):
            return np.array([a.real, a.imag], np.float32 if p.size == 8 else np.float64).tobytes()
        if isinstance(a, np.complexfloating) and a.dtype.itemsize == p.size:
            return a.tobytes()
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

    @staticmethod
    def _python_scalar(want: np.dtype, a, where: str) -> bytes:
        """A Python bool/int/float converted to the parameter's type as C++ converts an
        argument, refusing what would change the value: an int out of the type's range,
        a float for an integer parameter (which would truncate), a float that overflows."""
        if want.kind == "b":
            if isinstance(a, float):
                raise TypeError(f"{where} is a bool: pass True/False or numpy.bool_, not the float {a!r}")
            return np.bool_(a).tobytes()
        if want.kind in "iu":
            if isinstance(a, float):
                raise TypeError(f"{where} is an integer: a Python float ({a!r}) is ambiguous here (it would be "
                                f"truncated); pass an int or numpy.{want}(...)")
            info = np.iinfo(want)
            if not info.min <= int(a) <= info.max:
                raise ValueError(f"{where}: {a} does not fit in {want} (range {info.min}..{info.max})")
            return np.array(int(a), want).tobytes()
        with np.errstate(over="ignore"):
            v = np.array(float(a), np.float64).astype(want)
        if np.isinf(v) and np.isfinite(float(a)):
            raise ValueError(f"{where}: {a!r} overflows {want} (it would become inf)")
        return v.tobytes()

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None,
                 enable_cooperative_groups: bool | None = None) -> None:
        """Run the kernel; arrays behind non-const pointers hold the results when it
        returns. ``stream``: None or a stream object (anything with an int ``ptr``,
        such as a ``cupy.cuda.Stream``); every launch has finished when the call
        returns, which is one order of execution any stream allows."""
        _check_stream(stream)
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
        if shared_mem > self._attributes["max_dynamic_shared_size_bytes"]:
            raise ValueError(f"shared_mem={shared_mem} exceeds this kernel's max_dynamic_shared_size_bytes="
                             f"{self._attributes['max_dynamic_shared_size_bytes']}: CUDA refuses the launch (raise "
                             f"the attribute first)")
        if enable_cooperative_groups is None:
            enable_cooperative_groups = self.enable_cooperative_groups
        groups, packed = self._marshal(args)
        m = self.module
        # The module's current library (a later name expression or get_global may have
        # rebuilt it; it still has this kernel) and its get_global views.
        library, bindings = m._bindings()
        index = m._kernels[self.name].index if library is not None and self.name in m._kernels else None
        if index is None:
            library, index, bindings = self.library, self.info.index, []
        code = _ORDER_CODE[m.order] | (256 if enable_cooperative_groups else 0)
        _worker.worker(m.sanitize).launch(
            str(library), index, grid3, block3, int(shared_mem), code, m.seed, groups, packed,
            timeout=m.timeout, kernel=self.name, bindings=bindings)


class RawKernel:
    """A single kernel; mirrors ``cupy.RawKernel(code, name, options, backend)``."""

    def __init__(self, code: str, name: str, options=(), backend: str = "nvrtc", *, sanitize: str | None = None,
                 order: str | None = None, seed: int | None = None, timeout: float | None = None,
                 source_name: str | None = None, translate_cucomplex: bool = False,
                 enable_cooperative_groups: bool = False, jitify: bool = False):
        if not isinstance(name, str):
            raise TypeError(f"kernel name must be a string, got {name!r}")
        self.name = name
        # The kernel is compiled as a name expression (so a template instantiation works
        # as in CuPy's RawModule); with backend="nvcc" get_function finds it by name.
        self.module = RawModule(code=code, options=options, name_expressions=(name,) if backend == "nvrtc" else (),
                                sanitize=sanitize, order=order, seed=seed, timeout=timeout, source_name=source_name,
                                jitify=jitify, backend=backend, translate_cucomplex=translate_cucomplex,
                                enable_cooperative_groups=enable_cooperative_groups)
        self._function: Function | None = None

    def __getstate__(self):
        return {"name": self.name, "module": self.module}

    def __setstate__(self, state):
        self.name, self.module, self._function = state["name"], state["module"], None

    @property
    def code(self) -> str:
        return self.module.code

    @property
    def options(self) -> tuple:
        return self.module.options

    @property
    def enable_cooperative_groups(self) -> bool:
        return self.module.enable_cooperative_groups

    @property
    def function(self) -> Function:
        if self._function is None:
            self._function = self.module.get_function(self.name)
        return self._function

    @property
    def kernel(self) -> Function:
        return self.function

    def compile(self, log_stream=None) -> "RawKernel":
        self.module.compile(log_stream)
        self.function  # noqa: B018 - compiles
        return self

    @property
    def num_params(self) -> int:
        return self.function.num_params

    @property
    def attributes(self) -> dict:
        return self.function.attributes

    def __getattr__(self, name):
        if name in ("max_threads_per_block", "shared_size_bytes", "const_size_bytes", "local_size_bytes",
                    "num_regs", "ptx_version", "binary_version", "cache_mode_ca", *_SETTABLE):
            return getattr(self.function, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in _SETTABLE:
            setattr(self.function, name, value)
        else:
            object.__setattr__(self, name, value)

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None,
                 enable_cooperative_groups: bool | None = None) -> None:
        self.function(grid, block, args, shared_mem=shared_mem, stream=stream,
                      enable_cooperative_groups=enable_cooperative_groups)

    def __repr__(self) -> str:
        return f"<cuconv.emulator.RawKernel {self.name}>"
