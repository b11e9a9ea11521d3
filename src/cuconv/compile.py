"""Kernel sources, compilation and resource reports: one NVRTC build per (file, options, arch).

* ``load_source(file)`` reads ``kernels/<file>`` and inlines the project's own
  ``#include "..."`` headers, so that the compile cache (keyed on the source text) sees every
  edit of a header. Each file is read once per process; set ``CUCONV_DEV_RELOAD=1`` while
  editing kernels to have every launch re-check the files' modification times (and rebuild
  what changed).
* The registry of kernel instantiations (``KernelEntry``, ``register_kernel``,
  ``registered_kernels``) lives in the leaf module ``cuconv.registry``; it is re-exported here.
* ``build_module(file, options, cuda_headers, arch)`` is the one compile path: CuPy's low-level
  NVRTC binding (no GPU needed) builds every registered instantiation of the file for ``arch``
  with ``nvrtc_option_list`` (``BASE_OPTIONS`` + the entries' options), keeps the cubin, the PTX
  and ptxas' ``-Xptxas=-v`` report, and caches the result in memory and on disk.
* ``compile_entry(entry, arch)`` reads one kernel's registers / spills / shared memory from that
  build: the compile matrix, ``cuconv kernels``, the static analysis and the bench's register
  columns all use it.
* ``cupy_function(entry, device_id, cc)`` (the GPU backend, when it first meets an entry) loads
  the cubin of the same build, for the device's target (``gpu_target``), with
  ``cupy.cuda.function.Module.load`` -- the call CuPy's own ``RawModule`` makes after compiling
  -- so the GPU runs the very binary whose figures ``cuconv kernels`` reports. cuconv does not
  let ``cupy.RawModule(code=...)`` compile: CuPy appends ``-ftz=true`` after the caller's options
  and NVRTC honours the last ``-ftz`` it is given (see ``BASE_OPTIONS``).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .arch import DEFAULT_MAX_SMEM_PER_BLOCK, occupancy
from .registry import (  # noqa: F401
    ALL_ARCHS,
    ARCH_SPECIFIC,
    ARCHS,
    KernelEntry,
    compile_target,
    file_group,
    find_kernel,
    register_kernel,
    registered_kernels,
)

# The options of every NVRTC build of a cuconv kernel -- the GPU's modules, the compile matrix,
# `cuconv kernels`, `cuconv analyze` and the bench's register columns (one definition, used by
# ``nvrtc_option_list``) -- so that the GPU, the CPU emulator and the figures agree:
#   --std=c++17                    the kernels' language.
#   -ftz=false                     fp32 subnormals are kept, as IEEE 754, PyTorch's CUDA build and the
#                                  CPU emulator keep them. CuPy's compile (RawModule(code=...)) appends
#                                  -ftz=true after the caller's options, and NVRTC takes the last -ftz
#                                  (measured: with "-ftz=false -ftz=true" the PTX is fma.rn.ftz.f32):
#                                  the reason the GPU modules are built here, not by CuPy.
#   -prec-div=true -prec-sqrt=true IEEE round-to-nearest division and square root (div.rn, sqrt.rn;
#                                  NVRTC's defaults, stated so that no default can change under us).
#   -fmad=true                     a*b + c may contract to one FMA: one rounding instead of two (never
#                                  less accurate per operation), nvcc's and NVRTC's default and PyTorch's
#                                  CUDA build's; the emulator does the same (the option turns into
#                                  g++'s -ffp-contract=fast, with -mfma where the CPU has FMA); the
#                                  main loops call cc_fma/fmaf explicitly, so it concerns the rest.
BASE_OPTIONS = ("--std=c++17", "-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=true")

_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)


def kernel_dir() -> Path:
    """Directory of the .cu sources: inside the installed wheel, else the checkout's kernels/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent.parent / "kernels"):
        if (candidate / "common.cuh").is_file():
            return candidate
    raise FileNotFoundError(
        f"cuconv's CUDA sources were not found (looked in {here / 'kernels'} and "
        f"{here.parent.parent / 'kernels'}); the installation is incomplete")


def kernel_files() -> list[str]:
    """Every .cu/.cuh file name shipped with cuconv."""
    d = kernel_dir()
    return sorted(p.name for p in d.iterdir() if p.suffix in (".cu", ".cuh"))


@functools.lru_cache(maxsize=None)
def _load_source_cached(path: str, mtime_ns: int) -> str:
    return _inline_includes(Path(path), set())


