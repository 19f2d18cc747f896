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
        "asyncfl.executor",
    ],
)
def test_numerics_import_no_simpy(module: str) -> None:
    mods = _modules_after_import(module)
    assert "simpy" not in mods, f"{module} pulls in simpy"


def test_results_layer_imports_no_simulator() -> None:
    mods = _modules_after_import("asyncfl.results")
    assert not any(m.startswith("asyncfl.sim") for m in mods)
    assert "simpy" not in mods


def test_public_api() -> None:
    import asyncfl

    for name in asyncfl.__all__:
        assert getattr(asyncfl, name) is not None, name
    assert {"run", "load_run", "load_scenario", "Scenario", "load_sweep"} <= set(asyncfl.__all__)
