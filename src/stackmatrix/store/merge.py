"""Fold the runs of ``run --shard i/n`` (CI fan-out) into one run.

Every cell of the shards' common selection ends up in the merged run: a cell no shard wrote becomes ``not-run``
with a reason from what its shard recorded. Everything is checked before anything is written: a damaged shard
file, or a shard journal with fewer records than the shard says it wrote, is exit 2 naming it (lost records made
``not-run`` would call the table complete). The merged run is written under ``store.recorded``: a write that
fails leaves it ``failed``, never ``complete``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.errors import BadInput
from stackmatrix.matrix.select import parse_shard
from stackmatrix.request import differing_options
from stackmatrix.store.journal import check_readable
from stackmatrix.store.provenance import doubt, planned_of
from stackmatrix.store.runs import Run, open_run, parse_cell, recorded, run_dirs, start_run

INTERRUPTED_CODES = frozenset({130, -2})


@dataclass(frozen=True)
class Merged:
    run: Run
    copied: int
    missing: tuple[str, ...]
    duplicates: int


def shard_run(path: Path) -> Run:
    """A run directory, or a reports directory (a CI artifact) holding one: its newest run."""
    if (path / "run.json").is_file():
        return open_run(path)
    runs = run_dirs(path)
    if not runs:
        raise BadInput(str(path), "<dir>", str(path), "a run directory or a reports directory with runs/<id>/run.json")
    return open_run(runs[-1])


def _missing_result(
    cell_id: str, declared: Mapping[str, Any], why: str, reason: Reason, ev: dict[str, Any]
) -> CellResult:
    outcome = Outcome("result", Status.ERROR, reason, why, ev)
    return CellResult(
        cell_id, Verdict.NOT_RUN, reason, None, (outcome,), "", dict(declared), declared_verdict=Verdict.NOT_RUN
    )


def _why_missing(
    run: Run | None, shard: str | None, exit_codes: Mapping[str, int]
) -> tuple[Reason, str, dict[str, Any]]:
    if run is None:
        return Reason.RESULT_MISSING, f"shard {shard} was not among the merged runs", {"shard": shard}
    code = exit_codes.get(run.run_id, run.meta.get("exit_code"))
    status = run.meta.get("status", "unknown")
    ev = {"shard": shard, "run": run.run_id, "status": status, "exit_code": code}
    if code in INTERRUPTED_CODES or status == "interrupted":
        return Reason.INTERRUPTED, f"shard {shard} (run {run.run_id}) was interrupted before this cell", ev
    if code is None:
        return (
            Reason.RESULT_MISSING,
            f"shard {shard} (run {run.run_id}) never recorded an exit status (status {status}: killed or lost)",
            ev,
        )
    return Reason.RESULT_MISSING, f"shard {shard} (run {run.run_id}) exited {code} without writing this cell", ev


def _codes_by_run(paths: Sequence[Path], runs: Sequence[Run], given: Mapping[str, int]) -> dict[str, int]:
    """``--exit-status`` keys (a run id, the directory as given, or its name) -> run id; a key naming none of the
    merged shards is a mistake (exit 2), not something to ignore."""
    codes: dict[str, int] = {}
    used = set()
    for path, run in zip(paths, runs, strict=True):
        for key in (run.run_id, str(path), path.name):
            if key in given:
                codes[run.run_id] = given[key]
                used.add(key)
    for key in given:
        if key not in used:
            names = ", ".join(str(p) for p in paths)
            raise BadInput("--exit-status", "DIR", key, f"one of the merged shards ({names}) or a run id of one")
    return codes


def _plans(runs: Sequence[Run]) -> dict[str, dict[str, Any] | None]:
    """Every shard's plan, read and checked; shards of one selection only (merging runs of different
    selections would invent missing cells)."""
    plans = {r.run_id: r.plan() for r in runs}
    with_plan = [r for r in runs if plans[r.run_id] is not None]
    for run in with_plan[1:]:
        plan, ref = plans[run.run_id] or {}, with_plan[0]
        expected = (plans[ref.run_id] or {})["selection"]
        if plan["selection"].keys() != expected.keys():
            raise BadInput(
                str(run.root / "plan.json"),
                "selection",
                f"{len(plan['selection'])} cells",
                f"the selection of {ref.root} ({len(expected)} cells): shards of one run",
            )
    for run in with_plan:
        shard = (plans[run.run_id] or {}).get("shard")
        if shard:
            parse_shard(shard, where=str(run.root / "plan.json"))
    return plans


def merge(paths: Sequence[Path], reports_dir: Path, exit_codes: Mapping[str, int] | None = None) -> Merged:
    """``exit_codes``: run id -> the exit status CI saw for that shard (it wins over what run.json says)."""
    if not paths:
        raise BadInput("merge", "DIR", None, "at least one run directory")
    runs = [shard_run(p) for p in paths]
    first = runs[0]
    for path, run in zip(paths, runs, strict=True):
        for key in ("matrix_hash", "tier"):
            if run.meta.get(key) != first.meta.get(key):
                raise BadInput(
                    str(path / "run.json"), key, run.meta.get(key), f"{first.meta.get(key)!r} like {paths[0]}"
                )
        differ = differing_options(_options(run), _options(first))
        if differ is not None:
            name, value, expected = differ
            raise BadInput(str(path / "run.json"), f"options.{name}", value, f"{expected!r} like {paths[0]}")
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise BadInput("merge", "DIR", ids, "distinct runs (one was given twice)")
    codes = _codes_by_run(paths, runs, exit_codes or {})
    plans = _plans(runs)

    selection: dict[str, Mapping[str, Any]] = {}
    owner: dict[str, Run] = {}
    n = None
    for run in runs:
        plan = plans[run.run_id]
        if plan is None:
            continue
        selection.update(plan["selection"])
        for cell in plan["cells"]:
            owner[cell] = run
        if plan.get("shard"):
            n = parse_shard(plan["shard"])[1]

    # Later-finished shards win a cell two shards both wrote (a rerun of one shard, say). Every file is read
    # and checked here, before the merged run exists.
    files: dict[str, bytes] = {}
    duplicates = 0
    for run in sorted(runs, key=lambda r: str(r.meta.get("finished") or "")):
        planned = planned_of(plans[run.run_id])
        for cell_id, (record, data, _) in run.records().items():
            result = parse_cell(run.where(cell_id), record, cell_id)  # checked before it is copied as it is
            if doubted := doubt(run, result, planned):  # a merged run's records are reused: none may be doubted
                where, why = doubted
                raise BadInput(where, "<cell>", cell_id, f"a record its shard could have written ({why})")
            duplicates += cell_id in files
            files[cell_id] = data
    for run in runs:
        _check_whole(run, plans[run.run_id])

    check_readable(len(selection.keys() | files.keys()))  # a merged journal no reader could read is not written
    started = min(str(r.meta.get("started", "")) for r in runs)
    merged = start_run(
        reports_dir,
        matrix_hash=str(first.meta.get("matrix_hash", "")),
        matrix_path=str(first.meta.get("matrix", "")),
        tier=str(first.meta.get("tier", "")),
        selected=len(selection.keys() | files.keys()),
        purpose="merge",
        merged_from=[
            {
                "run_id": r.run_id,
                "shard": (plans[r.run_id] or {}).get("shard"),
                "status": r.meta.get("status"),
                "exit_code": codes.get(r.run_id, r.meta.get("exit_code")),
                "cells_written": r.count(),
            }
            for r in runs
        ],
        shards_started=started,
    )
    with recorded(merged):
        for cell_id, data in sorted(files.items()):
            merged.copy_record(cell_id, data)
        ordered = sorted(selection)
        missing = []
        for i, cell_id in enumerate(ordered):
            if cell_id in files:
                continue
            holder = owner.get(cell_id)
            shard = (plans[holder.run_id] or {}).get("shard") if holder else (f"{i % n + 1}/{n}" if n else None)
            reason, why, ev = _why_missing(holder, shard, codes)
            merged.write_cell(_missing_result(cell_id, selection[cell_id], why, reason, ev))
            missing.append(cell_id)
        merged.write_plan(selection, ordered, None)
        merged.finish("complete", 0, cells_missing=len(missing), duplicates=duplicates)
    return Merged(merged, len(files), tuple(missing), duplicates)


def _check_whole(run: Run, plan: Mapping[str, Any] | None) -> None:
    """Exit 2 naming the shard's journal when it lost records the shard says it wrote."""
    short = run.damage or run.shortfall(plan)  # open_run checked its count; the plan is read by now
    if short is not None:
        raise BadInput(
            str(short.path),
            "records",
            short.held,
            f"the {short.said} records {short.source} ({short.missing} missing: lost after the shard ended; "
            f"`stackmatrix run --resume {run.run_id} --reports-dir {run.root.parent.parent}` probes them again)",
        )


def _options(run: Run) -> Mapping[str, Any]:
    options = run.meta.get("options")
    return options if isinstance(options, dict) else {}


def parse_exit_codes(items: Sequence[str]) -> dict[str, int]:
    """``--exit-status RUN=CODE``: what CI saw for a shard whose process could not record it (a kill -9)."""
    out = {}
    for item in items:
        run, sep, code = (part.strip() for part in item.rpartition("="))
        if re.fullmatch(r"-?[0-9]{1,3}", code):  # ASCII digits only: int() also takes full-width ones
            out[run] = int(code)
        else:
            sep = ""
        if not sep or not run or not -255 <= out.get(run, 0) <= 255:
            raise BadInput(
                "--exit-status", "exit-status", item, "DIR=CODE (a merged directory or run id), e.g. shard-3=137"
            )
    return out
