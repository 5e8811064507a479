"""The run index, diff, merge and gate logic over small stored runs (pure logic; the real runs are in
tests/integration/test_results_real.py)."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from stackmatrix.answers.gate import Trend, judge_findings
from stackmatrix.cli.main import main
from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict, meets
from stackmatrix.errors import BadInput
from stackmatrix.ladder.verdict import decided
from stackmatrix.pipeline.stackspec import StackSpec, parse_spec
from stackmatrix.reports.diff import Change, diff_runs, render_json, render_markdown, render_text
from stackmatrix.store.index import RunIndex, open_index
from stackmatrix.store.merge import merge, parse_exit_codes
from stackmatrix.store.runs import Run, find_run, recorded, start_run
from tests.records import records

DECLARED = {"kind": "vllm", "model": "google/gemma-4-E4B-it", "target": "l4x1"}


def cell(cell_id: str, verdict: Verdict = Verdict.PREDICTED, reason: Reason | None = None) -> CellResult:
    outcome = Outcome("arch", Status.FAIL if reason else Status.PASS, reason, f"detail of {cell_id}")
    return decided(CellResult(cell_id, verdict, reason, None, (outcome,), "fp", DECLARED))


def stored(reports: Path, results: list[CellResult]) -> Run:
    run = start_run(reports, matrix_hash="h", matrix_path="m.toml", tier="static", selected=len(results))
    for r in results:
        run.write_cell(r)
    run.finish("complete", 0)
    return run


def test_index_follows_the_files(tmp_path: Path) -> None:
    a = stored(tmp_path, [cell("s1__m__t"), cell("s2__m__t")])
    with open_index(tmp_path) as index:
        assert [r.run_id for r in index.runs()] == [a.run_id]
        assert set(index.cells(a.run_id)) == {"s1__m__t", "s2__m__t"}
    a.write_cell(cell("s3__m__t", Verdict.BLOCKED, Reason.ARCH_UNSUPPORTED))  # a changed run is re-read
    with open_index(tmp_path) as index:
        row = index.cells(a.run_id)["s3__m__t"]
        assert (row.verdict, row.reason, row.why) == ("blocked", "arch-unsupported", "detail of s3__m__t")
    for child in sorted(a.root.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    a.root.rmdir()
    with open_index(tmp_path) as index:  # a removed run is forgotten
        assert index.runs() == []


def test_corrupt_or_old_index_is_rebuilt(tmp_path: Path) -> None:
    a = stored(tmp_path, [cell("s1__m__t")])
    (tmp_path / "index.sqlite").write_bytes(b"garbage" * 100)
    with open_index(tmp_path) as index:
        assert list(index.cells(a.run_id)) == ["s1__m__t"]
    index = RunIndex(tmp_path)
    index.db.execute("PRAGMA user_version = 0")
    index.db.commit()
    index.close()
    with open_index(tmp_path) as index:
        assert list(index.cells(a.run_id)) == ["s1__m__t"]


def test_diff_kinds_and_renderings(tmp_path: Path) -> None:
    a = stored(
        tmp_path,
        [
            cell("same__m__t"),
            cell("flip__m__t"),
            cell("why__m__t", Verdict.BLOCKED, Reason.ARCH_UNSUPPORTED),
            cell("gone__m__t"),
        ],
    )
    b = stored(
        tmp_path,
        [
            cell("same__m__t"),
            cell("flip__m__t", Verdict.BLOCKED, Reason.MODEL_TYPE_UNKNOWN),
            cell("why__m__t", Verdict.BLOCKED, Reason.MODEL_TYPE_UNKNOWN),
            cell("new__m__t"),
        ],
    )
    with open_index(tmp_path) as index:
        d = diff_runs(index, a.run_id, b.run_id)
    assert [(c.cell_id, c.change) for c in d.changes] == [
        ("flip__m__t", Change.VERDICT),
        ("gone__m__t", Change.REMOVED),
        ("new__m__t", Change.ADDED),
        ("why__m__t", Change.REASON),
    ]
    assert "1 verdicts changed, 1 reasons changed, 1 added, 1 removed" in render_text(d)
    assert "| `flip__m__t` | predicted | blocked [model-type-unknown] |" in render_markdown(d)
    assert json.loads(render_json(d))["changes"][0]["after"]["reason"] == "model-type-unknown"


def test_find_run_by_prefix_path_or_error(tmp_path: Path) -> None:
    a = stored(tmp_path, [cell("s__m__t")])
    assert find_run(tmp_path, a.run_id[:-3]).run_id == a.run_id
    assert find_run(tmp_path, str(a.root)).run_id == a.run_id
    with pytest.raises(BadInput, match="matches no run"):
        find_run(tmp_path, "1999")


def test_merge_names_every_missing_cell(tmp_path: Path) -> None:
    selection = {f"s{i}__m__t": DECLARED for i in range(6)}
    ids = sorted(selection)
    runs = []
    for i in (1, 2, 3):
        run = start_run(tmp_path / f"shard{i}", matrix_hash="h", matrix_path="m", tier="static", selected=2)
        mine = ids[i - 1 :: 3]
        run.write_plan(selection, mine, f"{i}/3")
        runs.append((run, mine))
    (r1, c1), (r2, c2), _ = runs
    for c in c1:
        r1.write_cell(cell(c))
    r1.finish("complete", 0)
    r2.write_cell(cell(c2[0]))
    r2.finish("interrupted", 130)
    out = tmp_path / "merged"
    m = merge([tmp_path / "shard1", r2.root], out)  # shard 3 is absent
    got = records(m.run.root)
    assert set(got) == set(ids) and m.copied == 3 and len(m.missing) == 3
    assert got[c2[1]]["reason"] == "interrupted"
    absent = [got[c] for c in runs[2][1]]
    assert all(c["verdict"] == "not-run" and "shard 3/3 was not among" in c["probes"][0]["detail"] for c in absent)


def test_merge_refuses_shards_of_different_matrices(tmp_path: Path) -> None:
    stored(tmp_path / "a", [cell("s__m__t")])
    run = start_run(tmp_path / "b", matrix_hash="other", matrix_path="m", tier="static", selected=1)
    run.finish("complete", 0)
    with pytest.raises(BadInput, match="matrix_hash"):
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    a = start_run(tmp_path / "c", matrix_hash="h", matrix_path="m", tier="static", selected=1)
    a.write_plan({"x__m__t": DECLARED, "y__m__t": DECLARED}, ["x__m__t"], "1/2")
    b = start_run(tmp_path / "d", matrix_hash="h", matrix_path="m", tier="static", selected=1)
    b.write_plan({"z__m__t": DECLARED}, ["z__m__t"], "1/1")
    with pytest.raises(BadInput, match="selection"):  # shards of two different selections
        merge([a.root, b.root], tmp_path / "out")
    with pytest.raises(BadInput):
        parse_exit_codes(["shard-2"])
    assert parse_exit_codes(["a/b=137"]) == {"a/b": 137}


def test_meets_orders_the_evidence() -> None:
    assert meets(Verdict.SERVES, Verdict.RUNS_TINY) and meets(Verdict.PREDICTED, Verdict.OVERRIDE)
    assert not meets(Verdict.PREDICTED, Verdict.RUNS_TINY) and not meets(Verdict.OVERRIDE, Verdict.PREDICTED)
    assert not any(meets(v, Verdict.OVERRIDE) for v in (Verdict.BLOCKED, Verdict.NO_FIT, Verdict.NOT_RUN))


def test_judge_standings() -> None:
    from stackmatrix.answers.gate import row_of

    class Req:
        minimum = Verdict.PREDICTED

    ok, bad = cell("a__m__t"), cell("a__m__t", Verdict.BLOCKED, Reason.ARCH_UNSUPPORTED)
    reqs = [Req(), Req(), Req(), Req(), Req()]
    found = judge_findings(reqs, [bad, bad, ok, ok, bad], [row_of(ok), row_of(bad), row_of(bad), row_of(ok), None])  # type: ignore[arg-type]
    assert [f.standing for f in found] == [
        Trend.REGRESSION,
        Trend.STILL_FAILING,
        Trend.IMPROVED,
        Trend.OK,
        Trend.REGRESSION,  # no baseline: a gate passes only what it has seen pass
    ]


def test_parse_spec() -> None:
    assert parse_spec("triton=26.04") == StackSpec(triton="26.04")
    assert parse_spec(" vllm=0.22.1 , transformers=5.6.0") == StackSpec(vllm="0.22.1", transformers="5.6.0")
    for bad in ("", "triton", "tritn=26.04", "vllm=1,vllm=2", "vllm="):
        with pytest.raises(BadInput):
            parse_spec(bad)


def test_a_corrupt_cell_record_is_bad_input_naming_it(tmp_path: Path) -> None:
    run = stored(tmp_path, [cell("s__m__t")])
    run.journal_path.write_text('{"cell": "s__m__t", "verdict": "great"}\n')
    with pytest.raises(BadInput, match=r"journal\.jsonl"):
        list(run.results())
    run.journal_path.write_text("{not json\n")
    with pytest.raises(BadInput, match=r"journal\.jsonl:1"):
        list(run.results())
    run.journal_path.unlink()  # a run from before the journal: one file per cell
    run.cells_dir.mkdir()
    (run.cells_dir / "s__m__t.json").write_text('{"cell": "s__m__t", "verdict": "great"}')
    with pytest.raises(BadInput, match=r"s__m__t\.json"):
        list(run.results())


def test_a_torn_last_line_is_no_record_and_is_cut_before_the_next(tmp_path: Path) -> None:
    """A machine lost mid-write leaves half a line: reading ignores it, and the next append starts a new line."""
    run = stored(tmp_path, [cell("s1__m__t")])
    with run.journal_path.open("ab") as fh:
        fh.write(b'{"cell": "s2__m__t", "verd')
    assert run.cell_ids() == ["s1__m__t"]
    resumed = find_run(tmp_path, run.run_id)
    resumed.write_cell(cell("s3__m__t"))
    resumed.close_journal()
    assert resumed.cell_ids() == ["s1__m__t", "s3__m__t"] and resumed.count() == 2


def _shards(tmp_path: Path) -> tuple[Run, Run]:
    selection = {f"s{i}__m__t": DECLARED for i in range(4)}
    ids = sorted(selection)
    out = []
    for i in (1, 2):
        run = start_run(tmp_path / f"shard{i}", matrix_hash="h", matrix_path="m", tier="static", selected=2)
        run.write_plan(selection, ids[i - 1 :: 2], f"{i}/2")
        for c in ids[i - 1 :: 2]:
            run.write_cell(cell(c))
        run.finish("complete", 0)
        out.append(run)
    return out[0], out[1]


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda r: r.journal_path.write_text("{not json\n"), "journal.jsonl"),
        (lambda r: r.journal_path.write_text('{"cell": "s1__m__t"}\n'), "journal.jsonl"),
        (lambda r: r.journal_path.write_bytes(b"\xff\xfe\n"), "journal.jsonl"),
        (lambda r: _legacy(r, "s1__m__t", b'{"cell": "s2__m__t"}'), "s1__m__t.json"),
        (lambda r: (r.root / "plan.json").write_text('{"cells": ["../../x__m__t"], "selection": {}}'), "plan.json"),
        (lambda r: (r.root / "plan.json").write_text('{"cells": [], "selection": {"a/b__m__t": {}}}'), "plan.json"),
        (lambda r: (r.root / "run.json").write_text('{"run_id": "../../escape"}'), "run.json"),
        (lambda r: (r.root / "run.json").write_text("[]"), "run.json"),
    ],
)
def test_merge_checks_every_shard_file_before_it_writes(
    tmp_path: Path, damage: Callable[[Run], object], named: str
) -> None:
    a, b = _shards(tmp_path)
    damage(b)
    with pytest.raises(BadInput) as exc:
        merge([a.root, b.root], tmp_path / "merged")
    assert named in exc.value.where and str(b.root) in exc.value.where
    assert not (tmp_path / "merged").exists()  # no merged run was created


def _cut(run: Run, keep: float) -> None:
    """The journal cut to a fraction of its bytes (a copy interrupted, a disk lost): its last line torn."""
    data = run.journal_path.read_bytes()
    run.journal_path.write_bytes(data[: int(len(data) * keep)])


def _no_count(run: Run) -> None:
    """run.json without ``cells_written`` (written by hand: a complete shard's plan says what it wrote), and the
    journal cut."""
    meta = json.loads((run.root / "run.json").read_text())
    del meta["cells_written"]
    (run.root / "run.json").write_text(json.dumps(meta))
    _cut(run, 0.75)


@pytest.mark.parametrize(
    ("damage", "held", "source"),
    [
        (lambda r: _cut(r, 0.75), 1, "run.json says were written"),
        (lambda r: _cut(r, 0.25), 0, "run.json says were written"),
        (lambda r: r.journal_path.unlink(), 0, "run.json says were written"),
        (_no_count, 1, "plan.json lists for a complete run"),
    ],
)
def test_merge_refuses_a_shard_whose_journal_lost_records(
    tmp_path: Path, damage: Callable[[Run], object], held: int, source: str
) -> None:
    """A lost record is damage, not a cell that was never run: exit 2 naming the journal and how many are missing,
    and no merged run (a merged run marked complete would hide the loss)."""
    a, b = _shards(tmp_path)
    damage(b)
    with pytest.raises(BadInput) as exc:
        merge([a.root, b.root], tmp_path / "merged")
    assert exc.value.where == str(b.journal_path) and exc.value.value == held
    assert f"the 2 records {source} ({2 - held} missing" in str(exc.value)
    assert not (tmp_path / "merged").exists()


def test_merge_command_on_a_shard_with_a_torn_only_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case through the CLI: shard 1's journal cut in half, its only line torn."""
    selection = {"s0__m__t": DECLARED, "s1__m__t": DECLARED}
    shards = []
    for i, c in enumerate(sorted(selection), 1):
        run = start_run(tmp_path / f"shard{i}", matrix_hash="h", matrix_path="m", tier="static", selected=1)
        run.write_plan(selection, [c], f"{i}/2")
        run.write_cell(cell(c))
        run.finish("complete", 0)
        shards.append(run)
    _cut(shards[0], 0.5)
    argv = ["merge", str(tmp_path / "shard1"), str(tmp_path / "shard2"), "--reports-dir", str(tmp_path / "merged")]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"stackmatrix: {shards[0].journal_path}: key 'records': got 0; expected ")
    assert "the 1 records run.json says were written (1 missing" in err and err.count("\n") == 1
    assert not (tmp_path / "merged" / "runs").exists() or not any((tmp_path / "merged" / "runs").iterdir())


