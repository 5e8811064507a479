"""Text from an index, a wheel or an image placed in Markdown stays one inert line."""

from __future__ import annotations

from stackmatrix.inert import md_text


def test_raw_html_line_breaks_code_and_links_are_made_inert() -> None:
    hostile = "x\n\n## heading <img src=http://evil/p.png> `code` [a](http://evil) | cell\r\x1b[31m\u2028\ud800 & \\"
    out = md_text(hostile)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out and "\u2028" not in out
    assert "<img" not in out and "&lt;img src=http://evil/p.png&gt;" in out
    assert "\\`code\\`" in out and "\\[a\\](http://evil)" in out and "\\| cell" in out and "&amp;" in out
    assert out.encode("utf-8")  # no lone surrogate left to break a UTF-8 file
    assert md_text("transformers 5.19.0 does not register model_type 'gemma4'") == (
        "transformers 5.19.0 does not register model_type 'gemma4'"
    )


def test_a_readiness_footnote_keeps_a_hostile_detail_inert() -> None:
    from stackmatrix.domain import CellResult, Outcome, Reason, Status
    from stackmatrix.ladder.verdict import decided, derive
    from stackmatrix.reports.table import Report
    from stackmatrix.reports.text import render_markdown

    detail = "no module <img src=x onerror=alert(1)>\n\n## owned"
    outcome = Outcome("arch", Status.FAIL, Reason.ARCH_UNSUPPORTED, detail)
    declared = {"kind": "vllm", "model": "google/gemma-4-E4B-it", "target": "l4x1"}
    cell_id = "vllm-0.32.0-tf5.19.0__gemma-4-e4b-it__l4x1"
    cell = decided(CellResult(cell_id, *derive((outcome,)), (outcome,), "f", declared))
    md = render_markdown(Report.of([cell], {"run_id": "r"}))
    assert "<img" not in md and "\n## owned" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md


def test_a_terminal_gets_no_escape_sequence_but_keeps_its_lines() -> None:
    from stackmatrix.inert import term_text

    assert term_text("vllm \x1b]0;pwned\x07 0.19.0\x1b[2J\r\nnext\tline\ud800") == (
        "vllm \\x1b]0;pwned\\x07 0.19.0\\x1b[2J\\x0d\nnext\tline?"
    )
