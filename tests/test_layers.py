"""The package's layers import only downward and without circles (docs/dev-notes.md, "Map").

Every ``import`` statement in every module counts, those inside functions too: a deferred
import that climbs the layers is still a dependency on the layer above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "flowinfer"

# Lowest layer first; a module may import from its own layer and the layers below.
LAYERS = [
    ("floor", ["flowinfer._version", "flowinfer._deprecated", "flowinfer.checks"]),
    ("numerics and data", ["flowinfer.nn", "flowinfer.splines", "flowinfer.data"]),
    ("bijectors", ["flowinfer.transforms"]),
    ("flows", ["flowinfer.flow", "flowinfer.registry", "flowinfer.flows"]),
    ("checkpoints", ["flowinfer.io"]),
    ("training", ["flowinfer.train"]),
    ("Pyro models", ["flowinfer.inference"]),
    ("applications", ["flowinfer.reverse", "flowinfer.vae", "flowinfer.npe"]),
    ("top", ["flowinfer.plotting", "flowinfer.cli", "flowinfer.__main__", "flowinfer"]),
]
# Release 0.1's flat modules, kept one release as warning aliases: nothing inside may use them.
DEPRECATED = {f"flowinfer.{name}" for name in (
    "fit", "training", "distributed", "guides", "diagnostics", "evidence", "laplace",
    "priors", "amortized", "datasets", "targets", "reverse_kl")}
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _rank(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and the map")
    return best[0]


def _imports(path: Path, module: str) -> set[str]:
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("flowinfer"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if not name.startswith("flowinfer"):
                continue
            # "from flowinfer.x import y" may name a submodule y.
            for alias in node.names:
                candidate = f"{name}.{alias.name}"
                found.add(candidate if candidate in _modules() else name)
    return found


GRAPH = {name: _imports(path, name) for name, path in _modules().items()}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m not in DEPRECATED))
def test_imports_go_only_downward(module):
    mine = _rank(module)
    upward = [dep for dep in GRAPH[module] if _rank(dep) > mine]
    assert not upward, (f"{module} ({LAYERS[mine][0]}) imports from higher layers: "
                        f"{upward}")
    deprecated = sorted(GRAPH[module] & DEPRECATED)
    assert not deprecated, f"{module} imports deprecated flat modules {deprecated}"


def test_no_import_circles():
    graph = {m: {d for d in deps if d in GRAPH and d != m} for m, deps in GRAPH.items()
             if m != "flowinfer"}
    # A package's __init__ re-exporting its own submodules is not a circle of dependencies.
    for m in graph:
        graph[m] = {d for d in graph[m] if not (m.startswith(d + ".") and d in graph)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_modules_stay_small(module):
    lines = len(_modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (keep modules under ~400)"
