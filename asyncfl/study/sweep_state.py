"""The state of a sweep on disk: ``DIR/sweep.json`` (the manifest, rewritten atomically after every
run), the status of one run, and what an existing run directory holds (finished, resumable, other)."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from asyncfl.config.loader import validate
from asyncfl.config.schema import Scenario
from asyncfl.errors import (
    AsyncFLError,
    DamagedRunDirError,
    RunDirError,
)
from asyncfl.runs.rundir import (
    MANIFEST_FILE,
    SCENARIO_FILE,
    holds_checkpoint,
    load_run,
    read_run_json,
    read_run_yaml,
    write_atomic,
)
from asyncfl.study.sweep_plan import SweepPlan, SweepRun

SWEEP_FILE = "sweep.json"
FINISHED = ("completed", "diverged")
"""Run statuses a rerun keeps: a diverged run is a result (deterministic), not a failure."""
# ------------------------------------------------------------------------------------------------
# The sweep manifest
# ------------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def read_sweep_manifest(sweep_dir: str | Path) -> dict[str, Any]:
    """``DIR/sweep.json`` as a dict; :class:`RunDirError` if missing or unreadable."""
    p = Path(sweep_dir) / SWEEP_FILE
    if not os.path.lexists(p):
        raise RunDirError(f"{sweep_dir}: not a sweep directory ({SWEEP_FILE} is missing)")
    data = read_run_json(p, what="unreadable sweep manifest")  # strict and bounded, never through a link
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise RunDirError(f"{p}: not an asyncfl sweep manifest (no runs list)")
    if not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in data["runs"]):
        raise DamagedRunDirError(p, "a run entry is not an object with a name")
    if not isinstance(data.get("grid", {}), dict):
        raise DamagedRunDirError(p, "'grid' is not an object")
    return data


class SweepManifest:
    def __init__(self, out: Path, plan: SweepPlan, backend: str, created: str | None) -> None:
        from asyncfl.version import __version__

        self.path = out / SWEEP_FILE
        self.head: dict[str, Any] = {
            "asyncfl": __version__,
            "scenario": plan.source,
            "base_dir": str(plan.base_dir),
            "set": plan.overrides,
            "grid": plan.grid,
            "seeds": plan.seeds,
            "backend": backend,
            "created": created or _now(),
        }
        self.base = plan.base
        self.runs: dict[str, SweepRun] = {r.name: r for r in plan.runs}

    def update(self, run: SweepRun) -> None:
        self.runs[run.name] = run
        self.write()

    def write(self) -> None:
        body = {
            **self.head,
            "updated": _now(),
            "counts": count_statuses(self.runs.values()),
            "base_scenario": self.base,
            "runs": [r.entry() for r in self.runs.values()],
        }
        write_atomic(self.path, (json.dumps(body, indent=2, default=str) + "\n").encode())


def count_statuses(runs: Iterable[SweepRun]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        out[r.status] = out.get(r.status, 0) + 1
    return dict(sorted(out.items()))


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"


def _scenario_there(run_dir: Path) -> Scenario | None:
    """The scenario a run directory holds; None if it has none that validates (damaged)."""
    try:
        return validate(read_run_yaml(run_dir / SCENARIO_FILE))
    except (AsyncFLError, OSError):
        return None


def existing_state(run_dir: Path, scenario: Scenario) -> tuple[str, str | None]:
    """('done', status) if the directory holds this finished run; ('resume', None) if it holds
    this run stopped part-way (killed before its manifest, or status interrupted: the runner
    continues it from its last checkpoint, or from the start if it has none); ('redo', None) if it
    must be cleared and run again; ('other', difference) if it holds a different finished run;
    ('other_stopped', difference) if it holds a different run stopped part-way that could be
    continued (status interrupted, or a checkpoint)."""
    if not run_dir.exists():
        return "redo", None
    status: str | None
    try:
        status = load_run(run_dir).status
    except RunDirError:
        mpath = run_dir / MANIFEST_FILE
        if not mpath.is_file():
            status = None  # killed before its manifest
        else:
            try:
                status = read_run_json(mpath).get("status")
            except (AsyncFLError, OSError, AttributeError):
                status = None
            if status != "interrupted":
                return "redo", None  # damaged results of a finished or failed run
    if status is not None and status not in FINISHED and status != "interrupted":
        return "redo", None
    there = _scenario_there(run_dir)
    if there is None:
        return "redo", None
    if there == scenario:
        return ("done", status) if status in FINISHED else ("resume", None)
    difference = _first_difference(there.model_dump(mode="json"), scenario.model_dump(mode="json"))
    if status in FINISHED:
        return "other", difference
    if status == "interrupted" or holds_checkpoint(run_dir):
        return "other_stopped", difference
    return "redo", None  # killed before its first checkpoint: nothing there to keep


