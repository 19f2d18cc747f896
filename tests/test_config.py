"""Scenario loading: strict validation, defaults, overrides and one-line errors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from asyncfl.config import apply_overrides, dump_scenario, load_scenario, validate
from asyncfl.config.loader import parse_override, parse_yaml
from asyncfl.errors import ScenarioError, UserError

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


# ------------------------------------------------------------------------------------------------
# Strict types (issue 15): booleans only for booleans, numbers only for numbers, ints for counts.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("algorithm: {lr: true}", "algorithm.lr: expected a number, got a boolean (true)"),
        (
            "algorithm: {lr: '0.05'}",
            "algorithm.lr: expected a number, got a string ('0.05'); write numbers without quotes",
        ),
        ("data: {dataset: mnist, download: 0}", "data.download: expected true or false, got an integer (0)"),
        ("eval: {grad_norm: 'yes'}", "eval.grad_norm: expected true or false, got a string ('yes')"),
        ("clients: {count: 3.0}", "clients.count: expected an integer, got a float (3.0)"),
        (
            "server: {max_staleness: '4'}",
            "server.max_staleness: expected an integer, got a string ('4'); write numbers without quotes",
        ),
        ("seed: false", "seed: expected an integer, got a boolean (false)"),
        ("model: {name: mlp, hidden: [80, true]}", "model.hidden.1: expected an integer, got a boolean (true)"),
        ("name: 12", "name: expected a string, got an integer (12)"),
        (
            "system: {network: {latency: true}}",
            "system.network.latency: expected a mapping, a number >= 0 or one of constant, pareto, got a boolean (true)",
        ),
        (
            "server: {staleness_weight: 3}",
            "server.staleness_weight: expected a mapping or one of constant, polynomial, hinge, exponential, got an integer (3)",
        ),
    ],
)
def test_wrong_types_are_refused_naming_the_key_and_the_type(text: str, message: str) -> None:
    """Issue 15: `lr: true` ran with lr = 1.0, `lr: "0.05"` with 0.05, `download: 0` was False."""
    with pytest.raises(ScenarioError) as info:
        validate(parse_yaml(text))
    assert str(info.value) == message


def test_yaml_1_1_float_quirk_is_read_as_yaml_1_2() -> None:
    """PyYAML (YAML 1.1) reads 2.0e6 and 1e-3 as strings; scenario files and --set read them as floats,
    while a quoted '2.0e6' stays a string (and is refused where a number goes)."""
    data = parse_yaml("a: 2.0e6\nb: 1e-3\nc: -3E+2\nd: '2.0e6'\ne: 1.5\nf: 7\ng: 1_000\n")
    assert data == {"a": 2.0e6, "b": 1e-3, "c": -300.0, "d": "2.0e6", "e": 1.5, "f": 7, "g": 1000}
    assert type(data["f"]) is int and type(data["a"]) is float
    assert parse_override("system.network.download_bandwidth=2.0e6") == ("system.network.download_bandwidth", 2.0e6)
    s = load_scenario(BASE, ["algorithm.lr=0.1", "system.network.download_bandwidth=2.0e6"])
    assert s.algorithm.lr == 0.1 and s.system.network.download_bandwidth.value == 2.0e6  # type: ignore[union-attr]
    with pytest.raises(ScenarioError, match=r"^algorithm\.lr: expected a number, got a string"):
        load_scenario(BASE, ["algorithm.lr='0.1'"])


def test_ints_are_accepted_where_numbers_go() -> None:
    s = load_scenario({**BASE, "algorithm": {"name": "fedasync", "lr": 1}, "system": {"network": {"latency": 0}}})
    assert s.algorithm.lr == 1.0 and isinstance(s.algorithm.lr, float)  # type: ignore[union-attr]
    assert s.system.network.latency.value == 0.0  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------
# Input limits (issue 15): files, --set, --grid and sweep.grid are bounded before expansion.
# ------------------------------------------------------------------------------------------------


def _cli_timed(*args: str, limit: float) -> tuple[int, str]:
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "asyncfl", *args], capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - t0
    assert took < limit, f"took {took:.1f} s"
    return r.returncode, r.stderr


ALIAS_BOMB = (
    "["
    + ", ".join(["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)])
    + "]"
)
"""~430 million values once expanded, 400 characters written."""


def test_huge_sweep_grid_in_a_scenario_file_is_refused_at_once(tmp_path) -> None:
    """Issue 15: a 50 MB scenario whose sweep.grid held a 5-million-item list kept `validate` running
    past 60 s. Now: one line, exit 2, within seconds (the bound includes interpreter start-up)."""
    big = tmp_path / "big.yaml"
    with big.open("w") as fh:
        fh.write("stop: {server_steps: 2}\nsweep:\n  grid:\n    algorithm.lr: [")
        fh.write(", ".join(["0.0100001"] * 5_000_000))
        fh.write("]\n")
    assert big.stat().st_size > 50e6
    for args in (["validate", str(big)], ["sweep", str(big), "--out", str(tmp_path / "o"), "--dry-run"]):
        code, err = _cli_timed(*args, limit=15.0)
        assert code == 2 and err.count("\n") == 1, err
        assert "larger than 1,048,576 bytes" in err
    # under the file limit, over the value limit: still one line, at once
    (tmp_path / "mid.yaml").write_text(
        "stop: {server_steps: 2}\nsweep:\n  grid:\n    a: [" + ", ".join(["1"] * 200_000) + "]\n"
    )
    code, err = _cli_timed("validate", str(tmp_path / "mid.yaml"), limit=15.0)
    assert code == 2 and "more than 100,000 values" in err and err.count("\n") == 1, err


def test_alias_bomb_in_grid_and_set_values_is_refused_at_once(tmp_path) -> None:
    """Issue 15: a YAML alias bomb passed through --grid 'key=[...]' hung (the alias limit applied
    to files only). Now --grid and --set values have the files' limits."""
    scen = tmp_path / "s.yaml"
    scen.write_text("stop: {server_steps: 2}\nclients: {count: 5}\nserver: {concurrency: 2}\n")
    code, err = _cli_timed(
        "sweep",
        str(scen),
        "--out",
        str(tmp_path / "o"),
        "--dry-run",
        "--grid",
        f"algorithm.lr={ALIAS_BOMB}",
        limit=15.0,
    )
    assert code == 2 and err.count("\n") == 1, err
    assert "algorithm.lr: --grid value: more than 10,000 values (after expanding YAML aliases)" in err
    code, err = _cli_timed("validate", str(scen), "--set", f"algorithm.lr={ALIAS_BOMB}", limit=15.0)
    assert code == 2 and "algorithm.lr: --set value: more than 10,000 values" in err and err.count("\n") == 1, err


