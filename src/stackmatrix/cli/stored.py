"""Commands over stored runs: ``history``, ``diff``, ``report``, ``merge`` (no probing, no network), and
``gate`` (probes a candidate's cells and compares them with a stored baseline)."""

from __future__ import annotations

import sys
from dataclasses import replace

from stackmatrix.errors import BadInput, NothingSelected, path_faults
from stackmatrix.files.atomic import write_output
from stackmatrix.matrix.select import select_ids
from stackmatrix.redact import redact
from stackmatrix.reports.formats import renderer
from stackmatrix.request import Request
from stackmatrix.store.index import RunIndex, open_index, warn_forged
from stackmatrix.store.runs import Run, find_run, open_run, recorded, store_dir

# Runs a default RUN argument may stand for: the matrix's own runs, not a gate's few candidate cells.
TABLE_RUNS = ("matrix", "merge")


def _index(request: Request) -> RunIndex:
    index = _warn_damaged(open_index(request.settings().reports_dir))
    for why in index.lost_records().values():  # shown with what they still hold, never as complete
        _warn(why)
    warn_forged(index)
    return index


def _warn(why: str) -> None:
    print(f"stackmatrix: warning: {redact(why)}", file=sys.stderr)


def _warn_damaged(index: RunIndex) -> RunIndex:
    """Runs left out of the index because their files are damaged: one line each, the rest of the store works."""
    for run_dir, why in index.damaged.items():
        print(f"stackmatrix: warning: left out {run_dir}: {redact(why)}", file=sys.stderr)
    return index


def _runs(request: Request, index: RunIndex, refs: list[str], want: int) -> list[str]:
    """Run ids for ``refs``; missing ones are the newest table runs (the latest last)."""
    given = [find_run(request.settings().reports_dir, r).run_id for r in refs]
    if len(given) >= want:
        return given
    latest = [r.run_id for r in index.runs(purposes=TABLE_RUNS) if r.run_id not in given]
    return (given + latest[-(want - len(given)) :]) if latest else given


def cmd_history(request: Request) -> int:
    with _index(request) as index:
        ids = select_ids(index.cell_ids(), keyword=request.keyword, only=request.only)
        if not ids:
            raise NothingSelected("no stored cell matches the selection")
        runs = index.runs()
        print(renderer("history", request.format)(index.history(ids), runs, request.last), end="")
    return 0


def cmd_diff(request: Request) -> int:
    from stackmatrix.reports.diff import diff_runs, render_text, with_news

    if len(request.runs) > 2:
        raise BadInput("diff", "RUN", list(request.runs), "at most two runs")
    with _index(request) as index:
        runs = _runs(request, index, list(request.runs), 2)
        if len(runs) < 2:
            print(f"nothing to compare: {len(runs)} stored run{'s' * (len(runs) != 1)} of the matrix")
            return 0
        d = diff_runs(index, runs[0], runs[1])
    reports = request.settings().reports_dir
    before, after = (open_run(reports / "runs" / r).meta.get("upstream") for r in runs)
    d = with_news(d, before, after)
    out = renderer("diff", request.format)(d)
    if request.output:
        write_output(request.output, out, "--output")
        print(render_text(d).splitlines()[0] + f"\ndiff: {request.output}")
    else:
        print(out, end="")
    return 0


def _stored_run(request: Request, ref: str | None) -> Run:
    reports = request.settings().reports_dir
    if ref is not None:
        return find_run(reports, ref)
    with _warn_damaged(open_index(reports)) as index:
        runs = index.runs(purposes=TABLE_RUNS)
    if not runs:
        raise NothingSelected(f"no stored run under {reports / 'runs'}")
    return open_run(reports / "runs" / runs[-1].run_id)


def cmd_report(request: Request) -> int:
    from stackmatrix.reports.render import FORMATS, Report, parse_formats, parse_view, write_reports

    formats = parse_formats(list(request.formats) or ["all"])
    view = parse_view(request.view, formats)
    run = _stored_run(request, request.run)
    if run.meta.get("damaged"):  # rendered with what it still holds, its status ``damaged``
        _warn(str(run.meta["damaged"]))
    with open_index(request.settings().reports_dir, sync=False) as index:
        index.ensure(run)
        rows = index.frame_rows(run.run_id)
        summaries = index.summaries(run.run_id)
    if request.keyword or request.only:
        keep = set(select_ids((r[0] for r in rows), keyword=request.keyword, only=request.only))
        summaries = [s for r, s in zip(rows, summaries, strict=True) if r[0] in keep]
        rows = [r for r in rows if r[0] in keep]
    if not rows:
        raise NothingSelected(f"no cell of run {run.run_id} matches the selection")
    wanted = {r[0] for r in rows}

    table = replace(Report.of_rows(rows, run.meta, request.title, summaries), view=view)

    def full() -> Report:  # the cell files, for the formats that show evidence; the table is the index's
        results = sorted((r for r in run.results() if r.cell_id in wanted), key=lambda r: r.cell_id)
        if [r.cell_id for r in results] != [row[0] for row in rows]:  # a cell file changed under the index
            return replace(Report.of(results, run.meta, request.title), view=view)
        return replace(table, results=tuple(results), frame=table.df)

    out = request.out or store_dir(request.settings().reports_dir, "rendered", run.run_id)
    with path_faults("--out" if request.out else None):
        files = write_reports(table, out, formats, load_full=full)
    for name, path in files.items():
        print(f"{name:<6} {path}  ({FORMATS[name].help})")
    return 0


def cmd_merge(request: Request) -> int:
    from stackmatrix.store.merge import merge, parse_exit_codes

    reports = request.settings().reports_dir
    merged = merge(list(request.dirs), reports, parse_exit_codes(list(request.exit_status)))
    with recorded(merged.run), open_index(reports, sync=False) as index:
        index.ingest(merged.run)
    print(
        f"merged {len(request.dirs)} runs into {merged.run.root}: {merged.copied} cells with results, "
        f"{len(merged.missing)} without (not-run), {merged.duplicates} written twice"
    )
    for cell in merged.missing:
        print(f"  missing: {cell}", file=sys.stderr)
    return 0


def cmd_gate(request: Request) -> int:
    from stackmatrix.answers.gate import GATE
    from stackmatrix.pipeline.steps import execute

    return execute(GATE, request)
