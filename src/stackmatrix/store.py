"""Results on disk: ``<reports>/runs/<run-id>/run.json``, ``plan.json`` and ``cells/<cell-id>.json``, written
atomically. These files are the source of truth; the SQLite index (runindex.py) is rebuilt from them.

A cell's file is complete the moment it exists, so an interrupted run keeps every cell written so far;
``run.json`` says how the run ended (its status and exit code), ``plan.json`` which cells it meant to write.

Every name the store writes is an id (ids.py), checked where it entered and once more here, lexically inside the
run's directory. What it reads back is input like any other: a damaged file is exit 2 naming it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackmatrix import __version__
from stackmatrix.atomic import atomic_write_bytes, atomic_write_text, remove_partial
from stackmatrix.domain import CellResult, checked_declared
from stackmatrix.errors import BadInput, Interrupted, StackmatrixError, path_fault
from stackmatrix.ids import check_cell_id, check_id_part, child, is_cell_id, is_id_part
from stackmatrix.readfile import read_json
from stackmatrix.redact import redact

Declared = Mapping[str, str | None]
# Space held from a run's start until it finishes: freed first, it lets a run that filled the disk still record
# its status and exit code in run.json.
RESERVE = ".reserve"
RESERVE_BYTES = 64 * 1024
# run.json fields other code reads, and their types (a hand-edited run.json is input like any other)
META_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("started", "finished", "status", "purpose", "tier", "matrix_hash", "tool_version"), (str,)),
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


@dataclass
class Run:
    root: Path
    meta: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    def write_meta(self) -> None:
        atomic_write_text(self.root / "run.json", json.dumps(self.meta, indent=2, sort_keys=True))

    def write_plan(self, selection: Mapping[str, Declared], cells: list[str], shard: str | None) -> None:
        """Every cell of the whole selection (all shards) with its pins, and this run's share: a merge can
        then name each cell whose result is missing instead of dropping it."""
        plan = {"shard": shard, "cells": cells, "selection": {k: dict(v) for k, v in sorted(selection.items())}}
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

    def write_cell(self, result: CellResult) -> None:
        name = check_cell_id(result.cell_id, str(self.cells_dir), "cell") + ".json"
        atomic_write_text(child(self.cells_dir, name), json.dumps(result.to_json()))

    def finish(self, status: str, exit_code: int, **extra: Any) -> None:
        # The reserve goes first: on a full disk its space is what lets run.json say how the run ended.
        (self.root / RESERVE).unlink(missing_ok=True)
        remove_partial(self.cells_dir)
        written = len(self.cell_files())
        self.meta.update(status=status, exit_code=exit_code, finished=now(), cells_written=written, **extra)
        self.write_meta()

    def cell_files(self) -> list[Path]:
        """The run's cell files: ``<cell id>.json`` (temporary files and anything else are not cells)."""
        return sorted(p for p in self.cells_dir.glob("*.json") if is_cell_id(p.name[: -len(".json")]))

    def results(self) -> Iterator[CellResult]:
        for path in self.cell_files():
            yield read_cell(path)


def read_cell(path: Path) -> CellResult:
    """A stored cell result, checked: a damaged file is exit 2 naming it (never a traceback)."""
    return parse_cell(path, read_json(path, "a cell result"))


def parse_cell(path: Path, data: object) -> CellResult:
    """``data`` (the JSON of the cell file at ``path``) as a result, or exit 2 naming the file."""
    try:
        if not isinstance(data, dict):
            raise TypeError(f"the file holds {type(data).__name__}, not an object")
        result = CellResult.from_json(data)
        if result.cell_id != path.name[: -len(".json")]:
            raise ValueError(f"the file holds cell {result.cell_id!r}")
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
        status, code = _ending(exc)
        with suppress(OSError, StackmatrixError):
            run.finish(status, code, error=redact(f"{type(exc).__name__}: {exc}")[:500])
        raise


def _ending(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, KeyboardInterrupt | Interrupted):
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
    root = reports_dir / "runs" / run_id
    (root / "cells").mkdir(parents=True, exist_ok=False)
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
        "status": "running",
        **extra,
    }
    run = Run(root, meta)
    try:
        run.write_meta()
        atomic_write_bytes(root / RESERVE, bytes(RESERVE_BYTES))
    except BaseException:  # nothing half-made is left: a directory without run.json is no run
        shutil.rmtree(root, ignore_errors=True)
        raise
    return run


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
    return Run(path, meta)


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
