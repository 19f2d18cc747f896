"""Reliability: killed runs resume byte-identically, clean stops, divergence, fuzzed inputs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_scenario
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncfl
from asyncfl.cli import main
from asyncfl.config import dump_scenario, load_scenario
from asyncfl.errors import RunDirError

# A run that takes a few seconds, so kills land at many different points.
LONG = {
    "stop": {"server_steps": 300},
    "eval": {"every_steps": 25},
    "clients": {"count": 30},
    "server": {
        "mode": "buffered",
        "concurrency": 8,
        "buffer_size": 3,
        "max_staleness": 10,
        "staleness_weight": {"name": "hinge", "a": 10.0, "b": 2},
        "lr": 1.0,
    },
}


# Async with policy drop and many in flight: most updates are cancelled as certain drops before
# any chunk computes them, so checkpoints hold cancelled tasks.
LONG_DROP = {
    **LONG,
    "clients": {"count": 60},
    "stop": {"server_steps": 1500},
    "eval": {"every_steps": 500},
    "server": {
        "mode": "async",
        "concurrency": 30,
        "max_staleness": 2,
        "staleness_policy": "drop",
        "staleness_weight": {"name": "polynomial", "a": 0.5},
        "lr": 0.6,
    },
}


def _long_scenario(tmp_path: Path, tiny: dict[str, Any], long: dict[str, Any] = LONG) -> Path:
    data = {**tiny, **long}
    return write_scenario(tmp_path / "long.yaml", data)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "asyncfl", *args]


def _started_mid_run(out: Path, scen: Path) -> subprocess.Popen[str]:
    """A run of ``scen`` into ``out`` that has certainly started its engine and is not near its
    end: its first checkpoint (after 25 of 300 server steps) is on disk. Waiting a fixed second
    instead raced the run's own speed (a fast machine finished first; SIGINT then hit the
    interpreter's shutdown)."""
    proc = subprocess.Popen(
        _cli("run", str(scen), "--out", str(out), "--quiet", "--checkpoint-every", "25"),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint" / "latest.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    return proc


def _same_outputs(a: Path, b: Path) -> None:
    for name in ("metrics.csv", "events.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_sigkill_at_random_points_then_resume_is_byte_identical(tmp_path: Path, tiny: dict[str, Any]) -> None:
    scen = _long_scenario(tmp_path, tiny)
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    subprocess.run(_cli("run", str(scen), "--out", str(ref), "--quiet"), check=True)
    full = time.monotonic() - t0
    rng = random.Random(7)
    kills = 0
    for i in range(4):
        out = tmp_path / f"killed{i}"
        proc = subprocess.Popen(_cli("run", str(scen), "--out", str(out), "--quiet", "--checkpoint-every", "9"))
        # wait until the run directory exists, then kill at a random moment of the run
        deadline = time.monotonic() + 60
        while not (out / "scenario.yaml").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, max(full - 2.0, 0.5)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        res = subprocess.run(_cli("resume", str(out), "--quiet"), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        _same_outputs(ref, out)
        assert asyncfl.load_run(out).status == "completed"
        assert not (out / "checkpoint").exists() and not (out / "events.partial.csv").exists()
    assert kills >= 2, "the run finished before most kills: make it longer"


def test_sigterm_writes_interrupted_and_resumes(tmp_path: Path, tiny: dict[str, Any]) -> None:
    scen = _long_scenario(tmp_path, tiny)
    ref, out = tmp_path / "ref", tmp_path / "term"
    subprocess.run(_cli("run", str(scen), "--out", str(ref), "--quiet"), check=True)
    proc = _started_mid_run(out, scen)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "resume" in err and "Traceback" not in err
    partial = asyncfl.load_run(out)  # flushed, complete files of what was done
    assert partial.status == "interrupted" and partial.manifest["server_version"] < 300
    res = subprocess.run(_cli("resume", str(out), "--quiet"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    _same_outputs(ref, out)


def test_async_drop_scenario_cancels_certain_drops(tmp_path: Path, tiny: dict[str, Any]) -> None:
    """LONG_DROP really exercises cancelled tasks (what its resume test relies on)."""
    from asyncfl.runs.runner import build

    built = build(load_scenario(_long_scenario(tmp_path, tiny, LONG_DROP)), tmp_path)
    result = built.engine.run()
    dropped = sum(e.status == "dropped_stale" for e in result.events)
    applied = sum(e.status == "applied" for e in result.events)
    assert dropped > 100
    assert built.backend.executor.stats["jobs"] < applied + dropped // 2


def test_sigkill_with_cancelled_tasks_in_the_checkpoint_resumes_byte_identical(
    tmp_path: Path, tiny: dict[str, Any]
) -> None:
    """Async + drop: a checkpoint holds tasks cancelled as certain drops (never computed, still
    in flight); killed after a few checkpoints and resumed, the run ends byte-identical."""
    scen = _long_scenario(tmp_path, tiny, LONG_DROP)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cli("run", str(scen), "--out", str(ref), "--quiet"), check=True)
    proc = subprocess.Popen(_cli("run", str(scen), "--out", str(out), "--quiet", "--checkpoint-every", "7"))
    latest = out / "checkpoint" / "latest.json"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if json.loads(latest.read_text())["generation"] >= 5:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed: make LONG_DROP longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gen = json.loads(latest.read_text())["generation"]
    state = json.loads((out / "checkpoint" / f"state-{gen}.json").read_text())
    assert state["backend"]["cancelled"], "no cancelled task in the checkpoint: the test tests nothing"
    res = subprocess.run(_cli("resume", str(out), "--quiet"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    _same_outputs(ref, out)


def test_sigint_exits_130(tmp_path: Path, tiny: dict[str, Any]) -> None:
    scen = _long_scenario(tmp_path, tiny)
    out = tmp_path / "int"
    proc = _started_mid_run(out, scen)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"


def test_divergence_exits_3_with_status(tmp_path: Path, tiny_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Gradient descent on a quadratic with curvature up to L = 4 and step 5 > 2/L multiplies the
    error by up to |1 - 5 * 4| = 19 per local step: it overflows within a few tasks."""
    out = tmp_path / "div"
    code = main(
        [
            "run",
            str(tiny_file),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "data.dataset=quadratic",
            "--set",
            "model.name=quadratic",
            "--set",
            "algorithm.lr=5.0",
            "--set",
            "algorithm.local_steps=10",
            "--set",
            "stop.server_steps=200",
        ]
    )
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.count("\n") == 1 and "diverged" in err and "Traceback" not in err
    res = asyncfl.load_run(out)
    assert res.status == "diverged"
    div = res.manifest["divergence"]
    assert div["server_version"] >= 0 and "what" in div


def test_resume_of_completed_run_is_a_no_op_and_of_foreign_dir_is_an_error(
    tmp_path: Path, tiny_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert main(["run", str(tiny_file), "--out", str(out), "--quiet"]) == 0
    before = (out / "events.csv").read_bytes()
    assert main(["resume", str(out), "--quiet"]) == 0
    assert (out / "events.csv").read_bytes() == before
    assert main(["resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "not an asyncfl run directory" in capsys.readouterr().err
    with pytest.raises(RunDirError):
        asyncfl.load_run(tmp_path / "nothing")


def test_no_pickle_in_the_package() -> None:
    """Only torch.load(weights_only=True) and the restricted CIFAR unpickler may read pickles."""
    root = Path(asyncfl.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for line_no, line in enumerate(text.splitlines(), 1):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}:{line_no}"
            if "pickle.load(" in line or "pickle.loads(" in line:
                pytest.fail(f"{path}:{line_no} unpickles: {line.strip()}")


# ------------------------------------------------------------------------------------------------
# Fuzzing: mutated scenario files and CLI arguments either run or exit 2 with one line.
# ------------------------------------------------------------------------------------------------

FUZZ_BASE = {
    "seed": 0,
    "algorithm": {"name": "fedasync", "lr": 0.05, "local_steps": 1, "batch_size": 4},
    "server": {"mode": "async", "concurrency": 2, "lr": 0.5},
    "data": {"dataset": "synthetic", "mean_samples": 12, "dimension": 5, "classes": 3},
    "model": {"name": "logreg"},
    "clients": {"count": 5},
    "stop": {"server_steps": 2, "client_updates": 6, "sim_time": 1000.0},
    "eval": {"every_steps": 2, "grad_norm": False},
}
RESOLVED = yaml.safe_load(dump_scenario(load_scenario(FUZZ_BASE)))
SCALARS = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        1,
        2,
        3,
        -1,
        -0.5,
        0.5,
        1.5,
        7,
        "abc",
        "",
        "null",
        "1e-3",
        [],
        [1, "x"],
        {},
        {"k": 1},
        "sync",
        "async",
        "buffered",
        "drop",
        "wait",
        "polynomial",
        "hinge",
        "lognormal",
        "pareto",
        "from_list",
        "iid",
        "dirichlet",
        "mlp",
        "cnn",
        "pfedme",
        "per_fedavg",
        "fedbuff",
        "local",
        "mnist",
        "quadratic",
        "nan",
        1e308,
    ]
)
# Numbers that would make a valid run long (e.g. local_steps 1e308) are capped by the engine's stop
# keys, which the fuzzer never deletes: it keeps the runs small.
KEEP = {("stop",), ("stop", "server_steps"), ("stop", "client_updates"), ("stop", "sim_time")}
COST_KEYS = {
    "local_steps",
    "local_rounds",
    "inner_steps",
    "count",
    "mean_samples",
    "dimension",
    "classes",
    "concurrency",
    "clients_per_round",
    "buffer_size",
    "hidden",
    "adapt_steps",
    "batch_size",
    "max_batch",
    "channels",
    "embedding",
    "layers",
    "every_steps",
    "every_time",
    "sim_time",
    "server_steps",
    "client_updates",
    "value",
    "mean",
    "low",
    "high",
    "scale",
    "max_samples",
    "round_deadline",
}


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    return out


PATHS = [p for p in _paths(RESOLVED) if p not in KEEP]


def _mutate(data: dict[str, Any], path: tuple[str, ...], op: str, value: Any) -> None:
    cursor: Any = data
    for part in path[:-1]:
        if not isinstance(cursor, dict) or part not in cursor:
            return
        cursor = cursor[part]
    if not isinstance(cursor, dict):
        return
    leaf = path[-1]
    if op == "nudge":  # a plausible value of the same type: exercises runs, not only errors
        old = cursor.get(leaf)
        if isinstance(old, bool) or not isinstance(old, (int, float)):
            return
        pick = zlib.crc32(repr(value).encode()) % 5
        cursor[leaf] = type(old)(max(1, pick)) if isinstance(old, int) else [0.01, 0.1, 0.5, 1.0, 2.0][pick]
        return
    if op == "delete":
        cursor.pop(leaf, None)
    elif op == "unknown":
        cursor[f"{leaf}_typo"] = value
    else:
        if leaf in COST_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 50:
            value = 50  # valid-but-huge values are not what this test is about
        cursor[leaf] = value


mutation = st.tuples(
    st.sampled_from(PATHS), st.sampled_from(["nudge", "nudge", "nudge", "set", "set", "delete", "unknown"]), SCALARS
)
cli_extra = st.lists(
    st.one_of(
        st.tuples(
            st.just("--set"),
            st.builds(
                lambda p, v: f"{'.'.join(p)}={yaml.safe_dump(v).splitlines()[0] if not isinstance(v, str) else v}",
                st.sampled_from(PATHS),
                SCALARS,
            ),
        ),
        st.tuples(
            st.just("--set"), st.sampled_from(["nokey", "a.b.c=1", "server=3", "=1", "server.=2", "seed=[", "x=y"])
        ),
        st.tuples(st.just("--seed"), st.sampled_from(["1", "-3", "x", ""])),
        st.tuples(st.just("--device"), st.sampled_from(["cpu", "auto", "gpu"])),
        st.tuples(st.sampled_from(["--bogus", "--checkpoint-every"]), st.sampled_from(["0", "5", "3s", "x"])),
    ),
    max_size=2,
).map(lambda xs: xs if len(xs) != 1 or zlib.crc32(repr(xs).encode()) % 3 else [])


def _run_fuzz_case(tmp: Path, text: str, extra: list[str]) -> tuple[int, str]:
    f = tmp / "s.yaml"
    f.write_text(text)
    out = tmp / "out"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["run", str(f), "--out", str(out), "--quiet", "--force", *extra])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue()


@settings(
    max_examples=int(os.environ.get("ASYNCFL_FUZZ_EXAMPLES", "520")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    mutations=st.lists(mutation, min_size=1, max_size=3),
    extra=cli_extra,
    garble=st.sampled_from([None, None, None, None, "truncate", "tab", "colon", "binary"]),
)
def test_fuzzed_scenarios_and_arguments_run_or_exit_with_one_line(
    tmp_path_factory: pytest.TempPathFactory, mutations: list[Any], extra: list[tuple[str, str]], garble: str | None
) -> None:
    data = json.loads(json.dumps(RESOLVED))
    for path, op, value in mutations:
        _mutate(data, path, op, value)
    text = yaml.safe_dump(data, sort_keys=False)
    if garble == "truncate":
        text = text[: len(text) // 3] + "\n  - [unclosed"
    elif garble == "tab":
        text = "\t" + text
    elif garble == "colon":
        text = text.replace(":", "", 1)
    elif garble == "binary":
        text = text + "\x00\x01"
    argv = [a for pair in extra for a in pair]
    code, err = _run_fuzz_case(tmp_path_factory.mktemp("fuzz"), text, argv)
    assert "Traceback" not in err
    # 0: ran; 2: bad input; 3: a valid scenario whose run diverged (e.g. a step size of 1e308).
    assert code in (0, 2, 3), f"exit {code}: {err}\n--- scenario ---\n{text}\nargs: {argv}"
    if code in (2, 3):
        assert err.count("\n") == 1 and err.startswith("asyncfl: error:"), err
    if code == 3:
        assert err.startswith("asyncfl: error: diverged:"), err


# ------------------------------------------------------------------------------------------------
# Fuzzing the sizes of --grid/--set values and the strictness of scenario types (issue 15).
# ------------------------------------------------------------------------------------------------


def _sized_value(kind: str, n: int) -> str:
    """A --grid/--set value text of a given shape: n values, nesting n deep, an alias tree of
    depth n (9^n values), or n characters."""
    if kind == "values":
        return ",".join(f"0.{i:05d}1" for i in range(1, n + 1))
    if kind == "list":
        return "[" + ", ".join(["1"] * n) + "]"
    if kind == "nest":
        return "[" * n + "]" * n
    if kind == "alias":
        parts = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, n)]
        return "[" + ", ".join(parts) + "]"
    return "0.5" + "0" * (n - 3)  # "long": a valid number, n characters


SIZED = st.one_of(
    st.tuples(st.just("values"), st.sampled_from([1, 2, 7, 10_001, 11_000])),
    st.tuples(st.just("list"), st.sampled_from([1, 9_999, 10_001, 30_000])),
    st.tuples(st.just("nest"), st.integers(1, 60)),
    st.tuples(st.just("alias"), st.integers(1, 9)),
    st.tuples(st.just("long"), st.sampled_from([5, 16_384, 16_385, 70_000])),
)


@settings(
    max_examples=int(os.environ.get("ASYNCFL_FUZZ_EXAMPLES_SIZES", "60")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(shape=SIZED, option=st.sampled_from(["--grid", "--set"]), seeds=st.sampled_from([None, "2", "20000"]))
def test_fuzzed_grid_and_set_sizes_plan_or_exit_2_at_once(
    tmp_path_factory: pytest.TempPathFactory, shape: tuple[str, int], option: str, seeds: str | None
) -> None:
    """Any size of --grid/--set value (many values, deep nesting, alias bombs, long text) and any
    --seeds either plans the sweep or exits 2 with one line, within seconds (no hang)."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("sizes")
    scen = write_scenario(tmp / "s.yaml", {**FUZZ_BASE, "stop": {"server_steps": 2}})
    text = _sized_value(*shape)
    key = "algorithm.lr"
    if option == "--set" and shape[0] == "values":
        text = text.split(",")[0] if shape[1] < 10 else text  # --set takes one value
    args = ["sweep", str(scen), "--out", str(tmp / "out"), "--dry-run", option, f"{key}={text}"]
    if seeds:
        args += ["--seeds", seeds]
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    took = time.perf_counter() - t0
    assert code in (0, 2), err.getvalue()
    if code == 2:
        assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("asyncfl: error:"), err.getvalue()
        assert took < 5.0, f"refusing took {took:.1f} s: {shape} {option}"


WRONG = {  # per leaf type, values of another type a scenario file might hold by mistake
    "number": [True, False, "0.5", "1e-3", "1", [0.5], {"v": 1}],
    "count": [True, False, 2.5, 3.0, "3", "x", [3]],
    "bool": [0, 1, "true", "yes", 1.0, [True]],
    "string": [1, 2.5, True, ["x"]],
}


def _leaves(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_leaves(v, (*prefix, k)))
    elif isinstance(node, bool):
        out.append((prefix, "bool"))
    elif isinstance(node, int):
        out.append((prefix, "count"))
    elif isinstance(node, float):
        out.append((prefix, "number"))
    elif isinstance(node, str):
        out.append((prefix, "string"))
    return out


LEAVES = _leaves(RESOLVED)


@settings(
    max_examples=int(os.environ.get("ASYNCFL_FUZZ_EXAMPLES_TYPES", "200")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(leaf=st.sampled_from(LEAVES), pick=st.integers(0, 6), via_set=st.booleans())
def test_fuzzed_wrong_types_are_refused_naming_the_key(
    leaf: tuple[tuple[str, ...], str], pick: int, via_set: bool
) -> None:
    """A bool, a numeric string or a float where another type goes is refused, in a file or with
    --set, with one line that starts with the key (never coerced: `lr: true` was lr = 1.0)."""
    from asyncfl.config import apply_overrides, validate
    from asyncfl.errors import ScenarioError
    from asyncfl.study.sweep_plan import value_text

    path, kind = leaf
    value = WRONG[kind][pick % len(WRONG[kind])]
    data = json.loads(json.dumps(RESOLVED))
    if via_set:
        data = apply_overrides(data, [f"{'.'.join(path)}={value_text(value)}"])
    else:
        cursor = data
        for part in path[:-1]:
            cursor = cursor[part]
        cursor[path[-1]] = value
    with pytest.raises(ScenarioError) as info:
        validate(data)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(".".join(path) + ":"), (path, value, line)


# ------------------------------------------------------------------------------------------------
# Fuzzing run directories: one file of a stopped or finished run damaged, replaced by a link to a
# file outside, a folder or a named pipe; every command that reads the directory either works or
# exits 2 with one line, never an internal error or a hang, and nothing outside it changes.
# ------------------------------------------------------------------------------------------------

DIR_FILES = [
    "scenario.yaml",
    "manifest.json",
    "run.json",
    "metrics.csv",
    "events.csv",
    ".lock",
    "events.partial.csv",
    "metrics.partial.csv",
    "checkpoint",
    "checkpoint/latest.json",
    "checkpoint/state-3.json",
    "checkpoint/tensors-3.pt",
]
DIR_DAMAGE = [
    "garbage",
    "deep",
    "long_number",
    "truncate",
    "empty",
    "bitflip",
    "symlink_out",
    "folder",
    "fifo",
    "delete",
]
DIR_COMMANDS = ["resume", "plot", "report", "run_force", "load_run"]
DIR_SCENARIO = {"stop": {"server_steps": 40}, "eval": {"every_steps": 10}}


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``finished``: a completed run. ``crashed``: the same run stopped at step 14 by an error,
    with a checkpoint every 4 steps (generation 3 committed) and status ``failed``."""
    from conftest import TINY

    root = tmp_path_factory.mktemp("dirfuzz")
    scen = write_scenario(root / "s.yaml", {**TINY, **DIR_SCENARIO})
    asyncfl.run(scen, root / "finished")
    count = [0]

    def crash(fraction: float, info: dict[str, Any]) -> None:
        count[0] += 1
        if count[0] >= 14:
            raise KeyboardInterrupt  # stands for a kill between checkpoints

    with pytest.raises(KeyboardInterrupt):
        asyncfl.run(scen, root / "crashed", checkpoint_every=4, progress=crash)
    assert json.loads((root / "crashed" / "checkpoint" / "latest.json").read_text()) == {"generation": 3}
    return {"finished": root / "finished", "crashed": root / "crashed", "scenario": scen}


def _damage_path(p: Path, kind: str, outside: Path) -> None:  # noqa: C901 (one branch per kind of damage the fuzz test applies)
    import re
    import shutil

    if not os.path.lexists(p):
        return
    is_dir = p.is_dir()
    data = b"" if is_dir else p.read_bytes()
    if kind in ("symlink_out", "folder", "fifo", "delete"):
        if kind == "symlink_out":
            target = outside / p.name
            shutil.move(str(p), target)
            p.symlink_to(target)
            return
        shutil.rmtree(p) if is_dir else p.unlink()
        if kind == "folder":
            p.mkdir()
        elif kind == "fifo":
            os.mkfifo(p)
        return
    if is_dir:
        return
    if kind == "garbage":
        data = b"\x89PNG\r\n\x1a\n\xff\xfe\x00" + bytes(range(256))
    elif kind == "deep":
        data = b"[" * 50000 + b"]" * 50000
    elif kind == "long_number":
        data = re.sub(rb"[0-9]+", b"9" * 5000, data, count=1) if re.search(rb"[0-9]", data) else data + b"9" * 5000
    elif kind == "truncate":
        data = data[: len(data) // 2]
    elif kind == "empty":
        data = b""
    elif kind == "bitflip" and data:
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        data = bytes(b)
    p.write_bytes(data)


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in sorted(root.rglob("*"))
    }


@settings(
    max_examples=int(os.environ.get("ASYNCFL_FUZZ_DIR_EXAMPLES", "90")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    base=st.sampled_from(["crashed", "finished"]),
    rel=st.sampled_from(DIR_FILES),
    kind=st.sampled_from(DIR_DAMAGE),
    command=st.sampled_from(DIR_COMMANDS),
)
def test_fuzzed_run_directories_work_or_exit_2_with_one_line(
    tmp_path_factory: pytest.TempPathFactory,
    stopped_runs: dict[str, Path],
    base: str,
    rel: str,
    kind: str,
    command: str,
) -> None:
    import contextlib
    import io
    import shutil

    tmp = tmp_path_factory.mktemp("dir")
    d, outside = tmp / "run", tmp / "outside"
    shutil.copytree(stopped_runs[base], d, symlinks=True)
    outside.mkdir()
    (outside / "precious.txt").write_bytes(b"not the run's\n")
    _damage_path(d / rel, kind, outside)
    outside_before = _tree(outside)
    argv = {
        "resume": ["resume", str(d), "--quiet"],
        "plot": ["plot", str(d), "--kind", "convergence", "--out", str(tmp / "f.png")],
        "report": ["report", str(d), "--out", str(tmp / "r.md")],
        "run_force": ["run", str(stopped_runs["scenario"]), "--out", str(d), "--quiet", "--force"],
    }.get(command)
    t0 = time.monotonic()
    if argv is None:  # the library reader
        try:
            asyncfl.load_run(d)
        except RunDirError as exc:
            assert "\n" not in exc.one_line()
        return
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    text = err.getvalue()
    case = f"{base}: {rel} {kind}, {command}"
    assert time.monotonic() - t0 < 60, case
    assert "Traceback" not in text and "internal error" not in text, f"{case}: {text}"
    assert code in (0, 2), f"{case}: exit {code}: {text}"
    if code == 2:
        assert text.count("\n") == 1 and text.startswith("asyncfl: error:"), f"{case}: {text}"
    assert _tree(outside) == outside_before, case  # nothing written through a link
    assert not [p for p in d.rglob("*") if ".tmp-" in p.name], case
    if code == 0 and command in ("resume", "run_force"):
        done = asyncfl.load_run(d)
        assert done.status == "completed", case
        if command == "run_force" or rel in ("manifest.json", "metrics.csv", "events.csv", "checkpoint/latest.json"):
            for name in ("metrics.csv", "events.csv"):  # checked data or none: the same run again
                assert (d / name).read_bytes() == (stopped_runs["finished"] / name).read_bytes(), case
