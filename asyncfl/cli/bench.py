"""``asyncfl bench``: the command line of :mod:`asyncfl.runs.bench`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncfl.cli.args import whole_number
from asyncfl.runs.bench import MODES, WORKLOADS, BenchOptions, markdown, run_bench


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"modes must be a comma list of {', '.join(MODES)}; got {text!r}")
    return modes


def register(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``asyncfl bench`` to the parser and its handler to ``commands``."""
    positive = whole_number(1)
    p = sub.add_parser(
        "bench",
        help="measure client updates/s (batched vs one at a time vs a bare PyTorch loop), engine cost, memory, FLOP/s",
        description="Benchmark the simulator in one process and write bench.json and bench.md into --out. "
        "Sizes default to the issue's workloads; make them small to run on a laptop.",
    )
    p.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all", help="what to measure (default: all)")
    p.add_argument("--clients", type=positive, default=None, help="clients (default: 1000; null: 100000)")
    p.add_argument(
        "--in-flight", type=positive, default=None, help="clients in flight (default: logreg 100, MLP 1000, null 1000)"
    )
    p.add_argument(
        "--updates",
        type=positive,
        default=None,
        help="client updates per run (default: logreg 10000, MLP 5000, null 200000 tasks)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where numbers are computed")
    p.add_argument("--out", default="bench-out", help="folder for bench.json and bench.md (default: bench-out)")
    p.add_argument("--repeat", type=positive, default=1, help="runs per mode, alternating; the best is reported")
    p.add_argument("--threads", type=positive, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--buffer", type=positive, default=10, help="FedBuff buffer size K (default 10)")
    p.add_argument("--local-steps", type=positive, default=2, help="local steps per update (default 2)")
    p.add_argument("--batch-size", type=positive, default=32, help="minibatch size (default 32)")
    p.add_argument("--samples", type=positive, default=50, help="mean training samples per synthetic client")
    p.add_argument("--mnist-root", default=None, help="real MNIST (torchvision layout) for mnist-mlp-hf")
    p.add_argument("--eval-clients", type=int, default=100, help="clients scored at the start and end (0: all)")
    p.add_argument("--modes", type=_modes, default=MODES, help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--no-bare", action="store_true", help="skip the bare PyTorch loop")
    p.add_argument("--max-batch", type=positive, default=None, help="jobs per vmapped chunk (default: automatic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="model and data precision")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also run each mode once under cProfile; write profile-<workload>-<mode>.txt into --out",
    )
    commands["bench"] = cmd_bench


def cmd_bench(args: argparse.Namespace) -> int:
    opts = BenchOptions(
        workloads=WORKLOADS if args.workload == "all" else (args.workload,),
        clients=args.clients,
        in_flight=args.in_flight,
        updates=args.updates,
        device=args.device,
        out=Path(args.out),
        repeat=args.repeat,
        threads=args.threads,
        buffer=args.buffer,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        samples=args.samples,
        mnist_root=args.mnist_root,
        eval_clients=args.eval_clients,
        modes=args.modes,
        bare=not args.no_bare,
        profile=args.profile,
        max_batch=args.max_batch,
        seed=args.seed,
        dtype=args.dtype,
        command=["asyncfl", *sys.argv[1:]],
    )

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    report = run_bench(opts, log)
    print(markdown(report))
    out = Path(args.out)
    print(f"written: {out / 'bench.json'}, {out / 'bench.md'}", file=sys.stderr)
    return 0


__all__ = ["cmd_bench", "register"]
