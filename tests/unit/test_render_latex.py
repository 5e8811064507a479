"""The LaTeX report: it compiles with the real pdflatex, escapes every special, and footnotes every reason."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.ladder.verdict import decided
from stackmatrix.reports.latex import MAX_STACKS, TEX_SYMBOL, _chunks, render_latex, tex_escape
from stackmatrix.reports.table import Report, footnotes, stack_order

META = {"run_id": "20260101T000000Z-abcdef", "tool_version": "0.1.0", "matrix_hash": "4e73", "tier": "static"}
NASTY = "vllm 0.9 declares transformers<5,>=4.56; 100% of a_b {c} ~d ^e $f #g &h \\i |j --flag \u2018q\u2019 § → 🙂"


def cell(
    stack: str, model: str, target: str, verdict: Verdict, detail: str = "", override: str | None = None
) -> CellResult:
    """A stored cell result with the one outcome that decides its verdict."""
    deciding = {
        Verdict.SERVES: Outcome("serve", Status.PASS),
        Verdict.RUNS_TINY: Outcome("serve", Status.PASS),
        Verdict.PREDICTED: Outcome("arch", Status.PASS),
        Verdict.OVERRIDE: Outcome("resolve", Status.FAIL, Reason.RESOLVE_CONFLICT, detail, override=override),
        Verdict.BLOCKED: Outcome("arch", Status.FAIL, Reason.ARCH_UNSUPPORTED, detail),
        Verdict.NO_FIT: Outcome("fit", Status.FAIL, Reason.DOES_NOT_FIT, detail),
        Verdict.NOT_RUN: Outcome("backend-imports", Status.SKIP, Reason.UNKNOWN, detail),
    }[verdict]
    reason = deciding.reason if verdict not in (Verdict.SERVES, Verdict.RUNS_TINY, Verdict.PREDICTED) else None
    return decided(
        CellResult(
            f"{stack}__{model.rsplit('/', 1)[-1].lower()}__{target}",
            verdict,
            reason,
            override if verdict is Verdict.OVERRIDE else None,
            (Outcome("resolve", Status.PASS), deciding) if deciding.probe != "resolve" else (deciding,),
            "fp",
            {"kind": "vllm", "model": model, "target": target},
        )
    )


def small_report() -> Report:
    return Report.of(
        [
            cell("triton-26.03", "google/gemma-4-E4B-it", "l4x1", Verdict.BLOCKED, NASTY),
            cell("triton-26.03", "google/gemma-4-E4B-it", "h100x1", Verdict.NOT_RUN, "backend source unknown"),
            cell("triton-26.03", "google/gemma-4-31B-it", "l4x1", Verdict.NO_FIT, "needs 60.2 GiB of 21.6"),
            cell("vllm-0.19.0-tf5.5.0", "google/gemma-4-E4B-it", "l4x1", Verdict.SERVES),
            cell("vllm-0.19.0-tf5.5.0", "google/gemma-4-E4B-it", "h100x1", Verdict.RUNS_TINY),
            cell("vllm-0.19.0-tf5.5.0", "google/gemma-4-31B-it", "l4x1", Verdict.PREDICTED),
            cell(
                "vllm-0.19.0-tf5.24.0",
                "google/gemma-4-E4B-it",
                "l4x1",
                Verdict.OVERRIDE,
                "vllm declares transformers<5",
                "transformers==5.24.0",
            ),
            # google/gemma-4-31B-it on h100x1 is held by no stack: a missing cell stays blank.
        ],
        META,
    )


def wide_report() -> Report:
    """More stacks than one table takes, long ids, the longest model name and two-digit footnotes."""
    stacks = [f"triton-26.{i:02d}-vllm0.10.1.1-tf4.56.2" for i in range(2 * MAX_STACKS + 3)]
    models = ["google/gemma-4-26B-A4B-it-qat-q4_0-unquantized", "RedHatAI/gemma-4-26B-A4B-it-FP8-Dynamic"]
    results = [
        cell(s, m, t, Verdict.BLOCKED, f"transformers 4.{i} does not register model_type 'gemma4'")
        for i, s in enumerate(stacks)
        for m in models
        for t in ("h100x1", "l4x1", "l4x2")
    ]
    return Report.of(results, META)


def pdflatex(tex: str, workdir: Path) -> str:
    """Compile as CI does; returns the log. Fails (never skips) without pdflatex: CI installs it."""
    exe = shutil.which("pdflatex")
    assert exe, "pdflatex not found: install texlive-latex-base and texlive-latex-recommended (see .ci/run)"
    (workdir / "report.tex").write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        [exe, "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (workdir / "report.pdf").stat().st_size > 1000
    return (workdir / "report.log").read_text(errors="replace")


@pytest.mark.latex
def test_compiles_with_pdflatex(tmp_path: Path) -> None:
    log = pdflatex(render_latex(small_report()), tmp_path)
    # No bitmap (METAFONT) fonts: every glyph comes from the Type 1 fonts texlive-base ships.
    assert "/pk/" not in log.replace("\n", "")


@pytest.mark.latex
def test_wide_report_splits_into_tables_that_fit_the_page(tmp_path: Path) -> None:
    report = wide_report()
    tex = render_latex(report)
    stacks = stack_order(report.df)
    tables = tex.split(r"\begin{longtable}")[1:]
    assert len(tables) == 3
    heads = [re.findall(r"\\rotatebox\{90\}\{([^}]*)\}", t.split(r"\endfirsthead")[0]) for t in tables]
    assert [s for head in heads for s in head] == [tex_escape(s) for s in stacks]
    assert all(len(head) <= MAX_STACKS for head in heads)
    log = pdflatex(tex, tmp_path)
    assert not re.search(r"Overfull \\hbox \([\d.]+pt too wide\) in alignment", log)


def test_chunks_are_balanced() -> None:
    assert [len(c) for c in _chunks([str(i) for i in range(118)])] == [17] * 6 + [16]
    assert [len(c) for c in _chunks(["a", "b"])] == [2]
    assert _chunks([]) == []


def test_escapes_every_latex_special() -> None:
    assert tex_escape(r"\ & % $ # _ { } ~ ^") == (
        r"\textbackslash{} \& \% $\$$ \# \_ \{ \} \textasciitilde{} \textasciicircum{}"
    )
    assert tex_escape("a<b>c|d") == r"a\textless{}b\textgreater{}c\textbar{}d"
    assert tex_escape("--max-model-len") == "-{}-max-model-len"
    assert tex_escape("---") == "-{}-{}-"
    assert tex_escape("§ — \u2019 → ≥ é 🙂") == r"$\S$ --- ' $\rightarrow$ $\geq$ e [U+1F642]"
    assert tex_escape("tab\tnewline\n") == "tab newline "
    assert tex_escape("plain text 1.0") == "plain text 1.0"


def test_no_raw_data_specials_or_non_ascii_reach_the_document() -> None:
    tex = render_latex(small_report())
    assert tex.isascii()
    assert "a_b" not in tex and r"a\_b" in tex
    assert "100%" not in tex and r"100\%" in tex


def test_footnotes_number_reasons_and_list_their_text_under_the_table() -> None:
    report = small_report()
    tex = render_latex(report)
    numbers, notes = footnotes(report.df)
    assert len(notes) == 4  # blocked, not-run, no-fit, override: plain passes carry none
    for text, n in notes.items():
        assert rf"\textsuperscript{{{n}}}\,{tex_escape(text)}\par" in tex
    # Each cell's mark: the verdict's math symbol and, where it has one, its footnote number.
    for verdict, number in zip(report.df["verdict"], numbers, strict=True):
        symbol = TEX_SYMBOL[Verdict(verdict)]
        assert (f"${symbol}^{{{number}}}$" if number else f"${symbol}$") in tex
    assert "(transformers==5.24.0)" in tex  # an override note names its override


def test_legend_lists_every_verdict_and_table_uses_booktabs() -> None:
    tex = render_latex(small_report())
    for v in Verdict:
        assert f"${TEX_SYMBOL[v]}$ & {v} & " in tex
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in tex
    assert r"\section*{Declared vs observed}" in tex  # serves and runs-tiny cells were observed


@pytest.mark.latex
def test_output_is_deterministic_and_empty_report_compiles(tmp_path: Path) -> None:
    assert render_latex(small_report()) == render_latex(small_report())
    empty = render_latex(Report.of([], META))
    assert "No cells." in empty
    pdflatex(empty, tmp_path)
