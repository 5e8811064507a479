"""store/runs.py's reading of a run: whether its process is alive (a zombie is not: issue 22 (5)) and whether its
journal still holds the records run.json says were written (issue 22 (4)). Real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackmatrix.cli.main import main
from stackmatrix.domain import CellResult, Outcome, Status, Verdict
from stackmatrix.errors import BadInput
from stackmatrix.ladder.verdict import decided
from stackmatrix.pipeline.resume import resumable
from stackmatrix.store.index import open_index
from stackmatrix.store.runs import Run, open_run, process_start, run_dirs, start_run, store_dir

ROOT = Path(__file__).resolve().parents[2]
DECLARED = {"kind": "vllm", "model": "google/gemma-4-E4B-it", "target": "l4x1"}


def cell(cell_id: str) -> CellResult:
    outcome = Outcome("arch", Status.PASS, None, f"detail of {cell_id}")
    return decided(CellResult(cell_id, Verdict.PREDICTED, None, None, (outcome,), "fp", DECLARED))


def stored(reports: Path, cells: list[str]) -> Run:
    run = start_run(reports, matrix_hash="h", matrix_path="m.toml", tier="static", selected=len(cells))
    run.write_plan(dict.fromkeys(cells, DECLARED), cells, None)
    for c in cells:
        run.write_cell(cell(c))
    run.finish("complete", 0)
    return run


def state(pid: int) -> bytes:
    return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]


def zombie_of(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> int:
    """``proc``'s pid once it is a zombie: it exited and nobody waited for it (the test does not, until the end)."""
    deadline = time.monotonic() + 10
    while state(proc.pid) != b"Z":
        assert time.monotonic() < deadline, f"pid {proc.pid} never became a zombie"
        time.sleep(0.01)
    return proc.pid


def edit_meta(run: Run, **changes: object) -> None:
    path = run.root / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_zombie_is_dead_and_its_running_run_reads_crashed(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "0"])
    try:
        pid = zombie_of(proc)
        assert process_start(pid) is None and process_start(os.getpid()) is not None
        run = start_run(tmp_path, matrix_hash="h", matrix_path="m", tier="runtime", selected=1)
        started = int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])
        run.stop_heartbeat()  # the heartbeat is this process's; the run's pid is the zombie's
        edit_meta(run, pid=pid, pid_start=started)  # its own start time: only the zombie state tells it is gone
        assert open_run(run.root).meta["status"] == "crashed"
        assert json.loads((run.root / "run.json").read_text())["status"] == "running"  # left as it was
    finally:
        proc.wait()


def test_a_process_named_with_parentheses_is_read_after_the_last_one(tmp_path: Path) -> None:
    """The name field may hold ``) Z (``: read from the first ``)``, a sleeping process would look like a zombie."""
    code = "import sys, time; open('/proc/self/comm', 'w').write('x) Z (y'); print(flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"\n"
        assert b"x) Z (y" in Path(f"/proc/{proc.pid}/stat").read_bytes()
        assert process_start(proc.pid) is not None
    finally:
        proc.kill()
        proc.wait()


CHILD = """
import sys, time
from pathlib import Path
from tests.unit.test_store import cell
from stackmatrix.store.runs import start_run
run = start_run(Path(sys.argv[1]), matrix_hash="h", matrix_path="m", tier="runtime", selected=2)
run.write_cell(cell("s1__m__t"))
print(run.run_id, flush=True)
time.sleep(120)
"""


def test_a_run_killed_with_kill_9_reads_crashed_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run's process group killed with SIGKILL and looked at at once, while its process is still a zombie:
    crashed in run.json's reading, in the index (history's column) and to ``run --resume``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().decode().strip()
        with open_index(tmp_path) as index:
            assert [r.status for r in index.runs()] == ["running"]
        os.killpg(proc.pid, signal.SIGKILL)
        zombie_of(proc)
        assert open_run(tmp_path / "runs" / run_id).meta["status"] == "crashed"
        assert resumable(tmp_path, None).run_id == run_id
        assert main(["history", "--reports-dir", str(tmp_path)]) == 0
        assert f"{run_id} (matrix, crashed)" in capsys.readouterr().out
    finally:
        proc.wait()


