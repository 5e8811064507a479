from __future__ import annotations

from stackmatrix.domain import Outcome, Reason, Status, Verdict
from stackmatrix.ladder.verdict import derive

P = Status.PASS


def o(name: str, status: Status = P, reason: Reason | None = None, override: str | None = None) -> Outcome:
    return Outcome(name, status, reason, override=override)


def test_all_static_passes_is_predicted_never_serves() -> None:
    assert derive([o("resolve"), o("arch"), o("fit")]) == (Verdict.PREDICTED, None, None)


def test_first_software_failure_blocks() -> None:
    outs = [
        o("resolve"),
        o("model-type", Status.FAIL, Reason.MODEL_TYPE_UNKNOWN),
        o("arch", Status.FAIL, Reason.ARCH_UNSUPPORTED),
        o("fit", Status.FAIL, Reason.DOES_NOT_FIT),
    ]
    assert derive(outs) == (Verdict.BLOCKED, Reason.MODEL_TYPE_UNKNOWN, None)


def test_override_is_named_and_loses_to_no_fit() -> None:
    conflict = o("resolve", Status.FAIL, Reason.RESOLVE_CONFLICT, override="transformers==5.5.0")
    assert derive([conflict, o("arch"), o("fit")]) == (Verdict.OVERRIDE, Reason.RESOLVE_CONFLICT, "transformers==5.5.0")
    no_fit = derive([conflict, o("arch"), o("fit", Status.FAIL, Reason.DOES_NOT_FIT)])
    assert no_fit == (Verdict.NO_FIT, Reason.DOES_NOT_FIT, None)


def test_unreachable_or_unknown_is_not_run_but_a_real_failure_still_blocks() -> None:
    unknown = o("backend-imports", Status.SKIP, Reason.UNKNOWN)
    assert derive([o("resolve"), unknown]) == (Verdict.NOT_RUN, Reason.UNKNOWN, None)
    err = o("resolve", Status.ERROR, Reason.INDEX_UNREACHABLE)
    assert derive([err, o("fit")]) == (Verdict.NOT_RUN, Reason.INDEX_UNREACHABLE, None)
    assert derive([unknown, o("arch", Status.FAIL, Reason.ARCH_UNSUPPORTED)])[0] is Verdict.BLOCKED


def test_unoverridable_resolve_conflict_blocks() -> None:
    hard = o("resolve", Status.FAIL, Reason.RESOLVE_CONFLICT)
    assert derive([hard, o("fit")]) == (Verdict.BLOCKED, Reason.RESOLVE_CONFLICT, None)


def test_serve_pass_is_observed() -> None:
    assert derive([o("resolve"), o("serve")])[0] is Verdict.RUNS_TINY
    assert derive([o("resolve"), o("serve")], tiny=False)[0] is Verdict.SERVES
