"""Read sweeps and runs back as tidy pandas frames (this module only *reads* run directories).

- :func:`load_sweep`: one row per (run, evaluation, metric) of a sweep directory, with the run's
  name, seed and one column per grid key (named by the dotted key).
- :func:`load_sweep_events`: one row per (run, client task), with the same run columns.
- :func:`load_runs`: the same for plain run directories (``asyncfl run`` outputs).
- :func:`load_study`: a sweep directory, a run directory or a folder of run directories as a
  :class:`Study` (runs table, metrics, events) -- what figures and reports are made from.
- :func:`final_values`, :func:`time_to_target`, :func:`resolve_target`: per-run summaries of one
  metric and the level a time-to-target counts to.

Grid values appear in the frames as given, except that a mapping or list value becomes its short
label (``{name: hinge, a: 10}`` -> ``hinge-10``) and, in a numeric column, ``null`` (an unbounded
bound such as ``server.max_staleness``) becomes ``inf``, so that grouping never silently drops it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asyncfl.errors import RunDirError
from asyncfl.runs.rundir import SCENARIO_FILE, RunResult, is_run_dir, load_run, read_run_yaml
from asyncfl.study.sweep_plan import grid_labels, value_label, value_text
from asyncfl.study.sweep_state import SWEEP_FILE, read_sweep_manifest

METRIC_COLUMNS = ["sim_time", "server_version", "client_updates", "metric", "value"]
X_LABELS = {
    "sim_time": "simulated time (s)",
    "server_version": "server version (model updates applied)",
    "client_updates": "client updates received",
}
DESCRIBE_KEYS = ("algorithm.name", "server.mode", "server.max_staleness", "system.delay_scale")
"""Scenario keys every run table carries (for figures that need them even when not swept)."""
UNBOUNDED_IF_NULL = (
    "server.max_staleness",
    "server.round_deadline",
    "stop.sim_time",
    "stop.server_steps",
    "stop.client_updates",
)
"""Numeric keys where null means "no bound": always ``inf`` in frames."""


# ------------------------------------------------------------------------------------------------
# One run, as found on disk
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedRun:
    """A readable run directory with its place in a study: ``params`` maps the study's varying
    keys to this run's values (display-ready)."""

    name: str
    seed: int | None
    params: dict[str, Any]
    result: RunResult
    scenario: dict[str, Any]

    @property
    def status(self) -> str:
        return self.result.status


def _read_scenario(run_dir: Path) -> dict[str, Any]:
    """The run's scenario.yaml as a mapping ({} if absent); damage (not UTF-8, nested too deeply,
    a number too long, a link) is a one-line RunDirError naming the file (the bounded reader)."""
    p = run_dir / SCENARIO_FILE
    if not os.path.lexists(p):
        return {}
    return read_run_yaml(p)


def scenario_value(scenario: Mapping[str, Any], key: str) -> Any:
    """A dotted key's value in a (resolved) scenario mapping; None if absent."""
    cur: Any = scenario
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def display_value(value: Any) -> Any:
    """A grid value as a frame cell: scalars as given, mappings and lists as their label."""
    if isinstance(value, (Mapping, list, tuple)):
        return value_label(value)
    return value


def _grid_display(value: Any, labels: Mapping[str, str]) -> Any:
    if isinstance(value, (Mapping, list, tuple)):
        return labels.get(value_text(value), value_label(value))
    return value


def algorithm_label(scenario: Mapping[str, Any]) -> str:
    """``per_fedavg (hf)``, ``pfedme``, ... from a resolved scenario."""
    name = scenario_value(scenario, "algorithm.name") or "?"
    variant = scenario_value(scenario, "algorithm.variant")
    return f"{name} ({variant})" if variant else str(name)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = display_value(v)
    return out


def varying_keys(scenarios: Sequence[Mapping[str, Any]]) -> list[str]:
    """Dotted keys present in every scenario whose values differ (seed and name excluded), leaving
    out a key that splits the runs exactly as an earlier key does."""
    if len(scenarios) < 2:
        return []
    flats = [_flatten(s) for s in scenarios]
    common = [k for k in flats[0] if all(k in f for f in flats[1:])]
    keys, seen = [], set()
    for k in common:
        if k in ("seed", "name"):
            continue
        values = [repr(f[k]) for f in flats]
        if len(set(values)) < 2:
            continue
        # a key that splits the runs exactly as an earlier one does (server.clients_per_round
        # along with server.mode) tells nothing new
        first: dict[str, int] = {}
        partition = tuple(first.setdefault(v, len(first)) for v in values)
        if partition not in seen:
            seen.add(partition)
            keys.append(k)
    return keys


