"""Study figure for server.selection: participation and staleness per strategy, one system model.

50 clients with lognormal speeds (sigma 1), async server with 10 in flight, 4,000 updates, seed 0
(null backend: selection and staleness depend only on the system model). Check: the mean staleness
is concurrency - 1 = 9 under every strategy (each update sees, on average, the other 9 in flight
applied before it). A second figure, selection_overcommit.png, compares sync rounds with and
without FedScale's over-commitment. Run from the repository
root: ``python analysis/selection_study.py`` writes docs/figures/selection_study.png and selection_overcommit.png.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from asyncfl.config.schema import (
    ComputeConfig,
    DataSizeSelection,
    EvalConfig,
    LeastRecentSelection,
    LognormalDist,
    OvercommitSelection,
    Selection,
    ServerConfig,
    StopConfig,
    SystemConfig,
    UniformSelection,
)
from asyncfl.sim.availability import make_availability
from asyncfl.sim.backend import NullBackend
from asyncfl.sim.engine import Engine
from asyncfl.sim.system import SystemModel

N, CONCURRENCY, UPDATES, SEED = 50, 10, 4000, 0
SYSTEM = SystemConfig(compute=ComputeConfig(speed=LognormalDist(mean=100.0, sigma=1.0)))
STRATEGIES: dict[str, Selection] = {
    "uniform": UniformSelection(),
    "least_recent": LeastRecentSelection(),
    "data_size": DataSizeSelection(),
    "overcommit (speed-aware, a=1)": OvercommitSelection(speed_exponent=1.0),
}


def run(sel: Selection, sizes: np.ndarray) -> tuple[Counter[int], list[int], np.ndarray]:
    system = SystemModel(SYSTEM, N, SEED, np.full(N, 100.0), 4000)
    engine = Engine(
        ServerConfig(mode="async", concurrency=CONCURRENCY, selection=sel),
        StopConfig(client_updates=UPDATES),
        EvalConfig(every_steps=None),
        N,
        system,
        make_availability(SYSTEM.availability, N, SEED),
        NullBackend(keep_applied=False),
        SEED,
        train_sizes=sizes,
    )
    events = [e for e in engine.run().events if e.status == "applied"]
    return Counter(e.client for e in events), [e.staleness for e in events], system.mean_task_time()


def main() -> None:
    sizes = np.random.default_rng(SEED).lognormal(np.log(100.0), 1.0, N).round() + 1
    fig, axes = plt.subplots(2, len(STRATEGIES), figsize=(16, 7), sharey="row")
    for j, (label, sel) in enumerate(STRATEGIES.items()):
        counts, staleness, mean_time = run(sel, sizes)
        order = np.argsort(mean_time)  # fastest client first
        share = np.array([counts[c] for c in order]) / UPDATES
        ax = axes[0, j]
        ax.bar(np.arange(N), share, color="tab:blue")
        ax.axhline(1.0 / N, color="k", lw=0.8, ls="--", label="1/N")
        ax.set_title(label)
        ax.set_xlabel("client, fastest to slowest")
        if label == "data_size":
            ax.plot(np.arange(N), sizes[order] / sizes.sum(), "r.", ms=4, label="n_k / n")
        ax.legend(fontsize=8)
        ax = axes[1, j]
        bins = np.arange(0, max(staleness) + 2) - 0.5
        ax.hist(staleness, bins=bins, density=True, color="tab:orange")
        ax.set_xlim(-0.5, 60)
        p99 = np.percentile(staleness, 99)
        ax.set_xlabel(f"staleness tau (mean {np.mean(staleness):.1f}, 99th pct {p99:.0f}, max {max(staleness)})")
    axes[0, 0].set_ylabel("share of applied updates")
    axes[1, 0].set_ylabel("fraction of applied updates")
    fig.suptitle(
        f"Selection strategies: {N} clients, lognormal speeds (sigma 1), async, {CONCURRENCY} in flight, "
        f"{UPDATES} updates, seed {SEED}"
    )
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "docs" / "figures" / "selection_study.png"
    fig.savefig(out, dpi=110)
    print(out)
    overcommit(sizes)


def overcommit(sizes: np.ndarray) -> None:
    """Sync rounds of K = 10: uniform versus FedScale's over-commitment (factor 1.3, keep the
    first 10 arrivals), with and without speed-aware picks: who contributes, how long rounds last."""
    cases: dict[str, Selection] = {
        "uniform": UniformSelection(),
        "overcommit 1.3": OvercommitSelection(factor=1.3),
        "overcommit 1.3, speed-aware a=1": OvercommitSelection(factor=1.3, speed_exponent=1.0),
    }
    rounds = 400
    results: list[tuple[list[float], int]] = []
    fig, axes = plt.subplots(2, len(cases), figsize=(13, 7), sharey="row")
    for j, (label, sel) in enumerate(cases.items()):
        system = SystemModel(SYSTEM, N, SEED, np.full(N, 100.0), 4000)
        engine = Engine(
            ServerConfig(mode="sync", clients_per_round=10, selection=sel),
            StopConfig(server_steps=rounds),
            EvalConfig(every_steps=None),
            N,
            system,
            make_availability(SYSTEM.availability, N, SEED),
            NullBackend(keep_applied=False),
            SEED,
            train_sizes=sizes,
        )
        events = engine.run().events
        applied = [e for e in events if e.status == "applied"]
        order = np.argsort(system.mean_task_time())
        counts = Counter(e.client for e in applied)
        ax = axes[0, j]
        ax.bar(np.arange(N), [counts[c] / len(applied) for c in order], color="tab:blue")
        ax.axhline(1.0 / N, color="k", lw=0.8, ls="--", label="1/N")
        ax.set_title(label)
        ax.set_xlabel("client, fastest to slowest")
        ax.legend(fontsize=8)
        ends: dict[float, float] = {}
        for e in applied:
            ends[e.dispatch_time] = max(ends.get(e.dispatch_time, 0.0), e.arrival_time)
        durations = [end - start for start, end in ends.items()]
        dropped = sum(e.status == "dropped_overcommit" for e in events)
        results.append((durations, dropped))
    top = max(max(d) for d, _ in results)
    for j, (durations, dropped) in enumerate(results):
        ax = axes[1, j]
        ax.hist(durations, bins=np.logspace(np.log10(0.5), np.log10(top * 1.05), 60), color="tab:green")
        ax.set_xscale("log")
        ax.set_xlabel(
            f"round duration, s (mean {np.mean(durations):.1f}, max {max(durations):.0f}; {dropped} discarded)"
        )
    axes[0, 0].set_ylabel("share of applied updates")
    axes[1, 0].set_ylabel("rounds")
    fig.suptitle(f"Sync rounds of 10 from {N} clients (lognormal speeds, sigma 1), {rounds} rounds, seed {SEED}")
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "docs" / "figures" / "selection_overcommit.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
