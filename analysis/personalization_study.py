"""Personalization study (issue 3): Per-FedAvg (HF, FO), FedAvg and pFedMe, sync and async.

    python analysis/personalization_study.py --out DIR [--scale tiny|small|full] [--seeds N]
                                             [--workers N] [--threads N] [--datasets synthetic,mnist]
                                             [--mnist-root DIR [--download]] [--tune | --matched]

Question: do the qualitative findings of Per-FedAvg (Fallah, Mokhtari, Ozdaglar 2020) and pFedMe
(Dinh, Tran, Nguyen 2020) hold in this simulator, under a synchronous server AND under an
asynchronous one with bounded staleness (PersA-FL, Toghani, Lee, Uribe 2022)?

1. personalized accuracy of Per-FedAvg (HF) >= Per-FedAvg (FO) > FedAvg's global accuracy;
2. pFedMe's personalized accuracy > the accuracy of its own global model.

Settings (one scenario file each, in ``scenarios/``; their ``sweep.grid`` lists the four algorithm
blocks and the two server modes, their ``sweep.seeds`` the seeds):

- ``study_personalization_synthetic.yaml``: Synthetic(0.5, 0.5), 100 clients, logistic regression;
- ``study_personalization_mnist.yaml``: MNIST, 2 digits per client, 50 clients, DNN 784-100-10
  (the 5,000-image subset ``../shared/data/mnist-5k`` here; ``--mnist-root`` for full MNIST).

Every run of a data set gets the same budget, ``stop.client_updates`` client updates (sync: rounds
of ``clients_per_round``; async: ``concurrency`` clients in flight, stale updates dropped or
down-weighted), and is evaluated at the start and 5 (small) or 10 (full) times along that budget
(the cadence is set per server mode so both are evaluated at the same numbers of client updates).
Per run, from its final evaluation:
``personalized_accuracy`` (Per-FedAvg: one step of alpha on the client's training data; pFedMe:
theta_i(w); FedAvg: one fine-tuning step of its lr) and ``global_accuracy`` (the server model as
is, on the union of the clients' test sets).

Writes into DIR: ``runs/DATASET/MODE/`` (one asyncfl sweep per data set and server mode:
``sweep.json`` and one run directory per algorithm and seed; rerunning the command keeps the
finished runs and continues interrupted ones; Ctrl-C exits 130 and says how to resume),
``runs.csv`` (one row per run), ``results.csv`` and ``results.md`` (mean and s.d. over seeds per
data set, algorithm and mode, and the findings checked), ``accuracy.png`` (final accuracies) and
``curves.png`` (accuracy against client updates). Both draw the reference levels a reader needs:
``accuracy.png`` each algorithm's personalized accuracy at the first evaluation (the initial model
adapted by that algorithm's rule) over its bar, and both the data set's ``majority_accuracy`` (each
client predicts its majority training label: no collaboration) across every panel, labelled.

``--tune`` instead runs the step-size grid of every algorithm (:data:`TUNE_GRID`: the same number
of points, 6, for each algorithm) under both server modes on a seed not used for reporting
(:data:`TUNE_SEED`), and writes ``tuning.csv`` / ``tuning.md`` with the selected point per
algorithm: the best mean over the two modes of the final personalized accuracy (FedAvg: of its
global accuracy, the number the findings compare against).

``--matched`` runs Per-FedAvg HF and FO only, at the SAME step sizes (:data:`MATCHED_GRID`), on
the reported seeds, and writes ``matched.csv`` / ``matched.md`` / ``matched.png``: the paired
difference HF - FO per setting with a 95% confidence interval over seeds (a seed gives both
variants the same data and minibatches D, D', so the difference is the Hessian term's).

Scales: ``tiny`` (6 clients, 24 client updates, 1 seed: seconds; what the tests run),
``small`` (the scenario files as written, 3 seeds: 15 min 20 s on a 2-core CPU with --workers 1,
measured while other jobs shared it: 231 s Synthetic, 689 s MNIST),
``full`` (4x the budget, 5 seeds).

Built on asyncfl's public study API: :func:`asyncfl.study.sweep_plan.plan_sweep` (planning and
validating every run), :func:`asyncfl.study.sweep.run_sweep` with a
:class:`~asyncfl.study.sweep.LocalPool` (the process pool, resume detection, the sweep lock) and
:func:`asyncfl.study.results.load_study` (reading the runs back), then pandas / seaborn.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from asyncfl.config.loader import read_yaml
from asyncfl.study.figures.convergence import REF_STYLE, draw_references  # reference levels, one style
from asyncfl.study.stats import t_quantile  # exact Student t: the one implementation figures and reports use

REPO = Path(__file__).resolve().parent.parent
SCENARIOS: dict[str, Path] = {
    "synthetic": REPO / "scenarios" / "study_personalization_synthetic.yaml",
    "mnist": REPO / "scenarios" / "study_personalization_mnist.yaml",
}
DATASET_LABELS = {"synthetic": "Synthetic(0.5, 0.5), Dirichlet(0.3)", "mnist": "MNIST, 2 digits/client"}
MODES = ("sync", "async")
ARM_ORDER = ("per_fedavg-hf", "per_fedavg-fo", "fedavg", "pfedme")
ARM_LABELS = {
    "per_fedavg-hf": "Per-FedAvg (HF)",
    "per_fedavg-fo": "Per-FedAvg (FO)",
    "per_fedavg-exact": "Per-FedAvg (exact)",
    "fedavg": "FedAvg",
    "pfedme": "pFedMe",
}
METRICS = ("personalized_accuracy", "global_accuracy")
MAJORITY = "majority_accuracy"
"""Recorded at every evaluation: each client predicts its majority training label (the
no-collaboration reference level of the figures)."""
PERS = "personalized (adapted on each client's own training data)"
GLOB = "global (server model as is)"
TUNE_SEED = 100
"""Seed of the tuning runs (the reported runs use the scenario seed 0, 1, 2, ...)."""

TUNE_GRID: dict[str, dict[str, dict[str, list[float]]]] = {
    "synthetic": {
        "per_fedavg": {"alpha": [0.01, 0.03, 0.1], "beta": [0.03, 0.1]},
        "fedavg": {"lr": [0.01, 0.02, 0.05, 0.1, 0.2, 0.3]},
        "pfedme": {"personal_lr": [0.01, 0.05], "eta": [0.01, 0.03, 0.06]},
    },
    "mnist": {
        "per_fedavg": {"alpha": [0.01, 0.03, 0.1], "beta": [0.03, 0.1]},
        "fedavg": {"lr": [0.01, 0.02, 0.05, 0.1, 0.2, 0.3]},
        "pfedme": {"personal_lr": [0.05, 0.1], "eta": [0.01, 0.03, 0.06]},
    },
}
"""Per data set and algorithm, the step sizes tried (6 points each). Per-FedAvg: alpha in the
range of pFedMe's and MTFL's Per-FedAvg runs (0.005-0.1), beta larger than the papers' 0.001-0.003
because the budget is ~6x smaller. pFedMe: lambda = 15 and K = 5 fixed (the paper's MNIST values),
personal_lr in the paper's 0.01-0.1, eta with eta * lambda < 1 (w stays between w and theta)."""


MATCHED_GRID: dict[str, list[tuple[float, float]]] = {
    "synthetic": [(0.01, 0.03), (0.03, 0.03), (0.1, 0.03)],
    "mnist": [(0.01, 0.03), (0.03, 0.03), (0.1, 0.03)],
}
"""``--matched``: the (alpha, beta) points at which Per-FedAvg HF and FO run with the SAME step
sizes (Fallah et al.'s protocol: one alpha, beta for both variants). beta = 0.03: the larger
beta = 0.1 of the tuning grid is where HF diverges on MNIST (the meta-objective's smoothness
grows with alpha times the curvature), so it would compare a diverged run with a converged one."""


@dataclass(frozen=True)
class Scale:
    """What a scale changes: seeds, budget, evaluations per run and extra overrides per data set."""

    seeds: int | None  # None: the scenario file's sweep.seeds
    budget_factor: float = 1.0
    budget: dict[str, int] = field(default_factory=dict)  # absolute budget per data set (tiny)
    evals: int = 10
    overrides: dict[str, list[str]] = field(default_factory=dict)


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        seeds=1,
        budget={"synthetic": 24, "mnist": 24},
        evals=1,
        overrides={
            "synthetic": [
                "clients.count=6",
                "server.concurrency=3",
                "server.clients_per_round=3",
                "data.mean_samples=30",
            ],
            "mnist": ["clients.count=6", "server.concurrency=3", "server.clients_per_round=3", "data.max_samples=300"],
        },
    ),
    "small": Scale(seeds=None, evals=5),
    "full": Scale(seeds=5, budget_factor=4.0, evals=10),
}


