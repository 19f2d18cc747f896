"""The discrete-event engine: semantics of modes and policies, stops, evaluation, determinism,
snapshot / resume identity, and the layer wall (no torch)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pytest

from asyncfl.config.schema import (
    ComputeConfig,
    ConstantDist,
    EvalConfig,
    FromListDist,
    LognormalDist,
    NetworkConfig,
    OnOff,
    PolynomialWeight,
    Scenario,
    ServerConfig,
    StopConfig,
    SystemConfig,
)
from asyncfl.errors import DivergedError, ScenarioError
from asyncfl.sim.availability import make_availability
from asyncfl.sim.backend import NullBackend
from asyncfl.sim.engine import Engine, EngineResult
from asyncfl.sim.records import EVENT_COLUMNS, EventRecord
from asyncfl.sim.system import SystemModel


class MetricBackend(NullBackend):
    """NullBackend whose evaluation reports a loss of 1 / (1 + version) and the time."""

    def evaluate(self, version: Any, now: Any) -> Mapping[str, float]:
        return {"global_loss": 1.0 / (1.0 + version), "t": float(now)}


Mode = Literal["sync", "async", "buffered"]  # server.mode
HETERO = SystemConfig(compute=ComputeConfig(speed=LognormalDist(mean=100.0, sigma=1.0)))
FLAKY = SystemConfig(
    compute=ComputeConfig(speed=LognormalDist(mean=100.0, sigma=1.0), jitter=LognormalDist(mean=1.0, sigma=0.3)),
    dropout=0.1,
    availability=OnOff(mean_on=20.0, mean_off=10.0, start_on=0.7),
)


def twin_system(speeds: Sequence[float]) -> SystemConfig:
    """Deterministic: from_list speeds (samples/s), no latency, near-instant network."""
    return SystemConfig(
        compute=ComputeConfig(speed=FromListDist(values=list(speeds))),
        network=NetworkConfig(
            latency=ConstantDist(value=0.0),
            download_bandwidth=ConstantDist(value=1e12),
            upload_bandwidth=ConstantDist(value=1e12),
        ),
    )


def make(
    server: ServerConfig,
    stop: StopConfig,
    system: SystemConfig = HETERO,
    clients: int = 20,
    seed: int = 1,
    eval: EvalConfig | None = None,
    backend: NullBackend | None = None,
    on_step: Callable[[Engine], None] | None = None,
    snapshot: dict[str, Any] | None = None,
) -> Engine:
    sysm = SystemModel(system, clients, seed, np.full(clients, 100.0), 4000)
    av = make_availability(system.availability, clients, seed)
    args = (server, stop, eval or EvalConfig(every_steps=5), clients, sysm, av, backend or MetricBackend(), seed)
    if snapshot is not None:
        return Engine.restore(snapshot, *args, on_step=on_step)
    return Engine(*args, on_step=on_step)


def applied(r: EngineResult) -> list[EventRecord]:
    return [e for e in r.events if e.status == "applied"]


def key(r: EngineResult) -> tuple[list[str], list[str]]:
    """Exact, NaN-safe comparison key of a run's records."""
    return [repr(e) for e in r.events], [repr(m) for m in r.metrics]


def arrival_order_ok(r: EngineResult) -> None:
    times = [e.arrival_time for e in r.events if e.status != "in_flight"]
    assert all(a <= b for a, b in itertools.pairwise(times))
    tail = r.events[len(times) :]
    assert all(e.status == "in_flight" for e in tail)


# ------------------------------------------------------------------------------------------------
# semantics
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["async", "buffered", "sync"])
def test_event_times_never_decrease(mode: Mode) -> None:
    server = ServerConfig(mode=mode, concurrency=8, buffer_size=3, clients_per_round=8, round_deadline=3.0)
    r = make(server, StopConfig(server_steps=60), FLAKY).run()
    arrival_order_ok(r)
    steps = [m.sim_time for m in r.metrics if m.metric == "t"]
    assert steps == sorted(steps)
    assert all(e.dispatch_time <= e.arrival_time for e in r.events if e.status != "in_flight")


