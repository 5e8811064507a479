"""Records read back are checked against their run: an edited verdict, a renamed line, a cell never planned, a
repeated line is warned of naming its journal line, never reused as a cache hit, and refused by merge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.cli.main import main
from stackmatrix.domain import CellResult, Outcome, Reason, Status, Verdict
from stackmatrix.ladder.verdict import decided
from stackmatrix.store.index import open_index
from stackmatrix.store.runs import Run, start_run

A, B, C = (f"vllm-0.32.0-tf5.19.0__gemma-4-{m}-it__l4x1" for m in ("e2b", "e4b", "31b"))
D = "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x2"  # planned, never written: a renamed record may claim it
UNPLANNED = "vllm-0.32.0-tf5.19.0__gemma-4-26b-a4b-it__l4x1"


MODELS = {
    m.rsplit("/", 1)[1].lower(): m for m in ("google/gemma-4-E2B-it", "google/gemma-4-E4B-it", "google/gemma-4-31B-it")
}
MODELS["gemma-4-26b-a4b-it"] = "google/gemma-4-26B-A4B-it"


def declared(cell_id: str) -> dict[str, str | None]:
    _, model, target = cell_id.split("__")
    return {
        "kind": "vllm",
        "triton": None,
        "vllm": "0.32.0",
        "transformers": "5.19.0",
        "transformers_rule": None,
        "python": "3.11",
        "model": MODELS[model],
        "target": target,
    }


def result(cell_id: str, blocked: bool = False) -> CellResult:
    outcome = (
        Outcome("arch", Status.FAIL, Reason.ARCH_UNSUPPORTED, "no Gemma4ForCausalLM")
        if blocked
        else Outcome("arch", Status.PASS, None, "registers it")
    )
    verdict = Verdict.BLOCKED if blocked else Verdict.PREDICTED
    reason = Reason.ARCH_UNSUPPORTED if blocked else None
    return decided(CellResult(cell_id, verdict, reason, None, (outcome,), f"fp-{cell_id}", declared(cell_id)))


def stored(reports: Path) -> Run:
    run = start_run(reports, matrix_hash="h", matrix_path="m.toml", tier="static", selected=3)
    run.write_plan({c: declared(c) for c in (A, B, C, D)}, [A, B, C, D], None)
    for r in (result(A), result(B, blocked=True), result(C)):
        run.write_cell(r)
    run.finish("complete", 0)
    return run


def edit(run: Run, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    records = [json.loads(line) for line in run.journal_path.read_text().splitlines()]
    run.journal_path.write_text("".join(json.dumps(r) + "\n" for r in change(records)))


def serves(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records[1]["verdict"], records[1]["reason"] = "serves", None  # its arch probe still failed
    return records


def renamed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records[2]["cell"] = D  # C's passing record (declared: gemma-4-31B-it on l4x1) under D's name
    return records


def unplanned(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    extra = result(UNPLANNED).to_json()
    return [*records, extra]


def repeated(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*records, records[0]]


@pytest.mark.parametrize(
    ("forge", "line", "why"),
    [
        (serves, 2, "its verdict serves is not what its rungs give (blocked)"),
        (renamed, 3, "is not the cell its declared pins make"),
        (unplanned, 4, "is a cell the run never planned"),
        (repeated, 4, "a second record of"),
    ],
)
def test_a_forged_record_is_warned_of_by_its_line_and_never_a_cache_hit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], forge: Callable[[Any], Any], line: int, why: str
) -> None:
    reports = tmp_path / "reports"
    run = stored(reports)
    edit(run, forge)
    with open_index(reports) as index:
        (forged,) = index.forged_records()
        assert forged.startswith(f"{run.journal_path}:{line}: ") and why in forged, forged
        hits = index.hits([f"fp-{c}" for c in (A, B, C, UNPLANNED)])
    forged_fp = {"serves": B, "renamed": C, "unplanned": UNPLANNED, "repeated": A}[forge.__name__]  # the edit's
    assert f"fp-{forged_fp}" not in hits and (forged_fp is A or f"fp-{A}" in hits)
    assert main(["history", "--reports-dir", str(reports)]) == 0
    err = capsys.readouterr().err
    assert f"{run.journal_path}:{line}: " in err and "never reused" in err


def test_merge_refuses_a_shard_holding_a_forged_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = stored(tmp_path / "shard")
    edit(run, serves)
    code = main(["merge", str(tmp_path / "shard"), "--reports-dir", str(tmp_path / "merged")])
    err = capsys.readouterr().err
    assert code == 2 and f"{run.journal_path}:2" in err and "could have written" in err, err


def test_honest_records_are_believed(tmp_path: Path) -> None:
    with open_index(tmp_path) as index:
        stored(tmp_path)
    with open_index(tmp_path) as index:
        assert index.forged_records() == []
        assert set(index.hits([f"fp-{c}" for c in (A, B, C)])) == {f"fp-{c}" for c in (A, B, C)}


def test_a_resume_takes_a_forged_record_for_a_cell_still_to_probe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stackmatrix.pipeline.steps import _believed
    from stackmatrix.store.runs import open_run

    run = stored(tmp_path)
    edit(run, serves)
    kept = _believed(open_run(run.root))
    assert sorted(r.cell_id for r in kept) == sorted([A, C])  # B's edited record is no cell done: probed again
    assert f"{run.journal_path}:2: its verdict serves" in capsys.readouterr().err
