"""Wire one scenario into a run: data, model, client rule, system model, engine, run directory.

``run(scenario)`` is the whole pipeline; everything it needs to rerun is written to the run
directory (the resolved scenario, the seed, the versions, the device).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import platform
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from asyncfl.algorithms.registry import build_rule
from asyncfl.config.loader import dump_scenario, load_scenario, validate
from asyncfl.config.schema import Scenario
from asyncfl.data.base import FederatedData
from asyncfl.data.registry import build_data
from asyncfl.errors import (
    EXIT_INTERRUPTED_SIGINT,
    EXIT_INTERRUPTED_SIGTERM,
    AsyncFLError,
    DamagedRunDirError,
    DivergedError,
    RunDirError,
    UserError,
    os_error,
)
from asyncfl.exec.executor import Executor
from asyncfl.exec.torch_backend import TorchBackend
from asyncfl.models.base import FlatModel
from asyncfl.models.registry import build_model
from asyncfl.runs import checkpoint
from asyncfl.runs.checkpoint import Checkpoint, Checkpointer
from asyncfl.runs.resources import check_built, check_scenario
from asyncfl.runs.rundir import (
    EVENTS_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    RUN_INFO_FILE,
    SCENARIO_FILE,
    RunResult,
    check_out_dir,
    csv_bytes,
    load_run,
    locked,
    read_run_json,
    read_run_yaml,
    refuse_links,
    remove_stale_tmp,
    write_atomic,
    write_manifest,
)
from asyncfl.runs.server_rule import server_rule
from asyncfl.sim.engine import Engine, EngineResult
from asyncfl.sim.records import EVENT_COLUMNS, METRIC_COLUMNS

ProgressFn = Callable[[float, dict[str, Any]], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("execution.device: cuda requested but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)


@dataclass
class Built:
    """Everything a run is made of, before the engine starts."""

    scenario: Scenario
    device: torch.device
    data: FederatedData
    model: FlatModel
    backend: TorchBackend
    engine: Engine


def _absolute(path: str, base_dir: Path) -> str:
    """``path`` with ``~`` expanded, resolved against ``base_dir`` unless already absolute."""
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def absolutize(scenario: Scenario, base_dir: Path) -> Scenario:
    """The scenario with relative paths (data.root, data.images, system.profile, the availability
    trace) made absolute
    against ``base_dir`` (the scenario file's folder; ``~`` is the user's home), so the resolved
    scenario.yaml reruns anywhere."""
    update: dict[str, Any] = {}
    paths = {key: getattr(scenario.data, key, None) for key in ("root", "images")}
    data_paths = {k: _absolute(v, base_dir) for k, v in paths.items() if v is not None}
    data_paths = {k: v for k, v in data_paths.items() if v != paths[k]}
    if data_paths:
        update["data"] = scenario.data.model_copy(update=data_paths)
    system: dict[str, Any] = {}
    profile = scenario.system.profile
    if profile is not None and _absolute(profile, base_dir) != profile:
        system["profile"] = _absolute(profile, base_dir)
    avail = scenario.system.availability
    trace = getattr(avail, "path", None)
    if trace is not None and _absolute(trace, base_dir) != trace:
        system["availability"] = avail.model_copy(update={"path": _absolute(trace, base_dir)})
    if system:
        update["system"] = scenario.system.model_copy(update=system)
    return scenario.model_copy(update=update) if update else scenario


def gradient_flops_per_sample(model: FlatModel, data: FederatedData, w: torch.Tensor, batch: int = 8) -> float:
    """FLOPs of one per-sample gradient of the model's loss (forward and backward), counted once
    per model by torch's ``FlopCounterMode`` on ``torch.func.grad`` of the loss over the first
    ``batch`` training samples, divided by the batch. The counter counts matrix products and
    convolutions (elementwise operations are not counted), so logistic regression on d features
    and C classes costs 4 d C: 2 d C forward, 2 d C for the weight gradient."""
    from torch.utils.flop_counter import FlopCounterMode

    b = max(1, min(batch, int(data.train_x.shape[0])))
    x, y = data.train_x[:b], data.train_y[:b]
    m = torch.ones(b, dtype=w.dtype, device=w.device)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.func.grad(model.loss)(w, x, y, m)
    return float(counter.get_total_flops()) / b


def build(
    scenario: Scenario,
    base_dir: Path | None = None,
    device: str | None = None,
    snapshot: dict[str, Any] | None = None,
) -> Built:
    """Construct data, model, rule, backend and engine for ``scenario`` (nothing runs yet).
    With ``snapshot`` (an engine snapshot), the engine continues from that state."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    dev = resolve_device(device or scenario.execution.device)
    if scenario.execution.threads is not None:
        torch.set_num_threads(scenario.execution.threads)
    check_scenario(scenario, dev)
    dtype = torch.float64 if scenario.execution.dtype == "float64" else torch.float32
    data = build_data(scenario.data, scenario.clients.count, scenario.seed, base).to(dev, dtype)
    model = build_model(scenario.model, data)
    model.module.to(device=dev, dtype=dtype)
    rule = build_rule(scenario.algorithm)
    w0 = model.init(scenario.seed, device=dev, dtype=dtype)
    model_bytes = model.num_bytes(dtype)
    budget = (4 << 30) if dev.type == "cuda" else (1 << 30)
    executor = Executor(
        model, rule, data, scenario.seed, scenario.execution.batching, scenario.execution.max_batch, budget
    )
    n_max = int(data.train_sizes.max()) if data.num_clients else 0
    feat = float(np.prod(data.input_shape)) * data.train_x.element_size()
    eval_clients = scenario.eval.clients or data.num_clients
    check_built(
        float(data.nbytes()),
        float(model_bytes),
        (scenario.server.clients_per_round if scenario.server.mode == "sync" else scenario.server.concurrency) + 2,
        float(budget),
        float(eval_clients) * n_max * feat * 2 + eval_clients * model_bytes * 4.0,
        dev,
    )
    server = server_rule(scenario.server, rule.server_rule)
    backend = TorchBackend(
        model, rule, data, w0, scenario.server, scenario.eval, scenario.seed, executor, model_bytes, server.step
    )
    multiplier = None
    if scenario.system.speed_by_label > 0:
        frac = data.mean_label_fraction()
        multiplier = 1.0 + scenario.system.speed_by_label * (frac - 0.5)
    # FLOPs of one task per client: the rule's per-sample gradient evaluations x the model's FLOPs
    # per per-sample gradient (the system model's compute.model flops; recorded in events.csv).
    work = np.array([backend.task_work(c) for c in range(data.num_clients)], dtype=np.float64)  # type: ignore[arg-type]
    task_flops = work * gradient_flops_per_sample(model, data, w0)
    engine = Engine.from_scenario(
        scenario,
        backend,
        base,
        multiplier,
        snapshot=snapshot,
        task_flops=task_flops,
        policy=server.policy,
        train_sizes=data.train_sizes_np,
    )
    # Updates certain to be dropped as stale are never computed (empty unless async + drop).
    executor.before_chunk = lambda: backend.cancel_certain_drops(engine.certain_drops())
    return Built(scenario, dev, data, model, backend, engine)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device) -> dict[str, Any]:
    import simpy

    from asyncfl.version import __version__

    info: dict[str, Any] = {
        "asyncfl": __version__,
        "torch": torch.__version__,
        "simpy": simpy.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def summarize_events(events: pd.DataFrame) -> dict[str, Any]:
    """Counts by status and staleness of applied updates."""
    counts = {str(k): int(v) for k, v in events["status"].value_counts().sort_index().items()} if len(events) else {}
    applied = events[events["status"] == "applied"] if len(events) else events
    stale = applied["staleness"] if len(applied) else pd.Series(dtype=float)
    return {
        "tasks": len(events),
        "status_counts": counts,
        "updates_applied": counts.get("applied", 0),
        "updates_dropped": int(sum(v for k, v in counts.items() if k.startswith("dropped"))),
        "staleness_mean": float(stale.mean()) if len(stale) else 0.0,
        "staleness_max": int(stale.max()) if len(stale) else 0,
    }


def final_metrics(metrics: pd.DataFrame) -> dict[str, float]:
    if not len(metrics):
        return {}
    last = metrics[metrics["sim_time"] == metrics["sim_time"].max()]
    last = last[last["server_version"] == last["server_version"].max()]
    return {str(r.metric): float(r.value) for r in last.itertuples()}


class _Signals:
    """SIGINT/SIGTERM ask the engine to stop at the next event boundary (main thread only)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        self.engine.request_stop()

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def parse_checkpoint_every(value: str | int | None) -> tuple[str, float] | None:
    """``N`` server steps, or ``Ns`` wall-clock seconds (e.g. ``300s``)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    try:
        if text.endswith("s"):
            secs = float(text[:-1])
            if secs > 0:
                return ("seconds", secs)
        else:
            steps = int(text)
            if steps > 0:
                return ("steps", float(steps))
    except ValueError:
        pass
    raise UserError(f"--checkpoint-every: {value!r} is neither a positive number of server steps nor seconds like 300s")


class _Session:
    """One execution of an engine, with checkpoints, signals and the final write."""

    def __init__(
        self,
        built: Built,
        run_dir: Path | None,
        checkpoint_every: tuple[str, float] | None,
        progress: ProgressFn | None,
        resumed: Checkpoint | None = None,
    ) -> None:
        self.built = built
        self.run_dir = run_dir
        self.every = checkpoint_every
        self.progress = progress
        self.ckpt = Checkpointer(run_dir, resumed) if run_dir is not None else None
        self._last_steps = built.engine.counts["server_steps"]
        self._last_time = time.monotonic()
        built.engine.on_step = self._on_step

    def _on_step(self, engine: Engine) -> None:
        if self.progress is not None:
            self.progress(engine.progress(), {})
        if self.every is None or self.ckpt is None:
            return
        kind, n = self.every
        steps = engine.counts["server_steps"]
        now = time.monotonic()
        if (kind == "steps" and steps - self._last_steps >= n) or (kind == "seconds" and now - self._last_time >= n):
            self.checkpoint()
            self._last_steps, self._last_time = steps, now

    def checkpoint(self) -> None:
        assert self.ckpt is not None
        engine = self.built.engine
        events, metrics = engine.drain_records()
        sizes = self.ckpt.flush_records(events, metrics)
        data, tensors = self.built.backend.state()
        info = {"checkpoint_every": None if self.every is None else list(self.every)}
        self.ckpt.save(engine.snapshot(), data, tensors, sizes, info)

    def execute(self) -> tuple[EngineResult, str, BaseException | None, int | None]:
        """Run the engine; returns (result, status, error, signal)."""
        engine = self.built.engine
        with _Signals(engine) as sigs:
            try:
                result = engine.run()
            except DivergedError as exc:
                return engine.result(), "diverged", exc, None
            except AsyncFLError as exc:
                if getattr(exc, "writing", None) is not None:
                    raise  # a full disk or a forbidden file while checkpointing: write nothing more
                return engine.result(), "failed", exc, None
            except (Exception, KeyboardInterrupt) as exc:
                return engine.result(), "failed", exc, None
        if sigs.received is not None and not engine.finished:
            if self.ckpt is not None:
                self.checkpoint()
                result = engine.result()
            return result, "interrupted", None, sigs.received
        return result, "completed", None, None


def _final_bytes(run_dir: Path | None, name: str, columns: tuple[str, ...], rows: Any) -> bytes:
    """Partial records already flushed by checkpoints, then the rest."""
    body = csv_bytes(columns, rows)
    if run_dir is None:
        return body
    partial = checkpoint.read_partial(run_dir, name)
    return partial + body.split(b"\n", 1)[1] if partial else body


def _finish(
    session: _Session,
    scenario: Scenario,
    result: EngineResult,
    status: str,
    error: BaseException | None,
    started: str,
    t0: float,
    command: list[str] | None,
    previous_wall: float = 0.0,
) -> RunResult:
    built, run_dir = session.built, session.run_dir
    ev_bytes = _final_bytes(run_dir, checkpoint.EVENTS_PARTIAL, EVENT_COLUMNS, result.events)
    me_bytes = _final_bytes(run_dir, checkpoint.METRICS_PARTIAL, METRIC_COLUMNS, result.metrics)
    metrics = pd.read_csv(io.BytesIO(me_bytes))
    events = pd.read_csv(io.BytesIO(ev_bytes))
    manifest: dict[str, Any] = {
        "status": status,
        "name": scenario.name,
        "seed": scenario.seed,
        "eval_adapt_lr": scenario.eval.adapt_lr,
        "command": command,
        **environment_info(built.device),
        "started": started,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "wall_time_s": round(previous_wall + time.perf_counter() - t0, 3),
        "sim_time": float(result.sim_time),
        "server_version": int(result.version),
        "stop_reason": result.stop_reason,
        **summarize_events(events),
        "versions_peak": built.backend.versions.peak,
        "model_params": built.model.num_params,
        "model_bytes": built.backend.model_bytes,
        "final_metrics": final_metrics(metrics),
    }
    if isinstance(error, DivergedError):
        manifest["divergence"] = {"what": error.what, "server_version": error.server_version, "client": error.client}
    elif error is not None:
        manifest["error"] = f"{type(error).__name__}: {error}"
    if run_dir is not None:
        write_atomic(run_dir / METRICS_FILE, me_bytes)
        write_atomic(run_dir / EVENTS_FILE, ev_bytes)
        write_manifest(run_dir, manifest)
        if status in ("completed", "diverged"):
            checkpoint.clear(run_dir)
    return RunResult(run_dir, manifest, metrics, events)


def _conclude(out: RunResult, error: BaseException | None, sig: int | None) -> RunResult:
    if error is not None:
        if isinstance(error, DivergedError):
            error.result = out  # type: ignore[attr-defined]
        raise error
    if sig is not None:
        raise RunInterrupted(out, sig)
    return out


class RunInterrupted(Exception):
    """SIGINT/SIGTERM stopped the run; results so far and a checkpoint are written."""

    def __init__(self, result: RunResult, signum: int) -> None:
        self.result = result
        self.signum = signum
        self.exit_code = EXIT_INTERRUPTED_SIGINT if signum == signal.SIGINT else EXIT_INTERRUPTED_SIGTERM
        super().__init__(f"interrupted by {signal.Signals(signum).name}; resume with: asyncfl resume {result.run_dir}")


def run(
    scenario: Scenario | str | Path | Mapping[str, Any],
    out_dir: str | Path | None = None,
    *,
    base_dir: str | Path | None = None,
    device: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    command: list[str] | None = None,
    checkpoint_every: str | int | None = None,
) -> RunResult:
    """Run ``scenario`` (a Scenario, a scenario file or a mapping); write the run directory if
    ``out_dir`` is given; return the result.

    A run that diverges (NaN/Inf) keeps its records, gets status ``diverged`` and re-raises
    :class:`DivergedError` (exit code 3). SIGINT/SIGTERM write the records so far, a checkpoint and
    status ``interrupted``, then raise :class:`RunInterrupted`; ``asyncfl resume DIR`` continues."""
    if not isinstance(scenario, Scenario):
        if isinstance(scenario, (str, Path)) and base_dir is None:
            base_dir = Path(scenario).resolve().parent
        scenario = load_scenario(scenario)
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    scenario = absolutize(scenario, base)
    every = parse_checkpoint_every(checkpoint_every)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat()
    t0 = time.perf_counter()
    resolved = dump_scenario(scenario)
    if out_dir is None:
        return _execute(build(scenario, base, device), None, every, progress, scenario, started, t0, command)
    run_dir = Path(out_dir)
    check_out_dir(run_dir, resolved, force)  # refused early, nothing touched (checked again under the lock)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails here, before the build
    except OSError as exc:
        raise _user_os_error(exc, run_dir) from None
    # One writer from the --out check to the last write: a second `run` or `resume` of this
    # directory, started while this one builds, is refused instead of replacing our results
    # (or having its results replaced by ours).
    with locked(run_dir):
        refuse_links(run_dir)
        check_out_dir(run_dir, resolved, force)  # nothing that holds results is replaced unasked
        built = build(scenario, base, device)  # data, device and memory errors leave --out untouched
        remove_stale_tmp(run_dir)
        checkpoint.clear(run_dir)
        for name in (MANIFEST_FILE, METRICS_FILE, EVENTS_FILE):
            (run_dir / name).unlink(missing_ok=True)
        try:
            write_atomic(run_dir / SCENARIO_FILE, resolved.encode())
            write_atomic(
                run_dir / RUN_INFO_FILE,
                json.dumps({"command": command, "checkpoint_every": checkpoint_every, "started": started}).encode(),
            )
        except AsyncFLError as exc:  # a full disk before the run began: leave --out as empty as it was
            for name in (SCENARIO_FILE, RUN_INFO_FILE):
                (run_dir / name).unlink(missing_ok=True)
            if getattr(exc, "writing", None) is None:
                raise
            raise type(exc)(f"{exc.one_line()}; nothing was run: free space, then run the command again") from None
        with _stops_resumable(run_dir):
            return _execute(built, run_dir, every, progress, scenario, started, t0, command)


def _user_os_error(exc: OSError, path: Path) -> BaseException:
    return os_error(exc, path) or exc


@contextlib.contextmanager
def _stops_resumable(run_dir: Path) -> Iterator[None]:
    """A full disk (or a file made read-only) while the run writes its directory: the write that
    failed left no temporary file and the last checkpoint is intact, so the run is resumable;
    the one-line error says how."""
    try:
        yield
    except AsyncFLError as exc:
        if getattr(exc, "writing", None) is None:
            raise
        hint = f"; the run stopped at its last checkpoint: free space (or fix the permission), then `asyncfl resume {run_dir}`"
        raise type(exc)(f"{exc.one_line()}{hint}") from None


def _execute(
    built: Built,
    run_dir: Path | None,
    every: tuple[str, float] | None,
    progress: ProgressFn | None,
    scenario: Scenario,
    started: str,
    t0: float,
    command: list[str] | None,
    resumed: Checkpoint | None = None,
) -> RunResult:
    """Run the engine of ``built`` (restored from ``resumed``, if given) to its end, write the run
    directory, conclude."""
    session = _Session(built, run_dir, every, progress, resumed)
    result, status, error, sig = session.execute()
    out = _finish(session, scenario, result, status, error, started, t0, command)
    return _conclude(out, error, sig)


def resume(
    run_dir: str | Path,
    *,
    device: str | None = None,
    progress: ProgressFn | None = None,
    command: list[str] | None = None,
) -> RunResult:
    """Continue a killed or interrupted run from its last checkpoint (from the start if it has
    none); the finished directory is byte-identical in metrics.csv and events.csv to a run that
    was never stopped (CPU)."""
    d = Path(run_dir)
    if not os.path.lexists(d / SCENARIO_FILE) or not d.is_dir():
        raise RunDirError(f"{d}: not an asyncfl run directory ({SCENARIO_FILE} missing)")
    with locked(d):
        refuse_links(d)
        remove_stale_tmp(d)  # left by a writer killed mid-write (we hold the lock: nobody else writes)
        try:
            done = load_run(d)
            if done.status == "completed":
                checkpoint.clear(d)
                return done
        except DamagedRunDirError:
            raise  # a manifest asyncfl cannot have written (it writes it last, atomically): not ours to overwrite
        except RunDirError:
            pass  # killed before its manifest (or during its final writes): continue it
        scenario = validate(read_run_yaml(d / SCENARIO_FILE))
        info = _run_info(d)
        started = str(info.get("started") or _dt.datetime.now(_dt.timezone.utc).isoformat())
        every = parse_checkpoint_every(info.get("checkpoint_every"))
        command = command or info.get("command")
        t0 = time.perf_counter()
        with _stops_resumable(d):
            if checkpoint.has_checkpoint(d):
                ckpt = checkpoint.load_checkpoint(d, cut=False)
                with checkpoint.restoring(ckpt):  # a checkpoint that does not fit is a RunDirError
                    built = build(scenario, d, device, snapshot=ckpt.engine)
                    built.backend.load_state(ckpt.backend, ckpt.tensors)
                checkpoint.cut_partials(d, ckpt)  # only once the restore has worked
                return _execute(built, d, every, progress, scenario, started, t0, command, ckpt)
            built = build(scenario, d, device)  # before clearing: a build error leaves the directory as it was
            checkpoint.clear(d)
            return _execute(built, d, every, progress, scenario, started, t0, command)


def _run_info(d: Path) -> dict[str, Any]:
    """run.json of run directory ``d`` ({} if absent); a damaged one is a RunDirError."""
    path = d / RUN_INFO_FILE
    if not os.path.lexists(path):
        return {}
    info = read_run_json(path, what="unreadable run.json")
    if not isinstance(info, dict):
        raise RunDirError(f"{path}: not an asyncfl run.json (expected a JSON object)")
    return info


__all__ = ["Built", "RunInterrupted", "build", "resolve_device", "resume", "run"]
