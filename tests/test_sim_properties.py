"""Properties of the engine over random small scenarios (hypothesis): accepted staleness never
exceeds tau, ``wait`` drops nothing as stale, weights lie in (0, 1], event times never decrease,
every task is recorded once, and a snapshot taken at any step resumes identically."""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import Counter
from typing import Any, Literal

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncfl.config.schema import (
    AlwaysOn,
    ComputeConfig,
    ConstantDist,
    ConstantWeight,
    EvalConfig,
    ExponentialDist,
    ExponentialWeight,
    FromListDist,
    HingeWeight,
    LognormalDist,
    NetworkConfig,
    OnOff,
    ParetoDist,
    PolynomialWeight,
    ServerConfig,
    StopConfig,
    SystemConfig,
    UniformDist,
)
from asyncfl.sim.availability import make_availability
from asyncfl.sim.backend import NullBackend
from asyncfl.sim.engine import Engine, EngineResult
from asyncfl.sim.system import SystemModel

speeds = st.one_of(
    st.builds(ConstantDist, value=st.floats(10.0, 1000.0)),
    st.builds(UniformDist, low=st.just(10.0), high=st.floats(10.0, 500.0)),
    st.builds(ExponentialDist, mean=st.floats(10.0, 500.0)),
    st.builds(LognormalDist, mean=st.floats(10.0, 500.0), sigma=st.floats(0.0, 1.5)),
    st.builds(ParetoDist, shape=st.floats(1.1, 5.0), scale=st.floats(10.0, 100.0)),
    st.builds(FromListDist, values=st.lists(st.floats(10.0, 500.0), min_size=1, max_size=4)),
)
jitters = st.one_of(
    st.just(ConstantDist(value=1.0)),
    st.builds(UniformDist, low=st.just(0.5), high=st.floats(0.5, 2.0)),
    st.builds(LognormalDist, mean=st.just(1.0), sigma=st.floats(0.0, 1.0)),
    st.builds(FromListDist, values=st.lists(st.floats(0.1, 3.0), min_size=1, max_size=3)),
)
weights = st.one_of(
    st.just(ConstantWeight()),
    st.builds(PolynomialWeight, a=st.floats(0.0, 2.0)),
    st.builds(HingeWeight, a=st.floats(0.0, 10.0), b=st.integers(0, 4)),
    st.builds(ExponentialWeight, a=st.floats(0.0, 2.0)),
)
availabilities = st.one_of(
    st.just(AlwaysOn()),
    st.builds(OnOff, mean_on=st.floats(1.0, 50.0), mean_off=st.floats(1.0, 50.0), start_on=st.floats(0.0, 1.0)),
)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    clients = draw(st.integers(1, 10))
    mode: Literal["async", "buffered", "sync"] = draw(st.sampled_from(["async", "buffered", "sync"]))
    concurrency = draw(st.integers(1, clients))
    server = ServerConfig(
        mode=mode,
        concurrency=concurrency,
        buffer_size=draw(st.integers(1, concurrency)),
        clients_per_round=draw(st.integers(1, clients)),
        round_deadline=draw(st.none() | st.floats(0.5, 10.0)),
        max_staleness=draw(st.none() | st.integers(0, 4)),
        staleness_policy=draw(st.sampled_from(["drop", "wait"])),
        staleness_weight=draw(weights),
    )
    system = SystemConfig(
        compute=ComputeConfig(speed=draw(speeds), jitter=draw(jitters)),
        network=NetworkConfig(jitter=draw(jitters)),
        availability=draw(availabilities),
        dropout=draw(st.sampled_from([0.0, 0.0, 0.1, 0.5])),
    )
    stop = StopConfig(
        sim_time=draw(st.floats(5.0, 200.0)),
        server_steps=draw(st.none() | st.integers(1, 40)),
        client_updates=draw(st.none() | st.integers(1, 80)),
    )
    ev = EvalConfig(every_steps=draw(st.none() | st.integers(1, 5)), every_time=draw(st.none() | st.floats(1.0, 20.0)))
    return {
        "server": server,
        "system": system,
        "stop": stop,
        "eval": ev,
        "clients": clients,
        "seed": draw(st.integers(0, 99)),
    }


