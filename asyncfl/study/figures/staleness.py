"""``staleness``: the distribution of the staleness of applied updates, a row per level of the
colour key (e.g. tau), a column per level of the other keys; each panel marks its mean and its
bound tau."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from asyncfl.errors import UserError
from asyncfl.study.figures import common as c
from asyncfl.study.results import Study


def staleness(source: Study | str | Path, hue: str | None = None) -> Any:
    """Histogram (share of applied updates) of the staleness of applied updates: one row per
    value of ``hue`` (default: the swept quantity, e.g. tau), one column per value of the other
    keys that vary (e.g. algorithm)."""
    from matplotlib.lines import Line2D

    study = c.get_study(source)
    lay = c.layout(study, hue, max_panels=4)
    ev = study.events
    ev = ev[ev["status"] == "applied"]
    if ev.empty:
        raise UserError(f"--kind staleness: no applied updates recorded in {study.path}")
    ev = ev.assign(_hue=lay.hue(ev), _panel=lay.panel(ev))
    rows, cols = lay.order, lay.panels
    smax = int(ev["staleness"].max())
    with c.style():
        fig, axes = c.new_figure(
            len(cols),
            len(rows),
            w=max(c.FIG_W, 3.6 * len(cols)),
            h=min(1.3 + 1.3 * len(rows), 14.0),
            sharex=True,
            sharey="row",
        )
        bins = np.arange(-0.5, smax + 1.5, 1.0) if smax <= 80 else np.linspace(-0.5, smax + 0.5, 81)
        for i, row in enumerate(rows):
            for j, col in enumerate(cols):
                ax = axes[i, j]
                sel = (ev["_hue"] == row) & (ev["_panel"] == col)
                s = ev.loc[sel, "staleness"].to_numpy(dtype=float)
                if len(s):
                    ax.hist(
                        s,
                        bins=bins,
                        weights=np.full(len(s), 1.0 / len(s)),
                        color=lay.colors[row],
                        alpha=0.85,
                        edgecolor="white",
                        linewidth=0.4,
                        gid=f"level:{row}",
                    )
                    ax.axvline(float(s.mean()), color="black", linewidth=1.0)
                    tau = float(ev.loc[sel, c.TAU].iloc[0]) if c.TAU in ev.columns else math.inf
                    if math.isfinite(tau) and tau <= smax:
                        ax.axvline(tau + 0.5, color="firebrick", linewidth=1.0, linestyle="--")
                    text = f"mean {s.mean():.2f}, max {int(s.max())}\nn = {len(s)}"
                else:
                    text = "no applied updates"
                ax.text(0.98, 0.92, text, transform=ax.transAxes, ha="right", va="top", fontsize="x-small")
                if i == 0 and col:
                    ax.set_title(col, fontsize="medium")
                if j == 0:
                    short = c.SHORT.get(lay.hue_keys[0]) if len(lay.hue_keys) == 1 else None
                    name = f"{short} = {row}" if short else row  # the key is in the title: keep labels short
                    ax.set_ylabel(f"{name}\nshare" if lay.hue_keys else "share", fontsize="small")
                ax.set_xlim(-0.7, smax + 0.7)
        from matplotlib.ticker import MaxNLocator

        for j in range(len(cols)):
            axes[-1, j].set_xlabel("staleness (server versions)")
            axes[-1, j].xaxis.set_major_locator(MaxNLocator(integer=True))  # staleness counts versions
        handles = [Line2D([], [], color="black", linewidth=1.0, label="mean")]
        if c.TAU in ev.columns and np.isfinite(ev[c.TAU].astype(float)).any():
            handles.append(Line2D([], [], color="firebrick", linewidth=1.0, linestyle="--", label="bound τ"))
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize="small")
        head = "staleness of applied updates per scenario"
        if lay.hue_keys:
            head += f" (rows: {lay.title()})"
        fig.suptitle(head, fontsize="medium")
    return fig
