"""The local executor: ladders in threads on this host's slots (each ladder's work is its probes' processes, so
threads only wait), the scheduler's order, retries with backoff, and every result handed back on the calling
thread. On Ctrl-C or SIGTERM every running probe's process group is killed before the error goes on: nothing is
left running, and what was handed back is already in the journal."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from stackmatrix.domain import Outcome, Reason, Rung, Status
from stackmatrix.executors import Batch, Done, Ended, Work
from stackmatrix.ladder.runtime import INFRA, Placement
from stackmatrix.progress import Progress
from stackmatrix.runners import kill_live_probes, probes_stopping
from stackmatrix.schedule import ENV_BUILD, Scheduler, Task
from stackmatrix.slots import Slots

BACKOFF_S = 5.0  # the first retry's wait; each next one waits twice as long


def run_batch(batch: Batch) -> Ended | None:
    """The batch on this host: the static tier in order, the cells left standing up their ladders (ladders.py)."""
    from stackmatrix.pipeline import execute

    execute(batch.todo, batch.ctx, batch.session, batch.on_result, batch.rctx, batch.logs, batch.quiet)
    return None


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
