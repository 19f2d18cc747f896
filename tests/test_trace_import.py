"""`asyncfl data convert-trace`: FedScale's device-capacity and behaviour pickles (written here in
FedScale's layout) round-trip into asyncfl's profile and trace CSVs; pickles naming any class are
refused (exit 2, one line); a converted trace drives a run from a scenario file."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import asyncfl
from asyncfl.cli import main
from asyncfl.sim.system import read_profile
from asyncfl.sim.traces import ClientWindows, read_trace

CAPACITY = {
    432802: {"computation": 162.0, "communication": 5648.109619499134},
    7: {"computation": 30.5, "communication": 120.0},
    15: {"computation": 75.0, "communication": 900.0, "dl_kbps": 2000.0, "ul_kbps": 400.0},
}
BEHAVIOUR = {
    "3": {"duration": 500, "inactive": [40, 120], "active": [10, 100], "finish_time": 200, "model": "SM-G960F"},
    "11": {"duration": 90, "inactive": [90], "active": [0], "finish_time": 90, "model": "Pixel 2"},
    "2": {"duration": 60, "inactive": [], "active": [], "finish_time": 60, "model": "x"},
}


def _pickle(path: Path, obj: object, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_capacity_round_trip(tmp_path: Path, protocol: int, capsys: pytest.CaptureFixture[str]) -> None:
    src = _pickle(tmp_path / "client_device_capacity", CAPACITY, protocol)
    assert main(["data", "convert-trace", str(src), str(tmp_path / "p.csv"), "--flops-per-sample", "7.446e6"]) == 0
    assert "3 clients' capacities" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["fedscale_id"].tolist() == [7, 15, 432802]  # sorted ids -> clients 0, 1, 2
    for client, cid in enumerate(table["fedscale_id"]):
        entry = CAPACITY[cid]
        row = table.iloc[client]
        assert row["speed"] == 1000.0 / (3.0 * entry["computation"])  # FedScale: 3 x ms per sample
        assert row["ms_per_sample"] == entry["computation"]
        assert row["download_bandwidth"] == entry.get("dl_kbps", entry["communication"]) * 125.0
        assert row["upload_bandwidth"] == entry.get("ul_kbps", entry["communication"]) * 125.0
        assert row["flops_per_s"] == pytest.approx(7.446e6 * 1000.0 / entry["computation"], rel=1e-15)
    # the file is a system.profile for both compute models
    speed, _, _, lat = read_profile(tmp_path / "p.csv", 3)
    assert speed.tolist() == table["speed"].tolist() and lat.tolist() == [0.0] * 3
    flops, *_ = read_profile(tmp_path / "p.csv", 3, "flops_per_s")
    assert flops.tolist() == table["flops_per_s"].tolist()


def test_behaviour_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _pickle(tmp_path / "client_behave_trace", BEHAVIOUR)
    assert main(["data", "convert-trace", str(src), str(tmp_path / "t.csv")]) == 0
    assert "3 clients, 3 availability windows" in capsys.readouterr().out
    windows = read_trace(tmp_path / "t.csv", 3)
    # ids sorted numerically: "2" -> 0, "3" -> 1, "11" -> 2
    assert windows[0] == ClientWindows([], [], 60.0)
    assert windows[1] == ClientWindows([10.0, 100.0], [40.0, 120.0], 200.0)
    assert windows[2] == ClientWindows([0.0], [90.0], 90.0)
    assert pd.read_csv(tmp_path / "t.csv")["fedscale_id"].tolist() == [2, 3, 3, 11]


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "payload",
    [
        {1: Evil()},
        {1: {"computation": np.float64(3.0), "communication": 1.0}},  # numpy scalars are classes too
        {1: {"active": {1, 2}}},  # protocol 2 builds a set through builtins.set
        OrderedDict(a=1),
    ],
)
def test_pickles_naming_classes_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: object
) -> None:
    src = _pickle(tmp_path / "bad.pkl", payload, protocol=2)
    code = main(["data", "convert-trace", str(src), str(tmp_path / "out.csv")])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "refused" in captured.err and "only plain containers and numbers" in captured.err
    assert "pwned" not in captured.out and not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([1, 2], "non-empty dict"),
        ({1: {"foo": 1}}, "neither a FedScale"),
        ({1: {"computation": "fast", "communication": 1.0}}, "computation must be a finite number"),
        ({1: {"active": [5], "inactive": [1], "finish_time": 10}}, "active\\[j\\] <= inactive\\[j\\]"),
    ],
)
def test_bad_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str], obj: object, match: str) -> None:
    src = _pickle(tmp_path / "x.pkl", obj)
    assert main(["data", "convert-trace", str(src), str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert pytest.importorskip("re").search(match, err)


def test_damaged_pickle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.pkl").write_bytes(b"\x80\x04\x95garbage")
    assert main(["data", "convert-trace", str(tmp_path / "x.pkl"), str(tmp_path / "o.csv")]) == 2
    assert "not a readable pickle" in capsys.readouterr().err


def test_converted_trace_drives_a_run(tmp_path: Path) -> None:
    """From a scenario file whose availability and profile come from converted FedScale files: the
    relative paths resolve against the scenario's folder, the resolved scenario.yaml holds absolute
    paths, and every dispatch lies inside the client's window (modulo its period)."""
    behave = {str(i): {"active": [5 * i, 60 + i], "inactive": [5 * i + 30, 90], "finish_time": 100} for i in range(4)}
    _pickle(tmp_path / "behave.pkl", behave)
    _pickle(tmp_path / "cap.pkl", {i: {"computation": 2.0 + i, "communication": 800.0} for i in range(4)})
    assert main(["data", "convert-trace", str(tmp_path / "behave.pkl"), str(tmp_path / "trace.csv")]) == 0
    assert main(["data", "convert-trace", str(tmp_path / "cap.pkl"), str(tmp_path / "cap.csv")]) == 0
    (tmp_path / "s.yaml").write_text(
        "name: trace\nalgorithm: {name: fedavg, local_steps: 2, batch_size: 4}\n"
        "server: {mode: async, concurrency: 2}\nmodel: logreg\nclients: {count: 4}\n"
        "data: {dataset: synthetic, dimension: 5, classes: 3, mean_samples: 20}\n"
        "system:\n  compute: {model: samples}\n  profile: cap.csv\n"
        "  availability: {model: trace, path: trace.csv}\n"
        "stop: {sim_time: 250.0}\neval: {every_steps: 100, grad_norm: false}\nexecution: {threads: 1}\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(out), "--quiet"]) == 0
    resolved = (out / "scenario.yaml").read_text()
    assert str(tmp_path / "trace.csv") in resolved and str(tmp_path / "cap.csv") in resolved
    ev = asyncfl.load_run(out).events
    assert len(ev) > 0
    windows = read_trace(tmp_path / "trace.csv", 4)
    for client, t in zip(ev["client"], ev["dispatch_time"], strict=True):
        w = windows[client]
        assert any(s <= t % w.period < e for s, e in zip(w.starts, w.ends, strict=True)), (client, t)
