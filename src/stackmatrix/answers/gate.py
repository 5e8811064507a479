"""The release gate: does every model the policy names still serve on the candidate stack?

Each requirement (model x target, minimum verdict) is probed on the candidate and compared with the baseline:
the policy's ``current`` stack, or the candidate's own cells in an earlier run. Met before and not now is a
regression; unmet in both is still failing; with no baseline an unmet requirement is a regression (a gate passes
only what it has seen pass).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from stackmatrix.answers.policy import Policy, Requirement
from stackmatrix.domain import Cell, CellResult, Reason, Stack, Verdict, meets
from stackmatrix.errors import BadInput, GateRegression, InfraUnavailable
from stackmatrix.inert import md_text
from stackmatrix.pipeline.steps import Executed, Job, Selected, Step, execute_cells, load, plan, session_of, store
from stackmatrix.reports.formats import renderer
from stackmatrix.store.index import CellRow
from stackmatrix.store.row import caveat_of

if TYPE_CHECKING:
    from stackmatrix.matrix.loaded import Loaded


class Trend(StrEnum):
    """How a requirement's cell moved from the baseline to the candidate."""

    REGRESSION = "regression"
    STILL_FAILING = "still-failing"
    OK = "ok"
    IMPROVED = "improved"


@dataclass(frozen=True)
class Finding:
    requirement: Requirement
    cell: CellResult
    baseline: CellRow | None
    standing: Trend


@dataclass(frozen=True)
class GateResult:
    policy: Policy
    candidate: Stack
    baseline_stack: Stack
    baseline_run: str | None  # the stored run the baseline was read from; None when none held it
    run_id: str  # the stored run of this gate's probes
    probed: tuple[str, ...]  # baseline cells probed now, for want of a stored result
    tier: str
    findings: tuple[Finding, ...]

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.standing is Trend.REGRESSION]

    @property
    def failing(self) -> list[Finding]:
        """What fails the gate: regressions, and with ``fail_on = "unmet"`` what was already failing too."""
        fails = {Trend.REGRESSION} | ({Trend.STILL_FAILING} if self.policy.fail_on == "unmet" else set())
        return [f for f in self.findings if f.standing in fails]


def cells_for(policy: Policy, stack: Stack) -> list[Cell]:
    return [Cell(stack, r.model, r.target) for r in policy.requirements]


def row_of(result: CellResult) -> CellRow:
    return CellRow(
        result.cell_id,
        str(result.verdict),
        str(result.reason) if result.reason else "",
        result.override or "",
        result.why,
        result.fingerprint,
    )


def judge_findings(
    requirements: Sequence[Requirement], candidate: Sequence[CellResult], baseline: Sequence[CellRow | None]
) -> tuple[Finding, ...]:
    findings = []
    for req, cell, base in zip(requirements, candidate, baseline, strict=True):
        now_ok = meets(cell.verdict, req.minimum)
        before_ok = base is not None and meets(Verdict(base.verdict), req.minimum)
        if now_ok:
            standing = Trend.OK if before_ok or base is None else Trend.IMPROVED
        elif before_ok or base is None:
            standing = Trend.REGRESSION
        else:
            standing = Trend.STILL_FAILING
        findings.append(Finding(req, cell, base, standing))
    return tuple(findings)


MARK = {Trend.REGRESSION: "❌", Trend.STILL_FAILING: "⚠️", Trend.OK: "✅", Trend.IMPROVED: "🆙"}


def _state(row: CellRow | None) -> str:
    if row is None:
        return "—"
    extra = md_text(row.reason + (f" ({row.override})" if row.override else ""))  # a record's words: inert
    return f"`{md_text(row.verdict)}`" + (f" {extra}" if extra else "")


def _evidence(cell: CellResult) -> Mapping[str, object]:
    """The deciding probe's evidence (the first failing one), or the last probe's for a pass."""
    for o in cell.outcomes:
        if cell.reason is not None and o.reason == cell.reason:
            return {"probe": o.probe, "status": str(o.status), "detail": o.detail, **o.evidence}
    return {}