# ------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------


def arm_key(algorithm: dict[str, Any]) -> str:
    """``per_fedavg-hf`` / ``per_fedavg-fo`` / ``fedavg`` / ``pfedme`` from an algorithm block."""
    name = str(algorithm["name"])
    if name == "per_fedavg":
        return f"per_fedavg-{algorithm.get('variant', 'hf')}"
    return name


def arm_sort(key: str) -> int:
    return ARM_ORDER.index(key) if key in ARM_ORDER else len(ARM_ORDER)


@dataclass(frozen=True)
class Part:
    """One sweep of the study: a data set under one server mode (the evaluation cadence depends
    on the mode), over the algorithm blocks (and, tuning or matched, their step sizes) x seeds.
    ``runs``: run name -> (arm, step-size label)."""

    dataset: str
    mode: str
    plan: Any  # asyncfl.study.sweep_plan.SweepPlan
    sweep_dir: Path
    budget: int
    runs: dict[str, tuple[str, str]]


def read_study_file(path: Path) -> dict[str, Any]:
    data = read_yaml(path)  # the scenario loader YAML (1.2 numbers such as 2.0e6, size limits)
    if not isinstance(data, dict) or "sweep" not in data or "algorithm" not in data["sweep"].get("grid", {}):
        raise SystemExit(f"{path}: needs a sweep.grid.algorithm list (the study's algorithm blocks)")
    return data


def data_available(dataset: str, data: dict[str, Any], base_dir: Path, overrides: Sequence[str]) -> str | None:
    """None if the data set can be built (or downloaded); else a one-line reason to skip it."""
    d = data.get("data", {})
    root_over = [o.split("=", 1)[1] for o in overrides if o.startswith("data.root=")]
    dl_over = [o.split("=", 1)[1] for o in overrides if o.startswith("data.download=")]
    if d.get("dataset") in (None, "synthetic", "quadratic"):
        return None
    download = (dl_over[-1].lower() == "true") if dl_over else bool(d.get("download", False))
    root = Path(os.path.expanduser(root_over[-1] if root_over else str(d.get("root", "data"))))
    root = root if root.is_absolute() else (base_dir / root).resolve()
    if download:
        return None
    folder = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw", "emnist": "EMNIST/raw"}.get(d["dataset"], "")
    where = root / folder
    if not where.is_dir() or not any(where.iterdir()):
        return (
            f"{dataset}: no {d['dataset']} files in {where}; pass --mnist-root DIR (torchvision layout) "
            "and --download to fetch them"
        )
    return None


