"""Studies with a sense of time (issue 13, point 4): off a terminal, ``asyncfl run`` and ``asyncfl
sweep`` print one line per finished run and a heartbeat (done/total, elapsed, ETA) at most every
30 s; the ETA extrapolates linearly. The clock is injected: no test waits 30 s."""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from test_study_data import tiny_scenario

from asyncfl.cli import main
from asyncfl.cli.progress import HEARTBEAT_S, LogLines, RunProgress, SweepProgress, duration, ticking


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    name: str
    status: str = "completed"
    wall_time_s: float | None = None


def test_durations() -> None:
    assert [duration(s) for s in (None, 0, 7.4, 59.6, 185, 3600, 7440)] == [
        "?",
        "0s",
        "7s",
        "1m00s",
        "3m05s",
        "1h00m",
        "2h04m",
    ]


def test_sweep_lines_and_heartbeat_at_most_every_30_s() -> None:
    """4 runs; the first ends at t = 50 s: ETA = 50 * 4 - 50 = 150 s, counting down after."""
    clock, out = FakeClock(), io.StringIO()
    p = SweepProgress(4, stream=out, terminal=False, clock=clock)
    assert HEARTBEAT_S == 30.0
    p("start", Run("a"))
    p("start", Run("b"))
    clock.now += 29
    p.lines.tick()
    assert out.getvalue() == ""  # 29 s of silence: no heartbeat yet
    clock.now += 1
    p.lines.tick()
    assert out.getvalue() == "asyncfl: sweep: 0/4 done, elapsed 30s, ETA ? (2 running)\n"
    clock.now += 15
    p.lines.tick()  # 15 s after the heartbeat: nothing
    clock.now += 5
    p("done", Run("a", "completed", 50.0))
    lines = out.getvalue().splitlines()
    assert lines[1] == "asyncfl: sweep: completed a in 50.0 s; 1/4 done, elapsed 50s, ETA 2m30s"
    clock.now += 29
    p.lines.tick()  # the run's line resets the silence
    assert len(out.getvalue().splitlines()) == 2
    clock.now += 1
    p.lines.tick()
    assert out.getvalue().splitlines()[2] == "asyncfl: sweep: 1/4 done, elapsed 1m20s, ETA 2m00s (1 running)"
    p("done", Run("b", "failed", 80.0))
    assert out.getvalue().splitlines()[3].startswith("asyncfl: sweep: failed b in 80.0 s; 2/4 done")


def test_runs_kept_from_before_count_as_done_but_not_in_the_eta() -> None:
    clock, out = FakeClock(), io.StringIO()
    p = SweepProgress(4, stream=out, terminal=False, clock=clock)
    p("skip", Run("a"))
    p("skip", Run("b"))
    p("start", Run("c"))
    clock.now += 10
    p("done", Run("c", "completed", 10.0))
    assert out.getvalue().splitlines() == [
        "asyncfl: sweep: 2 of 4 runs kept from before",
        "asyncfl: sweep: completed c in 10.0 s; 3/4 done, elapsed 10s, ETA 10s",  # 1 of 2 to run in 10 s
    ]


def test_run_heartbeat_from_its_fraction_done() -> None:
    clock, out = FakeClock(), io.StringIO()
    p = RunProgress("tiny", stream=out, terminal=False, clock=clock)
    clock.now += 10
    p(0.25, {})
    assert out.getvalue() == ""
    clock.now += 20
    p(0.5, {})  # projected 60 s in all
    assert out.getvalue() == "asyncfl: run tiny: 50% done, elapsed 30s, ETA 30s\n"
    clock.now += 10
    p(0.6, {})
    assert len(out.getvalue().splitlines()) == 1
    p.finished("completed")
    assert out.getvalue().splitlines()[1] == "asyncfl: run tiny: completed after 40s"


def test_the_heartbeat_thread_ticks_while_the_main_thread_waits() -> None:
    out = io.StringIO()
    lines = LogLines(out, lambda: "beat", interval=0.05)
    with ticking(lines, period=0.01):
        time.sleep(0.3)
    n = out.getvalue().count("asyncfl: beat\n")
    assert 2 <= n <= 7  # at most one per 0.05 s


def test_sweep_and_run_off_a_terminal_print_a_line_per_finished_run(tmp_path: Path, capsys: Any) -> None:
    """Under pytest stderr is not a TTY, as under nohup or CI."""
    scen = tiny_scenario(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", str(scen), "--grid", "server.max_staleness=1,3", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    done = re.findall(r"^asyncfl: sweep: completed (\S+) in [\d.]+ s; (\d)/2 done, elapsed \S+, ETA \S+$", err, re.M)
    assert sorted(done) == [("server.max_staleness=1,seed=0", "1"), ("server.max_staleness=3,seed=0", "2")]
    assert main(["sweep", str(scen), "--grid", "server.max_staleness=1,3", "--out", str(out)]) == 0
    assert "asyncfl: sweep: 2 of 2 runs kept from before" in capsys.readouterr().err
    assert main(["run", str(scen), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^asyncfl: run tiny: completed after \d+s$", err, re.M), err
    assert main(["sweep", str(scen), "--out", str(tmp_path / "q"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
