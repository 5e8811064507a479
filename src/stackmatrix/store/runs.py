"""Results on disk: ``<reports>/runs/<run-id>/``: ``run.json``, ``plan.json`` and ``journal.jsonl``. These files
are the source of truth; the SQLite index (store/index.py) is rebuilt from them. Runs from before the journal
(``cells/<cell-id>.json``) are still read.

A run is recorded from its first moment, so one whose process is gone without an ending reads as ``crashed`` and
one whose journal lost records as ``damaged``: neither passes for ``running`` or ``complete``. Every name written
is an id (ids.py), checked again here inside the run's directory; a damaged file read back is exit 2.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackmatrix import __version__
from stackmatrix.domain import CellResult, checked_declared
from stackmatrix.errors import BadInput, Interrupted, StackmatrixError, path_fault
from stackmatrix.files.atomic import atomic_write_bytes, atomic_write_text, remove_partial
from stackmatrix.files.readfile import parse_json, read_bytes, read_json
from stackmatrix.ids import check_cell_id, check_id_part, is_cell_id, is_id_part
from stackmatrix.redact import redact
from stackmatrix.store.journal import JOURNAL, Journal, count_records, read_records

Declared = Mapping[str, str | None]
# Space held from a run's start until it finishes: freed first, it lets a run that filled the disk still record
# its status and exit code in run.json.
RESERVE = ".reserve"
RESERVE_BYTES = 64 * 1024
HEARTBEAT = ".alive"
LOCK = ".lock"  # flock'd by the one process writing the run; holds its pid
_HELD: dict[str, int] = {}  # run directory -> the descriptor by which this process holds its lock
HEARTBEAT_EVERY_S = 30.0
# How long a lock whose holder is no longer alive may take to be released by the kernel.
LOCK_RELEASE_S = 10.0
# A run on another machine (a shard on a CI runner sharing the store) whose heartbeat is older than this is gone.
HEARTBEAT_STALE_S = 600.0
# run.json fields other code reads, and their types (a hand-edited run.json is input like any other)
META_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("started", "finished", "status", "purpose", "tier", "matrix_hash", "tool_version"), (str,)),
    **dict.fromkeys(("boot_id",), (str,)),
    **dict.fromkeys(("pid", "pid_start"), (int,)),
    **dict.fromkeys(("matrix", "shard", "candidate", "policy", "baseline"), (str,)),
    "exit_code": (int,),
    "cells_selected": (int,),
    "cells_written": (int,),
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """UTC start time to the microsecond, then a random suffix: ids sort in the order runs started, even two
    runs of the same second (a warm static run takes less than one)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + uuid.uuid4().hex[:6]


def host_facts() -> dict[str, str]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version()}


def boot_id() -> str:
    """This boot of this machine: a pid means something only within it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return socket.gethostname()


def process_start(pid: int) -> int | None:
    """A live process's start time in clock ticks since boot (Linux), so a recycled pid is not taken for the
    run's; None when there is none. A zombie (``Z``) or a dying process (``X``) is none: it runs no more, only its
    exit status waits to be collected (for a while after a ``kill -9``, or for good under a parent that never
    waits)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[19])
    except (ValueError, IndexError):
        return None


