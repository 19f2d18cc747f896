"""One immutable row per client task and per evaluated metric (straight into pandas / CSV)."""

from __future__ import annotations

import math
from typing import NamedTuple

from asyncfl.types import TASK_STATUSES, TaskStatus

EVENT_COLUMNS = (
    "task",
    "client",
    "dispatch_time",
    "arrival_time",
    "base_version",
    "server_version",
    "staleness",
    "status",
    "weight",
    "download_time",
    "compute_time",
    "upload_time",
    "applied_version",
    "flops",
)


class EventRecord(NamedTuple):
    """One client task. Times in simulated seconds. ``arrival_time``: when the upload reached the
    server, or when the task was lost (NaN while in flight). ``server_version``: server version at
    arrival; ``staleness`` = server_version - base_version (-1 if it never arrived); ``weight``:
    s(staleness) used (NaN unless applied); ``applied_version``: the version its step produced
    (-1 unless applied); ``flops``: floating-point operations of the task's computation (the
    system model's per-client task FLOPs; NaN where unknown)."""

    task: int
    client: int
    dispatch_time: float
    arrival_time: float
    base_version: int
    server_version: int
    staleness: int
    status: TaskStatus
    weight: float
    download_time: float
    compute_time: float
    upload_time: float
    applied_version: int
    flops: float = math.nan


COUNT_KEYS = (  # the engine's totals: tasks dispatched, updates received, steps, and per status
    # (every status of TASK_STATUSES, in the order snapshots have always written them)
    "dispatched",
    "client_updates",
    "server_steps",
    "applied",
    "dropped_stale",
    "dropped_offline",
    "dropped_dropout",
    "dropped_deadline",
    "dropped_overcommit",
    "buffered",
    "in_flight",
)


if not set(TASK_STATUSES) <= set(COUNT_KEYS):
    raise ImportError(f"COUNT_KEYS lacks task status(es) {sorted(set(TASK_STATUSES) - set(COUNT_KEYS))}")


METRIC_COLUMNS = ("sim_time", "server_version", "client_updates", "metric", "value")


class MetricRecord(NamedTuple):
    """One metric at one evaluation. ``client_updates``: updates received by the server so far."""

    sim_time: float
    server_version: int
    client_updates: int
    metric: str
    value: float


__all__ = [
    "COUNT_KEYS",
    "EVENT_COLUMNS",
    "METRIC_COLUMNS",
    "TASK_STATUSES",
    "EventRecord",
    "MetricRecord",
    "TaskStatus",
]