def render_summary(g: GateResult, cell_path: str) -> str:
    """Markdown for a pull-request comment: verdict first, then each requirement, then the evidence."""
    regressions, failing = g.regressions, g.failing
    head = (
        f"### {'❌ Gate failed' if failing else '✅ Gate passed'}: "
        f"{len(regressions)} regression{'s' * (len(regressions) != 1)}"
        + (
            f", {len(failing) - len(regressions)} unmet (the policy fails on unmet)"
            if g.policy.fail_on == "unmet"
            else ""
        )
        + f" — policy `{g.policy.name}`"
    )
    if g.baseline_run is None and g.baseline_stack == g.candidate:
        base = "none (no stored run holds these cells; an unmet requirement counts as a regression)"
    else:
        probed = len(g.probed)
        base = f"`{g.baseline_stack.id}`" + (f" from run `{g.baseline_run}`" if g.baseline_run else "")
        base += f" ({probed} of its cells probed now: no stored run held them)" if probed else ""
    lines = [
        head,
        "",
        f"Candidate `{g.candidate.id}` ({g.tier} tier, run `{g.run_id}`) against baseline {base}.",
        "",
        "| | model | target | minimum | baseline | candidate | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in g.findings:
        r = f.requirement
        lines.append(
            f"| {MARK[f.standing]} | `{r.model.id}` | `{r.target.name}` (tp={r.target.tp}) | `{r.minimum}` | "
            f"{_state(f.baseline)} | {_state(row_of(f.cell))} | {md_text(f.cell.why or caveat_of(f.cell))} |"
        )
    counts = {s: sum(f.standing is s for f in g.findings) for s in Trend}
    lines += ["", " · ".join(f"{MARK[s]} {s}: {n}" for s, n in counts.items())]
    for f in g.findings:
        if f.standing not in (Trend.REGRESSION, Trend.STILL_FAILING):
            continue
        ev = json.dumps(_evidence(f.cell), indent=1, sort_keys=True, default=str)
        lines += [
            "",
            f"<details><summary>{MARK[f.standing]} <code>{f.cell.cell_id}</code>: {f.cell.verdict}"
            f"{' — ' + str(f.cell.reason) if f.cell.reason else ''}</summary>",
            "",
            "```json",
            ev,
            "```",
            "",
            f"Every probe and its evidence: `{cell_path}`, the line of `{f.cell.cell_id}`",
            "</details>",
        ]
    return "\n".join(lines) + "\n"


# --- the gate's own steps (GATE, below) -------------------------------------------------------------------


@dataclass(frozen=True)
class GateCells:
    policy: Policy
    candidate: Stack
    baseline_stack: Stack
    cells: tuple[Cell, ...]  # the candidate's, one per requirement
    base_ids: tuple[str, ...]  # the baseline's, one per requirement
    baseline_run: str | None
    stored: Mapping[str, CellRow]  # the baseline run's rows
    probe_base: tuple[Cell, ...]  # baseline cells no stored run holds: probed now, beside the candidate's


def gate_cells(loaded: Loaded, job: Job) -> Selected:
    """The candidate's cells and the baseline: the stored run that holds the baseline stack's cells (or
    ``--baseline``), and the baseline cells no stored run holds, to be probed now."""
    from stackmatrix.answers.policy import load_policy
    from stackmatrix.pipeline.shipped import spec_releases, with_images
    from stackmatrix.pipeline.stackspec import parse_spec, resolve_stack
    from stackmatrix.redact import redact
    from stackmatrix.store.index import open_index, warn_forged
    from stackmatrix.store.runs import find_run

    request, settings, session = job.request, job.settings, session_of(job)
    if request.policy is None:  # gate's parser requires it; a request built elsewhere may lack it
        raise BadInput("gate", "--policy", None, "a policy file: the models x targets that must serve")
    policy = load_policy(request.policy, loaded)
    spec = parse_spec(request.candidate)
    loaded = with_images(session, loaded, spec_releases(spec, policy.current))
    candidate = resolve_stack(spec, session, loaded)
    current = resolve_stack(policy.current, session, loaded, f"{policy.path}: current") if policy.current else None
    baseline_stack = current or candidate
    cells, base_cells = cells_for(policy, candidate), cells_for(policy, baseline_stack)
    base_ids = tuple(c.id for c in base_cells)
    with open_index(settings.reports_dir) as index:
        for run_dir, why in index.damaged.items():
            print(f"stackmatrix: warning: left out {run_dir}: {why}", file=sys.stderr)
        for why in index.lost_records().values():  # a baseline read from one holds what is left, never more
            print(f"stackmatrix: warning: {redact(why)}", file=sys.stderr)
        warn_forged(index)
        if request.baseline is not None:
            baseline_run: str | None = find_run(settings.reports_dir, request.baseline).run_id
        else:
            baseline_run = index.latest_with(list(base_ids))
        stored = index.cells(baseline_run) if baseline_run else {}
    probe_base = tuple(c for c in base_cells if c.id not in stored) if current not in (None, candidate) else ()
    todo = (*cells, *probe_base)
    gc = GateCells(policy, candidate, baseline_stack, tuple(cells), base_ids, baseline_run, stored, probe_base)
    meta = {
        "policy": str(policy.path),
        "candidate": str(spec),
        "baseline": baseline_run,
        "baseline_probed": [c.id for c in probe_base],
    }
    return Selected(loaded, todo, todo, len(todo), purpose="gate", meta=meta, extra=gc)


def judge(executed: Executed, job: Job) -> Executed:
    """Each requirement's standing: the candidate's verdict against the baseline's."""
    from dataclasses import replace

    gc: GateCells = executed.planned.selected.extra
    probed = {c.id for c in gc.probe_base}

    def result(cell_id: str) -> CellResult:
        found = executed.result(cell_id)
        assert found is not None, f"the gate's cell {cell_id} was neither probed nor reused"
        return found

    base_rows = [gc.stored.get(i) or (row_of(result(i)) if i in probed else None) for i in gc.base_ids]
    findings = judge_findings(gc.policy.requirements, [result(c.id) for c in gc.cells], base_rows)
    assert executed.run is not None
    gate = GateResult(
        gc.policy,
        gc.candidate,
        gc.baseline_stack,
        gc.baseline_run,
        executed.run.run_id,
        tuple(c.id for c in gc.probe_base),
        job.request.tier,
        findings,
    )
    # A requirement left undecided only because the image registry did not answer is not the candidate's failure:
    # the gate could not decide (exit 4), as for an unreachable index.
    blind = bool(gate.failing) and all(f.cell.reason is Reason.REGISTRY_UNREACHABLE for f in gate.failing)
    code = InfraUnavailable.exit_code if executed.infra or blind else (GateRegression.exit_code if gate.failing else 0)
    ending = {"regressions": len(gate.regressions), "failing": len(gate.failing)}
    return replace(executed, code=code, ending=ending, extra=gate)


def summary(executed: Executed, job: Job) -> int:
    """The Markdown summary on the terminal (the pull request's log shows it even when the file cannot be
    written) and in ``--summary``."""
    from stackmatrix.redact import redact

    gate: GateResult = executed.extra
    assert executed.run is not None
    text = redact(renderer("gate", "md")(gate, str(executed.run.journal_path)))
    print(text, end="")
    if job.request.summary:
        from stackmatrix.files.atomic import write_output

        write_output(job.request.summary, text, "--summary")
    if executed.infra:
        print("the package index was unreachable: the gate could not decide every cell", file=sys.stderr)
    elif executed.code == InfraUnavailable.exit_code:
        print("the image registry was unreachable: the gate could not decide its failing cells", file=sys.stderr)
    elif executed.code == GateRegression.exit_code:  # stored as failed already: the run.json records why too
        raise GateRegression(
            f"the gate failed: {len(gate.regressions)} regressed, {len(gate.failing) - len(gate.regressions)} unmet "
            "(the summary above)"
        )
    return executed.code or 0


# The command's steps: the workflow's, with this module's own.
GATE: tuple[Step, ...] = (load, gate_cells, plan, execute_cells, judge, store, summary)
