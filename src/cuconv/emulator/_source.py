"""What the emulator does to CUDA source text before g++ sees it.

Two rewrites, each keeping the line count so compiler messages and
``__LINE__`` still point at the user's lines:

* ``extern __shared__ T name[];`` becomes a reference bound to the emulator's
  dynamic shared memory buffer, ``T (&name)[] = *reinterpret_cast<T (*)[]>(...)``;
  with ``__shared__`` meaning ``static``, ``extern static`` would not compile,
  and every such declaration must alias the same memory anyway.
* ``static __shared__`` becomes ``__shared__`` (it is static already).

Everything else in the source is compiled as written, except with CuPy's
``translate_cucomplex=True``: then, as CuPy does, a line ``#include <cuComplex.h>``
becomes an include of the emulator's ``cupy/cuComplex_bridge.h`` (one line for
one) and CuPy's headers are included before the source (``CUPY_HEADERS``).

And one scan: the names of non-template ``__global__`` functions at global
scope, so ``get_function("name")`` works for ``extern "C"`` kernels without
``name_expressions`` (as in CuPy).
"""

from __future__ import annotations

import re

_EXTERN_SHARED = re.compile(
    r"\bextern\s+(?P<pre>[^;{}\"]*?)\b__shared__\b(?P<post>[^;{}]*?)\b(?P<name>[A-Za-z_]\w*)\s*\[\s*\]\s*;",
    re.DOTALL)
_ALIGN_ATTR = re.compile(r"\b(?:__align__|alignas|__attribute__)\s*\(")
_STATIC_SHARED = re.compile(r"\bstatic(\s+)__shared__\b|\b__shared__(\s+)static\b")


def _strip_alignment(text: str) -> str:
    """Drop __align__(...), alignas(...) and __attribute__((...)), parentheses balanced:
    the dynamic shared buffer is aligned to 4096 bytes anyway."""
    while True:
        m = _ALIGN_ATTR.search(text)
        if not m:
            return text
        end = _skip_parens(text, m.end() - 1)
        text = text[:m.start()] + " " + text[end:]


def _extern_shared(m: re.Match) -> str:
    ty = " ".join(_strip_alignment(m.group("pre") + " " + m.group("post")).split())
    name = m.group("name")
    newlines = "\n" * m.group(0).count("\n")
    return f"{ty} (&{name})[] = *reinterpret_cast<{ty} (*)[]>(::cuconv_emu::dynamic_shared_memory());{newlines}"


# translate_cucomplex=True, as CuPy's compile_with_cache does it: its four headers
# before the source, and each line that begins with #include <cuComplex.h> (the
# whole line) replaced by the bridge header, which maps cuComplex.h's names onto
# CuPy's complex<T>. `#include "cuComplex.h"` is left alone, as there.
CUPY_HEADERS = ("cupy/complex.cuh", "cupy/carray.cuh", "cupy/atomics.cuh", "cupy/math_constants.h")
_CUCOMPLEX_INCLUDE = re.compile(r"\s*#\s*include\s*<\s*cuComplex\.h\s*>")
_BRIDGE_LINE = "#include <cupy/cuComplex_bridge.h>  // translate_cucomplex\n"


def translate_cucomplex(code: str) -> str:
    return "".join(_BRIDGE_LINE if _CUCOMPLEX_INCLUDE.match(line) else line for line in code.splitlines(keepends=True))


def rewrite(code: str) -> str:
    code = _EXTERN_SHARED.sub(_extern_shared, code)
    return _STATIC_SHARED.sub(lambda m: (m.group(1) or m.group(2)) + "__shared__", code)


