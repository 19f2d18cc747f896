"""Every figure kind, at tiny scale, from real runs and from fabricated ones: written, non-empty,
in each format; the plot command's errors are one line with exit code 2."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from test_study_data import BASE, fabricate_sweep, tiny_scenario, tiny_sweep

from asyncfl.cli import main
from asyncfl.errors import UserError
from asyncfl.runs.rundir import write_manifest
from asyncfl.study import figures as plots
from asyncfl.study.results import load_study
from asyncfl.study.sweep import sweep

PNG = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000, path


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory: Any) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fab")
    fabricate_sweep(
        base / "tau",
        {"algorithm.name": ["per_fedavg", "pfedme"], "server.max_staleness": [0, 5, None]},
        seeds=2,
        per_client=True,
    )
    fabricate_sweep(base / "delay", {"system.delay_scale": [0.5, 1, 2]}, seeds=3)
    fabricate_sweep(
        base / "mode",
        {"server.mode": ["sync", "async"]},
        seeds=2,
        base={**BASE, "server": {"mode": "async", "concurrency": 4, "clients_per_round": 4}},
    )
    return {p.name: p for p in base.iterdir()}


@pytest.fixture(scope="module")
def modes(tmp_path_factory: Any) -> Path:
    """A real tiny sync-vs-async sweep."""
    base = tmp_path_factory.mktemp("modes")
    sweep(
        tiny_scenario(base),
        base / "out",
        grid={"server.mode": ["sync", "async"]},
        overrides=["server.clients_per_round=3"],
    )
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
    code = main(
        [
            "plot",
            str(fabricated["tau"]),
            "--kind",
            "convergence_vs_delay",
            "--out",
            str(out),
            "--metric",
            "global_accuracy",
            "--target",
            "0.5",
        ]
    )
    assert code == 0 and out.stat().st_size > 1000
    code = main(
        [
            "plot",
            str(fabricated["tau"]),
            "--kind",
            "convergence",
            "--out",
            str(tmp_path / "c.png"),
            "--x",
            "server_version",
            "--hue",
            "server.max_staleness",
        ]
    )
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
def test_plot_cli_errors_exit_2(
    args: list[str], named: str, fabricated: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
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


# ------------------------------------------------------------------------------------------------
# Figures read back: what a reader sees (issue 13). Each test fails on the defect it names.
# ------------------------------------------------------------------------------------------------


def _panels(fig: Any) -> list[Any]:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def _level_colors(ax: Any) -> dict[str, tuple[float, ...]]:
    """Colour of each level drawn in a panel, read from the lines' gids (``level:<label>``)."""
    from matplotlib.colors import to_rgb

    out: dict[str, tuple[float, ...]] = {}
    for line in ax.get_lines():
        gid = line.get_gid() or ""
        if gid.startswith("level:"):
            out[gid[len("level:") :]] = to_rgb(line.get_color())
    return out


def _legend(fig: Any) -> dict[str, Any]:
    """Legend text -> handle colour (None for handles without a single colour)."""
    from matplotlib.colors import to_rgb

    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    out: dict[str, Any] = {}
    for leg in legends:
        for text, handle in zip(leg.get_texts(), leg.legend_handles, strict=True):
            try:
                out[text.get_text()] = to_rgb(handle.get_color())
            except (AttributeError, ValueError):
                out[text.get_text()] = None
    return out


def _suptitle(fig: Any) -> str:
    """The figure's title with its line wrapping undone."""
    return " ".join(fig._suptitle.get_text().split()) if fig._suptitle is not None else ""


@pytest.fixture(scope="module")
def uneven_folder(tmp_path_factory: Any) -> Path:
    """A folder of plain runs (no sweep.json): per_fedavg at tau = 32 only, fedasync at 8 and 32.
    The first panel lacks a level -- where legends taken from one panel lie."""
    from test_study_data import fabricate_run

    base = tmp_path_factory.mktemp("uneven")
    for prefix, algo, taus in (
        ("a", {"name": "per_fedavg", "variant": "hf"}, (32,)),
        ("b", {"name": "fedasync"}, (8, 32)),
    ):
        for tau in taus:
            for seed in (0, 1):
                sc = {**BASE, "seed": seed, "algorithm": algo, "server": {**BASE["server"], "max_staleness": tau}}
                fabricate_run(base / f"{prefix}-{algo['name']}-tau{tau}-s{seed}", sc)
    return base


