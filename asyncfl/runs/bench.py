"""``asyncfl bench``: how fast the simulator computes client updates, measured in one process.

For each workload it builds the same seeded scenario several times and measures:

(a) client updates per second of the run with the lazy batched executor (``batching: auto``,
    mode ``batched``) and with forced one-client-at-a-time execution (``batching: none``, mode
    ``one_at_a_time``; and ``one_at_a_time_autograd``: the same with the model's own loss and
    autograd instead of the executor's hand-written dense gradient, i.e. the math the way a peer
    simulator does it). The runs' event logs must be identical and their metrics equal within
    1e-5 relative; the check is reported.
(b) the engine's own cost per client task with a null model (:mod:`asyncfl.sim.engine_cost`);
(c) peak host memory (``getrusage`` high-water mark; tracemalloc cannot see tensor storage) and
    peak device memory (``torch.cuda.max_memory_allocated``);
(d) achieved FLOP/s: FLOPs per update counted with ``torch.utils.flop_counter.FlopCounterMode``
    on one job, against the device's peak (a vendor figure for known GPUs; the rate of a large
    float32 matmul measured here for every device);
(e) the same client math as a bare PyTorch loop (``nn.Module``, autograd, ``torch.optim.SGD``; no
    simulator, no events), so the simulator's overhead shows as a ratio.

Throughput counts client updates received by the server (``stop.client_updates``) per second of
``engine.run()``, minus the time spent in evaluation: evaluation runs only at the start and the
end (``eval.every_steps: null``), on a seeded sample of ``--eval-clients`` clients, without
``grad_norm``. Wall time is the headline; process CPU time is reported next to it because a
shared machine's load moves wall time. ``--repeat`` alternates the modes and keeps each one's
best run.

Workloads (sizes are flags):

- ``synthetic-logreg``: Synthetic(0.5, 0.5), 60 features, 10 classes, multinomial logistic
  regression, FedBuff (K = ``--buffer``, staleness weight 1/sqrt(1 + tau)), ~``--samples``
  training samples per client, ``--local-steps`` SGD steps of ``--batch-size``.
- ``mnist-mlp-hf``: MLP 784-80-60-10 (ELU), Per-FedAvg HF, the same FedBuff server. Data: MNIST-shaped
  synthetic clients (784 features, 10 classes, ~``--samples`` training samples each) by default,
  so that 1,000 clients hold realistic amounts; ``--mnist-root`` uses real MNIST (torchvision
  layout) split iid over the clients instead (a 5,000-image subset gives ~4 samples per client).
- ``null``: the engine alone (a), async and buffered, then async with ``least_recent`` and
  ``data_size`` selection and with the shipped scenarios' lognormal per-task jitter.
"""

from __future__ import annotations

import copy
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKLOADS = ("synthetic-logreg", "mnist-mlp-hf", "null")
_JITTER = {"dist": "lognormal", "mean": 1.0, "sigma": 0.2}  # the shipped scenarios' per-task jitter
MODES = ("batched", "one_at_a_time", "one_at_a_time_autograd")
DEFAULT_SIZES: dict[str, dict[str, int]] = {
    "synthetic-logreg": {"clients": 1000, "in_flight": 100, "updates": 10000},
    "mnist-mlp-hf": {"clients": 1000, "in_flight": 1000, "updates": 5000},
    "null": {"clients": 100_000, "in_flight": 1000, "updates": 200_000},
}
REL_TOL = 1e-5

GPU_FP32_PEAKS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 51.2e12),
    ("H100 NVL", 60.0e12),
    ("H100", 66.9e12),
    ("H200", 66.9e12),
    ("GH200", 66.9e12),
    ("A100", 19.5e12),
    ("A10G", 31.2e12),
    ("A10", 31.2e12),
    ("L40S", 91.6e12),
    ("L4", 30.3e12),
    ("V100", 15.7e12),
    ("T4", 8.1e12),
    ("RTX 4090", 82.6e12),
)
"""Vendor FP32 (non-tensor-core) peaks, FLOP/s; float32 matmuls run without TF32 by default."""


