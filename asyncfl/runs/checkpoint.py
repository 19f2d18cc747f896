"""Checkpoints: the whole simulation state, saved atomically, so a killed run resumes exactly.

Layout inside a run directory::

    events.partial.csv, metrics.partial.csv   records already final, appended at each checkpoint
    checkpoint/state-<g>.json                 engine snapshot + backend plain data + partial sizes
                                              + the SHA-256 of tensors-<g>.pt, of the partial
                                              files' bytes so far and of scenario.yaml
    checkpoint/tensors-<g>.pt                 model versions, computed updates (torch.save)
    checkpoint/latest.json                    {"generation": g}: the commit point, replaced last

A checkpoint appends the drained records to the partial files, removes any stale ``state-<g>.json``
(left by a crash before an earlier commit of g), writes generation g's tensors and then its state
under temporary names and renames each into place, then replaces ``latest.json``. A crash anywhere
leaves the previous generation intact; on resume the partial files are cut back to the sizes that
generation recorded, so rows written after it are dropped and written again identically.

So ``state-<g>.json`` exists only once ``tensors-<g>.pt`` is complete, and it records the tensors'
hash: a generation is complete when both files are there and agree. If ``latest.json`` is missing
(a crash between the state's rename and the commit of the first generation, or a deleted file),
resume falls back to the newest complete generation. A damaged checkpoint (unreadable, wrong
structure, tensors that do not match) is a one-line :class:`RunDirError`, never a traceback, and
nothing is deleted.

What resume checks besides the checkpoint's own files: that the partial record files begin with
exactly the bytes the generation recorded (their SHA-256, kept as a running hash while the run
appends, so a checkpoint costs no re-read), and that ``scenario.yaml`` is the one the run was
checkpointed under: an edited scenario would continue the run under other settings and mix two
scenarios in one events.csv. Either is a one-line error naming the file; nothing is changed.
States written before these digests existed are resumed without those checks.

Tensors are read with ``torch.load(weights_only=True)``: no pickle of arbitrary objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from asyncfl.bounded import InputLimitError, SymlinkError, is_link, loads_json, open_nofollow, read_file
from asyncfl.errors import RunDirError
from asyncfl.runs.rundir import (
    CHECKPOINT_DIR,
    EVENTS_PARTIAL,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_SCENARIO_BYTES,
    MAX_STATE_BYTES,
    METRICS_PARTIAL,
    SCENARIO_FILE,
    _write_error,
    csv_bytes,
    read_run_bytes,
    write_atomic,
)
from asyncfl.sim.records import EVENT_COLUMNS, METRIC_COLUMNS, EventRecord, MetricRecord

LATEST = "latest.json"
FORMAT = 2
"""Version 2: pending jobs carry their due time (asyncfl.exec.torch_backend.TorchBackend.state). The state's
``tensors_sha256`` is optional (checkpoints written before it are still read)."""

_STATE_NAME = re.compile(r"state-([0-9]+)\.json")
_START_OVER = "start the run over with asyncfl run --force"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: engine snapshot, backend data and tensors, and extra run info."""

    generation: int
    engine: dict[str, Any]
    backend: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]
    state_path: Path = field(default=Path(), compare=False)
    """The ``state-<g>.json`` it was read from (for error messages)."""
    partial_sizes: dict[str, int] = field(default_factory=dict, compare=False)
    """Sizes in bytes of the partial record files when it was written (``events``, ``metrics``)."""
    partial_sha256: dict[str, str] | None = field(default=None, compare=False)
    """SHA-256 of those first ``partial_sizes`` bytes (None: a state written before it)."""
    scenario_sha256: str | None = field(default=None, compare=False)
    """SHA-256 of the run's scenario.yaml when it was written (None: a state written before it)."""
    partial_hashes: dict[str, Any] = field(default_factory=dict, compare=False)
    """After :func:`load_checkpoint`: running ``hashlib.sha256`` objects of the verified partial
    prefixes, for the resumed :class:`Checkpointer` to continue."""


