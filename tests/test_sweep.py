"""Sweeps: grid expansion and validation, run directory names, the sweep manifest, resuming after
an interruption, failures and divergences, and the Ray backend giving the same bytes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from test_study_data import TINY_GRID, TINY_YAML, tiny_scenario, tiny_sweep

from asyncfl.cli import main
from asyncfl.config.schema import PFedMeConfig
from asyncfl.errors import RunDirError, ScenarioError, UserError
from asyncfl.runs.rundir import load_run
from asyncfl.study.sweep import SweepFailedError, run_sweep, sweep
from asyncfl.study.sweep_plan import parse_grid, plan_sweep, run_name, split_values
from asyncfl.study.sweep_state import SWEEP_FILE, read_sweep_manifest

GRID_ARGS = [arg for g in TINY_GRID for arg in ("--grid", g)]

# ------------------------------------------------------------------------------------------------
# Planning (no runs)
# ------------------------------------------------------------------------------------------------


def test_grid_values_are_yaml_scalars() -> None:
    grid = parse_grid(["server.max_staleness=0,5,null", "server.lr=1e-3,0.5", "x.y=[1, 2],{name: hinge, a: 10},'a,b'"])
    assert grid["server.max_staleness"] == [0, 5, None]
    assert grid["server.lr"] == [1e-3, 0.5]
    assert grid["x.y"] == [[1, 2], {"name": "hinge", "a": 10}, "a,b"]
    assert split_values("a, [b, c] ,{d: e}") == ["a", "[b, c]", "{d: e}"]


def test_plan_expands_grid_times_seeds_in_order(tmp_path: Path) -> None:
    plan = plan_sweep(tiny_scenario(tmp_path), TINY_GRID, seeds=2)
    assert [r.name for r in plan.runs] == [
        "server.max_staleness=1,algorithm.name=fedasync,seed=0",
        "server.max_staleness=1,algorithm.name=fedasync,seed=1",
        "server.max_staleness=1,algorithm.name=per_fedavg,seed=0",
        "server.max_staleness=1,algorithm.name=per_fedavg,seed=1",
        "server.max_staleness=null,algorithm.name=fedasync,seed=0",
        "server.max_staleness=null,algorithm.name=fedasync,seed=1",
        "server.max_staleness=null,algorithm.name=per_fedavg,seed=0",
        "server.max_staleness=null,algorithm.name=per_fedavg,seed=1",
    ]
    r = plan.runs[2]
    assert r.scenario.server.max_staleness == 1 and r.scenario.algorithm.name == "per_fedavg" and r.scenario.seed == 0
    assert plan.runs[4].scenario.server.max_staleness is None
    assert all(r.scenario.sweep is None for r in plan.runs)  # a run is one point, not a sweep


def test_run_names_are_filesystem_safe_and_deterministic() -> None:
    name = run_name({"server.staleness_weight": {"name": "hinge", "a": 10}, "data.root": "/a b/c"}, 3)
    assert name == "server.staleness_weight=hinge-10,data.root=_a_b_c,seed=3"
    assert "/" not in run_name({"k": "x/" * 200}, 0) and len(run_name({"k": "x" * 400}, 0)) <= 200
    assert run_name({"k": "x" * 400}, 0) == run_name({"k": "x" * 400}, 0)


def test_sweep_section_of_the_scenario_file(tmp_path: Path) -> None:
    text = TINY_YAML + "sweep:\n  seeds: 3\n  grid:\n    server.max_staleness: [0, 2]\n"
    plan = plan_sweep(tiny_scenario(tmp_path, text))
    assert len(plan.runs) == 6 and plan.seeds == [0, 1, 2]
    # --grid adds to the file's grid; --seeds replaces its seed count
    plan = plan_sweep(tiny_scenario(tmp_path, text), ["server.lr=0.5,1.0"], seeds=1)
    assert len(plan.runs) == 4 and set(plan.grid) == {"server.max_staleness", "server.lr"}


def test_grid_of_whole_mappings_gets_short_labels(tmp_path: Path) -> None:
    grid = {"algorithm": [{"name": "per_fedavg", "variant": "hf", "alpha": 0.01}, {"name": "pfedme", "lam": 10.0}]}
    plan = plan_sweep(tiny_scenario(tmp_path), grid)
    assert [r.name for r in plan.runs] == ["algorithm=per_fedavg-hf,seed=0", "algorithm=pfedme,seed=0"]
    algorithm = plan.runs[1].scenario.algorithm
    assert isinstance(algorithm, PFedMeConfig) and algorithm.lam == 10.0


@pytest.mark.parametrize(
    ("grid", "named"),
    [
        ("server.max_stalenes=1,2", "server.max_stalenes: no such key"),
        ("server.max_staleness=1,-2", "server.max_staleness: Input should be greater than or equal to 0"),
        ("algorithm.name=fedasync,nope", "algorithm.name: unknown choice 'nope'"),
        ("server.concurrency=2,50", "server.concurrency (50) must be <= clients.count"),
        ("seed=1,2", "seed: cannot be a grid key; use --seeds"),
        ("server.lr=1,1", "server.lr: grid value 1 is listed twice"),
        ("server.lr", "--grid needs KEY=V1,V2"),
    ],
)
def test_bad_grid_exits_2_naming_it(tmp_path: Path, capsys: Any, grid: str, named: str) -> None:
    scen = tiny_scenario(tmp_path)
    code = main(["sweep", str(scen), "--grid", grid, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert named in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_dry_run_lists_runs(tmp_path: Path, capsys: Any) -> None:
    code = main(
        ["sweep", str(tiny_scenario(tmp_path)), *GRID_ARGS, "--seeds", "2", "--out", str(tmp_path / "o"), "--dry-run"]
    )
    out = capsys.readouterr().out.split()
    assert code == 0 and len(out) == 8 and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------
# Running, resuming
# ------------------------------------------------------------------------------------------------


def _stamps(out: Path) -> dict[str, tuple[int, str]]:
    """Per run directory: the manifest's mtime and its wall-clock start (changes if rerun)."""
    res = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        m = d / "manifest.json"
        if m.is_file():
            res[d.name] = (m.stat().st_mtime_ns, json.loads(m.read_text())["started"])
    return res


