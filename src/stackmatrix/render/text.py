"""Terminal and Markdown renderings of the readiness table (tabulate)."""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from stackmatrix.domain import Verdict
from stackmatrix.legend import SYMBOL
from stackmatrix.render.table import Report, footnotes, legend, observed_rows, pivot, stack_order


def render_markdown(report: Report) -> str:
    df = report.df
    numbers, notes = footnotes(df)
    marks = [SYMBOL[Verdict(v)] + (f"[^{n}]" if n else "") for v, n in zip(df["verdict"], numbers, strict=True)]
    flat = pivot(df, marks).reset_index()
    lines = [f"# {report.title}", "", "Legend: " + " · ".join(legend()), ""]
    lines.append(tabulate(flat.values.tolist(), headers=list(flat.columns), tablefmt="github"))
    lines += ["", *(f"[^{n}]: {text}" for text, n in notes.items())]
    lines += _declared_vs_observed(df)
    return "\n".join(lines) + "\n"


def _declared_vs_observed(df: pd.DataFrame) -> list[str]:
    rows = [[o.cell, o.declared, o.observed, o.because, "⚠" if o.contradiction else ""] for o in observed_rows(df)]
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
    df = report.df
    if df.empty:
        return "no cells\n"
    targets = list(dict.fromkeys(df["target"]))
    models = list(dict.fromkeys(df["model"]))
    sym = {
        (s, m, t): SYMBOL[Verdict(v)]
        for s, m, t, v in zip(df["stack"], df["model"], df["target"], df["verdict"], strict=True)
    }
    rows = [[s, *("".join(sym.get((s, m, t), " ") for t in targets) for m in models)] for s in stack_order(df)]
    counts = df["verdict"].value_counts()
    summary = "  ".join(f"{SYMBOL[v]} {v}: {counts.get(str(v), 0)}" for v in Verdict)
    head = f"each entry: one symbol per target, in order {', '.join(targets)}"
    body = tabulate(rows, headers=["stack", *map(short_model, models)], tablefmt="simple", stralign="center")
    return f"{head}\n{body}\n\n{summary}\n"
