"""Whether a record read back from a run's files could be what the run wrote: a journal is a text file anyone with
the store can edit, and an edited record must never come back as a cache hit (the next run would copy it).

A record is believed when its cell id names its declared pins (the stack, the model and the target), its verdict
and reason are what its own rungs give, the run planned its cell, and it appears once. Anything else is a
warning naming ``journal.jsonl:<line>``; the record is shown (a report holds what the files hold) but never
reused, and ``merge`` refuses it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from stackmatrix.domain import CellResult, Stack, StackKind, Verdict
from stackmatrix.ladder.verdict import derive

if TYPE_CHECKING:
    from stackmatrix.store.runs import Run


def stack_of(declared: dict[str, str | None]) -> Stack | None:
    try:
        kind = StackKind(declared.get("kind") or "")
    except ValueError:
        return None
    return Stack(
        kind,
        declared.get("vllm"),
        declared.get("transformers"),
        declared.get("python") or "",
        triton=declared.get("triton"),
        transformers_rule=declared.get("transformers_rule"),
    )


def why_forged(result: CellResult, planned: Collection[str] | None) -> str | None:
    """Why ``result`` is not what its run could have written, or None."""
    if planned is not None and result.cell_id not in planned:
        return f"{result.cell_id} is a cell the run never planned"
    d = result.declared
    stack, model, target = stack_of(dict(d)), d.get("model") or "", d.get("target") or ""
    if stack is not None and stack.python:  # a record from before the pins were stored whole names none
        expected = f"{stack.id}__{model.rsplit('/', 1)[-1].lower()}__{target}"
        if result.cell_id != expected:
            return f"its id {result.cell_id} is not the cell its declared pins make ({expected})"
    if result.verdict in CLAIMS:  # a verdict that would let a stack through must be what its rungs give
        given = {derive(result.outcomes, tiny=tiny)[0] for tiny in (True, False)}
        if result.verdict not in given:
            return f"its verdict {result.verdict} is not what its rungs give ({' or '.join(sorted(given))})"
    return None


# The verdicts a forged record would claim: what a gate or a report counts as serving. A blocked or not-run
# record its rungs would now decide otherwise may come from an older tool, and lets nothing through.
CLAIMS = frozenset({Verdict.SERVES, Verdict.RUNS_TINY, Verdict.PREDICTED, Verdict.OVERRIDE})


def planned_of(plan: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The cells a run's plan.json lists (None: a run without a plan, whose cells are not checked against one)."""
    return frozenset(plan["cells"]) if plan is not None else None


def doubt(run: Run, result: CellResult, planned: Collection[str] | None) -> tuple[str, str] | None:
    """(where, why) for a record of ``run`` (read by ``run.records``) its run could not have written: a second
    record of its cell, or ``why_forged``; None for one that is believed."""
    cell = result.cell_id
    if cell in run.repeated:
        return f"{run.journal_path}:{run.repeated[cell]}", f"a second record of {cell}"
    why = why_forged(result, planned)
    return (run.where(cell), why) if why else None
