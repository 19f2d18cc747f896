"""Shared pieces of every figure: names and labels, levels and their colours, proportional axes
for numeric levels, spread over seeds, the time-to-target level, legends, and figure set-up.

One rule the figure modules rely on: colours are decided once per figure from *all* the runs
(:func:`level_colors`), never per panel, and legends are built from that mapping
(:func:`color_legend`), never from what one panel happened to draw.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asyncfl.errors import UserError
from asyncfl.study.results import X_LABELS, Study, Target, higher_is_better, load_study, resolve_target
from asyncfl.study.stats import mean_interval

BANDS = ("auto", "ci", "sd", "se", "none")
DEFAULT_METRICS = ("personalized_accuracy", "global_accuracy", "personalized_loss", "global_loss", "grad_norm_sq")
TAU = "server.max_staleness"
DELAY = "system.delay_scale"
MODE = "server.mode"
MAJORITY = "majority_accuracy"
"""A run's no-collaboration baseline: each client predicts its majority training label."""
PRETTY = {
    TAU: "staleness bound τ",
    DELAY: "delay scale",
    MODE: "server mode",
    "server.concurrency": "concurrency",
    "server.clients_per_round": "clients per round K",
    "algorithm": "algorithm",
    "algorithm.name": "algorithm",
    "run": "run",
    "seed": "seed",
}
SHORT = {TAU: "τ", DELAY: "delay scale", "server.clients_per_round": "K"}
LABEL_WIDTH = 36
"""Legend and tick labels wrap at this many characters."""
FIG_W = 7.0
FIG_H = 4.3
MAX_PANELS = 9
METRIC_LABELS = {
    "grad_norm_sq": "‖∇F(w)‖² (grad_norm_sq)",
    "personalized_accuracy": "personalized accuracy",
    "global_accuracy": "global accuracy",
}
LINESTYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))


# ------------------------------------------------------------------------------------------------
# Names and labels
# ------------------------------------------------------------------------------------------------


def pretty(key: str) -> str:
    """Human name of a run column for axes and legends."""
    return PRETTY.get(key, key)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def fmt_value(v: Any) -> str:
    """A grid value as a legend / tick label: ``inf`` for an unbounded tau, 2 not 2.0."""
    if v is None:
        return "inf"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v) or math.isinf(v):
            return "inf" if (math.isinf(v) and v > 0) or math.isnan(v) else "-inf"
        if float(v).is_integer():
            return str(int(v))
        return f"{v:g}"
    return str(v)


def is_numeric(values: Sequence[Any]) -> bool:
    return bool(values) and all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in values
    )


def levels(frame: pd.DataFrame, col: str) -> list[Any]:
    """Distinct values of ``col``: numbers ascending (inf last), others in order of appearance."""
    vals = list(dict.fromkeys(frame[col].tolist()))
    if is_numeric(vals):
        return sorted(vals, key=lambda v: (math.isnan(v), v))
    return vals


def upper_bound(metric: str) -> float | None:
    return 1.0 if "accuracy" in metric else None


def key_title(keys: Sequence[str]) -> str | None:
    return " / ".join(pretty(k) for k in keys) or None


def combo_label(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """One label per row from several key columns: ``per_fedavg (hf), τ=5``."""
    if not keys:
        return pd.Series(["all runs"] * len(frame), index=frame.index, dtype=object)
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)

    def one(row: Any) -> str:
        parts = []
        for k in keys:
            v = fmt_value(row[k])
            parts.append(
                v if k in ("algorithm", "algorithm.name", MODE) or len(keys) == 1 else f"{SHORT.get(k, k)}={v}"
            )
        return ", ".join(parts)

    labels = [textwrap.fill(one(row), LABEL_WIDTH, break_long_words=False) for _, row in frame.iterrows()]
    return pd.Series(labels, index=frame.index, dtype=object)


