"""``convergence``: a metric against simulated time (or server version / client updates), a
colour per level of one key (default: the swept quantity, e.g. tau), a panel per level of the
other keys that vary, a band over seeds. Accuracy figures draw reference levels: the initial
model's value (the first evaluation) and, when the runs record ``majority_accuracy``, the
no-collaboration baseline (each client predicts its majority training label)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asyncfl.study.figures import common as c
from asyncfl.study.results import X_LABELS, Study, spans_decades


def resample(m: pd.DataFrame, x: str, group: pd.Series, n: int = 160) -> pd.DataFrame:
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


def draw_curves(
    ax: Any,
    m: pd.DataFrame,
    metric: str,
    x: str,
    hue_keys: Sequence[str],
    colors: Mapping[str, Any],
    style_keys: Sequence[str],
    styles: Mapping[str, Any],
    band: str,
) -> None:
    """The mean curve of each (colour, style) setting in the metrics rows ``m`` and its band over
    seeds. Each line's gid is ``level:<colour label>``, so tests read colours back per level."""
    m = m[m["metric"] == metric]
    ax.set_xlabel(X_LABELS[x])
    if m.empty or not np.isfinite(m["value"]).any():
        ax.text(0.5, 0.5, f"no finite {metric} here", transform=ax.transAxes, ha="center", color="grey")
        return
    m = m.assign(_hue=c.combo_label(m, hue_keys), _style=c.combo_label(m, style_keys) if style_keys else "")
    curves = resample(m, x, m["_hue"] + "|" + m["_style"])
    upper = c.upper_bound(metric)
    v = curves["value"]
    # A convergence measure spans orders of magnitude and is drawn on a log axis: its mean and band
    # are taken over log values (a geometric mean, a multiplicative band), since a band of raw values
    # wider than the mean would reach below zero and fill the axis down to its bottom.
    logy = spans_decades(metric) and len(v) > 0 and bool((v > 0).all())
    for group in dict.fromkeys(curves["_group"]):
        hue, sty = str(group).split("|", 1)
        sel = curves[curves["_group"] == group]
        xs, mean, lo, hi = [], [], [], []
        for xv, vals in sel.groupby(x)["value"]:
            if logy:
                mu, a, b = (float(np.exp(t)) for t in c.spread(np.log(vals.to_numpy()), band))
            else:
                mu, a, b = c.spread(vals.to_numpy(), band, upper)
            xs.append(float(xv))
            mean.append(mu)
            lo.append(a)
            hi.append(b)
        color = colors[hue]
        ls = styles.get(sty, "-") if style_keys else "-"
        ax.plot(xs, mean, color=color, linestyle=ls, linewidth=1.8, gid=f"level:{hue}")
        if band != "none" and len(sel["run"].unique()) > 1:
            ax.fill_between(xs, lo, hi, color=color, alpha=0.18, linewidth=0)
    ax.set_ylabel(c.metric_label(metric))
    if logy:
        ax.set_yscale("log")  # the convergence measure spans orders of magnitude
        ax.set_ylabel(f"{c.metric_label(metric)}, log scale\n(geometric mean over seeds)")
        if float(v.max()) / float(v.min()) < 1e3:  # plain numbers read better than 6×10⁻¹
            from matplotlib.ticker import FuncFormatter, LogLocator

            plain = FuncFormatter(lambda y, _: f"{y:g}")
            ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)


REF_INITIAL = "initial model (first evaluation)"
REF_MAJORITY = "majority label per client\n(no collaboration)"


def reference_levels(metrics: pd.DataFrame, metric: str) -> dict[str, float]:
    """Levels a reader needs to judge an accuracy curve: the initial model's value (mean of the
    runs' first evaluations) and, for a personalized accuracy when recorded, the majority-label
    baseline (mean of ``majority_accuracy`` over the runs)."""
    out: dict[str, float] = {}
    if "accuracy" not in metric:
        return out
    m = metrics[(metrics["metric"] == metric) & np.isfinite(metrics["value"])]
    if not m.empty:
        order = [k for k in ("server_version", "sim_time") if k in m.columns]
        out["initial"] = float(m.sort_values(["run", *order], kind="stable").groupby("run")["value"].first().mean())
    if metric.startswith("personalized"):
        b = metrics[(metrics["metric"] == c.MAJORITY) & np.isfinite(metrics["value"])]
        if not b.empty:
            out["majority"] = float(b.groupby("run")["value"].mean().mean())
    return out


