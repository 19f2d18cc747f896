"""Run directories: what a run writes, written atomically, and how it is read back.

Layout::

    DIR/scenario.yaml   the resolved scenario (every default written out); rerunning it reproduces the run
    DIR/manifest.json   versions, device, seed, wall-clock times, status, counts, final metrics and the
                        size and SHA-256 of every data file (written last)
    DIR/metrics.csv     one row per evaluation and metric: sim_time, server_version, client_updates, metric, value
    DIR/events.csv      one row per client task (see asyncfl.sim.records.EventRecord)

Every file goes to a temporary name in the same directory and is renamed into place, so a crash
never leaves a truncated file; :func:`load_run` checks the manifest's sizes and hashes and rejects
an incomplete directory with a clear message instead of returning partial frames.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asyncfl.errors import RunDirError

SCENARIO_FILE = "scenario.yaml"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.csv"
EVENTS_FILE = "events.csv"
DATA_FILES = (METRICS_FILE, EVENTS_FILE)
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return "nan" if math.isnan(f) else repr(f)
    if isinstance(v, np.integer):
        return str(int(v))
    return str(v)


def csv_bytes(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """Deterministic CSV: floats as ``repr`` (shortest round-trip form), NaN as ``nan``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(v) for v in r])
    return buf.getvalue().encode("utf-8")


def file_digest(path: Path) -> dict[str, Any]:
    data = Path(path).read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, with the digests of the data files present."""
    files = {name: file_digest(run_dir / name) for name in DATA_FILES if (run_dir / name).exists()}
    body = {**manifest, "files": files}
    write_atomic(run_dir / MANIFEST_FILE, (json.dumps(body, indent=2, sort_keys=False, default=str) + "\n").encode())


RUN_INFO_FILE = "run.json"
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoint"


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds an asyncfl run: a manifest, or the run.json every run writes first
    (a folder holding only a file named scenario.yaml is not one)."""
    return (Path(path) / MANIFEST_FILE).is_file() or (Path(path) / RUN_INFO_FILE).is_file()


def holds_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir/checkpoint`` holds anything (a run stopped part-way, to be resumed)."""
    d = Path(run_dir) / CHECKPOINT_DIR
    return d.is_dir() and any(d.iterdir())


def _status(path: Path) -> str:
    try:
        status = json.loads((path / MANIFEST_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return "unfinished"
    return status if status in STATUSES else "unfinished"


def check_out_dir(path: Path, scenario_yaml: str, force: bool = False) -> None:
    """Refuse, before anything is built or written, an ``--out`` that would lose results (unless
    ``force``): a non-empty directory that is not a run; a run that can be resumed (interrupted,
    unfinished, or holding a checkpoint); a finished run of a different scenario. A finished run
    of the same resolved scenario is replaced: rerunning it reproduces it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunDirError(f"--out {p}: exists and is not a directory")
    if force or not p.is_dir() or not any(p.iterdir()):
        return
    if not is_run_dir(p):
        raise RunDirError(f"--out {p}: directory is not empty and is not an asyncfl run; use --force to write there")
    status = _status(p)
    if status in ("interrupted", "running", "unfinished") or holds_checkpoint(p):
        raise RunDirError(
            f"--out {p}: holds a {status} run that can be continued with `asyncfl resume {p}`; "
            "use --force to start it over, or another --out"
        )
    try:
        same = (p / SCENARIO_FILE).read_text() == scenario_yaml
    except (OSError, UnicodeDecodeError):
        same = False
    if not same:
        raise RunDirError(
            f"--out {p}: holds a {status} run of a different scenario; use --force to replace it, or another --out"
        )


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (``DIR/.lock``, flock) while a run or resume writes
    it; a second process gets a one-line :class:`RunDirError` instead of interleaving its
    records with the first's. No-op where flock does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(run_dir) / LOCK_FILE
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunDirError(f"{run_dir}: in use by {holder} (a run or resume is writing it)") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class RunResult:
    """A finished (or stopped) run: its directory, manifest and tidy frames."""

    run_dir: Path | None
    manifest: dict[str, Any]
    metrics: pd.DataFrame
    events: pd.DataFrame

    @property
    def status(self) -> str:
        return str(self.manifest.get("status"))

    @property
    def final_metrics(self) -> dict[str, float]:
        return dict(self.manifest.get("final_metrics", {}))

    def metric(self, name: str) -> pd.DataFrame:
        """Rows of one metric, ordered by simulated time."""
        return self.metrics[self.metrics["metric"] == name].reset_index(drop=True)


def load_run(run_dir: str | Path) -> RunResult:
    """Read a run directory; raise :class:`RunDirError` if it is missing, incomplete or altered."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunDirError(f"{d}: no such run directory")
    mpath = d / MANIFEST_FILE
    if not mpath.is_file():
        raise RunDirError(f"{d}: incomplete run directory, {MANIFEST_FILE} is missing (the run may still be going or was killed)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunDirError(f"{mpath}: unreadable manifest (truncated or not JSON)") from None
    if not isinstance(manifest, dict) or manifest.get("status") not in STATUSES:
        raise RunDirError(f"{mpath}: not an asyncfl manifest (no valid status)")
    files = manifest.get("files", {})
    for name in DATA_FILES:
        p = d / name
        if not p.is_file():
            raise RunDirError(f"{d}: incomplete run directory, {name} is missing")
        want = files.get(name)
        if want is None:
            raise RunDirError(f"{d}: manifest does not list {name}; the directory is incomplete")
        got = file_digest(p)
        if got != want:
            raise RunDirError(
                f"{p}: does not match the manifest ({got['bytes']} bytes, expected {want['bytes']}); truncated or altered"
            )
    metrics = pd.read_csv(d / METRICS_FILE)
    events = pd.read_csv(d / EVENTS_FILE)
    return RunResult(d, manifest, metrics, events)


__all__ = [
    "EVENTS_FILE",
    "MANIFEST_FILE",
    "METRICS_FILE",
    "SCENARIO_FILE",
    "RunResult",
    "check_out_dir",
    "csv_bytes",
    "holds_checkpoint",
    "is_run_dir",
    "load_run",
    "locked",
    "write_atomic",
    "write_manifest",
]