def _stat_fields(pid: int) -> list[bytes] | None:
    """``/proc/<pid>/stat`` after the command name, from the state (field 3) on. The name is in parentheses and
    may itself hold spaces and parentheses (a process may name itself ``a) Z (b``): it ends at the last ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields or None


def _touch(path: Path) -> None:
    """The heartbeat: created or its mtime set, never through a link planted at its name."""
    with suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        try:
            os.utime(fd)
        finally:
            os.close(fd)


def _alive(meta: Mapping[str, Any], heartbeat: Path) -> bool:
    """Whether the process writing a ``running`` run is still there."""
    pid = meta.get("pid")
    if meta.get("boot_id") == boot_id() and isinstance(pid, int):
        start = process_start(pid)
        return start is not None and start == meta.get("pid_start", start)
    try:  # another machine (or a run from before pids were recorded): its heartbeat says
        return time.time() - heartbeat.stat().st_mtime < HEARTBEAT_STALE_S
    except OSError:
        return False


@dataclass(frozen=True)
class Shortfall:
    """A finished run's files hold fewer records than the run says it wrote: records were lost after it ended (a
    journal cut, torn or replaced). The run is damaged; a merge of it would pass its lost cells off as not run."""

    path: Path  # what holds the records: the journal (a run from before it: its cells/ directory)
    held: int
    said: int
    source: str  # who says so, as the message ends: "run.json says were written", ...

    @property
    def missing(self) -> int:
        return self.said - self.held

    def __str__(self) -> str:
        return f"{self.path} holds {self.held} of the {self.said} records {self.source}: the run is damaged"


@dataclass
class Run:
    root: Path
    meta: dict[str, Any]
    _journal: Journal | None = field(default=None, repr=False, compare=False)
    _beat: threading.Event | None = field(default=None, repr=False, compare=False)
    # cell id -> (offset, length) of its record in the journal, for those this process appended
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)
    # cell id -> its line in the journal, as last read (messages name the line)
    lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    # cell id -> the journal line of a second record of it (``records``): a line repeated or renamed by hand
    repeated: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    # what open_run found lost (its status then reads ``damaged``)
    damage: Shortfall | None = field(default=None, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def cells_dir(self) -> Path:
        """Where runs from before the journal kept one file per cell."""
        return self.root / "cells"

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL

    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = Journal(self.journal_path)
        return self._journal

    def write_meta(self) -> None:
        atomic_write_text(self.root / "run.json", json.dumps(self.meta, indent=2, sort_keys=True))

    def mark_running(self, **extra: Any) -> None:
        """``running``, by this process (a new run, or one resumed): recorded before any probe."""
        pid = os.getpid()
        # the last ending's count goes too: the journal changes now (records dropped, cells appended)
        for key in ("finished", "exit_code", "error", "cells_written", "damaged"):
            self.meta.pop(key, None)
        self.damage = None
        self.meta.update(status="running", pid=pid, pid_start=process_start(pid), boot_id=boot_id(), **extra)
        self.write_meta()
        atomic_write_bytes(self.root / RESERVE, bytes(RESERVE_BYTES))
        self.start_heartbeat()

    def write_plan(
        self,
        selection: Mapping[str, Declared],
        cells: list[str],
        shard: str | None,
        decided: Mapping[str, Any] | None = None,
    ) -> None:
        """Every cell of the whole selection (all shards) with its pins, and this run's share: a merge can
        then name each cell whose result is missing instead of dropping it. ``decided``: the plan step's
        fingerprints, cache hits, builds and estimate (pipeline/plan.py)."""
        plan = {
            **(decided or {}),
            "shard": shard,
            "cells": cells,
            "selection": {k: dict(v) for k, v in sorted(selection.items())},
        }
        atomic_write_text(self.root / "plan.json", json.dumps(plan, separators=(",", ":")))

    def plan(self) -> dict[str, Any] | None:
        """The plan, checked: its shard, its cells and its selection's cell ids (a merge writes files by them)."""
        path = self.root / "plan.json"
        if not os.path.lexists(path):
            return None
        plan = read_json(path, "a plan.json")
        where = str(path)
        if not isinstance(plan, dict):
            raise BadInput(where, "<top level>", type(plan).__name__, "an object with shard, cells and selection")
        cells, selection = plan.get("cells"), plan.get("selection")
        if not isinstance(cells, list) or not all(is_cell_id(c) for c in cells):
            raise BadInput(where, "cells", _first_bad(cells), "a list of cell ids")
        if not isinstance(selection, dict) or not all(is_cell_id(k) and _declared(v) for k, v in selection.items()):
            raise BadInput(where, "selection", _first_bad(selection), "an object of cell id -> declared pins")
        if plan.get("shard") is not None and not isinstance(plan["shard"], str):
            raise BadInput(where, "shard", plan["shard"], "i/n or null")
        return plan

    def write_cell(self, result: CellResult, *, slow: bool = False) -> None:
        """Append a finished cell to the journal (``slow``: make it durable now; see store/journal.py)."""
        check_cell_id(result.cell_id, str(self.journal_path), "cell")
        record = json.dumps(result.to_json()).encode()
        self.offsets[result.cell_id] = (self.journal().append(record, slow=slow), len(record))

    def copy_record(self, cell_id: str, record: bytes) -> None:
        """Append a stored record unchanged (a cache hit: the same fingerprint was probed by an earlier run)."""
        check_cell_id(cell_id, str(self.journal_path), "cell")
        self.offsets[cell_id] = (self.journal().append(record), len(record))

    def drop_records(self, cell_ids: set[str]) -> None:
        """The journal without these cells' records (to be probed again), replaced at once: an interruption
        leaves it whole, with or without them."""
        if not cell_ids:
            return
        self.close_journal()
        keep = [raw for cell, _, raw, _, _ in read_records(self.journal_path) if cell not in cell_ids]
        atomic_write_bytes(self.journal_path, b"".join(raw + b"\n" for raw in keep))
        self.offsets.clear()

    def close_journal(self) -> None:
        if self._journal is not None:
            journal, self._journal = self._journal, None
            journal.close()

    def lock(self) -> None:
        """Be the one process writing this run (a run, its resume, its collect): an exclusive lock on
        ``<run>/.lock`` held until the run finishes or the process ends; a second process is refused (exit 2)
        naming the holder's pid. The Slurm tasks of a run write their own files and take none."""
        key = str(self.root.resolve())
        if key in _HELD:
            return
        path = self.root / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise path_fault(exc) from None
        deadline = time.monotonic() + LOCK_RELEASE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            # A holder killed with SIGKILL reads as a zombie while its other threads still exit and hold the
            # descriptor: its lock goes within moments, so wait for that rather than refuse a dead run's resume.
            if (holder.isdigit() and process_start(int(holder)) is not None) or time.monotonic() > deadline:
                os.close(fd)
                raise BadInput(
                    str(path), "lock", f"held by pid {holder}", "a run no other process is writing (one at a time)"
                )
            time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD[key] = fd

    def unlock(self) -> None:
        fd = _HELD.pop(str(self.root.resolve()), None)
        if fd is not None:
            os.close(fd)

    def finish(self, status: str, exit_code: int, **extra: Any) -> None:
        # The reserve goes first: on a full disk its space is what lets run.json say how the run ended.
        (self.root / RESERVE).unlink(missing_ok=True)
        self.stop_heartbeat()
        try:
            self.close_journal()
        finally:
            if self.cells_dir.is_dir() and not self.cells_dir.is_symlink():  # never sweep where a link points
                remove_partial(self.cells_dir)
            written = self.count()
            self.meta.update(status=status, exit_code=exit_code, finished=now(), cells_written=written, **extra)
            try:
                self.write_meta()
            finally:
                self.unlock()

    def cell_files(self) -> list[Path]:
        """A run from before the journal: its ``cells/<cell id>.json`` files (temporary files are not cells)."""
        if not self.cells_dir.is_dir():
            return []
        return sorted(p for p in self.cells_dir.glob("*.json") if is_cell_id(p.name[: -len(".json")]))

    def records(self) -> dict[str, tuple[dict[str, Any], bytes, int | None]]:
        """Cell id -> (record, its JSON bytes, its offset in the journal): the cell files of an older run, then the
        journal; a cell written twice is its last record."""
        out: dict[str, tuple[dict[str, Any], bytes, int | None]] = {}
        self.lines.clear()
        for path in self.cell_files():
            data = read_bytes(path, "a cell result")
            out[path.name[: -len(".json")]] = (_object(path, parse_json(path, data, "a cell result")), data, None)
        self.repeated.clear()
        if os.path.lexists(self.journal_path):
            for cell, record, raw, offset, number in read_records(self.journal_path):
                if cell in self.lines:  # one run writes each cell once: a second record is no record of it
                    self.repeated[cell] = number
                out[cell] = (record, raw, offset)
                self.lines[cell] = number
        return out

    def count(self) -> int:
        """Cells written: the journal's complete, non-blank lines (no record parsed: one line per cell, none written
        twice by one run), and an older run's cell files."""
        return count_records(self.journal_path) + len(self.cell_files())

    def shortfall(self, plan: Mapping[str, Any] | None = None) -> Shortfall | None:
        """Records this finished run says it wrote and its files no longer hold: run.json's ``cells_written``, and
        for a ``complete`` run one record per cell of its plan (``plan`` when the caller has read it; read here
        only where run.json has no count, as runs written by hand may lack one: a plan can be megabytes)."""
        claims = []
        written = self.meta.get("cells_written")
        if self.meta.get("finished") is not None and isinstance(written, int):
            claims.append((written, "run.json says were written"))
        if self.meta.get("status") == "complete":
            plan = plan if plan is not None or claims else self.plan()
            if plan is not None:
                claims.append((len(plan["cells"]), "plan.json lists for a complete run"))
        if not claims:
            return None
        said, source = max(claims)
        held = self.count()
        legacy = not os.path.lexists(self.journal_path) and os.path.lexists(self.cells_dir)
        path = self.cells_dir if legacy else self.journal_path
        return Shortfall(path, held, said, source) if held < said else None

    def cell_ids(self) -> list[str]:
        return sorted(self.records())

    def results(self) -> Iterator[CellResult]:
        for cell, (record, _, _) in sorted(self.records().items()):
            yield parse_cell(self.where(cell), record, cell)

    def where(self, cell_id: str) -> str:
        """The file holding a cell's record, and its line in the journal (for messages naming it)."""
        if cell_id in self.lines:
            return f"{self.journal_path}:{self.lines[cell_id]}"
        legacy = self.cells_dir / f"{cell_id}.json"
        return str(legacy if not os.path.lexists(self.journal_path) and legacy.exists() else self.journal_path)

    def start_heartbeat(self) -> None:
        """Touch the heartbeat file while this process lives (a daemon thread: it dies with the process)."""
        stop = self._beat = threading.Event()
        beat = self.root / HEARTBEAT

        def loop() -> None:
            while True:
                _touch(beat)
                if stop.wait(HEARTBEAT_EVERY_S):
                    return

        threading.Thread(target=loop, name="stackmatrix-heartbeat", daemon=True).start()

    def stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.set()
            self._beat = None