class Backend(NullBackend):
    """Evaluates to the version; records each task's ``due`` (when its update will be needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.dues: dict[int, float] = {}

    def dispatch(self, task: int, client: Any, base_version: Any, counter: int, due: Any) -> None:
        super().dispatch(task, client, base_version, counter, due)
        self.dues[task] = float(due)

    def evaluate(self, version: Any, now: Any) -> dict[str, float]:
        return {"v": float(version)}


def build(sc: dict[str, Any], **kw: Any) -> Engine:
    n = sc["clients"]
    work = np.linspace(50.0, 150.0, n)
    system = SystemModel(sc["system"], n, sc["seed"], work, 4000)
    av = make_availability(sc["system"].availability, n, sc["seed"])
    args = (sc["server"], sc["stop"], sc["eval"], n, system, av, Backend(), sc["seed"])
    snap = kw.pop("snapshot", None)
    return Engine.restore(snap, *args, **kw) if snap is not None else Engine(*args, **kw)


def reprs(r: EngineResult) -> tuple[list[str], list[str]]:
    return [repr(e) for e in r.events], [repr(m) for m in r.metrics]


EXAMPLES = int(os.environ.get("ASYNCFL_SIM_EXAMPLES", "150"))  # raise to hunt for rare cases
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios())
def test_engine_invariants(sc: dict[str, Any]) -> None:
    server: ServerConfig = sc["server"]
    engine = build(sc)
    r = engine.run()
    tau = server.max_staleness
    applied = [e for e in r.events if e.status == "applied"]
    if tau is not None:
        assert all(e.staleness <= tau for e in applied)
    if server.staleness_policy == "wait" or server.mode == "sync":
        assert r.counts["dropped_stale"] == 0
    if server.mode == "sync":
        assert all(e.staleness == 0 and e.weight == 1.0 for e in applied)
    assert all(0.0 < e.weight <= 1.0 for e in applied)
    # arrival (or loss) times never decrease in processing order; in-flight tasks come last
    done = [e for e in r.events if e.status != "in_flight"]
    assert r.events[: len(done)] == done
    times = [e.arrival_time for e in done]
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert all(t <= sc["stop"].sim_time for t in times)
    assert all(e.dispatch_time <= e.arrival_time for e in done)
    # every task recorded exactly once, statuses add up
    assert sorted(e.task for e in r.events) == list(range(r.counts["dispatched"]))
    statuses = Counter(e.status for e in r.events)
    assert all(r.counts[s] == n for s, n in statuses.items())
    assert r.counts["client_updates"] == statuses["applied"] + statuses["dropped_stale"] + statuses["buffered"]
    assert r.version == r.counts["server_steps"] == len({e.applied_version for e in applied})
    assert not (server.concurrency == 1 and server.mode == "async") or all(e.staleness == 0 for e in applied)
    # metrics: never two rows at the same (time, version); times never decrease
    points = [(m.sim_time, m.server_version) for m in r.metrics]
    assert len(points) == len(set(points)) and points == sorted(points)
    assert math.isfinite(r.sim_time) and r.sim_time <= sc["stop"].sim_time
    # ``due`` told at dispatch is exactly the arrival time of every update the server received,
    # and infinity for every lost one; a task still in flight was due at or after the stop.
    dues = engine.backend.dues  # type: ignore[attr-defined]
    for e in r.events:
        if e.status in ("applied", "dropped_stale", "buffered"):
            assert dues[e.task] == e.arrival_time
        elif e.status == "in_flight":
            assert dues[e.task] >= r.sim_time
        else:
            assert dues[e.task] == math.inf, e


@settings(max_examples=max(1, EXAMPLES * 2 // 5), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(1, 40))
def test_snapshot_at_any_step_resumes_identically(sc: dict[str, Any], k: int) -> None:
    full = build(sc).run()
    snaps: list[dict[str, Any]] = []

    def hook(e: Engine) -> None:
        if e.version == k and not snaps:
            snaps.append(json.loads(json.dumps(e.snapshot(), allow_nan=False)))

    build(sc, on_step=hook).run()
    if not snaps:
        return
    resumed = build(sc, snapshot=snaps[0]).run()
    assert reprs(resumed) == reprs(full)
    assert resumed.counts == full.counts
