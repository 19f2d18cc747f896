"""The PersA-FL staleness study at a chosen scale: run the sweep, draw its figures, write its table.

    python analysis/staleness_study.py --out DIR [--scale tiny|small|full] [--workers N]
                                       [--backend local|ray] [--scenario FILE] [--seeds N]

Runs ``scenarios/persafl_staleness.yaml`` (Per-FedAvg HF and pFedMe, async, tau in {0, 5, 10, 20,
50}) through the sweep API into ``DIR/runs`` (resumable: rerun the same command after an
interruption), then writes into ``DIR``:

- ``convergence_vs_tau.png``: final personalized accuracy and simulated time to a target vs tau,
  per algorithm, error bars over seeds; ``grad_norm_vs_tau.png``: the same for the convergence
  measure ||grad F(w)||^2 of the personalized objective (time to bring it below a level);
- ``convergence.png``: personalized accuracy on the simulated clock, a colour per tau, a panel per
  algorithm; ``grad_norm.png``: the same for the convergence measure ||grad F(w)||^2;
- ``staleness.png``: staleness of applied updates per (tau, algorithm); ``updates.png``;
- ``summary.csv`` and ``summary.md``: per (algorithm, tau), final personalized accuracy, global
  accuracy, grad_norm_sq and time to target, mean and s.d. over seeds.

Scales: ``tiny`` (10 clients, 20 server steps, 1 seed: seconds; what CI runs), ``small`` (30
clients, 60 simulated seconds, 2 seeds: 59 s with --workers 2 on a 2-core CPU), ``full`` (the scenario
file as written: 100 clients, 150 simulated seconds, 3 seeds; ~2 min with --workers 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = REPO / "scenarios" / "persafl_staleness.yaml"

SCALES: dict[str, dict[str, Any]] = {
    "tiny": {
        "seeds": 1,
        "set": [
            "clients.count=10",
            "server.concurrency=4",
            "data.mean_samples=20",
            "stop.sim_time=null",
            "stop.server_steps=20",
            "eval.every_time=null",
            "eval.every_steps=10",
        ],
    },
    "small": {
        "seeds": 2,
        "set": [
            "clients.count=30",
            "server.concurrency=8",
            "stop.sim_time=60",
            "eval.every_time=6",
        ],
    },
    "full": {"seeds": None, "set": []},
}

METRIC = "personalized_accuracy"
TAU = "server.max_staleness"


def run_study(
    out: Path,
    scale: str = "small",
    workers: int = 1,
    backend: str = "local",
    scenario: Path = DEFAULT_SCENARIO,
    seeds: int | None = None,
    quiet: bool = False,
) -> dict[str, Path]:
    """Run (or resume) the sweep and write figures and tables; returns what was written."""
    from asyncfl.study import figures
    from asyncfl.study.report import markdown_table
    from asyncfl.study.results import load_study, resolve_target, summary
    from asyncfl.study.sweep import run_sweep
    from asyncfl.study.sweep_plan import plan_sweep

    if scale not in SCALES:
        raise SystemExit(f"--scale: unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    cfg = SCALES[scale]
    plan = plan_sweep(scenario, seeds=seeds if seeds is not None else cfg["seeds"], overrides=cfg["set"])
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"

    def progress(event: str, run: Any) -> None:
        if not quiet and event in ("done", "skip"):
            word = "kept" if event == "skip" else run.status
            print(f"  {word:>9}  {run.name}", file=sys.stderr)

    if not quiet:
        print(f"staleness study ({scale}): {len(plan.runs)} runs into {runs_dir}", file=sys.stderr)
    run_sweep(plan, runs_dir, backend=backend, workers=workers, progress=progress)

    study = load_study(runs_dir)
    tgt = resolve_target(study.metrics, METRIC)  # half-way from the highest start to the best final value
    target = tgt.value
    written: dict[str, Path] = {}
    wanted: dict[str, tuple[str, dict[str, Any]]] = {
        "convergence_vs_tau": ("convergence_vs_delay", {"metric": METRIC}),  # states its target
        "grad_norm_vs_tau": ("convergence_vs_delay", {"metric": "grad_norm_sq"}),
        "convergence": ("convergence", {"metric": METRIC, "hue": TAU}),
        "grad_norm": ("convergence", {"metric": "grad_norm_sq", "hue": TAU}),
        "staleness": ("staleness", {"hue": TAU}),
        "updates": ("updates", {"hue": TAU}),
    }
    for name, (kind, opts) in wanted.items():
        if opts.get("metric") and opts["metric"] not in study.metric_names:
            continue
        written[name] = figures.save(figures.figure(kind, study, **opts), out / f"{name}.png")

    keys = [k for k in ("algorithm", TAU) if k in study.metrics.columns]
    table = summary(study.metrics, keys, METRIC, target)
    for extra in ("global_accuracy", "grad_norm_sq"):
        if extra in study.metric_names:
            more = summary(study.metrics, keys, extra, target=float("nan"))
            table[f"final {extra}"] = more[f"final {extra}"].to_numpy()
            table[f"final {extra} sd"] = more[f"final {extra} sd"].to_numpy()
    table.to_csv(out / "summary.csv", index=False)
    head = (
        f"# PersA-FL staleness study ({scale} scale)\n\n"
        f"Scenario: `{scenario.name}` with {' '.join('--set ' + s for s in cfg['set']) or 'no overrides'}; "
        f"{len(plan.runs)} runs. Time to target: simulated seconds until {METRIC} >= {target:.3g} "
        f"({tgt.how}; mean over the seeds that reached it; `reached` counts them).\n\n"
    )
    (out / "summary.md").write_text(head + markdown_table(table))
    written["summary.csv"] = out / "summary.csv"
    written["summary.md"] = out / "summary.md"
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="PersA-FL staleness study: sweep, figures, summary table.")
    p.add_argument("--out", type=Path, required=True, help="output folder (runs/ inside it, figures and tables beside)")
    p.add_argument("--scale", choices=list(SCALES), default="small")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    p.add_argument("--seeds", type=int, default=None, help="seeds per setting (default: the scale's)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    from asyncfl.errors import AsyncFLError

    try:
        written = run_study(args.out, args.scale, args.workers, args.backend, args.scenario, args.seeds, args.quiet)
    except AsyncFLError as exc:
        print(f"staleness_study: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    for path in written.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
