"""JUnit XML for CI dashboards: one ``<testsuite>`` per run, one ``<testcase>`` per cell.

``classname`` is the stack id and ``name`` the rest of the cell id (``<model>__<target>``), so
``classname + "__" + name`` is the cell id again. Verdicts map to what dashboards understand: ``blocked`` and
``no-fit`` fail, ``not-run`` is skipped (an error where the infrastructure failed: the index was unreachable or a
shard's result is missing), every other verdict passes and says which it is (a ``predicted`` pass is
a prediction, not an observation; an ``override`` pass names its override).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from stackmatrix.domain import CellResult, Reason, Verdict
from stackmatrix.reports.table import FLAKY, Report
from stackmatrix.store.row import caveat_of

FAILING = frozenset({Verdict.BLOCKED, Verdict.NO_FIT})
# Not-run for these is the run's own failure, not a property of the cell: a dashboard must not hide it as a skip.
INFRA = frozenset(
    {
        Reason.INDEX_UNREACHABLE,
        Reason.REGISTRY_UNREACHABLE,
        Reason.RESULT_MISSING,
        Reason.INTERRUPTED,
        Reason.TASK_ENDED,
    }
)


def _is_error(r: CellResult) -> bool:
    return r.verdict is Verdict.NOT_RUN and r.reason in INFRA


# XML 1.0 forbids most control characters (an ANSI colour code in a probe detail would make the file unparsable).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _probe_lines(r: CellResult) -> str:
    lines = []
    for o in r.outcomes:
        reason = f" {o.reason}" if o.reason else ""
        override = f" (override {o.override})" if o.override else ""
        detail = f": {o.detail}" if o.detail else ""
        lines.append(f"{o.probe} {o.status}{reason}{override}{detail}")
    return _clean("\n".join(lines))


def _properties(parent: ET.Element, values: Mapping[str, Any]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in values.items():
        if value not in (None, ""):
            ET.SubElement(props, "property", name=name, value=_clean(str(value)))


def _testcase(suite: ET.Element, r: CellResult) -> None:
    stack, _, rest = r.cell_id.partition("__")
    case = ET.SubElement(
        suite, "testcase", classname=stack, name=rest, time=_seconds(sum(o.duration_s for o in r.outcomes))
    )
    attempts = ",".join(r.attempts) or None  # the verdicts of the attempts before this one
    _properties(
        case,
        {
            "verdict": r.verdict,
            "reason": r.reason,
            "override": r.override,
            "flaky": r.flaky or None,
            "attempts": attempts,
            "declared_verdict": r.declared_verdict,
            "observed_verdict": r.observed_verdict,
            "contradiction": r.contradiction or None,
            "caveat": caveat_of(r) or None,  # what a passing rung passed through (a fallback kernel, a driver)
        },
    )
    reason = str(r.reason) if r.reason else str(r.verdict)
    detail = r.why
    message = _clean(f"{reason}: {detail}" if detail else reason)
    # --climb all: a runtime observation that contradicts the static prediction, in either direction
    contradicts = (
        f"observed {r.observed_verdict}: contradicts the prediction {r.declared_verdict}\n" if r.contradiction else ""
    )
    if r.verdict in FAILING:
        ET.SubElement(case, "failure", message=message, type=reason).text = contradicts + _probe_lines(r)
    elif _is_error(r):
        ET.SubElement(case, "error", message=message, type=reason).text = _probe_lines(r)
    elif r.verdict is Verdict.NOT_RUN:
        ET.SubElement(case, "skipped", message=message)
        ET.SubElement(case, "system-out").text = _probe_lines(r)
    else:
        head = f"verdict: {r.verdict}" + (f" (with override {r.override}; {message})" if r.override else "")
        head += f" ({FLAKY}: {', '.join(r.attempts)}, then {r.verdict})" if r.flaky else ""
        ET.SubElement(case, "system-out").text = _clean(head) + "\n" + contradicts + _probe_lines(r)


def render_junit(report: Report) -> str:
    meta = report.meta
    results = report.results
    failures = sum(r.verdict in FAILING for r in results)
    errors = sum(map(_is_error, results))
    skipped = sum(r.verdict is Verdict.NOT_RUN for r in results) - errors
    total = _seconds(sum(o.duration_s for r in results for o in r.outcomes))
    counts = {"tests": str(len(results)), "failures": str(failures), "errors": str(errors), "skipped": str(skipped)}
    root = ET.Element("testsuites", {"name": "stackmatrix", **counts, "time": total})
    name = _clean(f"stackmatrix.{meta.get('run_id', 'run')}")
    suite = ET.SubElement(root, "testsuite", {"name": name, **counts, "time": total})
    if meta.get("started"):
        # The JUnit schema's timestamp has no zone; run.json's is UTC ("...Z"), kept whole in the properties.
        suite.set("timestamp", str(meta["started"]).removesuffix("Z"))
    host = meta.get("host")
    if isinstance(host, Mapping) and host.get("hostname"):
        suite.set("hostname", _clean(str(host["hostname"])))
    keys = ("tool_version", "matrix_hash", "tier", "run_id", "status", "matrix", "started", "finished", "duration_s")
    _properties(suite, {k: meta.get(k) for k in keys})
    for r in results:
        _testcase(suite, r)
    ET.indent(root)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml.decode() + "\n"
