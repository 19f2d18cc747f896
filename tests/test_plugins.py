"""Plug-ins: a package of the user's own, found through Python entry points, adds a client rule, a
model, a data set, a delay model, a staleness weight and a selection strategy that scenario files
name like built-ins.

The plug-in package is written into a temporary folder as a module plus a ``.dist-info`` folder with
``entry_points.txt`` (what ``pip install`` would write; no network, no build), and that folder goes
on PYTHONPATH of CLI subprocesses. Its components are twins of built-ins under new names (FedAvg
whose step is lr x scale, logistic regression, Synthetic, a fixed delay, the polynomial weight
with its exponent called ``power``, least-recently-selected), so a plug-in run
must reproduce the built-in run's events.csv and metrics.csv byte for byte: the plug-in's code, not
an approximation of it, ran end to end -- through ``asyncfl run``, an interrupted run and
``asyncfl resume``, and a 2-point ``asyncfl sweep``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TINY, write_scenario

import asyncfl

PLUGIN = '''
"""asyncfl_toyplug: twins of asyncfl built-ins under new names (a plug-in test fixture)."""
from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor, nn

from asyncfl.algorithms.base import Batches, ServerRule, check_batches
from asyncfl.algorithms.functional import gradient_descent, loss_grad
from asyncfl.algorithms.sgd import LocalSGD
from asyncfl.config.schema import (
    DistBase,
    ModelBase,
    NonNegFloat,
    PositiveFloat,
    SelectionBase,
    SGDHyper,
    StalenessWeightBase,
    SyntheticData,
)
from asyncfl.data.registry import DataSet
from asyncfl.data.synthetic import build_synthetic
from asyncfl.models.dense import DenseNet
from asyncfl.registry import Component
from asyncfl.sim.distributions import Constant
from asyncfl.sim.selection import LeastRecent


class ScaledAvgConfig(SGDHyper):
    """FedAvg whose local step is lr x scale."""

    name: Literal["scaled_avg"] = "scaled_avg"
    scale: PositiveFloat = 1.0
    """Multiplies lr in every local and fine-tuning step."""


class ScaledAvg(LocalSGD, ScaledAvgConfig):
    server_rule: ClassVar[ServerRule] = "delta"
    personal_step: ClassVar[str | None] = "lr"

    def client_update(self, loss, w: Tensor, batches: Batches) -> Tensor:
        check_batches(batches, self.steps, self.draws_per_step)
        w0, step = w, self.lr * self.scale
        for s in range(self.local_steps):
            x, y, m = batches.draw(s, 0)
            w = w - step * loss_grad(loss, w, x, y, m)
        return w - w0

    def personalize(self, loss, w, x, y, m, adapt_steps):
        return gradient_descent(loss, w, x, y, m, self.lr * self.scale, adapt_steps)


class LinearConfig(ModelBase):
    """One linear layer on the flattened input."""

    name: Literal["linear"] = "linear"


def build_linear(cfg: LinearConfig, spec) -> nn.Module:
    # a DenseNet, so that the executor's hand-written gradient of dense nets serves it as it
    # serves the built-in logreg (a custom nn.Module runs through autograd: same numbers up to
    # float rounding, not byte for byte)
    return DenseNet(spec.num_features, [], spec.num_classes)


class SynthTwin(SyntheticData):
    dataset: Literal["synth_twin"] = "synth_twin"


class FixedDist(DistBase):
    dist: Literal["fixed"] = "fixed"
    seconds: NonNegFloat = 1.0


class InvPowerWeight(StalenessWeightBase):
    """s(tau) = (tau + 1)^(-power)."""

    name: Literal["inv_power"] = "inv_power"
    power: NonNegFloat = 0.5


def inv_power(cfg: InvPowerWeight):
    p = cfg.power
    return lambda tau: (tau + 1.0) ** (-p)


class OldestFirstConfig(SelectionBase):
    """The idle client picked least recently."""

    name: Literal["oldest_first"] = "oldest_first"


class OldestFirst(LeastRecent):
    name = "oldest_first"


ALGORITHM = Component(config=ScaledAvgConfig, build=ScaledAvg)
MODEL = Component(config=LinearConfig, build=build_linear)
DATA = Component(
    config=SynthTwin,
    build=DataSet(build_synthetic, lambda cfg, n: (n * cfg.mean_samples * 1.3, cfg.dimension * 4 + 8)),
)
DELAY = Component(config=FixedDist, build=lambda cfg: Constant(cfg.seconds))
WEIGHT = Component(config=InvPowerWeight, build=inv_power)
SELECTION = Component(config=OldestFirstConfig, build=OldestFirst)
NOT_A_COMPONENT = 42
NOT_A_MODEL = Component(config=dict, build=build_linear)
'''

ENTRY_POINTS = """
[asyncfl.algorithms]
scaled_avg = asyncfl_toyplug:ALGORITHM

