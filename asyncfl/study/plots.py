"""Figures of a study (seaborn on matplotlib's Agg canvas; no pyplot state, no display needed).

Every function takes a :class:`~asyncfl.study.results.Study` (or a directory: a sweep, a run, or a folder
of runs) and returns a :class:`matplotlib.figure.Figure`; :func:`save` writes it as PNG, SVG or PDF
by the file's suffix. Kinds (see :data:`KINDS`):

- ``convergence``: a metric against simulated time (or server version / client updates), one
  colour per value of a key (default: the first grid key), with a band over seeds.
- ``convergence_vs_delay``: the final metric and the time to reach a target against the delay
  scale (``system.delay_scale``) and the staleness bound tau (``server.max_staleness``; ``null``
  shown as ``inf``), per algorithm, with error bars over seeds.
- ``staleness``: distribution of the staleness of applied updates, one panel per scenario.
- ``updates``: client tasks per outcome (applied, dropped_stale, dropped_offline, ...).
- ``participation``: updates applied per client, clients ranked, with the Gini coefficient.
- ``fairness``: each client's updates applied (and, when the run records it, its personalized
  accuracy) against its speed (median task time) -- the async bias towards fast clients.
- ``sync_vs_async``: convergence on the simulated clock and time to target per server mode.

Bands and error bars over seeds: ``band="ci"`` is the 95% confidence interval of the mean
(Student t), ``"sd"`` one standard deviation, ``"se"`` one standard error, ``"none"``; the default
``"auto"`` is ``ci`` when every setting has at least 3 seeds and ``sd`` otherwise (with 2 seeds a
95% interval is +-12.7 standard errors wide and says little). Titles say which is shown.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asyncfl.errors import UserError
from asyncfl.runs.rundir import write_atomic
from asyncfl.study.results import (
    X_LABELS,
    Study,
    default_target,
    final_values,
    higher_is_better,
    load_study,
    time_to_target,
)

BANDS = ("auto", "ci", "sd", "se", "none")
FORMATS = (".png", ".svg", ".pdf")
DEFAULT_METRICS = ("personalized_accuracy", "global_accuracy", "personalized_loss", "global_loss", "grad_norm_sq")
TAU = "server.max_staleness"
DELAY = "system.delay_scale"
MODE = "server.mode"
PRETTY = {
    TAU: "staleness bound τ",
    DELAY: "delay scale",
    MODE: "server mode",
    "algorithm": "algorithm",
    "algorithm.name": "algorithm",
    "run": "run",
    "seed": "seed",
}
SHORT = {TAU: "τ", DELAY: "delay scale"}
LABEL_WIDTH = 36
"""Legend and tick labels wrap at this many characters."""
FIG_W = 7.0
FIG_H = 4.3


# ------------------------------------------------------------------------------------------------
# Helpers: labels, orders, palettes, error bars
# ------------------------------------------------------------------------------------------------


def pretty(key: str) -> str:
    """Human name of a run column for axes and legends."""
    return PRETTY.get(key, key)


METRIC_LABELS = {
    "grad_norm_sq": "‖∇F(w)‖² (grad_norm_sq)",
    "personalized_accuracy": "personalized accuracy",
    "global_accuracy": "global accuracy",
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def fmt_value(v: Any) -> str:
    """A grid value as a legend / tick label: ``inf`` for an unbounded tau, 2 not 2.0."""
    if v is None:
        return "inf"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v) or math.isinf(v):
            return "inf" if (math.isinf(v) and v > 0) or math.isnan(v) else "-inf"
        if float(v).is_integer():
            return str(int(v))
        return f"{v:g}"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    return str(v)


def _is_numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in values)


def _levels(frame: pd.DataFrame, col: str) -> list[Any]:
    """Distinct values of ``col``: numbers ascending (inf last), others in order of appearance."""
    vals = list(dict.fromkeys(frame[col].tolist()))
    if _is_numeric(vals):
        return sorted(vals, key=lambda v: (math.isnan(v), v))
    return vals


def _upper(metric: str) -> float | None:
    return 1.0 if "accuracy" in metric else None


def _t975(df: int) -> float:
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}
    if df in table:
        return table[df]
    for k in sorted(table):
        if k > df:
            return table[k]
    return 1.96


def _resolve_band(band: str, study: Study) -> str:
    if band not in BANDS:
        raise UserError(f"--band: unknown band {band!r}; allowed: {', '.join(BANDS)}")
    if band == "auto":
        return "ci" if _min_seeds(study) >= 3 else "sd"
    return band


def _interval(band: str, upper: float | None = None) -> Callable[[np.ndarray], tuple[float, float]] | None:
    """Seaborn ``errorbar`` callable for ``band``. The interval is kept inside the quantity's
    range: never below 0 when every value is >= 0 (times, counts, accuracies, losses, norms),
    never above ``upper`` (1 for accuracies)."""
    if band not in BANDS or band == "auto":
        raise ValueError(f"band {band!r} must be resolved first")
    if band == "none":
        return None

    def interval(v: Any) -> tuple[float, float]:
        a = np.asarray(v, dtype=float)
        a = a[np.isfinite(a)]
        if len(a) == 0:
            return (math.nan, math.nan)
        m = float(a.mean())
        if len(a) < 2:
            return (m, m)
        sd = float(a.std(ddof=1))
        half = {"sd": sd, "se": sd / math.sqrt(len(a)), "ci": _t975(len(a) - 1) * sd / math.sqrt(len(a))}[band]
        lo, hi = m - half, m + half
        if (a >= 0).all():
            lo = max(lo, 0.0)
        if upper is not None and (a <= upper).all():
            hi = min(hi, upper)
        return (lo, hi)

    return interval


def band_note(band: str, n_seeds: int, what: str = "bands") -> str:
    """Says what the bands / error bars show, for titles."""
    if band == "none" or n_seeds < 2:
        return f"{n_seeds} seed{'s' if n_seeds != 1 else ''} per setting"
    how = {"ci": "95% CI of the mean", "sd": "± 1 s.d.", "se": "± 1 s.e."}[band]
    return f"{what}: {how} over {n_seeds} seeds"


def _palette(levels: Sequence[Any], numeric: bool) -> list[Any]:
    import seaborn as sns

    if not levels:
        return []
    n = len(levels)
    if numeric and n > 1:
        # an ordered palette so order reads at a glance; viridis without its pale yellow end
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        return [cmap(v)[:3] for v in np.linspace(0.0, 0.82, n)]
    return list(sns.color_palette("colorblind" if n <= 10 else "husl", n))


def _new_figure(ncols: int = 1, nrows: int = 1, w: float = FIG_W, h: float = FIG_H, **kw: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _style() -> Any:
    import contextlib

    import seaborn as sns

    stack = contextlib.ExitStack()
    stack.enter_context(sns.axes_style("whitegrid"))
    stack.enter_context(sns.plotting_context("notebook", font_scale=0.9))
    return stack


def _study(source: Study | str | Path) -> Study:
    return source if isinstance(source, Study) else load_study(source)


def _check_metric(study: Study, metric: str | None) -> str:
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


def _check_x(x: str) -> str:
    if x not in X_LABELS:
        raise UserError(f"--x: unknown axis {x!r}; allowed: {', '.join(X_LABELS)}")
    return x


def hue_columns(study: Study) -> list[str]:
    """Run columns a figure may be coloured by."""
    cols = ["run", "seed", *study.keys, "algorithm"]
    cols += [c for c in study.runs.columns if "." in c and not c.startswith("final.") and c not in cols]
    return list(dict.fromkeys(cols))


def _varying(study: Study, exclude: Sequence[str] = ()) -> list[str]:
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


def _default_hue(study: Study, hue: str | None, exclude: Sequence[str] = ()) -> str | None:
    if hue is not None:
        allowed = hue_columns(study)
        if hue not in allowed:
            raise UserError(f"--hue: unknown key {hue!r}; allowed here: {', '.join(allowed)}")
        return hue
    varying = _varying(study, exclude)
    if varying:
        return varying[0]
    return None


def _combo_label(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """One label per row from several key columns: ``per_fedavg (hf), τ=5``."""
    if not keys:
        return pd.Series(["all runs"] * len(frame), index=frame.index, dtype=object)
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)

    def one(row: Any) -> str:
        parts = []
        for k in keys:
            v = fmt_value(row[k])
            parts.append(v if k in ("algorithm", "algorithm.name", MODE) or len(keys) == 1 else f"{SHORT.get(k, k)}={v}")
        return ", ".join(parts)

    import textwrap

    labels = [textwrap.fill(one(row), LABEL_WIDTH, break_long_words=False) for _, row in frame.iterrows()]
    return pd.Series(labels, index=frame.index, dtype=object)


def _combo_order(frame: pd.DataFrame, keys: Sequence[str], labels: pd.Series) -> list[str]:
    if not keys:
        return ["all runs"]
    sortable = frame[list(keys)].copy()
    sortable["_label"] = labels
    sortable = sortable.drop_duplicates("_label")
    for k in reversed(keys):
        lv = _levels(frame, k)
        pos = {repr(v): i for i, v in enumerate(lv)}
        sortable = sortable.iloc[np.argsort(sortable[k].map(lambda v, p=pos: p.get(repr(v), 0)).to_numpy(), kind="stable")]
    return list(sortable["_label"])


def _legend(fig: Any, ax: Any, title: str | None, outside: bool = True) -> None:
    handles, labels = ax.get_legend_handles_labels()
    old = ax.get_legend()
    if old is not None:
        if title is None and old.get_title().get_text():
            title = old.get_title().get_text()
        old.remove()
    if not handles:
        return
    if outside:
        fig.legend(handles, labels, title=title, loc="outside right upper", frameon=False)
    else:
        ax.legend(handles, labels, title=title, frameon=True)


def _seed_counts(study: Study) -> pd.Series:
    runs = study.runs
    if "seed" not in runs.columns or runs.empty:
        return pd.Series([1])
    keys = [k for k in study.keys if k in runs.columns]
    if not keys:
        return pd.Series([runs["seed"].nunique()])
    return runs.groupby([runs[k].astype(str) for k in keys])["seed"].nunique()


def _n_seeds(study: Study) -> int:
    return int(_seed_counts(study).max())


def _min_seeds(study: Study) -> int:
    return int(_seed_counts(study).min())


# ------------------------------------------------------------------------------------------------
# Convergence
# ------------------------------------------------------------------------------------------------


def _resample(m: pd.DataFrame, x: str, group: pd.Series, n: int = 160) -> pd.DataFrame:
    """Curves of every run on a common x grid (linear interpolation between evaluations), each
    setting cut where its earliest-finishing seed ends, so a mean is always over all seeds."""
    xs_union = np.unique(m[x].to_numpy(dtype=float))
    per_run = {r: np.unique(g[x].to_numpy(dtype=float)) for r, g in m.groupby("run")}
    aligned = all(len(v) == len(xs_union) for v in per_run.values()) and len(xs_union) <= 400
    grid = xs_union if aligned else np.linspace(float(m[x].min()), float(m[x].max()), n)
    rows = []
    ends: dict[str, float] = {}
    for run, g in m.groupby("run", sort=False):
        g = g[np.isfinite(g["value"])]
        if g.empty:
            continue
        s = g.groupby(x)["value"].last().sort_index()
        xp, fp = s.index.to_numpy(dtype=float), s.to_numpy(dtype=float)
        inside = grid[(grid >= xp[0]) & (grid <= xp[-1])]
        gl = group.loc[g.index[0]]
        ends[gl] = min(ends.get(gl, math.inf), float(xp[-1]))
        rows.append(pd.DataFrame({"run": run, "_group": gl, x: inside, "value": np.interp(inside, xp, fp)}))
    if not rows:
        return pd.DataFrame(columns=["run", "_group", x, "value"])
    out = pd.concat(rows, ignore_index=True)
    return out[out[x] <= out["_group"].map(ends) + 1e-12]


def _title(keys: Sequence[str]) -> str | None:
    return " / ".join(pretty(k) for k in keys) or None


def _convergence_axes(
    ax: Any,
    study: Study,
    m: pd.DataFrame,
    metric: str,
    x: str,
    hue_keys: Sequence[str],
    style_keys: Sequence[str],
    band: str,
    legend: bool = True,
) -> list[str]:
    """Draw the curves of ``metric`` from the metrics rows ``m``; returns the colour order.
    Colour and line-style columns are named after their keys, so the legend says what they are."""
    import seaborn as sns

    m = m[m["metric"] == metric]
    if m.empty or not np.isfinite(m["value"]).any():
        ax.text(0.5, 0.5, f"no finite {metric} here", transform=ax.transAxes, ha="center", color="grey")
        ax.set_xlabel(X_LABELS[x])
        return []
    # keys constant among the curves drawn here only add noise to their labels
    style_keys = [k for k in style_keys if k in m.columns and m[k].astype(str).nunique() > 1]
    hname = _title(hue_keys) or "runs"
    sname = _title(style_keys) or "style"
    if sname == hname:
        sname += " "
    m = m.assign(**{hname: _combo_label(m, hue_keys)})
    m = m.assign(**{sname: _combo_label(m, style_keys) if style_keys else ""})
    curves = _resample(m, x, m[hname] + "|" + m[sname])
    first = m.drop_duplicates("run")
    curves = curves.join(first.set_index("run")[[hname, sname]], on="run")
    hue_order = _combo_order(first, hue_keys, first[hname])
    numeric = len(hue_keys) == 1 and hue_keys[0] in study.runs.columns and _is_numeric(_levels(study.runs, hue_keys[0]))
    palette = dict(zip(hue_order, _palette(hue_order, numeric), strict=True))
    style_order = _combo_order(first, style_keys, first[sname]) if style_keys else None
    sns.lineplot(
        data=curves, x=x, y="value", hue=hname, hue_order=hue_order, palette=palette,
        style=sname if style_keys else None, style_order=style_order,
        errorbar=_interval(band, _upper(metric)), ax=ax, linewidth=1.8, legend="auto" if legend else False,
    )
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(metric_label(metric))
    if "grad_norm" in metric and (curves["value"] > 0).all() and len(curves):
        ax.set_yscale("log")  # the convergence measure spans orders of magnitude
        ax.set_ylabel(f"{metric_label(metric)}, log scale")
        v = curves["value"]
        if float(v.max()) / float(v.min()) < 1e3:  # plain numbers read better than 6×10⁻¹
            from matplotlib.ticker import FuncFormatter, LogLocator

            plain = FuncFormatter(lambda y, _: f"{y:g}")
            ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
    return hue_order


def _preferred_hue(study: Study) -> str | None:
    """The swept quantity (tau, delay scale, ...) rather than a categorical choice, when both vary."""
    varying = _varying(study)
    for k in varying:
        if k not in ("algorithm", MODE) and _is_numeric(_levels(study.runs, k)):
            return k
    return varying[0] if varying else None


MAX_PANELS = 9


def convergence(
    source: Study | str | Path,
    metric: str | None = None,
    x: str = "sim_time",
    hue: str | None = None,
    band: str = "auto",
    **_: Any,
) -> Any:
    """``metric`` against ``x`` (``sim_time``, ``server_version`` or ``client_updates``), a
    colour per value of ``hue`` (default: the swept quantity, e.g. tau), one panel per value of
    the other keys that vary (e.g. per algorithm), band over seeds."""
    study = _study(source)
    band = _resolve_band(band, study)
    metric = _check_metric(study, metric)
    x = _check_x(x)
    hue = _default_hue(study, hue) if hue is not None else _preferred_hue(study)
    hue_keys = [hue] if hue else []
    rest = _varying(study, exclude=hue_keys)
    metrics = study.metrics
    facet_keys: list[str] = list(rest)
    style_keys: list[str] = []
    while facet_keys and _combo_label(study.runs, facet_keys).nunique() > MAX_PANELS:
        style_keys.insert(0, facet_keys.pop())
    panels = _combo_label(metrics, facet_keys) if facet_keys else pd.Series("", index=metrics.index)
    order = _combo_order(metrics.drop_duplicates("run"), facet_keys, panels.loc[metrics.drop_duplicates("run").index]) if facet_keys else [""]
    ncols, nrows = _grid(len(order))
    with _style():
        fig, axes = _new_figure(
            ncols, nrows, w=(FIG_W if ncols == 1 else 4.3 * ncols) + (1.8 if hue_keys or style_keys else 0),
            h=FIG_H if nrows == 1 else 3.4 * nrows, sharey=True,
        )
        for i, panel in enumerate(order):
            ax = axes[i // ncols, i % ncols]
            _convergence_axes(ax, study, metrics[panels == panel], metric, x, hue_keys, style_keys, band, legend=i == 0)
            if facet_keys:
                ax.set_title(panel, fontsize="medium")
            if i % ncols:
                ax.set_ylabel("")
        for j in range(len(order), nrows * ncols):
            axes[j // ncols, j % ncols].set_visible(False)
        first = axes[0, 0]
        head = f"{metric_label(metric)} — {band_note(band, _n_seeds(study))}"
        if facet_keys:
            fig.suptitle(head, fontsize="medium")
        else:
            first.set_title(head, fontsize="medium")
        if hue_keys or style_keys:
            _legend(fig, first, None)
        elif first.get_legend() is not None:
            first.get_legend().remove()
    return fig


# ------------------------------------------------------------------------------------------------
# Convergence versus delay
# ------------------------------------------------------------------------------------------------


def ttt_label(metric: str, target: float, x: str) -> str:
    """Axis label of a time-to-target: what is counted, to reach which level."""
    what = {"sim_time": "simulated time (s)", "server_version": "server versions", "client_updates": "client updates"}[x]
    return f"{what} to reach\n{metric_label(metric)} {'≥' if higher_is_better(metric) else '≤'} {target:.3g}"


def _x_ticks(frame: pd.DataFrame, key: str) -> tuple[pd.Series, list[str]]:
    levels = _levels(frame, key)
    labels = [fmt_value(v) for v in levels]
    return frame[key].map(fmt_value), labels


def convergence_vs_delay(
    source: Study | str | Path,
    metric: str | None = None,
    target: float | None = None,
    x: str = "sim_time",
    band: str = "auto",
    **_: Any,
) -> Any:
    """Rows: against the delay scale and/or tau (whichever vary); columns: the final ``metric``
    and the simulated time to reach ``target`` (default: a level every run reaches). One colour
    per algorithm (and per value of any other key that varies); error bars over seeds."""
    import seaborn as sns

    study = _study(source)
    band = _resolve_band(band, study)
    metric = _check_metric(study, metric)
    x = _check_x(x)
    xkeys = [k for k in (DELAY, TAU) if study.varies(k)]
    if not xkeys:
        raise UserError(
            f"--kind convergence_vs_delay: the runs in {study.path} do not differ in {DELAY} or {TAU}; "
            "sweep one of them (e.g. --grid server.max_staleness=0,5,20)"
        )
    if target is None:
        target = default_target(study.metrics, metric)
    finals = final_values(study.metrics, metric)
    ttt = time_to_target(study.metrics, metric, target, x)
    interval = _interval(band, _upper(metric))
    ttt_interval = _interval(band)
    with _style():
        fig, axes = _new_figure(2, len(xkeys), w=FIG_W * 1.45 + (0 if len(xkeys) == 1 else 1.5),
                                h=3.4 * len(xkeys) + 0.5)
        for row, key in enumerate(xkeys):
            hue_keys = _varying(study, exclude=[key])
            hue_order = _combo_order(study.runs, hue_keys, _combo_label(study.runs, hue_keys))
            palette = dict(zip(hue_order, _palette(hue_order, False), strict=True))
            panels = [
                (finals, "value", f"final {metric_label(metric)}", interval),
                (ttt, "time_to_target", ttt_label(metric, target, x), ttt_interval),
            ]
            for col, (frame, y, ylabel, errorbar) in enumerate(panels):
                ax = axes[row, col]
                f = frame.copy()
                f["_x"], order = _x_ticks(f, key)
                f["_hue"] = _combo_label(f, hue_keys)
                missing = int(f[y].isna().sum())
                f = f[np.isfinite(f[y].astype(float))]
                if not f.empty:
                    sns.pointplot(
                        data=f, x="_x", y=y, order=order, hue="_hue", hue_order=hue_order, palette=palette,
                        errorbar=errorbar, dodge=0.25 if len(hue_order) > 1 else False, capsize=0.08,
                        markers="o", linestyles="-", ax=ax, err_kws={"linewidth": 1.2},
                    )
                ax.set_xlabel(f"{pretty(key)} ({key})")
                ax.set_ylabel(ylabel)
                if col == 1 and missing:
                    ax.set_title(f"{missing} run{'s' if missing != 1 else ''} never reached it (left out)",
                                 fontsize="small")
                legend = ax.get_legend()
                if legend is not None and (col == 0 or not hue_keys):
                    legend.remove()
                elif legend is not None and len(xkeys) > 1:
                    ax.legend(title=_title(hue_keys), loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                              fontsize="small")
        if len(xkeys) == 1 and axes[0, 1].get_legend() is not None:
            _legend(fig, axes[0, 1], _title(_varying(study, exclude=[xkeys[0]])))
        against = " and ".join({DELAY: "delay scale", TAU: "staleness bound τ"}[k] for k in xkeys)
        fig.suptitle(f"{metric_label(metric)} vs {against} — {band_note(band, _n_seeds(study), 'error bars')}",
                     fontsize="medium")
    return fig


# ------------------------------------------------------------------------------------------------
# Staleness, updates, participation, fairness
# ------------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    """How a figure splits runs: a colour per ``hue_keys`` combination, a panel per
    ``panel_keys`` combination (every other key that varies), so no figure averages over a key."""

    hue_keys: list[str]
    panel_keys: list[str]
    numeric: bool

    def hue(self, frame: pd.DataFrame) -> pd.Series:
        return _combo_label(frame, self.hue_keys)

    def panel(self, frame: pd.DataFrame) -> pd.Series:
        return _combo_label(frame, self.panel_keys) if self.panel_keys else pd.Series("", index=frame.index)

    def hue_order(self, study: Study) -> list[str]:
        r = study.runs
        return _combo_order(r, self.hue_keys, self.hue(r))

    def panel_order(self, study: Study) -> list[str]:
        r = study.runs
        return _combo_order(r, self.panel_keys, self.panel(r)) if self.panel_keys else [""]

    def hue_title(self) -> str | None:
        return _title(self.hue_keys)


def _layout(study: Study, hue: str | None, max_panels: int = MAX_PANELS) -> _Layout:
    hue = _default_hue(study, hue) if hue is not None else _preferred_hue(study)
    hue_keys = [hue] if hue else []
    panel_keys = _varying(study, exclude=hue_keys)
    while panel_keys and _combo_label(study.runs, panel_keys).nunique() > max_panels:
        hue_keys.append(panel_keys.pop())
    numeric = len(hue_keys) == 1 and hue_keys[0] in study.runs.columns and _is_numeric(_levels(study.runs, hue_keys[0]))
    return _Layout(hue_keys, panel_keys, numeric)


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    """Columns and rows for ``n`` panels: one row up to 3, then as square as possible."""
    ncols = n if n <= max_cols else (2 if n == 4 else max_cols)
    ncols = max(1, ncols)
    return ncols, math.ceil(n / ncols)


def _hide_unused(axes: Any, used: int) -> None:
    flat = axes.ravel()
    for ax in flat[used:]:
        ax.set_visible(False)


def staleness(source: Study | str | Path, hue: str | None = None, **_: Any) -> Any:
    """Histogram (share of applied updates) of the staleness of applied updates: one row per
    value of ``hue`` (default: the swept quantity, e.g. tau), one column per value of the other
    keys that vary (e.g. algorithm); each panel marks its mean and its bound tau."""
    study = _study(source)
    lay = _layout(study, hue, max_panels=4)
    ev = study.events
    ev = ev[ev["status"] == "applied"]
    if ev.empty:
        raise UserError(f"--kind staleness: no applied updates recorded in {study.path}")
    ev = ev.assign(_hue=lay.hue(ev), _panel=lay.panel(ev))
    rows, cols = lay.hue_order(study), lay.panel_order(study)
    palette = dict(zip(rows, _palette(rows, lay.numeric), strict=True))
    smax = int(ev["staleness"].max())
    from matplotlib.lines import Line2D

    with _style():
        fig, axes = _new_figure(
            len(cols), len(rows), w=max(FIG_W, 3.6 * len(cols)), h=min(1.3 + 1.3 * len(rows), 14.0),
            sharex=True, sharey="row",
        )
        bins = np.arange(-0.5, smax + 1.5, 1.0) if smax <= 80 else np.linspace(-0.5, smax + 0.5, 81)
        for i, row in enumerate(rows):
            for j, col in enumerate(cols):
                ax = axes[i, j]
                sel = (ev["_hue"] == row) & (ev["_panel"] == col)
                s = ev.loc[sel, "staleness"].to_numpy(dtype=float)
                if len(s):
                    ax.hist(s, bins=bins, weights=np.full(len(s), 1.0 / len(s)), color=palette[row], alpha=0.85,
                            edgecolor="white", linewidth=0.4)
                    ax.axvline(float(s.mean()), color="black", linewidth=1.0)
                    tau = float(ev.loc[sel, TAU].iloc[0]) if TAU in ev.columns else math.inf
                    if math.isfinite(tau) and tau <= smax:
                        ax.axvline(tau + 0.5, color="firebrick", linewidth=1.0, linestyle="--")
                    text = f"mean {s.mean():.2f}, max {int(s.max())}\nn = {len(s)}"
                else:
                    text = "no applied updates"
                ax.text(0.98, 0.92, text, transform=ax.transAxes, ha="right", va="top", fontsize="x-small")
                if i == 0 and col:
                    ax.set_title(col, fontsize="medium")
                if j == 0:
                    name = f"{SHORT.get(lay.hue_keys[0], pretty(lay.hue_keys[0]))} = {row}" if len(lay.hue_keys) == 1 else row
                    ax.set_ylabel(f"{name}\nshare" if lay.hue_keys else "share", fontsize="small")
                ax.set_xlim(-0.7, smax + 0.7)
        for j in range(len(cols)):
            axes[-1, j].set_xlabel("staleness (server versions)")
        handles = [Line2D([], [], color="black", linewidth=1.0, label="mean")]
        if TAU in ev.columns and np.isfinite(ev[TAU].astype(float)).any():
            handles.append(Line2D([], [], color="firebrick", linewidth=1.0, linestyle="--", label="bound τ"))
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize="small")
        head = "staleness of applied updates per scenario"
        if lay.hue_keys:
            head += f" (rows: {lay.hue_title()})"
        fig.suptitle(head, fontsize="medium")
    return fig


STATUS_ORDER = ("applied", "dropped_stale", "dropped_deadline", "dropped_offline", "dropped_dropout", "in_flight")


def updates(source: Study | str | Path, hue: str | None = None, band: str = "auto", **_: Any) -> Any:
    """Client tasks per outcome (applied, dropped_stale, ...) per run, a bar colour per value of
    ``hue``, a panel per value of the other keys that vary; error bars over seeds. Tasks still in
    flight when the run stopped are left out."""
    import seaborn as sns

    study = _study(source)
    band = _resolve_band(band, study)
    lay = _layout(study, hue)
    ev = study.events
    ev = ev[ev["status"] != "in_flight"]
    present = set(ev["status"])
    statuses = [s for s in STATUS_ORDER if s in present] + sorted(present - set(STATUS_ORDER))
    runs = study.runs
    counts = ev.groupby(["run", "status"]).size().unstack(fill_value=0).reindex(columns=statuses, fill_value=0)
    counts = counts.reindex(runs["run"], fill_value=0).reset_index()
    counts = counts.melt(id_vars="run", var_name="outcome", value_name="count").merge(runs, on="run")
    counts = counts.assign(_hue=lay.hue(counts), _panel=lay.panel(counts))
    horder, porder = lay.hue_order(study), lay.panel_order(study)
    palette = dict(zip(horder, _palette(horder, lay.numeric), strict=True))
    ncols, nrows = _grid(len(porder))
    with _style():
        fig, axes = _new_figure(
            ncols, nrows, w=max(FIG_W, 4.4 * ncols) + (1.8 if lay.hue_keys else 0), h=3.6 * nrows + 0.4, sharey=True
        )
        for i, panel in enumerate(porder):
            ax = axes.ravel()[i]
            sns.barplot(
                data=counts[counts["_panel"] == panel], x="outcome", y="count", order=statuses, hue="_hue",
                hue_order=horder, palette=palette, errorbar=_interval(band), capsize=0.1, ax=ax,
                err_kws={"linewidth": 1.0}, legend=i == 0,
            )
            ax.set_xlabel("outcome of a client task")
            ax.set_ylabel("client tasks per run" if i % ncols == 0 else "")
            if panel:
                ax.set_title(panel, fontsize="medium")
            if len(statuses) > 3:
                ax.tick_params(axis="x", labelrotation=20)
        _hide_unused(axes, len(porder))
        fig.suptitle(f"updates applied and dropped — {band_note(band, _n_seeds(study), 'error bars')}", fontsize="medium")
        first = axes.ravel()[0]
        if lay.hue_keys:
            _legend(fig, first, lay.hue_title())
        elif first.get_legend() is not None:
            first.get_legend().remove()
    return fig


def gini(counts: Sequence[float] | np.ndarray | pd.Series) -> float:
    """Gini coefficient of non-negative counts (0: all equal, -> 1: one client does everything)."""
    a = np.sort(np.asarray(counts, dtype=float))
    n = len(a)
    if n == 0 or a.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1).dot(a) / (n * a.sum()))


def _per_client(study: Study) -> pd.DataFrame:
    """One row per (run, client that got a task): updates applied, tasks, and the median task
    time (download + compute + upload, simulated seconds) -- the client's speed as the server
    sees it."""
    ev = study.events
    ev = ev.assign(_dur=ev["download_time"] + ev["compute_time"] + ev["upload_time"])
    tasks = ev.groupby(["run", "client"]).agg(task_time=("_dur", "median"), tasks=("task", "size"))
    applied = ev[ev["status"] == "applied"].groupby(["run", "client"]).size().rename("updates")
    out = tasks.join(applied).fillna({"updates": 0})
    # clients never given a task still count (0 updates, speed unknown)
    full = pd.MultiIndex.from_tuples(
        [(r.name, c) for r in study.loaded for c in range(int(_clients(r, out)))], names=["run", "client"]
    )
    out = out.reindex(full).fillna({"updates": 0, "tasks": 0}).reset_index()
    return out.merge(study.runs, on="run", how="left")


def _clients(run: Any, per_client: pd.DataFrame) -> int:
    count = (run.scenario.get("clients") or {}).get("count") if isinstance(run.scenario, dict) else None
    if isinstance(count, int):
        return count
    seen = per_client.loc[run.name].index if run.name in per_client.index.get_level_values(0) else []
    return int(max(seen) + 1) if len(seen) else 0


def participation(source: Study | str | Path, hue: str | None = None, band: str = "auto", **_: Any) -> Any:
    """Updates applied per client, clients ranked from most to fewest, a line per value of
    ``hue`` (band over seeds), a panel per value of the other keys that vary; the legend gives
    each setting's Gini coefficient (0 = every client contributes equally)."""
    import seaborn as sns

    study = _study(source)
    band = _resolve_band(band, study)
    lay = _layout(study, hue)
    pc = _per_client(study)
    pc = pc.sort_values(["run", "updates"], ascending=[True, False], kind="stable")
    pc["rank"] = pc.groupby("run").cumcount()
    pc = pc.assign(_hue=lay.hue(pc), _panel=lay.panel(pc))
    horder, porder = lay.hue_order(study), lay.panel_order(study)
    palette = dict(zip(horder, _palette(horder, lay.numeric), strict=True))
    ncols, nrows = _grid(len(porder))
    with _style():
        fig, axes = _new_figure(ncols, nrows, w=max(FIG_W, 4.4 * ncols) + 2.2, h=3.6 * nrows + 0.4, sharey=True)
        for i, panel in enumerate(porder):
            ax = axes.ravel()[i]
            sub = pc[pc["_panel"] == panel]
            ginis = {h: np.mean([gini(g["updates"]) for _, g in sub[sub["_hue"] == h].groupby("run")] or [0.0])
                     for h in horder}
            sns.lineplot(
                data=sub, x="rank", y="updates", hue="_hue", hue_order=horder, palette=palette,
                errorbar=_interval(band), ax=ax, marker="o", markersize=3, linewidth=1.5, legend=False,
            )
            short = SHORT.get(lay.hue_keys[0], "") if len(lay.hue_keys) == 1 else ""
            text = "\n".join(
                (f"{short}={h}: " if short else f"{h}: " if lay.hue_keys else "") + f"{ginis[h]:.2f}"
                for h in horder
                if (sub["_hue"] == h).any()
            )
            ax.text(0.98, 0.97, f"Gini coefficient\n{text}", transform=ax.transAxes, ha="right", va="top",
                    fontsize="x-small")
            ax.set_xlabel("client rank (0 = most updates applied)")
            ax.set_ylabel("updates applied per client" if i % ncols == 0 else "")
            if panel:
                ax.set_title(panel, fontsize="medium")
        _hide_unused(axes, len(porder))
        axes[0, 0].set_ylim(bottom=0)  # after every panel is drawn: the shared top covers them all
        fig.suptitle(f"client participation — {band_note(band, _n_seeds(study))}", fontsize="medium")
        if lay.hue_keys:
            _color_legend(fig, horder, palette, lay.hue_title(), marker="o")
    return fig


