"""The package's import graph, read from the source with `ast`: no cycle among fragility's modules, and no import
inside a function except the listed ones, each deferring a heavy dependency that only one path needs."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fragility"

# Imports inside functions, each (importing module, imported module) with why it is deferred. Import times were
# measured after `import fragility` (which already imports torch, numpy, xarray and scipy), best of three runs on a
# 2-core machine; everything else is imported at the top of its module.
DEFERRED = {
    ("fragility.pipeline", "fragility.cluster"): "Dask and distributed (0.7 s): only a run on a cluster needs them",
    ("fragility.book", "papermill"): "papermill (1.8 s): only executing the notebooks needs it",
    ("fragility.data", "sklearn.datasets"): "scikit-learn (0.5 s): only the digits data set needs it",
    ("fragility.data", "sklearn.model_selection"): "scikit-learn (0.5 s): only the digits data set needs it",
    ("fragility.widgets", "ipywidgets"): "ipywidgets (0.3 s): only live controls in a kernel need it",
    ("fragility.plot.draw", "matplotlib"): "matplotlib (0.6 s): only drawing needs it, and `import fragility` "
                                           "imports every figure module",
    ("fragility.plot.draw", "matplotlib.figure"): "matplotlib, as above",
    ("fragility.plot.draw", "matplotlib.colors"): "matplotlib, as above",
    ("fragility.plot.draw", "matplotlib.axes"): "matplotlib, as above",
    ("fragility.figures.fig10_local", "matplotlib.colors"): "matplotlib, as above",
    ("fragility.figures.fig10_local", "matplotlib.patches"): "matplotlib, as above",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _base(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of what `from <node.module> import …` names, relative imports resolved."""
    if node.level == 0:
        return node.module
    package = module if FILES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imported(module: str, node) -> list[str]:
    """The modules an import statement imports: `from p import x` imports p.x when that is a module, else p."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = _base(module, node)
    return list(dict.fromkeys(f"{base}.{a.name}" if f"{base}.{a.name}" in FILES else base for a in node.names))


def imports(module: str) -> list[tuple[str, bool, ast.stmt]]:
    """(imported module, at module level?, statement) for every import of `module`; module level includes class
    bodies and `if`/`try` blocks, not function bodies."""
    found = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((name, top, child) for name in imported(module, child))
            visit(child, inner)

    visit(ast.parse(FILES[module].read_text()), True)
    return found


def ours(name: str) -> bool:
    return name == "fragility" or name.startswith("fragility.")


def packages(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:k]) for k in range(1, len(parts))}


def graph(deferred: bool) -> dict[str, set[str]]:
    """Module → the fragility modules importing it runs: those it imports, and their packages' `__init__` (except
    the packages it is itself part of, which are being imported already)."""
    edges = {}
    for module in FILES:
        targets = {name for name, top, _ in imports(module) if ours(name) and (top or deferred)}
        edges[module] = {t for name in targets for t in {name} | packages(name) - packages(module)} - {module}
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as a path that ends where it starts, or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_module_name_of_every_import_is_resolved():
    unknown = {(m, name) for m in FILES for name, _, _ in imports(m) if ours(name) and name not in FILES}
    assert not unknown, f"imports of fragility modules that do not exist: {sorted(unknown)}"


def test_the_modules_import_one_another_without_a_cycle():
    found = cycle(graph(deferred=False))
    assert found is None, "import cycle: " + " → ".join(found)


def test_no_import_inside_a_function_hides_a_cycle():
    found = cycle(graph(deferred=True))
    assert found is None, "import cycle through an import inside a function: " + " → ".join(found)


def test_imports_inside_functions_only_defer_the_listed_heavy_dependencies():
    deferred = [(m, name, node) for m in FILES for name, top, node in imports(m) if not top]
    unlisted = sorted(f"{FILES[m].relative_to(ROOT)}:{node.lineno}: {name}" for m, name, node in deferred
                      if (m, name) not in DEFERRED)
    assert not unlisted, "imports inside functions (move them to the top of the module):\n" + "\n".join(unlisted)
    stale = sorted(set(DEFERRED) - {(m, name) for m, name, _ in deferred})
    assert not stale, f"listed deferred imports that are no longer there: {stale}"


@pytest.mark.parametrize("key", sorted(DEFERRED), ids=lambda k: f"{k[0]}:{k[1]}")
def test_each_deferred_import_says_why_in_a_comment(key):
    module, name = key
    lines = FILES[module].read_text().splitlines()
    nodes = [node for n, top, node in imports(module) if n == name and not top]
    for node in nodes:
        said = lines[node.lineno - 1].partition("#")[2] or lines[node.lineno - 2].strip().startswith("#")
        assert said, f"{FILES[module].relative_to(ROOT)}:{node.lineno} defers {name} without a comment saying why"


def test_no_import_is_hidden_behind_type_checking():
    hidden = [str(p.relative_to(ROOT)) for p in FILES.values() if "TYPE_CHECKING" in p.read_text()]
    assert not hidden, f"imports for type checkers only (import at the top, or restructure): {hidden}"


def closure(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return seen


def test_the_graph_sees_what_python_imports():
    """The parsed graph is Python's: `import fragility` in a fresh interpreter loads exactly the fragility modules the
    graph reaches from the package."""
    done = subprocess.run([sys.executable, "-c", "import sys, fragility; print(*sorted(m for m in sys.modules "
                                                 "if m == 'fragility' or m.startswith('fragility.')))"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == closure(graph(deferred=False), "fragility")
