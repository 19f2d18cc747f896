"""``sync_vs_async``: left, a metric on the simulated clock, a colour per server mode (line style
per level of the other keys); right, the time each run needed to reach a stated target, per mode,
with runs that never reached it drawn as open triangles at the top."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from asyncfl.errors import UserError
from asyncfl.study.figures import common as c
from asyncfl.study.figures.convergence import (
    draw_curves,
    draw_references,
    reference_handles,
    reference_levels,
    style_handles,
)
from asyncfl.study.results import Study, time_to_target


def sync_vs_async(
    source: Study | str | Path,
    metric: str | None = None,
    target: float | None = None,
    x: str = "sim_time",
    band: str = "auto",
) -> Any:
    """Convergence per server mode and the ``x`` needed to reach ``target`` (default: half-way
    from the common start to the best final value, stated on the figure)."""
    study = c.get_study(source)
    band = c.resolve_band(band, study)
    metric = c.check_metric(study, metric)
    x = c.check_x(x)
    if not study.varies(c.MODE):
        raise UserError(
            f"--kind sync_vs_async: the runs in {study.path} all use one server.mode; "
            "sweep it (e.g. --grid server.mode=sync,async)"
        )
    tgt = c.get_target(study, metric, target)
    m = study.metrics[study.metrics["metric"] == metric]
    live = study.runs[study.runs["run"].isin(set(m.loc[np.isfinite(m["value"]), "run"]))]
    style_keys = [k for k in c.varying(study, exclude=[c.MODE]) if live[k].astype(str).nunique() > 1]
    order, colors = c.level_colors(study, [c.MODE])
    style_order = c.combo_order(study.runs, style_keys) if style_keys else []
    styles = {s: c.LINESTYLES[i % len(c.LINESTYLES)] for i, s in enumerate(style_order)}
    with c.style():
        fig, axes = c.new_figure(2, 1, w=c.FIG_W * 1.75 + 1.0, h=c.FIG_H + 0.5)
        ax = axes[0, 0]
        draw_curves(ax, study.metrics, metric, x, [c.MODE], colors, style_keys, styles, band)
        refs = reference_levels(study.metrics, metric)
        draw_references(ax, refs)
        if math.isfinite(tgt.value):
            ax.axhline(tgt.value, color="black", linewidth=0.9, linestyle=":", gid="target")
        dotted = " (dotted: target)" if math.isfinite(tgt.value) else ""
        ax.set_title(f"{c.metric_label(metric)} on the simulated clock{dotted}", fontsize="medium")
        ttt = time_to_target(study.metrics, metric, tgt.value, x)
        ttt = ttt[ttt["run"].isin(set(live["run"]))]
        ax2 = axes[0, 1]
        cats = style_order or order
        ttt = ttt.assign(_hue=c.combo_label(ttt, [c.MODE]), _cat=c.combo_label(ttt, style_keys) if style_keys else None)
        if not style_keys:
            ttt["_cat"] = ttt["_hue"]
        extent: list[float] = []  # dodged series do not autoscale
        for i, mode in enumerate(order if math.isfinite(tgt.value) else []):
            tr = c.dodge(ax2, i, len(order), points=10)
            xs, mean, lo_e, hi_e, never = [], [], [], [], []
            for j, cat in enumerate(cats):
                vals = ttt.loc[(ttt["_hue"] == mode) & (ttt["_cat"] == cat), "time_to_target"].to_numpy(dtype=float)
                if np.isnan(vals).any():
                    never.append(j)
                if np.isfinite(vals).any():
                    mu, lo, hi = c.spread(vals, band)
                    xs.append(j)
                    mean.append(mu)
                    lo_e.append(mu - lo)
                    hi_e.append(hi - mu)
                    extent.append(hi)
            if xs:
                ax2.errorbar(
                    xs,
                    mean,
                    yerr=[lo_e, hi_e],
                    color=colors[mode],
                    marker="o",
                    linestyle="none",
                    markersize=6,
                    capsize=3,
                    transform=tr,
                    gid=f"level:{mode}",
                )
            c.never_marks(ax2, never, colors[mode], tr, gid=f"never:{mode}")
        ax2.set_xticks(range(len(cats)), cats)
        ax2.set_xlim(-0.6, len(cats) - 0.4)
        ax2.set_xlabel(c.key_title(style_keys) or c.pretty(c.MODE))
        if any(len(t) > 14 for t in cats):
            ax2.tick_params(axis="x", labelrotation=20, labelsize="small")
        if math.isfinite(tgt.value):
            ax2.set_ylabel(c.ttt_label(metric, tgt.value, x))
            c.headroom(ax2, extent)
            missing = int(ttt["time_to_target"].isna().sum())
            note = f"; {missing} of {len(ttt)} runs never reached it (▵ at the top)" if missing else ""
            ax2.set_title(f"time to target{note}", fontsize="medium")
        else:
            ax2.set_yticks([])
            ax2.text(
                0.5,
                0.5,
                "no target: no run ends clearly\npast its start (see the title)",
                transform=ax2.transAxes,
                ha="center",
                va="center",
                color="grey",
            )
        fig.suptitle(
            f"sync vs async — {c.band_note(band, c.n_seeds(study))}\n{c.target_text(metric, tgt)}", fontsize="medium"
        )
        extra = style_handles(c.key_title(style_keys), style_order, styles) + reference_handles(refs)
        if ttt["time_to_target"].isna().any() and math.isfinite(tgt.value):
            extra.append(c.never_handle())
        c.color_legend(fig, order, colors, c.pretty(c.MODE), extra=extra)
    return fig
