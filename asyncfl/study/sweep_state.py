"""The state of a sweep on disk: ``DIR/sweep.json`` (the manifest, rewritten atomically after every
run), the status of one run, and what an existing run directory holds (finished, resumable, other)."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from asyncfl.config.loader import validate
from asyncfl.config.schema import Scenario
from asyncfl.errors import (
    AsyncFLError,
    DamagedRunDirError,
    RunDirError,
)
from asyncfl.runs.rundir import (
    MANIFEST_FILE,
    SCENARIO_FILE,
    holds_checkpoint,
    load_run,
    read_run_json,
    read_run_yaml,
    write_atomic,
)
from asyncfl.study.sweep_plan import SweepPlan, SweepRun

SWEEP_FILE = "sweep.json"
SWEEP_FILES = (SWEEP_FILE,)
"""The files a sweep itself writes in its directory (its runs write their own directories): a
rerun removes the temporary files a killed sweep left of these (see
:func:`asyncfl.runs.rundir.remove_stale_tmp`)."""
FINISHED = ("completed", "diverged")
"""Run statuses a rerun keeps: a diverged run is a result (deterministic), not a failure."""
# ------------------------------------------------------------------------------------------------
# The sweep manifest
# ------------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def read_sweep_manifest(sweep_dir: str | Path) -> dict[str, Any]:
    """``DIR/sweep.json`` as a dict; :class:`RunDirError` if missing or unreadable."""
    p = Path(sweep_dir) / SWEEP_FILE
    if not os.path.lexists(p):
        raise RunDirError(f"{sweep_dir}: not a sweep directory ({SWEEP_FILE} is missing)")
    data = read_run_json(p, what="unreadable sweep manifest")  # strict and bounded, never through a link
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise RunDirError(f"{p}: not an asyncfl sweep manifest (no runs list)")
    if not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in data["runs"]):
        raise DamagedRunDirError(p, "a run entry is not an object with a name")
    if not isinstance(data.get("grid", {}), dict):
        raise DamagedRunDirError(p, "'grid' is not an object")
    return data


class SweepManifest:
    def __init__(self, out: Path, plan: SweepPlan, backend: str, created: str | None) -> None:
        from asyncfl.version import __version__

        self.path = out / SWEEP_FILE
        self.head: dict[str, Any] = {
            "asyncfl": __version__,
            "scenario": plan.source,
            "base_dir": str(plan.base_dir),
            "set": plan.overrides,
            "grid": plan.grid,
            "seeds": plan.seeds,
            "backend": backend,
            "created": created or _now(),
        }
        self.base = plan.base
        self.runs: dict[str, SweepRun] = {r.name: r for r in plan.runs}

    def update(self, run: SweepRun) -> None:
        self.runs[run.name] = run
        self.write()

    def write(self) -> None:
        body = {
            **self.head,
            "updated": _now(),
            "counts": count_statuses(self.runs.values()),
            "base_scenario": self.base,
            "runs": [r.entry() for r in self.runs.values()],
        }
        write_atomic(self.path, (json.dumps(body, indent=2, default=str) + "\n").encode())


def count_statuses(runs: Iterable[SweepRun]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        out[r.status] = out.get(r.status, 0) + 1
    return dict(sorted(out.items()))


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"


def _scenario_there(run_dir: Path) -> Scenario | None:
    """The scenario a run directory holds; None if it has none that validates (damaged)."""
    try:
        return validate(read_run_yaml(run_dir / SCENARIO_FILE))
    except (AsyncFLError, OSError):
        return None


def existing_state(run_dir: Path, scenario: Scenario) -> tuple[str, str | None]:
    """('done', status) if the directory holds this finished run; ('resume', None) if it holds
    this run stopped part-way (killed before its manifest, or status interrupted: the runner
    continues it from its last checkpoint, or from the start if it has none); ('redo', None) if it
    must be cleared and run again; ('other', difference) if it holds a different finished run;
    ('other_stopped', difference) if it holds a different run stopped part-way that could be
    continued (status interrupted, or a checkpoint)."""
    if not run_dir.exists():
        return "redo", None
    status: str | None
    try:
        status = load_run(run_dir).status
    except RunDirError:
        mpath = run_dir / MANIFEST_FILE
        if not mpath.is_file():
            status = None  # killed before its manifest
        else:
            try:
                status = read_run_json(mpath).get("status")
            except (AsyncFLError, OSError, AttributeError):
                status = None
            if status != "interrupted":
                return "redo", None  # damaged results of a finished or failed run
    if status is not None and status not in FINISHED and status != "interrupted":
        return "redo", None
    there = _scenario_there(run_dir)
    if there is None:
        return "redo", None
    if there == scenario:
        return ("done", status) if status in FINISHED else ("resume", None)
    difference = _first_difference(there.model_dump(mode="json"), scenario.model_dump(mode="json"))
    if status in FINISHED:
        return "other", difference
    if status == "interrupted" or holds_checkpoint(run_dir):
        return "other_stopped", difference
    return "redo", None  # killed before its first checkpoint: nothing there to keep


# ------------------------------------------------------------------------------------------------
# One writer per sweep directory
# ------------------------------------------------------------------------------------------------

SWEEP_LOCK = ".sweep.lock"
"""The lock file of a sweep directory: held (flock) by the sweep writing it, from the checks of
what the directory holds to its last write, and removed when released; it names its holder
(pid, command, since when)."""


def _open_lock(out: Path) -> int:
    """An fd of ``out/SWEEP_LOCK`` holding its flock; RunDirError naming the holder if another
    process holds it. The file is removed on release, so a lock taken on a file that was
    meanwhile removed (or replaced) is dropped and taken again on the current one."""
    import fcntl

    path = out / SWEEP_LOCK
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise RunDirError(f"--out {out}: cannot open its lock file {SWEEP_LOCK} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(
                f"--out {out}: another sweep is writing there ({' '.join(holder.split())}); "
                "wait for it to end, or use another --out"
            ) from None
        mine = os.fstat(fd)
        try:
            there = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            there = None
        if there is not None and (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        os.close(fd)  # its holder removed it as we opened it: lock the current file


@contextmanager
def sweep_locked(out: Path, command: Sequence[str] | None = None) -> Iterator[bool]:
    """Hold the sweep directory ``out`` (created if missing) for this process; yields whether it
    was created here. A second sweep into the same directory gets a one-line :class:`RunDirError`
    naming the holder. The lock file is opened without following a symlink and removed on
    release (a refused sweep leaves the directory as it was). No-op lock where flock does not
    exist (the directory is still created)."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"--out {out}: exists and is not a directory") from None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield created
        return
    fd = _open_lock(out)
    try:
        text = f"pid {os.getpid()}: {' '.join(command) if command else 'asyncfl sweep'} (since {_now()})\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        yield created
    finally:
        try:
            os.unlink(out / SWEEP_LOCK)
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
