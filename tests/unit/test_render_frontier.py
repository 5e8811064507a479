"""The frontier view: per model x target and lane, the first release that reaches predicted and why the one before
does not; rendered as Markdown, LaTeX (compiled by the real pdflatex) and terminal text; chosen by ``--view``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.errors import BadInput
from stackmatrix.ladder.verdict import decided
from stackmatrix.reports.frontier import LANES, Entry, frontier, lane_of
from stackmatrix.reports.latex import render_frontier_latex
from stackmatrix.reports.render import parse_view, render
from stackmatrix.reports.table import Report
from stackmatrix.reports.text import render_frontier_markdown, render_frontier_terminal
from tests.unit.test_render_latex import META, NASTY, pdflatex

E4B, BIG = "google/gemma-4-E4B-it", "google/gemma-4-31B-it"
FAILS = {
    Verdict.OVERRIDE: Outcome("resolve", Status.FAIL, Reason.RESOLVE_CONFLICT, "declares transformers<5"),
    Verdict.BLOCKED: Outcome("model-type", Status.FAIL, Reason.MODEL_TYPE_UNKNOWN, "no gemma4"),
    Verdict.NO_FIT: Outcome("fit", Status.FAIL, Reason.DOES_NOT_FIT, "needs 60.2 GiB of 21.6"),
    Verdict.NOT_RUN: Outcome("backend-imports", Status.SKIP, Reason.UNKNOWN, "image not read"),
}


def cell(
    verdict: Verdict,
    *,
    vllm: str = "",
    tf: str = "",
    triton: str | None = None,
    kind: str = "vllm",
    model: str = E4B,
    target: str = "l4x1",
    stock: bool = False,
    detail: str = "",
) -> CellResult:
    """A stored cell of one stack: its id as the stack's own naming makes it, its pins declared."""
    if kind == "vllm":
        stack = f"vllm-{vllm}-tf{tf}"
    else:
        prefix = "triton" if kind == "triton-vllm" else "tpy"
        stack = f"{prefix}-{triton}" + ("" if stock else (f"-vllm{vllm}" if vllm else "") + f"-tf{tf}")
    deciding = FAILS.get(verdict, Outcome("arch", Status.PASS))
    if detail:
        deciding = Outcome(deciding.probe, deciding.status, deciding.reason, detail)
    declared = {"kind": kind, "model": model, "target": target, "vllm": vllm, "transformers": tf, "triton": triton}
    reason = deciding.reason if verdict in FAILS else None
    cell_id = f"{stack}__{model.rsplit('/', 1)[-1].lower()}__{target}"
    return decided(CellResult(cell_id, verdict, reason, None, (deciding,), "fp", declared))


def the(report: Report) -> dict[tuple[str, str], dict[str, Entry | None]]:
    f = frontier(report.columns)
    return {(m, t): {lane.name: e for lane, e in zip(f.lanes, entries, strict=True)} for m, t, entries in f.rows}


def test_the_first_release_that_reaches_and_why_the_release_before_does_not() -> None:
    report = Report.of(
        [
            cell(Verdict.BLOCKED, vllm="0.18.1", tf="4.57.6"),
            cell(Verdict.BLOCKED, vllm="0.18.1", tf="5.4.0", detail="no gemma4 in 5.4.0"),  # the newest of equals
            cell(Verdict.BLOCKED, vllm="0.19.0", tf="4.57.6"),  # the release reaches with its newer transformers
            cell(Verdict.PREDICTED, vllm="0.19.0", tf="5.5.0"),
            cell(Verdict.PREDICTED, vllm="0.19.0", tf="5.10.0"),
            cell(Verdict.RUNS_TINY, vllm="0.20.0", tf="5.5.0"),
            cell(Verdict.BLOCKED, vllm="0.10.0", tf="4.57.6", target="h100x1"),
            cell(Verdict.OVERRIDE, vllm="0.10.0", tf="5.5.0", target="h100x1"),  # the strongest of its release
            cell(Verdict.SERVES, vllm="0.11.0", tf="5.5.0", target="h100x1"),
        ],
        META,
    )
    f = frontier(report.columns)
    entries = the(report)
    assert [lane.name for lane in f.lanes] == ["vllm"]  # only the lanes the run holds
    first = entries[(E4B, "l4x1")]["vllm"]
    assert first is not None and (first.verdict, first.label) == (Verdict.PREDICTED, "0.19.0, tf 5.5.0")
    assert first.note is not None
    assert f.notes[first.note - 1] == (
        "the release before: vllm-0.18.1-tf5.4.0 blocked: model-type-unknown: no gemma4 in 5.4.0"
    )
    h100 = entries[(E4B, "h100x1")]["vllm"]
    assert h100 is not None and (h100.verdict, h100.label) == (Verdict.SERVES, "0.11.0, tf 5.5.0")
    assert h100.note is not None and f.notes[h100.note - 1].startswith(
        "the release before: vllm-0.10.0-tf5.5.0 override"
    )