def test_drop_policy_bounds_applied_staleness() -> None:
    server = ServerConfig(mode="async", concurrency=10, max_staleness=2, staleness_policy="drop")
    r = make(server, StopConfig(server_steps=200)).run()
    assert max(e.staleness for e in applied(r)) <= 2
    stale = [e for e in r.events if e.status == "dropped_stale"]
    assert stale and all(e.staleness > 2 for e in stale)
    assert r.counts["client_updates"] == len(applied(r)) + len(stale)


@pytest.mark.parametrize(("mode", "tau"), [("async", 0), ("async", 2), ("buffered", 1), ("buffered", 3)])
def test_wait_policy_never_drops_and_bounds_staleness(mode: Mode, tau: int) -> None:
    server = ServerConfig(mode=mode, concurrency=8, buffer_size=3, max_staleness=tau, staleness_policy="wait")
    backend = MetricBackend()
    r = make(server, StopConfig(server_steps=100), FLAKY, backend=backend).run()
    assert r.counts["dropped_stale"] == 0
    assert max(e.staleness for e in applied(r)) <= tau
    # a blocked server applies everything waiting in one step: groups beyond the threshold appear
    threshold = 3 if mode == "buffered" else 1
    assert max(len(u) for _, u in backend.applied) > threshold


class StepTimes(MetricBackend):
    def __init__(self) -> None:
        super().__init__()
        self.times: dict[int, float] = {}

    def apply(self, updates: Any, new_version: Any, now: Any) -> None:
        self.times[new_version] = now
        super().apply(updates, new_version, now)


def test_wait_invariant_holds_at_every_step() -> None:
    """At every step to V + 1, no task still in flight has base b with V + 1 > b + tau."""
    tau = 1
    server = ServerConfig(mode="async", concurrency=6, max_staleness=tau, staleness_policy="wait")
    backend = StepTimes()
    r = make(server, StopConfig(server_steps=150), FLAKY, clients=12, backend=backend).run()
    assert len(backend.times) == 150
    for e in r.events:
        end = e.arrival_time if not math.isnan(e.arrival_time) else math.inf
        for v, t in backend.times.items():
            if e.dispatch_time < t < end:  # e was in flight when step v happened
                assert v <= e.base_version + tau


def test_concurrency_one_has_zero_staleness_and_pulls_version_k() -> None:
    """FedAsync with one client in flight: task k starts from version k (no losses here)."""
    server = ServerConfig(mode="async", concurrency=1, staleness_weight=PolynomialWeight(a=0.5))
    r = make(server, StopConfig(server_steps=50)).run()
    assert all(e.staleness == 0 and e.weight == 1.0 for e in applied(r))
    assert [e.base_version for e in r.events] == list(range(len(r.events)))
    assert [e.task for e in r.events] == list(range(len(r.events)))
    assert r.version == 50


def test_staleness_weights_are_applied() -> None:
    server = ServerConfig(mode="async", concurrency=10, staleness_weight=PolynomialWeight(a=0.5))
    backend = MetricBackend()
    r = make(server, StopConfig(server_steps=100), backend=backend).run()
    for e in applied(r):
        assert e.weight == pytest.approx((e.staleness + 1) ** -0.5)
    weights = {t: w for _, u in backend.applied for t, w in u}
    assert all(weights[e.task] == e.weight for e in applied(r))
    assert any(e.staleness > 0 for e in applied(r))


def test_sync_round_lasts_as_long_as_its_slowest_client() -> None:
    """Deterministic twin: speeds 100/(i+1) samples/s, work 100 samples, so client i computes for
    i+1 seconds; a round of 4 clients ends when its slowest one arrives."""
    speeds = [100.0 / (i + 1) for i in range(10)]
    server = ServerConfig(mode="sync", clients_per_round=4)
    r = make(server, StopConfig(server_steps=30), twin_system(speeds), clients=10).run()
    rounds: dict[int, list[EventRecord]] = defaultdict(list)
    for e in r.events:
        rounds[e.base_version].append(e)
    start = 0.0
    for v in range(30):
        group = rounds[v]
        assert len(group) == 4 and all(e.status == "applied" and e.applied_version == v + 1 for e in group)
        assert all(e.dispatch_time == start for e in group)
        slowest = max(e.client + 1 for e in group)
        end = max(e.arrival_time for e in group)
        assert end == pytest.approx(start + slowest, rel=1e-9)
        start = end
    assert r.sim_time == pytest.approx(start)