def _color_legend(fig: Any, order: Sequence[str], palette: Mapping[str, Any], title: str | None, marker: str = "") -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=palette[h], marker=marker or None, linewidth=1.8, label=h) for h in order]
    fig.legend(handles=handles, title=title, loc="outside right upper", frameon=False)


def per_client_metric(study: Study, kind: str = "accuracy") -> pd.DataFrame | None:
    """Per-client values at the last evaluation, if the runs record them as metrics named
    ``<name>/<client>`` or ``<name>[<client>]`` (e.g. ``personalized_accuracy/3``); else None."""
    m = study.metrics
    ext = m["metric"].str.extract(r"^(?P<name>.+?)(?:/|\[)(?P<client>\d+)\]?$")
    sel = ext["name"].notna() & ext["name"].fillna("").str.contains(kind)
    if not sel.any():
        return None
    f = m[sel].assign(name=ext.loc[sel, "name"], client=ext.loc[sel, "client"].astype(int))
    f = f.sort_values(["run", "server_version", "sim_time"], kind="stable")
    last = f.groupby(["run", "client", "name"]).tail(1)
    return last[["run", "client", "name", "value"]].reset_index(drop=True)


def fairness(source: Study | str | Path, hue: str | None = None, **_: Any) -> Any:
    """Each client's updates applied -- and its final personalized accuracy, when the runs record
    per-client metrics -- against its speed: the median duration of its tasks (download + compute
    + upload, simulated seconds). Under an async server fast clients contribute more updates:
    the bias to look for. A colour per value of ``hue``, a column per value of the other keys."""
    import seaborn as sns

    study = _study(source)
    lay = _layout(study, hue, max_panels=4)
    pc = _per_client(study)
    pc = pc.assign(_hue=lay.hue(pc), _panel=lay.panel(pc))
    acc = per_client_metric(study)
    horder, porder = lay.hue_order(study), lay.panel_order(study)
    palette = dict(zip(horder, _palette(horder, lay.numeric), strict=True))
    nrows = 2 if acc is not None else 1
    if acc is not None:
        acc_name = str(acc["name"].iloc[0])
        acc = acc[acc["name"] == acc_name].merge(pc[["run", "client", "task_time", "_hue", "_panel"]], on=["run", "client"])
    with _style():
        fig, axes = _new_figure(len(porder), nrows, w=max(FIG_W, 4.6 * len(porder)) + (1.8 if lay.hue_keys else 0),
                                h=3.7 * nrows + 0.4, sharex=True)
        for j, panel in enumerate(porder):
            panels = [(pc, "updates", "updates applied per client")]
            if acc is not None:
                panels.append((acc, "value", f"final {metric_label(acc_name)}\n(of each client)"))
            for i, (frame, y, ylabel) in enumerate(panels):
                ax = axes[i, j]
                sub = frame[frame["_panel"] == panel]
                sns.scatterplot(data=sub, x="task_time", y=y, hue="_hue", hue_order=horder, palette=palette,
                                ax=ax, s=18, alpha=0.6, edgecolor="none", legend=False)
                _trend(ax, sub, "task_time", y, horder, palette)
                logx = _time_axis(ax, pc["task_time"])
                scale = ", log scale" if logx else ""
                ax.set_xlabel(f"client's median task time (simulated s{scale})" if i == nrows - 1 else "")
                ax.set_ylabel(ylabel if j == 0 else "")
                if i == 0 and panel:
                    ax.set_title(panel, fontsize="medium")
        fig.suptitle("fairness: per client, against its speed (dots: one client in one run; lines: binned medians)",
                     fontsize="medium")
        if lay.hue_keys:
            _color_legend(fig, horder, palette, lay.hue_title(), marker="o")
    return fig