def test_convergence_one_colour_per_level_and_every_level_in_the_legend(uneven_folder: Path) -> None:
    fig = plots.convergence(uneven_folder)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == ["per_fedavg (hf)", "fedasync"]
    drawn = [_level_colors(ax) for ax in panels]
    assert set(drawn[0]) == {"32"} and set(drawn[1]) == {"8", "32"}
    assert drawn[0]["32"] == drawn[1]["32"]  # tau = 32 keeps its colour between panels
    legend = _legend(fig)
    assert {"8", "32"} <= set(legend)  # every level, though the first panel draws only one
    for d in drawn:
        for level, color in d.items():
            assert legend[level] == color  # no colour on a panel that the legend does not explain
    assert legend["8"] != legend["32"]


def test_every_kind_colours_levels_alike_everywhere(fabricated: dict[str, Path]) -> None:
    """tau in {0, 5, inf} x 2 algorithms: each figure with a colour key lists all three levels in
    its legend with the colours its panels use."""
    for kind in ("convergence", "updates", "participation", "fairness"):
        fig = plots.figure(kind, fabricated["tau"])
        legend = _legend(fig)
        assert {"0", "5", "inf"} <= set(legend), (kind, legend)
        for ax in _panels(fig):
            for level, color in _level_colors(ax).items():
                assert legend[level] == color, (kind, level)


