"""CLI commands for studies: sweep, plot, report (registered into asyncfl.cli.app).

Heavy imports (the runner, matplotlib, seaborn, Ray) happen inside the handlers, so ``asyncfl
run`` and ``asyncfl --help`` stay fast.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIGURE_KINDS = (
    "convergence",
    "convergence_vs_delay",
    "staleness",
    "updates",
    "participation",
    "fairness",
    "sync_vs_async",
)
X_AXES = ("sim_time", "server_version", "client_updates")


def _float_at_least(low: float, strict: bool) -> Callable[[str], float]:
    """argparse type of a finite number > ``low`` (``strict``) or >= ``low``."""
    allowed = f"a number {'>' if strict else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value

    return parse


def register(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add this module's subcommands to the ``asyncfl`` parser and their handlers to ``commands``."""
    from asyncfl.cli.args import add_run_args, whole_number

    p = sub.add_parser(
        "sweep",
        help="run a scenario over a grid of overrides and seeds (resumable)",
        description="Run FILE once per grid point and seed, each into its own run directory under --out. "
        "Rerunning the same command skips finished runs and reruns unfinished ones.",
    )
    p.add_argument("file", help="scenario YAML file (its sweep: section, if any, adds a grid and seeds)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a grid axis; each value is a YAML scalar as with --set (e.g. server.max_staleness=0,5,null)",
    )
    p.add_argument(
        "--seeds",
        type=whole_number(1),
        default=None,
        help="seeds per grid point: seed, seed+1, ... (default: the file's, else 1)",
    )
    p.add_argument("--out", required=True, help="sweep directory (sweep.json and one run directory per run)")
    p.add_argument(
        "--workers", type=whole_number(1), default=1, help="runs at once (local: processes; ray: tasks in flight)"
    )
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="where runs execute")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument(
        "--gpus-per-run",
        type=_float_at_least(0.0, strict=False),
        default=0.0,
        help="GPUs reserved per Ray task (may be fractional)",
    )
    p.add_argument(
        "--cpus-per-run", type=_float_at_least(0.0, strict=True), default=1.0, help="CPUs reserved per Ray task"
    )
    p.add_argument(
        "--threads",
        type=whole_number(1),
        default=None,
        help="torch threads per run (default: OMP_NUM_THREADS, else cores / workers)",
    )
    p.add_argument(
        "--checkpoint-every",
        default=None,
        metavar="N|Ns",
        help="each run checkpoints every N server steps (or N wall-clock seconds: Ns), so a run "
        "stopped part-way continues from there when the sweep is rerun",
    )
    p.add_argument("--force", action="store_true", help="rerun every run, even finished ones")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_run_args(p)
    commands["sweep"] = cmd_sweep

    p = sub.add_parser("plot", help="draw a figure of a run, a sweep or a folder of runs")
    p.add_argument("dir", help="a run directory, a sweep directory, or a folder holding run directories")
    p.add_argument("--kind", required=True, metavar="KIND", help=f"one of: {', '.join(FIGURE_KINDS)}")
    p.add_argument("--out", required=True, help="figure file: .png, .svg or .pdf")
    p.add_argument("--metric", default=None, help="metric to show (default: personalized_accuracy when recorded)")
    p.add_argument("--x", choices=X_AXES, default=None, help="x axis of convergence curves (default: sim_time)")
    p.add_argument("--hue", default=None, help="run column to colour by (a grid key, algorithm, run, seed, ...)")
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="level for time-to-target (default: half-way from the highest start to the best final value)",
    )
    p.add_argument(
        "--band",
        choices=["auto", "ci", "sd", "se", "none"],
        default=None,
        help="spread over seeds: 95%% CI, s.d., s.e. (auto: CI with >= 3 seeds, else s.d.)",
    )
    commands["plot"] = cmd_plot

    p = sub.add_parser("report", help="write a self-contained HTML or Markdown report of a run or sweep")
    p.add_argument("dir", help="a run directory, a sweep directory, or a folder holding run directories")
    p.add_argument("--out", default=None, help="report file (default: DIR/report.html or DIR/report.md)")
    p.add_argument("--format", choices=["html", "md"], default=None, help="default: from --out's suffix, else html")
    p.add_argument("--metric", default=None, help="headline metric (default: personalized_accuracy when recorded)")
    p.add_argument("--target", type=float, default=None, help="level for time-to-target")
    commands["report"] = cmd_report