def test_sync_deadline_drops_late_clients() -> None:
    speeds = [100.0 / (i + 1) for i in range(10)]  # client i needs i + 1 seconds
    server = ServerConfig(mode="sync", clients_per_round=5, round_deadline=4.5)
    r = make(server, StopConfig(server_steps=20), twin_system(speeds), clients=10).run()
    for e in r.events:
        if e.status == "applied":
            assert e.client + 1 <= 4.5
        elif e.status == "dropped_deadline":
            assert e.client + 1 > 4.5 and e.staleness == -1
            assert e.arrival_time == pytest.approx(e.dispatch_time + 4.5)
    assert r.counts["dropped_deadline"] > 0
    # a round with a late client lasts exactly the deadline
    ends = sorted({round(e.dispatch_time, 9) for e in r.events})
    assert all(b - a <= 4.5 + 1e-9 for a, b in itertools.pairwise(ends))


def test_buffered_with_identical_delays_is_sync() -> None:
    """Buffered K = concurrency with identical constant delays: all K tasks arrive together, the
    K-th arrival steps, the replacements all pull the new version: exactly sync rounds."""
    system = twin_system([50.0])
    buffered = make(ServerConfig(mode="buffered", concurrency=5, buffer_size=5), StopConfig(server_steps=12), system)
    sync = make(ServerConfig(mode="sync", clients_per_round=5), StopConfig(server_steps=12), system)
    rb, rs = buffered.run(), sync.run()
    assert key(rb) == key(rs)
    assert [(e.client, e.base_version, e.applied_version) for e in rb.events] == [
        (e.client, e.base_version, e.applied_version) for e in rs.events
    ]
    assert buffered.backend.applied == sync.backend.applied  # type: ignore[attr-defined]
    assert all(e.staleness == 0 for e in rb.events)


def test_same_seed_same_run_other_seed_differs() -> None:
    server = ServerConfig(mode="buffered", concurrency=8, buffer_size=2, max_staleness=3)
    a = make(server, StopConfig(server_steps=50), FLAKY, seed=5).run()
    b = make(server, StopConfig(server_steps=50), FLAKY, seed=5).run()
    c = make(server, StopConfig(server_steps=50), FLAKY, seed=6).run()
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_dropout_and_offline_frequencies() -> None:
    """Dropout 0.3 loses ~30% of tasks. Offline: on periods of mean 50 s against tasks of ~1 s
    (mean on 50, off 50): a task is cut with probability ~ 1 - E[exp(-d/50)] ~ 2%."""
    sysd = SystemConfig(compute=ComputeConfig(speed=ConstantDist(value=100.0)), dropout=0.3)
    r = make(ServerConfig(mode="async", concurrency=10), StopConfig(server_steps=3000), sysd, clients=50).run()
    lost = r.counts["dropped_dropout"]
    assert lost / (lost + r.counts["client_updates"]) == pytest.approx(0.3, abs=0.02)

    syso = SystemConfig(
        compute=ComputeConfig(speed=ConstantDist(value=100.0)),
        availability=OnOff(mean_on=50.0, mean_off=50.0, start_on=0.5),
    )
    eng = make(ServerConfig(mode="async", concurrency=10), StopConfig(server_steps=3000), syso, clients=50)
    r = eng.run()
    off = [e for e in r.events if e.status == "dropped_offline"]
    done = r.counts["client_updates"]
    d = 1.0 + 2 * (0.05 + 4000 / 1.5e6)  # ~ task length: compute 1 s + two transfers
    expected = 1.0 - 50.0 / (50.0 + d)
    assert len(off) / (len(off) + done) == pytest.approx(expected, rel=0.35)
    av = eng.availability
    for e in r.events:
        assert av.is_on(e.client, e.dispatch_time)  # only available clients are picked
        if e.status == "dropped_offline":
            assert not av.is_on(e.client, e.arrival_time)
            assert e.arrival_time < e.dispatch_time + e.download_time + e.compute_time + e.upload_time
        elif e.status == "applied":
            assert av.next_off(e.client, e.dispatch_time) >= e.arrival_time


