"""The readiness table, from stored cell results only; what every format shares.

Rows are model x target, columns are stacks (DESIGN.md). ``predicted`` never looks like ``serves``: each verdict
has its own symbol, and the legend says which verdicts are observed and which are declared.

The pandas frame (``Report.df``) is built only when a format asks for it (HTML, LaTeX, the heatmap); the formats
of ``latest/`` read ``Report.columns`` and the pure-Python ``grid``, so a warm run never imports pandas (a third
of a second). The helpers below take either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeAlias

from stackmatrix.domain import CellResult, Verdict, triton_prefixes
from stackmatrix.reports.legend import MEANING, PLAIN, SYMBOL
from stackmatrix.store.row import COLUMNS, FIELDS, row_of

if TYPE_CHECKING:
    import pandas as pd

# The report columns the index stores as 0/1 (SQLite has no booleans): read back as bools.
_BOOLS = frozenset(n for n, f in enumerate(FIELDS[: len(COLUMNS)]) if str(f.type) == "bool")
# Column name -> its values, one per row; a ``pd.DataFrame`` reads the same way (``table["verdict"]``).
Columns: TypeAlias = Mapping[str, Sequence[Any]]
Table: TypeAlias = "pd.DataFrame | Columns"


@dataclass(frozen=True)
class ObservedRow:
    """A cell the runtime tier ran: its static prediction beside what was observed."""

    cell: str
    declared: str
    observed: str
    reason: str
    why: str
    contradiction: bool
    flaky: bool = False

    @property
    def because(self) -> str:
        text = (self.reason + (f": {self.why}" if self.why else "")) if self.reason else ""
        return f"{FLAKY}; {text}" if self.flaky and text else (FLAKY if self.flaky else text)


# How every format marks a cell whose verdict changed between attempts (the executor's retries).
FLAKY = "flaky: the verdict changed between attempts"


def observed_rows(table: Table) -> list[ObservedRow]:
    cols = ("cell", "declared_verdict", "observed_verdict", "reason", "why", "contradiction", "flaky")
    return [
        ObservedRow(*row)
        for row in zip(*(list(table[c]) for c in cols), strict=True)
        if row[2] != ""  # observed_verdict: "" for a cell the runtime tier did not run
    ]


def legend() -> list[str]:
    return [f"{SYMBOL[v]} {v}: {MEANING[v]}" for v in Verdict]


def stack_order(table: Table) -> list[str]:
    """Triton stacks first (the ones operators upgrade), then vLLM's own; by id within each."""
    first = triton_prefixes()
    return sorted(dict.fromkeys(table["stack"]), key=lambda s: (not s.startswith(first), s))


def short_model(model: str) -> str:
    """A model as a narrow column shows it: no organisation, no family prefix (``E2B-it``)."""
    return model.split("/", 1)[-1].removeprefix("gemma-4-")


def note_text(reason: str, override: str, detail: str) -> str:
    return reason + (f" ({override})" if override else "") + (f": {detail}" if detail else "")


def footnotes(table: Table) -> tuple[list[int | None], dict[str, int]]:
    """One footnote number per distinct reason text, numbered in row order; None for plain passes.
    Markdown, LaTeX and HTML number their footnotes the same way."""
    notes: dict[str, int] = {}
    numbers: list[int | None] = []
    for verdict, reason, override, detail, flaky, inferred, caveat in zip(
        table["verdict"],
        table["reason"],
        table["override"],
        table["why"],
        table["flaky"],
        table["inferred"],
        table["caveat"],
        strict=True,
    ):
        standing = "; ".join(x for x in (inferred, caveat) if x)  # notes on a verdict that stands
        if Verdict(verdict) in PLAIN and not flaky and not standing:
            numbers.append(None)
        else:
            text = note_text(reason, override, detail) if Verdict(verdict) not in PLAIN or flaky else ""
            text = (f"{FLAKY}; {text}" if text else FLAKY) if flaky else text
            text = f"{text}; {standing}" if text and standing else text or standing
            numbers.append(notes.setdefault(text, len(notes) + 1))
    return numbers, notes


