"""``updates``: client tasks per outcome (applied, dropped_stale, dropped_offline, ...) per run,
a bar colour per level of the colour key, a panel per level of the other keys, error bars over
seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asyncfl.study.figures import common as c
from asyncfl.study.results import Study
from asyncfl.types import TASK_STATUSES

STATUS_ORDER = tuple(s for s in TASK_STATUSES if s != "in_flight")
"""The outcomes drawn, in the order of their one definition (:data:`asyncfl.types.TASK_STATUSES`,
the ``status`` column the simulator writes); tasks still in flight when a run stopped are left out.
A status found in events.csv but not defined there (a newer writer) is drawn after them."""


def updates(source: Study | str | Path, hue: str | None = None, band: str = "auto") -> Any:
    """Client tasks per outcome per run; tasks still in flight when the run stopped are left out."""
    import seaborn as sns

    study = c.get_study(source)
    band = c.resolve_band(band, study)
    lay = c.layout(study, hue)
    ev = study.events
    ev = ev[ev["status"] != "in_flight"]
    present = set(ev["status"])
    statuses = [s for s in STATUS_ORDER if s in present] + sorted(present - set(STATUS_ORDER))
    runs = study.runs
    counts = ev.groupby(["run", "status"]).size().unstack(fill_value=0).reindex(columns=statuses, fill_value=0)
    counts = counts.reindex(runs["run"], fill_value=0).reset_index()
    counts = counts.melt(id_vars="run", var_name="outcome", value_name="count").merge(runs, on="run")
    counts = counts.assign(_hue=lay.hue(counts), _panel=lay.panel(counts))
    ncols, nrows = c.grid(len(lay.panels))
    with c.style():
        fig, axes = c.new_figure(
            ncols, nrows, w=max(c.FIG_W, 4.4 * ncols) + (1.8 if lay.hue_keys else 0), h=3.6 * nrows + 0.4, sharey=True
        )
        for i, panel in enumerate(lay.panels):
            ax = axes.ravel()[i]
            sns.barplot(
                data=counts[counts["_panel"] == panel],
                x="outcome",
                y="count",
                order=statuses,
                hue="_hue",
                hue_order=lay.order,
                palette=lay.colors,
                errorbar=c.interval(band),
                capsize=0.1,
                ax=ax,
                err_kws={"linewidth": 1.0},
                legend=False,
            )
            ax.set_xlabel("outcome of a client task")
            ax.set_ylabel("client tasks per run" if i % ncols == 0 else "")
            if panel:
                ax.set_title(panel, fontsize="medium")
            if len(statuses) > 3:  # long names: slanted, anchored at their tick so none overlap
                for label in ax.get_xticklabels():
                    label.set(rotation=25 if len(statuses) <= 5 else 35, ha="right", rotation_mode="anchor")
        c.hide_unused(axes, len(lay.panels))
        fig.suptitle(
            f"updates applied and dropped — {c.band_note(band, c.n_seeds(study), 'error bars')}", fontsize="medium"
        )
        if lay.hue_keys:
            c.color_legend(fig, lay.order, lay.colors, lay.title(), marker="s")
    return fig