[asyncfl.models]
linear = asyncfl_toyplug:MODEL

[asyncfl.datasets]
synth_twin = asyncfl_toyplug:DATA

[asyncfl.delays]
fixed = asyncfl_toyplug:DELAY

[asyncfl.staleness_weights]
inv_power = asyncfl_toyplug:WEIGHT

[asyncfl.selection]
oldest_first = asyncfl_toyplug:SELECTION
"""

# Long enough (a few seconds) for a SIGTERM to land mid-run.
BASE: dict[str, Any] = {
    **TINY,
    "server": {**TINY["server"], "selection": "least_recent"},  # TINY's weight: polynomial, a = 0.5
    "stop": {"server_steps": 300},
    "eval": {"every_steps": 50},
    "clients": {"count": 20},
    "system": {
        "compute": {"speed": {"dist": "lognormal", "mean": 200.0, "sigma": 1.0}},
        "network": {"latency": {"dist": "constant", "value": 0.25}},
    },
}
BUILTIN: dict[str, Any] = {**BASE, "algorithm": {"name": "fedavg", "lr": 0.05, "local_steps": 2, "batch_size": 8}}
PLUGGED: dict[str, Any] = {
    **BASE,
    "algorithm": {"name": "scaled_avg", "lr": 0.025, "scale": 2.0, "local_steps": 2, "batch_size": 8},
    "model": {"name": "linear"},
    "data": {**BASE["data"], "dataset": "synth_twin"},
    "system": {**BASE["system"], "network": {"latency": {"dist": "fixed", "seconds": 0.25}}},
    "server": {
        **BASE["server"],
        "staleness_weight": {"name": "inv_power", "power": 0.5},
        "selection": {"name": "oldest_first"},
    },
}


def _install(site: Path, entry_points: str = ENTRY_POINTS, name: str = "asyncfl_toyplug") -> Path:
    """Write the plug-in as an installed distribution would look on sys.path."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{name}.py").write_text(PLUGIN)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points).lstrip())
    return site


def _env(site: Path) -> dict[str, str]:
    path = [str(site), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def _cli(site: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "asyncfl", *args], env=_env(site), capture_output=True, text=True, timeout=600
    )
    if check:
        assert res.returncode == 0, res.stderr
    return res


def _choices(prop: dict[str, Any]) -> dict[str, str]:
    """The tag -> definition mapping of a tagged key's JSON schema (its mapping form among the
    shorthand forms of anyOf)."""
    for form in [prop, *prop.get("anyOf", [])]:
        if "discriminator" in form:
            return dict(form["discriminator"]["mapping"])
    raise AssertionError(f"no tagged union in {prop}")


