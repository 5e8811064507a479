"""An embedded SQLite index over every stored run, for history, diffs and gates.

The JSON files under ``runs/`` are the source of truth: the index is derived, kept in step with them by a stamp
per run, and rebuilt from them when it is missing, corrupt or of an older schema; losing it loses nothing. A run
whose files are damaged is left out (named in ``damaged``) instead of stopping every command over the store;
asked for by name, it is still exit 2. An index that cannot be written is exit 4 naming it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from stackmatrix.domain import CellResult, Reason
from stackmatrix.errors import BadInput, InfraUnavailable
from stackmatrix.store.journal import JOURNAL
from stackmatrix.store.row import COLUMNS, FIELDS, row_of, sql_columns
from stackmatrix.store.runs import Run, open_run, parse_cell, run_dirs

P = ParamSpec("P")
R = TypeVar("R")

# What the rows mean beyond their columns (how a record becomes a row, what ``forged`` holds): bumped by hand only
# when that changes. A change of the columns changes the stamp by itself (schema_stamp).
ROWS_VERSION = 9
# A cell's columns: the readiness row's (tablerow.Row, ``cell`` named ``cell_id`` here), then where its record is
# in the run's journal.
#
# Laid out for the warm run, which adds a row per cell, each a copy of a stored one (a cache hit):
# - a rowid table, not WITHOUT ROWID: a row holds its JSON summary (~1 kB), more than a WITHOUT ROWID leaf keeps
#   on its page, so every row spilled to an overflow page (a store 2.5 times as large, inserts twice as slow);
# - no index over every run's rows but the primary key, whose new rows all land at its end. An index keyed by
#   anything else (the cell id, the fingerprint) takes a page write per new row once a store holds a few runs (a
#   warm run's rows land all over it): 0.1 to 0.2 s a run each, growing with the store. The few queries by cell id
#   go through the runs and the primary key instead, and the cache's key has a table of its own, ``newest``: per
#   fingerprint, the newest stored row with it that may be reused (one row per fingerprint, however many runs).
CACHE_KIB = 128 * 1024
BUSY_TIMEOUT_S = 30.0  # how long to wait on another process's write before exit 4
ROW_COLUMNS = tuple("cell_id" if f.name == "cell" else f.name for f in FIELDS)
CELL_COLUMNS = ("run_id", *ROW_COLUMNS, "journal_offset", "journal_length", "forged")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started TEXT, finished TEXT, status TEXT, exit_code INTEGER, purpose TEXT,
    tier TEXT, matrix_hash TEXT, tool_version TEXT, cells INTEGER, stamp TEXT, meta TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    {sql_columns().replace("cell TEXT", "cell_id TEXT NOT NULL", 1)},
    journal_offset INTEGER, journal_length INTEGER,
    forged TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, cell_id)
);
CREATE TABLE IF NOT EXISTS newest (
    fingerprint TEXT PRIMARY KEY, run_id TEXT NOT NULL, cell_id TEXT NOT NULL
) WITHOUT ROWID;
"""


def schema_stamp(rows_version: int, schema: str) -> int:
    """``PRAGMA user_version`` of an index: derived from the schema's text (the readiness row's columns are in
    it) and ROWS_VERSION, so a column added to the row or the tables can never keep an old stamp; an index of
    another stamp is rebuilt from the runs' files. 28 bits: SQLite keeps a signed 32-bit integer."""
    return int(hashlib.sha256(f"{rows_version}\n{schema}".encode()).hexdigest()[:7], 16)


SCHEMA_VERSION = schema_stamp(ROWS_VERSION, _SCHEMA)


@dataclass(frozen=True)
class RunRow:
    run_id: str
    started: str
    finished: str | None
    status: str
    exit_code: int | None
    purpose: str
    tier: str
    matrix_hash: str
    cells: int


@dataclass(frozen=True)
class CellRow:
    """A cell's verdict in one run: what history and diff compare (the evidence stays in the cell file)."""

    cell_id: str
    verdict: str
    reason: str
    override: str
    why: str
    fingerprint: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.verdict, self.reason, self.override


def _stamp(run_dir: Path) -> str:
    """run.json's and the journal's mtime and size (and the cell files' count, for runs from before the journal)."""
    st = (run_dir / "run.json").stat()
    count = 0
    if (run_dir / "cells").is_dir():  # a run that wrote no cell yet may have none
        with os.scandir(run_dir / "cells") as it:
            count = sum(1 for e in it if e.name.endswith(".json") and not e.name.startswith("."))
    try:
        js = (run_dir / JOURNAL).stat()
        journal = f"{js.st_mtime_ns}:{js.st_size}"
    except FileNotFoundError:
        journal = "-"
    return f"{st.st_mtime_ns}:{st.st_size}:{count}:{journal}"


