"""Compiling kernel sources and the runner with g++, cached on disk.

A kernel library is one translation unit: the emulator prelude (-include), the
rewritten user source (under ``#line 1 "<source_name>"``), a table of the
requested kernels, and the exported entry points (cuconv_emu/exports.h). The
cache key is a hash of everything that can change the result: the source, the
kernel names, the flags, every header of the emulator and the compiler's version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import _source
from ._options import CompileOptions
from .errors import CompileError

HERE = Path(__file__).resolve().parent
INCLUDE_DIR = HERE / "include"
RUNNER_SOURCE = HERE / "runner.cpp"
ABI = "cuconv-emu-1"


def cache_dir() -> Path:
    """$CUCONV_CACHE_DIR/emulator, else ~/.cache/cuconv/emulator, else (not
    writable) a directory in the system's temporary directory."""
    root = os.environ.get("CUCONV_CACHE_DIR")
    path = Path(root) / "emulator" if root else Path.home() / ".cache" / "cuconv" / "emulator"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path(tempfile.gettempdir()) / f"cuconv-emulator-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Toolchain:
    cxx: str
    version: str
    fibers: str  # "boost" or "ucontext"
    fiber_link: tuple[str, ...]
    arch_flags: tuple[str, ...]


def _run(cmd: list[str], cwd: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C")  # plain ASCII quotes in compiler messages
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def toolchain() -> Toolchain:
    cxx = os.environ.get("CUCONV_EMU_CXX", "g++")
    if shutil.which(cxx) is None:
        raise CompileError(f"the CPU emulator needs a C++17 compiler: {cxx!r} was not found "
                           f"(install g++ or set CUCONV_EMU_CXX)")
    version = _run([cxx, "--version"]).stdout.splitlines()[0]
    # FMA and AVX2 when the CPU has them: a*b+c then rounds once, as on the GPU.
    flags = _cpu_flags()
    arch = ("-mavx2", "-mfma") if {"avx2", "fma"} <= flags else ()
    fibers, link = "ucontext", ()
    if os.environ.get("CUCONV_EMU_FIBERS", "") != "ucontext":
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp, "probe.cpp")
            src.write_text("#include <boost/context/detail/fcontext.hpp>\n"
                           "using namespace boost::context::detail;\n"
                           "static void f(transfer_t t) { jump_fcontext(t.fctx, nullptr); }\n"
                           "extern \"C\" int probe() { char s[65536];\n"
                           "  fcontext_t c = make_fcontext(s + sizeof s, sizeof s, f);\n"
                           "  return jump_fcontext(c, nullptr).data == nullptr; }\n")
            # Prefer linking boost.context statically, so a cached library does not
            # depend on the shared library being present later.
            for candidate in (("-l:libboost_context.a",), ("-lboost_context",)):
                r = _run([cxx, "-std=c++17", "-shared", "-fPIC", str(src), "-o", str(Path(tmp, "p.so")),
                          *candidate])
                if r.returncode == 0:
                    fibers, link = "boost", candidate
                    break
    if fibers != "boost" and os.environ.get("CUCONV_EMU_FIBERS", "") != "ucontext":
        warnings.warn("cuconv.emulator: boost.context (libboost-context-dev) was not found; falling back to "
                      "ucontext fibers, which are about 10x slower", RuntimeWarning, stacklevel=3)
    return Toolchain(cxx=cxx, version=version, fibers=fibers, fiber_link=link, arch_flags=arch)


