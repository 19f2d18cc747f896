"""The scenario library: every file in scenarios/ loads and validates (every sweep point too), opens
with a header saying what it is for, and runs end to end at a tiny scale when its data is here.

Tiny scale = overrides applied on top of the file: a few clients, a few server steps, an
evaluation every few steps, a capped data pool. Files whose data files are absent here (LEAF
FEMNIST always; the MNIST subset ../shared/data/mnist-5k on machines without it) are skipped with
the reason, after their validation passed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import asyncfl
from asyncfl.config.loader import read_yaml
from asyncfl.study.sweep_plan import plan_sweep

REPO = Path(__file__).resolve().parent.parent
SCENARIO_DIR = REPO / "scenarios"
FILES = sorted(SCENARIO_DIR.glob("*.yaml"))
IDS = [p.stem for p in FILES]

# The files this test suite was written with (a missing one means the library lost a scenario).
EXPECTED = {
    "quickstart", "perfedavg_mnist", "pfedme_mnist", "pfedme_synthetic", "femnist_leaf",
    "speed_label_coupling", "study_personalization_synthetic", "study_personalization_mnist",
}

TINY_COMMON = [
    "clients.count=6",
    "server.concurrency=3",
    "server.clients_per_round=3",
    "server.buffer_size=2",
    "stop.sim_time=null",
    "stop.client_updates=null",
    "stop.server_steps=3",
    "eval.every_time=null",
    "eval.every_steps=3",
    "eval.clients=null",
]
TINY_DATA = {
    "synthetic": ["data.mean_samples=20"],
    "mnist": ["data.max_samples=300"],
    "fashion_mnist": ["data.max_samples=300"],
    "emnist": ["data.max_samples=300"],
    "cifar10": ["data.max_samples=300"],
}
VISION_FOLDERS = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw", "emnist": "EMNIST/raw",
                  "cifar10": "cifar-10-batches-py"}


def missing_data(scenario: asyncfl.Scenario, base_dir: Path) -> str | None:
    """Why this scenario's data cannot be read here (None: it can)."""
    data = scenario.data
    if data.dataset == "synthetic" or data.dataset == "quadratic":
        return None
    root = Path(data.root).expanduser()
    root = root if root.is_absolute() else (base_dir / root).resolve()
    if data.dataset == "leaf":
        if not (root / "train").is_dir() or not (root / "test").is_dir():
            return f"LEAF {data.task} JSON files not found under {root} (see the file's header for how to get them)"
        return None
    folder = root / VISION_FOLDERS[data.dataset]
    if not folder.is_dir() or not any(folder.iterdir()):
        return f"{data.dataset} files not found in {folder}"
    return None


def test_library_is_complete() -> None:
    assert EXPECTED <= set(IDS), f"missing scenario files: {sorted(EXPECTED - set(IDS))}"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_scenario_validates(path: Path) -> None:
    scenario = asyncfl.load_scenario(path)
    assert scenario.name
    raw = read_yaml(path)
    if raw.get("sweep"):
        plan = plan_sweep(path)  # every grid point x seed validated, nothing run
        assert len(plan.runs) >= 2


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_scenario_has_a_header(path: Path) -> None:
    """Each file opens with a comment block saying what it answers and what it feeds."""
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 3, f"{path.name}: no header comment"
    text = " ".join(header).lower()
    assert "feeds" in text, f"{path.name}: the header should say which figure/table it feeds"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_scenario_runs_at_tiny_scale(path: Path, tmp_path: Path) -> None:
    scenario = asyncfl.load_scenario(path)
    reason = missing_data(scenario, path.parent)
    if reason is not None:
        pytest.skip(reason)
    overrides = [*TINY_COMMON, *TINY_DATA.get(scenario.data.dataset, [])]
    tiny = asyncfl.load_scenario(path, overrides)
    result = asyncfl.run(tiny, tmp_path / "run", base_dir=path.parent)
    assert result.status == "completed"
    assert result.manifest["server_version"] == 3
    back = asyncfl.load_run(tmp_path / "run")
    assert len(back.metrics) > 0 and len(back.events) > 0
    final = back.final_metrics
    assert "grad_norm_sq" in final or not tiny.eval.grad_norm
    if tiny.data.dataset != "quadratic":
        assert 0.0 <= final["personalized_accuracy"] <= 1.0


def test_femnist_leaf_runs_on_fabricated_leaf_files(tmp_path: Path) -> None:
    """The LEAF scenario's data path, on small files of LEAF's JSON form (the real ones are not
    here): 8 writers, 784 pixel floats per sample, labels 0..61; a smaller CNN keeps it fast."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    for part, n in (("train", 12), ("test", 4)):
        (tmp_path / "leaf" / part).mkdir(parents=True)
        users = [f"f{i:04d}_{i:02d}" for i in range(8)]
        user_data = {u: {"x": rng.random((n, 784)).round(3).tolist(), "y": rng.integers(0, 62, n).tolist()}
                     for u in users}
        body = {"users": users, "num_samples": [n] * 8, "hierarchies": [], "user_data": user_data}
        (tmp_path / "leaf" / part / f"all_data_0_niid_05_keep_0_{part}_9.json").write_text(json.dumps(body))
    path = SCENARIO_DIR / "femnist_leaf.yaml"
    overrides = [*TINY_COMMON, f"data.root={tmp_path / 'leaf'}", "model.channels=[4, 8]", "model.hidden=32"]
    scenario = asyncfl.load_scenario(path, overrides)
    result = asyncfl.run(scenario, base_dir=path.parent)
    assert result.status == "completed" and result.manifest["server_version"] == 3
    assert 0.0 <= result.final_metrics["personalized_accuracy"] <= 1.0


def test_leaf_sent140_runs_on_fabricated_leaf_files(tmp_path: Path) -> None:
    """scenarios/leaf_sent140.yaml with LEAF's own sent140 network (embedding 100, 2 x LSTM 100,
    dense 128 without activation, 2 logits), on small fabricated files of LEAF's JSON form."""
    from asyncfl.config.schema import CharLSTMModel
    from asyncfl.data.fake import write_fake_leaf

    root = write_fake_leaf(tmp_path / "leaf", "sent140", users=6)
    path = SCENARIO_DIR / "leaf_sent140.yaml"
    scenario = asyncfl.load_scenario(path, [*TINY_COMMON, f"data.root={root}"])
    model = scenario.model
    assert isinstance(model, CharLSTMModel)
    assert (model.embedding, model.hidden, model.layers, model.dense) == (100, 100, 2, 128)
    result = asyncfl.run(scenario, tmp_path / "run", base_dir=path.parent)
    assert result.status == "completed" and result.manifest["server_version"] == 3
    assert 0.0 <= result.final_metrics["personalized_accuracy"] <= 1.0
