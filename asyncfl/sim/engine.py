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

**Selection.** Idle, available clients are chosen by the ``server.selection`` strategy
(:mod:`asyncfl.sim.selection`; default uniformly at random, one draw of the ``selection`` stream
per pick); when no idle client is available, a retry is scheduled at the earliest time one
comes on. ``sync`` rounds pick without replacement; if fewer than ``clients_per_round`` clients are
available the round runs with those.

**Same instant.** Events at equal times run in the order they were scheduled. Freed slots (async,
buffered) are refilled, and a new sync round starts, once every event of the current instant has
run, at that same instant. So updates arriving together see each other's server steps, while the
clients dispatched to replace them all pull the version reached at the end of the instant.

**async / buffered.** ``concurrency`` tasks are kept in flight. On arrival the staleness is
tau = V - b. The server's rule for arrivals is a :class:`~asyncfl.sim.policy.ServerPolicy`. Policy ``drop``: tau > tau_max (``server.max_staleness``) is ``dropped_stale``.
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
The next round starts at once; a round lasts as long as its slowest client. Under
over-commitment (``server.selection: overcommit``) a round starts ceil(factor K) clients and ends
at its K-th arrival: the tasks still running then are ``dropped_overcommit``.

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
``engine.run()`` returns an :class:`EngineResult`.

Where things are: the task and waiting-update records and the one event-record constructor in
:mod:`asyncfl.sim.tasks`, the arrival rule in :mod:`asyncfl.sim.policy`, client selection in
:mod:`asyncfl.sim.selection`, the SimPy adapter in :mod:`asyncfl.sim.clock`, snapshot / restore in
:mod:`asyncfl.sim.snapshot`. This module is the event handlers. ``engine.on_step(engine)`` is called after each
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
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from asyncfl.config.schema import EvalConfig, Scenario, ServerConfig, StopConfig
from asyncfl.errors import DivergedError, ScenarioError
from asyncfl.sim import snapshot as snap
from asyncfl.sim.availability import Availability, make_availability
from asyncfl.sim.backend import Backend
from asyncfl.sim.clock import Clock, Timer
from asyncfl.sim.policy import ServerPolicy
from asyncfl.sim.records import COUNT_KEYS, EventRecord, MetricRecord, TaskStatus
from asyncfl.sim.selection import Selector, make_selector
from asyncfl.sim.system import SystemModel
from asyncfl.sim.tasks import (
    ARRIVE,
    LOSS_STATUS,
    LOST_DROPOUT,
    LOST_OFFLINE,
    NAN,
    Task,
    Waiting,
    as_time,
    as_version,
    event,
    new_record,
)
from asyncfl.types import ClientId, ModelVersion, SimTime

SNAPSHOT_FORMAT = snap.FORMAT

# Event kinds and their payloads: a task's arrival or loss (task id), an evaluation timer (k, due at
# k * eval.every_time), a sync round's deadline (round number), a selection retry (payload unused).
TASK, EVAL, DEADLINE, RETRY = 0, 1, 2, 3
# Without stop.sim_time, this many tasks in a row with no update reaching the server means the run
# can never end (every task lost to dropout, availability or the deadline): a user error, not a hang.
STALL_TASKS = 1_000_000


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


