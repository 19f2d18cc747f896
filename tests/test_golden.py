"""Golden runs: each shipped synthetic scenario at a tiny size reproduces its recorded outputs.

A change that moves any number fails here. If the change is intended, regenerate with
``python tests/golden_runs.py --write`` and say why in the commit message (docs/design.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from golden_runs import GOLDEN, GOLDEN_SCENARIOS, SCENARIOS, digest, run_tiny

DIGESTS = json.loads((GOLDEN / "digests.json").read_text())


def test_every_generated_data_scenario_has_a_golden_run() -> None:
    """No synthetic scenario escapes the golden set, and no golden entry outlives its file."""
    import yaml

    synthetic = sorted(
        p.stem
        for p in SCENARIOS.glob("*.yaml")
        if yaml.safe_load(p.read_text()).get("data", {}).get("dataset") in ("synthetic", "quadratic", "fake")
    )
    assert sorted(GOLDEN_SCENARIOS) == synthetic
    assert sorted(DIGESTS) == synthetic


@pytest.mark.parametrize("name", GOLDEN_SCENARIOS)
def test_golden_run(name: str, tmp_path: Path) -> None:
    run_dir = run_tiny(name, tmp_path)
    assert digest(run_dir / "events.csv") == DIGESTS[name]["events_sha256"], (
        f"{name}: events.csv changed; if intended, run `python tests/golden_runs.py --write` and say why"
    )
    got = pd.read_csv(run_dir / "metrics.csv")
    want = pd.read_csv(GOLDEN / f"{name}.metrics.csv")
    assert list(got.columns) == list(want.columns)
    assert got[["sim_time", "server_version", "client_updates", "metric"]].equals(
        want[["sim_time", "server_version", "client_updates", "metric"]]
    )
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-6, atol=1e-9, err_msg=name)
