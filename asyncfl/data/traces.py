"""Import FedScale's device-capacity and behaviour traces into asyncfl's own CSV formats.

FedScale (Lai et al., ICML 2022) publishes two Python pickles, each a dict keyed by client id
(FedScale's docs, "Device Trace File Formats"):

- ``client_device_capacity``: {client_id: {'computation': float, 'communication': float}}, where
  'computation' is milliseconds per sample of inference (AI Benchmark) and 'communication' is
  kbit/s (MobiPerf); FedScale times a task as 3 x batch x steps x computation / 1000 seconds (its
  ``augmentation_factor`` 3 for the backward pass) plus (upload + download kbit) / communication.
  Some forks add 'dl_kbps' / 'ul_kbps'; they are used when present.
- ``client_behave_trace``: {client_id: {'duration': int, 'inactive': [int], 'active': [int],
  'finish_time': int, 'model': str}}: client k is available from active[j] to inactive[j]
  (seconds), and FedScale replays the trace modulo finish_time.

:func:`convert_trace` reads either with a restricted unpickler that builds plain containers,
strings and numbers only: a pickle that names any class or function (numpy scalars included) is
refused with a :class:`~asyncfl.errors.UserError` (exit 2), because unpickling a class runs its code.
It writes, with clients renumbered 0 .. K-1 in the order of their sorted FedScale ids (kept in a
``fedscale_id`` column):

- from a capacity trace, a ``system.profile`` CSV: client, speed (samples/s = 1000 / (3 x
  computation)), download_bandwidth and upload_bandwidth (bytes/s = kbit/s x 125), latency (0:
  FedScale models none), ms_per_sample (the raw figure), and flops_per_s (= flops_per_sample x
  1000 / computation) only when the forward FLOPs per sample of the benchmarked model are given;
- from a behaviour trace, an availability trace CSV (format in asyncfl/sim/traces.py): one row
  per window, client, start_s = active[j], end_s = inactive[j], period_s = finish_time (windows
  clipped to the period, as FedScale's modulo never reaches past it). FedScale's windows are
  closed, asyncfl's half-open [start_s, end_s); unpaired trailing entries (lists of unequal
  length) are dropped and counted. A client with no window gets one empty row (never on).
"""

from __future__ import annotations

import csv
import io
import math
import pickle
from pathlib import Path
from typing import Any

from asyncfl.errors import UserError


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something beyond plain containers and numbers."""


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what needs no import: dict, list, tuple, str, bytes, numbers, bools, None."""

    def find_class(self, module: str, name: str) -> Any:
        raise _Refused(f"it names {module}.{name}; only plain containers and numbers are read")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("it holds a persistent reference; only plain containers and numbers are read")


