"""Command line: a thin face over the runner, sweeps and results.

Every error a user can cause prints ONE line to stderr and exits with a distinct code
(2 bad input, 3 diverged, 4 disk full, 130/143 interrupted); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asyncfl.cli.args import Parser, add_run_args, whole_number
from asyncfl.errors import EXIT_FAILED, EXIT_USAGE, AsyncFLError, DivergedError, os_error


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="asyncfl", description="Simulator of personalized asynchronous federated learning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("run", help="run a scenario file")
    p.add_argument("file", help="scenario YAML file")
    p.add_argument("--out", default=None, help="run directory (default: runs/<name>-seed<seed>)")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory that is not a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    p.add_argument(
        "--checkpoint-every",
        default=None,
        metavar="N|Ns",
        help="checkpoint every N server steps, or every N wall-clock seconds with a trailing s",
    )
    add_run_args(p)

    p = sub.add_parser("resume", help="continue a killed or interrupted run from its last checkpoint")
    p.add_argument("dir", help="run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)

    p = sub.add_parser("validate", help="check a scenario file and print it fully resolved")
    p.add_argument("file")
    add_run_args(p)

    sub.add_parser("schema", help="print the JSON Schema of scenario files")

    p = sub.add_parser("data", help="inspect a scenario's federated data")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    d = dsub.add_parser("describe", help="per-client sample counts and label histograms")
    d.add_argument("file", help="scenario YAML file")
    d.add_argument("--figure", default=None, help="also save a figure of the split (PNG, SVG or PDF)")
    d.add_argument("--csv", default=None, help="also save the per-client table as CSV")
    d.add_argument("--rows", type=whole_number(0), default=10, help="clients shown in the text summary")
    add_run_args(d)
    d = dsub.add_parser("convert-trace", help="convert a FedScale device-capacity or behaviour trace (pickle) to CSV")
    d.add_argument("input", help="FedScale trace pickle (client_device_capacity or client_behave_trace)")
    d.add_argument("output", help="CSV to write: a system.profile file or an availability trace")
    d.add_argument(
        "--flops-per-sample",
        type=float,
        default=None,
        help="forward FLOPs per sample of the benchmarked model: also write flops_per_s",
    )

    from asyncfl.cli import bench, study

    study.register(sub, COMMANDS)
    bench.register(sub, COMMANDS)
    return parser


def _load(args: argparse.Namespace) -> tuple[Any, Path]:
    from asyncfl.config.loader import apply_overrides, read_yaml, validate

    path = Path(args.file)
    data = read_yaml(path)
    if args.overrides:
        data = apply_overrides(data, args.overrides)
    if args.seed is not None:
        data["seed"] = args.seed
    if getattr(args, "device", None):
        data.setdefault("execution", {})
        if isinstance(data["execution"], dict):
            data["execution"] = {**data["execution"], "device": args.device}
    return validate(data), path.resolve().parent


def cmd_validate(args: argparse.Namespace) -> int:
    from asyncfl.config.loader import dump_scenario

    scenario, _ = _load(args)
    sys.stdout.write(dump_scenario(scenario))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from asyncfl.config.schema import scenario_json_schema

    print(json.dumps(scenario_json_schema(), indent=2))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "convert-trace":
        from asyncfl.data.traces import convert_trace
        from asyncfl.runs.rundir import write_atomic

        text, summary = convert_trace(Path(args.input), args.flops_per_sample)
        write_atomic(Path(args.output), text.encode("utf-8"))  # a full disk: exit 4, no half-written file
        print(f"{summary} -> {args.output}")
        return 0
    from asyncfl.data.describe import FIGURE_DPI, describe, describe_figure, summary_text
    from asyncfl.data.registry import build_data

    if args.figure:
        from asyncfl.study.figures import check_format

        check_format(args.figure, "--figure")  # a bad suffix fails before the data are built
    scenario, base_dir = _load(args)
    data = build_data(scenario.data, scenario.clients.count, scenario.seed, base_dir)
    print(summary_text(data, max_rows=args.rows))
    if args.csv:
        from asyncfl.runs.rundir import write_atomic

        # atomically: a full disk is one line (exit 4) and leaves no truncated table behind
        write_atomic(Path(args.csv), describe(data).to_csv().encode("utf-8"))
        print(f"table: {args.csv}")
    if args.figure:
        from asyncfl.study.figures import save

        # atomically, as every figure: a full disk is one line (exit 4) and leaves no truncated figure
        print(f"figure: {save(describe_figure(data), args.figure, dpi=FIGURE_DPI, flag='--figure')}")
    return 0


def _with_progress(label: str, quiet: bool, fn: Callable[..., Any]) -> int:
    """Call ``fn(progress=...)`` showing its progress (a bar with elapsed time and ETA on a
    terminal; elsewhere a heartbeat line at most every 30 s and a line when it ends); print the
    summary table at the end."""
    from rich.console import Console

    from asyncfl.cli.progress import RunProgress
    from asyncfl.runs.runner import RunInterrupted

    console = Console(stderr=True)
    shown = RunProgress(label)
    try:
        if quiet:
            result = fn(progress=None)
        else:
            with shown.shown():
                result = fn(progress=shown)
    except DivergedError as exc:
        res = getattr(exc, "result", None)
        if res is not None and not quiet:
            shown.finished("diverged")
            print_summary(res, console)
        raise
    except RunInterrupted as exc:
        if not quiet:
            shown.finished("interrupted")
            print_summary(exc.result, console)
        sys.stderr.write(f"asyncfl: {exc}\n")
        return exc.exit_code
    if not quiet:
        shown.finished(str(result.status) if hasattr(result, "status") else "completed")
        print_summary(result, console)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from asyncfl.runs.runner import run

    scenario, base_dir = _load(args)
    out = Path(args.out) if args.out else Path("runs") / f"{scenario.name}-seed{scenario.seed}"
    command = ["asyncfl", *sys.argv[1:]]
    return _with_progress(
        scenario.name,
        args.quiet,
        lambda progress: run(
            scenario,
            out,
            base_dir=base_dir,
            force=args.force,
            progress=progress,
            command=command,
            checkpoint_every=args.checkpoint_every,
        ),
    )


def cmd_resume(args: argparse.Namespace) -> int:
    from asyncfl.runs.runner import resume

    return _with_progress(
        Path(args.dir).name, args.quiet, lambda progress: resume(args.dir, device=args.device, progress=progress)
    )


def print_summary(result: Any, console: Any = None) -> None:
    """Final metrics, simulated time, staleness, updates applied/dropped, wall time, location."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=True)
    m = result.manifest
    table = Table(title=f"{m.get('name')} (seed {m.get('seed')}): {m.get('status')}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("simulated time", f"{m.get('sim_time', 0.0):.2f} s")
    table.add_row("server version", str(m.get("server_version")))
    table.add_row("updates applied / dropped", f"{m.get('updates_applied')} / {m.get('updates_dropped')}")
    table.add_row("staleness mean / max", f"{m.get('staleness_mean', 0.0):.2f} / {m.get('staleness_max')}")
    for k, v in sorted(m.get("final_metrics", {}).items()):
        table.add_row(k, f"{v:.4g}")
    table.add_row("wall time", f"{m.get('wall_time_s', 0.0):.1f} s")
    table.add_row("results", str(result.run_dir) if result.run_dir else "(not written)")
    console.print(table)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "resume": cmd_resume,
    "validate": cmd_validate,
    "schema": cmd_schema,
    "data": cmd_data,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except AsyncFLError as exc:
        sys.stderr.write(f"asyncfl: error: {exc.one_line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("asyncfl: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
    except OSError as exc:
        # a full disk (exit 4), a read-only, forbidden or missing path (exit 2): one line naming it
        err = os_error(exc)
        if err is not None:
            sys.stderr.write(f"asyncfl: error: {err.one_line()}\n")
            return err.exit_code
        if exc.filename is None:
            return _internal_error(exc)
        # a path given on the command line (or in the scenario) that cannot be read or written
        sys.stderr.write(f"asyncfl: error: {exc.filename}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    except Exception as exc:  # an internal bug: one line for users, the traceback on request
        return _internal_error(exc)


def _internal_error(exc: Exception) -> int:
    if os.environ.get("ASYNCFL_DEBUG"):
        raise exc
    sys.stderr.write(
        f"asyncfl: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
        "(rerun with ASYNCFL_DEBUG=1 for the traceback; please report it)\n"
    )
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
