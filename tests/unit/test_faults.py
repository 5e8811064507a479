"""Fault injection at every write site: the reports dir (a run's start, its cell files mid-run), the run index,
``reports/latest``, the cache (index listings, wheel members and facts), ``report --out``, ``diff --output``,
``gate --summary`` and ``merge``.

Each fault is made with the real mechanism where this machine has it, else with the documented fallback (never a
skip):

- read-only: as root with ``mount`` (CI runs as root; root ignores permission bits), a read-only bind mount of the
  directory (or file) on itself: EROFS even for root. Not root: ``chmod`` (EACCES). Root without ``mount``: a
  patched ``os``/``io``/``sqlite3`` raising EROFS on writes under the path.
- full: as root with ``mount``, a tmpfs resized to what it holds plus the room the test allows (ENOSPC). Otherwise a
  patched write raising ENOSPC once the same room is used up (and a SQLite page limit for the index).
- a file where a directory must be, a directory where a file must be: plain files and directories.

``STACKMATRIX_TEST_FAULTS=patch`` forces the patched fallback (to check it on a machine that can mount). Every mount
is undone in the fixture's teardown, whatever the test did.

The contract (exit codes, one line on stderr naming the path, nothing stored lost, no half-written file, a run that
cannot write records how it ended) is asserted as the issue states it; a failing assertion here is a bug in src/.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import io
import json
import math
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from stackmatrix.cli.main import main
from stackmatrix.store.runs import RESERVE, RESERVE_BYTES
from tests.mirror import SMALL_MATRIX, Server, stack_mirror
from tests.records import raw_records

if TYPE_CHECKING:
    from _pytest.capture import CaptureResult

BLOCK = 4096
KIB = 1024
CELLS = 12  # SMALL_MATRIX's cells
MOUNT, UMOUNT = shutil.which("mount"), shutil.which("umount")
POLICY = 'name = "faults"\n[[require]]\nmodel = "google/gemma-4-E4B-it"\ntarget = "l4x1"\n'
FILL = ".fill"  # what tops a tmpfs up when it holds nothing (a tmpfs of size 0 is unlimited)


# -- mechanisms ---------------------------------------------------------------------------------------------


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@functools.cache
def can_mount() -> bool:
    """Root, ``mount`` present, and a tmpfs really mounts here (a container without CAP_SYS_ADMIN cannot)."""
    if os.environ.get("STACKMATRIX_TEST_FAULTS") == "patch" or os.geteuid() != 0 or not MOUNT or not UMOUNT:
        return False
    probe = Path(tempfile.mkdtemp(prefix="stackmatrix-mount-probe-"))
    try:
        if _sh(MOUNT, "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(probe)).returncode != 0:
            return False
        _sh(UMOUNT, str(probe))
        return True
    finally:
        probe.rmdir()


def mechanism(kind: str) -> str:
    """How a ``read-only`` or ``full`` fault is made on this machine: ``mount``, ``chmod`` or ``patch``."""
    if can_mount():
        return "mount"
    if kind == "read-only" and os.geteuid() != 0 and os.environ.get("STACKMATRIX_TEST_FAULTS") != "patch":
        return "chmod"
    return "patch"


def _blocks(size: int) -> int:
    return math.ceil(size / BLOCK) * BLOCK


@dataclass
class _Rule:
    root: str
    kind: str  # "read-only" or "full"
    room: int = 0  # bytes left, for "full"
    exact: bool = False  # the rule covers one file, not a tree

    def covers(self, path: str) -> bool:
        return path == self.root or (not self.exact and path.startswith(self.root.rstrip("/") + "/"))


class _Metered:
    """A file opened for writing on an emulated full filesystem: each write takes blocks from the room left."""

    def __init__(self, fh: Any, rule: _Rule) -> None:
        self._fh, self._rule, self._written = fh, rule, 0

    def write(self, data: Any) -> int:
        size = len(data)
        need = _blocks(self._written + size) - _blocks(self._written)
        if need > self._rule.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._rule.room -= need
        self._written += size
        written: int = self._fh.write(data)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _Metered:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class _Emulator:
    """The fallback: ``os``, ``io`` and ``sqlite3`` patched so writes under a rule's path fail as the kernel would
    fail them (EROFS on a read-only path; ENOSPC once a full path's room is used; SQLite's own readonly and
    full errors for a database there). Everything else passes through untouched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rules: list[_Rule] = []
        self._fds: dict[int, _Rule] = {}
        real = {name: getattr(os, name) for name in ("open", "mkdir", "replace", "rename", "unlink", "remove", "rmdir")}
        real_fdopen, real_io_open, real_connect = os.fdopen, io.open, sqlite3.connect

        def rule_of(path: Any) -> _Rule | None:
            if isinstance(path, int):
                return None
            where = os.path.abspath(os.fsdecode(path))
            return next((r for r in reversed(self.rules) if r.covers(where)), None)

        def refuse(path: Any, code: int = errno.EROFS) -> OSError:
            return OSError(code, os.strerror(code), os.fsdecode(path))

        def credit(path: Any, dir_fd: int | None = None) -> None:
            rule = rule_of(path) if dir_fd is None else None
            if rule is not None and rule.kind == "full":
                try:
                    st = os.lstat(path)
                except OSError:
                    return
                if os.path.isfile(path):
                    rule.room += _blocks(st.st_size)

        def p_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            rule = rule_of(path) if dir_fd is None else None
            if rule is not None and rule.kind == "read-only" and flags & _WRITE_FLAGS:
                raise refuse(path)
            if rule is not None and flags & os.O_TRUNC:
                credit(path)
            fd: int = real["open"](path, flags, mode, dir_fd=dir_fd)
            self._fds.pop(fd, None)
            if rule is not None and rule.kind == "full" and flags & _WRITE_FLAGS:
                self._fds[fd] = rule
            return fd

        def p_mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
            rule = rule_of(path) if dir_fd is None else None
            if rule is not None and rule.kind == "read-only" and not os.path.lexists(path):
                raise refuse(path)
            real["mkdir"](path, mode, dir_fd=dir_fd)

        def p_removal(name: str) -> Callable[..., None]:
            def removal(path: Any, *, dir_fd: int | None = None) -> None:
                rule = rule_of(path) if dir_fd is None else None
                if rule is not None and rule.kind == "read-only":
                    raise refuse(path)
                credit(path, dir_fd)
                real[name](path, dir_fd=dir_fd)

            return removal

        def p_move(name: str) -> Callable[..., None]:
            def move(src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
                for path in (src, dst):
                    rule = rule_of(path)
                    if rule is not None and rule.kind == "read-only":
                        raise refuse(path)
                if os.path.isfile(dst) and not os.path.samefile(src, dst):
                    credit(dst)
                real[name](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

            return move

        def p_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            fh = real_fdopen(fd, *args, **kwargs)
            rule = self._fds.pop(fd, None)
            return _Metered(fh, rule) if rule is not None else fh

        def p_io_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            rule = rule_of(file)
            writes = any(c in mode for c in "wax+")
            if rule is not None and writes and rule.kind == "read-only":
                raise refuse(file)
            if rule is not None and writes and "w" in mode:
                credit(file)
            fh = real_io_open(file, mode, *args, **kwargs)
            return _Metered(fh, rule) if rule is not None and writes else fh

        def p_connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
            rule = rule_of(database) if not kwargs.get("uri") else None
            if rule is not None and rule.kind == "read-only":
                where = os.path.abspath(os.fsdecode(database))
                ro: sqlite3.Connection = real_connect(f"file:{quote(where)}?mode=ro", *args, **{**kwargs, "uri": True})
                return ro
            db: sqlite3.Connection = real_connect(database, *args, **kwargs)
            if rule is not None:  # full: the database may not grow by a page
                pages = db.execute("PRAGMA page_count").fetchone()[0]
                db.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
            return db

        for name in ("open", "mkdir"):
            monkeypatch.setattr(os, name, p_open if name == "open" else p_mkdir)
        for name in ("unlink", "remove", "rmdir"):
            monkeypatch.setattr(os, name, p_removal(name))
        for name in ("replace", "rename"):
            monkeypatch.setattr(os, name, p_move(name))
        monkeypatch.setattr(os, "fdopen", p_fdopen)
        monkeypatch.setattr(io, "open", p_io_open)
        monkeypatch.setattr("builtins.open", p_io_open)
        monkeypatch.setattr(sqlite3, "connect", p_connect)


@dataclass
class Faults:
    """Makes paths read-only or full by the best mechanism this machine has, and undoes it all at teardown."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    mounts: list[Path] = field(default_factory=list)
    modes: list[tuple[Path, int]] = field(default_factory=list)
    areas: set[Path] = field(default_factory=set)
    emulator: _Emulator | None = None

    def _mount(self, *argv: str, at: Path) -> None:
        """``mount argv``; a new mount (not a remount) is recorded at ``at`` to be unmounted at teardown."""
        assert MOUNT is not None
        done = _sh(MOUNT, *argv)
        assert done.returncode == 0, f"mount {argv}: {done.stderr}"
        if "-o" not in argv or not any(a.startswith("remount") for a in argv):
            self.mounts.append(at)

    def _emulate(self, rule: _Rule) -> None:
        if self.emulator is None:
            self.emulator = _Emulator(self.monkeypatch)
        self.emulator.rules.append(rule)

    def area(self, path: Path, size: int = 16 * 1024 * KIB) -> Path:
        """A new, empty directory that ``fill`` can later fill: its own tmpfs where this machine can mount."""
        path.mkdir(parents=True)
        if mechanism("full") == "mount":
            self._mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path), at=path)
            self.areas.add(path)
        return path

    def fill(self, path: Path, room: int = 0) -> str:
        """Leave ``room`` bytes free under the area ``path`` (writes beyond fail with ENOSPC)."""
        how = mechanism("full")
        if how == "mount":
            assert path in self.areas, f"{path} is not an area"
            st = os.statvfs(path)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            if used == 0:
                (path / FILL).write_bytes(bytes(BLOCK))
                used = BLOCK
            self._mount("-o", f"remount,size={used + room}", str(path), at=path)
            free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
            assert free == _blocks(room), f"{path}: {free} bytes free, wanted {room}"
        else:
            self._emulate(_Rule(str(path.absolute()), "full", _blocks(room)))
        return how

    def full_file(self, path: Path) -> str:
        """The existing file ``path`` on a filesystem with no room left: it cannot grow by a byte."""
        how = mechanism("full")
        if how == "mount":
            holder = self.area(self.tmp / f"_full_{len(self.mounts)}", size=1024 * KIB)
            shutil.copy2(path, holder / path.name)
            self.fill(holder)
            self._mount("--bind", str(holder / path.name), str(path), at=path)
        else:
            self._emulate(_Rule(str(path.absolute()), "full", 0, exact=True))
        return how

    def read_only(self, path: Path) -> str:
        """``path`` (a directory and everything under it, or one file) read-only even for root."""
        how = mechanism("read-only")
        if how == "mount":
            self._mount("--bind", str(path), str(path), at=path)
            self._mount("-o", "remount,bind,ro", str(path), at=path)
        elif how == "chmod":
            for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
                if not p.is_symlink():
                    self.modes.append((p, p.stat().st_mode & 0o7777))
                    p.chmod(0o555 if p.is_dir() else 0o444)
        else:
            self._emulate(_Rule(str(path.absolute()), "read-only", exact=path.is_file()))
        return how

    def undo(self) -> None:
        """Every mount undone, innermost first (lazily if something still holds it), every mode restored."""
        stuck = []
        gc.collect()  # a connection or file the command left open (on an error path) must not hold a mount busy
        for p, mode in reversed(self.modes):
            p.chmod(mode)
        for at in reversed(self.mounts):
            assert UMOUNT is not None
            if _sh(UMOUNT, str(at)).returncode != 0 and _sh(UMOUNT, "-l", str(at)).returncode != 0:
                stuck.append(str(at))
        self.mounts.clear()
        assert not stuck, f"could not unmount {stuck}"


@contextlib.contextmanager
def making_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    """A ``Faults`` whose every mount, mode and patch is undone on leaving, whatever the test did."""
    f = Faults(tmp_path, monkeypatch)
    try:
        yield f
    finally:
        monkeypatch.undo()  # the emulator first: unmounting and chmod go through the real os
        f.undo()


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    with making_faults(tmp_path, monkeypatch) as f:
        yield f


# -- the stored world every test starts from ----------------------------------------------------------------


@dataclass(frozen=True)
class World:
    mirror: Server
    matrix: Path
    policy: Path
    cache: Path  # warm: every listing, METADATA, member, names and facts file the matrix needs
    store: Path  # two complete runs of SMALL_MATRIX, latest/ rendered, the index in step
    shards: tuple[Path, Path]  # run --shard 1/2 and 2/2, each in its own reports dir

    def _where(self, cache: Path, reports: Path) -> list[str]:
        return [
            "--matrix",
            str(self.matrix),
            "--index-url",
            self.mirror.index_url,
            "--cache-dir",
            str(cache),
            "--reports-dir",
            str(reports),
        ]

    def run(self, cache: Path, reports: Path, *extra: str) -> list[str]:
        return ["run", "--quiet", *self._where(cache, reports), *extra]

    def gate(self, cache: Path, reports: Path, *extra: str) -> list[str]:
        policy = ["--policy", str(self.policy), "--candidate", "vllm=0.19.0"]
        return ["gate", *policy, *self._where(cache, reports), *extra]


def _clean_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    for name in [n for n in os.environ if n.startswith("STACKMATRIX_")]:
        mp.delenv(name)
    mp.setenv("XDG_CACHE_HOME", str(home))  # a crash log (an internal error) lands here, where tests look


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("world")
    mirror = stack_mirror()
    mp = pytest.MonkeyPatch()
    _clean_env(mp, root / "xdg")
    # A command that gives up hangs up on requests in flight; the mirror (this process's thread) would print the
    # reset as a traceback on the stderr the tests read. It is the test server's, not the command's, output.
    mp.setattr(mirror.httpd, "handle_error", lambda request, client_address: None)
    try:
        matrix, policy = root / "matrix.toml", root / "policy.toml"
        matrix.write_text(SMALL_MATRIX)
        policy.write_text(POLICY)
        w = World(mirror, matrix, policy, root / "cache", root / "reports", (root / "shard1", root / "shard2"))
        for _ in range(2):
            assert main(w.run(w.cache, w.store)) == 0
        for i, shard in enumerate(w.shards, 1):
            assert main(w.run(w.cache, shard, "--shard", f"{i}/2")) == 0
        assert main(w.gate(w.cache, root / "gate-warmup")) in (0, 1)  # the gate's facts too: no test writes the cache
        assert len(run_dirs(w.store)) == 2 and len(_cells(run_dirs(w.store)[-1])) == CELLS
        yield w
    finally:
        mp.undo()
        mirror.close()


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch, tmp_path / "xdg")


# -- what every test asserts ----------------------------------------------------------------------------------


def run_dirs(store: Path) -> list[Path]:
    runs = store / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def _cells(run_dir: Path) -> list[bytes]:
    return list(raw_records(run_dir).values())


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path (the filler that tops a tmpfs up is not the store's)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != FILL
    }


def copy_into(src: Path, dst: Path) -> Path:
    """``src``'s tree into ``dst`` (an area, perhaps), times kept (the index's stamps stay valid)."""
    shutil.copytree(src, dst, dirs_exist_ok=True, symlinks=True)
    return dst


def leftovers(root: Path) -> list[str]:
    """Half-written files: temporary files, and a run's reserve outliving the run."""
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or p.name == RESERVE)


