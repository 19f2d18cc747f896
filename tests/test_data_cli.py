"""Data sets from the command line (issue: data and models): switching data set, partition and
model on the quickstart, the missing-data error's exit code, and `asyncfl data describe` on every
data set -- all on small files in the real on-disk formats."""

from __future__ import annotations

from pathlib import Path

import pytest

import asyncfl
from asyncfl.cli import main
from asyncfl.data.fake import write_fake_idx_dataset, write_fake_leaf

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "scenarios" / "quickstart.yaml")
SMALL = [
    "--set",
    "clients.count=10",
    "--set",
    "server.concurrency=4",
    "--set",
    "stop.server_steps=4",
    "--set",
    "eval.every_steps=4",
]


def test_quickstart_switches_to_mnist_dirichlet_cnn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's command: input shape and class count flow from the data to the model, and the
    synthetic-only keys of the quickstart give way."""
    root = tmp_path / "data"
    write_fake_idx_dataset(root, "mnist", n_train=300, n_test=60)
    code = main(
        [
            "run",
            QUICK,
            "--out",
            str(tmp_path / "r"),
            "--quiet",
            "--set",
            "data.dataset=mnist",
            "--set",
            f"data.root={root}",
            "--set",
            "data.partition=dirichlet",
            "--set",
            "model.name=cnn",
            "--set",
            "model.channels=[4, 8]",
            "--set",
            "model.hidden=16",
            *SMALL,
        ]
    )
    assert code == 0, capsys.readouterr().err
    res = asyncfl.load_run(tmp_path / "r")
    assert res.status == "completed"
    assert {"personalized_accuracy", "global_accuracy"} <= set(res.metrics["metric"])


def test_missing_data_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "run",
            QUICK,
            "--out",
            str(tmp_path / "r"),
            "--quiet",
            "--set",
            "data.dataset=fashion_mnist",
            "--set",
            f"data.root={tmp_path / 'nowhere'}",
            "--set",
            "model.name=mlp",
            *SMALL,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "nowhere" in err and "download" in err


@pytest.mark.parametrize("dataset", ["synthetic", "quadratic", "mnist", "fashion_mnist", "emnist", "leaf"])
def test_data_describe_on_every_data_set(dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sets = ["--set", "clients.count=6", "--set", "server.concurrency=2"]
    if dataset in ("mnist", "fashion_mnist", "emnist"):
        root = tmp_path / "d"
        write_fake_idx_dataset(root, dataset, n_train=120, n_test=30)
        sets += ["--set", f"data.dataset={dataset}", "--set", f"data.root={root}", "--set", "model.name=mlp"]
    elif dataset == "leaf":
        root = write_fake_leaf(tmp_path / "leaf", "femnist", users=8)
        sets += ["--set", "data.dataset=leaf", "--set", f"data.root={root}", "--set", "model.name=cnn"]
    elif dataset == "quadratic":
        # the quickstart re-deals Synthetic by label (partition dirichlet); quadratic clients are natural only
        sets += ["--set", "data.dataset=quadratic", "--set", "model.name=quadratic", "--set", "data.partition=natural"]
    fig = tmp_path / "split.png"
    code = main(["data", "describe", QUICK, "--figure", str(fig), *sets])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "clients" in out.out and fig.stat().st_size > 1000