@functools.lru_cache(maxsize=1)
def _headers_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(INCLUDE_DIR.rglob("*.h")):
        h.update(str(p.relative_to(INCLUDE_DIR)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def sanitizer_flags(sanitize: str) -> list[str]:
    if not sanitize:
        return ["-O2"]
    flags = ["-O1", "-g", "-fno-omit-frame-pointer"]
    names = sanitize.split(",")
    if "address" in names:
        flags.append("-fsanitize=address")
    if "undefined" in names:
        flags += ["-fsanitize=undefined", "-fno-sanitize-recover=all"]
    if "thread" in names:
        flags.append("-fsanitize=thread")
    return flags


def _compile_error(log: str, cmd: list[str], what: str, source: str = "", source_name: str = "") -> CompileError:
    lines = log.splitlines()
    idx = next((i for i, line in enumerate(lines) if re.search(r"\b(?:fatal )?error\b", line)), None)
    if idx is None:
        excerpt = "\n".join(lines[-12:])
    else:
        excerpt = "\n".join(lines[max(0, idx - 1):idx + 1])
        # g++ cannot quote the offending line (the source is not a file of that
        # name), so quote it from the source, with a caret under the column.
        m = re.match(re.escape(source_name) + r":(\d+):(\d+): ", lines[idx]) if source_name else None
        src_lines = source.splitlines()
        if m and 1 <= int(m.group(1)) <= len(src_lines):
            text = src_lines[int(m.group(1)) - 1]
            excerpt += f"\n    {text}\n    {' ' * (int(m.group(2)) - 1)}^"
        else:
            excerpt = "\n".join(lines[max(0, idx - 1):idx + 4])
    return CompileError(f"{what} failed to compile with the CPU emulator:\n{excerpt}", log=log, command=cmd)


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _compile_cached(key: str, suffix: str, build) -> Path:
    """Return cache_dir()/key/<suffix> (suffix may name a subdirectory), running
    build(tmpdir, out_path) on a miss.
    A genuine compile error is cached too (as error.json), so asking again for a
    kernel that does not compile fails at once."""
    final = cache_dir() / key / suffix
    failed = final.parent / "error.json"
    if final.exists():
        return final
    with _lock_for(key):
        if final.exists():
            return final
        if failed.exists():
            try:
                saved = json.loads(failed.read_text())
                raise CompileError(saved["message"], log=saved["log"], command=saved["command"])
            except (OSError, ValueError, KeyError):
                pass
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="build-", dir=final.parent)
        try:
            out = Path(tmp, Path(suffix).name)
            try:
                build(tmp, out)
            except CompileError as e:
                if re.search(r"\berror\b", e.log):
                    tmp_err = Path(tmp, "error.json")
                    tmp_err.write_text(json.dumps({"message": str(e), "log": e.log, "command": e.command}))
                    os.replace(tmp_err, failed)
                raise
            os.replace(out, final)  # atomic: concurrent builders both succeed
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def kernel_table(names: list[str]) -> str:
    rows = "".join(f"    ::cuconv_emu::kernel_entry<&{name} >({_c_string(name)}),\n" for name in names)
    return (f"static const int cuconv_emu_kernel_table_size = {len(names)};\n"
            f"static const ::cuconv_emu::KernelEntry cuconv_emu_kernel_table[{max(1, len(names))}] = {{\n{rows}}};\n")


def _base_flags(sanitize: str, options: CompileOptions) -> list[str]:
    """Every flag except the user's -D/-U/-I/-include: the precompiled prelude's flags."""
    tc = toolchain()
    flags = [*sanitizer_flags(sanitize), "-fPIC", "-fno-strict-aliasing", "-fno-math-errno",
             "-fstack-clash-protection", "-fvisibility=hidden", "-Wno-unknown-pragmas", *tc.arch_flags,
             *options.language_flags()]
    if tc.fibers == "ucontext":
        flags.append("-DCUCONV_EMU_UCONTEXT")
    return flags


def _precompiled_prelude(base_flags: list[str]) -> Path | None:
    """A directory holding cuconv_emu/prelude.h.gch built with these flags, or None.

    Parsing the prelude (mostly the C++ standard headers it includes) is about
    half of compiling a typical kernel file; g++ uses the .gch instead when the
    flags match and the user's macros do not touch it, and silently falls back
    to the header otherwise."""
    if os.environ.get("CUCONV_EMU_PCH", "1") == "0":
        return None
    tc = toolchain()
    key = hashlib.sha256("\0".join([ABI, "pch", tc.version, _headers_digest(), *base_flags]).encode()).hexdigest()
    key = "pch-" + key[:28]
    # Building it costs about two compiles' worth of parsing (and ~30 MB): only
    # worth it from the second library compiled with these flags.
    seen = cache_dir() / key / "seen"
    if not (cache_dir() / key / "cuconv_emu" / "prelude.h.gch").exists() and not seen.exists():
        try:
            seen.parent.mkdir(parents=True, exist_ok=True)
            seen.touch()
        except OSError:
            pass
        return None

    def build(tmp: str, out: Path) -> None:
        cmd = [tc.cxx, *base_flags, "-x", "c++-header", str(INCLUDE_DIR / "cuconv_emu" / "prelude.h"), "-o",
               str(out)]
        r = _run(cmd, cwd=tmp)
        if r.returncode != 0:  # not the user's fault: compile without it
            raise RuntimeError(r.stderr[-2000:])

    try:
        return _compile_cached(key, "cuconv_emu/prelude.h.gch", build).parent.parent
    except (RuntimeError, OSError):
        return None


def build_library(code: str, options: CompileOptions, names: list[str], sanitize: str,
                  source_name: str = "kernel.cu") -> Path:
    """Compile `code` with a kernel table for `names`; returns the cached .so."""
    tc = toolchain()
    source = _source.rewrite(code)
    unit = (f'#line 1 "{source_name}"\n{source}\n'
            f'#line 1 "cuconv-emulator-kernel-table"\n{kernel_table(names)}'
            f'#include "cuconv_emu/exports.h"\n')
    base = _base_flags(sanitize, options)
    flags = [*base, *options.user_flags()]
    h = hashlib.sha256()
    for part in (ABI, tc.version, tc.fibers, " ".join(tc.fiber_link), " ".join(flags), _headers_digest(), unit):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:32]

    def build(tmp: str, out: Path) -> None:
        src = Path(tmp, "unit.cpp")
        src.write_text(unit)
        pch = _precompiled_prelude(base)
        include = (["-I", str(pch)] if pch else []) + ["-I", str(INCLUDE_DIR)]
        # Reports name the source as source_name, not as a path in a temporary directory.
        cmd = [tc.cxx, *flags, "-shared", f"-fdebug-prefix-map={tmp}=.", *include, "-include",
               "cuconv_emu/prelude.h", str(src), "-o", str(out), *tc.fiber_link, "-lm"]
        r = _run(cmd, cwd=tmp)
        if r.returncode != 0:
            raise _compile_error(r.stderr + r.stdout, cmd, f"the kernel source ({source_name})", code, source_name)

    return _compile_cached(key, "lib.so", build)


def build_runner(sanitize: str) -> Path:
    tc = toolchain()
    flags = [*sanitizer_flags(sanitize), "-std=c++17"]
    if "undefined" in sanitize.split(",") and "address" not in sanitize.split(","):
        flags.append("-DRUNNER_UBSAN")
    text = RUNNER_SOURCE.read_text()
    key = hashlib.sha256("\0".join([ABI, "runner", tc.version, " ".join(flags), text]).encode()).hexdigest()[:32]

    def build(tmp: str, out: Path) -> None:
        src = Path(tmp, "runner.cpp")
        src.write_text(text)
        cmd = [tc.cxx, *flags, str(src), "-o", str(out), "-ldl"]
        r = _run(cmd, cwd=tmp)
        if r.returncode != 0:
            raise _compile_error(r.stderr + r.stdout, cmd, "the emulator's runner")

    return _compile_cached(key, "runner", build)
