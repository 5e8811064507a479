"""The release gate: does every model the policy names still serve on the candidate stack?

Each requirement (model x target, minimum verdict) is probed on the candidate stack and compared with the
baseline: the same requirement on the stack the site runs today (the policy's ``current``), or, without one, the
candidate's own cells in an earlier run. A requirement the baseline met and the candidate does not is a
regression; one the baseline did not meet either is reported as still failing; with no baseline at all, an unmet
requirement counts as a regression (a gate passes only what it has seen pass).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from stackmatrix.domain import Cell, CellResult, Stack, Verdict
from stackmatrix.policy import Policy, Requirement, meets
from stackmatrix.runindex import CellRow


class Standing(StrEnum):
    REGRESSION = "regression"
    STILL_FAILING = "still-failing"
    OK = "ok"
    IMPROVED = "improved"


@dataclass(frozen=True)
class Finding:
    requirement: Requirement
    cell: CellResult
    baseline: CellRow | None
    standing: Standing


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
        return [f for f in self.findings if f.standing is Standing.REGRESSION]

    @property
    def failing(self) -> list[Finding]:
        """What fails the gate: regressions, and with ``fail_on = "unmet"`` what was already failing too."""
        fails = {Standing.REGRESSION} | ({Standing.STILL_FAILING} if self.policy.fail_on == "unmet" else set())
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


def judge(
    requirements: Sequence[Requirement], candidate: Sequence[CellResult], baseline: Sequence[CellRow | None]
) -> tuple[Finding, ...]:
    findings = []
    for req, cell, base in zip(requirements, candidate, baseline, strict=True):
        now_ok = meets(cell.verdict, req.minimum)
        before_ok = base is not None and meets(Verdict(base.verdict), req.minimum)
        if now_ok:
            standing = Standing.OK if before_ok or base is None else Standing.IMPROVED
        elif before_ok or base is None:
            standing = Standing.REGRESSION
        else:
            standing = Standing.STILL_FAILING
        findings.append(Finding(req, cell, base, standing))
    return tuple(findings)


MARK = {Standing.REGRESSION: "❌", Standing.STILL_FAILING: "⚠️", Standing.OK: "✅", Standing.IMPROVED: "🆙"}


def _state(row: CellRow | None) -> str:
    if row is None:
        return "—"
    extra = row.reason + (f" ({row.override})" if row.override else "")
    return f"`{row.verdict}`" + (f" {extra}" if extra else "")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


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
            f"{_state(f.baseline)} | {_state(row_of(f.cell))} | {_md(f.cell.why)} |"
        )
    counts = {s: sum(f.standing is s for f in g.findings) for s in Standing}
    lines += ["", " · ".join(f"{MARK[s]} {s}: {n}" for s, n in counts.items())]
    for f in g.findings:
        if f.standing not in (Standing.REGRESSION, Standing.STILL_FAILING):
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
            f"Every probe and its evidence: `{cell_path}/{f.cell.cell_id}.json`",
            "</details>",
        ]
    return "\n".join(lines) + "\n"
