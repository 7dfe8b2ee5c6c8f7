"""The package's layering, checked on its source (``docs/architecture.rst`` shows the same graph).

* No import cycle between hubjax's modules, and no import inside a function to dodge one (the
  only function-level imports are the command line's, which keep ``hubjax --help`` from
  loading JAX, and none of those closes a cycle).
* At most 2 imports point from a lower layer up to a higher one (:data:`LAYERS`).
* No metric name is tested outside the metric module (``metric == ...``, ``metric in ...``).
* No module uses another hubjax module's private (``_name``) attributes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hubjax"

# Lower layers never import higher ones. Within a layer, modules do not import each other in
# cycles (checked separately).
LAYERS = {
    "hubjax._src.checks": 0,
    "hubjax._src.mesh": 0,
    "hubjax._src.platforms": 0,
    "hubjax._src.callables": 0,
    "hubjax._src.graphs": 0,
    "hubjax._src.kernels": 0,
    "hubjax._src.kernels.cpu": 0,
    "hubjax._src.numerics": 0,
    "hubjax._src.counting": 0,
    "hubjax._src.exportable": 0,
    "hubjax._src.measures": 1,
    "hubjax._src.buckets": 1,
    "hubjax._src.names": 0,
    "hubjax._src.command": 1,
    "hubjax._src.report": 2,
    "hubjax._src.metric": 1,
    "hubjax._src.select": 1,
    "hubjax._src.float32": 2,
    "hubjax._src.pairs": 2,
    "hubjax._src.arguments": 2,
    "hubjax._src.finisher": 3,
    "hubjax._src.proximity": 3,
    "hubjax._src.sources": 4,
    "hubjax._src.search": 5,
    "hubjax._src.ivf": 4,
    "hubjax._src.approximate": 6,
    "hubjax._src.banks": 6,
    "hubjax._src": 0,
    "hubjax.distances": 7,
    "hubjax.neighbors": 7,
    "hubjax.approximate": 7,
    "hubjax.retrieval": 7,
    "hubjax.occurrence": 8,
    "hubjax.estimates": 9,
    "hubjax.reduction": 9,
    "hubjax.metrics": 9,
    "hubjax.sampling": 9,
    "hubjax.streaming": 9,
    "hubjax.distributed": 9,
    "hubjax.measures": 10,
    "hubjax.gan": 11,
    "hubjax.sklearn": 11,
    "hubjax.demo": 11,
    "hubjax.cli": 11,
    "hubjax": 12,
    "hubjax.__main__": 13,
}
FUNCTION_IMPORTS_ALLOWED = {"hubjax.__main__"}  # start-up time of the command line


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _target(name: str, known) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports(known) -> list[tuple[str, str, bool, str]]:
    """``(importer, imported, inside_function, alias)`` for every import of a hubjax module."""
    found = []
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        nested = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            inner = id(node) in nested
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("hubjax"):
                        found.append((module, _target(a.name, known), inner, a.asname or a.name))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if not node.module.startswith("hubjax"):
                    continue
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    target = full if full in known else _target(node.module, known)
                    found.append((module, target, inner, a.asname or a.name))
    return found


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def metric_tests(known) -> list[str]:
    """``metric == ...`` / ``metric in ...`` outside the metric module."""
    hits = []
    for module, path in known.items():
        if module == "hubjax._src.metric":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
                continue
            for side in (node.left, *node.comparators):
                name = side.id if isinstance(side, ast.Name) else getattr(side, "attr", "")
                if name.rstrip("_") == "metric":
                    hits.append(f"{module}:{node.lineno}")
    return hits


def private_uses(known, found) -> list[str]:
    """``module._name`` where ``module`` is another hubjax module imported under that alias."""
    hits = []
    aliases: dict[str, dict[str, str]] = {}
    for importer, target, _, alias in found:
        aliases.setdefault(importer, {})[alias] = target
    for module, path in known.items():
        mine = {a: t for a, t in aliases.get(module, {}).items() if t in known}
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in mine
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and mine[node.value.id] != module
            ):
                hits.append(f"{module}:{node.lineno} {node.value.id}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hubjax"):
                own_package = module.rsplit(".", 1)[0]
                for a in node.names:
                    private = a.name.startswith("_") and not a.name.startswith("__")
                    # a compiled extension of the importer's own package is its binding's
                    if private and node.module != own_package:
                        hits.append(f"{module}:{node.lineno} from {node.module} import {a.name}")
    return hits


def summary() -> dict:
    """The numbers ``docs/architecture.rst`` quotes."""
    known = modules()
    found = imports(known)
    top = [(a, b) for a, b, inner, _ in found if not inner]
    upward = [(a, b) for a, b in top if LAYERS.get(a, 99) < LAYERS.get(b, 99)]
    lines = {m: len(p.read_text().splitlines()) for m, p in known.items()}
    largest = max(lines, key=lines.get)
    return {
        "modules": len(known),
        "cycles": cycles([(a, b) for a, b, *_ in found]),
        "upward": upward,
        "function_imports": [(a, b) for a, b, inner, _ in found if inner],
        "metric_tests": metric_tests(known),
        "private_uses": private_uses(known, found),
        "largest": (largest, lines[largest]),
    }


@pytest.fixture(scope="module")
def graph():
    return summary()


def test_every_module_has_a_layer():
    assert sorted(set(modules()) - set(LAYERS)) == []


def test_no_import_cycles(graph):
    assert graph["cycles"] == []


def test_at_most_two_upward_imports(graph):
    assert len(graph["upward"]) <= 2, graph["upward"]


def test_no_function_level_imports_outside_the_command_line_entry(graph):
    assert [(a, b) for a, b in graph["function_imports"] if a not in FUNCTION_IMPORTS_ALLOWED] == []


def test_no_metric_name_tests_outside_the_metric_module(graph):
    assert graph["metric_tests"] == []


def test_no_private_names_across_modules(graph):
    assert graph["private_uses"] == []


def test_the_checks_can_fail(tmp_path):
    """The detectors find what they look for (a cycle, a metric test, a private use)."""
    assert cycles([("a", "b"), ("b", "a"), ("b", "c")]) == [["a", "b"]]
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from hubjax import neighbors\n"
        "def f(metric, o):\n"
        "    from hubjax import measures\n"
        "    return metric == 'dot' or o.metric in ('a',) or neighbors._knn\n"
    )
    empty = tmp_path / "empty.py"
    empty.write_text("")
    known = {"hubjax.bad": bad, "hubjax.neighbors": empty, "hubjax.measures": empty}
    found = imports(known)
    assert ("hubjax.bad", "hubjax.measures", True, "measures") in found
    assert metric_tests({"hubjax.bad": bad}) == ["hubjax.bad:4", "hubjax.bad:4"]
    assert private_uses(known, found) == ["hubjax.bad:4 neighbors._knn"]


if __name__ == "__main__":
    for key, value in summary().items():
        print(f"{key}: {value}")