def combo_order(frame: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """Every label of :func:`combo_label` over ``frame`` (use the runs table: all levels), ordered
    by the keys' levels (numbers ascending)."""
    if not keys:
        return ["all runs"]
    sortable = frame[list(keys)].copy()
    sortable["_label"] = combo_label(frame, keys)
    sortable = sortable.drop_duplicates("_label")
    for k in reversed(keys):
        pos = {repr(v): i for i, v in enumerate(levels(frame, k))}
        sortable = sortable.iloc[
            np.argsort(sortable[k].map(lambda v, p=pos: p.get(repr(v), 0)).to_numpy(), kind="stable")
        ]
    return list(sortable["_label"])


# ------------------------------------------------------------------------------------------------
# Colours: one per level, for the whole figure
# ------------------------------------------------------------------------------------------------


def palette(n: int, numeric: bool) -> list[Any]:
    """``n`` colours: an ordered one (viridis without its pale end) for numeric levels, so order
    reads at a glance; a colour-blind-safe qualitative one otherwise."""
    import seaborn as sns

    if n == 0:
        return []
    if numeric and n > 1:
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        return [tuple(float(c) for c in cmap(v)[:3]) for v in np.linspace(0.0, 0.82, n)]
    return [tuple(float(c) for c in col) for col in sns.color_palette("colorblind" if n <= 10 else "husl", n)]


def level_colors(study: Study, keys: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The labels of every level of ``keys`` over all runs, in order, and one colour each."""
    order = combo_order(study.runs, keys)
    numeric = len(keys) == 1 and keys[0] in study.runs.columns and is_numeric(levels(study.runs, keys[0]))
    return order, dict(zip(order, palette(len(order), numeric), strict=True))


def color_legend(
    fig: Any,
    order: Sequence[str],
    colors: Mapping[str, Any],
    title: str | None,
    marker: str = "",
    extra: Sequence[Any] = (),
) -> Any:
    """The figure's legend: every level in ``order`` with its colour (whether or not a panel drew
    it), then the ``extra`` handles (line styles, reference lines)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[h], marker=marker or None, linewidth=1.8, label=h) for h in order]
    handles += list(extra)
    if not handles:
        return None
    return fig.legend(handles=handles, title=title, loc="outside right upper", frameon=False)


# ------------------------------------------------------------------------------------------------
# Proportional axes for numeric levels
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelAxis:
    """Where numeric levels (tau, delay scale, concurrency, K) sit on a proportional axis:
    linear, or log (symlog when 0 is a level) when the positive levels span more than a decade.
    An unbounded level (inf) sits one step past the largest, labelled ``inf``."""

    levels: tuple[float, ...]
    scale: str
    linthresh: float | None = None

    def position(self, v: Any) -> float:
        v = float(v)
        if math.isfinite(v):
            return v
        finite = [x for x in self.levels if math.isfinite(x)]
        if not finite:
            return 0.0
        top = max(finite)
        if self.scale in ("log", "symlog"):
            return top * 3.0 if top > 0 else 1.0
        lo = min(finite)
        return top + (0.25 * (top - lo) if top > lo else 1.0)

    def apply(self, ax: Any) -> None:
        from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

        if self.scale == "log":
            ax.set_xscale("log")
        elif self.scale == "symlog":
            ax.set_xscale("symlog", linthresh=self.linthresh, linscale=0.6)
        pos = [self.position(v) for v in self.levels]
        ax.xaxis.set_major_locator(FixedLocator(pos))
        ax.xaxis.set_major_formatter(FixedFormatter([fmt_value(v) for v in self.levels]))
        ax.xaxis.set_minor_locator(NullLocator())
        if pos:
            lo, hi = min(pos), max(pos)
            if self.scale == "linear":
                pad = 0.06 * (hi - lo) if hi > lo else 1.0
                ax.set_xlim(lo - pad, hi + pad)
            elif self.scale == "log":
                ax.set_xlim(lo / 1.4, hi * 1.4)
            else:
                ax.set_xlim(-0.3 * (self.linthresh or 1.0), hi * 1.4)

    @property
    def note(self) -> str:
        return {"linear": "", "log": ", log scale", "symlog": ", log scale above 0"}[self.scale]


