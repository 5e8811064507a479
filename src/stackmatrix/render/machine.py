"""CSV and JSON for machines: one row (object) per cell, sorted by cell id."""

from __future__ import annotations

from stackmatrix.render.table import Report


def render_csv(report: Report) -> str:
    return report.df.to_csv(index=False, lineterminator="\n")


def render_json(report: Report) -> str:
    """Verdicts and probe lines per cell, as the index holds them (tablerow.Row.summary); the evidence stays in
    the run's journal (and the HTML report)."""
    return "[" + ",".join(report.summaries) + "]"
