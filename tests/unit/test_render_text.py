"""Markdown and terminal renderings: footnoted reasons, and the runtime's observations beside the predictions."""

from __future__ import annotations

import re

import pytest

from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.ladder.verdict import decided
from stackmatrix.reports.table import Report, observed_rows
from stackmatrix.reports.text import render_markdown, render_terminal


def cell(stack: str, verdict: Verdict, outcomes: list[Outcome]) -> CellResult:
    failing = [o for o in outcomes if o.status is not Status.PASS and o.reason]
    declared = {"kind": "vllm", "model": "google/gemma-4-E4B-it", "target": "l4x1"}
    reason = failing[0].reason if failing else None
    return decided(CellResult(f"{stack}__gemma-4-e4b-it__l4x1", verdict, reason, None, tuple(outcomes), "fp", declared))


def test_markdown_footnotes_and_declared_vs_observed() -> None:
    static = [Outcome("resolve", Status.PASS), Outcome("arch", Status.PASS)]
    tiny = cell("vllm-0.32.0-tf5.19.0", Verdict.RUNS_TINY, [*static, Outcome("serve", Status.PASS)])
    broke = cell("vllm-0.31.0-tf5.19.0", Verdict.BLOCKED, [*static, Outcome("load", Status.FAIL, Reason.OOM, "killed")])
    predicted = cell("vllm-0.30.0-tf5.19.0", Verdict.PREDICTED, static)
    rep = Report.of([tiny, broke, predicted], {"run_id": "r1"})
    assert [(o.cell.split("__")[0], o.observed, o.contradiction) for o in observed_rows(rep.df)] == [
        ("vllm-0.31.0-tf5.19.0", "blocked", True),  # predicted by the static tier, blocked when run: a contradiction
        ("vllm-0.32.0-tf5.19.0", "runs-tiny", False),
    ]
    md = render_markdown(rep)
    assert "# Readiness — run r1" in md and "✖[^1]" in md and "[^1]: oom: killed" in md
    assert "## Declared vs observed" in md and re.search(r"\|\s*oom: killed\s*\|\s*⚠\s*\|", md)
    assert "◐" in render_terminal(rep) and "◇ predicted: 1" in render_terminal(rep)


def test_every_text_format_redacts_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from stackmatrix.reports.render import FORMATS, render

    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    leak = Outcome(
        "arch",
        Status.FAIL,
        Reason.ARCH_UNSUPPORTED,
        "read https://user:pa55word@mirror.example/simple with hf_abcdefghijklmnop",
        {"url": "https://user:pa55word@mirror.example/simple", "token": "hf_abcdefghijklmnop"},
    )
    rep = Report.of([cell("vllm-0.30.0-tf5.19.0", Verdict.BLOCKED, [leak])], {"run_id": "r1"})
    for name in FORMATS:
        if name == "png":
            continue
        out = render(rep, name).decode()
        assert "pa55word" not in out and "hf_abcdefghijklmnop" not in out, name
