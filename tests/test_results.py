"""Reading sweeps and runs back: one tidy row per (run, evaluation, metric) with the grid keys as
columns; events with the run columns; plain run folders; per-run summaries of a metric."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_study_data import BASE, fabricate_run, fabricate_sweep, tiny_sweep

from asyncfl.errors import RunDirError
from asyncfl.runs.rundir import load_run
from asyncfl.study.results import (
    default_target,
    final_values,
    load_runs,
    load_study,
    load_sweep,
    load_sweep_events,
    resolve_target,
    summary,
    time_to_target,
)
from asyncfl.study.sweep_state import read_sweep_manifest


def test_load_sweep_one_row_per_run_evaluation_metric(tmp_path_factory: Any) -> None:
    out = tiny_sweep(tmp_path_factory, workers=2)
    df = load_sweep(out)
    assert list(df.columns) == [
        "run",
        "seed",
        "server.max_staleness",
        "algorithm.name",
        "run_status",
        "sim_time",
        "server_version",
        "client_updates",
        "metric",
        "value",
    ]
    runs = read_sweep_manifest(out)["runs"]
    assert df["run"].nunique() == 8
    expected = sum(len(load_run(out / r["dir"]).metrics) for r in runs)
    assert len(df) == expected
    assert not df.duplicated(["run", "sim_time", "server_version", "metric"]).any()
    # the grid keys as columns, null tau as inf, values per run as planned
    assert set(df["server.max_staleness"]) == {1.0, math.inf}
    assert set(df["algorithm.name"]) == {"fedasync", "per_fedavg"}
    row = df[df["run"] == "server.max_staleness=null,algorithm.name=per_fedavg,seed=1"].iloc[0]
    assert row["seed"] == 1 and row["server.max_staleness"] == math.inf and row["algorithm.name"] == "per_fedavg"
    one = load_run(out / "server.max_staleness=1,algorithm.name=fedasync,seed=0").metrics
    mine = df[df["run"] == "server.max_staleness=1,algorithm.name=fedasync,seed=0"][list(one.columns)]
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), one, check_dtype=False)


def test_load_sweep_events_and_extra_keys(tmp_path_factory: Any) -> None:
    out = tiny_sweep(tmp_path_factory, workers=2)
    ev = load_sweep_events(out, keys=["server.mode", "clients.count"])
    assert {
        "run",
        "seed",
        "server.max_staleness",
        "algorithm.name",
        "server.mode",
        "clients.count",
        "client",
        "staleness",
        "status",
        "compute_time",
    } <= set(ev.columns)
    assert set(ev["server.mode"]) == {"async"} and set(ev["clients.count"]) == {10}
    applied = ev[ev["status"] == "applied"]
    assert (applied.loc[applied["server.max_staleness"] == 1, "staleness"] <= 1).all()


def test_unfinished_runs_are_left_out(tmp_path: Path) -> None:
    names = fabricate_sweep(tmp_path, {"server.max_staleness": [0, 5]}, seeds=2)
    (tmp_path / names[0] / "manifest.json").unlink()
    df = load_sweep(tmp_path)
    assert df["run"].nunique() == 3 and names[0] not in set(df["run"])


def test_not_a_sweep(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a sweep directory"):
        load_sweep(tmp_path)


def test_load_runs_infers_the_keys_that_differ(tmp_path: Path) -> None:
    fabricate_run(tmp_path / "a", BASE)
    fabricate_run(tmp_path / "b", {**BASE, "server": {**BASE["server"], "max_staleness": None}})
    fabricate_run(tmp_path / "c", {**BASE, "seed": 1})
    df = load_runs([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert "server.max_staleness" in df.columns and "seed" in df.columns
    assert set(df["server.max_staleness"]) == {8.0, math.inf}
    ev = load_runs([tmp_path / "a"], keys=["algorithm.name"], events=True)
    assert set(ev["algorithm.name"]) == {"per_fedavg"} and "staleness" in ev.columns
    study = load_study(tmp_path)  # a folder of plain runs
    assert study.kind == "runs" and study.keys == ["server.max_staleness"]


def _frame(rows: list[tuple[str, float, float]], metric: str = "personalized_accuracy") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"run": r, "sim_time": t, "server_version": int(t), "client_updates": 0, "metric": metric, "value": v}
            for r, t, v in rows
        ]
    )


def test_final_values_and_time_to_target_by_hand() -> None:
    m = _frame([("a", 0, 0.1), ("a", 10, 0.5), ("a", 20, 0.7), ("b", 0, 0.1), ("b", 5, 0.3), ("b", 30, 0.45)])
    fin = final_values(m, "personalized_accuracy").set_index("run")["value"]
    assert fin.to_dict() == {"a": 0.7, "b": 0.45}
    ttt = time_to_target(m, "personalized_accuracy", 0.4, "sim_time").set_index("run")["time_to_target"]
    assert ttt["a"] == 10 and ttt["b"] == 30  # first evaluation at or above 0.4
    ttt = time_to_target(m, "personalized_accuracy", 0.6, "sim_time").set_index("run")["time_to_target"]
    assert ttt["a"] == 20 and math.isnan(ttt["b"])
    # the default target (issue 13): half-way from the highest start 0.1 to the best final value
    # 0.7, i.e. 0.4 -- above every run's start, so no run "reaches" it at t = 0
    assert default_target(m, "personalized_accuracy") == pytest.approx(0.4)
    # losses go down: time to <= target
    loss = _frame([("a", 0, 2.0), ("a", 10, 1.0), ("a", 20, 0.5)], "global_loss")
    assert time_to_target(loss, "global_loss", 1.0).iloc[0]["time_to_target"] == 10


def test_summary_per_setting(tmp_path: Path) -> None:
    fabricate_sweep(tmp_path, {"server.max_staleness": [0, None]}, seeds=3)
    df = load_sweep(tmp_path)
    s = summary(df, ["server.max_staleness"], "personalized_accuracy")
    assert list(s["server.max_staleness"]) == [0.0, math.inf] and list(s["runs"]) == [3, 3]
    assert {"final personalized_accuracy", "final personalized_accuracy sd", "reached"} <= set(s.columns)


def test_default_target_lies_above_every_start() -> None:
    """Runs that start above the old default target counted as reaching it at t = 0 (issue 13).
    Starts 0.8 and 0.3, finals 0.9 and 0.5: the target is half-way from the highest start 0.8 to
    the best final 0.9, 0.85 -- run b never reaches it, run a reaches it at t = 20, none at t = 0."""
    m = _frame([("a", 0, 0.8), ("a", 10, 0.84), ("a", 20, 0.9), ("b", 0, 0.3), ("b", 10, 0.45), ("b", 20, 0.5)])
    t = resolve_target(m, "personalized_accuracy")
    assert t.value == pytest.approx(0.85) and t.starts_at == ()
    assert "0.8" in t.how and "0.9" in t.how and "50%" in t.how
    ttt = time_to_target(m, "personalized_accuracy", t.value).set_index("run")
    times = ttt["time_to_target"].to_dict()
    assert times["a"] == 20 and math.isnan(times["b"])
    assert not ttt["at_start"].any()
    # a given target is kept as given, and runs that start at or past it are named
    g = resolve_target(m, "personalized_accuracy", 0.5)
    assert g.value == 0.5 and g.how == "given" and g.starts_at == ("a",)
    assert time_to_target(m, "personalized_accuracy", 0.5).set_index("run").loc["a", "at_start"]
    # losses go down: from the lowest start 1.0 to the best final 0.2, half-way is 0.6
    loss = _frame([("a", 0, 1.0), ("a", 10, 0.2), ("b", 0, 2.0), ("b", 10, 0.9)], "global_loss")
    assert resolve_target(loss, "global_loss").value == pytest.approx(0.6)
    # no run improves on the highest start by more than 1% of it: no target, and it says why
    flat = _frame([("a", 0, 0.857), ("a", 10, 0.858), ("b", 0, 0.80), ("b", 10, 0.85)])
    nt = resolve_target(flat, "personalized_accuracy")
    assert math.isnan(nt.value) and "0.857" in nt.how


def test_default_target_of_a_convergence_measure_is_half_way_on_its_log_scale() -> None:
    """grad_norm_sq from the lowest start 3.0 to the best final 0.12: half-way on a log scale is
    sqrt(3.0 * 0.12) = 0.6 (the linear half-way 1.56 was passed by every run at its second
    evaluation). Run a reaches 0.6 at t = 20, run b (0.9 at the end) never does."""
    m = _frame(
        [("a", 0, 3.0), ("a", 10, 1.2), ("a", 20, 0.5), ("a", 30, 0.12), ("b", 0, 4.0), ("b", 10, 1.5), ("b", 30, 0.9)],
        "grad_norm_sq",
    )
    t = resolve_target(m, "grad_norm_sq")
    assert t.value == pytest.approx(0.6) and "log scale" in t.how
    times = time_to_target(m, "grad_norm_sq", t.value).set_index("run")["time_to_target"].to_dict()
    assert times["a"] == 20 and math.isnan(times["b"])
