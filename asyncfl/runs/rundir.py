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
import re
import stat
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asyncfl.bounded import InputLimitError, SymlinkError, is_link, loads_json, open_nofollow, read_file
from asyncfl.errors import AsyncFLError, DamagedRunDirError, RunDirError, UserError, os_error

SCENARIO_FILE = "scenario.yaml"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.csv"
EVENTS_FILE = "events.csv"
DATA_FILES = (METRICS_FILE, EVENTS_FILE)
RUN_INFO_FILE = "run.json"
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoint"
EVENTS_PARTIAL = "events.partial.csv"
METRICS_PARTIAL = "metrics.partial.csv"
RUN_FILES = (
    SCENARIO_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    EVENTS_FILE,
    RUN_INFO_FILE,
    LOCK_FILE,
    CHECKPOINT_DIR,
    EVENTS_PARTIAL,
    METRICS_PARTIAL,
)
"""Every name a run writes in its directory: none of them may be a symbolic link."""

MAX_JSON_BYTES = 64 << 20
"""Largest manifest.json, run.json or sweep.json read (a manifest is a few kB; a sweep.json of
100,000 runs some tens of MB)."""
MAX_STATE_BYTES = 1 << 30
"""Largest checkpoint state-<g>.json read (the engine snapshot grows with clients in flight)."""
MAX_SCENARIO_BYTES = 4 << 20
"""Largest scenario.yaml read from a run directory (a resolved scenario is a few kB)."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of a run directory's JSON (asyncfl writes at most about 6 levels)."""
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_error(exc: OSError, path: Path, doing: str = "writing") -> AsyncFLError | None:
    """A user-causable OSError while writing ``path`` as its one-line user error (exit 4 for a
    full disk, 2 for a read-only or forbidden path), marked with ``writing`` so that a run stops
    at its last checkpoint instead of writing more; None for another OSError."""
    err = os_error(exc, path, doing)
    if err is not None:
        err.writing = path  # type: ignore[attr-defined]
    return err


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync, rename.

    The temporary file is opened without following a symbolic link and removed whatever fails
    (a full disk, a signal); the rename replaces a link at ``path`` rather than writing through
    it. A full disk or quota is a :class:`DiskFullError` (exit 4), a read-only or forbidden path
    a :class:`UserError` (exit 2), each one line naming ``path``."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, SymlinkError):
            raise RunDirError(f"{tmp}: {exc.reason}; remove it") from None
        if isinstance(exc, OSError):
            err = _write_error(exc, path)
            if err is not None:
                raise err from None
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class NewPaths:
    """The folders and files one command creates, to be removed again should it fail: what was
    there before (a folder, a file it overwrote) is never removed. Use :func:`all_or_nothing`."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def mkdir(self, folder: Path) -> Path:
        """``folder`` and the missing folders above it, each one made here recorded."""
        folder = Path(folder)
        missing: list[Path] = []
        p = folder
        while not os.path.lexists(p) and p != p.parent:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue  # made meanwhile by another process: not ours to remove
            except OSError as exc:
                err = _write_error(exc, d, "creating")
                if err is None:
                    raise
                raise err from None
            self.paths.append(d)
        if not folder.is_dir():
            raise UserError(f"{folder}: exists and is not a directory")
        return folder

    def write(self, path: Path, data: bytes) -> None:
        """:func:`write_atomic`, the file recorded if it is new."""
        new = not os.path.lexists(path)
        write_atomic(path, data)
        if new:
            self.paths.append(Path(path))

    def remove(self) -> None:
        """Remove what was made here, newest first; a folder only while it is empty (something
        another process put there meanwhile stays, and its folder with it)."""
        for p in reversed(self.paths):
            with contextlib.suppress(OSError):
                if p.is_dir() and not is_link(p):
                    p.rmdir()
                else:
                    p.unlink()
        self.paths.clear()


@contextlib.contextmanager
def all_or_nothing() -> Iterator[NewPaths]:
    """Create folders and write files through the :class:`NewPaths` it yields; if anything fails
    (a full disk, a signal), those made here are removed and the error passes on."""
    made = NewPaths()
    try:
        yield made
    except BaseException:
        made.remove()
        raise


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


def _digest(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_digest(path: Path) -> dict[str, Any]:
    return _digest(read_run_bytes(path, None))


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, with the digests of the data files present."""
    files = {name: file_digest(run_dir / name) for name in DATA_FILES if os.path.lexists(run_dir / name)}
    body = {**manifest, "files": files}
    write_atomic(run_dir / MANIFEST_FILE, (json.dumps(body, indent=2, sort_keys=False, default=str) + "\n").encode())