def _legacy(run: Run, cell_id: str, data: bytes) -> None:
    """A cell file as runs from before the journal kept them."""
    run.journal_path.unlink()
    run.cells_dir.mkdir(exist_ok=True)
    (run.cells_dir / f"{cell_id}.json").write_bytes(data)


def test_merge_exit_status_must_name_a_shard(tmp_path: Path) -> None:
    a, b = _shards(tmp_path)
    with pytest.raises(BadInput, match="--exit-status"):
        merge([a.root, b.root], tmp_path / "merged", parse_exit_codes(["shard-9=137"]))
    merged = merge([a.root, b.root], tmp_path / "merged", parse_exit_codes([f"{b.root}=137"]))
    assert merged.run.meta["status"] == "complete" and merged.copied == 4
    for bad in ("x=999", "=1", "x="):
        with pytest.raises(BadInput):
            parse_exit_codes([bad])


def test_the_store_refuses_ids_that_would_leave_it(tmp_path: Path) -> None:
    run = start_run(tmp_path, matrix_hash="h", matrix_path="m", tier="static", selected=1)
    for bad in ("../../owned__m__t", "a/b__m__t", "x", "a__b__c/../../d"):
        with pytest.raises(BadInput):
            run.write_cell(cell(bad))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert run.cell_ids() == [] and not run.journal_path.exists()


