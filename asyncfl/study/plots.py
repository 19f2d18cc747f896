"""Figures of a study: the public entry points of :mod:`asyncfl.study.figures` (one module per
figure kind over shared helpers), kept under their old name for ``asyncfl plot``, the report and
analysis scripts."""

from __future__ import annotations

from asyncfl.study.figures import (
    BANDS,
    FORMATS,
    KINDS,
    convergence,
    convergence_vs_delay,
    fairness,
    figure,
    gini,
    options,
    participation,
    per_client_metric,
    save,
    staleness,
    sync_vs_async,
    updates,
)

__all__ = [
    "BANDS",
    "FORMATS",
    "KINDS",
    "convergence",
    "convergence_vs_delay",
    "fairness",
    "figure",
    "gini",
    "options",
    "participation",
    "per_client_metric",
    "save",
    "staleness",
    "sync_vs_async",
    "updates",
]
