"""The discrete-event engine: clients pull model versions, work, upload; the server steps.

Time t is simulated seconds; the server model version V starts at 0 and grows by one per server
step. SimPy's :class:`~simpy.Environment` is the clock and event queue, but the engine is
callback-driven: every piece of state is plain data on the :class:`Engine` (no generator processes),
so :meth:`Engine.snapshot` writes it all as JSON and :meth:`Engine.restore` continues identically.

Semantics
---------
**Task.** At dispatch a client pulls the current version V (its base b; ``backend.dispatch(task,
client, V, counter, due)`` with ``counter`` the client's own task index 0, 1, ...). Its durations
come from :class:`~asyncfl.sim.system.SystemModel`, so its fate is known at once and one event per
task suffices (``due`` tells the backend when the result will be needed: the arrival time, or
infinity for a task that will be lost; a lazy backend computes in that order). It arrives at t0 + download + compute + upload; under dropout it is lost at
t0 + download + compute (``dropped_dropout``); if its client goes off (availability) before the
upload ends it is lost at that off time (``dropped_offline``). Lost tasks are ``backend.discard``-ed.

**Selection.** Idle, available clients are chosen uniformly at random, one draw of the ``selection``
stream per pick (counter = pick index): with on/off availability by rejection from the idle set,
then by a scan; when no idle client is available, a retry is scheduled at the earliest time one
comes on. ``sync`` rounds pick without replacement; if fewer than ``clients_per_round`` clients are
available the round runs with those.

**Same instant.** Events at equal times run in the order they were scheduled. Freed slots (async,
buffered) are refilled, and a new sync round starts, once every event of the current instant has
run, at that same instant. So updates arriving together see each other's server steps, while the
clients dispatched to replace them all pull the version reached at the end of the instant.

**async / buffered.** ``concurrency`` tasks are kept in flight. On arrival the staleness is
tau = V - b. Policy ``drop``: tau > tau_max (``server.max_staleness``) is ``dropped_stale``.
Otherwise the update enters the server buffer with weight s(tau) (:mod:`asyncfl.sim.staleness`); the
server steps when the buffer holds 1 (async) or K = ``buffer_size`` (buffered) updates:
``backend.apply([(task, weight), ...], V + 1, t)`` in arrival order, then V += 1 (each update's
``applied_version``). The buffer only ever holds updates that arrived at the current V, so tau at
arrival is tau at application.

**Policy wait (stale-synchronous).** The server never moves to V + 1 unless V + 1 <= b + tau_max for
every task still in flight with base b. Arrived updates that cannot be applied wait in the buffer;
when the blocking task arrives (or is lost), everything waiting is applied in ONE step (possibly more
than K, or more than 1 in async mode; each update keeps its own weight in it, see
:func:`asyncfl.algorithms.server.step_coefficients`). Nothing is dropped as stale and every staleness is
<= tau_max. With tau_max = 0 a task dispatched while the server is blocked would block it again, so
freed slots stay empty while updates wait and tasks are in flight: the run becomes synchronous
rounds of ``concurrency`` clients.

**sync.** A round dispatches up to ``clients_per_round`` clients, all pulling V. It ends when every
one has arrived or been lost, or at ``round_deadline`` seconds after its start, when the tasks still
running are ``dropped_deadline`` (arrivals at exactly the deadline count; the clients are told to
stop and are idle again). If any update arrived, one step applies them all with weight 1.0 (s(0)).
The next round starts at once; a round lasts as long as its slowest client.

**Stop.** Whichever comes first: ``stop.sim_time`` (events at t > sim_time are not processed; the run
ends at t = sim_time), ``stop.server_steps`` (right after that step), ``stop.client_updates`` (right
after the event at which the server has received that many updates, applied or dropped_stale,
including the step that event triggers). Tasks still running are then recorded ``in_flight``
(arrival NaN, staleness -1), updates still waiting in the buffer ``buffered``; both are discarded.

**Evaluation.** ``backend.evaluate(V, t)`` at t = 0, after every ``eval.every_steps``-th step, at
t = k ``eval.every_time``, and at the end; an evaluation at the same (t, V) as the previous one is
skipped. Each metric becomes a :class:`~asyncfl.sim.records.MetricRecord`.

**Records.** ``events`` holds one :class:`~asyncfl.sim.records.EventRecord` per task in the order the
server learned its fate, by arrival (or loss) time: a buffered update keeps the slot of its arrival
and is filled in when applied. Tasks still in flight at the stop come last, by task id. So
``arrival_time`` never decreases along the list (before the in-flight tail). Lost tasks have
staleness -1 and ``server_version`` = V at the loss; their durations are the sampled ones.

**Errors.** :class:`~asyncfl.errors.DivergedError` from ``backend.apply`` / ``evaluate`` propagates
out of :meth:`Engine.run`; :meth:`Engine.result` still returns the records made so far. Without
``stop.sim_time``, a run in which no update reaches the server for ``STALL_TASKS`` tasks in a row
(everything lost to dropout, availability or the deadline) raises ScenarioError instead of hanging.

Driving it (the runner)
-----------------------
``engine.run()`` returns an :class:`EngineResult`. ``engine.on_step(engine)`` is called after each
event that made a server step, between events, where ``engine.snapshot()`` is valid;
``engine.drain_records()`` hands over the final records so far (write them, then snapshot: the
snapshot keeps only what was not drained, plus the drained counts). ``engine.request_stop()``
(e.g. on SIGTERM) makes ``run()`` return at the next event boundary with stop_reason
``interrupted``; ``Engine.restore(snapshot, <same arguments as the constructor>)`` or a second
``run()`` continues exactly where it left off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heappush
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import simpy
from simpy.events import NORMAL, Event

from asyncfl.config.schema import EvalConfig, Scenario, ServerConfig, StopConfig
from asyncfl.errors import DivergedError, ScenarioError
from asyncfl.rng import bits, stream_key
from asyncfl.sim.availability import Availability, make_availability
from asyncfl.sim.backend import Backend
from asyncfl.sim.idle import IdleSet
from asyncfl.sim.records import EventRecord, MetricRecord
from asyncfl.sim.staleness import WeightFn
from asyncfl.sim.staleness import weight_fn as make_weight_fn
from asyncfl.sim.system import SystemModel

SNAPSHOT_FORMAT = 1

# Event kinds and their payloads: a task's arrival or loss (task id), an evaluation timer (k, due at
# k * eval.every_time), a sync round's deadline (round number), a selection retry (payload unused).
_TASK, _EVAL, _DEADLINE, _RETRY = 0, 1, 2, 3
# What a task's single event means.
_ARRIVE, _LOST_DROPOUT, _LOST_OFFLINE = 0, 1, 2
_LOSS_STATUS = {_LOST_DROPOUT: "dropped_dropout", _LOST_OFFLINE: "dropped_offline"}
_NAN = math.nan
_REJECTION_TRIES = 64  # picks among all idle clients before scanning for available ones
# Without stop.sim_time, this many tasks in a row with no update reaching the server means the run
# can never end (every task lost to dropout, availability or the deadline): a user error, not a hang.
STALL_TASKS = 1_000_000

COUNT_KEYS = (
    "dispatched",
    "client_updates",
    "server_steps",
    "applied",
    "dropped_stale",
    "dropped_offline",
    "dropped_dropout",
    "dropped_deadline",
    "buffered",
    "in_flight",
)


class _Due(Event):
    """A triggered SimPy event due at a fixed time, carrying (kind, payload) as plain data.
    ``callbacks`` may be a shared tuple: SimPy only iterates it, then sets it to None."""

    _ok = True
    _value = None

    def __init__(self, callbacks: Any, kind: int, payload: int) -> None:
        self.callbacks = callbacks
        self.kind = kind
        self.payload = payload


class _Clock(simpy.Environment):
    """SimPy's environment plus scheduling at an absolute time. ``Environment.schedule`` takes a
    delay and adds it to ``now``; a time restored from a snapshot must be exactly the original float,
    which ``now + (t - now)`` is not always, so entries are pushed as SimPy itself pushes them."""

    def at(self, time: float, event: Event) -> None:
        heappush(self._queue, (time, NORMAL, next(self._eid), event))

    def pending(self) -> list[tuple[float, Event]]:
        """Scheduled events in the order SimPy will process them."""
        return [(float(e[0]), e[3]) for e in sorted(self._queue, key=lambda e: (e[0], e[1], e[2]))]


class EngineResult(NamedTuple):
    """What a run produced. ``events`` / ``metrics``: the records not yet taken with
    :meth:`Engine.drain_records`; ``counts``: totals by kind (see ``COUNT_KEYS``); ``version``: final
    server version; ``sim_time``: simulated seconds at the end; ``stop_reason``: ``sim_time``,
    ``server_steps``, ``client_updates``, ``exhausted`` (no event left), ``interrupted``
    (:meth:`Engine.request_stop`; the engine can be snapshotted and resumed), ``diverged``
    (:class:`~asyncfl.errors.DivergedError` left :meth:`Engine.run`) or ``running``."""

    events: list[EventRecord]
    metrics: list[MetricRecord]
    counts: dict[str, int]
    version: int
    sim_time: float
    stop_reason: str


def _enc(x: float) -> float | None:
    """JSON-safe float: NaN and +-inf become None (restored as NaN / inf by the reader)."""
    return None if math.isnan(x) or math.isinf(x) else x


def _dec(x: float | None, missing: float = _NAN) -> float:
    return missing if x is None else float(x)


def _enc_event(r: EventRecord | None) -> list[Any] | None:
    if r is None:
        return None
    return [_enc(v) if isinstance(v, float) else v for v in r]


def _dec_event(v: list[Any] | None) -> EventRecord | None:
    if v is None:
        return None
    (task, client, t0, arr, base, sv, tau, status, w, d, c, u, av, *_) = v  # a 14th (flops) is refilled
    return EventRecord(task, client, _dec(t0), _dec(arr), base, sv, tau, status, _dec(w), _dec(d), _dec(c), _dec(u), av)


class Engine:
    """One simulation of clients and server over simulated time (see the module docstring).

    ``server``, ``stop``, ``eval_cfg``: scenario sections; ``num_clients``: clients.count (must be the
    system model's). ``system``: durations and dropout per task;
    ``availability``: when clients are on; ``backend``: the numeric side. ``seed``: root seed (the
    ``selection`` stream). ``weight_fn``: s(tau), by default from ``server.staleness_weight``.
    ``on_step(engine)``: called after every event that made a server step, at an event boundary,
    where :meth:`snapshot` is valid (the runner checkpoints there).
    """

    def __init__(
        self,
        server: ServerConfig,
        stop: StopConfig,
        eval_cfg: EvalConfig,
        num_clients: int,
        system: SystemModel,
        availability: Availability,
        backend: Backend,
        seed: int,
        weight_fn: WeightFn | None = None,
        on_step: Callable[[Engine], None] | None = None,
    ) -> None:
        if num_clients != system.num_clients:
            raise ValueError(f"num_clients ({num_clients}) differs from the system model's ({system.num_clients})")
        self.server = server
        self.stop = stop
        self.eval_cfg = eval_cfg
        self.system = system
        self.availability = availability
        self.backend = backend
        self.seed = int(seed)
        self.num_clients = int(num_clients)
        self.on_step = on_step
        self._weight = weight_fn if weight_fn is not None else make_weight_fn(server.staleness_weight)

        self._sync = server.mode == "sync"
        self._direct = server.mode == "async"
        self._threshold = server.buffer_size if server.mode == "buffered" else 1
        self._concurrency = server.clients_per_round if self._sync else server.concurrency
        if self._concurrency > self.num_clients:
            what = "clients_per_round" if self._sync else "concurrency"
            raise ScenarioError(f"server.{what}", f"{self._concurrency} exceeds clients.count ({self.num_clients})")
        tau = server.max_staleness
        self._tau_max = math.inf if tau is None else tau
        self._drop = not self._sync and server.staleness_policy == "drop" and tau is not None
        self._wait = not self._sync and server.staleness_policy == "wait" and tau is not None
        self._hold_when_blocked = self._wait and tau == 0
        self._sim_time = math.inf if stop.sim_time is None else float(stop.sim_time)
        deadline = server.round_deadline if self._sync else None
        self._deadline = math.inf if deadline is None else float(deadline)
        self._max_steps = stop.server_steps
        self._max_updates = stop.client_updates
        if system.dropout >= 1.0 and stop.sim_time is None:
            raise ScenarioError(
                "system.dropout", "1.0 loses every update, so only stop.sim_time can end the run; set it"
            )
        self._eval_steps = eval_cfg.every_steps
        self._eval_time = eval_cfg.every_time
        self._always_on = availability.always_on
        self._durations = system.task_durations
        self._sel_key = stream_key(self.seed, "selection", 0)
        self._task_cb = (self._on_task,)
        self._eval_cb = (self._on_eval,)
        self._deadline_cb = (self._on_deadline,)
        self._retry_cb = (self._on_retry,)

        # ---- state (everything below is saved by snapshot) ----
        self._env = _Clock(0.0)
        self._version = 0
        self._next_task = 0
        self._sel_counter = 0
        self._counters: list[int] = [0] * self.num_clients
        self._idle = IdleSet(self.num_clients)
        # task -> (client, counter, dispatch time, base, download, compute, upload, event time, kind)
        self._inflight: dict[int, tuple[int, int, float, int, float, float, float, float, int]] = {}
        # Arrived, not yet applied: (task, client, dispatch, arrival, base, V at arrival, tau, weight,
        # download, compute, upload, absolute index of its slot in the event list).
        self._buffer: list[tuple[int, int, float, float, int, int, int, float, float, float, float, int]] = []
        self._base_count: dict[int, int] = {}  # policy wait: in-flight tasks per base version
        self._min_base = 0
        self._counts = dict.fromkeys(COUNT_KEYS, 0)
        self._round = 0
        self._retry_at: float | None = None
        self._refill_due = False
        self._started = False
        self._stopping: str | None = None
        self._finished = False
        self._end_time = 0.0
        self._last_eval: tuple[float, int] | None = None
        self._events: list[EventRecord | None] = []
        self._metrics: list[MetricRecord] = []
        self._events_drained = 0
        self._metrics_drained = 0
        self._interrupt = False  # requested, not yet acted on
        self._interrupted = False  # the last run() returned on request
        self._diverged = False
        self._progress_at = 0  # tasks dispatched when the last update reached the server

    # ------------------------------------------------------------------------------------------
    # construction helpers
    # ------------------------------------------------------------------------------------------

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario,
        backend: Backend,
        base_dir: Path | str | None = None,
        speed_multiplier: npt.ArrayLike | None = None,
        on_step: Callable[[Engine], None] | None = None,
        snapshot: dict[str, Any] | None = None,
        task_flops: npt.ArrayLike | None = None,
    ) -> Engine:
        """Build the system model, availability and engine a scenario describes (``task_work`` and
        ``model_bytes`` come from the backend, ``task_flops`` from the runner); with
        ``snapshot``, restore that state."""
        system, availability = build_system(scenario, backend, base_dir, speed_multiplier, task_flops)
        n = system.num_clients
        args = (scenario.server, scenario.stop, scenario.eval, n, system, availability, backend, scenario.seed)
        if snapshot is not None:
            return cls.restore(snapshot, *args, on_step=on_step)
        return cls(*args, on_step=on_step)

    # ------------------------------------------------------------------------------------------
    # public surface
    # ------------------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Current simulated time in seconds."""
        return float(self._env.now)

    @property
    def version(self) -> int:
        """Current server model version V."""
        return self._version

    @property
    def counts(self) -> dict[str, int]:
        """Totals so far: dispatched tasks, client_updates received, server_steps, and per status."""
        return dict(self._counts)

    @property
    def finished(self) -> bool:
        return self._finished

    def progress(self) -> float:
        """Fraction in [0, 1] of the way to the first stop criterion (for a progress bar)."""
        fracs = [0.0]
        if self.stop.sim_time is not None:
            fracs.append(self.now / self.stop.sim_time)
        if self._max_steps is not None:
            fracs.append(self._counts["server_steps"] / self._max_steps)
        if self._max_updates is not None:
            fracs.append(self._counts["client_updates"] / self._max_updates)
        return 1.0 if self._finished else min(1.0, max(fracs))

    def request_stop(self) -> None:
        """Ask :meth:`run` to return at the next event boundary (e.g. from a SIGTERM handler), with
        ``stop_reason='interrupted'`` and the state intact for :meth:`snapshot`."""
        self._interrupt = True

    def drain_records(self) -> tuple[list[EventRecord], list[MetricRecord]]:
        """Take the records that are final (events up to the first update still waiting in the
        buffer; all metrics) and forget them; snapshots then hold only the rest."""
        cut = len(self._events)
        if self._buffer:
            cut = self._buffer[0][11] - self._events_drained
        events = self._events[:cut]
        del self._events[:cut]
        self._events_drained += cut
        metrics = self._metrics
        self._metrics = []
        self._metrics_drained += len(metrics)
        return self._with_flops(events), metrics  # type: ignore[arg-type]  # the prefix holds no placeholder

    def _with_flops(self, events: list[EventRecord]) -> list[EventRecord]:
        """The records with their ``flops`` (the system model's per-client task FLOPs)."""
        flops = self.system.task_flops.tolist()
        return [e._replace(flops=flops[e.client]) for e in events]

    @property
    def drained(self) -> tuple[int, int]:
        """(events, metrics) taken so far with :meth:`drain_records`."""
        return self._events_drained, self._metrics_drained

    def result(self) -> EngineResult:
        """The records not yet drained (a waiting update appears as ``buffered``) and totals."""
        events = self._with_flops([r if r is not None else self._waiting_record(i) for i, r in enumerate(self._events)])
        reason = self._stopping or ("diverged" if self._diverged else "interrupted" if self._interrupted else "running")
        t = self._end_time if self._finished else self.now
        return EngineResult(events, list(self._metrics), self.counts, self._version, t, reason)

    def run(self) -> EngineResult:
        """Process events until a stop criterion (or :meth:`request_stop`); finish the records."""
        if self._finished:
            return self.result()
        self._interrupted = False
        env = self._env
        queue = env._queue
        step = env.step
        sim_time = self._sim_time
        on_step = self.on_step
        counts = self._counts
        try:
            if not self._started:
                self._start()
            while True:
                if self._interrupt:
                    self._interrupt = False
                    self._interrupted = True
                    return self.result()
                if self._stopping is not None:
                    break
                if self._refill_due and (not queue or queue[0][0] > env._now):
                    self._refill_due = False
                    self._refill()
                    continue
                if not queue:
                    self._stopping = "exhausted"
                    break
                if queue[0][0] > sim_time:
                    self._stopping = "sim_time"
                    break
                steps = counts["server_steps"]
                step()
                if on_step is not None and counts["server_steps"] != steps:
                    on_step(self)
            self._finish()
        except DivergedError:
            self._diverged = True
            raise
        return self.result()

    # ------------------------------------------------------------------------------------------
    # scheduling and selection
    # ------------------------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        self._evaluate()
        if self._eval_time is not None:
            self._env.at(self._eval_time, _Due(self._eval_cb, _EVAL, 1))
        self._refill_due = True

    def _select(self) -> int:
        """Remove and return a uniformly random idle, available client; -1 if there is none."""
        idle = self._idle
        n = len(idle.items)
        if n == 0:
            return -1
        ctr = self._sel_counter
        self._sel_counter = ctr + 1
        pick = (bits(self._sel_key, ctr) * n) >> 64
        if self._always_on:
            return idle.pop_at(pick)
        now = self._env._now
        is_on = self.availability.is_on
        items = idle.items
        for _ in range(min(_REJECTION_TRIES, n)):
            if is_on(items[pick], now):
                return idle.pop_at(pick)
            ctr = self._sel_counter
            self._sel_counter = ctr + 1
            pick = (bits(self._sel_key, ctr) * n) >> 64
        on = [i for i, c in enumerate(items) if is_on(c, now)]
        if not on:
            return -1
        ctr = self._sel_counter
        self._sel_counter = ctr + 1
        return idle.pop_at(on[(bits(self._sel_key, ctr) * len(on)) >> 64])

    def _schedule_retry(self) -> None:
        """No idle client is available now: try again when the first idle one comes on."""
        if not self._idle.items:
            return
        now = self._env._now
        next_on = self.availability.next_on
        t = min(next_on(c, now) for c in self._idle.items)
        if math.isinf(t):
            return
        if self._retry_at is None or t < self._retry_at:
            self._retry_at = t
            self._env.at(t, _Due(self._retry_cb, _RETRY, 0))

    def _refill(self) -> None:
        """End of an instant: fill free slots (async, buffered) or start a round (sync)."""
        if self._stopping is not None:
            return
        if self._sync:
            self._start_round()
            return
        free = self._concurrency - len(self._inflight)
        if free <= 0 or (self._hold_when_blocked and self._buffer and self._inflight):
            return
        for _ in range(free):
            client = self._select()
            if client < 0:
                self._schedule_retry()
                return
            self._dispatch(client)

    def _start_round(self) -> None:
        if self._inflight:
            return
        dispatched = 0
        for _ in range(self._concurrency):
            client = self._select()
            if client < 0:
                break
            self._dispatch(client)
            dispatched += 1
        if dispatched == 0:
            self._schedule_retry()
            return
        self._round += 1
        deadline = self.server.round_deadline
        if deadline is not None:
            env = self._env
            env.at(env._now + deadline, _Due(self._deadline_cb, _DEADLINE, self._round))

    def _dispatch(self, client: int) -> None:
        """Start the client's next task from the current version; schedule its one event."""
        task = self._next_task
        if task - self._progress_at >= STALL_TASKS and self._sim_time == math.inf:
            raise ScenarioError(
                "stop",
                f"no update reached the server in {STALL_TASKS} tasks (all lost to dropout, availability "
                "or server.round_deadline), so the run can never stop; set stop.sim_time or relax those",
            )
        env = self._env
        now = env._now
        k = self._counters[client]
        self._counters[client] = k + 1
        down, comp, up, dropped = self._durations(client, k)
        self._next_task = task + 1
        version = self._version
        done = now + down + comp
        if dropped:
            t_event, kind = done, _LOST_DROPOUT
        else:
            t_event, kind = done + up, _ARRIVE
        if not self._always_on:
            off = self.availability.next_off(client, now)
            if off < t_event:
                t_event, kind = off, _LOST_OFFLINE
        # When the result will be needed: never for a task that will be lost, that arrives after
        # its sync round's deadline (a round's tasks all start at its start) or after stop.sim_time.
        due = t_event if kind == _ARRIVE and t_event <= min(now + self._deadline, self._sim_time) else math.inf
        self.backend.dispatch(task, client, version, k, due)  # type: ignore[arg-type]
        self._inflight[task] = (client, k, now, version, down, comp, up, t_event, kind)
        self._counts["dispatched"] += 1
        if self._wait:
            if not self._base_count:
                self._min_base = version
            self._base_count[version] = self._base_count.get(version, 0) + 1
        env.at(t_event, _Due(self._task_cb, _TASK, task))

    def certain_drops(self) -> list[int]:
        """In-flight tasks that will certainly arrive staler than tau_max and be dropped (async
        server, policy ``drop``; empty otherwise).

        The known arrivals are replayed in the engine's own order (event time, then dispatch
        order, which is the order of equal-time events): one found staler than tau_max is dropped,
        any other is applied and advances the version by one. The replay is a lower bound on each
        arrival's real staleness: tasks dispatched later can only add server steps before it (an
        extra applied update raises the versions after it by one until the first arrival it tips
        over tau_max, which is then dropped and takes the increment back). So a task found dropped
        here is dropped in the run, and its update need never be computed."""
        if not (self._drop and self._direct):
            return []
        tau = self._tau_max
        v = self._version
        doomed: list[int] = []
        for _, task, base in sorted(
            (info[7], task, info[3]) for task, info in self._inflight.items() if info[8] == _ARRIVE
        ):
            if v - base > tau:
                doomed.append(task)
            else:
                v += 1
        return doomed

    def _release_base(self, base: int) -> None:
        left = self._base_count[base] - 1
        if left:
            self._base_count[base] = left
            return
        del self._base_count[base]
        if self._base_count and base == self._min_base:
            m = base + 1
            while m not in self._base_count:
                m += 1
            self._min_base = m

    # ------------------------------------------------------------------------------------------
    # event handlers
    # ------------------------------------------------------------------------------------------

    def _on_task(self, ev: _Due) -> None:
        task = ev.payload
        info = self._inflight.pop(task, None)
        if info is None:  # stopped at a sync deadline; the event is moot
            return
        client, _, t0, base, down, comp, up, now, kind = info
        self._idle.add(client)
        if self._wait:
            self._release_base(base)
        version = self._version
        counts = self._counts
        if kind == _ARRIVE:
            counts["client_updates"] += 1
            self._progress_at = self._next_task
            tau = version - base
            if self._drop and tau > self._tau_max:
                counts["dropped_stale"] += 1
                self._events.append(
                    EventRecord(task, client, t0, now, base, version, tau, "dropped_stale", _NAN, down, comp, up, -1)
                )
                self.backend.discard(task)
            elif (
                self._direct and not self._buffer and (not self._base_count or self._min_base + self._tau_max > version)
            ):
                # async, nothing waiting, step allowed: apply at once (the common path, kept lean)
                weight = self._weight(tau)
                new = version + 1
                try:
                    self.backend.apply([(task, weight)], new, now)  # type: ignore[arg-type]
                except BaseException:
                    self._events.append(
                        EventRecord(task, client, t0, now, base, version, tau, "buffered", _NAN, down, comp, up, -1)
                    )
                    raise
                self._events.append(
                    EventRecord(task, client, t0, now, base, version, tau, "applied", weight, down, comp, up, new)
                )
                self._stepped(new, 1)
            else:
                weight = 1.0 if self._sync else self._weight(tau)
                slot = self._events_drained + len(self._events)
                self._events.append(None)
                self._buffer.append((task, client, t0, now, base, version, tau, weight, down, comp, up, slot))
        else:
            status = _LOSS_STATUS[kind]
            counts[status] += 1
            self._events.append(EventRecord(task, client, t0, now, base, version, -1, status, _NAN, down, comp, up, -1))  # type: ignore[arg-type]
            self.backend.discard(task)
        if self._sync:
            if not self._inflight:
                self._end_round()
        elif self._buffer and len(self._buffer) >= self._threshold:
            if not self._wait or not self._base_count or self._min_base + self._tau_max >= self._version + 1:
                self._apply()
        if self._max_updates is not None and counts["client_updates"] >= self._max_updates:
            self._stopping = self._stopping or "client_updates"
        if self._stopping is None:
            self._refill_due = True

    def _on_deadline(self, ev: _Due) -> None:
        if ev.payload != self._round or not self._inflight:
            return  # that round already ended
        now = self._env._now
        version = self._version
        for task in sorted(self._inflight):
            client, _, t0, base, down, comp, up, _, _ = self._inflight[task]
            self._events.append(
                EventRecord(task, client, t0, now, base, version, -1, "dropped_deadline", _NAN, down, comp, up, -1)
            )
            self._counts["dropped_deadline"] += 1
            self.backend.discard(task)
            self._idle.add(client)
        self._inflight.clear()
        self._end_round()
        if self._stopping is None:
            self._refill_due = True

    def _end_round(self) -> None:
        if self._buffer:
            self._apply()

    def _on_eval(self, ev: _Due) -> None:
        self._evaluate()
        k = ev.payload + 1
        assert self._eval_time is not None
        self._env.at(k * self._eval_time, _Due(self._eval_cb, _EVAL, k))

    def _on_retry(self, ev: _Due) -> None:
        if self._retry_at is not None and self._env._now >= self._retry_at:
            self._retry_at = None
        if self._stopping is None:
            self._refill_due = True

    # ------------------------------------------------------------------------------------------
    # server step, evaluation, end
    # ------------------------------------------------------------------------------------------

    def _apply(self) -> None:
        """One server step with every update in the buffer."""
        buffer = self._buffer
        self._buffer = []
        new = self._version + 1
        try:
            self.backend.apply([(b[0], b[7]) for b in buffer], new, self._env._now)  # type: ignore[arg-type]
        except BaseException:
            self._buffer = buffer  # the records so far show these as buffered
            raise
        events = self._events
        off = self._events_drained
        for task, client, t0, arr, base, sv, tau, w, down, comp, up, slot in buffer:
            events[slot - off] = EventRecord(task, client, t0, arr, base, sv, tau, "applied", w, down, comp, up, new)
        self._stepped(new, len(buffer))

    def _stepped(self, new: int, applied: int) -> None:
        """Bookkeeping after a server step that produced version ``new`` from ``applied`` updates."""
        self._version = new
        counts = self._counts
        counts["applied"] += applied
        counts["server_steps"] += 1
        if self._eval_steps is not None and new % self._eval_steps == 0:
            self._evaluate()
        if self._max_steps is not None and counts["server_steps"] >= self._max_steps:
            self._stopping = self._stopping or "server_steps"

    def _evaluate(self) -> None:
        now = float(self._env._now) if not self._finished else self._end_time
        key = (now, self._version)
        if self._last_eval == key:
            return
        self._last_eval = key
        updates = self._counts["client_updates"]
        for name, value in self.backend.evaluate(self._version, now).items():  # type: ignore[arg-type]
            self._metrics.append(MetricRecord(now, self._version, updates, name, float(value)))

    def _waiting_record(self, index: int) -> EventRecord:
        slot = index + self._events_drained
        for task, client, t0, arr, base, sv, tau, _, down, comp, up, s in self._buffer:
            if s == slot:
                return EventRecord(task, client, t0, arr, base, sv, tau, "buffered", _NAN, down, comp, up, -1)
        raise AssertionError(f"no buffered update for event slot {slot}")

    def _finish(self) -> None:
        """Record what is still waiting or running, discard it, evaluate at the end."""
        self._end_time = self._sim_time if self._stopping == "sim_time" else float(self._env._now)
        off = self._events_drained
        for b in self._buffer:
            self._events[b[11] - off] = self._waiting_record(b[11] - off)
            self._counts["buffered"] += 1
            self.backend.discard(b[0])
        self._buffer = []
        version = self._version
        for task in sorted(self._inflight):
            client, _, t0, base, down, comp, up, _, _ = self._inflight[task]
            self._events.append(
                EventRecord(task, client, t0, _NAN, base, version, -1, "in_flight", _NAN, down, comp, up, -1)
            )
            self._counts["in_flight"] += 1
            self.backend.discard(task)
        self._inflight.clear()
        self._base_count.clear()
        self._finished = True
        self._evaluate()

    # ------------------------------------------------------------------------------------------
    # checkpoint / resume
    # ------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole engine state as JSON-serialisable plain data (valid between events: in
        ``on_step`` or after :meth:`run` returned). NaN and inf are written as null."""
        pending = []
        for t, ev in self._env.pending():
            assert isinstance(ev, _Due)
            pending.append([t, ev.kind, ev.payload])
        return {
            "format": SNAPSHOT_FORMAT,
            "mode": self.server.mode,
            "num_clients": self.num_clients,
            "now": float(self._env.now),
            "version": self._version,
            "next_task": self._next_task,
            "selection_counter": self._sel_counter,
            "client_counters": list(self._counters),
            "idle": list(self._idle.items),
            "inflight": [[task, *info] for task, info in sorted(self._inflight.items())],
            "pending": pending,
            "buffer": [list(b) for b in self._buffer],
            "counts": dict(self._counts),
            "round": self._round,
            "retry_at": self._retry_at,
            "refill_due": self._refill_due,
            "progress_at": self._progress_at,
            "started": self._started,
            "stopping": self._stopping,
            "finished": self._finished,
            "end_time": self._end_time,
            "last_eval": None if self._last_eval is None else list(self._last_eval),
            "events_drained": self._events_drained,
            "metrics_drained": self._metrics_drained,
            "events": [_enc_event(r) for r in self._events],
            "metrics": [
                [m.sim_time, m.server_version, m.client_updates, m.metric, _enc(m.value)] for m in self._metrics
            ],
        }

    @classmethod
    def restore(
        cls,
        snapshot: dict[str, Any],
        server: ServerConfig,
        stop: StopConfig,
        eval_cfg: EvalConfig,
        num_clients: int,
        system: SystemModel,
        availability: Availability,
        backend: Backend,
        seed: int,
        weight_fn: WeightFn | None = None,
        on_step: Callable[[Engine], None] | None = None,
    ) -> Engine:
        """An engine in the state of ``snapshot`` (from :meth:`snapshot`, built with the same
        scenario); its :meth:`run` continues exactly as the original would have. The backend must
        be restored separately (its pinned versions, model)."""
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown engine snapshot format {snapshot.get('format')!r}")
        engine = cls(server, stop, eval_cfg, num_clients, system, availability, backend, seed, weight_fn, on_step)
        if snapshot["num_clients"] != engine.num_clients or snapshot["mode"] != server.mode:
            raise ValueError("engine snapshot does not match the scenario (clients.count or server.mode)")
        engine._load(snapshot)
        return engine

    def _load(self, s: dict[str, Any]) -> None:
        env = _Clock(initial_time=float(s["now"]))
        self._env = env
        self._version = int(s["version"])
        self._next_task = int(s["next_task"])
        self._sel_counter = int(s["selection_counter"])
        self._counters = [int(c) for c in s["client_counters"]]
        self._idle = IdleSet(self.num_clients, s["idle"])
        self._inflight = {}
        for row in s["inflight"]:
            task, client, k, t0, base, down, comp, up, t_event, kind = row
            self._inflight[int(task)] = (
                client,
                k,
                float(t0),
                base,
                float(down),
                float(comp),
                float(up),
                float(t_event),
                kind,
            )
        self._base_count = {}
        if self._wait:
            for info in self._inflight.values():
                self._base_count[info[3]] = self._base_count.get(info[3], 0) + 1
            self._min_base = min(self._base_count) if self._base_count else 0
        handlers = {_TASK: self._task_cb, _EVAL: self._eval_cb, _DEADLINE: self._deadline_cb, _RETRY: self._retry_cb}
        for t, kind, payload in s["pending"]:
            env.at(float(t), _Due(handlers[int(kind)], int(kind), int(payload)))
        self._buffer = [
            (
                b[0],
                b[1],
                float(b[2]),
                float(b[3]),
                b[4],
                b[5],
                b[6],
                float(b[7]),
                float(b[8]),
                float(b[9]),
                float(b[10]),
                b[11],
            )
            for b in s["buffer"]
        ]
        self._counts = {k: int(s["counts"].get(k, 0)) for k in COUNT_KEYS}
        self._round = int(s["round"])
        self._retry_at = None if s["retry_at"] is None else float(s["retry_at"])
        self._refill_due = bool(s["refill_due"])
        self._progress_at = int(s["progress_at"])
        self._started = bool(s["started"])
        self._stopping = s["stopping"]
        self._finished = bool(s["finished"])
        self._end_time = float(s["end_time"])
        self._last_eval = None if s["last_eval"] is None else (float(s["last_eval"][0]), int(s["last_eval"][1]))
        self._events_drained = int(s["events_drained"])
        self._metrics_drained = int(s["metrics_drained"])
        self._events = [_dec_event(v) for v in s["events"]]
        self._metrics = [MetricRecord(float(t), int(v), int(u), str(m), _dec(x)) for t, v, u, m, x in s["metrics"]]


def build_system(
    scenario: Scenario,
    backend: Backend,
    base_dir: Path | str | None = None,
    speed_multiplier: npt.ArrayLike | None = None,
    task_flops: npt.ArrayLike | None = None,
) -> tuple[SystemModel, Availability]:
    """The system model (task work and model size from the backend; ``task_flops``: FLOPs per task
    per client, counted by the runner) and availability of a scenario."""
    n = scenario.clients.count
    work = np.array([backend.task_work(c) for c in range(n)], dtype=np.float64)  # type: ignore[arg-type]
    system = SystemModel(
        scenario.system, n, scenario.seed, work, backend.model_bytes, speed_multiplier, base_dir, task_flops
    )
    return system, make_availability(scenario.system.availability, n, scenario.seed, base_dir)


__all__ = ["COUNT_KEYS", "Engine", "EngineResult", "build_system"]
