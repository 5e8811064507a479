"""CSV and JSON for machines: one row (object) per cell, sorted by cell id. No pandas: the csv module writes what
``DataFrame.to_csv`` wrote (a missing value as an empty field, booleans as True/False, minimal quoting)."""

from __future__ import annotations

import csv
import io

from stackmatrix.reports.table import Report
from stackmatrix.store.row import COLUMNS


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(report.table_rows)  # None: an empty field
    return out.getvalue()


def render_json(report: Report) -> str:
    """Verdicts and probe lines per cell, as the index holds them (tablerow.Row.summary); the evidence stays in
    the run's journal (and the HTML report)."""
    return "[" + ",".join(report.summaries) + "]"
