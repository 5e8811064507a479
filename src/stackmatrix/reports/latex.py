"""LaTeX rendering of the readiness table for whitepapers: booktabs rules, footnoted reasons, a legend.

The output compiles standalone with ``pdflatex`` and only what Debian's texlive-latex-base/-recommended ship;
everything between ``\\begin{document}`` and ``\\end{document}`` can be pasted into a paper that loads the same
packages. A real run's ~120 stack columns cannot be read at one page's width, so they are split into
``longtable``s of at most ``MAX_STACKS`` columns, each with the notes its cells cite, numbered report-wide: every
table reads on its own.
"""

from __future__ import annotations

import math
import re
import unicodedata

import pandas as pd

from stackmatrix.domain import Verdict
from stackmatrix.reports.frontier import INTRO, Entry, flaky_lines, frontier
from stackmatrix.reports.legend import MEANING
from stackmatrix.reports.table import Report, footnotes, observed_rows, pivot, short_model, stack_order

# pdflatex (OT1, the default encoding) cannot set the Unicode symbols of SYMBOL; these are amssymb/LaTeX math.
TEX_SYMBOL = {
    Verdict.SERVES: r"\bullet",
    Verdict.RUNS_TINY: r"\odot",
    Verdict.PREDICTED: r"\lozenge",
    Verdict.OVERRIDE: r"\dagger",
    Verdict.BLOCKED: r"\times",
    Verdict.NO_FIT: r"\triangledown",
    Verdict.NOT_RUN: r"\cdot",
}
# What fits a portrait A4 page (1.5 cm margins, \scriptsize) beside the longest model name, with two-digit notes.
MAX_STACKS = 18

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"$\$$",  # text \$ comes from TS1, which pdflatex would set as a METAFONT bitmap font
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # OT1 has no < > | glyphs: typed raw they print as ¡ ¿ —.
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    # Non-ASCII a probe detail may carry (section sign, dashes, curly quotes, ellipsis, math signs, no-break
    # space); anything else is reduced to ASCII or spelled out below rather than failing the build.
    "\u00a7": r"$\S$",  # as for \$: text \S comes from TS1
    "\u2014": "---",
    "\u2013": "--",
    "\u2018": "`",
    "\u2019": "'",
    "\u201c": "``",
    "\u201d": "''",
    "\u2026": r"\ldots{}",
    "\u00d7": r"$\times$",
    "\u2265": r"$\geq$",
    "\u2264": r"$\leq$",
    "\u2192": r"$\rightarrow$",
    "\u00b1": r"$\pm$",
    "\u00b5": r"$\mu$",
    "\u00a0": "~",
}
# "--" would become an en dash; ``-{}`` keeps command-line flags such as --max-model-len as typed.
_TOKEN = re.compile(r"-(?=-)|[^\x20-\x7e]|[\\&%$#_{}~^<>|]")


