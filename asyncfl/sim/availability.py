"""Client availability over simulated time (seconds).

A client's timeline is a sequence of half-open periods [t_n, t_{n+1}) that alternate between on and
off; period 0 starts at t = 0. A query at a period boundary sees the period that starts there.
A task running when its client goes off is lost (the engine records ``dropped_offline``).

:class:`OnOffAvailability`: period 0 is on with probability ``start_on`` (stream
``availability_start``, counter 0); the duration of period n is exponential with mean ``mean_on`` or
``mean_off`` (stream ``availability``, counter n). Timelines are generated lazily, only as far as
queries reach, with one cursor per client; a query before the cursor regenerates the timeline from
t = 0, so answers are a pure function of (seed, client, t), whatever the order of queries. Nothing
here needs checkpointing. Durations are not multiplied by ``system.delay_scale``: availability is a
property of the device's owner, not of the network or the processor.

:class:`TraceAvailability`: windows replayed from a trace file (:mod:`asyncfl.sim.traces`): on
exactly inside [start_s, end_s); past a client's period the trace wraps (time modulo the period) or
raises a ScenarioError (``on_end: error``). Pure function of (client, t); nothing random.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from pathlib import Path
from typing import Protocol

import numpy as np

from asyncfl.config.schema import AlwaysOn as AlwaysOnConfig
from asyncfl.config.schema import OnOff, TraceAvailabilityConfig
from asyncfl.errors import ScenarioError
from asyncfl.rng import stream_keys_np, uniform, uniform_np
from asyncfl.sim.traces import ClientWindows, read_trace


class Availability(Protocol):
    """Which clients can take a task at time t. ``always_on`` lets the engine skip queries."""

    always_on: bool

    def is_on(self, client: int, t: float) -> bool:
        """Whether ``client`` is available at time ``t``."""
        ...

    def next_off(self, client: int, t: float) -> float:
        """The first time >= t at which ``client`` is off (``t`` itself if off now; inf if never)."""
        ...

    def next_on(self, client: int, t: float) -> float:
        """The first time >= t at which ``client`` is on (``t`` itself if on now)."""
        ...


class AlwaysOn:
    """Every client is available at every time."""

    always_on = True

    def is_on(self, client: int, t: float) -> bool:
        return True

    def next_off(self, client: int, t: float) -> float:
        return math.inf

    def next_on(self, client: int, t: float) -> float:
        return t


class OnOffAvailability:
    """Alternating on/off periods with exponential durations (see the module docstring).

    ``mean_on``, ``mean_off``: mean period lengths in seconds; ``start_on``: probability that a
    client is on at t = 0."""

    always_on = False

    def __init__(self, mean_on: float, mean_off: float, start_on: float, num_clients: int, seed: int) -> None:
        if mean_on <= 0.0 or mean_off <= 0.0:
            raise ValueError("mean_on and mean_off must be > 0")
        self.mean_on = float(mean_on)
        self.mean_off = float(mean_off)
        self.start_on = float(start_on)
        self.num_clients = int(num_clients)
        clients = np.arange(self.num_clients, dtype=np.uint64)
        starts = stream_keys_np(seed, "availability_start", clients)
        self._on0: list[bool] = (uniform_np(starts, 0) < self.start_on).tolist()
        self._keys: list[int] = stream_keys_np(seed, "availability", clients).tolist()
        # Cursor per client: index, start and end (seconds) of the last period visited; -1 = none.
        self._idx: list[int] = [-1] * self.num_clients
        self._start: list[float] = [0.0] * self.num_clients
        self._end: list[float] = [0.0] * self.num_clients

    @classmethod
    def from_config(cls, cfg: OnOff, num_clients: int, seed: int) -> OnOffAvailability:
        return cls(cfg.mean_on, cfg.mean_off, cfg.start_on, num_clients, seed)

    def _duration(self, client: int, n: int) -> float:
        on = self._on0[client] != (n & 1 == 1)
        return -(self.mean_on if on else self.mean_off) * math.log(uniform(self._keys[client], n))

    def _seek(self, client: int, t: float) -> tuple[bool, float]:
        """(whether client is on at t, end of the period containing t)."""
        n = self._idx[client]
        if n < 0 or t < self._start[client]:
            n, start = 0, 0.0
            end = self._duration(client, 0)
        else:
            start, end = self._start[client], self._end[client]
        while t >= end:
            n += 1
            start = end
            end = start + self._duration(client, n)
        self._idx[client] = n
        self._start[client] = start
        self._end[client] = end
        return self._on0[client] != (n & 1 == 1), end

    def is_on(self, client: int, t: float) -> bool:
        return self._seek(client, t)[0]

    def next_off(self, client: int, t: float) -> float:
        on, end = self._seek(client, t)
        return end if on else t

    def next_on(self, client: int, t: float) -> float:
        on, end = self._seek(client, t)
        return t if on else end


class TraceAvailability:
    """Windows replayed from a trace (see the module docstring). ``windows[i]``: client i's merged
    windows and period; ``wrap``: past the period, replay from the start (else raise)."""

    always_on = False

    def __init__(self, windows: list[ClientWindows], wrap: bool = True, key: str = "system.availability") -> None:
        self.windows = windows
        self.wrap = bool(wrap)
        self._key = key
        self._full = [w.starts == [0.0] and w.ends == [w.period] for w in windows]

    def _locate(self, client: int, t: float) -> tuple[float, int, bool]:
        """(offset k * period, index of the last window starting at or before t - offset, on)."""
        w = self.windows[client]
        offset = 0.0
        if t >= w.period:
            if not self.wrap:
                raise ScenarioError(
                    f"{self._key}.on_end",
                    f"the trace of client {client} ends at {w.period:g} s but the simulation reached "
                    f"{t:g} s; set on_end: wrap or stop earlier",
                )
            offset = math.floor(t / w.period) * w.period
            if t - offset >= w.period:  # rounding
                offset += w.period
            elif t - offset < 0.0:
                offset -= w.period
        tt = t - offset
        i = bisect_right(w.starts, tt) - 1
        return offset, i, i >= 0 and tt < w.ends[i]

    def is_on(self, client: int, t: float) -> bool:
        return self._locate(client, t)[2]

    def next_off(self, client: int, t: float) -> float:
        offset, i, on = self._locate(client, t)
        if not on:
            return t
        w = self.windows[client]
        if self._full[client]:
            return math.inf if self.wrap else w.period
        end = offset + w.ends[i]
        if self.wrap and w.ends[i] >= w.period and w.starts[0] == 0.0:
            end = offset + w.period + w.ends[0]  # the window runs on into the next period's first
        return end

    def next_on(self, client: int, t: float) -> float:
        offset, i, on = self._locate(client, t)
        if on:
            return t
        w = self.windows[client]
        if not w.starts:
            return math.inf if self.wrap else w.period
        if i + 1 < len(w.starts):
            v = offset + w.starts[i + 1]
        elif self.wrap:
            v = offset + w.period + w.starts[0]
        else:
            return w.period
        for _ in range(8):  # offset + start may round below the start: step up to the window
            if self._locate(client, v)[2]:
                break
            v = math.nextafter(v, math.inf)
        return v


def make_availability(
    cfg: AlwaysOnConfig | OnOff | TraceAvailabilityConfig,
    num_clients: int,
    seed: int,
    base_dir: Path | str | None = None,
) -> Availability:
    """The availability model a ``system.availability`` config describes (``base_dir``: where a
    relative trace path is resolved)."""
    if isinstance(cfg, OnOff):
        return OnOffAvailability.from_config(cfg, num_clients, seed)
    if isinstance(cfg, TraceAvailabilityConfig):
        path = Path(cfg.path).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return TraceAvailability(read_trace(path, num_clients), cfg.on_end == "wrap")
    return AlwaysOn()


__all__ = ["AlwaysOn", "Availability", "OnOffAvailability", "TraceAvailability", "make_availability"]