def level_axis(values: Sequence[Any]) -> LevelAxis:
    vals = sorted({float(v) for v in values}, key=lambda v: (math.isinf(v), v))
    finite = [v for v in vals if math.isfinite(v)]
    pos = [v for v in finite if v > 0]
    spans = len(pos) >= 2 and max(pos) / min(pos) > 10 and all(v >= 0 for v in finite)
    if not spans:
        return LevelAxis(tuple(vals), "linear")
    if 0.0 in finite:
        return LevelAxis(tuple(vals), "symlog", linthresh=min(pos))
    return LevelAxis(tuple(vals), "log")


def dodge(ax: Any, i: int, n: int, points: float = 5.0) -> Any:
    """A transform that shifts series ``i`` of ``n`` sideways by a few points, so error bars at
    the same level do not hide each other; the data x stays exact."""
    from matplotlib.transforms import offset_copy

    if n <= 1:
        return ax.transData
    return offset_copy(ax.transData, fig=ax.figure, x=(i - (n - 1) / 2) * points, y=0.0, units="points")


# ------------------------------------------------------------------------------------------------
# Spread over seeds
# ------------------------------------------------------------------------------------------------


def seed_counts(study: Study) -> pd.Series:
    runs = study.runs
    if "seed" not in runs.columns or runs.empty:
        return pd.Series([1])
    keys = [k for k in study.keys if k in runs.columns]
    if not keys:
        return pd.Series([runs["seed"].nunique()])
    return runs.groupby([runs[k].astype(str) for k in keys])["seed"].nunique()


def n_seeds(study: Study) -> int:
    return int(seed_counts(study).max())


def resolve_band(band: str, study: Study) -> str:
    """``auto``: the 95% CI when every setting has at least 3 seeds, else one s.d. (with 2 seeds a
    95% interval is +-12.7 standard errors wide and says little)."""
    if band not in BANDS:
        raise UserError(f"--band: unknown band {band!r}; allowed: {', '.join(BANDS)}")
    if band == "auto":
        return "ci" if int(seed_counts(study).min()) >= 3 else "sd"
    return band


def interval(band: str, upper: float | None = None) -> Callable[[Any], tuple[float, float]] | None:
    """Seaborn ``errorbar`` callable for ``band`` (see :func:`asyncfl.study.stats.mean_interval`);
    kept >= 0 when every value is, and <= ``upper`` (1 for accuracies)."""
    if band == "none":
        return None

    def f(v: Any) -> tuple[float, float]:
        a = np.asarray(v, dtype=float)
        a = a[np.isfinite(a)]
        _, lo, hi = spread(a, band, upper)
        return (lo, hi)

    return f


def spread(values: Any, band: str, upper: float | None = None) -> tuple[float, float, float]:
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    lower = 0.0 if len(a) and (a >= 0).all() else None
    up = upper if upper is not None and len(a) and (a <= upper).all() else None
    return mean_interval(a, band, lower, up)


def band_note(band: str, seeds: int, what: str = "bands") -> str:
    """Says what the bands / error bars show, for titles."""
    if band == "none" or seeds < 2:
        return f"{seeds} seed{'s' if seeds != 1 else ''} per setting"
    how = {"ci": "95% CI of the mean (Student t)", "sd": "± 1 s.d.", "se": "± 1 s.e."}[band]
    return f"{what}: {how} over {seeds} seeds"


# ------------------------------------------------------------------------------------------------
# Time to target
# ------------------------------------------------------------------------------------------------


def ttt_label(metric: str, target: float, x: str) -> str:
    """Axis label of a time-to-target: what is counted, to reach which level."""
    what = {"sim_time": "simulated time (s)", "server_version": "server versions", "client_updates": "client updates"}[
        x
    ]
    return f"{what} to reach\n{metric_label(metric)} {'≥' if higher_is_better(metric) else '≤'} {target:.3g}"


def target_text(metric: str, t: Target) -> str:
    """The target as stated on a figure: the level and how it was chosen."""
    if not math.isfinite(t.value):
        return f"no time to target: {t.how}"
    cmp = "≥" if higher_is_better(metric) else "≤"
    text = f"target {metric_label(metric)} {cmp} {t.value:.3g}"
    if t.how == "given":
        text += " (given)"
        if t.starts_at:
            n = len(t.starts_at)
            text += f"; {n} run{'s' if n != 1 else ''} start at or past it"
    else:
        text += f": {t.how}"
    return textwrap.fill(text, 70, break_long_words=False)