def _errorbar_x(ax: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for line in ax.get_lines():
        gid = line.get_gid() or ""
        if gid.startswith("level:") and line.get_marker() == "o":
            out[gid[len("level:") :]] = [float(v) for v in line.get_xdata()]
    return out


@pytest.mark.parametrize(
    ("key", "values", "scale", "ticks"),
    [
        ("server.max_staleness", [0, 5, 10, 20, 50], "linear", ["0", "5", "10", "20", "50"]),
        ("server.max_staleness", [0, 4, 16, 64], "symlog", ["0", "4", "16", "64"]),
        ("system.delay_scale", [0.1, 1, 10], "log", ["0.1", "1", "10"]),
        ("server.max_staleness", [0, 5, None], "linear", ["0", "5", "inf"]),
    ],
)
def test_numeric_levels_on_a_proportional_axis(
    key: str, values: list[Any], scale: str, ticks: list[str], tmp_path: Path
) -> None:
    fabricate_sweep(tmp_path / "s", {key: values}, seeds=1)
    fig = plots.convergence_vs_delay(tmp_path / "s")
    for ax in _panels(fig):
        assert ax.get_xscale() == scale
        assert [t.get_text() for t in ax.get_xticklabels()] == ticks
        pos = [float(p) for p in ax.get_xticks()]
        finite = [float(v) for v in values if v is not None]
        assert pos[: len(finite)] == finite  # each level at its value, not at its rank
        if None in values:
            assert pos[-1] > max(finite)
    xs = _errorbar_x(_panels(fig)[0])
    assert next(iter(xs.values()))[: len(values)] == [float(p) for p in _panels(fig)[0].get_xticks()]


def test_time_to_target_states_a_target_every_run_starts_below(fabricated: dict[str, Path]) -> None:
    from asyncfl.study.results import load_study as _load

    study = _load(fabricated["delay"])
    m = study.metrics[study.metrics["metric"] == "personalized_accuracy"]
    starts = m.sort_values(["run", "server_version"]).groupby("run")["value"].first()
    finals = m.sort_values(["run", "server_version"]).groupby("run")["value"].last()
    fig = plots.convergence_vs_delay(study)
    head = _suptitle(fig)
    target = starts.max() + 0.5 * (finals.max() - starts.max())
    assert f"target personalized accuracy ≥ {target:.3g}: 50% of the way from the highest start" in head
    assert target > starts.max()
    right = _panels(fig)[1]
    assert f"≥ {target:.3g}" in right.get_ylabel()
    # no run counts as reaching it at the first evaluation (t = 0)
    for line in right.get_lines():
        if (line.get_gid() or "").startswith("level:") and line.get_marker() == "o":
            assert min(line.get_ydata()) > 0


def test_never_reached_runs_are_drawn_as_such(fabricated: dict[str, Path]) -> None:
    fig = plots.convergence_vs_delay(fabricated["delay"], target=0.99)  # above every run's best
    right = _panels(fig)[1]
    never = [ln for ln in right.get_lines() if (ln.get_gid() or "").startswith("never:")]
    assert never and sum(len(ln.get_xdata()) for ln in never) == 3  # one mark per delay level
    assert "9 of 9 runs never reached it" in right.get_title()
    assert "target personalized accuracy ≥ 0.99 (given)" in _suptitle(fig)
    assert any(t.startswith("never reached the target") for t in _legend(fig))


def test_sync_vs_async_time_to_target_is_not_empty(fabricated: dict[str, Path]) -> None:
    fig = plots.sync_vs_async(fabricated["mode"])
    left, right = _panels(fig)[:2]
    drawn = _level_colors(right)
    assert set(drawn) == {"sync", "async"}  # both modes reached the default target
    assert drawn == {k: v for k, v in _level_colors(left).items()}
    assert "50% of the way from the highest start" in _suptitle(fig)
    assert any(ln.get_gid() == "target" for ln in left.get_lines())


def test_intervals_use_exact_student_t(fabricated: dict[str, Path]) -> None:
    """3 seeds: the error bar of the final value is t(0.975, 2) s / sqrt(3), t = 4.3027."""
    import numpy as np
    from scipy.stats import t as student

    from asyncfl.study.results import final_values
    from asyncfl.study.stats import t_quantile

    assert t_quantile(11) == pytest.approx(2.2010, abs=1e-4)  # the old table gave 2.179
    assert t_quantile(100) == pytest.approx(1.9840, abs=1e-4)  # the old table gave 1.96
    assert t_quantile(2) == pytest.approx(student.ppf(0.975, 2))
    study = load_study(fabricated["delay"])
    fig = plots.convergence_vs_delay(study, band="ci")
    ax = _panels(fig)[0]
    segs = ax.containers[0].lines[2][0].get_segments()
    fin = final_values(study.metrics, "personalized_accuracy")
    vals = fin.loc[fin["system.delay_scale"] == 0.5, "value"].to_numpy()
    half = student.ppf(0.975, 2) * vals.std(ddof=1) / np.sqrt(3)
    assert (segs[0][1][1] - segs[0][0][1]) / 2 == pytest.approx(half, rel=1e-9)


def test_personalized_accuracy_draws_reference_levels(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    fabricate_sweep(tmp_path / "s", {"server.max_staleness": [0, 4]}, seeds=2)
    for run in (tmp_path / "s").iterdir():
        if run.is_dir():
            f = run / "metrics.csv"
            m = pd.read_csv(f)
            extra = m[m["metric"] == "personalized_accuracy"].assign(metric="majority_accuracy", value=0.6)
            pd.concat([m, extra]).to_csv(f, index=False)
            manifest = json.loads((run / "manifest.json").read_text())
            write_manifest(run, manifest)  # the digests of the edited metrics.csv
    study = load_study(tmp_path / "s")
    m = study.metrics[study.metrics["metric"] == "personalized_accuracy"]
    initial = m.sort_values(["run", "server_version"]).groupby("run")["value"].first().mean()
    fig = plots.convergence(study)
    ax = _panels(fig)[0]
    refs = {
        ln.get_gid(): float(np.mean(ln.get_ydata())) for ln in ax.get_lines() if (ln.get_gid() or "").startswith("ref:")
    }
    assert refs == {"ref:initial": pytest.approx(initial), "ref:majority": pytest.approx(0.6)}
    legend = _legend(fig)
    assert "initial model (first evaluation)" in legend
    assert "majority label per client\n(no collaboration)" in legend
    # the convergence measure is no accuracy: no reference levels there
    fig = plots.convergence(study, metric="grad_norm_sq")
    assert not [ln for ln in _panels(fig)[0].get_lines() if (ln.get_gid() or "").startswith("ref:")]


def test_no_figure_swallows_unknown_options(fabricated: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    import inspect

    for kind, fn in plots.KINDS.items():
        kinds = [p.kind for p in inspect.signature(fn).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD not in kinds, kind
    with pytest.raises(UserError, match=r"^--kind staleness: does not take --band; it takes: --hue$"):
        plots.figure("staleness", fabricated["tau"], band="sd")
    code = main(
        [
            "plot",
            str(fabricated["tau"]),
            "--kind",
            "updates",
            "--metric",
            "global_loss",
            "--out",
            str(tmp_path / "f.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--kind updates: does not take --metric" in err and err.count("\n") == 1


def test_one_short_module_per_figure_kind() -> None:
    import asyncfl.study.figures as figures_pkg

    folder = Path(figures_pkg.__file__).parent
    for kind in plots.KINDS:
        module = folder / f"{kind}.py"
        assert module.is_file(), kind
        assert len(module.read_text().splitlines()) < 250, kind


def test_every_drawn_point_is_inside_its_panel(fabricated: dict[str, Path]) -> None:
    """Series shifted sideways (so error bars do not hide each other) are not autoscaled by
    matplotlib: the figure sets each panel's y range so that every mean and error bar shows."""
    import numpy as np

    figs = [
        plots.convergence_vs_delay(fabricated["tau"]),
        plots.convergence_vs_delay(fabricated["delay"]),
        plots.sync_vs_async(fabricated["mode"]),
    ]
    for fig in figs:
        for ax in _panels(fig):
            lo, hi = ax.get_ylim()
            for line in ax.get_lines():
                if (line.get_gid() or "").startswith("level:"):
                    y = np.asarray(line.get_ydata(), dtype=float)
                    assert ((y >= lo) & (y <= hi)).all(), (line.get_gid(), y, (lo, hi))
            for cont in ax.containers:
                for seg in cont.lines[2][0].get_segments() if cont.lines[2] else []:
                    assert lo <= seg[0][1] and seg[1][1] <= hi


def test_updates_draws_every_task_status_in_its_defined_order(tmp_path: Path) -> None:
    """The updates figure takes its outcomes from the one definition of a task's status
    (asyncfl.types.TASK_STATUSES, which the simulator's records use): a run whose events hold
    every status gets one coloured bar per status, in that order; in_flight (tasks a stopped run
    left running) is the one status the figure leaves out."""
    import matplotlib.colors as mcolors
    from test_study_data import fabricate_run

    from asyncfl.sim.records import TaskStatus
    from asyncfl.study.figures.updates import STATUS_ORDER
    from asyncfl.types import TASK_STATUSES

    assert typing.get_args(TaskStatus) == TASK_STATUSES
    assert STATUS_ORDER == tuple(s for s in TASK_STATUSES if s != "in_flight")
    assert {"dropped_overcommit", "buffered"} <= set(STATUS_ORDER)
    run = tmp_path / "run"
    fabricate_run(run, BASE)
    study = load_study(run)
    events = study.events
    assert len(events) >= 2 * len(TASK_STATUSES)
    # event i gets status i mod 8: every status is held by some tasks
    events["status"] = [TASK_STATUSES[i % len(TASK_STATUSES)] for i in range(len(events))]
    fig = plots.updates(study)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(STATUS_ORDER)
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert len(bars) == len(STATUS_ORDER)
    counts = events["status"].value_counts()
    by_x = sorted(bars, key=lambda p: p.get_x())
    assert [round(p.get_height()) for p in by_x] == [counts[s] for s in STATUS_ORDER]
    for p in by_x:
        assert mcolors.to_rgba(p.get_facecolor())[3] > 0  # drawn, with a colour
    path = plots.save(fig, tmp_path / "updates.png")
    _check_png(path)


def test_log_axis_curves_are_geometric_means_with_positive_bands(tmp_path: Path) -> None:
    """grad_norm_sq is drawn on a log axis: two seeds at 1e-3 and 1e-1 give the curve 1e-2 (their
    geometric mean, not 0.0505), and its +- 1 s.e. band, taken on log values (s.e. = ln 10 here),
    spans exactly 1e-3 to 1e-1: above zero, where a raw-value band (0.0505 +- 0.0495) would nearly
    touch zero and a wider one fill the log axis to its bottom."""
    import numpy as np
    import pandas as pd

    fabricate_sweep(tmp_path / "s", {"server.max_staleness": [4]}, seeds=2)
    runs = sorted(p for p in (tmp_path / "s").iterdir() if p.is_dir())
    for run, level in zip(runs, (1e-3, 1e-1), strict=True):
        f = run / "metrics.csv"
        m = pd.read_csv(f)
        m.loc[m["metric"] == "grad_norm_sq", "value"] = level
        m.to_csv(f, index=False)
        write_manifest(run, json.loads((run / "manifest.json").read_text()))
    fig = plots.convergence(load_study(tmp_path / "s"), metric="grad_norm_sq", band="se")
    ax = _panels(fig)[0]
    assert ax.get_yscale() == "log" and "geometric mean" in ax.get_ylabel()
    (line,) = [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("level:")]
    assert np.allclose(line.get_ydata(), 1e-2)
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(1e-3, rel=1e-6) and band.max() == pytest.approx(1e-1, rel=1e-6)