def test_waits_for_clients_to_come_on() -> None:
    """Everyone starts off: the first dispatch happens when the first client comes on."""
    system = SystemConfig(availability=OnOff(mean_on=5.0, mean_off=20.0, start_on=0.0))
    eng = make(ServerConfig(mode="async", concurrency=3), StopConfig(server_steps=30), system, clients=6)
    r = eng.run()
    first_on = min(eng.availability.next_on(c, 0.0) for c in range(6))
    assert min(e.dispatch_time for e in r.events) == first_on
    assert r.version == 30
    sync = make(ServerConfig(mode="sync", clients_per_round=3), StopConfig(server_steps=10), system, clients=6).run()
    assert sync.version == 10


# ------------------------------------------------------------------------------------------------
# stops, records and evaluation
# ------------------------------------------------------------------------------------------------


def test_stop_sim_time() -> None:
    r = make(ServerConfig(mode="async", concurrency=5), StopConfig(sim_time=7.5), FLAKY).run()
    assert r.stop_reason == "sim_time" and r.sim_time == 7.5
    assert all(e.arrival_time <= 7.5 for e in r.events if e.status != "in_flight")
    inflight = [e for e in r.events if e.status == "in_flight"]
    assert all(math.isnan(e.arrival_time) and e.staleness == -1 for e in inflight)
    assert [e.task for e in inflight] == sorted(e.task for e in inflight)
    assert r.metrics[-1].sim_time == 7.5


def test_stop_server_steps_and_updates() -> None:
    r = make(ServerConfig(mode="buffered", concurrency=6, buffer_size=3), StopConfig(server_steps=10)).run()
    assert r.stop_reason == "server_steps" and r.version == 10 and r.counts["server_steps"] == 10
    r = make(ServerConfig(mode="buffered", concurrency=6, buffer_size=3), StopConfig(client_updates=10)).run()
    assert r.stop_reason == "client_updates" and r.counts["client_updates"] == 10
    # 10 = 3 steps of 3 + one update left waiting in the buffer
    assert r.version == 3 and [e.status for e in r.events].count("buffered") == 1
    statuses = Counter(e.status for e in r.events)
    assert sum(statuses.values()) == r.counts["dispatched"]
    assert all(r.counts[s] == n for s, n in statuses.items())


def test_records_have_all_columns_and_consistent_values() -> None:
    r = make(ServerConfig(mode="async", concurrency=5, max_staleness=1), StopConfig(server_steps=40), FLAKY).run()
    assert EventRecord._fields == EVENT_COLUMNS
    for e in r.events:
        if e.status == "applied":
            assert e.staleness == e.server_version - e.base_version
            assert e.applied_version == e.server_version + 1
            assert 0.0 < e.weight <= 1.0
            assert e.arrival_time == pytest.approx(e.dispatch_time + e.download_time + e.compute_time + e.upload_time)
        else:
            assert math.isnan(e.weight) and e.applied_version == -1
    assert sorted(e.task for e in r.events) == list(range(len(r.events)))


def test_evaluation_schedule() -> None:
    ev = EvalConfig(every_steps=4, every_time=2.0)
    r = make(ServerConfig(mode="async", concurrency=4), StopConfig(server_steps=12), eval=ev).run()
    points = [(m.sim_time, m.server_version) for m in r.metrics if m.metric == "global_loss"]
    assert points[0] == (0.0, 0)
    assert len(points) == len(set(points))  # no duplicate rows
    versions = [v for _, v in points]
    assert {4, 8, 12} <= set(versions)
    assert points[-1][1] == 12  # the end coincides with the 12th step: no extra row
    timed = [t for t, _ in points if t > 0 and t % 2.0 == 0.0]
    assert timed == [2.0 * k for k in range(1, len(timed) + 1)]
    for m in r.metrics:
        if m.metric == "global_loss":
            assert m.value == 1.0 / (1.0 + m.server_version)
    assert all(m.client_updates <= r.counts["client_updates"] for m in r.metrics)


class Diverging(MetricBackend):
    def apply(self, updates: Any, new_version: Any, now: Any) -> None:
        if new_version == 7:
            raise DivergedError("update", 6, updates[0][0])
        super().apply(updates, new_version, now)


