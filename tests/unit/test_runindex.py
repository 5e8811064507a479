"""The run index's layout for the warm run: cache hits from ``newest`` (kept in step however runs are added,
re-read or removed), copied rows through one INSERT ... SELECT, and the queries by cell id through the runs."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.ladder.verdict import decided
from stackmatrix.store.index import TRANSIENT, RunIndex, open_index
from stackmatrix.store.runs import Run, open_run, start_run

DECLARED = {"kind": "vllm", "model": "google/gemma-4-E4B-it", "target": "l4x1"}
CELLS = [f"s{i}__m__t" for i in range(4)]


def cell(cell_id: str, fingerprint: str, reason: Reason | None = None) -> CellResult:
    verdict = Verdict.NOT_RUN if reason else Verdict.PREDICTED
    outcome = Outcome("arch", Status.SKIP if reason else Status.PASS, reason, f"detail of {cell_id}")
    return decided(CellResult(cell_id, verdict, reason, None, (outcome,), fingerprint, DECLARED))


def stored(reports: Path, results: list[CellResult]) -> Run:
    run = start_run(reports, matrix_hash="h", matrix_path="m.toml", tier="static", selected=len(results))
    for r in results:
        run.write_cell(r)
    run.finish("complete", 0)
    return run


def expected_hits(index: RunIndex) -> dict[str, tuple[str, str]]:
    """What ``hits`` answered before ``newest``: every run's rows, the newest reusable one per fingerprint (a record
    its run could not have written, such as a second record of a cell, is not reusable: store/provenance.py)."""
    marks = ",".join("?" * len(TRANSIENT))
    rows = index.db.execute(
        "SELECT fingerprint, run_id, cell_id FROM cells "
        f"WHERE forged = '' AND NOT (verdict = 'not-run' AND reason IN ({marks})) ORDER BY run_id",
        TRANSIENT,
    )
    return {fp: (run_id, cell_id) for fp, run_id, cell_id in rows}


def random_cell(rng: random.Random) -> CellResult:
    cell_id = rng.choice(CELLS)
    reason = rng.choice([None, None, Reason.INTERRUPTED, Reason.TIMEOUT, Reason.ARCH_UNSUPPORTED])
    return cell(cell_id, f"{cell_id}-fp{rng.randrange(2)}", reason)


def test_hits_are_the_newest_reusable_record_however_runs_change(tmp_path: Path) -> None:
    rng = random.Random(11)
    fingerprints = [f"{c}-fp{i}" for c in CELLS for i in range(2)]
    for step in range(60):
        action = rng.choice(["add", "add", "rewrite", "rewrite", "remove"])
        runs = sorted(p for p in (tmp_path / "runs").glob("*") if p.is_dir()) if (tmp_path / "runs").is_dir() else []
        if action == "add" or not runs:
            stored(tmp_path, [random_cell(rng) for _ in range(rng.randrange(1, 5))])
        elif action == "rewrite":  # a record written again (its run re-read: the rows it had are replaced)
            run = open_run(rng.choice(runs))
            run.write_cell(random_cell(rng))
            run.close_journal()
            run.write_meta()
        else:
            shutil.rmtree(rng.choice(runs))
        with open_index(tmp_path) as index:
            assert index.hits(fingerprints) == expected_hits(index), f"step {step}: {action}"
    with open_index(tmp_path) as index:  # and as a rebuild from the files gives it
        kept = index.hits(fingerprints)
    (tmp_path / "index.sqlite").unlink()
    with open_index(tmp_path) as index:
        assert index.hits(fingerprints) == kept


def test_a_transient_newest_record_leaves_the_older_one_the_hit(tmp_path: Path) -> None:
    old = stored(tmp_path, [cell("a__m__t", "fa")])
    stored(tmp_path, [cell("a__m__t", "fa", Reason.INTERRUPTED)])
    with open_index(tmp_path) as index:
        assert index.hits(["fa", "unknown"]) == {"fa": (old.run_id, "a__m__t")}


def test_an_older_run_read_again_leaves_the_newer_record_the_hit(tmp_path: Path) -> None:
    old = stored(tmp_path, [cell("a__m__t", "fa"), cell("b__m__t", "fb")])
    new = stored(tmp_path, [cell("a__m__t", "fa")])
    old.write_cell(cell("c__m__t", "fc"))  # the older run changed: read again
    old.close_journal()
    with open_index(tmp_path) as index:
        assert index.hits(["fa", "fb", "fc"]) == {
            "fa": (new.run_id, "a__m__t"),
            "fb": (old.run_id, "b__m__t"),
            "fc": (old.run_id, "c__m__t"),
        }
    shutil.rmtree(new.root)  # the newest gone: the older record is the hit again
    with open_index(tmp_path) as index:
        assert index.hits(["fa"]) == {"fa": (old.run_id, "a__m__t")}


def test_copied_rows_are_the_source_rows_with_this_runs_places(tmp_path: Path) -> None:
    source = stored(tmp_path, [cell(c, f"{c}-fp") for c in CELLS])
    with open_index(tmp_path) as index:
        source_rows = index.frame_rows(source.run_id)
        source_summaries = index.summaries(source.run_id)
    run = start_run(tmp_path, matrix_hash="h", matrix_path="m.toml", tier="static", selected=len(CELLS))
    records = {cell_id: raw for cell_id, (_, raw, _) in source.records().items()}
    for cell_id in CELLS[:-1]:
        run.copy_record(cell_id, records[cell_id])
    probed = cell(CELLS[-1], "new-fp")
    run.write_cell(probed)
    run.finish("complete", 0)
    with open_index(tmp_path, sync=False) as index:
        index.ingest(run, [probed], copied=[(c, source.run_id) for c in CELLS[:-1]])
        rows, summaries = index.frame_rows(run.run_id), index.summaries(run.run_id)
        assert rows[:-1] == source_rows[:-1] and summaries[:-1] == source_summaries[:-1]
        assert index.locations(run.run_id) == run.offsets
        assert [r.cells for r in index.runs()] == [len(CELLS), len(CELLS)]
        incremental = index.db.execute("SELECT * FROM cells ORDER BY run_id, cell_id").fetchall()
        hits = index.hits([f"{c}-fp" for c in CELLS] + ["new-fp"])
    (tmp_path / "index.sqlite").unlink()
    with open_index(tmp_path) as index:  # the same as a rebuild from the files
        assert index.db.execute("SELECT * FROM cells ORDER BY run_id, cell_id").fetchall() == incremental
        assert index.hits([f"{c}-fp" for c in CELLS] + ["new-fp"]) == hits
        assert hits[f"{CELLS[0]}-fp"] == (run.run_id, CELLS[0])


def test_the_queries_by_cell_id(tmp_path: Path) -> None:
    a = stored(tmp_path, [cell("a__m__t", "1"), cell("b__m__t", "2")])
    b = stored(tmp_path, [cell("b__m__t", "3")])
    with open_index(tmp_path) as index:
        assert sorted(index.cell_ids()) == ["a__m__t", "b__m__t"]
        history = index.history(["b__m__t", "a__m__t", "none__m__t"])
        assert [(run_id, row.fingerprint) for run_id, row in history["b__m__t"]] == [(a.run_id, "2"), (b.run_id, "3")]
        assert [run_id for run_id, _ in history["a__m__t"]] == [a.run_id] and history["none__m__t"] == []
        assert index.latest_with(["a__m__t"]) == a.run_id
        assert index.latest_with(["a__m__t", "b__m__t"]) == b.run_id
        assert index.latest_with(["b__m__t"], exclude=b.run_id) == a.run_id
        assert index.latest_with(["none__m__t"]) is None


def test_processes_opening_a_new_store_at_once_share_one_index(tmp_path: Path) -> None:
    """Two runs into a new store failed 4 of 8 times ("table already exists" taken for damage, the index deleted
    under the other): six processes open it at the same instant; every one gets the same index."""
    import subprocess
    import sys

    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from stackmatrix.store.index import RunIndex\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
        f"index = RunIndex(Path({str(tmp_path / 'reports')!r}))\n"
        "print(os.stat(index.path).st_ino, index.db.execute('SELECT count(*) FROM runs').fetchone()[0])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(6)]
    go.touch()
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6 and len(set(outs)) == 1, outs


def test_an_index_another_process_holds_is_waited_for_then_exit_4_never_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import stackmatrix.store.index as runindex
    from stackmatrix.errors import InfraUnavailable

    reports = tmp_path / "reports"
    stored(reports, [cell("vllm-0.32.0-tf5.19.0__gemma-4-e4b-it__l4x1", "fp1")])
    with open_index(reports):
        pass
    before = (reports / "index.sqlite").read_bytes()
    holder = sqlite3.connect(reports / "index.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a long write of another process
    monkeypatch.setattr(runindex, "BUSY_TIMEOUT_S", 0.3)
    try:
        with pytest.raises(InfraUnavailable, match="database is locked"):
            RunIndex(reports)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (reports / "index.sqlite").read_bytes() == before  # waited, then gave up: nothing dropped


def test_a_file_that_is_not_an_index_is_rebuilt(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = stored(reports, [cell("vllm-0.32.0-tf5.19.0__gemma-4-e4b-it__l4x1", "fp1")])
    (reports / "index.sqlite").write_bytes(b"not sqlite at all" * 100)
    with open_index(reports) as index:
        assert [r.run_id for r in index.runs()] == [run.run_id]


def test_the_schema_stamp_is_derived_from_the_schema() -> None:
    """A column added to the readiness row (or the tables) changes the index's stamp without anyone bumping a
    number: an index of the old stamp is rebuilt, never read with the new columns missing."""
    from stackmatrix.store import index
    from stackmatrix.store.row import sql_columns

    assert index.schema_stamp(index.ROWS_VERSION, index._SCHEMA) == index.SCHEMA_VERSION
    assert sql_columns() in index._SCHEMA.replace("cell_id TEXT NOT NULL", "cell TEXT", 1)
    wider = index._SCHEMA.replace("journal_offset INTEGER,", "journal_offset INTEGER, another TEXT,")
    assert index.schema_stamp(index.ROWS_VERSION, wider) != index.SCHEMA_VERSION
    assert index.schema_stamp(index.ROWS_VERSION + 1, index._SCHEMA) != index.SCHEMA_VERSION
    assert 0 < index.SCHEMA_VERSION < 2**31
