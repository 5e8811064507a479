"""The driver rung's judgement (ladder/driver.py): versions, forward and minor-version compatibility, and the
needs read from the catalog for a stock Triton container (no wheel is read for one)."""

from __future__ import annotations

from typing import Any

import pytest

from stackmatrix.domain import Cell, Gpu, Stack, StackKind, Status, Target
from stackmatrix.ladder.driver import Need, at_least, cuda_minor, judge, probe_driver
from stackmatrix.ladder.static import Context
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.matrix.file import Settings

L4 = Gpu("L4", 24, "8.9", True, False, "s", datacenter=True)
DESKTOP = Gpu("RTX", 24, "8.9", True, False, "s", datacenter=False)
CONTAINER = Need("Triton 25.01's container (CUDA 12.8.0.038)", "12.8", "560", "RN 25.01", ("535.86", "545.23"))
WHEEL = Need("vllm 0.19.1's CUDA 12.8", "12.8", "570.26", "torch; Table 3; Table 1", minor_compat="525.60.13")


def target(driver: str | None, gpu: Gpu = L4) -> Target:
    return Target("t", gpu, 1, 1, driver, "m.toml: targets.t.driver" if driver else "")


@pytest.mark.parametrize(
    ("driver", "minimum", "ok"),
    [
        ("560.35.03", "560", True),
        ("555.42.06", "560", False),
        ("570.26", "570.26", True),
        ("570.124.06", "570.26", True),
    ],
)
def test_a_driver_is_at_least_a_release_or_a_branch(driver: str, minimum: str, ok: bool) -> None:
    assert at_least(driver, minimum) is ok


def test_cuda_versions_read_as_their_minor_release() -> None:
    assert (cuda_minor("12.8.0.038"), cuda_minor("13.0.96"), cuda_minor("12.8")) == ("12.8", "13.0", "12.8")


def test_a_new_enough_driver_passes_plainly() -> None:
    j = judge(CONTAINER, target("560.35.03"))
    assert j.status is Status.PASS and j.caveat == ""
    assert "runs Triton 25.01's container (CUDA 12.8.0.038): it needs 560 or later (RN 25.01)" in j.detail


def test_an_allowed_older_branch_passes_by_forward_compatibility_on_a_data_centre_gpu_only() -> None:
    j = judge(CONTAINER, target("535.104.05"))
    assert j.status is Status.PASS and "forward compatibility (R535, data-centre GPU)" in j.caveat
    desk = judge(CONTAINER, target("535.104.05", DESKTOP))
    assert desk.status is Status.FAIL and "RTX, not a data-centre GPU" in desk.detail


def test_a_branch_the_notes_do_not_name_or_a_release_before_its_floor_fails_naming_both_versions() -> None:
    for driver in ("550.54.15", "535.54.03"):  # R550 is not in the list; 535.54 is before 535.86
        j = judge(CONTAINER, target(driver))
        assert j.status is Status.FAIL
        assert f"driver {driver} is older than the 560 Triton 25.01's container (CUDA 12.8.0.038) needs (RN 25.01)" in (
            j.detail
        )
        assert "R535 from 535.86, R545 from 545.23" in j.detail


def test_a_wheel_runs_on_its_cuda_familys_floor_through_minor_version_compatibility() -> None:
    j = judge(WHEEL, target("535.104.05"))
    assert j.status is Status.PASS and "minor-version compatibility (570.26 for every feature; no PTX JIT)" in j.caveat
    low = judge(WHEEL, target("470.82.01"))
    assert low.status is Status.FAIL and "CUDA minor-version compatibility needs 525.60.13 or later" in low.detail


def _stock(release: str, driver: str | None) -> tuple[Cell, Context]:
    catalog = load_catalog()
    stack = Stack(StackKind.TRITON_VLLM, "0.6.3.post1", "4.46.0", "3.12", release, "@catalog")
    model = catalog.model("google/gemma-4-E2B-it")
    facts: Any = None  # a stock container's needs are the catalog's: no wheel is read
    return Cell(stack, model, target(driver)), Context(catalog, facts, Settings())


def test_a_target_without_a_driver_is_not_judged_and_says_what_the_stack_needs() -> None:
    out = probe_driver(*_stock("25.01", None))
    assert out.status is Status.SKIP and out.reason is None
    assert out.detail == "driver not declared for t: Triton 25.01's container (CUDA 12.8.0.038) needs 560 or later"


def test_a_stock_container_is_judged_by_its_release_notes_with_their_source() -> None:
    out = probe_driver(*_stock("25.01", "550.54.15"))
    assert out.status is Status.FAIL and str(out.reason) == "driver-too-old"
    assert "NVIDIA's Triton 25.01 release notes" in out.detail
    assert out.evidence["needs"][0]["forward_compat"] == ["470.57", "525.85", "535.86", "545.23"]
    assert out.evidence["driver_source"] == "m.toml: targets.t.driver"


def test_a_release_whose_notes_give_no_number_takes_its_cudas_driver_and_minor_version_compatibility() -> None:
    out = probe_driver(*_stock("26.04", "580.95.05"))  # CUDA 13.2: 595.45.04 for every feature, R580 for 13.x
    assert out.status is Status.PASS and "minor-version compatibility" in out.evidence["caveat"]
    assert "CUDA 13.2 GA >=595.45.04" in out.evidence["needs"][0]["source"]
    too_old = probe_driver(*_stock("26.04", "575.57.08"))
    assert too_old.status is Status.FAIL and "needs 580 or later" in too_old.detail