# ------------------------------------------------------------------------------------------------
# Locating runs
# ------------------------------------------------------------------------------------------------


def _sweep_runs(sweep_dir: Path, skipped: list[str] | None = None) -> tuple[list[LoadedRun], list[str]]:
    """The sweep's finished runs and its grid keys; the names of the others are appended to
    ``skipped`` (pending, failed, interrupted or damaged: not a result, yet)."""
    manifest = read_sweep_manifest(sweep_dir)
    grid = manifest.get("grid", {})
    grid_keys = list(grid)
    labels = {
        k: dict(zip(map(value_text, vals), grid_labels(vals), strict=True))
        for k, vals in grid.items()
        if isinstance(vals, list)
    }
    runs = []
    for entry in manifest["runs"]:
        path = sweep_dir / str(entry.get("dir", entry.get("name")))
        try:
            result = load_run(path)
            scenario = _read_scenario(path)
        except RunDirError:
            if skipped is not None:
                skipped.append(str(entry["name"]))
            continue
        overrides = entry.get("overrides", {})
        params = {k: _grid_display(overrides.get(k), labels.get(k, {})) for k in grid_keys}
        runs.append(LoadedRun(str(entry["name"]), entry.get("seed"), params, result, scenario))
    if not runs:
        raise RunDirError(f"{sweep_dir}: no finished runs in this sweep yet (see {SWEEP_FILE})")
    return runs, grid_keys


def _plain_runs(paths: Iterable[str | Path], infer_keys: bool = True) -> tuple[list[LoadedRun], list[str]]:
    loaded = []
    for p in paths:
        path = Path(p)
        result = load_run(path)
        loaded.append((path, result, _read_scenario(path)))
    if not loaded:
        raise RunDirError("no run directories given")
    keys = varying_keys([s for _, _, s in loaded]) if infer_keys else []
    names = _unique_names([path for path, _, _ in loaded])
    runs = [
        LoadedRun(
            name,
            result.manifest.get("seed", scenario_value(scen, "seed")),
            {k: display_value(scenario_value(scen, k)) for k in keys},
            result,
            scen,
        )
        for name, (_, result, scen) in zip(names, loaded, strict=True)
    ]
    return runs, keys


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]


def _none_to_inf(frame: pd.DataFrame, keys: Iterable[str]) -> pd.DataFrame:
    """In a key column whose other values are numbers, ``None`` (unbounded) becomes ``inf``."""
    for k in keys:
        if k not in frame.columns:
            continue
        col = frame[k]
        vals = [v for v in col if not _is_null(v)]
        numeric = bool(vals) and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in vals)
        if numeric or (not vals and k in UNBOUNDED_IF_NULL):
            frame[k] = pd.to_numeric(col.map(lambda v: math.inf if _is_null(v) else v), errors="coerce")
    return frame


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _run_columns(run: LoadedRun, keys: Sequence[str], extra: Sequence[str]) -> dict[str, Any]:
    cols: dict[str, Any] = {"run": run.name, "seed": run.seed}
    cols.update({k: run.params.get(k) for k in keys})
    for k in extra:
        if k not in cols:
            cols[k] = display_value(scenario_value(run.scenario, k))
    cols["run_status"] = run.status
    return cols


def _stack(runs: Sequence[LoadedRun], keys: Sequence[str], extra: Sequence[str], what: str) -> pd.DataFrame:
    parts = []
    for r in runs:
        frame = r.result.metrics if what == "metrics" else r.result.events
        head = _run_columns(r, keys, extra)
        block = frame.copy()
        for i, (k, v) in enumerate(head.items()):
            block.insert(i, k, [v] * len(block))
        parts.append(block)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return _none_to_inf(out, [*keys, *extra])


# ------------------------------------------------------------------------------------------------
# Public loaders
# ------------------------------------------------------------------------------------------------


def load_sweep(sweep_dir: str | Path, *, keys: Sequence[str] = ()) -> pd.DataFrame:
    """All finished runs of a sweep: one row per (run, evaluation, metric).

    Columns: ``run`` (its directory name), ``seed``, one column per grid key (dotted name), any
    extra scenario ``keys`` asked for (e.g. ``algorithm.name``), ``run_status`` (completed
    or diverged), ``sim_time`` (simulated seconds), ``server_version``, ``client_updates``,
    ``metric``, ``value``. Runs not finished (pending, failed, interrupted) are left out."""
    runs, grid_keys = _sweep_runs(Path(sweep_dir))
    return _stack(runs, grid_keys, keys, "metrics")


