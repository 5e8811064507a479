"""The JUnit XML report, parsed back: counts, structure and the verdict mapping CI dashboards read."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.ladder.verdict import decided
from stackmatrix.reports.junit import render_junit
from stackmatrix.reports.table import Report

META = {
    "run_id": "20260101T000000Z-abcdef",
    "tool_version": "0.1.0",
    "matrix_hash": "4e731a4e251f6884",
    "tier": "static",
    "status": "complete",
    "started": "2026-01-01T00:00:00Z",
    "finished": "2026-01-01T00:00:02Z",
    "host": {"hostname": "ci-7"},
}
# What a testcase may hold, in the JUnit schema CI dashboards (Jenkins, GitLab) read.
CASE_CHILDREN = {"properties", "failure", "error", "skipped", "system-out", "system-err"}


def cell(stack: str, verdict: Verdict, outcomes: list[Outcome], override: str | None = None) -> CellResult:
    failing = [o for o in outcomes if o.status is not Status.PASS and o.reason]
    reason = failing[0].reason if failing and verdict not in (Verdict.SERVES, Verdict.RUNS_TINY) else None
    return decided(
        CellResult(f"{stack}__gemma-4-e4b-it__l4x1", verdict, reason, override, tuple(outcomes), "fp", {"kind": "vllm"})
    )


def report() -> Report:
    ok = Outcome("resolve", Status.PASS, detail="vllm 0.19.0 admits transformers 5.5.0", duration_s=0.25)
    return Report.of(
        [
            cell(
                "triton-26.03",
                Verdict.BLOCKED,
                [ok, Outcome("backend-imports", Status.FAIL, Reason.BACKEND_IMPORT_MISSING, "no vllm.inputs.data", {})],
            ),
            cell(
                "triton-26.04", Verdict.NOT_RUN, [ok, Outcome("backend-imports", Status.SKIP, Reason.UNKNOWN, "src?")]
            ),
            cell(
                "vllm-0.19.0-tf5.5.0",
                Verdict.NO_FIT,
                [ok, Outcome("fit", Status.FAIL, Reason.DOES_NOT_FIT, "needs 60.2 GiB of 21.6", duration_s=0.5)],
            ),
            cell("vllm-0.20.0-tf5.5.0", Verdict.PREDICTED, [ok, Outcome("arch", Status.PASS, duration_s=0.125)]),
            cell(
                "vllm-0.19.0-tf5.24.0",
                Verdict.OVERRIDE,
                [
                    Outcome(
                        "resolve", Status.FAIL, Reason.RESOLVE_CONFLICT, "declares <5", override="transformers==5.24.0"
                    )
                ],
                override="transformers==5.24.0",
            ),
            cell("vllm-0.21.0-tf5.5.0", Verdict.SERVES, [ok, Outcome("serve", Status.PASS, duration_s=12.0)]),
            cell("vllm-0.22.0-tf5.5.0", Verdict.RUNS_TINY, [ok, Outcome("serve", Status.PASS, duration_s=3.0)]),
        ],
        META,
    )


def parse(text: str) -> ET.Element:
    assert text.startswith("<?xml version='1.0' encoding='utf-8'?>\n")
    return ET.fromstring(text.encode())


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {f"{c.get('classname')}__{c.get('name')}": c for c in root.iter("testcase")}


def props(element: ET.Element) -> dict[str, str | None]:
    found = element.find("properties")
    assert found is not None
    return {p.get("name", ""): p.get("value") for p in found.iter("property")}


def test_one_suite_with_counts_matching_the_report() -> None:
    rep = report()
    root = parse(render_junit(rep))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    verdicts = [r.verdict for r in rep.results]
    expected = {
        "tests": len(verdicts),
        "failures": verdicts.count(Verdict.BLOCKED) + verdicts.count(Verdict.NO_FIT),
        "errors": 0,
        "skipped": verdicts.count(Verdict.NOT_RUN),
    }
    for element in (root, suite):
        assert {k: int(element.get(k, "-1")) for k in expected} == expected
    assert len(suite.findall("testcase")) == len(rep.results)
    assert len(suite.findall("testcase/failure")) == expected["failures"]
    assert len(suite.findall("testcase/skipped")) == expected["skipped"]
    assert suite.get("name") == "stackmatrix.20260101T000000Z-abcdef"
    assert suite.get("timestamp") == "2026-01-01T00:00:00"
    assert suite.get("hostname") == "ci-7"
    assert float(suite.get("time", "")) == pytest.approx(sum(o.duration_s for r in rep.results for o in r.outcomes))
    p = props(suite)
    assert (p["tool_version"], p["matrix_hash"], p["tier"], p["started"]) == (
        "0.1.0",
        "4e731a4e251f6884",
        "static",
        "2026-01-01T00:00:00Z",
    )


def test_testcases_name_their_cell_in_report_order_with_probe_time() -> None:
    rep = report()
    root = parse(render_junit(rep))
    found = root.findall("testsuite/testcase")
    assert [f"{c.get('classname')}__{c.get('name')}" for c in found] == [r.cell_id for r in rep.results]
    for case, r in zip(found, rep.results, strict=True):
        assert case.get("classname") == r.cell_id.split("__")[0]
        assert float(case.get("time", "")) == pytest.approx(sum(o.duration_s for o in r.outcomes), abs=5e-4)
        assert {child.tag for child in case} <= CASE_CHILDREN
        assert len([c for c in case if c.tag in ("failure", "skipped", "error")]) <= 1
        assert props(case)["verdict"] == str(r.verdict)


def test_verdicts_map_to_failure_skip_and_pass() -> None:
    by_id = cases(parse(render_junit(report())))
    blocked = by_id["triton-26.03__gemma-4-e4b-it__l4x1"].find("failure")
    assert blocked is not None
    assert blocked.get("type") == "backend-import-missing"
    assert blocked.get("message") == "backend-import-missing: no vllm.inputs.data"
    assert blocked.text == (
        "resolve pass: vllm 0.19.0 admits transformers 5.5.0\n"
        "backend-imports fail backend-import-missing: no vllm.inputs.data"
    )
    no_fit = by_id["vllm-0.19.0-tf5.5.0__gemma-4-e4b-it__l4x1"].find("failure")
    assert no_fit is not None
    assert (no_fit.get("type"), no_fit.get("message")) == ("does-not-fit", "does-not-fit: needs 60.2 GiB of 21.6")
    skipped = by_id["triton-26.04__gemma-4-e4b-it__l4x1"].find("skipped")
    assert skipped is not None
    assert skipped.get("message") == "unknown: src?"

    override = by_id["vllm-0.19.0-tf5.24.0__gemma-4-e4b-it__l4x1"]
    assert override.find("failure") is None and override.find("skipped") is None
    assert props(override)["override"] == "transformers==5.24.0"
    out = override.findtext("system-out", "")
    assert out.startswith("verdict: override (with override transformers==5.24.0; resolve-conflict: declares <5)")
    for cell_id, verdict in [
        ("vllm-0.20.0-tf5.5.0__gemma-4-e4b-it__l4x1", "predicted"),
        ("vllm-0.21.0-tf5.5.0__gemma-4-e4b-it__l4x1", "serves"),
        ("vllm-0.22.0-tf5.5.0__gemma-4-e4b-it__l4x1", "runs-tiny"),
    ]:
        case = by_id[cell_id]
        assert case.find("failure") is None and case.find("skipped") is None
        assert case.findtext("system-out", "").startswith(f"verdict: {verdict}\n")


def test_control_characters_in_evidence_still_give_well_formed_xml() -> None:
    bad = Outcome("import", Status.FAIL, Reason.IMPORT_ERROR, "\x1b[31mImportError\x1b[0m: <lib> & \x00")
    rep = Report.of([cell("vllm-0.19.0-tf5.5.0", Verdict.BLOCKED, [bad])], META)
    failure = parse(render_junit(rep)).find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == "import-error: \ufffd[31mImportError\ufffd[0m: <lib> & \ufffd"


def test_deterministic_and_empty() -> None:
    assert render_junit(report()) == render_junit(report())
    root = parse(render_junit(Report.of([], {})))
    assert root.get("tests") == "0"
    (suite,) = root.findall("testsuite")
    assert suite.get("timestamp") is None and suite.findall("testcase") == []


def test_infrastructure_not_run_is_an_error_not_a_skip() -> None:
    lost = Outcome("result", Status.ERROR, Reason.RESULT_MISSING, "shard 2/2 exited 137 without writing this cell")
    offline = Outcome("resolve", Status.ERROR, Reason.INDEX_UNREACHABLE, "index unreachable, no cached facts")
    rep = Report.of(
        [cell("vllm-0.20.0-tf5.5.0", Verdict.NOT_RUN, [lost]), cell("triton-26.03", Verdict.NOT_RUN, [offline])], {}
    )
    (suite,) = parse(render_junit(rep)).findall("testsuite")
    assert (suite.get("errors"), suite.get("skipped")) == ("2", "0")
    errors = suite.findall("testcase/error")
    assert sorted(str(e.get("type")) for e in errors) == ["index-unreachable", "result-missing"]
    assert any("exited 137" in (e.text or "") for e in errors)


def test_an_observation_that_contradicts_the_prediction_is_marked() -> None:
    """--climb all: the runtime tier served a cell the static tier blocked; the testcase passes and says so."""
    outcomes = [
        Outcome("model-type", Status.FAIL, Reason.MODEL_TYPE_UNKNOWN, "transformers 4.57.6 has no gemma4"),
        Outcome("load", Status.PASS),
        Outcome("unload", Status.PASS),
    ]
    root = parse(render_junit(Report.of([cell("triton-26.01", Verdict.RUNS_TINY, outcomes)], META)))
    (case,) = cases(root).values()
    assert props(case)["contradiction"] == "True"
    assert (props(case)["declared_verdict"], props(case)["observed_verdict"]) == ("blocked", "runs-tiny")
    out = case.find("system-out")
    assert out is not None and "observed runs-tiny: contradicts the prediction blocked" in (out.text or "")
    refused = [Outcome("model-type", Status.PASS), Outcome("load", Status.FAIL, Reason.LOAD_FAILED, "refused")]
    root = parse(render_junit(Report.of([cell("triton-26.01", Verdict.BLOCKED, refused)], META)))
    failure = next(iter(cases(root).values())).find("failure")
    assert failure is not None and "observed blocked: contradicts the prediction predicted" in (failure.text or "")
    plain = parse(render_junit(report()))
    assert all("contradiction" not in props(c) for c in cases(plain).values())
