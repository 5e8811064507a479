"""Results on disk: ``<reports>/runs/<run-id>/run.json`` and ``cells/<cell-id>.json``, written atomically.

A cell's file is complete the moment it exists, so an interrupted run keeps every cell written so far;
``run.json`` says how the run ended.
"""

from __future__ import annotations

import json
import platform
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackmatrix import __version__
from stackmatrix.atomic import atomic_write_text, remove_partial
from stackmatrix.domain import CellResult


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class Run:
    root: Path
    meta: dict[str, Any]

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    def write_meta(self) -> None:
        atomic_write_text(self.root / "run.json", json.dumps(self.meta, indent=2, sort_keys=True))

    def write_cell(self, result: CellResult) -> None:
        atomic_write_text(self.cells_dir / f"{result.cell_id}.json", json.dumps(result.to_json()))

    def finish(self, status: str, **extra: Any) -> None:
        remove_partial(self.cells_dir)
        written = sum(1 for _ in self.cells_dir.glob("*.json"))
        self.meta.update(status=status, finished=_now(), cells_written=written, **extra)
        self.write_meta()

    def results(self) -> Iterator[CellResult]:
        for path in sorted(self.cells_dir.glob("*.json")):
            yield CellResult.from_json(json.loads(path.read_text()))


def start_run(reports_dir: Path, *, matrix_hash: str, matrix_path: str, tier: str, selected: int) -> Run:
    run_id = new_run_id()
    root = reports_dir / "runs" / run_id
    (root / "cells").mkdir(parents=True, exist_ok=False)
    meta = {
        "run_id": run_id,
        "tool_version": __version__,
        "matrix": matrix_path,
        "matrix_hash": matrix_hash,
        "tier": tier,
        "cells_selected": selected,
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "started": _now(),
        "status": "running",
    }
    run = Run(root, meta)
    run.write_meta()
    return run


def open_run(path: Path) -> Run:
    return Run(path, json.loads((path / "run.json").read_text()))
