"""``participation``: updates applied per client, clients ranked, a line per level of the colour
key (band over seeds), a panel per level of the other keys; the Gini coefficient per setting."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asyncfl.study.figures import common as c
from asyncfl.study.results import Study


def gini(counts: Sequence[float] | np.ndarray | pd.Series) -> float:
    """Gini coefficient of non-negative counts (0: all equal, -> 1: one client does everything)."""
    a = np.sort(np.asarray(counts, dtype=float))
    n = len(a)
    if n == 0 or a.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1).dot(a) / (n * a.sum()))


def _clients(run: Any, per_client: pd.DataFrame) -> int:
    count = (run.scenario.get("clients") or {}).get("count") if isinstance(run.scenario, dict) else None
    if isinstance(count, int):
        return count
    seen = per_client.loc[run.name].index if run.name in per_client.index.get_level_values(0) else []
    return int(max(seen) + 1) if len(seen) else 0


def per_client(study: Study) -> pd.DataFrame:
    """One row per (run, client): updates applied, tasks, and the median task time (download +
    compute + upload, simulated seconds) -- the client's speed as the server sees it. Clients
    never given a task count too (0 updates, speed unknown)."""
    ev = study.events
    ev = ev.assign(_dur=ev["download_time"] + ev["compute_time"] + ev["upload_time"])
    tasks = ev.groupby(["run", "client"]).agg(task_time=("_dur", "median"), tasks=("task", "size"))
    applied = ev[ev["status"] == "applied"].groupby(["run", "client"]).size().rename("updates")
    out = tasks.join(applied).fillna({"updates": 0})
    full = pd.MultiIndex.from_tuples(
        [(r.name, k) for r in study.loaded for k in range(int(_clients(r, out)))], names=["run", "client"]
    )
    out = out.reindex(full).fillna({"updates": 0, "tasks": 0}).reset_index()
    return out.merge(study.runs, on="run", how="left")


def participation(source: Study | str | Path, hue: str | None = None, band: str = "auto") -> Any:
    """Updates applied per client, clients ranked from most to fewest; the panel lists each
    setting's Gini coefficient (0 = every client contributes equally)."""
    import seaborn as sns

    study = c.get_study(source)
    band = c.resolve_band(band, study)
    lay = c.layout(study, hue)
    pc = per_client(study)
    pc = pc.sort_values(["run", "updates"], ascending=[True, False], kind="stable")
    pc["rank"] = pc.groupby("run").cumcount()
    pc = pc.assign(_hue=lay.hue(pc), _panel=lay.panel(pc))
    ncols, nrows = c.grid(len(lay.panels))
    with c.style():
        fig, axes = c.new_figure(ncols, nrows, w=max(c.FIG_W, 4.4 * ncols) + 2.2, h=3.6 * nrows + 0.4, sharey=True)
        for i, panel in enumerate(lay.panels):
            ax = axes.ravel()[i]
            sub = pc[pc["_panel"] == panel]
            ginis = {
                h: np.mean([gini(g["updates"]) for _, g in sub[sub["_hue"] == h].groupby("run")] or [0.0])
                for h in lay.order
            }
            sns.lineplot(
                data=sub,
                x="rank",
                y="updates",
                hue="_hue",
                hue_order=lay.order,
                palette=lay.colors,
                errorbar=c.interval(band),
                ax=ax,
                marker="o",
                markersize=3,
                linewidth=1.5,
                legend=False,
            )
            short = c.SHORT.get(lay.hue_keys[0], "") if len(lay.hue_keys) == 1 else ""
            text = "\n".join(
                (f"{short}={h}: " if short else f"{h}: " if lay.hue_keys else "") + f"{ginis[h]:.2f}"
                for h in lay.order
                if (sub["_hue"] == h).any()
            )
            ax.text(
                0.98,
                0.97,
                f"Gini coefficient\n{text}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize="x-small",
            )
            ax.set_xlabel("client rank (0 = most updates applied)")
            ax.set_ylabel("updates applied per client" if i % ncols == 0 else "")
            if panel:
                ax.set_title(panel, fontsize="medium")
        c.hide_unused(axes, len(lay.panels))
        axes[0, 0].set_ylim(bottom=0)  # after every panel is drawn: the shared top covers them all
        fig.suptitle(f"client participation — {c.band_note(band, c.n_seeds(study))}", fontsize="medium")
        if lay.hue_keys:
            c.color_legend(fig, lay.order, lay.colors, lay.title(), marker="o")
    return fig
