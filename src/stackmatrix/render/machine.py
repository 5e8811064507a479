"""CSV and JSON for machines: one row (object) per cell, sorted by cell id."""

from __future__ import annotations

import json

from stackmatrix.render.table import Report


def render_csv(report: Report) -> str:
    return report.df.to_csv(index=False, lineterminator="\n")


def render_json(report: Report) -> str:
    """Verdicts and probe lines per cell; the evidence stays in the run's cell files (and the HTML report)."""
    rows = [{**r.summary(), "declared": dict(r.declared)} for r in report.results]
    return json.dumps(rows, separators=(",", ":"))
