"""A stored run's cell records as tests read them: the journal's lines (and the cell files of runs from before the
journal), by cell id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def raw_records(run_dir: Path) -> dict[str, bytes]:
    out = {p.stem: p.read_bytes() for p in sorted((run_dir / "cells").glob("*.json"))}
    journal = run_dir / "journal.jsonl"
    if journal.exists():
        for line in journal.read_bytes().split(b"\n")[:-1]:
            if line.strip():
                out[json.loads(line)["cell"]] = line
    return out


def records(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {cell: json.loads(raw) for cell, raw in raw_records(run_dir).items()}


def _lines(run_dir: Path) -> list[bytes]:
    return [line for line in (run_dir / "journal.jsonl").read_bytes().split(b"\n") if line.strip()]


def _write(run_dir: Path, lines: list[bytes]) -> None:
    (run_dir / "journal.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def replace_record(run_dir: Path, index: int, record: dict[str, Any] | bytes) -> None:
    """Replace the journal's ``index``-th record (by hand, as a user or a damaged disk would)."""
    lines = _lines(run_dir)
    lines[index] = record if isinstance(record, bytes) else json.dumps(record).encode()
    _write(run_dir, lines)


def record_at(run_dir: Path, index: int) -> dict[str, Any]:
    return dict(json.loads(_lines(run_dir)[index]))


def drop_record(run_dir: Path, index: int) -> None:
    lines = _lines(run_dir)
    del lines[index]
    _write(run_dir, lines)


def why(record: dict[str, Any] | bytes) -> str:
    """A record as a failing assertion shows it: the verdict, its reason, and each failed probe's detail with the
    last lines of its log (what a CI log must hold to say why, e.g. a full disk under uv)."""
    cell: dict[str, Any] = json.loads(record) if isinstance(record, bytes) else record
    lines = [f"{cell.get('cell')}: {cell.get('verdict')} ({cell.get('reason')})"]
    for probe in cell.get("probes", []):
        if probe.get("status") not in ("pass", "skip", None):
            tail = str((probe.get("evidence") or {}).get("log_tail", "")).splitlines()[-6:]
            lines.append(f"  {probe.get('name')}: {probe.get('reason')}: {probe.get('detail')}")
            lines += [f"    | {t}" for t in tail]
    return "\n".join(lines)