def load_sweep_events(sweep_dir: str | Path, *, keys: Sequence[str] = ()) -> pd.DataFrame:
    """All client tasks of a sweep's finished runs: the run columns of :func:`load_sweep`, then
    the columns of ``events.csv`` (client, dispatch_time, arrival_time, staleness, status, ...)."""
    runs, grid_keys = _sweep_runs(Path(sweep_dir))
    return _stack(runs, grid_keys, keys, "events")


def load_runs(paths: Iterable[str | Path], *, keys: Sequence[str] | None = None, events: bool = False) -> pd.DataFrame:
    """Plain run directories as one tidy frame (metrics, or ``events=True`` for client tasks).

    ``keys``: scenario keys to add as columns; default: the keys whose values differ between the
    runs (seed and name aside). ``run`` is the directory's name (its path if names repeat)."""
    runs, inferred = _plain_runs(paths, infer_keys=keys is None)
    use = inferred if keys is None else list(keys)
    if keys is not None:
        runs = [
            LoadedRun(
                r.name, r.seed, {k: display_value(scenario_value(r.scenario, k)) for k in use}, r.result, r.scenario
            )
            for r in runs
        ]
    return _stack(runs, use, (), "events" if events else "metrics")


# ------------------------------------------------------------------------------------------------
# Per-run summaries of one metric
# ------------------------------------------------------------------------------------------------


def higher_is_better(metric: str) -> bool:
    """Accuracies go up; losses, gradient norms and errors go down."""
    m = metric.lower()
    return not any(w in m for w in ("loss", "grad_norm", "error"))


def spans_decades(metric: str) -> bool:
    """Metrics that fall over orders of magnitude (the convergence measure ||grad F||^2): figures
    draw them on a log axis with geometric means, and their default target is half-way on that
    scale."""
    return "grad_norm" in metric.lower()


def final_values(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The last evaluation of ``metric`` in each run: one row per run (all run columns kept)."""
    m = metrics[metrics["metric"] == metric]
    if m.empty:
        return m
    m = m.sort_values(["run", "server_version", "sim_time"], kind="stable")
    return m.groupby("run", sort=False).tail(1).reset_index(drop=True)


TARGET_FRACTION = 0.5
"""Default target: this fraction of the way from the common start to the best final value."""
MIN_GAIN = 0.01
"""No default target unless the best final value improves on the common start by more than this
fraction of the start's magnitude (else the "target" would sit in the noise of the start)."""


@dataclass(frozen=True)
class Target:
    """The level a time-to-target counts to, and how it was chosen (said on figures).

    ``value``: the level (NaN when no run improves on the start: no meaningful target).
    ``how``: one line for a figure, e.g. ``50% of the way from the highest start 0.31 to the
    best final value 0.82``. ``starts_at``: runs whose first evaluation already meets the level
    (only possible for a user-given target; the default never has any)."""

    value: float
    how: str
    starts_at: tuple[str, ...] = ()


def _starts_and_finals(metrics: pd.DataFrame, metric: str) -> tuple[pd.Series, pd.Series]:
    m = metrics[(metrics["metric"] == metric) & np.isfinite(metrics["value"])]
    if "run_status" in m.columns and (m["run_status"] == "completed").any():
        m = m[m["run_status"] == "completed"]
    order = [c for c in ("server_version", "sim_time") if c in m.columns]
    g = m.sort_values(["run", *order], kind="stable").groupby("run")["value"]
    return g.first(), g.last()


def resolve_target(
    metrics: pd.DataFrame, metric: str, target: float | None = None, fraction: float = TARGET_FRACTION
) -> Target:
    """The time-to-target level of ``metric``: ``target`` when given, else ``fraction`` of the way
    from the common start -- the highest first evaluation of any run (the lowest, for a metric
    that goes down), so that every run starts below the target -- to the best final value over
    runs (on a log scale for a metric that :func:`spans_decades`: from 3 to 0.1, half-way is 0.55,
    not 1.55, which every run passes at once). NaN (no target) when the best final value is within :data:`MIN_GAIN` of the start.
    Diverged runs (non-finite values) are not counted."""
    up = higher_is_better(metric)
    starts, finals = _starts_and_finals(metrics, metric)
    if target is not None:
        hit = starts[(starts >= target) if up else (starts <= target)]
        return Target(float(target), "given", tuple(str(r) for r in hit.index))
    if starts.empty:
        return Target(math.nan, f"no finite {metric} recorded")
    common = float(starts.max() if up else starts.min())
    best = float(finals.max() if up else finals.min())
    where = "highest" if up else "lowest"
    gain = (best - common) if up else (common - best)
    if not gain > max(MIN_GAIN * abs(common), 1e-12):
        return Target(
            math.nan,
            f"no run ends clearly {'above' if up else 'below'} the {where} start {common:.3g} "
            f"(best final value {best:.3g})",
        )
    if spans_decades(metric) and common > 0 and best > 0:  # half-way on the log axis it is drawn on
        value = common * (best / common) ** fraction
        scale = " on a log scale"
    else:
        value = common + fraction * (best - common)
        scale = ""
    return Target(
        value,
        f"{fraction:.0%} of the way{scale} from the {where} start {common:.3g} to the best final value {best:.3g}",
    )


def default_target(metrics: pd.DataFrame, metric: str) -> float:
    """:data:`TARGET_FRACTION` of the way from the common start (the highest first evaluation; the
    lowest for a metric that goes down) to the best final value: every run starts below it, the
    best run ends above it, and runs that never get there show as such. NaN when no run improves
    on the common start. See :func:`resolve_target`."""
    return resolve_target(metrics, metric).value


def time_to_target(metrics: pd.DataFrame, metric: str, target: float, x: str = "sim_time") -> pd.DataFrame:
    """Per run, the first ``x`` (simulated seconds by default) at which ``metric`` reaches
    ``target`` (>= for accuracies, <= for losses); NaN if it never does. One row per run with the
    run columns, ``time_to_target`` and ``at_start`` (True when the run's first evaluation already
    meets the target: its time says nothing about learning)."""
    m = metrics[metrics["metric"] == metric].sort_values(["run", x], kind="stable")
    up = higher_is_better(metric)
    rows = []
    for _, g in m.groupby("run", sort=False):
        ok = (g["value"] >= target) if up else (g["value"] <= target)
        hit = g[ok]
        row = g.iloc[-1].copy()
        row["time_to_target"] = float(hit[x].iloc[0]) if len(hit) else math.nan
        row["at_start"] = bool(ok.iloc[0])
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=[*m.columns, "time_to_target", "at_start"])
    out = pd.DataFrame(rows).reset_index(drop=True)
    return out.drop(columns=["sim_time", "server_version", "client_updates", "value"], errors="ignore")


