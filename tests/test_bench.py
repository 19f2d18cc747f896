"""``asyncfl bench`` runs at a tiny size and writes its JSON and Markdown (a test that it works,
not of its speed), and the engine-cost helper reports a per-task figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asyncfl.cli import main
from asyncfl.config.loader import validate
from asyncfl.runs.bench import MODES, NULL_VARIANTS, BenchOptions, markdown, run_bench, workload_scenario
from asyncfl.sim.engine_cost import engine_cost


def test_bench_command_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "--clients",
            "12",
            "--in-flight",
            "4",
            "--updates",
            "16",
            "--samples",
            "20",
            "--eval-clients",
            "5",
            "--threads",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    report = json.loads((out / "bench.json").read_text())
    assert set(report["workloads"]) == {"synthetic-logreg", "mnist-mlp-hf", "null"}
    for name in ("synthetic-logreg", "mnist-mlp-hf"):
        w = report["workloads"][name]
        assert set(w["modes"]) == set(MODES)
        for mode in MODES:
            r = w["modes"][mode]
            assert r["updates"] >= 16 and r["updates_per_s"] > 0
            assert r["versions_peak"] >= 1 and r["rss_peak_so_far"] > 0
        assert w["bare_loop"]["updates_per_s"] > 0
        assert w["flops_per_update"] > 0
        assert {"batched_over_one_at_a_time", "one_at_a_time_over_bare"} <= set(w["ratios"])
        for check in w["equality"].values():
            assert check["events_identical"] and check["ok"], check
    null = report["workloads"]["null"]
    assert null["async"]["us_per_task"] > 0
    assert set(null["variants"]) == set(NULL_VARIANTS)
    assert all(r["tasks"] >= 16 and r["us_per_task"] > 0 for r in null["variants"].values())
    assert report["device"]["measured_matmul_peak"] > 0
    md = (out / "bench.md").read_text()
    assert "## synthetic-logreg" in md and "bare PyTorch loop" in md and "us per task" in md
    assert all(f"| {name} |" in md for name in NULL_VARIANTS)
    assert "## synthetic-logreg" in capsys.readouterr().out


def test_bench_one_workload_and_modes(tmp_path: Path) -> None:
    opts = BenchOptions(
        workloads=("synthetic-logreg",),
        clients=10,
        in_flight=3,
        updates=9,
        samples=12,
        eval_clients=0,
        modes=("batched", "one_at_a_time"),
        bare=False,
        out=tmp_path,
        profile=True,
    )
    report = run_bench(opts)
    w = report["workloads"]["synthetic-logreg"]
    assert set(w["modes"]) == {"batched", "one_at_a_time"} and w["bare_loop"] is None
    assert w["equality"]["batched_vs_one_at_a_time"]["ok"]
    assert "synthetic-logreg" in markdown(report)
    assert (tmp_path / "bench.json").exists() and (tmp_path / "bench.md").exists()
    assert "tottime" in (tmp_path / "profile-synthetic-logreg-batched.txt").read_text()


def test_bench_scenarios_validate() -> None:
    opts = BenchOptions()
    for name in ("synthetic-logreg", "mnist-mlp-hf"):
        sc = validate(workload_scenario(name, opts, "cpu"))
        assert sc.clients.count == 1000
        assert sc.eval.every_steps is None and not sc.eval.grad_norm
    mlp = validate(workload_scenario("mnist-mlp-hf", opts, "cpu"))
    assert mlp.server.concurrency == 1000 and mlp.algorithm.variant == "hf"  # type: ignore[union-attr]
    assert mlp.data.dimension == 784  # type: ignore[union-attr]


def test_bench_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--modes", "fastest"])
    assert exc.value.code == 2
    assert "modes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--clients", "0"])
    assert exc.value.code == 2


def test_engine_cost_reports_microseconds_per_task() -> None:
    r = engine_cost(clients=200, concurrency=20, tasks=400, mode="buffered", buffer_size=5)
    assert r["tasks"] >= 400 and 0 < r["us_per_task"] < 10_000
    assert r["us_per_task_cpu"] > 0
    for sel in ({"name": "least_recent"}, {"name": "data_size"}):
        r = engine_cost(clients=200, concurrency=20, tasks=400, selection=sel)
        assert r["tasks"] >= 400 and 0 < r["us_per_task"] < 10_000


@pytest.mark.slow
def test_gpu_checks_script_runs_tiny_on_the_cpu(tmp_path: Path) -> None:
    """analysis/gpu_checks.sh (the GPU session's one command) with DEVICE=cpu SMALL=1: every step
    exits 0 and it leaves the 8 files the device tool brings back."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OUT": str(tmp_path / "out"), "DEVICE": "cpu", "SMALL": "1", "PYTHON": sys.executable}
    done = subprocess.run(["bash", "analysis/gpu_checks.sh"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("exit code: 0") == 4, done.stdout
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert len(files) == 8 and "mlp/bench.md" in files and "scale/bench.json" in files
