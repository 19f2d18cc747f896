"""asyncfl: a simulator of personalized asynchronous federated learning (the PersA-FL setting).

A SimPy discrete-event engine models heterogeneous clients, network delays, availability and
dropouts; the server applies stale updates under bounded staleness; client rules (FedAvg,
FedAsync, FedBuff, Per-FedAvg, pFedMe, local) are pure torch.func functions. The public API:

- :func:`load_scenario` -> :class:`Scenario`: read and validate a scenario file
- :func:`run` -> :class:`RunResult`: run a scenario, optionally writing a run directory
- :func:`resume` -> :class:`RunResult`: continue a killed or interrupted run from its checkpoint
- :func:`load_run` -> :class:`RunResult`: read a run directory back as pandas frames
- :func:`sweep` -> :class:`SweepResult`, :func:`load_sweep` (a tidy frame), :func:`load_study`
  -> :class:`Study`: grids of runs

Errors a caller can catch: every error meant for the user is an :class:`AsyncFLError` with an
``exit_code`` (:class:`UserError` for bad input: :class:`ScenarioError`,
:class:`DataNotFoundError`, :class:`RunDirError`, :class:`PluginError`; :class:`DivergedError`;
:class:`SweepFailedError`, :class:`SweepInterrupted`); a signal during :func:`run` or
:func:`resume` raises :class:`RunInterrupted` (its ``result`` holds the records so far).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asyncfl.errors import (
    AsyncFLError,
    DamagedRunDirError,
    DataNotFoundError,
    DiskFullError,
    DivergedError,
    PluginError,
    RunDirError,
    ScenarioError,
    UserError,
)
from asyncfl.version import __version__

__all__ = [
    "AsyncFLError",
    "DamagedRunDirError",
    "DataNotFoundError",
    "DiskFullError",
    "DivergedError",
    "PluginError",
    "RunDirError",
    "RunInterrupted",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "Study",
    "SweepFailedError",
    "SweepInterrupted",
    "SweepResult",
    "UserError",
    "__version__",
    "load_run",
    "load_scenario",
    "load_study",
    "load_sweep",
    "resume",
    "run",
    "sweep",
]

if TYPE_CHECKING:
    from asyncfl.config.loader import load_scenario
    from asyncfl.config.schema import Scenario
    from asyncfl.runs.rundir import RunResult, load_run
    from asyncfl.runs.runner import RunInterrupted, resume, run
    from asyncfl.study.results import Study, load_study, load_sweep
    from asyncfl.study.sweep import SweepFailedError, SweepInterrupted, SweepResult, sweep

_LAZY = {
    "load_scenario": "asyncfl.config.loader",
    "Scenario": "asyncfl.config.schema",
    "RunResult": "asyncfl.runs.rundir",
    "load_run": "asyncfl.runs.rundir",
    "run": "asyncfl.runs.runner",
    "resume": "asyncfl.runs.runner",
    "RunInterrupted": "asyncfl.runs.runner",
    "load_sweep": "asyncfl.study.results",
    "load_study": "asyncfl.study.results",
    "Study": "asyncfl.study.results",
    "sweep": "asyncfl.study.sweep",
    "SweepResult": "asyncfl.study.sweep",
    "SweepFailedError": "asyncfl.study.sweep",
    "SweepInterrupted": "asyncfl.study.sweep",
}


def __getattr__(name: str) -> Any:
    """Import lazily, so ``import asyncfl.sim`` stays free of torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asyncfl' has no attribute {name!r}")
