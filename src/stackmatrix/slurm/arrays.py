"""A job array as the plan asks for it, as ``sbatch`` arguments, and the states its tasks end in."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# States a task ends in without having recorded its cells: their cells become not-run with the state as evidence.
FAILED_STATES = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "PREEMPTED", "BOOT_FAIL"})
DONE_STATES = FAILED_STATES | {"COMPLETED", "DEADLINE"}
TIME_MARGIN = 1.5  # stored durations are medians: a task gets half as much again, and at least MIN_MINUTES
MIN_MINUTES = 5


@dataclass(frozen=True)
class ArraySpec:
    name: str
    script: str  # the batch script's path (it runs the worker command)
    tasks: int
    throttle: int | None = None  # at most this many tasks at once (%K)
    gpus: int = 0  # --gres=gpu:<tp> per task
    cpus: int = 1
    mem_mb: int = 1024
    seconds: float = 300.0  # expected per task (stored durations)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    output: str | None = None  # -o pattern (%A job, %a task)
    extra: tuple[str, ...] = ()  # the user's own sbatch arguments, last so that they win

    @property
    def minutes(self) -> int:
        return max(MIN_MINUTES, math.ceil(self.seconds * TIME_MARGIN / 60))

    def argv(self) -> list[str]:
        array = f"0-{self.tasks - 1}" + (f"%{self.throttle}" if self.throttle else "")
        out = [f"--job-name={self.name}", f"--array={array}", f"--cpus-per-task={self.cpus}", f"--mem={self.mem_mb}M"]
        out.append(f"--time={self.minutes}")
        if self.gpus:
            out.append(f"--gres=gpu:{self.gpus}")
        for flag, value in (("--partition", self.partition), ("--account", self.account), ("--qos", self.qos)):
            if value:
                out.append(f"{flag}={value}")
        if self.output:
            out.append(f"--output={self.output}")
        # a lost node or a preemption ends the task (NODE_FAIL, PREEMPTED) instead of running it again unseen:
        # the run records the state and ``--resume`` submits what is missing (``--requeue`` in extra wins)
        out.append("--no-requeue")
        return [*out, *self.extra, self.script]


def task_states(scontrol_oneliners: str) -> dict[int, str]:
    """Array task index -> JobState, from ``scontrol show job <id> --oneliner`` (one line per task)."""
    states: dict[int, str] = {}
    for line in scontrol_oneliners.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        task, state = fields.get("ArrayTaskId", ""), fields.get("JobState", "")
        if task.isdigit() and state:
            states[int(task)] = state
    return states


def waiting_tasks(scontrol_oneliners: str) -> set[int]:
    """Array task indices not started yet: the array's own record lists them as ranges (``ArrayTaskId=2-5%2``,
    ``4,6-8``) until each is split off to run."""
    out: set[int] = set()
    for line in scontrol_oneliners.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        text = fields.get("ArrayTaskId", "").split("%")[0]
        if text.isdigit():
            continue  # one task, listed with its own state
        for part in text.split(","):
            low, _, high = part.partition("-")
            if low.isdigit() and (high.isdigit() or not high):
                out.update(range(int(low), int(high or low) + 1))
    return out


def sacct_states(text: str) -> dict[int, str]:
    """Array task index -> State, from ``sacct -n -P -X -o JobID,State -j <job>`` (``41_3|COMPLETED``; a state
    may read ``CANCELLED by 0``)."""
    states: dict[int, str] = {}
    for line in text.splitlines():
        job, _, state = line.partition("|")
        _, _, index = job.partition("_")
        if index.isdigit() and state:
            states[int(index)] = state.split()[0]
    return states
