"""Client selection: which idle, available client the server starts next (``server.selection``).

A strategy removes and returns one client from the :class:`~asyncfl.sim.idle.IdleSet` (or None
when no idle client is available now; the engine then retries when one comes on). Every random
draw is from the counter-based ``selection`` stream (:mod:`asyncfl.rng`), one counter per draw, so
a run and its resumed twin pick the same clients; the strategy's state (its counter and any
history) is saved in engine snapshots.

- ``uniform``: uniformly at random (the default; the engine's original rule, draw for draw).
- ``least_recent``: the client picked least recently (round-robin when all are always on).
- ``data_size``: at random, P(k) proportional to the training-set size n_k.
- ``overcommit``: FedScale's over-commitment (Lai et al. 2021): a sync round starts ceil(factor K)
  clients and keeps the first K arrivals; picks at random with P(k) proportional to
  (1 / E[task time of k])^speed_exponent.

Picks cost O(log N) for every built-in strategy: ``data_size`` and
``overcommit`` (:class:`Weighted`) and ``least_recent`` keep an index of the idle clients in the
engine's idle set (:meth:`Uniform.idle_set`), where a scan would cost O(N) a task (~1 ms at
10,000 clients); with on/off availability they draw by rejection, and ``least_recent`` lets a
client found off sleep out of its index until it is next on.

Adding a strategy: its config class in :mod:`asyncfl.config.schema` (a subclass of
``SelectionBase`` listed in ``SELECTION_UNION.register``), a class here with ``pick``,
``round_size``, ``keep``, ``state`` and ``load`` (subclass :class:`Uniform` for the defaults), and
one line ``STRATEGIES.add(name, cls)``. A schema member without its class (or the reverse) fails
when this module is imported; a plug-in (entry-point group ``asyncfl.selection``) brings both.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from asyncfl.config.schema import (
    SELECTION_CONFIGS,
    LeastRecentSelection,
    OvercommitSelection,
    ServerConfig,
)
from asyncfl.errors import ScenarioError
from asyncfl.registry import Registry
from asyncfl.rng import Draws, stream_key
from asyncfl.sim.availability import Availability
from asyncfl.sim.fenwick import Fenwick
from asyncfl.sim.idle import IdleSet
from asyncfl.sim.system import SystemModel
from asyncfl.types import ClientId

REJECTION_TRIES = 64  # picks among all idle clients before scanning for available ones
WEIGHT_SCALE = 2**24
"""Real-valued selection weights are picked as integers W_k = round(WEIGHT_SCALE w_k / max w):
fine enough (relative 2^-25 at the largest weight), and small enough that ``below(counter, sum W)``
stays unbiased to ~N 2^-40 for N clients."""


class Context(NamedTuple):
    """What strategies may use: the root ``seed``, ``availability``, the ``system`` model
    (expected task times) and the clients' ``train_sizes`` (None where unknown)."""

    seed: int
    availability: Availability
    system: SystemModel
    train_sizes: npt.NDArray[np.float64] | None


class Selector(Protocol):
    """What the engine asks of a selection strategy."""

    def pick(self, idle: IdleSet, now: float) -> ClientId | None:
        """Remove and return an idle client that is available at ``now``; None if there is none."""
        ...

    def round_size(self, k: int) -> int:
        """Clients to start for a sync round that needs ``k`` (over-commitment starts more)."""
        ...

    def keep(self, k: int) -> int | None:
        """A sync round ends after this many arrivals (None: when all its tasks are done)."""
        ...

    def state(self) -> dict[str, Any]:
        """Snapshot keys (JSON-native)."""
        ...

    def load(self, state: dict[str, Any]) -> None:
        """Restore from a snapshot holding :meth:`state`'s keys."""
        ...

    def idle_set(self, num_clients: int, items: Iterable[int] | None = None) -> IdleSet:
        """The engine's idle set (the strategy may keep an index in a subclass)."""
        ...


