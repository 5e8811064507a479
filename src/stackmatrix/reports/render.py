"""Report formats, rendered from stored runs only: the report's entries of the format registry (formats.py).

Each renderer is ``Report -> str | bytes`` and deterministic: the same stored run gives the same bytes.
Renderers are imported when asked for, so a Markdown report never pays for matplotlib.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from stackmatrix.errors import BadInput
from stackmatrix.files.atomic import atomic_write_bytes, remove_partial
from stackmatrix.redact import redact
from stackmatrix.reports.formats import Format, of
from stackmatrix.reports.table import Report

__all__ = ["FORMATS", "Format", "Report", "parse_formats", "parse_view", "render", "write_reports"]


# The report's formats: reports/formats.py holds every answer's.
FORMATS: dict[str, Format] = of("report")
DEFAULT_FORMATS = ("txt", "md", "csv", "json")
# A temporary report file older than this is a killed render's, not one another process is writing now.
STALE_S = 600.0


def parse_formats(values: Iterable[str]) -> list[str]:
    """``--format md,html --format png`` or ``all``; unknown names are bad input."""
    names: list[str] = []
    for value in values:
        for name in filter(None, (v.strip() for v in value.split(","))):
            if name == "all":
                names.extend(FORMATS)
            elif name not in FORMATS:
                raise BadInput("--format", "format", name, f"one of {', '.join(FORMATS)} or all")
            else:
                names.append(name)
    if not names:
        raise BadInput("--format", "format", ",".join(values), f"one or more of {', '.join(FORMATS)}, or all")
    return list(dict.fromkeys(names))


def parse_view(view: str | None, names: Iterable[str]) -> str | None:
    """``--view`` for the formats ``names``: one of them must have it (a format without it renders its grid)."""
    if view is None:
        return None
    having = [n for n in names if view in FORMATS[n].view_names]
    if not having:
        offer = sorted({v for n in names for v in FORMATS[n].view_names})
        with_it = [n for n, f in FORMATS.items() if view in f.view_names]
        raise BadInput(
            "--view", "view", view, f"one of {', '.join(offer)} for these formats ({view}: {', '.join(with_it)})"
        )
    return view


def _renderer(name: str, view: str | None) -> Callable[[Report], str | bytes]:
    fmt = FORMATS[name]
    fn: Callable[[Report], str | bytes] = fmt.load(view if view in fmt.view_names else None)
    return fn


def render(report: Report, name: str) -> bytes:
    """One format's bytes, in the report's view where the format has it. Text formats pass through ``redact``
    last: whatever a probe's evidence holds, a report carries no URL credentials and no value of a secret-named
    environment variable."""
    out = _renderer(name, report.view)(report)
    # backslashreplace: a lone surrogate (an undecodable byte in a title or a stored path) is written escaped
    return redact(out).encode("utf-8", "backslashreplace") if isinstance(out, str) else out


def _write(report: Report, name: str, out_dir: Path) -> Path:
    path = out_dir / FORMATS[name].filename
    atomic_write_bytes(path, render(report, name))
    return path


def _write_all(report: Report, names: list[str], out_dir: Path) -> None:
    for name in names:
        _write(report, name, out_dir)


def _fork_writing(report: Report, names: list[str], out_dir: Path) -> int | None:
    """A child process writing ``names`` (fork: it shares what is loaded; nothing is pickled); None where the
    platform cannot fork. A failure is the child's exit status, never a traceback on the user's terminal: the
    parent renders the same formats again and reports the error once, as one line."""
    if not names or not hasattr(os, "fork"):
        return None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its exit status is what the tests see
        gc.freeze()  # what it shares with the parent is never collected here: no collection copies those pages
        code = 1
        try:
            _write_all(report, names, out_dir)
            code = 0
        finally:
            os._exit(code)
    return pid


def _succeeded(pid: int) -> bool:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def write_reports(
    report: Report,
    out_dir: Path,
    formats: Iterable[str] = DEFAULT_FORMATS,
    *,
    load_full: Callable[[], Report] | None = None,
) -> dict[str, Path]:
    """Render each format and write it atomically: a reader never sees half a report.

    ``report`` may hold the table only (``Report.of_rows``); ``load_full`` then gives the report with every
    cell's results for the formats that need them. Where the platform can fork, the table-only formats (matplotlib
    among them) render in a child process while this one reads the results and renders the rest: on 2 cores
    every format of a 5,000-cell run in under 3 s.
    """
    names = list(formats)
    if out_dir.is_dir() and not out_dir.is_symlink():  # what a killed render left (never where a link points)
        remove_partial(out_dir, older_than=STALE_S)
    table_only = [n for n in names if not FORMATS[n].needs_results]
    with_results = [n for n in names if FORMATS[n].needs_results]
    # The table-only formats alone (a run's ``latest/``) render here: on a busy 2-core machine a second process
    # gains nothing for their tenth of a second.
    child = _fork_writing(report, table_only, out_dir) if with_results else None
    try:
        if child is None:
            _write_all(report, table_only, out_dir)
        if with_results:
            if not report.results and load_full is None and not report.empty:
                raise ValueError("a table-only report cannot render " + ", ".join(with_results) + " without load_full")
            full = report if report.results or load_full is None else load_full()
            _write_all(full, with_results, out_dir)
    finally:  # however this process's part ended, the child has ended before the call returns
        ok = child is None or _succeeded(child)
    if not ok:  # render here what the child did not, to raise its error properly
        _write_all(report, table_only, out_dir)
    return {n: out_dir / FORMATS[n].filename for n in names}
