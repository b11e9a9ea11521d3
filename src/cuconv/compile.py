"""Kernel sources, compilation and resource reports.

* ``load_source(file)`` reads ``kernels/<file>`` and inlines the project's own
  ``#include "..."`` headers, so that CuPy's disk cache (keyed on the source text)
  sees every edit of a header. Each file is read once per process; set
  ``CUCONV_DEV_RELOAD=1`` while editing kernels to have every launch re-check the files'
  modification times (and rebuild what changed).
* The registry of kernel instantiations (``KernelEntry``, ``register_kernel``,
  ``registered_kernels``) lives in the leaf module ``cuconv.registry``; it is re-exported here.
* ``compile_entry(entry, arch)`` compiles through CuPy's low-level NVRTC binding,
  which needs no GPU, and parses ``-Xptxas=-v`` into registers / spills / shared memory.
* ``cupy_function(entry, device_id)`` (used by the GPU backend when it first meets an entry)
  builds one ``cupy.RawModule`` per (device, kernel file, options) holding every registered
  instantiation of that file that runs on the device, and returns the entry's function.
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

# Options every cuconv kernel is compiled with, on the GPU and in the compile matrix.
BASE_OPTIONS = ("--std=c++17",)

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


def nvrtc_options(entry_options, cuda_headers: bool) -> tuple[str, ...]:
    """Options of an NVRTC compile: the base options, the entry's, and the CUDA include path
    when the kernel includes the CUDA headers."""
    return (*BASE_OPTIONS, *entry_options, *(cuda_include_options() if cuda_headers else ()))


def nvrtc_compile(source: str, expressions, arch: str, options=(), name: str = "kernel.cu",
                  output: str = "cubin"):
    """Compile ``source`` for ``arch`` with NVRTC (no GPU needed).

    Returns (binary, log, {expression: lowered_name}); ``output`` is "cubin" or "ptx".
    Raises NVRTCError with the compiler log on failure.
    """
    from cupy.cuda import nvrtc  # noqa: PLC0415

    opts = [f"--gpu-architecture={arch}" if output == "cubin" else f"--gpu-architecture=compute_{arch[3:]}",
            "-Xptxas=-v", *BASE_OPTIONS, *options]
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
        if output == "cubin":
            binary = complete_elf(nvrtc.getCUBIN(prog))
        else:
            binary = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    return binary, log, lowered


@functools.lru_cache(maxsize=None)
def _compile_group_cached(file: str, options: tuple, arch: str, expressions: tuple, source: str):
    """One NVRTC program per (file, options, arch) holding every registered instantiation:
    the compile matrix costs one compile per file and arch, not one per config."""
    cached = _disk_cache_load(file, options, arch, expressions, source)
    if cached is None:
        cubin, log, lowered = nvrtc_compile(source, list(expressions), arch, options, file)
        _disk_cache_store(file, options, arch, expressions, source, (cubin, log, lowered))
    else:
        cubin, log, lowered = cached
    return cubin, parse_ptxas_log(log), lowered, log


def _cache_dir() -> Path:
    root = os.environ.get("CUCONV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cuconv")
    return Path(root) / "nvrtc"


def _cache_key(file, options, arch, expressions, source) -> str:
    from cupy.cuda import nvrtc  # noqa: PLC0415
    version = ".".join(map(str, nvrtc.getVersion()))
    parts = [version, file, arch, *options, "|", *expressions, "|", *BASE_OPTIONS, source]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _disk_cache_load(file, options, arch, expressions, source):
    """NVRTC results survive the process (the compile matrix recompiles nothing unchanged).
    Keyed by the NVRTC version and the full inlined source; CUCONV_NO_DISK_CACHE=1 disables it."""
    if os.environ.get("CUCONV_NO_DISK_CACHE"):
        return None
    path = _cache_dir() / (_cache_key(file, options, arch, expressions, source) + ".json")
    try:
        data = json.loads(path.read_text())
        return base64.b64decode(data["cubin"]), data["log"], data["lowered"]
    except (OSError, ValueError, KeyError):
        return None


def _disk_cache_store(file, options, arch, expressions, source, result) -> None:
    if os.environ.get("CUCONV_NO_DISK_CACHE"):
        return
    cubin, log, lowered = result
    d = _cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = d / (_cache_key(file, options, arch, expressions, source) + ".json")
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(dict(cubin=base64.b64encode(cubin).decode(), log=log, lowered=lowered)))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home directory only costs recompiles


def compile_entry(entry: KernelEntry, arch: str) -> KernelResources:
    """Compile one registered kernel for ``arch`` and report its resources (no GPU needed)."""
    group = tuple(sorted({e.expression for e in file_group(entry.file, entry.options, arch)}
                         | {entry.expression}))
    options = (*entry.options, *(cuda_include_options() if entry.cuda_headers else ()))
    cubin, infos, lowered, log = _compile_group_cached(entry.file, options, arch, group,
                                                       load_source(entry.file))
    mangled = lowered[entry.expression]
    info = infos.get(mangled)
    if info is None:
        raise NVRTCError(f"ptxas printed no resource usage for {entry.label} ({mangled}) on {arch}:\n{log}")
    return KernelResources(entry.label, arch, mangled, info["registers"], info["spill_store"],
                           info["spill_load"], info["stack"], info["smem"], info["cmem"],
                           entry.block_threads, entry.dynamic_smem, cubin)


# --------------------------------------------------------------------------- on the GPU
def runs_on(entry: KernelEntry, cc: int) -> bool:
    """Whether ``entry`` is built for a device of compute capability ``cc`` (75, 80, 90 ...):
    its oldest target is not newer than the device; an arch-specific target (sm_90a) only
    for that exact capability."""
    for arch in entry.archs:
        digits = int("".join(ch for ch in arch[3:] if ch.isdigit()))
        if (digits == cc) if arch.endswith("a") else (digits <= cc):
            return True
    return False


def gpu_arch_options(entries, cc: int) -> tuple[str, ...]:
    """``("-arch=sm_90a",)`` when one of ``entries`` is built only for the arch-specific target of
    a device of compute capability ``cc``, else ``()``. CuPy's RawModule compiles for the device's
    plain target (``-arch=sm_90``), where wgmma.mma_async does not exist; given both options,
    NVRTC builds for sm_90a (checked with NVRTC 13.x through CuPy 14: __CUDA_ARCH_FEAT_SM90_ALL is
    defined and the PTX target is sm_90a, in either order). The rest of the module's kernels are
    then sm_90a code too, which runs on the same devices."""
    for target in ARCH_SPECIFIC:
        if int(target[3:-1]) == cc and any(target in e.archs for e in entries):
            return (f"-arch={target}",)
    return ()


_MODULES: dict = {}
_MOD_LOCK = threading.Lock()


def cupy_module(file: str, options: tuple, cuda_headers: bool, device_id: int, cc: int):
    """One ``cupy.RawModule`` per (device, kernel file, options): every registered instantiation
    of that file and options that runs on the device, compiled together (CuPy caches the
    result on disk, keyed on the source), for the device's arch-specific target when an entry
    needs it (``gpu_arch_options``)."""
    import cupy  # noqa: PLC0415

    source = load_source(file)
    key = (device_id, file, tuple(options), source_hash(source) if dev_reload() else None)
    with _MOD_LOCK:
        mod = _MODULES.get(key)
        if mod is None:
            entries = [e for e in file_group(file, options) if runs_on(e, cc)]
            expressions = sorted({e.expression for e in entries})
            with cupy.cuda.Device(device_id):
                mod = cupy.RawModule(code=source,
                                     options=(*nvrtc_options(options, cuda_headers), *gpu_arch_options(entries, cc)),
                                     name_expressions=expressions)
            _MODULES[key] = mod
    return mod


def cupy_function(entry: KernelEntry, device_id: int, cc: int):
    """The ``cupy.RawKernel`` of ``entry`` on device ``device_id``, its dynamic shared memory
    opted in once (``max_dynamic_shared_size_bytes``) when it declares more than the default."""
    if not runs_on(entry, cc):
        raise RuntimeError(f"kernel {entry.label} is not built for this device (sm_{cc}); "
                           f"it targets {', '.join(entry.archs)}")
    mod = cupy_module(entry.file, entry.options, entry.cuda_headers, device_id, cc)
    fn = mod.get_function(entry.expression)
    if entry.dynamic_smem > DEFAULT_MAX_SMEM_PER_BLOCK:
        fn.max_dynamic_shared_size_bytes = entry.dynamic_smem
    return fn
