"""The package's import graph is one-way: no circle between fnodiag modules, none hidden in functions.

The graph is read from the source with ``ast`` (nothing is imported): an edge ``a -> b`` for every
``import``/``from ... import`` of an fnodiag module ``b`` in module ``a``, at module level and
inside functions alike. A circle is a strongly connected component of more than one module.
fnodiag modules are imported at module top everywhere (only optional third-party packages may be
imported inside functions). The one exception is the package's face: ``fnodiag/__init__.py`` resolves its
public names (``fnodiag.watch``, ``fnodiag.LiveCapture``...) on first use in its PEP 562 ``__getattr__``,
so that ``import fnodiag`` (and the dashboard, which imports the package) never loads Lightning.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fnodiag

PACKAGE = Path(fnodiag.__file__).parent
PACKAGE_FACE = ("__getattr__",)  # fnodiag/__init__.py's lazy public names (see the module docstring)


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """``{"fnodiag.runs.rundir": path, "fnodiag.runs": .../__init__.py, ...}``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict, *, top_level_only: bool) -> set[str]:
    """The fnodiag modules ``name`` imports (``from pkg import sub`` counts as ``pkg.sub`` when it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return targets(name, path, tree.body if top_level_only else ast.walk(tree), modules)


def function_level_imports(name: str, path: Path, modules: dict, *, skip=()) -> list[tuple[int, str]]:
    """``(line, module)`` of each fnodiag import inside a function of ``name`` (those named in ``skip`` aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for fn in ast.walk(tree):
        if (
            isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            and getattr(fn, "name", None) not in skip
        ):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found += [(node.lineno, t) for t in sorted(targets(name, path, [node], modules))]
    return sorted(set(found))


def targets(name: str, path: Path, nodes, modules: dict) -> set[str]:
    """The fnodiag modules the import statements among ``nodes`` of module ``name`` import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    edges = set()
    for target in found:
        while target and target not in modules:  # fnodiag.x.y.attribute -> the module that defines it
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
    return edges


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules, top_level_only=top_level_only) for name, path in modules.items()}


def test_the_parser_sees_module_and_function_level_imports(tmp_path):
    pkg = tmp_path / "fnodiag"
    (pkg / "sub").mkdir(parents=True)
    for rel in ("__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py"):
        (pkg / rel).write_text("")
    (pkg / "sub" / "c.py").write_text(
        "import json\nfrom fnodiag import a\nfrom . import c as me\n\n\n"
        "def f():\n    from fnodiag.b import thing\n    from .. import sub\n    import numpy\n"
    )
    modules = module_names(pkg)
    path = pkg / "sub" / "c.py"
    assert imports_of("fnodiag.sub.c", path, modules, top_level_only=True) == {"fnodiag.a"}
    assert imports_of("fnodiag.sub.c", path, modules, top_level_only=False) == {"fnodiag.a", "fnodiag.b", "fnodiag.sub"}
    assert function_level_imports("fnodiag.sub.c", path, modules) == [(7, "fnodiag.b"), (8, "fnodiag.sub")]
    g = graph(top_level_only=False)
    assert "fnodiag.config" in g["fnodiag.training.optimizers"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_circle_at_module_level():
    assert circles(graph(top_level_only=True)) == []


def test_no_import_circle_inside_functions_either():
    found = circles(graph(top_level_only=False))
    assert found == [], f"import circle(s): {found}"


def test_no_function_level_imports_of_fnodiag_modules():
    """fnodiag modules are imported at module top, so the graph above is what a reader sees."""
    modules = module_names()
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {target}"
        for name, path in sorted(modules.items())
        for line, target in function_level_imports(name, path, modules, skip=PACKAGE_FACE if name == "fnodiag" else ())
    ]
    assert found == [], "function-level imports of fnodiag modules (move them to module top):\n" + "\n".join(found)


def test_executors_import_nothing_of_the_sweep_above_them():
    """Executors are given the task they run: they never import the runner, the task, the manifest or the summary."""
    g = graph(top_level_only=False)
    executors = {"fnodiag.sweeps.executors", "fnodiag.sweeps.ray"}
    for name in executors:
        sweeps = {t for t in g[name] if t == "fnodiag.sweeps" or t.startswith("fnodiag.sweeps.")}
        assert sweeps <= executors, f"{name} imports {sorted(sweeps - executors)}"


@pytest.mark.slow
def test_definitions_manifest_and_capture_import_no_lightning():
    """What the dashboard imports of the sweeps and of capture (definitions, sweep.json, checkpoint capture)."""
    code = (
        "import sys\nimport fnodiag.sweeps.definition, fnodiag.sweeps.manifest, fnodiag.diagnostics.capture\n"
        "print(sorted(m for m in sys.modules if m == 'lightning' or m.startswith(('lightning.', 'pytorch_lightning'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
@pytest.mark.parametrize(
    "low, high",
    [
        ("fnodiag.config", "fnodiag.models"),
        ("fnodiag.config", "fnodiag.training"),
        ("fnodiag.runs", "fnodiag.training"),
        ("fnodiag.runs", "fnodiag.sweeps.runner"),
    ],
)
def test_lower_layers_do_not_import_higher_ones(low, high):
    g = graph(top_level_only=False)
    bad = {
        (a, b)
        for a, targets in g.items()
        if a == low or a.startswith(low + ".")
        for b in targets
        if b == high or b.startswith(high + ".")
    }
    assert bad == set()
