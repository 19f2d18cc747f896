"""Sweeps: a grid of scenario overrides x seeds, one run directory per point, resumable.

A sweep is planned completely -- every grid point applied with the same rules as ``--set`` and
validated -- before anything runs, so a bad key or value is one line naming it (exit 2) and no
half-started sweep. Layout of ``--out DIR``::

    DIR/sweep.json                              the sweep manifest (written atomically after every run)
    DIR/server.max_staleness=4,seed=1/          one ordinary run directory per (grid point, seed)
    ...

``sweep.json`` holds the base scenario, the grid, the seeds and one entry per run: its directory,
its overrides, its seed, its status (``pending``, ``running``, ``completed``, ``diverged``,
``failed``, ``interrupted``), wall time and, for a failure, the error.

Rerunning the same sweep into the same ``DIR`` skips every run whose directory loads (see
:func:`asyncfl.runs.rundir.load_run`) with status ``completed`` or ``diverged`` and holds the same
scenario. A run stopped part-way (status ``interrupted``, or killed before its manifest) is handed
to the runner's ``resume``, which continues from its last checkpoint (``checkpoint_every``) or
from the start; only a run whose checkpoint itself is unusable is started afresh, while a resume
that fails on bad input (a data or profile file gone) is recorded ``failed`` and its directory
kept for the next rerun. Any other run directory (failed, damaged) is cleared and run again. A
finished run, or a stopped one holding results, whose directory holds a *different* scenario is
an error (use another ``--out``, or ``force``) rather than silently kept or overwritten.
SIGINT/SIGTERM stop the sweep (exit 130/143): running runs (the local pool's workers are sent
SIGTERM) write what they have and are recorded ``interrupted``, as their own manifests say, and
the message names them and how to resume. One sweep writes a directory at a time (a lock,
``DIR/.sweep.lock``, from the checks to the last write).

Backends (:class:`SweepBackend` objects, made by name with :func:`make_backend`; same
directories, same bytes in ``metrics.csv`` / ``events.csv``, whichever ran them):

- ``local`` (:class:`LocalPool`): a :class:`concurrent.futures.ProcessPoolExecutor` (spawn) with
  ``workers`` processes; ``workers=1`` runs in this process.
- ``ray`` (:class:`RayBackend`): Ray tasks on an existing cluster (``ray_address``) or on a local Ray started here. Each
  task runs into a temporary directory on its node and returns the files, which are written here,
  so the nodes need no shared file system (they do need asyncfl installed and any data files the
  scenario names). ``gpus_per_run`` (may be fractional) reserves GPUs per task; set
  ``execution.device`` to ``auto`` or ``cuda`` for the runs to use them.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from asyncfl.config.loader import dump_scenario, parse_yaml, validate
from asyncfl.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED_SIGINT,
    EXIT_INTERRUPTED_SIGTERM,
    EXIT_USAGE,
    AsyncFLError,
    RunDirError,
    UserError,
)
from asyncfl.runs.rundir import (
    MANIFEST_FILE,
    SCENARIO_FILE,
    is_run_dir,
    load_run,
    locked,
    remove_stale_tmp,
    write_atomic,
)
from asyncfl.study.sweep_plan import (
    SweepPlan,
    SweepRun,
    grid_labels,
    parse_grid,
    plan_sweep,
    run_name,
    value_label,
    value_text,
)
from asyncfl.study.sweep_state import (
    FINISHED,
    SWEEP_FILE,
    SWEEP_FILES,
    SweepManifest,
    count_statuses,
    existing_state,
    read_sweep_manifest,
    sweep_locked,
)

BACKENDS = ("local", "ray")

ProgressFn = Callable[[str, "SweepRun"], None]
"""Called with ("start" | "skip" | "done", run) as the sweep goes."""


class SweepInterrupted(AsyncFLError):
    """A signal stopped the sweep (exit 130 for SIGINT, 143 for SIGTERM): finished runs are kept,
    the runs that were going wrote what they had; rerunning the same command resumes it."""

    exit_code = EXIT_INTERRUPTED_SIGINT

    def __init__(self, message: str, signum: int = signal.SIGINT, interrupted: Sequence[str] = ()) -> None:
        self.exit_code = EXIT_INTERRUPTED_SIGTERM if signum == signal.SIGTERM else EXIT_INTERRUPTED_SIGINT
        self.signum = signum
        self.interrupted = list(interrupted)
        super().__init__(message)

    @classmethod
    def of(cls, signum: int, runs: Sequence[SweepRun], command: Sequence[str] | None) -> SweepInterrupted:
        """The one-line account of a stopped sweep: which runs were interrupted, what is kept,
        how to resume."""
        stopped = [r.name for r in runs if r.status == "interrupted"]
        done = sum(1 for r in runs if r.status in FINISHED)
        waiting = sum(1 for r in runs if r.status == "pending")
        named = ", ".join(stopped[:5]) + (f", ... ({len(stopped) - 5} more)" if len(stopped) > 5 else "")
        what = f"{len(stopped)} run{'s' if len(stopped) != 1 else ''} interrupted" + (f" ({named})" if stopped else "")
        how = f": {' '.join(command)}" if command else ""
        return cls(
            f"sweep interrupted by {signal.Signals(signum).name}: {what}, {done} finished and kept, "
            f"{waiting} not started; rerun the same command to resume{how}",
            signum,
            stopped,
        )


class SweepFailedError(AsyncFLError):
    """Some runs of a sweep failed (exit 1; exit 2 when every one failed on bad input); the others
    are written and the sweep can be resumed."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        self.exit_code = exit_code
        super().__init__(message)