@dataclass
class BenchOptions:
    """The command's flags; None sizes mean the workload's default."""

    workloads: tuple[str, ...] = WORKLOADS
    clients: int | None = None
    in_flight: int | None = None
    updates: int | None = None
    device: str = "auto"
    out: Path | None = None
    repeat: int = 1
    threads: int | None = None
    buffer: int = 10
    local_steps: int = 2
    batch_size: int = 32
    samples: int = 50
    mnist_root: str | None = None
    eval_clients: int = 100
    modes: tuple[str, ...] = MODES
    bare: bool = True
    profile: bool = False
    max_batch: int | None = None
    seed: int = 0
    dtype: str = "float32"
    command: list[str] = field(default_factory=list)

    def size(self, workload: str, key: str) -> int:
        value = {"clients": self.clients, "in_flight": self.in_flight, "updates": self.updates}[key]
        return int(value) if value is not None else DEFAULT_SIZES[workload][key]


# ------------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------------


def workload_scenario(workload: str, opts: BenchOptions, device: str) -> dict[str, Any]:
    """The scenario (as a plain mapping) of one workload at the options' sizes."""
    clients = opts.size(workload, "clients")
    in_flight = min(opts.size(workload, "in_flight"), clients)
    mean_samples = opts.samples / 0.8  # test_fraction 0.2: ~opts.samples training samples
    scenario: dict[str, Any] = {
        "seed": opts.seed,
        "name": f"bench-{workload}",
        "server": {
            "mode": "buffered",
            "concurrency": in_flight,
            "buffer_size": max(1, min(opts.buffer, in_flight)),
            "aggregation": "uniform",
            # FedBuff's own staleness weight, 1 / sqrt(1 + tau): without it, 1,000 clients in
            # flight make the server's trajectory chaotic (float rounding grows to O(1)).
            "staleness_weight": {"name": "polynomial", "a": 0.5},
        },
        "clients": {"count": clients},
        "stop": {"client_updates": opts.size(workload, "updates")},
        "eval": {
            "every_steps": None,
            "clients": min(opts.eval_clients, clients) if opts.eval_clients > 0 else None,
            "grad_norm": False,
            "adapt_steps": 1,
        },
        "execution": {"device": device, "batching": "auto", "max_batch": opts.max_batch, "dtype": opts.dtype},
    }
    if workload == "synthetic-logreg":
        scenario["algorithm"] = {
            "name": "fedbuff",
            "lr": 0.05,
            "local_steps": opts.local_steps,
            "batch_size": opts.batch_size,
        }
        scenario["data"] = {"dataset": "synthetic", "mean_samples": mean_samples, "sigma_samples": 0.1}
        scenario["model"] = "logreg"
    elif workload == "mnist-mlp-hf":
        scenario["algorithm"] = {
            "name": "per_fedavg",
            "variant": "hf",
            "local_steps": opts.local_steps,
            "batch_size": opts.batch_size,
        }
        scenario["model"] = {"name": "mlp", "hidden": [80, 60], "activation": "elu"}
        if opts.mnist_root:
            scenario["data"] = {"dataset": "mnist", "root": str(Path(opts.mnist_root).resolve()), "partition": "iid"}
        else:
            scenario["data"] = {
                "dataset": "synthetic",
                "dimension": 784,
                "classes": 10,
                "mean_samples": mean_samples,
                "sigma_samples": 0.1,
            }
    else:
        raise ValueError(f"no scenario for workload {workload!r}")
    return scenario


# ------------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------------


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)


