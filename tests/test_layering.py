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
from cuconv.registry import KernelEntry, register_kernel, registered_kernels, stem

SRC = pathlib.Path(cuconv.__file__).resolve().parent
ROOT = SRC.parent.parent
# Higher number = higher layer; a module may import its own layer and below.
LAYERS = {
    "cuconv._version": 0, "cuconv.dtypes": 0, "cuconv.problem": 0, "cuconv.registry": 0, "cuconv.arch": 0,
    "cuconv.winograd_math": 1, "cuconv.fft_math": 1, "cuconv.reference": 1, "cuconv.testing": 1, "cuconv.emulator": 1,
    "cuconv.compile": 2, "cuconv.tensor_map": 2,
    "cuconv.backend": 3,
    "cuconv.plan": 4,
    "cuconv.ops": 5,
    "cuconv.cost": 5, "cuconv.models": 5, "cuconv.analysis": 5, "cuconv.device": 5,
    "cuconv.bench": 6, "cuconv.coverage": 6,
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


def _private_uses(module: str, path: pathlib.Path) -> list[str]:
    """Where ``module`` takes a private name (``_x``) of another cuconv module: ``from m import _x``,
    or ``m._x`` on an imported module ``m``. Private modules (``ops/_common.py``) are the
    package's own: importing one from within its package is not such a use."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    aliases, out = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = (package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else [])
            stem = ".".join(base + ([node.module] if node.module else []))
            if stem.split(".")[0] != "cuconv":
                continue
            for a in node.names:
                target = f"{stem}.{a.name}"
                if target in MODULES:
                    aliases[a.asname or a.name] = target
                    if a.name.startswith("_") and target.rsplit(".", 1)[0] != package:
                        out.append(f"{module}:{node.lineno} imports the private module {target}")
                elif a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{module}:{node.lineno} imports the private name {a.name} of {stem}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "cuconv" and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            out.append(f"{module}:{node.lineno} uses the private name {node.attr} of {aliases[node.value.id]}")
    return out


def test_no_module_takes_a_private_name_of_another():
    bad = [use for m, p in MODULES.items() for use in _private_uses(m, p)]
    assert not bad, "\n".join(bad)


def test_the_private_name_check_sees_what_it_looks_for(tmp_path):
    """A positive control: a planted private import and a private attribute use are found."""
    planted = tmp_path / "planted.py"
    planted.write_text("from ..problem import _hidden\nfrom ..ops import gemm as g\ng._resolve(1)\n"
                       "from . import _common\n")
    found = _private_uses("cuconv.ops.planted", planted)
    assert any("_hidden" in f for f in found) and any("_resolve" in f for f in found), found
    assert not any("_common" in f for f in found), found


def test_every_kernel_label_starts_with_its_files_stem():
    """A label names its file (kernels/<stem>.cu), op module and test file; register_kernel
    refuses one that does not."""
    bad = [f"{e.label} ({e.file})" for e in registered_kernels() if not e.label.startswith(stem(e.file))]
    assert not bad, "\n".join(bad)
    with pytest.raises(ValueError, match="must start with its file's stem 'conv_dgrad'"):
        register_kernel(KernelEntry("conv_dgrad.cu", "dgrad_direct<float, 256>", "dgrad_direct_f32_256", 256))


@pytest.mark.parametrize("kernel", sorted(p.stem for p in (ROOT / "kernels").glob("*.cu")))
def test_each_kernel_file_has_its_op_module_and_test_file(kernel):
    assert (SRC / "ops" / f"{kernel}.py").is_file(), f"kernels/{kernel}.cu has no src/cuconv/ops/{kernel}.py"
    assert (ROOT / "tests" / f"test_{kernel}.py").is_file(), f"kernels/{kernel}.cu has no tests/test_{kernel}.py"
