"""The scheduler's order (builds before their users, longest first, a smaller ladder past one that must wait)
and its simulation (the benchmark's makespan)."""

from __future__ import annotations

from stackmatrix.executors.schedule import Scheduler, Task, simulate
from stackmatrix.executors.slots import CpuSlots, Need


def task(key: str, seconds: float = 10, *builds: str, build_s: float = 0) -> Task:
    return Task(key, Need(key), tuple(builds), seconds, build_s)


def test_a_ladder_waits_for_its_build_while_an_unrelated_one_takes_the_slot() -> None:
    sched = Scheduler([task("a", 30, "env1"), task("b", 20, "env1"), task("c", 10, "env2")], CpuSlots(2, [0, 1]))
    assert [t.key for t, _ in sched.start()] == ["a", "c"]  # b shares a's environment, being built
    sched.finished(sched.running["a"])
    assert [t.key for t, _ in sched.start()] == ["b"] and sched.built == {"env1"}


def test_longest_first_and_remaining_work() -> None:
    sched = Scheduler([task("s", 5), task("l", 50), task("m", 20)], CpuSlots(1, [0]))
    assert [t.key for t, _ in sched.start()] == ["l"]
    assert sched.remaining_s() == 25


def test_simulation_reaches_the_lower_bound_on_equal_work() -> None:
    got = simulate([task(f"t{i}", 10) for i in range(8)], CpuSlots(2, [0, 1]))
    assert (got.makespan_s, got.lower_bound_s, got.tasks) == (40, 40, 8)


def test_simulation_counts_a_build_once_and_the_longest_chain() -> None:
    got = simulate([task("a", 10, "env", build_s=100), task("b", 10, "env", build_s=100)], CpuSlots(2, [0, 1]))
    assert got.makespan_s == 120  # b waits for a's build, then reuses it
    assert got.lower_bound_s == 110 and round(got.ratio, 3) == round(120 / 110, 3)


def test_a_ladder_waiting_for_an_environment_starts_once_the_builder_has_made_it() -> None:
    # a resumed run: the stack's environment is on disk, but the scheduler only learns so when the first ladder
    # is past its env rung; the second must not wait for the first's whole climb
    sched = Scheduler([task("a", 59, "env1", "tiny-kv"), task("b", 55, "env1", "tiny-moe")], CpuSlots(2, [0, 1]))
    assert [(t.key, p.label) for t, p in sched.start()] == [("a", "cpu 0")]
    sched.made("b", "env1")  # not b's to say
    assert sched.start() == []
    sched.made("a", "env1")
    assert [(t.key, p.label) for t, p in sched.start()] == [("b", "cpu 1")]
    assert sched.building == {"tiny-kv": "a", "tiny-moe": "b"}
