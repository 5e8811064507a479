"""Job arrays as sbatch arguments and task states from scontrol (pure logic; the real cluster: integration)."""

from __future__ import annotations

from stackmatrix.slurm.arrays import ArraySpec, pending_tasks, task_states


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
    assert pending_tasks(states, range(4)) == [2, 3]
