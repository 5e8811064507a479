"""advise's pure parts: which releases are candidates, and the order of the answer."""

from __future__ import annotations

from stackmatrix.answers.advise import Candidate, Checked, _newest_patches, climbs, unrunnable
from stackmatrix.answers.policy import Requirement
from stackmatrix.domain import CellResult, Outcome, Reason, Stack, StackKind, Status, Target, Verdict
from stackmatrix.ladder.verdict import decided, derive
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.matrix.pins import newer as _newer
from stackmatrix.pipeline.stackspec import StackSpec


def test_the_newest_patch_of_each_newer_minor() -> None:
    versions = ["4.57.5", "4.57.6", "5.0.0", "5.5.0", "5.5.4", "5.6.0", "5.6.2", "5.10.1"]
    assert _newest_patches(versions) == ["4.57.6", "5.0.0", "5.5.4", "5.6.2", "5.10.1"]
    assert _newer(_newest_patches(versions), "5.5.0") == ["5.5.4", "5.6.2", "5.10.1"]
    assert _newer(versions, None) == versions


def _checked(*outcome_sets: tuple[Outcome, ...]) -> tuple[Checked, tuple[Requirement, ...]]:
    cat = load_catalog()
    stack = Stack(StackKind.TRITON_VLLM, "0.32.0", "5.19.0", "3.12", triton="26.01")
    candidate = Candidate(
        StackSpec("26.01", "0.32.0", None, None), stack, "vLLM 0.32.0 inside Triton 26.01", 2, False, 1
    )
    results = tuple(
        decided(CellResult(f"c{i}", *derive(outcomes), outcomes, "fp", {})) for i, outcomes in enumerate(outcome_sets)
    )
    target = Target("l4x1", cat.gpus["L4"], 1, 1)
    req = Requirement(cat.model("gemma-4-E2B-it"), target, Verdict.RUNS_TINY, "")
    return Checked(candidate, results, 0), (req,) * len(results)


def test_a_minimum_only_a_run_can_meet_climbs_what_the_static_tier_left_standing() -> None:
    predicted = (Outcome("arch", Status.PASS),)
    blocked_on_backend = (Outcome("backend-imports", Status.FAIL, Reason.BACKEND_IMPORT_MISSING, "no x"),)
    blocked_on_resolve = (Outcome("resolve", Status.FAIL, Reason.RESOLVE_CONFLICT, "declares <5"),)
    k, reqs = _checked(predicted)
    assert climbs(k, reqs, "standing") and climbs(k, reqs, "all")
    k, reqs = _checked(predicted, blocked_on_backend)  # --climb all: a block a run can contradict climbs too
    assert not climbs(k, reqs, "standing") and climbs(k, reqs, "all")
    k, reqs = _checked(blocked_on_resolve)  # no run can confirm or contradict a conflict: never
    assert not climbs(k, reqs, "all")


def test_a_candidate_this_host_could_not_run_yields_its_place() -> None:
    k, _ = _checked((Outcome("arch", Status.PASS),))
    not_run = CellResult("c0", Verdict.NOT_RUN, Reason.NO_CPU_BUILD, None, (), "fp", {})
    ran = CellResult("c0", Verdict.RUNS_TINY, None, None, (), "fp", {})
    assert unrunnable(k, {"c0": not_run}) and not unrunnable(k, {"c0": ran}) and not unrunnable(k, {})


def test_a_candidate_that_needs_only_newer_drivers_ranks_after_those_that_need_none_and_names_them() -> None:
    from stackmatrix.answers.advise import Question, driver_fix, driver_note

    cat = load_catalog()
    needs = {"needs": [{"what": "vllm 0.34.0's CUDA 13.0", "driver": "580.65.06"}]}
    too_old = Outcome("driver", Status.FAIL, Reason.DRIVER_TOO_OLD, "535.104.05 is older than 580.65.06", needs)
    passes = (Outcome("arch", Status.PASS), Outcome("fit", Status.PASS))
    target = Target("l4x1", cat.gpus["L4"], 1, 1, "535.104.05", "policy.toml: targets.l4x1.driver")
    req = Requirement(cat.model("gemma-4-E2B-it"), target, Verdict.PREDICTED, "")
    only_driver = CellResult("c0", *derive((*passes, too_old)), (*passes, too_old), "fp", {})
    assert driver_fix(only_driver, req) == "580.65.06"
    also_arch = (Outcome("arch", Status.FAIL, Reason.ARCH_UNSUPPORTED, "no Gemma4"), too_old)
    assert driver_fix(CellResult("c1", *derive(also_arch), also_arch, "fp", {}), req) is None  # a driver is not enough
    stack = Stack(StackKind.VLLM, "0.34.0", "5.25.0", "3.12")
    cand = Candidate(StackSpec(None, "0.34.0", None, None), stack, "vLLM 0.34.0", 1, False, 1)
    ok = Checked(cand, (CellResult("c2", Verdict.PREDICTED, None, None, passes, "fp", {}),), 1, (None,))
    upgrade = Checked(cand, (only_driver,), 0, ("580.65.06",))
    miss = Checked(cand, (CellResult("c1", *derive(also_arch), also_arch, "fp", {}),), 0, (None,))
    assert [k.rank for k in (ok, upgrade, miss)] == [0, 1, 2] and upgrade.with_driver and not miss.with_driver
    q = Question(StackSpec(None, "0.34.0", None, None), stack, (req,), (cand,))
    assert driver_note(upgrade, q) == "l4x1: driver 580.65.06 or later (has 535.104.05)"
