"""Figures of a study (matplotlib's Agg canvas, seaborn styling; no pyplot state, no display).

One figure kind per module over :mod:`asyncfl.study.figures.common`. Every function takes a
:class:`~asyncfl.study.results.Study` (or a directory: a sweep, a run, or a folder of runs) and
returns a :class:`matplotlib.figure.Figure`; :func:`save` writes it as PNG, SVG or PDF by the
file's suffix. Kinds (see :data:`KINDS`):

- ``convergence``: a metric against simulated time (or server version / client updates), one
  colour per level of a key across every panel, a band over seeds, reference levels on accuracy.
- ``convergence_vs_delay``: the final metric and the time to a stated target against the delay
  scale and the staleness bound tau, on an axis proportional to the levels.
- ``staleness``: distribution of the staleness of applied updates.
- ``updates``: client tasks per outcome (applied, dropped_stale, dropped_offline, ...).
- ``participation``: updates applied per client, clients ranked, with the Gini coefficient.
- ``fairness``: each client's updates applied (and accuracy) against its speed.
- ``sync_vs_async``: convergence on the simulated clock and time to target per server mode.

Bands and error bars over seeds: ``band="ci"`` is the 95% confidence interval of the mean (exact
Student t, :mod:`asyncfl.study.stats`), ``"sd"`` one standard deviation, ``"se"`` one standard
error, ``"none"``; ``"auto"`` is ``ci`` when every setting has at least 3 seeds, else ``sd``.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncfl.errors import UserError
from asyncfl.runs.rundir import all_or_nothing
from asyncfl.study.figures.common import BANDS, get_study
from asyncfl.study.figures.convergence import convergence
from asyncfl.study.figures.convergence_vs_delay import convergence_vs_delay
from asyncfl.study.figures.fairness import fairness, per_client_metric
from asyncfl.study.figures.participation import gini, participation
from asyncfl.study.figures.staleness import staleness
from asyncfl.study.figures.sync_vs_async import sync_vs_async
from asyncfl.study.figures.updates import updates
from asyncfl.study.results import Study

FORMATS = (".png", ".svg", ".pdf")
KINDS: dict[str, Callable[..., Any]] = {
    "convergence": convergence,
    "convergence_vs_delay": convergence_vs_delay,
    "staleness": staleness,
    "updates": updates,
    "participation": participation,
    "fairness": fairness,
    "sync_vs_async": sync_vs_async,
}


def options(kind: str) -> list[str]:
    """The options figure ``kind`` takes (``metric``, ``x``, ``hue``, ``target``, ``band``)."""
    return [p for p in inspect.signature(KINDS[kind]).parameters if p != "source"]


def figure(kind: str, source: Study | str | Path, **opts: Any) -> Any:
    """Make the figure ``kind`` (one of :data:`KINDS`) of a study. ``opts``: the options it takes
    (see :func:`options`); None means the default. An option the kind does not take is a one-line
    error, never silently ignored."""
    if kind not in KINDS:
        raise UserError(f"--kind: unknown figure {kind!r}; allowed: {', '.join(KINDS)}")
    given = {k: v for k, v in opts.items() if v is not None}
    takes = options(kind)
    unknown = [k for k in given if k not in takes]
    if unknown:
        raise UserError(
            f"--kind {kind}: does not take {', '.join('--' + k for k in unknown)}; "
            f"it takes: {', '.join('--' + k for k in takes) or 'no options'}"
        )
    return KINDS[kind](get_study(source), **given)


_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None},
    "svg": {"Creator": None, "Date": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}
"""What each format would otherwise stamp into the file (tool versions, dates): left out, so
that the same figure gives the same bytes."""


def check_format(path: str | Path, flag: str = "--out") -> str:
    """The format of figure file ``path`` by its suffix; else a one-line error naming ``flag``."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"{flag} {p}: unknown figure format {suffix or '(none)'!r}; allowed: {', '.join(FORMATS)}")
    return suffix[1:]


def figure_bytes(fig: Any, fmt: str = "png", dpi: int = 150) -> bytes:
    """``fig`` rendered as a ``fmt`` (png, svg, pdf) file in memory, on matplotlib's Agg canvas:
    the one place figures are rendered, for :func:`save` and for reports that embed them."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with rc_context({"svg.hashsalt": "asyncfl"}):
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
    return buf.getvalue()


def save(fig: Any, path: str | Path, dpi: int = 150, flag: str = "--out") -> Path:
    """Write ``fig`` to ``path``; the suffix (.png, .svg, .pdf) picks the format. Atomic (a
    temporary file in the same folder, renamed into place: a full disk is one line, exit 4, and
    leaves neither a truncated figure nor a folder made for it), and the same figure gives the
    same bytes (no tool versions or dates in the file). ``flag`` names ``path`` in errors."""
    p = Path(path)
    data = figure_bytes(fig, check_format(p, flag), dpi)
    with all_or_nothing() as made:
        made.mkdir(p.parent)
        made.write(p, data)
    return p


__all__ = [
    "BANDS",
    "FORMATS",
    "KINDS",
    "check_format",
    "convergence",
    "convergence_vs_delay",
    "fairness",
    "figure",
    "figure_bytes",
    "gini",
    "options",
    "participation",
    "per_client_metric",
    "save",
    "staleness",
    "sync_vs_async",
    "updates",
]
