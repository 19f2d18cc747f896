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
    [
        "asyncfl.sim.engine",
        "asyncfl.sim.system",
        "asyncfl.sim.availability",
        "asyncfl.sim.distributions",
        "asyncfl.rng",
    ],
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


PUBLIC_FUNCTIONS = {"load_run", "load_scenario", "load_study", "load_sweep", "resume", "run", "sweep"}
PUBLIC_TYPES = {"RunResult", "Scenario", "Study", "SweepResult"}
PUBLIC_ERRORS = {
    "AsyncFLError",
    "DamagedRunDirError",
    "DataNotFoundError",
    "DiskFullError",
    "DivergedError",
    "PluginError",
    "RunDirError",
    "RunInterrupted",
    "ScenarioError",
    "SweepFailedError",
    "SweepInterrupted",
    "UserError",
}

# Low-level signals of asyncfl.bounded that every caller turns into a DamagedRunDirError or a
# DataNotFoundError naming the file (tests/test_damaged_run_dirs.py): they never reach a user.
INTERNAL_SIGNALS = {"InputLimitError", "SymlinkError"}


def test_public_api_is_exactly_all() -> None:
    import asyncfl

    assert sorted(asyncfl.__all__) == sorted(PUBLIC_FUNCTIONS | PUBLIC_TYPES | PUBLIC_ERRORS | {"__version__"})
    assert len(asyncfl.__all__) == len(set(asyncfl.__all__))
    for name in asyncfl.__all__:
        assert getattr(asyncfl, name) is not None, name
    assert isinstance(asyncfl.__version__, str)
    for name in PUBLIC_FUNCTIONS:
        assert callable(getattr(asyncfl, name)), name
    for name in PUBLIC_TYPES | PUBLIC_ERRORS:
        assert isinstance(getattr(asyncfl, name), type), name


def test_public_functions_return_exported_types() -> None:
    """What a public function returns is importable from asyncfl itself (pandas frames aside)."""
    import typing

    import pandas as pd

    import asyncfl

    expected = {
        "load_scenario": asyncfl.Scenario,
        "run": asyncfl.RunResult,
        "resume": asyncfl.RunResult,
        "load_run": asyncfl.RunResult,
        "sweep": asyncfl.SweepResult,
        "load_sweep": pd.DataFrame,
        "load_study": asyncfl.Study,
    }
    assert set(expected) == PUBLIC_FUNCTIONS
    for name, cls in expected.items():
        assert typing.get_type_hints(getattr(asyncfl, name))["return"] is cls, name


def test_public_errors_are_exported_and_catchable() -> None:
    """Every non-private exception class asyncfl defines (outside the CLI's own) is exported, and
    every user-facing one is an AsyncFLError with an exit code."""
    import importlib
    import inspect
    import pkgutil

    import asyncfl

    found: set[str] = set()
    for info in pkgutil.walk_packages(asyncfl.__path__, "asyncfl."):
        if info.name.startswith("asyncfl.cli") or info.name == "asyncfl.__main__":
            continue  # the CLI's signal errors never leave the process
        module = importlib.import_module(info.name)
        for cname, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not cname.startswith("_")
            ):
                found.add(cname)
    assert found == PUBLIC_ERRORS | INTERNAL_SIGNALS
    for name in PUBLIC_ERRORS - {"RunInterrupted"}:
        assert issubclass(getattr(asyncfl, name), asyncfl.AsyncFLError), name
    assert issubclass(asyncfl.UserError, asyncfl.AsyncFLError)
    assert issubclass(asyncfl.DamagedRunDirError, asyncfl.RunDirError)
    assert asyncfl.DiskFullError.exit_code == 4
    for name in ("ScenarioError", "DataNotFoundError", "RunDirError", "PluginError"):
        assert issubclass(getattr(asyncfl, name), asyncfl.UserError), name
        assert getattr(asyncfl, name).exit_code == 2, name


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
