"""Cache hits: a stored record whose fingerprint is the planned cell's is reused byte for byte, not probed again.

The index says where each record is in its run's journal, so a hit reads just its own bytes. A record that is not
where the index says, or no longer carries the fingerprint (a journal edited or damaged since), is no hit: the
cell is probed after all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from stackmatrix.errors import BadInput
from stackmatrix.files.readfile import read_bytes
from stackmatrix.store.index import RunIndex
from stackmatrix.store.journal import JOURNAL, MAX_JOURNAL_BYTES
from stackmatrix.store.runs import open_run


def stored_records(
    index: RunIndex, reports_dir: Path, wanted: Mapping[str, tuple[str, str]]
) -> tuple[dict[str, bytes], list[str]]:
    """``wanted``: cell id -> (source run id, fingerprint). (cell id -> the record's bytes, cells not found)."""
    found: dict[str, bytes] = {}
    by_run: dict[str, dict[str, str]] = {}
    for cell, (run_id, fp) in wanted.items():
        by_run.setdefault(run_id, {})[cell] = fp
    for run_id, cells in by_run.items():
        root = reports_dir / "runs" / run_id
        places = index.locations(run_id)
        journal = _journal(root) if places else None
        for cell, fp in cells.items():
            place = places.get(cell)
            raw = journal[place[0] : place[0] + place[1]] if journal is not None and place else None
            if raw is None or not _holds(raw, cell, fp):  # a run from before the journal, or a record moved
                raw = _whole(root, cell)
            if raw is not None and _holds(raw, cell, fp):
                found[cell] = raw
    return found, [c for c in wanted if c not in found]


def _journal(root: Path) -> bytes | None:
    try:
        return read_bytes(root / JOURNAL, "a run journal", MAX_JOURNAL_BYTES)
    except (OSError, BadInput):
        return None


def _whole(root: Path, cell: str) -> bytes | None:
    if not os.path.isdir(root):
        return None
    try:
        record = open_run(root).records().get(cell)
    except (OSError, BadInput):
        return None
    return record[1] if record else None


def _holds(raw: bytes, cell: str, fingerprint: str) -> bool:
    """The bytes are that cell's record with that fingerprint (json.dumps' own spacing: the store writes them)."""
    return raw.startswith(b'{"cell": "' + cell.encode() + b'"') and (
        b'"fingerprint": "' + fingerprint.encode() + b'"' in raw
    )