def test_the_oldest_release_reaching_has_no_note_and_equal_notes_share_a_number() -> None:
    report = Report.of(
        [cell(Verdict.PREDICTED, vllm="0.19.0", tf="5.5.0", target=t) for t in ("l4x1", "l4x2")]
        + [cell(Verdict.BLOCKED, vllm="0.18.1", tf="4.57.6", model=BIG, target=t) for t in ("l4x1", "l4x2")]
        + [cell(Verdict.PREDICTED, vllm="0.19.0", tf="5.5.0", model=BIG, target=t) for t in ("l4x1", "l4x2")],
        META,
    )
    entries = the(report)
    assert entries[(E4B, "l4x1")]["vllm"] == Entry(Verdict.PREDICTED, "0.19.0, tf 5.5.0", None)
    assert (
        entries[(BIG, "l4x1")]["vllm"]
        == entries[(BIG, "l4x2")]["vllm"]
        == Entry(Verdict.PREDICTED, "0.19.0, tf 5.5.0", 1)
    )
    assert len(frontier(report.columns).notes) == 1


def test_none_reaches_names_the_newest_release_and_the_newest_decided_one() -> None:
    stock = {"kind": "triton-vllm", "stock": True}
    report = Report.of(
        [
            cell(Verdict.BLOCKED, triton="26.01", vllm="0.13.0", tf="4.57.1", **stock),  # type: ignore[arg-type]
            cell(Verdict.BLOCKED, triton="26.03", vllm="0.17.1", tf="4.57.5", **stock),  # type: ignore[arg-type]
            cell(Verdict.NOT_RUN, triton="26.11", **stock),  # type: ignore[arg-type]
            cell(Verdict.NO_FIT, vllm="0.34.0", tf="5.24.0"),
        ],
        META,
    )
    f = frontier(report.columns)
    row = the(report)[(E4B, "l4x1")]
    assert [lane.title for lane in f.lanes] == ["vLLM", "Triton stock"]
    lane = row["triton-vllm-stock"]
    assert lane is not None and (lane.verdict, lane.label) == (None, "none") and lane.note is not None
    assert f.notes[lane.note - 1] == (
        "none reaches predicted; the newest release: triton-26.11 not-run: unknown: image not read; "
        "the newest decided: triton-26.03 (vLLM 0.17.1, transformers 4.57.5) blocked: model-type-unknown: no gemma4"
    )
    fit = row["vllm"]
    assert fit is not None and fit.note is not None
    assert f.notes[fit.note - 1].endswith("vllm-0.34.0-tf5.24.0 no-fit: does-not-fit: needs 60.2 GiB of 21.6")


def test_lanes_tell_stock_from_replaced_and_a_lane_without_cells_is_blank() -> None:
    assert lane_of("triton-vllm", "triton-26.03", "26.03") == "triton-vllm-stock"
    assert lane_of("triton-vllm", "triton-26.03-vllm0.19.0-tf5.5.0", "26.03") == "triton-vllm"
    assert lane_of("triton-python", "tpy-26.03-tf5.5.0", "26.03") == "triton-python"
    assert lane_of("vllm", "vllm-0.19.0-tf5.5.0", None) == "vllm"
    assert [lane.title for lane in LANES] == [
        "vLLM",
        "Triton stock",
        "Triton, vLLM/tf replaced",
        "Triton Python backend",
    ]
    assert lane_of("a-kind-of-tomorrow", "x", None) is None
    report = Report.of(
        [
            cell(Verdict.PREDICTED, kind="triton-vllm", triton="26.04", vllm="0.19.0", tf="5.5.0"),
            cell(Verdict.PREDICTED, kind="triton-python", triton="26.04", tf="5.5.0"),
            cell(Verdict.PREDICTED, vllm="0.19.0", tf="5.5.0", model=BIG),
        ],
        META,
    )
    f = frontier(report.columns)
    assert [lane.name for lane in f.lanes] == ["vllm", "triton-vllm", "triton-python"]
    row = the(report)[(E4B, "l4x1")]
    assert row["vllm"] is None  # this model's row has no vLLM stack: blank, not "none"
    assert row["triton-vllm"] == Entry(Verdict.PREDICTED, "26.04 + vLLM 0.19.0, tf 5.5.0", None)
    assert row["triton-python"] == Entry(Verdict.PREDICTED, "26.04 + tf 5.5.0", None)