def _inline_includes(path: Path, seen: set[Path]) -> str:
    text = path.read_text()

    def replace(match: re.Match) -> str:
        target = (path.parent / match.group(1)).resolve()
        if not target.is_file():
            # Not one of ours (e.g. a user header found via -I): leave it to the compiler.
            return match.group(0)
        if target in seen:
            return f"// (already included: {match.group(1)})"
        seen.add(target)
        body = _inline_includes(target, seen)
        return f'#line 1 "{match.group(1)}"\n{body}\n#line {line_after(match)} "{path.name}"'

    def line_after(match: re.Match) -> int:
        return text.count("\n", 0, match.end()) + 2

    return _INCLUDE_RE.sub(replace, text)


_DEV_RELOAD = os.environ.get("CUCONV_DEV_RELOAD", "") not in ("", "0")


def dev_reload() -> bool:
    """CUCONV_DEV_RELOAD=1 (read when cuconv is imported): re-check the kernel sources on every
    use and never keep a loaded function (for kernel development; every launch then pays a stat
    of each kernel file)."""
    return _DEV_RELOAD


_KERNEL_DIR: Path | None = None


def load_source(file: str) -> str:
    """The source of ``kernels/<file>`` with the project's own ``#include "..."`` inlined.

    Read once per process (memoized); under CUCONV_DEV_RELOAD=1 the memo is keyed on the
    modification times of every kernel file, so an edit is seen at the next use."""
    global _KERNEL_DIR
    if _KERNEL_DIR is None:
        _KERNEL_DIR = kernel_dir()
    path = _KERNEL_DIR / file
    stamp = 0
    if dev_reload():
        stamp = sum(p.stat().st_mtime_ns for p in _KERNEL_DIR.iterdir() if p.suffix in (".cu", ".cuh"))
    try:
        return _load_source_cached(str(path), stamp)
    except FileNotFoundError:
        raise FileNotFoundError(f"no kernel source {file!r} in {_KERNEL_DIR}") from None


