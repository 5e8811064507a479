"""Progress of the runtime tier as it runs: a live view on a terminal (rich), one line per finished cell
elsewhere (CI logs), nothing with ``--quiet`` (the run's summary is printed either way, by the workflow).

The live view shows cells done of all, each slot's ladder and the rung it is on, the time spent, and an ETA from
the stored durations of the work left (schedule.Scheduler.remaining_s) over the slots. Every method is called
from the executor's thread except ``rung``, which the ladders' threads call: the state is guarded by a lock.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from stackmatrix.domain import CellResult

if TYPE_CHECKING:
    from rich.table import Table

    from stackmatrix.executors.schedule import Scheduler, Task
    from stackmatrix.ladder.runtime import Placement


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


@dataclass
class _Slot:
    task: str
    where: str
    since: float
    estimate_s: float
    rung: str = "env"


@dataclass
class Progress:
    """The quiet kind (``--quiet``): counts only. The others draw from the same state."""

    total: int  # cells this run decides
    slots: int = 1
    done: int = 0
    t0: float = field(default_factory=time.monotonic)
    remaining_s: float = 0.0
    running: dict[str, _Slot] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, task: Task, placement: Placement) -> None:
        with self.lock:
            self.running[task.key] = _Slot(task.key, placement.label, time.monotonic(), task.estimate_s)

    def rung(self, key: str, rung: str) -> None:
        with self.lock:
            if key in self.running:
                self.running[key].rung = rung

    def rung_of(self, key: str) -> str | None:
        """The rung the running ladder ``key`` is on, None when it is not running."""
        with self.lock:
            slot = self.running.get(key)
            return slot.rung if slot is not None else None

    def retrying(self, task: Task, why: str, wait_s: float) -> None:
        with self.lock:
            self.running.pop(task.key, None)
        self.say(f"retry in {wait_s:.0f}s: {task.key} ({why[:200]})")

    def finished(self, task: Task, lost: str | None) -> None:
        with self.lock:
            self.running.pop(task.key, None)
        if lost:
            self.say(f"GPU taken out of this run: {lost}")

    def cell(self, result: CellResult, seconds: float, where: str) -> None:
        with self.lock:
            self.done += 1

    def refresh(self, sched: Scheduler) -> None:
        with self.lock:
            self.remaining_s = sched.remaining_s()
        self.draw()

    def eta_s(self, now: float) -> float:
        """The work left (waiting ladders, and what the running ones should still take) over the slots."""
        left = sum(max(0.0, s.estimate_s - (now - s.since)) for s in self.running.values())
        return (self.remaining_s + left) / max(1, self.slots)

    def say(self, line: str) -> None:
        pass

    def draw(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class LineProgress(Progress):
    """Not a terminal: one line per finished cell, and retries and lost GPUs as they happen."""

    out: IO[str] = field(default_factory=lambda: sys.stderr)

    def cell(self, result: CellResult, seconds: float, where: str) -> None:
        super().cell(result, seconds, where)
        reason = f" ({result.reason})" if result.reason else ""
        flaky = " flaky" if result.flaky else ""
        self.say(
            f"[{self.done}/{self.total}] {result.cell_id}: {result.verdict}{reason}{flaky} in {seconds:.1f}s"
            + (f" on {where}" if where else "")
        )

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


@dataclass
class LiveProgress(LineProgress):
    """A terminal: the live view (rich), redrawn a few times a second; finished cells scroll above it."""

    live: Any = None

    def __post_init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=self.out)
        self.live = Live(self._view(), console=self.console, refresh_per_second=4, transient=True)
        self.live.start()

    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    def draw(self) -> None:
        if self.live is not None:
            self.live.update(self._view())

    def _view(self) -> Table:
        from rich.table import Table

        now = time.monotonic()
        with self.lock:
            slots = sorted(self.running.values(), key=lambda s: s.where)
            done, total, eta = self.done, self.total, self.eta_s(now)
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.title = f"{done}/{total} cells · {duration(now - self.t0)} elapsed · ETA {duration(eta)}"
        table.title_justify = "left"
        for column in ("slot", "ladder", "rung", "for"):
            table.add_column(column)
        for s in slots:
            table.add_row(s.where, s.task, s.rung, duration(now - s.since))
        return table

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def make_progress(total: int, slots: int, quiet: bool, out: IO[str] | None = None) -> Progress:
    """The live view on a terminal, lines elsewhere, counts only with ``quiet``."""
    stream = out or sys.stderr
    if quiet:
        return Progress(total, slots)
    if stream.isatty():
        return LiveProgress(total, slots, out=stream)
    return LineProgress(total, slots, out=stream)