def captured(capfd: pytest.CaptureFixture[str]) -> CaptureResult[str]:
    """What the command printed, once every process it forked and every worker thread it left running have ended,
    as the interpreter waits for them at exit: a renderer child's traceback reaches the user's terminal even after
    the command returned, and a worker still writing the cache when the command gave up finishes (or cleans up)."""
    for child in multiprocessing.active_children():
        child.join(30)
    for thread in threading.enumerate():
        if thread.name.startswith("ThreadPoolExecutor"):
            thread.join(30)
    return capfd.readouterr()


def one_line(err: str, *paths: Path) -> str:
    """stderr is exactly one ``stackmatrix:`` line naming one of ``paths`` (or a path under one)."""
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert lines[0].startswith("stackmatrix: "), err
    assert any(str(p) in lines[0] for p in paths), f"names none of {[str(p) for p in paths]}: {lines[0]}"
    return lines[0]


def no_crash_log(*roots: Path) -> None:
    """No internal error: no crash log under the test's own directories or the shared cache (where
    ``--cache-dir`` sends one)."""
    crashes = [p for root in roots for p in root.rglob("crash-*.log")]
    assert not crashes, f"internal error, crash log {crashes}: {crashes[0].read_text()[-2000:]}"


def recorded_as(run_dir: Path, code: int, status: str | None = None) -> dict[str, Any]:
    """The run says how it ended: its status (not ``running``) and the exit code the command ended with, and
    ``cells_written`` counts the cell files really there."""
    meta: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] != "running", meta
    if status is not None:
        assert meta["status"] == status, meta
    assert meta["cells_written"] == len(_cells(run_dir)), meta
    assert meta["exit_code"] == code, f"run.json records exit {meta['exit_code']}, the command exited {code}"
    return meta


