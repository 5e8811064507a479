"""``run --resume [RUN]``: continue a run that did not finish (``kill -9``, a lost machine, Ctrl-C, SIGTERM).

The run's own record says what to do: run.json the arguments and options it was started with, plan.json the cells
of its share, the journal the cells already finished. The resumed run probes only the others, appends them to the
same journal and ends as any run does; its table is an uninterrupted run's.

With nothing to resume, the answer says why of each run it looked at (complete, running as pid N, a merge, ...).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from stackmatrix.errors import BadInput, NothingSelected
from stackmatrix.executors import EXECUTORS, executor, executor_of
from stackmatrix.pipeline.plan import Plan
from stackmatrix.store.runs import Run, find_run, open_run, run_dirs

# What a run may be resumed from: every ending but a clean one (``index-unreachable`` runs can be completed now),
# and a run whose journal lost records after it ended (``damaged``: the lost cells are probed again).
RESUMABLE = ("crashed", "interrupted", "failed", "index-unreachable", "incomplete", "damaged")
# What a run submitted to an executor's tasks may be collected from: submitted and left (``--detach``), or its
# submitter ended (interrupted, a fault) while its tasks ran on.
COLLECTABLE = ("submitted", "crashed", "interrupted", "failed")
# How many runs a "nothing to resume" answer names one by one (newest first); older ones are counted.
NAMED = 8


def resumable(reports_dir: Path, ref: str | None) -> Run:
    """The named run, or the newest matrix run that did not complete; locked, then read again (another resume
    may have finished it meanwhile)."""
    found = find_run(reports_dir, ref) if ref else _newest_resumable(reports_dir)
    found.lock()
    try:
        return _checked_resumable(open_run(found.root, named=found.root.parent.name == "runs"))
    except BaseException:
        found.unlock()
        raise


def _checked_resumable(run: Run) -> Run:
    if run.meta.get("damaged"):
        print(f"stackmatrix: warning: {run.meta['damaged']}", file=sys.stderr)
    where = str(run.root / "run.json")
    status = run.meta.get("status")
    if status == "running":
        raise BadInput(where, "status", status, f"a run that is not running (pid {run.meta.get('pid')} still is)")
    if run.meta.get("purpose") != "matrix":
        raise BadInput(where, "purpose", run.meta.get("purpose"), "a matrix run (gates and merges are not resumed)")
    name = executor_of(run.meta)
    if status == "submitted":
        title = executor(name).TITLE
        raise BadInput(where, "status", status, f"a run not waiting on {title} (`stackmatrix collect {run.run_id}`)")
    executor(name).check_not_running(run.meta, where)  # its tasks may still run: they would probe its cells again
    return run


def _newest_resumable(reports_dir: Path) -> Run:
    """The newest run that may be resumed; with none, exit 3 saying why not of each run looked at."""
    why_not = []
    for path in reversed(run_dirs(reports_dir)):
        try:
            run = open_run(path, named=True)
        except (BadInput, OSError) as exc:  # asked for by name, it is exit 2 naming the damaged file
            why_not.append(f"{path.name} unreadable ({getattr(exc, 'where', None) or exc})")
            continue
        why = not_resumable(run)
        if why is None:
            return run
        why_not.append(f"{run.run_id} {why}")
    older = f"; {len(why_not) - NAMED} older runs, none resumable" if len(why_not) > NAMED else ""
    listed = "; ".join(why_not[:NAMED]) + older if why_not else "none stored"
    raise NothingSelected(f"no run to resume under {reports_dir / 'runs'}: {listed}")


def not_resumable(run: Run) -> str | None:
    """Why ``run --resume`` without a RUN does not take this run (None: it does)."""
    purpose, status = run.meta.get("purpose"), run.meta.get("status")
    if purpose != "matrix":
        return f"is a {purpose} run (gates and merges are not resumed)"
    if status == "running":
        return f"is running as pid {run.meta.get('pid')}"
    if status == "submitted":
        return f"waits on {executor(executor_of(run.meta)).TITLE} (`stackmatrix collect {run.run_id}`)"
    if status in RESUMABLE:
        return None
    return "is complete" if status == "complete" else f"has status {status!r}"


def collectable(reports_dir: Path, ref: str | None) -> Run:
    """The named run, or the newest one submitted to an executor (its own, as run.json records it) and not
    collected."""
    if ref:
        run = find_run(reports_dir, ref)
    else:
        found = (r for r in _runs(reports_dir) if _pending(r.meta) and r.meta.get("status") in COLLECTABLE)
        run_or_none = next(found, None)
        if run_or_none is None:
            raise NothingSelected(f"no run to collect under {reports_dir / 'runs'} (none waits on its tasks)")
        run = run_or_none
    run.lock()
    where = str(run.root / "run.json")
    name = executor_of(run.meta)
    if not _pending(run.meta):
        elsewhere = "|".join(n for n in EXECUTORS if executor(n).ELSEWHERE)
        raise BadInput(where, name, None, f"a run submitted to an executor's tasks (run --executor {elsewhere})")
    status = run.meta.get("status")
    if status not in COLLECTABLE:
        title = executor(name).TITLE
        raise BadInput(
            where, "status", status, " or ".join(COLLECTABLE) + f" (a run whose {title} tasks were not collected)"
        )
    return run


def _pending(meta: Mapping[str, object]) -> bool:
    return executor(executor_of(meta)).pending(meta)


def _runs(reports_dir: Path) -> Iterator[Run]:
    """Matrix runs, newest first; a damaged one is not a candidate (asked for by name, it is exit 2)."""
    for path in reversed(run_dirs(reports_dir)):
        try:
            run = open_run(path, named=True)
        except (BadInput, OSError):
            continue
        if run.meta.get("purpose") == "matrix":
            yield run


def check_same_cells(run: Run, plan: Plan) -> None:
    """The re-expanded selection must be the run's planned share: otherwise the index changed under the run (a
    release appeared or was yanked) and resuming would mix two matrices."""
    stored = run.plan()
    if stored is None:
        raise BadInput(str(run.root / "plan.json"), "cells", None, "the plan the run wrote before its first probe")
    planned = [p.cell.id for p in plan.planned]
    if planned != stored["cells"]:
        extra = sorted(set(planned) - set(stored["cells"]))[:1]
        gone = sorted(set(stored["cells"]) - set(planned))[:1]
        raise BadInput(
            str(run.root / "plan.json"),
            "cells",
            f"{len(stored['cells'])} cells",
            f"the {len(planned)} cells the matrix expands to now (new: {extra or '-'}, gone: {gone or '-'}): "
            "the package index changed since the run; start a new run",
        )