class Uniform:
    """Uniformly at random among idle, available clients: one draw of the ``selection`` stream
    per pick (counter = pick index); with on/off availability by rejection from the idle set
    (up to :data:`REJECTION_TRIES` draws), then one draw among a scan of the available ones."""

    name = "uniform"

    def __init__(self, cfg: Any, ctx: Context) -> None:
        self.cfg = cfg
        self.key = stream_key(ctx.seed, "selection", 0)
        self.draws = Draws(self.key)
        self.counter = 0
        self.availability = ctx.availability
        self.always_on = ctx.availability.always_on

    def _draw(self, n: int) -> int:
        ctr = self.counter
        self.counter = ctr + 1
        return self.draws.below(ctr, n)

    def pick(self, idle: IdleSet, now: float) -> ClientId | None:
        n = len(idle.items)
        if n == 0:
            return None
        ctr = self.counter  # _draw, inlined on the hot path
        self.counter = ctr + 1
        pick = self.draws.below(ctr, n)
        if self.always_on:
            return idle.pop_at(pick)
        is_on = self.availability.is_on
        items = idle.items
        for _ in range(min(REJECTION_TRIES, n)):
            if is_on(items[pick], now):
                return idle.pop_at(pick)
            pick = self._draw(n)
        on = [i for i, c in enumerate(items) if is_on(c, now)]
        if not on:
            return None
        return idle.pop_at(on[self._draw(len(on))])

    def round_size(self, k: int) -> int:
        return k

    def keep(self, k: int) -> int | None:
        return None

    def state(self) -> dict[str, Any]:
        return {"selection_counter": self.counter}

    def load(self, state: dict[str, Any]) -> None:
        self.counter = int(state["selection_counter"])

    # -- for the other strategies -------------------------------------------------------------
    def available(self, idle: IdleSet, now: float) -> list[int]:
        """Indices into ``idle.items`` of the clients available at ``now``."""
        items = idle.items
        if self.always_on:
            return list(range(len(items)))
        is_on = self.availability.is_on
        return [i for i, c in enumerate(items) if is_on(c, now)]

    def idle_set(self, num_clients: int, items: Iterable[int] | None = None) -> IdleSet:
        """The engine's set of idle clients (all of them at first; ``items`` when restored from a
        snapshot). A strategy that keeps its own index of the idle clients returns an
        :class:`IdleSet` subclass that updates it; the engine creates the set only through here."""
        return IdleSet(num_clients, items)


class _WeightedIdle(IdleSet):
    """The idle set plus a :class:`Fenwick` tree of its clients' integer weights (0 while busy)."""

    __slots__ = ("tree", "weights")

    def __init__(self, num_clients: int, items: Iterable[int] | None, weights: list[int]) -> None:
        super().__init__(num_clients, items)
        self.weights = weights
        self.tree = Fenwick.of([weights[c] if self.pos[c] >= 0 else 0 for c in range(num_clients)])

    def add(self, client: ClientId) -> None:
        super().add(client)
        self.tree.add(client, self.weights[client])

    def pop_at(self, index: int) -> ClientId:
        client = super().pop_at(index)
        self.tree.add(client, -self.weights[client])
        return client


class Weighted(Uniform):
    """At random among idle, available clients with P(k) proportional to an integer weight W_k
    (:meth:`weights`; clients of weight 0 never): u = ``below(counter, sum of W)`` (one draw of
    the stream), and the client whose interval of the cumulative weights (in client-id order)
    holds u, found in O(log N) on a Fenwick tree of the idle clients' weights. With on/off
    availability, by rejection (up to :data:`REJECTION_TRIES` draws), then one draw among the
    available ones (scanned in client-id order). Integer weights keep the sums exact, so a
    restored run's tree picks as the original's did."""

    def __init__(self, cfg: Any, ctx: Context) -> None:
        super().__init__(cfg, ctx)
        self.int_weights = self.weights(ctx)

    def weights(self, ctx: Context) -> list[int]:
        """W_k >= 0 per client."""
        raise NotImplementedError

    def idle_set(self, num_clients: int, items: Iterable[int] | None = None) -> IdleSet:
        return _WeightedIdle(num_clients, items, self.int_weights)

    def pick(self, idle: IdleSet, now: float) -> ClientId | None:
        assert isinstance(idle, _WeightedIdle), "the engine makes its idle set with idle_set()"
        tree = idle.tree
        if tree.total == 0:
            return None
        if self.always_on:
            return idle.pop_at(idle.pos[tree.find(self._draw(tree.total))])
        is_on = self.availability.is_on
        for _ in range(REJECTION_TRIES):
            client = tree.find(self._draw(tree.total))
            if is_on(client, now):
                return idle.pop_at(idle.pos[client])
        w = self.int_weights
        on = sorted(c for c in idle.items if w[c] > 0 and is_on(c, now))
        if not on:
            return None
        u = self._draw(sum(w[c] for c in on))
        for client in on:
            u -= w[client]
            if u < 0:
                return idle.pop_at(idle.pos[client])
        raise AssertionError("u < the sum of the weights")  # pragma: no cover


