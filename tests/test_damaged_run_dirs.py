"""A damaged run or sweep directory, or an over-limit data file, is one line with exit 2 naming the
file, in every command that reads it (it used to be an internal error: UnicodeDecodeError,
RecursionError, the int conversion limit). Reading is strict and bounded (asyncfl.bounded)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY, write_scenario

import asyncfl
from asyncfl.bounded import InputLimitError, json_depth, loads_json
from asyncfl.cli import main
from asyncfl.errors import RunDirError


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _one_line(code: int, err: str, names: str) -> None:
    assert code == 2, err
    assert err.startswith("asyncfl: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert names in err, err
    assert len(err) < 600, err


@pytest.fixture
def done(tiny_file: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert main(["run", str(tiny_file), "--out", str(out), "--quiet"]) == 0
    return out


def _long_number(text: str) -> str:
    return text.replace('"seed": 1', '"seed": ' + "9" * 5000, 1)


DAMAGE: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "scenario-binary-garbage": ("scenario.yaml", lambda b: b"\x89PNG\r\n\x1a\n\xff\xfe\x00" + bytes(range(256)) * 4),
    "scenario-5000-digit-number": ("scenario.yaml", lambda b: b.replace(b"seed: 1", b"seed: " + b"9" * 5000, 1)),
    "scenario-deeply-nested": ("scenario.yaml", lambda b: b + b"x: " + b"[" * 100000 + b"]" * 100000 + b"\n"),
    "manifest-nested-100000-deep": ("manifest.json", lambda b: b"[" * 100000 + b"]" * 100000),
    "manifest-deep-inside": ("manifest.json", lambda b: b[:-2] + b', "x": ' + b"[" * 100000 + b"]" * 100000 + b"}\n"),
    "manifest-5000-digit-number": ("manifest.json", lambda b: _long_number(b.decode()).encode()),
    "manifest-binary": ("manifest.json", lambda b: b"\xff\xfe" + b),
    "manifest-files-a-list": (
        "manifest.json",
        lambda b: json.dumps({**json.loads(b), "files": ["metrics.csv"]}).encode(),
    ),
    "manifest-final-metrics-a-string": (
        "manifest.json",
        lambda b: json.dumps({**json.loads(b), "final_metrics": "x"}).encode(),
    ),
    "manifest-seed-a-list": ("manifest.json", lambda b: json.dumps({**json.loads(b), "seed": [1]}).encode()),
}


@pytest.mark.parametrize("case", list(DAMAGE))
@pytest.mark.parametrize("command", ["plot", "report", "resume"])
def test_damaged_run_directory_is_one_line_exit_2(
    done: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, command: str
) -> None:
    name, damage = DAMAGE[case]
    if command == "resume" and name == "scenario.yaml":  # resume reads the scenario of an unfinished run
        m = json.loads((done / "manifest.json").read_text())
        (done / "manifest.json").write_text(json.dumps({**m, "status": "interrupted"}))
    p = done / name
    p.write_bytes(damage(p.read_bytes()))
    before = {q.name: q.read_bytes() for q in done.iterdir() if q.is_file() and q.name != ".lock"}
    args = {
        "plot": ["plot", str(done), "--kind", "convergence", "--out", str(tmp_path / "f.png")],
        "report": ["report", str(done), "--out", str(tmp_path / "r.md")],
        "resume": ["resume", str(done), "--quiet"],
    }[command]
    t0 = time.monotonic()
    code, err = _cli(args, capsys)
    assert time.monotonic() - t0 < 10
    _one_line(code, err, str(p))
    assert "damaged run directory" in err or "not an asyncfl manifest" in err, err
    assert {q.name: q.read_bytes() for q in done.iterdir() if q.is_file() and q.name != ".lock"} == before


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100000 + b"]" * 100000,
        b'{"runs": [], "x": ' + b"1" * 5000 + b"}",
        b"\xff\xfe\x00garbage",
        b'{"runs": [1, 2]}',
        b'{"runs": [], "grid": [1]}',
    ],
)
@pytest.mark.parametrize("command", ["plot", "report"])
def test_damaged_sweep_json_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, command: str
) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_bytes(content)
    args = (
        ["plot", str(sweep), "--kind", "convergence", "--out", str(tmp_path / "f.png")]
        if command == "plot"
        else ["report", str(sweep), "--out", str(tmp_path / "r.md")]
    )
    code, err = _cli(args, capsys)
    _one_line(code, err, str(sweep / "sweep.json"))


def test_a_damaged_run_in_a_folder_of_runs_is_left_out_and_named(
    tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "runs"
    for seed in ("1", "2"):
        assert main(["run", str(tiny_file), "--out", str(folder / f"s{seed}"), "--quiet", "--seed", seed]) == 0
    (folder / "s2" / "scenario.yaml").write_bytes(b"\xff\xfe garbage")
    code, err = _cli(["report", str(folder), "--out", str(tmp_path / "r.md")], capsys)
    assert code == 0 and "s2" in err, err


def test_load_run_reads_no_fifo_and_follows_no_link(done: Path, tmp_path: Path) -> None:
    """A named pipe where a run file belongs would block a reader forever; a link is refused."""
    (done / "events.csv").unlink()
    os.mkfifo(done / "events.csv")
    t0 = time.monotonic()
    with pytest.raises(RunDirError, match=r"events\.csv"):
        asyncfl.load_run(done)
    assert time.monotonic() - t0 < 5
    (done / "events.csv").unlink()
    (done / "manifest.json").rename(tmp_path / "m.json")
    (done / "manifest.json").symlink_to(tmp_path / "m.json")
    with pytest.raises(RunDirError, match="symbolic link"):
        asyncfl.load_run(done)


# ------------------------------------------------------------------------------------------------
# The bounded JSON reader
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('["[[[", "]]]"]', 1), ('["\\"[["]', 1), ('"[[[', 0)],
)
def test_json_depth_skips_strings(text: str, depth: int) -> None:
    assert json_depth(text, 64) == depth


def test_json_depth_is_linear_on_unclosed_strings() -> None:
    t0 = time.monotonic()
    json_depth('"\\"' * 1_000_000, 64)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[" * 65 + b"]" * 65, "nested more than 64"),
        (b"[" + b"1" * 101 + b"]", "number of 101 characters"),
        (b"[1." + b"5" * 100 + b"]", "number of 102 characters"),
        (b"\xff", "not UTF-8"),
        (b"{", "not valid JSON"),
    ],
)
def test_loads_json_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(InputLimitError, match=reason):
        loads_json(data, 64)


def test_loads_json_reads_what_asyncfl_writes() -> None:
    assert loads_json(b'{"a": [1, 2.5, NaN, -1e-300, 18446744073709551615], "b": "\\u00e9"}', 64)["b"] == "\u00e9"


# ------------------------------------------------------------------------------------------------
# LEAF data files: over-limit or absurdly nested input is one line, exit 2, within seconds
# ------------------------------------------------------------------------------------------------


def _leaf_scenario(tmp_path: Path) -> Path:
    from asyncfl.data.fake import write_fake_leaf

    root = write_fake_leaf(tmp_path / "femnist", "femnist", users=6)
    data = {
        **TINY,
        "data": {"dataset": "leaf", "task": "femnist", "root": str(root)},
        "model": {"name": "logreg"},
        "clients": {"count": 4},
    }
    return write_scenario(tmp_path / "leaf.yaml", data)


LEAF_DAMAGE: dict[str, bytes] = {
    "nested-100000-deep": b'{"users": ' + b"[" * 100000 + b"]" * 100000 + b"}",
    "5000-digit-number": b'{"users": ["u"], "user_data": {"u": {"x": [' + b"7" * 5000 + b'], "y": [1]}}}',
    "binary": b"\x89PNG\r\n\x1a\n\xff\xfe",
    "users-an-object": b'{"users": {"u": 1}, "user_data": {}}',
    "user-data-a-list": b'{"users": ["u"], "user_data": [1]}',
    "user-without-x": b'{"users": ["u"], "user_data": {"u": {"y": [1]}}}',
}


@pytest.mark.parametrize("case", list(LEAF_DAMAGE))
def test_damaged_leaf_file_is_one_line_exit_2_within_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    scen = _leaf_scenario(tmp_path)
    bad = tmp_path / "femnist" / "train" / "zz_bad.json"
    bad.write_bytes(LEAF_DAMAGE[case])
    t0 = time.monotonic()
    code, err = _cli(["data", "describe", str(scen)], capsys)
    assert time.monotonic() - t0 < 10
    _one_line(code, err, str(bad))


def test_an_over_limit_leaf_file_is_refused_from_its_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncfl.data.leaf as leaf

    scen = _leaf_scenario(tmp_path)
    monkeypatch.setattr(leaf, "MAX_FILE_BYTES", 100)
    code, err = _cli(["data", "describe", str(scen)], capsys)
    _one_line(code, err, "bytes allowed")
