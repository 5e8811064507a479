"""Commands over stored runs: ``history``, ``diff``, ``report``, ``merge`` (no probing, no network), and
``gate`` (probes a candidate's cells and compares them with a stored baseline)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from stackmatrix.cli.args import add_flags, add_option, common, path_arg, resolve, settings_of, tier
from stackmatrix.errors import BadInput, NothingSelected, path_faults
from stackmatrix.files.atomic import write_output
from stackmatrix.matrix.select import select_ids
from stackmatrix.options import OPTIONS
from stackmatrix.redact import redact
from stackmatrix.reports.formats import choices, renderer
from stackmatrix.store.index import RunIndex, open_index, warn_forged
from stackmatrix.store.runs import Run, find_run, open_run, recorded, store_dir

# Runs a default RUN argument may stand for: the matrix's own runs, not a gate's few candidate cells.
TABLE_RUNS = ("matrix", "merge")


def _reports_dir(p: argparse.ArgumentParser) -> None:
    add_option(p, OPTIONS["reports_dir"])


def _keyword(p: argparse.ArgumentParser) -> None:
    add_flags(p, "keyword", "only")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("history", help="a cell's verdicts over every stored run")
    _reports_dir(p)
    _keyword(p)
    p.add_argument("--last", type=_positive, default=10, help="the newest N runs (default 10)")
    p.add_argument("--format", choices=choices("history"), default="text")

    p = sub.add_parser("diff", help="cells whose verdict or reason changed between two runs (default: the two latest)")
    _reports_dir(p)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run id, unique prefix or run directory (0, 1 or 2)")
    p.add_argument("--format", choices=choices("diff"), default="text")
    p.add_argument("--output", type=path_arg, default=None, help="also write the diff in --format to this file")

    p = sub.add_parser("report", help="render a stored run (default: the latest) in any format")
    _reports_dir(p)
    _keyword(p)
    p.add_argument("run", nargs="?", default=None, metavar="RUN", help="run id, unique prefix or run directory")
    p.add_argument(
        "--format",
        action="append",
        default=[],
        help=f"comma-separated: {', '.join(choices('report'))}, or all (default all; repeatable)",
    )
    p.add_argument("--out", type=path_arg, default=None, help="output directory (default <reports>/rendered/<run-id>)")
    p.add_argument("--title", default=None, help="table title (default 'Readiness — run <id>')")

    p = sub.add_parser("merge", help="fold the runs of --shard i/n jobs into one run")
    _reports_dir(p)
    p.add_argument("dirs", nargs="+", type=path_arg, metavar="DIR", help="a run directory or a reports directory")
    p.add_argument(
        "--exit-status",
        action="append",
        default=[],
        metavar="DIR=CODE",
        help="the exit status CI saw for a shard that could not record its own (e.g. killed): repeatable",
    )

    p = sub.add_parser("gate", help="may we upgrade? probe a candidate stack against a policy and a baseline")
    common(p)
    p.add_argument("--policy", type=path_arg, required=True, help="policy TOML: the models x targets that must serve")
    p.add_argument(
        "--candidate",
        required=True,
        help="stack spec: triton=26.04 | vllm=0.22.1,transformers=5.6.0 | triton=..,vllm=..",
    )
    p.add_argument(
        "--baseline", default=None, help="stored run to compare with (default: the newest holding the cells)"
    )
    p.add_argument("--summary", type=path_arg, default=None, help="also write the Markdown summary here (PR comment)")
    tier(p)
    resolve(p)
    add_flags(p, "fresh")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a positive integer")
    return value


def _index(args: argparse.Namespace) -> RunIndex:
    index = _warn_damaged(open_index(settings_of(args).reports_dir))
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


def _runs(args: argparse.Namespace, index: RunIndex, refs: list[str], want: int) -> list[str]:
    """Run ids for ``refs``; missing ones are the newest table runs (the latest last)."""
    given = [find_run(settings_of(args).reports_dir, r).run_id for r in refs]
    if len(given) >= want:
        return given
    latest = [r.run_id for r in index.runs(purposes=TABLE_RUNS) if r.run_id not in given]
    return (given + latest[-(want - len(given)) :]) if latest else given


def cmd_history(args: argparse.Namespace) -> int:
    with _index(args) as index:
        ids = select_ids(index.cell_ids(), keyword=args.keyword, only=args.only)
        if not ids:
            raise NothingSelected("no stored cell matches the selection")
        runs = index.runs()
        print(renderer("history", args.format)(index.history(ids), runs, args.last), end="")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from stackmatrix.reports.diff import diff_runs, render_text, with_news

    if len(args.runs) > 2:
        raise BadInput("diff", "RUN", args.runs, "at most two runs")
    with _index(args) as index:
        runs = _runs(args, index, args.runs, 2)
        if len(runs) < 2:
            print(f"nothing to compare: {len(runs)} stored run{'s' * (len(runs) != 1)} of the matrix")
            return 0
        d = diff_runs(index, runs[0], runs[1])
    reports = settings_of(args).reports_dir
    before, after = (open_run(reports / "runs" / r).meta.get("upstream") for r in runs)
    d = with_news(d, before, after)
    out = renderer("diff", args.format)(d)
    if args.output:
        write_output(args.output, out, "--output")
        print(render_text(d).splitlines()[0] + f"\ndiff: {args.output}")
    else:
        print(out, end="")
    return 0


def _stored_run(args: argparse.Namespace, ref: str | None) -> Run:
    reports = settings_of(args).reports_dir
    if ref is not None:
        return find_run(reports, ref)
    with _warn_damaged(open_index(reports)) as index:
        runs = index.runs(purposes=TABLE_RUNS)
    if not runs:
        raise NothingSelected(f"no stored run under {reports / 'runs'}")
    return open_run(reports / "runs" / runs[-1].run_id)


def cmd_report(args: argparse.Namespace) -> int:
    from stackmatrix.reports.render import FORMATS, Report, parse_formats, write_reports

    formats = parse_formats(args.format or ["all"])
    run = _stored_run(args, args.run)
    if run.meta.get("damaged"):  # rendered with what it still holds, its status ``damaged``
        _warn(str(run.meta["damaged"]))
    with open_index(settings_of(args).reports_dir, sync=False) as index:
        index.ensure(run)
        rows = index.frame_rows(run.run_id)
        summaries = index.summaries(run.run_id)
    if args.keyword or args.only:
        keep = set(select_ids((r[0] for r in rows), keyword=args.keyword, only=args.only))
        summaries = [s for r, s in zip(rows, summaries, strict=True) if r[0] in keep]
        rows = [r for r in rows if r[0] in keep]
    if not rows:
        raise NothingSelected(f"no cell of run {run.run_id} matches the selection")
    wanted = {r[0] for r in rows}

    table = Report.of_rows(rows, run.meta, args.title, summaries)

    def full() -> Report:  # the cell files, for the formats that show evidence; the table is the index's
        results = sorted((r for r in run.results() if r.cell_id in wanted), key=lambda r: r.cell_id)
        if [r.cell_id for r in results] != [row[0] for row in rows]:  # a cell file changed under the index
            return Report.of(results, run.meta, args.title)
        return Report(tuple(results), table.df, run.meta, table.title, table.summaries)

    out = args.out or store_dir(settings_of(args).reports_dir, "rendered", run.run_id)
    with path_faults("--out" if args.out else None):
        files = write_reports(table, out, formats, load_full=full)
    for name, path in files.items():
        print(f"{name:<6} {path}  ({FORMATS[name].help})")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from stackmatrix.store.merge import merge, parse_exit_codes

    reports = settings_of(args).reports_dir
    merged = merge(args.dirs, reports, parse_exit_codes(args.exit_status))
    with recorded(merged.run), open_index(reports, sync=False) as index:
        index.ingest(merged.run)
    print(
        f"merged {len(args.dirs)} runs into {merged.run.root}: {merged.copied} cells with results, "
        f"{len(merged.missing)} without (not-run), {merged.duplicates} written twice"
    )
    for cell in merged.missing:
        print(f"  missing: {cell}", file=sys.stderr)
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from stackmatrix.answers.gate import GATE
    from stackmatrix.pipeline.steps import execute

    return execute(GATE, args, settings_of(args))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "history": cmd_history,
    "diff": cmd_diff,
    "report": cmd_report,
    "merge": cmd_merge,
    "gate": cmd_gate,
}
