"""Engine snapshot and restore: the whole engine state as JSON-safe plain data, and back.

The layout (format 1) is one table, :data:`FIELDS`, in the order the keys are written: each key
with how to read it from the engine and how to put it back. Records are written as their rows
(``list(record)``, the field order of :mod:`asyncfl.sim.tasks` and
:class:`~asyncfl.sim.records.EventRecord`); NaN and inf in event and metric rows are written as
null. The selection strategy adds its own keys (:meth:`~asyncfl.sim.selection.Uniform.state`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from asyncfl.sim.clock import Clock, Timer
from asyncfl.sim.records import COUNT_KEYS, EventRecord, MetricRecord
from asyncfl.sim.tasks import Task, Waiting

Engine = Any  # asyncfl.sim.engine.Engine (which imports this module); its state attributes are read here

FORMAT = 1
R = TypeVar("R", bound=NamedTuple)


def _enc(x: float) -> float | None:
    """JSON-safe float: NaN and +-inf become None (restored as NaN by :func:`_dec`)."""
    return None if math.isnan(x) or math.isinf(x) else x


def _dec(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _float_fields(cls: type[Any]) -> tuple[bool, ...]:
    """Which fields are annotated ``float`` (NamedTuple keeps postponed annotations as ForwardRef)."""
    ann = cls.__annotations__
    return tuple(getattr(ann[f], "__forward_arg__", ann[f]) in ("float", float, "SimTime") for f in cls._fields)


_FLOATS: dict[type[Any], tuple[bool, ...]] = {
    cls: _float_fields(cls) for cls in (Task, Waiting, EventRecord, MetricRecord)
}


def row(cls: type[R], values: list[Any], nullable: bool = False) -> R:
    """A record from its snapshot row: float fields as floats (null as NaN if ``nullable``)."""
    conv: Callable[[Any], float] = _dec if nullable else float
    return cls._make(conv(v) if is_float else v for is_float, v in zip(_FLOATS[cls], values, strict=True))


def _event_row(engine: Engine, values: list[Any]) -> EventRecord:
    """An event record from its row; a row written before the ``flops`` column gets its client's."""
    if len(values) == len(EventRecord._fields) - 1:
        values = [*values, engine._flops[values[1]]]
    return row(EventRecord, values, True)


def enc_row(r: NamedTuple) -> list[Any]:
    return [_enc(v) if isinstance(v, float) else v for v in r]


def _pending(engine: Engine) -> list[list[Any]]:
    return [[t, ev.kind, ev.payload] for t, ev in engine._clock.pending()]


def _load_clock(engine: Engine, s: dict[str, Any]) -> None:
    clock = Clock(float(s["now"]))
    for t, kind, payload in s["pending"]:
        clock.at(float(t), Timer(engine.handlers[int(kind)], int(kind), int(payload)))
    engine._clock = clock


def _load_inflight(engine: Engine, rows: list[list[Any]]) -> None:
    engine._inflight = {int(r[0]): row(Task, r[1:]) for r in rows}
    engine._base_count = {}
    if engine._wait:
        for t in engine._inflight.values():
            engine._base_count[t.base] = engine._base_count.get(t.base, 0) + 1
        engine._min_base = min(engine._base_count) if engine._base_count else 0


def _attr(name: str, conv: Callable[[Any], Any]) -> tuple[Callable[[Engine], Any], Callable[[Engine, Any], None]]:
    """A key that is one engine attribute, JSON-native, converted by ``conv`` on the way back."""
    return (lambda e: getattr(e, name)), (lambda e, v: setattr(e, name, conv(v)))


def _opt(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else conv(v)


def _counts(v: dict[str, Any]) -> dict[str, int]:
    return {k: int(v.get(k, 0)) for k in COUNT_KEYS}


_NOTHING: Callable[[Engine, Any], None] = lambda e, v: None  # noqa: E731  (read with another key)

# key -> (read from the engine, put back into it), in the order they are written.
FIELDS: dict[str, tuple[Callable[[Engine], Any], Callable[[Engine, Any], None]]] = {
    "mode": (lambda e: e.server.mode, _NOTHING),
    "num_clients": (lambda e: e.num_clients, _NOTHING),
    "now": (lambda e: float(e._clock.now), _NOTHING),  # with "pending", by _load_clock
    "version": _attr("_version", int),
    "next_task": _attr("_next_task", int),
    "selection_counter": (lambda e: e._selector.state()["selection_counter"], _NOTHING),  # by the selector
    "client_counters": (lambda e: list(e._counters), lambda e, v: setattr(e, "_counters", [int(c) for c in v])),
    "idle": (lambda e: list(e._idle.items), lambda e, v: setattr(e, "_idle", e._selector.idle_set(e.num_clients, v))),
    "inflight": (lambda e: [[task, *t] for task, t in sorted(e._inflight.items())], _load_inflight),
    "pending": (_pending, _NOTHING),
    "buffer": (
        lambda e: [list(w) for w in e._buffer],
        lambda e, v: setattr(e, "_buffer", [row(Waiting, w) for w in v]),
    ),
    "counts": (lambda e: dict(e._counts), lambda e, v: setattr(e, "_counts", _counts(v))),
    "round": _attr("_round", int),
    "retry_at": _attr("_retry_at", _opt(float)),
    "refill_due": _attr("_refill_due", bool),
    "progress_at": _attr("_progress_at", int),
    "started": _attr("_started", bool),
    "stopping": _attr("_stopping", _opt(str)),
    "finished": _attr("_finished", bool),
    "end_time": _attr("_end_time", float),
    "last_eval": (
        lambda e: None if e._last_eval is None else list(e._last_eval),
        lambda e, v: setattr(e, "_last_eval", None if v is None else (float(v[0]), int(v[1]))),
    ),
    "events_drained": _attr("_events_drained", int),
    "metrics_drained": _attr("_metrics_drained", int),
    "events": (
        lambda e: [None if r is None else enc_row(r) for r in e._events],
        lambda e, v: setattr(e, "_events", [None if r is None else _event_row(e, r) for r in v]),
    ),
    "metrics": (
        lambda e: [enc_row(m) for m in e._metrics],
        lambda e, v: setattr(e, "_metrics", [row(MetricRecord, m, True) for m in v]),
    ),
}


def dump(engine: Engine) -> dict[str, Any]:
    """The engine's state (valid between events)."""
    out: dict[str, Any] = {"format": FORMAT}
    for key, (read, _) in FIELDS.items():
        out[key] = read(engine)
    for key, value in engine._selector.state().items():
        out.setdefault(key, value)
    return out


def check(s: dict[str, Any]) -> None:
    if s.get("format") != FORMAT:
        raise ValueError(f"unknown engine snapshot format {s.get('format')!r}")


def load(engine: Engine, s: dict[str, Any]) -> None:
    """Put the state ``s`` into a freshly built ``engine`` of the same scenario."""
    check(s)
    _load_clock(engine, s)
    for key, (_, put) in FIELDS.items():
        put(engine, s[key])
    engine._selector.load(s)


__all__ = ["FIELDS", "FORMAT", "check", "dump", "enc_row", "load", "row"]
