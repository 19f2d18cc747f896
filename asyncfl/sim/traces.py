"""Availability traces: per-client windows read from a CSV file.

Format (one row per window; units in the column names; header required, column order free):

- ``client``: client id, 0 .. clients.count - 1 (rows of larger ids are ignored);
- ``start_s``, ``end_s``: the window [start_s, end_s) in seconds from the start of the trace,
  0 <= start_s <= end_s (a row with start_s == end_s declares a client that is never on);
- ``period_s`` (optional): the length of this client's trace in seconds, >= its last end_s; when
  simulated time passes it the trace wraps around or the run stops (``availability.on_end``).
  Empty or absent: the largest end_s in the file, the same for every client.

Overlapping or touching windows of a client are merged. Every client of the scenario needs at least
one row. ``asyncfl data convert-trace`` writes this format from FedScale's behaviour trace (a pickle);
Parquet is not read (pyarrow is not a dependency).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple

from asyncfl.errors import ScenarioError

TRACE_COLUMNS = ("client", "start_s", "end_s")
"""Required columns of a trace file; ``period_s`` is optional."""


class ClientWindows(NamedTuple):
    """One client's merged windows (sorted, disjoint, non-empty) and its trace length, seconds."""

    starts: list[float]
    ends: list[float]
    period: float


def read_trace(path: Path, num_clients: int, key: str = "system.availability.path") -> list[ClientWindows]:  # noqa: C901 (one branch per column, unit and format error of the trace file)
    """Windows of clients 0 .. num_clients - 1 from the trace CSV at ``path`` (format above).
    Problems raise ScenarioError(key, ...)."""
    if not path.is_file():
        raise ScenarioError(key, f"file not found: {path}")
    raw: list[list[tuple[float, float]]] = [[] for _ in range(num_clients)]
    periods: list[float | None] = [None] * num_clients
    seen = [False] * num_clients
    horizon = 0.0
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in TRACE_COLUMNS if c not in header]
            if missing:
                raise ScenarioError(
                    key, f"{path} lacks column(s) {', '.join(missing)}; needs {', '.join(TRACE_COLUMNS)} [, period_s]"
                )
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip(): v.strip() if isinstance(v, str) else "" for k, v in row.items()}
                try:
                    client = int(row["client"])
                    start, end = float(row["start_s"]), float(row["end_s"])
                    period = float(row["period_s"]) if row.get("period_s") else None
                except ValueError:
                    raise ScenarioError(key, f"{path} line {line}: values must be numbers") from None
                if not (math.isfinite(start) and math.isfinite(end) and 0.0 <= start <= end):
                    raise ScenarioError(key, f"{path} line {line}: needs 0 <= start_s <= end_s, finite")
                if period is not None and not (math.isfinite(period) and period > 0.0):
                    raise ScenarioError(key, f"{path} line {line}: period_s must be finite and > 0")
                horizon = max(horizon, end)
                if not 0 <= client < num_clients:
                    continue
                seen[client] = True
                if end > start:
                    raw[client].append((start, end))
                if period is not None:
                    if periods[client] is not None and periods[client] != period:
                        raise ScenarioError(key, f"{path} line {line}: client {client} has two period_s values")
                    periods[client] = period
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ScenarioError(key, f"cannot read {path}: {e}") from None
    if not all(seen):
        raise ScenarioError(key, f"{path} has no row for client {seen.index(False)} (one row per window)")
    out: list[ClientWindows] = []
    for client, windows in enumerate(raw):
        period = periods[client] if periods[client] is not None else horizon
        assert period is not None
        starts: list[float] = []
        ends: list[float] = []
        for start, end in sorted(windows):
            if ends and start <= ends[-1]:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        if ends and ends[-1] > period:
            raise ScenarioError(
                key, f"{path}: client {client} has a window ending at {ends[-1]} > its period_s {period}"
            )
        if period <= 0.0:
            raise ScenarioError(key, f"{path}: the trace has no window of positive length (all end_s are 0)")
        out.append(ClientWindows(starts, ends, period))
    return out


def write_trace(path: Path, rows: list[tuple[int, float, float, float | None]]) -> None:
    """Write (client, start_s, end_s, period_s or None) rows in the format above."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([*TRACE_COLUMNS, "period_s"])
        for client, start, end, period in rows:
            w.writerow([client, repr(float(start)), repr(float(end)), "" if period is None else repr(float(period))])


__all__ = ["TRACE_COLUMNS", "ClientWindows", "read_trace", "write_trace"]
