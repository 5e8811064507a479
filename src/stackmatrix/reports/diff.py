"""What changed between two stored runs: every cell whose verdict, reason or override changed, and the cells
added or removed. Read from the index (store/index.py), rendered as terminal text, Markdown or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from stackmatrix.inert import md_text
from stackmatrix.store.index import CellRow, RunIndex

if TYPE_CHECKING:
    from stackmatrix.reports.news import News


class Change(StrEnum):
    VERDICT = "verdict"
    REASON = "reason"  # same verdict, another reason or override
    ADDED = "added"
    REMOVED = "removed"


@dataclass(frozen=True)
class CellChange:
    cell_id: str
    change: Change
    before: CellRow | None
    after: CellRow | None


@dataclass(frozen=True)
class Diff:
    run_a: str
    run_b: str
    cells_a: int
    cells_b: int
    changes: tuple[CellChange, ...]
    news: News | None = None  # what upstream released between the two runs (reports/news.py), where both recorded it

    def of(self, change: Change) -> list[CellChange]:
        return [c for c in self.changes if c.change is change]


def diff_runs(index: RunIndex, run_a: str, run_b: str) -> Diff:
    a, b = index.cells(run_a), index.cells(run_b)
    changes = []
    for cell_id in sorted(a.keys() | b.keys()):
        before, after = a.get(cell_id), b.get(cell_id)
        if before is None:
            changes.append(CellChange(cell_id, Change.ADDED, None, after))
        elif after is None:
            changes.append(CellChange(cell_id, Change.REMOVED, before, None))
        elif before.verdict != after.verdict:
            changes.append(CellChange(cell_id, Change.VERDICT, before, after))
        elif before.key != after.key:
            changes.append(CellChange(cell_id, Change.REASON, before, after))
    return Diff(run_a, run_b, len(a), len(b), tuple(changes))


def _state(row: CellRow | None, text: Callable[[str], str] = str) -> str:
    """``text``: how the record's own words are written (``md_text`` in Markdown)."""
    if row is None:
        return "—"
    extra = text(row.reason) + (f" ({text(row.override)})" if row.override else "")
    return text(row.verdict) + (f" [{extra}]" if extra else "")


def _headline(d: Diff) -> str:
    counts = {c: len(d.of(c)) for c in Change}
    return (
        f"{d.run_a} ({d.cells_a} cells) → {d.run_b} ({d.cells_b} cells): "
        f"{counts[Change.VERDICT]} verdicts changed, {counts[Change.REASON]} reasons changed, "
        f"{counts[Change.ADDED]} added, {counts[Change.REMOVED]} removed"
    )


SECTIONS = (
    (Change.VERDICT, "Verdict changed"),
    (Change.REASON, "Reason changed (same verdict)"),
    (Change.ADDED, "Added"),
    (Change.REMOVED, "Removed"),
)


def render_text(d: Diff) -> str:
    lines = [_headline(d)]
    for change, title in SECTIONS:
        items = d.of(change)
        if items:
            lines += ["", f"{title} ({len(items)}):"]
            lines += [f"  {c.cell_id}: {_state(c.before)} → {_state(c.after)}" for c in items]
    return "\n".join(lines + _news(d, md=False)) + "\n"


def render_markdown(d: Diff) -> str:
    lines = [f"## Changes: `{d.run_a}` → `{d.run_b}`", "", _headline(d), *_news(d, md=True)]
    if not d.changes:
        lines += ["", "No cell changed."]
    for change, title in SECTIONS:
        items = d.of(change)
        if not items:
            continue
        lines += ["", f"### {title} ({len(items)})", "", "| cell | before | after | why (after) |", "|---|---|---|---|"]
        for c in items:
            row = c.after or c.before
            why = row.why if row else ""
            lines.append(
                f"| `{c.cell_id}` | {_state(c.before, md_text)} | {_state(c.after, md_text)} | {md_text(why)} |"
            )
    return "\n".join(lines) + "\n"


def _news(d: Diff, md: bool) -> list[str]:
    if d.news is None:
        return []
    from stackmatrix.reports.news import render_lines

    return render_lines(d.news, md)


def _row_json(row: CellRow | None) -> dict[str, str] | None:
    if row is None:
        return None
    return {"verdict": row.verdict, "reason": row.reason, "override": row.override, "why": row.why}


def render_json(d: Diff) -> str:
    doc = {
        "run_a": d.run_a,
        "run_b": d.run_b,
        "cells_a": d.cells_a,
        "cells_b": d.cells_b,
        "changes": [
            {"cell": c.cell_id, "change": str(c.change), "before": _row_json(c.before), "after": _row_json(c.after)}
            for c in d.changes
        ],
    }
    if d.news is not None:
        from stackmatrix.reports.news import to_json

        doc["upstream"] = to_json(d.news)
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def with_news(d: Diff, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> Diff:
    """The diff with what upstream released between its runs (their ``upstream`` records), each new release
    naming the cells it added and the verdicts it changed."""
    from stackmatrix.reports.news import news

    added = [c.cell_id for c in d.of(Change.ADDED)]
    changed = [c.cell_id for c in d.of(Change.VERDICT)]
    return replace(d, news=news(before, after, added, changed))
