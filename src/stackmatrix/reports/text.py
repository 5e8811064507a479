"""Terminal and Markdown renderings of the readiness table (tabulate), from the table's columns: no pandas."""

from __future__ import annotations

from collections.abc import Callable

from tabulate import tabulate

from stackmatrix.domain import Verdict
from stackmatrix.inert import md_text, term_text
from stackmatrix.reports.frontier import INTRO, Entry, Frontier, flaky_lines, frontier
from stackmatrix.reports.legend import SYMBOL
from stackmatrix.reports.table import (
    FLAKY,
    Columns,
    Report,
    footnotes,
    grid,
    legend,
    observed_rows,
    short_model,
    stack_order,
)


def render_markdown(report: Report) -> str:
    cols = report.columns
    numbers, notes = footnotes(cols)
    marks = [SYMBOL[Verdict(v)] + (f"[^{n}]" if n else "") for v, n in zip(cols["verdict"], numbers, strict=True)]
    stacks, rows = grid(cols, marks)
    lines = [f"# {report.title}", "", "Legend: " + " · ".join(legend()), ""]
    # a mark is a verdict's symbol and its note, never a number: tabulate need not try each as one (3 times faster)
    marks_at = list(range(2, 2 + len(stacks)))
    lines.append(tabulate(rows, headers=["model", "target", *stacks], tablefmt="github", disable_numparse=marks_at))
    lines += ["", *(f"[^{n}]: {md_text(text)}" for text, n in notes.items())]  # a probe's text, from outside
    lines += _declared_vs_observed(cols)
    return "\n".join(lines) + "\n"


def _frontier_rows(f: Frontier, clean: Callable[[str], str], note: str) -> list[list[str]]:
    """The frontier's rows as text made inert by ``clean``; an entry is the verdict's symbol and the stack (or
    "none"), then its note's marker (``note`` formatted with its number, put on after cleaning: Markdown would
    escape it); "" where the run holds no stack of the lane."""

    def entry(e: Entry | None) -> str:
        if e is None:
            return ""
        text = clean((f"{SYMBOL[e.verdict]} " if e.verdict else "") + e.label)
        return text + (note.format(e.note) if e.note else "")

    return [[clean(short_model(m)), clean(t), *map(entry, entries)] for m, t, entries in f.rows]


def render_frontier_markdown(report: Report) -> str:
    """The frontier (frontier.py) as a Markdown table with footnotes: small enough to post (under 65,536 characters
    for the default matrix)."""
    f = frontier(report.columns)
    lines = [f"# {md_text(report.title)}", "", md_text(INTRO), "", "Legend: " + " · ".join(legend()), ""]
    if f.empty:
        return "\n".join([*lines, "No cells.", ""])
    headers = ["model", "target", *(lane.title for lane in f.lanes)]
    rows = _frontier_rows(f, md_text, "[^{}]")
    lines.append(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    lines += ["", *(f"[^{n}]: {md_text(text)}" for n, text in enumerate(f.notes, 1))]
    lines += [f"- {md_text(line)}" for line in flaky_lines(f)]
    return "\n".join(lines) + "\n"


def render_frontier_terminal(report: Report) -> str:
    f = frontier(report.columns)
    if f.empty:
        return "no cells\n"
    headers = ["model", "target", *(lane.title for lane in f.lanes)]
    body = tabulate(_frontier_rows(f, term_text, " [{}]"), headers=headers, tablefmt="simple", disable_numparse=True)
    notes = [f"[{n}] {text}" for n, text in enumerate(f.notes, 1)]
    return f"{INTRO}\n\n{body}\n\n" + "".join(term_text(line) + "\n" for line in (*notes, *flaky_lines(f)))


def _declared_vs_observed(cols: Columns) -> list[str]:
    rows = [
        [o.cell, o.declared, o.observed, md_text(o.because), "⚠" if o.contradiction else ""]
        for o in observed_rows(cols)
    ]
    if not rows:
        return []
    return [
        "",
        "## Declared vs observed",
        "",
        "Cells the runtime tier ran: the static prediction beside what was observed (⚠ = contradicts).",
        "",
        tabulate(rows, headers=["cell", "declared", "observed", "reason", ""], tablefmt="github"),
    ]


def render_terminal(report: Report) -> str:
    """Rows are stacks, columns models; each entry holds one symbol per target (in the header's order)."""
    if report.empty:
        return "no cells\n"
    cols = report.columns
    targets = list(dict.fromkeys(cols["target"]))
    models = list(dict.fromkeys(cols["model"]))
    sym = {
        (s, m, t): SYMBOL[Verdict(v)]
        for s, m, t, v in zip(cols["stack"], cols["model"], cols["target"], cols["verdict"], strict=True)
    }
    rows = [[s, *("".join(sym.get((s, m, t), " ") for t in targets) for m in models)] for s in stack_order(cols)]
    counts = verdict_counts(cols["verdict"])
    summary = "  ".join(f"{SYMBOL[v]} {v}: {counts.get(str(v), 0)}" for v in Verdict)
    head = f"each entry: one symbol per target, in order {', '.join(targets)}"
    body = tabulate(
        rows,
        headers=["stack", *map(short_model, models)],
        tablefmt="simple",
        stralign="center",
        disable_numparse=list(range(1, 1 + len(models))),  # symbols, never numbers
    )
    flaky = [c for c, f in zip(cols["cell"], cols["flaky"], strict=True) if f]
    tail = "".join(f"\n{FLAKY}: {c}" for c in flaky)
    return f"{head}\n{body}\n\n{summary}\n{tail.lstrip()}" + ("\n" if flaky else "")


def verdict_counts(verdicts: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for verdict in verdicts:
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts
