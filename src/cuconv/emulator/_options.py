"""NVRTC-style compile options -> g++ flags, and the emulator's run-time settings
(sanitize / order / seed / timeout) with their environment-variable defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Options that only mean something to the GPU compiler. A flag here is dropped;
# a flag with a value is dropped with its value ("-arch sm_90" or "-arch=sm_90").
_GPU_FLAGS = {
    "--use_fast_math", "-use_fast_math", "-lineinfo", "--generate-line-info", "-G", "--device-debug",
    "--extra-device-vectorization", "-extra-device-vectorization", "--restrict", "-restrict",
    "--extensible-whole-program", "-ewp", "--device-as-default-execution-space", "-default-device",
    "--disable-warnings", "-w", "--no-source-include", "-no-source-include", "--dopt", "-dopt",
    "--device-int128", "-device-int128", "-dlto", "--dlink-time-opt",
    "--builtin-move-forward", "--builtin-initializer-list",
    "--fdevice-syntax-only", "--minimal", "--Wno-deprecated-declarations", "-Wno-deprecated-declarations",
}
_GPU_VALUE_FLAGS = {
    "-arch", "--gpu-architecture", "-Xptxas", "--ptxas-options", "-maxrregcount", "--maxrregcount", "-ftz",
    "--ftz", "-prec-div", "--prec-div", "-prec-sqrt", "--prec-sqrt",
    "-dopt", "--dopt", "--diag-suppress", "-diag-suppress", "--diag-error", "--diag-warn", "-dlto",
    "--split-compile", "-split-compile", "--time", "--optimization-info", "-opt-info", "--fdevice-time-trace",
    "--Ofast-compile", "-Ofast-compile", "--jump-table-density",
}


@dataclass(frozen=True)
class CompileOptions:
    """g++ flags derived from CuPy/NVRTC options."""

    std: str = "c++17"
    defines: tuple[str, ...] = ()  # "-DNAME=V" / "-UNAME", in order
    include_dirs: tuple[str, ...] = ()  # absolute paths
    quote_dirs: tuple[str, ...] = ()  # where #include "..." looks first: the source file's directory
    pre_includes: tuple[str, ...] = ()
    fp_contract: str = "fast"  # nvcc fuses a*b+c into an FMA unless --fmad=false
    extra: tuple[str, ...] = field(default=())

    def language_flags(self) -> list[str]:
        """Flags that shape the emulator's prelude too (part of its precompiled header's key)."""
        return [f"-std={self.std}", f"-ffp-contract={self.fp_contract}",
                f"-DCUCONV_EMU_FMAD={1 if self.fp_contract == 'fast' else 0}"]

    def user_flags(self) -> list[str]:
        """The user's macros and include paths."""
        out: list[str] = []
        for d in self.quote_dirs:
            out += ["-iquote", d]
        for d in self.include_dirs:
            out += ["-I", d]
        out += list(self.defines)
        return out + list(self.extra)

    def pre_include_flags(self) -> list[str]:
        """The user's pre-included headers (-include), which go after the emulator's prelude."""
        return [f for h in self.pre_includes for f in ("-include", h)]

    def flags(self) -> list[str]:
        return self.language_flags() + self.user_flags() + self.pre_include_flags()


def _split_value(opt: str, rest: list[str], name: str) -> str:
    """Value of an option given as "-X=V", "-XV" (for -D/-I/-U) or "-X V"."""
    if opt.startswith(name + "="):
        return opt[len(name) + 1:]
    if opt == name:
        if not rest:
            raise ValueError(f"compile option {name!r} needs a value")
        return rest.pop(0)
    return opt[len(name):]


_NOT_EMULATED = {
    "-dc": "separate compilation (-dc)", "--device-c": "separate compilation (--device-c)",
    "-lcudadevrt": "linking the device runtime (-lcudadevrt)",
}


