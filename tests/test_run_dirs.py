"""Writing into an existing --out never loses results unasked, bad paths and values are one-line
errors with exit 2, and one run directory is written by one process at a time."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from asyncfl.cli import main
from asyncfl.runs.rundir import is_run_dir, locked


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _digest(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every file in the run directory (the lock file aside)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _one_error_line(err: str) -> None:
    assert err.count("\n") == 1 and err.startswith("asyncfl: error:") and "Traceback" not in err, err


@pytest.fixture
def done(tiny_file: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert main(["run", str(tiny_file), "--out", str(out), "--quiet"]) == 0
    return out


def test_rerunning_the_same_scenario_replaces_it(done: Path, tiny_file: Path) -> None:
    """A finished run of the same resolved scenario is reproduced, so replacing it loses nothing."""
    before = _digest(done)
    assert main(["run", str(tiny_file), "--out", str(done), "--quiet"]) == 0
    after = _digest(done)
    for name in ("metrics.csv", "events.csv", "scenario.yaml"):
        assert before[name] == after[name]


def test_a_different_scenario_needs_force(done: Path, tiny_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(done)
    code, err = _cli(["run", str(tiny_file), "--out", str(done), "--quiet", "--seed", "7"], capsys)
    assert code == 2 and "different scenario" in err and "--force" in err
    _one_error_line(err)
    assert _digest(done) == before
    assert main(["run", str(tiny_file), "--out", str(done), "--quiet", "--seed", "7", "--force"]) == 0
    assert _digest(done)["metrics.csv"] != before["metrics.csv"]


@pytest.mark.parametrize(
    "args",
    [
        ["--device", "cuda"],  # the build fails (no GPU here, or refused on CPU-only CI)
        ["--set", "data.dataset=mnist", "--set", "data.root=/nonexistent", "--set", "data.download=false"],
    ],
)
def test_a_run_that_cannot_start_leaves_the_old_run_alone(
    done: Path, tiny_file: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("torch.cuda is available here: a cuda run would start")
    before = _digest(done)
    code, err = _cli(["run", str(tiny_file), "--out", str(done), "--quiet", "--force", *args], capsys)
    assert code == 2
    _one_error_line(err)
    assert _digest(done) == before


def test_a_resumable_run_is_not_overwritten(done: Path, tiny_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An interrupted run (here: its manifest says so) is continued with resume, not rerun over."""
    manifest = json.loads((done / "manifest.json").read_text())
    (done / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    before = _digest(done)
    code, err = _cli(["run", str(tiny_file), "--out", str(done), "--quiet"], capsys)
    assert code == 2 and "asyncfl resume" in err
    _one_error_line(err)
    assert _digest(done) == before


def test_a_folder_with_a_scenario_file_is_not_a_run(
    tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "scenario.yaml").write_text("my notes\n")
    (proj / "metrics.csv").write_text("mine\n")
    assert not is_run_dir(proj)
    code, err = _cli(["run", str(tiny_file), "--out", str(proj), "--quiet"], capsys)
    assert code == 2 and "not an asyncfl run" in err
    assert (proj / "metrics.csv").read_text() == "mine\n"


def test_a_run_directory_in_use_is_refused(done: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second process (here: a second lock holder) gets a one-line error; nothing is written."""
    manifest = json.loads((done / "manifest.json").read_text())
    (done / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    before = _digest(done)
    with locked(done):
        code, err = _cli(["resume", str(done), "--quiet"], capsys)
        assert code == 2 and "in use by pid" in err
        _one_error_line(err)
    assert _digest(done) == before
    assert main(["resume", str(done), "--quiet"]) == 0  # released: the resume runs


@pytest.mark.parametrize("content", ["{bad", "[1]", "\udcff"])
def test_a_damaged_run_json_is_a_clear_error(done: Path, capsys: pytest.CaptureFixture[str], content: str) -> None:
    (done / "manifest.json").unlink()  # not finished: resume reads run.json
    (done / "run.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    code, err = _cli(["resume", str(done), "--quiet"], capsys)
    assert code == 2 and "run.json" in err
    _one_error_line(err)


def test_unwritable_outputs_are_exit_2(tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cmd in (
        ["run", str(tiny_file), "--out", str(afile / "sub"), "--quiet"],
        ["bench", "--clients", "10", "--in-flight", "2", "--updates", "4", "--out", str(afile / "sub")],
        ["data", "describe", str(tiny_file), "--csv", str(tmp_path)],
    ):
        code, err = _cli(cmd, capsys)
        assert code == 2, (cmd, err)
        _one_error_line(err)


@pytest.mark.parametrize("override", ["algorithm.lr=.inf", "server.lr=.nan", "stop.sim_time=.inf"])
def test_non_finite_numbers_are_refused(
    tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str
) -> None:
    code, err = _cli(["run", str(tiny_file), "--out", str(tmp_path / "r"), "--quiet", "--set", override], capsys)
    assert code == 2 and override.split("=")[0] in err and "finite" in err
    _one_error_line(err)


def test_a_directory_for_a_scenario_and_negative_rows_are_exit_2(
    tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _cli(["validate", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in err
    _one_error_line(err)
    code, err = _cli(["data", "describe", str(tiny_file), "--rows", "-1"], capsys)
    assert code == 2 and "--rows" in err
    _one_error_line(err)


def test_plot_and_report_name_the_runs_they_leave_out(
    tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder of runs where one is damaged: the figure and report use the rest and say so."""
    folder = tmp_path / "runs"
    for seed in ("1", "2", "3"):
        assert main(["run", str(tiny_file), "--out", str(folder / f"s{seed}"), "--quiet", "--seed", seed]) == 0
    (folder / "s2" / "events.csv").unlink()
    capsys.readouterr()
    code, err = _cli(["plot", str(folder), "--kind", "convergence", "--out", str(tmp_path / "f.png")], capsys)
    assert code == 0 and err == "asyncfl: note: 1 of 3 runs left out (unfinished, failed or damaged): s2\n"
    code, err = _cli(["report", str(folder), "--out", str(tmp_path / "r.md")], capsys)
    assert code == 0 and "s2" in err


# A `run` whose build lasts until the file ``sys.argv[1]`` exists (a large data set, say; at most 120 s).
SLOW_BUILD = (
    "import os, sys, time\n"
    "import asyncfl.runs.runner as r\n"
    "build = r.build\n"
    "def slow(*a, **k):\n"
    "    t0 = time.monotonic()\n"
    "    while not os.path.exists(sys.argv[1]) and time.monotonic() - t0 < 120:\n"
    "        time.sleep(0.05)\n"
    "    return build(*a, **k)\n"
    "r.build = slow\n"
    "from asyncfl.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def test_a_run_started_while_another_builds_in_the_same_out_is_refused(tiny_file: Path, tmp_path: Path) -> None:
    """The race of issue 15: B (slow to build) passed the --out check; A (fast, another scenario)
    was started once D existed, completed, and then B replaced A's completed run without --force.
    Now B holds D's lock from its --out check to its last write: A is refused with one line
    naming D (exit 2) and B's run is what D holds."""
    import subprocess
    import sys
    import time

    import asyncfl

    d = tmp_path / "D"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    go = tmp_path / "go"
    b = subprocess.Popen(
        [sys.executable, "-c", SLOW_BUILD, str(go), "run", str(tiny_file), "--out", str(d), "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while b.poll() is None and time.monotonic() < deadline:  # D exists and B holds its lock
            if (d / ".lock").is_file() and (d / ".lock").read_text().startswith("pid"):
                break
            time.sleep(0.02)
        assert b.poll() is None, "B ended before it held the lock"
        a = subprocess.run(
            [sys.executable, "-m", "asyncfl", "run", str(tiny_file), "--out", str(d), "--quiet", "--seed", "7"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert b.poll() is None, "B ended while it was building"
        go.touch()  # B's build ends now
        assert a.returncode == 2, a.stderr
        _one_error_line(a.stderr)
        assert str(d) in a.stderr and "in use by pid" in a.stderr
        _, b_err = b.communicate(timeout=120)
    finally:
        if b.poll() is None:
            b.kill()
    assert b.returncode == 0, b_err
    res = asyncfl.load_run(d)
    assert res.status == "completed" and res.manifest["seed"] == 1  # B's scenario (A's would be seed 7)


def test_a_lock_file_symlinked_outside_is_refused_even_with_force(
    done: Path, tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `.lock` symlinked to a file outside --out used to be overwritten by `run --force`."""
    outside = tmp_path / "precious.txt"
    outside.write_text("precious\n")
    (done / ".lock").unlink()
    (done / ".lock").symlink_to(outside)
    before = _digest(done)
    for cmd in (["run", str(tiny_file), "--out", str(done), "--quiet", "--force"], ["resume", str(done), "--quiet"]):
        code, err = _cli(cmd, capsys)
        assert code == 2 and "symbolic link" in err and ".lock" in err, err
        _one_error_line(err)
    assert outside.read_text() == "precious\n"
    assert _digest(done) == before


@pytest.mark.parametrize("name", ["metrics.csv", "events.csv", "manifest.json", "scenario.yaml", "run.json"])
def test_a_run_file_symlinked_outside_is_refused(
    done: Path, tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A run writes only inside its directory and never through a link: `run --force` and `resume`
    refuse a directory with a link where a run file belongs; nothing outside changes."""
    outside = tmp_path / "outside"
    original = (done / name).read_bytes()
    outside.write_bytes(original)
    (done / name).unlink()
    (done / name).symlink_to(outside)
    for cmd in (["run", str(tiny_file), "--out", str(done), "--quiet", "--force"], ["resume", str(done), "--quiet"]):
        code, err = _cli(cmd, capsys)
        assert code == 2 and "symbolic link" in err and str(done / name) in err, (cmd, err)
        _one_error_line(err)
    assert outside.read_bytes() == original
    assert os.path.islink(done / name)