def pivot(df: pd.DataFrame, values: Sequence[str]) -> pd.DataFrame:
    """Rows model x target (sorted), columns the stacks in ``stack_order``; a missing cell is ""."""
    table = df.assign(_v=list(values)).pivot_table(
        index=["model", "target"], columns="stack", values="_v", aggfunc="first"
    )
    return table.reindex(columns=stack_order(df)).fillna("")


def grid(table: Table, values: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """``pivot`` without pandas: (the stacks in ``stack_order``, one row per model x target, sorted:
    ``[model, target, value per stack]``; a missing cell is "", a cell given twice its first value)."""
    stacks = stack_order(table)
    at: dict[tuple[str, str], dict[str, str]] = {}
    for model, target, stack, value in zip(table["model"], table["target"], table["stack"], values, strict=True):
        at.setdefault((model, target), {}).setdefault(stack, value)
    return stacks, [[m, t, *(held.get(s, "") for s in stacks)] for (m, t), held in sorted(at.items())]


@dataclass(frozen=True)
class Report:
    """What every format renders: the stored results, their table, and the run's metadata (run.json).

    ``frame``: the table as a frame where the caller has one; else ``rows`` (in ``COLUMNS`` order) and ``df`` is
    built from them when a format asks."""

    results: tuple[CellResult, ...]
    frame: pd.DataFrame | None = field(compare=False)
    meta: Mapping[str, Any]
    title: str
    summaries: tuple[str, ...] = ()  # per row, the JSON report's object (tablerow.Row.summary)
    rows: tuple[tuple[Any, ...], ...] = field(default=(), compare=False)
    view: str | None = None  # --view: what the formats that have it render (None: each format's default view)

    @classmethod
    def of(cls, results: Sequence[CellResult], meta: Mapping[str, Any], title: str | None = None) -> Report:
        ordered = tuple(sorted(results, key=lambda r: r.cell_id))
        rows = [row_of(r) for r in ordered]
        table = tuple(astuple(r)[: len(COLUMNS)] for r in rows)
        return cls(ordered, None, meta, title or default_title(meta), tuple(r.summary for r in rows), table)

    @classmethod
    def of_rows(
        cls,
        rows: Sequence[Sequence[Any]],
        meta: Mapping[str, Any],
        title: str | None = None,
        summaries: Sequence[str] = (),
    ) -> Report:
        """The table only, from the index's rows (``RunIndex.frame_rows``, ``summaries``): no evidence."""
        table = tuple(tuple(bool(v) if n in _BOOLS else v for n, v in enumerate(r)) for r in rows)
        return cls((), None, meta, title or default_title(meta), tuple(summaries), table)

    @cached_property
    def df(self) -> pd.DataFrame:
        if self.frame is not None:
            return self.frame
        import pandas as pd

        return pd.DataFrame(list(self.rows), columns=COLUMNS)

    @cached_property
    def columns(self) -> dict[str, list[Any]]:
        """The table's columns as lists (a value the frame holds as missing is None)."""
        if self.frame is None:
            values = list(zip(*self.rows, strict=True)) if self.rows else [() for _ in COLUMNS]
            return {name: list(column) for name, column in zip(COLUMNS, values, strict=True)}
        frame = self.frame.astype(object).where(self.frame.notna(), None)
        return {name: frame[name].tolist() for name in COLUMNS}

    @property
    def table_rows(self) -> list[tuple[Any, ...]]:
        """One tuple per cell, in ``COLUMNS`` order."""
        if self.frame is None:
            return list(self.rows)
        return list(zip(*self.columns.values(), strict=True))

    @property
    def empty(self) -> bool:
        return not self.rows if self.frame is None else self.frame.empty


def default_title(meta: Mapping[str, Any]) -> str:
    return f"Readiness — run {meta.get('run_id', '?')}"