def get_target(study: Study, metric: str, target: float | None) -> Target:
    return resolve_target(study.metrics, metric, target)


def never_marks(ax: Any, xs: Sequence[float], color: Any, transform: Any, gid: str) -> None:
    """Runs that never reached the target: open triangles at the top edge of the panel."""
    from matplotlib.transforms import blended_transform_factory

    if not len(xs):
        return
    tr = blended_transform_factory(transform, ax.transAxes)
    ax.plot(
        list(xs),
        [0.97] * len(xs),
        linestyle="none",
        marker="^",
        markerfacecolor="white",
        markeredgecolor=color,
        markersize=7,
        transform=tr,
        clip_on=False,
        gid=gid,
    )


def headroom(ax: Any, values: Any) -> None:
    """y from 0 to 15% above the largest finite value, so the never-reached marks at the top edge
    sit above every drawn point."""
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    top = float(a.max()) if len(a) else 1.0
    ax.set_ylim(0.0, top * 1.15 if top > 0 else 1.0)


def fit_y(ax: Any, values: Sequence[float]) -> None:
    """y range over ``values`` with 8% margins (series drawn with an offset transform, see
    :func:`dodge`, are not autoscaled by matplotlib)."""
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    if not len(a):
        return
    lo, hi = float(a.min()), float(a.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 1e-3)
    ax.set_ylim(lo - pad, hi + pad)


def split_near(refs: Mapping[str, float], extent: Sequence[float]) -> tuple[dict[str, float], dict[str, float]]:
    """Reference levels within one data range of the drawn values (drawn as lines) and the
    others (stated in words: a line far away would squash the differences the panel shows)."""
    a = np.asarray(extent, dtype=float)
    a = a[np.isfinite(a)]
    if not len(a):
        return dict(refs), {}
    lo, hi = float(a.min()), float(a.max())
    span = max(hi - lo, 0.05 * max(abs(hi), abs(lo), 1e-12))
    near = {k: v for k, v in refs.items() if lo - span <= v <= hi + span}
    return near, {k: v for k, v in refs.items() if k not in near}


REF_NAMES = {"initial": "initial model", "majority": "majority label per client"}


def note_far(ax: Any, far: Mapping[str, float], extent: Sequence[float]) -> None:
    if not far:
        return
    top = float(np.nanmax(np.asarray(extent, dtype=float))) if len(extent) else math.inf
    text = "\n".join(
        f"{REF_NAMES.get(k, k)}: {v:.3g} ({'below' if v < top else 'above'} the axis)" for k, v in far.items()
    )
    ax.text(
        0.02,
        0.03,
        text,
        transform=ax.transAxes,
        ha="left",
        va="bottom",
        fontsize="x-small",
        color="dimgrey",
        gid="ref-far",
    )


def never_handle() -> Any:
    from matplotlib.lines import Line2D

    return Line2D(
        [],
        [],
        linestyle="none",
        marker="^",
        markerfacecolor="white",
        markeredgecolor="grey",
        markersize=7,
        label="never reached the target\n(at the top edge)",
    )


# ------------------------------------------------------------------------------------------------
# Study, options, layout, figure
# ------------------------------------------------------------------------------------------------


def get_study(source: Study | str | Path) -> Study:
    return source if isinstance(source, Study) else load_study(source)


def check_metric(study: Study, metric: str | None) -> str:
    names = study.metric_names
    if metric is None:
        for m in DEFAULT_METRICS:
            if m in names:
                return m
        if not names:
            raise UserError(f"{study.path}: the runs recorded no metrics")
        return names[0]
    if metric not in names:
        raise UserError(f"--metric: no metric {metric!r} in {study.path}; recorded: {', '.join(names)}")
    return metric


def check_x(x: str) -> str:
    if x not in X_LABELS:
        raise UserError(f"--x: unknown axis {x!r}; allowed: {', '.join(X_LABELS)}")
    return x