def _append(path: Path, columns: tuple[str, ...], rows: list[Any], digest: Any) -> int:
    """Append rows (header first if the file is new); fsync; update the running hash ``digest``
    with the bytes written; return the new size in bytes.

    The file is opened without following a symbolic link (one there is refused). If the write
    fails (a full disk), the file is cut back to its size before it, so that it holds whole rows
    only, and the error is one line naming the file (exit 4 for a full disk)."""
    try:
        fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except SymlinkError as exc:
        raise RunDirError(f"{path}: {exc.reason}; remove it") from None
    except OSError as exc:
        err = _write_error(exc, path)
        if err is None:
            raise
        raise err from None
    try:
        before = os.fstat(fd).st_size
        body = csv_bytes(columns, rows)
        if before > 0:
            body = body.split(b"\n", 1)[1]  # drop the header
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            if isinstance(exc, OSError):
                err = _write_error(exc, path)
                if err is not None:
                    raise err from None
            raise
        digest.update(body)
        return before + len(body)
    finally:
        os.close(fd)


class Checkpointer:
    """Writes generations of checkpoints into ``run_dir``: a new run's (``resumed`` None: no
    partial files yet) or one resumed from ``resumed`` (from :func:`load_checkpoint`, whose partial
    files were verified and are then cut back to its sizes)."""

    def __init__(self, run_dir: Path, resumed: Checkpoint | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / CHECKPOINT_DIR
        self.generation = 0 if resumed is None else resumed.generation
        self._hashes = {key: hashlib.sha256() for key in ("events", "metrics")}
        if resumed is not None and resumed.partial_hashes:
            self._hashes = {key: h.copy() for key, h in resumed.partial_hashes.items()}
        self.scenario_sha256 = _scenario_sha256(self.run_dir)

    def flush_records(self, events: list[EventRecord], metrics: list[MetricRecord]) -> dict[str, int]:
        """Append final records to the partial files; return their sizes."""
        ev = _append(self.run_dir / EVENTS_PARTIAL, EVENT_COLUMNS, events, self._hashes["events"])
        me = _append(self.run_dir / METRICS_PARTIAL, METRIC_COLUMNS, metrics, self._hashes["metrics"])
        return {"events": ev, "metrics": me}

    def save(
        self,
        engine_snapshot: dict[str, Any],
        backend_data: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        sizes: dict[str, int],
        info: dict[str, Any],
    ) -> int:
        """Write the next generation and commit it; returns its number."""
        if is_link(self.dir):
            raise RunDirError(f"{self.dir}: is a symbolic link where the checkpoint folder belongs; remove it")
        try:
            self.dir.mkdir(exist_ok=True)
        except OSError as exc:
            err = _write_error(exc, self.dir)
            if err is None:
                raise
            raise err from None
        g = self.generation + 1
        # A state-<g>.json left by a crash before an earlier commit of g (this run resumed from
        # g - 1) must never sit beside the new tensors-<g>.pt: remove it before they are replaced.
        (self.dir / f"state-{g}.json").unlink(missing_ok=True)
        buf = io.BytesIO()
        torch.save(tensors, buf)
        blob = buf.getvalue()
        write_atomic(self.dir / f"tensors-{g}.pt", blob)
        state = {
            "format": FORMAT,
            "generation": g,
            "engine": engine_snapshot,
            "backend": backend_data,
            "partial_sizes": sizes,
            "info": info,
            "tensors_sha256": hashlib.sha256(blob).hexdigest(),
            "partial_sha256": {key: h.hexdigest() for key, h in self._hashes.items()},
            "scenario_sha256": self.scenario_sha256,
        }
        write_atomic(self.dir / f"state-{g}.json", json.dumps(state, allow_nan=False).encode())
        write_atomic(self.dir / LATEST, json.dumps({"generation": g}).encode())
        for old in self.dir.iterdir():
            if old.name.startswith(("state-", "tensors-")) and not old.name.startswith(
                (f"state-{g}.", f"tensors-{g}.")
            ):
                old.unlink(missing_ok=True)
        self.generation = g
        return g


def _scenario_sha256(run_dir: Path) -> str | None:
    """SHA-256 of ``run_dir/scenario.yaml`` (None if there is none: a run without a directory)."""
    path = run_dir / SCENARIO_FILE
    if not os.path.lexists(path):
        return None
    return hashlib.sha256(read_run_bytes(path, MAX_SCENARIO_BYTES)).hexdigest()


def _checkpoint_dir(run_dir: Path) -> Path | None:
    """``run_dir/checkpoint`` if it is a directory, None if absent; anything else is an error."""
    d = Path(run_dir) / CHECKPOINT_DIR
    if not os.path.lexists(d):
        return None
    if is_link(d):
        raise RunDirError(f"{d}: is a symbolic link where the checkpoint folder belongs; remove it, then {_START_OVER}")
    if not d.is_dir():
        raise RunDirError(f"{d}: is not a directory, so the run cannot be resumed; move it away and {_START_OVER}")
    return d


def _state_generations(d: Path) -> list[int]:
    """Generations that have a ``state-<g>.json``, newest first."""
    try:
        names = [p.name for p in d.iterdir()]
    except OSError as exc:
        raise RunDirError(f"{d}: unreadable ({type(exc).__name__}); the run cannot be resumed") from None
    return sorted((int(m.group(1)) for m in map(_STATE_NAME.fullmatch, names) if m), reverse=True)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint to resume from: a committed generation, or (without
    ``latest.json``) a state file; :func:`load_checkpoint` then reads it or raises. Tensors alone
    (a crash while the first generation was written) are no checkpoint."""
    d = _checkpoint_dir(run_dir)
    if d is None:
        return False
    return os.path.lexists(d / LATEST) or bool(_state_generations(d))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Damaged(RunDirError):
    """A checkpoint file that cannot be used: ``path`` and the reason ``what``."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        super().__init__(f"{path}: {what}; the run cannot be resumed from this checkpoint ({_START_OVER})")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_bytes(path: Path, max_bytes: int | None) -> bytes:
    """A checkpoint file's bytes (never through a link, only a regular file, bounded)."""
    try:
        return read_file(path, max_bytes)
    except FileNotFoundError:
        raise _Damaged(path, "missing") from None
    except InputLimitError as exc:
        raise _Damaged(path, f"unreadable: it {exc.reason}") from None
    except OSError as exc:
        raise _Damaged(path, f"unreadable ({type(exc).__name__})") from None


def _read_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Strict, bounded JSON (UTF-8, nesting, number length: asyncfl.bounded)."""
    try:
        return loads_json(_read_bytes(path, max_bytes), MAX_JSON_DEPTH)
    except InputLimitError as exc:
        raise _Damaged(path, f"unreadable: it {exc.reason}") from None


def _committed_generation(d: Path) -> int:
    path = d / LATEST
    data = _read_json(path)
    g = data.get("generation") if isinstance(data, dict) else None
    if not isinstance(g, int) or isinstance(g, bool) or g < 1:
        raise _Damaged(path, 'not of the form {"generation": <positive integer>}')
    return g


def _load_generation(d: Path, g: int) -> Checkpoint:  # noqa: C901 (a flat run of one-line damage checks, one per field of the state file)
    """Generation ``g`` of checkpoint dir ``d``, fully validated (or a RunDirError naming the file)."""
    spath, tpath = d / f"state-{g}.json", d / f"tensors-{g}.pt"
    state = _read_json(spath, MAX_STATE_BYTES)
    if not isinstance(state, dict):
        raise _Damaged(spath, f"holds a JSON {type(state).__name__}, not an object")
    if state.get("format") != FORMAT:
        raise _Damaged(spath, f"checkpoint format {_short(state.get('format'))} is not supported by this asyncfl")
    if state.get("generation") != g or not _is_int(state.get("generation")):
        raise _Damaged(spath, f"records generation {_short(state.get('generation'))}, not {g}")
    for key in ("engine", "backend", "partial_sizes"):
        if not isinstance(state.get(key), dict):
            raise _Damaged(spath, f"{key!r} is missing or not an object")
    if not isinstance(state.get("info", {}), dict):
        raise _Damaged(spath, "'info' is not an object")
    for key in ("events", "metrics"):
        size = state["partial_sizes"].get(key)
        if not _is_int(size) or size < 0:
            raise _Damaged(spath, f"partial_sizes.{key} is missing or not a size in bytes")
    digest = state.get("tensors_sha256")
    if digest is not None and not isinstance(digest, str):
        raise _Damaged(spath, "'tensors_sha256' is not a string")
    blob = _read_bytes(tpath, None)
    if digest is not None and hashlib.sha256(blob).hexdigest() != digest:
        raise _Damaged(
            tpath, f"does not match the SHA-256 that {spath.name} recorded (damaged or from another generation)"
        )
    try:
        tensors = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged bytes make torch.load raise almost anything (UnpicklingError, EOFError, ...)
        raise _Damaged(tpath, f"unreadable ({type(exc).__name__})") from None
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise _Damaged(tpath, "does not hold a mapping of names to tensors")
    sizes = {key: int(state["partial_sizes"][key]) for key in ("events", "metrics")}
    partial = state.get("partial_sha256")
    if partial is not None and not (
        isinstance(partial, dict) and all(_is_sha256(partial.get(key)) for key in ("events", "metrics"))
    ):
        raise _Damaged(spath, "'partial_sha256' is not of the form {events: <sha256>, metrics: <sha256>}")
    scenario = state.get("scenario_sha256")
    if scenario is not None and not _is_sha256(scenario):
        raise _Damaged(spath, "'scenario_sha256' is not a SHA-256")
    partial = None if partial is None else {key: partial[key] for key in ("events", "metrics")}
    info = state.get("info", {})
    return Checkpoint(g, state["engine"], state["backend"], tensors, info, spath, sizes, partial, scenario)


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _newest_complete(d: Path) -> Checkpoint:
    """Without ``latest.json``: the newest generation whose state and tensors are both valid."""
    first: _Damaged | None = None
    for g in _state_generations(d):
        try:
            return _load_generation(d, g)
        except _Damaged as exc:
            first = first or exc
    why = f" (newest: {first.path.name} {first.what})" if first is not None else ""
    raise _Damaged(d / LATEST, f"missing and no generation in {d} is complete{why}")


def load_checkpoint(run_dir: Path, *, cut: bool = True) -> Checkpoint:
    """The committed generation (or, without ``latest.json``, the newest complete one), with the
    partial record files checked against the sizes it recorded and (``cut``) cut back to them.
    Any damage is a one-line :class:`RunDirError` naming the file, raised before anything is
    changed. With ``cut=False``, call :func:`cut_partials` once the checkpoint is restored."""
    d = _checkpoint_dir(run_dir)
    if d is None:
        raise RunDirError(f"{Path(run_dir) / CHECKPOINT_DIR}: missing; the run has no checkpoint to resume from")
    if os.path.lexists(d / LATEST):
        ckpt = _load_generation(d, _committed_generation(d))
    else:
        ckpt = _newest_complete(d)
    _check_scenario(Path(run_dir), ckpt)
    ckpt = replace(ckpt, partial_hashes=_verified_prefixes(_partials(run_dir, ckpt), ckpt))
    if cut:
        cut_partials(run_dir, ckpt)
    return ckpt


def _check_scenario(run_dir: Path, ckpt: Checkpoint) -> None:
    """The run's scenario.yaml must be the one ``ckpt`` was written under."""
    if ckpt.scenario_sha256 is None:
        return
    now = _scenario_sha256(run_dir)
    if now != ckpt.scenario_sha256:
        raise RunDirError(
            f"{run_dir / SCENARIO_FILE}: differs from the scenario checkpoint generation {ckpt.generation} was "
            f"written under (SHA-256 {ckpt.scenario_sha256[:12]}..., now {str(now)[:12]}...); resuming would "
            f"continue the run under other settings: put the original back, or {_START_OVER}"
        )


def _verified_prefixes(partials: list[tuple[Path, int]], ckpt: Checkpoint) -> dict[str, Any]:
    """Running SHA-256 objects of each partial file's first ``size`` bytes, checked against the
    digests ``ckpt`` recorded (when it recorded them)."""
    out: dict[str, Any] = {}
    for key, (path, size) in zip(("events", "metrics"), partials, strict=True):
        h = hashlib.sha256()
        try:
            fd = open_nofollow(path, os.O_RDONLY)
            try:
                left = size
                while left > 0:
                    chunk = os.read(fd, min(left, 1 << 20))
                    if not chunk:
                        break
                    h.update(chunk)
                    left -= len(chunk)
            finally:
                os.close(fd)
        except (OSError, SymlinkError) as exc:
            raise _Damaged(path, f"unreadable ({type(exc).__name__})") from None
        if ckpt.partial_sha256 is not None and h.hexdigest() != ckpt.partial_sha256[key]:
            raise _Damaged(
                path,
                f"its first {size} bytes differ from what checkpoint generation {ckpt.generation} recorded "
                "(SHA-256; the records were edited or damaged)",
            )
        out[key] = h
    return out


def _partials(run_dir: Path, ckpt: Checkpoint) -> list[tuple[Path, int]]:
    """The partial record files and the sizes ``ckpt`` recorded; each must be at least that long."""
    run_dir = Path(run_dir)
    out = [
        (run_dir / EVENTS_PARTIAL, ckpt.partial_sizes["events"]),
        (run_dir / METRICS_PARTIAL, ckpt.partial_sizes["metrics"]),
    ]
    for p, size in out:
        if is_link(p):
            raise _Damaged(p, "is a symbolic link where a run file belongs (a run never writes through a link)")
        if not p.is_file():
            raise _Damaged(p, f"missing or not a file (checkpoint generation {ckpt.generation} recorded {size} bytes)")
        if p.stat().st_size < size:
            raise _Damaged(
                p, f"shorter ({p.stat().st_size} bytes) than checkpoint generation {ckpt.generation} recorded ({size})"
            )
    return out


def cut_partials(run_dir: Path, ckpt: Checkpoint) -> None:
    """Cut the partial record files back to the sizes ``ckpt`` recorded (rows written after it are
    dropped; the resumed run writes them again identically). Both are checked before either is cut."""
    for p, size in _partials(run_dir, ckpt):
        try:
            fd = open_nofollow(p, os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        except (OSError, SymlinkError) as exc:
            raise RunDirError(f"{p}: cannot be cut back to its checkpoint ({type(exc).__name__}: {exc})") from None


@contextlib.contextmanager
def restoring(ckpt: Checkpoint) -> Iterator[None]:
    """Wrap restoring ``ckpt`` into a freshly built engine and backend: the content errors a
    damaged or foreign snapshot causes there (a missing key, a wrong type, a snapshot of another
    scenario, a missing tensor) become a one-line :class:`RunDirError` naming the state file.
    User errors (asyncfl.errors) pass through unchanged."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise _Damaged(ckpt.state_path, f"does not fit this run's scenario or is damaged ({detail})") from None


def clear(run_dir: Path) -> None:
    """Remove checkpoint files and partial records (a finished run no longer needs them, and a new
    run starts without them). A non-directory in the checkpoint's place is removed too."""
    d = Path(run_dir) / CHECKPOINT_DIR
    if d.is_dir() and not d.is_symlink():
        shutil.rmtree(d)
    elif os.path.lexists(d):
        d.unlink()
    for name in (EVENTS_PARTIAL, METRICS_PARTIAL):
        (Path(run_dir) / name).unlink(missing_ok=True)


def read_partial(run_dir: Path, name: str) -> bytes:
    """A partial record file's bytes (b"" if absent), never read through a symbolic link."""
    p = Path(run_dir) / name
    return read_run_bytes(p, None) if os.path.lexists(p) else b""


__all__ = ["Checkpoint", "Checkpointer", "clear", "cut_partials", "has_checkpoint", "load_checkpoint", "restoring"]
