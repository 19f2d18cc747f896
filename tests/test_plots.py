"""Every figure kind, at tiny scale, from real runs and from fabricated ones: written, non-empty,
in each format; the plot command's errors are one line with exit code 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_study_data import BASE, fabricate_sweep, tiny_scenario, tiny_sweep

from asyncfl.cli import main
from asyncfl.errors import UserError
from asyncfl.study import plots
from asyncfl.study.results import load_study
from asyncfl.study.sweep import sweep

PNG = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000, path


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory: Any) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fab")
    fabricate_sweep(base / "tau", {"algorithm.name": ["per_fedavg", "pfedme"], "server.max_staleness": [0, 5, None]},
                    seeds=2, per_client=True)
    fabricate_sweep(base / "delay", {"system.delay_scale": [0.5, 1, 2]}, seeds=3)
    fabricate_sweep(base / "mode", {"server.mode": ["sync", "async"]}, seeds=2,
                    base={**BASE, "server": {"mode": "async", "concurrency": 4, "clients_per_round": 4}})
    return {p.name: p for p in base.iterdir()}


@pytest.fixture(scope="module")
def modes(tmp_path_factory: Any) -> Path:
    """A real tiny sync-vs-async sweep."""
    base = tmp_path_factory.mktemp("modes")
    sweep(tiny_scenario(base), base / "out", grid={"server.mode": ["sync", "async"]},
          overrides=["server.clients_per_round=3"])
    return base / "out"


@pytest.mark.parametrize("kind", list(plots.KINDS))
def test_every_kind_from_a_real_tiny_sweep(kind: str, tmp_path_factory: Any, modes: Path, tmp_path: Path) -> None:
    src = modes if kind == "sync_vs_async" else tiny_sweep(tmp_path_factory, workers=2)
    path = plots.save(plots.figure(kind, src), tmp_path / f"{kind}.png")
    _check_png(path)


@pytest.mark.parametrize("kind", list(plots.KINDS))
@pytest.mark.parametrize("which", ["tau", "delay", "mode"])
def test_every_kind_from_fabricated_sweeps(kind: str, which: str, fabricated: dict[str, Path], tmp_path: Path) -> None:
    needs = {"convergence_vs_delay": ("tau", "delay"), "sync_vs_async": ("mode",)}
    if which not in needs.get(kind, (which,)):
        with pytest.raises(UserError, match=f"--kind {kind}"):
            plots.figure(kind, fabricated[which])
        return
    _check_png(plots.save(plots.figure(kind, fabricated[which]), tmp_path / "f.png"))


def test_single_run_and_options(fabricated: dict[str, Path], tmp_path: Path) -> None:
    run = next(p for p in fabricated["tau"].iterdir() if p.is_dir())
    study = load_study(run)
    assert study.kind == "run" and study.keys == []
    for kind in ("convergence", "staleness", "updates", "participation", "fairness"):
        _check_png(plots.save(plots.figure(kind, study), tmp_path / f"{kind}.png"))
    fig = plots.convergence(fabricated["tau"], metric="grad_norm_sq", x="server_version", hue="algorithm", band="se")
    _check_png(plots.save(fig, tmp_path / "g.png"))
    fig = plots.fairness(fabricated["tau"])  # per-client accuracy recorded: a second row of panels
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_save_formats(suffix: str, fabricated: dict[str, Path], tmp_path: Path) -> None:
    path = plots.save(plots.figure("convergence", fabricated["delay"]), tmp_path / f"c{suffix}")
    head = path.read_bytes()[:200]
    assert {".png": PNG, ".svg": b"<?xml", ".pdf": b"%PDF"}[suffix] in head


def test_save_rejects_unknown_format(fabricated: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"\.jpg"):
        plots.save(plots.figure("convergence", fabricated["delay"]), tmp_path / "c.jpg")


def test_plot_cli(fabricated: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "fig.svg"
    code = main(["plot", str(fabricated["tau"]), "--kind", "convergence_vs_delay", "--out", str(out),
                 "--metric", "global_accuracy", "--target", "0.5"])
    assert code == 0 and out.stat().st_size > 1000
    code = main(["plot", str(fabricated["tau"]), "--kind", "convergence", "--out", str(tmp_path / "c.png"),
                 "--x", "server_version", "--hue", "server.max_staleness"])
    assert code == 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--kind", "pie"], "--kind: unknown figure 'pie'; allowed: convergence"),
        (["--kind", "convergence", "--metric", "nope"], "--metric: no metric 'nope'"),
        (["--kind", "convergence", "--hue", "nope"], "--hue: unknown key 'nope'"),
        (["--kind", "sync_vs_async"], "--kind sync_vs_async: the runs in"),
    ],
)
def test_plot_cli_errors_exit_2(args: list[str], named: str, fabricated: dict[str, Path], tmp_path: Path,
                                capsys: Any) -> None:
    code = main(["plot", str(fabricated["tau"]), "--out", str(tmp_path / "f.png"), *args])
    err = capsys.readouterr().err
    assert code == 2 and named in err and err.count("\n") == 1


def test_plot_cli_bad_x_is_a_usage_error(fabricated: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plot", str(fabricated["tau"]), "--kind", "convergence", "--x", "nope", "--out", str(tmp_path / "f.png")])
    assert exc.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def test_plot_cli_bad_dir_and_format(tmp_path: Path, fabricated: dict[str, Path], capsys: Any) -> None:
    assert main(["plot", str(tmp_path / "none"), "--kind", "convergence", "--out", str(tmp_path / "f.png")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["plot", str(fabricated["tau"]), "--kind", "convergence", "--out", str(tmp_path / "f.gif")]) == 2
    assert "allowed: .png, .svg, .pdf" in capsys.readouterr().err
