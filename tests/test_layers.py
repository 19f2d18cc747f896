"""The walls between layers: the simulator never imports torch, the numerics never import simpy,
and the public API is exactly what __all__ promises."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module",
    ["asyncfl.sim.engine", "asyncfl.sim.system", "asyncfl.sim.availability", "asyncfl.sim.distributions", "asyncfl.rng"],
)
def test_simulator_imports_no_torch(module: str) -> None:
    mods = _modules_after_import(module)
    assert "torch" not in mods, f"{module} pulls in torch"


@pytest.mark.parametrize(
    "module",
    [
        "asyncfl.algorithms.registry",
        "asyncfl.algorithms.evaluation",
        "asyncfl.algorithms.server",
        "asyncfl.models.registry",
        "asyncfl.data.registry",
        "asyncfl.exec.executor",
        "asyncfl.exec.torch_backend",
    ],
)
def test_numerics_import_no_simpy(module: str) -> None:
    mods = _modules_after_import(module)
    assert "simpy" not in mods, f"{module} pulls in simpy"


def test_results_layer_imports_no_simulator() -> None:
    mods = _modules_after_import("asyncfl.study.results")
    assert not any(m.startswith("asyncfl.sim") for m in mods)
    assert "simpy" not in mods


def test_public_api() -> None:
    import asyncfl

    for name in asyncfl.__all__:
        assert getattr(asyncfl, name) is not None, name
    assert {"run", "load_run", "load_scenario", "Scenario", "load_sweep"} <= set(asyncfl.__all__)


# ------------------------------------------------------------------------------------------------
# The import graph, read from the source (every import, lazy ones inside functions included)
# ------------------------------------------------------------------------------------------------

GROUND = {"rng", "types", "errors", "registry", "version", "bounded"}
# Which layers each layer may import (besides itself and the ground). Arrows point down only.
ALLOWED = {
    "config": set(),
    "data": {"config"},
    "models": {"config", "data"},
    "algorithms": {"config", "data", "models"},
    "sim": {"config"},
    "exec": {"config", "data", "models", "algorithms"},
    "runs": {"config", "data", "models", "algorithms", "sim", "exec"},
    "study": {"config", "runs"},
    "cli": {"config", "data", "runs", "study"},
    "root": {"config", "runs", "study"},
}


def _import_graph() -> dict[str, set[str]]:
    """Module -> the asyncfl modules it imports anywhere in its source."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "asyncfl"

    def name(p: Path) -> str:
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("asyncfl")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("asyncfl"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in modules else node.module)
        graph[mod] = {m for m in found if m != mod and m in modules}
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in GROUND:
        return "ground"
    return "cli" if parts[1] == "__main__" else parts[1]


def _breaches(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, imports in graph.items():
        layer = _layer(mod)
        for target in imports:
            to = _layer(target)
            if to in (layer, "ground"):
                continue
            if layer == "ground" or to not in ALLOWED[layer]:
                bad.append(f"{mod} -> {target}")
    return sorted(bad)


def test_layers_import_only_downwards() -> None:
    bad = _breaches(_import_graph())
    assert not bad, "imports across a layer wall:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    graph = _import_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_wall_test_catches_a_wall_breach() -> None:
    """The checker is not vacuous: study -> sim, sim -> exec and ground -> config are flagged."""
    graph = _import_graph()
    graph["asyncfl.study.results"] = graph["asyncfl.study.results"] | {"asyncfl.sim.engine"}
    graph["asyncfl.sim.engine"] = graph["asyncfl.sim.engine"] | {"asyncfl.exec.executor"}
    graph["asyncfl.rng"] = graph["asyncfl.rng"] | {"asyncfl.config.schema"}
    assert _breaches(graph) == [
        "asyncfl.rng -> asyncfl.config.schema",
        "asyncfl.sim.engine -> asyncfl.exec.executor",
        "asyncfl.study.results -> asyncfl.sim.engine",
    ]