# ------------------------------------------------------------------------------------------------
# Reading a run directory: strict and bounded (one reader for every command)
# ------------------------------------------------------------------------------------------------


def read_run_bytes(path: Path, max_bytes: int | None) -> bytes:
    """The bytes of run file ``path``: never through a symbolic link, only a regular file, at
    most ``max_bytes``; anything else is a :class:`DamagedRunDirError` (exit 2) naming the file.
    FileNotFoundError passes through (callers say what is missing); another OSError a user can
    cause (permission) is a one-line user error."""
    try:
        return read_file(path, max_bytes)
    except InputLimitError as exc:
        raise DamagedRunDirError(path, exc.reason) from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        err = os_error(exc, path, "reading")
        if err is None:
            raise
        raise err from None


def read_run_json(path: Path, max_bytes: int = MAX_JSON_BYTES, what: str = "") -> Any:
    """JSON file ``path`` of a run or sweep directory, strict UTF-8, nested at most
    :data:`MAX_JSON_DEPTH`, numbers of at most 100 characters; else a DamagedRunDirError whose
    reason starts with ``what`` (e.g. "unreadable manifest")."""
    data = read_run_bytes(path, max_bytes)
    try:
        return loads_json(data, MAX_JSON_DEPTH)
    except InputLimitError as exc:
        raise DamagedRunDirError(path, f"{what}: it {exc.reason}" if what else exc.reason) from None


