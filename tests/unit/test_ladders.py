"""Cells grouped into ladders, what a ladder asks of the host, and a cell's record from its attempts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from stackmatrix.domain import Cell, Outcome, Reason, Rung, Stack, StackKind, Status, Target, Verdict
from stackmatrix.executors.ladders import decide, group, need
from stackmatrix.executors.slots import CPU_LADDER_BYTES
from stackmatrix.executors.static import Standing
from stackmatrix.gpus.inventory import GIB
from stackmatrix.ladder.runtime import RuntimeContext, ladder_of
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.runners.venv import VenvOptions, VenvRunner

CAT = load_catalog()
STACK = Stack(StackKind.VLLM, "0.32.0", "5.19.0", "3.11")
STATIC = (Outcome(str(Rung.FIT), Status.PASS, None, "fits", {"per_gpu_gib": 10.6, "weights_gib": 18.0}),)


def cell(model: str, target: str = "l4x1", tp: int = 1) -> Cell:
    return Cell(STACK, CAT.model(model), Target(target, CAT.gpus["L4"], tp, tp))


def standing(c: Cell) -> Standing:
    return Standing(c, "fp", STATIC, 60.0)


def rctx(tmp_path: Path, device: str = "cpu") -> RuntimeContext:
    return RuntimeContext(VenvRunner(VenvOptions(tmp_path, "https://pypi.org/simple", device=device)), tmp_path)


def test_the_targets_of_one_checkpoint_share_a_ladder_and_other_checkpoints_do_not(tmp_path: Path) -> None:
    cells = [
        cell("gemma-4-E2B-it"),
        cell("gemma-4-E2B-it", "l4x2", 2),
        cell("gemma-4-E4B-it"),
        cell("gemma-4-26B-A4B-it"),
    ]
    groups = group([standing(c) for c in cells], rctx(tmp_path), tmp_path)
    sizes = sorted(len(v) for v in groups.values())
    assert sizes == [1, 3]  # E2B and E4B tiny checkpoints have the same structure; the MoE has its own


def test_a_ladder_asks_a_cpu_slot_or_its_gpus(tmp_path: Path) -> None:
    c = cell("gemma-4-31B-it", "l4x2", 2)
    ladder = ladder_of(c, rctx(tmp_path), tmp_path)
    assert need(ladder, [standing(c)], "cpu").memory == CPU_LADDER_BYTES
    assert need(ladder, [standing(c)], "gpu").tp == 1  # a tiny checkpoint: one GPU, little memory
    real = replace(ladder, real=tmp_path, tp=2)
    gpu = need(real, [standing(c)], "gpu")
    assert (gpu.tp, gpu.memory) == (2, int(10.6 * GIB))  # the fit rung's per-GPU estimate
    assert need(real, [standing(c)], "cpu").memory == CPU_LADDER_BYTES + 18 * GIB  # a real checkpoint's weights too


def test_a_cell_whose_verdict_changed_between_attempts_is_flaky() -> None:
    taken = [Outcome(str(Rung.LOAD), Status.ERROR, Reason.PORT_TAKEN, "address already in use", {})]
    served = [Outcome(str(Rung.SERVE), Status.PASS, None, "served", {})]
    result = decide(standing(cell("gemma-4-E2B-it")), [taken, served], tiny=True)
    assert (result.verdict, result.attempts, result.flaky) == (Verdict.RUNS_TINY, ("not-run",), True)
    steady = decide(standing(cell("gemma-4-E2B-it")), [served], tiny=True)
    assert (steady.attempts, steady.flaky) == ((), False)
    assert "flaky" not in steady.to_json() and result.to_json()["flaky"] is True
    assert type(result).from_json(result.to_json()) == result