# ------------------------------------------------------------------------------------------------
# Executing one run (in a worker process, a Ray task, or here)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTask:
    """What a worker needs: the resolved scenario as YAML text (picklable, exactly what goes to
    scenario.yaml), where to write, where relative paths start, the device and torch threads."""

    name: str
    scenario_yaml: str
    out_dir: str | None
    base_dir: str
    device: str | None
    threads: int | None
    command: list[str] | None
    checkpoint_every: str | None = None
    resume: bool = False


@dataclass(frozen=True)
class RunOutcome:
    name: str
    status: str
    wall_time_s: float
    error: str | None = None
    files: dict[str, bytes] | None = None
    user_error: bool = False
    """The failure was bad input (a :class:`UserError`), not a bug or a crash."""


def execute(task: RunTask) -> RunOutcome:
    """Run one sweep point with the runner (or continue it from its checkpoint when
    ``task.resume``); a divergence is a result, a signal an interruption, any other error a
    failure. A resume starts the run afresh only when its checkpoint is unusable
    (:class:`RunDirError`); any other error keeps the directory as it is, to be continued by a
    later sweep once the cause is fixed."""
    from asyncfl.errors import DivergedError
    from asyncfl.runs import runner

    interrupted_type: Any = getattr(runner, "RunInterrupted", ())
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    t0 = time.perf_counter()
    user_error = False
    try:
        scenario = validate(parse_yaml(task.scenario_yaml, f"{task.name}/{SCENARIO_FILE}"))
        result = None
        if task.resume and task.out_dir is not None:
            try:
                result = runner.resume(task.out_dir, device=task.device, command=task.command)
            except RunDirError:
                _clear_unusable(Path(task.out_dir))  # its checkpoint cannot be used: start afresh
        if result is None:
            # force: the sweep itself decided this directory is to be (re)written (see run_sweep)
            kwargs: dict[str, Any] = {
                "base_dir": task.base_dir,
                "device": task.device,
                "command": task.command,
                "force": True,
            }
            if task.checkpoint_every is not None:
                kwargs["checkpoint_every"] = task.checkpoint_every
            result = runner.run(scenario, task.out_dir, **kwargs)
        status, error = result.status, None
    except DivergedError as exc:
        status, error = "diverged", exc.one_line()
    except AsyncFLError as exc:
        status, error, user_error = "failed", exc.one_line(), isinstance(exc, UserError)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by SIGINT"
    except Exception as exc:
        if interrupted_type and isinstance(exc, interrupted_type):
            status, error = "interrupted", str(exc)
        else:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            status, error = "failed", f"{type(exc).__name__}: {exc} | {''.join(tb[-3:]).strip()}"
    return RunOutcome(task.name, status, round(time.perf_counter() - t0, 3), error, user_error=user_error)


