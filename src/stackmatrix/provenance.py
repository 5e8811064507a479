"""Whether a record read back from a run's files could be what the run wrote: a journal is a text file anyone with
the store can edit, and an edited record must never come back as a cache hit (the next run would copy it).

A record is believed when its cell id names its declared pins (the stack, the model and the target), its verdict
and reason are what its own rungs give, the run planned its cell, and it appears once. Anything else is a
warning naming ``journal.jsonl:<line>``; the record is shown (a report holds what the files hold) but never
reused, and ``merge`` refuses it."""

from __future__ import annotations

from collections.abc import Collection

from stackmatrix.domain import CellResult, Stack, StackKind, Verdict
from stackmatrix.ladder.verdict import derive


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
