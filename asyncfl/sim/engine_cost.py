"""The engine's own cost per client task, with a backend that computes nothing.

``python -m asyncfl.sim.engine_cost [clients] [concurrency] [tasks] [mode]`` prints microseconds per task
(default: 100,000 clients, 1,000 in flight, 200,000 tasks, async, the default system model).
``asyncfl bench --workload null`` reports the same figure (async and buffered) with the others.

The figure covers everything the engine does per task: selecting an idle client, sampling its
durations (system model), scheduling and processing its event, the staleness bookkeeping, the
call into the backend and the event record. The null backend itself costs < 1 us of it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from asyncfl.config.schema import EvalConfig, ServerConfig, StopConfig, SystemConfig
from asyncfl.sim.availability import make_availability
from asyncfl.sim.backend import NullBackend
from asyncfl.sim.engine import Engine
from asyncfl.sim.system import SystemModel


def engine_cost(
    clients: int = 100_000,
    concurrency: int = 1_000,
    tasks: int = 200_000,
    mode: str = "async",
    system: SystemConfig | None = None,
    seed: int = 0,
    buffer_size: int = 10,
    repeat: int = 1,
    selection: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Run ``tasks`` client updates through the engine with a null backend; returns the wall
    seconds of setup and run, and ``us_per_task`` = run seconds / tasks dispatched * 1e6 (the
    best of ``repeat`` runs; ``us_per_task_cpu`` the same in process CPU time). ``buffer_size``
    applies to ``mode='buffered'``; ``selection``: the ``server.selection`` mapping (default
    uniform; every client has 100 training samples, for ``data_size``)."""
    cfg = system or SystemConfig.model_validate({})
    concurrency = min(concurrency, clients)
    best: dict[str, float] = {}
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        model = SystemModel(cfg, clients, seed, np.full(clients, 100.0), 4000)
        availability = make_availability(cfg.availability, clients, seed)
        server = ServerConfig.model_validate(
            {
                "mode": mode,
                "concurrency": concurrency,
                "clients_per_round": concurrency,
                "buffer_size": min(buffer_size, concurrency) if mode == "buffered" else 1,
                **({} if selection is None else {"selection": selection}),
            }
        )
        engine = Engine(
            server,
            StopConfig(client_updates=tasks),
            EvalConfig(every_steps=None),
            clients,
            model,
            availability,
            NullBackend(keep_applied=False),
            seed,
            train_sizes=np.full(clients, 100.0),
        )
        t1 = time.perf_counter()
        c1 = time.process_time()
        result = engine.run()
        t2 = time.perf_counter()
        c2 = time.process_time()
        n = result.counts["dispatched"]
        r = {
            "setup_s": t1 - t0,
            "run_s": t2 - t1,
            "tasks": float(n),
            "us_per_task": (t2 - t1) / max(n, 1) * 1e6,
            "us_per_task_cpu": (c2 - c1) / max(n, 1) * 1e6,
        }
        if not best or r["us_per_task"] < best["us_per_task"]:
            best = r
    return best


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    clients, concurrency, tasks = (int(a) for a in (args + ["100000", "1000", "200000"][len(args) :])[:3])
    mode = args[3] if len(args) > 3 else "async"
    r = engine_cost(clients, concurrency, tasks, mode)
    print(
        f"{mode}: {clients} clients, {concurrency} in flight, {int(r['tasks'])} tasks: {r['us_per_task']:.2f} us/task"
    )


if __name__ == "__main__":
    main()