def _faults(method: Callable[P, R]) -> Callable[P, R]:
    """SQLite's own errors on the index file (full disk, read-only, locked, unopenable) as exit 4 naming it."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            index = args[0]
            assert isinstance(index, RunIndex)
            raise InfraUnavailable(f"the run index {index.path}: {exc}") from None

    return wrapper


_DAMAGE = ("file is not a database", "malformed", "outdated schema")


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """The index file itself is unreadable or of another schema (not busy, locked or read-only)."""
    return any(m in str(exc) for m in _DAMAGE)


def _make_schema(db: sqlite3.Connection) -> None:
    """The schema, under one write transaction: of two processes opening a new store, one makes it and the other
    waits (the connection's busy timeout), then finds it made."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise sqlite3.DatabaseError(f"outdated schema {version}, expected {SCHEMA_VERSION}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.commit()
    except BaseException:
        db.rollback()
        raise


class RunIndex:
    @_faults
    def __init__(self, reports_dir: Path) -> None:
        self.reports_dir = reports_dir
        self.path = reports_dir / "index.sqlite"
        self.damaged: dict[str, str] = {}  # run directory -> why it is left out of the index
        reports_dir.mkdir(parents=True, exist_ok=True)
        self.db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        with contextlib.suppress(FileNotFoundError):  # SQLite would block reading a FIFO planted at the name
            if not stat.S_ISREG(os.lstat(self.path).st_mode):
                if self.path.is_dir():
                    raise BadInput(str(self.path), "<path>", "a directory", "the run index file (or nothing)")
                self.path.unlink()  # derived data: whatever stands there is replaced by a rebuilt index
        for attempt in range(2):
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
            try:
                db.execute("PRAGMA foreign_keys = ON")
                # room for a warm run's pages in one transaction (SQLite's default, 2 MB, spills them mid-way: each
                # page journaled and written again); taken only as pages are read
                db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    _make_schema(db)
                return db
            except sqlite3.DatabaseError as exc:
                db.close()
                # Busy, locked, read-only, full: another process or the machine, never a reason to drop the index
                # (two runs into a new store deleted it under each other); only real damage is.
                if attempt or not _damaged(exc):
                    raise
                # Derived data: an unreadable or outdated index is dropped and rebuilt from the run files.
                for suffix in ("", "-journal", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_faults
    def sync(self) -> None:
        """Bring the index in step with ``runs/``: ingest new or changed runs, forget removed ones; a damaged run
        is left out (and named in ``damaged``)."""
        known = dict(self.db.execute("SELECT run_id, stamp FROM runs").fetchall())
        # a running run may have died since: read again, it then says crashed
        running = {r[0] for r in self.db.execute("SELECT run_id FROM runs WHERE status = 'running'")}
        on_disk = run_dirs(self.reports_dir)
        readable = set()
        for run_dir in on_disk:
            try:
                if known.get(run_dir.name) != _stamp(run_dir) or run_dir.name in running:
                    self.ingest(open_run(run_dir, named=True))
                readable.add(run_dir.name)
            except (BadInput, OSError) as exc:
                self.damaged[str(run_dir)] = str(exc)
        gone = set(known) - readable
        if gone:
            with self.db:
                self.db.executemany("DELETE FROM runs WHERE run_id = ?", [(g,) for g in gone])
                for run_id in gone:
                    self._refind(run_id)

    @_faults
    def ingest(
        self, run: Run, results: Iterable[CellResult] | None = None, copied: Iterable[tuple[str, str]] = ()
    ) -> None:
        """(Re)index one run: from results in memory when the caller has them (and ``copied``: cache hits, whose
        rows are the source runs' rows: (cell id, source run id)), else from its files."""
        if results is None:
            rows = self._rows_read_back(run)
        else:
            rows = [_cell_row(run.run_id, r, run.offsets.get(r.cell_id)) for r in results]
        m = run.meta
        with self.db:
            known = self.db.execute("DELETE FROM runs WHERE run_id = ?", (run.run_id,)).rowcount
            self.db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run.run_id,
                    m.get("started", ""),
                    m.get("finished"),
                    m.get("status", "unknown"),
                    m.get("exit_code"),
                    m.get("purpose", "matrix"),
                    m.get("tier", ""),
                    m.get("matrix_hash", ""),
                    m.get("tool_version", ""),
                    len(rows),
                    _stamp(run.root),
                    json.dumps(m, sort_keys=True),
                ),
            )
            insert = f"INSERT INTO cells VALUES ({','.join('?' * len(CELL_COLUMNS))})"
            self.db.executemany(insert, rows)
            if copies := self._copies(run, copied):  # the run's cells: as a rebuild from its files counts them
                self.db.execute("UPDATE runs SET cells = ? WHERE run_id = ?", (len(rows) + copies, run.run_id))
            self._keep_newest(run.run_id, rewritten=known > 0)

    def _rows_read_back(self, run: Run) -> list[tuple[Any, ...]]:
        """The run's rows from its files, each record checked against its run (store/provenance.py): one that its run
        could not have written is indexed with why, never reused, and warned of."""
        from stackmatrix.store.provenance import doubt, planned_of

        found = run.records()
        try:
            planned = planned_of(run.plan())
        except BadInput:
            planned = None
        rows = []
        for cell, (rec, raw, off) in sorted(found.items()):
            result = parse_cell(run.where(cell), rec, cell)
            doubted = doubt(run, result, planned)
            forged = f"{doubted[0]}: {doubted[1]}" if doubted else ""
            rows.append(_cell_row(run.run_id, result, None if off is None else (off, len(raw)), forged))
        return rows

    def _keep_newest(self, run_id: str, *, rewritten: bool) -> None:
        """``newest`` once a run's rows are written: each of its reusable rows where no newer run has the
        fingerprint; ``rewritten`` (the run was indexed before), each entry that named its former rows and no
        longer holds found again."""
        self.db.execute(
            "INSERT INTO newest (fingerprint, run_id, cell_id) SELECT fingerprint, run_id, cell_id FROM cells "
            f"WHERE run_id = ? AND {_REUSABLE} ON CONFLICT (fingerprint) DO UPDATE "
            "SET run_id = excluded.run_id, cell_id = excluded.cell_id WHERE excluded.run_id >= newest.run_id",
            (run_id, *TRANSIENT),
        )
        if rewritten:
            self._refind(run_id)

    def _refind(self, run_id: str) -> None:
        """The entries of ``newest`` naming a row of ``run_id`` that is gone (or no longer has the fingerprint, or
        no longer may be reused): each the newest other run's row of the same cell with the fingerprint, if any (a
        fingerprint is one cell's: the runs are searched by the primary key, newest first)."""
        stale = self.db.execute(
            "SELECT n.fingerprint, n.cell_id FROM newest n WHERE n.run_id = ? AND NOT EXISTS (SELECT 1 FROM cells "
            f"WHERE run_id = n.run_id AND cell_id = n.cell_id AND fingerprint = n.fingerprint AND {_REUSABLE})",
            (run_id, *TRANSIENT),
        ).fetchall()
        for fingerprint, cell_id in stale:
            found = self.db.execute(
                "SELECT r.run_id FROM runs r WHERE EXISTS (SELECT 1 FROM cells WHERE run_id = r.run_id "
                f"AND cell_id = ? AND fingerprint = ? AND {_REUSABLE}) ORDER BY r.run_id DESC LIMIT 1",
                (cell_id, fingerprint, *TRANSIENT),
            ).fetchone()
            if found is None:
                self.db.execute("DELETE FROM newest WHERE fingerprint = ?", (fingerprint,))
            else:
                self.db.execute("UPDATE newest SET run_id = ? WHERE fingerprint = ?", (found[0], fingerprint))

    def _copies(self, run: Run, copied: Iterable[tuple[str, str]]) -> int:
        """The rows of reused records: their source runs' rows, with this run's id and journal places (one
        INSERT ... SELECT: the rows never pass through Python). How many."""
        places = [(cell, source, *_place(run, cell)) for cell, source in copied]
        if not places:
            return 0
        self.db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS copied "
            "(cell_id TEXT PRIMARY KEY, source TEXT NOT NULL, journal_offset INTEGER, journal_length INTEGER)"
        )
        self.db.execute("DELETE FROM copied")
        self.db.executemany("INSERT INTO copied VALUES (?,?,?,?)", places)
        inserted = self.db.execute(
            f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) "
            f"SELECT ?, {', '.join(f'c.{name}' for name in ROW_COLUMNS)}, k.journal_offset, k.journal_length, '' "
            "FROM copied k JOIN cells c ON c.run_id = k.source AND c.cell_id = k.cell_id",
            (run.run_id,),
        ).rowcount
        self.db.execute("DELETE FROM copied")
        return inserted

    @_faults
    def ensure(self, run: Run) -> None:
        """Index one run if its files changed since (the rest of the index is left as it is)."""
        row = self.db.execute("SELECT stamp FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
        if row is None or row[0] != _stamp(run.root):
            self.ingest(run)

    @_faults
    def frame_rows(self, run_id: str) -> list[tuple[Any, ...]]:
        """A run's readiness-table rows, by cell id, in the columns of ``tablerow.COLUMNS``: what the
        formats that need no evidence (terminal, Markdown, CSV, LaTeX, heatmap) render, without reading a cell file."""
        cols = ", ".join(ROW_COLUMNS[: len(COLUMNS)])
        return self.db.execute(f"SELECT {cols} FROM cells WHERE run_id = ? ORDER BY cell_id", (run_id,)).fetchall()

    @_faults
    def summaries(self, run_id: str) -> list[str]:
        """A run's JSON-report objects (tablerow.Row.summary), by cell id: the JSON format without reading a
        record."""
        rows = self.db.execute("SELECT summary FROM cells WHERE run_id = ? ORDER BY cell_id", (run_id,))
        return [r[0] for r in rows]

    @_faults
    def runs(self, *, purposes: Sequence[str] | None = None) -> list[RunRow]:
        """Runs oldest first (run ids sort by start time); ``purposes`` keeps only runs of those purposes."""
        rows = self.db.execute(
            "SELECT run_id, started, finished, status, exit_code, purpose, tier, matrix_hash, cells "
            "FROM runs ORDER BY run_id"
        ).fetchall()
        out = [RunRow(*row) for row in rows]
        return [r for r in out if purposes is None or r.purpose in purposes]

    @_faults
    def lost_records(self) -> dict[str, str]:
        """Run id -> why, for each indexed run read as ``damaged`` (its journal lost records it says it wrote,
        store.Shortfall): the commands over the store show what it still holds, and warn."""
        rows = self.db.execute("SELECT run_id, meta FROM runs WHERE status = 'damaged' ORDER BY run_id")
        return {run_id: _damage(run_id, meta) for run_id, meta in rows}

    @_faults
    def forged_records(self) -> list[str]:
        """Each indexed record its run could not have written (store/provenance.py): "journal.jsonl:<line>: why"."""
        rows = self.db.execute("SELECT forged FROM cells WHERE forged != '' ORDER BY run_id, cell_id")
        return [str(r[0]) for r in rows]

    @_faults
    def cells(self, run_id: str) -> dict[str, CellRow]:
        rows = self.db.execute(
            "SELECT cell_id, verdict, reason, override, why, fingerprint FROM cells WHERE run_id = ?", (run_id,)
        )
        return {r[0]: CellRow(*r) for r in rows}

    @_faults
    def cell_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT cell_id FROM cells")]

    @_faults
    def history(self, cell_ids: Sequence[str]) -> dict[str, list[tuple[str, CellRow]]]:
        """Per cell id, its rows over time: (run id, row), oldest run first."""
        out: dict[str, list[tuple[str, CellRow]]] = {c: [] for c in cell_ids}
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (cell_id TEXT PRIMARY KEY)")
        self.db.execute("DELETE FROM wanted")
        self.db.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", [(c,) for c in cell_ids])
        rows = self.db.execute(  # run by run, each cell by the primary key (no index by cell id: see the schema)
            "SELECT r.run_id, c.cell_id, c.verdict, c.reason, c.override, c.why, c.fingerprint "
            "FROM runs r CROSS JOIN wanted w CROSS JOIN cells c ON c.run_id = r.run_id AND c.cell_id = w.cell_id "
            "ORDER BY r.run_id"
        )
        for run_id, *rest in rows:
            out[rest[0]].append((run_id, CellRow(*rest)))
        return out

    @_faults
    def hits(self, fingerprints: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Fingerprint -> (run id, cell id) of the newest stored record with it; ``not-run`` records of a passing
        fault (the index, an interruption, an environment that did not build) left out: they may be decidable now."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_fp (fp TEXT PRIMARY KEY)")
        self.db.execute("DELETE FROM wanted_fp")
        self.db.executemany("INSERT OR IGNORE INTO wanted_fp VALUES (?)", [(f,) for f in fingerprints])
        rows = self.db.execute(
            "SELECT w.fp, n.run_id, n.cell_id FROM wanted_fp w JOIN newest n ON n.fingerprint = w.fp"
        )
        return {fp: (run_id, cell_id) for fp, run_id, cell_id in rows}

    @_faults
    def durations(self, tier: str) -> dict[str, float]:
        """Cell id -> the seconds its newest probed record of this tier took (cache hits and ``not-run`` left
        out): the plan's estimate."""
        rows = self.db.execute(
            "SELECT c.cell_id, c.duration_s FROM cells c JOIN runs r USING (run_id) "
            "WHERE r.tier = ? AND c.verdict != 'not-run' AND c.duration_s > 0 ORDER BY c.run_id",
            (tier,),
        )
        return {cell: float(d) for cell, d in rows}

    @_faults
    def locations(self, run_id: str) -> dict[str, tuple[int, int]]:
        """Where each cell's record is in the run's journal (none for a run from before the journal)."""
        rows = self.db.execute(
            "SELECT cell_id, journal_offset, journal_length FROM cells WHERE run_id = ? "
            # a planted or mistyped row is no place to read from
            "AND typeof(journal_offset) = 'integer' AND typeof(journal_length) = 'integer'",
            (run_id,),
        )
        return {cell: (int(off), int(length)) for cell, off, length in rows}

    @_faults
    def latest_with(self, cell_ids: Sequence[str], *, exclude: str | None = None) -> str | None:
        """The newest run holding any of these cells (other than ``exclude``)."""
        marks = ",".join("?" * len(cell_ids))
        row = self.db.execute(  # newest run first, each by the primary key (no index by cell id: see the schema)
            "SELECT r.run_id FROM runs r WHERE r.run_id IS NOT ? AND EXISTS "
            f"(SELECT 1 FROM cells c WHERE c.run_id = r.run_id AND c.cell_id IN ({marks})) "
            "ORDER BY r.run_id DESC LIMIT 1",
            (exclude, *cell_ids),
        ).fetchone()
        return str(row[0]) if row else None


# Reasons a cell could not be decided that say nothing about the artifacts: such a record is never reused.
TRANSIENT = tuple(
    str(r)
    for r in (
        Reason.INDEX_UNREACHABLE,
        Reason.REGISTRY_UNREACHABLE,
        Reason.INTERRUPTED,
        Reason.RESULT_MISSING,
        Reason.TASK_ENDED,
        Reason.ENV_BUILD_FAILED,
        Reason.TORCH_UNAVAILABLE,
        Reason.TIMEOUT,
    )
)
# A row that may be reused (its parameters: ``TRANSIENT``).
_REUSABLE = f"forged = '' AND NOT (verdict = 'not-run' AND reason IN ({','.join('?' * len(TRANSIENT))}))"


def _damage(run_id: str, meta: object) -> str:
    """The ``damaged`` line open_run stored with a run's meta (a hand-edited index may hold anything)."""
    try:
        why = json.loads(meta).get("damaged") if isinstance(meta, str) else None
    except (ValueError, AttributeError, RecursionError):
        why = None
    return why if isinstance(why, str) else f"run {run_id} lost records of its journal: the run is damaged"


def _place(run: Run, cell_id: str) -> tuple[int | None, int | None]:
    return run.offsets.get(cell_id) or (None, None)


def _cell_row(run_id: str, r: CellResult, place: tuple[int, int] | None, forged: str = "") -> tuple[Any, ...]:
    return (run_id, *astuple(row_of(r)), *(place or (None, None)), forged)


def warn_forged(index: RunIndex, shown: int = 10) -> None:
    """Records a run could not have written (edited, renamed, repeated, never planned): shown, never reused."""
    import sys

    from stackmatrix.redact import redact

    forged = index.forged_records()
    for why in forged[:shown]:
        print(f"stackmatrix: warning: {redact(why)} (shown as it is, never reused)", file=sys.stderr)
    if len(forged) > shown:
        print(
            f"stackmatrix: warning: {len(forged) - shown} more records their runs could not have written",
            file=sys.stderr,
        )


def open_index(reports_dir: Path, *, sync: bool = True) -> RunIndex:
    index = RunIndex(reports_dir)
    if sync:
        try:
            index.sync()
        except BaseException:
            index.close()
            raise
    return index
