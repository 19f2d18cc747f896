"""Shared fixtures: a tiny scenario that runs end to end in well under a second."""

from __future__ import annotations

import os

# Tests use tiny models: one intra-op thread is fastest, and it avoids oversubscribing a 2-core CI
# machine (two spinning OpenMP threads per process made tiny ops ~100x slower under load).
# Subprocesses (CLI runs) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 1,
    "algorithm": {"name": "fedasync", "lr": 0.05, "local_steps": 2, "batch_size": 8},
    "server": {
        "mode": "async",
        "concurrency": 4,
        "max_staleness": 6,
        "staleness_weight": {"name": "polynomial", "a": 0.5},
        "lr": 0.6,
    },
    "data": {"dataset": "synthetic", "mean_samples": 30, "sigma_samples": 0.5, "dimension": 10, "classes": 4},
    "model": {"name": "logreg"},
    "clients": {"count": 12},
    "system": {"compute": {"speed": {"dist": "lognormal", "mean": 200.0, "sigma": 1.0}}},
    "stop": {"server_steps": 30},
    "eval": {"every_steps": 10},
}


@pytest.fixture
def tiny() -> dict[str, Any]:
    """A fresh copy of the tiny scenario mapping."""
    return copy.deepcopy(TINY)


def write_scenario(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny_file(tmp_path: Path, tiny: dict[str, Any]) -> Path:
    return write_scenario(tmp_path / "tiny.yaml", tiny)
