"""The static tier at matrix scale: every cell up its kind's static rungs (facts fetched in parallel first), each
record decided once; the cells left standing are what the runtime tier climbs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from stackmatrix.domain import Cell, CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.kinds import KINDS
from stackmatrix.ladder.static import Context, run_static
from stackmatrix.ladder.verdict import climbable, decided, derive
from stackmatrix.store.journal import SLOW_CELL_S

if TYPE_CHECKING:
    from stackmatrix.pipeline.session import Session


T = TypeVar("T")


@dataclass(frozen=True)
class Standing:
    """A cell the static tier left standing, with its static outcomes and its plan's estimate."""

    cell: Cell
    fingerprint: str
    static: tuple[Outcome, ...]
    estimate_s: float


FETCH_JOBS = 8  # parallel fetches of wheel facts when --jobs is not given


def evaluate(cell: Cell, fingerprint: str, ctx: Context) -> CellResult:
    """One cell up the static ladder; ``fingerprint`` is the plan's (pipeline/plan.py), stored in the record."""
    outcomes = climb_static(cell, ctx)
    verdict, reason, override = derive(outcomes)
    return decided(CellResult(cell.id, verdict, reason, override, tuple(outcomes), fingerprint, declared(cell)))


def climb_static(cell: Cell, ctx: Context) -> list[Outcome]:
    return run_static(cell, ctx, KINDS[cell.stack.kind].static_rungs())


def declared(cell: Cell) -> dict[str, str | None]:
    """The cell's pins as the matrix declares them (reports show them beside what was observed)."""
    s = cell.stack
    return {
        "kind": str(s.kind),
        "triton": s.triton,
        "vllm": s.vllm,
        "transformers": s.transformers,
        "transformers_rule": s.transformers_rule,
        "python": s.python,
        "model": cell.model.id,
        "target": cell.target.name,
    }


def standing(result: CellResult, climb: str = "standing") -> bool:
    """The runtime tier climbs where the static tier left the cell standing: a failure prunes it. ``climb`` "all":
    also where it failed only on what a run can confirm or contradict (the environment can still be built)."""
    if result.verdict in (Verdict.PREDICTED, Verdict.OVERRIDE):
        return True
    return climb == "all" and result.verdict is Verdict.BLOCKED and climbable(result.outcomes)


def warm(cells: Sequence[Cell], ctx: Context, session: Session) -> None:
    """Fetch the facts every stack needs, in parallel: one cell per stack and quantization reads all of its wheels'
    members (the kernel rung reads a scheme's own)."""
    first: dict[tuple[str, str], Cell] = {}
    for c in cells:
        first.setdefault((c.stack.id, c.model.quant), c)
    parallel(session, lambda c: climb_static(c, ctx), list(first.values()))


def parallel(session: Session, fn: Callable[[T], object], items: Sequence[T]) -> None:
    """Network-bound work in threads; on Ctrl-C queued work is cancelled instead of waited for."""
    pool = ThreadPoolExecutor(session.settings.jobs or FETCH_JOBS)
    try:
        list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def static_tier(
    todo: Sequence[tuple[Cell, str, float]],
    ctx: Context,
    session: Session,
    on_result: Callable[[CellResult, bool], None],
    runtime: bool,
) -> list[Standing]:
    """Every cell up the static tier: its record to ``on_result``, or, on the ``runtime`` tier, the cell left
    standing returned to climb."""
    warm([c for c, _, _ in todo], ctx, session)
    climbing: list[Standing] = []
    for cell, fp, estimate_s in todo:
        t0 = time.monotonic()
        result = evaluate(cell, fp, ctx)
        if runtime and standing(result, ctx.options.climb if ctx.options else "standing"):
            climbing.append(Standing(cell, fp, result.outcomes, estimate_s))
        else:
            on_result(result, time.monotonic() - t0 >= SLOW_CELL_S)
    return climbing


def unreachable(results: Iterable[CellResult]) -> bool:
    return any(o.status is Status.ERROR and o.reason is Reason.INDEX_UNREACHABLE for r in results for o in r.outcomes)
