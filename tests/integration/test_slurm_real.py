"""The test cluster itself (tests/slurm.py): a real slurmctld and slurmd run a job array, throttled, with GPU gres
from placeholder devices, and report states a cancelled task and a lost node leave. The executor's tests build on
it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm import Cluster, cluster

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def test_an_array_with_gpu_gres(slurm: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "task.sh"
    script.write_text("#!/bin/sh\necho task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID\n")
    out = tmp_path / "out-%a.txt"
    done = slurm.run(
        "sbatch",
        "--parsable",
        "--wait",
        "--array=0-3%2",
        "--gres=gpu:2",
        "--cpus-per-task=1",
        "--mem=64",
        "--time=5",
        "-o",
        str(out),
        str(script),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip().split(";")[0]
    assert sorted(p.read_text().split()[1] for p in tmp_path.glob("out-*.txt")) == ["0", "1", "2", "3"]
    first = slurm.job(f"{job}_0")
    assert first["JobState"] == "COMPLETED" and first["ArrayTaskThrottle"] == "2"
    assert "gpu:2" in first.get("TresPerNode", "") + first.get("TresPerJob", ""), first


def test_cancelled_and_lost_tasks_leave_their_states(slurm: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "long.sh"
    script.write_text("#!/bin/sh\nsleep 300\n")
    sub = slurm.run("sbatch", "--parsable", "--array=0-1", "--time=10", "-o", "/dev/null", str(script))
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 30
    while slurm.job(f"{job}_0").get("JobState") != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert slurm.run("scancel", f"{job}_0").returncode == 0
    deadline = time.monotonic() + 30
    while slurm.job(f"{job}_0").get("JobState") != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert slurm.job(f"{job}_0")["JobState"] == "CANCELLED"
    slurm.stop_node()  # the node is lost with task 1 on it
    deadline = time.monotonic() + 90
    while slurm.job(f"{job}_1").get("JobState") not in ("NODE_FAIL", "PENDING") and time.monotonic() < deadline:
        time.sleep(1)
    state = slurm.job(f"{job}_1").get("JobState")
    slurm.start_node()
    assert state in ("NODE_FAIL", "PENDING"), state  # requeued to pending, or failed: either is what sacct shows


def test_an_array_spec_is_what_slurm_schedules(slurm: Cluster, tmp_path: Path) -> None:
    from stackmatrix.slurm.arrays import ArraySpec, task_states
    from stackmatrix.slurm.commands import Slurm

    script = tmp_path / "task.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    spec = ArraySpec(
        "sm-test",
        str(script),
        tasks=3,
        throttle=2,
        gpus=2,
        cpus=1,
        mem_mb=64,
        seconds=400,
        partition="debug",
        output=str(tmp_path / "o-%a.txt"),
    )
    job = Slurm(slurm.env).submit(spec.argv())
    first = slurm.job(job)
    assert first["ArrayTaskThrottle"] == "2" and first["TimeLimit"] == "00:10:00"  # 400 s x 1.5, in minutes
    assert "gpu:2" in first.get("TresPerNode", "") and first["Partition"] == "debug"
    deadline = time.monotonic() + 60
    states: dict[int, str] = {}
    while time.monotonic() < deadline:
        states = task_states(slurm.run("scontrol", "show", "job", job, "--oneliner").stdout)
        if len(states) == 3 and set(states.values()) == {"COMPLETED"}:
            break
        time.sleep(0.5)
    assert states == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}


def test_slurm_faults_are_named(slurm: Cluster, tmp_path: Path) -> None:
    from stackmatrix.errors import BadInput, InfraUnavailable
    from stackmatrix.slurm.arrays import ArraySpec
    from stackmatrix.slurm.commands import Slurm

    cluster_slurm = Slurm(slurm.env)
    with pytest.raises(BadInput) as bad:
        cluster_slurm.partition("no-such-partition")
    assert bad.value.exit_code == 2 and "--partition" in str(bad.value) and "debug" in str(bad.value)
    assert cluster_slurm.partition("debug") == "debug"
    script = tmp_path / "t.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    with pytest.raises(InfraUnavailable, match=r"sbatch refused the job: \S"):  # more GPUs than the node has
        cluster_slurm.submit(ArraySpec("x", str(script), tasks=1, gpus=9).argv())
    dead = tmp_path / "dead.conf"
    dead.write_text(re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=1", slurm.conf.read_text()))
    with pytest.raises(InfraUnavailable, match="Slurm controller cannot be reached"):
        Slurm({**slurm.env, "SLURM_CONF": str(dead)}, timeout=60).submit(ArraySpec("x", str(script), tasks=1).argv())
    with pytest.raises(InfraUnavailable, match="sbatch is not installed here"):
        Slurm({**slurm.env, "PATH": str(tmp_path)}).submit(["x"])
