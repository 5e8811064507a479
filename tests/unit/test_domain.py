from __future__ import annotations

import pytest

from stackmatrix.domain import Cell, Outcome, Reason, Stack, StackKind, Status, Target, TritonRelease
from stackmatrix.ladder.verdict import decided
from stackmatrix.matrix.catalog import load_catalog


def _release(release: str, shipped: str | None) -> TritonRelease:
    return TritonRelease(release, "2.0.0", None, shipped, None, None, "3.12.3", None, False, True, "s")


def test_vllm_public_strips_nvidia_build_suffix() -> None:
    assert _release("26.03", "0.17.1+fb2e3ab6.nv26.3.46332470.cu132").vllm_public == "0.17.1"
    assert _release("25.06", "0.9.0rc1+1958ee56.nv25.6.cu129").vllm_public == "0.9.0"
    assert _release("24.08", "0.5.0.post1").vllm_public == "0.5.0.post1"
    assert _release("26.09", None).vllm_public is None


@pytest.mark.parametrize(("release", "cutoff"), [("26.03", "2026-04-01"), ("25.12", "2026-01-01")])
def test_cutoff_is_the_first_day_after_the_release_month(release: str, cutoff: str) -> None:
    assert _release(release, None).cutoff == cutoff


def test_stack_and_cell_ids_are_stable_and_glob_friendly() -> None:
    cat = load_catalog()
    model = cat.model("gemma-4-E4B-it")
    target = Target("l4x1", cat.gpus["L4"], 1, 1)
    stock = Stack(StackKind.TRITON_VLLM, "0.17.1", "4.57.6", "3.12", triton="26.03", transformers_rule="@release-day")
    upgrade = Stack(StackKind.TRITON_VLLM, "0.22.1", "5.6.0", "3.12", triton="26.03")
    plain = Stack(StackKind.VLLM, "0.19.0", "5.5.0", "3.12")
    assert Cell(stock, model, target).id == "triton-26.03__gemma-4-e4b-it__l4x1"
    assert Cell(upgrade, model, target).id == "triton-26.03-vllm0.22.1-tf5.6.0__gemma-4-e4b-it__l4x1"
    assert Cell(plain, model, target).id == "vllm-0.19.0-tf5.5.0__gemma-4-e4b-it__l4x1"


def test_outcome_json_round_trip() -> None:
    o = Outcome("arch", Status.FAIL, Reason.ARCH_UNSUPPORTED, "no X", {"closest": ["Y"]}, 0.5, None)
    assert Outcome.from_json(o.to_json()) == o


def test_observed_versions_come_from_the_environment_the_image_and_the_server() -> None:
    from stackmatrix.domain import CellResult, Verdict
    from stackmatrix.store.row import COLUMNS, table_row

    outcomes = (
        Outcome(
            "backend-imports",
            Status.FAIL,
            Reason.BACKEND_IMPORT_MISSING,
            "x",
            {"image": "t:26.03", "vllm": "0.17.1+nv"},
        ),
        Outcome("env", Status.PASS, None, "built", {"observed": {"transformers": "5.19.0", "torch": "2.13.0+cpu"}}),
        Outcome("import", Status.PASS, None, "ok", {"python": "3.11.2"}),
        Outcome("load", Status.PASS, None, "ok", {"tritonserver": "2.51.0"}),
    )
    declared = {"kind": "triton-vllm", "vllm": "0.17.1", "transformers": "4.57.6"}
    r = decided(CellResult("triton-26.03__gemma__l4x1", Verdict.BLOCKED, None, None, outcomes, "f", declared))
    assert r.observed == {
        "python": "3.11.2",
        "torch": "2.13.0+cpu",
        "transformers": "5.19.0",
        "tritonserver": "2.51.0",
        "vllm": "0.17.1+nv",
    }
    row = dict(zip(COLUMNS, table_row(r), strict=True))
    assert (row["vllm"], row["transformers"]) == ("0.17.1+nv", "5.19.0")  # observed over declared
    assert row["observed"].startswith("python 3.11.2, torch 2.13.0+cpu")
    assert r.to_json()["observed"] == r.summary()["observed"] == r.observed
    static_only = decided(
        CellResult("c", Verdict.PREDICTED, None, None, (outcomes[1].__class__("fit", Status.PASS),), "f", declared)
    )
    assert static_only.observed == {} and dict(zip(COLUMNS, table_row(static_only), strict=True))["vllm"] == "0.17.1"


def test_the_vllm_the_registry_read_from_the_image_shows_as_its_version() -> None:
    """backend-imports read from the registry records where the image's vLLM is (file, layer): the columns show
    its version, not that record."""
    from stackmatrix.domain import CellResult, Verdict
    from stackmatrix.store.row import COLUMNS, table_row

    shipped = {"version": "0.19.0", "file": "/usr/lib/python3/dist-packages/vllm-0.19.0.dist-info", "layer": "l"}
    outcome = Outcome("backend-imports", Status.PASS, None, "ok", {"image": "t:26.04", "vllm": shipped})
    r = decided(CellResult("triton-26.04__gemma__l4x1", Verdict.PREDICTED, None, None, (outcome,), "f", {}))
    row = dict(zip(COLUMNS, table_row(r), strict=True))
    assert r.observed == {"vllm": "0.19.0"} and (row["vllm"], row["observed"]) == ("0.19.0", "vllm 0.19.0")


def test_a_reason_stored_under_its_old_name_still_reads() -> None:
    """``slurm-task-ended`` became the executors' ``task-ended`` (any array backend): older journals read."""
    from stackmatrix.domain import Reason

    old = {"name": "result", "status": "error", "reason": "slurm-task-ended", "detail": "FAILED"}
    assert Outcome.from_json(old).reason is Reason.TASK_ENDED
    assert Reason("slurm-task-ended") is Reason.TASK_ENDED