REF_STYLE = {"initial": ("dimgrey", (0, (4, 2)), REF_INITIAL), "majority": ("firebrick", (0, (1, 1.5)), REF_MAJORITY)}


def draw_references(ax: Any, refs: Mapping[str, float]) -> None:
    for name, y in refs.items():
        color, ls, _ = REF_STYLE[name]
        ax.axhline(y, color=color, linestyle=ls, linewidth=1.2, gid=f"ref:{name}", zorder=1)
        ax.annotate(
            f"{y:.3g}",
            xy=(1.0, y),
            xycoords=("axes fraction", "data"),
            xytext=(2, 0),
            textcoords="offset points",
            va="center",
            fontsize="x-small",
            color=color,
        )


def reference_handles(refs: Mapping[str, float]) -> list[Any]:
    from matplotlib.lines import Line2D

    out = []
    for name in refs:
        color, ls, label = REF_STYLE[name]
        out.append(Line2D([], [], color=color, linestyle=ls, linewidth=1.2, label=label))
    return out


def style_handles(title: str | None, order: Sequence[str], styles: Mapping[str, Any]) -> list[Any]:
    from matplotlib.lines import Line2D

    if not order:
        return []
    head = Line2D([], [], linestyle="none", label=f"{title}:")
    return [head, *(Line2D([], [], color="dimgrey", linestyle=styles[s], linewidth=1.6, label=s) for s in order)]


def convergence(
    source: Study | str | Path,
    metric: str | None = None,
    x: str = "sim_time",
    hue: str | None = None,
    band: str = "auto",
) -> Any:
    """``metric`` against ``x`` (``sim_time``, ``server_version`` or ``client_updates``), a
    colour per value of ``hue`` (default: the swept quantity, e.g. tau), one panel per value of
    the other keys that vary (e.g. per algorithm), a band over seeds. Every panel uses the same
    colour for a level, and the legend lists every level."""
    study = c.get_study(source)
    band = c.resolve_band(band, study)
    metric = c.check_metric(study, metric)
    x = c.check_x(x)
    h = c.choose_hue(study, hue)
    hue_keys = [h] if h else []
    facet_keys = c.varying(study, exclude=hue_keys)
    style_keys: list[str] = []
    while facet_keys and c.combo_label(study.runs, facet_keys).nunique() > c.MAX_PANELS:
        style_keys.insert(0, facet_keys.pop())
    order, colors = c.level_colors(study, hue_keys)
    style_order = c.combo_order(study.runs, style_keys) if style_keys else []
    styles = {s: c.LINESTYLES[i % len(c.LINESTYLES)] for i, s in enumerate(style_order)}
    metrics = study.metrics
    panel_of = c.combo_label(metrics, facet_keys) if facet_keys else pd.Series("", index=metrics.index, dtype=object)
    panels = c.combo_order(study.runs, facet_keys) if facet_keys else [""]
    ncols, nrows = c.grid(len(panels))
    legend = bool(hue_keys or style_keys)
    with c.style():
        fig, axes = c.new_figure(
            ncols,
            nrows,
            w=(c.FIG_W if ncols == 1 else 4.3 * ncols) + 2.0,
            h=c.FIG_H if nrows == 1 else 3.4 * nrows,
            sharey=True,
        )
        all_refs: dict[str, float] = {}
        for i, panel in enumerate(panels):
            ax = axes[i // ncols, i % ncols]
            sub = metrics[panel_of == panel]
            draw_curves(ax, sub, metric, x, hue_keys, colors, style_keys, styles, band)
            refs = reference_levels(sub, metric)
            draw_references(ax, refs)
            all_refs.update(refs)
            if facet_keys:
                ax.set_title(panel, fontsize="medium")
            if i % ncols:
                ax.set_ylabel("")
        c.hide_unused(axes, len(panels))
        head = f"{c.metric_label(metric)} — {c.band_note(band, c.n_seeds(study))}"
        if facet_keys:
            fig.suptitle(head, fontsize="medium")
        else:
            axes[0, 0].set_title(head, fontsize="medium")
        extra = style_handles(c.key_title(style_keys), style_order, styles) + reference_handles(all_refs)
        if legend or extra:
            c.color_legend(fig, order if legend else [], colors, c.key_title(hue_keys), extra=extra)
    return fig
