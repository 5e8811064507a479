"""``--executor slurm`` against the real single-node cluster (tests/slurm.py): the run's cells as job arrays whose
tasks run ``stackmatrix worker`` on the node; the same records as the local executor; a task cancelled with
``scancel`` and a node lost mid-task leave ``not-run`` cells with the state, and ``--resume`` completes the run
with one record per cell; GPU ladders ask for their gres; Slurm's own faults are exit 4 or 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.cli.main import main
from stackmatrix.slurm.arrays import task_states, waiting_tasks
from stackmatrix.store.runs import run_dirs
from tests.frozen import AS_OF, AS_OF_ENV, cells_of
from tests.records import records
from tests.slurm import Cluster, cluster

from .conftest import module_cache

pytestmark = [pytest.mark.slurm, pytest.mark.network]

STATIC = "vllm-0.3*__gemma-4-e*b-it__*"  # predicted, override, no-fit cells; counted in the frozen view
RUNTIME = (
    "vllm-0.18.1-tf4.57.6__gemma-4-e2b-it__l4x1",  # blocked by the static tier: decided by the submitter
    "vllm-0.32.0-tf5.19.0__gemma-4-31b-it__l4x1",  # no-fit: decided by the submitter
    "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__h100x1",  # one ladder, one array task: runs-tiny
    "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1",
)
LOCAL_TORCH = Path("/opt/wheels")  # this workplace's CPU torch; elsewhere the PyTorch CPU index is the default


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster, and an environment whose clients (and the workers the tasks start) find it: SLURM_CONF and
    one cache for the module (a shared filesystem, as the executor documents)."""
    mp = pytest.MonkeyPatch()
    for name in [n for n in os.environ if n.startswith("STACKMATRIX_")]:
        mp.delenv(name)
    if any(LOCAL_TORCH.glob("torch-*+cpu-*.whl")):
        mp.setenv("STACKMATRIX_TORCH_FIND_LINKS", str(LOCAL_TORCH))
    mp.setenv("STACKMATRIX_SLURM_POLL", "0.5")
    mp.setenv(AS_OF_ENV, AS_OF)  # the tasks inherit it: the workers see the submitter's view
    with module_cache(tmp_path_factory, "slurm-cache") as cache, cluster(tmp_path_factory.mktemp("slurm-cluster")) as c:
        mp.setenv("STACKMATRIX_CACHE_DIR", str(cache))
        mp.setenv("SLURM_CONF", str(c.conf))
        yield c
    mp.undo()


def _records(run_dir: Path) -> dict[str, tuple[Any, ...]]:
    """cell -> (verdict, reason, fingerprint); every cell once in the journal."""
    raw = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    cells = [r["cell"] for r in raw]
    assert len(cells) == len(set(cells)), "a cell recorded twice"
    return {r["cell"]: (r["verdict"], r.get("reason"), r["fingerprint"]) for r in raw}