def test_sweep_with_two_workers_writes_every_run_and_the_manifest(tmp_path_factory: Any) -> None:
    out = tiny_sweep(tmp_path_factory, workers=2)
    manifest = read_sweep_manifest(out)
    assert manifest["counts"] == {"completed": 8}
    assert list(manifest["grid"]) == ["server.max_staleness", "algorithm.name"] and manifest["seeds"] == [0, 1]
    for entry in manifest["runs"]:
        r = load_run(out / entry["dir"])
        assert r.status == "completed" and r.manifest["seed"] == entry["seed"]
        assert r.manifest["final_metrics"]
    e = manifest["runs"][4]
    assert e["overrides"] == {"server.max_staleness": None, "algorithm.name": "fedasync"} and e["seed"] == 0


def test_interrupted_sweep_resumes_without_rerunning_finished_runs(tmp_path_factory: Any, tmp_path: Path) -> None:
    """The 2 x 2 x 2-seed sweep (--workers 2) as an interruption leaves it: one run killed before
    its manifest was written, one torn mid-write, one never started, sweep.json saying running.
    Rerunning the same command reruns exactly those three and leaves the other five untouched."""
    src = tiny_sweep(tmp_path_factory, workers=2)
    out = tmp_path / "out"
    shutil.copytree(src, out)
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    killed, torn, never = names[1], names[4], names[6]
    (out / killed / "manifest.json").unlink()
    ev = out / torn / "events.csv"
    ev.write_bytes(ev.read_bytes()[: len(ev.read_bytes()) // 2])
    shutil.rmtree(out / never)
    m = json.loads((out / SWEEP_FILE).read_text())
    for e in m["runs"]:
        if e["name"] in (killed, torn):
            e["status"] = "running"
        elif e["name"] == never:
            e["status"] = "pending"
    (out / SWEEP_FILE).write_text(json.dumps(m))
    before = _stamps(out)
    scen = Path(json.loads((src / SWEEP_FILE).read_text())["scenario"])
    code = main(["sweep", str(scen), *GRID_ARGS, "--seeds", "2", "--out", str(out), "--workers", "2", "--quiet"])
    assert code == 0
    after = _stamps(out)
    rerun = {n for n in names if before.get(n) != after.get(n)}
    assert rerun == {killed, torn, never}
    manifest = read_sweep_manifest(out)
    assert manifest["counts"] == {"completed": 8}
    assert {e["name"] for e in manifest["runs"] if e.get("resumed")} == set(names) - rerun
    for n in (killed, torn, never):  # the reruns give the same bytes as the uninterrupted sweep
        assert (out / n / "metrics.csv").read_bytes() == (src / n / "metrics.csv").read_bytes()
        assert (out / n / "events.csv").read_bytes() == (src / n / "events.csv").read_bytes()


def _start_then_wait(cmd: list[str], ready: Callable[[], bool], timeout: float = 120) -> subprocess.Popen[str]:
    """Start ``cmd`` and poll until ``ready()`` or it exits; returns the process (still running
    when ready() came first)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.02)
    if proc.poll() is not None:
        proc.communicate()
    return proc


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_a_rerun_finishes_it(tmp_path: Path) -> None:
    """A real interruption: SIGTERM once two runs are done; exit 143; the rerun keeps them.
    (If the sweep outruns the poll, it is retried with 4x longer runs rather than skipped.)"""

    def two_done(out: Path) -> bool:
        try:
            return json.loads((out / SWEEP_FILE).read_text())["counts"].get("completed", 0) >= 2
        except (OSError, ValueError, KeyError):
            return False

    for attempt, steps in enumerate((150, 600, 2400)):
        scen = tiny_scenario(tmp_path / f"a{attempt}", TINY_YAML.replace("server_steps: 20", f"server_steps: {steps}"))
        out = tmp_path / f"a{attempt}" / "out"
        cmd = [
            sys.executable,
            "-m",
            "asyncfl",
            "sweep",
            str(scen),
            *GRID_ARGS,
            "--seeds",
            "2",
            "--out",
            str(out),
            "--workers",
            "2",
            "--quiet",
        ]
        proc = _start_then_wait(cmd, partial(two_done, out))
        if proc.poll() is None:
            break
    assert proc.poll() is None, "the sweep always finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "rerun the same command" in err
    first = read_sweep_manifest(out)
    assert first["counts"].get("completed", 0) < 8 and "running" not in first["counts"]
    done = {e["name"] for e in first["runs"] if e["status"] == "completed"}
    before = _stamps(out)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = _stamps(out)
    assert all(before[n] == after[n] for n in done)
    assert read_sweep_manifest(out)["counts"] == {"completed": 8}


def test_a_run_stopped_part_way_is_continued_not_cleared(tmp_path: Path) -> None:
    """A run directory left 'interrupted' (or without a manifest) holding the same scenario is
    handed to the runner's resume; one holding damaged results is cleared and rerun. Either
    way the bytes equal those of an uninterrupted run."""
    scen = tiny_scenario(tmp_path)
    ref = sweep(scen, tmp_path / "ref", grid={"server.max_staleness": [1, 3]})
    out = tmp_path / "out"
    shutil.copytree(tmp_path / "ref", out)
    names = [r.name for r in ref.runs]
    m = json.loads((out / names[0] / "manifest.json").read_text())
    m["status"] = "interrupted"
    (out / names[0] / "manifest.json").write_text(json.dumps(m))
    (out / names[1] / "metrics.csv").write_text("torn")
    from asyncfl.study.sweep_state import existing_state

    plan = plan_sweep(scen, grid={"server.max_staleness": [1, 3]})
    assert existing_state(out / names[0], plan.runs[0].scenario) == ("resume", None)
    assert existing_state(out / names[1], plan.runs[1].scenario) == ("redo", None)
    res = sweep(scen, out, grid={"server.max_staleness": [1, 3]})
    assert res.counts == {"completed": 2} and not any(r.skipped for r in res.runs)
    for n in names:
        for f in ("metrics.csv", "events.csv"):
            assert (out / n / f).read_bytes() == (tmp_path / "ref" / n / f).read_bytes()


@pytest.mark.slow
def test_sigterm_mid_run_then_rerun_continues_from_the_checkpoint(tmp_path: Path) -> None:
    """--workers 1 --checkpoint-every: SIGTERM while a run is going; the rerun continues it from
    its checkpoint and the results equal an uninterrupted sweep's."""
    for attempt, steps in enumerate((400, 1600, 6400)):  # retried with longer runs, never skipped
        scen = tiny_scenario(tmp_path / f"a{attempt}", TINY_YAML.replace("server_steps: 20", f"server_steps: {steps}"))
        ref_dir = tmp_path / f"a{attempt}" / "ref"
        ref = sweep(scen, ref_dir, grid={"server.max_staleness": [1, 3]})
        out = tmp_path / f"a{attempt}" / "out"
        cmd = [
            sys.executable,
            "-m",
            "asyncfl",
            "sweep",
            str(scen),
            "--grid",
            "server.max_staleness=1,3",
            "--out",
            str(out),
            "--checkpoint-every",
            "20",
            "--quiet",
        ]
        first = out / ref.runs[0].name
        proc = _start_then_wait(cmd, (first / "checkpoint").is_dir)
        if proc.poll() is None:
            break
    assert proc.poll() is None, "the sweep always finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert read_sweep_manifest(out)["runs"][0]["status"] == "interrupted"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    for r in ref.runs:
        for f in ("metrics.csv", "events.csv"):
            assert (out / r.name / f).read_bytes() == (ref_dir / r.name / f).read_bytes()


def test_a_rerun_removes_the_temporary_files_a_killed_sweep_left(tmp_path_factory: Any, tmp_path: Path) -> None:
    """A sweep killed while rewriting sweep.json leaves ``.sweep.json.tmp-PID``; the next sweep
    into the directory (holding its lock: nobody else writes it) removes it, as a run does in its
    directory, and keeps what is not its own (another command's temporary file, a user's file)."""
    out = tmp_path / "out"
    shutil.copytree(tiny_sweep(tmp_path_factory, workers=2), out)
    stale = out / f".{SWEEP_FILE}.tmp-4242"
    stale.write_text('{"runs": [')
    theirs = [out / ".report.html.tmp-4242", out / "notes.tmp-1", out / f".{SWEEP_FILE}.tmp-x"]
    for p in theirs:
        p.write_text("not the sweep's")
    scen = Path(read_sweep_manifest(out)["scenario"])
    code = main(["sweep", str(scen), *GRID_ARGS, "--seeds", "2", "--out", str(out), "--workers", "2", "--quiet"])
    assert code == 0
    assert not stale.exists()
    assert all(p.read_text() == "not the sweep's" for p in theirs)
    assert read_sweep_manifest(out)["counts"] == {"completed": 8}


def test_a_different_scenario_in_the_same_out_is_refused(tmp_path_factory: Any, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "out"
    shutil.copytree(tiny_sweep(tmp_path_factory, workers=2), out)
    scen = tiny_scenario(tmp_path)
    code = main(
        ["sweep", str(scen), *GRID_ARGS, "--seeds", "2", "--out", str(out), "--set", "server.lr=0.5", "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "different scenario" in err and "server.lr" in err


def test_a_failed_run_is_recorded_and_the_rest_go_on(tmp_path: Path) -> None:
    scen = tiny_scenario(tmp_path)
    grid = {
        "data": [{"dataset": "synthetic", "mean_samples": 20}, {"dataset": "mnist", "root": str(tmp_path / "none")}]
    }
    with pytest.raises(SweepFailedError, match=r"1 of 2 runs failed.*mnist files not found"):
        sweep(scen, tmp_path / "out", grid=grid)
    m = read_sweep_manifest(tmp_path / "out")
    status = {e["name"]: e["status"] for e in m["runs"]}
    assert sorted(status.values()) == ["completed", "failed"]
    assert "mnist files not found" in next(e["error"] for e in m["runs"] if e["status"] == "failed")


def test_a_diverged_run_is_a_result_not_a_failure(tmp_path: Path) -> None:
    scen = tiny_scenario(tmp_path)
    res = sweep(
        scen,
        tmp_path / "out",
        overrides=["data.dataset=quadratic", "model.name=quadratic", "algorithm.local_steps=10"],
        grid={"algorithm.lr": [0.01, 10.0]},
    )
    assert res.counts == {"completed": 1, "diverged": 1}
    again = sweep(
        scen,
        tmp_path / "out",
        overrides=["data.dataset=quadratic", "model.name=quadratic", "algorithm.local_steps=10"],
        grid={"algorithm.lr": [0.01, 10.0]},
    )
    assert all(r.skipped for r in again.runs)  # a divergence is deterministic: not rerun


def test_out_that_is_not_a_sweep_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not an asyncfl sweep"):
        sweep(tiny_scenario(tmp_path), tmp_path / "out")


def test_bad_backend_and_workers(tmp_path: Path) -> None:
    plan = plan_sweep(tiny_scenario(tmp_path))
    with pytest.raises(Exception, match="--backend"):
        run_sweep(plan, tmp_path / "o", backend="slurm")
    with pytest.raises(Exception, match="--workers"):
        run_sweep(plan, tmp_path / "o", workers=0)
    with pytest.raises(ScenarioError):
        plan_sweep(tiny_scenario(tmp_path), ["nope=1"])


def test_ray_backend_gives_the_same_runs(tmp_path_factory: Any, tmp_path: Path) -> None:
    """The acceptance sweep on a local Ray instance: same directories, byte-identical results."""
    pytest.importorskip("ray")
    local = tiny_sweep(tmp_path_factory, workers=2)
    scen = Path(read_sweep_manifest(local)["scenario"])
    out = tmp_path / "ray"
    env_before = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        res = sweep(scen, out, grid=TINY_GRID, seeds=2, backend="ray", workers=2)
    finally:
        if env_before is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
    assert res.counts == {"completed": 8}
    names = sorted(p.name for p in local.iterdir() if p.is_dir())
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == names
    for n in names:
        assert load_run(out / n).status == "completed"
        for f in ("metrics.csv", "events.csv", "scenario.yaml"):
            assert (out / n / f).read_bytes() == (local / n / f).read_bytes(), (n, f)


# ------------------------------------------------------------------------------------------------
# Signals, failing resumes, bad input
# ------------------------------------------------------------------------------------------------


def _proc_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (from /proc), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _pool_workers(parent: int) -> list[int]:
    """Pids of the process-pool workers (spawned children) of process ``parent``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(d.name))
    return pids


def _kill_workers(pids: list[int]) -> list[int]:
    """SIGKILL those of ``pids`` still alive that are pool workers; returns them."""
    alive = []
    for pid in pids:
        try:
            spawned = b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if spawned and _proc_state(pid) not in (None, "Z"):
            alive.append(pid)
            os.kill(pid, signal.SIGKILL)
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_sigterm_stops_the_pool_workers_at_once(tmp_path: Path) -> None:
    """SIGTERM to a --workers 2 sweep: its workers are sent SIGTERM (each run writes a checkpoint
    and status interrupted), the sweep exits 143 within seconds, no worker is left alive, and
    sweep.json says what the runs' manifests say."""
    scen = tiny_scenario(tmp_path, TINY_YAML.replace("server_steps: 20", "server_steps: 1000000"))
    out = tmp_path / "out"
    names = ["server.max_staleness=1,seed=0", "server.max_staleness=3,seed=0"]
    cmd = [
        sys.executable,
        "-m",
        "asyncfl",
        "sweep",
        str(scen),
        "--grid",
        "server.max_staleness=1,3",
        "--out",
        str(out),
        "--workers",
        "2",
        "--checkpoint-every",
        "10",
        "--quiet",
    ]
    proc = _start_then_wait(cmd, lambda: all((out / n / "checkpoint" / "latest.json").is_file() for n in names))
    assert proc.poll() is None, "the sweep ended before both runs were going"
    workers = _pool_workers(proc.pid)
    try:
        assert len(workers) == 2
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:  # never leave million-step runs behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = _kill_workers(workers)
    assert proc.returncode == 143, err
    assert elapsed < 8, f"the sweep took {elapsed:.1f} s to stop"
    assert "rerun the same command" in err and "Traceback" not in err
    assert left == [], "worker processes outlived the sweep"
    sweep_status = {e["name"]: e["status"] for e in read_sweep_manifest(out)["runs"]}
    run_status = {n: json.loads((out / n / "manifest.json").read_text())["status"] for n in names}
    assert sweep_status == run_status == dict.fromkeys(names, "interrupted")
    assert all((out / n / "checkpoint" / "latest.json").is_file() for n in names)


def _long_sweep(tmp_path: Path, workers: int) -> tuple[list[str], Path, list[str]]:
    """The command of a 2-run sweep of million-step runs that checkpoint every 10 steps, its --out
    and its run names."""
    scen = tiny_scenario(tmp_path, TINY_YAML.replace("server_steps: 20", "server_steps: 1000000"))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "asyncfl",
        "sweep",
        str(scen),
        "--grid",
        "server.max_staleness=1,3",
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--checkpoint-every",
        "10",
        "--quiet",
    ]
    return cmd, out, ["server.max_staleness=1,seed=0", "server.max_staleness=3,seed=0"]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_ctrl_c_exits_130_naming_the_interrupted_runs_and_the_command_that_resumes(tmp_path: Path) -> None:
    """Ctrl-C sends SIGINT to the whole foreground process group (the sweep and its pool
    workers): exit 130, not 1; the runs are recorded interrupted, not failed; the one line says
    which runs were interrupted and how to resume."""
    cmd, out, names = _long_sweep(tmp_path, workers=2)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while (
        proc.poll() is None
        and time.monotonic() < deadline
        and not all((out / n / "checkpoint" / "latest.json").is_file() for n in names)
    ):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    workers = _pool_workers(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        left = _kill_workers(workers)
    assert proc.returncode == 130, err
    assert left == [] and "Traceback" not in err and err.count("\n") == 1, err
    assert "sweep interrupted by SIGINT: 2 runs interrupted (" in err and all(n in err for n in names)
    assert "rerun the same command to resume: asyncfl sweep " in err and f"--out {out}" in err
    assert {e["name"]: e["status"] for e in read_sweep_manifest(out)["runs"]} == dict.fromkeys(names, "interrupted")


def test_a_second_sweep_into_the_same_out_is_refused_while_the_first_runs(tmp_path: Path, capsys: Any) -> None:
    """One writer per sweep directory: while a sweep runs, another into its --out is one line,
    exit 2, naming the holder; the first one's sweep.json is left to it."""
    cmd, out, names = _long_sweep(tmp_path, workers=1)
    proc = _start_then_wait(cmd, (out / names[0] / "checkpoint" / "latest.json").is_file)
    try:
        assert proc.poll() is None, "the first sweep ended early"
        code = main(["sweep", cmd[4], "--grid", "server.max_staleness=1,3", "--out", str(out), "--force"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"another sweep is writing there (pid {proc.pid}: asyncfl sweep " in err
        assert read_sweep_manifest(out)["runs"][0]["status"] == "running"  # not reset by the second
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err


def test_the_sweep_lock_is_taken_before_the_checks(tmp_path: Path) -> None:
    """In-process: a held lock refuses a sweep before it reads or writes anything; once released,
    the same sweep runs; a symlinked lock file is refused, not followed."""
    from asyncfl.study.sweep_state import SWEEP_LOCK, sweep_locked

    scen = tiny_scenario(tmp_path)
    out = tmp_path / "out"
    with sweep_locked(out, ["asyncfl", "sweep", "x.yaml"]):
        with pytest.raises(RunDirError, match=rf"pid {os.getpid()}: asyncfl sweep x.yaml \(since "):
            sweep(scen, out)
        assert sorted(p.name for p in out.iterdir()) == [SWEEP_LOCK]
    assert sweep(scen, out).counts == {"completed": 1}
    assert not (out / SWEEP_LOCK).exists()  # released with the sweep
    other = tmp_path / "other"
    other.mkdir()
    (other / SWEEP_LOCK).symlink_to(tmp_path / "victim")
    with pytest.raises(RunDirError, match="lock file"):
        sweep(scen, other)
    assert not (tmp_path / "victim").exists()


PROFILE_ROWS = ["client,speed,download_bandwidth,upload_bandwidth,latency"] + [
    f"{i},{100 + 10 * i},1e6,5e5,0.01" for i in range(10)
]


def _sigterm_at(step: int) -> Callable[[float, dict[str, Any]], None]:
    """A progress hook that sends this process SIGTERM in the run's ``step``-th server step."""
    count = [0]

    def hook(fraction: float, info: dict[str, Any]) -> None:
        count[0] += 1
        if count[0] == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def _profile_sweep(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A 2-run sweep of a scenario with a relative system.profile, finished once into ``ref``
    (the bytes to compare with); returns (scenario file, ref dir, run names)."""
    text = TINY_YAML.replace("server_steps: 20", "server_steps: 60") + "system: {profile: profile.csv}\n"
    scen = tiny_scenario(tmp_path / "study", text)
    (tmp_path / "study" / "profile.csv").write_text("\n".join(PROFILE_ROWS) + "\n")
    ref = sweep(scen, tmp_path / "ref", grid={"server.max_staleness": [1, 3]})
    return scen, tmp_path / "ref", [r.name for r in ref.runs]


def _interrupt(scen: Path, run_dir: Path, name: str) -> None:
    """Write ``run_dir`` as the sweep's run ``name`` stopped by SIGTERM at step 30 (checkpoint
    every 5 steps), as a SIGTERM to a sweep leaves it."""
    from asyncfl.runs import runner

    r = next(r for r in plan_sweep(scen, grid={"server.max_staleness": [1, 3]}).runs if r.name == name)
    with pytest.raises(runner.RunInterrupted):
        runner.run(r.scenario, run_dir, base_dir=scen.parent, checkpoint_every=5, progress=_sigterm_at(30))
    assert load_run(run_dir).status == "interrupted" and (run_dir / "checkpoint" / "latest.json").is_file()


def test_a_resume_failing_on_bad_input_keeps_the_run(tmp_path: Path, capsys: Any) -> None:
    """An interrupted run whose profile file has gone: the rerun fails it with one line naming
    system.profile (exit 2) and keeps its directory, checkpoint and all; once the file is back,
    the next rerun continues it to the same bytes as a sweep never stopped."""
    scen, ref, names = _profile_sweep(tmp_path)
    out = tmp_path / "out"
    _interrupt(scen, out / names[0], names[0])
    before = {p.name: p.read_bytes() for p in (out / names[0]).rglob("*") if p.is_file()}
    profile = scen.parent / "profile.csv"
    profile.rename(tmp_path / "moved.csv")
    args = ["sweep", str(scen), "--grid", "server.max_staleness=1,3", "--out", str(out), "--quiet"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "system.profile" in err and "Traceback" not in err
    after = {p.name: p.read_bytes() for p in (out / names[0]).rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k != ".lock"}  # nothing lost, nothing cut
    entry = next(e for e in read_sweep_manifest(out)["runs"] if e["name"] == names[0])
    assert entry["status"] == "failed" and "system.profile" in entry["error"]
    (tmp_path / "moved.csv").rename(profile)
    assert main(args) == 0, capsys.readouterr().err
    for n in names:
        for f in ("metrics.csv", "events.csv"):
            assert (out / n / f).read_bytes() == (ref / n / f).read_bytes()


def test_a_run_whose_checkpoint_is_unusable_starts_afresh(tmp_path: Path) -> None:
    scen, ref, names = _profile_sweep(tmp_path)
    out = tmp_path / "out"
    _interrupt(scen, out / names[0], names[0])
    for state in (out / names[0] / "checkpoint").glob("state-*.json"):
        state.write_text("{torn")
    res = sweep(scen, out, grid={"server.max_staleness": [1, 3]})
    assert res.counts == {"completed": 2}
    for n in names:
        for f in ("metrics.csv", "events.csv"):
            assert (out / n / f).read_bytes() == (ref / n / f).read_bytes()


def test_an_interrupted_run_of_a_different_scenario_is_refused(tmp_path: Path, capsys: Any) -> None:
    scen, _, names = _profile_sweep(tmp_path)
    out = tmp_path / "out"
    _interrupt(scen, out / names[0], names[0])
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code = main(
        [
            "sweep",
            str(scen),
            "--grid",
            "server.max_staleness=1,3",
            "--out",
            str(out),
            "--set",
            "server.lr=0.5",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "interrupted run of a different scenario" in err and "server.lr" in err and "--force" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written or removed
    # one killed before its first checkpoint holds nothing to keep: cleared and rerun
    from asyncfl.study.sweep_state import existing_state

    shutil.rmtree(out / names[0] / "checkpoint")
    (out / names[0] / "manifest.json").unlink()
    other = plan_sweep(scen, grid={"server.max_staleness": [1, 3]}, overrides=["server.lr=0.5"]).runs[0].scenario
    assert existing_state(out / names[0], other) == ("redo", None)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--threads", "-1"], "--threads"),
        (["--threads", "0"], "--threads"),
        (["--threads", "two"], "--threads"),
        (["--workers", "0"], "--workers"),
        (["--seeds", "0"], "--seeds"),
        (["--cpus-per-run", "0"], "--cpus-per-run"),
        (["--gpus-per-run", "-1"], "--gpus-per-run"),
    ],
)
def test_bad_counts_exit_2_naming_the_flag(tmp_path: Path, capsys: Any, args: list[str], named: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(tiny_scenario(tmp_path)), "--out", str(tmp_path / "out"), "--quiet", *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert named in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_threads_through_the_api_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--threads"):
        run_sweep(plan_sweep(tiny_scenario(tmp_path)), tmp_path / "out", threads=0)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_fails_before_any_run(tmp_path: Path, capsys: Any) -> None:
    code = main(
        [
            "sweep",
            str(tiny_scenario(tmp_path)),
            "--grid",
            "server.max_staleness=1,3",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cuda",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "execution.device" in err and "cuda" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_runs_failing_on_bad_input_exit_2_and_on_a_bug_exit_1(tmp_path: Path, monkeypatch: Any) -> None:
    scen = tiny_scenario(tmp_path)
    grid = {
        "data": [{"dataset": "mnist", "root": str(tmp_path / "none")}, {"dataset": "synthetic", "mean_samples": 20}]
    }
    with pytest.raises(SweepFailedError) as exc:
        sweep(scen, tmp_path / "out", grid=grid)
    assert exc.value.exit_code == 2  # every failure is bad input (a data set missing)
    from asyncfl.runs import runner

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(runner, "run", broken)
    with pytest.raises(SweepFailedError, match="RuntimeError: a bug") as exc:
        sweep(scen, tmp_path / "out2", grid=grid)
    assert exc.value.exit_code == 1


def test_a_ray_address_where_nothing_answers_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ray.init retries a dead address for minutes, printing multi-line warnings; the sweep probes
    it first: one line, exit 2, nothing written."""
    scen = tiny_scenario(tmp_path, TINY_YAML)
    out = tmp_path / "out"
    t0 = time.monotonic()
    code = main(["sweep", str(scen), "--out", str(out), "--backend", "ray", "--ray-address", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "--ray-address 127.0.0.1:1: nothing answers there" in err and err.count("\n") == 1
    assert time.monotonic() - t0 < 30 and not out.exists()
