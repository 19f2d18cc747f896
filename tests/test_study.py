"""Reports (HTML self-contained, Markdown with images beside it), the scenario library of studies,
and the staleness study script at tiny scale."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_study_data import fabricate_sweep, tiny_sweep

from asyncfl.cli import main
from asyncfl.config.loader import read_yaml
from asyncfl.study.report import markdown_table, write_report
from asyncfl.study.sweep import run_sweep
from asyncfl.study.sweep_plan import plan_sweep

REPO = Path(__file__).resolve().parent.parent
STUDY_SCENARIOS = [
    "persafl_staleness.yaml",
    "persafl_staleness_heavytail.yaml",
    "sync_vs_async_stragglers.yaml",
    "delay_scale.yaml",
]
TINY = [
    "clients.count=10",
    "server.concurrency=4",
    "server.clients_per_round=4",
    "server.buffer_size=2",
    "data.mean_samples=20",
    "stop.sim_time=null",
    "stop.server_steps=10",
    "eval.every_time=null",
    "eval.every_steps=10",
]


def test_html_report_is_self_contained(tmp_path_factory: Any, capsys: Any) -> None:
    out = tiny_sweep(tmp_path_factory, workers=2)
    assert main(["report", str(out)]) == 0
    path = out / "report.html"
    text = path.read_text()
    images = re.findall(r"<img [^>]*src='([^']*)'", text)
    assert len(images) >= 5 and all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert "http://" not in text and "https://" not in text  # nothing fetched when opened
    assert "Per run" in text and "server.max_staleness=null,algorithm.name=per_fedavg,seed=1" in text
    assert "Not drawn" in text  # sync_vs_async does not apply; said so, not silently dropped


def test_markdown_report_with_images_beside_it(tmp_path: Path) -> None:
    fabricate_sweep(tmp_path / "s", {"server.max_staleness": [0, 4]}, seeds=2)
    path = write_report(tmp_path / "s", tmp_path / "elsewhere" / "study.md")
    text = path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 5
    for link in links:
        assert (path.parent / link).is_file() and (path.parent / link).stat().st_size > 1000
    assert "| server.max_staleness | runs | final personalized_accuracy |" in text
    # the time-to-target columns say which target they count to and how it was chosen
    assert "target personalized accuracy ≥" in text and "50% of the way from the highest start" in text


def test_report_cli_errors(tmp_path: Path, capsys: Any) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory nor a sweep" in capsys.readouterr().err


def test_markdown_table() -> None:
    import pandas as pd

    t = markdown_table(pd.DataFrame({"a|b": [1.0, float("nan")], "c": ["x", "y"]}))
    assert t.splitlines() == ["| a\\|b | c |", "|---|---|", "| 1 | x |", "| – | y |"]


@pytest.mark.parametrize("name", STUDY_SCENARIOS)
def test_study_scenarios_open_with_their_question_and_validate(name: str, capsys: Any) -> None:
    path = REPO / "scenarios" / name
    head = path.read_text().splitlines()[:20]
    assert head[0].startswith("# ") and "?" in " ".join(head[:3])  # the question it answers
    comment = " ".join(line for line in head if line.startswith("#"))
    assert re.search(r"\d+ (s|min)", comment) and "Feeds:" in comment  # how long; which figure
    assert main(["validate", str(path)]) == 0
    plan = plan_sweep(path)
    assert plan.grid and len(plan.runs) >= 6
    assert "sweep" in read_yaml(path)


@pytest.mark.parametrize("name", STUDY_SCENARIOS)
def test_study_scenarios_run_at_tiny_scale(name: str, tmp_path: Path) -> None:
    """The first grid point of every study file, shrunk, runs to completion (the study script's
    test runs every point of persafl_staleness.yaml, pfedme's included)."""
    from dataclasses import replace

    plan = plan_sweep(REPO / "scenarios" / name, seeds=1, overrides=TINY)
    res = run_sweep(replace(plan, runs=plan.runs[:1]), tmp_path / "out")
    assert res.counts == {"completed": 1}


def test_staleness_study_script_at_tiny_scale(tmp_path: Path) -> None:
    """What CI runs: the study script end to end at tiny scale (its figures and table exist)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "analysis" / "staleness_study.py"),
            "--out",
            str(tmp_path),
            "--scale",
            "tiny",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("convergence_vs_tau.png", "convergence.png", "grad_norm.png", "staleness.png", "updates.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name
    table = (tmp_path / "summary.csv").read_text().splitlines()
    assert table[0].startswith("algorithm,server.max_staleness,runs,final personalized_accuracy")
    assert len(table) == 1 + 2 * 5  # 2 algorithms x 5 values of tau
    assert "| per_fedavg-hf | 0 |" in (tmp_path / "summary.md").read_text()
