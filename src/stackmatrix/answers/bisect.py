"""``bisect``: from which release on an axis (vllm, transformers, triton) a model reaches the wanted verdict on a
target, and, with ``--regression``, the last release that did; the other pins held fixed or following a rule.

The static tier is milliseconds a cell, so every release is decided and a non-monotonic axis shows every
interval. A runtime ladder costs minutes, so the runtime tier searches: ⌈log2 n⌉ + 2 ladders at most, the two
releases either side of the boundary among them (verified, not inferred).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stackmatrix.domain import Cell, CellResult, Stack, Verdict, meets
from stackmatrix.errors import BadInput
from stackmatrix.matrix.file import SYMBOLS
from stackmatrix.pipeline.steps import Job, Step, load, probe_more, session_of
from stackmatrix.reports.formats import renderer

if TYPE_CHECKING:
    from stackmatrix.matrix.loaded import Loaded
    from stackmatrix.pipeline.session import Session
    from stackmatrix.request import Request


@dataclass
class Search:
    """The releases on the axis and what was probed: release index -> passed."""

    releases: Sequence[str]
    probe: Callable[[int], bool]
    seen: dict[int, bool] = field(default_factory=dict)

    def at(self, i: int) -> bool:
        if i not in self.seen:
            self.seen[i] = self.probe(i)
        return self.seen[i]

    @property
    def ladders(self) -> int:
        return len(self.seen)


def first_pass(s: Search, lo: int = 0, hi: int | None = None) -> int | None:
    """The first release in ``lo..hi`` that passes, assuming fail -> pass: both ends, then halving. When the newest
    fails and the oldest passes, the oldest (a regression: ``last_pass`` finds where it broke); None when both
    fail."""
    hi = len(s.releases) - 1 if hi is None else hi
    if hi < lo:
        return None
    if not s.at(hi):
        return lo if s.at(lo) else None
    if s.at(lo):
        return lo
    while hi - lo > 1:  # invariant: lo fails, hi passes
        mid = (lo + hi) // 2
        if s.at(mid):
            hi = mid
        else:
            lo = mid
    return hi


def last_pass(s: Search, lo: int, hi: int | None = None) -> int:
    """The last release in ``lo..hi`` that passes, ``lo`` passing, assuming pass -> fail."""
    hi = len(s.releases) - 1 if hi is None else hi
    if s.at(hi):
        return hi
    while hi - lo > 1:  # invariant: lo passes, hi fails
        mid = (lo + hi) // 2
        if s.at(mid):
            lo = mid
        else:
            hi = mid
    return lo


def intervals(seen: dict[int, bool], releases: Sequence[str]) -> list[tuple[str, str, bool]]:
    """Runs of the same answer among the probed releases, in release order: (from, to, passed)."""
    out: list[tuple[str, str, bool]] = []
    for i in sorted(seen):
        if out and out[-1][2] == seen[i]:
            out[-1] = (out[-1][0], releases[i], seen[i])
        else:
            out.append((releases[i], releases[i], seen[i]))
    return out


def bound(n: int) -> int:
    """The most ladders a runtime bisection over ``n`` releases runs (and one more with ``--regression``'s
    second search, which starts from a release already probed)."""
    return math.ceil(math.log2(max(n, 1))) + 2


# --- the axis ----------------------------------------------------------------------------------------------------


def axis_stacks(request: Request, session: Session, loaded: Loaded) -> list[tuple[str, Stack]]:
    """(release, the stack that release makes) along the axis, oldest first; a release that makes no stack under
    the held pins (no wheel for the Python, no transformers its bound allows) is left out."""
    from stackmatrix.kinds import kind_named, release_for
    from stackmatrix.pipeline.stackspec import stack_spec

    held = stack_spec(request.triton, request.vllm, None, request.kind, "bisect")
    rule = request.transformers or None
    values = sorted(loaded.catalog.triton) if request.axis == "triton" else session.facts.versions(request.axis)
    out = []
    for value in values:
        triton = value if request.axis == "triton" else held.triton
        vllm = value if request.axis == "vllm" else held.vllm
        tf = value if request.axis == "transformers" else rule
        kind = kind_named(held.kind, triton)
        try:
            release = release_for(kind, triton, loaded.catalog, "bisect")
            stack = kind.resolve(release, vllm, tf, session.facts, loaded.spec.settings.python, "bisect")
        except BadInput:
            continue
        out.append((value, stack))
    return out


def check_args(request: Request) -> None:
    if request.axis == "vllm" and request.vllm:
        raise BadInput("--vllm", "vllm", request.vllm, "no pin on the axis being bisected (--axis vllm)")
    if request.axis == "triton" and request.triton:
        raise BadInput("--triton", "triton", request.triton, "no pin on the axis being bisected (--axis triton)")
    tf = request.transformers
    if request.axis == "transformers" and tf:
        raise BadInput("--transformers", "transformers", tf, "no pin on the axis being bisected")
    if tf and tf.startswith("@") and tf not in SYMBOLS:
        raise BadInput("--transformers", "transformers", tf, " or ".join(SYMBOLS) + " or a version")


# --- the command ----------------------------------------------------------------------------------------------


def run_bisect(loaded: Loaded, job: Job) -> int:
    from stackmatrix.errors import GateRegression
    from stackmatrix.executors.static import evaluate
    from stackmatrix.executors.static import standing as standing_
    from stackmatrix.pipeline.contexts import contexts
    from stackmatrix.pipeline.shipped import matrix_releases, with_images
    from stackmatrix.pipeline.stackspec import parse_target

    request, session = job.request, session_of(job)
    check_args(request)
    model = loaded.catalog.model(request.model, where="--model")
    target = parse_target(request.gpu, loaded)
    minimum = Verdict(request.min)
    if request.axis == "triton" or request.triton:
        loaded = with_images(session, loaded, matrix_releases(loaded))
    axis = axis_stacks(request, session, loaded)
    if not axis:
        raise BadInput("--axis", "axis", request.axis, "an axis with releases that make a stack under the held pins")
    releases = [v for v, _ in axis]
    ctx, rctx = contexts(session, loaded, request)
    results: dict[int, CellResult] = {}

    static_of: dict[int, CellResult] = {}

    def static(i: int) -> CellResult:  # the static tier's record of release i (milliseconds, once)
        if i not in static_of:
            static_of[i] = evaluate(Cell(axis[i][1], model, target), "", ctx)
        return static_of[i]

    def probe(i: int) -> bool:
        cell = Cell(axis[i][1], model, target)
        result = static(i)
        if rctx is not None and standing_(result):
            result = _climb(cell, result, loaded, ctx, rctx, job)
        results[i] = result
        return meets(result.verdict, minimum)

    search = Search(releases, probe)
    standing = len(releases)
    if rctx is None:  # the static tier: every release, exactly
        for i in range(len(releases)):
            search.at(i)
        first = next((i for i in range(len(releases)) if search.seen[i]), None)
        last = max((i for i in range(len(releases)) if search.seen[i]), default=None) if request.regression else None
        if request.regression and first is not None:
            last = next((i for i in range(first, len(releases)) if not search.seen[i]), len(releases)) - 1
    else:  # the runtime tier: a ladder only where the static tier passes (a static failure prunes the ladder)
        # a ladder only where the static tier leaves the cell standing (a runtime verdict needs it)
        climbable = [i for i in range(len(releases)) if standing_(static(i))]
        standing = len(climbable)
        sub = Search([releases[i] for i in climbable], lambda k: probe(climbable[k]))
        found = first_pass(sub) if climbable else None
        end = last_pass(sub, found) if request.regression and found is not None else None
        search.seen.update({climbable[k]: ok for k, ok in sub.seen.items()})
        first = climbable[found] if found is not None else None
        last = climbable[end] if end is not None else None
    answer = Answer(
        request.axis,
        releases,
        model.id,
        target.name,
        request.min,
        request.tier,
        search.seen,
        results,
        first,
        last,
        standing,
    )
    print(renderer("bisect", request.format)(answer), end="")
    return 0 if first is not None else GateRegression.exit_code


def _climb(cell: Cell, static: CellResult, loaded: Loaded, ctx: Any, rctx: Any, job: Job) -> CellResult:
    """One ladder: the cell up the runtime tier, on the executor the settings name."""
    got = probe_more([cell], ctx, rctx, job, loaded, "bisect")
    return got[-1] if got else static


@dataclass(frozen=True)
class Answer:
    axis: str
    releases: Sequence[str]
    model: str
    target: str
    minimum: str
    tier: str
    seen: dict[int, bool]
    results: dict[int, CellResult]
    first: int | None
    last: int | None
    standing: int = 0  # releases the static tier left standing: the runtime search's range

    @property
    def monotonic(self) -> bool:
        return len(intervals(self.seen, self.releases)) <= (3 if self.last is not None else 2)


def _changed(a: CellResult | None, b: CellResult | None) -> str:
    """The probe whose outcome differs between two neighbours, with both outcomes."""
    if a is None or b is None:
        return ""
    before = {o.probe: o for o in a.outcomes}
    for o in b.outcomes:
        prev = before.get(o.probe)
        if prev is None or prev.status != o.status:
            was = f"{prev.status} ({prev.detail})" if prev else "not run"
            return f"`{o.probe}`: {was} → {o.status} ({o.detail})"
    return ""


def _boundary(ans: Answer, i: int, j: int) -> list[str]:
    r = ans.releases
    lines = [f"- {ans.axis} {r[i]}: {_verdict(ans, i)}", f"- {ans.axis} {r[j]}: {_verdict(ans, j)}"]
    changed = _changed(ans.results.get(i), ans.results.get(j))
    return [*lines, f"- the probe that changed: {changed}"] if changed else lines


def _verdict(ans: Answer, i: int) -> str:
    res = ans.results.get(i)
    return f"{res.verdict}" + (f" ({res.reason})" if res and res.reason else "") if res else "not probed"


def render_markdown(ans: Answer) -> str:
    n = len(ans.releases)
    head = f"## Bisect: {ans.model} on {ans.target}, {ans.minimum} or better, along {ans.axis} ({ans.tier} tier)"
    lines = [head, ""]
    if ans.first is None:
        lines.append(f"No {ans.axis} release of {n} ({ans.releases[0]} … {ans.releases[-1]}) reaches it.")
    else:
        lines.append(f"**First release that reaches it: {ans.axis} {ans.releases[ans.first]}**")
        if ans.first > 0:
            lines += ["", *_boundary(ans, ans.first - 1, ans.first)]
    if ans.last is not None:
        if ans.last == n - 1:
            lines += ["", f"No regression: the newest ({ans.releases[-1]}) still reaches it."]
        else:
            lines += ["", f"**Last release that reaches it: {ans.axis} {ans.releases[ans.last]}**", ""]
            lines += _boundary(ans, ans.last, ans.last + 1)
    if not ans.monotonic:
        seen = intervals(ans.seen, ans.releases)
        runs = "; ".join(f"{a} to {b} {'passes' if ok else 'fails'}" for a, b, ok in seen)
        lines += ["", f"Not monotonic: {runs}."]
    if ans.tier == "static":
        lines += ["", f"{len(ans.seen)} cells decided for {n} releases on the axis."]
    else:
        most = bound(ans.standing) + (1 if ans.last is not None else 0)
        lines += [
            "",
            f"{len(ans.seen)} ladders run for {n} releases on the axis ({ans.standing} left standing by the static "
            f"tier; at most {most}).",
        ]
    return "\n".join(lines) + "\n"


def render_json(ans: Answer) -> str:
    doc = {
        "axis": ans.axis,
        "model": ans.model,
        "target": ans.target,
        "min": ans.minimum,
        "tier": ans.tier,
        "releases": len(ans.releases),
        "first": ans.releases[ans.first] if ans.first is not None else None,
        "last": ans.releases[ans.last] if ans.last is not None else None,
        "probed": len(ans.seen),
        "standing": ans.standing,
        "monotonic": ans.monotonic,
        "intervals": [{"from": a, "to": b, "passes": ok} for a, b, ok in intervals(ans.seen, ans.releases)],
        "cells": {ans.releases[i]: r.cell_id for i, r in sorted(ans.results.items())},
        "verdicts": {ans.releases[i]: str(r.verdict) for i, r in sorted(ans.results.items())},
    }
    return json.dumps(doc, indent=1) + "\n"


# The command's steps: the workflow's, with this module's own.
BISECT: tuple[Step, ...] = (load, run_bisect)