def cadence(mode: str, budget: int, cohort: int, evals: int) -> int:
    """eval.every_steps giving ~``evals`` evaluations over ``budget`` client updates: a sync step
    takes ``cohort`` updates, an async step one."""
    steps = budget // cohort if mode == "sync" else budget
    return max(1, steps // max(1, evals))


def budget_of(dataset: str, data: dict[str, Any], scale: Scale) -> int:
    if dataset in scale.budget:
        return scale.budget[dataset]
    base = int(data.get("stop", {}).get("client_updates") or 0)
    if base <= 0:
        raise SystemExit(f"{dataset}: the study scenario needs stop.client_updates (the shared budget)")
    return round(base * scale.budget_factor)


def cohort_of(mapping: dict[str, Any], overrides: Sequence[str], mode: str) -> int:
    key = "clients_per_round" if mode == "sync" else "concurrency"
    over = [o.split("=", 1)[1] for o in overrides if o.startswith(f"server.{key}=")]
    return int(over[-1]) if over else int(mapping.get("server", {}).get(key, 10))


ARM_COST = {"per_fedavg-hf": 4.0, "per_fedavg-fo": 2.5, "fedavg": 1.5, "pfedme": 5.0}


ARM_COST = {"per_fedavg-hf": 4.0, "per_fedavg-fo": 2.5, "fedavg": 1.5, "pfedme": 5.0}
"""Rough relative cost of a run per algorithm, to start the longest runs of a sweep first."""


def blocks_of(
    ds: str, path: Path, algorithms: list[dict[str, Any]], tune: bool, matched: bool
) -> list[tuple[dict[str, Any], str]]:
    """The algorithm blocks of one data set with their step-size labels: the file's blocks, or
    every tuning point of each, or Per-FedAvg HF and FO at each matched point."""
    if matched:
        hf = next((a for a in algorithms if arm_key(a) == "per_fedavg-hf"), None)
        if hf is None:
            raise SystemExit(f"{path}: --matched needs a Per-FedAvg (HF) block in sweep.grid.algorithm")
        return [
            ({**hf, "variant": v, "alpha": a, "beta": b}, f"alpha={a:g},beta={b:g}")
            for v in ("hf", "fo")
            for a, b in MATCHED_GRID[ds]
        ]
    if not tune:
        return [(alg, "") for alg in algorithms]
    out = []
    for alg in algorithms:
        grid = TUNE_GRID[ds][alg["name"]]
        names = list(grid)
        for vals in itertools.product(*(grid[n] for n in names)):
            point = dict(zip(names, vals, strict=True))
            out.append(({**alg, **point}, ",".join(f"{k}={v:g}" for k, v in point.items())))
    return out


def plan(
    out: Path,
    datasets: Sequence[str],
    scale: Scale,
    seeds: int | None,
    extra: dict[str, list[str]],
    tune: bool = False,
    matched: bool = False,
) -> tuple[list[Part], list[str]]:
    """The sweeps of the study (or of the tuning grid, or of the matched HF / FO comparison), every
    run validated now, and the data sets skipped, with reasons."""
    from asyncfl.study.sweep_plan import plan_sweep, value_text

    parts: list[Part] = []
    skipped: list[str] = []
    for ds in datasets:
        path = SCENARIOS[ds]
        data = read_study_file(path)
        base_dir = path.resolve().parent
        over_ds = [*scale.overrides.get(ds, []), *extra.get(ds, [])]
        reason = data_available(ds, data, base_dir, over_ds)
        if reason is not None:
            skipped.append(reason)
            continue
        budget = budget_of(ds, data, scale)
        n_seeds = 1 if tune else seeds or scale.seeds or int(data["sweep"].get("seeds", 1))
        first_seed = TUNE_SEED if tune else int(data.get("seed", 0))
        blocks = blocks_of(ds, path, list(data["sweep"]["grid"]["algorithm"]), tune, matched)
        labels = {value_text(b): (arm_key(b), label) for b, label in blocks}
        base = {k: v for k, v in data.items() if k != "sweep"}
        for mode in data["sweep"]["grid"].get("server.mode", MODES):
            every = (
                budget + 1 if (tune or matched) else cadence(mode, budget, cohort_of(base, over_ds, mode), scale.evals)
            )
            overrides = [*over_ds, f"server.mode={mode}", f"stop.client_updates={budget}", f"eval.every_steps={every}"]
            p = plan_sweep(
                base, {"algorithm": [b for b, _ in blocks]}, n_seeds, overrides, first_seed, base_dir=base_dir
            )
            runs = {r.name: labels[value_text(r.overrides["algorithm"])] for r in p.runs}
            # the most expensive first, so that the last runs of a sweep are short ones
            p = replace(p, runs=sorted(p.runs, key=lambda r: -ARM_COST.get(runs[r.name][0], 2.0)))
            folder = out / ("tune" if tune else "matched" if matched else "runs") / ds / mode
            parts.append(Part(ds, mode, p, folder, budget, runs))
    return parts, skipped


# ------------------------------------------------------------------------------------------------
# Running: asyncfl's sweeps (resumable, one writer per sweep directory, Ctrl-C exits 130)
# ------------------------------------------------------------------------------------------------


def run_parts(
    parts: list[Part], workers: int, threads: int = 1, quiet: bool = False, force: bool = False, command: str = ""
) -> list[str]:
    """Run every sweep, keeping finished runs, ``workers`` runs at a time, each with ``threads``
    torch threads (these models are small: a second intra-op thread buys nothing and, on a loaded
    2-core machine, made runs ~10x slower). Returns the failures, one line each."""
    from asyncfl.study.sweep import LocalPool, SweepFailedError, run_sweep, sweep_states

    kept = sum(state == "done" for p in parts for _, state in sweep_states(p.plan, p.sweep_dir, force=force))
    total = sum(len(p.plan.runs) for p in parts)
    if not quiet:
        print(f"  {kept} runs kept, {total - kept} to run with {workers} worker(s)", file=sys.stderr)
    failed: list[str] = []
    with LocalPool(workers, max(1, int(threads))) as backend:  # one pool for every sweep
        for part in parts:

            def report(event: str, run: Any, part: Part = part) -> None:
                if quiet or event != "done":
                    return
                arm, label = part.runs[run.name]
                what = f"{part.dataset} {arm} {label} {part.mode} seed={run.seed}".replace("  ", " ")
                detail = f"{run.wall_time_s:.1f} s" if run.status == "completed" else run.error or ""
                print(f"  {run.status:>9}  {what}  ({detail})", file=sys.stderr)

            try:
                run_sweep(
                    part.plan,
                    part.sweep_dir,
                    backend=backend,
                    progress=report,
                    force=force,
                    command=command.split() or None,
                )
            except SweepFailedError as exc:  # the other runs are written; rerunning retries the failed
                failed.append(f"{part.dataset} {part.mode}: {exc.one_line()}")
    return failed


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


def collect(parts: Iterable[Part]) -> tuple[Any, Any]:
    """(per-run final metrics, all evaluations) as pandas frames, read back with asyncfl's results
    API (:func:`asyncfl.study.results.load_study`: the finished runs of each sweep)."""
    import pandas as pd

    from asyncfl.errors import RunDirError
    from asyncfl.study.results import load_study

    rows, curves = [], []
    for part in parts:
        try:
            study = load_study(part.sweep_dir)
        except RunDirError:  # no finished run in this sweep
            continue
        for loaded in study.loaded:
            arm, label = part.runs.get(loaded.name, ("", ""))
            if not arm:
                continue
            res, seed = loaded.result, loaded.seed
            fm, man = res.final_metrics, res.manifest
            applied = int(man.get("updates_applied", 0))
            dropped = int(man.get("updates_dropped", 0))
            met = res.metrics
            first = met[(met["metric"] == "personalized_accuracy")].sort_values(["client_updates", "sim_time"])
            majority = met.loc[met["metric"] == MAJORITY, "value"]  # absent in runs made before it was recorded
            rows.append(
                {
                    "dataset": part.dataset,
                    "algorithm": ARM_LABELS.get(arm, arm),
                    "arm": arm,
                    "hyper": label,
                    "mode": part.mode,
                    "seed": seed,
                    "status": res.status,
                    "personalized_accuracy": fm.get("personalized_accuracy", float("nan")),
                    "global_accuracy": fm.get("global_accuracy", float("nan")),
                    "personalized_accuracy_p10": fm.get("personalized_accuracy_p10", float("nan")),
                    "personalized_loss": fm.get("personalized_loss", float("nan")),
                    "client_updates": applied + dropped,
                    "updates_dropped": dropped,
                    "staleness_mean": float(man.get("staleness_mean", 0.0)),
                    "staleness_max": int(man.get("staleness_max", 0)),
                    "sim_time_s": float(man.get("sim_time", float("nan"))),
                    "wall_time_s": float(man.get("wall_time_s", float("nan"))),
                    "personalized_accuracy_start": float(first["value"].iloc[0]) if len(first) else float("nan"),
                    "majority_accuracy": float(majority.mean()) if len(majority) else float("nan"),
                }
            )
            m = met[met["metric"].isin((*METRICS, MAJORITY))].copy()
            m["dataset"], m["algorithm"], m["arm"], m["mode"], m["seed"], m["hyper"] = (
                part.dataset,
                ARM_LABELS.get(arm, arm),
                arm,
                part.mode,
                seed,
                label,
            )
            curves.append(m)
    runs = pd.DataFrame(rows)
    if len(runs):  # the study's order (data set, mode, algorithm), whatever order the runs ran in
        runs["_d"] = runs["dataset"].map({d: i for i, d in enumerate(SCENARIOS)})
        runs["_m"] = runs["mode"].map({m: i for i, m in enumerate(MODES)})
        runs["_a"] = runs["arm"].map(arm_sort)
        runs = runs.sort_values(["_d", "_m", "_a", "hyper", "seed"], kind="stable")
        runs = runs.drop(columns=["_d", "_m", "_a"]).reset_index(drop=True)
    evals = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return runs, evals


def summarize(runs: Any) -> Any:
    """Mean and s.d. over seeds per (dataset, algorithm, mode)."""
    import pandas as pd

    if runs.empty:
        return pd.DataFrame()
    keys = ["dataset", "algorithm", "arm", "mode"]
    g = runs.groupby(keys, sort=False)
    out = g.agg(
        seeds=("seed", "nunique"),
        personalized_accuracy=("personalized_accuracy", "mean"),
        personalized_accuracy_sd=("personalized_accuracy", "std"),
        global_accuracy=("global_accuracy", "mean"),
        global_accuracy_sd=("global_accuracy", "std"),
        personalized_accuracy_start=("personalized_accuracy_start", "mean"),
        staleness_mean=("staleness_mean", "mean"),
        dropped_share=("updates_dropped", "sum"),
        client_updates=("client_updates", "sum"),
        sim_time_s=("sim_time_s", "mean"),
        diverged=("status", lambda s: int((s == "diverged").sum())),
    ).reset_index()
    out["dropped_share"] = out["dropped_share"] / out["client_updates"].clip(lower=1)
    out = out.drop(columns=["client_updates"])
    out["_d"] = out["dataset"].map({d: i for i, d in enumerate(SCENARIOS)})
    out["_m"] = out["mode"].map({m: i for i, m in enumerate(MODES)})
    out["_a"] = out["arm"].map(arm_sort)
    return out.sort_values(["_d", "_m", "_a"]).drop(columns=["_d", "_m", "_a"]).reset_index(drop=True)


def _pm(mean: float, sd: float) -> str:
    if mean != mean:  # NaN
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}" if sd == sd else f"{100 * mean:.1f}"


