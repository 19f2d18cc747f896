"""``convergence_vs_delay``: the final metric and the time to reach a target against the delay
scale (``system.delay_scale``) and the staleness bound tau (``server.max_staleness``; ``null``
shown as ``inf``), a colour per algorithm (and per level of any other key that varies), error
bars over seeds. The x axis is proportional to the levels (log, or symlog with 0, when they span
more than a decade); the target is stated on the figure and runs that never reach it are drawn
as open triangles at the top of the panel."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from asyncfl.errors import UserError
from asyncfl.study.figures import common as c
from asyncfl.study.figures.convergence import draw_references, reference_handles, reference_levels
from asyncfl.study.results import Study, final_values, time_to_target


def convergence_vs_delay(  # noqa: C901 (axis scale: linear, log, symlog or an inf level; reference lines)
    source: Study | str | Path,
    metric: str | None = None,
    target: float | None = None,
    x: str = "sim_time",
    band: str = "auto",
) -> Any:
    """Rows: against the delay scale and/or tau (whichever vary); columns: the final ``metric``
    and the ``x`` needed to reach ``target`` (default: half-way from the common start to the best
    final value, see :func:`asyncfl.study.results.resolve_target`)."""
    study = c.get_study(source)
    band = c.resolve_band(band, study)
    metric = c.check_metric(study, metric)
    x = c.check_x(x)
    xkeys = [k for k in (c.DELAY, c.TAU) if study.varies(k)]
    if not xkeys:
        raise UserError(
            f"--kind convergence_vs_delay: the runs in {study.path} do not differ in {c.DELAY} or {c.TAU}; "
            "sweep one of them (e.g. --grid server.max_staleness=0,5,20)"
        )
    tgt = c.get_target(study, metric, target)
    finals = final_values(study.metrics, metric)
    ttt = time_to_target(study.metrics, metric, tgt.value, x)
    upper = c.upper_bound(metric)
    refs = reference_levels(study.metrics, metric)  # initial model, majority-label baseline
    shown: dict[str, float] = {}  # the reference levels drawn as lines somewhere (the legend explains those)
    with c.style():
        fig, axes = c.new_figure(2, len(xkeys), w=c.FIG_W * 1.45 + 2.0, h=3.4 * len(xkeys) + 0.9)
        legends: list[tuple[list[str], dict[str, Any], str | None]] = []
        for row, key in enumerate(xkeys):
            hue_keys = c.varying(study, exclude=[key])
            order, colors = c.level_colors(study, hue_keys)
            legends.append((order, colors, c.key_title(hue_keys)))
            lax = c.level_axis(c.levels(study.runs, key))
            for col, frame in enumerate((finals, ttt) if math.isfinite(tgt.value) else (finals, ttt.iloc[:0])):
                ax = axes[row, col]
                f = frame.assign(_hue=c.combo_label(frame, hue_keys))
                y = "value" if col == 0 else "time_to_target"
                extent: list[float] = []  # dodged series do not autoscale: set the y range from what is drawn
                for i, hue in enumerate(order):
                    g = f[f["_hue"] == hue]
                    tr = c.dodge(ax, i, len(order))
                    xs, mean, err_lo, err_hi, never = [], [], [], [], []
                    for lv in c.levels(g, key):
                        vals = g.loc[g[key] == lv, y].to_numpy(dtype=float)
                        pos = lax.position(lv)
                        if col == 1 and np.isnan(vals).any():
                            never.append(pos)
                        if not np.isfinite(vals).any():
                            continue
                        mu, lo, hi = c.spread(vals, band, upper if col == 0 else None)
                        xs.append(pos)
                        mean.append(mu)
                        err_lo.append(mu - lo)
                        err_hi.append(hi - mu)
                        extent += [lo, hi]
                    if xs:
                        ax.errorbar(
                            xs,
                            mean,
                            yerr=[err_lo, err_hi],
                            color=colors[hue],
                            marker="o",
                            markersize=5,
                            linewidth=1.6,
                            capsize=3,
                            transform=tr,
                            gid=f"level:{hue}",
                        )
                    c.never_marks(ax, never, colors[hue], tr, gid=f"never:{hue}")
                lax.apply(ax)
                ax.set_xlabel(f"{c.pretty(key)} ({key}{lax.note})")
                if col == 0:
                    ax.set_ylabel(f"final {c.metric_label(metric)}")
                    near, far = c.split_near(refs, extent)
                    draw_references(ax, near)
                    shown.update(near)
                    c.fit_y(ax, [*extent, *near.values()])
                    c.note_far(ax, far, extent)
                elif math.isfinite(tgt.value):
                    ax.set_ylabel(c.ttt_label(metric, tgt.value, x))
                    c.headroom(ax, extent)
                    n_never = int(ttt["time_to_target"].isna().sum())
                    if n_never:
                        ax.set_title(f"{n_never} of {len(ttt)} runs never reached it (▵ at the top)", fontsize="small")
                else:
                    ax.set_ylabel("time to target")
                    ax.set_yticks([])
                    ax.text(
                        0.5,
                        0.5,
                        "no target: no run ends clearly\npast its start (see the title)",
                        transform=ax.transAxes,
                        ha="center",
                        va="center",
                        color="grey",
                    )
        extra = reference_handles(shown)
        if ttt["time_to_target"].isna().any() and math.isfinite(tgt.value):
            extra.append(c.never_handle())
        if len(xkeys) == 1:
            order, colors, title = legends[0]
            if len(order) > 1 or extra:
                c.color_legend(fig, order if len(order) > 1 else [], colors, title, marker="o", extra=extra)
        else:  # each row is coloured by different keys: a legend per row
            from matplotlib.lines import Line2D

            for row, (order, colors, title) in enumerate(legends):
                handles = [Line2D([], [], color=colors[h], marker="o", label=h) for h in order if len(order) > 1]
                handles += list(extra) if row == 0 else []
                if handles:
                    axes[row, 1].legend(
                        handles=handles,
                        title=title,
                        loc="upper left",
                        bbox_to_anchor=(1.02, 1.0),
                        frameon=False,
                        fontsize="small",
                    )
        against = " and ".join({c.DELAY: "delay scale", c.TAU: "staleness bound τ"}[k] for k in xkeys)
        fig.suptitle(
            f"{c.metric_label(metric)} vs {against} — {c.band_note(band, c.n_seeds(study), 'error bars')}\n"
            f"{c.target_text(metric, tgt)}",
            fontsize="medium",
        )
    return fig
