"""The project's modules import each other without a circle, lazy (in-function) imports included:
a circle means two modules that cannot be understood, tested or moved one without the other."""

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# folder -> the package name it imports as (actors/, cluster/, pipelines/ install under distill)
PACKAGES = {
    "distill": "distill",
    "actors": "distill.actors",
    "pipelines": "distill.pipelines",
    "cluster": "distill.cluster",
    "benchmarks": "benchmarks",
}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in PACKAGES.items():
        for f in (ROOT / folder).rglob("*.py"):
            name = ".".join((pkg, *f.relative_to(ROOT / folder).with_suffix("").parts))
            out[name.removesuffix(".__init__")] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file (top level or inside a function)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[m] |= {n for n in names if n in mods and n != m}
    return graph


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph (its modules in order), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 40 and graph["distill.pipelines.run"], "the scan must see the project's modules and imports"
    found = circle(graph)
    assert found is None, f"import circle: {' -> '.join(found)}"


def test_the_check_finds_a_circle():
    graph = import_graph()
    graph["distill.data.schema"].add("distill.data.store")  # store imports schema: this closes a circle
    found = circle(graph)
    assert found is not None, "a circle went unnoticed"
    assert {"distill.data.schema", "distill.data.store"} <= set(found)