class Engine:
    """One simulation of clients and server over simulated time (see the module docstring).

    ``server``, ``stop``, ``eval_cfg``: scenario sections; ``num_clients``: clients.count (must be the
    system model's). ``system``: durations and dropout per task;
    ``availability``: when clients are on; ``backend``: the numeric side. ``seed``: root seed (the
    ``selection`` stream). ``policy``: the server's rule for arrivals, by default
    ``ServerPolicy.from_config(server)`` (runs pass the one of :func:`asyncfl.runs.server_rule.server_rule`).
    ``on_step(engine)``: called after every event that made a server step, at an event boundary,
    where :meth:`snapshot` is valid (the runner checkpoints there). ``train_sizes``: the clients'
    training-set sizes, for selection strategies that use them.
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
        policy: ServerPolicy | None = None,
        on_step: Callable[[Engine], None] | None = None,
        train_sizes: npt.ArrayLike | None = None,
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
        self.policy = p = policy if policy is not None else ServerPolicy.from_config(server)
        if p.mode != server.mode:
            raise ValueError(f"the policy is for mode {p.mode!r}, the scenario's server.mode is {server.mode!r}")

        self._sync = p.sync
        self._direct = p.direct
        self._weigh = p.weigh
        self._tau_max = p.tau_max
        self._k = p.buffer_size
        self._wait = p.wait
        self._hold_when_blocked = p.hold_when_blocked
        self._concurrency = server.clients_per_round if self._sync else server.concurrency
        if self._concurrency > self.num_clients:
            what = "clients_per_round" if self._sync else "concurrency"
            raise ScenarioError(f"server.{what}", f"{self._concurrency} exceeds clients.count ({self.num_clients})")
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
        self._flops: list[float] = system.task_flops.tolist()  # per client: each record's flops
        # One handler per event kind; a task's event has one handler per server mode.
        self._task_cb = (self._on_task_sync if self._sync else self._on_task,)
        self._eval_cb = (self._on_eval,)
        self._deadline_cb = (self._on_deadline,)
        self._retry_cb = (self._on_retry,)
        self.handlers = {TASK: self._task_cb, EVAL: self._eval_cb, DEADLINE: self._deadline_cb, RETRY: self._retry_cb}

        # ---- state (everything below is saved by snapshot) ----
        self._clock = Clock(0.0)
        self._selector: Selector = make_selector(server, self.seed, availability, system, train_sizes)
        self._version = ModelVersion(0)
        self._next_task = 0
        self._counters: list[int] = [0] * self.num_clients
        self._idle = self._selector.idle_set(self.num_clients)
        self._inflight: dict[int, Task] = {}  # task id -> its record
        self._buffer: list[Waiting] = []  # arrived, not yet applied, in arrival order
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
        self._events: list[EventRecord | None] = []  # None: the slot of an update still waiting
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
        policy: ServerPolicy | None = None,
        train_sizes: npt.ArrayLike | None = None,
        task_flops: npt.ArrayLike | None = None,
    ) -> Engine:
        """Build the system model, availability and engine a scenario describes (``task_work`` and
        ``model_bytes`` come from the backend, ``task_flops`` from the runner); with
        ``snapshot``, restore that state."""
        system, availability = build_system(scenario, backend, base_dir, speed_multiplier, task_flops)
        n = system.num_clients
        args = (scenario.server, scenario.stop, scenario.eval, n, system, availability, backend, scenario.seed)
        if snapshot is not None:
            return cls.restore(snapshot, *args, policy=policy, on_step=on_step, train_sizes=train_sizes)
        return cls(*args, policy=policy, on_step=on_step, train_sizes=train_sizes)

    # ------------------------------------------------------------------------------------------
    # public surface
    # ------------------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Current simulated time in seconds."""
        return float(self._clock.now)

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
            cut = self._buffer[0].slot - self._events_drained
        events = [r for r in self._events[:cut] if r is not None]  # the prefix holds no placeholder
        del self._events[:cut]
        self._events_drained += cut
        metrics = self._metrics
        self._metrics = []
        self._metrics_drained += len(metrics)
        return events, metrics

    @property
    def drained(self) -> tuple[int, int]:
        """(events, metrics) taken so far with :meth:`drain_records`."""
        return self._events_drained, self._metrics_drained

    def result(self) -> EngineResult:
        """The records not yet drained (a waiting update appears as ``buffered``) and totals."""
        events = [r if r is not None else self._waiting_record(i) for i, r in enumerate(self._events)]
        reason = self._stopping or ("diverged" if self._diverged else "interrupted" if self._interrupted else "running")
        t = self._end_time if self._finished else self.now
        return EngineResult(events, list(self._metrics), self.counts, self._version, t, reason)

    def run(self) -> EngineResult:
        """Process events until a stop criterion (or :meth:`request_stop`); finish the records."""
        if self._finished:
            return self.result()
        self._interrupted = False
        clock = self._clock
        queue = clock.queue
        step = clock.step
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
                if self._refill_due and (not queue or queue[0][0] > clock.now):
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
    # scheduling and dispatch
    # ------------------------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        self._evaluate()
        if self._eval_time is not None:
            self._clock.at(self._eval_time, Timer(self._eval_cb, EVAL, 1))
        self._refill_due = True

    def _schedule_retry(self) -> None:
        """No idle client is available now: try again when the first idle one comes on."""
        if not self._idle.items:
            return
        now = self._clock.now
        next_on = self.availability.next_on
        t = min(next_on(c, now) for c in self._idle.items)
        if math.isinf(t):
            return
        if self._retry_at is None or t < self._retry_at:
            self._retry_at = t
            self._clock.at(t, Timer(self._retry_cb, RETRY, 0))

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
        pick = self._selector.pick
        idle = self._idle
        now = self._clock.now
        for _ in range(free):
            client = pick(idle, now)
            if client is None:
                self._schedule_retry()
                return
            self._dispatch(client, now)

    def _start_round(self) -> None:
        if self._inflight:
            return
        dispatched = 0
        now = self._clock.now
        for _ in range(self._selector.round_size(self._concurrency)):
            client = self._selector.pick(self._idle, now)
            if client is None:
                break
            self._dispatch(client, now)
            dispatched += 1
        if dispatched == 0:
            self._schedule_retry()
            return
        self._round += 1
        deadline = self.server.round_deadline
        if deadline is not None:
            clock = self._clock
            clock.at(clock.now + deadline, Timer(self._deadline_cb, DEADLINE, self._round))

    def _dispatch(self, client: ClientId, now: float) -> None:
        """Start the client's next task from the current version at ``now``; schedule its one event."""
        task = self._next_task
        if task - self._progress_at >= STALL_TASKS and self._sim_time == math.inf:
            raise ScenarioError(
                "stop",
                f"no update reached the server in {STALL_TASKS} tasks (all lost to dropout, availability "
                "or server.round_deadline), so the run can never stop; set stop.sim_time or relax those",
            )
        k = self._counters[client]
        self._counters[client] = k + 1
        down, comp, up, dropped = self._durations(client, k)
        self._next_task = task + 1
        version = self._version
        done = now + down + comp
        if dropped:
            t_event, fate = done, LOST_DROPOUT
        else:
            t_event, fate = done + up, ARRIVE
        if not self._always_on:
            off = self.availability.next_off(client, now)
            if off < t_event:
                t_event, fate = off, LOST_OFFLINE
        # When the result will be needed: never for a task that will be lost, that arrives after
        # its sync round's deadline (a round's tasks all start at its start) or after stop.sim_time.
        due = t_event if fate == ARRIVE and t_event <= self._sim_time and t_event <= now + self._deadline else math.inf
        self.backend.dispatch(task, client, version, k, as_time(due))
        self._inflight[task] = new_record(Task, (client, k, now, version, down, comp, up, t_event, fate))
        self._counts["dispatched"] += 1
        if self._wait:
            if not self._base_count:
                self._min_base = version
            self._base_count[version] = self._base_count.get(version, 0) + 1
        self._clock.at(t_event, Timer(self._task_cb, TASK, task))

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
        if not (self.policy.drop and self._direct):
            return []
        tau = self._tau_max
        v: int = self._version
        doomed: list[int] = []
        for _, task, base in sorted(
            (t.event_time, task, t.base) for task, t in self._inflight.items() if t.fate == ARRIVE
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

    def _oldest_base(self) -> int | None:
        """Policy wait: the smallest base version among the tasks in flight (None if none)."""
        return self._min_base if self._base_count else None

    # ------------------------------------------------------------------------------------------
    # event handlers
    # ------------------------------------------------------------------------------------------

    def _on_task(self, ev: Timer) -> None:
        """async / buffered: a task arrives (or is lost); the policy decides what becomes of it."""
        task = ev.payload
        t = self._inflight.pop(task, None)
        if t is None:  # cannot happen outside sync rounds; kept as the sync handler's guard
            return
        client, _, t0, base, down, comp, up, now, fate = t  # one unpack: the hot path
        self._idle.add(client)
        if self._wait:
            self._release_base(base)
        counts = self._counts
        flops = self._flops
        if fate == ARRIVE:
            counts["client_updates"] += 1
            self._progress_at = self._next_task
            version = self._version
            tau = version - base
            weight = self._weigh(tau)
            if weight is None:
                counts["dropped_stale"] += 1
                self._events.append(event(task, t, flops[client], now, version, tau, "dropped_stale"))
                self.backend.discard(task)
            elif (
                self._direct and not self._buffer and (not self._base_count or self._min_base + self._tau_max > version)
            ):
                # async, nothing waiting, step allowed: apply at once (the common path, kept lean)
                new = as_version(version + 1)
                try:
                    self.backend.apply([(task, weight)], new, now)
                except BaseException:
                    self._events.append(event(task, t, flops[client], now, version, tau, "buffered"))
                    raise
                self._events.append(event(task, t, flops[client], now, version, tau, "applied", weight, new))
                self._stepped(new, 1)
            else:  # into the buffer (as _hold does, inlined); its event row is filled in when applied
                slot = self._events_drained + len(self._events)
                self._events.append(None)
                w = (task, client, t0, now, base, version, tau, weight, down, comp, up, slot)
                self._buffer.append(new_record(Waiting, w))
        else:
            self._lose(task, t)
        # K waiting updates (policy.buffer_size) make a step, if the policy allows it
        if self._buffer and len(self._buffer) >= self._k:
            if not self._wait or self.policy.step_allowed(self._version, self._oldest_base()):
                self._apply()
        if self._max_updates is not None and counts["client_updates"] >= self._max_updates:
            self._stopping = self._stopping or "client_updates"
        if self._stopping is None:
            self._refill_due = True

    def _on_task_sync(self, ev: Timer) -> None:
        """sync: a round's task arrives (or is lost); the round ends when none is left in flight."""
        task = ev.payload
        t = self._inflight.pop(task, None)
        if t is None:  # stopped at the round's deadline; the event is moot
            return
        self._idle.add(t.client)
        if t.fate == ARRIVE:
            self._counts["client_updates"] += 1
            self._progress_at = self._next_task
            tau = self._version - t.base
            self._hold(task, t, self._version, tau, 1.0)  # a round's updates all pulled its start version
            keep = self._selector.keep(self._concurrency)
            if keep is not None and len(self._buffer) >= keep and self._inflight:
                self._cut_round("dropped_overcommit")  # over-commitment: the first K arrivals are kept
        else:
            self._lose(task, t)
        if not self._inflight:
            self._end_round()
        self._after_task()

    def _after_task(self) -> None:
        if self._max_updates is not None and self._counts["client_updates"] >= self._max_updates:
            self._stopping = self._stopping or "client_updates"
        if self._stopping is None:
            self._refill_due = True

    def _hold(self, task: int, t: Task, version: ModelVersion, tau: int, weight: float) -> None:
        """Put an arrived update in the server buffer; its event row is filled in when applied."""
        slot = self._events_drained + len(self._events)
        self._events.append(None)
        w = (
            task,
            t.client,
            t.dispatch_time,
            t.event_time,
            t.base,
            version,
            tau,
            weight,
            t.download,
            t.compute,
            t.upload,
            slot,
        )
        self._buffer.append(new_record(Waiting, w))

    def _lose(self, task: int, t: Task) -> None:
        """A task lost to dropout or availability: recorded, its result discarded."""
        status = LOSS_STATUS[t.fate]
        self._counts[status] += 1
        self._events.append(event(task, t, self._flops[t.client], t.event_time, self._version, -1, status))
        self.backend.discard(task)

    def _cut_round(self, status: TaskStatus) -> None:
        """End the current sync round's tasks still in flight with ``status`` (the deadline, or
        enough arrivals under over-commitment); their clients are idle again."""
        now = self._clock.now
        version = self._version
        for task in sorted(self._inflight):
            t = self._inflight[task]
            self._events.append(event(task, t, self._flops[t.client], now, version, -1, status))
            self._counts[status] += 1
            self.backend.discard(task)
            self._idle.add(t.client)
        self._inflight.clear()

    def _on_deadline(self, ev: Timer) -> None:
        if ev.payload != self._round or not self._inflight:
            return  # that round already ended
        self._cut_round("dropped_deadline")
        self._end_round()
        if self._stopping is None:
            self._refill_due = True

    def _end_round(self) -> None:
        if self._buffer:
            self._apply()

    def _on_eval(self, ev: Timer) -> None:
        self._evaluate()
        k = ev.payload + 1
        assert self._eval_time is not None
        self._clock.at(k * self._eval_time, Timer(self._eval_cb, EVAL, k))

    def _on_retry(self, ev: Timer) -> None:
        if self._retry_at is not None and self._clock.now >= self._retry_at:
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
        new = as_version(self._version + 1)
        try:
            self.backend.apply([(w.task, w.weight) for w in buffer], new, SimTime(self._clock.now))
        except BaseException:
            self._buffer = buffer  # the records so far show these as buffered
            raise
        events = self._events
        off = self._events_drained
        flops = self._flops
        for w in buffer:
            task, client, _, arrival, _, version, tau, weight, _, _, _, slot = w
            events[slot - off] = event(task, w, flops[client], arrival, version, tau, "applied", weight, new)
        self._stepped(new, len(buffer))

    def _stepped(self, new: ModelVersion, applied: int) -> None:
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
        now = float(self._clock.now) if not self._finished else self._end_time
        key = (now, self._version)
        if self._last_eval == key:
            return
        self._last_eval = key
        updates = self._counts["client_updates"]
        for name, value in self.backend.evaluate(self._version, SimTime(now)).items():
            self._metrics.append(MetricRecord(now, self._version, updates, name, float(value)))

    def _waiting_record(self, index: int) -> EventRecord:
        slot = index + self._events_drained
        for w in self._buffer:
            if w.slot == slot:
                return event(w.task, w, self._flops[w.client], w.arrival, w.version, w.staleness, "buffered")
        raise AssertionError(f"no buffered update for event slot {slot}")

    def _finish(self) -> None:
        """Record what is still waiting or running, discard it, evaluate at the end."""
        self._end_time = self._sim_time if self._stopping == "sim_time" else float(self._clock.now)
        off = self._events_drained
        for w in self._buffer:
            self._events[w.slot - off] = self._waiting_record(w.slot - off)
            self._counts["buffered"] += 1
            self.backend.discard(w.task)
        self._buffer = []
        version = self._version
        for task in sorted(self._inflight):
            t = self._inflight[task]
            self._events.append(event(task, t, self._flops[t.client], NAN, version, -1, "in_flight"))
            self._counts["in_flight"] += 1
            self.backend.discard(task)
        self._inflight.clear()
        self._base_count.clear()
        self._finished = True
        self._evaluate()

    # ------------------------------------------------------------------------------------------
    # checkpoint / resume (asyncfl.sim.snapshot)
    # ------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole engine state as JSON-serialisable plain data (valid between events: in
        ``on_step`` or after :meth:`run` returned). NaN and inf are written as null."""
        return snap.dump(self)

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
        policy: ServerPolicy | None = None,
        on_step: Callable[[Engine], None] | None = None,
        train_sizes: npt.ArrayLike | None = None,
    ) -> Engine:
        """An engine in the state of ``snapshot`` (from :meth:`snapshot`, built with the same
        scenario); its :meth:`run` continues exactly as the original would have. The backend must
        be restored separately (its pinned versions, model)."""
        snap.check(snapshot)
        engine = cls(
            server, stop, eval_cfg, num_clients, system, availability, backend, seed, policy, on_step, train_sizes
        )
        if snapshot["num_clients"] != engine.num_clients or snapshot["mode"] != server.mode:
            raise ValueError("engine snapshot does not match the scenario (clients.count or server.mode)")
        snap.load(engine, snapshot)
        return engine


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
    work = np.array([backend.task_work(ClientId(c)) for c in range(n)], dtype=np.float64)
    system = SystemModel(
        scenario.system, n, scenario.seed, work, backend.model_bytes, speed_multiplier, base_dir, task_flops
    )
    return system, make_availability(scenario.system.availability, n, scenario.seed, base_dir)


__all__ = ["COUNT_KEYS", "Engine", "EngineResult", "build_system"]
