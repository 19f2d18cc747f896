"""The personalization study script (analysis/personalization_study.py) at tiny scale: it runs every
algorithm under both server modes, writes its table (CSV and Markdown) and its figures, keeps
finished runs when rerun, and reads results only through asyncfl's public API."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "analysis" / "personalization_study.py"
MNIST = REPO.parent / "shared" / "data" / "mnist-5k" / "MNIST" / "raw"
ALGORITHMS = {"Per-FedAvg (HF)", "Per-FedAvg (FO)", "FedAvg", "pFedMe"}


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pstudy")
    datasets = "synthetic,mnist" if MNIST.is_dir() else "synthetic"
    proc = run_script("--out", str(out), "--scale", "tiny", "--workers", "1", "--datasets", datasets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_writes_table_and_figures(tiny_study: Path) -> None:
    for name in ("results.csv", "results.md", "runs.csv", "accuracy.png", "curves.png"):
        path = tiny_study / name
        assert path.is_file() and path.stat().st_size > 0, name
    for fig in ("accuracy.png", "curves.png"):
        data = (tiny_study / fig).read_bytes()
        assert data.startswith(b"\x89PNG") and 10_000 < len(data) < 400_000


def test_table_has_every_algorithm_and_mode(tiny_study: Path) -> None:
    table = pd.read_csv(tiny_study / "results.csv")
    datasets = set(table["dataset"])
    assert "synthetic" in datasets
    for ds in datasets:
        sub = table[table["dataset"] == ds]
        assert set(sub["algorithm"]) == ALGORITHMS
        assert set(sub["mode"]) == {"sync", "async"}
        assert len(sub) == 8
    for col in ("personalized_accuracy", "global_accuracy"):
        assert table[col].between(0.0, 1.0).all()
    runs = pd.read_csv(tiny_study / "runs.csv")
    assert (runs["status"] == "completed").all()
    # same budget of client updates for every run of a data set
    for _, grp in runs.groupby("dataset"):
        assert grp["client_updates"].nunique() == 1
    assert (runs.loc[runs["mode"] == "sync", "staleness_mean"] == 0).all()
    md = (tiny_study / "results.md").read_text()
    assert "| data set | mode | algorithm |" in md and "The papers' findings, checked" in md
    assert "python analysis/personalization_study.py" in md
    assert "pFedMe personalized > pFedMe global" in md


def test_rerun_keeps_finished_runs(tiny_study: Path) -> None:
    """Rerunning the command resumes: every finished run is recognised (also those whose data.root,
    relative in the study file, was written out absolute in the run directory)."""
    datasets = "synthetic,mnist" if MNIST.is_dir() else "synthetic"
    n = 8 * len(datasets.split(","))
    proc = run_script("--out", str(tiny_study), "--scale", "tiny", "--workers", "1", "--datasets", datasets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{n} runs kept, 0 to run" in proc.stderr


def test_missing_mnist_is_skipped_with_a_reason(tmp_path: Path) -> None:
    proc = run_script(
        "--out",
        str(tmp_path / "o"),
        "--scale",
        "tiny",
        "--workers",
        "1",
        "--datasets",
        "mnist",
        "--mnist-root",
        str(tmp_path / "nowhere"),
    )
    assert proc.returncode != 0
    assert "skipped mnist: no mnist files in" in proc.stderr and "Traceback" not in proc.stderr


def test_script_uses_only_the_public_api() -> None:
    """analysis/ plans, runs and reads its sweeps through asyncfl's study API (sweep planning,
    sweeps, results) and the error types; it never imports the simulator's internals (sim, exec,
    runs, algorithms) nor re-implements the sweep machinery (no process pool of its own)."""
    tree = ast.parse(SCRIPT.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    ours = {m for m in imported if m == "asyncfl" or m.startswith("asyncfl.")}
    assert ours <= {
        "asyncfl",
        "asyncfl.errors",
        "asyncfl.config.loader",
        "asyncfl.study.sweep",
        "asyncfl.study.sweep_plan",
        "asyncfl.study.results",
        "asyncfl.study.stats",
        "asyncfl.study.figures.convergence",  # the reference levels' style and drawing
    }, ours
    assert not imported & {"multiprocessing", "concurrent.futures"}, imported


def _load_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("personalization_study", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the script loads
    spec.loader.exec_module(mod)
    return mod


def test_paired_difference_by_hand() -> None:
    """HF - FO paired by seed: mean, 95% t interval and wins, on numbers worked out by hand
    (diffs 0.02, 0.04, 0.00: mean 0.02, s.d. 0.02, half-width t_{0.975,2} * 0.02 / sqrt(3), t_{0.975,2} =
    4.30265 exactly: the one Student-t implementation of asyncfl.study.stats)."""
    ps = _load_script()
    rows = []
    for seed, (hf, fo) in enumerate([(0.90, 0.88), (0.80, 0.76), (0.70, 0.70)]):
        for arm, acc, loss in (("per_fedavg-hf", hf, 0.5), ("per_fedavg-fo", fo, 0.6)):
            rows.append(
                {
                    "dataset": "synthetic",
                    "mode": "sync",
                    "hyper": "alpha=0.1,beta=0.03",
                    "seed": seed,
                    "arm": arm,
                    "status": "completed",
                    "personalized_accuracy": acc,
                    "global_accuracy": 0.5,
                    "personalized_loss": loss,
                }
            )
    rows.append({**rows[0], "seed": 3, "status": "diverged"})  # an unpaired, failed run is left out
    t = ps.paired(pd.DataFrame(rows))
    assert len(t) == 1
    r = t.iloc[0]
    assert r["pairs"] == 3 and r["hf_wins"] == 2 and r["ties"] == 1
    assert r["diff"] == pytest.approx(0.02) and r["diff_sd"] == pytest.approx(0.02)
    assert r["ci"] == pytest.approx(4.302653 * 0.02 / 3**0.5, rel=1e-6)
    assert r["loss_gain"] == pytest.approx(0.1)
    assert r["not_completed"] == "HF x1"
    # exact quantiles (the old hand table gave 2.228 for df = 11 and 1.96 beyond df = 60)
    assert ps.t_quantile(4) == pytest.approx(2.776445, abs=1e-6)
    assert ps.t_quantile(11) == pytest.approx(2.200985, abs=1e-6)
    assert ps.t_quantile(100) == pytest.approx(1.983972, abs=1e-6)


def test_matched_mode_writes_paired_table(tmp_path: Path) -> None:
    proc = run_script(
        "--out",
        str(tmp_path),
        "--scale",
        "tiny",
        "--workers",
        "1",
        "--datasets",
        "synthetic",
        "--matched",
        "--seeds",
        "2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "matched.csv")
    assert len(table) == 6 and set(table["mode"]) == {"sync", "async"} and (table["pairs"] == 2).all()
    runs = pd.read_csv(tmp_path / "matched_runs.csv")
    assert set(runs["arm"]) == {"per_fedavg-hf", "per_fedavg-fo"}
    # the same step sizes for both variants in every setting
    assert runs.groupby(["hyper", "mode", "seed"])["arm"].nunique().eq(2).all()
    assert "HF - FO (points)" in (tmp_path / "matched.md").read_text()
    assert (tmp_path / "matched.png").read_bytes().startswith(b"\x89PNG")


def _tiny_frames(ps: Any, out: Path) -> tuple[Any, Any, dict[str, int]]:
    """(runs, evaluations, budgets) of the tiny study in ``out``, read back as the script does."""
    datasets = ["synthetic", "mnist"] if MNIST.is_dir() else ["synthetic"]
    parts, _ = ps.plan(out, datasets, ps.SCALES["tiny"], None, {})
    runs, evals = ps.collect(parts)
    return runs, evals, {p.dataset: p.budget for p in parts}


def _segments(ax: Any, gid: str) -> list[Any]:
    return [c for c in ax.collections if c.get_gid() == gid]


def test_accuracy_figure_draws_labelled_reference_levels(tiny_study: Path) -> None:
    """accuracy.png draws, per panel (data set, mode), each algorithm's personalized accuracy at the
    first evaluation over its personalized bar, and across the panel the data set's majority-label
    accuracy (the no-collaboration level); the legend names both, the majority level is written on
    the figure, and the y values are the runs' own numbers (in %)."""
    import matplotlib.pyplot as plt

    ps = _load_script()
    runs, evals, budgets = _tiny_frames(ps, tiny_study)
    assert runs["majority_accuracy"].between(0.0, 1.0).all()
    fig = ps.draw_accuracy(runs)
    try:
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert ps.INITIAL_LABEL in legend and ps.REF_STYLE["majority"][2] in legend
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert len(panels) == 2 * runs["dataset"].nunique()
        for ax in panels:
            ds = next(d for d in ps.SCENARIOS if ax.get_title().startswith(ps.DATASET_LABELS[d]))
            mode = ax.get_title().rsplit(", ", 1)[1]
            sub = runs[(runs["dataset"] == ds) & (runs["mode"] == mode)]
            majority = [ln for ln in ax.get_lines() if ln.get_gid() == "ref:majority"]
            assert len(majority) == 1
            want = 100 * runs.loc[runs["dataset"] == ds, "majority_accuracy"].mean()
            assert majority[0].get_ydata()[0] == pytest.approx(want)
            assert f"{want:.3g}" in [t.get_text() for t in ax.texts]  # the level's value, on the figure
            ticks = [t.get_text() for t in ax.get_xticklabels()]
            for alg in ALGORITHMS:
                (seg,) = _segments(ax, f"ref:initial:{alg}")
                (path,) = seg.get_segments()
                start = 100 * sub.loc[sub["algorithm"] == alg, "personalized_accuracy_start"].mean()
                assert path[:, 1] == pytest.approx([start, start])
                i = ticks.index(alg)  # over the personalized (left) bar of its algorithm
                assert path[:, 0] == pytest.approx([i - 0.4, i])
    finally:
        plt.close(fig)
    fig = ps.draw_curves(evals, budgets, ps.SCALES["tiny"].evals)
    try:
        assert ps.REF_STYLE["majority"][2] in [t.get_text() for t in fig.legends[0].get_texts()]
        for ax in [a for a in fig.axes if a.get_visible() and a.get_title()]:
            ds = next(d for d in ps.SCENARIOS if ax.get_title().startswith(ps.DATASET_LABELS[d]))
            (majority,) = [ln for ln in ax.get_lines() if ln.get_gid() == "ref:majority"]
            want = 100 * runs.loc[runs["dataset"] == ds, "majority_accuracy"].mean()
            assert majority.get_ydata()[0] == pytest.approx(want)
    finally:
        plt.close(fig)
