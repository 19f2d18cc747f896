"""Scenario loading: strict validation, defaults, overrides and one-line errors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from asyncfl.config import apply_overrides, dump_scenario, load_scenario, validate
from asyncfl.config.loader import parse_override
from asyncfl.errors import ScenarioError

BASE: dict[str, Any] = {
    "seed": 3,
    "algorithm": {"name": "fedasync", "lr": 0.1, "local_steps": 3},
    "server": {"mode": "async", "concurrency": 5, "staleness_weight": "polynomial"},
    "clients": {"count": 20},
    "stop": {"server_steps": 10},
}


def test_defaults_are_filled_and_round_trip() -> None:
    s = load_scenario(BASE)
    assert s.algorithm.batch_size == 32
    assert s.server.staleness_weight.name == "polynomial" and s.server.staleness_weight.a == 0.5
    text = dump_scenario(s)
    assert load_scenario(yaml.safe_load(text)) == s
    # every default is written out
    assert "max_staleness: null" in text and "staleness_policy: drop" in text


@pytest.mark.parametrize(
    ("raw", "value"),
    [("null", None), ("8", 8), ("1e-3", 1e-3), ("true", True), ("[1, 2]", [1, 2]), ("abc", "abc")],
)
def test_set_values_are_yaml_scalars(raw: str, value: object) -> None:
    assert parse_override(f"a.b={raw}") == ("a.b", value)


def test_set_null_staleness() -> None:
    s = load_scenario({**BASE, "server": {**BASE["server"], "max_staleness": 4}}, ["server.max_staleness=null"])
    assert s.server.max_staleness is None


def test_switching_algorithm_drops_keys_only_the_old_one_takes() -> None:
    s = load_scenario(BASE, ["algorithm.name=pfedme"])
    assert s.algorithm.name == "pfedme"
    assert s.algorithm.lam == 15.0  # pfedme's defaults
    s = load_scenario(BASE, ["algorithm.name=per_fedavg", "algorithm.variant=fo"])
    assert s.algorithm.name == "per_fedavg" and s.algorithm.variant == "fo" and s.algorithm.local_steps == 3


def test_switching_keeps_keys_given_on_the_command_line() -> None:
    with pytest.raises(ScenarioError, match=r"^algorithm\.lr: no such key; allowed here: .*lam"):
        load_scenario(BASE, ["algorithm.name=pfedme", "algorithm.lr=0.1"])


def test_switching_data_and_model() -> None:
    s = load_scenario(
        {**BASE, "data": {"dataset": "synthetic", "alpha": 1.0}},
        ["data.dataset=mnist", "data.root=/tmp/x", "data.partition=dirichlet", "model.name=cnn"],
    )
    assert s.data.dataset == "mnist" and s.data.partition.name == "dirichlet" and s.model.name == "cnn"


@pytest.mark.parametrize(
    ("data", "overrides", "pattern"),
    [
        ({"bogus": 1}, [], r"^bogus: unknown key; allowed: algorithm, clients"),
        ({"algorithm": {"name": "fedavg", "alpha": 1}}, [], r"^algorithm\.alpha: unknown key; allowed: batch_size"),
        ({"server": {"mode": "x"}}, [], r"^server\.mode: .*'sync', 'async' or 'buffered'"),
        ({"algorithm": {"name": "nope"}}, [], r"^algorithm\.name: unknown choice 'nope'; allowed: .*per_fedavg"),
        ({"system": {"compute": {"speed": {"dist": "gamma"}}}}, [], r"^system\.compute\.speed\.dist: unknown choice"),
        (
            {"system": {"network": {"latency": -1}}},
            [],
            r"^system\.network\.latency\.value: .*greater than or equal to 0",
        ),
        (
            {"server": {"mode": "buffered", "buffer_size": 9, "concurrency": 5}},
            [],
            r"server\.buffer_size \(9\) must be <= server\.concurrency \(5\)",
        ),
        ({"stop": {}}, [], r"^stop: set at least one of"),
        ({}, ["server.bogus=1"], r"^server\.bogus: no such key; allowed here: aggregation"),
        ({}, ["nothing.here=1"], r"^nothing: unknown key"),
        ({}, ["server.lr=-1"], r"^server\.lr: Input should be greater than 0 \(got -1\)"),
        ({}, ["noequals"], r"--set needs KEY=VALUE"),
        ({"clients": {"count": True}}, [], r"^clients\.count: expected an integer, got a boolean \(true\)$"),
        ({"stop": {"server_steps": 2.5}}, [], r"^stop\.server_steps: expected an integer, got a float \(2\.5\)$"),
        ({}, ["algorithm.lr=.inf"], r"^algorithm\.lr: Input should be a finite number"),
        ({}, [".".join(["a"] * 12) + "=1"], r"no scenario key is nested this deeply"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(data: dict, overrides: list[str], pattern: str) -> None:
    with pytest.raises(ScenarioError, match=pattern) as info:
        raw = apply_overrides(data, overrides) if overrides else data
        validate(raw)
    assert "\n" not in str(info.value)


def test_malformed_yaml_and_missing_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {mode: async\n  lr: [\n")
    with pytest.raises(ScenarioError, match="malformed YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="top level must be a mapping"):
        load_scenario(lst)


def test_yaml_cannot_construct_python_objects(tmp_path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ScenarioError, match="malformed YAML"):
        load_scenario(evil)


def test_schema_is_json_schema() -> None:
    from asyncfl.config.schema import Scenario

    schema = Scenario.model_json_schema()
    assert schema["type"] == "object" and "algorithm" in schema["properties"]


def test_duplicate_keys_alias_bombs_and_deep_nesting_are_refused(tmp_path) -> None:
    """YAML keeps the last of two equal keys silently; an alias bomb expands to billions of
    values; deep nesting overflows the recursion limit: each is a one-line ScenarioError."""
    dup = tmp_path / "dup.yaml"
    dup.write_text("seed: 1\nclients: {count: 5}\nseed: 2\n")
    with pytest.raises(ScenarioError, match=r"line 3, column 1: duplicate key 'seed'"):
        load_scenario(dup)
    bomb = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    with pytest.raises(ScenarioError, match="more than 100,000 values"):
        load_scenario(tmp_path / "bomb.yaml")
    (tmp_path / "deep.yaml").write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ScenarioError, match="nested too deeply"):
        load_scenario(tmp_path / "deep.yaml")
    ok = tmp_path / "anchors.yaml"  # ordinary anchors and aliases still work
    ok.write_text("seed: &n 12\nclients: {count: *n}\nstop: {server_steps: 3}\n")
    assert load_scenario(ok).clients.count == 12


def test_set_switches_a_distribution_and_drops_the_old_ones_keys() -> None:
    """--set system.compute.speed=exponential re-tags the lognormal mapping (dropping sigma), as
    it does for algorithms, data sets and partitions."""
    s = load_scenario(BASE, ["system.compute.speed=exponential", "system.compute.speed.mean=300"])
    assert s.system.compute.speed.dist == "exponential" and s.system.compute.speed.mean == 300.0
    s = load_scenario(
        BASE, ["system.network.download_bandwidth.dist=constant", "system.network.download_bandwidth.value=5e6"]
    )
    assert s.system.network.download_bandwidth.dist == "constant"


def test_an_empty_scenario_file_is_an_error(tmp_path) -> None:
    """An empty file (or only comments) is a mistake, not 'all defaults'; '{}' asks for them."""
    for text in ("", "\n\n", "# nothing yet\n"):
        (tmp_path / "e.yaml").write_text(text)
        with pytest.raises(ScenarioError, match="is empty"):
            load_scenario(tmp_path / "e.yaml")
    (tmp_path / "d.yaml").write_text("{}\n")
    assert load_scenario(tmp_path / "d.yaml").name == "scenario"
