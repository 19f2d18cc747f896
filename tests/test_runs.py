"""End-to-end runs: reproducibility, the run directory, the CLI's exit codes (issue: foundation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_scenario

import asyncfl
from asyncfl.cli import main
from asyncfl.config import load_scenario
from asyncfl.errors import RunDirError
from asyncfl.exec.executor import MinibatchSampler
from asyncfl.runs.runner import absolutize, build

ROOT = Path(__file__).resolve().parents[1]


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_same_seed_same_bytes_other_seed_differs_and_resolved_scenario_reruns(tiny_file: Path, tmp_path: Path) -> None:
    a, b, c, d = (tmp_path / n for n in "abcd")
    assert main(["run", str(tiny_file), "--out", str(a), "--quiet"]) == 0
    assert main(["run", str(tiny_file), "--out", str(b), "--quiet"]) == 0
    assert main(["run", str(tiny_file), "--out", str(c), "--quiet", "--seed", "2"]) == 0
    assert main(["run", str(a / "scenario.yaml"), "--out", str(d), "--quiet"]) == 0
    for name in ("metrics.csv", "events.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() == (d / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    assert (a / "scenario.yaml").read_text() == (d / "scenario.yaml").read_text()


def test_run_directory_contents(tiny_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", str(tiny_file), "--out", str(out), "--quiet"]) == 0
    res = asyncfl.load_run(out)
    m = res.manifest
    for key in (
        "asyncfl",
        "torch",
        "simpy",
        "python",
        "device",
        "seed",
        "started",
        "finished",
        "status",
        "updates_applied",
        "updates_dropped",
        "final_metrics",
        "git_commit",
    ):
        assert key in m, key
    assert m["status"] == "completed" and m["seed"] == 1 and m["server_version"] == 30
    assert {"sim_time", "server_version", "metric", "value"} <= set(res.metrics.columns)
    assert {"global_accuracy", "global_loss", "personalized_accuracy", "grad_norm_sq"} <= set(res.metrics["metric"])
    ev = res.events
    for col in (
        "client",
        "dispatch_time",
        "arrival_time",
        "base_version",
        "server_version",
        "staleness",
        "status",
        "compute_time",
        "download_time",
        "upload_time",
        "weight",
    ):
        assert col in ev.columns, col
    applied = ev[ev.status == "applied"]
    assert len(applied) == 30 and (applied.staleness <= 6).all() and applied.staleness.max() > 0
    np.testing.assert_allclose(applied.weight, (applied.staleness + 1.0) ** -0.5)
    # every default is written out and the file reloads to the same scenario
    assert load_scenario(out / "scenario.yaml") == load_scenario(tiny_file).model_copy(update={})


def test_python_api_run_and_mapping(tiny: dict) -> None:
    res = asyncfl.run(tiny)
    assert res.run_dir is None and res.status == "completed"
    assert res.final_metrics["global_accuracy"] >= 0.0


@pytest.mark.parametrize(
    ("args_extra", "content", "pattern"),
    [
        ([], {"bogus": 1}, "bogus: unknown key"),
        ([], {"server": {"lr": "fast"}}, "server.lr"),
        ([], {"system": {"network": {"latency": -1.0}}}, "system.network.latency"),
        (
            [],
            {"system": {"compute": {"speed": {"dist": "weibull"}}}},
            "system.compute.speed.dist: unknown choice 'weibull'",
        ),
        ([], {"algorithm": {"name": "fedprox"}}, "algorithm.name: unknown choice 'fedprox'"),
        ([], {"server": {"mode": "buffered", "buffer_size": 9, "concurrency": 4}}, "server.buffer_size (9) must be <="),
        (["--set", "server.nonexistent=1"], {}, "server.nonexistent: no such key"),
        (["--set", "clients.count=1000000000"], {}, "resources:"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, tiny: dict, args_extra: list[str], content: dict, pattern: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in content.items():
        if isinstance(value, dict) and isinstance(tiny.get(key), dict):
            tiny[key] = {**tiny[key], **value}
        else:
            tiny[key] = value
    f = write_scenario(tmp_path / "s.yaml", tiny)
    code, _, err = _run_cli(["run", str(f), "--out", str(tmp_path / "o"), "--quiet", *args_extra], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and pattern in err and "Traceback" not in err


def test_malformed_yaml_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("server: [unclosed\n")
    code, _, err = _run_cli(["validate", str(f)], capsys)
    assert code == 2 and "malformed YAML" in err and err.count("\n") == 1
    code, _, err = _run_cli(["run", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "not found" in err


def test_bad_cli_arguments_exit_2_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["run"], ["frobnicate"], ["run", "x.yaml", "--device", "tpu"], ["run", "x.yaml", "--seed", "abc"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("asyncfl: error:")


def test_cli_entry_point_subprocess(tiny_file: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asyncfl", "run", str(tiny_file), "--out", str(tmp_path / "r"), "--set", "server.lr=-1"],
        capture_output=True,
        text=True,
    )
    assert (
        out.returncode == 2
        and out.stderr.strip() == "asyncfl: error: server.lr: Input should be greater than 0 (got -1)"
    )
    schema = subprocess.run([sys.executable, "-m", "asyncfl", "schema"], capture_output=True, text=True)
    assert schema.returncode == 0 and json.loads(schema.stdout)["title"] == "Scenario"


def test_summary_table_is_printed(tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run_cli(["run", str(tiny_file), "--out", str(tmp_path / "r")], capsys)
    assert code == 0
    for label in ("simulated time", "updates applied / dropped", "staleness mean / max", "wall time", "results"):
        assert label in err


def test_fedasync_weight_one_concurrency_one_is_sequential_local_sgd(tiny: dict) -> None:
    """With a = 1, s = 1 and one client in flight, FedAsync's x <- (1 - a) x + a x_client sets x to the
    client's model, which started from x: the run is plain sequential local SGD, task after task,
    on the same minibatches (drawn from each client's own stream with its own task counter)."""
    tiny["server"] = {"mode": "async", "concurrency": 1, "staleness_weight": "constant", "lr": 1.0}
    tiny["stop"] = {"server_steps": 12}
    tiny["execution"] = {"dtype": "float64"}
    scen = load_scenario(tiny)
    built = build(scen)
    w = built.backend.current.clone()
    result = built.engine.run()
    sampler = MinibatchSampler(built.data, scen.seed, 2, 1, 8)
    counters: dict[int, int] = {}
    model = built.model
    for rec in result.events:
        assert rec.status == "applied" and rec.staleness == 0
        k = counters.get(rec.client, 0)
        counters[rec.client] = k + 1
        gidx, mask = sampler.indices(np.array([rec.client]), np.array([k]))
        for s in range(2):
            x, y, m = built.data.train_x[gidx[0, s, 0]], built.data.train_y[gidx[0, s, 0]], mask[0, s, 0]
            wg = w.clone().requires_grad_(True)
            loss = model.loss(wg, x, y, m)
            (g,) = torch.autograd.grad(loss, wg)
            w = w - 0.05 * g
    torch.testing.assert_close(built.backend.current, w, rtol=1e-10, atol=1e-12)


def _final_model(tiny: dict) -> tuple[torch.Tensor, pd.DataFrame]:
    built = build(load_scenario(tiny))
    res = built.engine.run()
    ev = pd.DataFrame(res.events)
    return built.backend.current, ev


def test_async_concurrency_one_equals_sync_one_client_per_round(tiny: dict) -> None:
    """Same client sequence, same versions pulled (staleness 0), same numbers."""
    tiny["execution"] = {"dtype": "float64"}
    tiny["algorithm"] = {
        "name": "per_fedavg",
        "variant": "hf",
        "alpha": 0.02,
        "beta": 0.05,
        "local_steps": 2,
        "batch_size": 8,
    }
    tiny["system"]["compute"]["jitter"] = {"dist": "lognormal", "mean": 1.0, "sigma": 0.3}
    a = {**tiny, "server": {"mode": "async", "concurrency": 1, "lr": 1.0}}
    s = {**tiny, "server": {"mode": "sync", "clients_per_round": 1, "lr": 1.0}}
    wa, ea = _final_model(a)
    ws, es = _final_model(s)
    assert list(ea.client) == list(es.client) and (ea.staleness == 0).all()
    torch.testing.assert_close(wa, ws, rtol=0, atol=0)


def test_buffered_identical_delays_cohort_equals_sync_round(tiny: dict) -> None:
    """Identical constant delays and K = concurrency = cohort: each buffer fills with exactly the
    clients one sync round would take, all pulled the same version, so the models are equal."""
    tiny["execution"] = {"dtype": "float64"}
    tiny["algorithm"] = {"name": "fedbuff", "lr": 0.05, "local_steps": 2, "batch_size": None}
    tiny["data"]["sigma_samples"] = 0.0  # same size everywhere: same compute time
    tiny["system"] = {
        "compute": {"speed": 100.0},
        "network": {"latency": 0.1, "download_bandwidth": 1e6, "upload_bandwidth": 1e6},
    }
    b = {
        **tiny,
        "server": {"mode": "buffered", "concurrency": 4, "buffer_size": 4, "lr": 1.0, "aggregation": "uniform"},
    }
    s = {**tiny, "server": {"mode": "sync", "clients_per_round": 4, "lr": 1.0, "aggregation": "uniform"}}
    wb, eb = _final_model(b)
    ws, es = _final_model(s)
    assert sorted(eb.client) == sorted(es.client) and (eb[eb.status == "applied"].staleness == 0).all()
    torch.testing.assert_close(wb, ws, rtol=1e-12, atol=1e-12)


def test_per_fedavg_alpha_zero_is_fedavg(tiny: dict) -> None:
    """Per-FedAvg with alpha = 0 takes w - beta grad f(w; D') per step: local SGD with lr beta.
    FedAvg draws D as its only minibatch and Per-FedAvg draws D' second, so they see different
    samples; with full batches both see all data and the runs agree."""
    tiny["execution"] = {"dtype": "float64"}
    tiny["server"] = {"mode": "sync", "clients_per_round": 4, "lr": 1.0}
    p = {
        **tiny,
        "algorithm": {
            "name": "per_fedavg",
            "variant": "hf",
            "alpha": 0.0,
            "beta": 0.05,
            "local_steps": 3,
            "batch_size": None,
        },
    }
    f = {**tiny, "algorithm": {"name": "fedavg", "lr": 0.05, "local_steps": 3, "batch_size": None}}
    wp, _ = _final_model(p)
    wf, _ = _final_model(f)
    torch.testing.assert_close(wp, wf, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["fedavg", "fedasync", "fedbuff", "local", "per_fedavg", "pfedme"])
@pytest.mark.parametrize("mode", ["sync", "async", "buffered"])
def test_every_algorithm_and_mode_switches_from_the_command_line(
    algorithm: str, mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`asyncfl run quickstart --set algorithm.name=X --set server.mode=Y` runs with X's defaults."""
    code, _, err = _run_cli(
        [
            "run",
            str(ROOT / "scenarios" / "quickstart.yaml"),
            "--out",
            str(tmp_path / "r"),
            "--quiet",
            "--set",
            f"algorithm.name={algorithm}",
            "--set",
            f"server.mode={mode}",
            "--set",
            "server.buffer_size=4",
            "--set",
            "stop.server_steps=3",
            "--set",
            "clients.count=20",
            "--set",
            "eval.every_steps=3",
            "--set",
            "server.clients_per_round=5",
        ],
        capsys,
    )
    assert code == 0, err
    res = asyncfl.load_run(tmp_path / "r")
    assert res.status == "completed" and res.manifest["server_version"] == 3


def test_out_refuses_foreign_nonempty_directory(
    tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not overwrite")
    code, _, err = _run_cli(["run", str(tiny_file), "--out", str(foreign), "--quiet"], capsys)
    assert code == 2 and "--force" in err and (foreign / "thesis.tex").read_text() == "do not overwrite"
    code, _, _ = _run_cli(["run", str(tiny_file), "--out", str(foreign), "--quiet", "--force"], capsys)
    assert code == 0 and (foreign / "thesis.tex").exists()
    # an existing run directory may be rerun into
    assert main(["run", str(tiny_file), "--out", str(foreign), "--quiet"]) == 0


def test_relative_profile_resolves_against_the_scenario_file(tmp_path: Path, tiny: dict) -> None:
    sub = tmp_path / "study"
    sub.mkdir()
    rows = ["client,speed,download_bandwidth,upload_bandwidth,latency"]
    rows += [f"{i},{100 + 10 * i},1e6,5e5,0.01" for i in range(12)]
    (sub / "profile.csv").write_text("\n".join(rows) + "\n")
    tiny["system"] = {"profile": "profile.csv"}
    f = write_scenario(sub / "s.yaml", tiny)
    out = tmp_path / "r"
    assert main(["run", str(f), "--out", str(out), "--quiet"]) == 0
    resolved = load_scenario(out / "scenario.yaml")
    assert resolved.system.profile == str((sub / "profile.csv").resolve())


def test_load_run_rejects_incomplete_directories(tiny_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert main(["run", str(tiny_file), "--out", str(out), "--quiet"]) == 0
    asyncfl.load_run(out)
    ev = out / "events.csv"
    full = ev.read_bytes()
    ev.write_bytes(full[: len(full) // 2])
    with pytest.raises(RunDirError, match="truncated or altered"):
        asyncfl.load_run(out)
    ev.unlink()
    with pytest.raises(RunDirError, match=r"events\.csv is missing"):
        asyncfl.load_run(out)
    ev.write_bytes(full)
    (out / "manifest.json").write_text('{"status": "compl')
    with pytest.raises(RunDirError, match="unreadable manifest"):
        asyncfl.load_run(out)
    (out / "manifest.json").unlink()
    with pytest.raises(RunDirError, match=r"manifest\.json is missing"):
        asyncfl.load_run(out)


def test_paths_resolve_against_the_scenario_folder_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.root, data.images and system.profile: relative to the scenario's folder, ``~`` to the
    user's home, absolute ones kept, so the run's scenario.yaml reruns from anywhere."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sc = load_scenario({"data": {"dataset": "leaf", "root": "~/leaf", "images": "imgs"}})
    got = absolutize(sc, tmp_path / "scen")
    assert got.data.root == str(tmp_path / "home" / "leaf")  # type: ignore[union-attr]
    assert got.data.images == str((tmp_path / "scen" / "imgs").resolve())  # type: ignore[union-attr]
    same = load_scenario({"data": {"dataset": "mnist", "root": "/abs/mnist"}})
    assert absolutize(same, tmp_path) == same