def new_runs(store: Path, before: dict[str, bytes]) -> list[Path]:
    return [p for p in run_dirs(store) if f"runs/{p.name}/run.json" not in before]


def unwritable(faults: Faults, kind: str, path: Path, prior: Path | None = None, room: int = 0) -> tuple[int, str]:
    """Make the directory ``path`` unwritable by ``kind`` (``read-only``; ``full``: ``room`` bytes left; ``file``:
    a file stands there; ``under-file``: its parent is a file), first holding a copy of ``prior`` if given. The
    exit code the contract wants, and the mechanism used."""
    if kind == "file":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("a file, not a directory\n")
        return 2, "file"
    if kind == "under-file":
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.write_text("a file, not a directory\n")
        return 2, "file"
    faults.area(path)
    if prior is not None:
        copy_into(prior, path)
    return 4, faults.fill(path, room) if kind == "full" else faults.read_only(path)


# -- the reports dir: a run's start ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["read-only", "full", "file"])
def test_run_that_cannot_start_creates_nothing(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """A reports dir that is read-only, has no room for the run's start (run.json fits, its reserve does not), or
    is a file: exit 4 (2 for the file), one line naming it, no run created, the stored runs byte-identical."""
    store = tmp_path / "reports"
    # full: room for run.json, not for the 64 KiB reserve
    want, how = unwritable(faults, kind, store, world.store, room=8 * KIB)
    before = snapshot(store) if store.is_dir() else {}
    code = main(world.run(world.cache, store))
    err = captured(capfd).err
    assert code == want, f"{how}: exit {code}: {err}"
    one_line(err, store)
    no_crash_log(tmp_path, world.cache)
    if store.is_dir():
        assert snapshot(store) == before
        assert leftovers(store) == []
    else:
        assert store.read_text() == "a file, not a directory\n"


def test_run_where_runs_is_a_file(world: World, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``reports/runs`` is a file: the user's reports dir is a bad path (exit 2), nothing else is touched."""
    store = tmp_path / "reports"
    store.mkdir()
    (store / "runs").write_text("not a directory\n")
    code = main(world.run(world.cache, store))
    err = captured(capfd).err
    assert code == 2, err
    one_line(err, store / "runs")
    assert snapshot(store) == {"runs": b"not a directory\n"}


# -- the reports dir: cell files mid-run ----------------------------------------------------------------------


def test_run_that_fills_the_disk_midway_records_failed(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Room for run.json, the reserve, plan.json and five cell records (sized from a stored run of the same
    matrix), not for all twelve. The run says ``failed`` with exit 4 and counts the cells it kept; no temporary
    file and no reserve remain; the runs stored before, the index and latest/ are byte-identical."""
    store = copy_into(world.store, faults.area(tmp_path / "reports"))
    stored = run_dirs(world.store)[-1]
    cell = max(_blocks(len(r)) for r in _cells(stored))
    room = sum(_blocks((stored / n).stat().st_size) for n in ("run.json", "plan.json")) + RESERVE_BYTES + 5 * cell
    how = faults.fill(store, room)
    before = snapshot(store)
    code = main(world.run(world.cache, store))
    err = captured(capfd).err
    assert code == 4, f"{how}: exit {code}: {err}"
    line = one_line(err, store)
    assert "ENOSPC" in line or "No space left" in line, line
    no_crash_log(tmp_path, world.cache)
    (run,) = new_runs(store, before)
    meta = recorded_as(run, 4, "failed")
    assert 0 < meta["cells_written"] < CELLS, meta
    assert leftovers(store) == []
    json.loads((run / "plan.json").read_text())
    after = snapshot(store)
    assert {k: v for k, v in after.items() if not k.startswith(f"runs/{run.name}/")} == before


# -- the run index ----------------------------------------------------------------------------------------------


def test_history_diff_and_report_read_a_read_only_store(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A read-only store whose index is in step with its runs still answers history, diff and ``report --out``
    elsewhere, as it did writable."""
    store = copy_into(world.store, faults.area(tmp_path / "reports"))
    argv = [
        ["history", "--reports-dir", str(store), "-k", "e4b"],
        ["diff", "--reports-dir", str(store)],
        ["report", "--reports-dir", str(store), "--format", "md", "--out", str(tmp_path / "rendered")],
    ]
    writable = []
    for a in argv:
        assert main(a) == 0
        writable.append(captured(capfd))
    before = snapshot(store)
    how = faults.read_only(store)
    for a, expected in zip(argv, writable, strict=True):
        code = main(a)
        out = captured(capfd)
        assert (code, out.err) == (0, ""), f"{how}: {a[0]}: exit {code}: {out.err}"
        assert out.out == expected.out
    assert snapshot(store) == before


@pytest.mark.parametrize("index", ["missing", "stale"])
def test_history_on_a_read_only_store_without_a_current_index(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], index: str
) -> None:
    """A read-only store whose index is missing, or misses its newest run: history reads (exit 0) or says in one
    line that the index cannot be written (exit 4 naming it); either way the store is unchanged."""
    store = copy_into(world.store, faults.area(tmp_path / "reports"))
    (store / "index.sqlite").unlink()
    if index == "stale":  # an index of the first run only
        newest = run_dirs(store)[-1]
        aside = store / ".aside"  # on the same filesystem: a rename
        newest.rename(aside)
        assert main(["history", "--reports-dir", str(store), "-k", "e4b"]) == 0
        aside.rename(newest)
        captured(capfd)
    before = snapshot(store)
    how = faults.read_only(store)
    code = main(["history", "--reports-dir", str(store), "-k", "e4b"])
    out = captured(capfd)
    if code == 0:
        assert out.err == "" and "e4b" in out.out
    else:
        assert code == 4, f"{how}: exit {code}: {out.err}"
        one_line(out.err, store / "index.sqlite")
    no_crash_log(tmp_path, world.cache)
    assert snapshot(store) == before


@pytest.mark.parametrize("kind", ["read-only", "full", "directory"])
def test_run_whose_index_update_fails(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """The run's cells and run.json are written, then ``index.sqlite`` cannot take the run (read-only, full): exit
    4 naming the index, every cell of the run kept, the runs stored before byte-identical, the index (derived
    data) still readable, and the run records the exit it ended with. A directory standing there: the plan, which
    reads the index for cache hits, refuses it (exit 2) before any run is started."""
    store = copy_into(world.store, tmp_path / "reports")
    index = store / "index.sqlite"
    want = 4
    if kind == "read-only":
        how = faults.read_only(index)
    elif kind == "full":
        how = faults.full_file(index)
    else:
        index.unlink()
        index.mkdir()
        want, how = 2, "directory"
    before = snapshot(store)
    code = main(world.run(world.cache, store))
    err = captured(capfd).err
    assert code == want, f"{how}: exit {code}: {err}"
    one_line(err, index)
    no_crash_log(tmp_path, world.cache)
    if kind == "directory":
        assert snapshot(store) == before
        return
    (run,) = new_runs(store, before)
    assert len(_cells(run)) == CELLS
    assert leftovers(store) == []

    def kept(files: dict[str, bytes]) -> dict[str, bytes]:
        return {k: v for k, v in files.items() if not k.startswith((f"runs/{run.name}/", "index.sqlite"))}

    assert kept(snapshot(store)) == kept(before)
    if index.is_file():
        with sqlite3.connect(f"file:{quote(str(index))}?mode=ro", uri=True) as db:
            assert db.execute("SELECT count(*) FROM runs").fetchone()[0] >= 2
    recorded_as(run, want)


# -- reports/latest --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["read-only", "full", "file"])
def test_run_whose_latest_tables_cannot_be_written(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """``reports/latest`` read-only, full or a file: exit 4 (2 for the file) in one line naming it (no traceback
    from the process that renders the table formats), the previous tables byte-identical, the run stored whole,
    and the run records the exit it ended with."""
    store = tmp_path / "reports"
    copy_into(world.store, store)
    latest = store / "latest"
    shutil.rmtree(latest)
    want, how = unwritable(faults, kind, latest, world.store / "latest")
    before = snapshot(store)
    code = main(world.run(world.cache, store))
    err = captured(capfd).err
    assert code == want, f"{how}: exit {code}: {err}"
    one_line(err, latest)
    no_crash_log(tmp_path, world.cache)
    if kind != "file":
        assert snapshot(latest) == snapshot(world.store / "latest")
    (run,) = new_runs(store, before)
    assert len(_cells(run)) == CELLS
    assert leftovers(store) == []
    recorded_as(run, want)


# -- the cache ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["read-only", "full", "file"])
def test_run_with_an_unwritable_cache_creates_no_run(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """An empty cache dir that is read-only, full or a file: the index listing cannot be cached. Exit 4 (2 for
    the file) in one line naming the cache; the run never starts, so the store is unchanged."""
    store = copy_into(world.store, tmp_path / "reports")
    cache = tmp_path / "cache"
    want, how = unwritable(faults, kind, cache)
    before = snapshot(store)
    code = main(world.run(cache, store))
    err = captured(capfd).err
    assert code == want, f"{how}: exit {code}: {err}"
    one_line(err, cache)
    no_crash_log(tmp_path, world.cache)
    assert snapshot(store) == before
    if cache.is_dir():
        assert leftovers(cache) == []


def _partial_cache(world: World, dst: Path, keep: Callable[[Path], bool]) -> None:
    """A copy of the warm cache holding every listing and the wheel files ``keep`` accepts."""
    for src in world.cache.rglob("*"):
        rel = src.relative_to(world.cache)
        if src.is_file() and (rel.parts[0] != "wheels" or keep(rel)):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


@pytest.mark.parametrize("kind", ["read-only", "full", "file"])
def test_run_whose_wheel_cache_cannot_be_written(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """Listings and METADATA cached, members, names and facts not, and ``cache/wheels`` read-only, full or a
    file: exit 4 (2 for the file) naming it; a run that started records that it failed, with that exit code; the
    runs stored before are byte-identical."""
    store = copy_into(world.store, tmp_path / "reports")
    cache = tmp_path / "cache"
    wheels = cache / "wheels"
    prior = tmp_path / "prior-wheels"
    _partial_cache(world, prior.parent / "prior-cache", lambda rel: rel.name == "METADATA")
    shutil.copytree(prior.parent / "prior-cache" / "wheels", prior)
    _partial_cache(world, cache, lambda rel: False)
    want, how = unwritable(faults, kind, wheels, prior)
    before = snapshot(store)
    code = main(world.run(cache, store))
    err = captured(capfd).err
    assert code == want, f"{how}: exit {code}: {err}"
    one_line(err, wheels)
    no_crash_log(tmp_path, world.cache)
    assert leftovers(store) == [] and (not wheels.is_dir() or leftovers(wheels) == [])
    after = snapshot(store)
    started = new_runs(store, before)
    assert {k: v for k, v in after.items() if not any(k.startswith(f"runs/{r.name}/") for r in started)} == before
    for run in started:
        recorded_as(run, want, "failed")


def test_run_whose_facts_cannot_be_saved(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Everything cached but ``facts.json``, and ``cache/wheels`` read-only: the facts are computed, the run's
    cells are all written, saving the facts fails. Exit 4 naming the cache, and the run records exit 4."""
    store = copy_into(world.store, tmp_path / "reports")
    cache = tmp_path / "cache"
    _partial_cache(world, cache, lambda rel: rel.name != "facts.json")
    how = faults.read_only(cache / "wheels")
    before = snapshot(store)
    code = main(world.run(cache, store))
    err = captured(capfd).err
    assert code == 4, f"{how}: exit {code}: {err}"
    one_line(err, cache / "wheels")
    no_crash_log(tmp_path, world.cache)
    (run,) = new_runs(store, before)
    assert len(_cells(run)) == CELLS
    assert leftovers(store) == [] and leftovers(cache) == []
    recorded_as(run, 4)


# -- report --out ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["read-only", "full", "file", "under-file"])
def test_report_out_unwritable(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """``report --out DIR`` where DIR (holding the first run's report) is read-only or full, or DIR is a file or
    under one: exit 4 (2 for the bad paths) in one line naming DIR (no traceback from the process rendering the
    table formats), the first run's report byte-identical, no temporary file."""
    first, newest = run_dirs(world.store)
    rendered = tmp_path / "rendered"
    assert (
        main(["report", str(first), "--reports-dir", str(world.store), "--format", "txt,json", "--out", str(rendered)])
        == 0
    )
    captured(capfd)
    out = tmp_path / "out" / "dir"
    want, how = unwritable(faults, kind, out, rendered)
    code = main(["report", str(newest), "--reports-dir", str(world.store), "--format", "txt,json", "--out", str(out)])
    err = captured(capfd).err
    assert code == want, f"{how}: exit {code}: {err}"
    one_line(err, out if kind != "under-file" else out.parent)
    no_crash_log(tmp_path, world.cache)
    if out.is_dir():
        assert snapshot(out) == snapshot(rendered)
        assert leftovers(out) == []


def test_report_on_a_read_only_store(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """``report`` with its default output (``<reports>/rendered/<run>``) on a read-only store: exit 4 naming
    the store, nothing changed."""
    store = copy_into(world.store, faults.area(tmp_path / "reports"))
    before = snapshot(store)
    how = faults.read_only(store)
    code = main(["report", "--reports-dir", str(store), "--format", "txt,json"])
    err = captured(capfd).err
    assert code == 4, f"{how}: exit {code}: {err}"
    one_line(err, store)
    no_crash_log(tmp_path, world.cache)
    assert snapshot(store) == before


# -- diff --output and gate --summary ---------------------------------------------------------------------------


def _output_target(faults: Faults, tmp_path: Path, kind: str) -> tuple[Path, int, str]:
    """An output FILE the command cannot write: in a read-only or full directory (holding an earlier version of
    FILE), a directory standing at FILE, or a file standing at FILE's parent."""
    folder = tmp_path / "out"
    target = folder / "result.txt"
    if kind == "directory":
        target.mkdir(parents=True)
        return target, 2, "directory"
    if kind == "under-file":
        folder.write_text("a file, not a directory\n")
        return target, 2, "file"
    faults.area(folder)
    target.write_text("the earlier output\n")
    return target, 4, faults.fill(folder) if kind == "full" else faults.read_only(folder)


@pytest.mark.parametrize("kind", ["read-only", "full", "directory", "under-file"])
def test_diff_output_unwritable(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """``diff --output FILE`` of two stored runs where FILE cannot be written: exit 4 (2 for a directory at
    FILE, a file at its parent) in one line naming it; an earlier FILE intact; the store unchanged."""
    store = copy_into(world.store, tmp_path / "reports")
    target, want, how = _output_target(faults, tmp_path, kind)
    before = snapshot(store)
    code = main(["diff", "--reports-dir", str(store), "--format", "md", "--output", str(target)])
    err = captured(capfd).err
    assert code == want, f"{how}: exit {code}: {err}"
    one_line(err, target.parent)
    no_crash_log(tmp_path, world.cache)
    assert snapshot(store) == before
    if kind in ("read-only", "full"):
        assert target.read_text() == "the earlier output\n"
        assert leftovers(target.parent) == []


@pytest.mark.parametrize("kind", ["read-only", "full", "directory", "under-file"])
def test_gate_summary_unwritable(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """``gate --summary FILE`` where FILE cannot be written: exit 4 (2 for a directory at FILE, a file at its
    parent) in one line naming it, an earlier FILE intact, the gate's run stored whole, and the run records the
    exit the gate ended with."""
    store = copy_into(world.store, tmp_path / "reports")
    target, want, how = _output_target(faults, tmp_path, kind)
    before = snapshot(store)
    code = main(world.gate(world.cache, store, "--summary", str(target)))
    cap = captured(capfd)
    assert code == want, f"{how}: exit {code}: {cap.err}"
    one_line(cap.err, target.parent)
    no_crash_log(tmp_path, world.cache)
    assert "faults" in cap.out  # the summary still reached stdout
    if kind in ("read-only", "full"):
        assert target.read_text() == "the earlier output\n"
        assert leftovers(target.parent) == []
    (run,) = new_runs(store, before)
    assert leftovers(store) == []
    recorded_as(run, want)


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_gate_into_an_unwritable_store(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """A gate whose store is read-only or has no room to start its run: exit 4 naming the store, nothing
    created, the stored runs byte-identical."""
    store = copy_into(world.store, faults.area(tmp_path / "reports"))
    how = faults.fill(store, 8 * KIB) if kind == "full" else faults.read_only(store)
    before = snapshot(store)
    code = main(world.gate(world.cache, store))
    err = captured(capfd).err
    assert code == 4, f"{how}: exit {code}: {err}"
    one_line(err, store)
    no_crash_log(tmp_path, world.cache)
    assert snapshot(store) == before
    assert leftovers(store) == []


# -- merge ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["read-only", "full", "file"])
def test_merge_into_an_unwritable_reports_dir(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """``merge`` into a reports dir that is read-only, has no room to start the merged run, or is a file: exit 4
    (2 for the file) naming it, no merged run, the shards and the store byte-identical."""
    store = tmp_path / "reports"
    want, how = unwritable(faults, kind, store, world.store, room=8 * KIB)
    before = snapshot(store) if store.is_dir() else {}
    shards = [snapshot(s) for s in world.shards]
    code = main(["merge", *map(str, world.shards), "--reports-dir", str(store)])
    err = captured(capfd).err
    assert code == want, f"{how}: exit {code}: {err}"
    one_line(err, store)
    no_crash_log(tmp_path, world.cache)
    if store.is_dir():
        assert snapshot(store) == before
        assert leftovers(store) == []
    assert [snapshot(s) for s in world.shards] == shards


def test_merge_that_fills_the_disk_midway_records_failed(
    world: World, faults: Faults, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Room for the merged run's start and three cell files: exit 4 naming the store, the merged run says
    ``failed`` with exit 4 and counts the cells it kept, no temporary file or reserve left, the shards and the
    runs stored before byte-identical."""
    store = copy_into(world.store, faults.area(tmp_path / "reports"))
    how = faults.fill(store, 2 * BLOCK + RESERVE_BYTES + 3 * BLOCK)
    before = snapshot(store)
    shards = [snapshot(s) for s in world.shards]
    code = main(["merge", *map(str, world.shards), "--reports-dir", str(store)])
    err = captured(capfd).err
    assert code == 4, f"{how}: exit {code}: {err}"
    one_line(err, store)
    no_crash_log(tmp_path, world.cache)
    (run,) = new_runs(store, before)
    meta = recorded_as(run, 4, "failed")
    assert 0 < meta["cells_written"] < CELLS, meta
    assert leftovers(store) == []
    after = snapshot(store)
    assert {k: v for k, v in after.items() if not k.startswith(f"runs/{run.name}/")} == before
    assert [snapshot(s) for s in world.shards] == shards
