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

Adding a strategy: its config class in :mod:`asyncfl.config.schema` (a subclass of
``SelectionBase`` listed in ``SELECTION_UNION.register``), a class here with ``pick``,
``round_size``, ``keep``, ``state`` and ``load`` (subclass :class:`Uniform` for the defaults), and
one line ``STRATEGIES.add(name, cls)``. A schema member without its class (or the reverse) fails
when this module is imported; a plug-in (entry-point group ``asyncfl.selection``) brings both.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from asyncfl.config.schema import (
    SELECTION_CONFIGS,
    DataSizeSelection,
    LeastRecentSelection,
    OvercommitSelection,
    ServerConfig,
)
from asyncfl.errors import ScenarioError
from asyncfl.registry import Registry
from asyncfl.rng import Draws, stream_key, uniform
from asyncfl.sim.availability import Availability
from asyncfl.sim.idle import IdleSet
from asyncfl.sim.system import SystemModel
from asyncfl.types import ClientId

REJECTION_TRIES = 64  # picks among all idle clients before scanning for available ones


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

    def weighted(self, idle: IdleSet, now: float, weight: list[float]) -> ClientId | None:
        """Remove and return an available idle client k drawn with P(k) proportional to
        ``weight[k]`` (one uniform of the stream; clients of weight 0 never); None if none."""
        on = self.available(idle, now)
        items = idle.items
        total = math.fsum(weight[items[i]] for i in on)
        if not on or total <= 0.0:
            return None
        ctr = self.counter
        self.counter = ctr + 1
        u = uniform(self.key, ctr) * total
        acc = 0.0
        last = on[0]
        for i in on:
            w = weight[items[i]]
            if w > 0.0:
                last = i
                acc += w
                if u < acc:
                    return idle.pop_at(i)
        return idle.pop_at(last)  # rounding left u just above the sum


class LeastRecent(Uniform):
    """The available idle client whose last pick is the oldest (never picked: oldest of all);
    ties (only among never-picked clients) uniformly at random. ``last[k]``: the pick number of
    k's last pick, -1 if never; both are snapshot state."""

    name = "least_recent"

    def __init__(self, cfg: LeastRecentSelection, ctx: Context) -> None:
        super().__init__(cfg, ctx)
        self.last = [-1] * ctx.system.num_clients
        self.picks = 0

    def pick(self, idle: IdleSet, now: float) -> ClientId | None:
        on = self.available(idle, now)
        if not on:
            return None
        items, last = idle.items, self.last
        oldest = min(last[items[i]] for i in on)
        ties = sorted((i for i in on if last[items[i]] == oldest), key=lambda i: items[i])
        i = ties[0] if len(ties) == 1 else ties[self._draw(len(ties))]
        client = idle.pop_at(i)
        last[client] = self.picks
        self.picks += 1
        return client

    def state(self) -> dict[str, Any]:
        return {"selection_counter": self.counter, "selection": {"last": list(self.last), "picks": self.picks}}

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.last = [int(x) for x in state["selection"]["last"]]
        self.picks = int(state["selection"]["picks"])


class DataSize(Uniform):
    """At random with P(k) proportional to the training-set size n_k, among available idle clients."""

    name = "data_size"

    def __init__(self, cfg: DataSizeSelection, ctx: Context) -> None:
        super().__init__(cfg, ctx)
        if ctx.train_sizes is None:
            raise ScenarioError("server.selection", "data_size needs the clients' training-set sizes")
        self.sizes = [float(n) for n in ctx.train_sizes]

    def pick(self, idle: IdleSet, now: float) -> ClientId | None:
        return self.weighted(idle, now, self.sizes)


class Overcommit(Uniform):
    """FedScale's over-commitment: a sync round of K starts ceil(factor K) clients and keeps the
    first K arrivals; picks with P(k) proportional to (1 / E[task time of k])^speed_exponent."""

    name = "overcommit"

    def __init__(self, cfg: OvercommitSelection, ctx: Context) -> None:
        super().__init__(cfg, ctx)
        self.factor = cfg.factor
        mean = np.asarray(ctx.system.mean_task_time(), dtype=np.float64)
        self.speed = [float(x) for x in (1.0 / mean) ** cfg.speed_exponent]

    def pick(self, idle: IdleSet, now: float) -> ClientId | None:
        return self.weighted(idle, now, self.speed)

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
    "Context",
    "DataSize",
    "LeastRecent",
    "Overcommit",
    "Selector",
    "Uniform",
    "make_selector",
    "schema_names",
]
