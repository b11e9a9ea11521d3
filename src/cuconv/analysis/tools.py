"""Finding and running NVIDIA's binary tools (nvdisasm; cuobjdump for versions) on a cubin; no GPU needed.

The tools come from the PyPI wheels ``nvidia-cuda-nvdisasm`` / ``nvidia-cuda-cuobjdump``
(installed by ``cuconv[cuda13]``) or from a CUDA toolkit. Lookup order: the environment
variable ``CUCONV_NVDISASM`` / ``CUCONV_CUOBJDUMP``, the wheel's own file list, any
``nvidia/*/bin`` directory on ``sys.path``, ``PATH``, then ``$CUDA_HOME/bin`` and
``/usr/local/cuda/bin``.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ..compile import complete_elf

_WHEELS = {"nvdisasm": ("nvidia-cuda-nvdisasm", "nvidia-cuda-nvdisasm-cu12"),
           "cuobjdump": ("nvidia-cuda-cuobjdump", "nvidia-cuda-cuobjdump-cu12")}


class ToolNotFoundError(RuntimeError):
    """nvdisasm / cuobjdump is not installed where cuconv can find it."""


class ToolError(RuntimeError):
    """nvdisasm / cuobjdump ran but failed; carries its output."""


def _is_executable(path) -> bool:
    return path is not None and os.path.isfile(path) and os.access(path, os.X_OK)


def _from_wheel(name: str):
    from importlib import metadata  # noqa: PLC0415
    for dist_name in _WHEELS.get(name, ()):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or ():
            if f.name == name and f.parent.name == "bin":
                path = str(dist.locate_file(f))
                if _is_executable(path):
                    return path
    return None


def _from_sys_path(name: str):
    for entry in sys.path:
        base = Path(entry or ".") / "nvidia"
        if base.is_dir():
            for candidate in sorted(base.glob(f"*/bin/{name}"), reverse=True):
                if _is_executable(candidate):
                    return str(candidate)
    return None


@functools.lru_cache(maxsize=None)
def find_tool(name: str) -> str:
    """Absolute path of ``nvdisasm`` or ``cuobjdump``; ToolNotFoundError says how to get it."""
    env = os.environ.get(f"CUCONV_{name.upper()}")
    if env:
        if not _is_executable(env):
            raise ToolNotFoundError(f"CUCONV_{name.upper()}={env!r} is not an executable file")
        return env
    found = _from_wheel(name) or _from_sys_path(name) or shutil.which(name)
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and _is_executable(os.path.join(home, "bin", name)):
            return os.path.join(home, "bin", name)
    wheel = _WHEELS.get(name, (f"nvidia-cuda-{name}",))[0]
    raise ToolNotFoundError(
        f"{name} was not found (needed for the SASS analysis): `pip install {wheel}` "
        f"(or `pip install \"cuconv[cuda13]\"`), put a CUDA toolkit's bin/ on PATH, "
        f"or set CUCONV_{name.upper()} to its path")


def _run(tool: str, args: list[str], cubin: bytes, timeout: float = 120.0) -> str:
    exe = find_tool(tool)
    with tempfile.TemporaryDirectory(prefix="cuconv-sass-") as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as fh:
            fh.write(complete_elf(cubin))
        try:
            proc = subprocess.run([exe, *args, path], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ToolError(f"{tool} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise ToolError(f"{tool} {' '.join(args)} failed (exit {proc.returncode}): "
                        f"{(proc.stderr or proc.stdout).strip()[:2000]}")
    return proc.stdout


_DISASM_CACHE: dict[str, str] = {}
_DISASM_LOCK = threading.Lock()


def disassemble(cubin: bytes) -> str:
    """nvdisasm's listing of every section of ``cubin`` (code and .nv.info), memoized."""
    key = hashlib.sha256(cubin).hexdigest()
    with _DISASM_LOCK:
        text = _DISASM_CACHE.get(key)
    if text is None:
        text = _run("nvdisasm", [], cubin)
        with _DISASM_LOCK:
            _DISASM_CACHE[key] = text
    return text


@functools.lru_cache(maxsize=1)
def tool_versions() -> dict:
    """Versions of NVRTC and of the tools found (None where missing): the SASS depends on them."""
    out = {}
    try:
        from cupy.cuda import nvrtc  # noqa: PLC0415
        out["nvrtc"] = "%d.%d" % nvrtc.getVersion()
    except Exception:  # noqa: BLE001
        out["nvrtc"] = None
    for name in ("nvdisasm", "cuobjdump"):
        try:
            proc = subprocess.run([find_tool(name), "--version"], capture_output=True, text=True, timeout=30)
            lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
            out[name] = next((ln for ln in lines if "release" in ln), lines[-1] if lines else None)
        except (ToolNotFoundError, OSError, subprocess.TimeoutExpired):
            out[name] = None
    return out
