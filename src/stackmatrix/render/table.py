"""The readiness table as a frame, from stored cell results only; what every format shares.

Rows are model x target, columns are stacks (DESIGN.md). ``predicted`` never looks like ``serves``: each verdict
has its own symbol, and the legend says which verdicts are observed and which are declared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any

import pandas as pd

from stackmatrix.domain import CellResult, Verdict
from stackmatrix.kinds import triton_prefixes
from stackmatrix.legend import MEANING, PLAIN, SYMBOL
from stackmatrix.tablerow import COLUMNS, row_of


@dataclass(frozen=True)
class ObservedRow:
    """A cell the runtime tier ran: its static prediction beside what was observed."""

    cell: str
    declared: str
    observed: str
    reason: str
    why: str
    contradiction: bool

    @property
    def because(self) -> str:
        return (self.reason + (f": {self.why}" if self.why else "")) if self.reason else ""


def observed_rows(df: pd.DataFrame) -> list[ObservedRow]:
    seen = df[df["observed_verdict"] != ""]
    cols = ("cell", "declared_verdict", "observed_verdict", "reason", "why", "contradiction")
    return [ObservedRow(*row) for row in zip(*(seen[c].tolist() for c in cols), strict=True)]


def legend() -> list[str]:
    return [f"{SYMBOL[v]} {v}: {MEANING[v]}" for v in Verdict]


def stack_order(df: pd.DataFrame) -> list[str]:
    """Triton stacks first (the ones operators upgrade), then vLLM's own; by id within each."""
    first = triton_prefixes()
    return sorted(df["stack"].unique(), key=lambda s: (not s.startswith(first), s))


def note_text(reason: str, override: str, detail: str) -> str:
    return reason + (f" ({override})" if override else "") + (f": {detail}" if detail else "")


def footnotes(df: pd.DataFrame) -> tuple[list[int | None], dict[str, int]]:
    """One footnote number per distinct reason text, numbered in row order; None for plain passes.
    Markdown, LaTeX and HTML number their footnotes the same way."""
    notes: dict[str, int] = {}
    numbers: list[int | None] = []
    for verdict, reason, override, detail in zip(df["verdict"], df["reason"], df["override"], df["why"], strict=True):
        if Verdict(verdict) in PLAIN:
            numbers.append(None)
        else:
            numbers.append(notes.setdefault(note_text(reason, override, detail), len(notes) + 1))
    return numbers, notes


def pivot(df: pd.DataFrame, values: Sequence[str]) -> pd.DataFrame:
    """Rows model x target (sorted), columns the stacks in ``stack_order``; a missing cell is ""."""
    table = df.assign(_v=list(values)).pivot_table(
        index=["model", "target"], columns="stack", values="_v", aggfunc="first"
    )
    return table.reindex(columns=stack_order(df)).fillna("")


@dataclass(frozen=True)
class Report:
    """What every format renders: the stored results, their frame, and the run's metadata (run.json)."""

    results: tuple[CellResult, ...]
    df: pd.DataFrame = field(compare=False)
    meta: Mapping[str, Any]
    title: str
    summaries: tuple[str, ...] = ()  # per row, the JSON report's object (tablerow.Row.summary)

    @classmethod
    def of(cls, results: Sequence[CellResult], meta: Mapping[str, Any], title: str | None = None) -> Report:
        ordered = tuple(sorted(results, key=lambda r: r.cell_id))
        rows = [row_of(r) for r in ordered]
        df = pd.DataFrame([astuple(r)[: len(COLUMNS)] for r in rows], columns=COLUMNS)
        return cls(ordered, df, meta, title or default_title(meta), tuple(r.summary for r in rows))

    @classmethod
    def of_rows(
        cls,
        rows: Sequence[Sequence[Any]],
        meta: Mapping[str, Any],
        title: str | None = None,
        summaries: Sequence[str] = (),
    ) -> Report:
        """The table only, from the index's rows (``RunIndex.frame_rows``, ``summaries``): no evidence."""
        df = pd.DataFrame([(*r[:-1], bool(r[-1])) for r in rows], columns=COLUMNS)
        return cls((), df, meta, title or default_title(meta), tuple(summaries))


def default_title(meta: Mapping[str, Any]) -> str:
    return f"Readiness — run {meta.get('run_id', '?')}"
