"""Planning a sweep: a grid of ``--set``-style overrides x seeds, every point applied and validated
before anything runs, each run named by its overrides and seed (:func:`plan_sweep`)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from asyncfl.config.loader import (
    MAX_NODES,
    ScenarioDumper,
    apply_overrides,
    count_values,
    parse_override,
    read_yaml,
    validate,
)
from asyncfl.config.schema import Scenario, tag_keys
from asyncfl.errors import (
    ScenarioError,
    UserError,
)

# ------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------

MAX_RUNS = 10_000
"""Most runs one sweep plans (grid points x seeds): planning validates every run before any starts,
so a sweep over the limit is refused at once instead of planning for minutes."""

MAX_GRID_CHARS = 65_536
"""Longest ``--grid KEY=V1,V2,...`` item."""

MAX_GRID_KEYS = 64
"""Most grid keys (a scenario has fewer leaves that are worth sweeping)."""


@dataclass(frozen=True)
class SweepRun:
    """One (grid point, seed). ``overrides``: dotted key -> value, in grid order. ``name`` is the
    run directory's name inside the sweep directory."""

    name: str
    overrides: dict[str, Any]
    seed: int
    scenario: Scenario
    status: str = "pending"
    wall_time_s: float | None = None
    error: str | None = None
    skipped: bool = False

    def entry(self) -> dict[str, Any]:
        """This run's entry in ``sweep.json``."""
        out: dict[str, Any] = {
            "name": self.name,
            "dir": self.name,
            "overrides": self.overrides,
            "seed": self.seed,
            "status": self.status,
        }
        if self.wall_time_s is not None:
            out["wall_time_s"] = self.wall_time_s
        if self.skipped:
            out["resumed"] = True
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class SweepPlan:
    """A fully validated sweep: the base scenario (raw mapping, ``--set`` applied), the grid,
    the seeds and every run. ``base_dir`` resolves the scenario's relative paths (its folder)."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int]
    runs: list[SweepRun]
    base_dir: Path
    source: str | None = None
    overrides: list[str] = field(default_factory=list)


def split_values(raw: str) -> list[str]:
    """Split ``V1,V2,...`` at top-level commas (not inside [], {}, () or quotes)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    cur: list[str] = []
    for ch in raw:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``KEY=V1,V2,...`` items -> {key: [values]}; each value is a YAML scalar as with ``--set``
    (``null``, ``1e-3``, ``true``, ``[1, 2]``, ``{name: hinge, a: 10}``). Limits: MAX_GRID_CHARS per
    item, MAX_RUNS values per key, MAX_GRID_KEYS keys, MAX_NODES values in all (YAML aliases
    expanded), and each value within ``--set``'s limits."""
    grid: dict[str, list[Any]] = {}
    used = 0
    for item in items:
        if "=" not in item:
            raise ScenarioError(item[:60], "--grid needs KEY=V1,V2,..., e.g. --grid server.max_staleness=0,4,16")
        key, raw = item.split("=", 1)
        key = key.strip()[:200]
        if len(item) > MAX_GRID_CHARS:
            raise ScenarioError(key[:60], f"--grid item longer than {MAX_GRID_CHARS:,} characters")
        if key in grid:
            raise ScenarioError(key, "given twice with --grid; list all its values in one --grid KEY=V1,V2")
        if len(grid) >= MAX_GRID_KEYS:
            raise ScenarioError(key, f"more than {MAX_GRID_KEYS} --grid keys")
        texts = split_values(raw)
        if len(texts) > MAX_RUNS:
            raise ScenarioError(key, f"--grid lists {len(texts):,} values; a sweep runs at most {MAX_RUNS:,}")
        values = []
        for text in texts:
            if not text:
                raise ScenarioError(key, f"empty value in --grid {item[:80]!r}")
            _, value = parse_override(f"{key}={text}", "--grid")
            used += count_values(value, MAX_NODES - used)
            if used > MAX_NODES:
                raise ScenarioError(
                    key, f"--grid values hold more than {MAX_NODES:,} values in all (YAML aliases expanded)"
                )
            values.append(value)
        grid[key] = values
    return grid


