"""``fairness``: each client's updates applied (and, when the runs record per-client metrics, its
final personalized accuracy) against its speed -- the async bias towards fast clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asyncfl.study.figures import common as c
from asyncfl.study.figures.participation import per_client
from asyncfl.study.results import Study


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


def _trend(ax: Any, frame: pd.DataFrame, x: str, y: str, order: Sequence[str], colors: Mapping[str, Any]) -> None:
    """Median of y in quantile bins of x, one line per group: the trend under the scatter."""
    for label in order:
        g = frame[(frame["_hue"] == label) & (frame[x] > 0)]
        if len(g) < 6:
            continue
        nb = int(min(8, max(3, len(g) // 8)))
        bins = pd.qcut(np.log(g[x]), nb, duplicates="drop")
        t = g.groupby(bins, observed=True).agg(xm=(x, "median"), ym=(y, "median"))
        ax.plot(t["xm"], t["ym"], color=colors[label], linewidth=1.8, gid=f"level:{label}")


def fairness(source: Study | str | Path, hue: str | None = None) -> Any:
    """Per client: updates applied (and final per-client accuracy) against the median duration of
    its tasks (download + compute + upload, simulated seconds); a colour per level of ``hue``, a
    column per level of the other keys."""
    import seaborn as sns

    study = c.get_study(source)
    lay = c.layout(study, hue, max_panels=4)
    pc = per_client(study)
    pc = pc.assign(_hue=lay.hue(pc), _panel=lay.panel(pc))
    acc = per_client_metric(study)
    nrows = 2 if acc is not None else 1
    acc_name = ""
    if acc is not None:
        acc_name = str(acc["name"].iloc[0])
        acc = acc[acc["name"] == acc_name].merge(
            pc[["run", "client", "task_time", "_hue", "_panel"]], on=["run", "client"]
        )
    porder = lay.panels
    with c.style():
        fig, axes = c.new_figure(
            len(porder),
            nrows,
            w=max(c.FIG_W, 4.6 * len(porder)) + (1.8 if lay.hue_keys else 0),
            h=3.7 * nrows + 0.4,
            sharex=True,
        )
        for j, panel in enumerate(porder):
            rows = [(pc, "updates", "updates applied per client")]
            if acc is not None:
                rows.append((acc, "value", f"final {c.metric_label(acc_name)}\n(of each client)"))
            for i, (frame, y, ylabel) in enumerate(rows):
                ax = axes[i, j]
                sub = frame[frame["_panel"] == panel]
                sns.scatterplot(
                    data=sub,
                    x="task_time",
                    y=y,
                    hue="_hue",
                    hue_order=lay.order,
                    palette=lay.colors,
                    ax=ax,
                    s=18,
                    alpha=0.6,
                    edgecolor="none",
                    legend=False,
                )
                _trend(ax, sub, "task_time", y, lay.order, lay.colors)
                logx = c.log_time_axis(ax, pc["task_time"])
                scale = ", log scale" if logx else ""
                ax.set_xlabel(f"client's median task time (simulated s{scale})" if i == nrows - 1 else "")
                ax.set_ylabel(ylabel if j == 0 else "")
                if i == 0 and panel:
                    ax.set_title(panel, fontsize="medium")
        fig.suptitle(
            "fairness: per client, against its speed\n(dots: one client in one run; lines: binned medians)",
            fontsize="medium",
        )
        if lay.hue_keys:
            c.color_legend(fig, lay.order, lay.colors, lay.title(), marker="o")
    return fig
