"""Units the simulator keeps apart: simulated seconds, model versions, staleness and client ids;
and the outcomes of a client task, which the simulator writes and the study layer reads.

``NewType`` makes mixing them up a type error (mypy) while costing nothing at run time.
"""

from __future__ import annotations

from typing import Literal, NewType, get_args

SimTime = NewType("SimTime", float)
"""Simulated time in seconds since the start of the run."""

ModelVersion = NewType("ModelVersion", int)
"""Server model version: 0 at start, +1 on every applied server step."""

Staleness = NewType("Staleness", int)
"""tau = server version when an update is applied - version the client pulled (>= 0)."""

ClientId = NewType("ClientId", int)
"""Index of a client, 0 .. clients.count - 1."""

TaskStatus = Literal[
    "applied",  # used in a server step
    "dropped_stale",  # arrived staler than server.max_staleness under policy drop
    "dropped_offline",  # its client went offline before the upload finished
    "dropped_dropout",  # lost to the per-task dropout probability (client crashed before upload)
    "dropped_deadline",  # sync round: arrived after server.round_deadline
    "dropped_overcommit",  # sync round with over-commitment: the round already had its first K arrivals
    "in_flight",  # still running when the run stopped
    "buffered",  # arrived, but still waiting in the server buffer when the run stopped
]
"""The ``status`` of a client task in events.csv (:class:`asyncfl.sim.records.EventRecord`). Defined
here, in the ground, so that the simulator (which writes it) and the figures (which read it, and
may not import the simulator) share this one list."""

TASK_STATUSES: tuple[TaskStatus, ...] = get_args(TaskStatus)
"""Every task status, in the order above (outcomes first, then the states a run can stop in)."""

__all__ = ["TASK_STATUSES", "ClientId", "ModelVersion", "SimTime", "Staleness", "TaskStatus"]