def source_hash(source: str, options=()) -> str:
    return hashlib.sha256((source + "\0" + "\0".join(options)).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- NVRTC, no device
@dataclass(frozen=True)
class KernelResources:
    label: str
    arch: str
    lowered_name: str
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    stack_frame_bytes: int
    static_smem_bytes: int
    cmem_bytes: int
    block_threads: int
    dynamic_smem: int = 0
    cubin: bytes = field(default=b"", repr=False, compare=False)

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes

    def occupancy(self) -> dict:
        return occupancy(self.arch, self.block_threads, self.registers,
                         self.static_smem_bytes + self.dynamic_smem)


class NVRTCError(RuntimeError):
    """A kernel failed to compile with NVRTC; carries the compiler log."""


_PTXAS_FUNC_RE = re.compile(r"Function properties for (\S+)")
_PTXAS_ENTRY_RE = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_PTXAS_STACK_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED_RE = re.compile(r"Used (\d+) registers(.*)")


def parse_ptxas_log(log: str) -> dict[str, dict]:
    """Per mangled kernel name: registers, spills, stack, smem, cmem from a -Xptxas=-v log."""
    out: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        m = _PTXAS_ENTRY_RE.search(line)
        if m:
            current = out.setdefault(m.group(1), dict(registers=0, spill_store=0, spill_load=0,
                                                      stack=0, smem=0, cmem=0))
            continue
        m = _PTXAS_FUNC_RE.search(line)
        if m:
            current = out.get(m.group(1), current)
            continue
        if current is None:
            continue
        m = _PTXAS_STACK_RE.search(line)
        if m:
            current["stack"], current["spill_store"], current["spill_load"] = map(int, m.groups())
            continue
        m = _PTXAS_USED_RE.search(line)
        if m:
            current["registers"] = int(m.group(1))
            rest = m.group(2)
            sm = re.search(r"(\d+) bytes smem", rest)
            if sm:
                current["smem"] = int(sm.group(1))
            cm = re.findall(r"(\d+) bytes cmem\[0\]", rest)
            if cm:
                current["cmem"] = int(cm[0])
    return out


def complete_elf(cubin: bytes) -> bytes:
    """The cubin padded with zero bytes up to the length its own ELF header declares.

    CuPy's ``nvrtc.getCUBIN`` (14.x) drops the last byte of the image (it strips a trailing
    NUL as it does for PTX, which a cubin does not have); the driver tolerates that but
    nvdisasm rejects the file. The dropped byte is the top byte of the last program
    header's alignment field, which is zero, so padding restores the image exactly.
    """
    if len(cubin) < 64 or cubin[:4] != b"\x7fELF" or cubin[4] != 2:  # ELFCLASS64 only
        return cubin
    phoff, shoff = struct.unpack_from("<QQ", cubin, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", cubin, 0x36)
    end = max(phoff + phentsize * phnum, shoff + shentsize * shnum)
    if len(cubin) < end and end - len(cubin) <= 8:
        return cubin + b"\0" * (end - len(cubin))
    return cubin


@functools.lru_cache(maxsize=None)
def cuda_include_options() -> tuple[str, ...]:
    """``-I`` for the CUDA headers (cuda_fp16.h, cuda_bf16.h) that NVRTC does not carry itself.

    Looked up in $CUDA_PATH, $CUDA_HOME, /usr/local/cuda and the nvidia-cuda-runtime wheels.
    Empty when none is found; the compile then fails with NVRTC's "cannot open cuda_fp16.h".
    """
    candidates = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    dirs = [Path(c) / "include" for c in candidates if c]
    try:
        import nvidia  # noqa: PLC0415  (namespace package of the CUDA wheels; optional)
        for root in getattr(nvidia, "__path__", []):
            dirs += sorted(Path(root).glob("*/include"))
    except ImportError:
        pass
    for d in dirs:
        if (d / "cuda_fp16.h").is_file() and (d / "cuda_bf16.h").is_file():
            return (f"-I{d}",)
    return ()


def nvrtc_option_list(arch: str, options=(), output: str = "cubin") -> list[str]:
    """The exact option list every cuconv NVRTC compile passes: the target (``sm_XX`` for a cubin,
    ``compute_XX`` for PTX only), ptxas' resource report (it changes no code), ``BASE_OPTIONS``,
    then ``options`` (the entries' ``-D...`` and the CUDA include path)."""
    target = arch if output == "cubin" else "compute_" + arch[3:]
    return [f"--gpu-architecture={target}", "-Xptxas=-v", *BASE_OPTIONS, *options]


def nvrtc_compile(source: str, expressions, arch: str, options=(), name: str = "kernel.cu",
                  output: str = "cubin"):
    """Compile ``source`` for ``arch`` with NVRTC (no GPU needed), with ``nvrtc_option_list``.

    Returns (binary, log, {expression: lowered_name}); ``output`` is "cubin", "ptx" (a
    ``compute_XX`` build) or "both" (the cubin and the PTX of one ``sm_XX`` build, as a pair).
    Raises NVRTCError with the compiler log on failure.
    """
    from cupy.cuda import nvrtc  # noqa: PLC0415

    opts = nvrtc_option_list(arch, options, "ptx" if output == "ptx" else "cubin")
    prog = nvrtc.createProgram(source, name, [], [])
    try:
        for expr in expressions:
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise NVRTCError(f"NVRTC failed to compile {name} for {arch}: {exc}\n{log}") from None
        log = nvrtc.getProgramLog(prog)
        lowered = {e: nvrtc.getLoweredName(prog, e) for e in expressions}
        if output == "ptx":
            binary = nvrtc.getPTX(prog)
        else:
            binary = complete_elf(nvrtc.getCUBIN(prog))
            if output == "both":
                binary = (binary, nvrtc.getPTX(prog))
    finally:
        nvrtc.destroyProgram(prog)
    return binary, log, lowered


@dataclass(frozen=True)
class ModuleBuild:
    """One NVRTC build of a kernel file: what the GPU loads and what every figure is read from."""
    file: str
    arch: str
    options: tuple[str, ...]            # the entries' options and the CUDA include path
    expressions: tuple[str, ...]        # every instantiation in the module, sorted
    cubin: bytes = field(repr=False)
    ptx_z: bytes = field(repr=False)    # the PTX of the same compile, zlib-compressed
    log: str = field(repr=False)
    lowered: dict = field(repr=False, compare=False)   # expression -> mangled name
    resources: dict = field(repr=False, compare=False)  # mangled name -> parse_ptxas_log's dict

    @property
    def nvrtc_options(self) -> list[str]:
        """The option list NVRTC was given for this build."""
        return nvrtc_option_list(self.arch, self.options)

    @property
    def ptx(self) -> str:
        return zlib.decompress(self.ptx_z).decode()


@functools.lru_cache(maxsize=None)
def _compile_group_cached(file: str, options: tuple, arch: str, expressions: tuple, source: str) -> ModuleBuild:
    """One NVRTC program per (file, options, arch) holding every registered instantiation:
    the compile matrix costs one compile per file and arch, not one per config."""
    cached = _disk_cache_load(file, options, arch, expressions, source)
    if cached is None:
        (cubin, ptx), log, lowered = nvrtc_compile(source, list(expressions), arch, options, file, output="both")
        ptx_z = zlib.compress(ptx if isinstance(ptx, bytes) else ptx.encode(), 6)
        _disk_cache_store(file, options, arch, expressions, source, (cubin, ptx_z, log, lowered))
    else:
        cubin, ptx_z, log, lowered = cached
    return ModuleBuild(file, arch, options, expressions, cubin, ptx_z, log, lowered, parse_ptxas_log(log))


def _cache_dir() -> Path:
    root = os.environ.get("CUCONV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cuconv")
    return Path(root) / "nvrtc"


_CACHE_FORMAT = "2"   # 2: the PTX is kept beside the cubin


def _cache_key(file, options, arch, expressions, source) -> str:
    from cupy.cuda import nvrtc  # noqa: PLC0415
    version = ".".join(map(str, nvrtc.getVersion()))
    parts = [_CACHE_FORMAT, version, file, *nvrtc_option_list(arch, options), "|", *expressions, "|", source]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _disk_cache_load(file, options, arch, expressions, source):
    """NVRTC results survive the process (the compile matrix recompiles nothing unchanged).
    Keyed by the NVRTC version, the full option list and the full inlined source;
    CUCONV_NO_DISK_CACHE=1 disables it."""
    if os.environ.get("CUCONV_NO_DISK_CACHE"):
        return None
    path = _cache_dir() / (_cache_key(file, options, arch, expressions, source) + ".json")
    try:
        data = json.loads(path.read_text())
        return (base64.b64decode(data["cubin"]), base64.b64decode(data["ptx_z"]), data["log"],
                data["lowered"])
    except (OSError, ValueError, KeyError):
        return None


def _disk_cache_store(file, options, arch, expressions, source, result) -> None:
    if os.environ.get("CUCONV_NO_DISK_CACHE"):
        return
    cubin, ptx_z, log, lowered = result
    d = _cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = d / (_cache_key(file, options, arch, expressions, source) + ".json")
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(dict(cubin=base64.b64encode(cubin).decode(),
                                       ptx_z=base64.b64encode(ptx_z).decode(), log=log, lowered=lowered)))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home directory only costs recompiles


def _cc(arch: str) -> int:
    """'sm_90a' -> 90, 'sm_120' -> 120."""
    return int("".join(ch for ch in arch[3:] if ch.isdigit()))


def built_for(entry: KernelEntry, arch: str) -> bool:
    """Whether ``entry`` is compiled into the module built for the target ``arch``: a target it
    lists; an arch-specific target (sm_90a) or a device's own target outside the compile matrix
    (sm_87, sm_103 ...) also holds the portable entries that run there (oldest target not newer)."""
    if arch in entry.archs:
        return True
    if arch in ARCHS:
        return False
    return any(not a.endswith("a") and _cc(a) <= _cc(arch) for a in entry.archs)


def module_entries(file: str, options=(), arch: str | None = None) -> tuple[KernelEntry, ...]:
    """The registered entries of (file, options) that the module built for ``arch`` holds."""
    return tuple(e for e in file_group(file, options) if arch is None or built_for(e, arch))


def build_module(file: str, options=(), cuda_headers: bool = False, arch: str = "sm_90",
                 extra_expressions=()) -> ModuleBuild:
    """The NVRTC build of (file, options) for ``arch``: every entry ``built_for`` it (and
    ``extra_expressions``) in one program, compiled once per process and cached on disk.
    The GPU backend loads its cubin; every resource figure is read from it."""
    expressions = tuple(sorted({e.expression for e in module_entries(file, options, arch)}
                               | set(extra_expressions)))
    full = (*options, *(cuda_include_options() if cuda_headers else ()))
    return _compile_group_cached(file, full, arch, expressions, load_source(file))


def compile_entry(entry: KernelEntry, arch: str) -> KernelResources:
    """Compile one registered kernel for ``arch`` and report its resources (no GPU needed):
    the figures of the module build the GPU loads for that target."""
    build = build_module(entry.file, entry.options, entry.cuda_headers, arch, (entry.expression,))
    mangled = build.lowered[entry.expression]
    info = build.resources.get(mangled)
    if info is None:
        raise NVRTCError(f"ptxas printed no resource usage for {entry.label} ({mangled}) on {arch}:\n{build.log}")
    return KernelResources(entry.label, arch, mangled, info["registers"], info["spill_store"],
                           info["spill_load"], info["stack"], info["smem"], info["cmem"],
                           entry.block_threads, entry.dynamic_smem, build.cubin)


# --------------------------------------------------------------------------- on the GPU
def runs_on(entry: KernelEntry, cc: int) -> bool:
    """Whether ``entry`` is built for a device of compute capability ``cc`` (75, 80, 90 ...):
    its oldest target is not newer than the device; an arch-specific target (sm_90a) only
    for that exact capability."""
    for arch in entry.archs:      # "sm_90", "sm_90a" (no generator: planning calls this per kernel)
        digits = int(arch[3:].rstrip("abcdefghijklmnopqrstuvwxyz"))
        if (digits == cc) if arch.endswith("a") else (digits <= cc):
            return True
    return False


@functools.lru_cache(maxsize=None)
def _nvrtc_archs() -> tuple[int, ...]:
    from cupy.cuda import nvrtc  # noqa: PLC0415
    return tuple(sorted(int(a) for a in nvrtc.getSupportedArchs()))


def gpu_target(file: str, options, cc: int) -> str:
    """The compile target of (file, options)'s module on a device of compute capability ``cc``:
    the arch-specific target (sm_90a) when one of the file's entries is built only for it
    (wgmma.mma_async exists only there; the module's other kernels are then sm_90a code too,
    which runs on the same devices), else the device's own ``sm_<cc>`` -- or, as CuPy does, the
    newest target NVRTC builds for when the device is newer than NVRTC."""
    for target in ARCH_SPECIFIC:
        if _cc(target) == cc and any(target in e.archs for e in file_group(file, options)):
            return target
    older = [a for a in _nvrtc_archs() if a <= cc]
    if not older:
        raise RuntimeError(f"this device is sm_{cc}; NVRTC builds for sm_{_nvrtc_archs()[0]} and newer only")
    return f"sm_{older[-1]}"


def device_target(entry: KernelEntry, arch) -> str | None:
    """The target of the build a device of ``arch`` ('sm_90', 90) loads ``entry`` from -- the
    build its figures belong to (sm_90 devices run the wgmma kernels' sm_90a build) -- or None
    when the entry does not run there."""
    cc = arch if isinstance(arch, int) else _cc(compile_target(arch))
    if not runs_on(entry, cc):
        return None
    return gpu_target(entry.file, entry.options, cc)


_MODULES: dict = {}
_MOD_LOCK = threading.Lock()


def cupy_module(file: str, options: tuple, cuda_headers: bool, device_id: int, cc: int,
                expression: str | None = None):
    """One loaded module per (device, kernel file, options): the cubin of ``build_module`` for the
    device's target (``gpu_target``), loaded with ``cupy.cuda.function.Module.load``
    (cuModuleLoadData, what CuPy's RawModule does with the cubin it compiles). Returns
    (module, build). A module missing ``expression`` (an entry registered after it was loaded)
    is rebuilt with it."""
    import cupy  # noqa: PLC0415

    source = load_source(file)
    key = (device_id, file, tuple(options), source_hash(source) if dev_reload() else None)
    with _MOD_LOCK:
        loaded = _MODULES.get(key)
        if loaded is None or (expression is not None and expression not in loaded[1].lowered):
            build = build_module(file, options, cuda_headers, gpu_target(file, options, cc))
            with cupy.cuda.Device(device_id):
                mod = cupy.cuda.function.Module()
                mod.load(build.cubin)
            loaded = _MODULES[key] = (mod, build)
    return loaded


def cupy_function(entry: KernelEntry, device_id: int, cc: int):
    """The ``cupy.cuda.function.Function`` of ``entry`` on device ``device_id`` (called as
    ``fn(grid, block, args, shared_mem=...)`` on the current stream), its dynamic shared memory
    opted in once when it declares more than the default."""
    if not runs_on(entry, cc):
        raise RuntimeError(f"kernel {entry.label} is not built for this device (sm_{cc}); "
                           f"it targets {', '.join(entry.archs)}")
    mod, build = cupy_module(entry.file, entry.options, entry.cuda_headers, device_id, cc, entry.expression)
    mangled = build.lowered.get(entry.expression)
    if mangled is None:
        raise RuntimeError(f"kernel {entry.label} is not in the {build.arch} build of {entry.file} "
                           f"(its targets: {', '.join(entry.archs)})")
    fn = mod.get_function(mangled)
    if entry.dynamic_smem > DEFAULT_MAX_SMEM_PER_BLOCK:
        import cupy  # noqa: PLC0415
        driver = cupy.cuda.driver
        with cupy.cuda.Device(device_id):
            driver.funcSetAttribute(fn.ptr, driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                    entry.dynamic_smem)
    return fn
