"""One truth for scenario files: ``asyncfl schema`` (JSON Schema, Draft 2020-12) accepts every file the
loader accepts -- the shipped scenarios, a run directory's resolved scenario.yaml, the shorthands --
and rejects what the loader rejects for its type (a bool or quoted number where a number goes, a
float where a count goes); every property carries a description for editors."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_scenario
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncfl.cli import main
from asyncfl.config import dump_scenario, load_scenario, validate
from asyncfl.config.loader import parse_yaml, read_yaml
from asyncfl.errors import ScenarioError

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def _cli_schema() -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


SCHEMA = _cli_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _schema_errors(data: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in VALIDATOR.iter_errors(data)]


def test_schema_is_draft_2020_12_with_id() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"].startswith("urn:asyncfl:scenario:")
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def _properties(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for key, prop in (node.get("properties") or {}).items():
            out.append((f"{where}.{key}", prop))
        for key, value in node.items():
            out.extend(_properties(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_properties(value, f"{where}[{i}]"))
    return out


def test_every_property_has_a_description() -> None:
    props = _properties(SCHEMA)
    assert len(props) > 150  # every key of every component, not only the top level
    missing = [where for where, prop in props if len(prop.get("description", "")) < 12]
    assert not missing, missing
    # units and paper symbols live in the descriptions, e.g.:
    descr = {where.rsplit("/", 1)[-1]: prop["description"] for where, prop in props}
    assert "bytes per second" in descr["NetworkConfig.download_bandwidth"]
    assert "seconds" in descr["NetworkConfig.latency"]
    assert "samples per second" in descr["ComputeConfig.speed"]
    assert "tau" in descr["ServerConfig.max_staleness"]
    assert "alpha" in descr["PerFedAvgConfig.alpha"] and "beta" in descr["PerFedAvgConfig.beta"]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_every_shipped_scenario_validates_against_the_schema(path: Path) -> None:
    assert len(SCENARIOS) >= 14
    data = read_yaml(path)  # the loader's YAML: 2.0e6 is a float, as in YAML 1.2
    load_scenario(path)
    assert _schema_errors(data) == []
    # and its fully resolved form (what a run directory records)
    assert _schema_errors(yaml.safe_load(dump_scenario(load_scenario(path)))) == []


def test_a_run_directorys_scenario_yaml_validates(tmp_path: Path, tiny: dict[str, Any]) -> None:
    tiny["stop"] = {"server_steps": 3}
    scen = write_scenario(tmp_path / "tiny.yaml", tiny)
    out = tmp_path / "run"
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", str(scen), "--out", str(out), "--quiet"]) == 0
    recorded = read_yaml(out / "scenario.yaml")
    assert recorded["sweep"] is None and recorded["data"]["partition"] == {"name": "natural"}
    assert _schema_errors(recorded) == []


# Documents the loader and the schema must agree on: (YAML text, accepted?).
AGREE = [
    ("model: logreg", True),
    ("model: {name: mlp, hidden: [8]}", True),
    ("algorithm: pfedme", True),
    ("data: mnist", True),
    ("data: {partition: iid}", True),  # the default data set (synthetic) takes the tag-less mapping
    ("data: {dataset: mnist, partition: dirichlet}", True),
    ("data: {dataset: mnist, partition: {alpha: 0.3}}", False),  # tag-less: mnist's default, iid
    ("data: {alpha: 0.1}", True),
    ("data: {quantity_skew: lognormal}", True),
    ("server: {staleness_weight: hinge}", True),
    ("system: {availability: on_off}", True),
    ("system: {network: {latency: 0.05, download_bandwidth: 2.0e6}}", True),
    ("system: {network: {latency: 0}}", True),
    ("system: {network: {latency: -1}}", False),
    ("system: {compute: {speed: {mean: 500}}}", True),  # the default lognormal
    ("system: {compute: {speed: {dist: exponential, mean: 500}}}", True),
    ("system: {compute: {speed: exponential}}", False),  # exponential needs its mean
    ("system: {compute: {speed: pareto}}", True),
    ("system: {compute: {jitter: {sigma: 0.3}}}", False),  # jitter's default is a constant
    ("system: {compute: {speed: {mean: 500, value: 3}}}", False),
    ("algorithm: {lr: true}", False),
    ("algorithm: {lr: '0.05'}", False),
    ("algorithm: {lr: 1}", True),
    ("data: {dataset: mnist, download: 0}", False),
    ("data: {dataset: mnist, download: true}", True),
    ("clients: {count: '5'}", False),
    ("clients: {count: true}", False),
    ("clients: {count: 2.5}", False),
    ("seed: '3'", False),
    ("system: {network: {latency: true}}", False),
    ("system: {network: {latency: '0.05'}}", False),
    ("model: [logreg]", False),
    ("algorithm: nope", False),
    ("sweep: {grid: {algorithm.lr: [0.1, 0.2]}, seeds: 2}", True),
    ("sweep: {grid: {algorithm.lr: 0.1}}", False),
]


@pytest.mark.parametrize(("text", "ok"), AGREE, ids=[t for t, _ in AGREE])
def test_loader_and_schema_agree_on_shorthands_and_types(text: str, ok: bool) -> None:
    data = parse_yaml(text)
    try:
        validate(data)
        loader_ok = True
    except ScenarioError as exc:
        loader_ok = False
        assert "\n" not in str(exc)
    assert loader_ok is ok, text
    assert (not _schema_errors(data)) is ok, (text, _schema_errors(data))


# ------------------------------------------------------------------------------------------------
# Property: over mutated scenarios, the loader never accepts what the schema rejects; the schema
# accepts what the loader rejects only for the rules JSON Schema cannot state (cross-key rules, and
# an integral float such as 3.0 where a count goes: JSON has one number type).
# ------------------------------------------------------------------------------------------------

BASE = yaml.safe_load(dump_scenario(load_scenario({"stop": {"server_steps": 5}})))
CROSS_KEY = ("must be <=", "needs model.name", "needs data.dataset", "set at least one of", "high must be >= low")
VALUES = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        1,
        3,
        -1,
        0.5,
        2.0,
        1e6,
        "0.5",
        "3",
        "true",
        "abc",
        "",
        [],
        [1, 2],
        {},
        {"k": 1},
        "constant",
        "pareto",
        "lognormal",
        "exponential",
        "iid",
        "dirichlet",
        "natural",
        "mlp",
        "cnn",
        "hinge",
        "fedavg",
        "pfedme",
        "mnist",
        "leaf",
        "on_off",
        "sync",
        "buffered",
        "wait",
        {"dist": "uniform", "low": 1, "high": 2},
        {"mean": 3.0},
        {"name": "dirichlet", "alpha": 0.1},
        {"value": 2},
    ]
)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    return out


PATHS = _paths(BASE)


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    cursor: Any = data
    for part in path[:-1]:
        if not isinstance(cursor, dict) or not isinstance(cursor.get(part), dict):
            return
        cursor = cursor[part]
    cursor[path[-1]] = value


def _integral_float_in_count(data: Any) -> bool:
    if isinstance(data, dict):
        return any(_integral_float_in_count(v) for v in data.values())
    if isinstance(data, list):
        return any(_integral_float_in_count(v) for v in data)
    return isinstance(data, float) and data.is_integer()


@settings(
    max_examples=int(os.environ.get("ASYNCFL_FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3), partial=st.booleans())
def test_schema_admits_exactly_what_the_loader_admits(edits: list[tuple[tuple[str, ...], Any]], partial: bool) -> None:
    data = json.loads(json.dumps(BASE))
    if partial:  # a hand-written file names only some keys
        data = {k: data[k] for k in ("seed", "stop")}
    for path, value in edits:
        _set(data, path, json.loads(json.dumps(value)))
    try:
        validate(data)
        loader_error = None
    except ScenarioError as exc:
        loader_error = str(exc)
    schema_errors = _schema_errors(data)
    if loader_error is None:
        assert schema_errors == [], (data, schema_errors)
    elif not schema_errors:
        assert any(rule in loader_error for rule in CROSS_KEY) or _integral_float_in_count(data), (data, loader_error)
