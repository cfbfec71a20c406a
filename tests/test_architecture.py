"""The package's import graph: no cycles, and no import from a lower layer to a higher one.

Layers, highest first: the public API (``mrd_cli``, ``mrd_cli.__main__``) > ``cli`` >
``recipes`` > ``core`` > ``models``, ``data`` and ``features`` > ``io``, ``errors``, ``config``. Imports
inside functions and under ``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mrd_cli

ROOT = Path(mrd_cli.__file__).parent
LAYERS = {
    "mrd_cli": 6,
    "mrd_cli.__main__": 6,
    "mrd_cli.cli": 5,
    "mrd_cli.recipes": 4,
    "mrd_cli.core": 3,
    "mrd_cli.models": 2,
    "mrd_cli.data": 2,
    "mrd_cli.features": 2,  # transcripts -> feature files; uses data's formats, never core
    "mrd_cli.io": 1,
    "mrd_cli.errors": 1,
    "mrd_cli.config": 1,
    "mrd_cli.safetext": 1,
    "mrd_cli.labels": 1,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("mrd_cli", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import sub`` imports the submodule when there is one.
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def _layer(module: str) -> int:
    while module not in LAYERS:
        module = module.rsplit(".", 1)[0]
    return LAYERS[module]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules) for m, p in modules.items()}


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps if _layer(d) > _layer(m)]
    assert not upward, upward


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = path[path.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_data_layer_cycle_stays_broken():
    # formats (loading) sits above both layouts and synthetic; synthetic never imports it.
    graph = _graph()
    assert "mrd_cli.data.formats" not in graph["mrd_cli.data.synthetic"]
    assert (
        graph["mrd_cli.data.layouts"] & {m for m in graph if m.startswith("mrd_cli.data")} == set()
    )