def test_a_finished_run_whose_journal_lost_records_reads_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = stored(tmp_path, ["s1__m__t", "s2__m__t"])
    assert open_run(run.root).meta["status"] == "complete" and run.shortfall() is None
    lines = run.journal_path.read_bytes()
    run.journal_path.write_bytes(lines[: len(lines) * 3 // 4])  # the second line torn: one record left
    reread = open_run(run.root)
    short = reread.shortfall()
    assert short is not None and (short.held, short.said, short.missing) == (1, 2, 1)
    warning = f"{run.journal_path} holds 1 of the 2 records run.json says were written: the run is damaged"
    assert reread.meta["status"] == "damaged" and reread.meta["damaged"] == warning
    assert json.loads((run.root / "run.json").read_text())["status"] == "complete"  # the file is left as it is

    assert main(["history", "--reports-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err == f"stackmatrix: warning: {warning}\n" and f"{run.run_id} (matrix, damaged)" in out
    assert main(["report", "--reports-dir", str(tmp_path), "--format", "json", "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().err == f"stackmatrix: warning: {warning}\n"
    with open_index(tmp_path) as index:
        assert [r.status for r in index.runs()] == ["damaged"] and index.lost_records() == {run.run_id: warning}

    assert resumable(tmp_path, None).run_id == run.run_id  # its lost cell is probed again
    assert capsys.readouterr().err == f"stackmatrix: warning: {warning}\n"


def test_a_complete_run_without_a_count_is_checked_against_its_plan(tmp_path: Path) -> None:
    run = stored(tmp_path, ["s1__m__t", "s2__m__t"])
    meta = json.loads((run.root / "run.json").read_text())
    del meta["cells_written"]  # a run.json written by hand, or by a tool from before the count
    (run.root / "run.json").write_text(json.dumps(meta))
    run.journal_path.write_bytes(b"")
    reread = open_run(run.root)
    assert reread.meta["status"] == "damaged"
    assert reread.meta["damaged"].endswith(
        "holds 0 of the 2 records plan.json lists for a complete run: the run is damaged"
    )


@pytest.mark.parametrize(
    "journal",
    [
        b"",  # emptied
        b"\n \n\n",  # blank lines are no records
        b'{"cell": "s1__m__t", "verd',  # its only line torn
    ],
)
def test_blank_or_torn_lines_are_not_counted(tmp_path: Path, journal: bytes) -> None:
    run = stored(tmp_path, ["s1__m__t"])
    run.journal_path.write_bytes(journal)
    assert run.count() == 0 and open_run(run.root).meta["status"] == "damaged"


def test_a_resumed_run_forgets_its_last_count(tmp_path: Path) -> None:
    """The count of the ending before a resume is not the journal's once records are dropped to be probed again: a
    resumed run killed before it ends reads crashed, not damaged."""
    run = stored(tmp_path, ["s1__m__t", "s2__m__t"])
    run.drop_records({"s2__m__t"})
    run.mark_running()
    run.stop_heartbeat()
    assert "cells_written" not in json.loads((run.root / "run.json").read_text())
    edit_meta(run, pid=2**22 + 1)  # its process gone
    assert open_run(run.root).meta["status"] == "crashed"


def test_nothing_to_resume_says_why_of_each_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = stored(tmp_path, ["s1__m__t"])
    gate = start_run(tmp_path, matrix_hash="h", matrix_path="m", tier="static", selected=0, purpose="gate")
    gate.finish("complete", 0)
    live = start_run(tmp_path, matrix_hash="h", matrix_path="m", tier="static", selected=0)  # this process: alive
    try:
        assert [p.name for p in run_dirs(tmp_path)] == [done.run_id, gate.run_id, live.run_id]
        assert main(["run", "--resume", "--reports-dir", str(tmp_path)]) == 3
        err = capsys.readouterr().err
        assert err == (
            f"stackmatrix: no run to resume under {tmp_path / 'runs'}: {live.run_id} is running as pid {os.getpid()}; "
            f"{gate.run_id} is a gate run (gates and merges are not resumed); {done.run_id} is complete\n"
        )
    finally:
        live.finish("complete", 0)
    assert main(["run", "--resume", "--reports-dir", str(tmp_path / "empty")]) == 3
    assert capsys.readouterr().err.endswith("runs: none stored\n")


@pytest.mark.parametrize("planted", ["runs", "latest", "rendered"])
def test_a_link_planted_in_the_store_is_refused_not_followed(
    tmp_path: Path, planted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shared store (what Slurm needs) with `runs`, `latest` or `rendered` made a link elsewhere: a run, the
    run's reports or ``report`` refuses it (exit 2 naming it), and nothing is written where it points."""
    reports, elsewhere = tmp_path / "reports", tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = stored(reports, ["vllm-0.32.0-tf5.19.0__gemma-4-e4b-it__l4x1"]) if planted == "rendered" else None
    reports.mkdir(exist_ok=True)
    (reports / planted).symlink_to(elsewhere, target_is_directory=True)
    if run is not None:
        code = main(["report", run.run_id, "--reports-dir", str(reports), "--format", "csv"])
        err = capsys.readouterr().err
        assert code == 2 and f"{reports / planted}" in err and "a link is not followed" in err, err
    else:
        with pytest.raises(BadInput, match="a link is not followed") as exc:
            if planted == "runs":
                stored(reports, ["vllm-0.32.0-tf5.19.0__gemma-4-e4b-it__l4x1"])
            else:  # where a run writes its reports
                store_dir(reports, planted)
        assert exc.value.where == str(reports / planted)
    assert list(elsewhere.iterdir()) == []


def test_one_process_at_a_time_writes_a_run(tmp_path: Path) -> None:
    """Two `run --resume` of one run both ran (3 of 3 times): the run's lock lets one in; the other is refused,
    exit 2 naming the holder's pid, and gets in once the holder is gone."""
    run = stored(tmp_path, ["s1__m__t", "s2__m__t"])
    meta = json.loads((run.root / "run.json").read_text())
    (run.root / "run.json").write_text(json.dumps({**meta, "status": "interrupted"}))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(run.root / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.ftruncate(fd, 0); os.pwrite(fd, str(os.getpid()).encode(), 0)\n"
            "print('held', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(BadInput) as exc:
            resumable(tmp_path, run.run_id)
        assert exc.value.where == str(run.root / ".lock") and f"held by pid {holder.pid}" in str(exc.value.value)
    finally:
        holder.kill()
        holder.wait()
    resumed = resumable(tmp_path, run.run_id)
    assert resumed.run_id == run.run_id and (run.root / ".lock").read_text() == str(os.getpid())
    resumed.unlock()


def test_a_lock_whose_holder_is_a_zombie_is_waited_for(tmp_path: Path) -> None:
    """CI saw it once: after a ``kill -9`` the run's main thread read as a zombie while its other thread still
    exited, holding the lock. A holder that is no longer alive is waited for (its lock goes within moments), not
    named in a refusal; one whose lock never goes is refused after ``LOCK_RELEASE_S``."""
    run = stored(tmp_path, ["s1__m__t"])
    edit_meta(run, status="interrupted")
    child = (
        "import ctypes, fcntl, os, sys, threading, time\n"
        f"fd = os.open({str(run.root / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0); os.pwrite(fd, str(os.getpid()).encode(), 0)\n"
        "threading.Thread(target=lambda: (time.sleep(float(sys.argv[1])), os._exit(0))).start()\n"
        "print('held', flush=True)\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"  # the leader ends alone: a zombie while the thread lives
    )
    for lives, refused in ((1.0, False), (60.0, True)):
        holder = subprocess.Popen([sys.executable, "-c", child, str(lives)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            zombie_of(holder)
            if refused:
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr("stackmatrix.store.runs.LOCK_RELEASE_S", 0.5)
                    with pytest.raises(BadInput, match=f"held by pid {holder.pid}"):
                        resumable(tmp_path, run.run_id)
            else:
                resumable(tmp_path, run.run_id).unlock()
        finally:
            holder.kill()
            holder.wait()