@pytest.mark.parametrize("mode", ["async", "buffered", "sync"])
def test_divergence_propagates_with_records(mode: Mode) -> None:
    eng = make(
        ServerConfig(mode=mode, concurrency=5, buffer_size=2, clients_per_round=5),
        StopConfig(server_steps=50),
        backend=Diverging(),
    )
    with pytest.raises(DivergedError):
        eng.run()
    r = eng.result()
    assert r.version == 6 and r.stop_reason == "diverged"
    assert all(e is not None for e in r.events)
    assert len(applied(r)) >= 6 and any(e.status == "buffered" for e in r.events)


def test_impossible_stop_is_a_user_error() -> None:
    with pytest.raises(ScenarioError, match=r"system\.dropout"):
        make(ServerConfig(), StopConfig(server_steps=5), SystemConfig(dropout=1.0))
    r = make(ServerConfig(mode="async", concurrency=2), StopConfig(sim_time=3.0), SystemConfig(dropout=1.0)).run()
    assert r.version == 0 and r.counts["dropped_dropout"] > 0


def test_from_scenario() -> None:
    sc = Scenario.model_validate(
        {"server": {"mode": "async", "concurrency": 4}, "clients": {"count": 8}, "stop": {"server_steps": 5}}
    )
    eng = Engine.from_scenario(sc, NullBackend())
    r = eng.run()
    assert r.version == 5 and eng.system.num_clients == 8


# ------------------------------------------------------------------------------------------------
# snapshot / resume
# ------------------------------------------------------------------------------------------------

RESUME_CASES = [
    ServerConfig(mode="async", concurrency=6, max_staleness=2, staleness_policy="drop"),
    ServerConfig(mode="async", concurrency=6, max_staleness=1, staleness_policy="wait"),
    ServerConfig(mode="async", concurrency=4, max_staleness=0, staleness_policy="wait"),
    ServerConfig(mode="buffered", concurrency=6, buffer_size=3, staleness_weight=PolynomialWeight(a=0.5)),
    ServerConfig(mode="buffered", concurrency=6, buffer_size=2, max_staleness=2, staleness_policy="wait"),
    ServerConfig(mode="sync", clients_per_round=5, round_deadline=2.0),
]


def roundtrip(snap: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(snap, allow_nan=False))  # strict JSON


@pytest.mark.parametrize("server", RESUME_CASES, ids=lambda s: f"{s.mode}-{s.staleness_policy}-{s.max_staleness}")
def test_snapshot_restore_is_identical(server: ServerConfig) -> None:
    stop = StopConfig(server_steps=40, sim_time=400.0)
    ev = EvalConfig(every_steps=3, every_time=5.0)
    full = make(server, stop, FLAKY, eval=ev).run()
    for k in (1, 7, 23, 39, 40):
        snaps: list[dict[str, Any]] = []

        def hook(e: Engine, k: int = k, snaps: list[dict[str, Any]] = snaps) -> None:
            if e.version == k and not snaps:
                snaps.append(roundtrip(e.snapshot()))

        same = make(server, stop, FLAKY, eval=ev, on_step=hook).run()
        assert key(same) == key(full)  # taking a snapshot changes nothing
        assert snaps, f"no step {k}"
        resumed = make(server, stop, FLAKY, eval=ev, snapshot=snaps[0]).run()
        assert key(resumed) == key(full), f"resume at step {k}"
        assert resumed.counts == full.counts and resumed.sim_time == full.sim_time


@pytest.mark.parametrize("server", RESUME_CASES[::2], ids=lambda s: s.mode)
def test_drain_interrupt_and_resume(server: ServerConfig) -> None:
    """The runner's loop: drain records at each checkpoint, stop on request, resume from JSON."""
    stop = StopConfig(server_steps=30)
    full = make(server, stop, FLAKY).run()
    out_events: list[EventRecord] = []
    out_metrics: list[Any] = []
    state: dict[str, Any] = {}

    def hook(e: Engine) -> None:
        if e.version % 4 == 0:
            ev, me = e.drain_records()
            out_events.extend(ev)
            out_metrics.extend(me)
            state["snap"] = roundtrip(e.snapshot())
            assert e.drained == (len(out_events), len(out_metrics))
        if e.version == 17:
            e.request_stop()

    eng = make(server, stop, FLAKY, on_step=hook)
    assert eng.run().stop_reason == "interrupted"
    resumed = make(server, stop, FLAKY, snapshot=state["snap"])
    assert resumed.drained == (len(out_events), len(out_metrics))
    rest = resumed.run()
    assert [repr(e) for e in out_events + rest.events] == key(full)[0]
    assert [repr(m) for m in out_metrics + rest.metrics] == key(full)[1]
    # the interrupted engine itself can also just go on
    eng.on_step = None
    tail = eng.run()
    assert tail.version == full.version and tail.counts == full.counts


