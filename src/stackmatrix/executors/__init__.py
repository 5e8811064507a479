"""Executors: where the runtime tier's ladders run. A plain dict registry (like runners/), so that ``slurm`` (job
arrays on a cluster) joins ``local`` as one module and one entry.

An executor runs ``Task``s (schedule.py): it asks its slots where each goes, calls ``work(task, placement)`` for
the outcomes of one attempt, retries an attempt that failed for this host's reasons (ladder/runtime.INFRA) up to
``retries`` times with backoff, and hands every task's attempts to ``done`` on the calling thread (so the journal
has one writer), reporting to ``progress`` as it goes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from stackmatrix.domain import Outcome
    from stackmatrix.ladder.runtime import Placement
    from stackmatrix.progress import Progress
    from stackmatrix.schedule import Task
    from stackmatrix.slots import Slots

Work = Callable[["Task", "Placement"], "list[Outcome]"]
Done = Callable[["Task", "list[list[Outcome]]"], None]


class Executor(Protocol):
    def __call__(
        self,
        tasks: Sequence[Task],
        slots: Slots,
        work: Work,
        done: Done,
        progress: Progress,
        retries: int,
    ) -> None: ...


@dataclass(frozen=True)
class Registered:
    """An executor in the registry: ``target`` is ``module:function`` under stackmatrix.executors."""

    target: str
    help: str

    def load(self) -> Executor:
        module, fn = self.target.split(":")
        return cast("Executor", getattr(importlib.import_module(f"stackmatrix.executors.{module}"), fn))


EXECUTORS: dict[str, Registered] = {
    "local": Registered("local:run_tasks", "this host: CPU slots, or whole GPUs from the NVML inventory"),
}