def _time_axis(ax: Any, values: pd.Series) -> bool:
    """Log x when the values span more than a decade (plain number labels), else linear."""
    v = values[values > 0]
    if len(v) and float(v.max()) / float(v.min()) > 10:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        fmt = ScalarFormatter()
        fmt.set_scientific(False)
        ax.xaxis.set_major_formatter(fmt)
        ax.xaxis.set_minor_formatter(NullFormatter())
        return True
    return False


def _trend(ax: Any, frame: pd.DataFrame, x: str, y: str, order: Sequence[str], palette: Mapping[str, Any]) -> None:
    """Median of y in quantile bins of x, one line per group: the trend under the scatter."""
    for label in order:
        color = palette[label]
        g = frame[(frame["_hue"] == label) & (frame[x] > 0)]
        if len(g) < 6:
            continue
        nb = int(min(8, max(3, len(g) // 8)))
        bins = pd.qcut(np.log(g[x]), nb, duplicates="drop")
        t = g.groupby(bins, observed=True).agg(xm=(x, "median"), ym=(y, "median"))
        ax.plot(t["xm"], t["ym"], color=color, linewidth=1.8)


# ------------------------------------------------------------------------------------------------
# Sync against async
# ------------------------------------------------------------------------------------------------


def sync_vs_async(
    source: Study | str | Path,
    metric: str | None = None,
    target: float | None = None,
    x: str = "sim_time",
    band: str = "auto",
    **_: Any,
) -> Any:
    """Left: ``metric`` on the simulated clock, a colour per server mode (line style per
    algorithm when several). Right: simulated time to reach ``target`` per mode."""
    import seaborn as sns

    study = _study(source)
    band = _resolve_band(band, study)
    metric = _check_metric(study, metric)
    x = _check_x(x)
    if not study.varies(MODE):
        raise UserError(
            f"--kind sync_vs_async: the runs in {study.path} all use one server.mode; "
            "sweep it (e.g. --grid server.mode=sync,async)"
        )
    if target is None:
        target = default_target(study.metrics, metric)
    style_keys = _varying(study, exclude=[MODE])
    m = study.metrics[study.metrics["metric"] == metric]
    live = study.runs[study.runs["run"].isin(set(m.loc[np.isfinite(m["value"]), "run"]))]
    style_keys = [k for k in style_keys if live[k].astype(str).nunique() > 1]
    with _style():
        fig, axes = _new_figure(2, 1, w=FIG_W * 1.75, h=FIG_H)
        ax = axes[0, 0]
        hue_order = _convergence_axes(ax, study, study.metrics, metric, x, [MODE], style_keys, band)
        ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{metric_label(metric)} on the simulated clock (dotted: target)", fontsize="medium")
        ttt = time_to_target(study.metrics, metric, target, x)
        ttt = ttt[ttt["run"].isin(set(live["run"]))]
        missing = int(ttt["time_to_target"].isna().sum())
        ttt = ttt[np.isfinite(ttt["time_to_target"].astype(float))]
        ttt = ttt.assign(_hue=_combo_label(ttt, [MODE]), _style=_combo_label(ttt, style_keys))
        ax2 = axes[0, 1]
        if not ttt.empty:
            sns.barplot(
                data=ttt, x="_style" if style_keys else "_hue", y="time_to_target",
                order=_combo_order(study.runs, style_keys, _combo_label(study.runs, style_keys)) if style_keys else hue_order,
                hue="_hue", hue_order=hue_order,
                palette=dict(zip(hue_order, _palette(hue_order, False), strict=True)),
                errorbar=_interval(band), capsize=0.1, ax=ax2, err_kws={"linewidth": 1.0}, legend=False,
            )
        ax2.set_xlabel(_title(style_keys) or pretty(MODE))
        if any(len(t.get_text()) > 14 for t in ax2.get_xticklabels()):
            ax2.tick_params(axis="x", labelrotation=20, labelsize="small")
        ax2.set_ylabel(ttt_label(metric, target, x))
        note = f"; {missing} run{'s' if missing != 1 else ''} never reached it" if missing else ""
        ax2.set_title(f"time to target{note}", fontsize="medium")
        fig.suptitle(f"sync vs async — {band_note(band, _n_seeds(study))}", fontsize="medium")
        _legend(fig, ax, None)
    return fig


# ------------------------------------------------------------------------------------------------
# Dispatch and saving
# ------------------------------------------------------------------------------------------------

KINDS: dict[str, Callable[..., Any]] = {
    "convergence": convergence,
    "convergence_vs_delay": convergence_vs_delay,
    "staleness": staleness,
    "updates": updates,
    "participation": participation,
    "fairness": fairness,
    "sync_vs_async": sync_vs_async,
}


def figure(kind: str, source: Study | str | Path, **options: Any) -> Any:
    """Make the figure ``kind`` (one of :data:`KINDS`) of a study; options as the functions take
    (``metric``, ``x``, ``hue``, ``target``, ``band``); None values mean the default."""
    if kind not in KINDS:
        raise UserError(f"--kind: unknown figure {kind!r}; allowed: {', '.join(KINDS)}")
    opts = {k: v for k, v in options.items() if v is not None}
    return KINDS[kind](_study(source), **opts)


def save(fig: Any, path: str | Path, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path``; the suffix (.png, .svg, .pdf) picks the format. Atomic."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"--out {p}: unknown figure format {suffix or '(none)'!r}; allowed: {', '.join(FORMATS)}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # no tool versions or dates in the file: the same figure gives the same bytes
    metadata: dict[str, Any] = {
        ".png": {"Software": None},
        ".svg": {"Creator": None, "Date": None},
        ".pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    }[suffix]
    from matplotlib import rc_context

    with rc_context({"svg.hashsalt": "asyncfl"}):
        fig.savefig(buf, format=suffix[1:], dpi=dpi, metadata=metadata)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, buf.getvalue())
    return p


__all__ = [
    "BANDS",
    "KINDS",
    "convergence",
    "convergence_vs_delay",
    "fairness",
    "figure",
    "gini",
    "participation",
    "save",
    "staleness",
    "sync_vs_async",
    "updates",
]
