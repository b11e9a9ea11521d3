"""Compiling kernel sources and the runner with g++, cached on disk.

A kernel library is one translation unit: the emulator prelude (-include), the
rewritten user source (under ``#line 1 "<source_name>"``), a table of the
requested kernels, and the exported entry points (cuconv_emu/exports.h). The
cache key is a hash of everything that can change the result: the source, the
kernel names, the flags, every header of the emulator and the compiler's version;
and, because a source may #include the user's own headers (through -I or a path
relative to it), every file g++ reports having read (-MMD): a cached library is
used only while those files still hold what they held when it was built, and a
failed build is retried once any of them, or a header that was missing, changes.
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
ABI = "cuconv-emu-2"


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
    for p in sorted(q for q in INCLUDE_DIR.rglob("*") if q.is_file()):
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


_DIAG = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?:(?P<col>\d+):)? (?P<kind>fatal error|error|warning|note): "
                   r"(?P<msg>.*)$")
_CONTEXT = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+):\s+(?P<msg>required from here|"
                      r"required from .*|in .*expansion of .*|  +.*)$")


def _internal(file: str) -> bool:
    """A location in the emulator's own code rather than the user's."""
    return (file.startswith(str(INCLUDE_DIR)) or file == TABLE_FILE or file.endswith("unit.cpp")
            or "/cuconv/emulator/include/" in file)


def _quote(source_name: str, source: str, line: int, col: int | None) -> str:
    lines = source.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    caret = f"\n    {' ' * (col - 1)}^" if col else ""
    return f"\n    {lines[line - 1]}{caret}"


def _compile_error(log: str, cmd: list[str], what: str, source: str = "", source_name: str = "",
                   names: list[str] = ()) -> CompileError:
    """The compiler's first error, put in the user's terms: at the user's file and line
    (quoting it), even when g++ reports it in the emulator's code (an unbalanced brace
    runs the emulator's tables into the user's function; a name expression that names
    no kernel fails in the kernel table; a static_assert of an emulator header fires
    inside the header)."""
    lines = log.splitlines()
    diags = [(i, m) for i, line in enumerate(lines) if (m := _DIAG.match(line))]
    errors = [(i, m) for i, m in diags if m.group("kind") in ("error", "fatal error")]
    head = f"{what} failed to compile with the CPU emulator:\n"
    if "Assembler messages" in log or re.search(r"impossible constraint in 'asm'|invalid 'asm'", log):
        asm = next((i + 1 for i, text in enumerate(source.splitlines()) if re.search(r"\basm\b|__asm__", text)),
                   None)
        where = f"{source_name}:{asm}: " if asm else ""
        return CompileError(f"{head}{where}inline PTX (asm) is not emulated: put it behind a device function "
                            f"with an #ifdef CUCONV_EMULATOR plain C++ version"
                            f"{_quote(source_name, source, asm, None) if asm else ''}", log=log, command=cmd)
    if not errors:
        return CompileError(head + "\n".join(lines[-12:]), log=log, command=cmd)
    idx, first = errors[0]
    dp = _source.device_launch_line(source) if source else None
    if dp is not None:
        return CompileError(f"{head}{source_name}:{dp}: dynamic parallelism is not emulated: a kernel launch "
                            f"(<<<...>>>) in device code{_quote(source_name, source, dp, None)}\n"
                            f"(the emulator runs kernels launched from the host, through RawKernel; host code "
                            f"is not compiled, as NVRTC does not compile it either)", log=log, command=cmd)
    user_file = lambda f: f == source_name or not _internal(f)  # noqa: E731

    def at(file, line, col, msg, extra=""):
        quote = _quote(source_name, source, int(line), int(col) if col else None) if file == source_name else ""
        return CompileError(f"{head}{file}:{line}:{col + ':' if col else ''} error: {msg}{quote}{extra}",
                            log=log, command=cmd)

    missing = re.search(r"fatal error: ((?:thrust|cub|cutlass|cute|cuda/std|nv|cuda|cupy)/[^:]+): No such file", log)
    if missing:
        library = "CuPy" if missing.group(1).startswith("cupy/") else "CUDA library"
        tail = (f"\n({missing.group(1)} is a {library} header the emulator does not provide; see "
                f"cuconv/emulator/README.md for what it does)")
        return at(first.group("file"), first.group("line"), first.group("col"), first.group("msg"), tail)
    if user_file(first.group("file")):
        # g++ cannot quote the user's line (the source is not a file of that name): quote it.
        if first.group("file") == source_name:
            context = lines[idx - 1] + "\n" if idx > 0 and not _DIAG.match(lines[idx - 1]) else ""
            return CompileError(head + context + lines[idx] + _quote(source_name, source, int(first.group("line")),
                                                                     int(first.group("col") or 0) or None),
                                log=log, command=cmd)
        return CompileError(head + "\n".join(lines[max(0, idx - 1):idx + 4]), log=log, command=cmd)
    # The first error is in the emulator's code. An unclosed brace of the user's?
    for i, m in diags:
        if m.group("kind") == "note" and "to match this '{'" in m.group("msg") and user_file(m.group("file")):
            return at(m.group("file"), m.group("line"), m.group("col"),
                      "this '{' is never closed (the source ends inside it)",
                      f"\n(g++ then reports: {first.group(0)})")
    # A name expression that names no kernel (the kernel table's entry i is on line i + 3).
    if first.group("file") == TABLE_FILE:
        row = int(first.group("line")) - 3
        if 0 <= row < len(names):
            return CompileError(f"{head}name expression {names[row]!r} does not name a __global__ function of "
                                f"{source_name}: {first.group('msg')}", log=log, command=cmd)
    # Instantiated from the user's code: the innermost user location of the context.
    for line in reversed(lines[:idx + 1]):
        m = _CONTEXT.match(line) or _DIAG.match(line)
        if m and user_file(m.group("file")) and m.groupdict().get("kind") != "error":
            return at(m.group("file"), m.group("line"), m.group("col"), first.group("msg"),
                      f"\n(reported at {first.group('file')}:{first.group('line')})")
    for i, m in diags[diags.index((idx, first)):]:
        if user_file(m.group("file")):
            return at(m.group("file"), m.group("line"), m.group("col"), first.group("msg"),
                      f"\n(reported at {first.group('file')}:{first.group('line')})")
    return CompileError(head + "\n".join(lines[max(0, idx - 1):idx + 4]), log=log, command=cmd)


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


def global_table(names: list[str]) -> str:
    """The host-visible variables (RawModule.get_global): address, size, type of each."""
    rows = "".join(f"    ::cuconv_emu::global_entry<decltype({name})>({_c_string(name)}, (const void*)&({name})),\n"
                   for name in names)
    if not rows:
        rows = '    ::cuconv_emu::GlobalEntry{"", nullptr, 0, 0, 0, 0, {0, 0, 0, 0}},\n'
    return (f"static const int cuconv_emu_global_table_size = {len(names)};\n"
            f"static const ::cuconv_emu::GlobalEntry cuconv_emu_global_table[{max(1, len(names))}] = {{\n{rows}}};\n")


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


TABLE_FILE = "cuconv-emulator-kernel-table"
# The warnings NVRTC gives by default that g++ does not (a variable declared or set
# but never used): a compile's messages go to RawModule.compile(log_stream=...).
WARNINGS = ("-Wunused-variable", "-Wunused-but-set-variable")
LOG_NAME = "log.txt"


def unit_text(code: str, names: list[str], global_names: list[str], source_name: str,
              translate_cucomplex: bool = False) -> str:
    preamble = ""
    if translate_cucomplex:
        code = _source.translate_cucomplex(code)
        preamble = "".join(f"#include <{h}>\n" for h in _source.CUPY_HEADERS)
    source = _source.rewrite(code)
    return (f'{preamble}#line 1 "{source_name}"\n{source}\n'
            f'#line 1 "{TABLE_FILE}"\n{kernel_table(names)}{global_table(global_names)}'
            f'#include "cuconv_emu/exports.h"\n')


def build_library(code: str, options: CompileOptions, names: list[str], sanitize: str,
                  source_name: str = "kernel.cu", global_names: list[str] = (),
                  translate_cucomplex: bool = False) -> Path:
    """Compile `code` with a kernel table for `names` (and a table of the variables
    `global_names`); returns the cached .so, beside it the compiler's messages
    (warnings) in log.txt. translate_cucomplex: as CuPy's flag (_source.translate_cucomplex)."""
    tc = toolchain()
    global_names = list(global_names)
    unit = unit_text(code, names, global_names, source_name, translate_cucomplex)
    base = _base_flags(sanitize, options)
    flags = [*base, *options.user_flags(), *WARNINGS]
    pre_includes = options.pre_include_flags()  # after the prelude, whose macros they may use
    h = hashlib.sha256()
    for part in (ABI, tc.version, tc.fibers, " ".join(tc.fiber_link), " ".join(flags + pre_includes),
                 _headers_digest(), unit):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:32]

    def build(tmp: str, out: Path) -> list[str]:
        src = Path(tmp, "unit.cpp")
        src.write_text(unit)
        pch = _precompiled_prelude(base)
        include = (["-I", str(pch)] if pch else []) + ["-I", str(INCLUDE_DIR)]
        # Reports name the source as source_name, not as a path in a temporary directory.
        cmd = [tc.cxx, *flags, "-shared", f"-fdebug-prefix-map={tmp}=.", *include, "-include",
               "cuconv_emu/prelude.h", *pre_includes, str(src), "-o", str(out), "-MMD", "-MF",
               str(Path(tmp, "deps.d")), *tc.fiber_link, "-lm"]
        r = _run(cmd, cwd=tmp)
        if r.returncode != 0:
            err = _compile_error(r.stderr + r.stdout, cmd, f"the kernel source ({source_name})", code,
                                 source_name, names)
            # What the failed compile read, and the headers it could not find (-MG),
            # from a preprocessor-only run: the failure stands only while they stay so.
            dep_cmd = [tc.cxx, *flags, "-I", str(INCLUDE_DIR), "-include", "cuconv_emu/prelude.h", *pre_includes,
                       "-MM", "-MG", "-MF", str(Path(tmp, "deps.d")), str(src)]
            d = _run(dep_cmd, cwd=tmp)
            err.dependencies = _read_deps(Path(tmp, "deps.d"), tmp) if d.returncode == 0 else None
            raise err
        if r.stderr.strip():
            Path(tmp, LOG_NAME).write_text(r.stderr)
        return _read_deps(Path(tmp, "deps.d"), tmp)

    search = [*options.quote_dirs, *options.include_dirs]
    return _compile_tracked(key, build, search)


