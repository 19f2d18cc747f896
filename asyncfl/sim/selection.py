"""Client selection: which idle, available client the server starts next.

A strategy removes and returns one client from the :class:`~asyncfl.sim.idle.IdleSet` (or -1 when
no idle client is available now; the engine then retries when one comes on). Every random draw is
from the counter-based ``selection`` stream (:mod:`asyncfl.rng`), one counter per draw, so a run
and its resumed twin pick the same clients; the strategy's state (its counter and any history)
is saved in engine snapshots.

Adding a strategy: a class with ``pick``, ``state`` and ``load`` and one line in
:data:`STRATEGIES` (its config in :mod:`asyncfl.config.schema`, ``server.selection``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy.typing as npt

from asyncfl.config.schema import ServerConfig
from asyncfl.rng import bits, stream_key
from asyncfl.sim.availability import Availability
from asyncfl.sim.idle import IdleSet
from asyncfl.sim.system import SystemModel
from asyncfl.types import ClientId

REJECTION_TRIES = 64  # picks among all idle clients before scanning for available ones


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

    def __init__(self, seed: int, availability: Availability) -> None:
        self.key = stream_key(seed, "selection", 0)
        self.counter = 0
        self.availability = availability
        self.always_on = availability.always_on

    def _draw(self, n: int) -> int:
        ctr = self.counter
        self.counter = ctr + 1
        return (bits(self.key, ctr) * n) >> 64

    def pick(self, idle: IdleSet, now: float) -> ClientId | None:
        n = len(idle.items)
        if n == 0:
            return None
        ctr = self.counter  # _draw, inlined on the hot path
        self.counter = ctr + 1
        pick = (bits(self.key, ctr) * n) >> 64
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


def make_selector(
    server: ServerConfig,
    seed: int,
    availability: Availability,
    system: SystemModel,
    train_sizes: npt.ArrayLike | None = None,
) -> Selector:
    """The selection strategy of ``server.selection``."""
    return Uniform(seed, availability)


__all__ = ["REJECTION_TRIES", "Selector", "Uniform", "make_selector"]