def _check_grid(grid: Mapping[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    if len(grid) > MAX_GRID_KEYS:
        raise ScenarioError("sweep.grid", f"more than {MAX_GRID_KEYS} grid keys")
    for key, values in grid.items():
        if key == "seed":
            raise ScenarioError("seed", "cannot be a grid key; use --seeds N (runs seed, seed+1, ..., seed+N-1)")
        if key == "sweep" or key.startswith("sweep."):
            raise ScenarioError(key, "cannot be a grid key")
        if not isinstance(values, list) or not values:
            raise ScenarioError(f"sweep.grid.{key}", "needs a non-empty list of values")
        if len(values) > MAX_RUNS:
            raise ScenarioError(key, f"grid lists {len(values):,} values; a sweep runs at most {MAX_RUNS:,}")
        seen: set[str] = set()
        for v in values:
            text = value_text(v)
            if text in seen:
                raise ScenarioError(key, f"grid value {text} is listed twice")
            seen.add(text)
        out[key] = list(values)
    return out


def value_text(value: Any) -> str:
    """A value as a one-line YAML scalar that ``--set`` parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        if math.isnan(value):
            return ".nan"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = yaml.dump(value, Dumper=ScenarioDumper, default_flow_style=True, sort_keys=False, width=10**9).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text.strip()


def value_label(value: Any) -> str:
    """Short readable label of a grid value, for directory names and figure legends."""
    if isinstance(value, Mapping):
        return "-".join(value_label(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return "-".join(value_label(v) for v in value)
    return value_text(value)


def short_label(value: Any) -> str:
    """``{name: per_fedavg, variant: hf, alpha: 0.01}`` -> ``per_fedavg-hf``; others as value_label."""
    if isinstance(value, Mapping):
        parts = [value[k] for k in tag_keys() if k in value] + ([value["variant"]] if "variant" in value else [])
        if parts:
            return "-".join(value_label(p) for p in parts)
    return value_label(value)


def grid_labels(values: Sequence[Any]) -> list[str]:
    """Labels of one grid axis's values: short ones (the choice's name) when they tell the values
    apart, else the full labels."""
    short = [short_label(v) for v in values]
    if len(set(short)) == len(short):
        return short
    return [value_label(v) for v in values]


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
_MAX_NAME = 180


def run_name(overrides: Mapping[str, Any], seed: int, labels: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Deterministic, filesystem-safe directory name, e.g. ``server.max_staleness=4,seed=1``.
    ``labels``: per key, value_text -> label (see :func:`grid_labels`)."""

    def label(k: str, v: Any) -> str:
        if labels and k in labels:
            return labels[k].get(value_text(v), value_label(v))
        return value_label(v)

    parts = [f"{k}={label(k, v)}" for k, v in overrides.items()] + [f"seed={seed}"]
    name = _UNSAFE.sub("_", ",".join(parts))
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_NAME - 11]}~{digest}"
    return name


