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
from asyncfl.errors import UserError

GiB = float(1 << 30)
# Bytes per sample and sample counts of the pooled data sets (features as float32).
_POOLED = {
    "mnist": (70_000, 28 * 28 * 4),
    "fashion_mnist": (70_000, 28 * 28 * 4),
    "emnist": (814_255, 28 * 28 * 4),
    "cifar10": (60_000, 3 * 32 * 32 * 4),
}


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
    """Rough bytes before building: data set and one job's minibatches (inputs x 8 for work)."""
    d = scenario.data
    n = scenario.clients.count
    if d.dataset == "synthetic":
        samples = n * d.mean_samples * (2.0 if d.sigma_samples > 1 else 1.3)
        per_sample = d.dimension * 4 + 8
    elif d.dataset == "quadratic":
        samples = n * d.dimension * 2
        per_sample = d.dimension * 4 + 8
    elif d.dataset in _POOLED:
        samples, per_sample = _POOLED[d.dataset]
        cap = getattr(d, "max_samples", None)
        if cap is not None:
            samples = min(samples, int(cap))
    else:
        samples, per_sample = 0.0, 0
    rule = build_rule(scenario.algorithm)  # cheap: hyperparameters only, no data
    steps, draws, batch = rule.steps, rule.draws_per_step, rule.batch_size
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


def check_built(data_bytes: float, model_bytes: float, versions: int, chunk_bytes: float, eval_bytes: float,
                device: Any) -> dict[str, float]:
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