def read_run_yaml(path: Path) -> dict[str, Any]:
    """A run directory's scenario.yaml as a mapping (safe YAML, at most :data:`MAX_SCENARIO_BYTES`,
    strict UTF-8, no alias bombs or deep nesting); damage is a DamagedRunDirError naming the file.
    The mapping is not validated: :func:`asyncfl.config.loader.validate` does that."""
    from asyncfl.config.loader import parse_yaml

    data = read_run_bytes(path, MAX_SCENARIO_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedRunDirError(path, f"is not UTF-8 text (byte {exc.start})") from None
    try:
        return parse_yaml(text, path.name)
    except AsyncFLError as exc:
        message = exc.one_line()
        if message.startswith(f"{path.name}: "):
            message = message[len(path.name) + 2 :]
        raise DamagedRunDirError(path, message) from None
    except (ValueError, RecursionError, TypeError) as exc:  # e.g. an int of 5,000 digits
        raise DamagedRunDirError(path, f"is not a readable scenario ({type(exc).__name__})") from None


def refuse_links(run_dir: Path) -> None:
    """Refuse (one line, exit 2) a run directory holding a symbolic link where a run file belongs,
    or anywhere in its checkpoint folder: a run writes only inside its directory, never through
    a link."""
    d = Path(run_dir)
    for name in RUN_FILES:
        if is_link(d / name):
            raise RunDirError(
                f"{d / name}: is a symbolic link where a run file belongs; a run writes only inside its "
                "directory and never through a link: remove the link (or use another --out)"
            )
    ckpt = d / CHECKPOINT_DIR
    if ckpt.is_dir():
        for p in ckpt.iterdir():
            if is_link(p):
                raise RunDirError(f"{p}: is a symbolic link in a checkpoint folder; remove it")


_TMP_NAME = re.compile(r"\.(.+)\.tmp-[0-9]+")


def _is_stale_tmp(name: str, folder_is_checkpoint: bool = False, names: Collection[str] = RUN_FILES) -> bool:
    m = _TMP_NAME.fullmatch(name)
    return m is not None and (folder_is_checkpoint or m.group(1) in names)


def remove_stale_tmp(run_dir: Path, names: Collection[str] = RUN_FILES) -> None:
    """Remove the temporary files (``.NAME.tmp-PID``, NAME one of ``names``) a killed writer left
    in ``run_dir``, and in its checkpoint folder when ``names`` holds it (a run directory's do).
    A sweep directory passes its own names. Call it holding the lock: then no other process is
    writing them."""
    d = Path(run_dir)
    folders = [(d, False)] + ([(d / CHECKPOINT_DIR, True)] if CHECKPOINT_DIR in names else [])
    for folder, is_ckpt in folders:
        if is_link(folder) or not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _is_stale_tmp(p.name, is_ckpt, names) and not p.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds an asyncfl run: a manifest, or the run.json every run writes first
    (a folder holding only a file named scenario.yaml is not one)."""
    return any(os.path.isfile(p) or is_link(p) for p in (Path(path) / MANIFEST_FILE, Path(path) / RUN_INFO_FILE))


def holds_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir/checkpoint`` holds anything (a run stopped part-way, to be resumed)."""
    d = Path(run_dir) / CHECKPOINT_DIR
    return d.is_dir() and any(d.iterdir())


def _status(path: Path) -> str:
    try:
        status = read_run_json(path / MANIFEST_FILE).get("status")
    except (OSError, AsyncFLError, AttributeError):
        return "unfinished"
    return status if status in STATUSES else "unfinished"


def check_out_dir(path: Path, scenario_yaml: str, force: bool = False) -> None:
    """Refuse, before anything is built or written, an ``--out`` that would lose results (unless
    ``force``): a non-empty directory that is not a run; a run that can be resumed (interrupted,
    unfinished, or holding a checkpoint); a finished run of a different scenario. A finished run
    of the same resolved scenario is replaced: rerunning it reproduces it. The lock file and the
    temporary files a killed run left do not count. Call it holding the lock (:func:`locked`), so
    that no other writer changes the directory between this check and the last write."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunDirError(f"--out {p}: exists and is not a directory")
    if force or not p.is_dir():
        return
    if not any(e.name != LOCK_FILE and not _is_stale_tmp(e.name) for e in p.iterdir()):
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
        same = read_run_bytes(p / SCENARIO_FILE, MAX_SCENARIO_BYTES) == scenario_yaml.encode()
    except (OSError, AsyncFLError):
        same = False
    if not same:
        raise RunDirError(
            f"--out {p}: holds a {status} run of a different scenario; use --force to replace it, or another --out"
        )


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (``DIR/.lock``, flock) while a run or resume writes
    it; a second process gets a one-line :class:`RunDirError` naming the directory instead of
    interleaving its records with the first's. The lock file is opened without following a
    symbolic link (one there is refused). No-op where flock does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o666)
    except SymlinkError:
        raise RunDirError(
            f"{path}: is a symbolic link where the lock file belongs; a run never writes through a link: remove it"
        ) from None
    except OSError as exc:
        err = _write_error(exc, path, "locking")
        if err is None:
            raise
        raise err from None
    with os.fdopen(fd, "r+b", buffering=0) as f:  # unbuffered: nothing left to flush (and fail) on close
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunDirError(f"{path}: is not a regular file where the lock file belongs; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = f.read(200).decode("utf-8", "replace").strip() or "another process"
            raise RunDirError(f"{run_dir}: in use by {holder} (a run or resume is writing it)") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}".encode())
            f.flush()
        except OSError as exc:  # the pid is a courtesy to the next process; a full disk is no reason to stop here
            if _write_error(exc, path) is None:
                raise
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


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


_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str, type(None)),
    "seed": (int, type(None)),
    "sim_time": (int, float),
    "server_version": (int,),
    "wall_time_s": (int, float),
    "final_metrics": (dict,),
    "files": (dict,),
}
"""Types of the manifest keys that readers use (checked where present; bools are no numbers)."""


def _check_manifest(mpath: Path, manifest: Any) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("status") not in STATUSES:
        raise RunDirError(f"{mpath}: not an asyncfl manifest (no valid status)")
    for key, types in _MANIFEST_TYPES.items():
        if key in manifest:
            v = manifest[key]
            if isinstance(v, bool) or not isinstance(v, types):
                raise DamagedRunDirError(mpath, f"{key!r} is a {type(v).__name__}, not a {types[0].__name__}")
    for k, v in manifest.get("final_metrics", {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DamagedRunDirError(mpath, f"final_metrics.{k} is a {type(v).__name__}, not a number")
    for name, want in manifest.get("files", {}).items():
        ok = isinstance(want, dict) and all(
            isinstance(want.get(k), t) and not isinstance(want.get(k), bool)
            for k, t in (("bytes", int), ("sha256", str))
        )
        if not ok:
            raise DamagedRunDirError(mpath, f"files.{name} is not of the form {{bytes: <int>, sha256: <hex>}}")
    return manifest


def _read_csv(path: Path, data: bytes) -> pd.DataFrame:
    try:
        return pd.read_csv(io.BytesIO(data))
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DamagedRunDirError(path, f"is not a readable CSV ({type(exc).__name__})") from None


def load_run(run_dir: str | Path) -> RunResult:
    """Read a run directory; raise :class:`RunDirError` if it is missing, incomplete or altered.

    Reading is strict and bounded: the manifest is JSON of at most :data:`MAX_JSON_BYTES`, nested
    at most :data:`MAX_JSON_DEPTH`, with no number longer than 100 characters, in UTF-8; the data
    files must have the sizes and hashes it lists; no file is read through a symbolic link."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunDirError(f"{d}: no such run directory")
    mpath = d / MANIFEST_FILE
    if not os.path.lexists(mpath):
        raise RunDirError(
            f"{d}: incomplete run directory, {MANIFEST_FILE} is missing (the run may still be going or was killed)"
        )
    try:
        manifest = _check_manifest(mpath, read_run_json(mpath, what="unreadable manifest"))
    except FileNotFoundError:
        raise RunDirError(f"{d}: incomplete run directory, {MANIFEST_FILE} is missing") from None
    files = manifest.get("files", {})
    frames = []
    for name in DATA_FILES:
        p = d / name
        if not os.path.lexists(p):
            raise RunDirError(f"{d}: incomplete run directory, {name} is missing")
        want = files.get(name)
        if want is None:
            raise RunDirError(f"{d}: manifest does not list {name}; the directory is incomplete")
        mismatch = f"{p}: does not match the manifest ({{}} bytes, expected {want['bytes']}); truncated or altered"
        try:
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_size != want["bytes"]:
                raise RunDirError(mismatch.format(st.st_size))  # refused before reading it
            data = read_run_bytes(p, want["bytes"])
        except FileNotFoundError:
            raise RunDirError(f"{d}: incomplete run directory, {name} is missing") from None
        if _digest(data) != want:
            raise RunDirError(mismatch.format(len(data)))
        frames.append(_read_csv(p, data))
    metrics, events = frames
    return RunResult(d, manifest, metrics, events)


__all__ = [
    "EVENTS_FILE",
    "EVENTS_PARTIAL",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "METRICS_FILE",
    "METRICS_PARTIAL",
    "RUN_FILES",
    "SCENARIO_FILE",
    "NewPaths",
    "RunResult",
    "all_or_nothing",
    "check_out_dir",
    "csv_bytes",
    "holds_checkpoint",
    "is_run_dir",
    "load_run",
    "locked",
    "read_run_bytes",
    "read_run_json",
    "read_run_yaml",
    "refuse_links",
    "remove_stale_tmp",
    "write_atomic",
    "write_manifest",
]