def _clear_unusable(run_dir: Path) -> None:
    """Remove a run directory whose checkpoint cannot be resumed, so the run starts afresh; one
    that another process is writing (its lock is held) is a RunDirError and stays as it is."""
    if not run_dir.is_dir():
        return
    with locked(run_dir):
        shutil.rmtree(run_dir)


def execute_returning_files(task: RunTask) -> RunOutcome:
    """As :func:`execute`, into a temporary directory whose files are returned (Ray tasks)."""
    tmp = tempfile.mkdtemp(prefix="asyncfl-run-")
    try:
        outcome = execute(replace(task, out_dir=os.path.join(tmp, "run")))
        run_dir = Path(tmp) / "run"
        files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} if run_dir.is_dir() else {}
        return replace(outcome, files=files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_returned_files(run_dir: Path, files: Mapping[str, bytes]) -> None:
    """Data files first, the manifest last (it carries their digests), each atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == MANIFEST_FILE):
        if "/" in name or name.startswith("."):
            continue
        write_atomic(run_dir / name, files[name])


def _init_worker(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------
# Backends: where runs execute. The sweep calls start, then submit while slots are free and wait
# for outcomes, then close; terminate stops everything at once (a signal, an error).
# ------------------------------------------------------------------------------------------------


class SweepBackend:
    """What a sweep needs from where its runs execute."""

    name = ""
    resumes = True
    """Whether a run stopped part-way is continued in its directory (else it is rerun afresh)."""
    slots = 1
    """Runs in flight at once (set by :meth:`start`)."""

    def check(self, runs: Sequence[SweepRun]) -> None:
        """Refuse, before anything is written, runs that cannot execute here (a UserError)."""

    def start(self, out: Path, n_tasks: int) -> None:
        """Get ready for ``n_tasks`` runs into the sweep directory ``out``."""

    def submit(self, task: RunTask) -> None:
        raise NotImplementedError

    def wait(self) -> list[RunOutcome]:
        """Block until at least one submitted run ends; their outcomes."""
        raise NotImplementedError

    def terminate(self) -> None:
        """Stop every run now (each writes what it has and status ``interrupted``)."""

    def close(self) -> None:
        """Release what :meth:`start` took, after the last outcome."""


class LocalPool(SweepBackend):
    """``workers`` runs at once in spawned processes (a
    :class:`concurrent.futures.ProcessPoolExecutor`), or in this process when ``workers == 1``.
    ``threads``: torch threads per run (default: one worker keeps this process's setting; several
    use :func:`default_threads`). Used as a context manager (``with LocalPool(2) as pool:``), its
    worker processes outlive one sweep and serve the next ones (a study of several sweeps starts
    and warms its workers once)."""

    name = "local"

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        _check_counts(workers, threads)
        self.workers, self.threads = workers, threads
        self._pool: Any = None
        self._pending: dict[Any, str] = {}
        self._inline: list[RunTask] = []
        self._torch_threads: int | None = None
        self._held = False

    def __enter__(self) -> LocalPool:
        self._held = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._held = False
        self.close()

    def check(self, runs: Sequence[SweepRun]) -> None:
        _check_devices(runs)

    def start(self, out: Path, n_tasks: int) -> None:
        if self._pool is not None:  # kept from the previous sweep (see __enter__)
            return
        self.slots = max(1, self.workers if self._held else min(self.workers, n_tasks))
        if self.slots == 1:  # in this process: torch's thread setting is restored by close()
            import torch

            self._torch_threads = torch.get_num_threads()
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        n_threads = self.threads if self.threads is not None else default_threads(self.slots)
        self._pool = ProcessPoolExecutor(
            max_workers=self.slots,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(n_threads,),
        )

    def submit(self, task: RunTask) -> None:
        if self._pool is None:
            self._inline.append(replace(task, threads=self.threads))
        else:
            self._pending[self._pool.submit(execute, task)] = task.name

    def wait(self) -> list[RunOutcome]:
        if self._pool is None:
            return [execute(self._inline.pop(0))]
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(list(self._pending), return_when=FIRST_COMPLETED)
        outcomes = []
        for fut in done:
            name = self._pending.pop(fut)
            try:
                outcomes.append(fut.result())
            except Exception as exc:  # the worker process died (killed, out of memory)
                outcomes.append(RunOutcome(name, "failed", 0.0, f"worker died: {type(exc).__name__}: {exc}"))
        return outcomes

    def terminate(self) -> None:
        if self._pool is not None:
            _terminate_pool(self._pool)
            self._pool = None
        self.close()

    def close(self) -> None:
        if self._pool is not None and not self._held:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)
            self._torch_threads = None


TERMINATE_GRACE_S = 10.0
"""How long worker processes get, after SIGTERM, to write their checkpoint and manifest."""


def _terminate_pool(pool: Any, grace: float = TERMINATE_GRACE_S) -> None:
    """Stop a process pool now: cancel queued runs, send each worker process SIGTERM (a run
    writes its records, a checkpoint and status 'interrupted', as on SIGTERM to ``asyncfl run``),
    wait up to ``grace`` seconds, then kill the ones still alive."""
    # Take the processes first: shutdown() forgets them (it sets pool._processes = None).
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


class RayBackend(SweepBackend):
    """Ray tasks on an existing cluster (``address``) or on a local Ray started here, ``workers``
    in flight. Each task runs into a temporary directory on its node and returns the files, which
    are written into the sweep directory here (no shared file system needed), so a run stopped
    part-way is rerun, not continued."""

    name = "ray"
    resumes = False

    def __init__(
        self,
        workers: int = 1,
        threads: int | None = None,
        address: str | None = None,
        gpus_per_run: float = 0.0,
        cpus_per_run: float = 1.0,
    ) -> None:
        _check_counts(workers, threads)
        if gpus_per_run < 0 or cpus_per_run <= 0:
            raise UserError("--gpus-per-run must be >= 0 and --cpus-per-run > 0")
        self.workers, self.address = workers, address
        self.gpus_per_run, self.cpus_per_run = gpus_per_run, cpus_per_run
        self.threads = threads if threads is not None else max(1, math.ceil(cpus_per_run))
        self._pending: dict[Any, str] = {}
        self._we_started = False
        self._out = Path(".")

    def check(self, runs: Sequence[SweepRun]) -> None:
        if self.address:
            _probe_ray_address(self.address)

    def start(self, out: Path, n_tasks: int) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("--backend ray needs Ray: pip install 'asyncfl[ray]'") from None
        self._out, self.slots = out, self.workers
        if n_tasks and not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"--ray-address {self.address}: cannot connect to Ray: {exc}") from None
            self._we_started = True
        remote = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)
        self._remote: Any = remote(execute_returning_files)

    def submit(self, task: RunTask) -> None:
        self._pending[self._remote.remote(replace(task, threads=self.threads, out_dir=None))] = task.name

    def wait(self) -> list[RunOutcome]:
        import ray

        done, _ = ray.wait(list(self._pending), num_returns=1)
        outcomes = []
        for ref in done:
            name = self._pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # the task or its worker died
                outcome = RunOutcome(name, "failed", 0.0, f"ray task failed: {type(exc).__name__}: {exc}")
            if outcome.files:
                _write_returned_files(self._out / name, outcome.files)
            outcomes.append(replace(outcome, files=None))
        return outcomes

    def terminate(self) -> None:
        import ray

        for ref in self._pending:
            ray.cancel(ref, force=True)
        self._pending.clear()
        self.close()

    def close(self) -> None:
        if self._we_started:
            import ray

            ray.shutdown()
            self._we_started = False


def _check_counts(workers: int, threads: int | None) -> None:
    if workers < 1:
        raise UserError(f"--workers: must be >= 1 (got {workers})")
    if threads is not None and threads < 1:
        raise UserError(f"--threads: must be >= 1 (got {threads})")


def make_backend(
    name: str = "local",
    *,
    workers: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    gpus_per_run: float = 0.0,
    cpus_per_run: float = 1.0,
) -> SweepBackend:
    """The backend called ``name`` (``local`` or ``ray``, see :data:`BACKENDS`) with its options;
    bad options are a one-line UserError naming the flag."""
    if name not in BACKENDS:
        raise UserError(f"--backend: unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
    if name == "local":
        if gpus_per_run > 0 or ray_address:
            raise UserError("--gpus-per-run and --ray-address apply to --backend ray only")
        return LocalPool(workers, threads)
    return RayBackend(workers, threads, ray_address, gpus_per_run, cpus_per_run)


def _probe_ray_address(address: str, timeout: float = 5.0) -> None:
    """A host:port (or ray://host:port) where nothing answers is a one-line UserError within
    ``timeout`` seconds; ray.init would retry for minutes, printing multi-line warnings. Other
    forms (``auto``, a bare host) are left to Ray."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(
            f"--ray-address {address}: nothing answers there ({exc.strerror or type(exc).__name__}); "
            "start the cluster with `ray start --head` and give its address, or use --backend local"
        ) from None


def _check_devices(runs: Iterable[SweepRun]) -> None:
    """Each device the runs ask for exists here (a UserError naming execution.device if not)."""
    devices = sorted({r.scenario.execution.device for r in runs})
    if devices and devices != ["cpu"]:
        from asyncfl.runs.runner import resolve_device

        for device in devices:
            resolve_device(device)


# ------------------------------------------------------------------------------------------------
# Running a sweep
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: its directory and every run with its final status."""

    out_dir: Path
    runs: list[SweepRun]

    @property
    def counts(self) -> dict[str, int]:
        return count_statuses(self.runs)

    @property
    def failed(self) -> list[SweepRun]:
        return [r for r in self.runs if r.status not in FINISHED]

    def frame(self) -> Any:
        """The tidy metrics of every run (:func:`asyncfl.study.results.load_sweep`)."""
        from asyncfl.study.results import load_sweep

        return load_sweep(self.out_dir)


def default_threads(workers: int) -> int:
    """Torch threads per run for the local backend's worker processes: ``OMP_NUM_THREADS`` when
    set, else the cores shared among the workers (never more threads than cores: spinning
    OpenMP threads on a busy machine make small tensor ops far slower)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def sweep_states(
    plan: SweepPlan, out_dir: str | Path, *, force: bool = False, resumes: bool = True
) -> list[tuple[SweepRun, str]]:
    """What a sweep into ``out_dir`` would do with each run of ``plan``: ``done`` (kept; the run
    carries its status and ``skipped``), ``resume`` (continued from where it stopped) or
    ``redo`` (cleared and run). A run there made from a different scenario is a RunDirError."""
    from asyncfl.runs.runner import absolutize

    out = Path(out_dir)
    states = []
    for r in plan.runs:
        # a run directory holds its scenario with relative paths resolved (runner.absolutize)
        state, info = ("redo", None) if force else existing_state(out / r.name, absolutize(r.scenario, plan.base_dir))
        if state == "other":
            raise RunDirError(
                f"--out {out}: run {r.name} there was made from a different scenario ({info}); "
                "use another --out, or --force to rerun it"
            )
        if state == "other_stopped":
            raise RunDirError(
                f"--out {out}: run {r.name} there is an interrupted run of a different scenario ({info}); "
                "use another --out, or --force to discard it and rerun"
            )
        if state == "done":
            r = replace(r, status=str(info), skipped=True)
        elif state == "resume" and not resumes:
            state = "redo"
        states.append((r, state))
    return states


def run_sweep(
    plan: SweepPlan,
    out_dir: str | Path,
    *,
    backend: str | SweepBackend = "local",
    force: bool = False,
    progress: ProgressFn | None = None,
    command: list[str] | None = None,
    checkpoint_every: str | int | None = None,
    **backend_options: Any,
) -> SweepResult:
    """Run every run of ``plan`` that is not already finished in ``out_dir``.

    ``backend``: a :class:`SweepBackend` (:class:`LocalPool`, :class:`RayBackend`) or its name,
    made by :func:`make_backend` with ``backend_options`` (``workers``, ``threads``,
    ``ray_address``, ``gpus_per_run``, ``cpus_per_run``). ``force``: rerun everything.
    ``checkpoint_every``: passed to the runner (``N`` server steps or ``Ns`` seconds), so that a
    long run stopped part-way continues from its checkpoint on the next sweep (local backend).
    ``command``: the command line, recorded and named in messages.

    One sweep writes a directory at a time: its lock (:func:`sweep_locked`) is held from the
    checks of what the directory holds to the last write; a second sweep there is a one-line
    RunDirError naming the holder. Runs that fail are recorded (status ``failed``) and the rest go
    on; a divergence is a result (``diverged``). SIGINT/SIGTERM stop the sweep: running runs write
    what they have and are recorded as their directories say, and :class:`SweepInterrupted`
    (exit 130/143) names them and how to resume. Raises :class:`SweepFailedError` at the end if
    any run failed (exit 2 when every failure was bad input)."""
    runner = backend if isinstance(backend, SweepBackend) else make_backend(backend, **backend_options)
    if checkpoint_every is not None:
        from asyncfl.runs.runner import parse_checkpoint_every

        parse_checkpoint_every(checkpoint_every)  # a bad value is an error before anything runs
    out = Path(out_dir)
    with sweep_locked(out, command) as created:
        # what a sweep killed mid-write left (we hold the lock: no other sweep writes here)
        remove_stale_tmp(out, SWEEP_FILES)
        try:
            _check_out(out, force)
            states = sweep_states(plan, out, force=force, resumes=runner.resumes)
            todo = [r for r, state in states if state != "done"]
            runner.check(todo)
        except BaseException:
            if created:  # nothing of this sweep is left behind
                shutil.rmtree(out, ignore_errors=True)
            raise
        manifest = SweepManifest(out, replace(plan, runs=[r for r, _ in states]), runner.name, _created(out))
        manifest.write()
        for r, state in states:
            if state == "done" and progress is not None:
                progress("skip", r)
            elif state == "redo" and (out / r.name).exists():
                shutil.rmtree(out / r.name)
        every = None if checkpoint_every is None else str(checkpoint_every)
        tasks = [
            RunTask(
                r.name,
                dump_scenario(r.scenario),
                str(out / r.name),
                str(plan.base_dir),
                None,
                None,
                command,
                every,
                state == "resume",
            )
            for r, state in states
            if state != "done"
        ]
        user_failed = _execute(runner, tasks, manifest, progress, command)
    result = SweepResult(out, list(manifest.runs.values()))
    if result.failed:
        first = result.failed[0]
        raise SweepFailedError(
            f"{len(result.failed)} of {len(result.runs)} runs failed (see {out / SWEEP_FILE}); "
            f"first: {first.name}: {first.error}; rerun the same command to retry them",
            EXIT_USAGE if all(r.name in user_failed for r in result.failed) else EXIT_FAILED,
        )
    return result


def _check_out(out: Path, force: bool) -> None:
    """``--out`` is a sweep directory, a folder of run directories (sweep.json lost), or new."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and not (out / SWEEP_FILE).is_file() and not force:
        foreign = [p.name for p in out.iterdir() if not p.name.startswith(".") and not (p.is_dir() and is_run_dir(p))]
        if foreign:
            raise RunDirError(
                f"--out {out}: directory is not empty and is not an asyncfl sweep (holds {foreign[0]}); use another --out"
            )


def _created(out: Path) -> str | None:
    """When the sweep in ``out`` was first made (None if new or unreadable)."""
    if not (out / SWEEP_FILE).is_file():
        return None
    try:
        return read_sweep_manifest(out).get("created")
    except RunDirError:
        return None


class _Signal(BaseException):
    """SIGINT/SIGTERM reached the sweep (raised by its handler in the main thread)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextmanager
def _signals_stop() -> Iterator[None]:
    """While a sweep runs, SIGINT and SIGTERM raise :class:`_Signal` in the main thread (elsewhere,
    signals are left as they are)."""

    def handler(signum: int, frame: Any) -> None:
        raise _Signal(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def _execute(
    runner: SweepBackend,
    tasks: list[RunTask],
    manifest: SweepManifest,
    progress: ProgressFn | None,
    command: list[str] | None,
) -> set[str]:
    """Run ``tasks`` on ``runner``, keeping ``runner.slots`` in flight so that "running" in
    sweep.json means running; returns the names of runs that failed on bad input. A run
    reporting ``interrupted`` (a signal reached it) stops the sweep like a signal to it."""
    user_failed: set[str] = set()

    def note(r: SweepRun, event: str) -> None:
        manifest.update(r)
        if progress is not None:
            progress(event, r)

    queue, in_flight = list(tasks), 0
    try:
        with _signals_stop():
            runner.start(manifest.path.parent, len(tasks))
            while queue or in_flight:
                while queue and in_flight < runner.slots:
                    task = queue.pop(0)
                    runner.submit(task)
                    in_flight += 1
                    note(replace(manifest.runs[task.name], status="running"), "start")
                for outcome in runner.wait():
                    in_flight -= 1
                    if outcome.status == "failed" and outcome.user_error:
                        user_failed.add(outcome.name)
                    r = manifest.runs[outcome.name]
                    note(
                        replace(r, status=outcome.status, wall_time_s=outcome.wall_time_s, error=outcome.error), "done"
                    )
                    if outcome.status == "interrupted":
                        raise _Signal(signal.SIGTERM if "SIGTERM" in (outcome.error or "") else signal.SIGINT)
            runner.close()
    except BaseException as exc:
        with _signals_stop():  # a second Ctrl-C does not cut short the recording of the first
            runner.terminate()
            for name, r in manifest.runs.items():
                if r.status == "running":
                    manifest.runs[name] = _as_stopped(r, manifest.path.parent / name)
            manifest.write()
        if isinstance(exc, (_Signal, KeyboardInterrupt)):
            signum = exc.signum if isinstance(exc, _Signal) else signal.SIGINT
            raise SweepInterrupted.of(signum, list(manifest.runs.values()), command) from None
        raise
    return user_failed


def _as_stopped(run: SweepRun, run_dir: Path) -> SweepRun:
    """A run that was going when the sweep stopped, with the status its own directory records
    (its worker may have finished it, or written 'interrupted', before it ended)."""
    try:
        manifest = load_run(run_dir).manifest
    except RunDirError:
        return replace(run, status="interrupted")  # killed before its manifest: resumable
    status = str(manifest.get("status"))
    if status in FINISHED:
        return replace(run, status=status, wall_time_s=manifest.get("wall_time_s"))
    if status == "failed":
        return replace(run, status=status, error=str(manifest.get("error") or "failed"))
    return replace(run, status="interrupted")


def sweep(
    source: str | Path | Mapping[str, Any],
    out_dir: str | Path,
    *,
    grid: Mapping[str, list[Any]] | Iterable[str] | None = None,
    seeds: int | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    device: str | None = None,
    base_dir: str | Path | None = None,
    **kwargs: Any,
) -> SweepResult:
    """Plan (see :func:`plan_sweep`) and run (see :func:`run_sweep`) a sweep in one call."""
    plan = plan_sweep(source, grid, seeds, overrides, seed, device, base_dir)
    return run_sweep(plan, out_dir, **kwargs)


__all__ = [
    "BACKENDS",
    "SWEEP_FILE",
    "LocalPool",
    "RayBackend",
    "RunOutcome",
    "RunTask",
    "SweepBackend",
    "SweepFailedError",
    "SweepInterrupted",
    "SweepPlan",
    "SweepResult",
    "SweepRun",
    "execute",
    "grid_labels",
    "make_backend",
    "parse_grid",
    "plan_sweep",
    "read_sweep_manifest",
    "run_name",
    "run_sweep",
    "sweep",
    "sweep_states",
    "value_label",
    "value_text",
]
