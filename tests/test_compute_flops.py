"""Issue 14 acceptance through whole runs: compute time follows the work (the model's FLOPs and the
rule's gradient evaluations), and the events log records each task's FLOPs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import asyncfl
from asyncfl.data.registry import build_data
from asyncfl.models.registry import build_model
from asyncfl.runs.runner import gradient_flops_per_sample

D, C, H, STEPS, BATCH = 60, 10, 20, 4, 8


def _scenario(algorithm: dict[str, Any], model: dict[str, Any], mode: str = "async") -> dict[str, Any]:
    return {
        "name": "flops",
        "seed": 3,
        "algorithm": algorithm,
        "server": {"mode": mode, "concurrency": 3, "clients_per_round": 3},
        "data": {"dataset": "synthetic", "dimension": D, "classes": C, "mean_samples": 40, "min_samples": 2 * BATCH},
        "model": model,
        "clients": {"count": 6},
        "system": {"devices": {"mid_edge": 1.0}, "compute": {"jitter": 1.0}},
        "stop": {"client_updates": 18},
        "eval": {"every_steps": 1000, "grad_norm": False},
        "execution": {"threads": 1},
    }


def _events(tmp: Path, name: str, sc: dict[str, Any]) -> pd.DataFrame:
    asyncfl.run(sc, tmp / name)
    ev = pd.read_csv(tmp / name / "events.csv")
    assert len(ev) >= 18
    return ev


def test_per_sample_gradient_flops_are_hand_derived() -> None:
    """Logistic regression: 4 d C (2 d C forward, 2 d C weight gradient); an MLP d-H-C: 4 d H
    (first layer: forward and weight gradient) + 6 H C (last layer: forward, weight gradient and
    the input gradient back-propagated into the hidden layer)."""
    sc = asyncfl.Scenario.model_validate(_scenario({"name": "fedavg"}, {"name": "logreg"}))
    data = build_data(sc.data, sc.clients.count, sc.seed, Path.cwd())
    for spec, expected in (({"name": "logreg"}, 4 * D * C), ({"name": "mlp", "hidden": [H]}, 4 * D * H + 6 * H * C)):
        cfg = asyncfl.Scenario.model_validate({**_scenario({"name": "fedavg"}, spec)}).model
        model = build_model(cfg, data)
        w = model.init(0, dtype=torch.float32)
        assert gradient_flops_per_sample(model, data, w) == expected


def test_model_size_enters_compute_time(tmp_path: Path) -> None:
    """Acceptance: FedAvg with logreg versus the MLP, same data and device profile: mean compute time
    per task in events.csv in the ratio of their FLOPs (within 1%); the flops column holds
    local_steps x batch x FLOPs per per-sample gradient."""
    fedavg = {"name": "fedavg", "local_steps": STEPS, "batch_size": BATCH}
    lr = _events(tmp_path, "logreg", _scenario(fedavg, {"name": "logreg"}))
    mlp = _events(tmp_path, "mlp", _scenario(fedavg, {"name": "mlp", "hidden": [H]}))
    f_lr, f_mlp = 4 * D * C, 4 * D * H + 6 * H * C
    assert set(lr["flops"]) == {STEPS * BATCH * f_lr} and set(mlp["flops"]) == {STEPS * BATCH * f_mlp}
    ratio = mlp["compute_time"].mean() / lr["compute_time"].mean()
    print(f"MLP/logreg mean compute time ratio {ratio:.6f}, FLOPs ratio {f_mlp / f_lr:.6f}")
    assert ratio == pytest.approx(f_mlp / f_lr, rel=0.01)
    # and the seconds are the FLOPs over the device's FLOP/s
    assert lr["compute_time"].iloc[0] == pytest.approx(STEPS * BATCH * f_lr / 8.0e9, rel=1e-12)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_hf_versus_fo_in_ratio_of_gradient_evaluations(tmp_path: Path, mode: str) -> None:
    """Acceptance: Per-FedAvg HF evaluates 4 per-sample gradients per step and sample (D, D', and two
    on D'' for the Hessian-vector difference), FO 2: mean compute time ratio 2 (within 1%)."""
    pfa = {"name": "per_fedavg", "local_steps": STEPS, "batch_size": BATCH}
    hf = _events(tmp_path, "hf", _scenario({**pfa, "variant": "hf"}, {"name": "logreg"}, mode))
    fo = _events(tmp_path, "fo", _scenario({**pfa, "variant": "fo"}, {"name": "logreg"}, mode))
    ratio = hf["compute_time"].mean() / fo["compute_time"].mean()
    print(f"{mode}: HF/FO mean compute time ratio {ratio:.6f}")
    assert ratio == pytest.approx(2.0, rel=0.01)
    assert set(hf["flops"]) == {4 * STEPS * BATCH * 4 * D * C}