def hue_columns(study: Study) -> list[str]:
    """Run columns a figure may be coloured by."""
    cols = ["run", "seed", *study.keys, "algorithm"]
    cols += [c for c in study.runs.columns if "." in c and not c.startswith("final.") and c not in cols]
    return list(dict.fromkeys(cols))


def varying(study: Study, exclude: Sequence[str] = ()) -> list[str]:
    """Keys that vary between runs (seed aside), in grid order; ``algorithm.*`` keys collapse into
    the readable ``algorithm`` label; server mode, tau and delay scale are added when they vary."""
    excl = set(exclude)
    if any(k.startswith("algorithm") for k in excl):
        excl |= {"algorithm"} | {k for k in study.keys if k.startswith("algorithm.")}
    keys: list[str] = []
    for k in study.keys:
        if k in excl or not study.varies(k):
            continue
        keys.append("algorithm" if k.startswith("algorithm.") else k)
    for k in ("algorithm", MODE, TAU, DELAY):
        if k not in keys and k not in excl and study.varies(k):
            keys.append(k)
    return list(dict.fromkeys(keys))


def choose_hue(study: Study, hue: str | None) -> str | None:
    """``hue`` when given (checked), else the swept numeric quantity (tau, delay scale, ...) rather
    than a categorical choice, else the first key that varies."""
    if hue is not None:
        allowed = hue_columns(study)
        if hue not in allowed:
            raise UserError(f"--hue: unknown key {hue!r}; allowed here: {', '.join(allowed)}")
        return hue
    keys = varying(study)
    for k in keys:
        if k not in ("algorithm", MODE) and is_numeric(levels(study.runs, k)):
            return k
    return keys[0] if keys else None


@dataclass
class Layout:
    """How a figure splits runs: a colour per ``hue_keys`` combination, a panel per
    ``panel_keys`` combination (every other key that varies), so no figure averages over a key.
    ``order`` and ``colors``: every colour level of the whole study, decided once."""

    hue_keys: list[str]
    panel_keys: list[str]
    order: list[str]
    colors: dict[str, Any]
    panels: list[str]

    def hue(self, frame: pd.DataFrame) -> pd.Series:
        return combo_label(frame, self.hue_keys)

    def panel(self, frame: pd.DataFrame) -> pd.Series:
        return (
            combo_label(frame, self.panel_keys) if self.panel_keys else pd.Series("", index=frame.index, dtype=object)
        )

    def title(self) -> str | None:
        return key_title(self.hue_keys)


def layout(study: Study, hue: str | None, max_panels: int = MAX_PANELS) -> Layout:
    h = choose_hue(study, hue)
    hue_keys = [h] if h else []
    panel_keys = varying(study, exclude=hue_keys)
    while panel_keys and combo_label(study.runs, panel_keys).nunique() > max_panels:
        hue_keys.append(panel_keys.pop())
    order, colors = level_colors(study, hue_keys)
    panels = combo_order(study.runs, panel_keys) if panel_keys else [""]
    return Layout(hue_keys, panel_keys, order, colors, panels)


def grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    """Columns and rows for ``n`` panels: one row up to 3, then as square as possible."""
    ncols = n if n <= max_cols else (2 if n == 4 else max_cols)
    ncols = max(1, ncols)
    return ncols, math.ceil(n / ncols)


def new_figure(ncols: int = 1, nrows: int = 1, w: float = FIG_W, h: float = FIG_H, **kw: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def hide_unused(axes: Any, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)


def style() -> contextlib.ExitStack:
    import seaborn as sns

    stack = contextlib.ExitStack()
    stack.enter_context(sns.axes_style("whitegrid"))
    stack.enter_context(sns.plotting_context("notebook", font_scale=0.9))
    return stack


def log_time_axis(ax: Any, values: pd.Series) -> bool:
    """Log x when the values span more than a decade (plain number labels), else linear."""
    v = values[values > 0]
    if len(v) and float(v.max()) / float(v.min()) > 10:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, 1, 10
        ax.xaxis.set_minor_formatter(NullFormatter())
        return True
    return False