def test_grid_and_set_limits_in_process() -> None:
    import time

    from asyncfl.study.sweep_plan import MAX_RUNS, parse_grid, plan_sweep

    base = {"stop": {"server_steps": 2}, "clients": {"count": 5}, "server": {"concurrency": 2}}
    cases: list[tuple[Any, str]] = [
        (lambda: parse_grid([f"algorithm.lr={ALIAS_BOMB}"]), r"^algorithm\.lr: --grid value: more than 10,000"),
        (lambda: parse_grid(["a=" + "[" * 40 + "]" * 40]), r"^a: --grid value: nested too deeply"),
        (lambda: parse_grid(["a=" + ",".join(["1"] * 40_000)]), r"^a: --grid item longer than 65,536 characters"),
        (
            lambda: parse_grid(["a=" + ",".join(map(str, range(10_001)))]),
            r"^a: --grid lists 10,001 values; a sweep runs at most 10,000",
        ),
        (lambda: parse_grid([f"k{i}=1" for i in range(65)]), r"^k64: more than 64 --grid keys"),
        (
            lambda: parse_grid(
                [f"b{i}=[" + ", ".join(["&x [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + ["*x"] * 899) + "]" for i in range(12)]
            ),  # 9,901 values each: 12 keys hold 118,812
            r"^b10: --grid values hold more than 100,000 values in all",
        ),
        (lambda: parse_override("a=" + "x" * 20_000), r"^a: --set value longer than 16,384 characters"),
        (lambda: parse_override("a" * 300 + "=1"), r"no scenario key is longer than 200 characters"),
        (
            lambda: plan_sweep(base, ["algorithm.lr=0.1,0.2"], seeds=10**9),
            r"sweep of 2,000,000,000 runs \(2 grid points x 1,000,000,000 seed\(s\)\)",
        ),
        (
            lambda: plan_sweep(
                base,
                [
                    "algorithm.lr=" + ",".join(f"0.{i:03d}" for i in range(1, 101)),
                    "server.lr=" + ",".join(f"0.{i:03d}" for i in range(1, 102)),
                ],
            ),
            r"sweep of 10,100 runs",
        ),
        (
            lambda: plan_sweep({**base, "sweep": {"grid": {"algorithm.lr": [0.1] * 5_000_000}}}),
            r"^scenario mapping: more than 100,000 values$",
        ),
    ]
    for call, pattern in cases:
        t0 = time.perf_counter()
        with pytest.raises((ScenarioError, UserError), match=pattern) as info:
            call()
        assert "\n" not in str(info.value) and len(str(info.value)) < 300
        assert time.perf_counter() - t0 < 5.0, pattern  # about 0.1 s each on an idle core
    assert len(plan_sweep(base, ["algorithm.lr=0.1,0.2"], seeds=3).runs) == 6 <= MAX_RUNS
