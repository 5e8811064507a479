"""A cell's verdicts over time, from the index: rows are cells, columns the newest runs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from tabulate import tabulate

from stackmatrix.domain import Verdict
from stackmatrix.reports.legend import SYMBOL
from stackmatrix.store.index import CellRow, RunRow


def _entry(row: CellRow | None) -> str:
    if row is None:
        return ""
    return f"{SYMBOL[Verdict(row.verdict)]} {row.verdict}" + (f" {row.reason}" if row.reason else "")


def _what(run: RunRow) -> str:
    """A run's purpose, and its status where it is not complete (crashed, damaged, ...): a column is never read
    as a finished run's when it is not one."""
    return run.purpose if run.status == "complete" else f"{run.purpose}, {run.status}"


History = Mapping[str, Sequence[tuple[str, CellRow]]]


def _columns(history: History, runs: Sequence[RunRow], last: int) -> list[RunRow]:
    """``runs`` oldest first; only the newest ``last`` runs that hold any of the cells become columns."""
    holding = {run_id for rows in history.values() for run_id, _ in rows}
    return [r for r in runs if r.run_id in holding][-last:]


def render_json(history: History, runs: Sequence[RunRow], last: int) -> str:
    shown = {c.run_id for c in _columns(history, runs, last)}  # once, not per row
    doc = {
        cell: [
            {"run": run_id, "verdict": row.verdict, "reason": row.reason, "override": row.override, "why": row.why}
            for run_id, row in rows
            if run_id in shown
        ]
        for cell, rows in sorted(history.items())
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def render_text(history: History, runs: Sequence[RunRow], last: int) -> str:
    return _table(history, runs, last, "simple")


def render_markdown(history: History, runs: Sequence[RunRow], last: int) -> str:
    return _table(history, runs, last, "github")


def _table(history: History, runs: Sequence[RunRow], last: int, tablefmt: str) -> str:
    columns = _columns(history, runs, last)
    by_cell = {cell: dict(rows) for cell, rows in history.items()}
    table = [[cell, *(_entry(by_cell[cell].get(c.run_id)) for c in columns)] for cell in sorted(history)]
    headers = ["cell", *(f"{c.run_id} ({_what(c)})" for c in columns)]
    changed = sum(len({(r.verdict, r.reason) for _, r in rows}) > 1 for rows in history.values())
    body = tabulate(table, headers=headers, tablefmt=tablefmt)
    return f"{body}\n\n{len(history)} cells over {len(columns)} runs; {changed} changed verdict or reason\n"
