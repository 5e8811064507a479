"""Whole-GPU slots on faked inventories: the issue's 4x L4 case, exclusive big cells, failed cards, topology."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stackmatrix.domain import Cell, Stack, StackKind, Target
from stackmatrix.gpus.inventory import GIB, GpuInfo, Inventory, Link
from stackmatrix.gpus.packing import CellRequest, SlotAllocator, plan
from stackmatrix.ladder.static import Context, probe_fit
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.matrix.file import Settings


def _inventory(n: int, gib: float = 24, *, name: str = "NVIDIA L4", links: Sequence[Link] = ()) -> Inventory:
    gpus = tuple(
        GpuInfo(i, f"GPU-{i}", name, int(gib * GIB), int((gib - 0.4) * GIB), f"00000000:{i + 1:02X}:00.0")
        for i in range(n)
    )
    return Inventory(gpus=gpus, links=tuple(links))


def _estimate(model: str, tp: int, gpu: str = "L4") -> CellRequest:
    """A request sized by the catalog's own fit estimate (the ``fit`` rung's per-GPU bytes)."""
    cat = load_catalog()
    cell = Cell(
        Stack(StackKind.VLLM, "0.20.0", "5.6.0", "3.12"), cat.model(model), Target(f"x{tp}", cat.gpus[gpu], tp, tp)
    )
    per_gpu = probe_fit(cell, Context(cat, None, Settings())).evidence["per_gpu_gib"]  # type: ignore[arg-type]
    return CellRequest(f"{model}-tp{tp}", tp, int(per_gpu * GIB))


E2B = _estimate("gemma-4-E2B-it", 1)
E4B = _estimate("gemma-4-E4B-it", 1)
BIG = _estimate("gemma-4-31B-it-FP8-dynamic", 2)  # 31B at tp=2 on L4s: ~16 GiB of each card
TINY = CellRequest("tiny", 1, GIB // 2)


def test_the_issue_case_two_tp1_and_one_tp2_at_once_on_gpus_2_3_and_0_1() -> None:
    expected = {(0, 1), (2,), (3,)}
    assert {s.gpus for s in plan(_inventory(4), [E2B, E4B, BIG]).slots} == expected
    # The online allocator gets there in either order: single-GPU cells fill from the top, pairs from the bottom.
    for order in ([E2B, E4B, BIG], [BIG, E2B, E4B], [E2B, BIG, E4B]):
        allocator = SlotAllocator(_inventory(4))
        slots = [allocator.acquire(r) for r in order]
        assert {s.gpus for s in slots if s is not None} == expected
    pinned = plan(_inventory(4), [E2B, E4B, BIG]).slots
    assert [s.key for s in pinned] == [E2B.key, E4B.key, BIG.key]  # reported in the order asked
    assert pinned[2].cuda_visible_devices == "GPU-0,GPU-1"
    assert pinned[2].env() == {"CUDA_VISIBLE_DEVICES": "GPU-0,GPU-1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_a_31b_tp2_cell_never_shares_a_gpu() -> None:
    allocator = SlotAllocator(_inventory(4))
    big = allocator.acquire(BIG)
    assert big is not None and big.gpus == (0, 1) and big.exclusive
    smalls = [allocator.acquire(CellRequest(f"tiny{n}", 1, GIB // 2)) for n in range(12)]
    placed = [s for s in smalls if s is not None]
    assert placed and all(set(s.gpus) <= {2, 3} for s in placed)  # tiny cells share 2 and 3, never 0 or 1
    # And the other way round: a card holding a tiny cell is no place for the 31B.
    allocator = SlotAllocator(_inventory(2))
    assert allocator.acquire(TINY) is not None
    assert allocator.acquire(BIG) is None and allocator.never(BIG) is None  # it waits, it is not impossible
    allocator.release("tiny")
    assert allocator.acquire(BIG) is not None


def test_small_cells_share_a_card_within_its_memory_and_get_their_share_of_it() -> None:
    allocator = SlotAllocator(_inventory(1, 80, name="NVIDIA H100 80GB HBM3"))
    slots = [allocator.acquire(CellRequest(f"c{n}", 1, 20 * GIB)) for n in range(4)]
    assert [s is not None for s in slots] == [True, True, True, False]  # 72 GiB usable: three of 20 fit
    first = slots[0]
    assert first is not None and not first.exclusive and first.gpu_memory_utilization == 0.25
    assert not allocator.alone("c0")
    allocator.release("c1")
    assert allocator.acquire(CellRequest("c3", 1, 20 * GIB)) is not None
    alone = SlotAllocator(_inventory(1, 80)).acquire(CellRequest("big", 1, 50 * GIB))
    assert alone is not None and alone.exclusive and alone.gpu_memory_utilization == 0.9


def test_empty_cards_are_preferred_over_sharing() -> None:
    allocator = SlotAllocator(_inventory(4))
    slots = [allocator.acquire(CellRequest(f"t{n}", 1, GIB)) for n in range(6)]
    gpus = [s.gpus for s in slots if s is not None]
    assert sorted(gpus[:4]) == [(0,), (1,), (2,), (3,)] and len(gpus) == 6


def test_a_failed_gpu_gets_no_more_cells() -> None:
    allocator = SlotAllocator(_inventory(4))
    first = allocator.acquire(E2B)
    assert first is not None and first.gpus == (3,) and allocator.alone(E2B.key)  # an OOM here is the card's
    allocator.mark_failed(3, "Xid 79: GPU has fallen off the bus")
    allocator.release(E2B.key)
    again = allocator.acquire(E2B)
    assert again is not None and again.gpus != (3,)
    assert allocator.failed == {3: "Xid 79: GPU has fallen off the bus"}
    for n in range(20):
        slot = allocator.acquire(CellRequest(f"t{n}", 1, GIB))
        assert slot is None or 3 not in slot.gpus
    with pytest.raises(KeyError):
        allocator.mark_failed(9, "no such card")


def test_failed_gpus_from_earlier_shrink_the_plan_and_explain_what_can_never_run() -> None:
    result = plan(_inventory(4), [BIG, E2B, E4B], failed=[0, 2])
    assert [s.gpus for s in result.slots] == [(1, 3)]  # the only healthy pair left
    assert result.waiting == (E2B, E4B) and result.never == ()
    no_pair = plan(_inventory(4), [BIG, E2B], failed=[0, 1, 2])
    assert [r.key for r, _ in no_pair.never] == [BIG.key]
    assert "needs 2 GPU(s); 1 usable" in no_pair.never[0][1] and "GPU 0: failed earlier" in no_pair.never[0][1]
    assert [s.gpus for s in no_pair.slots] == [(3,)]


def test_a_cell_larger_than_any_card_can_never_run() -> None:
    huge = _estimate("gemma-4-31B-it", 2)  # bf16 31B at tp=2 needs ~30 GiB of each L4
    result = plan(_inventory(4), [huge])
    assert result.slots == () and "largest holds 21.6 GiB" in result.never[0][1]


def test_no_inventory_means_nothing_runs_and_says_why() -> None:
    result = plan(Inventory(reason="nvidia-ml-py is not installed"), [TINY])
    assert result.never == ((TINY, "no GPU here (nvidia-ml-py is not installed)"),)


def test_mig_cards_take_no_cell() -> None:
    inv = _inventory(2)
    inv = Inventory(gpus=(inv.gpus[0], GpuInfo(1, "GPU-1", "NVIDIA L4", 24 * GIB, 24 * GIB, "b", mig=True)))
    allocator = SlotAllocator(inv)
    assert allocator.failed == {1: "MIG mode is on"}
    assert allocator.never(CellRequest("pair", 2, GIB)) is not None


def test_memory_another_tenant_holds_is_not_ours() -> None:
    gpu = GpuInfo(0, "GPU-0", "NVIDIA L4", 24 * GIB, 8 * GIB, "a")  # 16 GiB held by someone else
    allocator = SlotAllocator(Inventory(gpus=(gpu,)))
    assert allocator.capacity(0) == 8 * GIB and allocator.acquire(E2B) is None
    assert allocator.never(E2B) is not None


def test_nvlink_pairs_win_over_adjacent_indices() -> None:
    links = [Link(a, b, nvlink=(a, b) in {(0, 2), (1, 3)}, level=30) for a in range(4) for b in range(4) if a < b]
    result = plan(_inventory(4, links=links), [CellRequest("a", 2, 16 * GIB), CellRequest("b", 2, 16 * GIB)])
    assert [s.gpus for s in result.slots] == [(0, 2), (1, 3)]


def test_pairs_on_a_restricted_set_stay_adjacent() -> None:
    inv = _inventory(4).restrict((0, 2, 3))
    assert [s.gpus for s in plan(inv, [BIG]).slots] == [(2, 3)]
    slot = plan(inv, [E2B]).slots[0]
    assert slot.gpus == (0,)  # breaks no whole pair: 2+3 stays free for a tp=2 cell


def test_without_uuids_the_indices_pin_the_process() -> None:
    inv = Inventory(gpus=(GpuInfo(0, "", "NVIDIA L4", 24 * GIB, 24 * GIB, "a"),))
    slot = SlotAllocator(inv).acquire(TINY)
    assert slot is not None and slot.cuda_visible_devices == "0"


def test_requests_are_checked() -> None:
    with pytest.raises(ValueError):
        CellRequest("x", 0, 1)
    with pytest.raises(ValueError):
        CellRequest("x", 1, -1)
    allocator = SlotAllocator(_inventory(1))
    allocator.acquire(TINY)
    with pytest.raises(ValueError, match="already holds"):
        allocator.acquire(TINY)


def test_plans_are_deterministic() -> None:
    cells = [E2B, E4B, BIG, TINY, CellRequest("t2", 1, GIB)]
    assert plan(_inventory(4), cells) == plan(_inventory(4), cells)


_OPS = st.lists(
    st.tuples(st.sampled_from(["acquire", "release", "fail"]), st.integers(0, 7), st.sampled_from([1, 2, 4])),
    max_size=60,
)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(_OPS, st.lists(st.integers(1, 30), min_size=8, max_size=8))
def test_any_sequence_keeps_memory_exclusivity_and_failures(ops: list[tuple[str, int, int]], sizes: list[int]) -> None:
    allocator = SlotAllocator(_inventory(8))
    failed: set[int] = set()
    for n, (op, k, tp) in enumerate(ops):
        if op == "acquire":
            slot = allocator.acquire(CellRequest(f"c{n}", tp, sizes[k] * GIB // 2))
            if slot is not None:
                assert len(slot.gpus) == tp and not failed & set(slot.gpus)
        elif op == "release" and allocator.held:
            allocator.release(allocator.held[k % len(allocator.held)].key)
        elif op == "fail":
            allocator.mark_failed(k, "test")
            failed.add(k)
        held = allocator.held
        for gpu in range(8):
            on = [s for s in held if gpu in s.gpus]
            assert sum(s.memory for s in on) <= allocator.capacity(gpu)
            assert len(on) <= 1 or not any(s.exclusive for s in on)