def _dedupe_names(runs: list[SweepRun]) -> list[SweepRun]:
    """Distinct points whose labels collide (after sanitising) get a hash of their exact overrides."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    out = []
    for r in runs:
        if counts[r.name] > 1:
            exact = json.dumps(r.overrides, sort_keys=True, default=str)
            r = replace(r, name=f"{r.name}~{hashlib.sha256(exact.encode()).hexdigest()[:8]}")
        out.append(r)
    return out


def _strip_key_prefix(exc: ScenarioError) -> str:
    text = str(exc)
    prefix = f"{exc.key}: "
    return text[len(prefix) :] if exc.key and text.startswith(prefix) else text


def plan_sweep(  # noqa: C901 (a flat run of one-line input checks: source, grid, seeds, overrides)
    source: str | Path | Mapping[str, Any],
    grid: Mapping[str, list[Any]] | Iterable[str] | None = None,
    seeds: int | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    device: str | None = None,
    base_dir: str | Path | None = None,
) -> SweepPlan:
    """Expand and validate a sweep without running anything.

    ``source``: a scenario file or mapping; its ``sweep:`` section (if any) gives a grid and a seed
    count. ``grid``: {dotted key: [values]} or ``KEY=V1,V2`` strings; it adds to the file's grid,
    replacing keys given in both. ``seeds``: how many seeds per point (default the file's, else 1);
    they are seed, seed+1, ... from the scenario's seed (or ``seed``). ``overrides``: ``--set``
    items applied to the base first. Raises :class:`ScenarioError` naming the key of the first bad
    key or value, with the point it occurred at."""
    if isinstance(source, (str, Path)):
        raw = read_yaml(source)
        src_name: str | None = str(Path(source).resolve())
        folder = Path(source).resolve().parent
    else:
        if count_values(source, MAX_NODES) > MAX_NODES:  # the file limit, before copying anything
            raise ScenarioError("", f"scenario mapping: more than {MAX_NODES:,} values")
        raw = copy.deepcopy(dict(source))
        src_name, folder = None, Path.cwd()
    if base_dir is not None:
        folder = Path(base_dir).resolve()
    if overrides:
        raw = apply_overrides(raw, list(overrides))
    if seed is not None:
        raw["seed"] = seed
    if device is not None:
        current = raw.get("execution")
        execution: dict[str, Any] = current if isinstance(current, dict) else {}
        raw["execution"] = {**execution, "device": device}
    base_scenario = validate(raw)  # the base itself must be valid (also validates its sweep: section)
    declared = base_scenario.sweep
    merged: dict[str, list[Any]] = dict(declared.grid) if declared else {}
    if grid is not None:
        extra = parse_grid(grid) if not isinstance(grid, Mapping) else {k: list(v) for k, v in grid.items()}
        merged.update(extra)
    merged = _check_grid(merged)
    n_seeds = seeds if seeds is not None else (declared.seeds if declared else 1)
    if n_seeds < 1:
        raise UserError(f"--seeds: must be >= 1 (got {n_seeds})")
    n_points = math.prod(len(v) for v in merged.values())
    if n_points * n_seeds > MAX_RUNS:
        raise UserError(
            f"sweep of {n_points * n_seeds:,} runs ({n_points:,} grid points x {n_seeds:,} seed(s)) is more than "
            f"{MAX_RUNS:,}; split it into several sweeps"
        )
    seed_list = [base_scenario.seed + i for i in range(n_seeds)]
    base = {k: v for k, v in raw.items() if k != "sweep"}

    runs: list[SweepRun] = []
    keys = list(merged)
    labels = {k: dict(zip(map(value_text, merged[k]), grid_labels(merged[k]), strict=True)) for k in keys}
    for combo in itertools.product(*(merged[k] for k in keys)):
        point = dict(zip(keys, combo, strict=True))
        items = [f"{k}={value_text(v)}" for k, v in point.items()]
        label = ",".join(f"{k}={labels[k][value_text(v)]}" for k, v in point.items()) or "(base)"
        try:
            data = apply_overrides(base, items)
        except ScenarioError as exc:
            raise ScenarioError(exc.key, f"{_strip_key_prefix(exc)} [grid point {label}]") from None
        for s in seed_list:
            data_s = {**data, "seed": s}
            try:
                scenario = validate(data_s)
            except ScenarioError as exc:
                raise ScenarioError(exc.key, f"{_strip_key_prefix(exc)} [grid point {label}]") from None
            runs.append(SweepRun(run_name(point, s, labels), point, s, scenario))
    runs = _dedupe_names(runs)
    return SweepPlan(base, merged, seed_list, runs, folder, src_name, list(overrides))
