"""The scenario library: every file in scenarios/ loads and validates (every sweep point too), opens
with a header saying what it is for, and runs end to end at a tiny scale when its data is here.

Each header names a headline metric and the margin by which it improves from the first evaluation
to the last ("Headline: METRIC rises by at least X"); run at its shipped size (the file as
``asyncfl run`` runs it, the sweep's base point), the quickstart is checked in the default suite
and every other synthetic/MNIST scenario under ``-m slow`` (MNIST ones read the subset at
../shared/data/mnist-5k and skip when it is absent; LEAF ones need data this repository lacks).

Tiny scale = overrides applied on top of the file: a few clients, a few server steps, an
evaluation every few steps, a capped data pool. Files whose data files are absent here (LEAF
FEMNIST always; the MNIST subset ../shared/data/mnist-5k on machines without it) are skipped with
the reason, after their validation passed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
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
    "quickstart",
    "perfedavg_mnist",
    "pfedme_mnist",
    "pfedme_synthetic",
    "femnist_leaf",
    "speed_label_coupling",
    "study_personalization_synthetic",
    "study_personalization_mnist",
    "persafl_staleness",
    "persafl_staleness_wait",
}
HEADLINE = re.compile(r"Headline:\s+(\w+)\b.*?\b(rises|falls) by at least ([0-9.]+)", re.S)
MNIST_SUBSETS = [REPO.parent / "shared" / "data" / "mnist-5k", Path("/work/shared/data/mnist-5k")]

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
VISION_FOLDERS = {
    "mnist": "MNIST/raw",
    "fashion_mnist": "FashionMNIST/raw",
    "emnist": "EMNIST/raw",
    "cifar10": "cifar-10-batches-py",
}


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


def header_text(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def headline(path: Path) -> tuple[str, str, float]:
    """(metric, "rises" | "falls", margin) from the header's "Headline:" sentence."""
    m = HEADLINE.search(header_text(path))
    assert m is not None, f"{path.name}: the header should say 'Headline: METRIC rises by at least X'"
    return m.group(1), m.group(2), float(m.group(3))


def shipped_overrides(scenario: asyncfl.Scenario, base_dir: Path) -> list[str] | None:
    """Overrides that let the shipped scenario read its data here ([] = none needed; None = the
    data are absent). MNIST files point at the subset beside the main checkout; a worktree or a
    copy elsewhere finds it at REPO/../shared or /work/shared."""
    if missing_data(scenario, base_dir) is None:
        return []
    if scenario.data.dataset == "mnist":
        for root in MNIST_SUBSETS:
            if (root / VISION_FOLDERS["mnist"]).is_dir():
                return [f"data.root={root}"]
    return None


def first_and_last(path: Path) -> tuple[str, str, float, float, float]:
    """Run ``path`` at its shipped size; (metric, direction, margin, first, last) of its headline."""
    metric, direction, margin = headline(path)
    scenario = asyncfl.load_scenario(path)
    overrides = shipped_overrides(scenario, path.parent)
    if overrides is None:
        pytest.skip(str(missing_data(scenario, path.parent)))
    result = asyncfl.run(asyncfl.load_scenario(path, overrides), base_dir=path.parent)
    assert result.status == "completed"
    values = result.metric(metric)["value"].to_numpy()
    assert len(values) >= 3 and np.isfinite(values).all()
    return metric, direction, margin, float(values[0]), float(values[-1])


def assert_headline_improves(path: Path) -> None:
    metric, direction, margin, first, last = first_and_last(path)
    change = last - first if direction == "rises" else first - last
    assert change >= margin, (
        f"{path.name}: {metric} went {first:.4f} -> {last:.4f}; the header promises it {direction} by >= {margin}"
    )


LEARNING = [p for p in FILES if asyncfl.load_scenario(p).data.dataset in ("synthetic", "mnist")]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_scenario_header_states_its_headline(path: Path) -> None:
    """Every header names its headline metric; those whose data are synthetic or MNIST also state
    the margin (the LEAF ones cannot be measured without data this repository lacks)."""
    allowed = {"personalized_accuracy", "global_accuracy", "personalized_loss", "global_loss", "grad_norm_sq"}
    named = re.search(r"Headline:\s+(\w+)", header_text(path))
    assert named is not None, f"{path.name}: the header should name its headline metric ('Headline: METRIC ...')"
    assert named.group(1) in allowed, f"{path.name}: unknown headline metric {named.group(1)}"
    if path in LEARNING:
        metric, _, margin = headline(path)
        assert metric == named.group(1) and margin > 0


def test_quickstart_improves_its_headline_metric_by_its_stated_margin() -> None:
    """The default suite's check that learning shows (a few seconds): the quickstart as shipped."""
    assert_headline_improves(SCENARIO_DIR / "quickstart.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in LEARNING if p.stem != "quickstart"], ids=lambda p: p.stem)
def test_scenario_improves_its_headline_metric_by_its_stated_margin(path: Path) -> None:
    assert_headline_improves(path)


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
        user_data = {
            u: {"x": rng.random((n, 784)).round(3).tolist(), "y": rng.integers(0, 62, n).tolist()} for u in users
        }
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