def _meta(run_dir: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
    return meta


def _only(cells: tuple[str, ...] | str) -> list[str]:
    return [a for c in ((cells,) if isinstance(cells, str) else cells) for a in ("--only", c)]


def test_static_selection_through_a_four_task_array_equals_the_local_run(slurm: Cluster, tmp_path: Path) -> None:
    local, array = tmp_path / "local", tmp_path / "slurm"
    assert main(["run", *_only(STATIC), "--reports-dir", str(local), "--quiet"]) == 0
    argv = ["run", *_only(STATIC), "--reports-dir", str(array), "--executor", "slurm", "--slurm-tasks", "4"]
    assert main([*argv, "--quiet"]) == 0
    (run_dir,) = run_dirs(array)
    assert _records(run_dir) == _records(run_dirs(local)[0])  # the same verdicts, reasons and fingerprints
    meta = _meta(run_dir)
    assert meta["status"] == "complete" and meta["exit_code"] == 0
    (job,) = meta["slurm"]["jobs"]
    assert slurm.job(f"{job}_3")["JobState"] == "COMPLETED"
    assert sorted(p.name for p in (run_dir / "slurm" / "1").glob("task-*.jsonl")) == [
        f"task-{n}.jsonl" for n in range(4)
    ]
    assert (array / "latest" / "readiness.md").is_file()


def test_detach_then_collect(slurm: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = tmp_path / "reports"
    argv = ["run", *_only(STATIC), "--reports-dir", str(reports), "--executor", "slurm", "--slurm-tasks", "2"]
    assert main([*argv, "--detach"]) == 0
    (run_dir,) = run_dirs(reports)
    assert _meta(run_dir)["status"] == "submitted"
    assert f"stackmatrix collect {run_dir.name}" in capsys.readouterr().out
    assert main(["run", "--resume", run_dir.name, "--reports-dir", str(reports)]) == 2  # collected, not resumed
    assert "collect" in capsys.readouterr().err
    assert main(["collect", "--reports-dir", str(reports)]) == 0  # the newest run waiting on Slurm
    out = capsys.readouterr()
    n = len(cells_of(*_only(STATIC)))
    assert f"{n} cells" in out.out and f"of {n} cells recorded" in out.err  # the progress view
    meta = _meta(run_dir)
    assert meta["status"] == "complete" and len(_records(run_dir)) == n
    assert main(["collect", run_dir.name, "--reports-dir", str(reports)]) == 2  # nothing left to collect


def test_slurm_faults_are_exit_4_or_2(slurm: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", *_only(RUNTIME[0]), "--reports-dir", str(tmp_path / "r"), "--executor", "slurm"]
    assert main([*argv, "--slurm-partition", "gpu-nope"]) == 2
    err = capsys.readouterr().err
    assert "--slurm-partition" in err and "gpu-nope" in err and "debug" in err
    dead = tmp_path / "dead.conf"
    conf = slurm.conf.read_text().splitlines()
    dead.write_text("\n".join("SlurmctldPort=1" if s.startswith("SlurmctldPort=") else s for s in conf) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(dead))
        assert main(argv) == 4
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # after the warning that nvcr.io is not reachable from here
        assert "Traceback" not in err and "Unable to contact slurm controller" in last, err
        mp.setenv("PATH", "/nonexistent")
        assert main(argv) == 4
        assert "sbatch is not installed here" in capsys.readouterr().err
    assert main([*argv, "--slurm-args=--mem=999999999"]) == 4  # refused by the controller, its words
    assert "sbatch refused the job" in capsys.readouterr().err


def test_gpu_ladders_ask_for_their_gres(slurm: Cluster, tmp_path: Path) -> None:
    """A real checkpoint (a local weights catalog) on l4x2 climbs on tp=2 GPUs: its task asks for gpu:2; the same
    model on h100x1 and a tiny checkpoint ask for gpu:1. From a login node without GPUs (this one)."""
    weights = tmp_path / "weights" / "google" / "gemma-4-12B-it"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    reports = tmp_path / "reports"
    only = _only(("vllm-0.32.0-tf5.19.0__gemma-4-12b-it__*", "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1"))
    argv = ["run", "--tier", "runtime", "--device", "gpu", "--weights-dir", str(tmp_path / "weights"), *only]
    assert main([*argv, "--reports-dir", str(reports), "--executor", "slurm", "--detach"]) == 0
    (run_dir,) = run_dirs(reports)
    jobs = _meta(run_dir)["slurm"]["jobs"]
    try:
        asked = {}
        for job in jobs:
            # Every record of the array (a task may already be split off to run): its size is the tasks named.
            out = slurm.run("scontrol", "show", "job", job, "--oneliner").stdout
            asked[slurm.job(job)["TresPerNode"]] = len(set(task_states(out)) | waiting_tasks(out))
        assert asked == {"gres:gpu:1": 2, "gres:gpu:2": 1}, asked
        tasks = json.loads((run_dir / "slurm" / "1" / "tasks.json").read_text())["tasks"]
        two = next(t for t in tasks if t["gpus"] == 2)
        assert [c[0] for c in two["cells"]] == ["vllm-0.32.0-tf5.19.0__gemma-4-12b-it__l4x2"]
    finally:
        for job in jobs:
            slurm.run("scancel", job)


def _task_running(slurm: Cluster, timeout: float = 300) -> str:
    """The id (<job>_<task>) of the first array task that is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = slurm.run("squeue", "-h", "-t", "RUNNING", "-o", "%i %j").stdout.split()
        if out and out[1].startswith("stackmatrix-"):
            return out[0]
        time.sleep(0.3)
    raise AssertionError("no array task started")


def _submit(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stackmatrix", *argv], env=dict(os.environ), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def _workers(submission: Path) -> list[int]:
    """The pids of the worker processes of a submission (and what they started), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"worker" in cmd and str(submission).encode() in cmd:
                pids.append(int(entry.name))
    return pids


@pytest.mark.runtime
def test_runtime_cancelled_and_lost_tasks_then_resume_equal_the_local_run(slurm: Cluster, tmp_path: Path) -> None:
    local, reports = tmp_path / "local", tmp_path / "slurm"
    common = ["run", "--tier", "runtime", *_only(RUNTIME), "--quiet"]
    assert main([*common, "--reports-dir", str(local)]) == 0
    expected = _records(run_dirs(local)[0])
    assert [expected[c][0] for c in RUNTIME] == ["blocked", "no-fit", "runs-tiny", "runs-tiny"]
    argv = [*common, "--reports-dir", str(reports), "--fresh", "--executor", "slurm"]  # the ladders climb again

    # 1. the ladder's task is cancelled mid-run
    proc = _submit(argv)
    task = _task_running(slurm)
    time.sleep(3)
    assert slurm.run("scancel", task).returncode == 0
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 4, err
    assert "2 cells not run" in err and "CANCELLED 2" in err and "--resume" in err
    (run_dir,) = run_dirs(reports)
    lost = {c: r for c, r in records(run_dir).items() if r["verdict"] == "not-run"}
    assert sorted(lost) == sorted(RUNTIME[2:])
    evidence = lost[RUNTIME[2]]["probes"][0]["evidence"]
    assert evidence["state"] == "CANCELLED" and evidence["job"] == task
    assert _meta(run_dir)["status"] == "incomplete"

    # 2. --resume submits only those two; their node is lost mid-task (slurmd killed, the task frozen with it)
    proc = _submit([*argv[:-2], "--resume", run_dir.name, "--executor", "slurm"])
    task = _task_running(slurm)
    submission = run_dir / "slurm" / "2"
    tasks = json.loads((submission / "tasks.json").read_text())["tasks"]
    assert sorted(c[0] for t in tasks for c in t["cells"]) == sorted(RUNTIME[2:])
    slurm.stop_node()
    frozen = _workers(submission)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGKILL)
        slurm.start_node()
    assert proc.returncode == 4, err
    assert "NODE_FAIL 2" in err, err
    lost = {c: r for c, r in records(run_dir).items() if r["verdict"] == "not-run"}
    assert lost[RUNTIME[3]]["probes"][0]["evidence"]["job"] == task

    # 3. --resume once more: the run completes, one record per cell, the local run's verdicts
    assert main([*argv[:-2], "--resume", run_dir.name, "--executor", "slurm"]) == 0
    got = _records(run_dir)
    assert {c: v[:2] for c, v in got.items()} == {c: v[:2] for c, v in expected.items()}
    assert got == expected  # the fingerprints too
    meta = _meta(run_dir)
    assert meta["status"] == "complete" and len(meta["resumed"]) == 2 and meta["cells_written"] == 4


@pytest.mark.runtime
def test_check_on_slurm_climbs_a_cell_of_no_matrix_as_here(
    slurm: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check`` honours ``--executor``: its cell (on a target the matrix lacks) climbs as a Slurm task, which
    rebuilds it from the pins the answer's run lists, and the answer is the one this host gives. The run is kept
    under <reports>/answers, out of the table's history."""
    reports = tmp_path / "reports"
    argv = ["check", "--model", "gemma-4-E2B-it", "--vllm", "0.32.0", "--transformers", "5.19.0", "--gpu", "l40sx1"]
    argv += ["--tier", "runtime", "--format", "json", "--reports-dir", str(reports)]
    assert main(argv) == 0
    here = json.loads(capsys.readouterr().out)
    assert main([*argv, "--executor", "slurm", "--fresh"]) == 0
    out = capsys.readouterr()
    there = json.loads(out.out)
    assert "submitted to Slurm" in out.err
    cell = "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l40sx1"
    assert (there["cell"], there["verdict"], there["reason"]) == (cell, here["verdict"], here["reason"])
    assert there["verdict"] == "runs-tiny"
    (run_dir,) = run_dirs(reports / "answers")
    meta = _meta(run_dir)
    assert (meta["purpose"], meta["status"], meta["executor"]) == ("check", "complete", "slurm")
    assert json.loads((run_dir / "plan.json").read_text())["cells"] == [cell]
    (task,) = json.loads((run_dir / "slurm" / "1" / "tasks.json").read_text())["tasks"]
    assert [c[0] for c in task["cells"]] == [cell]
    assert not run_dirs(reports)  # no run of the table: history and reports never see it