def parse_options(options) -> CompileOptions:
    """Translate NVRTC/CuPy options to g++ flags; GPU-only ones are ignored and
    anything unknown is a ValueError (so a typo does not silently do nothing).
    Include directories become absolute (relative to the current directory, as
    the GPU compiler resolves them)."""
    if isinstance(options, str):
        options = (options,)
    if not isinstance(options, (list, tuple)):
        raise TypeError(f"options must be a tuple or list of strings, got {type(options).__name__}")
    todo = list(options)
    std = "c++17"
    defines: list[str] = []
    include_dirs: list[str] = []
    pre_includes: list[str] = []
    fp_contract = "fast"
    while todo:
        opt = todo.pop(0)
        if not isinstance(opt, str):
            raise TypeError(f"compile options must be strings, got {opt!r}")
        head = opt.split("=", 1)[0]
        if opt.startswith("--define-macro"):
            defines.append("-D" + _split_value(opt, todo, "--define-macro"))
        elif opt.startswith("-D"):
            defines.append("-D" + _split_value(opt, todo, "-D"))
        elif opt.startswith("--undefine-macro"):
            defines.append("-U" + _split_value(opt, todo, "--undefine-macro"))
        elif opt.startswith("-U"):
            defines.append("-U" + _split_value(opt, todo, "-U"))
        elif opt.startswith("--include-path"):
            include_dirs.append(os.path.abspath(_split_value(opt, todo, "--include-path")))
        elif opt.startswith("-I"):
            include_dirs.append(os.path.abspath(_split_value(opt, todo, "-I")))
        elif opt.startswith("--pre-include"):
            pre_includes.append(_split_value(opt, todo, "--pre-include"))
        elif opt == "-include":
            pre_includes.append(_split_value(opt, todo, "-include"))
        elif opt in _NOT_EMULATED:
            raise ValueError(f"compile option {opt!r}: {_NOT_EMULATED[opt]} is for dynamic parallelism and "
                             f"device-side linking, and dynamic parallelism is not emulated: the emulator compiles "
                             f"one whole source and launches its kernels from the host")
        elif head in ("-rdc", "--relocatable-device-code"):
            value = _split_value(opt, todo, head) if ("=" in opt or todo[:1] in (["true"], ["false"])) else "true"
            if value not in ("true", "false"):
                raise ValueError(f"option {opt!r}: expected true or false")
            continue  # whole-program either way: there is nothing to link on the CPU
        elif head in ("-std", "--std"):
            value = _split_value(opt, todo, head)
            if value not in ("c++03", "c++11", "c++14", "c++17", "c++20"):
                raise ValueError(f"unsupported language standard in option {opt!r}")
            # The emulator's runtime needs C++17; an older standard compiles as C++17.
            std = "c++20" if value == "c++20" else "c++17"
        elif head in ("-fmad", "--fmad"):
            value = _split_value(opt, todo, head)
            if value not in ("true", "false"):
                raise ValueError(f"option {opt!r}: expected true or false")
            fp_contract = "fast" if value == "true" else "off"
        elif opt in _GPU_FLAGS:
            continue
        elif head in _GPU_VALUE_FLAGS:
            if "=" not in opt and todo:
                todo.pop(0)  # "-arch sm_90", "-Xptxas -v"
            continue
        elif opt.startswith("-arch") or opt.startswith("-O") or opt.startswith("--dopt"):
            continue  # -arch=sm_90, -archsm_90, -O3 (the emulator picks its own optimisation level)
        else:
            raise ValueError(
                f"unknown compile option {opt!r}: the emulator understands -D/-U/-I/-include/-std/--fmad and "
                f"ignores GPU-only options such as -arch, --use_fast_math, -lineinfo, -Xptxas, -maxrregcount")
    pre_includes = [os.path.abspath(h) if os.path.exists(h) else h for h in pre_includes]
    return CompileOptions(std=std, defines=tuple(defines), include_dirs=tuple(include_dirs),
                          pre_includes=tuple(pre_includes), fp_contract=fp_contract)


# --- run-time settings ---------------------------------------------------------------------------

_SANITIZER_ALIASES = {"address": "address", "asan": "address", "undefined": "undefined", "ubsan": "undefined",
                      "thread": "thread", "tsan": "thread"}
ORDERS = ("forward", "reverse", "random")
DEFAULT_TIMEOUT = 120.0


def resolve_sanitize(value) -> str:
    """Canonical sanitizer setting: "", "address", "undefined", "address,undefined" or "thread"."""
    if value is None:
        value = os.environ.get("CUCONV_EMU_SANITIZE", "")
    if value is False:
        value = ""
    if not isinstance(value, str):
        raise TypeError(f"sanitize must be a string such as 'address,undefined', got {value!r}")
    names = set()
    for part in value.replace("+", ",").split(","):
        part = part.strip().lower()
        if not part or part == "none":
            continue
        if part not in _SANITIZER_ALIASES:
            raise ValueError(f"unknown sanitizer {part!r} in sanitize={value!r}: use address, undefined or thread")
        names.add(_SANITIZER_ALIASES[part])
    if "thread" in names and "address" in names:
        raise ValueError("sanitize='thread' cannot be combined with 'address'")
    return ",".join(n for n in ("address", "undefined", "thread") if n in names)


def resolve_order(value) -> str:
    if value is None:
        value = os.environ.get("CUCONV_EMU_ORDER", "") or "forward"
    if value not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {value!r}")
    return value


def resolve_seed(value) -> int:
    if value is None:
        value = os.environ.get("CUCONV_EMU_SEED", "") or 0
    try:
        seed = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"seed must be an integer, got {value!r}") from None
    return seed & 0xFFFFFFFFFFFFFFFF


def resolve_timeout(value) -> float:
    if value is None:
        value = os.environ.get("CUCONV_EMU_TIMEOUT", "") or DEFAULT_TIMEOUT
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"timeout must be a number of seconds, got {value!r}") from None
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    return timeout
