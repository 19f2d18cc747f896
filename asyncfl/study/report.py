"""A self-contained report of a run, a sweep or a folder of runs: figures and summary tables.

- HTML (default): one file, figures embedded as base64 PNGs, no external assets.
- Markdown: ``report.md`` with its figures as PNG files in ``report_files/`` beside it.

Every file is written atomically; a write that fails (a full disk: one line, exit 4) removes the
folders and files this report made, never what was there before.

Written into the study's directory unless told otherwise. Figures that do not apply to what was
run (e.g. sync-versus-async when every run is async) are listed with the reason instead.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from asyncfl.errors import UserError
from asyncfl.runs.rundir import all_or_nothing
from asyncfl.study.results import Study, load_study, resolve_target, summary

FORMATS = ("html", "md")


@dataclass
class Section:
    """One figure of the report: its kind, title, what it shows, and the PNG (or why not)."""

    kind: str
    title: str
    caption: str
    png: bytes | None = None
    skipped: str | None = None


def _png(fig: Any) -> bytes:
    from asyncfl.study.figures import figure_bytes

    return figure_bytes(fig, "png", dpi=110)


def _sections(study: Study, metric: str, target: float | None) -> list[Section]:
    from asyncfl.study import figures

    plan: list[tuple[str, str, str, dict[str, Any]]] = [
        (
            "convergence",
            f"Convergence: {metric}",
            f"{metric} against simulated time; one colour per setting.",
            {"metric": metric},
        ),
        (
            "convergence",
            f"Convergence: {metric} per server step",
            f"{metric} against the server version.",
            {"metric": metric, "x": "server_version"},
        ),
    ]
    if "grad_norm_sq" in study.metric_names and metric != "grad_norm_sq":
        plan.append(
            (
                "convergence",
                "Convergence measure ||∇F(w)||²",
                "grad_norm_sq, the squared gradient norm of the personalized objective (log scale).",
                {"metric": "grad_norm_sq"},
            )
        )
    plan += [
        (
            "convergence_vs_delay",
            "Convergence versus delay",
            "Final metric and simulated time to the target against the delay scale and the staleness bound τ.",
            {"metric": metric, "target": target},
        ),
        (
            "sync_vs_async",
            "Sync versus async",
            "Convergence on the simulated clock and time to target per server mode.",
            {"metric": metric, "target": target},
        ),
        (
            "staleness",
            "Staleness distribution",
            "Staleness of applied updates per scenario, with its mean and bound τ.",
            {},
        ),
        ("updates", "Updates applied and dropped", "Client tasks per outcome, per run.", {}),
        ("participation", "Client participation", "Updates applied per client, clients ranked; Gini coefficient.", {}),
        (
            "fairness",
            "Fairness",
            "Per client: updates applied (and accuracy when recorded) against its median task time.",
            {},
        ),
    ]
    out = []
    for kind, title, caption, opts in plan:
        try:
            fig = figures.figure(kind, study, **opts)
        except UserError as exc:
            out.append(Section(kind, title, caption, skipped=exc.one_line()))
            continue
        out.append(Section(kind, title, caption, png=_png(fig)))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "inf"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


def _tables(study: Study, metric: str, target: float | None) -> list[tuple[str, pd.DataFrame]]:
    from asyncfl.study.figures.common import target_text, varying

    keys = varying(study) or []
    tables = []
    tgt = resolve_target(study.metrics, metric, target)
    s = summary(study.metrics, keys, metric, tgt.value)
    how = " ".join(target_text(metric, tgt).split())
    if not s.empty and math.isfinite(tgt.value):
        tables.append(
            (
                f"Per setting: final {metric} and simulated time (s) to reach {tgt.value:.3g} "
                f"(mean and s.d. over seeds; {how})",
                s,
            )
        )
    elif not s.empty:  # no target: no time-to-target columns counting to NaN
        s = s[[col for col in s.columns if not col.startswith("sim_time to") and col != "reached"]]
        tables.append((f"Per setting: final {metric} (mean and s.d. over seeds; {how})", s))
    runs = study.runs
    finals = [c for c in runs.columns if c.startswith("final.")]
    lead = [
        c
        for c in ("personalized_accuracy", "global_accuracy", "personalized_loss", "grad_norm_sq")
        if f"final.{c}" in finals
    ]
    cols = [
        "run",
        "seed",
        *[k for k in keys if k in runs.columns],
        "run_status",
        "sim_time",
        "server_version",
        "updates_applied",
        "updates_dropped",
        "staleness_mean",
        "staleness_max",
        "wall_time_s",
        *[f"final.{c}" for c in lead],
    ]
    cols = list(dict.fromkeys(c for c in cols if c in runs.columns))
    tables.append(("Per run", runs[cols].rename(columns={"run_status": "status"})))
    return tables


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (no extra dependency)."""
    cols = [str(c) for c in frame.columns]
    esc = [c.replace("|", "\\|") for c in cols]
    lines = ["| " + " | ".join(esc) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
img{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:.85em;margin:1em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.muted{color:#777}.caption{color:#555;font-size:.9em}
"""


def _describe(study: Study) -> list[str]:
    runs = study.runs
    lines = [f"{len(runs)} run{'s' if len(runs) != 1 else ''} ({study.kind}) read from {study.path}"]
    if study.keys:
        lines.append("varying: " + ", ".join(study.keys))
    counts = runs["run_status"].value_counts().to_dict() if "run_status" in runs.columns else {}
    if counts:
        lines.append("status: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return lines


def _choose_metric(study: Study, metric: str | None) -> str:
    from asyncfl.study.figures.common import check_metric

    return check_metric(study, metric)


def render_html(study: Study, sections: Sequence[Section], tables: Sequence[tuple[str, pd.DataFrame]]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>asyncfl report: {html.escape(study.path.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>asyncfl report: {html.escape(study.path.name)}</h1>",
        "<p class='muted'>"
        + "<br>".join(html.escape(x) for x in _describe(study))
        + "<br>written "
        + html.escape(_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        + "</p>",
    ]
    for title, frame in tables:
        parts.append(f"<h2>{html.escape(title)}</h2>{_html_table(frame)}")
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.png is not None:
            data = base64.b64encode(s.png).decode("ascii")
            parts.append(f"<p class='caption'>{html.escape(s.caption)}</p>")
            parts.append(f"<img alt='{html.escape(s.title)}' src='data:image/png;base64,{data}'>")
        else:
            parts.append(f"<p class='muted'>Not drawn: {html.escape(s.skipped or '')}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_markdown(
    study: Study, sections: Sequence[Section], tables: Sequence[tuple[str, pd.DataFrame]], assets: str
) -> tuple[str, dict[str, bytes]]:
    """The Markdown text and the image files it links to (names relative to the report)."""
    lines = [f"# asyncfl report: {study.path.name}", ""]
    lines += [f"_{x}_  " for x in _describe(study)] + [""]
    files: dict[str, bytes] = {}
    for title, frame in tables:
        lines += [f"## {title}", "", markdown_table(frame)]
    used: dict[str, int] = {}
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.png is not None:
            used[s.kind] = used.get(s.kind, 0) + 1
            name = f"{assets}/{s.kind}{'' if used[s.kind] == 1 else '-' + str(used[s.kind])}.png"
            files[name] = s.png
            lines += [s.caption, "", f"![{s.title}]({name})", ""]
        else:
            lines += [f"_Not drawn: {s.skipped}_", ""]
    return "\n".join(lines), files


def write_report(
    source: Study | str | Path,
    out: str | Path | None = None,
    *,
    fmt: str | None = None,
    metric: str | None = None,
    target: float | None = None,
) -> Path:
    """Write the report of ``source`` and return its path. ``fmt``: ``html`` or ``md`` (default
    from ``out``'s suffix, else html); ``out`` defaults to ``DIR/report.<fmt>``."""
    study = source if isinstance(source, Study) else load_study(source)
    if fmt is None:
        fmt = "md" if out is not None and Path(out).suffix.lower() in (".md", ".markdown") else "html"
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    path = Path(out) if out is not None else study.path / f"report.{fmt}"
    metric = _choose_metric(study, metric)
    sections = _sections(study, metric, target)
    tables = _tables(study, metric, target)
    # all or nothing: should a write fail (a full disk, a signal), the folders and files made
    # here are removed again; what was there before stays (a figure it overwrote: whole, newer)
    with all_or_nothing() as made:
        made.mkdir(path.parent)
        if fmt == "html":
            made.write(path, render_html(study, sections, tables).encode("utf-8"))
        else:
            assets = f"{path.stem}_files"
            text, files = render_markdown(study, sections, tables, assets)
            made.mkdir(path.parent / assets)
            for name, data in files.items():
                made.write(path.parent / name, data)
            made.write(path, text.encode("utf-8"))
    return path


__all__ = ["markdown_table", "write_report"]