# --- the dependency-checked cache of kernel libraries ---------------------------------------------

def _read_deps(path: Path, tmp: str) -> list[str]:
    """The files of a make-style dependency list (-MD), without the emulator's own
    (hashed into the key already) and the build's temporary files. A name that is
    not an absolute path is a header -MG found missing."""
    try:
        text = path.read_text()
    except OSError:
        return []
    text = text.replace("\\\n", " ")
    body = text.split(":", 1)[1] if ":" in text else ""
    files = [f.replace("\0", " ") for f in body.replace("\\ ", "\0").split()]
    own = (str(INCLUDE_DIR), str(cache_dir()), tmp)
    out = []
    for f in files:
        if f.startswith(own) or f.endswith("unit.cpp"):
            continue
        if f not in out:
            out.append(f)
    return out


_digests: dict[str, tuple[int, int, str]] = {}


def _file_digest(path: str) -> str | None:
    """sha256 of a file (None if it does not exist), remembered by (mtime, size)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    known = _digests.get(path)
    if known and known[0] == st.st_mtime_ns and known[1] == st.st_size:
        return known[2]
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None
    _digests[path] = (st.st_mtime_ns, st.st_size, digest)
    return digest


def _snapshot(deps: list[str], search: list[str]) -> dict[str, str | None]:
    """{file: digest} for the files read, and for a missing header every place it
    could appear (digest None: it must still be absent)."""
    snap: dict[str, str | None] = {}
    for f in deps:
        if os.path.isabs(f):
            snap[f] = _file_digest(f)
        else:
            for d in search:
                snap[os.path.join(d, f)] = None
    return snap


def _still_valid(snap: dict[str, str | None]) -> bool:
    return all(_file_digest(f) == digest for f, digest in snap.items())


def _compile_tracked(key: str, build, search: list[str]) -> Path:
    """cache_dir()/key/<variant>/lib.so, where a variant is one state of the files the
    compile read; build(tmp, out) compiles to `out` and returns those files."""
    root = cache_dir() / key
    manifest = root / "variants.json"

    def variants() -> list[dict]:
        try:
            return json.loads(manifest.read_text())
        except (OSError, ValueError):
            return []

    def lookup() -> Path | None:
        for v in reversed(variants()):
            if not _still_valid(v.get("deps", {})):
                continue
            if v.get("error"):
                e = v["error"]
                raise CompileError(e["message"], log=e["log"], command=e["command"])
            lib = root / v["id"] / "lib.so"
            if lib.exists():
                return lib
        return None

    def record(entry: dict) -> None:
        entries = [v for v in variants() if v.get("id") != entry["id"]] + [entry]
        tmp_manifest = root / f"variants.json.{os.getpid()}.{threading.get_ident()}"
        tmp_manifest.write_text(json.dumps(entries[-32:]))
        os.replace(tmp_manifest, manifest)

    found = lookup()
    if found:
        return found
    with _lock_for(key):
        found = lookup()
        if found:
            return found
        root.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="build-", dir=root)
        try:
            out = Path(tmp, "lib.so")
            try:
                deps = build(tmp, out)
            except CompileError as e:
                deps = getattr(e, "dependencies", None)
                if deps is not None and re.search(r"\berror\b", e.log):
                    snap = _snapshot(deps, search)
                    vid = "error-" + hashlib.sha256(json.dumps(snap, sort_keys=True).encode()).hexdigest()[:16]
                    record({"id": vid, "deps": snap,
                            "error": {"message": str(e), "log": e.log, "command": e.command}})
                raise
            snap = _snapshot(deps, search)
            vid = hashlib.sha256(json.dumps(snap, sort_keys=True).encode()).hexdigest()[:16]
            final = root / vid / "lib.so"
            final.parent.mkdir(parents=True, exist_ok=True)
            if Path(tmp, LOG_NAME).exists():
                os.replace(Path(tmp, LOG_NAME), final.parent / LOG_NAME)  # before the library: it marks done
            os.replace(out, final)  # atomic: concurrent builders both succeed
            record({"id": vid, "deps": snap})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


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