def summary(
    metrics: pd.DataFrame,
    keys: Sequence[str],
    metric: str,
    target: float | None = None,
    x: str = "sim_time",
) -> pd.DataFrame:
    """One row per setting (combination of ``keys``; seeds pooled): ``runs``, the mean and s.d.
    over seeds of the final ``metric``, and of the ``x`` needed to reach ``target`` (default
    :func:`default_target`), with how many runs reached it."""
    if target is None:
        target = default_target(metrics, metric)
    fin = final_values(metrics, metric)
    ttt = time_to_target(metrics, metric, target, x).set_index("run")["time_to_target"]
    if fin.empty:
        return pd.DataFrame()
    fin = fin.assign(time_to_target=fin["run"].map(ttt))
    keys = [k for k in keys if k in fin.columns]
    grouped = fin.groupby([fin[k].astype(str) for k in keys], sort=False) if keys else [((), fin)]
    rows = []
    for _, g in grouped:
        row: dict[str, Any] = {k: g[k].iloc[0] for k in keys}
        row["runs"] = len(g)
        row[f"final {metric}"] = float(g["value"].mean())
        row[f"final {metric} sd"] = float(g["value"].std(ddof=1)) if len(g) > 1 else math.nan
        reached = g["time_to_target"].dropna()
        row[f"{x} to {target:.3g}"] = float(reached.mean()) if len(reached) else math.nan
        row[f"{x} to {target:.3g} sd"] = float(reached.std(ddof=1)) if len(reached) > 1 else math.nan
        row["reached"] = f"{len(reached)}/{len(g)}"
        rows.append(row)
    out = pd.DataFrame(rows)
    if keys:
        try:
            out = out.sort_values(keys, kind="stable").reset_index(drop=True)
        except TypeError:
            pass  # mixed types in a key column: keep the order of the runs
    return out


# ------------------------------------------------------------------------------------------------
# A study: whatever a DIR given to `asyncfl plot` / `asyncfl report` holds
# ------------------------------------------------------------------------------------------------


