"""Issue 14 in the simulator: compute time from FLOPs, device classes, profile extensions, trace
availability (windows replayed exactly), and the flops column of the event log."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncfl.config.schema import (
    ComputeConfig,
    ConstantDist,
    LognormalDist,
    NetworkConfig,
    Scenario,
    SystemConfig,
    TraceAvailabilityConfig,
)
from asyncfl.errors import ScenarioError
from asyncfl.sim.availability import TraceAvailability, make_availability
from asyncfl.sim.backend import NullBackend
from asyncfl.sim.devices import CATALOGUE, REFERENCE_FLOPS_PER_SAMPLE, assign_devices
from asyncfl.sim.engine import Engine
from asyncfl.sim.records import EVENT_COLUMNS
from asyncfl.sim.system import SystemModel
from asyncfl.sim.traces import ClientWindows, read_trace

FIXED_NET = NetworkConfig(
    latency=ConstantDist(value=0.5),
    download_bandwidth=ConstantDist(value=1000.0),
    upload_bandwidth=ConstantDist(value=500.0),
)


# ------------------------------------------------------------------------------------------------
# compute model flops
# ------------------------------------------------------------------------------------------------


def test_flops_model_formulas() -> None:
    """compute = (F_i / v_i * jitter + overhead) * delay_scale; upload bytes = B / ratio."""
    cfg = SystemConfig(
        compute=ComputeConfig(model="flops", flops_per_s=ConstantDist(value=2.0e6), overhead=0.25),
        network=FIXED_NET.model_copy(update={"upload_compression": 4.0}),
        delay_scale=2.0,
    )
    flops = np.array([1.0e6, 4.0e6, 3.0e6])
    m = SystemModel(cfg, 3, 0, np.full(3, 7.0), 4000, task_flops=flops)
    t = m.task_timing(1, 0)
    assert t.compute == pytest.approx((4.0e6 / 2.0e6 + 0.25) * 2.0)
    assert t.download == pytest.approx((0.5 + 4000 / 1000.0) * 2.0)
    assert t.upload == pytest.approx((0.5 + 1000 / 500.0) * 2.0)
    np.testing.assert_allclose(m.mean_task_time()[1], t.download + t.compute + t.upload)
    assert m.task_flops.tolist() == flops.tolist()


def test_compute_time_proportional_to_flops_under_jitter() -> None:
    """Same seed, same device draws and jitter draws: compute times scale exactly with the FLOPs."""
    cfg = SystemConfig(compute=ComputeConfig(jitter=LognormalDist(mean=1.0, sigma=0.4)))
    a = SystemModel(cfg, 5, 3, np.full(5, 10.0), 4000, task_flops=np.full(5, 1.0e6))
    b = SystemModel(cfg, 5, 3, np.full(5, 10.0), 4000, task_flops=np.full(5, 21.5e6))
    ratios = [b.task_timing(c, k).compute / a.task_timing(c, k).compute for c in range(5) for k in range(20)]
    np.testing.assert_allclose(ratios, 21.5, rtol=1e-12)


def test_flops_default_without_counted_flops_matches_old_default() -> None:
    """No counted FLOPs: one per-sample gradient = REFERENCE_FLOPS_PER_SAMPLE FLOPs, and the default
    1 GFLOP/s draws are 1e6 x the old 1000 samples/s draws (same stream), so times agree."""
    new = SystemModel(SystemConfig(), 6, 1, np.full(6, 80.0), 4000)
    old = SystemModel(SystemConfig(compute=ComputeConfig(model="samples")), 6, 1, np.full(6, 80.0), 4000)
    assert REFERENCE_FLOPS_PER_SAMPLE == 1.0e6
    np.testing.assert_allclose(new.speed, old.speed * 1.0e6, rtol=1e-12)
    for c in range(6):
        assert new.task_timing(c, 0).compute == pytest.approx(old.task_timing(c, 0).compute, rel=1e-12)
    assert np.isnan(old.task_flops).all() and new.task_flops.tolist() == [80.0e6] * 6


def test_compute_model_inference_and_errors() -> None:
    assert ComputeConfig().model == "flops"
    assert ComputeConfig.model_validate({"speed": 5.0}).model == "samples"
    assert ComputeConfig.model_validate({"flops_per_s": 5.0}).model == "flops"
    assert ComputeConfig.model_validate({"speed": 5.0, "flops_per_s": 6.0}).model == "flops"
    assert ComputeConfig.model_validate({"model": "flops", "speed": 5.0}).model == "flops"  # speed unused
    with pytest.raises(ValueError, match="upload_compression"):
        NetworkConfig.model_validate({"upload_compression": 0.5})


# ------------------------------------------------------------------------------------------------
# device classes
# ------------------------------------------------------------------------------------------------


def test_device_assignment_proportions_and_stability() -> None:
    names = assign_devices({"slow_edge": 0.25, "fast_edge": 0.75}, 4000, 7)
    assert names.count("slow_edge") / 4000 == pytest.approx(0.25, abs=0.02)
    assert assign_devices({"slow_edge": 0.25, "fast_edge": 0.75}, 10, 7) == names[:10]


def test_devices_set_capacities() -> None:
    cfg = SystemConfig(devices={"mid_edge": 1.0}, compute=ComputeConfig(jitter=ConstantDist(value=1.0)))
    m = SystemModel(cfg, 3, 0, np.full(3, 1.0), 8000, task_flops=np.full(3, 16.0e9))
    d = CATALOGUE["mid_edge"]
    assert m.speed.tolist() == [d.flops_per_s] * 3
    assert m.task_timing(0, 0).compute == pytest.approx(16.0e9 / d.flops_per_s)
    assert m.task_timing(2, 0).upload == pytest.approx(d.latency + 8000 / d.upload_bandwidth)
    assert m.device_classes == ["mid_edge"] * 3


@pytest.mark.parametrize(
    ("devices", "match"),
    [({"slow_edge": 0.5}, "sum to 1"), ({"slow_edge": 0.5, "fast_edge": 0.6}, "sum to 1")],
)
def test_bad_device_proportions(devices: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SystemConfig(devices=devices)


def test_unknown_device_class() -> None:
    with pytest.raises(ScenarioError, match="unknown device class 'phone'; choose from slow_edge"):
        SystemModel(SystemConfig(devices={"phone": 1.0}), 2, 0, np.ones(2), 10)


def test_profile_flops_and_device_columns(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(
        "client,device,flops_per_s,download_bandwidth,upload_bandwidth,latency\n"
        "0,slow_edge,,,,\n"
        "1,fast_edge,3e9,,,0.01\n"
        "2,,5e9,100,50,0.2\n"
    )
    cfg = SystemConfig.model_validate({"profile": "p.csv", "compute": {"model": "flops"}})
    m = SystemModel(cfg, 3, 0, np.ones(3), 10, base_dir=tmp_path, task_flops=np.ones(3))
    slow, fast = CATALOGUE["slow_edge"], CATALOGUE["fast_edge"]
    assert m.speed.tolist() == [slow.flops_per_s, 3e9, 5e9]
    assert m.download_bandwidth.tolist() == [slow.download_bandwidth, fast.download_bandwidth, 100.0]
    assert m.latency.tolist() == [slow.latency, 0.01, 0.2]


def test_profile_samples_file_under_flops_model_says_so(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("client,speed,download_bandwidth,upload_bandwidth,latency\n0,1,1,1,0\n")
    assert SystemConfig(profile="p.csv").compute.model == "samples"  # a profile alone: the old format
    cfg = SystemConfig.model_validate({"profile": "p.csv", "compute": {"model": "flops"}})
    with pytest.raises(ScenarioError, match=r"lacks column.*flops_per_s.*set system\.compute\.model: samples"):
        SystemModel(cfg, 1, 0, np.ones(1), 10, base_dir=tmp_path)


# ------------------------------------------------------------------------------------------------
# trace availability
# ------------------------------------------------------------------------------------------------

TRACE = (
    "client,start_s,end_s,period_s\n"
    "0,0,10,\n"
    "0,20,30,\n"
    "1,5,15,\n"
    "1,12,18,\n"  # overlaps: merged to [5, 18)
    "2,0,0,\n"  # never on
    "3,0,40,40\n"  # always on (its own period)
    "4,30,40,\n"  # ends at the horizon: wraps into nothing (starts at 30 again)
)


def test_read_trace_merges_and_periods(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    w = read_trace(tmp_path / "t.csv", 5)
    assert w[0] == ClientWindows([0.0, 20.0], [10.0, 30.0], 40.0)  # horizon = largest end_s
    assert w[1] == ClientWindows([5.0], [18.0], 40.0)
    assert w[2] == ClientWindows([], [], 40.0)
    assert w[3] == ClientWindows([0.0], [40.0], 40.0)


def test_trace_queries(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    a = make_availability(TraceAvailabilityConfig(path="t.csv"), 5, 0, tmp_path)
    assert isinstance(a, TraceAvailability) and not a.always_on
    assert a.is_on(0, 0.0) and a.is_on(0, 9.999) and not a.is_on(0, 10.0) and a.is_on(0, 20.0)
    assert a.next_off(0, 3.0) == 10.0 and a.next_on(0, 12.0) == 20.0
    assert a.next_on(0, 35.0) == 40.0 and a.is_on(0, 45.0)  # wraps: [40, 50) is [0, 10) again
    assert a.next_off(0, 25.0) == 30.0
    assert not any(a.is_on(2, t) for t in (0.0, 5.0, 100.0)) and math.isinf(a.next_on(2, 3.0))
    assert math.isinf(a.next_off(3, 7.0)) and a.is_on(3, 1e6)
    assert a.next_off(4, 35.0) == 40.0 and a.next_on(4, 41.0) == 70.0


def test_trace_window_running_into_the_next_period(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("client,start_s,end_s\n0,0,5\n0,8,10\n")
    a = make_availability(TraceAvailabilityConfig(path="t.csv"), 1, 0, tmp_path)
    assert a.next_off(0, 9.0) == 15.0  # [8, 10) then [10, 15) = [0, 5) of the next period


def test_trace_on_end_error(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    a = make_availability(TraceAvailabilityConfig(path="t.csv", on_end="error"), 5, 0, tmp_path)
    assert a.is_on(0, 5.0) and a.next_on(0, 35.0) == 40.0  # wake at the end, then fail
    with pytest.raises(ScenarioError, match="ends at 40 s but the simulation reached 40 s") as info:
        a.is_on(0, 40.0)
    assert info.value.key == "system.availability.on_end"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, "not found"),
        ("client,start\n0,1\n", "lacks column"),
        ("client,start_s,end_s\n0,5,1\n", "start_s <= end_s"),
        ("client,start_s,end_s\n0,x,1\n", "numbers"),
        ("client,start_s,end_s\n0,0,1\n", "no row for client 1"),
        ("client,start_s,end_s,period_s\n0,0,10,5\n1,0,1,\n", "ending at 10.0 > its period_s 5.0"),
    ],
)
def test_bad_traces(tmp_path: Path, text: str | None, match: str) -> None:
    if text is not None:
        (tmp_path / "t.csv").write_text(text)
    with pytest.raises(ScenarioError, match=match) as info:
        read_trace(tmp_path / "t.csv", 2)
    assert info.value.key == "system.availability.path" and "\n" not in info.value.one_line()


def _in_window(w: ClientWindows, t: float) -> bool:
    tt = t % w.period
    return any(s <= tt < e for s, e in zip(w.starts, w.ends, strict=True))


@settings(max_examples=25, derandomize=True, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 90), st.integers(1, 30)), min_size=1, max_size=4),
        min_size=3,
        max_size=6,
    ),
    st.sampled_from(["async", "sync", "buffered"]),
)
def test_trace_run_dispatches_only_inside_windows(tmp_path_factory: pytest.TempPathFactory, spec, mode) -> None:  # type: ignore[no-untyped-def]
    """Acceptance: a run driven by a trace file never dispatches a task to a client outside one of
    its windows (dispatch times compared with the file's windows, wrap-around included), and a
    task running when its window closes is lost, never applied."""
    tmp = tmp_path_factory.mktemp("trace")
    rows = ["client,start_s,end_s"]
    for c, windows in enumerate(spec):
        rows += [f"{c},{s},{s + d}" for s, d in windows]
    (tmp / "t.csv").write_text("\n".join(rows) + "\n")
    n = len(spec)
    sc = Scenario.model_validate(
        {
            "server": {"mode": mode, "concurrency": 2, "clients_per_round": 2, "buffer_size": 2},
            "clients": {"count": n},
            "system": {
                "compute": {"model": "samples", "speed": 50.0, "jitter": {"dist": "uniform", "low": 0.5, "high": 2.0}},
                "network": {"latency": 0.1, "download_bandwidth": 1e4, "upload_bandwidth": 1e4},
                "availability": {"model": "trace", "path": "t.csv"},
            },
            "stop": {"sim_time": 400.0},
        }
    )
    eng = Engine.from_scenario(sc, NullBackend(work=100.0), base_dir=tmp)
    result = eng.run()
    windows = read_trace(tmp / "t.csv", n)
    assert result.events, "no task ran"
    for e in result.events:
        assert _in_window(windows[e.client], e.dispatch_time), (e.client, e.dispatch_time)
        if e.status == "applied":
            end = e.dispatch_time + e.download_time + e.compute_time + e.upload_time
            assert all(_in_window(windows[e.client], t) for t in np.linspace(e.dispatch_time, end, 7)[:-1])


def test_events_carry_flops() -> None:
    sc = Scenario.model_validate({"server": {"concurrency": 2}, "clients": {"count": 3}, "stop": {"server_steps": 4}})
    eng = Engine.from_scenario(sc, NullBackend(work=[10.0, 20.0, 30.0]), task_flops=[1.0, 2.0, 3.0])
    events = eng.run().events
    assert EVENT_COLUMNS[-1] == "flops"
    assert events and all(e.flops == e.client + 1.0 for e in events)
    drained, _ = eng.drain_records()
    assert all(e.flops == e.client + 1.0 for e in drained)
