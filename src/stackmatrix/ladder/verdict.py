"""A cell's verdict from its outcomes, strongest evidence first (DESIGN.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from stackmatrix.domain import CellResult, Outcome, Reason, Rung, Status, Verdict

# The last rung of a runtime ladder: its pass means the stack served (vLLM's and Triton-Python's serve; Triton's vLLM
# backend's unload, after generate and stream).
RUNTIME_SERVED = frozenset({Rung.SERVE, Rung.UNLOAD})


def _overridable(o: Outcome) -> bool:
    return o.status is Status.FAIL and o.reason is Reason.RESOLVE_CONFLICT and o.override is not None


# The static rungs a run can confirm or contradict (``--climb all``): the environment builds whatever they said.
CLIMBABLE = frozenset({Rung.MODEL_TYPE, Rung.ARCH, Rung.BACKEND_IMPORTS})


def climbable(outcomes: Sequence[Outcome]) -> bool:
    """The static tier failed the cell only on rungs a run can confirm or contradict."""
    fails = [o for o in outcomes if o.status is Status.FAIL]
    return bool(fails) and all(o.probe in CLIMBABLE for o in fails)


def derive(outcomes: Sequence[Outcome], *, tiny: bool = True) -> tuple[Verdict, Reason | None, str | None]:
    """(verdict, reason, override).

    A software failure blocks (the first failing probe gives the reason); an infrastructure error or an
    unknown fact leaves the cell not-run; a memory failure alone is no-fit; a pass that needs a dependency
    the declared requirements forbid is an override; otherwise the strongest observation decides. A ladder
    that served outweighs what the static tier predicted of it (``--climb all``: the record marks the
    contradiction).
    """
    if any(o.probe in RUNTIME_SERVED and o.status is Status.PASS for o in outcomes):
        outcomes = [o for o in outcomes if not (o.probe in CLIMBABLE and o.status is Status.FAIL)]
    fails = [o for o in outcomes if o.status is Status.FAIL]
    hard = [o for o in fails if not _overridable(o) and o.reason is not Reason.DOES_NOT_FIT]
    if hard:
        return Verdict.BLOCKED, hard[0].reason, None
    errors = [o for o in outcomes if o.status is Status.ERROR or (o.status is Status.SKIP and o.reason)]
    if errors:
        return Verdict.NOT_RUN, errors[0].reason or Reason.UNKNOWN, None
    if any(o.reason is Reason.DOES_NOT_FIT for o in fails):
        return Verdict.NO_FIT, Reason.DOES_NOT_FIT, None
    overrides = [o.override for o in fails if o.override]
    if overrides:
        return Verdict.OVERRIDE, Reason.RESOLVE_CONFLICT, "; ".join(overrides)
    if any(o.probe in RUNTIME_SERVED and o.status is Status.PASS for o in outcomes):
        return (Verdict.RUNS_TINY if tiny else Verdict.SERVES), None, None
    return Verdict.PREDICTED, None, None


# The static tier's probes: what a cell's declared (predicted) verdict is derived from.
STATIC_PROBES = frozenset(
    {Rung.RESOLVE, Rung.MODEL_TYPE, Rung.ARCH, Rung.BACKEND_IMPORTS, Rung.FIT, Rung.KERNEL, Rung.DRIVER}
)


def declared_vs_observed(r: CellResult) -> tuple[str, str, bool]:
    """(static verdict, observed verdict or "", whether the observation contradicts the prediction)."""
    static = str(derive([o for o in r.outcomes if o.probe in STATIC_PROBES])[0])
    ran = [o for o in r.outcomes if o.probe not in STATIC_PROBES and o.status is not Status.SKIP]
    if not ran:
        return static, "", False
    observed = str(r.verdict)
    said_yes, saw_no = static in ("predicted", "override"), observed in ("blocked", "no-fit")
    said_no, saw_yes = static == "blocked", observed in ("runs-tiny", "serves")
    return static, observed, (said_yes and saw_no) or (said_no and saw_yes)


def decided(r: CellResult) -> CellResult:
    """``r`` with what the ladder decides beside the verdict (declared, observed, contradiction), stored in the
    record so that no reader derives it (a record from before they were stored gets them on reading)."""
    static, observed, contradiction = declared_vs_observed(r)
    return replace(
        r,
        declared_verdict=Verdict(static),
        observed_verdict=Verdict(observed) if observed else None,
        contradiction=contradiction,
    )
