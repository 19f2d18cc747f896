"""Fabricated run and sweep directories in the real on-disk format, for the results / plots /
report tests (they exercise the reading side without running the simulator).

A tiny stand-in simulation makes the numbers look like the real thing: clients with lognormal
task times, ``concurrency`` in flight, staleness = versions applied since the pull, updates
staler than tau dropped, accuracy rising with applied updates and falling with staleness.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asyncfl.config.loader import apply_overrides, dump_scenario, validate
from asyncfl.runs.rundir import EVENTS_FILE, METRICS_FILE, SCENARIO_FILE, csv_bytes, write_atomic, write_manifest
from asyncfl.sim.records import EVENT_COLUMNS, METRIC_COLUMNS
from asyncfl.study.sweep_plan import run_name, value_text
from asyncfl.study.sweep_state import SWEEP_FILE

BASE: dict[str, Any] = {
    "name": "fab",
    "seed": 0,
    "algorithm": {"name": "per_fedavg", "variant": "hf"},
    "server": {"mode": "async", "concurrency": 4, "max_staleness": 8},
    "clients": {"count": 10},
    "stop": {"server_steps": 40},
    "eval": {"every_steps": 5},
}


def fabricate_run(  # noqa: C901 (writes a fake run directory one file and option at a time)
    run_dir: Path, scenario: Mapping[str, Any], status: str = "completed", per_client: bool = False
) -> None:
    """Write a run directory for ``scenario`` (a raw mapping) with plausible numbers."""
    s = validate(dict(scenario))
    rng = np.random.default_rng(s.seed + 1000 * int(s.system.delay_scale * 10))
    n = s.clients.count
    speed = rng.lognormal(0.0, 0.8, n) * s.system.delay_scale  # mean task time per client (s)
    tau = s.server.max_staleness
    steps = s.stop.server_steps or 40
    events = []
    version, t, task = 0, 0.0, 0
    applied_per_client = np.zeros(n)
    if s.server.mode == "sync":
        k = min(s.server.clients_per_round, n)
        while version < steps:
            chosen = rng.choice(n, size=k, replace=False)
            durs = speed[chosen] * rng.lognormal(0, 0.2, k)
            for c, d in zip(chosen.tolist(), durs.tolist(), strict=True):
                events.append(
                    (
                        task,
                        int(c),
                        t,
                        t + d,
                        version,
                        version,
                        0,
                        "applied",
                        1.0,
                        0.1 * d,
                        0.8 * d,
                        0.1 * d,
                        version + 1,
                    )
                )
                applied_per_client[c] += 1
                task += 1
            t += float(durs.max())
            version += 1
        end_time = t
    else:
        conc = min(s.server.concurrency, n)
        inflight = []  # (arrival, client, dispatch, base, duration)
        idle = list(rng.permutation(n))
        for _ in range(conc):
            c = int(idle.pop())
            d = float(speed[c] * rng.lognormal(0, 0.2))
            inflight.append((t + d, c, t, version, d))
        while version < steps:
            inflight.sort()
            arr, c, disp, base, d = inflight.pop(0)
            t = arr
            st = version - base
            if tau is not None and st > tau:
                events.append(
                    (task, c, disp, arr, base, version, st, "dropped_stale", math.nan, 0.1 * d, 0.8 * d, 0.1 * d, -1)
                )
            else:
                w = (st + 1) ** -0.5
                events.append(
                    (task, c, disp, arr, base, version, st, "applied", w, 0.1 * d, 0.8 * d, 0.1 * d, version + 1)
                )
                version += 1
                applied_per_client[c] += 1
            task += 1
            idle.insert(0, c)
            c2 = int(idle.pop())
            d2 = float(speed[c2] * rng.lognormal(0, 0.2))
            inflight.append((t + d2, c2, t, version, d2))
        for _, c, disp, base, d in inflight:
            events.append((task, c, disp, math.nan, base, -1, -1, "in_flight", math.nan, 0.1 * d, 0.8 * d, 0.1 * d, -1))
            task += 1
        end_time = t
    stale = np.array([e[6] for e in events if e[7] == "applied"], dtype=float)
    penalty = 0.002 * (stale.mean() if len(stale) else 0.0)
    algo_gain = {"per_fedavg": 0.1, "pfedme": 0.08}.get(s.algorithm.name, 0.0)
    metrics = []
    every = s.eval.every_steps or 10
    applied_times = sorted((e[3], e[12]) for e in events if e[7] == "applied")
    versions = list(range(0, steps + 1, every))
    if versions[-1] != steps:
        versions.append(steps)
    for v in versions:
        tv = 0.0 if v == 0 else max(tt for tt, av in applied_times if av <= v)
        updates = sum(1 for e in events if e[7] != "in_flight" and e[3] <= tv)
        base_acc = 0.1 + (0.75 + algo_gain - penalty) * (1 - math.exp(-v / 12.0)) + rng.normal(0, 0.01)
        loss = 2.3 * math.exp(-v / 15.0) + 0.2 + rng.normal(0, 0.01)
        vals = {
            "personalized_accuracy": base_acc,
            "personalized_loss": loss,
            "global_accuracy": base_acc - algo_gain,
            "global_loss": loss + 0.1,
            "grad_norm_sq": 5.0 * math.exp(-v / 8.0),
        }
        if status == "diverged" and v >= steps // 2:
            vals = {k: math.nan for k in vals}
        for key, val in vals.items():
            metrics.append((tv, v, updates, key, float(val)))
        if per_client:
            for c in range(n):
                metrics.append(
                    (
                        tv,
                        v,
                        updates,
                        f"client_accuracy/{c}",
                        float(base_acc + 0.02 * (applied_per_client[c] - applied_per_client.mean())),
                    )
                )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / SCENARIO_FILE, dump_scenario(s).encode())
    write_atomic(run_dir / METRICS_FILE, csv_bytes(METRIC_COLUMNS, metrics))
    # the real layout: the rows above leave the last column, flops, unknown
    rows = [(*e, math.nan) for e in events]
    write_atomic(run_dir / EVENTS_FILE, csv_bytes(EVENT_COLUMNS, rows))
    last = {k: val for (_, vv, _, k, val) in metrics if vv == versions[-1]}
    write_manifest(
        run_dir,
        {
            "status": status,
            "name": s.name,
            "seed": s.seed,
            "wall_time_s": 0.01,
            "sim_time": end_time,
            "server_version": steps,
            "updates_applied": int(sum(1 for e in events if e[7] == "applied")),
            "updates_dropped": int(sum(1 for e in events if e[7].startswith("dropped"))),
            "staleness_mean": float(stale.mean()) if len(stale) else 0.0,
            "staleness_max": int(stale.max()) if len(stale) else 0,
            "final_metrics": last,
        },
    )


def fabricate_sweep(
    out: Path,
    grid: Mapping[str, Sequence[Any]],
    seeds: int = 2,
    base: Mapping[str, Any] = BASE,
    diverged: Sequence[str] = (),
    per_client: bool = False,
) -> list[str]:
    """A sweep directory like ``asyncfl sweep`` writes; returns the run names."""
    import itertools

    keys = list(grid)
    runs: list[dict[str, Any]] = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo, strict=True))
        data = apply_overrides(dict(base), [f"{k}={value_text(v)}" for k, v in point.items()])
        for i in range(seeds):
            seed = int(base.get("seed", 0)) + i
            name = run_name(point, seed)
            status = "diverged" if name in diverged else "completed"
            fabricate_run(out / name, {**data, "seed": seed}, status, per_client)
            runs.append({"name": name, "dir": name, "overrides": point, "seed": seed, "status": status})
    body = {"grid": {k: list(v) for k, v in grid.items()}, "seeds": list(range(seeds)), "runs": runs}
    write_atomic(out / SWEEP_FILE, json.dumps(body, indent=2).encode())
    return [r["name"] for r in runs]


def test_fabricated_runs_load(tmp_path: Path) -> None:
    from asyncfl.runs.rundir import load_run

    fabricate_run(tmp_path / "r", BASE)
    r = load_run(tmp_path / "r")
    assert r.status == "completed" and len(r.metrics) and len(r.events)


# ------------------------------------------------------------------------------------------------
# Real tiny runs (the simulator end to end), shared by the sweep / results / plots / study tests
# ------------------------------------------------------------------------------------------------

TINY_YAML = """\
# tiny test scenario: 10 clients, 20 server steps (well under a second per run)
name: tiny
seed: 0
algorithm: {name: fedasync, lr: 0.05, local_steps: 2, batch_size: 8}
server: {mode: async, concurrency: 3, max_staleness: 4}
data: {dataset: synthetic, mean_samples: 20}
clients: {count: 10}
stop: {server_steps: 20}
eval: {every_steps: 5}
"""

TINY_GRID = ["server.max_staleness=1,null", "algorithm.name=fedasync,per_fedavg"]
"""The acceptance sweep: 2 x 2 grid points (x 2 seeds)."""

_CACHE: dict[str, Path] = {}


def tiny_scenario(folder: Path, text: str = TINY_YAML, name: str = "tiny.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text)
    return p


def tiny_sweep(tmp_path_factory: Any, workers: int = 1) -> Path:
    """A finished 2 x 2 x 2-seed sweep of the tiny scenario (made once per test session)."""
    key = f"sweep-{workers}"
    if key not in _CACHE:
        from asyncfl.study.sweep import sweep

        base = tmp_path_factory.mktemp(key)
        scen = tiny_scenario(base)
        sweep(scen, base / "out", grid=TINY_GRID, seeds=2, workers=workers)
        _CACHE[key] = base / "out"
    return _CACHE[key]