def load_plain_pickle(path: Path) -> Any:
    """The object in the pickle at ``path``, refusing any class (one-line UserError)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return _PlainUnpickler(io.BytesIO(raw)).load()
    except _Refused as e:
        raise UserError(f"{path}: refused: {e}") from None
    except Exception as e:  # a damaged pickle fails in many ways
        raise UserError(f"{path}: not a readable pickle ({type(e).__name__})") from None


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise UserError(f"{where} must be a finite number, got {type(v).__name__}")
    return float(v)


def _sorted_ids(trace: dict[Any, Any], path: Path) -> list[Any]:
    def key(k: Any) -> tuple[int, Any]:
        if isinstance(k, int) and not isinstance(k, bool):
            return (0, k)
        if isinstance(k, str) and k.strip().lstrip("-").isdigit():
            return (0, int(k))
        if isinstance(k, str):
            return (1, k)
        raise UserError(f"{path}: client ids must be numbers or strings, got {type(k).__name__}")

    return sorted(trace, key=key)


def _layout(trace: Any, path: Path) -> str:
    if not isinstance(trace, dict) or not trace:
        raise UserError(f"{path}: expected a non-empty dict keyed by client id (FedScale's trace layout)")
    first = next(iter(trace.values()))
    if isinstance(first, dict) and "computation" in first:
        return "capacity"
    if isinstance(first, dict) and "active" in first:
        return "behaviour"
    raise UserError(
        f"{path}: neither a FedScale device-capacity trace ({{id: {{'computation', 'communication'}}}}) "
        "nor a behaviour trace ({id: {'active', 'inactive', 'finish_time'}})"
    )


def convert_trace(src: Path, flops_per_sample: float | None = None) -> tuple[str, str]:  # noqa: C901 (one branch per accepted FedScale layout, unit and format error)
    """Convert a FedScale trace pickle ``src`` to asyncfl's CSV (see the module docstring).
    Returns the CSV text and a one-line summary of it; the caller writes the file (the command
    line does, atomically: this layer writes nothing)."""
    trace = load_plain_pickle(src)
    kind = _layout(trace, src)
    ids = _sorted_ids(trace, src)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    if kind == "capacity":
        header = ["client", "speed", "download_bandwidth", "upload_bandwidth", "latency", "ms_per_sample"]
        if flops_per_sample is not None:
            header.append("flops_per_s")
        w.writerow([*header, "fedscale_id"])
        for client, cid in enumerate(ids):
            entry = trace[cid]
            where = f"{src}: client {cid!r}"
            if not isinstance(entry, dict):
                raise UserError(f"{where}: expected a dict with 'computation' and 'communication'")
            if "computation" not in entry or "communication" not in entry:
                raise UserError(f"{where}: lacks 'computation' or 'communication'")
            ms = _number(entry["computation"], f"{where} computation")
            kbps = _number(entry["communication"], f"{where} communication")
            down = _number(entry.get("dl_kbps", kbps), f"{where} dl_kbps")
            up = _number(entry.get("ul_kbps", kbps), f"{where} ul_kbps")
            if ms <= 0.0 or down <= 0.0 or up <= 0.0:
                raise UserError(f"{where}: computation and bandwidths must be > 0")
            row = [client, repr(1000.0 / (3.0 * ms)), repr(down * 125.0), repr(up * 125.0), "0.0", repr(ms)]
            if flops_per_sample is not None:
                row.append(repr(flops_per_sample * 1000.0 / ms))
            w.writerow([*row, cid])
        summary = f"{len(ids)} clients' capacities (a system.profile file)"
    else:
        w.writerow(["client", "start_s", "end_s", "period_s", "fedscale_id"])
        windows = unpaired = 0
        for client, cid in enumerate(ids):
            entry = trace[cid]
            where = f"{src}: client {cid!r}"
            if not isinstance(entry, dict) or not all(k in entry for k in ("active", "inactive", "finish_time")):
                raise UserError(f"{where}: expected a dict with 'active', 'inactive', 'finish_time'")
            active, inactive = entry["active"], entry["inactive"]
            if not isinstance(active, (list, tuple)) or not isinstance(inactive, (list, tuple)):
                raise UserError(f"{where}: 'active' and 'inactive' must be lists of seconds")
            period = _number(entry["finish_time"], f"{where} finish_time")
            if period <= 0.0:
                raise UserError(f"{where}: finish_time must be > 0")
            unpaired += abs(len(active) - len(inactive))
            rows = 0
            for a, b in zip(active, inactive, strict=False):
                start = min(_number(a, f"{where} active"), period)
                end = min(_number(b, f"{where} inactive"), period)
                if start < 0.0 or end < start:
                    raise UserError(f"{where}: needs 0 <= active[j] <= inactive[j]")
                w.writerow([client, repr(start), repr(end), repr(period), cid])
                rows += 1
            if rows == 0:
                w.writerow([client, "0.0", "0.0", repr(period), cid])
            windows += rows
        summary = f"{len(ids)} clients, {windows} availability windows (a trace for availability.model: trace)"
        if unpaired:
            summary += f"; {unpaired} unpaired active/inactive entries dropped"
    return out.getvalue(), summary


__all__ = ["convert_trace", "load_plain_pickle"]