class _LeastRecentIdle(IdleSet):
    """The idle set plus what least-recent picks need in O(log N): a :class:`Fenwick` count of
    the never-picked clients (all idle) by id, and a heap of (last pick, client) of the others,
    pushed when a client becomes idle (an entry whose client is busy again, or was picked since,
    is skipped when it comes up). With on/off availability a client found off sleeps until it is
    next on: a never-picked one in ``never_asleep`` (out of the count tree, whose draws depend on
    it: snapshot state), another in ``sleeping`` (out of the heap; no draw depends on it)."""

    __slots__ = ("heap", "last", "never", "never_asleep", "sleeping")

    def __init__(self, num_clients: int, items: Iterable[int] | None, last: list[int]) -> None:
        super().__init__(num_clients, items)
        self.index(last)

    def index(self, last: list[int], never_asleep: Iterable[tuple[float, int]] = ()) -> None:
        """(Re)build the index from the idle clients, ``last`` and the never-picked clients
        asleep (a restored snapshot's)."""
        self.last = last
        self.never_asleep: list[tuple[float, int]] = [(float(t), int(c)) for t, c in never_asleep]
        heapq.heapify(self.never_asleep)
        asleep = {c for _, c in self.never_asleep}
        self.never = Fenwick.of(
            [1 if self.pos[c] >= 0 and last[c] < 0 and c not in asleep else 0 for c in range(len(last))]
        )
        self.heap: list[tuple[int, int]] = [(last[c], c) for c in self.items if last[c] >= 0]
        heapq.heapify(self.heap)
        self.sleeping: list[tuple[float, int, int]] = []  # (next on, last pick, client)

    def add(self, client: ClientId) -> None:
        super().add(client)
        if self.last[client] >= 0:
            heapq.heappush(self.heap, (self.last[client], client))
        else:
            self.never.add(client, 1)

    def pop_at(self, index: int) -> ClientId:
        client = super().pop_at(index)
        if self.last[client] < 0:
            self.never.add(client, -1)
        return client


class LeastRecent(Uniform):
    """The available idle client whose last pick is the oldest (never picked: oldest of all);
    ties (only among never-picked clients) uniformly at random. ``last[k]``: the pick number of
    k's last pick, -1 if never; both are snapshot state. A pick is O(log N) on an index kept with
    the idle set (a count tree of the never-picked clients, a heap of the others by last pick).

    All clients always on: the tie is the one at index ``below(counter, ties)`` of the ties in
    client-id order (no draw for a single tie). With on/off availability: a never-picked client
    by rejection (one at index ``below(counter, m)`` of the m never-picked clients not known to be
    off, in client-id order, kept if it is on; one found off sleeps until it is next on, which
    snapshots keep), else the oldest idle client that is on."""

    name = "least_recent"

    def __init__(self, cfg: LeastRecentSelection, ctx: Context) -> None:
        super().__init__(cfg, ctx)
        self.last = [-1] * ctx.system.num_clients
        self.picks = 0
        self._idle: _LeastRecentIdle | None = None

    def idle_set(self, num_clients: int, items: Iterable[int] | None = None) -> IdleSet:
        self._idle = _LeastRecentIdle(num_clients, items, self.last)
        return self._idle

    def pick(self, idle: IdleSet, now: float) -> ClientId | None:
        if not idle.items:
            return None
        assert isinstance(idle, _LeastRecentIdle), "the engine makes its idle set with idle_set()"
        client: ClientId | None
        if self.always_on:
            client = self._oldest_always_on(idle)
        else:
            client = self._oldest_on(idle, now)
            if client is None:
                return None
        idle.pop_at(idle.pos[client])
        self.last[client] = self.picks
        self.picks += 1
        return client

    def _oldest_always_on(self, idle: _LeastRecentIdle) -> ClientId:
        m = idle.never.total
        if m:
            return ClientId(idle.never.find(0 if m == 1 else self._draw(m)))
        heap, pos, last = idle.heap, idle.pos, self.last
        while True:  # the idle clients are all in the heap: this ends at the first valid entry
            when, client = heapq.heappop(heap)
            if pos[client] >= 0 and last[client] == when:
                return ClientId(client)

    def _oldest_on(self, idle: _LeastRecentIdle, now: float) -> ClientId | None:
        is_on, next_on = self.availability.is_on, self.availability.next_on
        never, last = idle.never, self.last
        # A never-picked client that is on, uniformly: draw among those not asleep; one found off
        # sleeps until it is next on (it is off the whole time in between) and the draw is redone.
        asleep = idle.never_asleep
        while asleep and asleep[0][0] <= now:
            never.add(heapq.heappop(asleep)[1], 1)
        while never.total:
            m = never.total
            client = ClientId(never.find(self._draw(m) if m > 1 else 0))
            if is_on(client, now):
                return client
            never.add(client, -1)
            wake = next_on(client, now)
            if wake < math.inf:  # never on again: never eligible
                heapq.heappush(asleep, (wake, client))
        # The oldest idle client that is on. One found off sleeps until it is next on (it is off
        # the whole time in between), so it is not passed over again at every pick; the answer is
        # the same whatever sleeps (a restored run starts with none asleep and picks alike).
        heap, pos, sleeping = idle.heap, idle.pos, idle.sleeping
        while sleeping and sleeping[0][0] <= now:
            _, when, c = heapq.heappop(sleeping)
            heapq.heappush(heap, (when, c))
        while heap:
            when, c = heapq.heappop(heap)
            if pos[c] < 0 or last[c] != when:
                continue  # picked since (or busy): its current entry, if any, is elsewhere
            if is_on(c, now):
                return ClientId(c)
            wake = next_on(c, now)
            if wake < math.inf:  # never on again: never eligible, its entry goes
                heapq.heappush(sleeping, (wake, when, c))
        return None

    def state(self) -> dict[str, Any]:
        asleep = [] if self._idle is None else sorted([t, c] for t, c in self._idle.never_asleep)
        return {
            "selection_counter": self.counter,
            "selection": {"last": list(self.last), "picks": self.picks, "never_asleep": asleep},
        }

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.last = [int(x) for x in state["selection"]["last"]]
        self.picks = int(state["selection"]["picks"])
        if self._idle is not None:
            self._idle.index(self.last, state["selection"].get("never_asleep", ()))


