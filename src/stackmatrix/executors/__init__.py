"""Executors: where the cells run. A registry of modules (like kinds/): ``local`` (this host) and ``slurm`` (a
job array), each one module behind ``Executor``. It is handed a ``Batch`` and calls ``on_result`` on the calling
thread (the journal has one writer). run.json names the executor, so ``collect`` and ``--resume`` ask that one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, cast

if TYPE_CHECKING:
    from stackmatrix.domain import Cell, CellResult, Outcome
    from stackmatrix.executors.schedule import Task
    from stackmatrix.ladder.runtime import Placement, RuntimeContext
    from stackmatrix.ladder.static import Context
    from stackmatrix.pipeline.session import Session
    from stackmatrix.store.runs import Run

Work = Callable[["Task", "Placement"], "list[Outcome]"]
Done = Callable[["Task", "list[list[Outcome]]"], None]
OnResult = Callable[["CellResult", bool], None]


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


class Executor(Protocol):
    """What every executor module provides (mypy checks each entry of ``EXECUTORS``)."""

    TITLE: str  # how messages name it: "this host", "Slurm"
    HELP: str  # --executor's help
    ELSEWHERE: bool  # its tasks run elsewhere and write into a run: a command that stores none keeps one for them

    def run_batch(self, batch: Batch) -> Ended | None:
        """The batch's cells probed, each record to ``batch.on_result``; with ``batch.collect``, what an earlier
        submission of ``batch.run`` left running is waited for instead of submitting again."""
        ...

    def pending(self, meta: Mapping[str, object]) -> bool:
        """run.json records a submission of this executor that may be collected."""
        ...

    def check_not_running(self, meta: Mapping[str, object], where: str) -> None:
        """Exit 2 (naming ``where``) while the run's tasks may still run: a resume would probe its cells twice."""
        ...

    def task_gpus(self) -> str | None:
        """In one of its tasks (``stackmatrix worker``): the GPUs its backend gave the task, as ``--gpus`` takes
        them; None where it gave none."""
        ...


EXECUTORS: Final[dict[str, str]] = {  # name -> module under stackmatrix.executors, imported on use
    "local": "local",
    "slurm": "slurm",
}


def executor(name: str) -> Executor:
    return cast("Executor", importlib.import_module(f"stackmatrix.executors.{EXECUTORS[name]}"))


def executor_of(meta: Mapping[str, object]) -> str:
    """The executor a run recorded; a run from before that was recorded: the one whose submission it holds (an
    executor records it under its own name), else this host."""
    name = meta.get("executor")
    if isinstance(name, str) and name in EXECUTORS:
        return name
    return next((n for n in EXECUTORS if isinstance(meta.get(n), dict)), "local")
