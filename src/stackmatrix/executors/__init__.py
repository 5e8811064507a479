"""Executors: where the cells run. A plain dict registry (like runners/): ``local`` (this host) and ``slurm``
(a job array on a cluster), each one module and one entry.

An executor is handed a ``Batch`` (``cells`` target): the cells the plan left to probe, the contexts to probe them
with, and ``on_result`` for each record, called on the calling thread (so the journal has one writer).

The local executor's ladders run as ``Task``s (schedule.py) through ``run_tasks`` (``tasks`` target): it asks its
slots where each goes, calls ``work(task, placement)`` for the outcomes of one attempt, retries an attempt that
failed for this host's reasons (ladder/runtime.INFRA) up to ``retries`` times with backoff, and hands every task's
attempts to ``done``, reporting to ``progress`` as it goes. A Slurm task runs the same local executor on the
node it was given (``stackmatrix worker``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from stackmatrix.domain import Cell, CellResult, Outcome
    from stackmatrix.executors.progress import Progress
    from stackmatrix.executors.schedule import Task
    from stackmatrix.executors.slots import Slots
    from stackmatrix.ladder.runtime import Placement, RuntimeContext
    from stackmatrix.ladder.static import Context
    from stackmatrix.pipeline.session import Session
    from stackmatrix.store.runs import Run

Work = Callable[["Task", "Placement"], "list[Outcome]"]
Done = Callable[["Task", "list[list[Outcome]]"], None]
OnResult = Callable[["CellResult", bool], None]


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
class Batch:
    """What a run hands its executor. ``todo``: (cell, fingerprint, estimate) to probe; ``rctx``: the runtime
    tier's context (None: static only); ``run``: where the run is stored (None: ``check``, kept in memory);
    ``collect``: wait for what an earlier submission of ``run`` left running instead of submitting."""

    todo: Sequence[tuple[Cell, str, float]]
    ctx: Context
    session: Session
    on_result: OnResult
    rctx: RuntimeContext | None
    logs: Path
    quiet: bool = False
    run: Run | None = None
    detach: bool = False
    collect: bool = False


@dataclass(frozen=True)
class Ended:
    """How an executor's batch ended when not every cell was decided there and then: ``detached`` (submitted,
    to be collected), or ``lost`` cells (their tasks ended without recording them) with the line that says so."""

    detached: bool = False
    lost: int = 0
    message: str = ""


RunBatch = Callable[[Batch], "Ended | None"]


@dataclass(frozen=True)
class Registered:
    """An executor in the registry: ``cells`` runs a Batch, ``tasks`` (the local one) runs ladders as tasks; each
    ``module:function`` under stackmatrix.executors."""

    cells: str
    help: str
    target: str = ""

    def load_cells(self) -> RunBatch:
        return cast(RunBatch, _load(self.cells))

    def load(self) -> Executor:
        return cast("Executor", _load(self.target))


def _load(target: str) -> object:
    module, fn = target.split(":")
    return getattr(importlib.import_module(f"stackmatrix.executors.{module}"), fn)


EXECUTORS: dict[str, Registered] = {
    "local": Registered(
        "local:run_batch", "this host: CPU slots, or whole GPUs from the NVML inventory", "local:run_tasks"
    ),
    "slurm": Registered(
        "slurm:run_batch", "a Slurm job array: one task per ladder (runtime) or per share of the cells (static)"
    ),
}