def test_snapshot_rejects_other_scenario() -> None:
    eng = make(ServerConfig(mode="async", concurrency=2), StopConfig(server_steps=3))
    eng.run()
    snap = eng.snapshot()
    with pytest.raises(ValueError):
        make(ServerConfig(mode="sync", clients_per_round=2), StopConfig(server_steps=3), snapshot=snap)
    with pytest.raises(ValueError):
        make(ServerConfig(mode="async", concurrency=2), StopConfig(server_steps=3), clients=21, snapshot=snap)


# ------------------------------------------------------------------------------------------------
# layering
# ------------------------------------------------------------------------------------------------


def test_sim_imports_no_torch() -> None:
    code = (
        "import sys; import asyncfl.sim.engine, asyncfl.sim.system, asyncfl.sim.availability, "
        "asyncfl.sim.distributions; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stall_without_sim_time_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every task misses a 0.1 s deadline and only server_steps can stop the run: a clear error
    after STALL_TASKS tasks instead of a hang."""
    import asyncfl.sim.engine as engine_module

    monkeypatch.setattr(engine_module, "STALL_TASKS", 500)
    eng = make(ServerConfig(mode="sync", clients_per_round=5, round_deadline=0.1), StopConfig(server_steps=3))
    with pytest.raises(ScenarioError, match="stop"):
        eng.run()


def test_progress_fraction() -> None:
    seen: list[float] = []
    eng = make(ServerConfig(mode="async", concurrency=3), StopConfig(server_steps=20, sim_time=1e6))
    eng.on_step = lambda e: seen.append(e.progress())
    eng.run()
    assert seen == sorted(seen) and seen[0] == pytest.approx(0.05) and eng.progress() == 1.0


def test_engine_cost_bench_runs() -> None:
    from asyncfl.sim.engine_cost import engine_cost

    for mode in ("async", "buffered", "sync"):
        r = engine_cost(clients=200, concurrency=20, tasks=500, mode=mode)
        assert r["tasks"] >= 500 and r["us_per_task"] > 0


# ------------------------------------------------------------------------------------------------
# certain drops (updates never computed because they will be dropped as stale)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "system,tau,concurrency",
    [
        (HETERO, 0, 10),
        (HETERO, 2, 10),
        (HETERO, 5, 19),
        (FLAKY, 1, 8),
        (twin_system([50.0, 50.0, 100.0, 100.0, 200.0]), 1, 15),
    ],  # equal arrival times: ties
    ids=["hetero-0", "hetero-2", "hetero-5", "flaky-1", "ties-1"],
)
def test_certain_drops_are_all_dropped(system: SystemConfig, tau: int, concurrency: int) -> None:
    """Every task the engine names as a certain drop, at any step, ends ``dropped_stale``; and the
    rule finds most drops long before they arrive."""
    flagged: set[int] = set()

    def probe(engine: Engine) -> None:
        flagged.update(engine.certain_drops())

    server = ServerConfig(mode="async", concurrency=concurrency, max_staleness=tau, staleness_policy="drop")
    r = make(server, StopConfig(server_steps=150), system, on_step=probe).run()
    status = {e.task: e.status for e in r.events}
    assert flagged, "nothing was flagged"
    assert all(status[t] in ("dropped_stale", "in_flight") for t in flagged)
    dropped = {t for t, s in status.items() if s == "dropped_stale"}
    assert len(flagged & dropped) >= 0.5 * len(dropped)


@pytest.mark.parametrize("mode,policy", [("async", "wait"), ("buffered", "drop"), ("sync", "drop")])
def test_certain_drops_only_for_async_drop(mode: Mode, policy: Literal["drop", "wait"]) -> None:
    server = ServerConfig(
        mode=mode, concurrency=10, clients_per_round=10, buffer_size=3, max_staleness=0, staleness_policy=policy
    )
    seen: list[int] = []
    make(server, StopConfig(server_steps=30), on_step=lambda e: seen.extend(e.certain_drops())).run()
    assert seen == []
