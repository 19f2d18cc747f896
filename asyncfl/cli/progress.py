"""Progress of ``asyncfl run`` / ``resume`` / ``sweep`` on stderr, with a sense of time.

On a terminal: a transient rich bar with the elapsed time and an ETA. Off a terminal (nohup, CI, a
batch job: stderr is not a TTY): plain lines, one per finished run, and a heartbeat (done/total,
elapsed, ETA) at most every :data:`HEARTBEAT_S` seconds while nothing else was printed. The clock
is injectable, so that tests check the heartbeat's interval without waiting for it.

The ETA extrapolates linearly: a run from the fraction of its stop criterion reached
(:meth:`asyncfl.sim.engine.Engine.progress`), a sweep from the runs it finished (runs kept from
before do not count: they took no time).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

HEARTBEAT_S = 30.0
"""Off a terminal, the longest silence (seconds) before a heartbeat line."""

Clock = Callable[[], float]


def duration(seconds: float | None) -> str:
    """``7s``, ``3m05s``, ``2h04m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Eta:
    """Elapsed time since creation and the time left, from the fraction of the work done: the
    projection of the last update counts down between updates."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.t0 = clock()
        self._projected: float | None = None

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def update(self, fraction: float) -> None:
        if fraction > 0:
            self._projected = self.elapsed() / min(fraction, 1.0)

    def remaining(self) -> float | None:
        return None if self._projected is None else max(0.0, self._projected - self.elapsed())


class LogLines:
    """Lines on a stream that is not a terminal: :meth:`line` writes one; :meth:`tick` writes
    ``heartbeat()`` when nothing was written for ``interval`` seconds. Thread-safe (a heartbeat
    thread ticks while the main thread waits for runs)."""

    def __init__(
        self, stream: TextIO, heartbeat: Callable[[], str], clock: Clock = time.monotonic, interval: float = HEARTBEAT_S
    ) -> None:
        self.stream, self.heartbeat, self.clock, self.interval = stream, heartbeat, clock, interval
        self._last = clock()
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.stream.write(f"asyncfl: {text}\n")
            self.stream.flush()
            self._last = self.clock()

    def tick(self) -> None:
        if self.clock() - self._last >= self.interval:
            self.line(self.heartbeat())


@contextmanager
def ticking(lines: LogLines, period: float = 1.0) -> Iterator[None]:
    """A daemon thread calling ``lines.tick()`` every ``period`` seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(period):
            try:
                lines.tick()
            except (OSError, ValueError):  # stderr closed: no more heartbeats
                return

    thread = threading.Thread(target=loop, name="asyncfl-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2 * period)


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _eta_column(eta: Eta) -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"ETA {duration(eta.remaining())}", style="progress.remaining")

    return EtaColumn()


def _bar(console: Any, eta: Eta, *columns: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.fields[label]}"),
        BarColumn(),
        *columns,
        TimeElapsedColumn(),
        _eta_column(eta),
        console=console,
        transient=True,
    )


# ------------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------------


class RunProgress:
    """The progress of one run; call it as the runner's progress hook ``(fraction, info)``. Use
    as a context manager (the bar or the heartbeat thread lives inside it); :meth:`finished`
    writes the run's line off a terminal."""

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        terminal: bool | None = None,
        clock: Clock = time.monotonic,
        interval: float = HEARTBEAT_S,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self.eta = Eta(clock)
        self.fraction = 0.0
        self.lines = LogLines(self.stream, self._heartbeat, clock, interval)
        self._bar: Any = None
        self._task: Any = None

    def _heartbeat(self) -> str:
        return (
            f"run {self.label}: {100 * self.fraction:.0f}% done, elapsed {duration(self.eta.elapsed())}, "
            f"ETA {duration(self.eta.remaining())}"
        )

    def __call__(self, fraction: float, info: dict[str, Any]) -> None:
        self.fraction = min(max(fraction, 0.0), 1.0)
        self.eta.update(self.fraction)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.fraction)
        else:
            self.lines.tick()

    def finished(self, status: str) -> None:
        if not self.terminal:
            self.lines.line(f"run {self.label}: {status} after {duration(self.eta.elapsed())}")

    @contextmanager
    def shown(self) -> Iterator[RunProgress]:
        if not self.terminal:
            with ticking(self.lines):
                yield self
            return
        from rich.console import Console
        from rich.progress import TextColumn

        console = Console(file=self.stream)
        with _bar(console, self.eta, TextColumn("{task.percentage:>3.0f}%")) as bar:
            self._bar, self._task = bar, bar.add_task("", total=1.0, label=self.label)
            try:
                yield self
            finally:
                self._bar = None


# ------------------------------------------------------------------------------------------------
# A sweep
# ------------------------------------------------------------------------------------------------


class SweepProgress:
    """The progress of a sweep of ``total`` runs; call it as :func:`asyncfl.study.sweep.run_sweep`'s
    progress hook ``(event, run)``, inside :meth:`shown`."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        terminal: bool | None = None,
        clock: Clock = time.monotonic,
        interval: float = HEARTBEAT_S,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self.eta = Eta(clock)
        self.kept = 0
        self.finished = 0
        self.running = 0
        self.counts: dict[str, int] = {}
        self.lines = LogLines(self.stream, self._heartbeat, clock, interval)
        self._kept_said = False
        self._bar: Any = None
        self._task: Any = None

    @property
    def done(self) -> int:
        return self.kept + self.finished

    def _status(self) -> str:
        return (
            f"{self.done}/{self.total} done, elapsed {duration(self.eta.elapsed())}, "
            f"ETA {duration(self.eta.remaining())}"
        )

    def _heartbeat(self) -> str:
        return f"sweep: {self._status()} ({self.running} running)"

    def _say_kept(self) -> None:
        if self.kept and not self._kept_said and not self.terminal:
            self.lines.line(f"sweep: {self.kept} of {self.total} runs kept from before")
        self._kept_said = True

    def __call__(self, event: str, run: Any) -> None:
        if event == "skip":
            self.kept += 1
            self.counts["kept"] = self.counts.get("kept", 0) + 1
        elif event == "start":
            self._say_kept()
            self.running += 1
        else:
            self._say_kept()
            self.running = max(0, self.running - 1)
            self.finished += 1
            self.counts[run.status] = self.counts.get(run.status, 0) + 1
            self.eta.update(self.finished / max(1, self.total - self.kept))
            if not self.terminal:
                wall = f" in {run.wall_time_s:.1f} s" if run.wall_time_s is not None else ""
                self.lines.line(f"sweep: {run.status} {run.name}{wall}; {self._status()}")
        if self._bar is not None:
            shown = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
            self._bar.update(self._task, completed=self.done, description=shown)

    @contextmanager
    def shown(self) -> Iterator[SweepProgress]:
        if not self.terminal:
            try:
                with ticking(self.lines):
                    yield self
            finally:
                self._say_kept()
            return
        from rich.console import Console
        from rich.progress import MofNCompleteColumn, TextColumn

        console = Console(file=self.stream)
        with _bar(console, self.eta, MofNCompleteColumn(), TextColumn("{task.description}")) as bar:
            self._bar, self._task = bar, bar.add_task("", total=self.total, label="sweep")
            try:
                yield self
            finally:
                self._bar = None


__all__ = ["HEARTBEAT_S", "Eta", "LogLines", "RunProgress", "SweepProgress", "duration", "is_terminal", "ticking"]
