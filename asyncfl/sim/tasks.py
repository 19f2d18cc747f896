"""The engine's named records: a task in flight, an update waiting in the server buffer, and the
one constructor of an :class:`~asyncfl.sim.records.EventRecord` from either.

Field order is the snapshot's row layout (:mod:`asyncfl.sim.snapshot` writes ``list(record)``).
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, NamedTuple

from asyncfl.sim.records import EventRecord, TaskStatus
from asyncfl.types import ClientId, ModelVersion, SimTime

# What a task's single event means (its fate is known at dispatch).
ARRIVE, LOST_DROPOUT, LOST_OFFLINE = 0, 1, 2
LOSS_STATUS: dict[int, TaskStatus] = {LOST_DROPOUT: "dropped_dropout", LOST_OFFLINE: "dropped_offline"}
NAN = float("nan")
if TYPE_CHECKING:
    as_time = SimTime
    as_version = ModelVersion
else:  # the same identity as the NewTypes, as a C call (the engine's hot path makes one per task)
    as_time = as_version = operator.pos
new_record = tuple.__new__
"""``new_record(Task, (fields...))``: a NamedTuple without its Python-level ``__new__`` (a third of
the cost). For the engine's hot path only; the fields must be complete and in order."""


class Task(NamedTuple):
    """A task in flight: its ``client`` and that client's task ``counter``, when it was dispatched
    and the version it pulled (``base``), its sampled durations, and its single event: at
    ``event_time`` it arrives (``fate`` ARRIVE) or is lost (LOST_DROPOUT, LOST_OFFLINE)."""

    client: ClientId
    counter: int
    dispatch_time: float
    base: ModelVersion
    download: float
    compute: float
    upload: float
    event_time: SimTime
    fate: int


class Waiting(NamedTuple):
    """An update that arrived and waits in the server buffer: the task's fields, its arrival
    time, the server version then and its staleness and weight, and ``slot``: the absolute index
    of its (placeholder) row in the event list, filled in when it is applied."""

    task: int
    client: ClientId
    dispatch_time: float
    arrival: SimTime
    base: ModelVersion
    version: ModelVersion
    staleness: int
    weight: float
    download: float
    compute: float
    upload: float
    slot: int


def event(
    task: int,
    t: Task | Waiting,
    flops: float,
    arrival: float,
    version: int,
    staleness: int,
    status: TaskStatus,
    weight: float = NAN,
    applied: int = -1,
) -> EventRecord:
    """The event record of task ``task`` (whose dispatch facts are in ``t``, its FLOPs ``flops``): it arrived or was
    lost at ``arrival`` with the server at ``version``; ``staleness`` -1 if it never arrived;
    ``weight`` and ``applied`` (the version its step made) only for applied updates."""
    return new_record(
        EventRecord,
        (
            task,
            t.client,
            t.dispatch_time,
            arrival,
            t.base,
            version,
            staleness,
            status,
            weight,
            t.download,
            t.compute,
            t.upload,
            applied,
            flops,
        ),
    )


__all__ = [
    "ARRIVE",
    "LOSS_STATUS",
    "LOST_DROPOUT",
    "LOST_OFFLINE",
    "NAN",
    "Task",
    "Waiting",
    "as_time",
    "as_version",
    "event",
    "new_record",
]