def rss_now() -> int | None:
    """Resident set size of this process now, bytes (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def rss_peak() -> int:
    """Peak resident set size of this process so far, bytes (getrusage high-water mark)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def measure_run(
    scenario: Any, mode: str, keep_records: bool = True, count_flops: bool = False, profile: Path | None = None
) -> dict[str, Any]:
    """Build ``scenario`` and run it in ``mode`` (see :data:`MODES`); time ``engine.run()`` minus
    evaluation. Returns figures, and the records and final model when ``keep_records``; with
    ``count_flops`` also ``flops_per_update`` (counted before the run, outside the timing). With
    ``profile``, the run is under cProfile and the top of its profile is written to that file
    (its timings are then inflated by the profiler)."""
    import torch

    from asyncfl.exec.executor import Executor
    from asyncfl.runs.runner import build

    batching = "auto" if mode == "batched" else "none"
    sc = scenario.model_copy(update={"execution": scenario.execution.model_copy(update={"batching": batching})})
    t0 = time.perf_counter()
    built = build(sc)
    if mode == "one_at_a_time_autograd":
        old = built.backend.executor
        built.backend.executor = Executor(
            old.model, old.rule, old.data, sc.seed, "none", sc.execution.max_batch, fast=False
        )
    build_s = time.perf_counter() - t0
    flops = flops_per_update(built) if count_flops else None
    backend = built.backend
    device = built.device
    spent = [0.0, 0.0]
    evaluate = backend.evaluate

    def timed_evaluate(version: Any, now: Any) -> Any:
        w, c = time.perf_counter(), time.process_time()
        out = evaluate(version, now)
        spent[0] += time.perf_counter() - w
        spent[1] += time.process_time() - c
        return out

    backend.evaluate = timed_evaluate  # type: ignore[method-assign]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gc.collect()
    rss_before = rss_now()
    _sync(device)
    profiler = cProfile.Profile() if profile is not None else None
    w0, c0 = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    result = built.engine.run()
    if profiler is not None:
        profiler.disable()
    _sync(device)
    wall = time.perf_counter() - w0 - spent[0]
    cpu = time.process_time() - c0 - spent[1]
    updates = int(result.counts["client_updates"])
    ex = backend.executor
    calls = max(int(ex.stats["calls"]), 1)
    out: dict[str, Any] = {
        "mode": mode,
        "updates": updates,
        "server_steps": int(result.counts["server_steps"]),
        "wall_s": wall,
        "cpu_s": cpu,
        "updates_per_s": updates / wall if wall > 0 else math.inf,
        "updates_per_cpu_s": updates / cpu if cpu > 0 else math.inf,
        "eval_wall_s": spent[0],
        "build_s": build_s,
        "executor": {
            **{k: int(v) for k, v in ex.stats.items()},
            "jobs_per_call": ex.stats["jobs"] / calls,
            "max_batch": ex.max_batch,
            "min_vmap": ex.min_vmap,
            "fast_loss": type(ex.loss).__name__,
        },
        "model_params": built.model.num_params,
        "versions_peak": backend.versions.peak,
        "versions_peak_bytes": backend.versions.peak_bytes,
        "data_bytes": built.data.nbytes(),
        "rss_before_run": rss_before,
        "rss_after_run": rss_now(),
        "rss_peak_so_far": rss_peak(),
    }
    if device.type == "cuda":
        out["device_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
    if flops is not None:
        out["flops_per_update"] = flops
    if profiler is not None and profile is not None:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(25)
        from asyncfl.runs.rundir import write_atomic

        profile.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(profile, (f"{mode}: {updates} updates, {wall:.3f} s (profiled)\n" + buf.getvalue()).encode())
    if keep_records:
        metrics, events = _frames(result)
        out["_events"] = events
        out["_metrics"] = metrics
        out["_model"] = backend.current.detach().cpu().clone()
    del built, backend, ex, result
    gc.collect()
    return out


def _frames(result: Any) -> tuple[Any, Any]:
    import pandas as pd

    from asyncfl.sim.records import EVENT_COLUMNS, METRIC_COLUMNS

    metrics = pd.DataFrame(list(result.metrics), columns=list(METRIC_COLUMNS))
    events = pd.DataFrame(list(result.events), columns=list(EVENT_COLUMNS))
    return metrics, events


def compare_runs(a: dict[str, Any], b: dict[str, Any], rel_tol: float = REL_TOL) -> dict[str, Any]:
    """Event logs identical? Learning metrics (all but :data:`DIAGNOSTIC_METRICS`) and final
    server models within ``rel_tol`` relative?"""
    import numpy as np

    from asyncfl.exec.torch_backend import DIAGNOSTIC_METRICS

    ea, eb = a["_events"], b["_events"]
    events_equal = bool(ea.shape == eb.shape and ea.equals(eb))
    ma, mb = (m[~m["metric"].isin(DIAGNOSTIC_METRICS)] for m in (a["_metrics"], b["_metrics"]))
    key = ["sim_time", "server_version", "client_updates", "metric"]
    merged = ma.merge(mb, on=key, how="outer", suffixes=("_a", "_b"), indicator=True)
    same_rows = bool((merged["_merge"] == "both").all())
    va, vb = merged["value_a"].to_numpy(float), merged["value_b"].to_numpy(float)
    scale = np.maximum(np.abs(va), np.abs(vb))
    diff = np.abs(va - vb)
    both_nan = np.isnan(va) & np.isnan(vb)
    rel = np.where(both_nan | (diff == 0), 0.0, diff / np.where(scale > 0, scale, 1.0))
    max_rel = float(np.nanmax(rel)) if rel.size else 0.0
    worst = str(merged["metric"].iloc[int(np.nanargmax(rel))]) if rel.size and max_rel > 0 else None
    wa, wb = a["_model"], b["_model"]
    model_rel = float((wa - wb).abs().max() / wa.abs().max().clamp_min(1e-30))
    return {
        "events_identical": events_equal,
        "metric_rows_match": same_rows,
        "metrics_max_rel_diff": max_rel,
        "worst_metric": worst,
        "final_model_max_rel_diff": model_rel,
        "ok": events_equal and same_rows and max_rel <= rel_tol,
        "rel_tol": rel_tol,
    }


# ------------------------------------------------------------------------------------------------
# (e) the bare loop
# ------------------------------------------------------------------------------------------------


def bare_loop(scenario: Any, updates: int, seed: int = 0) -> dict[str, Any]:  # noqa: C901 (the bare loop mirrors each rule's math inline, as peer code is written)
    """The client math of ``scenario`` as a plain PyTorch loop, the way FL code is usually written:
    an ``nn.Module`` loaded with the global model, ``F.cross_entropy``, ``loss.backward()`` /
    ``torch.autograd.grad`` and ``torch.optim.SGD``; minibatches by ``torch.randperm``; clients
    drawn at random; every K deltas averaged into the global model (FedBuff without staleness).
    No simulator: no events, no versions, no evaluation. Returns updates per second."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    from asyncfl.runs.runner import build

    built = build(scenario)
    data, rule, device = built.data, built.backend.rule, built.device
    net = copy.deepcopy(built.model.module)
    params = list(net.parameters())
    for p in params:
        p.requires_grad_(True)
    x_all, y_all = data.train_x, data.train_y
    sizes, offsets = data.train_sizes_np, data.train_offsets.cpu().numpy()
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    steps, bsz = rule.steps, rule.batch_size
    k = scenario.server.buffer_size
    server_lr = scenario.server.lr
    per_fedavg = getattr(rule, "name", "") == "per_fedavg"
    opt = None if per_fedavg else torch.optim.SGD(params, lr=rule.lr)  # type: ignore[attr-defined]

    def batch(xc: Any, yc: Any, n: int) -> tuple[Any, Any]:
        idx = torch.randperm(n, generator=gen, device=device)[: (bsz or n)]
        return xc[idx], yc[idx]

    def grads(xb: Any, yb: Any) -> tuple[Any, ...]:
        return torch.autograd.grad(F.cross_entropy(net(xb), yb), params)

    def one_update(c: int, global_w: Any) -> Any:
        o, n = int(offsets[c]), int(sizes[c])
        xc, yc = x_all[o : o + n], y_all[o : o + n]
        with torch.no_grad():
            vector_to_parameters(global_w, params)
        for _ in range(steps):
            if opt is not None:
                xb, yb = batch(xc, yc, n)
                opt.zero_grad()
                F.cross_entropy(net(xb), yb).backward()
                opt.step()
                continue
            alpha, beta, delta = rule.alpha, rule.beta, rule.delta  # type: ignore[attr-defined]
            (x0, y0), (x1, y1), (x2, y2) = batch(xc, yc, n), batch(xc, yc, n), batch(xc, yc, n)
            w_t = [p.detach().clone() for p in params]
            g0 = grads(x0, y0)
            with torch.no_grad():
                for p, g in zip(params, g0, strict=True):
                    p.sub_(alpha * g)
            g1 = grads(x1, y1)
            with torch.no_grad():
                for p, wt, g in zip(params, w_t, g1, strict=True):
                    p.copy_(wt + delta * g)
            gp = grads(x2, y2)
            with torch.no_grad():
                for p, wt, g in zip(params, w_t, g1, strict=True):
                    p.copy_(wt - delta * g)
            gm = grads(x2, y2)
            with torch.no_grad():
                for p, wt, g, a, b in zip(params, w_t, g1, gp, gm, strict=True):
                    p.copy_(wt - beta * (g - alpha * (a - b) / (2.0 * delta)))
        with torch.no_grad():
            return parameters_to_vector(params) - global_w

    def loop(n_updates: int, global_w: Any) -> Any:
        buf = []
        for _ in range(n_updates):
            buf.append(one_update(int(rng.integers(len(sizes))), global_w))
            if len(buf) == k:
                with torch.no_grad():
                    global_w = global_w + server_lr * torch.stack(buf).mean(0)
                buf = []
        return global_w

    w = built.backend.current.clone()
    w = loop(min(20, updates), w)  # warm-up
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    loop(updates, w)
    _sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "updates": updates,
        "wall_s": wall,
        "cpu_s": cpu,
        "updates_per_s": updates / wall,
        "updates_per_cpu_s": updates / cpu if cpu > 0 else math.inf,
    }


# ------------------------------------------------------------------------------------------------
# (d) FLOPs
# ------------------------------------------------------------------------------------------------


def flops_per_update(built: Any) -> float:
    """FLOPs of one client update of a built run: one job of a median-size client in the loop
    formulation, counted by ``FlopCounterMode`` (matrix products; elementwise ops are not
    counted)."""
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    from asyncfl.exec.executor import Executor, Job

    old = built.backend.executor
    ex = Executor(old.model, old.rule, old.data, built.scenario.seed, "none")
    sizes = built.data.train_sizes_np
    client = int(np.argsort(sizes)[len(sizes) // 2])
    counter = FlopCounterMode(display=False)
    with counter:
        ex.compute([Job(0, client, built.backend.current, 0)])
    return float(counter.get_total_flops())


def matmul_peak(device: Any, seconds: float = 0.5) -> float:
    """FLOP/s of a large float32 matmul here (an achievable peak), best of a few."""
    import torch

    n = 2048 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    best, spent = 0.0, 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        dt = time.perf_counter() - t0
        spent += dt
        best = max(best, 4 * 2 * n**3 / dt)
    return best


def known_peak(device: Any) -> tuple[str | None, float | None]:
    """(device name, vendor FP32 peak FLOP/s) for known GPUs; (name or None, None) otherwise."""
    import torch

    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    for key, peak in GPU_FP32_PEAKS:
        if key.lower() in name.lower():
            return name, peak
    return name, None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------------------------------
# Workloads
# ------------------------------------------------------------------------------------------------


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def run_workload(workload: str, opts: BenchOptions, device: Any, log: Callable[[str], None]) -> dict[str, Any]:  # noqa: C901 (one branch per mode and measurement of the benchmark's report)
    """Measure one simulated workload in every mode (see the module docstring)."""
    from asyncfl.config.loader import validate

    scenario = validate(workload_scenario(workload, opts, device.type))
    small = {**workload_scenario(workload, opts, device.type)}
    small["clients"] = {"count": min(scenario.clients.count, 40)}
    small["server"] = {**small["server"], "concurrency": min(scenario.server.concurrency, 10)}
    small["server"]["buffer_size"] = min(small["server"]["buffer_size"], small["server"]["concurrency"])
    small["stop"] = {"client_updates": 40}
    small["eval"] = {**small["eval"], "clients": None}
    warm = validate(small)
    for mode in opts.modes:  # warm-up: imports, kernels, allocator
        measure_run(warm, mode, keep_records=False)

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in opts.modes}
    first: dict[str, dict[str, Any]] = {}
    runs_done = False
    for r in range(max(1, opts.repeat)):
        for mode in opts.modes:
            log(f"{workload}: {mode} (run {r + 1}/{opts.repeat})")
            run = measure_run(scenario, mode, keep_records=(r == 0), count_flops=(r == 0 and not runs_done))
            runs_done = True
            if r == 0:
                first[mode] = run
            runs[mode].append(_public(run))
            log(f"  {run['updates_per_s']:.0f} updates/s ({run['updates_per_cpu_s']:.0f} per CPU-s)")

    best = {m: max(rs, key=lambda x: x["updates_per_s"]) for m, rs in runs.items()}
    checks = {}
    if "batched" in first:
        for m in opts.modes:
            if m != "batched":
                checks[f"batched_vs_{m}"] = compare_runs(first["batched"], first[m])
                # The autograd mode is other float math (fused kernels, log_softmax), so only
                # rounding-level agreement is expected; Per-FedAvg HF's finite difference
                # amplifies float32 rounding by ~1/(2 delta), so long runs drift past 1e-5.
                checks[f"batched_vs_{m}"]["acceptance"] = m == "one_at_a_time"
    del first
    gc.collect()

    if opts.profile and opts.out is not None:
        for mode in opts.modes:
            log(f"{workload}: {mode} under cProfile")
            measure_run(scenario, mode, keep_records=False, profile=Path(opts.out) / f"profile-{workload}-{mode}.txt")

    bare: dict[str, Any] | None = None
    if opts.bare:
        tries = []
        for r in range(max(1, opts.repeat)):
            log(f"{workload}: bare PyTorch loop (run {r + 1}/{opts.repeat})")
            tries.append(bare_loop(scenario, scenario.stop.client_updates or 1000, seed=opts.seed + r))
            log(f"  {tries[-1]['updates_per_s']:.0f} updates/s")
        bare = max(tries, key=lambda x: x["updates_per_s"])
        bare["all"] = [t["updates_per_s"] for t in tries]

    first_run = runs[opts.modes[0]][0]
    flops, params = first_run["flops_per_update"], first_run["model_params"]
    ratios: dict[str, float] = {}

    def ratio(name: str, a: float | None, b: float | None) -> None:
        if a and b:
            ratios[name] = a / b

    rate = {m: best[m]["updates_per_s"] for m in best}
    ratio("batched_over_one_at_a_time", rate.get("batched"), rate.get("one_at_a_time"))
    ratio("batched_over_one_at_a_time_autograd", rate.get("batched"), rate.get("one_at_a_time_autograd"))
    if bare:
        for m in rate:
            ratio(f"{m}_over_bare", rate[m], bare["updates_per_s"])
    return {
        "scenario": workload_scenario(workload, opts, device.type),
        "model_params": params,
        "flops_per_update": flops,
        "modes": {
            m: {
                **best[m],
                "achieved_flops": flops * best[m]["updates_per_s"],
                "all_updates_per_s": [x["updates_per_s"] for x in runs[m]],
            }
            for m in best
        },
        "bare_loop": None if bare is None else {**bare, "achieved_flops": flops * bare["updates_per_s"]},
        "ratios": ratios,
        "equality": checks,
    }


NULL_VARIANTS: dict[str, tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = {
    "async, least_recent selection": ("async", {"name": "least_recent"}, None),
    "async, data_size selection": ("async", {"name": "data_size"}, None),
    "async, lognormal jitter": (
        "async",
        None,
        {"compute": {"jitter": _JITTER}, "network": {"jitter": _JITTER}},
    ),
}
"""The null workload's other rows: (server mode, server.selection, system) changed from the
default async run, one at a time: the selection strategies that keep an index of the idle
clients, and the per-task jitter every shipped scenario uses (three scalar draws a task)."""


def run_null(opts: BenchOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """(b): the engine's cost per client task with a null backend, async and buffered (uniform
    selection, the default system model), then :data:`NULL_VARIANTS`."""
    from asyncfl.config.schema import SystemConfig
    from asyncfl.sim.engine_cost import engine_cost

    clients = opts.size("null", "clients")
    in_flight = min(opts.size("null", "in_flight"), clients)
    tasks = opts.size("null", "updates")
    repeat = max(1, opts.repeat)
    out: dict[str, Any] = {"clients": clients, "in_flight": in_flight, "tasks": tasks, "variants": {}}
    for mode in ("async", "buffered"):
        log(f"null: engine cost, {mode}")
        r = engine_cost(clients, in_flight, tasks, mode, buffer_size=opts.buffer, repeat=repeat)
        out[mode] = r
        log(f"  {r['us_per_task']:.2f} us/task")
    for name, (mode, selection, system) in NULL_VARIANTS.items():
        log(f"null: engine cost, {name}")
        cfg = None if system is None else SystemConfig.model_validate(system)
        r = engine_cost(clients, in_flight, tasks, mode, system=cfg, repeat=repeat, selection=selection)
        out["variants"][name] = r
        log(f"  {r['us_per_task']:.2f} us/task")
    return out


def run_bench(opts: BenchOptions, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every requested workload; returns the report (also written to ``opts.out`` if set)."""
    import torch

    from asyncfl.runs.runner import environment_info, resolve_device

    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device)
    if opts.out is not None:  # an unwritable --out fails now, not after minutes of measuring
        Path(opts.out).mkdir(parents=True, exist_ok=True)
    started = time.time()
    report: dict[str, Any] = {
        "command": opts.command,
        "environment": {
            **environment_info(device),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "workloads": {},
    }
    simulated = [w for w in opts.workloads if w != "null"]
    if simulated:
        name, peak = known_peak(device)
        report["device"] = {
            "type": device.type,
            "name": name or cpu_name(),
            "vendor_fp32_peak": peak,
            "measured_matmul_peak": matmul_peak(device),
        }
    for w in opts.workloads:
        if w == "null":
            report["workloads"]["null"] = run_null(opts, log)
        else:
            report["workloads"][w] = run_workload(w, opts, device, log)
    report["memory"] = {"rss_peak": rss_peak()}
    if device.type == "cuda":
        report["memory"]["device_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
    report["environment"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["elapsed_s"] = time.time() - started
    if opts.out is not None:
        write_report(report, Path(opts.out))
    return report


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.1f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    env = report["environment"]
    lines = [
        "# asyncfl bench",
        "",
        f"- command: `{' '.join(report.get('command') or ['asyncfl', 'bench'])}`",
        f"- device: {env.get('device')} ({report.get('device', {}).get('name', env.get('cpu'))}), "
        f"{env.get('cpu_count')} CPUs, torch {env.get('torch')} with {env.get('torch_threads')} threads",
        f"- load average at start / end: {env.get('load_average_start')} / {env.get('load_average_end')}",
        f"- git commit: {env.get('git_commit')}",
    ]
    dev = report.get("device")
    if dev:
        lines.append(
            f"- peak FLOP/s: measured float32 matmul {_fmt(dev['measured_matmul_peak'] / 1e9)} GFLOP/s"
            + (f", vendor FP32 {_fmt(dev['vendor_fp32_peak'] / 1e12)} TFLOP/s" if dev.get("vendor_fp32_peak") else "")
        )
    for name, w in report["workloads"].items():
        lines += ["", f"## {name}", ""]
        if name == "null":
            lines += [
                f"Engine cost with a null backend: {w['clients']:,} clients, {w['in_flight']:,} in flight, "
                f"{w['tasks']:,} tasks.",
                "",
                "| server | us per task (wall) | us per task (CPU) | tasks |",
                "|---|---:|---:|---:|",
            ]
            rows = [(mode, w[mode]) for mode in ("async", "buffered")] + list(w.get("variants", {}).items())
            for label, r in rows:
                lines.append(f"| {label} | {r['us_per_task']:.2f} | {r['us_per_task_cpu']:.2f} | {int(r['tasks']):,} |")
            continue
        sc = w["scenario"]
        peak = (dev or {}).get("vendor_fp32_peak") or (dev or {}).get("measured_matmul_peak")
        lines += [
            f"{sc['clients']['count']:,} clients, {sc['server']['concurrency']:,} in flight, "
            f"FedBuff K={sc['server']['buffer_size']} with s(tau) = (1 + tau)^-0.5, {sc['stop']['client_updates']:,} client updates, "
            f"algorithm {sc['algorithm']['name']}"
            + (f" ({sc['algorithm'].get('variant')})" if sc["algorithm"].get("variant") else "")
            + f", {_fmt(w['flops_per_update'] / 1e6)} MFLOP per update.",
            "",
            "| mode | updates/s (wall) | updates/s (CPU) | x one-at-a-time | x bare loop | GFLOP/s | % of peak "
            "| calls | jobs/call | peak versions | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        one = w["modes"].get("one_at_a_time", {}).get("updates_per_s")
        bare = (w.get("bare_loop") or {}).get("updates_per_s")
        for mode, r in w["modes"].items():
            rate = r["updates_per_s"]
            ex = r["executor"]
            lines.append(
                f"| {mode} | {_fmt(rate)} | {_fmt(r['updates_per_cpu_s'])} | {_fmt(rate / one if one else None)} "
                f"| {_fmt(rate / bare if bare else None)} | {_fmt(r['achieved_flops'] / 1e9)} "
                f"| {_fmt(100 * r['achieved_flops'] / peak if peak else None)} | {ex['calls']:,} "
                f"| {_fmt(ex['jobs_per_call'])} | {r['versions_peak']} | {_mib(r['rss_peak_so_far'])} |"
            )
        if w.get("bare_loop"):
            b = w["bare_loop"]
            lines.append(
                f"| bare PyTorch loop | {_fmt(b['updates_per_s'])} | {_fmt(b['updates_per_cpu_s'])} "
                f"| {_fmt(b['updates_per_s'] / one if one else None)} | 1 | {_fmt(b['achieved_flops'] / 1e9)} "
                f"| {_fmt(100 * b['achieved_flops'] / peak if peak else None)} | - | - | - | - |"
            )
        for label, chk in w["equality"].items():
            verdict = "ok" if chk["ok"] else ("MISMATCH" if chk.get("acceptance", True) else "over tolerance")
            note = "" if chk.get("acceptance", True) else " (different float formulation; informational)"
            lines.append("")
            lines.append(
                f"- {label}{note}: events identical: {chk['events_identical']}; metrics max relative difference "
                f"{chk['metrics_max_rel_diff']:.2e} (tolerance {chk['rel_tol']:.0e}); final model max relative "
                f"difference {chk['final_model_max_rel_diff']:.2e}: **{verdict}**"
            )
        if any("device_peak_bytes" in r for r in w["modes"].values()):
            lines.append("")
            lines.append(
                "- device peak memory (MiB): "
                + ", ".join(f"{m} {_mib(r.get('device_peak_bytes'))}" for m, r in w["modes"].items())
            )
    lines += ["", f"Peak host RSS of the whole bench: {_mib(report['memory']['rss_peak'])} MiB.", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """bench.json and bench.md in ``out`` (created), each atomically (a temporary file in ``out``,
    renamed into place): a full disk or quota is one line naming the file (exit 4), a read-only
    or forbidden folder one line (exit 2), and neither file is ever left half-written. bench.json
    goes first: should bench.md fail, the measurements are kept whole."""
    from asyncfl.runs.rundir import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "bench.json", out / "bench.md"
    write_atomic(js, (json.dumps(report, indent=2, default=str) + "\n").encode())
    write_atomic(md, markdown(report).encode())
    return js, md


__all__ = ["BenchOptions", "bare_loop", "compare_runs", "markdown", "measure_run", "run_bench"]
