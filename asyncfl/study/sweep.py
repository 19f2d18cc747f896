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
SIGINT/SIGTERM stop the sweep: running runs (the local pool's workers are sent SIGTERM) write
what they have and are recorded ``interrupted``, as their own manifests say.

Backends (same directories, same bytes in ``metrics.csv`` / ``events.csv``, whichever ran them):

- ``local``: a :class:`concurrent.futures.ProcessPoolExecutor` (spawn) with ``workers`` processes;
  ``workers=1`` runs in this process.
- ``ray``: Ray tasks on an existing cluster (``ray_address``) or on a local Ray started here. Each
  task runs into a temporary directory on its node and returns the files, which are written here,
  so the nodes need no shared file system (they do need asyncfl installed and any data files the
  scenario names). ``gpus_per_run`` (may be fractional) reserves GPUs per task; set
  ``execution.device`` to ``auto`` or ``cuda`` for the runs to use them.
"""
from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    SweepManifest,
    count_statuses,
    existing_state,
    read_sweep_manifest,
)

BACKENDS = ("local", "ray")

ProgressFn = Callable[[str, "SweepRun"], None]
"""Called with ("start" | "skip" | "done", run) as the sweep goes."""


class SweepInterrupted(AsyncFLError):
    """A signal stopped the sweep; finished runs are kept and rerunning resumes it."""

    def __init__(self, why: str) -> None:
        self.exit_code = EXIT_INTERRUPTED_SIGINT if "SIGINT" in why else EXIT_INTERRUPTED_SIGTERM
        super().__init__(f"sweep {why.split(';')[0]}; finished runs are kept, rerun the same command to resume")


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
# Running
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


def run_sweep(
    plan: SweepPlan,
    out_dir: str | Path,
    *,
    backend: str = "local",
    workers: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    gpus_per_run: float = 0.0,
    cpus_per_run: float = 1.0,
    force: bool = False,
    progress: ProgressFn | None = None,
    command: list[str] | None = None,
    checkpoint_every: str | int | None = None,
) -> SweepResult:
    """Run every run of ``plan`` that is not already finished in ``out_dir``.

    ``workers``: runs at once (local: processes; ray: tasks in flight). ``threads``: torch threads
    per run (default: with one local worker, this process's setting; with several,
    ``OMP_NUM_THREADS`` or cores // workers; ray, ``cpus_per_run`` rounded up). ``force``:
    rerun everything. ``checkpoint_every``: passed to the runner (``N`` server steps or ``Ns``
    seconds), so that a long run stopped part-way continues from its checkpoint on the next
    sweep (local backend). Runs that fail are recorded (status ``failed`` with the error) and the
    rest go on; a run that diverges is a result (``diverged``). A signal stops the sweep
    (:class:`SweepInterrupted`; the local pool's workers get SIGTERM, and running runs are
    recorded as their directories say: ``interrupted``, or finished if they just did). Raises
    :class:`SweepFailedError` at the end if any run failed (exit 2 when every failure was bad
    input). With the local backend, a device that does not exist here (``cuda`` without a GPU)
    is an error before anything is written."""
    if backend not in BACKENDS:
        raise UserError(f"--backend: unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if workers < 1:
        raise UserError(f"--workers: must be >= 1 (got {workers})")
    if threads is not None and threads < 1:
        raise UserError(f"--threads: must be >= 1 (got {threads})")
    if gpus_per_run < 0 or cpus_per_run <= 0:
        raise UserError("--gpus-per-run must be >= 0 and --cpus-per-run > 0")
    if backend == "local" and (gpus_per_run > 0 or ray_address):
        raise UserError("--gpus-per-run and --ray-address apply to --backend ray only")
    if checkpoint_every is not None:
        from asyncfl.runs.runner import parse_checkpoint_every

        parse_checkpoint_every(checkpoint_every)  # a bad value is an error before anything runs
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and not (out / SWEEP_FILE).is_file() and not force:
        # without sweep.json, accept only a folder of run directories (e.g. sweep.json was lost)
        foreign = [p.name for p in out.iterdir() if not p.name.startswith(".") and not (p.is_dir() and is_run_dir(p))]
        if foreign:
            raise RunDirError(
                f"--out {out}: directory is not empty and is not an asyncfl sweep (holds {foreign[0]}); use another --out"
            )
    created = None
    if (out / SWEEP_FILE).is_file():
        try:
            created = read_sweep_manifest(out).get("created")
        except RunDirError:
            created = None

    # Decide, before anything runs, what is kept and what is (re)run.
    from asyncfl.runs.runner import absolutize

    todo: list[SweepRun] = []
    runs: list[SweepRun] = []
    resumable: set[str] = set()
    for r in plan.runs:
        run_dir = out / r.name
        # a run directory holds its scenario with relative paths resolved (runner.absolutize)
        resolved = absolutize(r.scenario, plan.base_dir)
        state, info = ("redo", None) if force else existing_state(run_dir, resolved)
        if state == "resume" and backend == "local":
            resumable.add(r.name)
        elif state == "resume":
            state = "redo"  # Ray tasks run in a fresh folder on their node
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
            runs.append(replace(r, status=str(info), skipped=True))
        else:
            runs.append(r)
            todo.append(r)
    if backend == "local":
        _check_devices(todo)
    elif ray_address:
        _probe_ray_address(ray_address)
    out.mkdir(parents=True, exist_ok=True)
    manifest = SweepManifest(out, replace(plan, runs=runs), backend, created)
    manifest.write()
    for r in runs:
        if r.skipped and progress is not None:
            progress("skip", r)
    for r in todo:
        if (out / r.name).exists() and r.name not in resumable:
            shutil.rmtree(out / r.name)

    base_dir = str(plan.base_dir)
    every = None if checkpoint_every is None else str(checkpoint_every)
    tasks = [
        RunTask(r.name, dump_scenario(r.scenario), str(out / r.name), base_dir, None, None, command, every,
                r.name in resumable)
        for r in todo
    ]
    by_name = {r.name: r for r in todo}
    user_failed: set[str] = set()

    def finish(outcome: RunOutcome) -> None:
        if outcome.status == "failed" and outcome.user_error:
            user_failed.add(outcome.name)
        r = replace(by_name[outcome.name], status=outcome.status, wall_time_s=outcome.wall_time_s, error=outcome.error)
        manifest.update(r)
        if progress is not None:
            progress("done", r)

    def started(name: str) -> None:
        r = replace(by_name[name], status="running")
        manifest.update(r)
        if progress is not None:
            progress("start", r)

    try:
        if backend == "ray":
            _run_ray(tasks, out, workers, ray_address, gpus_per_run, cpus_per_run, threads, started, finish)
        else:
            _run_local(tasks, workers, threads, started, finish)
    except BaseException:
        for name, r in manifest.runs.items():
            if r.status == "running":
                manifest.runs[name] = _as_stopped(r, out / name)
        manifest.write()
        raise
    result = SweepResult(out, list(manifest.runs.values()))
    if result.failed:
        first = result.failed[0]
        bad_input = all(r.name in user_failed for r in result.failed)
        raise SweepFailedError(
            f"{len(result.failed)} of {len(result.runs)} runs failed (see {out / SWEEP_FILE}); "
            f"first: {first.name}: {first.error}; rerun the same command to retry them",
            EXIT_USAGE if bad_input else EXIT_FAILED,
        )
    return result


def _check_devices(runs: Iterable[SweepRun]) -> None:
    """Each device the runs ask for exists here (a UserError naming execution.device if not)."""
    devices = sorted({r.scenario.execution.device for r in runs})
    if devices and devices != ["cpu"]:
        from asyncfl.runs.runner import resolve_device

        for device in devices:
            resolve_device(device)


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


def _run_local(
    tasks: list[RunTask],
    workers: int,
    threads: int | None,
    started: Callable[[str], None],
    finish: Callable[[RunOutcome], None],
) -> None:
    if not tasks:
        return
    workers = min(workers, len(tasks))
    if workers == 1:
        # in this process: torch's thread setting stays as the caller has it, unless told
        import torch

        before = torch.get_num_threads()
        try:
            for t in tasks:
                started(t.name)
                outcome = execute(replace(t, threads=threads))
                finish(outcome)
                if outcome.status == "interrupted":
                    raise SweepInterrupted(outcome.error or "interrupted")
        finally:
            torch.set_num_threads(before)
        return
    n_threads = threads if threads is not None else default_threads(workers)

    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(n_threads,))
    queue = list(tasks)
    pending: dict[Future[RunOutcome], str] = {}
    try:
        # Keep exactly `workers` runs submitted, so "running" in sweep.json means running.
        while queue or pending:
            while queue and len(pending) < workers:
                t = queue.pop(0)
                pending[pool.submit(execute, t)] = t.name
                started(t.name)
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                name = pending.pop(fut)
                try:
                    outcome = fut.result()
                except Exception as exc:  # the worker process died (killed, out of memory)
                    outcome = RunOutcome(name, "failed", 0.0, f"worker died: {type(exc).__name__}: {exc}")
                finish(outcome)
    except BaseException:
        _terminate_pool(pool)
        raise
    pool.shutdown(wait=True)


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


def _run_ray(
    tasks: list[RunTask],
    out: Path,
    workers: int,
    address: str | None,
    gpus_per_run: float,
    cpus_per_run: float,
    threads: int | None,
    started: Callable[[str], None],
    finish: Callable[[RunOutcome], None],
) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'asyncfl[ray]'") from None
    if not tasks:
        return
    we_started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"--ray-address {address}: cannot connect to Ray: {exc}") from None
        we_started = True
    n_threads = threads if threads is not None else max(1, math.ceil(cpus_per_run))
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(execute_returning_files)
    queue = list(tasks)
    pending: dict[Any, str] = {}
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                t = queue.pop(0)
                pending[remote.remote(replace(t, threads=n_threads, out_dir=None))] = t.name
                started(t.name)
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                name = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the task or its worker died
                    outcome = RunOutcome(name, "failed", 0.0, f"ray task failed: {type(exc).__name__}: {exc}")
                if outcome.files:
                    _write_returned_files(out / name, outcome.files)
                finish(replace(outcome, files=None))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if we_started:
            ray.shutdown()


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
    "RunOutcome",
    "RunTask",
    "SweepFailedError",
    "SweepInterrupted",
    "SweepPlan",
    "SweepResult",
    "SweepRun",
    "execute",
    "grid_labels",
    "parse_grid",
    "plan_sweep",
    "read_sweep_manifest",
    "run_name",
    "run_sweep",
    "sweep",
    "value_label",
    "value_text",
]