def test_a_damaged_run_is_left_out_of_the_index_not_the_store(tmp_path: Path) -> None:
    good, bad = stored(tmp_path, [cell("s1__m__t")]), stored(tmp_path, [cell("s2__m__t")])
    bad.journal_path.write_text("{\n")
    with open_index(tmp_path) as index:
        assert [r.run_id for r in index.runs()] == [good.run_id]
        assert list(index.damaged) == [str(bad.root)]
    planted = tmp_path / "runs" / "zzz-planted"
    planted.mkdir()
    (planted / "run.json").write_text(json.dumps({"run_id": good.run_id}))  # a run.json naming another run
    (planted / "cells").mkdir()
    with open_index(tmp_path) as index:
        assert [r.run_id for r in index.runs()] == [good.run_id] and str(planted) in index.damaged
    with pytest.raises(BadInput, match=r"journal\.jsonl:1"):
        list(find_run(tmp_path, bad.run_id).results())


def test_recorded_says_how_a_run_ended(tmp_path: Path) -> None:
    for exc, status, code in (
        (KeyboardInterrupt(), "interrupted", 130),
        (BadInput("w", "k", "v", "e"), "failed", 2),
        (OSError(errno.ENOSPC, "No space left on device", "x"), "failed", 4),
        (RuntimeError("bug"), "crashed", 1),
    ):
        run = start_run(tmp_path, matrix_hash="h", matrix_path="m", tier="static", selected=0)
        with pytest.raises(type(exc)), recorded(run):
            raise exc
        meta = json.loads((run.root / "run.json").read_text())
        assert (meta["status"], meta["exit_code"]) == (status, code)
        assert not (run.root / ".reserve").exists()
