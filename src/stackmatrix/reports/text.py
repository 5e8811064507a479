"""Terminal and Markdown renderings of the readiness table (tabulate), from the table's columns: no pandas."""

from __future__ import annotations

from tabulate import tabulate

from stackmatrix.domain import Verdict
from stackmatrix.inert import md_text
from stackmatrix.reports.legend import SYMBOL
from stackmatrix.reports.table import FLAKY, Columns, Report, footnotes, grid, legend, observed_rows, stack_order


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


def short_model(model: str) -> str:
    return model.split("/", 1)[-1].removeprefix("gemma-4-")


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