def _same_outputs(a: Path, b: Path) -> None:
    for name in ("events.csv", "metrics.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install(tmp_path_factory.mktemp("plugin") / "site")


@pytest.fixture(scope="module")
def runs(site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The built-in run and its plug-in twin, each run once for the module."""
    d = tmp_path_factory.mktemp("runs")
    out = {}
    for name, data in (("builtin", BUILTIN), ("plugged", PLUGGED)):
        scen = write_scenario(d / f"{name}.yaml", data)
        _cli(site, "run", str(scen), "--out", str(d / name), "--quiet")
        out[name] = d / name
    out["plugged.yaml"] = d / "plugged.yaml"
    return out


def test_a_plugin_run_equals_its_builtin_twin(runs: dict[str, Path]) -> None:
    _same_outputs(runs["builtin"], runs["plugged"])
    resolved = yaml.safe_load((runs["plugged"] / "scenario.yaml").read_text())
    assert resolved["algorithm"] == {**PLUGGED["algorithm"], "weight_decay": 0.0, "prox": 0.0}
    assert resolved["model"] == {"name": "linear"}
    assert resolved["data"]["dataset"] == "synth_twin"
    assert resolved["system"]["network"]["latency"] == {"dist": "fixed", "seconds": 0.25}
    assert resolved["server"]["staleness_weight"] == {"name": "inv_power", "power": 0.5}
    assert resolved["server"]["selection"] == {"name": "oldest_first"}
    result = asyncfl.load_run(runs["plugged"])
    assert result.status == "completed"
    # the plug-in weight was used: stale updates carry (tau + 1)^(-1/2), not 1
    applied = result.events[result.events["status"] == "applied"]
    assert (applied["staleness"] > 0).any()
    assert applied["weight"].tolist() == pytest.approx([(t + 1.0) ** -0.5 for t in applied["staleness"]], rel=1e-12)
    # the plug-in selection was used: least recently selected first, so the first N tasks went
    # to the N clients, each once
    n = PLUGGED["clients"]["count"]
    assert sorted(result.events.sort_values("task")["client"].iloc[:n]) == list(range(n))


def test_interrupted_plugin_run_resumes_byte_identical(site: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "term"
    cmd = [
        sys.executable,
        "-m",
        "asyncfl",
        "run",
        str(runs["plugged.yaml"]),
        "--out",
        str(out),
        "--quiet",
        "--checkpoint-every",
        "20",
    ]
    proc = subprocess.Popen(cmd, env=_env(site), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err  # stopped part-way, not finished
    assert asyncfl.load_run(out).status == "interrupted"
    _cli(site, "resume", str(out), "--quiet")
    _same_outputs(runs["plugged"], out)


def test_two_point_sweep_over_a_plugin_hyperparameter(site: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    """scale=2 reproduces the plug-in run; scale=1 (half the step) is another run."""
    out = tmp_path / "sweep"
    _cli(site, "sweep", str(runs["plugged.yaml"]), "--grid", "algorithm.scale=1,2", "--out", str(out), "--quiet")
    dirs = sorted(p for p in out.iterdir() if (p / "manifest.json").is_file())
    assert [p.name for p in dirs] == ["algorithm.scale=1,seed=1", "algorithm.scale=2,seed=1"]
    _same_outputs(runs["plugged"], dirs[1])
    assert (dirs[0] / "metrics.csv").read_bytes() != (dirs[1] / "metrics.csv").read_bytes()
    frame = asyncfl.load_sweep(out)
    assert sorted(set(frame["algorithm.scale"])) == [1.0, 2.0]


def test_schema_and_errors_name_the_plugins(site: Path, tmp_path: Path) -> None:
    schema = json.loads(_cli(site, "schema").stdout)
    props = schema["properties"]
    mapping = _choices(props["algorithm"])
    assert mapping["scaled_avg"] == "#/$defs/ScaledAvgConfig" and "fedavg" in mapping
    assert "scale" in schema["$defs"]["ScaledAvgConfig"]["properties"]
    assert "linear" in _choices(props["model"]) and "synth_twin" in _choices(props["data"])
    latency = schema["$defs"]["NetworkConfig"]["properties"]["latency"]
    assert _choices(latency)["fixed"] == "#/$defs/FixedDist"
    server = schema["$defs"]["ServerConfig"]["properties"]
    assert _choices(server["staleness_weight"])["inv_power"] == "#/$defs/InvPowerWeight"
    assert "power" in schema["$defs"]["InvPowerWeight"]["properties"]
    assert _choices(server["selection"])["oldest_first"] == "#/$defs/OldestFirstConfig"
    assert {"polynomial", "hinge"} <= set(_choices(server["staleness_weight"]))
    bad = write_scenario(tmp_path / "bad.yaml", {**PLUGGED, "algorithm": {"name": "scaled_avg", "scale": 0}})
    res = _cli(site, "run", str(bad), check=False)
    assert res.returncode == 2 and "algorithm.scale" in res.stderr and "Traceback" not in res.stderr
    typo = write_scenario(tmp_path / "typo.yaml", {**PLUGGED, "algorithm": {"name": "scaled_agv"}})
    res = _cli(site, "run", str(typo), check=False)
    assert res.returncode == 2 and "scaled_agv" in res.stderr and "'scaled_avg'" in res.stderr


@pytest.mark.parametrize(
    ("entry_points", "message"),
    [
        ("[asyncfl.models]\nlinear = asyncfl_missing:MODEL\n", "plug-in 'linear' (entry point 'asyncfl_missing:MODEL'"),
        (
            "[asyncfl.models]\nlinear = asyncfl_toyplug:NOT_A_COMPONENT\n",
            "names int, not an asyncfl.registry.Component",
        ),
        ("[asyncfl.models]\nlogreg = asyncfl_toyplug:MODEL\n", "model 'logreg'"),
        ("[asyncfl.models]\nlinear = asyncfl_toyplug:NOT_A_MODEL\n", "is not a pydantic model class"),
        ("[asyncfl.algorithms]\nother = asyncfl_toyplug:ALGORITHM\n", "must declare name: Literal['other']"),
        ("[asyncfl.staleness_weights]\npolynomial = asyncfl_toyplug:WEIGHT\n", "staleness weight 'polynomial'"),
        ("[asyncfl.selection]\nother = asyncfl_toyplug:SELECTION\n", "must declare name: Literal['other']"),
    ],
)
def test_a_broken_plugin_is_one_line_exit_2(tmp_path: Path, entry_points: str, message: str) -> None:
    site = _install(tmp_path / "site", entry_points)
    scen = write_scenario(tmp_path / "s.yaml", {**TINY, "stop": {"server_steps": 2}})
    res = _cli(site, "run", str(scen), check=False)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