def findings(table: Any) -> list[dict[str, Any]]:
    """The papers' claims, checked per (dataset, mode) on the means over seeds."""
    out: list[dict[str, Any]] = []
    for (ds, mode), grp in table.groupby(["dataset", "mode"], sort=False):
        by = {r.arm: r for r in grp.itertuples()}

        def claim(
            text: str,
            lhs: float,
            rhs: float,
            lsd: float,
            rsd: float,
            strict: bool,
            ds: str = str(ds),
            mode: str = str(mode),
        ) -> None:
            if lhs != lhs or rhs != rhs:
                return
            diff = lhs - rhs
            holds = diff > 0 if strict else diff >= 0
            noise = (lsd if lsd == lsd else 0.0) + (rsd if rsd == rsd else 0.0)
            out.append(
                {
                    "dataset": ds,
                    "mode": mode,
                    "claim": text,
                    "lhs": lhs,
                    "rhs": rhs,
                    "diff": diff,
                    "holds": bool(holds),
                    "within_noise": bool(abs(diff) <= noise),
                }
            )

        hf, fo, fa, pm = (by.get(k) for k in ("per_fedavg-hf", "per_fedavg-fo", "fedavg", "pfedme"))
        if hf is not None and fo is not None:
            claim(
                "Per-FedAvg (HF) personalized >= Per-FedAvg (FO) personalized",
                hf.personalized_accuracy,
                fo.personalized_accuracy,
                hf.personalized_accuracy_sd,
                fo.personalized_accuracy_sd,
                False,
            )
        if fo is not None and fa is not None:
            claim(
                "Per-FedAvg (FO) personalized > FedAvg global",
                fo.personalized_accuracy,
                fa.global_accuracy,
                fo.personalized_accuracy_sd,
                fa.global_accuracy_sd,
                True,
            )
        if hf is not None and fa is not None:
            claim(
                "Per-FedAvg (HF) personalized > FedAvg global",
                hf.personalized_accuracy,
                fa.global_accuracy,
                hf.personalized_accuracy_sd,
                fa.global_accuracy_sd,
                True,
            )
        if pm is not None:
            claim(
                "pFedMe personalized > pFedMe global",
                pm.personalized_accuracy,
                pm.global_accuracy,
                pm.personalized_accuracy_sd,
                pm.global_accuracy_sd,
                True,
            )
    return out