@dataclass
class Study:
    """Runs read from one directory. ``kind``: ``sweep`` (DIR/sweep.json), ``run`` (DIR is a run)
    or ``runs`` (DIR holds run directories). ``keys``: what varies between runs (the grid keys,
    or for plain runs the scenario keys that differ). ``runs``: one row per run. ``metrics``: the
    tidy metrics with the run columns. ``events``: client tasks with the run columns."""

    path: Path
    kind: str
    keys: list[str]
    loaded: list[LoadedRun] = field(repr=False)
    _metrics: pd.DataFrame | None = field(default=None, repr=False)
    _events: pd.DataFrame | None = field(default=None, repr=False)
    _runs: pd.DataFrame | None = field(default=None, repr=False)
    skipped: list[str] = field(default_factory=list)
    """Runs found but not included: unfinished, failed or damaged (their names)."""

    def _stack(self, what: str) -> pd.DataFrame:
        frame = _stack(self.loaded, self.keys, [k for k in DESCRIBE_KEYS if k not in self.keys], what)
        if "algorithm" not in self.keys:  # a grid over whole algorithm mappings labels itself
            labels = {r.name: algorithm_label(r.scenario) for r in self.loaded}
            frame.insert(2 + len(self.keys), "algorithm", frame["run"].map(labels))
        return frame

    @property
    def metrics(self) -> pd.DataFrame:
        if self._metrics is None:
            self._metrics = self._stack("metrics")
        return self._metrics

    @property
    def events(self) -> pd.DataFrame:
        if self._events is None:
            self._events = self._stack("events")
        return self._events

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run: run columns, outcome (simulated time, versions, updates, staleness,
        wall time) and every final metric (``final.<metric>``)."""
        if self._runs is None:
            rows = []
            for r in self.loaded:
                m = r.result.manifest
                row = _run_columns(r, self.keys, [k for k in DESCRIBE_KEYS if k not in self.keys])
                if "algorithm" not in self.keys:
                    row["algorithm"] = algorithm_label(r.scenario)
                row.update(
                    {
                        "sim_time": m.get("sim_time"),
                        "server_version": m.get("server_version"),
                        "updates_applied": m.get("updates_applied"),
                        "updates_dropped": m.get("updates_dropped"),
                        "staleness_mean": m.get("staleness_mean"),
                        "staleness_max": m.get("staleness_max"),
                        "wall_time_s": m.get("wall_time_s"),
                    }
                )
                for k, v in sorted((m.get("final_metrics") or {}).items()):
                    row[f"final.{k}"] = v
                rows.append(row)
            self._runs = _none_to_inf(pd.DataFrame(rows), [*self.keys, *DESCRIBE_KEYS])
        return self._runs

    @property
    def metric_names(self) -> list[str]:
        return sorted(self.metrics["metric"].unique())

    def varies(self, key: str) -> bool:
        """Whether ``key`` (a run column) takes more than one value across runs."""
        return key in self.runs.columns and self.runs[key].astype(str).nunique() > 1


def load_study(path: str | Path) -> Study:
    """A sweep directory, a single run directory, or a folder of run directories."""
    p = Path(path)
    if not p.is_dir():
        raise RunDirError(f"{p}: no such directory")
    skipped: list[str] = []
    if (p / SWEEP_FILE).is_file():
        runs, keys = _sweep_runs(p, skipped)
        return Study(p, "sweep", keys, runs, skipped=skipped)
    if is_run_dir(p):
        runs, _ = _plain_runs([p], infer_keys=False)
        return Study(p, "run", [], runs)
    children = sorted(c for c in p.iterdir() if c.is_dir() and is_run_dir(c))
    if not children:
        raise RunDirError(f"{p}: neither a run directory nor a sweep (no manifest.json, {SWEEP_FILE} or runs inside)")
    readable = []
    for c in children:
        try:
            load_run(c)
            _read_scenario(c)
            readable.append(c)
        except RunDirError:
            skipped.append(c.name)
    if not readable:
        raise RunDirError(f"{p}: none of its {len(children)} run directories is finished")
    runs, keys = _plain_runs(readable)
    return Study(p, "runs", keys, runs, skipped=skipped)


__all__ = [
    "TARGET_FRACTION",
    "X_LABELS",
    "LoadedRun",
    "Study",
    "Target",
    "algorithm_label",
    "default_target",
    "final_values",
    "higher_is_better",
    "load_runs",
    "load_study",
    "load_sweep",
    "load_sweep_events",
    "resolve_target",
    "scenario_value",
    "spans_decades",
    "summary",
    "time_to_target",
    "varying_keys",
]
