"""Which ladder starts next: one policy for the local executor and for the benchmark's simulation of it.

Longest first by stored durations (on identical slots, a list scheduler starting the longest waiting task ends
within 4/3 of the best makespan), a task's length counting the builds it would make: so builds start early and
their users do not queue behind them at the end. A ladder whose build a running ladder is making waits for it; one
the slots cannot hold now is passed over for a smaller one.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stackmatrix.executors.slots import Need, Slots
from stackmatrix.ladder.runtime import Placement

# A task's environment build key starts so: the build its ladder has made once it is past its ``env`` rung.
ENV_BUILD = "env "


@dataclass(frozen=True)
class Task:
    """One ladder as the scheduler sees it: what it asks of the host, what it builds or shares, how long it
    should take (``build_s`` of it only when it makes a build first)."""

    key: str
    need: Need
    builds: tuple[str, ...] = ()
    estimate_s: float = 0.0
    build_s: float = 0.0


class Scheduler:
    def __init__(self, tasks: Iterable[Task], slots: Slots) -> None:
        self.slots = slots
        self.pending: list[Task] = list(tasks)
        self.built: set[str] = set()
        self.building: dict[str, str] = {}  # build key -> the running task making it
        self.running: dict[str, Task] = {}

    def never(self) -> list[tuple[Task, str]]:
        """The tasks these slots can never hold, taken out of the queue with the reason."""
        out = [(t, why) for t in self.pending if (why := self.slots.never(t.need)) is not None]
        gone = {t.key for t, _ in out}
        self.pending = [t for t in self.pending if t.key not in gone]
        return out

    def start(self) -> list[tuple[Task, Placement]]:
        """The tasks to start now, each with its placement (held until ``finished``)."""
        out = []
        for task in sorted(self.pending, key=self._priority):
            if len(self.running) >= self.slots.size:
                break
            if any(b in self.building for b in task.builds):
                continue  # its build is being made: wait for it
            placement = self.slots.acquire(task.need)
            if placement is None:
                continue
            self.pending.remove(task)
            self.running[task.key] = task
            self.building.update({b: task.key for b in task.builds if b not in self.built})
            out.append((task, placement))
        return out

    def _priority(self, task: Task) -> tuple[float, str]:
        """Longest first; a task that would make a build counts its build."""
        builds = any(b not in self.built and b not in self.building for b in task.builds)
        return -(task.estimate_s + (task.build_s if builds else 0.0)), task.key

    def finished(self, task: Task) -> None:
        self.running.pop(task.key, None)
        self.slots.release(task.key)
        for b in task.builds:
            if self.building.get(b) == task.key:
                del self.building[b]
                self.built.add(b)

    def made(self, key: str, build: str) -> None:
        """The running task ``key`` has made ``build`` (it is past that step): the tasks waiting for it may start."""
        if self.building.get(build) == key:
            del self.building[build]
            self.built.add(build)

    def again(self, task: Task) -> None:
        """A task to run once more (a retry)."""
        self.pending.append(task)

    def remaining_s(self) -> float:
        """Work left, in slot-seconds (the ETA divides it by the slots)."""
        return sum(t.estimate_s + (t.build_s if set(t.builds) - self.built else 0) for t in self.pending)


@dataclass(frozen=True)
class Simulated:
    makespan_s: float
    lower_bound_s: float
    never: int
    tasks: int

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.lower_bound_s if self.lower_bound_s else 1.0


def simulate(tasks: Sequence[Task], slots: Slots) -> Simulated:
    """The makespan of ``tasks`` on ``slots`` under this policy, with the durations taken as exact (a task runs
    ``estimate_s``, plus ``build_s`` when it makes a build); and the lower bound max(work / slots, longest
    task), work counted in devices x seconds."""
    sched = Scheduler(tasks, slots)
    never = len(sched.never())
    runnable = list(sched.pending)
    clock = 0.0
    events: list[tuple[float, str]] = []
    by_key = {t.key: t for t in runnable}
    work = 0.0
    while sched.pending or events:
        for task, _ in sched.start():
            builder = any(sched.building.get(b) == task.key for b in task.builds)
            seconds = task.estimate_s + (task.build_s if builder else 0)
            work += seconds * task.need.tp
            heapq.heappush(events, (clock + seconds, task.key))
        if not events:
            raise RuntimeError(f"{len(sched.pending)} tasks can never start on these slots")
        clock, key = heapq.heappop(events)
        sched.finished(by_key[key])
    devices = slots.size
    longest = max((t.estimate_s + t.build_s for t in runnable), default=0.0)
    return Simulated(clock, max(work / devices, longest), never, len(runnable))
