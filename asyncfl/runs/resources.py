"""Resource guard: estimate a run's memory before building it and refuse what cannot fit.

Two checks. Before anything is built, a scenario-only estimate (data set size from its keys,
the largest per-job minibatch) catches absurd settings such as ``clients.count: 1e9``. After the
data and model exist, the real sizes are used: data tensors, model versions for the in-flight
clients, one executor chunk and one evaluation chunk. Either refuses with one line that names
what to lower.
"""

from __future__ import annotations

import os
from typing import Any

from asyncfl.algorithms.registry import build_rule
from asyncfl.config.schema import Scenario
from asyncfl.data.registry import DATASETS, DataSet
from asyncfl.errors import UserError

GiB = float(1 << 30)


def available_memory(device: Any) -> tuple[float, str]:
    """Bytes available on ``device`` (torch.device or str) and a name for messages."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return float(free), "the GPU"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0, "this machine"
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")), "this machine"
    except (ValueError, OSError, AttributeError):
        return float("inf"), "this machine"


def estimate_scenario(scenario: Scenario) -> dict[str, float]:
    """Rough bytes before building: the data set (its registry's footprint from the keys) and one
    job's minibatches (the rule's steps x draws x batch, inputs x 8 for work).

    Refuses with one line (:class:`UserError`) a data set or rule it cannot size: a registered
    data set without a footprint, a rule without steps, draws_per_step and batch_size."""
    d = scenario.data
    n = scenario.clients.count
    entry = DATASETS.get(d.dataset)
    if not isinstance(entry, DataSet):
        raise UserError(
            f"resources: cannot estimate the memory of data set {d.dataset!r}: its registry entry is a "
            f"{type(entry).__name__}, not an asyncfl.data.registry.DataSet with a footprint"
        )
    samples, per_sample = entry.footprint(d, n)
    rule = build_rule(scenario.algorithm)  # cheap: hyperparameters only, no data
    try:
        steps, draws, batch = rule.steps, rule.draws_per_step, rule.batch_size
    except AttributeError as exc:
        raise UserError(
            f"resources: cannot estimate the memory of algorithm {scenario.algorithm.name!r} "
            f"({type(rule).__name__}): {exc}"
        ) from None
    per_client = max(samples / max(n, 1), 1.0)
    b = min(batch or per_client, per_client * 4)
    job = float(steps) * draws * b * per_sample * 8
    return {"data": float(samples) * per_sample * 3, "job": job}


def check_scenario(scenario: Scenario, device: Any) -> None:
    """Refuse before building when even the scenario-only estimate cannot fit."""
    est = estimate_scenario(scenario)
    avail, where = available_memory(device)
    if est["data"] > avail:
        raise UserError(
            f"resources: the data set needs about {est['data'] / GiB:.1f} GiB but {where} has "
            f"{avail / GiB:.1f} GiB available; lower clients.count or the data set's size keys"
        )
    if est["job"] > avail / 2:
        raise UserError(
            f"resources: one client task needs about {est['job'] / GiB:.1f} GiB of minibatches but {where} has "
            f"{avail / GiB:.1f} GiB available; lower algorithm.local_steps (or local_rounds) or algorithm.batch_size"
        )


def check_built(
    data_bytes: float, model_bytes: float, versions: int, chunk_bytes: float, eval_bytes: float, device: Any
) -> dict[str, float]:
    """Refuse when the built run's estimate exceeds what is available; returns the estimate."""
    est = {
        "data": data_bytes,
        "versions": model_bytes * versions * 2.0,
        "executor_chunk": chunk_bytes,
        "evaluation": eval_bytes,
    }
    total = sum(est.values())
    avail, where = available_memory(device)
    if total > avail:
        biggest = max(est, key=lambda k: est[k])
        hint = {
            "data": "clients.count or the data set's size keys",
            "versions": "server.concurrency (model versions held for in-flight clients)",
            "executor_chunk": "execution.max_batch",
            "evaluation": "eval.clients",
        }[biggest]
        raise UserError(
            f"resources: the run needs about {total / GiB:.1f} GiB ({biggest} {est[biggest] / GiB:.1f} GiB) but "
            f"{where} has {avail / GiB:.1f} GiB available; lower {hint}"
        )
    est["total"] = total
    return est


__all__ = ["available_memory", "check_built", "check_scenario", "estimate_scenario"]
