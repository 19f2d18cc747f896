"""describe / summary_text / describe_figure on classification and regression data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asyncfl.config.schema import QuadraticData, SyntheticData
from asyncfl.data import build_data
from asyncfl.data.describe import FIGURE_DPI, describe, describe_figure, label_counts, summary_text
from asyncfl.study.figures import save


def test_describe_table_matches_the_data() -> None:
    d = build_data(SyntheticData(mean_samples=40), 12, 0, Path("."))
    table = describe(d)
    assert list(table.index) == list(range(12)) and table.index.name == "client"
    assert table["train"].tolist() == d.train_sizes_np.tolist()
    assert table["test"].tolist() == d.test_sizes_np.tolist()
    labels = table[[f"label_{c}" for c in range(10)]].to_numpy()
    assert np.array_equal(labels.sum(axis=1), table["train"].to_numpy())
    assert np.array_equal(labels, label_counts(d, "train"))
    assert (table["labels"] == (labels > 0).sum(axis=1)).all()
    _x, y = d.client_train(3)
    assert np.array_equal(np.bincount(y.numpy(), minlength=10), labels[3])
    assert label_counts(d, "test").sum() == len(d.test_y)


def test_summary_text_fits_a_screen() -> None:
    d = build_data(SyntheticData(mean_samples=40), 50, 0, Path("."))
    text = summary_text(d)
    assert len(text.splitlines()) <= 30
    assert "clients       50" in text and "labels/client" in text and "... 40 more clients" in text


def test_describe_figure_writes_files(tmp_path: Path) -> None:
    """describe_figure draws; the figures' one writer (study.figures.save) writes it."""
    d = build_data(SyntheticData(mean_samples=40), 8, 0, Path("."))
    out = save(describe_figure(d), tmp_path / "sub" / "clients.png", dpi=FIGURE_DPI)
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"
    q = build_data(QuadraticData(), 4, 0, Path("."))
    assert "regression" in summary_text(q) and describe(q).shape[1] == 3
    assert save(describe_figure(q), tmp_path / "q.svg", dpi=FIGURE_DPI).stat().st_size > 0


def test_describe_figure_of_an_unknown_format_is_one_line_before_any_work(
    tmp_path: Path, tiny_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to build the data and then fail inside matplotlib (an internal error)."""
    from asyncfl.cli import main

    code = main(["data", "describe", str(tiny_file), "--figure", str(tmp_path / "f.bmp")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured
    assert (
        captured.err == f"asyncfl: error: --figure {tmp_path / 'f.bmp'}: unknown figure format '.bmp'; "
        "allowed: .png, .svg, .pdf\n"
    )
    assert list(tmp_path.iterdir()) == [tiny_file]