def read_cell(path: Path) -> CellResult:
    """A stored cell file (runs from before the journal), checked: a damaged file is exit 2 naming it."""
    return parse_cell(path, read_json(path, "a cell result"), path.name[: -len(".json")])


def _object(path: Path, data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadInput(str(path), "<cell>", type(data).__name__, "a cell result as stackmatrix writes it")
    return data


def parse_cell(path: Path | str, data: object, cell_id: str) -> CellResult:
    """``data`` (the record of cell ``cell_id`` in ``path``) as a result, or exit 2 naming the file."""
    try:
        if not isinstance(data, dict):
            raise TypeError(f"the file holds {type(data).__name__}, not an object")
        result = CellResult.from_json(data)
        if result.cell_id != cell_id:
            raise ValueError(f"the file holds cell {result.cell_id!r}")
        if result.declared_verdict is None:  # a record from before the ladder stored its decisions
            from stackmatrix.ladder.verdict import decided

            result = decided(result)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(
            str(path), "<cell>", f"{type(exc).__name__}: {exc}", "a cell result as stackmatrix writes it"
        ) from None
    return result


def _declared(value: object) -> bool:
    try:
        checked_declared(value)
    except TypeError:
        return False
    return True


def _first_bad(value: object) -> object:
    if isinstance(value, list):
        return next((c for c in value if not is_cell_id(c)), value)
    if isinstance(value, dict):
        return next((k for k, v in value.items() if not is_cell_id(k) or not _declared(v)), value)
    return value


@contextmanager
def recorded(run: Run) -> Iterator[Run]:
    """However the body ends, the run says so: an error's status and exit code (``failed``, ``interrupted``,
    ``crashed``) are written before the error goes on to the CLI. Where even that write fails (a full disk),
    the first error is the one reported."""
    try:
        yield run
    except BaseException as exc:
        record_ending(run, exc)
        raise


def record_ending(run: Run, exc: BaseException) -> None:
    """The status and exit code ``exc`` ends the command with, in run.json (best effort: on a full disk the first
    error is the one reported)."""
    status, code = _ending(exc)
    with suppress(OSError, StackmatrixError):
        run.finish(status, code, error=redact(f"{type(exc).__name__}: {exc}")[:500])


def _ending(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, Interrupted):
        return "interrupted", exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", Interrupted.exit_code
    if isinstance(exc, StackmatrixError):
        return "failed", exc.exit_code
    if isinstance(exc, OSError):
        return "failed", path_fault(exc).exit_code
    return "crashed", 1


def start_run(
    reports_dir: Path,
    *,
    matrix_hash: str,
    matrix_path: str,
    tier: str,
    selected: int,
    purpose: str = "matrix",
    **extra: Any,
) -> Run:
    """``purpose``: ``matrix`` (a run of the matrix), ``gate`` (a candidate's cells) or ``merge`` (shards)."""
    run_id = new_run_id()
    if os.path.islink(reports_dir / "latest"):  # a planted link where the run's reports go: refused before probing
        store_dir(reports_dir, "latest")
    root = store_dir(reports_dir, "runs") / run_id
    root.mkdir(parents=True, exist_ok=False)
    meta = {
        "run_id": run_id,
        "purpose": purpose,
        "tool_version": __version__,
        "matrix": matrix_path,
        "matrix_hash": matrix_hash,
        "tier": tier,
        "cells_selected": selected,
        "host": host_facts(),
        "started": now(),
        **extra,
    }
    run = Run(root, meta)
    try:
        run.lock()
        run.mark_running()
    except BaseException:  # nothing half-made is left: a directory without run.json is no run
        run.unlock()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return run


def store_dir(reports_dir: Path, *parts: str) -> Path:
    """A folder the store writes (``runs``, ``latest``, ``rendered/<run>``): checked with lstat part by part, so a
    link planted in a shared store cannot send a run's or a report's writes elsewhere (the store's own root may be
    a link: the user chose it)."""
    path = reports_dir
    for part in parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            raise BadInput(
                str(path),
                "<path>",
                f"a link to {os.readlink(path)}",
                "a directory of the store (a link is not followed)",
            )
        if not stat.S_ISDIR(mode):
            raise BadInput(str(path), "<path>", "not a directory", "a directory of the store")
    return path


def open_run(path: Path, *, named: bool = False) -> Run:
    """A stored run. ``named``: the directory is ``runs/<run-id>`` of a store, so its name must be the run id
    (a run.json saying otherwise would make the index point elsewhere)."""
    meta_path = path / "run.json"
    if not os.path.lexists(meta_path):
        raise BadInput(str(path), "run.json", str(meta_path), "a run directory (holding run.json)")
    meta = read_json(meta_path, "a run.json")
    if not isinstance(meta, dict):
        raise BadInput(str(meta_path), "<top level>", type(meta).__name__, "an object with a run_id")
    check_id_part(meta.get("run_id"), str(meta_path), "run_id")
    for key, kinds in META_TYPES.items():  # the index stores these as columns; a merge compares them
        value = meta.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise BadInput(str(meta_path), key, value, f"{' or '.join(k.__name__ for k in kinds)} or null")
    if named and meta["run_id"] != path.name:
        raise BadInput(str(meta_path), "run_id", meta["run_id"], f"the run's directory name {path.name!r}")
    if meta.get("status") == "running" and not _alive(meta, path / HEARTBEAT):
        meta["status"] = "crashed"  # read so; run.json is left as the process left it (resume rewrites it)
    run = Run(path, meta)
    run.damage = run.shortfall()
    if run.damage is not None:  # read so, with why (the index keeps it for the warning); run.json is left as it is
        meta.update(status="damaged", damaged=str(run.damage))
    return run


def run_dirs(reports_dir: Path) -> list[Path]:
    """Run directories, oldest first (run ids start with their UTC start time); names that are not run ids
    (temporary, hidden or planted) are not runs."""
    root = reports_dir / "runs"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if is_id_part(p.name) and (p / "run.json").is_file())


def find_run(reports_dir: Path, ref: str) -> Run:
    """A run by path, by id, or by a unique prefix of its id."""
    if not ref.strip():
        raise BadInput(str(reports_dir / "runs"), "run", ref, "a run id, a unique prefix or a run directory")
    path = Path(ref)
    if (path / "run.json").is_file():
        return open_run(path)
    hits = [p for p in run_dirs(reports_dir) if p.name.startswith(ref)]
    if len(hits) != 1:
        known = ", ".join(p.name for p in run_dirs(reports_dir)[-5:]) or "none"
        what = "matches several runs" if hits else "matches no run"
        raise BadInput(
            str(reports_dir / "runs"),
            "run",
            ref,
            f"a run id, a unique prefix or a run directory ({what}; latest: {known})",
        )
    return open_run(hits[0], named=True)
