from __future__ import annotations

from stackmatrix.domain import Cell, Reason, Stack, StackKind, Status, Target
from stackmatrix.ladder.static import GIB, Context, kv_bytes, probe_fit
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.matrix.file import Settings


def _cell(model: str, gpu: str, count: int) -> Cell:
    cat = load_catalog()
    return Cell(
        Stack(StackKind.VLLM, "0.20.0", "5.6.0", "3.12"),
        cat.model(model),
        Target(f"{gpu}x{count}", cat.gpus[gpu], count, count),
    )


def _ctx() -> Context:
    return Context(load_catalog(), None, Settings())  # type: ignore[arg-type]  # fit reads no wheel


def test_kv_bytes_counts_full_layers_fully_and_sliding_layers_to_their_window() -> None:
    cell = _cell("gemma-4-31B-it", "L4", 1)
    m = cell.model
    per = 2 * m.num_kv_heads * m.head_dim * 2
    expected = per * (m.num_global_layers * 8192 + (m.num_layers - m.num_global_layers) * m.sliding_window)
    assert kv_bytes(cell, 8192) == expected


def test_fit_splits_by_tp_and_reports_numbers() -> None:
    one = probe_fit(_cell("gemma-4-31B-it", "L4", 1), _ctx())
    assert one.status is Status.FAIL and one.reason is Reason.DOES_NOT_FIT
    assert one.evidence["per_gpu_gib"] > one.evidence["usable_gib"]
    h100 = probe_fit(_cell("gemma-4-31B-it", "H100-80GB", 1), _ctx())
    assert h100.status is Status.PASS
    small = probe_fit(_cell("gemma-4-E2B-it", "L4", 1), _ctx())
    assert small.status is Status.PASS
    usable = 24 * 0.9
    assert abs(small.evidence["usable_gib"] - usable) < 0.01
    assert small.evidence["per_gpu_gib"] < usable * GIB
