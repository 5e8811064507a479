"""Progress: one line per finished cell off a terminal, nothing with --quiet, a live view on a terminal."""

from __future__ import annotations

import io

from stackmatrix.domain import CellResult, Verdict
from stackmatrix.executors.progress import LineProgress, LiveProgress, Progress, duration, make_progress
from stackmatrix.executors.schedule import Scheduler, Task
from stackmatrix.executors.slots import CpuSlots, Need
from stackmatrix.ladder.runtime import Placement

RESULT = CellResult("vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1", Verdict.RUNS_TINY, None, None, (), "f", {})


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_one_line_per_finished_cell_naming_its_slot() -> None:
    out = io.StringIO()
    progress = make_progress(2, 2, quiet=False, out=out)
    assert type(progress) is LineProgress
    progress.cell(RESULT, 58.24, "cpu 1")
    flaky = CellResult("c__m__t", Verdict.RUNS_TINY, None, None, (), "f", {}, attempts=("not-run",))
    progress.cell(flaky, 3.0, "")
    assert out.getvalue().splitlines() == [
        "[1/2] vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1: runs-tiny in 58.2s on cpu 1",
        "[2/2] c__m__t: runs-tiny flaky in 3.0s",
    ]


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    progress = make_progress(1, 1, quiet=True, out=out)
    assert type(progress) is Progress
    progress.cell(RESULT, 1.0, "cpu 0")
    progress.say("anything")
    progress.close()
    assert out.getvalue() == "" and progress.done == 1


def test_on_a_terminal_the_live_view_shows_slots_rungs_and_an_eta() -> None:
    out = Tty()
    progress = make_progress(3, 2, quiet=False, out=out)
    assert isinstance(progress, LiveProgress)
    task = Task("vllm-0.32.0-tf5.19.0 spec", Need("k"), estimate_s=120)
    progress.started(task, Placement(cpus=(0,), label="cpu 0"))
    progress.rung(task.key, "load")
    sched = Scheduler([Task("other", Need("other"), estimate_s=60)], CpuSlots(2, [0, 1]))
    progress.refresh(sched)
    text = str(progress._view().title) + " ".join(str(c._cells) for c in progress._view().columns)
    progress.close()
    assert "0/3 cells" in text and ("ETA 1m30s" in text or "ETA 1m29s" in text)  # (60 waiting + 120 running) / 2
    assert "cpu 0" in text and "load" in text and "vllm-0.32.0-tf5.19.0 spec" in text


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (4.2, 95, 3725)] == ["4s", "1m35s", "1h02m"]