def cmd_sweep(args: argparse.Namespace) -> int:
    from asyncfl.study.sweep import make_backend, run_sweep
    from asyncfl.study.sweep_plan import plan_sweep

    backend = make_backend(
        args.backend,
        workers=args.workers,
        threads=args.threads,
        ray_address=args.ray_address,
        gpus_per_run=args.gpus_per_run,
        cpus_per_run=args.cpus_per_run,
    )
    plan = plan_sweep(args.file, args.grid, args.seeds, args.overrides, args.seed, args.device)
    if args.dry_run:
        for r in plan.runs:
            print(r.name)
        print(f"{len(plan.runs)} runs", file=sys.stderr)
        return 0
    command = ["asyncfl", *sys.argv[1:]]
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = dict(
        backend=backend, force=args.force, command=command, checkpoint_every=args.checkpoint_every
    )
    if args.quiet:
        result = run_sweep(plan, args.out, **kwargs)
    else:
        result = _sweep_with_bar(plan, args.out, kwargs)
        _print_sweep_summary(result, time.perf_counter() - t0)
    return 0


def _sweep_with_bar(plan: Any, out: str, kwargs: dict[str, Any]) -> Any:
    """run_sweep under its progress: a bar with elapsed time and ETA on a terminal; elsewhere one
    line per finished run and a heartbeat at most every 30 s (:mod:`asyncfl.cli.progress`)."""
    from asyncfl.cli.progress import SweepProgress
    from asyncfl.study.sweep import run_sweep

    with SweepProgress(len(plan.runs)).shown() as progress:
        return run_sweep(plan, out, progress=progress, **kwargs)


def _print_sweep_summary(result: Any, wall: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=f"sweep: {len(result.runs)} runs", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for status, n in result.counts.items():
        table.add_row(status, str(n))
    resumed = sum(1 for r in result.runs if r.skipped)
    if resumed:
        table.add_row("kept from before", str(resumed))
    table.add_row("wall time", f"{wall:.1f} s")
    table.add_row("results", str(result.out_dir))
    console.print(table)


def cmd_plot(args: argparse.Namespace) -> int:
    from asyncfl.errors import UserError

    if args.kind not in FIGURE_KINDS:
        raise UserError(f"--kind: unknown figure {args.kind!r}; allowed: {', '.join(FIGURE_KINDS)}")
    suffix = Path(args.out).suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise UserError(f"--out {args.out}: unknown figure format {suffix or '(none)'!r}; allowed: .png, .svg, .pdf")
    from asyncfl.study import figures

    study = _study(args.dir)
    fig = figures.figure(
        args.kind, study, metric=args.metric, x=args.x, hue=args.hue, target=args.target, band=args.band
    )
    path = figures.save(fig, args.out)
    print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from asyncfl.study.report import write_report

    path = write_report(_study(args.dir), args.out, fmt=args.format, metric=args.metric, target=args.target)
    print(path)
    return 0


def _study(path: str) -> Any:
    """The runs under ``path``; a note on stderr names the runs left out (unfinished, damaged)."""
    from asyncfl.study.results import load_study

    study = load_study(path)
    if study.skipped:
        names = ", ".join(study.skipped[:5]) + (", ..." if len(study.skipped) > 5 else "")
        total = len(study.loaded) + len(study.skipped)
        sys.stderr.write(
            f"asyncfl: note: {len(study.skipped)} of {total} runs left out (unfinished, failed or damaged): {names}\n"
        )
    return study


__all__ = ["FIGURE_KINDS", "register"]
