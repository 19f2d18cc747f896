"""Golden runs: every shipped scenario that needs no downloaded data, at a tiny fixed size.

Each scenario runs on the CPU with one torch thread and the overrides in ``TINY`` below; its
``events.csv`` (the simulator's record: no floating-point work of torch's in it) must match the
recorded SHA-256 exactly, and its ``metrics.csv`` must match the committed copy to 1e-6 relative
(the numbers come from torch kernels, whose last bits may move between torch releases).

Regenerate after an intended change, and say why in the commit message:

    python tests/golden_runs.py --write

The test is ``tests/test_golden.py``; the procedure is in docs/design.md ("Golden runs").
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
GOLDEN = Path(__file__).resolve().parent / "golden"

# Scenarios whose data is generated (no download); each runs at this size.
GOLDEN_SCENARIOS = (
    "delay_scale",
    "persafl_staleness",
    "persafl_staleness_heavytail",
    "persafl_staleness_wait",
    "pfedme_synthetic",
    "quickstart",
    "study_personalization_synthetic",
    "sync_vs_async_stragglers",
)
TINY = (
    "clients.count=16",
    "stop.client_updates=48",
    "execution.threads=1",
    "execution.device=cpu",
)


def run_tiny(name: str, out: Path) -> Path:
    """Run scenarios/NAME.yaml at the golden size into ``out``; return the run directory."""
    import asyncfl

    scenario = asyncfl.load_scenario(SCENARIOS / f"{name}.yaml", overrides=_overrides(name))
    run_dir = out / name
    asyncfl.run(scenario, run_dir, base_dir=SCENARIOS)
    return run_dir


def _overrides(name: str) -> list[str]:
    """The tiny size; a scenario with more in flight than clients keeps concurrency <= count."""
    import yaml

    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    extra = []
    server = data.get("server", {})
    for key in ("concurrency", "clients_per_round"):
        if int(server.get(key, 0) or 0) > 8:
            extra.append(f"server.{key}=8")
    if int(server.get("buffer_size", 0) or 0) > 4:
        extra.append("server.buffer_size=4")
    return [*TINY, *extra]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(name: str, run_dir: Path) -> dict[str, str]:
    return {
        "events_sha256": digest(run_dir / "events.csv"),
        "metrics_sha256": digest(run_dir / "metrics.csv"),
    }


def read_metrics(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def write_all() -> None:
    """Regenerate tests/golden/: one JSON of digests and one metrics CSV per scenario."""
    GOLDEN.mkdir(exist_ok=True)
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in GOLDEN_SCENARIOS:
            run_dir = run_tiny(name, Path(tmp))
            digests[name] = record(name, run_dir)
            (GOLDEN / f"{name}.metrics.csv").write_bytes((run_dir / "metrics.csv").read_bytes())
            print(f"{name}: {digests[name]['events_sha256'][:12]} {digests[name]['metrics_sha256'][:12]}")
    (GOLDEN / "digests.json").write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate tests/golden/ from the current code")
    args = parser.parse_args(argv)
    if not args.write:
        parser.print_help()
        return 0
    write_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