# --- kernel-name scan ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<comment>//[^\n]*|/\*.*?\*/)
      | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
      | (?P<pp>^[ \t]*\#(?:\\\n|[^\n])*)
    """, re.DOTALL | re.MULTILINE | re.VERBOSE)
_SKIP_CALLS = {"__launch_bounds__", "__attribute__", "__maxnreg__", "__cluster_dims__", "__declspec", "alignas",
               "__align__"}


def _strip(code: str) -> str:
    """Comments, preprocessor lines and string literals (except "C") replaced by spaces."""
    def blank(m: re.Match) -> str:
        if m.group("string") == '"C"':
            return '"C"'
        return re.sub(r"[^\n]", " ", m.group(0))
    return _TOKEN.sub(blank, code)


def _skip_parens(text: str, i: int) -> int:
    """Index after the parenthesised group starting at text[i] == '('."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def global_kernel_names(code: str) -> list[str]:
    """Names of non-template __global__ functions declared at global scope (or in
    extern "C" blocks): the kernels get_function can find by plain name."""
    text = _strip(code)
    names: list[str] = []
    # Braces: a stack of True for `extern "C" {` (still global scope) and False otherwise.
    scope: list[bool] = []
    ident = re.compile(r"[A-Za-z_]\w*")
    i = 0
    n = len(text)
    last_stmt = 0  # start of the current declaration
    while i < n:
        c = text[i]
        if c == "{":
            scope.append(bool(re.search(r'\bextern\s+"C"\s*$', text[last_stmt:i])))
            last_stmt = i + 1
        elif c == "}":
            if scope:
                scope.pop()
            last_stmt = i + 1
        elif c == ";":
            last_stmt = i + 1
        elif c == "_" and text.startswith("__global__", i) and (i == 0 or not (text[i - 1].isalnum() or
                                                                               text[i - 1] == "_")):
            end = i + len("__global__")
            if end < n and (text[end].isalnum() or text[end] == "_"):
                i += 1
                continue
            is_template = re.search(r"\btemplate\b", text[last_stmt:i]) is not None
            j = end
            name = None
            while j < n:
                m = ident.search(text, j)
                if not m:
                    break
                k = m.end()
                while k < n and text[k] in " \t\n":
                    k += 1
                if k < n and text[k] == "(":
                    if m.group(0) in _SKIP_CALLS:
                        j = _skip_parens(text, k)
                        continue
                    name = m.group(0)
                    break
                if any(ch in text[j:m.start()] for ch in ";{}"):
                    break
                j = m.end()
            if name and not is_template and all(scope) and name not in names:
                names.append(name)
            i = end
            continue
        i += 1
    return names


def template_kernel_names(code: str) -> list[str]:
    """Names of template __global__ functions (for messages: they need a name expression)."""
    text = _strip(code)
    names: list[str] = []
    for m in re.finditer(r"\btemplate\s*<", text):
        # The declaration after the template header, up to its parameter list.
        depth, i = 0, m.end() - 1
        while i < len(text):
            if text[i] == "<":
                depth += 1
            elif text[i] == ">":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        head = text[i + 1:i + 600]
        cut = re.search(r"[;{]", head)
        head = head[:cut.start()] if cut else head
        if re.search(r"\b__global__\b", head):
            k = re.search(r"([A-Za-z_]\w*)\s*\((?![^()]*\)\s*__global__)", re.sub(
                r"\b(?:__launch_bounds__|__attribute__|__maxnreg__|__cluster_dims__|alignas|__align__)\s*\([^()]*"
                r"(?:\([^()]*\)[^()]*)*\)", " ", head))
            if k and k.group(1) not in names:
                names.append(k.group(1))
    return names


_VAR_KEYWORD = re.compile(r"\b(?:__constant__|__device__|__managed__)\b")


def global_variable_names(code: str) -> list[str]:
    """Names (namespace-qualified) of __constant__ / __device__ / __managed__ variables
    declared at namespace scope: what RawModule.get_global can reach without a rebuild."""
    text = _strip(code)
    names: list[str] = []
    scope: list[str | None] = []  # namespace names ("" for anonymous/extern "C"), None for other braces
    stmt_start = 0
    i, n = 0, len(text)

    def at_namespace_scope() -> bool:
        return all(s is not None for s in scope)

    while i < n:
        c = text[i]
        if c in "{;}":
            stmt = text[stmt_start:i]
            if c == "{":
                if at_namespace_scope() and _VAR_KEYWORD.search(stmt) and "(" not in _no_brackets(stmt) \
                        and not re.search(r"\b(?:struct|class|union|enum|namespace|template)\b", stmt):
                    i = _skip_braces(text, i)  # an initializer: the declaration goes on to its ';'
                    continue
                ns = re.search(r"\bnamespace\s*([A-Za-z_]\w*)?\s*$", stmt)
                if ns:
                    scope.append(ns.group(1) or "")
                elif re.search(r'\bextern\s+"C"\s*$', stmt):
                    scope.append("")
                else:
                    scope.append(None)
            elif c == "}":
                if scope:
                    scope.pop()
            elif at_namespace_scope() and _VAR_KEYWORD.search(stmt):
                name = _declared_variable(stmt)
                if name:
                    prefix = "::".join(s for s in scope if s)
                    full = f"{prefix}::{name}" if prefix else name
                    if full not in names:
                        names.append(full)
            stmt_start = i + 1
        i += 1
    return names


def _no_brackets(stmt: str) -> str:
    return re.sub(r"\[[^\]]*\]", "[]", stmt)


def _skip_braces(text: str, i: int) -> int:
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def _declared_variable(stmt: str) -> str | None:
    """The variable a namespace-scope declaration declares, or None (a function, a
    template, a typedef, an extern declaration of something defined elsewhere...)."""
    if re.search(r"\b(?:template|typedef|using|extern|__shared__)\b", stmt):
        return None
    decl = stmt.split("=", 1)[0]
    decl = re.sub(r"\{.*", "", decl, flags=re.DOTALL)
    decl = re.sub(r"\b(?:__align__|alignas|__attribute__)\s*\((?:[^()]|\([^()]*\))*\)", " ", decl)
    if "(" in _no_brackets(decl):
        return None
    decl = re.sub(r"\[[^\]]*\]", " ", decl).strip()
    m = re.search(r"([A-Za-z_]\w*)\s*$", decl)
    if not m or m.group(1) in ("__constant__", "__device__", "__managed__", "const", "volatile"):
        return None
    return m.group(1)


def device_launch_line(code: str) -> int | None:
    """The line of the first kernel launch `<<<...>>>` in the source (dynamic
    parallelism, as the host code is not compiled), or None."""
    text = _strip(code)
    m = re.search(r"<<<", text)
    return text.count("\n", 0, m.start()) + 1 if m else None