def markdown(table: Any, checks: list[dict[str, Any]], scale: str, command: str, skipped: Sequence[str]) -> str:
    lines = [
        f"# Personalization study ({scale} scale)",
        "",
        f"Produced by `{command}`.",
        "",
        "Final accuracies (%) after the same number of client updates per data set, mean ± s.d. over "
        "seeds. *Personalized*: Per-FedAvg one step of alpha, pFedMe theta_i(w), FedAvg one fine-tuning "
        "step of its lr, each on the client's training data, scored on its own test data. *Global*: "
        "the server model as is, on the union of the clients' test sets. *At start*: the same "
        "personalization applied to the initial model, before any client update (what adaptation alone "
        "gives, without federation). *Staleness*: mean staleness of the applied updates; *dropped*: share "
        "of updates staler than tau; *sim. time*: simulated seconds the budget took.",
        "",
        "| data set | mode | algorithm | seeds | personalized acc. (%) | global acc. (%) | personalized at start (%) | staleness mean | dropped | sim. time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        div = f" ({r.diverged} diverged)" if r.diverged else ""
        lines.append(
            f"| {DATASET_LABELS.get(r.dataset, r.dataset)} | {r.mode} | {r.algorithm}{div} | {r.seeds} | "
            f"{_pm(r.personalized_accuracy, r.personalized_accuracy_sd)} | "
            f"{_pm(r.global_accuracy, r.global_accuracy_sd)} | {100 * r.personalized_accuracy_start:.1f} | "
            f"{r.staleness_mean:.1f} | "
            f"{100 * r.dropped_share:.0f}% | {r.sim_time_s:.0f} |"
        )
    lines += [
        "",
        "## The papers' findings, checked",
        "",
        "| data set | mode | claim | left (%) | right (%) | difference (points) | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        verdict = "yes" if c["holds"] else "**no**"
        if c["within_noise"]:
            verdict += " (within 1 s.d.)"
        lines.append(
            f"| {DATASET_LABELS.get(c['dataset'], c['dataset'])} | {c['mode']} | {c['claim']} | "
            f"{100 * c['lhs']:.1f} | {100 * c['rhs']:.1f} | {100 * c['diff']:+.1f} | {verdict} |"
        )
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


def _setup_matplotlib() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    return plt, sns


INITIAL_LABEL = "personalized accuracy of the initial model\n(first evaluation, per algorithm)"


def majority_level(runs: Any, dataset: str) -> float | None:
    """The data set's no-collaboration level in %: ``majority_accuracy`` (each client predicts its
    majority training label) averaged over the data set's runs; None when no run recorded it."""
    if MAJORITY not in runs.columns:
        return None
    v = runs.loc[runs["dataset"] == dataset, MAJORITY].dropna()
    return 100 * float(v.mean()) if len(v) else None


def reference_legend(plt: Any, initial: bool, majority: bool) -> tuple[list[Any], list[str]]:
    """Legend entries of the reference levels, in the styles of asyncfl's convergence figures."""
    handles, labels = [], []
    if initial:
        color, ls, _ = REF_STYLE["initial"]
        handles.append(plt.Line2D([0], [0], color=color, linestyle=ls, linewidth=1.6))
        labels.append(INITIAL_LABEL)
    if majority:
        color, ls, label = REF_STYLE["majority"]
        handles.append(plt.Line2D([0], [0], color=color, linestyle=ls, linewidth=1.2))
        labels.append(label)
    return handles, labels


def figure_accuracy(runs: Any, path: Path) -> Path:
    """:func:`draw_accuracy` saved to ``path``."""
    plt, _ = _setup_matplotlib()
    fig = draw_accuracy(runs)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_accuracy(runs: Any) -> Any:
    """Final accuracy per algorithm: a panel per (data set, server mode), bars = mean over seeds,
    error bars = s.d., dots = seeds; personalized and global side by side. Reference levels: over
    each algorithm's personalized bar, its personalized accuracy at the first evaluation (the
    initial model adapted by that algorithm's own rule, mean over the panel's runs; gid
    ``ref:initial:<algorithm>``), and across the panel the data set's majority-label accuracy (gid
    ``ref:majority``, value written at the right edge) when the runs recorded it."""
    import numpy as np

    plt, sns = _setup_matplotlib()
    np.random.seed(0)  # stripplot's jitter draws from numpy's global generator: same figure every time
    long = runs.melt(
        id_vars=["dataset", "algorithm", "arm", "mode", "seed"],
        value_vars=list(METRICS),
        var_name="model",
        value_name="accuracy",
    )
    long["accuracy"] = 100 * long["accuracy"]
    long["model"] = long["model"].map({"personalized_accuracy": PERS, "global_accuracy": GLOB})
    long["panel"] = [f"{DATASET_LABELS.get(d, d)}, {m}" for d, m in zip(long["dataset"], long["mode"], strict=True)]
    order = [ARM_LABELS[a] for a in ARM_ORDER if a in set(runs["arm"])]
    panel_keys = {
        f"{DATASET_LABELS.get(d, d)}, {m}": (d, m)
        for d in SCENARIOS
        for m in MODES
        if ((runs["dataset"] == d) & (runs["mode"] == m)).any()
    }
    panels = list(panel_keys)
    any_initial = any_majority = False
    ncol = 2 if len(panels) > 1 else 1
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 2.9 * nrow + 0.6), squeeze=False, sharey=True)
    hue_order = [PERS, GLOB]
    palette = dict(zip(hue_order, sns.color_palette("deep", 2), strict=True))
    for ax, panel in zip(axes.flat, panels, strict=False):
        sub = long[long["panel"] == panel]
        sns.barplot(
            data=sub,
            x="algorithm",
            y="accuracy",
            hue="model",
            order=order,
            hue_order=hue_order,
            errorbar="sd",
            capsize=0.15,
            err_kws={"linewidth": 1.0},
            palette=palette,
            ax=ax,
            legend=False,
        )
        sns.stripplot(
            data=sub,
            x="algorithm",
            y="accuracy",
            hue="model",
            order=order,
            hue_order=hue_order,
            dodge=True,
            palette=["black", "black"],
            size=2.5,
            alpha=0.6,
            ax=ax,
            legend=False,
        )
        d, m = panel_keys[panel]
        prun = runs[(runs["dataset"] == d) & (runs["mode"] == m)]
        color, ls, _ = REF_STYLE["initial"]
        for i, alg in enumerate(order):  # the personalized bar of group i spans [i - 0.4, i]
            start = prun.loc[prun["algorithm"] == alg, "personalized_accuracy_start"].dropna()
            if len(start):
                y = 100 * float(start.mean())
                ax.hlines(y, i - 0.4, i, color="white", linewidth=3.6, zorder=4)  # a band to be seen on a bar
                ax.hlines(y, i - 0.4, i, color=color, linestyle=ls, linewidth=1.8, zorder=5, gid=f"ref:initial:{alg}")
                any_initial = True
        level = majority_level(runs, d)
        if level is not None:
            draw_references(ax, {"majority": level})
            any_majority = True
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", labelsize=7.5)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles: list[Any] = [plt.Rectangle((0, 0), 1, 1, color=palette[h]) for h in hue_order]
    labels = list(hue_order)
    ref_handles, ref_labels = reference_legend(plt, any_initial, any_majority)
    fig.legend(handles + ref_handles, labels + ref_labels, loc="lower center", ncol=2, frameon=False, fontsize=7.5)
    n_seeds = int(runs.groupby(["dataset", "arm", "mode"])["seed"].nunique().max()) if len(runs) else 0
    fig.suptitle(
        f"Personalized vs global accuracy after the same client-update budget\n(bars: mean over "
        f"{n_seeds} seed{'s' if n_seeds != 1 else ''}, error bars: s.d., dots: single seeds; "
        "reference levels as in the legend)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.06 if not ref_handles else 0.12, 1, 0.95), w_pad=2.0)
    return fig


def figure_curves(evals: Any, budgets: dict[str, int], evals_per_run: int, path: Path) -> Path:
    """:func:`draw_curves` saved to ``path``."""
    plt, _ = _setup_matplotlib()
    fig = draw_curves(evals, budgets, evals_per_run)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_curves(evals: Any, budgets: dict[str, int], evals_per_run: int) -> Any:
    """Accuracy against client updates received: personalized (solid) per algorithm and the global
    accuracy of FedAvg and pFedMe (dashed); mean over seeds, band = s.d. Each curve starts at the
    initial model's value (0 updates); the data set's majority-label accuracy is drawn across each
    panel (gid ``ref:majority``) when the runs recorded it."""
    plt, sns = _setup_matplotlib()
    maj = evals[evals["metric"] == MAJORITY] if len(evals) else evals
    majority = {d: 100 * float(g["value"].mean()) for d, g in maj.groupby("dataset")} if len(maj) else {}
    e = evals.copy()
    # Async runs evaluate every k applied steps, so their client-update counts differ slightly
    # across seeds (dropped updates count too); put every evaluation on the common grid.
    step = {d: max(1, b // max(1, evals_per_run)) for d, b in budgets.items()}
    e["updates"] = [round(u / step[d]) * step[d] for u, d in zip(e["client_updates"], e["dataset"], strict=True)]
    e["accuracy"] = 100 * e["value"]
    keep = (e["metric"] == "personalized_accuracy") | (
        (e["metric"] == "global_accuracy") & e["arm"].isin(["fedavg", "pfedme"])
    )
    e = e[keep]
    e["curve"] = [
        f"{a}, {'personalized' if m == 'personalized_accuracy' else 'global'}"
        for a, m in zip(e["algorithm"], e["metric"], strict=True)
    ]
    order = [f"{ARM_LABELS[a]}, personalized" for a in ARM_ORDER] + ["FedAvg, global", "pFedMe, global"]
    order = [o for o in order if o in set(e["curve"])]
    colors = dict(zip([ARM_LABELS[a] for a in ARM_ORDER], sns.color_palette("deep", 4), strict=True))
    palette = {o: colors[o.split(",")[0]] for o in order}
    dashes = {o: (4, 2) if o.endswith("global") else "" for o in order}
    panels = [(d, m) for d in SCENARIOS for m in MODES if ((e["dataset"] == d) & (e["mode"] == m)).any()]
    ncol = 2 if len(panels) > 1 else 1
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 2.8 * nrow + 0.8), squeeze=False, sharey=True)
    for ax, (d, m) in zip(axes.flat, panels, strict=False):
        sub = e[(e["dataset"] == d) & (e["mode"] == m)]
        sns.lineplot(
            data=sub,
            x="updates",
            y="accuracy",
            hue="curve",
            style="curve",
            hue_order=order,
            style_order=order,
            palette=palette,
            dashes=dashes,
            errorbar="sd",
            ax=ax,
            legend=False,
            linewidth=1.3,
        )
        if d in majority:
            draw_references(ax, {"majority": majority[d]})
        ax.set_title(f"{DATASET_LABELS.get(d, d)}, {m}", fontsize=9)
        ax.set_xlabel("client updates received (count)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_xlim(0, budgets[d])
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles = [plt.Line2D([0], [0], color=palette[o], linestyle="--" if o.endswith("global") else "-") for o in order]
    ref_handles, ref_labels = reference_legend(plt, False, bool(majority))
    fig.legend(handles + ref_handles, order + ref_labels, loc="lower center", ncol=3, frameon=False, fontsize=7.5)
    fig.suptitle(
        "Accuracy against the client-update budget (mean over seeds, band: s.d.;\n"
        "each curve starts at the initial model's value, at 0 updates)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.95), w_pad=2.0)
    return fig


# ------------------------------------------------------------------------------------------------
# Tuning report
# ------------------------------------------------------------------------------------------------


def tuning_report(runs: Any, out: Path, command: str) -> dict[str, Path]:
    """Per (data set, algorithm, grid point): final metrics per mode; the selected point per
    (data set, algorithm) maximises the mean over modes of the selection metric."""
    import pandas as pd

    if runs.empty:
        raise SystemExit("tuning produced no runs")
    runs = runs.copy()
    runs["select_on"] = ["global_accuracy" if a == "fedavg" else "personalized_accuracy" for a in runs["arm"]]
    runs["score"] = [
        r[s] if r["status"] == "completed" else float("-inf") for _, r in runs.iterrows() for s in [r["select_on"]]
    ]
    wide = runs.pivot_table(
        index=["dataset", "arm", "hyper"],
        columns="mode",
        values=["personalized_accuracy", "global_accuracy", "score"],
        aggfunc="mean",
    )
    wide.columns = [f"{a} {b}" for a, b in wide.columns]
    wide = wide.reset_index()
    score_cols = [c for c in wide.columns if c.startswith("score ")]
    wide["score"] = wide[score_cols].mean(axis=1)
    wide["selected"] = False
    for _, grp in wide.groupby(["dataset", "arm"]):
        wide.loc[grp["score"].idxmax(), "selected"] = True
    wide["_a"] = wide["arm"].map(arm_sort)
    wide = wide.sort_values(["dataset", "_a", "hyper"]).drop(columns=["_a", *score_cols])
    wide.to_csv(out / "tuning.csv", index=False)
    lines = [
        f"# Step-size tuning (seed {TUNE_SEED})",
        "",
        f"Produced by `{command}`.",
        "",
        "Selection: best mean over the two server modes of the final personalized accuracy "
        "(FedAvg: global accuracy). Accuracies in %.",
        "",
    ]
    cols = [c for c in wide.columns if c not in ("dataset", "arm", "hyper", "selected", "score")]
    lines.append("| data set | algorithm | step sizes | " + " | ".join(cols) + " | selected |")
    lines.append("|---" * (len(cols) + 4) + "|")
    for d in wide.to_dict("records"):
        vals = " | ".join("n/a" if pd.isna(d[c]) or d[c] == float("-inf") else f"{100 * d[c]:.1f}" for c in cols)
        lines.append(
            f"| {d['dataset']} | {ARM_LABELS.get(d['arm'], d['arm'])} | {d['hyper']} | {vals} | "
            f"{'**yes**' if d['selected'] else ''} |"
        )
    (out / "tuning.md").write_text("\n".join(lines) + "\n")
    return {"tuning.csv": out / "tuning.csv", "tuning.md": out / "tuning.md"}


# ------------------------------------------------------------------------------------------------
# Matched HF / FO comparison
# ------------------------------------------------------------------------------------------------


def paired(runs: Any) -> Any:
    """Per (data set, mode, step sizes): HF and FO means and their paired difference over seeds.

    Seeds pair the runs: the same seed gives both variants the same data, split, system draws
    and (common random numbers) the same minibatches D and D' at every local step, so HF - FO
    measures the Hessian term alone. ``diff`` = HF - FO personalized accuracy (points in [0, 1]);
    ``ci`` its 95% half-width (t over seeds); ``loss_gain`` = FO - HF personalized loss (> 0: HF
    lower)."""
    import numpy as np
    import pandas as pd

    keys = ["dataset", "mode", "hyper", "seed"]
    ok = runs[runs["status"] == "completed"]
    wide = ok.pivot_table(
        index=keys,
        columns="arm",
        values=["personalized_accuracy", "global_accuracy", "personalized_loss"],
        aggfunc="first",
    )
    rows = []
    for (ds, mode, hyper), grp in wide.groupby(level=[0, 1, 2], sort=False):
        hf = grp[("personalized_accuracy", "per_fedavg-hf")]
        fo = grp[("personalized_accuracy", "per_fedavg-fo")]
        both = hf.notna() & fo.notna()
        d = (hf - fo)[both].to_numpy()
        lg = (grp[("personalized_loss", "per_fedavg-fo")] - grp[("personalized_loss", "per_fedavg-hf")])[both]
        n = len(d)
        sd = float(np.std(d, ddof=1)) if n > 1 else float("nan")
        rows.append(
            {
                "dataset": ds,
                "mode": mode,
                "hyper": hyper,
                "pairs": n,
                "hf": float(hf[both].mean()),
                "fo": float(fo[both].mean()),
                "hf_global": float(grp[("global_accuracy", "per_fedavg-hf")][both].mean()),
                "fo_global": float(grp[("global_accuracy", "per_fedavg-fo")][both].mean()),
                "diff": float(d.mean()) if n else float("nan"),
                "diff_sd": sd,
                "ci": t_quantile(n - 1) * sd / np.sqrt(n) if n > 1 else float("nan"),
                "hf_wins": int((d > 0).sum()),
                "ties": int((d == 0).sum()),
                "loss_gain": float(lg.mean()) if n else float("nan"),
            }
        )
    diverged = runs[runs["status"] != "completed"].groupby(["dataset", "mode", "hyper", "arm"]).size()
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["_d"] = out["dataset"].map({d: i for i, d in enumerate(SCENARIOS)})
    out["_m"] = out["mode"].map({m: i for i, m in enumerate(MODES)})
    out["_h"] = [tuple(float(x.split("=")[1]) for x in h.split(",")) for h in out["hyper"]]
    out = out.sort_values(["_d", "_m", "_h"]).drop(columns=["_d", "_m", "_h"]).reset_index(drop=True)
    out["not_completed"] = [
        ", ".join(
            f"{a.split('-')[1].upper()} x{int(c)}"
            for (dd, mm, hh, a), c in diverged.items()
            if (dd, mm, hh) == (r["dataset"], r["mode"], r["hyper"])
        )
        for r in out.to_dict("records")
    ]
    return out


def matched_report(runs: Any, out: Path, command: str) -> dict[str, Path]:
    """``matched.csv`` / ``matched.md`` (paired HF - FO per setting) and ``matched.png``."""
    if runs.empty:
        raise SystemExit("matched comparison produced no runs")
    table = paired(runs)
    table.to_csv(out / "matched.csv", index=False)
    cells = table.dropna(subset=["diff"])
    pos = int((cells["diff"] >= 0).sum())
    sig_pos = int(((cells["diff"] - cells["ci"]) > 0).sum())
    sig_neg = int(((cells["diff"] + cells["ci"]) < 0).sum())
    lines = [
        "# Per-FedAvg HF vs FO at matched step sizes (paired seeds)",
        "",
        f"Produced by `{command}`.",
        "",
        "Both variants run with the same alpha, beta (and batch size, local steps, budget, server) on the "
        "same seeds; a seed gives both the same data, split, system and minibatches D, D' (common random "
        "numbers), so the paired difference HF - FO isolates the Hessian term. Personalized accuracy (%) "
        "after the budget, mean over seeds; *HF - FO*: mean paired difference in points with its 95% "
        "confidence interval (t over seeds); *HF wins*: seeds where HF is strictly ahead; *loss gain*: FO "
        "minus HF personalized loss (> 0: HF lower).",
        "",
        "| data set | mode | step sizes | pairs | HF pers. | FO pers. | HF - FO (points) | HF wins | loss gain | HF global | FO global | not completed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        mark = "**" if r["diff"] - r["ci"] > 0 else ""
        lines.append(
            f"| {DATASET_LABELS.get(r['dataset'], r['dataset'])} | {r['mode']} | {r['hyper']} | {r['pairs']} | "
            f"{100 * r['hf']:.1f} | {100 * r['fo']:.1f} | {mark}{100 * r['diff']:+.2f} ± {100 * r['ci']:.2f}{mark} | "
            f"{r['hf_wins']}/{r['pairs']} | {r['loss_gain']:+.3f} | {100 * r['hf_global']:.1f} | "
            f"{100 * r['fo_global']:.1f} | {r['not_completed'] or '-'} |"
        )
    lines += [
        "",
        f"HF >= FO on the mean in {pos} of {len(cells)} settings; HF significantly ahead (95% CI above 0, "
        f"bold) in {sig_pos}, significantly behind in {sig_neg}.",
    ]
    (out / "matched.md").write_text("\n".join(lines) + "\n")
    return {
        "matched.csv": out / "matched.csv",
        "matched.md": out / "matched.md",
        "matched.png": figure_matched(runs, out / "matched.png"),
    }


def t_interval(values: Any) -> tuple[float, float]:
    """The 95% Student-t interval of the mean of ``values`` (one point for a single value)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    h = t_quantile(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return m - h, m + h


def figure_matched(runs: Any, path: Path) -> Path:
    """Paired HF - FO personalized accuracy per seed (dots) and its mean (bar, 95% CI), per data set,
    against alpha, one colour per server mode."""
    import numpy as np

    plt, sns = _setup_matplotlib()
    np.random.seed(0)
    ok = runs[runs["status"] == "completed"]
    w = (
        ok.pivot_table(
            index=["dataset", "mode", "hyper", "seed"], columns="arm", values="personalized_accuracy", aggfunc="first"
        )
        .dropna()
        .reset_index()
    )
    w["HF - FO (points)"] = 100 * (w["per_fedavg-hf"] - w["per_fedavg-fo"])
    datasets = [d for d in SCENARIOS if (w["dataset"] == d).any()]
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(4.6 * max(1, len(datasets)), 3.4), squeeze=False)
    for ax, ds in zip(axes.flat, datasets, strict=False):
        sub = w[w["dataset"] == ds]
        order = sorted(set(sub["hyper"]), key=lambda h: [float(x.split("=")[1]) for x in h.split(",")])
        sns.pointplot(
            data=sub,
            x="hyper",
            y="HF - FO (points)",
            hue="mode",
            order=order,
            hue_order=list(MODES),
            dodge=0.3,
            errorbar=t_interval,  # the table's interval (exact Student t), not seaborn's bootstrap
            linestyles="none",
            markers="D",
            ax=ax,
            legend=ds == datasets[0],
        )
        sns.stripplot(
            data=sub,
            x="hyper",
            y="HF - FO (points)",
            hue="mode",
            order=order,
            hue_order=list(MODES),
            dodge=True,
            palette=["black", "black"],
            size=2.5,
            alpha=0.5,
            ax=ax,
            legend=False,
        )
        ax.axhline(0.0, color="grey", linewidth=0.8)
        if ax.get_legend() is not None:  # above the points: lower left covered a bar
            sns.move_legend(ax, "upper center", ncols=2, fontsize=8, title_fontsize=8, frameon=True)
        ax.set_title(DATASET_LABELS.get(ds, ds), fontsize=9)
        ax.set_xlabel("step sizes (same for HF and FO)")
        ax.tick_params(axis="x", labelsize=7.5)
    fig.suptitle(
        "Per-FedAvg: personalized accuracy of HF minus FO, paired by seed\n"
        "(dots: seeds; diamonds: mean, bars: 95% Student-t interval, as in matched.md)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def run_study(
    out: Path,
    scale: str = "small",
    seeds: int | None = None,
    workers: int = 1,
    datasets: Sequence[str] = tuple(SCENARIOS),
    extra: dict[str, list[str]] | None = None,
    tune: bool = False,
    quiet: bool = False,
    command: str = "",
    threads: int = 1,
    matched: bool = False,
    force: bool = False,
) -> dict[str, Path]:
    """Run (or resume) the study and write its table and figures; returns what was written."""
    if scale not in SCALES:
        raise SystemExit(f"--scale: unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    unknown = [d for d in datasets if d not in SCENARIOS]
    if unknown:
        raise SystemExit(f"--datasets: unknown {', '.join(unknown)}; allowed: {', '.join(SCENARIOS)}")
    sc = SCALES[scale]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if tune and matched:
        raise SystemExit("--tune and --matched: choose one")
    parts, skipped = plan(out, datasets, sc, seeds, extra or {}, tune=tune, matched=matched)
    for s in skipped:
        print(f"personalization_study: skipped {s}", file=sys.stderr)
    if not parts:
        raise SystemExit("personalization_study: nothing to run (every data set skipped)")
    if not quiet:
        what = ", tuning" if tune else ", HF vs FO at matched step sizes" if matched else ""
        n_runs = sum(len(p.plan.runs) for p in parts)
        print(f"personalization study ({scale}{what}): {n_runs} runs into {out}", file=sys.stderr)
    t0 = time.perf_counter()
    command = command or f"python analysis/personalization_study.py --out {out} --scale {scale}"
    for f in run_parts(parts, workers, threads, quiet, force, command):
        print(f"personalization_study: runs failed: {f}", file=sys.stderr)
    runs, evals = collect(parts)
    if runs.empty:
        raise SystemExit("personalization_study: no run finished")
    written: dict[str, Path] = {}
    if tune:
        runs.to_csv(out / "tuning_runs.csv", index=False)
        written.update(tuning_report(runs, out, command))
        return written
    if matched:
        runs.to_csv(out / "matched_runs.csv", index=False)
        written.update(matched_report(runs, out, command))
        return written
    runs.to_csv(out / "runs.csv", index=False)
    written["runs.csv"] = out / "runs.csv"
    table = summarize(runs)
    checks = findings(table)
    table.to_csv(out / "results.csv", index=False)
    written["results.csv"] = out / "results.csv"
    (out / "results.md").write_text(markdown(table, checks, scale, command, skipped))
    written["results.md"] = out / "results.md"
    budgets = {p.dataset: p.budget for p in parts}
    written["accuracy.png"] = figure_accuracy(runs, out / "accuracy.png")
    written["curves.png"] = figure_curves(evals, budgets, sc.evals, out / "curves.png")
    if not quiet:
        print(f"personalization study: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return written


def parse_sets(items: Sequence[str]) -> dict[str, list[str]]:
    """``--set [DATASET:]KEY=VALUE`` -> overrides per data set (no prefix: every data set)."""
    out: dict[str, list[str]] = {d: [] for d in SCENARIOS}
    for item in items:
        head, _, rest = item.partition(":")
        if rest and head in SCENARIOS and "=" not in head:
            out[head].append(rest)
        else:
            for d in out:
                out[d].append(item)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Personalization study: Per-FedAvg (HF, FO), FedAvg, pFedMe; sync and async."
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (runs/ inside it, tables and figures beside)")
    p.add_argument("--scale", choices=list(SCALES), default="small")
    p.add_argument("--seeds", type=int, default=None, help="seeds per setting (default: the scale's / the file's)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="runs at once (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--datasets", default=",".join(SCENARIOS), help="comma-separated subset of: " + ", ".join(SCENARIOS))
    p.add_argument(
        "--mnist-root", default=None, help="folder holding MNIST/raw/ (torchvision layout); default: the scenario's"
    )
    p.add_argument("--download", action="store_true", help="let torchvision download MNIST into --mnist-root")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="[DATASET:]KEY=VALUE",
        help="extra scenario override, e.g. mnist:clients.count=20 (no prefix: both data sets)",
    )
    p.add_argument("--tune", action="store_true", help="run the step-size grid instead (tuning.csv / tuning.md)")
    p.add_argument(
        "--matched",
        action="store_true",
        help="run Per-FedAvg HF and FO at the same step sizes (MATCHED_GRID), paired by seed "
        "(matched.csv / matched.md / matched.png)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rerun every run, also finished ones and runs of a different setting in --out",
    )
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    extra = parse_sets(args.sets)
    if args.mnist_root:
        extra["mnist"].append(f"data.root={Path(args.mnist_root).expanduser().resolve()}")
    if args.download:
        extra["mnist"].append("data.download=true")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    command = "python analysis/personalization_study.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    from asyncfl.errors import AsyncFLError

    try:
        written = run_study(
            args.out,
            args.scale,
            args.seeds,
            args.workers,
            datasets,
            extra,
            args.tune,
            args.quiet,
            command.strip(),
            args.threads,
            args.matched,
            args.force,
        )
    except AsyncFLError as exc:
        print(f"personalization_study: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    for path in written.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
