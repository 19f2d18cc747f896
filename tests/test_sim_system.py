"""System model (durations, dropout, profiles) and availability."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from asyncfl.config.schema import (
    AlwaysOn as AlwaysOnConfig,
)
from asyncfl.config.schema import (
    ComputeConfig,
    ConstantDist,
    FromListDist,
    LognormalDist,
    NetworkConfig,
    OnOff,
    SystemConfig,
    UniformDist,
)
from asyncfl.errors import ScenarioError
from asyncfl.sim.availability import AlwaysOn, OnOffAvailability, make_availability
from asyncfl.sim.system import SystemModel, TaskTiming


def model(cfg: SystemConfig, n: int = 10, seed: int = 0, work: float = 100.0, **kw: object) -> SystemModel:
    return SystemModel(cfg, n, seed, np.full(n, work), 4000, **kw)  # type: ignore[arg-type]


JITTERY = SystemConfig(
    compute=ComputeConfig(speed=LognormalDist(mean=50.0, sigma=0.7), jitter=UniformDist(low=0.5, high=1.5)),
    network=NetworkConfig(
        latency=UniformDist(low=0.01, high=0.1),
        download_bandwidth=LognormalDist(mean=1e5),
        upload_bandwidth=LognormalDist(mean=5e4),
        jitter=LognormalDist(mean=1.0, sigma=0.3),
    ),
    dropout=0.2,
)


def test_adding_a_client_keeps_everyone_elses_draws() -> None:
    small, big = model(JITTERY, n=10, seed=3), model(JITTERY, n=11, seed=3)
    for name in ("speed", "latency", "download_bandwidth", "upload_bandwidth"):
        np.testing.assert_array_equal(getattr(small, name), getattr(big, name)[:10])
    for c in range(10):
        for k in range(5):
            assert small.task_timing(c, k) == big.task_timing(c, k)


def test_seed_changes_draws() -> None:
    a, b = model(JITTERY, seed=1), model(JITTERY, seed=2)
    assert not np.array_equal(a.speed, b.speed)


def test_deterministic_twin_formulas() -> None:
    """from_list speeds and constant network: compute = W / v, transfer = l + B / bw, times the
    delay scale (2), jitter 1."""
    cfg = SystemConfig(
        compute=ComputeConfig(speed=FromListDist(values=[10.0, 20.0, 40.0])),
        network=NetworkConfig(
            latency=ConstantDist(value=0.5),
            download_bandwidth=ConstantDist(value=1000.0),
            upload_bandwidth=ConstantDist(value=500.0),
        ),
        delay_scale=2.0,
    )
    m = model(cfg, n=4, work=100.0)
    assert m.speed.tolist() == [10.0, 20.0, 40.0, 10.0]
    t = m.task_timing(2, 0)
    assert isinstance(t, TaskTiming)
    assert t == TaskTiming(download=(0.5 + 4.0) * 2, compute=100.0 / 40.0 * 2, upload=(0.5 + 8.0) * 2, dropped=False)
    assert m.task_timing(2, 7) == t  # constant jitter: every task the same
    np.testing.assert_allclose(m.mean_task_time()[2], t.download + t.compute + t.upload)


def test_speed_multiplier_and_jitter() -> None:
    cfg = SystemConfig(compute=ComputeConfig(speed=ConstantDist(value=10.0), jitter=FromListDist(values=[1.0, 3.0])))
    m = model(cfg, n=2, speed_multiplier=np.array([1.0, 2.0]))
    assert m.task_timing(0, 0).compute == pytest.approx(10.0)
    assert m.task_timing(0, 1).compute == pytest.approx(30.0)  # per-task from_list: by task index
    assert m.task_timing(1, 0).compute == pytest.approx(5.0)


def test_dropout_frequency() -> None:
    m = model(JITTERY, n=50)
    drops = [m.task_timing(c, k).dropped for c in range(50) for k in range(400)]
    assert np.mean(drops) == pytest.approx(0.2, abs=0.01)  # 20k draws: se 0.003


def test_per_task_jitter_mean() -> None:
    m = model(JITTERY, n=20)
    ratios = [m.task_timing(c, k).compute / (100.0 / m.speed[c]) for c in range(20) for k in range(500)]
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.01)
    assert min(ratios) >= 0.5 and max(ratios) <= 1.5


def test_non_positive_speed_is_a_scenario_error() -> None:
    cfg = SystemConfig(compute=ComputeConfig(speed=ConstantDist(value=0.0)))
    with pytest.raises(ScenarioError, match=r"system\.compute\.speed"):
        model(cfg)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_profile_csv(tmp_path: Path) -> None:
    write(
        tmp_path / "p.csv",
        "client,speed,download_bandwidth,upload_bandwidth,latency\n1,20,1000,500,0.1\n0,10,2000,1000,0\n2,1,1,1,1\n",
    )
    m = model(SystemConfig(profile="p.csv"), n=2, base_dir=tmp_path)
    assert m.speed.tolist() == [10.0, 20.0]
    assert m.download_bandwidth.tolist() == [2000.0, 1000.0]
    assert m.latency.tolist() == [0.0, 0.1]
    assert m.task_timing(1, 0).upload == pytest.approx(0.1 + 4000 / 500)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, "not found"),
        ("client,speed,latency\n0,1,1\n", "lacks column"),
        ("client,speed,download_bandwidth,upload_bandwidth,latency\n0,1,1,1,0\n", "rows"),
        ("client,speed,download_bandwidth,upload_bandwidth,latency\n0,1,1,1,0\n0,2,1,1,0\n", "no row for client 1"),
        ("client,speed,download_bandwidth,upload_bandwidth,latency\n0,x,1,1,0\n1,1,1,1,0\n", "numbers"),
        ("client,speed,download_bandwidth,upload_bandwidth,latency\n0,0,1,1,0\n1,1,1,1,0\n", "> 0"),
    ],
)
def test_bad_profiles(tmp_path: Path, text: str | None, match: str) -> None:
    if text is not None:
        write(tmp_path / "p.csv", text)
    with pytest.raises(ScenarioError, match=match) as info:
        model(SystemConfig(profile="p.csv"), n=2, base_dir=tmp_path)
    assert info.value.key == "system.profile"
    assert "\n" not in info.value.one_line()


# ------------------------------------------------------------------------------------------------
# availability
# ------------------------------------------------------------------------------------------------


def test_always_on() -> None:
    a = make_availability(AlwaysOnConfig(), 3, 0)
    assert isinstance(a, AlwaysOn) and a.always_on
    assert a.is_on(2, 5.0) and math.isinf(a.next_off(2, 5.0)) and a.next_on(2, 5.0) == 5.0


def test_on_off_fraction_and_consistency() -> None:
    """Long-run fraction of time on = mean_on / (mean_on + mean_off) = 2/3; next_off / next_on
    land on state changes."""
    a = make_availability(OnOff(mean_on=20.0, mean_off=10.0, start_on=0.5), 200, 4)
    assert isinstance(a, OnOffAvailability)
    grid = np.arange(0.0, 3000.0, 1.0)
    frac = np.mean([a.is_on(c, t) for c in range(200) for t in grid[::7]])
    assert frac == pytest.approx(2 / 3, abs=0.02)
    for c in range(20):
        for t in (0.0, 13.3, 500.0):
            off = a.next_off(c, t)
            on = a.next_on(c, t)
            assert off >= t and on >= t
            if a.is_on(c, t):
                assert on == t and off > t and not a.is_on(c, off)
                assert a.is_on(c, math.nextafter(off, 0.0))
            else:
                assert off == t and on > t and a.is_on(c, on)


def test_on_off_start_probability() -> None:
    a = OnOffAvailability(100.0, 100.0, 0.3, 5000, 9)
    assert np.mean([a.is_on(c, 0.0) for c in range(5000)]) == pytest.approx(0.3, abs=0.02)
    assert all(OnOffAvailability(1.0, 1.0, 1.0, 10, 0).is_on(c, 0.0) for c in range(10))


def test_on_off_independent_of_query_order() -> None:
    queries = [(c, t) for c in range(5) for t in np.linspace(0.0, 400.0, 60).tolist()]
    a = OnOffAvailability(15.0, 5.0, 0.8, 5, 1)
    forward = {(c, t): (a.is_on(c, t), a.next_off(c, t), a.next_on(c, t)) for c, t in queries}
    random.Random(0).shuffle(queries)
    b = OnOffAvailability(15.0, 5.0, 0.8, 5, 1)
    shuffled = {(c, t): (b.is_on(c, t), b.next_off(c, t), b.next_on(c, t)) for c, t in queries}
    assert forward == shuffled
    # another client count keeps each client's timeline
    c = OnOffAvailability(15.0, 5.0, 0.8, 9, 1)
    assert all(c.next_off(cl, t) == v[1] for (cl, t), v in forward.items())