def hostile() -> Report:
    """Notes carrying every LaTeX special and Markdown's table syntax, control characters for a terminal."""
    return Report.of(
        [
            cell(Verdict.BLOCKED, vllm="0.18.1", tf="4.57.6", detail=NASTY + " | [x](javascript:y) \x1b[31m"),
            cell(Verdict.PREDICTED, vllm="0.19.0", tf="5.5.0"),
            cell(Verdict.NO_FIT, vllm="0.19.0", tf="5.5.0", model=BIG, detail=NASTY),
        ],
        META,
    )


def test_markdown_is_one_table_with_footnotes_and_inert_notes() -> None:
    md = render_frontier_markdown(hostile())
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert [c.strip() for c in table[0].split("|")[1:-1]] == ["model", "target", "vLLM"]
    assert len(table) == 2 + 2  # header, rule, a row per model x target (rows sorted: 31B-it first)
    assert "| none[^1] " in md and "| ◇ 0.19.0, tf 5.5.0[^2] " in md
    note = next(line for line in md.splitlines() if line.startswith("[^2]: the release before: "))
    assert "\\|" in note and "\\[x\\](" in note and "[x](" not in note and "\x1b" not in note


def test_latex_compiles_to_one_page_with_every_special(tmp_path: Path) -> None:
    tex = render_frontier_latex(hostile())
    log = pdflatex(tex, tmp_path)
    assert "(1 page," in log.replace("\n", "")
    assert "$\\lozenge$ 0.19.0, tf 5.5.0$^{2}$" in tex and "[U+001B]" in tex


def test_terminal_shows_control_characters_escaped() -> None:
    text = render_frontier_terminal(hostile())
    assert "\x1b" not in text and "\\x1b[31m" in text and "[2] the release before: " in text


def test_the_view_picks_the_renderer_and_each_format_has_its_default() -> None:
    report = hostile()
    assert render(report, "md") == render_frontier_markdown(report).encode()  # md: the frontier by default
    grid = Report(report.results, None, report.meta, report.title, report.summaries, report.rows, view="grid")
    assert b"| model " in render(grid, "md") and render(grid, "md") != render(report, "md")
    as_frontier = Report(report.results, None, report.meta, report.title, report.summaries, report.rows, "frontier")
    assert render(as_frontier, "txt") == render_frontier_terminal(report).encode()
    assert render(report, "txt") != render(as_frontier, "txt")  # txt: the grid by default
    assert render(as_frontier, "csv") == render(report, "csv")  # a format without the view renders its own
    assert parse_view("frontier", ["csv", "md"]) == "frontier" and parse_view(None, ["csv"]) is None
    with pytest.raises(BadInput, match=r"--view: key 'view': got 'frontier'; expected one of grid .*md, tex"):
        parse_view("frontier", ["csv", "json"])


def test_what_a_passing_rung_passed_through_is_in_every_view() -> None:
    """A fallback kernel or a driver's compatibility is a note on a verdict that stands: the grid's footnote, the
    frontier's note, the CSV's caveat column."""
    from stackmatrix.reports.render import render

    caveat = "driver 535.104.05 runs CUDA 12.8 through minor-version compatibility (570.26 for every feature)"
    through = Outcome("driver", Status.PASS, None, "runs", {"caveat": caveat})
    plain = cell(Verdict.PREDICTED, vllm="0.19.1", tf="5.5.0")
    found = decided(replace(plain, outcomes=(*plain.outcomes, through)))
    report = Report.of([cell(Verdict.BLOCKED, vllm="0.18.1", tf="5.5.0"), found], META)
    assert report.columns["caveat"] == ["", caveat]
    assert caveat in frontier(report.columns).notes[0]
    shown = {f: render(report, f).decode() for f in ("md", "csv", "html", "json", "junit", "tex")}
    shown["grid"] = render(replace(report, view="grid"), "md").decode()
    shown["txt"] = render(replace(report, view="frontier"), "txt").decode()  # its grid is symbols only
    assert all(caveat in text for text in shown.values()), [f for f, text in shown.items() if caveat not in text]
