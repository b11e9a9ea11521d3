"""The architecture as the design states it (../shared/DESIGN.md): the layers read top-down,
cli → bench → ops → plan/registry → backend → compile | emulator → problem, no module imports
one above it, there are no import cycles (function-local imports counted), function-local
imports are only for optional third-party packages, and every kernel file has its op module
and its test file under the same stem."""
from __future__ import annotations

import ast
import pathlib

import pytest

import cuconv

SRC = pathlib.Path(cuconv.__file__).resolve().parent
ROOT = SRC.parent.parent
# Higher number = higher layer; a module may import its own layer and below.
LAYERS = {
    "cuconv._version": 0, "cuconv.problem": 0, "cuconv.registry": 0, "cuconv.arch": 0,
    "cuconv.winograd_math": 1, "cuconv.fft_math": 1, "cuconv.reference": 1, "cuconv.testing": 1, "cuconv.emulator": 1,
    "cuconv.compile": 2, "cuconv.tensor_map": 2,
    "cuconv.backend": 3,
    "cuconv.plan": 4,
    "cuconv.ops": 5,
    "cuconv.cost": 5, "cuconv.models": 5, "cuconv.analysis": 5, "cuconv.device": 5,
    "cuconv.bench": 6,
    "cuconv.torch": 6, "cuconv.grad": 6, "cuconv.launchability": 6,
    "cuconv.commands": 7, "cuconv.cli": 7, "cuconv.__main__": 7, "cuconv": 7,
}
OPTIONAL_THIRD_PARTY = {"cupy", "cupyx", "torch", "matplotlib", "ml_dtypes", "pynvml", "nvidia", "scipy", "cuda"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = ["cuconv", *p.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    name = module
    while name not in LAYERS:
        if "." not in name:
            raise AssertionError(f"module {module} has no layer in tests/test_layering.py::LAYERS")
        name = name.rsplit(".", 1)[0]
    return LAYERS[name]


def _imports(module: str, path: pathlib.Path):
    """(target module, lineno, function-local?) of every cuconv import, and the third-party
    modules imported inside functions."""
    tree = ast.parse(path.read_text())
    local_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    own, third = [], []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        local = id(node) in local_nodes
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            stem = ".".join(base + ([node.module] if node.module else []))
            names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]
        else:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        for n in names:
            if n.split(".")[0] == "cuconv":
                while n not in MODULES and "." in n:
                    n = n.rsplit(".", 1)[0]
                if n != module:
                    own.append((n, node.lineno, local))
            elif local:
                third.append((n, node.lineno))
    return own, third


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_no_upward_imports():
    bad = [f"{m}:{line} imports {t} (layer {_layer(t)} above {_layer(m)})"
           for m, (own, _) in GRAPH.items() for t, line, _ in own if _layer(t) > _layer(m)]
    assert not bad, "\n".join(bad)


def test_no_function_local_imports_of_cuconv_and_only_optional_third_party_ones():
    own = [f"{m}:{line} imports {t} inside a function" for m, (imports, _) in GRAPH.items()
           for t, line, local in imports if local]
    assert not own, "\n".join(own)
    third = [f"{m}:{line} imports {t} inside a function" for m, (_, imports) in GRAPH.items()
             for t, line in imports if t.split(".")[0] not in OPTIONAL_THIRD_PARTY
             and t.split(".")[0] not in {"importlib"}]
    assert not third, "function-local imports of required packages:\n" + "\n".join(third)


def find_cycles(edges: dict) -> list[list[str]]:
    """Every cycle a depth-first walk of ``edges`` (module -> imported modules) closes."""
    state, stack, cycles = {}, [], []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles({m: {t for t, _, _ in own} for m, (own, _) in GRAPH.items()})
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checkers_see_what_they_look_for():
    """Positive controls: the AST walk finds module-level and function-local imports, and the
    cycle finder finds a planted cycle, so the empty answers above mean something."""
    assert {"cuconv.ops.heuristics", "cuconv.ops._conv_frontend"} <= {t for t, _, _ in GRAPH["cuconv.ops.conv2d"][0]}
    assert "cupy" in {t.split(".")[0] for t, _ in GRAPH["cuconv.backend"][1]}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _layer("cuconv.bench.runner") > _layer("cuconv.ops.conv2d") > _layer("cuconv.backend")


@pytest.mark.parametrize("kernel", sorted(p.stem for p in (ROOT / "kernels").glob("*.cu")))
def test_each_kernel_file_has_its_op_module_and_test_file(kernel):
    assert (SRC / "ops" / f"{kernel}.py").is_file(), f"kernels/{kernel}.cu has no src/cuconv/ops/{kernel}.py"
    assert (ROOT / "tests" / f"test_{kernel}.py").is_file(), f"kernels/{kernel}.cu has no tests/test_{kernel}.py"
