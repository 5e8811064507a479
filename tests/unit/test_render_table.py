"""The formats a run writes into ``latest/`` (terminal, Markdown, CSV, JSON) render from the table's rows, without
pandas, byte for byte what the pandas frame rendered (the reference below is the former code), whichever way the
report was made: from results, from the index's rows, or around a frame."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace

import pandas as pd
from tabulate import tabulate

from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict, triton_prefixes
from stackmatrix.inert import md_text
from stackmatrix.ladder.verdict import decided
from stackmatrix.reports.legend import PLAIN, SYMBOL
from stackmatrix.reports.render import render
from stackmatrix.reports.table import (
    Report,
    footnotes,
    grid,
    legend,
    note_text,
    observed_rows,
    pivot,
    short_model,
    stack_order,
)
from stackmatrix.store.row import table_row

META = {"run_id": "20260101T000000Z-abcdef", "tier": "static"}
WHYS = ["", "plain", 'quoted "x", with a comma', "two\nlines", "ünïcode → 🙂", "a,b;c|d", "  padded  "]
STACKS = ["vllm-0.19.0-tf5.5.0", "vllm-0.20.1-tf5.6.0", "triton-vllm-26.03", "triton-vllm-25.10-vllm0.11.0"]
MODELS = ["google/gemma-4-E4B-it", "google/gemma-4-31B-it", "org/gemma-4-E2B-it"]
TARGETS = ["l4x1", "h100x1", "l4x2"]


def result(rng: random.Random, stack: str, model: str, target: str) -> CellResult:
    verdict = rng.choice(list(Verdict))
    why = rng.choice(WHYS)
    deciding = {
        Verdict.SERVES: Outcome("serve", Status.PASS),
        Verdict.RUNS_TINY: Outcome("serve", Status.PASS),
        Verdict.PREDICTED: Outcome("arch", Status.PASS),
        Verdict.OVERRIDE: Outcome("resolve", Status.FAIL, Reason.RESOLVE_CONFLICT, why, override="transformers==5"),
        Verdict.BLOCKED: rng.choice(
            [
                Outcome("arch", Status.FAIL, Reason.ARCH_UNSUPPORTED, why),
                Outcome("load", Status.FAIL, Reason.OOM, why),  # observed: contradicts the prediction
            ]
        ),
        Verdict.NO_FIT: Outcome("fit", Status.FAIL, Reason.DOES_NOT_FIT, why),
        Verdict.NOT_RUN: Outcome("backend-imports", Status.SKIP, Reason.UNKNOWN, why),
    }[verdict]
    reason = deciding.reason if verdict not in PLAIN else None
    pins = {"triton": stack.split("-")[2] if stack.startswith("triton") else None, "vllm": rng.choice([None, "0.19"])}
    return decided(
        CellResult(
            f"{stack}__{model.rsplit('/', 1)[-1].lower()}__{target}",
            verdict,
            reason,
            "transformers==5" if verdict is Verdict.OVERRIDE else None,
            (Outcome("resolve", Status.PASS), deciding) if deciding.probe != "resolve" else (deciding,),
            "fp",
            {"kind": "vllm", "model": model, "target": target, **pins},
        )
    )


def results(seed: int) -> list[CellResult]:
    rng = random.Random(seed)
    cells = [(s, m, t) for s in STACKS for m in MODELS for t in TARGETS if rng.random() < 0.8]  # some missing
    return [result(rng, *c) for c in cells]


# --- the former renderings, over the pandas frame ----------------------------------------------------------------


def old_stack_order(df: pd.DataFrame) -> list[str]:
    first = triton_prefixes()
    return sorted(df["stack"].unique(), key=lambda s: (not s.startswith(first), s))


def old_footnotes(df: pd.DataFrame) -> tuple[list[int | None], dict[str, int]]:
    notes: dict[str, int] = {}
    numbers: list[int | None] = []
    for verdict, reason, override, detail in zip(df["verdict"], df["reason"], df["override"], df["why"], strict=True):
        if Verdict(verdict) in PLAIN:
            numbers.append(None)
        else:
            numbers.append(notes.setdefault(note_text(reason, override, detail), len(notes) + 1))
    return numbers, notes


def old_markdown(report: Report, df: pd.DataFrame) -> str:
    numbers, notes = old_footnotes(df)
    marks = [SYMBOL[Verdict(v)] + (f"[^{n}]" if n else "") for v, n in zip(df["verdict"], numbers, strict=True)]
    table = df.assign(_v=marks).pivot_table(index=["model", "target"], columns="stack", values="_v", aggfunc="first")
    flat = table.reindex(columns=old_stack_order(df)).fillna("").reset_index()
    lines = [f"# {report.title}", "", "Legend: " + " · ".join(legend()), ""]
    lines.append(tabulate(flat.values.tolist(), headers=list(flat.columns), tablefmt="github"))
    lines += ["", *(f"[^{n}]: {md_text(text)}" for text, n in notes.items())]  # text from outside, made inert
    seen = df[df["observed_verdict"] != ""]
    rows = [
        [c, d, o, md_text((r + (f": {w}" if w else "")) if r else ""), "⚠" if x else ""]
        for c, d, o, r, w, x in zip(
            *(seen[k].tolist() for k in ("cell", "declared_verdict", "observed_verdict", "reason", "why")),
            seen["contradiction"].tolist(),
            strict=True,
        )
    ]
    if rows:
        lines += [
            "",
            "## Declared vs observed",
            "",
            "Cells the runtime tier ran: the static prediction beside what was observed (⚠ = contradicts).",
            "",
            tabulate(rows, headers=["cell", "declared", "observed", "reason", ""], tablefmt="github"),
        ]
    return "\n".join(lines) + "\n"


def old_terminal(df: pd.DataFrame) -> str:
    if df.empty:
        return "no cells\n"
    targets = list(dict.fromkeys(df["target"]))
    models = list(dict.fromkeys(df["model"]))
    sym = {
        (s, m, t): SYMBOL[Verdict(v)]
        for s, m, t, v in zip(df["stack"], df["model"], df["target"], df["verdict"], strict=True)
    }
    rows = [[s, *("".join(sym.get((s, m, t), " ") for t in targets) for m in models)] for s in old_stack_order(df)]
    counts = df["verdict"].value_counts()
    summary = "  ".join(f"{SYMBOL[v]} {v}: {counts.get(str(v), 0)}" for v in Verdict)
    head = f"each entry: one symbol per target, in order {', '.join(targets)}"
    body = tabulate(rows, headers=["stack", *map(short_model, models)], tablefmt="simple", stralign="center")
    return f"{head}\n{body}\n\n{summary}\n"


def reports(found: list[CellResult]) -> list[Report]:
    """The same table made the three ways the code makes it."""
    of = Report.of(found, META)
    rows = [(*table_row(r)[:-1], int(table_row(r)[-1])) for r in sorted(found, key=lambda r: r.cell_id)]
    return [of, Report.of_rows(rows, META, summaries=of.summaries), Report(of.results, of.df, META, of.title)]


def test_table_formats_are_the_frames_byte_for_byte() -> None:
    for seed in range(12):
        found = results(seed)
        frame = Report.of(found, META).df
        expected = {
            "txt": old_terminal(frame).encode(),
            "md": old_markdown(Report.of(found, META), frame).encode(),
            "csv": frame.to_csv(index=False, lineterminator="\n").encode(),
        }
        for report in reports(found):
            for name, data in expected.items():
                assert render(replace(report, view="grid"), name) == data, (seed, name)
        assert render(reports(found)[1], "json") == render(reports(found)[0], "json")


def test_the_empty_table() -> None:
    report = Report.of([], META)
    assert render(report, "txt") == b"no cells\n"
    assert render(report, "csv") == report.df.to_csv(index=False, lineterminator="\n").encode()
    assert b"| model   | target   |\n|---------|----------|" in render(replace(report, view="grid"), "md")
    assert render(report, "md").endswith(b"\nNo cells.\n")  # the frontier, md's default view


def test_the_helpers_read_a_frame_or_the_columns_alike() -> None:
    report = Report.of(results(3), META)
    df, cols = report.df, report.columns
    assert stack_order(df) == stack_order(cols) == old_stack_order(df)
    assert footnotes(df) == footnotes(cols) == old_footnotes(df)
    assert observed_rows(df) == observed_rows(cols)
    marks = [str(n) for n in range(len(cols["cell"]))]
    stacks, rows = grid(cols, marks)
    table = pivot(df, marks).reset_index()
    assert ["model", "target", *stacks] == list(table.columns) and rows == table.values.tolist()


def test_a_run_renders_its_tables_without_pandas() -> None:
    code = (
        "import sys\n"
        "from stackmatrix.reports.render import Report, render\n"
        "r = Report.of_rows([('c__m__t','c','vllm',None,'0.1','5','','m','t','predicted','','','','','',"
        "'predicted','',0,0)],"
        " {}, summaries=['{}'])\n"
        "for f in ('txt', 'md', 'csv', 'json'): render(r, f)\n"
        "assert 'pandas' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_format_marks_a_flaky_cell() -> None:
    """A cell whose verdict changed between attempts (the executor's retries) says so in every report format and
    view."""
    from stackmatrix.domain import CellResult, Outcome, Rung, Status, Verdict
    from stackmatrix.reports.render import FORMATS, Report, render

    declared = {"kind": "vllm", "vllm": "0.32.0", "transformers": "5.19.0", "model": "google/gemma-4-E2B-it"}
    served = Outcome(str(Rung.SERVE), Status.PASS, None, "served", {})
    cells = [
        CellResult(f"vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__{t}", Verdict.RUNS_TINY, None, None, (served,), "f",
                   {**declared, "target": t}, Verdict.PREDICTED, Verdict.RUNS_TINY, attempts=attempts)
        for t, attempts in (("l4x1", ("not-run",)), ("l4x2", ()))
    ]  # fmt: skip
    steady = Report.of([cells[1]], {})
    report = Report.of(cells, {})
    for name, view in [(n, v) for n, f in FORMATS.items() for v in f.view_names]:
        report, steady = replace(report, view=view), replace(steady, view=view)
        out = render(report, name)
        if name == "png":  # the heatmap marks it with "~" and a legend entry: the image differs
            assert out != render(Report.of([replace(cells[0], attempts=()), cells[1]], {}), name)
            continue
        text, plain = out.decode(), render(steady, name).decode()
        if name in ("csv", "json"):  # a column: true for the flaky cell only
            assert text.count("True" if name == "csv" else '"flaky":true') == 1, name
            assert "True" not in plain and "flaky" not in plain.replace("contradiction,flaky", ""), name
        else:
            assert "flaky" in text and "flaky" not in plain, name


def test_the_index_rows_booleans_read_back_as_booleans() -> None:
    """SQLite stores the row's bool columns (contradiction, flaky) as 0/1: a table from the index's rows renders
    as the one from the records (CSV "True", not "1")."""
    from stackmatrix.reports.render import Report, render

    row = (
        "c__m__t",
        "c",
        "vllm",
        None,
        "0.1",
        "5",
        "",
        "m",
        "t",
        "blocked",
        "import-error",
        "",
        "x",
        "",
        "",
        "predicted",
    )
    report = Report.of_rows([(*row, "blocked", 1, 0)], {}, summaries=["{}"])
    assert (report.columns["contradiction"], report.columns["flaky"]) == ([True], [False])
    assert render(report, "csv").decode().splitlines()[1].endswith(",True,False")
