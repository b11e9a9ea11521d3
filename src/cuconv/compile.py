"""Kernel sources, compilation and resource reports.

* ``load_source(file)`` reads ``kernels/<file>`` and inlines the project's own
  ``#include "..."`` headers, so that CuPy's disk cache (keyed on the source text)
  sees every edit of a header.
* ``KernelEntry`` + ``register_kernel`` form the registry of every kernel
  instantiation an op can launch; the compile matrix, ``cuconv kernels`` and the
  static analysis walk it.
* ``compile_entry(entry, arch)`` compiles through CuPy's low-level NVRTC binding,
  which needs no GPU, and parses ``-Xptxas=-v`` into registers / spills / shared memory.
* ``get_function`` (used by the backends) compiles for the current device through
  ``cupy.RawModule`` with ``name_expressions`` and memoizes per device.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

# The compile targets of the compile matrix: Turing ... Blackwell (consumer).
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
# Architecture-specific targets ("a": features that only that exact arch has, e.g. sm_90a's
# wgmma). Only kernels that list one in their ``archs`` are built for it; the compile matrix
# and the analysis cover ARCHS + ARCH_SPECIFIC. CuPy's NVRTC accepts --gpu-architecture=sm_90a
# (cubin) and compute_90a (PTX) and defines __CUDA_ARCH_FEAT_SM90_ALL there.
ARCH_SPECIFIC = ("sm_90a",)
ALL_ARCHS = ARCHS + ARCH_SPECIFIC


def compile_target(arch) -> str:
    """'sm_90a' stays 'sm_90a'; '90', 'compute_90', (9, 0) become 'sm_90' (see arch.normalize_arch)."""
    if isinstance(arch, tuple):
        arch = f"{arch[0]}{arch[1]}"
    s = str(arch).lower().removeprefix("sm_").removeprefix("compute_")
    if f"sm_{s}" in ARCH_SPECIFIC:
        return f"sm_{s}"
    return "sm_" + s.rstrip("af")

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


def load_source(file: str) -> str:
    """The source of ``kernels/<file>`` with the project's own ``#include "..."`` inlined."""
    path = kernel_dir() / file
    if not path.is_file():
        raise FileNotFoundError(f"no kernel source {file!r} in {kernel_dir()}")
    # Key the memo on the mtime of every file so an edit during a session is seen.
    stamp = sum(p.stat().st_mtime_ns for p in kernel_dir().iterdir() if p.suffix in (".cu", ".cuh"))
    return _load_source_cached(str(path), stamp)


def source_hash(source: str, options=()) -> str:
    return hashlib.sha256((source + "\0" + "\0".join(options)).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class KernelEntry:
    """One kernel instantiation that an op can launch.

    ``label`` is the config's generated name (e.g. ``gemm_f32_128x128x8_8x8``): the name in
    the resource report, the pytest id and the bench's ``kernel`` column.
    ``expression`` is the NVRTC name expression (``gemm_f32<128, 128, 8, 8, 8>``) or the
    ``extern "C"`` name. ``min_blocks_per_sm`` is the occupancy the design promises at
    ``block_threads`` threads (checked by the compile-matrix test on every arch).
    """
    file: str
    expression: str
    label: str
    block_threads: int
    min_blocks_per_sm: int = 1
    dynamic_smem: int = 0
    options: tuple[str, ...] = ()
    archs: tuple[str, ...] = ARCHS      # a tensor-core config may need sm_80+
    main: bool = False                  # a main config (the static analysis checks it closely)
    # Per-arch exceptions to min_blocks_per_sm, as ((arch, blocks), ...): a config sized for
    # the 164-228 KiB of shared memory of sm_80/sm_90 may promise fewer blocks on the 100 KiB
    # GeForce parts (sm_86, sm_89, sm_120). The promise is stated, never derived.
    min_blocks_overrides: tuple[tuple[str, int], ...] = ()

    def min_blocks(self, arch: str) -> int:
        """The occupancy (resident blocks per SM) this config promises on ``arch``."""
        return dict(self.min_blocks_overrides).get(arch, self.min_blocks_per_sm)


_REGISTRY: dict[str, KernelEntry] = {}
_REG_LOCK = threading.Lock()


def register_kernel(entry: KernelEntry) -> KernelEntry:
    with _REG_LOCK:
        old = _REGISTRY.get(entry.label)
        if old is not None and old != entry:
            raise ValueError(f"kernel label {entry.label!r} registered twice with different definitions")
        _REGISTRY[entry.label] = entry
    return entry


def registered_kernels() -> list[KernelEntry]:
    """Every kernel instantiation of every op (importing the ops fills the registry)."""
    from . import ops  # noqa: F401  (registers)
    return sorted(_REGISTRY.values(), key=lambda e: (e.file, e.label))


def find_kernel(name: str) -> KernelEntry:
    for e in registered_kernels():
        if name in (e.label, e.expression):
            return e
    raise KeyError(f"no registered kernel named {name!r}; `cuconv kernels` lists them")


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
        from .arch import occupancy  # noqa: PLC0415
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
            from .analysis.tools import complete_elf  # noqa: PLC0415  (CuPy 14 drops a cubin's last byte)
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
    group = tuple(sorted({e.expression for e in _REGISTRY.values()
                          if e.file == entry.file and e.options == entry.options and arch in e.archs}
                         | {entry.expression}))
    cubin, infos, lowered, log = _compile_group_cached(entry.file, entry.options, arch, group,
                                                       load_source(entry.file))
    mangled = lowered[entry.expression]
    info = infos.get(mangled)
    if info is None:
        raise NVRTCError(f"ptxas printed no resource usage for {entry.label} ({mangled}) on {arch}:\n{log}")
    return KernelResources(entry.label, arch, mangled, info["registers"], info["spill_store"],
                           info["spill_load"], info["stack"], info["smem"], info["cmem"],
                           entry.block_threads, entry.dynamic_smem, cubin)


# --------------------------------------------------------------------------- on the GPU
_MODULES: dict = {}
_MOD_LOCK = threading.Lock()


def get_cupy_function(file: str, expression: str, options=()):
    """A ``cupy.RawKernel`` for ``expression`` in ``kernels/<file>``, memoized per device."""
    import cupy  # noqa: PLC0415

    device = cupy.cuda.Device().id
    source = load_source(file)
    key = (device, file, expression, tuple(options), source_hash(source))
    with _MOD_LOCK:
        fn = _MODULES.get(key)
        if fn is None:
            module = cupy.RawModule(code=source, options=(*BASE_OPTIONS, *options),
                                    name_expressions=[expression])
            fn = module.get_function(expression)
            _MODULES[key] = fn
    return fn
