"""The server's rule for arrivals, as the papers write it (no torch): bound the staleness with a
policy, weight by staleness, buffer K updates, then step.

    on arrival of an update with staleness tau = V - b:
        if policy == drop and tau > tau_max:  drop it (dropped_stale)
        w = s(tau)                            (sync rounds: w = 1)
        buffer it with w
        if len(buffer) >= K and the step is allowed:  one server step with the buffer, V += 1

K is 1 (async: FedAsync), ``buffer_size`` (buffered: FedBuff) or the round's arrivals (sync:
FedAvg, the step is made when the round ends). Under policy ``wait`` a step to V + 1 is allowed
only while V + 1 <= b + tau_max for every task still in flight with base b.

:class:`ServerPolicy` is that rule for the engine (:mod:`asyncfl.sim.engine`); the numeric half,
the step itself, is :class:`asyncfl.algorithms.server.ServerStep`. Both are built from the
scenario's ``server`` keys by :func:`asyncfl.runs.server_rule.server_rule`, the one composition
that runs use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from asyncfl.config.schema import ServerConfig
from asyncfl.sim.staleness import WeightFn, weight_fn


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    """What the server does with an arrival (module docstring). ``weigh(tau)``: the update's
    weight s(tau), or None if it is dropped as stale; ``buffer_size``: K, updates per step
    (async 1, buffered ``buffer_size``; sync rounds step at their end); ``tau_max``: the staleness
    bound (inf if none); ``wait``: policy ``wait`` (a bound the server waits for, instead of
    dropping); ``weight``: s(tau) itself."""

    mode: str
    buffer_size: int
    tau_max: float
    drop: bool
    wait: bool
    weight: WeightFn
    weigh: Callable[[int], float | None]

    @classmethod
    def from_config(cls, server: ServerConfig, weight: WeightFn | None = None) -> ServerPolicy:
        """The policy of ``server`` (``weight`` overrides ``server.staleness_weight``)."""
        s = weight if weight is not None else weight_fn(server.staleness_weight)
        sync = server.mode == "sync"
        tau = server.max_staleness
        tau_max = math.inf if tau is None else float(tau)
        drop = not sync and server.staleness_policy == "drop" and tau is not None
        wait = not sync and server.staleness_policy == "wait" and tau is not None
        weigh: Callable[[int], float | None]
        if sync:
            weigh = _fresh  # a round's updates all pulled the version it started at
        elif drop:
            bound = int(tau_max)
            weigh = lambda t: None if t > bound else s(t)  # noqa: E731
        else:
            weigh = s
        k = server.buffer_size if server.mode == "buffered" else 1
        return cls(server.mode, k, tau_max, drop, wait, s, weigh)

    @property
    def sync(self) -> bool:
        return self.mode == "sync"

    @property
    def direct(self) -> bool:
        """Async: every admitted update is a step of its own (unless a wait holds it)."""
        return self.mode == "async"

    @property
    def hold_when_blocked(self) -> bool:
        """Policy wait with tau_max = 0: a task dispatched while the server is blocked would block
        it again, so free slots stay empty while updates wait and tasks are in flight."""
        return self.wait and self.tau_max == 0

    def step_allowed(self, version: int, oldest_base: int | None) -> bool:
        """May the server move from ``version`` to ``version + 1``, with ``oldest_base`` the
        smallest base version among the tasks in flight (None: none)? Always, except under
        policy wait while that task would become staler than tau_max."""
        return not self.wait or oldest_base is None or oldest_base + self.tau_max >= version + 1


def _fresh(tau: int) -> float:
    return 1.0


__all__ = ["ServerPolicy"]
