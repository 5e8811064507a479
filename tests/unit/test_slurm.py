"""Job arrays as sbatch arguments and task states from scontrol (pure logic; the real cluster: integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.executors.slurm import write_script
from stackmatrix.executors.tasks import TaskSpec, plan_layout, read_layout, read_submission, submissions
from stackmatrix.slurm.arrays import ArraySpec, sacct_states, task_states, waiting_tasks


def test_an_array_as_sbatch_arguments() -> None:
    spec = ArraySpec(
        "sm",
        "/x/task.sh",
        tasks=4,
        throttle=2,
        gpus=2,
        cpus=4,
        mem_mb=8192,
        seconds=600,
        partition="gpu",
        account="lab",
        qos="low",
        extra=("--constraint=l4",),
    )
    argv = spec.argv()
    assert argv[:5] == ["--job-name=sm", "--array=0-3%2", "--cpus-per-task=4", "--mem=8192M", "--time=15"]
    assert "--gres=gpu:2" in argv and "--partition=gpu" in argv and "--account=lab" in argv and "--qos=low" in argv
    assert argv[-2:] == ["--constraint=l4", "/x/task.sh"]  # the user's arguments last, so they win
    plain = ArraySpec("sm", "/x/t.sh", tasks=1, seconds=1).argv()
    assert "--array=0-0" in plain and "--time=5" in plain and not any(a.startswith("--gres") for a in plain)


def test_task_states_from_scontrol() -> None:
    text = (
        "JobId=11 ArrayJobId=10 ArrayTaskId=0 JobName=sm JobState=COMPLETED Reason=None\n"
        "JobId=12 ArrayJobId=10 ArrayTaskId=1 JobName=sm JobState=NODE_FAIL Reason=None\n"
        "JobId=10 ArrayJobId=10 ArrayTaskId=2-3%2 JobName=sm JobState=PENDING Reason=JobArrayTaskLimit\n"
    )
    states = task_states(text)
    assert states == {0: "COMPLETED", 1: "NODE_FAIL"}
    assert waiting_tasks(text) == {2, 3}
    assert waiting_tasks("JobId=9 ArrayJobId=9 ArrayTaskId=4,6-8%2 JobState=PENDING") == {4, 6, 7, 8}


def test_states_from_accounting() -> None:
    text = "41_0|COMPLETED\n41_1|CANCELLED by 0\n41_2|NODE_FAIL\n41|PENDING\n"
    assert sacct_states(text) == {0: "COMPLETED", 1: "CANCELLED", 2: "NODE_FAIL"}


def test_no_requeue_unless_the_user_asks() -> None:
    argv = ArraySpec("sm", "/x/t.sh", tasks=2, extra=("--requeue",)).argv()
    assert argv.index("--no-requeue") < argv.index("--requeue")  # the user's own argument comes later and wins


CELL = "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1"


def test_tasks_of_one_shape_are_one_array_and_submissions_are_numbered(tmp_path: Path) -> None:
    tasks = [
        TaskSpec(((CELL, "fp1", 2.0),), 2, 2, 4096, 10.0),
        TaskSpec(((CELL.replace("l4x1", "h100x1"), "fp2", 1.0),), 1, 2, 4096, 10.0),
        TaskSpec(((CELL.replace("l4x1", "l4x2"), "fp3", 1.0),), 1, 2, 4096, 10.0),
    ]
    layout = plan_layout(tmp_path, "slurm", tasks, fresh=True)
    assert [(a.offset, a.count) for a in layout.arrays] == [(0, 2), (2, 1)]
    assert [t.gpus for t in layout.tasks] == [1, 1, 2]
    layout = layout.with_job(0, "41").with_job(1, "42")
    layout.write()
    script = write_script(layout, 1).read_text()
    assert f"worker {layout.root}" in script and '--task "$((2 + SLURM_ARRAY_TASK_ID))"' in script
    back = read_layout(tmp_path, "slurm")
    assert back == layout and back.fresh
    assert back.array_of(2).task(2) == "42_0" and back.log(2).name == "array-1-0.log"
    second = plan_layout(tmp_path, "slurm", tasks[:1])
    assert [p.name for p in submissions(tmp_path, "slurm")] == ["1", "2"] and second.root.name == "2"


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"tasks": [], "arrays": []},
        {"tasks": [{"cells": [["../../etc", "f", 1]], "gpus": 0, "cpus": 1, "mem_mb": 1, "seconds": 1}]},
        {"tasks": [{"cells": [[CELL, "f", "nan"]], "gpus": 0, "cpus": 1, "mem_mb": 1, "seconds": 1}]},
        {
            "tasks": [{"cells": [[CELL, "f", 1]], "gpus": -1, "cpus": 1, "mem_mb": 1, "seconds": 1}],
            "arrays": [{"offset": 0, "count": 1, "job": "1"}],
        },
        {
            "tasks": [{"cells": [[CELL, "f", 1]], "gpus": 0, "cpus": 1, "mem_mb": 1, "seconds": 1}],
            "arrays": [{"offset": 0, "count": 2, "job": "1"}],
        },
        {
            "tasks": [{"cells": [[CELL, "f", 1]], "gpus": 0, "cpus": 1, "mem_mb": 1, "seconds": 1}],
            "arrays": [{"offset": 0, "count": 1, "job": "1; rm -rf /"}],
        },
    ],
)
def test_a_damaged_tasks_file_is_exit_2_naming_it(tmp_path: Path, data: object) -> None:
    (tmp_path / "tasks.json").write_text(json.dumps(data))
    with pytest.raises(BadInput) as exc:
        read_submission(tmp_path)
    assert exc.value.where == str(tmp_path / "tasks.json")


def test_a_run_never_submitted_has_no_layout(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        read_layout(tmp_path, "slurm")