def _replace(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch == "-":
        return "-{}"
    if ch in _SPECIAL:
        return _SPECIAL[ch]
    if ch in "\t\n\r":
        return " "
    ascii_ = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    # an ASCII control character normalizes to itself: named, never escaped again (that would recurse forever)
    return tex_escape(ascii_) if ascii_ and ascii_ != ch else f"[U+{ord(ch):04X}]"


def tex_escape(text: str) -> str:
    """Data as LaTeX text: specials escaped, non-ASCII mapped to something pdflatex can always set."""
    return _TOKEN.sub(_replace, text)


def _mark(verdict: str, number: int | None) -> str:
    sup = f"^{{{number}}}" if number else ""
    return f"${TEX_SYMBOL[Verdict(verdict)]}{sup}$"


def _chunks(stacks: list[str]) -> list[list[str]]:
    """Balanced chunks of at most MAX_STACKS (118 -> 6 x 17 + 16, not 6 x 18 + 10)."""
    if not stacks:
        return []
    n = math.ceil(len(stacks) / MAX_STACKS)
    size = math.ceil(len(stacks) / n)
    return [stacks[i : i + size] for i in range(0, len(stacks), size)]


def _legend() -> list[str]:
    lines = [
        r"\begin{center}\small",
        r"\begin{tabular}{@{}cll@{}}",
        r"\toprule",
        r"& verdict & meaning \\",
        r"\midrule",
    ]
    lines += [f"${TEX_SYMBOL[v]}$ & {tex_escape(str(v))} & {tex_escape(MEANING[v])} \\\\" for v in Verdict]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{center}"]
    return lines


def _table(grid: pd.DataFrame, stacks: list[str], caption: str, label: str) -> list[str]:
    head = [
        r"\toprule",
        "model & target & "
        + " & ".join(rf"\multicolumn{{1}}{{c}}{{\rotatebox{{90}}{{{tex_escape(s)}}}}}" for s in stacks)
        + r" \\",
        r"\midrule",
    ]
    lines = [
        r"\begin{scriptsize}",
        r"\setlength{\tabcolsep}{1.5pt}\setlength{\LTcapwidth}{\textwidth}",
        rf"\begin{{longtable}}{{@{{}}ll{'c' * len(stacks)}@{{}}}}",
        rf"\caption{{{caption}}}\label{{{label}}} \\",
        *head,
        r"\endfirsthead",
        rf"\multicolumn{{{len(stacks) + 2}}}{{@{{}}l}}{{\emph{{(continued)}}}} \\",
        *head,
        r"\endhead",
        r"\bottomrule",
        r"\endfoot",
    ]
    models = [str(m) for m in grid.index.get_level_values("model")]
    targets = [str(t) for t in grid.index.get_level_values("target")]
    lines += _rows(models, targets, grid[stacks].to_numpy().tolist(), "2pt")
    lines += [r"\end{longtable}", r"\end{scriptsize}"]
    return lines


def _rows(models: list[str], targets: list[str], cells: list[list[str]], space: str) -> list[str]:
    """A table's body rows (the cells already LaTeX): a model's name on its first row only, ``space`` between
    models."""
    lines: list[str] = []
    previous = None
    for model, target, row in zip(models, targets, cells, strict=True):
        if previous is not None and model != previous:
            lines.append(rf"\addlinespace[{space}]")
        shown = tex_escape(model) if model != previous else ""
        previous = model
        lines.append(f"{shown} & {tex_escape(target)} & " + " & ".join(row) + r" \\")
    return lines


def _notes(numbers: list[int], text_of: dict[int, str]) -> list[str]:
    if not numbers:
        return []
    lines = [r"\begin{scriptsize}\raggedright"]
    lines += [rf"\noindent\hangindent=1.5em\textsuperscript{{{n}}}\,{tex_escape(text_of[n])}\par" for n in numbers]
    lines += [r"\end{scriptsize}"]
    return lines


def _declared_vs_observed(df: pd.DataFrame) -> list[str]:
    observed = observed_rows(df)
    if not observed:
        return []
    lines = [
        r"\section*{Declared vs observed}",
        "Cells the runtime tier ran: the static prediction beside what was observed "
        r"($\triangle$ = the observation contradicts the prediction).",
        r"\begin{scriptsize}",
        r"\begin{longtable}{@{}p{0.34\textwidth}llp{0.38\textwidth}c@{}}",
        r"\toprule",
        r"cell & declared & observed & reason & \\",
        r"\midrule",
        r"\endhead",
        r"\bottomrule",
        r"\endfoot",
    ]
    for o in observed:
        because = tex_escape(o.because)
        flag = r"$\triangle$" if o.contradiction else ""
        # A cell id has no spaces: let it break after its "__" separators to stay in its column.
        cell_id = tex_escape(o.cell).replace(r"\_\_", r"\_\_\allowbreak{}")
        lines.append(f"{cell_id} & {tex_escape(o.declared)} & {tex_escape(o.observed)} & {because} & {flag} \\\\")
    lines += [r"\end{longtable}", r"\end{scriptsize}"]
    return lines


def _preamble(report: Report, packages: str) -> list[str]:
    return [
        "% Generated by stackmatrix from a stored run; compile with pdflatex.",
        r"\documentclass[10pt]{article}",
        r"\usepackage[a4paper,margin=1.5cm]{geometry}",
        rf"\usepackage{{{packages}}}",
        r"\begin{document}",
        rf"\section*{{{tex_escape(report.title)}}}",
    ]


def _frontier_entry(entry: Entry | None) -> str:
    if entry is None:
        return ""
    mark = f"${TEX_SYMBOL[entry.verdict]}$ " if entry.verdict else ""
    return mark + tex_escape(entry.label) + (f"$^{{{entry.note}}}$" if entry.note else "")


def render_frontier_latex(report: Report) -> str:
    """The frontier (frontier.py) on one page: a booktabs table, the symbols' key in a line, the notes in two
    columns below (multicol, in texlive-latex-base)."""
    f = frontier(report.columns)
    lines = _preamble(report, "booktabs,amssymb,multicol")
    lines.append(r"\noindent{\small " + tex_escape(INTRO) + r"\par}\smallskip")
    key = "; ".join(f"${TEX_SYMBOL[v]}$ {tex_escape(str(v))}" for v in Verdict)
    lines.append(r"\noindent{\scriptsize " + key + r".\par}\medskip")
    if f.empty:
        return "\n".join([*lines, "No cells.", r"\end{document}", ""])
    lines += [
        r"\begin{center}\scriptsize\setlength{\tabcolsep}{3pt}",
        rf"\begin{{tabular}}{{@{{}}ll{'l' * len(f.lanes)}@{{}}}}",
        r"\toprule",
        "model & target & " + " & ".join(tex_escape(lane.title) for lane in f.lanes) + r" \\",
        r"\midrule",
    ]
    models, targets = [short_model(m) for m, _, _ in f.rows], [t for _, t, _ in f.rows]
    lines += _rows(models, targets, [list(map(_frontier_entry, entries)) for _, _, entries in f.rows], "1pt")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{center}"]
    notes = [rf"\textsuperscript{{{n}}}\,{tex_escape(t)}" for n, t in enumerate(f.notes, 1)]
    notes += [tex_escape(line) for line in flaky_lines(f)]
    if notes:
        lines += [r"\begin{multicols}{2}\tiny\raggedright"]
        lines += [rf"\noindent\hangindent=1.2em {note}\par" for note in notes]
        lines += [r"\end{multicols}"]
    lines += [r"\end{document}", ""]
    return "\n".join(lines)


def render_latex(report: Report) -> str:
    df = report.df
    lines = _preamble(report, "booktabs,longtable,amssymb,graphicx")
    facts = [
        f"{k.replace('_', ' ')} {report.meta[k]}" for k in ("tier", "matrix_hash", "tool_version") if k in report.meta
    ]
    if facts:
        lines.append(tex_escape(", ".join(facts)) + ".")
    lines += _legend()
    if df.empty:
        lines += ["No cells.", r"\end{document}", ""]
        return "\n".join(lines)
    numbers, notes = footnotes(df)
    text_of = {n: text for text, n in notes.items()}
    grid = pivot(df, [_mark(v, n) for v, n in zip(df["verdict"], numbers, strict=True)])
    # Which notes each stack's cells cite, so every table lists exactly its own.
    cited = pd.DataFrame({"stack": df["stack"], "n": numbers}).dropna().groupby("stack")["n"].agg(set)
    stacks = stack_order(df)
    parts = _chunks(stacks)
    done = 0
    for i, chunk in enumerate(parts, 1):
        span = f"stacks {done + 1}--{done + len(chunk)} of {len(stacks)}" if len(parts) > 1 else "all stacks"
        done += len(chunk)
        caption = (
            f"{tex_escape(report.title)} ({span}). Rows: model $\\times$ target; columns: serving stacks. "
            "Superscripts refer to the notes below the table."
        )
        if i > 1:
            lines.append(r"\clearpage")
        lines += _table(grid, chunk, caption, f"tab:readiness-{i}")
        used = sorted({int(n) for s in chunk if s in cited.index for n in cited[s]})
        lines += _notes(used, text_of)
    lines += _declared_vs_observed(df)
    lines += [r"\end{document}", ""]
    return "\n".join(lines)
