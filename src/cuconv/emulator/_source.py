"""What the emulator does to CUDA source text before g++ sees it.

Two rewrites, each keeping the line count so compiler messages and
``__LINE__`` still point at the user's lines:

* ``extern __shared__ T name[];`` becomes a reference bound to the emulator's
  dynamic shared memory buffer, ``T (&name)[] = *reinterpret_cast<T (*)[]>(...)``;
  with ``__shared__`` meaning ``static``, ``extern static`` would not compile,
  and every such declaration must alias the same memory anyway.
* ``static __shared__`` becomes ``__shared__`` (it is static already).

Everything else in the source is compiled as written.

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
