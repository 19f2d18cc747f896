"""Spread over seeds, computed one way for every figure, report and analysis script.

The 95% interval of a mean uses the exact two-sided Student-t quantile (:func:`t_quantile`, from
``scipy.stats.t``) -- no hand-typed table, so df = 11 gives 2.201 and df = 100 gives 1.984.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

BANDS = ("ci", "sd", "se", "none")
"""Spreads: 95% confidence interval of the mean (Student t), one standard deviation, one standard
error, nothing."""


def t_quantile(df: float, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom (the
    ``t`` in mean +- t * s / sqrt(n)); NaN for df < 1."""
    if not (df >= 1) or not (0.0 < level < 1.0):
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, df))


def half_width(values: Iterable[float], band: str, level: float = 0.95) -> float:
    """Half-width of ``band`` over the finite ``values``: ``ci`` t * s / sqrt(n), ``sd`` s,
    ``se`` s / sqrt(n), ``none`` 0; NaN with fewer than 2 values (except ``none``)."""
    if band not in BANDS:
        raise ValueError(f"band {band!r}: allowed {', '.join(BANDS)}")
    a = np.asarray(list(values), dtype=float)
    a = a[np.isfinite(a)]
    if band == "none":
        return 0.0
    n = len(a)
    if n < 2:
        return math.nan
    sd = float(a.std(ddof=1))
    if band == "sd":
        return sd
    se = sd / math.sqrt(n)
    return se if band == "se" else t_quantile(n - 1, level) * se


def mean_interval(
    values: Iterable[float], band: str, lower: float | None = None, upper: float | None = None
) -> tuple[float, float, float]:
    """(mean, low, high) of the finite ``values`` under ``band``; the interval is clipped to
    ``[lower, upper]`` (e.g. 0 and 1 for an accuracy). One value: low = high = mean."""
    a = np.asarray(list(values), dtype=float)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return (math.nan, math.nan, math.nan)
    m = float(a.mean())
    h = half_width(a, band)
    if not math.isfinite(h):
        h = 0.0
    lo, hi = m - h, m + h
    if lower is not None:
        lo = max(lo, lower)
    if upper is not None:
        hi = min(hi, upper)
    return (m, lo, hi)


__all__ = ["BANDS", "half_width", "mean_interval", "t_quantile"]
