"""Wire one scenario into a run: data, model, client rule, system model, engine, run directory.

``run(scenario)`` is the whole pipeline; everything it needs to rerun is written to the run
directory (the resolved scenario, the seed, the versions, the device).
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from asyncfl.algorithms.registry import build_rule
from asyncfl.backend import TorchBackend
from asyncfl.config.loader import dump_scenario
from asyncfl.config.schema import Scenario
from asyncfl.data.base import FederatedData
from asyncfl.data.registry import build_data
from asyncfl.errors import DivergedError, UserError
from asyncfl.executor import Executor
from asyncfl.models.base import FlatModel
from asyncfl.models.registry import build_model
from asyncfl.rundir import (
    EVENTS_FILE,
    METRICS_FILE,
    SCENARIO_FILE,
    RunResult,
    csv_bytes,
    prepare_out_dir,
    write_atomic,
    write_manifest,
)
from asyncfl.sim.availability import make_availability
from asyncfl.sim.engine import Engine, EngineResult
from asyncfl.sim.records import EVENT_COLUMNS, METRIC_COLUMNS
from asyncfl.sim.system import SystemModel
from asyncfl.staleness import weight_fn

ProgressFn = Callable[[float, dict[str, Any]], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("execution.device: cuda requested but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)


@dataclass
class Built:
    """Everything a run is made of, before the engine starts."""

    scenario: Scenario
    device: torch.device
    data: FederatedData
    model: FlatModel
    backend: TorchBackend
    engine: Engine


def build(scenario: Scenario, base_dir: Path | None = None, device: str | None = None) -> Built:
    """Construct data, model, rule, backend and engine for ``scenario`` (nothing runs yet)."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    dev = resolve_device(device or scenario.execution.device)
    dtype = torch.float64 if scenario.execution.dtype == "float64" else torch.float32
    data = build_data(scenario.data, scenario.clients.count, scenario.seed, base).to(dev, dtype)
    model = build_model(scenario.model, data)
    model.module.to(device=dev, dtype=dtype)
    rule = build_rule(scenario.algorithm)
    w0 = model.init(scenario.seed, device=dev, dtype=dtype)
    model_bytes = model.num_bytes(dtype)
    budget = (4 << 30) if dev.type == "cuda" else (1 << 30)
    executor = Executor(
        model, rule, data, scenario.seed, scenario.execution.batching, scenario.execution.max_batch, budget
    )
    backend = TorchBackend(model, rule, data, w0, scenario.server, scenario.eval, scenario.seed, executor, model_bytes)
    work = np.array([backend.task_work(c) for c in range(data.num_clients)], dtype=np.float64)
    multiplier = None
    if scenario.system.speed_by_label > 0:
        frac = data.mean_label_fraction()
        multiplier = 1.0 + scenario.system.speed_by_label * (frac - 0.5)
    system = SystemModel(scenario.system, data.num_clients, scenario.seed, work, model_bytes, multiplier, base)
    availability = make_availability(scenario.system.availability, data.num_clients, scenario.seed)
    engine = Engine(
        server=scenario.server,
        stop=scenario.stop,
        eval_cfg=scenario.eval,
        num_clients=data.num_clients,
        system=system,
        availability=availability,
        backend=backend,
        seed=scenario.seed,
        weight_fn=weight_fn(scenario.server.staleness_weight),
    )
    return Built(scenario, dev, data, model, backend, engine)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device) -> dict[str, Any]:
    import simpy

    import asyncfl

    info: dict[str, Any] = {
        "asyncfl": asyncfl.__version__,
        "torch": torch.__version__,
        "simpy": simpy.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def summarize_events(events: pd.DataFrame) -> dict[str, Any]:
    """Counts by status and staleness of applied updates."""
    counts = {str(k): int(v) for k, v in events["status"].value_counts().sort_index().items()} if len(events) else {}
    applied = events[events["status"] == "applied"] if len(events) else events
    stale = applied["staleness"] if len(applied) else pd.Series(dtype=float)
    return {
        "tasks": int(len(events)),
        "status_counts": counts,
        "updates_applied": counts.get("applied", 0),
        "updates_dropped": int(sum(v for k, v in counts.items() if k.startswith("dropped"))),
        "staleness_mean": float(stale.mean()) if len(stale) else 0.0,
        "staleness_max": int(stale.max()) if len(stale) else 0,
    }


def frames(result: EngineResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = pd.DataFrame(list(result.metrics), columns=list(METRIC_COLUMNS))
    events = pd.DataFrame(list(result.events), columns=list(EVENT_COLUMNS))
    return metrics, events


def write_outputs(
    run_dir: Path, result: EngineResult, manifest: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Write metrics.csv and events.csv (atomically), then the manifest with their digests."""
    write_atomic(run_dir / METRICS_FILE, csv_bytes(METRIC_COLUMNS, result.metrics))
    write_atomic(run_dir / EVENTS_FILE, csv_bytes(EVENT_COLUMNS, result.events))
    metrics, events = frames(result)
    write_manifest(run_dir, manifest)
    return metrics, events, manifest


def final_metrics(metrics: pd.DataFrame) -> dict[str, float]:
    if not len(metrics):
        return {}
    last = metrics[metrics["sim_time"] == metrics["sim_time"].max()]
    last = last[last["server_version"] == last["server_version"].max()]
    return {str(r.metric): float(r.value) for r in last.itertuples()}


def run(
    scenario: Scenario,
    out_dir: str | Path | None = None,
    *,
    base_dir: str | Path | None = None,
    device: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    command: list[str] | None = None,
) -> RunResult:
    """Run ``scenario``; write the run directory if ``out_dir`` is given. Returns the result.

    A run that diverges (NaN/Inf) keeps its records, gets status ``diverged`` and re-raises
    :class:`DivergedError` after writing (callers map it to exit code 3)."""
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    run_dir = prepare_out_dir(Path(out_dir), force=force) if out_dir is not None else None
    if run_dir is not None:
        write_atomic(run_dir / SCENARIO_FILE, dump_scenario(scenario).encode())
    built = build(scenario, Path(base_dir) if base_dir else None, device)
    if progress is not None:
        built.engine.on_step = lambda eng: progress(eng.progress(), {})
    status = "completed"
    error: DivergedError | None = None
    try:
        result = built.engine.run()
    except DivergedError as exc:
        status, error = "diverged", exc
        result = built.engine.result()
    metrics, events = frames(result)
    summary = summarize_events(events)
    manifest: dict[str, Any] = {
        "status": status,
        "name": scenario.name,
        "seed": scenario.seed,
        "command": command,
        **environment_info(built.device),
        "started": started.isoformat(),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "sim_time": float(result.sim_time),
        "server_version": int(result.version),
        **summary,
        "versions_peak": built.backend.versions.peak,
        "model_params": built.model.num_params,
        "model_bytes": built.backend.model_bytes,
        "final_metrics": final_metrics(metrics),
    }
    if error is not None:
        manifest["divergence"] = {"what": error.what, "server_version": error.server_version, "client": error.client}
    if run_dir is not None:
        write_outputs(run_dir, result, manifest)
    out = RunResult(run_dir, manifest, metrics, events)
    if error is not None:
        error.result = out  # type: ignore[attr-defined]
        raise error
    return out


__all__ = ["Built", "build", "resolve_device", "run"]
