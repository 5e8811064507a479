"""Every answer's formats in one registry: a ``Format`` per answer and format name, naming its renderer as
``module:function``, imported when used (a Markdown report never pays for matplotlib; building the parser never
imports an answer). Every ``--format`` reads its choices here. The renderers of one answer share a signature."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class Format:
    answer: str  # report, diff, history, check, image, advise, bisect, gate
    name: str  # what --format takes
    target: str  # "module:function" under stackmatrix
    help: str = ""
    filename: str = ""  # a report: its file (latest/, rendered/<run>)
    needs_results: bool = False  # a report: False renders from the table alone (no cell file read)
    # a report's other views than the grid (``target``): (view, "module:function"); ``view``: the one by default
    views: tuple[tuple[str, str], ...] = ()
    view: str = "grid"

    @property
    def view_names(self) -> tuple[str, ...]:
        return ("grid", *(name for name, _ in self.views))

    def load(self, view: str | None = None) -> Callable[..., Any]:
        """The renderer of ``view`` (default: the format's own default view)."""
        module, function = dict(self.views).get(view or self.view, self.target).split(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(f"stackmatrix.{module}"), function)
        return fn


# The report's views (--view): ``grid`` (every stack a column) is every report format's; the frontier (per model x
# target and kind of stack, the first release that reaches predicted) is the whitepaper's (reports/frontier.py).
FRONTIER = "frontier"
VIEWS: Final = ("grid", FRONTIER)

FORMATS: Final[tuple[Format, ...]] = (
    Format(
        "report",
        "txt",
        "reports.text:render_terminal",
        "terminal table, one symbol per target",
        "readiness.txt",
        views=((FRONTIER, "reports.text:render_frontier_terminal"),),
    ),
    Format(
        "report",
        "md",
        "reports.text:render_markdown",
        "Markdown: the frontier with footnoted reasons (--view grid: every stack)",
        "readiness.md",
        views=((FRONTIER, "reports.text:render_frontier_markdown"),),
        view=FRONTIER,
    ),
    Format("report", "csv", "reports.machine:render_csv", "one row per cell", "readiness.csv"),
    Format(
        "report", "json", "reports.machine:render_json", "one object per cell with its probe lines", "readiness.json"
    ),
    Format(
        "report",
        "html",
        "reports.html:render_html",
        "self-contained page: filters, evidence on click",
        "readiness.html",
        needs_results=True,
    ),
    Format(
        "report",
        "tex",
        "reports.latex:render_latex",
        "LaTeX: the frontier on one page (--view grid: every stack, booktabs)",
        "readiness.tex",
        views=((FRONTIER, "reports.latex:render_frontier_latex"),),
        view=FRONTIER,
    ),
    Format(
        "report",
        "junit",
        "reports.junit:render_junit",
        "JUnit XML, one testcase per cell",
        "readiness.junit.xml",
        needs_results=True,
    ),
    Format("report", "png", "reports.heatmap:render_heatmap", "heatmap of the table (matplotlib)", "readiness.png"),
    Format("diff", "text", "reports.diff:render_text", "terminal text"),
    Format("diff", "md", "reports.diff:render_markdown", "Markdown, for a chat post or an issue"),
    Format("diff", "json", "reports.diff:render_json", "JSON"),
    Format("history", "text", "reports.history:render_text", "terminal table"),
    Format("history", "md", "reports.history:render_markdown", "Markdown table"),
    Format("history", "json", "reports.history:render_json", "JSON, per cell its runs"),
    Format("check", "table", "reports.check:render_table", "one line per rung"),
    Format("check", "json", "reports.check:render_json", "the whole record, evidence included"),
    Format("image", "table", "cli.image:render_table", "what the image ships, with where it was read"),
    Format("image", "json", "cli.image:render_json", "JSON"),
    Format("advise", "md", "answers.advise:render_markdown", "Markdown"),
    Format("advise", "json", "answers.advise:render_json", "JSON"),
    Format("bisect", "md", "answers.bisect:render_markdown", "Markdown"),
    Format("bisect", "json", "answers.bisect:render_json", "JSON"),
    Format("gate", "md", "answers.gate:render_summary", "Markdown, the pull request's summary (--summary)"),
)


def of(answer: str) -> dict[str, Format]:
    """An answer's formats by name, in the registry's order (the first is the default where one is needed)."""
    return {f.name: f for f in FORMATS if f.answer == answer}


def choices(answer: str) -> list[str]:
    return list(of(answer))


def renderer(answer: str, name: str) -> Callable[..., Any]:
    return of(answer)[name].load()
