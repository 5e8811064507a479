"""The slurm executor's waiting logic with a scripted Slurm (what ``scontrol``/``sacct`` print): records folded
from the tasks' files, a task that ended without its cells, a task the controller forgot. The real cluster:
tests/integration/test_slurm_executor_real.py."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from stackmatrix.domain import Cell, CellResult, Reason, Stack, StackKind, Target, Verdict
from stackmatrix.executors.slurm import PURGED, states, wait
from stackmatrix.executors.static import declared
from stackmatrix.executors.tasks import Layout, TaskSpec, plan_layout
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.slurm.commands import Slurm

CAT = load_catalog()
STACK = Stack(StackKind.VLLM, "0.32.0", "5.19.0", "3.11")


def cell(target: str) -> Cell:
    return Cell(STACK, CAT.model("gemma-4-E2B-it"), Target(target, CAT.gpus["L4"], 1, 1))


@dataclass(frozen=True)
class Scripted(Slurm):
    """Answers each command from a script: (tool, job) -> successive outputs (the last one repeats)."""

    script: dict[tuple[str, str], list[tuple[int, str]]] = field(default_factory=dict)

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        job = args[args.index("-j") + 1] if "-j" in args else args[2]
        answers = self.script[(tool, job)]
        code, out = answers.pop(0) if len(answers) > 1 else answers[0]
        return subprocess.CompletedProcess([tool], code, out, "" if code == 0 else out)


def layout(tmp_path: Path, *tasks: tuple[Cell, ...]) -> Layout:
    specs = [TaskSpec(tuple((c.id, "fp", 1.0) for c in t)) for t in tasks]
    return plan_layout(tmp_path, "slurm", specs).with_job(0, "41")


def record(c: Cell) -> bytes:
    return json.dumps(CellResult(c.id, Verdict.PREDICTED, None, None, (), "fp", declared(c)).to_json()).encode()


def test_a_task_the_controller_forgot_reads_from_accounting_else_purged(tmp_path: Path) -> None:
    lay = layout(tmp_path, (cell("l4x1"),), (cell("l4x2"),), (cell("h100x1"),), (cell("a100x1"),))
    listed = (
        "JobId=42 ArrayJobId=41 ArrayTaskId=0 JobState=RUNNING\nJobId=41 ArrayJobId=41 ArrayTaskId=2-3 JobState=PENDING"
    )
    no_sacct = Scripted(script={("scontrol", "41"): [(0, listed)], ("sacct", "41"): [(1, "accounting disabled")]})
    assert states(lay, no_sacct) == {0: "RUNNING", 1: PURGED}  # 2 and 3 wait in the array's own record
    sacct = Scripted(script={("scontrol", "41"): [(0, listed)], ("sacct", "41"): [(0, "41_1|NODE_FAIL\n")]})
    assert states(lay, sacct)[1] == "NODE_FAIL"
    gone = Scripted(script={("scontrol", "41"): [(1, "slurm_load_jobs error: Invalid job id specified")]})
    gone.script[("sacct", "41")] = [(1, "")]
    assert set(states(lay, gone).values()) == {PURGED}


def test_records_are_folded_and_a_failed_tasks_cells_are_not_run(tmp_path: Path) -> None:
    a, b, c = cell("l4x1"), cell("l4x2"), cell("h100x1")
    lay = layout(tmp_path, (a, b), (c,))
    stranger = cell("a100x1")
    # task 0 wrote a, a line torn mid-write, garbage and a cell that is not its own; task 1 wrote nothing
    lay.part(0).write_bytes(record(a) + b"\nnot json\n" + record(stranger) + b"\n" + record(b)[:20])
    running = (
        "JobId=42 ArrayJobId=41 ArrayTaskId=0 JobState=RUNNING\nJobId=43 ArrayJobId=41 ArrayTaskId=1 JobState=RUNNING"
    )
    ended = (
        "JobId=42 ArrayJobId=41 ArrayTaskId=0 JobState=COMPLETED\nJobId=43 ArrayJobId=41 ArrayTaskId=1 JobState=FAILED"
    )
    slurm = Scripted(script={("scontrol", "41"): [(0, running), (0, ended)]})
    got: list[CellResult] = []
    cells = {x.id: (x, "fp") for x in (a, b, c)}
    ending = wait(lay, slurm, cells, lambda r, slow: got.append(r), 0.01, quiet=True)
    by_id = {r.cell_id: r for r in got}
    assert [r.cell_id for r in got].count(a.id) == 1 and stranger.id not in by_id
    assert by_id[a.id].verdict is Verdict.PREDICTED
    for lost, state, job in ((b, "COMPLETED", "41_0"), (c, "FAILED", "41_1")):  # b's line never ended
        r = by_id[lost.id]
        assert (r.verdict, r.reason) == (Verdict.NOT_RUN, Reason.TASK_ENDED)
        assert r.outcomes[0].evidence["state"] == state and r.outcomes[0].evidence["job"] == job
    assert ending is not None and ending.lost == 2 and "COMPLETED 1, FAILED 1" in ending.message
