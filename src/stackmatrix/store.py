"""Results on disk: ``<reports>/runs/<run-id>/run.json``, ``plan.json`` and ``cells/<cell-id>.json``, written
atomically. These files are the source of truth; the SQLite index (runindex.py) is rebuilt from them.

A cell's file is complete the moment it exists, so an interrupted run keeps every cell written so far;
``run.json`` says how the run ended (its status and exit code), ``plan.json`` which cells it meant to write.
"""

from __future__ import annotations

import json
import platform
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackmatrix import __version__
from stackmatrix.atomic import atomic_write_text, remove_partial
from stackmatrix.domain import CellResult
from stackmatrix.errors import BadInput

Declared = Mapping[str, str | None]


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
        path = self.root / "plan.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write_cell(self, result: CellResult) -> None:
        atomic_write_text(self.cells_dir / f"{result.cell_id}.json", json.dumps(result.to_json()))

    def finish(self, status: str, exit_code: int, **extra: Any) -> None:
        remove_partial(self.cells_dir)
        written = sum(1 for _ in self.cells_dir.glob("*.json"))
        self.meta.update(status=status, exit_code=exit_code, finished=now(), cells_written=written, **extra)
        self.write_meta()

    def cell_files(self) -> list[Path]:
        return sorted(self.cells_dir.glob("*.json"))

    def results(self) -> Iterator[CellResult]:
        for path in self.cell_files():
            try:
                yield CellResult.from_json(json.loads(path.read_bytes()))
            except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
                raise BadInput(
                    str(path), "<cell>", f"{type(exc).__name__}: {exc}", "a cell result as stackmatrix writes it"
                ) from None


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
    run.write_meta()
    return run


def open_run(path: Path) -> Run:
    meta_path = path / "run.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise BadInput(str(path), "run.json", str(meta_path), "a run directory (holding run.json)") from None
    except json.JSONDecodeError as exc:
        raise BadInput(str(meta_path), "<json>", str(exc), "a valid run.json") from None
    if not isinstance(meta, dict) or "run_id" not in meta:
        raise BadInput(str(meta_path), "run_id", None, "a run.json with a run_id")
    return Run(path, meta)


def run_dirs(reports_dir: Path) -> list[Path]:
    """Run directories, oldest first (run ids start with their UTC start time)."""
    root = reports_dir / "runs"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "run.json").is_file())


def find_run(reports_dir: Path, ref: str) -> Run:
    """A run by path, by id, or by a unique prefix of its id."""
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
    return open_run(hits[0])
