"""eval.adapt_lr: resolved into the scenario (alpha for Per-FedAvg, the client lr otherwise, null
for pFedMe), recorded in the manifest, and the step the evaluation's adaptation actually takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from asyncfl.config import dump_scenario, load_scenario
from asyncfl.errors import ScenarioError
from asyncfl.runs.runner import run

BASE: dict[str, Any] = {
    "seed": 1,
    "server": {"mode": "sync", "clients_per_round": 4},
    "data": {"dataset": "synthetic", "mean_samples": 20, "partition": {"name": "dirichlet", "alpha": 0.3}},
    "clients": {"count": 8},
    "stop": {"server_steps": 3},
    "eval": {"every_steps": 3, "grad_norm": False},
}


def scenario(algorithm: dict[str, Any], **eval_keys: Any) -> Any:
    return load_scenario({**BASE, "algorithm": algorithm, "eval": {**BASE["eval"], **eval_keys}})


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ({"name": "per_fedavg", "alpha": 0.07}, 0.07),
        ({"name": "fedavg", "lr": 0.2}, 0.2),
        ({"name": "fedasync", "lr": 0.3}, 0.3),
        ({"name": "fedbuff"}, 0.05),
        ({"name": "local", "lr": 0.4}, 0.4),
        ({"name": "pfedme"}, None),
    ],
)
def test_adapt_lr_resolves_to_the_algorithms_own_step(algorithm: dict[str, Any], expected: float | None) -> None:
    s = scenario(algorithm)
    assert s.eval.adapt_lr == expected
    text = dump_scenario(s)
    assert yaml.safe_load(text)["eval"]["adapt_lr"] == expected  # the resolved scenario records it
    assert load_scenario(yaml.safe_load(text)) == s


def test_an_explicit_adapt_lr_wins_and_bad_values_are_one_line_errors() -> None:
    assert scenario({"name": "fedavg", "lr": 0.2}, adapt_lr=0.01).eval.adapt_lr == 0.01
    assert scenario({"name": "per_fedavg", "alpha": 0.07}, adapt_lr=0.5).eval.adapt_lr == 0.5
    for bad in (0.0, -1.0, "fast"):
        with pytest.raises(ScenarioError, match="adapt_lr"):
            scenario({"name": "fedavg"}, adapt_lr=bad)


def test_adapt_lr_is_in_the_manifest_and_changes_only_personalized_scores(tmp_path: Path) -> None:
    """Same run, adapt_lr 0.05 vs 0.5: the trajectory (global model) is identical, the personalized
    scores differ, majority_accuracy is the same; the manifest records the step."""
    runs = {}
    for lr in (0.05, 0.5):
        out = tmp_path / f"lr{lr}"
        run(scenario({"name": "fedavg", "lr": 0.05, "local_steps": 2}, adapt_lr=lr), out)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["eval_adapt_lr"] == lr
        assert yaml.safe_load((out / "scenario.yaml").read_text())["eval"]["adapt_lr"] == lr
        runs[lr] = manifest["final_metrics"]
    a, b = runs[0.05], runs[0.5]
    assert a["global_loss"] == b["global_loss"]
    assert a["majority_accuracy"] == b["majority_accuracy"]
    assert a["personalized_loss"] != pytest.approx(b["personalized_loss"], rel=1e-3)