class DataSize(Weighted):
    """At random with P(k) proportional to the training-set size n_k (an integer: exact), among
    available idle clients."""

    name = "data_size"

    def weights(self, ctx: Context) -> list[int]:
        if ctx.train_sizes is None:
            raise ScenarioError("server.selection", "data_size needs the clients' training-set sizes")
        return [round(float(n)) for n in ctx.train_sizes]


class Overcommit(Weighted):
    """FedScale's over-commitment: a sync round of K starts ceil(factor K) clients and keeps the
    first K arrivals; picks with P(k) proportional to w_k = (1 / E[task time of k])^speed_exponent,
    as integers W_k = round(2^24 w_k / max w) (at least 1): relative error <= 2^-25 / (w_k / max w)."""

    name = "overcommit"

    def __init__(self, cfg: OvercommitSelection, ctx: Context) -> None:
        self.factor = cfg.factor
        super().__init__(cfg, ctx)

    def weights(self, ctx: Context) -> list[int]:
        mean = np.asarray(ctx.system.mean_task_time(), dtype=np.float64)
        w = (1.0 / mean) ** self.cfg.speed_exponent
        return [max(1, round(float(x))) for x in w / w.max() * WEIGHT_SCALE]

    def round_size(self, k: int) -> int:
        return math.ceil(round(self.factor * k, 9))  # 1.3 * 10 is 13.000000000000002 in floats

    def keep(self, k: int) -> int | None:
        return k


STRATEGIES: Registry[type[Uniform]] = Registry("selection strategy", "server.selection.name", plugin_part="build")
"""name -> strategy class ``(cfg, ctx)``; plug-ins of entry-point group ``asyncfl.selection`` join."""
STRATEGIES.add("uniform", Uniform)
STRATEGIES.add("least_recent", LeastRecent)
STRATEGIES.add("data_size", DataSize)
STRATEGIES.add("overcommit", Overcommit)


def schema_names() -> set[str]:
    """The strategy names the scenario schema accepts (registered in ``SELECTION_CONFIGS``;
    plug-ins are not loaded for this)."""
    return set(SELECTION_CONFIGS.own_names())


def _check_complete() -> None:
    """The schema's names and the registered ones agree (run at import; tests call it after an
    in-process registration)."""
    STRATEGIES.check_same_names(SELECTION_CONFIGS, "asyncfl.sim.selection")


_check_complete()


def make_selector(
    server: ServerConfig,
    seed: int,
    availability: Availability,
    system: SystemModel,
    train_sizes: npt.ArrayLike | None = None,
) -> Selector:
    """The selection strategy of ``server.selection``."""
    cfg = server.selection
    sizes = None if train_sizes is None else np.asarray(train_sizes, dtype=np.float64)
    return STRATEGIES.get(cfg.name)(cfg, Context(int(seed), availability, system, sizes))


__all__ = [
    "REJECTION_TRIES",
    "STRATEGIES",
    "WEIGHT_SCALE",
    "Context",
    "DataSize",
    "LeastRecent",
    "Overcommit",
    "Selector",
    "Uniform",
    "Weighted",
    "make_selector",
    "schema_names",
]
